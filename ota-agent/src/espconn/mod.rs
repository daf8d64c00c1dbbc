//! The agent on Espressif's NONOS SDK: TCP through `espconn`, flash through `spi_flash_*`,
//! the slot switch through the SDK's upgrade API. This is what gives a real board WiFi (no
//! Rust WiFi driver exists for the ESP8266) and what C firmware calls as `ota_init()`.
//!
//! - [`driver`]: the rules of the SDK's callback world around the one [`crate::listener`],
//!   without the SDK (tested on the host);
//! - with the `nonos-sdk` feature, [`ffi`] (the SDK's functions and structs, as its
//!   documented API declares them), [`SdkFlash`] and [`ota_init`]: the driver wired to the
//!   SDK's callbacks and an `os_timer`;
//! - with the `c-api` feature, `ota_init()` and `ota_init_with_key()` for C.
//!
//! The same code builds for lx106 against the SDK's libraries and for the host against a
//! fake of those functions over real TCP (the `tcpflash-sdk-fake` crate).

pub mod driver;

#[cfg(feature = "nonos-sdk")]
pub mod agent;
#[cfg(feature = "c-api")]
pub mod c_api;
#[cfg(feature = "nonos-sdk")]
pub mod ffi;
#[cfg(feature = "nonos-sdk")]
pub mod flash;

#[cfg(feature = "nonos-sdk")]
pub use agent::{InitError, ota_init};
#[cfg(feature = "nonos-sdk")]
pub use flash::SdkFlash;
