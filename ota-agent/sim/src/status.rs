//! What a flash holds, as a person (or `cargo xtask sim status`) wants to see it: which
//! slot tcpflash-boot starts next and how (confirmed, on trial, reverted), and for each slot
//! whether the agent would accept its image and which firmware it is.

use std::fmt;

use crate::boot::{self, Halted, Launched};
use ota_agent::boot::{BootConfig, CONFIG_LEN, ConfigError, Running};
use ota_agent::descriptor::{self, Descriptor};
use ota_agent::flash::{RamNor, ReadNorFlash};
use ota_agent::image::{self, ImageError, ImageInfo};
use ota_agent::layout::{BOOT_CONFIG_OFFSET, FlashLayout, IMAGE_IROM_OFFSET, Slot, SlotId};
use ota_agent::writer::SECTOR;

/// One slot's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotStatus {
    pub slot: Slot,
    /// The agent's verdict (`image::verify_for_slot`): what a push must leave behind.
    pub check: Result<ImageInfo, ImageError>,
    /// Whether rBoot's own, weaker check passes (it ignores IROM and the CRC).
    pub rboot_ok: bool,
    /// The descriptor at the start of IROM, if one is readable (even in a damaged image).
    pub descriptor: Option<Descriptor>,
}

impl SlotStatus {
    pub fn valid(&self) -> bool {
        self.check.is_ok()
    }

    /// The image length its headers give, when they are readable.
    pub fn image_len(&self) -> Option<u32> {
        self.check.as_ref().ok().map(|info| info.len)
    }
}

/// A firmware's identity for log lines: `example-blinky 0.1.0, build 3f2a...`.
pub struct Identity<'a>(pub Option<&'a Descriptor>);

impl fmt::Display for Identity<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => {
                let hex = d.build_id_hex();
                let hex = core::str::from_utf8(&hex).unwrap_or("?");
                write!(f, "{} {}, build {hex}", d.name(), d.version())
            }
            None => f.write_str("no tcpflash descriptor"),
        }
    }
}

/// Inspects the image in `slot`. The length comes from the image's own headers.
pub fn inspect_slot<F: ReadNorFlash>(flash: &mut F, slot: &Slot) -> SlotStatus {
    let mut scratch = vec![0u8; SECTOR];
    let len = match image::scan(flash, slot.offset, slot.capacity, &mut scratch) {
        Ok(info) => Ok(info.len),
        Err(ImageError::TrailingBytes { expected, .. }) => Ok(expected),
        Err(error) => Err(error),
    };
    let check = len.and_then(|len| image::verify_for_slot(flash, slot, len, &mut scratch, None));
    let mut bytes = [0u8; descriptor::SIZE];
    let descriptor = match flash.read(slot.offset + IMAGE_IROM_OFFSET, &mut bytes) {
        Ok(()) => Descriptor::parse(&bytes).ok(),
        Err(_) => None,
    };
    SlotStatus {
        slot: *slot,
        check,
        rboot_ok: crate::rboot::check_image(flash, slot.offset).is_ok(),
        descriptor,
    }
}

/// The whole device as its flash describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceStatus {
    pub layout: &'static FlashLayout,
    /// The config as stored (before rBoot would fix it).
    pub config: Result<BootConfig, ConfigError>,
    /// What tcpflash-boot would start at the next power-on (it counts a trial's attempt).
    pub started: Result<Launched, Halted>,
    /// How the firmware it starts sees itself (trial, confirmed...).
    pub running: Option<Running>,
    pub slots: [SlotStatus; 2],
}

impl DeviceStatus {
    /// Reads `bytes` (a flash image) without changing it: the bootloader runs on a copy.
    pub fn of(bytes: &[u8], layout: &'static FlashLayout) -> DeviceStatus {
        let mut copy = RamNor::from_storage(bytes.to_vec());
        copy.allow_bit_clearing();
        let mut head = [0u8; CONFIG_LEN];
        let config = match copy.read(BOOT_CONFIG_OFFSET, &mut head) {
            Ok(()) => BootConfig::parse(&head),
            Err(_) => Err(ConfigError::BadMagic(0xFF)),
        };
        let slots = layout.slots.map(|slot| inspect_slot(&mut copy, &slot));
        let started = boot::boot(&mut copy);
        let running =
            started.as_ref().ok().map(|launched| Running::read(&mut copy, layout, launched.handoff));
        DeviceStatus { layout, config, started, running, slots }
    }

    /// The slot the device boots (and runs, once it has rebooted), if tcpflash-boot starts
    /// one of the layout's slots.
    pub fn booted_slot(&self) -> Option<SlotId> {
        self.started.as_ref().ok().and_then(|launched| launched.slot(self.layout))
    }

    /// The slot the next push goes to.
    pub fn next_slot(&self) -> Option<SlotId> {
        self.booted_slot().map(SlotId::other)
    }

    pub fn slot(&self, id: SlotId) -> &SlotStatus {
        &self.slots[id.index()]
    }
}
