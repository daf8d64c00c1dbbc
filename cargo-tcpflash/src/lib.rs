//! The host side of tcpflash: building firmware for both slots, turning ELFs into images,
//! pushing an image to a device, the first install over serial and the virtual ESP8266. The
//! `cargo-tcpflash` binary is a thin CLI over this.
pub mod build;
pub mod build_cmd;
pub mod cli;
pub mod discover;
pub mod elf2image;
pub mod fleet;
pub mod image_cmd;
pub mod new_cmd;
pub mod prebuilt;
pub mod progress;
pub mod push;
pub mod push_cmd;
pub mod qemu_board;
pub mod report;
pub mod serial;
pub mod sim;
pub mod stub_sdk;
