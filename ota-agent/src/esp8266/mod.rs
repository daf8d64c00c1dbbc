//! ESP8266 backends: the ROM's flash routines, reboot, a millisecond clock and the hardware
//! RNG, by register access and ROM calls only (upstream rustc refuses inline asm for lx106).
//!
//! Nothing here can run on the host or under QEMU (no ESP8266 peripherals there): it is
//! compiled for lx106 in CI as part of `example-blinky`, and not yet verified on a board.

pub mod rom;
