//! Valid images with a slot descriptor, for tests on the host (this crate's and the host
//! crates'): what `cargo tcpflash build` makes, small enough to reason about byte by byte.

extern crate std;
use std::vec::Vec;

use super::{FlashFreq, FlashMode, FlashParams, FlashSize, Segment, write_v2};
use crate::descriptor::Descriptor;

/// The image [`write_v2`] makes of these parts.
pub fn write(params: FlashParams, entry: u32, irom: &[u8], segments: &[Segment<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    let len = write_v2(params, entry, irom, segments, &mut |bytes| out.extend_from_slice(bytes)).unwrap();
    assert_eq!(len as usize, out.len());
    out
}

pub const DIO_4M_80: FlashParams =
    FlashParams { mode: FlashMode::Dio, size: FlashSize::Size4M, freq: FlashFreq::Freq80M };

/// IROM with a descriptor linked for `link_addr`, `extra` bytes of code after it.
pub fn irom_for(link_addr: u32, extra: usize) -> Vec<u8> {
    let descriptor = Descriptor::new(link_addr, *b"buildid!", "blinky", "1.2.3").unwrap();
    let mut irom = descriptor.to_bytes().to_vec();
    irom.extend((0..extra).map(|i| (i * 7 + 3) as u8));
    irom
}

/// A typical image: IROM with descriptor, one IRAM and two DRAM segments of odd sizes.
pub fn sample_image(link_addr: u32) -> Vec<u8> {
    let irom = irom_for(link_addr, 37);
    let iram: Vec<u8> = (0..29u8).collect();
    let dram = [0xAAu8; 6];
    let rodata = [0x11u8, 0x22, 0x33, 0x44];
    write(
        DIO_4M_80,
        0x4010_0004,
        &irom,
        &[
            Segment { addr: 0x4010_0000, data: &iram },
            Segment { addr: 0x3FFE_8000, data: &dram },
            Segment { addr: 0x3FFE_8008, data: &rodata },
        ],
    )
}

/// `image` (esptool's form) as the SDK's `gen_appbin.py` would have written it for app `app`:
/// first-header bytes 2..3 become `00`, app number, and the CRC trailer is recomputed. The
/// second header keeps the flash parameters, as `gen_appbin.py` writes them.
pub fn gen_appbin_form(image: &[u8], app: u8) -> Vec<u8> {
    let mut out = image.to_vec();
    out[2..4].copy_from_slice(&[0, app]);
    let n = out.len();
    let crc = super::crc_trailer(crate::crc::crc32(&out[..n - 4]));
    out[n - 4..].copy_from_slice(&crc.to_le_bytes());
    out
}
