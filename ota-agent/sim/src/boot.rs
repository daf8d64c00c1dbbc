//! The virtual device's power-on: the mask ROM finds a second stage in sector 0, and the
//! device runs the one it finds. tcpflash-boot (its image, or the virtual device's stand-in
//! for it: both carry its name) runs as the bootloader's own flow (`ota_agent::boot::loader`,
//! the same decision, checks and attempt counting as the lx106 build) over the device's
//! flash; any other v1 image is taken for rBoot and runs as the rBoot model, which is there
//! to prove that rBoot installations keep working. Nothing is copied (the firmware runs as
//! host code) and the console lines become log lines.
#![allow(unsafe_code)] // BootBoard's copy and jump are unsafe to call; here they do nothing

use std::fmt;

use ota_agent::boot::handoff::{HandOff, HandOffKind};
use ota_agent::boot::loader::{self, BoardError, BootBoard, Halt, LoaderBuffers};
use ota_agent::flash::NorFlash;
use ota_agent::image;
use ota_agent::layout::{FlashLayout, SECTOR_SIZE, SlotId};

/// The second stage sector 0 holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecondStage {
    TcpflashBoot,
    Rboot,
}

/// What the second stage started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launched {
    pub stage: SecondStage,
    /// Index in the config's `roms[]`, and the image's flash offset.
    pub rom: u8,
    pub offset: u32,
    pub entry: u32,
    /// tcpflash-boot's record for the firmware (how the rom was chosen); rBoot leaves none.
    pub handoff: Option<HandOff>,
    /// The second stage's console lines.
    pub console: Vec<String>,
}

impl Launched {
    /// The slot it started, when the offset is one of the layout's slots.
    pub fn slot(&self, layout: &FlashLayout) -> Option<SlotId> {
        layout.slot_at(self.offset)
    }

    /// How it was chosen, as tcpflash-boot's hand-off says (`None` under rBoot).
    pub fn kind(&self) -> Option<HandOffKind> {
        self.handoff.map(|handoff| handoff.kind)
    }
}

/// Nothing was started: the device waits for a serial install.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Halted {
    pub reason: HaltReason,
    /// The bootloader's console lines, which say why rom by rom.
    pub console: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HaltReason {
    /// The mask ROM found no bootloader image in sector 0 (its first byte is not 0xE9).
    NoBootloader { found: u8 },
    /// tcpflash-boot found no slot it may boot.
    NoBootableSlot,
    /// tcpflash-boot could not read or copy the image.
    FlashFailed,
    /// Every boot in a row crashed (the virtual device's fault switch).
    CrashLoop { boots: u32 },
    /// The rBoot model found nothing to boot (its lines say why).
    Rboot,
}

impl fmt::Display for Halted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            HaltReason::NoBootloader { found } => {
                write!(
                    f,
                    "no bootloader at 0x0 (first byte {found:#04x}, not {:#04x})",
                    image::MAGIC_SEGMENTS
                )
            }
            HaltReason::NoBootableSlot => {
                f.write_str("tcpflash-boot found no bootable slot")?;
                let roms: Vec<&str> = self
                    .console
                    .iter()
                    .filter_map(|line| line.strip_prefix(CONSOLE_PREFIX))
                    .filter(|line| line.starts_with("rom "))
                    .collect();
                if !roms.is_empty() {
                    write!(f, " ({})", roms.join("; "))?;
                }
                Ok(())
            }
            HaltReason::FlashFailed => f.write_str("tcpflash-boot could not read or copy the image"),
            HaltReason::CrashLoop { boots } => write!(f, "the firmware crashed {boots} boots in a row"),
            HaltReason::Rboot => write!(f, "rBoot found no good rom: {}", self.console.join("; ")),
        }
    }
}

impl std::error::Error for Halted {}

/// How tcpflash-boot's console lines start.
const CONSOLE_PREFIX: &str = "tcpflash-boot: ";

/// The second stage in sector 0: tcpflash-boot when the image carries its name (its console
/// prefix is in its data), else rBoot.
pub fn second_stage<F: NorFlash>(flash: &mut F) -> Result<SecondStage, Halted> {
    let mut sector = vec![0u8; SECTOR_SIZE as usize];
    let found = flash.read(0, &mut sector).map(|()| sector[0]).unwrap_or(0xFF);
    if found != image::MAGIC_SEGMENTS {
        return Err(Halted { reason: HaltReason::NoBootloader { found }, console: Vec::new() });
    }
    let named = sector.windows(TCPFLASH_BOOT.len()).any(|window| window == TCPFLASH_BOOT);
    Ok(if named { SecondStage::TcpflashBoot } else { SecondStage::Rboot })
}

/// The name tcpflash-boot's image carries.
const TCPFLASH_BOOT: &[u8] = b"tcpflash-boot";

/// The mask ROM, then the second stage, over `flash` (tcpflash-boot may program one attempt
/// bit; rBoot may rewrite its config).
pub fn boot<F: NorFlash>(flash: &mut F) -> Result<Launched, Halted> {
    match second_stage(flash)? {
        SecondStage::TcpflashBoot => tcpflash_boot(flash),
        SecondStage::Rboot => match crate::rboot::boot(flash) {
            Ok(boot) => Ok(Launched {
                stage: SecondStage::Rboot,
                rom: boot.rom,
                offset: boot.offset,
                entry: boot.entry,
                handoff: None,
                console: boot.events.iter().map(ToString::to_string).collect(),
            }),
            Err(bricked) => Err(Halted { reason: HaltReason::Rboot, console: vec![bricked.to_string()] }),
        },
    }
}

/// tcpflash-boot's flow over `flash`, whatever sector 0 holds (the timed model runs it on
/// a chip that carries only a bootloader's header there).
pub fn tcpflash_boot<F: NorFlash>(flash: &mut F) -> Result<Launched, Halted> {
    let mut board = SimBoard { flash, console: Vec::new() };
    let mut buffers = Box::new(LoaderBuffers::new());
    let result = loader::load(&mut board, &mut buffers);
    let console = String::from_utf8_lossy(&board.console).lines().map(str::to_owned).collect();
    match result {
        Ok(launch) => Ok(Launched {
            stage: SecondStage::TcpflashBoot,
            rom: launch.handoff.rom,
            offset: launch.handoff.offset,
            entry: launch.entry,
            handoff: Some(launch.handoff),
            console,
        }),
        Err(Halt::NoBootableSlot) => Err(Halted { reason: HaltReason::NoBootableSlot, console }),
        Err(Halt::CopyFailed) => Err(Halted { reason: HaltReason::FlashFailed, console }),
    }
}

/// The device's flash as tcpflash-boot's board.
struct SimBoard<'f, F> {
    flash: &'f mut F,
    console: Vec<u8>,
}

impl<F: NorFlash> BootBoard for SimBoard<'_, F> {
    fn read_flash(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), BoardError> {
        self.flash.read(offset, buf).map_err(|_| BoardError)
    }

    fn program_word(&mut self, offset: u32, word: u32) -> Result<(), BoardError> {
        self.flash.write(offset, &word.to_le_bytes()).map_err(|_| BoardError)
    }

    fn print_byte(&mut self, byte: u8) {
        self.console.push(byte);
    }

    /// The firmware runs as host code: there is no RAM to load. The bytes are read all the
    /// same, as the board reads them (a timed flash counts that time).
    unsafe fn copy_segment(&mut self, offset: u32, _addr: u32, len: u32) -> Result<(), BoardError> {
        let mut bytes = vec![0u8; len as usize];
        self.flash.read(offset, &mut bytes).map_err(|_| BoardError)
    }

    unsafe fn jump(&mut self, _handoff: &HandOff, _entry: u32) -> ! {
        unreachable!("the virtual device starts its agent itself")
    }
}
