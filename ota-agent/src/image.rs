//! The ESP8266 "v2" application image, as `esptool elf2image --version 2` writes it and
//! rBoot boots it. See DESIGN.md section 4 for the byte layout.
//!
//! The writer streams into a sink and the validator streams from flash through a caller's
//! scratch buffer, so neither allocates: the agent validates a freshly written slot with
//! the 4 KB sector buffer it already owns.

use crate::descriptor::Descriptor;
use crate::flash::ReadNorFlash;
use crate::layout::Slot;

/// Most segments an image may have besides IROM (esptool's limit).
pub const MAX_SEGMENTS: usize = 16;

/// Flash parameters stored in header bytes 2 and 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlashParams {
    pub mode: FlashMode,
    pub size: FlashSize,
    pub freq: FlashFreq,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlashMode {
    Qio,
    Qout,
    Dio,
    Dout,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlashSize {
    Size256K,
    Size512K,
    Size1M,
    Size2M,
    Size4M,
    Size2MC1,
    Size4MC1,
    Size8M,
    Size16M,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlashFreq {
    Freq40M,
    Freq26M,
    Freq20M,
    Freq80M,
}

/// A RAM segment to load (DRAM or IRAM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    pub addr: u32,
    pub data: &'a [u8],
}

/// What a valid image holds, as found by [`inspect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    pub params: FlashParams,
    pub entry: u32,
    /// IROM bytes as stored (padded to 16).
    pub irom_len: u32,
    /// The RAM segments' addresses and lengths, `segment_count` of them.
    pub segments: [(u32, u32); MAX_SEGMENTS],
    pub segment_count: usize,
    /// Image length including checksum and CRC trailer.
    pub len: u32,
    pub checksum: u8,
    pub crc: u32,
    /// The slot descriptor at the start of IROM, if the image carries one.
    pub descriptor: Option<Descriptor>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Placeholder until the image module lands.
    Unimplemented,
}

/// Writes a v2 image to `sink` and returns its length.
pub fn write_v2(
    _params: FlashParams,
    _entry: u32,
    _irom: &[u8],
    _segments: &[Segment<'_>],
    _sink: &mut dyn FnMut(&[u8]),
) -> Result<u32, ImageError> {
    Err(ImageError::Unimplemented)
}

/// Reads and fully checks the image of `len` bytes at flash `offset`: both headers, segment
/// ranges, the XOR checksum and the CRC trailer. `scratch` (at least 64 bytes; the agent
/// passes its 4 KB sector buffer) sets the read granularity.
pub fn inspect<F: ReadNorFlash>(
    _flash: &mut F,
    _offset: u32,
    _len: u32,
    _scratch: &mut [u8],
) -> Result<ImageInfo, ImageError> {
    Err(ImageError::Unimplemented)
}

/// [`inspect`] plus the checks that make an image safe to boot from `slot`: it fits, and its
/// descriptor was linked for this very slot.
pub fn verify_for_slot<F: ReadNorFlash>(
    _flash: &mut F,
    _slot: &Slot,
    _len: u32,
    _scratch: &mut [u8],
) -> Result<ImageInfo, ImageError> {
    Err(ImageError::Unimplemented)
}
