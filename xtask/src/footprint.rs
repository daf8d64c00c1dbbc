//! `cargo xtask footprint`: what the OTA agent costs example-blinky, measured by building it
//! with and without its `ota` feature and comparing the sections of user1.elf, then what
//! the agent's mDNS responder adds (the `mdns` feature on top); and how much of sector 0
//! tcpflash-boot takes.

use std::path::{Path, PathBuf};

use cargo_tcpflash::build::BuildOptions;
use cargo_tcpflash::build::{self, BuildError};
use ota_agent::layout::BOOTLOADER_MAX_LEN;
use ota_agent::net::{MDNS_BUFFER_BYTES, SOCKET_BUFFER_BYTES};
use ota_agent::writer::SECTOR;
use xmas_elf::ElfFile;

/// Static sizes of one firmware build, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// `.data` (with `.rodata`, which lives in DRAM) plus `.bss`.
    pub ram: u64,
    pub irom: u64,
    pub iram: u64,
}

impl Sizes {
    pub fn of_elf(path: &Path) -> Result<Sizes, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let elf = ElfFile::new(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let size = |name: &str| elf.find_section_by_name(name).map_or(0, |s| s.size());
        Ok(Sizes { ram: size(".data") + size(".bss"), irom: size(".irom0.text"), iram: size(".iram0.text") })
    }
}

/// The agent's cost, and the part of its RAM that is socket buffers (the TCP window the
/// application chooses).
#[derive(Debug, Clone, Copy)]
pub struct Footprint {
    pub without: Sizes,
    pub with: Sizes,
    pub socket_buffers: u64,
    /// The agent with its mDNS responder (example-blinky's `mdns` feature).
    pub with_mdns: Sizes,
    /// The mDNS socket's payload buffers.
    pub mdns_socket_buffers: u64,
}

impl Footprint {
    pub fn ram_beyond_sockets(&self) -> u64 {
        (self.with.ram - self.without.ram).saturating_sub(self.socket_buffers)
    }

    /// What mDNS adds to the agent: RAM, IROM, IRAM.
    pub fn mdns(&self) -> Sizes {
        Sizes {
            ram: self.with_mdns.ram.saturating_sub(self.with.ram),
            irom: self.with_mdns.irom.saturating_sub(self.with.irom),
            iram: self.with_mdns.iram.saturating_sub(self.with.iram),
        }
    }

    pub fn report(&self) -> String {
        let ram = self.with.ram - self.without.ram;
        let mdns = self.mdns();
        let mdns_line = format!(
            "| example-blinky with the agent and mDNS | {} | {} | {} |\n\
             | added by mDNS | {} | {} | {} |\n\n\
             Of mDNS's {} bytes of RAM, {} are its socket's buffers (one query, one reply) and {} \
             the rest (socket metadata, the records).\n\
             footprint: mdns_ram={} mdns_socket_buffers={} mdns_irom={} mdns_iram={}\n",
            self.with_mdns.ram,
            self.with_mdns.irom,
            self.with_mdns.iram,
            mdns.ram,
            mdns.irom,
            mdns.iram,
            mdns.ram,
            self.mdns_socket_buffers,
            mdns.ram.saturating_sub(self.mdns_socket_buffers),
            mdns.ram,
            self.mdns_socket_buffers,
            mdns.irom,
            mdns.iram,
        );
        let agent = format!(
            "| build | RAM (.data+.bss) | IROM | IRAM |\n|---|---|---|---|\n\
             | example-blinky without the agent | {} | {} | {} |\n\
             | example-blinky with the agent | {} | {} | {} |\n\
             | added by the agent | {ram} | {} | {} |\n\n\
             Of the agent's {ram} bytes of RAM, {} are socket buffers and {} the rest \
             (the {SECTOR}-byte sector buffer included).\n\
             footprint: agent_ram={ram} socket_buffers={} ram_beyond_sockets={} agent_irom={} agent_iram={}\n",
            self.without.ram,
            self.without.irom,
            self.without.iram,
            self.with.ram,
            self.with.irom,
            self.with.iram,
            self.with.irom - self.without.irom,
            self.with.iram.saturating_sub(self.without.iram),
            self.socket_buffers,
            self.ram_beyond_sockets(),
            self.socket_buffers,
            self.ram_beyond_sockets(),
            self.with.irom - self.without.irom,
            self.with.iram.saturating_sub(self.without.iram),
        );
        format!("{agent}{mdns_line}")
    }
}

/// Builds `manifest` twice (without, then with the `ota` feature) and measures user1.elf.
pub fn measure(manifest: PathBuf) -> Result<Footprint, FootprintError> {
    // Its own target dir: toggling features must not change the images other tools read.
    let target_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/footprint");
    let mut args = BuildOptions {
        manifest_path: Some(manifest),
        target_dir: Some(target_dir),
        no_default_features: true,
        ..BuildOptions::default()
    };
    let without = build::build(&args)?;
    let without = Sizes::of_elf(&without.slots[0].elf).map_err(FootprintError::Elf)?;
    args.no_default_features = false;
    let with = build::build(&args)?;
    let with = Sizes::of_elf(&with.slots[0].elf).map_err(FootprintError::Elf)?;
    args.features = vec!["mdns".into()];
    let with_mdns = build::build(&args)?;
    let with_mdns = Sizes::of_elf(&with_mdns.slots[0].elf).map_err(FootprintError::Elf)?;
    Ok(Footprint {
        without,
        with,
        socket_buffers: SOCKET_BUFFER_BYTES as u64,
        with_mdns,
        mdns_socket_buffers: MDNS_BUFFER_BYTES as u64,
    })
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum FootprintError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Build(#[from] BuildError),
    #[error("{0}")]
    Elf(String),
}

/// tcpflash-boot's manifest in this repository.
pub fn bootloader_manifest() -> PathBuf {
    cargo_tcpflash::build::tcpflash_boot_manifest()
}

/// A bootloader's image against sector 0, and its sections.
#[derive(Debug, Clone)]
pub struct BootloaderSize {
    /// Bytes of the v1 image, header and checksum included.
    pub image_len: u64,
    /// Code (`.iram0.text`, literals and IROM-bound constants included), constants and
    /// variables (`.data`), zeroed variables (`.bss`, not in the image).
    pub code: u64,
    pub data: u64,
    pub bss: u64,
    /// The largest functions and constants in the image, largest first (demangled names,
    /// bytes): where to look when it grows.
    pub largest: Vec<(String, u64)>,
    pub elf: PathBuf,
}

/// How many of the largest symbols the report lists.
const LARGEST: usize = 8;

impl BootloaderSize {
    pub fn fits(&self) -> bool {
        self.image_len <= u64::from(BOOTLOADER_MAX_LEN)
    }

    pub fn report(&self) -> String {
        let verdict = if self.fits() {
            format!("{} bytes to spare", u64::from(BOOTLOADER_MAX_LEN) - self.image_len)
        } else {
            format!("{} bytes OVER", self.image_len - u64::from(BOOTLOADER_MAX_LEN))
        };
        // The v1 image: header, one 8-byte header per segment (code, data), the bytes, and
        // the padding up to the checksum byte.
        let headers = 8 + 8 * u64::from(self.code > 0) + 8 * u64::from(self.data > 0);
        let padding = self.image_len.saturating_sub(headers + self.code + self.data);
        let largest: Vec<String> = self.largest.iter().map(|(name, size)| format!("{name} {size}")).collect();
        format!(
            "tcpflash-boot: {} of {BOOTLOADER_MAX_LEN} bytes of sector 0 ({verdict}): code {}, data {}, bss {} (not in the image)\n\
             \x20 image: headers {headers} + code {} + data {} + padding and checksum {padding}\n\
             \x20 largest: {}\n\
             bootloader: image={} budget={BOOTLOADER_MAX_LEN} code={} data={} bss={}\n",
            self.image_len,
            self.code,
            self.data,
            self.bss,
            self.code,
            self.data,
            largest.join(", "),
            self.image_len,
            self.code,
            self.data,
            self.bss,
        )
    }
}

/// Builds the bootloader at `manifest` and measures it. A bootloader too large for sector 0
/// is measured too (its ELF is written before the size check refuses the image).
pub fn measure_bootloader(manifest: PathBuf) -> Result<BootloaderSize, FootprintError> {
    let args = BuildOptions { manifest_path: Some(manifest.clone()), ..BuildOptions::default() };
    let (elf, image_len) = match build::build_bootloader(&args) {
        Ok(built) => (built.elf, u64::from(built.image_len)),
        Err(BuildError::BootloaderTooLarge(too_large)) => {
            let package = cargo_tcpflash::build::FirmwarePackage::locate(&args)?;
            let elf = package.target_dir.join("tcpflash/bootloader").join(format!("{}.elf", package.name));
            (elf, too_large.len)
        }
        Err(other) => return Err(other.into()),
    };
    let bytes = std::fs::read(&elf)
        .map_err(|e| FootprintError::Elf(format!("cannot read {}: {e}", elf.display())))?;
    let file = ElfFile::new(&bytes).map_err(|e| FootprintError::Elf(format!("{}: {e}", elf.display())))?;
    let size = |name: &str| file.find_section_by_name(name).map_or(0, |s| s.size());
    let largest = largest_symbols(&file, LARGEST);
    Ok(BootloaderSize {
        image_len,
        code: size(".iram0.text"),
        data: size(".data"),
        bss: size(".bss"),
        largest,
        elf,
    })
}

/// The `count` largest symbols that take image bytes (code and initialised data, not
/// `.bss`), largest first, with demangled names.
fn largest_symbols(file: &ElfFile<'_>, count: usize) -> Vec<(String, u64)> {
    use xmas_elf::sections::{SectionData, ShType};
    use xmas_elf::symbol_table::Entry;
    let in_image = |index: u16| {
        file.section_header(index).is_ok_and(|section| section.get_type() == Ok(ShType::ProgBits))
    };
    let mut symbols: Vec<(String, u64)> = file
        .section_iter()
        .filter_map(|section| match section.get_data(file) {
            Ok(SectionData::SymbolTable32(symbols)) => Some(symbols),
            _ => None,
        })
        .flatten()
        .filter(|symbol| symbol.size() > 0 && in_image(symbol.shndx()))
        .filter_map(|symbol| {
            let name = symbol.get_name(file).ok()?;
            Some((format!("{:#}", rustc_demangle::demangle(name)), symbol.size()))
        })
        .collect();
    symbols.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    symbols.truncate(count);
    symbols
}
