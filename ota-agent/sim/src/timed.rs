//! Time on the virtual ESP8266: what a push costs a real board, where the flash chip and the
//! single CPU core set the pace.
//!
//! - [`FlashTimings`]: typical W25Q32-class figures (ESP-12 modules), configurable;
//! - [`TimedFlash`]: any `NorFlash` with those costs added up per operation (and, for
//!   `cargo xtask sim --timed`, really waited for, so the device stalls like a board);
//! - [`flash_floor`]: the least a chip needs to erase and program an image in a slot;
//! - [`image_of_len`]: valid images of a chosen size, for benchmarks.
//!
//! The deterministic push model that uses them is [`super::timed_push`].

use std::time::Duration;

use ota_agent::descriptor::Descriptor;
use ota_agent::flash::{ErrorType, FlashOp, NorFlash, ReadNorFlash, erase_ops, program_ops};
use ota_agent::image::{self, FlashParams, FlashSize, Segment};
use ota_agent::layout::{BLOCK_SIZE, FlashLayout, SECTOR_SIZE, Slot};

/// How long the chip takes for each operation. Defaults: typical values of the W25Q32 data
/// sheet (the 4 MB chip on ESP-12 modules); reads at 40 MHz dual I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlashTimings {
    /// 4 KB sector erase (tSE).
    pub sector_erase: Duration,
    /// 64 KB block erase (tBE2).
    pub block_erase: Duration,
    /// One page program (tPP), charged per program operation: a partial page costs a whole
    /// one.
    pub page_program: Duration,
    /// Reading 64 bytes, one SPI transfer of the ESP8266's controller: 8 command and 24
    /// address bits, then 512 data bits two at a time, at 40 MHz, about 7 us.
    pub read_64_bytes: Duration,
}

impl Default for FlashTimings {
    fn default() -> FlashTimings {
        FlashTimings {
            sector_erase: Duration::from_millis(45),
            block_erase: Duration::from_millis(150),
            page_program: Duration::from_micros(700),
            read_64_bytes: Duration::from_micros(7),
        }
    }
}

impl FlashTimings {
    /// Time to read `len` bytes.
    pub fn read(&self, len: usize) -> Duration {
        self.read_64_bytes * len.div_ceil(64) as u32
    }
}

/// Operations and time spent on them, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlashWork {
    pub sector_erases: u32,
    pub block_erases: u32,
    pub page_programs: u32,
    pub bytes_read: u64,
    pub erase: Duration,
    pub program: Duration,
    pub read: Duration,
}

impl FlashWork {
    pub fn total(&self) -> Duration {
        self.erase + self.program + self.read
    }
}

/// A `NorFlash` whose operations take time: each successful call adds its modelled cost to
/// [`TimedFlash::work`] and to the busy time a simulation collects with
/// [`TimedFlash::take_busy`]. With [`TimedFlash::sleeping`], each call also really sleeps
/// that long, so the thread calling it is stalled as a board's single core is.
///
/// Erases are costed as the ESP8266 drivers perform them (`RomFlash`, `RamNor`): 64 KB
/// block commands where an aligned block is covered, sector commands elsewhere; a write is
/// one page program per 256-byte page it touches.
#[derive(Debug)]
pub struct TimedFlash<F> {
    inner: F,
    timings: FlashTimings,
    work: FlashWork,
    busy: Duration,
    sleep: bool,
}

impl<F> TimedFlash<F> {
    pub fn new(inner: F, timings: FlashTimings) -> TimedFlash<F> {
        TimedFlash { inner, timings, work: FlashWork::default(), busy: Duration::ZERO, sleep: false }
    }

    /// Like [`TimedFlash::new`], and every operation sleeps for its modelled time.
    pub fn sleeping(inner: F, timings: FlashTimings) -> TimedFlash<F> {
        TimedFlash { sleep: true, ..TimedFlash::new(inner, timings) }
    }

    pub fn timings(&self) -> &FlashTimings {
        &self.timings
    }

    /// Everything done so far.
    pub fn work(&self) -> FlashWork {
        self.work
    }

    /// Modelled time spent since the last call.
    pub fn take_busy(&mut self) -> Duration {
        std::mem::take(&mut self.busy)
    }

    pub fn inner(&self) -> &F {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut F {
        &mut self.inner
    }

    pub fn into_inner(self) -> F {
        self.inner
    }

    fn spend(&mut self, time: Duration) {
        self.busy += time;
        if self.sleep {
            std::thread::sleep(time);
        }
    }
}

impl<F: ErrorType> ErrorType for TimedFlash<F> {
    type Error = F::Error;
}

impl<F: ReadNorFlash> ReadNorFlash for TimedFlash<F> {
    const READ_SIZE: usize = F::READ_SIZE;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.inner.read(offset, bytes)?;
        let time = self.timings.read(bytes.len());
        self.work.bytes_read += bytes.len() as u64;
        self.work.read += time;
        self.spend(time);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

impl<F: NorFlash> NorFlash for TimedFlash<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.inner.erase(from, to)?;
        let (blocks, sectors) = erase_commands(from, to);
        let time = self.timings.block_erase * blocks + self.timings.sector_erase * sectors;
        self.work.block_erases += blocks;
        self.work.sector_erases += sectors;
        self.work.erase += time;
        self.spend(time);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.inner.write(offset, bytes)?;
        let pages = program_ops(offset, bytes.len() as u32).count() as u32;
        let time = self.timings.page_program * pages;
        self.work.page_programs += pages;
        self.work.program += time;
        self.spend(time);
        Ok(())
    }
}

/// Block and sector commands an erase of `from..to` takes (the drivers' rule).
fn erase_commands(from: u32, to: u32) -> (u32, u32) {
    erase_ops(from, to).fold((0, 0), |(blocks, sectors), op| match op {
        FlashOp::EraseBlock(_) => (blocks + 1, sectors),
        _ => (blocks, sectors + 1),
    })
}

/// The flash floor of an image: erase the sectors it occupies in the cheapest way the slot
/// allows (a 64 KB block wherever the block lies in the slot and costs less than the
/// sectors it replaces) and program each of its pages once. Nothing else: no network, no
/// reading back, no boot config.
pub fn flash_floor(slot: &Slot, len: u32, timings: &FlashTimings) -> FlashWork {
    let mut floor = FlashWork::default();
    let end = slot.offset + len.next_multiple_of(SECTOR_SIZE);
    let mut block = slot.offset - slot.offset % BLOCK_SIZE;
    while block < end {
        let first = block.max(slot.offset);
        let sectors = (end.min(block + BLOCK_SIZE) - first) / SECTOR_SIZE;
        let block_allowed = block >= slot.offset && block + BLOCK_SIZE <= slot.end();
        if block_allowed && timings.block_erase < timings.sector_erase * sectors {
            floor.block_erases += 1;
            floor.erase += timings.block_erase;
        } else {
            floor.sector_erases += sectors;
            floor.erase += timings.sector_erase * sectors;
        }
        block += BLOCK_SIZE;
    }
    floor.page_programs = program_ops(slot.offset, len).count() as u32;
    floor.program = timings.page_program * floor.page_programs;
    floor
}

/// A valid image linked for `slot` of `layout`, as long as the format allows up to `len`
/// bytes (v2 images are 4 more than a multiple of 16). Its IROM is the slot descriptor
/// followed by pseudo-random bytes drawn from `seed`, so no two seeds give the same image.
pub fn image_of_len(layout: &FlashLayout, slot: &Slot, len: usize, seed: u8) -> Vec<u8> {
    // Header (8), IROM header (8), IROM, header (8), one 64-byte IRAM segment with its
    // header, zeros to 15 mod 16, checksum byte, CRC (4).
    const OVERHEAD: usize = 8 + 8 + 8 + 8 + 64 + 15 + 1 + 4;
    assert!(len >= OVERHEAD + ota_agent::descriptor::SIZE + 16, "an image of {len} bytes is too small");
    let irom_len = (len - OVERHEAD).next_multiple_of(16) - 16;
    let descriptor = Descriptor::new(slot.irom_link_addr(), [seed; 8], "bench", "1.0.0")
        .expect("the descriptor's fields fit");
    let mut irom = descriptor.to_bytes().to_vec();
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(seed);
    while irom.len() < irom_len {
        // xorshift64: cheap bytes that look like code to a flash chip (neither 0x00 nor 0xFF).
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        irom.extend_from_slice(&state.to_le_bytes()[..(irom_len - irom.len()).min(8)]);
    }
    let iram = [seed ^ 0x5A; 64];
    let params = FlashParams {
        size: FlashSize::from_name(layout.name).expect("every layout name is an esptool flash size"),
        ..FlashParams::default()
    };
    let mut out = Vec::with_capacity(len);
    image::write_v2(params, 0x4010_0004, &irom, &[Segment { addr: 0x4010_0000, data: &iram }], &mut |b| {
        out.extend_from_slice(b)
    })
    .expect("a valid image");
    assert!(out.len() <= len && out.len() + 16 > len, "{} bytes for {len}", out.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ota_agent::flash::{RamNor, Recording};
    use ota_agent::layout::{DEFAULT_LAYOUT, LAYOUTS, SlotId};

    #[test]
    fn each_operation_costs_its_chip_time() {
        let timings = FlashTimings::default();
        let mut flash = TimedFlash::new(Recording::new(RamNor::new(0x4_0000)), timings);
        flash.erase(0xE000, 0x2_1000).unwrap();
        flash.write(0x1_00F0, &[0xAA; 0x120]).unwrap();
        let mut buf = [0u8; 100];
        flash.read(0x1_0000, &mut buf).unwrap();
        // The costing follows the driver's operations (RamNor's own tests pin those down:
        // sectors at 0xE000 and 0xF000, the block at 0x1_0000, a sector at 0x2_0000, three
        // page programs).
        assert_eq!(flash.inner_mut().take_log().len(), 7);
        let work = flash.work();
        assert_eq!((work.sector_erases, work.block_erases, work.page_programs), (3, 1, 3));
        assert_eq!(work.erase, Duration::from_millis(3 * 45 + 150));
        assert_eq!(work.program, Duration::from_micros(3 * 700));
        assert_eq!(work.read, Duration::from_micros(2 * 7), "100 bytes are two 64-byte transfers");
        assert_eq!(flash.take_busy(), work.total());
        assert_eq!(flash.take_busy(), Duration::ZERO, "taken once");
    }

    #[test]
    fn refused_operations_cost_nothing() {
        let mut flash = TimedFlash::new(RamNor::new(0x2000), FlashTimings::default());
        assert!(flash.erase(0x1000, 0x3000).is_err());
        assert!(flash.write(2, &[0; 4]).is_err());
        assert_eq!(flash.work(), FlashWork::default());
    }

    #[test]
    fn the_floor_erases_with_the_cheapest_commands_the_slot_allows() {
        let timings = FlashTimings::default();
        let user2 = DEFAULT_LAYOUT.slot(SlotId::User2);
        // 100 sectors from 0x82000: 14 sectors up to 0x90000, 5 whole blocks, then 6
        // sectors of the block at 0xE0000, which lies in the slot: one block erase.
        let floor = flash_floor(user2, 100 * SECTOR_SIZE, &timings);
        assert_eq!((floor.sector_erases, floor.block_erases, floor.page_programs), (14, 6, 1600));
        assert_eq!(
            floor.total(),
            Duration::from_millis(14 * 45 + 6 * 150) + Duration::from_micros(1600 * 700)
        );
        // Three sectors into a block: sectors are cheaper.
        let floor = flash_floor(user2, 14 * SECTOR_SIZE + 3 * SECTOR_SIZE, &timings);
        assert_eq!((floor.sector_erases, floor.block_erases), (17, 0));
        // user2 ends at 0xFC000, inside its last block: that block is never erased whole.
        let floor = flash_floor(user2, user2.capacity, &timings);
        assert_eq!((floor.sector_erases, floor.block_erases), (14 + 12, 6));
        assert_eq!(floor.page_programs, user2.capacity / ota_agent::flash::PAGE_SIZE);
    }

    #[test]
    fn images_of_a_chosen_length_are_valid_for_their_slot() {
        for layout in [DEFAULT_LAYOUT, &LAYOUTS[3]] {
            for slot in &layout.slots {
                let image = image_of_len(layout, slot, 400 * 1024, 7);
                assert!(image.len() <= 400 * 1024 && image.len() > 400 * 1024 - 16);
                let mut flash = RamNor::new(layout.flash_size);
                let padded = image.len().next_multiple_of(4);
                let mut bytes = image.clone();
                bytes.resize(padded, 0xFF);
                flash.write(slot.offset, &bytes).unwrap();
                let mut scratch = [0u8; 4096];
                let info =
                    image::verify_for_slot(&mut flash, slot, image.len() as u32, &mut scratch, None).unwrap();
                assert_eq!(info.descriptor.unwrap().name(), "bench");
            }
        }
        assert_ne!(
            image_of_len(DEFAULT_LAYOUT, &DEFAULT_LAYOUT.slots[0], 8192, 1),
            image_of_len(DEFAULT_LAYOUT, &DEFAULT_LAYOUT.slots[0], 8192, 2)
        );
    }
}
