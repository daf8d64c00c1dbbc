//! Board support: the thin hardware layer under the agent, one module per board. Each
//! provides a `NorFlash`, a clock, a `Platform` (reboot, random bytes) and what its start-up
//! code needs. The ESP8266 layer is not verified on real hardware yet (see the README); the
//! XTFPGA layer runs under QEMU in the tests.
#![allow(unsafe_code)] // registers, ROM routines and data placement: each use says why it is sound

pub mod esp8266;
pub mod xtfpga;
