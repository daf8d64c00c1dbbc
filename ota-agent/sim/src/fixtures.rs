//! Flash contents for the sim's unit tests: a bootloader, images for a slot, a factory flash.

use ota_agent::boot::BootConfig;
use ota_agent::descriptor::Descriptor;
use ota_agent::flash::{NorFlash, RamNor};
use ota_agent::image::{self, FlashParams, Segment};
use ota_agent::layout::{BOOT_CONFIG_OFFSET, DEFAULT_LAYOUT, FlashLayout, SlotId};

pub const LAYOUT: &FlashLayout = DEFAULT_LAYOUT;

/// A v1 image with the 1 MB size code in byte 3, like the stand-in bootloader.
pub fn bootloader() -> Vec<u8> {
    let mut image = vec![0xE9, 1, 0, 0x20, 0, 0, 0x10, 0x40, 0, 0, 0x10, 0x40, 4, 0, 0, 0, 1, 2, 3, 4];
    image.resize(31, 0);
    image.push(0xEF ^ 1 ^ 2 ^ 3 ^ 4);
    image
}

/// A valid image linked for `slot`; `seed` varies its bytes and build id.
pub fn image_for(slot: SlotId, seed: u8) -> Vec<u8> {
    let link = LAYOUT.slot(slot).irom_link_addr();
    let mut irom = Descriptor::new(link, [seed; 8], "fw", "1.0.0").unwrap().to_bytes().to_vec();
    irom.extend([seed; 200]);
    let iram = [seed ^ 0x5A; 64];
    let mut out = Vec::new();
    image::write_v2(
        FlashParams::default(),
        0x4010_0004,
        &irom,
        &[Segment { addr: 0x4010_0000, data: &iram }],
        &mut |b| out.extend_from_slice(b),
    )
    .unwrap();
    out
}

/// Bootloader, an optional config, and an image in each slot marked true.
pub fn flash_with(config: Option<BootConfig>, slots: [bool; 2]) -> RamNor<Vec<u8>> {
    let mut flash = RamNor::new(LAYOUT.flash_size);
    for (offset, bytes) in regions(config, slots) {
        flash.write(offset, &bytes).unwrap();
    }
    flash
}

/// The same content as (offset, bytes padded to 4) regions, for `FileFlash::create`.
pub fn regions(config: Option<BootConfig>, slots: [bool; 2]) -> Vec<(u32, Vec<u8>)> {
    let padded = |mut bytes: Vec<u8>| {
        bytes.resize(bytes.len().next_multiple_of(4), 0xFF);
        bytes
    };
    let mut regions = vec![(0, padded(bootloader()))];
    if let Some(config) = config {
        regions.push((BOOT_CONFIG_OFFSET, config.to_bytes().to_vec()));
    }
    for slot in SlotId::ALL {
        if slots[slot.index()] {
            regions.push((LAYOUT.slot(slot).offset, padded(image_for(slot, slot.index() as u8 + 1))));
        }
    }
    regions
}
