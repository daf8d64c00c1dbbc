//! Streams an image into a slot with one sector of RAM.
//!
//! The image never fits in RAM, so bytes collect in a single 4 KB sector buffer; each time
//! it fills, that sector is erased and programmed. The last partial sector is padded with
//! 0xFF, the erased state, so the flash past the image reads exactly like erased flash (the
//! seed padded with zeros). Once the image is written, the same buffer serves as scratch for
//! reading it back.

use core::fmt;

use crate::flash::{NorFlash, NorFlashError, NorFlashErrorKind};
use crate::irom_text;
use crate::layout::SECTOR_SIZE;
use crate::text::{self, Arg, IromText, Message, Sink};

pub const SECTOR: usize = SECTOR_SIZE as usize;

/// The one large buffer of the agent.
pub type SectorBuffer = [u8; SECTOR];

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
fn kind_text(kind: NorFlashErrorKind) -> IromText {
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
}

impl<'a> SectorWriter<'a> {
    pub fn new(buffer: &'a mut SectorBuffer) -> SectorWriter<'a> {
        SectorWriter { buffer, sector_at: 0, filled: 0, remaining: 0 }
    }

    /// Starts an image of `len` bytes at `offset` (sector aligned; the caller checked that
    /// the range lies inside the slot).
    pub fn begin(&mut self, offset: u32, len: u32) {
        debug_assert_eq!(offset % SECTOR_SIZE, 0);
        self.sector_at = offset;
        self.filled = 0;
        self.remaining = len;
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
        flash.erase(at, at + SECTOR_SIZE).map_err(|e| WriteError::Erase { offset: at, kind: e.kind() })?;
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
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::flash::{FlashOp, RamNor};

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn writes_sector_by_sector_and_pads_the_tail_with_ff() {
        let mut flash = RamNor::from_bytes(vec![0x00; 0x10000]);
        let mut buffer = [0u8; SECTOR];
        let mut writer = SectorWriter::new(&mut buffer);
        let image = pattern(2 * SECTOR + 10);
        writer.begin(0x2000, image.len() as u32);
        flash.record();
        for chunk in image.chunks(333) {
            writer.write(&mut flash, chunk).unwrap();
        }
        assert_eq!(writer.remaining(), 0);
        writer.finish(&mut flash).unwrap();
        let bytes = flash.bytes();
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
        flash.record();
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
