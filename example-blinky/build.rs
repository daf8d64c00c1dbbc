//! The OTA agent's pre-shared key: read from the file `TCPFLASH_KEY_FILE` names (32 raw
//! bytes or 64 hex digits, see `ota_agent::auth::parse_key`), written to `OUT_DIR` for
//! `include_bytes!`, and announced to the code with `cfg(ota_key)`. No variable, no key: any
//! client may push, as with the seed. The key itself is never printed.
//!
//! Cargo runs this script in the package's folder, so a relative path is taken from there;
//! `cargo tcpflash` passes an absolute one.

use std::path::PathBuf;
use std::process::exit;

const KEY_ENV: &str = ota_agent::auth::KEY_FILE_ENV;

/// The WiFi network the firmware joins on the NONOS SDK platform, at build time.
const SSID_ENV: &str = "TCPFLASH_WIFI_SSID";
const PASSWORD_ENV: &str = "TCPFLASH_WIFI_PASSWORD";

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed={KEY_ENV}");
    println!("cargo::rustc-check-cfg=cfg(ota_key)");
    wifi();
    let Some(path) = std::env::var_os(KEY_ENV).filter(|path| !path.is_empty()) else { return };
    let path = PathBuf::from(path);
    println!("cargo::rerun-if-changed={}", path.display());
    let bytes = std::fs::read(&path).unwrap_or_else(|error| {
        fail(&format!("cannot read the key file {} ({KEY_ENV}): {error}", path.display()))
    });
    let key = ota_agent::auth::parse_key(&bytes).unwrap_or_else(|error| {
        fail(&format!(
            "{KEY_ENV}={}: {error}; make one with `head -c 32 /dev/urandom > tcpflash.key`",
            path.display()
        ))
    });
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("ota_key.bin");
    if let Err(error) = std::fs::write(&out, key) {
        fail(&format!("cannot write {}: {error}", out.display()));
    }
    println!("cargo::rustc-cfg=ota_key");
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    exit(1);
}

/// On the NONOS SDK platform, the network to join: written to `OUT_DIR` for
/// `include_bytes!`, never printed. Missing, the build stops and says which variable to set.
fn wifi() {
    println!("cargo::rerun-if-env-changed={SSID_ENV}");
    println!("cargo::rerun-if-env-changed={PASSWORD_ENV}");
    println!("cargo::rerun-if-env-changed=CARGO_CFG_TCPFLASH_PLATFORM");
    if std::env::var("CARGO_CFG_TCPFLASH_PLATFORM").as_deref() != Ok("nonos-sdk") {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for (var, file, max) in [(SSID_ENV, "wifi_ssid", 32), (PASSWORD_ENV, "wifi_password", 64)] {
        let value = std::env::var_os(var).unwrap_or_default();
        let bytes = value.as_encoded_bytes();
        if var == SSID_ENV && bytes.is_empty() {
            fail(&format!(
                "the nonos-sdk platform joins the WiFi network named at build time: set {SSID_ENV} and \
                 {PASSWORD_ENV} (empty for an open network); they are built into the firmware, never printed"
            ));
        }
        if bytes.len() > max {
            fail(&format!("{var} is {} bytes long; the SDK takes at most {max}", bytes.len()));
        }
        if let Err(error) = std::fs::write(out.join(file), bytes) {
            fail(&format!("cannot write {}: {error}", out.join(file).display()));
        }
    }
}
