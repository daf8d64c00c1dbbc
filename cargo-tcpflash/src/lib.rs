//! The host side of tcpflash: building firmware for both slots, turning ELFs into images,
//! and pushing an image to a device. The `cargo-tcpflash` binary is a thin CLI over this.
pub mod build;
pub mod build_cmd;
pub mod cli;
pub mod elf2image;
pub mod image_cmd;
pub mod progress;
pub mod push;
pub mod push_cmd;
pub mod stub_sdk;
