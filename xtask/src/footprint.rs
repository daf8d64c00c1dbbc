//! `cargo xtask footprint`: what the OTA agent costs example-blinky, measured by building it
//! with and without its `ota` feature and comparing the sections of user1.elf.

use std::path::{Path, PathBuf};

use cargo_tcpflash::build::{self, BuildError};
use cargo_tcpflash::cli::BuildArgs;
use ota_agent::net::OtaBuffers;
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
}

impl Footprint {
    pub fn ram_beyond_sockets(&self) -> u64 {
        (self.with.ram - self.without.ram).saturating_sub(self.socket_buffers)
    }

    pub fn report(&self) -> String {
        let ram = self.with.ram - self.without.ram;
        format!(
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
        )
    }
}

/// Builds `manifest` twice (without, then with the `ota` feature) and measures user1.elf.
pub fn measure(manifest: PathBuf) -> Result<Footprint, FootprintError> {
    // Its own target dir: toggling features must not change the images other tools read.
    let target_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/footprint");
    let mut args = BuildArgs {
        manifest_path: Some(manifest),
        target_dir: Some(target_dir),
        no_default_features: true,
        ..BuildArgs::default()
    };
    let without = build::build(&args)?;
    let without = Sizes::of_elf(&without.slots[0].elf).map_err(FootprintError::Elf)?;
    args.no_default_features = false;
    let with = build::build(&args)?;
    let with = Sizes::of_elf(&with.slots[0].elf).map_err(FootprintError::Elf)?;
    // All of the agent's buffers but the sector buffer belong to its two sockets.
    let socket_buffers = (size_of::<OtaBuffers>() - SECTOR) as u64;
    Ok(Footprint { without, with, socket_buffers })
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum FootprintError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Build(#[from] BuildError),
    #[error("{0}")]
    Elf(String),
}
