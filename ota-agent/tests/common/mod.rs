//! Test fixtures shared by the agent's integration tests: valid v2 images for a slot, a
//! factory-installed flash, a seeded RNG and segmentations of a byte stream.
#![allow(dead_code)]

use ota_agent::boot::BootConfig;
use ota_agent::descriptor::Descriptor;
use ota_agent::flash::{NorFlash, RamNor};
use ota_agent::image::{self, FlashParams, Segment};
use ota_agent::layout::{BOOT_CONFIG_OFFSET, DEFAULT_LAYOUT, FlashLayout, SlotId};
use ota_agent::session::{COMMIT_GRACE, Session};
use smoltcp::time::Instant;

pub const LAYOUT: &FlashLayout = DEFAULT_LAYOUT;

/// A v2 image as `cargo tcpflash build` makes it: IROM opens with a descriptor linked at
/// `link_addr`, followed by `code_len` bytes of "code"; one IRAM and two DRAM segments.
pub fn image_linked_at(link_addr: u32, code_len: usize, seed: u64) -> Vec<u8> {
    let descriptor = Descriptor::new(link_addr, seed.to_le_bytes(), "test-firmware", "1.0.0").unwrap();
    let mut rng = Rng::new(seed);
    let mut irom = descriptor.to_bytes().to_vec();
    irom.extend((0..code_len).map(|_| rng.byte()));
    irom_image(&irom, &mut rng)
}

/// A valid image for `slot`.
pub fn image_for(slot: SlotId, code_len: usize, seed: u64) -> Vec<u8> {
    image_linked_at(LAYOUT.slot(slot).irom_link_addr(), code_len, seed)
}

/// A structurally valid image whose IROM carries no slot descriptor.
pub fn image_without_descriptor(code_len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let irom: Vec<u8> = (0..code_len).map(|_| rng.byte()).collect();
    irom_image(&irom, &mut rng)
}

fn irom_image(irom: &[u8], rng: &mut Rng) -> Vec<u8> {
    let iram: Vec<u8> = (0..301).map(|_| rng.byte()).collect();
    let dram: Vec<u8> = (0..58).map(|_| rng.byte()).collect();
    let rodata: Vec<u8> = (0..16).map(|_| rng.byte()).collect();
    let segments = [
        Segment { addr: 0x4010_0000, data: &iram },
        Segment { addr: 0x3FFE_8000, data: &dram },
        Segment { addr: 0x3FFE_8400, data: &rodata },
    ];
    let mut out = Vec::new();
    let len = image::write_v2(FlashParams::default(), 0x4010_0004, irom, &segments, &mut |bytes| {
        out.extend_from_slice(bytes)
    })
    .unwrap();
    assert_eq!(len as usize, out.len());
    out
}

/// A 1 MB flash as `serial-flash` leaves it, plus a running image in the running slot: the
/// rBoot config booting `running`, and a recognisable image in each slot.
pub fn factory_flash(running: SlotId) -> RamNor<Vec<u8>> {
    let mut flash = erased_flash();
    let config = BootConfig::for_layout(LAYOUT, running).to_bytes();
    flash.write(BOOT_CONFIG_OFFSET, &config).unwrap();
    for slot in SlotId::ALL {
        let image = image_for(slot, 5000, 99 + slot.index() as u64);
        let mut padded = image.clone();
        padded.resize(image.len().next_multiple_of(4), 0xFF);
        flash.write(LAYOUT.slot(slot).offset, &padded).unwrap();
    }
    flash
}

/// An erased chip of the layout's size.
pub fn erased_flash() -> RamNor<Vec<u8>> {
    RamNor::from_storage(vec![0xFF; LAYOUT.flash_size as usize])
}

/// Lets the session's near deadlines pass, as time passes on a device whose client sends
/// nothing more: a complete image is verified and, after the grace for stray bytes,
/// committed. Deadlines further away (idle, header timeouts) are left alone.
pub fn settle(session: &mut Session<'_>, now: &mut Instant, flash: &mut RamNor<Vec<u8>>) {
    for _ in 0..4 {
        match session.poll_timeout() {
            Some(at) if at <= *now + COMMIT_GRACE => {
                *now = (*now).max(at);
                session.poll(*now, flash);
            }
            _ => return,
        }
    }
}

/// The boot config as stored (28 bytes).
pub fn config_bytes(flash: &RamNor<Vec<u8>>) -> Vec<u8> {
    flash.bytes()[BOOT_CONFIG_OFFSET as usize..BOOT_CONFIG_OFFSET as usize + 28].to_vec()
}

pub fn slot_bytes(flash: &RamNor<Vec<u8>>, slot: SlotId, len: usize) -> &[u8] {
    let offset = LAYOUT.slot(slot).offset as usize;
    &flash.bytes()[offset..offset + len]
}

/// xorshift64*: seeded, reproducible, no dependency.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn byte(&mut self) -> u8 {
        (self.next() >> 32) as u8
    }

    /// Uniform in `1..=max`.
    pub fn between_1_and(&mut self, max: usize) -> usize {
        1 + (self.next() % max as u64) as usize
    }
}

/// How a byte stream is cut into the pieces the device receives.
#[derive(Clone, Copy, Debug)]
pub enum Segmentation {
    Whole,
    OneByte,
    /// Random piece sizes from 1 to `max`, from a seed.
    Random {
        seed: u64,
        max: usize,
    },
}

impl Segmentation {
    pub fn all() -> Vec<Segmentation> {
        let mut all = vec![Segmentation::Whole, Segmentation::OneByte];
        for seed in 1..=4 {
            all.push(Segmentation::Random { seed, max: 7 });
            all.push(Segmentation::Random { seed, max: 1500 });
        }
        all
    }

    pub fn split<'a>(&self, data: &'a [u8]) -> Vec<&'a [u8]> {
        match *self {
            Segmentation::Whole => vec![data],
            Segmentation::OneByte => data.chunks(1).collect(),
            Segmentation::Random { seed, max } => {
                let mut rng = Rng::new(seed);
                let mut pieces = Vec::new();
                let mut rest = data;
                while !rest.is_empty() {
                    let n = rng.between_1_and(max).min(rest.len());
                    pieces.push(&rest[..n]);
                    rest = &rest[n..];
                }
                pieces
            }
        }
    }
}
