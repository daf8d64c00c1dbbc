//! tcpflash-boot built by cargo-tcpflash's own pipeline (`kind = "bootloader"`): its image is
//! exactly what esptool makes of its ELF (`elf2image --version 1`), it is a v1 image
//! serial-flash accepts for 0x0, and it fits sector 0.
//!
//! Needs the pinned nightly with rust-src, binutils-xtensa-lx106 and esptool (`.ci/run`
//! installs them).

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use cargo_tcpflash::elf2image;
use ota_agent::image::FlashParams;
use ota_agent::layout::{BOOTLOADER_DRAM, BOOTLOADER_IRAM, BOOTLOADER_MAX_LEN};
use xmas_elf::symbol_table::Entry;
use xtask::footprint::{BootloaderSize, bootloader_manifest, measure_bootloader};

/// esptool's v1 conversion (it writes `<prefix>0x00000.bin`).
fn esptool_v1(elf: &Path, dir: &Path) -> Vec<u8> {
    let prefix = dir.join("esptool-");
    let output = Command::new("esptool")
        .args(["--chip", "esp8266", "elf2image", "--version", "1"])
        .args(["--flash-mode", "qio", "--flash-size", "1MB", "--flash-freq", "40m", "-o"])
        .arg(&prefix)
        .arg(elf)
        .output()
        .unwrap_or_else(|error| panic!("esptool cannot be run ({error}): pip install esptool"));
    assert!(output.status.success(), "esptool failed: {}", String::from_utf8_lossy(&output.stderr));
    std::fs::read(dir.join("esptool-0x00000.bin")).unwrap()
}

/// Built once for both tests (parallel builds would share the object files).
fn built() -> &'static BootloaderSize {
    static BUILT: OnceLock<BootloaderSize> = OnceLock::new();
    BUILT.get_or_init(|| {
        measure_bootloader(bootloader_manifest())
            .unwrap_or_else(|error| panic!("building tcpflash-boot failed: {:?}", miette::Report::new(error)))
    })
}

#[test]
fn tcpflash_boot_is_esptools_v1_image_of_its_elf() {
    let size = built();
    let elf = std::fs::read(&size.elf).unwrap();
    // The manifest's layout is 1MB: the header says qio, 1MB, 40m.
    let ours = elf2image::elf_to_bootloader_image(&elf, FlashParams::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    assert!(ours == esptool_v1(&size.elf, dir.path()), "our v1 image differs from esptool's");
    assert_eq!(ours.len() as u64, size.image_len);
    assert_eq!(ours[0], 0xE9);
    let entry = u32::from_le_bytes(ours[4..8].try_into().unwrap());
    assert!(BOOTLOADER_IRAM.contains(&entry), "entry {entry:#x}");
    // Every segment where the generated script puts it.
    let mut at = 8;
    for _ in 0..ours[1] {
        let addr = u32::from_le_bytes(ours[at..at + 4].try_into().unwrap());
        let len = u32::from_le_bytes(ours[at + 4..at + 8].try_into().unwrap());
        let inside = |range: &std::ops::Range<u32>| range.start <= addr && addr + len <= range.end;
        assert!(inside(&BOOTLOADER_IRAM) || inside(&BOOTLOADER_DRAM), "segment {addr:#x}+{len}");
        at += 8 + len as usize;
    }
}

/// The budget: sector 0, header included.
#[test]
fn tcpflash_boot_fits_sector_0_and_serial_flash_takes_it() {
    let size = built();
    assert!(size.fits(), "{}", size.report());
    assert!(size.image_len <= u64::from(BOOTLOADER_MAX_LEN));
    // What `cargo tcpflash build` wrote is that image, and serial-flash accepts it for 0x0.
    let bin = std::fs::read(size.elf.with_extension("bin")).unwrap();
    let elf = std::fs::read(&size.elf).unwrap();
    assert_eq!(bin, elf2image::elf_to_bootloader_image(&elf, FlashParams::default()).unwrap());
    xtask::serial::bootloader::check(&bin).expect("serial-flash accepts it for 0x0");
    // The report says where the bytes are: the v1 image's parts add up, and the largest
    // functions are named.
    let report = size.report();
    let padding = size.image_len - 24 - size.code - size.data;
    assert!((1..=16).contains(&padding), "{report}");
    assert!(
        report.contains(&format!(
            "image: headers 24 + code {} + data {} + padding and checksum {padding}",
            size.code, size.data
        )),
        "{report}"
    );
    assert_eq!(size.largest.len(), 8, "{report}");
    assert!(size.largest.windows(2).all(|pair| pair[0].1 >= pair[1].1), "{report}");
    assert!(size.largest.iter().any(|(name, _)| name == "ota_agent::boot::decision::decide"), "{report}");
    println!("{report}");
}

/// Bootloaders build with the immediate-abort panic strategy: a failed bounds check traps
/// where it happens, so none of `core`'s panic machinery (or its location data) is linked.
#[test]
fn tcpflash_boot_carries_no_panic_machinery() {
    let size = built();
    let bytes = std::fs::read(&size.elf).unwrap();
    let elf = xmas_elf::ElfFile::new(&bytes).unwrap();
    let mut names = Vec::new();
    for section in elf.section_iter() {
        if let Ok(xmas_elf::sections::SectionData::SymbolTable32(symbols)) = section.get_data(&elf) {
            names.extend(symbols.iter().filter_map(|symbol| symbol.get_name(&elf).ok()));
        }
    }
    assert!(names.contains(&"main"), "the symbol table is read: {names:?}");
    let panicking: Vec<_> = names.iter().filter(|name| name.contains("panicking")).collect();
    assert!(panicking.is_empty(), "core's panic routines linked: {panicking:?}");
}
