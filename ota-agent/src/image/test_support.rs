//! Images and flashes for the image module's tests.
#![allow(dead_code)]

extern crate std;
use std::vec;
use std::vec::Vec;

pub use super::samples::*;
use super::*;
use crate::flash::{ErrorType, NorFlashError, NorFlashErrorKind, ReadNorFlash};

/// A read-only flash over bytes that insists on `ALIGN`-aligned reads, like the ROM's
/// SPIRead (4), and counts reads.
pub struct AlignedFlash<const ALIGN: usize> {
    pub data: Vec<u8>,
    pub reads: usize,
}

#[derive(Debug)]
pub struct AlignedFlashError(pub NorFlashErrorKind);

impl NorFlashError for AlignedFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        self.0
    }
}

impl<const ALIGN: usize> ErrorType for AlignedFlash<ALIGN> {
    type Error = AlignedFlashError;
}

impl<const ALIGN: usize> ReadNorFlash for AlignedFlash<ALIGN> {
    const READ_SIZE: usize = ALIGN;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), AlignedFlashError> {
        let offset = offset as usize;
        if !offset.is_multiple_of(ALIGN) || !bytes.len().is_multiple_of(ALIGN) {
            return Err(AlignedFlashError(NorFlashErrorKind::NotAligned));
        }
        let source = self.data.get(offset..offset + bytes.len());
        bytes.copy_from_slice(source.ok_or(AlignedFlashError(NorFlashErrorKind::OutOfBounds))?);
        self.reads += 1;
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.data.len()
    }
}

/// `image` placed at `offset` in an erased flash of `size` bytes.
pub fn flash_with<const ALIGN: usize>(image: &[u8], offset: usize, size: usize) -> AlignedFlash<ALIGN> {
    let mut data = vec![0xFF; size];
    data[offset..offset + image.len()].copy_from_slice(image);
    AlignedFlash { data, reads: 0 }
}

/// Recomputes checksum and CRC after a structural edit, so only the edit is tested.
pub fn reseal(image: &mut [u8]) {
    let n = image.len();
    if n < 4 {
        // Cut shorter than its CRC: nothing to reseal.
        return;
    }
    let crc = crc_trailer(crc32fast::hash(&image[..n - 4]));
    image[n - 4..].copy_from_slice(&crc.to_le_bytes());
}
