//! Board support: the thin hardware layer under the agent, one module per board. Each
//! provides a `NorFlash`, a clock, a `Platform` (reboot, random bytes) and what its start-up
//! code needs. None of it is verified on real hardware yet (see the README).

pub mod esp8266;
