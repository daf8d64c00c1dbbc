//! Device side of tcpflash, and the single source of truth for what both sides share:
//! the flash layouts, the image format, the slot descriptor, the boot config and the
//! wire protocol. `no_std` and allocation-free unless the `std`/`sim` features are on.
#![cfg_attr(not(any(feature = "std", test)), no_std)]

pub mod auth;
pub mod boards;
pub mod boot;
#[cfg(feature = "build-script")]
pub mod build_script;
pub mod client;
pub mod crc;
pub mod descriptor;
pub mod espconn;
pub mod flash;
pub mod hex;
pub mod image;
pub mod layout;
pub mod listener;
pub mod mdns;
pub mod net;
pub mod protocol;
pub mod session;
pub mod slip;
pub mod static_cell;
pub mod text;
pub mod writer;
