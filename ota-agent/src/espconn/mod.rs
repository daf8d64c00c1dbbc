//! The agent on Espressif's NONOS SDK: TCP through `espconn`, flash through `spi_flash_*`,
//! the slot switch through the SDK's upgrade API. This is what gives a real board WiFi (no
//! Rust WiFi driver exists for the ESP8266) and what C firmware calls as `ota_init()`.
//!
//! - [`driver`]: the rules of the SDK's callback world around the one [`crate::listener`],
//!   without the SDK (tested on the host);
//! - with the `nonos-sdk` feature, [`ffi`] (the SDK's functions and structs, as its
//!   documented API declares them), [`SdkFlash`] and [`ota_init`]: the driver wired to the
//!   SDK's callbacks and an `os_timer`;
//! - with the `mdns` feature too, [`mdns`]: the SDK's own mDNS responder
//!   (`espconn_mdns_init`) given the records the smoltcp responder announces;
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
#[cfg(all(feature = "nonos-sdk", feature = "mdns"))]
pub mod mdns;

#[cfg(all(feature = "nonos-sdk", feature = "mdns"))]
pub use agent::ota_init_for_chip_with_mdns;
#[cfg(feature = "nonos-sdk")]
pub use agent::{InitError, ota_init, ota_init_for_chip};
#[cfg(feature = "nonos-sdk")]
pub use flash::SdkFlash;

/// `ota_agent.h`, the header `cargo tcpflash c-lib` writes next to `libota_agent.a`: the
/// seed's `tcp_ota.h` declaration, plus the keyed variant. Plain C types, so it goes with
/// the SDK's `c_types.h` or without it.
pub const C_HEADER: &str = r#"/* ota_agent.h - tcpflash's OTA agent for ESP8266 NONOS SDK firmware (libota_agent.a).
 *
 * Call one of these in user_init(), after setting up WiFi. The agent listens on TCP port
 * 65056 (the seed's protocol: tools/tcp_flash.py and `cargo tcpflash --host` push to it),
 * writes the image into the idle slot of the chip's flash map (maps 2 to 6), verifies it,
 * and switches with system_upgrade_flag_set + system_upgrade_reboot.
 */
#ifndef OTA_AGENT_H
#define OTA_AGENT_H

#ifdef __cplusplus
extern "C" {
#endif

/* As the seed's tcp_ota.h: any client may push. */
void ota_init(void);

/* Only a push that proves it holds this 32-byte key is accepted (the key is copied). */
void ota_init_with_key(const unsigned char key[32]);

#ifdef __cplusplus
}
#endif

#endif /* OTA_AGENT_H */
"#;
