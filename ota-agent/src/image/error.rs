//! Why an image is refused, in the short words the agent sends after `ERR: `.

use core::fmt;

use crate::descriptor::DescriptorError;
use crate::flash::NorFlashErrorKind;
use crate::irom_text;
use crate::text::{self, Arg, IromText, Message, Sink};

use super::MAX_RAM_SEGMENTS;

/// Why an image was refused. `Display` gives a short reason, fit for the agent's
/// `ERR: <reason>` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// The flash driver failed to read.
    Flash(NorFlashErrorKind),
    /// `offset..offset + len` does not lie inside the flash.
    OutOfFlash {
        offset: u32,
        len: u32,
        capacity: u32,
    },
    /// The scratch buffer is smaller than `min` bytes.
    ScratchTooSmall {
        len: usize,
        min: usize,
    },
    /// The image ends before its headers say it does.
    Truncated {
        needed: u32,
        len: u32,
    },
    /// The image goes on after its CRC trailer.
    TrailingBytes {
        expected: u32,
        len: u32,
    },
    /// The first byte is not 0xEA.
    BadMagic(u8),
    /// The second byte is not 0x04.
    BadV2Marker(u8),
    UnknownFlashMode(u8),
    /// The size nibble of header byte 3.
    UnknownFlashSize(u8),
    /// The frequency nibble of header byte 3.
    UnknownFlashFreq(u8),
    /// The IROM length is not a multiple of 16.
    IromLength(u32),
    /// The header after IROM does not start with 0xE9.
    BadSegmentMagic(u8),
    /// The two headers disagree on the flash parameters or the entry point.
    HeaderMismatch,
    /// More RAM segments than [`MAX_RAM_SEGMENTS`].
    TooManySegments(usize),
    /// A RAM segment's length is not a multiple of 4.
    SegmentLength {
        index: usize,
        len: u32,
    },
    /// A RAM segment does not lie fully inside DRAM or IRAM.
    SegmentOutsideRam {
        index: usize,
        addr: u32,
        len: u32,
    },
    ChecksumMismatch {
        stored: u8,
        computed: u8,
    },
    CrcMismatch {
        stored: u32,
        computed: u32,
    },
    /// IROM starts with the descriptor magic but the rest is not a valid descriptor.
    BadDescriptor(DescriptorError),
    /// The image carries no slot descriptor, so nothing says where it was linked.
    NoDescriptor,
    /// The image is larger than the slot.
    TooLarge {
        len: u32,
        capacity: u32,
    },
    /// The image was linked for IROM address `linked`; the slot runs code at `expected`.
    WrongSlot {
        linked: u32,
        expected: u32,
    },
    /// The image would be larger than 4 GB.
    SizeOverflow,
    /// rBoot treats offset 0 and 0xFFFFFFFF as "no ROM".
    NoRom(u32),
    /// The image read back is not the one whose SHA-256 the client sent.
    Sha256Mismatch,
}

irom_text! {
    FLASH_READ_FAILED = "flash read failed ({})";
    OUT_OF_FLASH = "{} bytes at {} are outside the {}-byte flash";
    SCRATCH_TOO_SMALL = "scratch buffer of {} bytes is too small (need {})";
    TRUNCATED = "image truncated: its headers need at least {} bytes, it has {}";
    TRAILING_BYTES = "image is {} bytes but ends after {}";
    BAD_MAGIC = "not a v2 image (first byte {}, not 0xea)";
    BAD_V2_MARKER = "not a v2 image (second byte {}, not 0x04)";
    UNKNOWN_FLASH_MODE = "unknown flash mode code {}";
    UNKNOWN_FLASH_SIZE = "unknown flash size code {}";
    UNKNOWN_FLASH_FREQ = "unknown flash frequency code {}";
    IROM_LENGTH = "IROM length {} is not a multiple of 16";
    BAD_SEGMENT_MAGIC = "segment header starts with {}, not 0xe9";
    HEADER_MISMATCH = "the two image headers disagree";
    TOO_MANY_SEGMENTS = "{} RAM segments, at most {} allowed";
    SEGMENT_LENGTH = "segment {} length {} is not a multiple of 4";
    SEGMENT_OUTSIDE_RAM = "segment {} ({} bytes at {}) is outside DRAM and IRAM";
    CHECKSUM_MISMATCH = "checksum mismatch (stored {}, computed {})";
    CRC_MISMATCH = "CRC mismatch (stored {}, computed {})";
    BAD_DESCRIPTOR = "bad slot descriptor: ";
    NO_DESCRIPTOR = "no tcpflash slot descriptor";
    TOO_LARGE = "image of {} bytes exceeds the slot's {}";
    WRONG_SLOT = "image linked for {}, this slot needs {}";
    SIZE_OVERFLOW = "image larger than 4 GB";
    NO_ROM = "no ROM at offset {}";
}

impl Message for ImageError {
    fn write_message<S: Sink + ?Sized>(&self, out: &mut S) {
        use Arg::{Dec, Text};
        let (template, args): (IromText, &[Arg]) = match *self {
            ImageError::Flash(kind) => (FLASH_READ_FAILED, &[Text(crate::writer::kind_text(kind))]),
            ImageError::OutOfFlash { offset, len, capacity } => {
                (OUT_OF_FLASH, &[Dec(len), Arg::hex(offset), Dec(capacity)])
            }
            ImageError::ScratchTooSmall { len, min } => {
                (SCRATCH_TOO_SMALL, &[Arg::count(len), Arg::count(min)])
            }
            ImageError::Truncated { needed, len } => (TRUNCATED, &[Dec(needed), Dec(len)]),
            ImageError::TrailingBytes { expected, len } => (TRAILING_BYTES, &[Dec(len), Dec(expected)]),
            ImageError::BadMagic(found) => (BAD_MAGIC, &[Arg::hex_byte(found)]),
            ImageError::BadV2Marker(found) => (BAD_V2_MARKER, &[Arg::hex_byte(found)]),
            ImageError::UnknownFlashMode(code) => (UNKNOWN_FLASH_MODE, &[Arg::hex(code.into())]),
            ImageError::UnknownFlashSize(code) => (UNKNOWN_FLASH_SIZE, &[Arg::hex(code.into())]),
            ImageError::UnknownFlashFreq(code) => (UNKNOWN_FLASH_FREQ, &[Arg::hex(code.into())]),
            ImageError::IromLength(len) => (IROM_LENGTH, &[Dec(len)]),
            ImageError::BadSegmentMagic(found) => (BAD_SEGMENT_MAGIC, &[Arg::hex_byte(found)]),
            ImageError::HeaderMismatch => (HEADER_MISMATCH, &[]),
            ImageError::TooManySegments(count) => {
                (TOO_MANY_SEGMENTS, &[Arg::count(count), Arg::count(MAX_RAM_SEGMENTS)])
            }
            ImageError::SegmentLength { index, len } => (SEGMENT_LENGTH, &[Arg::count(index), Dec(len)]),
            ImageError::SegmentOutsideRam { index, addr, len } => {
                (SEGMENT_OUTSIDE_RAM, &[Arg::count(index), Dec(len), Arg::hex_word(addr)])
            }
            ImageError::ChecksumMismatch { stored, computed } => {
                (CHECKSUM_MISMATCH, &[Arg::hex_byte(stored), Arg::hex_byte(computed)])
            }
            ImageError::CrcMismatch { stored, computed } => {
                (CRC_MISMATCH, &[Arg::hex_word(stored), Arg::hex_word(computed)])
            }
            ImageError::BadDescriptor(error) => {
                out.push_text(BAD_DESCRIPTOR);
                return error.write_message(out);
            }
            ImageError::NoDescriptor => (NO_DESCRIPTOR, &[]),
            ImageError::TooLarge { len, capacity } => (TOO_LARGE, &[Dec(len), Dec(capacity)]),
            ImageError::WrongSlot { linked, expected } => {
                (WRONG_SLOT, &[Arg::hex_word(linked), Arg::hex_word(expected)])
            }
            ImageError::SizeOverflow => (SIZE_OVERFLOW, &[]),
            ImageError::NoRom(offset) => (NO_ROM, &[Arg::hex(offset)]),
            ImageError::Sha256Mismatch => (crate::protocol::in_irom::reason::SHA256_MISMATCH, &[]),
        };
        out.push_template(template, args);
    }
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        text::display(self, f)
    }
}

impl core::error::Error for ImageError {}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;
    use std::vec;
    use std::vec::Vec;

    use super::*;
    #[test]
    fn error_messages_are_short_and_specific() {
        assert_eq!(
            ImageError::WrongSlot { linked: 0x4028_2010, expected: 0x4020_2010 }.to_string(),
            "image linked for 0x40282010, this slot needs 0x40202010"
        );
        assert_eq!(
            ImageError::ChecksumMismatch { stored: 0x12, computed: 0xab }.to_string(),
            "checksum mismatch (stored 0x12, computed 0xab)"
        );
        assert_eq!(ImageError::BadMagic(0xFF).to_string(), "not a v2 image (first byte 0xff, not 0xea)");
        assert_eq!(
            ImageError::Truncated { needed: 300, len: 212 }.to_string(),
            "image truncated: its headers need at least 300 bytes, it has 212"
        );
    }

    /// Every reason, as the device sends it and `Display` prints it, word for word what the
    /// `core::fmt` version said before the texts moved to IROM.
    #[test]
    fn every_error_reads_as_its_format_string() {
        use ImageError::*;
        let m = u32::MAX;
        let cases: Vec<(ImageError, String)> = vec![
            (
                Flash(NorFlashErrorKind::NotAligned),
                "flash read failed (Arguments are not properly aligned)".into(),
            ),
            (Flash(NorFlashErrorKind::OutOfBounds), "flash read failed (Arguments are out of bounds)".into()),
            (
                Flash(NorFlashErrorKind::Other),
                "flash read failed (An implementation specific error occurred)".into(),
            ),
            (
                OutOfFlash { offset: 0xF00, len: 512, capacity: m },
                format!("512 bytes at 0xf00 are outside the {m}-byte flash"),
            ),
            (
                ScratchTooSmall { len: 63, min: 64 },
                "scratch buffer of 63 bytes is too small (need 64)".into(),
            ),
            (
                Truncated { needed: 0, len: 7 },
                "image truncated: its headers need at least 0 bytes, it has 7".into(),
            ),
            (TrailingBytes { expected: 212, len: 216 }, "image is 216 bytes but ends after 212".into()),
            (BadMagic(0), "not a v2 image (first byte 0x00, not 0xea)".into()),
            (BadV2Marker(0x5), "not a v2 image (second byte 0x05, not 0x04)".into()),
            (UnknownFlashMode(9), "unknown flash mode code 0x9".into()),
            (UnknownFlashSize(0xA), "unknown flash size code 0xa".into()),
            (UnknownFlashFreq(0xE), "unknown flash frequency code 0xe".into()),
            (IromLength(113), "IROM length 113 is not a multiple of 16".into()),
            (BadSegmentMagic(0xEA), "segment header starts with 0xea, not 0xe9".into()),
            (HeaderMismatch, "the two image headers disagree".into()),
            (TooManySegments(255), "255 RAM segments, at most 15 allowed".into()),
            (SegmentLength { index: 14, len: 30 }, "segment 14 length 30 is not a multiple of 4".into()),
            (
                SegmentOutsideRam { index: 1, addr: 0x40FE_8000, len: 8 },
                "segment 1 (8 bytes at 0x40fe8000) is outside DRAM and IRAM".into(),
            ),
            (
                ChecksumMismatch { stored: 0xEF, computed: 1 },
                "checksum mismatch (stored 0xef, computed 0x01)".into(),
            ),
            (
                CrcMismatch { stored: 1, computed: m },
                "CRC mismatch (stored 0x00000001, computed 0xffffffff)".into(),
            ),
            (
                BadDescriptor(DescriptorError::BadText),
                "bad slot descriptor: descriptor text is not UTF-8".into(),
            ),
            (
                BadDescriptor(DescriptorError::BadMagic(0)),
                "bad slot descriptor: no tcpflash descriptor (found 0x00000000 where `TCF1` belongs)".into(),
            ),
            (NoDescriptor, "no tcpflash slot descriptor".into()),
            (
                TooLarge { len: 500_000, capacity: 499_712 },
                "image of 500000 bytes exceeds the slot's 499712".into(),
            ),
            (
                WrongSlot { linked: 0x4020_2010, expected: 0x4028_2010 },
                "image linked for 0x40202010, this slot needs 0x40282010".into(),
            ),
            (SizeOverflow, "image larger than 4 GB".into()),
            (NoRom(0), "no ROM at offset 0x0".into()),
            (NoRom(m), "no ROM at offset 0xffffffff".into()),
        ];
        for (error, expected) in cases {
            assert_eq!(error.to_string(), expected, "{error:?}");
        }
    }
}
