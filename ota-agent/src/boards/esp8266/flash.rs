//! The SPI flash through the ROM routines. They share the SPI controller with the flash
//! cache, so each runs from IRAM with the cache off, then maps back the 1 MB window the
//! firmware runs from (rBoot's `Cache_Read_Enable_New` convention).

use crate::boot::handoff::{HANDOFF_ADDR, HandOff};
use crate::boot::{CONFIG_CURRENT_ROM_AT, CONFIG_MAGIC, CONFIG_ROMS_AT};
use crate::flash::{
    ErrorType, FlashOp, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash, WRITE_SIZE, erase_ops,
};
use crate::layout::{BLOCK_SIZE, BOOT_CONFIG_OFFSET, IROM_WINDOW, SECTOR_SIZE};

use super::rom;

/// A ROM routine failed, or a request broke the chip's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RomFlashError {
    NotAligned,
    OutOfBounds,
    /// The ROM returned this nonzero status.
    Rom(i32),
}

impl NorFlashError for RomFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            RomFlashError::NotAligned => NorFlashErrorKind::NotAligned,
            RomFlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            RomFlashError::Rom(_) => NorFlashErrorKind::Other,
        }
    }
}

/// The chip, `size` bytes, with the cache mapping to restore after each operation.
pub struct RomFlash {
    size: u32,
    odd: u32,
    two_mb: u32,
}

/// Bytes moved per ROM call when the caller's buffer is not 4-byte aligned.
const BOUNCE: usize = 64;

#[repr(align(4))]
struct Bounce([u8; BOUNCE]);

impl RomFlash {
    /// Takes over the flash of a `size`-byte chip. Learns which megabyte the running
    /// firmware is mapped from the way its start-up code chose it (the hand-off record, else
    /// rBoot's config, as rBoot's own cache hook reads it).
    pub fn new(size: u32) -> RomFlash {
        let megabyte = running_megabyte();
        RomFlash { size, odd: megabyte % 2, two_mb: megabyte / 2 }
    }

    fn check(&self, offset: u32, len: usize) -> Result<(), RomFlashError> {
        let end = offset.checked_add(len as u32).ok_or(RomFlashError::OutOfBounds)?;
        if end > self.size { Err(RomFlashError::OutOfBounds) } else { Ok(()) }
    }
}

impl ErrorType for RomFlash {
    type Error = RomFlashError;
}

impl ReadNorFlash for RomFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), RomFlashError> {
        self.check(offset, bytes.len())?;
        // SPIRead moves whole aligned words: go through an aligned bounce buffer.
        let mut bounce = Bounce([0; BOUNCE]);
        let mut done = 0;
        while done < bytes.len() {
            let at = offset + done as u32;
            let start = (at % 4) as usize;
            let take = (BOUNCE - start).min(bytes.len() - done);
            let words = (start + take).div_ceil(4) * 4;
            // SAFETY: aligned buffer of `words` <= BOUNCE bytes; address aligned down.
            let status = unsafe {
                read_iram(
                    at - start as u32,
                    bounce.0.as_mut_ptr().cast(),
                    words as u32,
                    self.odd,
                    self.two_mb,
                )
            };
            if status != 0 {
                return Err(RomFlashError::Rom(status));
            }
            bytes[done..done + take].copy_from_slice(&bounce.0[start..start + take]);
            done += take;
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.size as usize
    }
}

impl NorFlash for RomFlash {
    const WRITE_SIZE: usize = WRITE_SIZE;
    const ERASE_SIZE: usize = SECTOR_SIZE as usize;

    /// 64 KB block erases where a whole aligned block is covered: one command instead of 16.
    fn erase(&mut self, from: u32, to: u32) -> Result<(), RomFlashError> {
        if from % SECTOR_SIZE != 0 || to % SECTOR_SIZE != 0 || to < from {
            return Err(RomFlashError::NotAligned);
        }
        self.check(from, (to - from) as usize)?;
        for op in erase_ops(from, to) {
            let (at, block) = match op {
                FlashOp::EraseBlock(at) => (at, true),
                FlashOp::EraseSector(at) | FlashOp::Program { offset: at, .. } => (at, false),
            };
            // SAFETY: in range and aligned to the erase unit.
            let status = unsafe { erase_iram(at, block, self.odd, self.two_mb) };
            if status != 0 {
                return Err(RomFlashError::Rom(status));
            }
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), RomFlashError> {
        if offset % 4 != 0 || bytes.len() % 4 != 0 {
            return Err(RomFlashError::NotAligned);
        }
        self.check(offset, bytes.len())?;
        let mut bounce = Bounce([0; BOUNCE]);
        for (i, chunk) in bytes.chunks(BOUNCE).enumerate() {
            let source: *const u32 = if chunk.as_ptr() as usize % 4 == 0 {
                chunk.as_ptr().cast()
            } else {
                bounce.0[..chunk.len()].copy_from_slice(chunk);
                bounce.0.as_ptr().cast()
            };
            let at = offset + (i * BOUNCE) as u32;
            // SAFETY: aligned source of chunk.len() bytes (a multiple of 4), in range.
            let status = unsafe { write_iram(at, source, chunk.len() as u32, self.odd, self.two_mb) };
            if status != 0 {
                return Err(RomFlashError::Rom(status));
            }
        }
        Ok(())
    }
}

// The routines below run with the flash cache off: they must live in IRAM and call
// nothing but ROM code (the `rom` wrappers are `inline(always)`).

#[unsafe(link_section = ".iram0.text")]
#[inline(never)]
unsafe fn read_iram(offset: u32, dest: *mut u32, len: u32, odd: u32, two_mb: u32) -> i32 {
    unsafe {
        rom::cache_read_disable();
        let status = rom::spi_read(offset, dest, len);
        rom::cache_read_enable(odd, two_mb, 1);
        status
    }
}

#[unsafe(link_section = ".iram0.text")]
#[inline(never)]
unsafe fn write_iram(offset: u32, src: *const u32, len: u32, odd: u32, two_mb: u32) -> i32 {
    unsafe {
        rom::cache_read_disable();
        rom::spi_unlock();
        let status = rom::spi_write(offset, src, len);
        rom::cache_read_enable(odd, two_mb, 1);
        status
    }
}

#[unsafe(link_section = ".iram0.text")]
#[inline(never)]
unsafe fn erase_iram(offset: u32, block: bool, odd: u32, two_mb: u32) -> i32 {
    unsafe {
        rom::cache_read_disable();
        rom::spi_unlock();
        let status = if block {
            rom::spi_erase_block(offset / BLOCK_SIZE)
        } else {
            rom::spi_erase_sector(offset / SECTOR_SIZE)
        };
        rom::cache_read_enable(odd, two_mb, 1);
        status
    }
}

/// Which megabyte the start-up code mapped, by its own rule (cargo-tcpflash's
/// `tcpflash_map_flash`): the offset in tcpflash-boot's hand-off record when it is valid,
/// else `roms[current_rom] / 1 MB` from rBoot's config (no checksum check, like rBoot's
/// hook), else 0. Runs while the cache still maps the firmware (RTC memory needs no cache).
fn running_megabyte() -> u32 {
    let rtc = HANDOFF_ADDR as *const u32;
    // SAFETY: RTC user memory, always mapped, read a word at a time.
    let words = [0, 1, 2, 3].map(|i| unsafe { rtc.add(i).read_volatile() });
    match HandOff::parse_words(words) {
        Ok(handoff) => handoff.megabyte(),
        Err(_) => {
            let mut config = Bounce([0xFF; BOUNCE]);
            // SAFETY: an aligned DRAM buffer of BOUNCE bytes.
            unsafe { config_megabyte_iram(&mut config) }
        }
    }
}

/// `roms[current_rom] / 1 MB` of rBoot's config, or 0. The mapping is unknown until this
/// read, so it is computed and restored here, with the cache still off.
#[unsafe(link_section = ".iram0.text")]
#[inline(never)]
unsafe fn config_megabyte_iram(config: &mut Bounce) -> u32 {
    unsafe {
        rom::cache_read_disable();
        let status = rom::spi_read(BOOT_CONFIG_OFFSET, config.0.as_mut_ptr().cast(), 32);
        let bytes = &config.0;
        let mut megabyte = 0;
        if status == 0 && bytes[0] == CONFIG_MAGIC {
            let at = CONFIG_ROMS_AT + 4 * usize::from(bytes[CONFIG_CURRENT_ROM_AT] & 3);
            let rom = u32::from(bytes[at])
                | u32::from(bytes[at + 1]) << 8
                | u32::from(bytes[at + 2]) << 16
                | u32::from(bytes[at + 3]) << 24;
            megabyte = rom / IROM_WINDOW;
        }
        rom::cache_read_enable(megabyte % 2, megabyte / 2, 1);
        megabyte
    }
}
