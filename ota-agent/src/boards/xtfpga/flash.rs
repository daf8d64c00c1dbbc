//! The board's CFI parallel flash (Intel command set 1, 16 bits wide, 64 KB blocks, 4 MB;
//! QEMU's `-drive if=pflash`, whose writes persist to the file) as the agent's `NorFlash`,
//! with the agent's rules: 4-byte writes and 4 KB erases.
//!
//! Reads go straight to the array. Programs go through the chip's write buffer (as many
//! words per command as its CFI table allows): under QEMU each command persists to the file
//! at once, so one command per word would make a 64 KB block rewrite take seconds. The
//! driver returns the chip to read mode after each call.

use crate::flash::{ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash, WRITE_SIZE};
use crate::layout::SECTOR_SIZE;

use super::ram::BLOCK_BUFFER;
use super::{FLASH_BASE as BASE, FLASH_SIZE as SIZE};

/// The chip's only erase unit.
pub const CHIP_BLOCK: u32 = 0x1_0000;

const READ_ARRAY: u16 = 0xFF;
const CLEAR_STATUS: u16 = 0x50;
const BLOCK_ERASE: u16 = 0x20;
const CONFIRM: u16 = 0xD0;
const WRITE_TO_BUFFER: u16 = 0xE8;
const CFI_QUERY: u16 = 0x98;
/// CFI table entries (16-bit words): "QRY", and log2 of the write buffer's bytes.
const CFI_QRY: u32 = 0x10;
const CFI_WRITE_BUFFER: u32 = 0x2A;
const STATUS_READY: u16 = 0x80;
/// Erase error, program error, low programming voltage, block locked.
const STATUS_ERRORS: u16 = 0x3A;
/// Status polls before giving up (QEMU is ready at the first).
const POLLS: u32 = 1_000_000;

/// A request broke the agent's rules, or the chip reported a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CfiFlashError {
    NotAligned,
    OutOfBounds,
    /// The status register after a failed erase or program.
    Status(u16),
    /// The chip never became ready.
    Timeout,
}

impl NorFlashError for CfiFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            CfiFlashError::NotAligned => NorFlashErrorKind::NotAligned,
            CfiFlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            CfiFlashError::Status(_) | CfiFlashError::Timeout => NorFlashErrorKind::Other,
        }
    }
}

/// The flash chip.
pub struct CfiFlash {
    /// Bytes per buffered program.
    buffer: u32,
}

fn word_at(offset: u32) -> *mut u16 {
    (BASE + offset) as *mut u16
}

/// Writes a command to the chip at `offset` (which selects the block).
fn command(offset: u32, command: u16) {
    // SAFETY: an address inside the flash's window; writes there are chip commands.
    unsafe { word_at(offset).write_volatile(command) };
}

/// Waits for the operation at `offset` to finish, then returns the chip to read mode.
fn finish(offset: u32) -> Result<(), CfiFlashError> {
    for _ in 0..POLLS {
        // SAFETY: in command mode a read anywhere in the chip returns the status register.
        let status = unsafe { word_at(offset).read_volatile() };
        if status & STATUS_READY != 0 {
            if status & STATUS_ERRORS != 0 {
                command(offset, CLEAR_STATUS);
                command(offset, READ_ARRAY);
                return Err(CfiFlashError::Status(status));
            }
            return Ok(());
        }
    }
    command(offset, READ_ARRAY);
    Err(CfiFlashError::Timeout)
}

fn erase_block(block: u32) -> Result<(), CfiFlashError> {
    command(block, CLEAR_STATUS);
    command(block, BLOCK_ERASE);
    command(block, CONFIRM);
    let result = finish(block);
    command(block, READ_ARRAY);
    result
}

/// The chip's write buffer in bytes, from its CFI table (one word if it has none).
fn write_buffer_bytes() -> u32 {
    command(0, CFI_QUERY);
    // SAFETY: in query mode, reads return CFI table entries (at twice their index).
    let cfi = |entry: u32| unsafe { word_at(2 * entry).read_volatile() } & 0xFF;
    let qry = [cfi(CFI_QRY), cfi(CFI_QRY + 1), cfi(CFI_QRY + 2)] == [0x51, 0x52, 0x59];
    let log2 = cfi(CFI_WRITE_BUFFER) as u32;
    command(0, READ_ARRAY);
    if qry && (1..=11).contains(&log2) { 1 << log2 } else { 2 }
}

/// Programs `words` from `offset` on through the write buffer, one aligned buffer's worth
/// per command, skipping stretches that stay erased.
fn program(offset: u32, words: &[u16], buffer: u32) -> Result<(), CfiFlashError> {
    command(offset, CLEAR_STATUS);
    let mut done = 0;
    while done < words.len() {
        let at = offset + 2 * done as u32;
        // The buffer is a power of two: a mask, not a division (which the lx106 lacks).
        let room = ((buffer - (at & (buffer - 1))) / 2) as usize;
        let chunk = &words[done..words.len().min(done + room)];
        done += chunk.len();
        if chunk.iter().all(|&word| word == 0xFFFF) {
            continue;
        }
        command(at, WRITE_TO_BUFFER);
        finish(at)?;
        command(at, chunk.len() as u16 - 1);
        for (i, &word) in chunk.iter().enumerate() {
            // SAFETY: in the flash's window; in a buffered program these writes are the data.
            unsafe { word_at(at + 2 * i as u32).write_volatile(word) };
        }
        command(at, CONFIRM);
        finish(at)?;
    }
    command(offset, READ_ARRAY);
    Ok(())
}

impl CfiFlash {
    /// Takes over the chip and puts it in read mode. One per board.
    pub fn new() -> CfiFlash {
        CfiFlash { buffer: write_buffer_bytes() }
    }

    fn check(offset: u32, len: usize) -> Result<(), CfiFlashError> {
        let end = offset.checked_add(len as u32).ok_or(CfiFlashError::OutOfBounds)?;
        if end > SIZE { Err(CfiFlashError::OutOfBounds) } else { Ok(()) }
    }

    /// Erases `from..to` inside the block at `block` and nothing else, through the 64 KB
    /// buffer: read the block, erase it, program back what lies outside `from..to`.
    ///
    /// This is NOT power-cut safe the way a real chip's 4 KB sector erase is: a cut after
    /// the block erase loses the rest of the block (for the boot config's sector, the
    /// bootloader's and user1's first bytes). The agent's own guarantees assume a chip
    /// with 4 KB erases; this board only offers 64 KB ones.
    fn erase_inside_block(&mut self, block: u32, from: u32, to: u32) -> Result<(), CfiFlashError> {
        const WORDS: usize = CHIP_BLOCK as usize / 2;
        // SAFETY: board RAM reserved for this buffer (see `super::ram`), used only here and
        // never while another reference to it exists.
        let saved = unsafe { core::slice::from_raw_parts_mut(BLOCK_BUFFER as *mut u16, WORDS) };
        for (i, word) in saved.iter_mut().enumerate() {
            // SAFETY: the chip is in read mode; the block is inside the flash's window.
            *word = unsafe { word_at(block + 2 * i as u32).read_volatile() };
        }
        let cleared = ((from - block) / 2) as usize..((to - block) / 2) as usize;
        saved[cleared].fill(0xFFFF);
        erase_block(block)?;
        program(block, saved, self.buffer)
    }
}

impl CfiFlash {
    /// Programs the 4-byte aligned word at `offset` (bits only go from 1 to 0) in one
    /// buffered program: what a bootloader needs, without `write`'s staging buffer.
    pub fn program_word(&mut self, offset: u32, value: u32) -> Result<(), CfiFlashError> {
        if !offset.is_multiple_of(WRITE_SIZE as u32) {
            return Err(CfiFlashError::NotAligned);
        }
        CfiFlash::check(offset, 4)?;
        program(offset, &[value as u16, (value >> 16) as u16], self.buffer)
    }

    /// Copies `len` bytes (a multiple of 4) of flash at `offset` to RAM at `to`, one 32-bit
    /// store per word: what a bootloader does with an image's segments (instruction RAM
    /// takes only word stores on the lx106). `offset` need not be aligned.
    ///
    /// # Safety
    /// `to..to + len` must be word-aligned memory that nothing running still needs.
    pub unsafe fn copy_words(&mut self, offset: u32, to: *mut u32, len: u32) -> Result<(), CfiFlashError> {
        CfiFlash::check(offset, len as usize)?;
        for i in 0..len / 4 {
            let mut word = [0u8; 4];
            self.read(offset + 4 * i, &mut word)?;
            // SAFETY: inside the caller's range.
            unsafe { to.add(i as usize).write_volatile(u32::from_le_bytes(word)) };
        }
        Ok(())
    }
}

impl Default for CfiFlash {
    fn default() -> Self {
        CfiFlash::new()
    }
}

impl ErrorType for CfiFlash {
    type Error = CfiFlashError;
}

impl ReadNorFlash for CfiFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), CfiFlashError> {
        CfiFlash::check(offset, bytes.len())?;
        for (i, byte) in bytes.iter_mut().enumerate() {
            // SAFETY: the chip is in read mode; in range (checked above).
            *byte = unsafe { ((BASE + offset + i as u32) as *const u8).read_volatile() };
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        SIZE as usize
    }
}

impl NorFlash for CfiFlash {
    const WRITE_SIZE: usize = WRITE_SIZE;
    const ERASE_SIZE: usize = SECTOR_SIZE as usize;

    /// Whole blocks with one erase each; the parts of a block through its buffer.
    fn erase(&mut self, from: u32, to: u32) -> Result<(), CfiFlashError> {
        if from % SECTOR_SIZE != 0 || to % SECTOR_SIZE != 0 || to < from {
            return Err(CfiFlashError::NotAligned);
        }
        CfiFlash::check(from, (to - from) as usize)?;
        let mut at = from;
        while at < to {
            let block = at - at % CHIP_BLOCK;
            let end = to.min(block + CHIP_BLOCK);
            if at == block && end == block + CHIP_BLOCK {
                erase_block(block)?;
            } else {
                self.erase_inside_block(block, at, end)?;
            }
            at = end;
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), CfiFlashError> {
        if offset as usize % WRITE_SIZE != 0 || bytes.len() % WRITE_SIZE != 0 {
            return Err(CfiFlashError::NotAligned);
        }
        CfiFlash::check(offset, bytes.len())?;
        // Words through a small stack buffer: `bytes` need not be 2-byte aligned.
        let mut words = [0u16; 128];
        for (i, chunk) in bytes.chunks(2 * words.len()).enumerate() {
            let words = &mut words[..chunk.len() / 2];
            for (word, pair) in words.iter_mut().zip(chunk.chunks_exact(2)) {
                *word = u16::from_le_bytes([pair[0], pair[1]]);
            }
            program(offset + (i * 256) as u32, words, self.buffer)?;
        }
        Ok(())
    }
}
