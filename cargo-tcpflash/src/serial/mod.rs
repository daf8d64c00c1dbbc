//! `cargo tcpflash serial-flash`: the first install over the ESP8266 ROM serial loader.
//!
//! Layers, bottom up: [`slip`] framing, [`rom`] packets and the client, [`bootloader`]
//! (the v1 image check), [`flasher`] (what goes where, and the talking), [`cli`] (arguments,
//! progress bar). [`fake_rom`] is a ROM loader on a pseudo-terminal for tests.

pub mod bootloader;
pub mod cli;
pub mod fake_rom;
pub mod flasher;
pub mod rom;
pub mod slip;
