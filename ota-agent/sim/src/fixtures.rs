//! Flash contents for the sim's unit tests: a bootloader, images for a slot, a factory flash.

use ota_agent::boot::BootConfig;
use ota_agent::descriptor::Descriptor;
use ota_agent::flash::{NorFlash, RamNor};
use ota_agent::image::{self, FlashParams, Segment};
use ota_agent::layout::{BOOT_CONFIG_OFFSET, DEFAULT_LAYOUT, FlashLayout, SlotId};

pub const LAYOUT: &FlashLayout = DEFAULT_LAYOUT;

/// A v1 image with the 1 MB size code in byte 3 whose one segment names tcpflash-boot, like
/// the stand-in bootloader: the virtual device runs tcpflash-boot's flow for it.
pub fn bootloader() -> Vec<u8> {
    v1_image(b"tcpflash-boot stand-in\0\0")
}

/// A v1 image that does not name tcpflash-boot: the virtual device takes it for rBoot.
pub fn rboot_bootloader() -> Vec<u8> {
    v1_image(b"rBoot stand-in\0\0")
}

/// One segment of `data` (a multiple of 4 bytes) at 0x40100000, the checksum in the last
/// byte of the 16-byte aligned image.
fn v1_image(data: &[u8]) -> Vec<u8> {
    let mut image = vec![0xE9, 1, 0, 0x20, 0, 0, 0x10, 0x40, 0, 0, 0x10, 0x40];
    image.extend_from_slice(&(data.len() as u32).to_le_bytes());
    image.extend_from_slice(data);
    let checksum = data.iter().fold(0xEF, |sum, byte| sum ^ byte);
    image.resize((image.len() + 1).next_multiple_of(16) - 1, 0);
    image.push(checksum);
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
