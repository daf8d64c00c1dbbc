//! The flash through the SDK's `spi_flash_*`. The SDK turns the flash cache off and on
//! around each call itself (those functions live in its IRAM), so the callers here may run
//! from flash, unlike the ROM routines the bare-metal driver calls.
#![allow(unsafe_code)] // calls into the SDK: each says why it is sound

use crate::flash::{ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash, WRITE_SIZE};
use crate::layout::SECTOR_SIZE;

use super::ffi;

/// Words moved per SDK call through the aligned bounce buffer.
const BOUNCE_WORDS: usize = 16;

/// An SDK flash call failed, or a request broke the chip's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SdkFlashError {
    NotAligned,
    OutOfBounds,
    /// The SDK returned this `SpiFlashOpResult` (1 error, 2 timeout).
    Sdk(u32),
}

impl NorFlashError for SdkFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            SdkFlashError::NotAligned => NorFlashErrorKind::NotAligned,
            SdkFlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            SdkFlashError::Sdk(_) => NorFlashErrorKind::Other,
        }
    }
}

/// The chip, `size` bytes, through the SDK.
pub struct SdkFlash {
    size: u32,
}

impl SdkFlash {
    pub const fn new(size: u32) -> SdkFlash {
        SdkFlash { size }
    }

    fn check(&self, offset: u32, len: usize) -> Result<(), SdkFlashError> {
        let end = u32::try_from(len).ok().and_then(|len| offset.checked_add(len));
        match end {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(SdkFlashError::OutOfBounds),
        }
    }
}

fn status(result: u32) -> Result<(), SdkFlashError> {
    if result == ffi::SPI_FLASH_RESULT_OK { Ok(()) } else { Err(SdkFlashError::Sdk(result)) }
}

impl ErrorType for SdkFlash {
    type Error = SdkFlashError;
}

impl ReadNorFlash for SdkFlash {
    const READ_SIZE: usize = 1;

    /// Any offset and length: whole aligned words are read into a bounce buffer (the SDK
    /// wants an aligned destination and length) and the wanted bytes copied out.
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), SdkFlashError> {
        self.check(offset, bytes.len())?;
        let mut bounce = [0u32; BOUNCE_WORDS];
        let mut done = 0;
        while done < bytes.len() {
            let at = offset + done as u32;
            let skip = (at % 4) as usize;
            let take = (BOUNCE_WORDS * 4 - skip).min(bytes.len() - done);
            let words = (skip + take).div_ceil(4);
            // SAFETY: `bounce` is an aligned buffer of at least `words` words, alive for the call.
            status(unsafe {
                ffi::spi_flash_read(at - skip as u32, bounce.as_mut_ptr(), (words * 4) as u32)
            })?;
            for (i, byte) in bytes[done..done + take].iter_mut().enumerate() {
                let k = skip + i;
                *byte = bounce[k / 4].to_le_bytes()[k % 4];
            }
            done += take;
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.size as usize
    }
}

impl NorFlash for SdkFlash {
    const WRITE_SIZE: usize = WRITE_SIZE;
    const ERASE_SIZE: usize = SECTOR_SIZE as usize;

    /// Sector by sector: the SDK has no block erase.
    fn erase(&mut self, from: u32, to: u32) -> Result<(), SdkFlashError> {
        if !from.is_multiple_of(SECTOR_SIZE) || !to.is_multiple_of(SECTOR_SIZE) || to < from {
            return Err(SdkFlashError::NotAligned);
        }
        self.check(from, (to - from) as usize)?;
        for sector in from / SECTOR_SIZE..to / SECTOR_SIZE {
            let sector = u16::try_from(sector).map_err(|_| SdkFlashError::OutOfBounds)?;
            // SAFETY: a sector inside the chip; the SDK handles the cache.
            status(unsafe { ffi::spi_flash_erase_sector(sector) })?;
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SdkFlashError> {
        if !offset.is_multiple_of(4) || !bytes.len().is_multiple_of(4) {
            return Err(SdkFlashError::NotAligned);
        }
        self.check(offset, bytes.len())?;
        let mut bounce = [0u32; BOUNCE_WORDS];
        for (i, chunk) in bytes.chunks(BOUNCE_WORDS * 4).enumerate() {
            for (word, quad) in bounce.iter_mut().zip(chunk.chunks_exact(4)) {
                *word = u32::from_le_bytes([quad[0], quad[1], quad[2], quad[3]]);
            }
            let at = offset + (i * BOUNCE_WORDS * 4) as u32;
            // SAFETY: `bounce` is aligned and holds `chunk.len()` (a multiple of 4) bytes.
            status(unsafe { ffi::spi_flash_write(at, bounce.as_ptr(), chunk.len() as u32) })?;
        }
        Ok(())
    }
}
