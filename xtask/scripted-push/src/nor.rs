//! A NOR flash in a fixed array, for targets without an allocator: `RamNor` (std only) is the
//! host's model. This one is as strict about what real NOR refuses (alignment, bounds,
//! programming bytes that are not erased) but has no power-cut machinery.

use ota_agent::flash::{ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash, WRITE_SIZE};
use ota_agent::layout::SECTOR_SIZE;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArrayNorError {
    NotAligned,
    OutOfBounds,
    /// A program over bytes that are not erased: real NOR would AND them silently.
    NotErased {
        offset: u32,
    },
}

impl NorFlashError for ArrayNorError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            ArrayNorError::NotAligned => NorFlashErrorKind::NotAligned,
            ArrayNorError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            ArrayNorError::NotErased { .. } => NorFlashErrorKind::Other,
        }
    }
}

/// `SIZE` bytes of NOR flash (whole sectors). Starts zeroed, so a `static` of it costs no
/// image bytes (it lands in `.bss`); erase or load it before use.
pub struct ArrayNor<const SIZE: usize> {
    data: [u8; SIZE],
}

impl<const SIZE: usize> ArrayNor<SIZE> {
    pub const fn zeroed() -> Self {
        const { assert!(SIZE.is_multiple_of(SECTOR_SIZE as usize), "flash size must be whole sectors") };
        ArrayNor { data: [0; SIZE] }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// The range `offset..offset + len` after checking alignment and bounds.
    fn range(&self, offset: u32, len: usize, align: usize) -> Result<core::ops::Range<usize>, ArrayNorError> {
        let start = offset as usize;
        if !start.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(ArrayNorError::NotAligned);
        }
        match start.checked_add(len) {
            Some(end) if end <= SIZE => Ok(start..end),
            _ => Err(ArrayNorError::OutOfBounds),
        }
    }
}

impl<const SIZE: usize> ErrorType for ArrayNor<SIZE> {
    type Error = ArrayNorError;
}

impl<const SIZE: usize> ReadNorFlash for ArrayNor<SIZE> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), ArrayNorError> {
        let range = self.range(offset, bytes.len(), 1)?;
        bytes.copy_from_slice(&self.data[range]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        SIZE
    }
}

impl<const SIZE: usize> NorFlash for ArrayNor<SIZE> {
    const WRITE_SIZE: usize = WRITE_SIZE;
    const ERASE_SIZE: usize = SECTOR_SIZE as usize;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), ArrayNorError> {
        let len = to.checked_sub(from).ok_or(ArrayNorError::OutOfBounds)?;
        let range = self.range(from, len as usize, SECTOR_SIZE as usize)?;
        self.data[range].fill(0xFF);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), ArrayNorError> {
        let range = self.range(offset, bytes.len(), WRITE_SIZE)?;
        let target = &mut self.data[range];
        if let Some(dirty) = target.iter().position(|&b| b != 0xFF) {
            return Err(ArrayNorError::NotErased { offset: offset + dirty as u32 });
        }
        target.copy_from_slice(bytes);
        Ok(())
    }
}
