//! A stub of Espressif's NONOS SDK, written by this project, for building and testing the
//! `nonos-sdk` platform where the real SDK is not available (CI). [`build`] compiles the
//! stub sources (`cargo-tcpflash/stub-sdk/*.c`: the documented functions the agent and
//! example-blinky call, with bodies that only stand in) with `xtensa-lx106-elf-gcc` into an
//! SDK-shaped folder: `lib/lib*.a`, the ROM address table under `ld/`, stand-ins for the
//! files a first install writes under `bin/`. Nothing of the real SDK is in it, and its
//! files exist only where [`build`] writes them.
//!
//! The ROM table gives the ESP8266 ROM's addresses (as the SDK's eagle.rom.addr.v6.ld has them) for the flash, cache, delay,
//! UART, reset and watchdog routines, and placeholders in the ROM's range for the libgcc
//! and libc routines (the stub never runs: only which symbols the ROM provides matters).

use std::path::{Path, PathBuf};
use std::process::Command;

use ota_agent::image::{MAGIC_SEGMENTS, checksum_position};

/// The stub's sources and the library each becomes.
const SOURCES: [(&str, &str); 7] = [
    ("main", include_str!("../stub-sdk/system_stubs.c")),
    ("driver", include_str!("../stub-sdk/entry_stub.c")),
    ("lwip", include_str!("../stub-sdk/net_stubs.c")),
    ("pp", include_str!("../stub-sdk/radio_stubs.c")),
    ("wpa", include_str!("../stub-sdk/random_stub.c")),
    // What a C project links with `-lc`; Rust firmware has the build's shim instead.
    ("c", include_str!("../stub-sdk/libc_stubs.c")),
    ("empty", include_str!("../stub-sdk/empty_stub.c")),
];
/// Libraries the link lists that the stub fills with a marker only.
const EMPTY_LIBS: [&str; 5] = ["phy", "net80211", "crypto", "hal", "gcc"];
const GCC: &str = "xtensa-lx106-elf-gcc";
const AR: &str = "xtensa-lx106-elf-ar";

/// ROM routines at the ESP8266 ROM's addresses (the SDK's ROM address table).
const ROM_KNOWN: [(&str, u32); 14] = [
    ("SPIEraseSector", 0x4000_4a00),
    ("SPIWrite", 0x4000_4a4c),
    ("SPIRead", 0x4000_4b1c),
    ("SPIUnlock", 0x4000_4878),
    ("SPIEraseArea", 0x4000_4b44),
    ("SPIEraseBlock", 0x4000_49b4),
    ("Cache_Read_Enable", 0x4000_4678),
    ("Cache_Read_Disable", 0x4000_47f0),
    ("ets_delay_us", 0x4000_2ecc),
    ("uart_tx_one_char", 0x4000_3b30),
    ("software_reset", 0x4000_264c),
    ("ets_wdt_enable", 0x4000_2fa0),
    ("ets_wdt_disable", 0x4000_30f0),
    ("ets_update_cpu_frequency", 0x4000_2f04),
];
/// libgcc and libc routines the ROM provides; the stub places them at placeholders.
pub const ROM_RUNTIME: [&str; 33] = [
    "__adddf3",
    "__addsf3",
    "__divdf3",
    "__divdi3",
    "__divsi3",
    "__extendsfdf2",
    "__fixdfsi",
    "__fixunsdfsi",
    "__fixunssfsi",
    "__floatsidf",
    "__floatsisf",
    "__floatunsidf",
    "__floatunsisf",
    "__muldf3",
    "__muldi3",
    "__mulsf3",
    "__subdf3",
    "__subsf3",
    "__truncdfsf2",
    "__udivdi3",
    "__udivsi3",
    "__umoddi3",
    "__umodsi3",
    "__umulsidi3",
    "memcmp",
    "memcpy",
    "memmove",
    "memset",
    "strcmp",
    "strcpy",
    "strlen",
    "strncmp",
    "strncpy",
];
/// Where the placeholders start: inside the ROM's range, clear of the known routines.
const PLACEHOLDER_BASE: u32 = 0x4000_e000;

/// Why the stub SDK could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StubSdkError {
    #[error("cannot write {path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    #[error("`{tool}` failed ({detail}); install gcc-xtensa-lx106 and binutils-xtensa-lx106")]
    Tool { tool: &'static str, detail: String },
}

/// The stub's ROM address table, as the SDK's `ld/eagle.rom.addr.v6.ld` is shaped.
pub fn rom_table() -> String {
    let mut text =
        String::from("/* tcpflash stub SDK: ROM addresses (placeholders for the runtime routines). */\n");
    for (name, addr) in ROM_KNOWN {
        text += &format!("PROVIDE ( {name} = {addr:#010x} );\n");
    }
    for (i, name) in ROM_RUNTIME.iter().enumerate() {
        text += &format!("PROVIDE ( {name} = {:#010x} );\n", PLACEHOLDER_BASE + 16 * i as u32);
    }
    text
}

/// Builds the stub SDK into `dir` (created) and returns it.
pub fn build(dir: &Path) -> Result<PathBuf, StubSdkError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StubSdkError::Io { path, cause: source }
    };
    let obj = dir.join("obj");
    for sub in ["lib", "ld", "bin", "obj"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(io(&dir.join(sub)))?;
    }
    for (lib, source) in SOURCES {
        let c = obj.join(format!("{lib}.c"));
        std::fs::write(&c, source).map_err(io(&c))?;
        let object = obj.join(format!("{lib}.o"));
        run(
            GCC,
            Command::new(GCC)
                .args(["-Os", "-std=gnu11", "-Wall", "-Werror", "-mlongcalls", "-mtext-section-literals"])
                .args(["-ffunction-sections", "-fdata-sections", "-c", "-o"])
                .arg(&object)
                .arg(&c),
        )?;
        let libs: Vec<&str> = if lib == "empty" { EMPTY_LIBS.to_vec() } else { vec![lib] };
        for name in libs {
            let archive = dir.join(format!("lib/lib{name}.a"));
            let _ = std::fs::remove_file(&archive);
            run(AR, Command::new(AR).arg("rcs").arg(&archive).arg(&object))?;
        }
    }
    let table = dir.join("ld/eagle.rom.addr.v6.ld");
    std::fs::write(&table, rom_table()).map_err(io(&table))?;
    for (name, bytes) in [
        ("boot_v1.7.bin", stand_in_bootloader()),
        ("esp_init_data_default_v08.bin", (0..128u8).map(|i| i.wrapping_mul(3)).collect()),
        ("blank.bin", vec![0xFF; 4096]),
    ] {
        let path = dir.join("bin").join(name);
        std::fs::write(&path, bytes).map_err(io(&path))?;
    }
    Ok(dir.to_path_buf())
}

/// A v1 image (0xE9, one IRAM segment) standing in for the SDK's bootloader: labelled, and
/// shaped like one, so a first install can write and check it.
pub fn stand_in_bootloader() -> Vec<u8> {
    let mut code = b"tcpflash stub SDK: not a bootloader".to_vec();
    code.resize(code.len().next_multiple_of(4), 0);
    let mut image = vec![MAGIC_SEGMENTS, 1, 0, 0x20];
    image.extend_from_slice(&0x4010_0004u32.to_le_bytes());
    image.extend_from_slice(&0x4010_0000u32.to_le_bytes());
    image.extend_from_slice(&(code.len() as u32).to_le_bytes());
    image.extend_from_slice(&code);
    let checksum = code.iter().fold(0xEFu8, |sum, byte| sum ^ byte);
    image.resize(checksum_position(image.len() as u32) as usize, 0);
    image.push(checksum);
    image
}

fn run(tool: &'static str, command: &mut Command) -> Result<(), StubSdkError> {
    let output = command.output().map_err(|error| StubSdkError::Tool { tool, detail: error.to_string() })?;
    if output.status.success() {
        return Ok(());
    }
    Err(StubSdkError::Tool { tool, detail: String::from_utf8_lossy(&output.stderr).trim().to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stub_is_an_sdk_the_build_accepts_and_its_rom_table_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = build(dir.path()).unwrap();
        crate::build::Sdk::locate(Some(&sdk), None, dir.path()).expect("an SDK by the build's checks");
        let names = crate::build::sdk::rom_symbols(&rom_table());
        assert!(names.iter().any(|name| name == "__udivsi3"));
        assert!(names.iter().any(|name| name == "SPIRead"));
        assert_eq!(names.len(), ROM_KNOWN.len() + ROM_RUNTIME.len());
        let boot = std::fs::read(sdk.join("bin/boot_v1.7.bin")).unwrap();
        assert_eq!((boot[0], boot[1]), (0xE9, 1));
        assert_eq!(boot.len() % 16, 0);
    }
}
