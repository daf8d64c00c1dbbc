//! The agent for C firmware on the SDK: a drop-in for the seed's `tcp_ota.c`.
//! `cargo tcpflash c-lib` builds this into `libota_agent.a` with `ota_agent.h`:
//!
//! ```c
//! void ota_init(void);                                /* as the seed's tcp_ota.h */
//! void ota_init_with_key(const uint8_t key[32]);      /* only pushes proving the key */
//! ```
//!
//! Call one of them in `user_init`, after setting up WiFi. The slots come from the flash map
//! the chip runs (`system_get_flash_size_map`: maps 2 to 6); on another map the agent does
//! not start.
#![allow(unsafe_code)] // the C entry points: the key pointer's contract is the caller's

use crate::auth::{KEY_LEN, Key};

use super::agent::{KeyCell, ota_init_for_chip};

/// `void ota_init(void)`: listens on TCP port 65056; any client may push, as with the seed.
#[unsafe(no_mangle)]
pub extern "C" fn ota_init() {
    let _ = ota_init_for_chip(None);
}

/// `void ota_init_with_key(const uint8_t key[32])`: as [`ota_init`], but only a push that
/// proves it holds `key` is accepted (see the README's keys section). The 32 bytes are
/// copied; a null `key` starts the agent without one.
///
/// # Safety
/// `key` is null or points to 32 readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ota_init_with_key(key: *const u8) {
    static KEY: KeyCell = KeyCell::new();
    let key = if key.is_null() {
        None
    } else {
        // SAFETY: the caller passes 32 readable bytes.
        let bytes: Key = unsafe { *key.cast::<[u8; KEY_LEN]>() };
        Some(KEY.store(bytes))
    };
    let _ = ota_init_for_chip(key);
}
