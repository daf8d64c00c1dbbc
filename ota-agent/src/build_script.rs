//! For a firmware's `build.rs` (feature `build-script`): the agent's key from the file
//! `TCPFLASH_KEY_FILE` names (32 raw bytes or 64 hex digits, [`crate::auth::parse_key`]),
//! written to `OUT_DIR` for `include_bytes!` and announced with `cfg(ota_key)`. No variable,
//! no key: any client may push, as with the seed. The key itself is never printed.
//!
//! ```ignore
//! fn main() { ota_agent::build_script::embed_key(); }
//! // in the firmware:
//! #[cfg(ota_key)]
//! static OTA_KEY: ota_agent::auth::Key = *include_bytes!(concat!(env!("OUT_DIR"), "/ota_key.bin"));
//! ```
//!
//! Cargo runs build scripts in the package's folder, so a relative path is taken from
//! there; `cargo tcpflash` passes an absolute one.

extern crate std;

use std::path::PathBuf;
use std::{eprintln, format, println};

use crate::auth::{KEY_FILE_ENV, parse_key};

/// The file the key goes to in `OUT_DIR`.
pub const KEY_FILE_NAME: &str = "ota_key.bin";

/// Reads the key file `TCPFLASH_KEY_FILE` names, if any, and embeds it (see the module).
/// A file that cannot be read or is not a key stops the build with a sentence that says why.
pub fn embed_key() {
    println!("cargo::rerun-if-env-changed={KEY_FILE_ENV}");
    println!("cargo::rustc-check-cfg=cfg(ota_key)");
    let Some(path) = std::env::var_os(KEY_FILE_ENV).filter(|path| !path.is_empty()) else { return };
    let path = PathBuf::from(path);
    println!("cargo::rerun-if-changed={}", path.display());
    let bytes = std::fs::read(&path).unwrap_or_else(|error| {
        fail(&format!("cannot read the key file {} ({KEY_FILE_ENV}): {error}", path.display()))
    });
    let key = parse_key(&bytes).unwrap_or_else(|error| {
        fail(&format!(
            "{KEY_FILE_ENV}={} is not a key file: {error}; make one with `head -c 32 /dev/urandom > tcpflash.key`",
            path.display()
        ))
    });
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join(KEY_FILE_NAME);
    if let Err(error) = std::fs::write(&out, key) {
        fail(&format!("cannot write {}: {error}", out.display()));
    }
    println!("cargo::rustc-cfg=ota_key");
}

/// Stops the build with `message`.
pub fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
