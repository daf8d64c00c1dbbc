//! The virtual ESP8266 (feature `sim`): everything needed to run the whole push flow
//! without a board.
//!
//! - [`FileFlash`]: a NOR flash chip kept in a file, with [`ota_agent::flash::RamNor`]'s rules;
//! - [`rboot`]: rBoot's boot decision as a pure function of a `NorFlash`;
//! - [`DeviceStatus`]: what a flash holds (booted slot, each slot's image and firmware);
//! - [`VirtualDevice`]: boots through the rBoot model and serves the real
//!   [`ota_agent::session::Session`] on a `std::net::TcpListener`, rebooting after each update;
//! - [`mdns`]: the agent's mDNS responder over a UDP socket on the loopback interface;
//! - [`wire`]: the agent on real smoltcp with a host socket, on a simulated faulty wire.
//!
//! `cargo xtask sim` is the command-line front end.

pub mod boot;
mod device;
mod file_flash;
#[cfg(test)]
mod fixtures;
pub mod mdns;
pub mod rboot;
pub mod sdk_boot;
mod status;
pub mod timed;
pub mod timed_push;
pub mod wire;

pub use boot::{HaltReason, Halted, Launched, SecondStage};
pub use device::{DeviceEvent, ServeError, SizeMismatch, VirtualDevice};
pub use file_flash::{FileFlash, FileFlashError, OpenError};
pub use status::{DeviceStatus, Identity, SlotStatus, inspect_slot};
