//! Writes images: the v2 image `cargo tcpflash` makes of an ELF, and the v1 image of a
//! bootloader, byte for byte what esptool writes.

use crate::crc::Crc32;

use super::{
    CHECKSUM_SEED, FlashParams, HEADER_LEN, IROM_ALIGN, ImageError, MAGIC_SEGMENTS, MAGIC_V2,
    MAX_RAM_SEGMENTS, MAX_SEGMENTS, MemoryKind, SEGMENT_ALIGN, Segment, V2_MARKER, checksum_position,
    crc_trailer, padding,
};

const ZEROS: [u8; 16] = [0; 16];

/// The length of the image [`write_v2`] writes, after checking the inputs.
fn v2_len(irom: &[u8], segments: &[Segment<'_>]) -> Result<u32, ImageError> {
    if segments.len() > MAX_RAM_SEGMENTS {
        return Err(ImageError::TooManySegments(segments.len()));
    }
    let irom_len = u32::try_from(irom.len()).map_err(|_| ImageError::SizeOverflow)?;
    let mut len = (2 * HEADER_LEN).checked_add(irom_len).ok_or(ImageError::SizeOverflow)?;
    len = len.checked_add(padding(irom_len, IROM_ALIGN)).ok_or(ImageError::SizeOverflow)?;
    len = len.checked_add(HEADER_LEN).ok_or(ImageError::SizeOverflow)?;
    for (index, segment) in segments.iter().enumerate() {
        let data_len = u32::try_from(segment.data.len()).map_err(|_| ImageError::SizeOverflow)?;
        let padded =
            data_len.checked_add(padding(data_len, SEGMENT_ALIGN)).ok_or(ImageError::SizeOverflow)?;
        if MemoryKind::ram_holding(segment.addr, padded).is_none() {
            return Err(ImageError::SegmentOutsideRam { index, addr: segment.addr, len: padded });
        }
        len = len.checked_add(HEADER_LEN + padded).ok_or(ImageError::SizeOverflow)?;
    }
    // Checksum byte at 15 mod 16, then the 4-byte CRC.
    checksum_position(len).checked_add(1 + 4).ok_or(ImageError::SizeOverflow)
}

/// Writes a v2 image to `sink` and returns its length: `irom` (the IROM segment, as linked
/// at the slot's IROM address) first, then the RAM `segments` in the given order. Nothing
/// is written when the inputs are refused.
pub fn write_v2(
    params: FlashParams,
    entry: u32,
    irom: &[u8],
    segments: &[Segment<'_>],
    sink: &mut dyn FnMut(&[u8]),
) -> Result<u32, ImageError> {
    let total = v2_len(irom, segments)?;
    let mut out = CountingSink { sink, crc: Crc32::new(), written: 0 };
    let [mode, size_freq] = params.to_header_bytes();
    let entry = entry.to_le_bytes();

    out.put(&[MAGIC_V2, V2_MARKER, mode, size_freq]);
    out.put(&entry);
    // The IROM segment header: load address 0, length padded to 16.
    let irom_padding = padding(irom.len() as u32, IROM_ALIGN);
    out.put(&0u32.to_le_bytes());
    out.put(&(irom.len() as u32 + irom_padding).to_le_bytes());
    out.put(irom);
    out.put(&ZEROS[..irom_padding as usize]);

    out.put(&[MAGIC_SEGMENTS, segments.len() as u8, mode, size_freq]);
    out.put(&entry);
    let checksum = put_segments(&mut out, segments);
    let pad = checksum_position(out.written) - out.written;
    out.put(&ZEROS[..pad as usize]);
    out.put(&[checksum]);
    let crc = crc_trailer(out.crc.finish());
    out.put(&crc.to_le_bytes());
    debug_assert_eq!(out.written, total);
    Ok(total)
}

/// Writes a v1 image, what the mask ROM boots from flash 0x0 and `esptool elf2image
/// --version 1` writes: the 0xE9 header, the segments in the given order (each padded to 4
/// with zeros), zeros up to the next position that is 15 mod 16, and the checksum byte. No
/// IROM and no CRC. Where the segments load is the caller's business (a bootloader runs
/// from RAM an application never uses). Returns the length; nothing is written when the
/// inputs are refused.
pub fn write_v1(
    params: FlashParams,
    entry: u32,
    segments: &[Segment<'_>],
    sink: &mut dyn FnMut(&[u8]),
) -> Result<u32, ImageError> {
    if segments.len() > MAX_SEGMENTS {
        return Err(ImageError::TooManySegments(segments.len()));
    }
    let mut len = HEADER_LEN;
    for segment in segments {
        let data_len = u32::try_from(segment.data.len()).map_err(|_| ImageError::SizeOverflow)?;
        let padded =
            data_len.checked_add(padding(data_len, SEGMENT_ALIGN)).ok_or(ImageError::SizeOverflow)?;
        len = len.checked_add(HEADER_LEN + padded).ok_or(ImageError::SizeOverflow)?;
    }
    let total = checksum_position(len).checked_add(1).ok_or(ImageError::SizeOverflow)?;

    let mut out = CountingSink { sink, crc: Crc32::new(), written: 0 };
    let [mode, size_freq] = params.to_header_bytes();
    out.put(&[MAGIC_SEGMENTS, segments.len() as u8, mode, size_freq]);
    out.put(&entry.to_le_bytes());
    let checksum = put_segments(&mut out, segments);
    let pad = checksum_position(out.written) - out.written;
    out.put(&ZEROS[..pad as usize]);
    out.put(&[checksum]);
    debug_assert_eq!(out.written, total);
    Ok(total)
}

/// Each segment's header and data, padded to 4; returns the XOR checksum of the data.
fn put_segments(out: &mut CountingSink<'_>, segments: &[Segment<'_>]) -> u8 {
    let mut checksum = CHECKSUM_SEED;
    for segment in segments {
        let pad = padding(segment.data.len() as u32, SEGMENT_ALIGN);
        out.put(&segment.addr.to_le_bytes());
        out.put(&(segment.data.len() as u32 + pad).to_le_bytes());
        out.put(segment.data);
        out.put(&ZEROS[..pad as usize]);
        // The zero padding leaves an XOR unchanged.
        checksum = segment.data.iter().fold(checksum, |sum, byte| sum ^ byte);
    }
    checksum
}

/// Passes bytes on while counting them and feeding the CRC.
struct CountingSink<'s> {
    sink: &'s mut dyn FnMut(&[u8]),
    crc: Crc32,
    written: u32,
}

impl CountingSink<'_> {
    fn put(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.crc.update(bytes);
        // `v2_len` has checked that the whole image fits in u32.
        self.written += bytes.len() as u32;
        (self.sink)(bytes);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec;
    use std::vec::Vec;

    use super::*;
    use crate::image::test_support::*;
    #[test]
    fn writes_the_exact_layout() {
        let image = sample_image(0x4020_2010);
        // 8 header + 8 IROM header + 112 IROM (101 padded to 16) = 128.
        assert_eq!(&image[..16], &[0xEA, 0x04, 0x02, 0x4F, 0x04, 0, 0x10, 0x40, 0, 0, 0, 0, 112, 0, 0, 0]);
        assert_eq!(&image[16..20], b"TCF1");
        assert_eq!(&image[16 + 101..128], &[0; 11]);
        assert_eq!(&image[128..136], &[0xE9, 3, 0x02, 0x4F, 0x04, 0, 0x10, 0x40]);
        // IRAM: 29 bytes padded to 32.
        assert_eq!(&image[136..144], &[0, 0, 0x10, 0x40, 32, 0, 0, 0]);
        assert_eq!(image[144 + 28], 28);
        assert_eq!(&image[144 + 29..176], &[0, 0, 0]);
        // DRAM: 6 bytes padded to 8, then 4 bytes.
        assert_eq!(&image[176..184], &[0x00, 0x80, 0xFE, 0x3F, 8, 0, 0, 0]);
        assert_eq!(&image[184..192], &[0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0, 0]);
        assert_eq!(&image[192..196], &[0x08, 0x80, 0xFE, 0x3F]);
        assert_eq!(&image[200..204], &[0x11, 0x22, 0x33, 0x44]);
        // Segments end at 204: zeros up to 207, the checksum byte there, then the CRC.
        assert_eq!(image.len(), 208 + 4);
        assert_eq!(&image[204..207], &[0, 0, 0]);
        let checksum = (0..29u8).chain([0xAA; 6]).chain([0x11, 0x22, 0x33, 0x44]).fold(0xEF, |s, b| s ^ b);
        assert_eq!(image[207], checksum);
        let crc = crc32fast::hash(&image[..208]);
        let trailer = if crc & 0x8000_0000 != 0 { crc ^ 0xFFFF_FFFF } else { crc + 1 };
        assert_eq!(&image[208..], &trailer.to_le_bytes());
    }

    #[test]
    fn writes_the_exact_v1_layout() {
        let mut out = Vec::new();
        let segments = [
            Segment { addr: 0x4010_E000, data: &[1, 2, 3, 4, 5, 6] },
            Segment { addr: 0x3FFF_B000, data: &[0xAA, 0xBB, 0xCC, 0xDD] },
        ];
        let len = write_v1(DIO_4M_80, 0x4010_E004, &segments, &mut |b| out.extend_from_slice(b)).unwrap();
        let mut expected = vec![0xE9, 2, 0x02, 0x4F, 0x04, 0xE0, 0x10, 0x40];
        expected.extend_from_slice(&[0x00, 0xE0, 0x10, 0x40, 8, 0, 0, 0, 1, 2, 3, 4, 5, 6, 0, 0]);
        expected.extend_from_slice(&[0x00, 0xB0, 0xFF, 0x3F, 4, 0, 0, 0, 0xAA, 0xBB, 0xCC, 0xDD]);
        expected.resize(47, 0);
        expected.push([1u8, 2, 3, 4, 5, 6, 0xAA, 0xBB, 0xCC, 0xDD].iter().fold(0xEF, |a, b| a ^ b));
        assert_eq!(out, expected);
        assert_eq!(len, 48);

        // Headers and data end at 24: zeros up to 31, the checksum there. 17 segments are refused.
        let mut out = Vec::new();
        write_v1(DIO_4M_80, 0, &[Segment { addr: 0, data: &[9; 8] }], &mut |b| out.extend_from_slice(b))
            .unwrap();
        assert_eq!(out.len(), 32);
        let many = [Segment { addr: 0, data: &[] }; 17];
        assert_eq!(
            write_v1(DIO_4M_80, 0, &many, &mut |_| panic!("nothing written")),
            Err(ImageError::TooManySegments(17))
        );
    }

    #[test]
    fn crc_trailer_rule() {
        assert_eq!(crc_trailer(0x8000_0000), 0x7FFF_FFFF);
        assert_eq!(crc_trailer(0xFFFF_FFFF), 0);
        assert_eq!(crc_trailer(0x7FFF_FFFF), 0x8000_0000);
        assert_eq!(crc_trailer(0), 1);
    }

    #[test]
    fn checksum_is_padded_to_15_mod_16() {
        // Headers end at 40 with a 16-byte IROM and no segments: checksum at 47.
        let image = write(FlashParams::default(), 0, &[1; 16], &[]);
        assert_eq!(image.len(), 48 + 4);
        assert_eq!(&image[40..47], &[0; 7]);
        assert_eq!(image[47], CHECKSUM_SEED);
        // A 20-byte segment ends at 68: checksum at 79; twenty 0x02 bytes XOR to zero.
        let image =
            write(FlashParams::default(), 0, &[1; 16], &[Segment { addr: 0x3FFE_8000, data: &[2; 20] }]);
        assert_eq!(image.len(), 80 + 4);
        assert_eq!(image[79], CHECKSUM_SEED);
        let image =
            write(FlashParams::default(), 0, &[1; 16], &[Segment { addr: 0x3FFE_8000, data: &[2; 21] }]);
        assert_eq!((image.len(), image[79]), (80 + 4, CHECKSUM_SEED ^ 2));
    }

    #[test]
    fn writer_refuses_bad_inputs_and_writes_nothing() {
        let mut written = 0;
        let data = [0u8; 4];
        let many = [Segment { addr: 0x3FFE_8000, data: &data }; MAX_RAM_SEGMENTS + 1];
        let result = write_v2(FlashParams::default(), 0, &[], &many, &mut |b| written += b.len());
        assert_eq!(result, Err(ImageError::TooManySegments(16)));
        let outside = [Segment { addr: 0x4020_0000, data: &data }];
        let result = write_v2(FlashParams::default(), 0, &[], &outside, &mut |b| written += b.len());
        assert_eq!(result, Err(ImageError::SegmentOutsideRam { index: 0, addr: 0x4020_0000, len: 4 }));
        // 3 bytes at the very end of DRAM become 4 once padded: one too many.
        let edge = [Segment { addr: 0x3FFF_FFFD, data: &data[..3] }];
        let result = write_v2(FlashParams::default(), 0, &[], &edge, &mut |b| written += b.len());
        assert_eq!(result, Err(ImageError::SegmentOutsideRam { index: 0, addr: 0x3FFF_FFFD, len: 4 }));
        assert_eq!(written, 0);
        let full = [Segment { addr: 0x3FFE_8000, data: &data }; MAX_RAM_SEGMENTS];
        assert!(write_v2(FlashParams::default(), 0, &[], &full, &mut |_| ()).is_ok());
    }
}
