//! The OTA agent's pre-shared key (`ota_agent::build_script::embed_key`: the file
//! `TCPFLASH_KEY_FILE` names, embedded with `cfg(ota_key)`), and on the NONOS SDK platform
//! the WiFi network to join.

use std::path::PathBuf;

use ota_agent::build_script::fail;

/// The WiFi network the firmware joins on the NONOS SDK platform, at build time.
const SSID_ENV: &str = "TCPFLASH_WIFI_SSID";
const PASSWORD_ENV: &str = "TCPFLASH_WIFI_PASSWORD";

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    wifi();
    ota_agent::build_script::embed_key();
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
