//! The build's options, as the library takes them.

use std::path::PathBuf;

/// Which firmware to build and how: the library's options (the CLI's `BuildArgs` converts
/// into them). Names are resolved by the build: each setting from here, else the firmware's
/// `[package.metadata.tcpflash]`, else its default.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Package to build (when the manifest is a workspace).
    pub package: Option<String>,
    /// Path to the firmware's Cargo.toml.
    pub manifest_path: Option<PathBuf>,
    /// Space or comma separated list of features to activate.
    pub features: Vec<String>,
    /// Activate all available features.
    pub all_features: bool,
    /// Do not activate the `default` feature.
    pub no_default_features: bool,
    /// Build with the release profile (the default: firmware needs fat LTO).
    pub release: bool,
    /// Build with the given cargo profile.
    pub profile: Option<String>,
    /// Directory for all generated artifacts (default: cargo's, from the firmware's metadata).
    pub target_dir: Option<PathBuf>,
    /// Board: esp8266 or qemu (QEMU's XTFPGA board with an lx106 core) (default: metadata,
    /// else esp8266).
    pub board: Option<String>,
    /// Flash layout: 512KB, 1MB, 2MB or 4MB (rBoot), or an SDK map for --platform nonos-sdk:
    /// sdk-1MB, sdk-2MB, sdk-4MB, sdk-2MB-c1, sdk-4MB-c1 (default: metadata, else 1MB).
    pub layout: Option<String>,
    /// Platform: bare-metal (the firmware owns the chip, boots through rBoot) or nonos-sdk
    /// (linked with Espressif's NONOS SDK for WiFi) (default: metadata, else bare-metal).
    pub platform: Option<String>,
    /// The ESP8266 NONOS SDK folder, for --platform nonos-sdk (default: $ESP8266_NONOS_SDK,
    /// then [package.metadata.tcpflash] sdk).
    pub sdk: Option<PathBuf>,
    /// Flash mode written in the image header: qio, qout, dio or dout.
    pub flash_mode: Option<String>,
    /// Flash size written in the image header (default: the layout's size).
    pub flash_size: Option<String>,
    /// Flash frequency written in the image header: 40m, 26m, 20m or 80m.
    pub flash_freq: Option<String>,
    /// The key file the firmware's build script embeds (`TCPFLASH_KEY_FILE` in the cargo it
    /// runs), as an absolute path.
    pub key_file: Option<PathBuf>,
}
