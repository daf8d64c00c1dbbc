//! Streams an image into a slot with one sector of RAM.
//!
//! The image never fits in RAM, so bytes collect in a single 4 KB sector buffer; each time
//! it fills, that sector is programmed, erased first if it is not yet. The last partial
//! sector is padded with 0xFF, the erased state, so the flash past the image reads exactly
//! like erased flash (the seed padded with zeros). Once the image is written, the same
//! buffer serves as scratch for reading it back.
//!
//! Erasing is most of a push's time on the chip (a 4 KB sector erase takes about 45 ms, a
//! 64 KB block erase about 150 ms, programming the sector's 16 pages about 11 ms), so by
//! default the writer erases a whole 64 KB block ahead of the data where the block lies in
//! the slot and the image needs enough of it ([`EraseStrategy::BlocksAhead`]). The seed's
//! sector-by-sector erase stays available ([`EraseStrategy::SectorBySector`]) as the
//! baseline the benchmark compares with. Either way nothing outside the range given to
//! [`SectorWriter::begin_in_slot`] is ever erased: the running slot and the boot config are
//! never touched. Where the slot was erased ahead of the push (the agent's pre-erase,
//! [`crate::session::Session::pre_erase`]), the writer only programs.

use core::fmt;

use crate::flash::{NorFlash, NorFlashError, NorFlashErrorKind};
use crate::irom_text;
use crate::layout::{BLOCK_SIZE, SECTOR_SIZE, Slot};
use crate::text::{self, Arg, IromText, Message, Sink};

pub const SECTOR: usize = SECTOR_SIZE as usize;

/// The one large buffer of the agent.
pub type SectorBuffer = [u8; SECTOR];

/// A block erase pays once the image needs this many of the block's 16 sectors: on
/// W25Q-class chips a 64 KB erase (150 ms typical) costs about 3.3 sector erases (45 ms).
pub const BLOCK_PAYS_FROM_SECTORS: u32 = 4;

/// How the writer erases the slot ahead of the data it programs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EraseStrategy {
    /// Erase each 4 KB sector right before programming it, as the seed's C agent did.
    SectorBySector,
    /// When the data reaches a 64 KB block boundary, erase the whole block if it lies in
    /// the erasable range and the image needs at least [`BLOCK_PAYS_FROM_SECTORS`] of its
    /// sectors; otherwise erase sector by sector.
    #[default]
    BlocksAhead,
}

/// A flash operation that failed, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteError {
    Erase {
        offset: u32,
        kind: NorFlashErrorKind,
    },
    Program {
        offset: u32,
        kind: NorFlashErrorKind,
    },
    /// More bytes than the writer was opened for: a bug in the caller, refused rather than
    /// written past the slot.
    PastEnd,
}

irom_text! {
    ERASE_FAILED = "flash erase at {} failed: {}";
    PROGRAM_FAILED = "flash write at {} failed: {}";
    PAST_END = "image bytes past the announced length";
    // embedded-storage's `Display` of `NorFlashErrorKind`, in IROM.
    NOT_ALIGNED = "Arguments are not properly aligned";
    OUT_OF_BOUNDS = "Arguments are out of bounds";
    OTHER = "An implementation specific error occurred";
}

/// What embedded-storage's `Display` says about `kind`.
pub(crate) fn kind_text(kind: NorFlashErrorKind) -> IromText {
    match kind {
        NorFlashErrorKind::NotAligned => NOT_ALIGNED,
        NorFlashErrorKind::OutOfBounds => OUT_OF_BOUNDS,
        _ => OTHER,
    }
}

impl Message for WriteError {
    fn write_message<S: Sink + ?Sized>(&self, out: &mut S) {
        let (template, offset, kind) = match *self {
            WriteError::Erase { offset, kind } => (ERASE_FAILED, offset, kind),
            WriteError::Program { offset, kind } => (PROGRAM_FAILED, offset, kind),
            WriteError::PastEnd => return out.push_text(PAST_END),
        };
        out.push_template(template, &[Arg::hex(offset), Arg::Text(kind_text(kind))]);
    }
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        text::display(self, f)
    }
}

/// Writes `len` bytes starting at a sector-aligned flash offset, a sector at a time.
pub struct SectorWriter<'a> {
    buffer: &'a mut SectorBuffer,
    /// Flash offset of the sector being filled.
    sector_at: u32,
    /// Bytes of that sector held in the buffer.
    filled: usize,
    /// Bytes still allowed, counting the buffered ones as written.
    remaining: u32,
    /// Flash offset just past the image.
    image_end: u32,
    /// The flash from the image start up to here was erased for this image.
    erased_to: u32,
    /// Erases never reach this offset: the end of the slot (or of the image's last sector).
    erase_limit: u32,
    strategy: EraseStrategy,
}

impl<'a> SectorWriter<'a> {
    /// A writer with the default strategy ([`EraseStrategy::BlocksAhead`]).
    pub fn new(buffer: &'a mut SectorBuffer) -> SectorWriter<'a> {
        SectorWriter::with_strategy(buffer, EraseStrategy::default())
    }

    pub fn with_strategy(buffer: &'a mut SectorBuffer, strategy: EraseStrategy) -> SectorWriter<'a> {
        SectorWriter {
            buffer,
            sector_at: 0,
            filled: 0,
            remaining: 0,
            image_end: 0,
            erased_to: 0,
            erase_limit: 0,
            strategy,
        }
    }

    pub fn strategy(&self) -> EraseStrategy {
        self.strategy
    }

    /// Starts an image of `len` bytes at `offset` (sector aligned; the caller checked that
    /// the range lies inside the slot). Erases stay within the image's own sectors, so a
    /// block is erased whole only where the image covers all of it.
    pub fn begin(&mut self, offset: u32, len: u32) {
        let image_sectors_end = offset.saturating_add(len.next_multiple_of(SECTOR_SIZE));
        self.begin_with_limit(offset, len, image_sectors_end);
    }

    /// Starts an image of `len` bytes at the start of `slot` (the caller checked that it
    /// fits). Erases may reach the end of the slot, so the block that holds the image's
    /// tail can be erased whole. The slot reads erased from its start up to `erased_to`
    /// (sector aligned; below the slot: nothing known): those sectors are only programmed.
    pub fn begin_in_slot(&mut self, slot: &Slot, len: u32, erased_to: u32) {
        debug_assert!(len <= slot.capacity);
        self.begin_with_limit(slot.offset, len, slot.end());
        self.erased_to = erased_to.max(slot.offset).min(slot.end());
    }

    fn begin_with_limit(&mut self, offset: u32, len: u32, erase_limit: u32) {
        debug_assert_eq!(offset % SECTOR_SIZE, 0);
        self.sector_at = offset;
        self.filled = 0;
        self.remaining = len;
        self.image_end = offset.saturating_add(len);
        self.erased_to = offset;
        self.erase_limit = erase_limit;
    }

    /// Bytes still expected.
    pub fn remaining(&self) -> u32 {
        self.remaining
    }

    /// Takes all of `data`, writing each sector as it fills.
    pub fn write<F: NorFlash>(&mut self, flash: &mut F, mut data: &[u8]) -> Result<(), WriteError> {
        if data.len() as u64 > u64::from(self.remaining) {
            return Err(WriteError::PastEnd);
        }
        while !data.is_empty() {
            let n = data.len().min(SECTOR - self.filled);
            self.buffer[self.filled..self.filled + n].copy_from_slice(&data[..n]);
            self.filled += n;
            self.remaining -= n as u32;
            data = &data[n..];
            if self.filled == SECTOR {
                self.flush(flash)?;
            }
        }
        Ok(())
    }

    /// Writes the last partial sector, padded with 0xFF. Call once `remaining()` is 0.
    pub fn finish<F: NorFlash>(&mut self, flash: &mut F) -> Result<(), WriteError> {
        if self.filled > 0 {
            self.buffer[self.filled..].fill(0xFF);
            self.flush(flash)?;
        }
        Ok(())
    }

    /// The sector buffer, for use as scratch once the image is written.
    pub fn buffer(&mut self) -> &mut SectorBuffer {
        self.buffer
    }

    fn flush<F: NorFlash>(&mut self, flash: &mut F) -> Result<(), WriteError> {
        const { assert!(SECTOR.is_multiple_of(F::ERASE_SIZE) && SECTOR.is_multiple_of(F::WRITE_SIZE)) };
        let at = self.sector_at;
        if at >= self.erased_to {
            let to = self.erase_end(at);
            flash.erase(at, to).map_err(|e| WriteError::Erase { offset: at, kind: e.kind() })?;
            self.erased_to = to;
        }
        // The tail past the data is already 0xFF after the erase: program only what holds
        // data, rounded up to the write unit (the padding there is 0xFF too).
        let program = self.filled.next_multiple_of(F::WRITE_SIZE).min(SECTOR);
        flash
            .write(at, &self.buffer[..program])
            .map_err(|e| WriteError::Program { offset: at, kind: e.kind() })?;
        self.sector_at += SECTOR_SIZE;
        self.filled = 0;
        Ok(())
    }

    /// Where the erase that starts at the not yet erased sector `at` ends: the end of its
    /// 64 KB block when a block erase is allowed there and pays, else the end of the sector.
    fn erase_end(&self, at: u32) -> u32 {
        let block_fits = at.is_multiple_of(BLOCK_SIZE) && self.erase_limit.saturating_sub(at) >= BLOCK_SIZE;
        let sectors_needed = self.image_end.saturating_sub(at).div_ceil(SECTOR_SIZE);
        if self.strategy == EraseStrategy::BlocksAhead
            && block_fits
            && sectors_needed >= BLOCK_PAYS_FROM_SECTORS
        {
            at + BLOCK_SIZE
        } else {
            at + SECTOR_SIZE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;
    use std::vec;
    use std::vec::Vec;

    use crate::flash::{FlashOp, RamNor, Recording};

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn writes_sector_by_sector_and_pads_the_tail_with_ff() {
        let mut flash = Recording::new(RamNor::from_storage(vec![0x00; 0x10000]));
        let mut buffer = [0u8; SECTOR];
        let mut writer = SectorWriter::new(&mut buffer);
        let image = pattern(2 * SECTOR + 10);
        writer.begin(0x2000, image.len() as u32);
        for chunk in image.chunks(333) {
            writer.write(&mut flash, chunk).unwrap();
        }
        assert_eq!(writer.remaining(), 0);
        writer.finish(&mut flash).unwrap();
        let bytes = flash.inner.bytes();
        assert_eq!(&bytes[0x2000..0x2000 + image.len()], &image[..]);
        assert!(bytes[0x2000 + image.len()..0x5000].iter().all(|&b| b == 0xFF), "tail padded with 0xFF");
        assert!(bytes[0x5000..0x6000].iter().all(|&b| b == 0), "nothing past the last sector");
        assert!(bytes[0x1000..0x2000].iter().all(|&b| b == 0), "nothing before the start");
        let log = flash.take_log();
        let erases: Vec<_> = log.iter().filter(|op| matches!(op, FlashOp::EraseSector(_))).collect();
        assert_eq!(
            erases,
            [&FlashOp::EraseSector(0x2000), &FlashOp::EraseSector(0x3000), &FlashOp::EraseSector(0x4000)]
        );
        assert_eq!(log.last(), Some(&FlashOp::Program { offset: 0x4000, len: 12 }), "tail rounded to 4");
    }

    #[test]
    fn an_exact_multiple_of_the_sector_writes_no_extra_sector() {
        let mut flash = RamNor::new(0x10000);
        let mut buffer = [0u8; SECTOR];
        let mut writer = SectorWriter::new(&mut buffer);
        writer.begin(0x1000, SECTOR as u32);
        writer.write(&mut flash, &pattern(SECTOR)).unwrap();
        let mut flash = Recording::new(flash);
        writer.finish(&mut flash).unwrap();
        assert!(flash.take_log().is_empty());
    }

    #[test]
    fn refuses_bytes_past_the_announced_length() {
        let mut flash = RamNor::new(0x10000);
        let mut buffer = [0u8; SECTOR];
        let mut writer = SectorWriter::new(&mut buffer);
        writer.begin(0x1000, 10);
        assert_eq!(writer.write(&mut flash, &[1; 11]), Err(WriteError::PastEnd));
        writer.write(&mut flash, &[1; 10]).unwrap();
        assert_eq!(writer.write(&mut flash, &[1]), Err(WriteError::PastEnd));
    }

    #[test]
    fn reports_where_the_flash_failed() {
        let mut flash = RamNor::new(0x4000);
        let mut buffer = [0u8; SECTOR];
        let mut writer = SectorWriter::new(&mut buffer);
        writer.begin(0x3000, 2 * SECTOR as u32);
        let err = writer.write(&mut flash, &pattern(2 * SECTOR)).unwrap_err();
        assert_eq!(err, WriteError::Erase { offset: 0x4000, kind: NorFlashErrorKind::OutOfBounds });
        assert_eq!(err.to_string(), "flash erase at 0x4000 failed: Arguments are out of bounds");
    }

    /// Writes `image` into `slot` of a chip full of 0x00 (nothing erased), in `chunk`-sized
    /// pieces, and returns the chip and its operations.
    fn push_into(
        slot: &Slot,
        image: &[u8],
        chunk: usize,
        strategy: EraseStrategy,
    ) -> (RamNor<Vec<u8>>, Vec<FlashOp>) {
        let mut flash = Recording::new(RamNor::from_storage(vec![0x00; 0x10_0000]));
        let mut buffer = [0u8; SECTOR];
        let mut writer = SectorWriter::with_strategy(&mut buffer, strategy);
        writer.begin_in_slot(slot, image.len() as u32, 0);
        for piece in image.chunks(chunk) {
            writer.write(&mut flash, piece).unwrap();
        }
        writer.finish(&mut flash).unwrap();
        let log = flash.take_log();
        (flash.inner, log)
    }

    fn erases(log: &[FlashOp]) -> Vec<FlashOp> {
        log.iter().copied().filter(|op| !matches!(op, FlashOp::Program { .. })).collect()
    }

    const USER2: Slot = crate::layout::DEFAULT_LAYOUT.slots[1];

    #[test]
    fn blocks_ahead_erases_whole_blocks_the_image_covers_and_sectors_elsewhere() {
        let mut flash = Recording::new(RamNor::from_storage(vec![0x00; 0x4_0000]));
        let mut buffer = [0u8; SECTOR];
        let mut writer = SectorWriter::new(&mut buffer);
        assert_eq!(writer.strategy(), EraseStrategy::BlocksAhead);
        let image = pattern(0x1_2000);
        writer.begin(0x1_0000, image.len() as u32);
        writer.write(&mut flash, &image).unwrap();
        writer.finish(&mut flash).unwrap();
        let log = flash.take_log();
        assert_eq!(
            erases(&log),
            [FlashOp::EraseBlock(0x1_0000), FlashOp::EraseSector(0x2_0000), FlashOp::EraseSector(0x2_1000)],
            "without the slot's end, the tail's block is not the writer's to erase"
        );
        assert_eq!(&flash.inner.bytes()[0x1_0000..0x2_2000], &image[..]);
        assert!(flash.inner.bytes()[0x2_2000..].iter().all(|&b| b == 0), "nothing past the image's sectors");
    }

    #[test]
    fn in_a_slot_the_tail_block_is_erased_whole_when_it_pays() {
        // user2 of the 1 MB layout starts 0x2000 into a block: 14 sectors, then blocks.
        let len = 0x6_4000 - 0x100; // ends 0x1000 short of 0xE6000: 6 sectors into 0xE0000
        let (flash, log) = push_into(&USER2, &pattern(len as usize), 1460, EraseStrategy::BlocksAhead);
        let mut expected: Vec<FlashOp> =
            (0x8_2000..0x9_0000).step_by(0x1000).map(FlashOp::EraseSector).collect();
        expected.extend((0x9_0000..=0xE_0000).step_by(0x1_0000).map(FlashOp::EraseBlock));
        assert_eq!(erases(&log), expected);
        let end = 0x8_2000 + len as usize;
        assert_eq!(&flash.bytes()[0x8_2000..end], &pattern(len as usize)[..]);
        assert!(flash.bytes()[end..0xF_0000].iter().all(|&b| b == 0xFF), "the rest of the tail block erased");
        assert!(flash.bytes()[0xF_0000..].iter().all(|&b| b == 0), "nothing past that block");
        assert!(flash.bytes()[..0x8_2000].iter().all(|&b| b == 0), "nothing before the slot");

        // Three sectors into the last block: three sector erases are cheaper than a block.
        let len = 0x6_0000 - 0x2000 + 0x2100;
        let (_, log) = push_into(&USER2, &pattern(len), 4096, EraseStrategy::BlocksAhead);
        let erased = erases(&log);
        assert_eq!(erased[erased.len() - 4], FlashOp::EraseBlock(0xD_0000));
        assert_eq!(
            erased[erased.len() - 3..],
            [FlashOp::EraseSector(0xE_0000), FlashOp::EraseSector(0xE_1000), FlashOp::EraseSector(0xE_2000)]
        );
    }

    #[test]
    fn a_block_that_reaches_past_the_slot_is_never_erased_whole() {
        // user2 ends at 0xFC000, inside the block at 0xF0000: the system area follows.
        let len = USER2.capacity as usize;
        let (flash, log) = push_into(&USER2, &pattern(len), 4000, EraseStrategy::BlocksAhead);
        let erased = erases(&log);
        let tail: Vec<FlashOp> = (0xF_0000..0xF_C000).step_by(0x1000).map(FlashOp::EraseSector).collect();
        assert_eq!(erased[erased.len() - 12..], tail[..]);
        assert_eq!(erased[erased.len() - 13], FlashOp::EraseBlock(0xE_0000));
        assert!(flash.bytes()[0xF_C000..].iter().all(|&b| b == 0), "the system area is untouched");
    }

    #[test]
    fn a_pre_erased_range_is_only_programmed() {
        // user2 erased from its start up to 0x9_5000 (into the block at 0x9_0000) beforehand.
        let mut flash = Recording::new(RamNor::from_storage(vec![0x00; 0x10_0000]));
        flash.inner.erase(0x8_2000, 0x9_5000).unwrap();
        flash.take_log();
        let len = 0x3_0000;
        let image = pattern(len);
        let mut buffer = [0u8; SECTOR];
        let mut writer = SectorWriter::new(&mut buffer);
        writer.begin_in_slot(&USER2, len as u32, 0x9_5000);
        for piece in image.chunks(1460) {
            writer.write(&mut flash, piece).unwrap();
        }
        writer.finish(&mut flash).unwrap();
        let mut expected: Vec<FlashOp> =
            (0x9_5000..0xA_0000).step_by(0x1000).map(FlashOp::EraseSector).collect();
        expected.extend([
            FlashOp::EraseBlock(0xA_0000),
            FlashOp::EraseSector(0xB_0000),
            FlashOp::EraseSector(0xB_1000),
        ]);
        assert_eq!(erases(&flash.take_log()), expected, "nothing below 0x95000 erased again");
        assert_eq!(&flash.inner.bytes()[0x8_2000..0x8_2000 + len], &image[..]);

        // A watermark outside the slot is clamped to it: below, nothing is taken as erased.
        let mut flash = Recording::new(RamNor::from_storage(vec![0x00; 0x10_0000]));
        let mut buffer = [0u8; SECTOR];
        let mut writer = SectorWriter::new(&mut buffer);
        writer.begin_in_slot(&USER2, 0x2000, 0x2000);
        writer.write(&mut flash, &pattern(0x2000)).unwrap();
        assert_eq!(
            erases(&flash.take_log()),
            [FlashOp::EraseSector(0x8_2000), FlashOp::EraseSector(0x8_3000)]
        );
    }

    #[test]
    fn sector_by_sector_erases_each_sector_right_before_programming_it() {
        let len = 3 * SECTOR + 100;
        let (flash, log) = push_into(&USER2, &pattern(len), 1000, EraseStrategy::SectorBySector);
        let mut expected = Vec::new();
        for sector in 0..4u32 {
            let at = 0x8_2000 + sector * SECTOR_SIZE;
            expected.push(FlashOp::EraseSector(at));
            let bytes = if sector < 3 { SECTOR_SIZE } else { 100u32.next_multiple_of(4) };
            expected.extend(
                (0..bytes)
                    .step_by(256)
                    .map(|page| FlashOp::Program { offset: at + page, len: (bytes - page).min(256) }),
            );
        }
        assert_eq!(log, expected);
        assert_eq!(&flash.bytes()[0x8_2000..0x8_2000 + len], &pattern(len)[..]);
    }

    mod props {
        use proptest::prelude::*;

        use super::*;
        use crate::layout::{BOOT_CONFIG_OFFSET, LAYOUTS};

        fn strategy() -> impl Strategy<Value = EraseStrategy> {
            prop_oneof![Just(EraseStrategy::SectorBySector), Just(EraseStrategy::BlocksAhead)]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            /// Any strategy, slot, length and segmentation: the slot holds the image, the
            /// last sector's tail is 0xFF, every erase lies inside the slot (blocks only
            /// whole inside it), no sector is erased twice, and nothing outside the slot
            /// changes: the boot config sector least of all.
            #[test]
            fn every_strategy_writes_the_image_and_erases_only_inside_the_slot(
                strategy in strategy(),
                slot in (0usize..2, 0usize..2).prop_map(|(layout, slot)| LAYOUTS[layout].slots[slot]),
                len in 1usize..0x2_4000,
                chunk in 1usize..6000,
                seed in any::<u8>(),
            ) {
                let len = len.min(slot.capacity as usize);
                let image: Vec<u8> = pattern(len).iter().map(|b| b ^ seed).collect();
                let (flash, log) = push_into(&slot, &image, chunk, strategy);
                let start = slot.offset as usize;
                let bytes = flash.bytes();
                prop_assert_eq!(&bytes[start..start + len], &image[..]);
                let sector_end = (start + len).next_multiple_of(SECTOR);
                prop_assert!(bytes[start + len..sector_end].iter().all(|&b| b == 0xFF));
                prop_assert!(bytes[..start].iter().all(|&b| b == 0), "nothing before the slot");
                prop_assert!(bytes[slot.end() as usize..].iter().all(|&b| b == 0), "nothing after the slot");
                prop_assert!(bytes[BOOT_CONFIG_OFFSET as usize..BOOT_CONFIG_OFFSET as usize + SECTOR].iter().all(|&b| b == 0));
                let mut erased = std::collections::BTreeSet::new();
                for op in erases(&log) {
                    let (at, size) = match op {
                        FlashOp::EraseSector(at) => (at, SECTOR_SIZE),
                        FlashOp::EraseBlock(at) => {
                            prop_assert_eq!(strategy, EraseStrategy::BlocksAhead);
                            (at, BLOCK_SIZE)
                        }
                        FlashOp::Program { .. } => unreachable!(),
                    };
                    prop_assert!(at >= slot.offset && at + size <= slot.end(), "{:?} outside {:?}", op, slot);
                    for sector in (at..at + size).step_by(SECTOR) {
                        prop_assert!(erased.insert(sector), "sector {:#x} erased twice", sector);
                    }
                }
                let image_sectors: Vec<u32> = (slot.offset..sector_end as u32).step_by(SECTOR).collect();
                prop_assert!(image_sectors.iter().all(|s| erased.contains(s)), "every image sector erased");
                if strategy == EraseStrategy::SectorBySector {
                    prop_assert_eq!(erased.into_iter().collect::<Vec<_>>(), image_sectors);
                }
            }
        }
    }

    #[test]
    fn messages_keep_embedded_storage_words() {
        for kind in [NorFlashErrorKind::NotAligned, NorFlashErrorKind::OutOfBounds, NorFlashErrorKind::Other]
        {
            assert_eq!(kind_text(kind).to_string(), kind.to_string());
            let program = WriteError::Program { offset: 0x8_2000, kind };
            assert_eq!(program.to_string(), format!("flash write at 0x82000 failed: {kind}"));
        }
        assert_eq!(WriteError::PastEnd.to_string(), "image bytes past the announced length");
    }
}
