//! The ESP8266 "v2" application image, as `esptool elf2image --version 2` writes it and
//! rBoot boots it. See DESIGN.md section 4 for the byte layout; esptool 5.6.0's
//! `ESP8266V2FirmwareImage` is the reference.
//!
//! The writer streams into a sink and the validator streams from flash through a caller's
//! scratch buffer, so neither allocates: the agent validates a freshly written slot with
//! the 4 KB sector buffer it already owns.

use core::fmt;

use crate::crc::Crc32;
use crate::descriptor::{self, Descriptor, DescriptorError};
use crate::flash::{NorFlashError, NorFlashErrorKind, ReadNorFlash};
use crate::irom_text;
use crate::layout::{DRAM_USABLE, IRAM, Slot, irom_link_addr_for};
use crate::text::{self, Arg, IromText, Message, Sink};

/// First byte of a v2 image.
pub const MAGIC_V2: u8 = 0xEA;
/// Second byte of a v2 image: a constant (esptool's `IMAGE_V2_SEGMENT`).
pub const V2_MARKER: u8 = 0x04;
/// First byte of the second header, the one that lists the RAM segments.
pub const MAGIC_SEGMENTS: u8 = 0xE9;
/// Start value of the XOR checksum over the RAM segments' data.
pub const CHECKSUM_SEED: u8 = 0xEF;
/// Each header (image header, segment header) is 8 bytes.
pub const HEADER_LEN: u32 = 8;
/// The IROM segment is padded to this, RAM segments to [`SEGMENT_ALIGN`].
pub const IROM_ALIGN: u32 = 16;
pub const SEGMENT_ALIGN: u32 = 4;
/// Most segments an image may have, IROM included: esptool refuses more, when it writes
/// an image and when it reads one.
pub const MAX_SEGMENTS: usize = 16;
/// Most RAM segments (DRAM, IRAM) an image may have besides its IROM segment.
pub const MAX_RAM_SEGMENTS: usize = MAX_SEGMENTS - 1;
/// Smallest scratch buffer [`inspect`] works with.
pub const MIN_SCRATCH: usize = 64;

/// The memories an ESP8266 image's segments may target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    /// Data RAM, 0x3FFE8000..0x40000000 (80 KB).
    Dram,
    /// Instruction RAM, 0x40100000..0x40108000 (32 KB).
    Iram,
    /// Code executed from flash through the cache, 0x40200000..0x40300000.
    Irom,
}

impl MemoryKind {
    pub const ALL: [MemoryKind; 3] = [MemoryKind::Dram, MemoryKind::Iram, MemoryKind::Irom];

    /// Start and end (exclusive) address.
    pub const fn range(self) -> (u32, u32) {
        match self {
            MemoryKind::Dram => (0x3FFE_8000, 0x4000_0000),
            MemoryKind::Iram => (0x4010_0000, 0x4010_8000),
            MemoryKind::Irom => (0x4020_0000, 0x4030_0000),
        }
    }

    /// The memory `addr` lies in.
    pub fn of(addr: u32) -> Option<MemoryKind> {
        MemoryKind::ALL.into_iter().find(|kind| {
            let (start, end) = kind.range();
            (start..end).contains(&addr)
        })
    }

    /// Whether all of `addr..addr + len` lies inside this memory.
    pub const fn contains(self, addr: u32, len: u32) -> bool {
        let (start, end) = self.range();
        addr >= start && addr <= end && len <= end - addr
    }

    pub const fn name(self) -> &'static str {
        match self {
            MemoryKind::Dram => "DRAM",
            MemoryKind::Iram => "IRAM",
            MemoryKind::Irom => "IROM",
        }
    }

    /// The RAM (DRAM or IRAM) that holds all of `addr..addr + len`, the only places the
    /// bootloader can load a segment to.
    pub fn ram_holding(addr: u32, len: u32) -> Option<MemoryKind> {
        // Spelled out so the ranges stay immediates, not a lookup table in `.rodata`.
        if MemoryKind::Dram.contains(addr, len) {
            Some(MemoryKind::Dram)
        } else if MemoryKind::Iram.contains(addr, len) {
            Some(MemoryKind::Iram)
        } else {
            None
        }
    }
}

/// Flash parameters stored in header bytes 2 and 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlashParams {
    pub mode: FlashMode,
    pub size: FlashSize,
    pub freq: FlashFreq,
}

impl Default for FlashParams {
    /// esptool's defaults: qio, 1MB, 40m.
    fn default() -> FlashParams {
        FlashParams { mode: FlashMode::Qio, size: FlashSize::Size1M, freq: FlashFreq::Freq40M }
    }
}

impl FlashParams {
    /// Header bytes 2 (mode) and 3 (size code in the high nibble, frequency in the low).
    pub const fn to_header_bytes(self) -> [u8; 2] {
        [self.mode.code(), self.size.code() << 4 | self.freq.code()]
    }

    pub fn from_header_bytes(mode: u8, size_freq: u8) -> Result<FlashParams, ImageError> {
        Ok(FlashParams {
            mode: FlashMode::from_code(mode).ok_or(ImageError::UnknownFlashMode(mode))?,
            size: FlashSize::from_code(size_freq >> 4).ok_or(ImageError::UnknownFlashSize(size_freq >> 4))?,
            freq: FlashFreq::from_code(size_freq & 0xF)
                .ok_or(ImageError::UnknownFlashFreq(size_freq & 0xF))?,
        })
    }
}

/// Declares a header field enum with its byte code and esptool's name for each value.
macro_rules! flash_field {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $code:literal, $text:literal;)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $($variant,)*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The value's code in the image header.
            pub const fn code(self) -> u8 {
                match self {
                    $($name::$variant => $code,)*
                }
            }

            pub fn from_code(code: u8) -> Option<$name> {
                match code {
                    $($code => Some($name::$variant),)*
                    _ => None,
                }
            }

            /// esptool's name for the value (`--flash-mode dio`, `--flash-size 2MB-c1`).
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            /// Looks an esptool name up, ignoring ASCII case.
            pub fn from_name(name: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|value| value.name().eq_ignore_ascii_case(name.trim()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

flash_field! {
    /// SPI mode the bootloader sets up for the flash.
    FlashMode {
        Qio = 0, "qio";
        Qout = 1, "qout";
        Dio = 2, "dio";
        Dout = 3, "dout";
    }
}

flash_field! {
    /// Flash chip size (and, for the `-c1` codes, the SDK's alternative map).
    FlashSize {
        Size256K = 1, "256KB";
        Size512K = 0, "512KB";
        Size1M = 2, "1MB";
        Size2M = 3, "2MB";
        Size4M = 4, "4MB";
        Size2MC1 = 5, "2MB-c1";
        Size4MC1 = 6, "4MB-c1";
        Size8M = 8, "8MB";
        Size16M = 9, "16MB";
    }
}

flash_field! {
    /// SPI clock for the flash.
    FlashFreq {
        Freq40M = 0x0, "40m";
        Freq26M = 0x1, "26m";
        Freq20M = 0x2, "20m";
        Freq80M = 0xF, "80m";
    }
}

impl FlashSize {
    /// The chip size in bytes.
    pub const fn bytes(self) -> u32 {
        match self {
            FlashSize::Size256K => 0x4_0000,
            FlashSize::Size512K => 0x8_0000,
            FlashSize::Size1M => 0x10_0000,
            FlashSize::Size2M | FlashSize::Size2MC1 => 0x20_0000,
            FlashSize::Size4M | FlashSize::Size4MC1 => 0x40_0000,
            FlashSize::Size8M => 0x80_0000,
            FlashSize::Size16M => 0x100_0000,
        }
    }
}

/// A RAM segment to load (DRAM or IRAM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    pub addr: u32,
    pub data: &'a [u8],
}

/// What an image holds, as found by [`scan`] (stored and computed integrity values side by
/// side) and by [`inspect`] (where they are known to agree).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImageInfo {
    pub params: FlashParams,
    pub entry: u32,
    /// IROM bytes as stored (padded to 16).
    pub irom_len: u32,
    /// The RAM segments' addresses and lengths, `segment_count` of them.
    pub segments: [(u32, u32); MAX_RAM_SEGMENTS],
    pub segment_count: usize,
    /// Image length including checksum and CRC trailer.
    pub len: u32,
    /// The XOR checksum byte as stored, and as computed over the RAM segments.
    pub checksum: u8,
    pub computed_checksum: u8,
    /// The CRC trailer as stored, and as computed over the bytes before it.
    pub crc: u32,
    pub computed_crc: u32,
    /// The slot descriptor at the start of IROM, if the image carries one.
    pub descriptor: Option<Descriptor>,
}

impl ImageInfo {
    /// `(address, length)` of each RAM segment, in image order.
    pub fn segments(&self) -> &[(u32, u32)] {
        &self.segments[..self.segment_count]
    }

    pub fn checksum_valid(&self) -> bool {
        self.checksum == self.computed_checksum
    }

    pub fn crc_valid(&self) -> bool {
        self.crc == self.computed_crc
    }

    /// Each RAM segment as `(flash offset of its data, load address, length)`, for an
    /// image that starts at flash `image_offset`: what a bootloader copies where.
    pub fn ram_segments_at(&self, image_offset: u32) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
        // Image header, IROM segment header, IROM, the header of the RAM segments.
        let mut at = image_offset + 3 * HEADER_LEN + self.irom_len;
        self.segments().iter().map(move |&(addr, len)| {
            let data = at + HEADER_LEN;
            at = data + len;
            (data, addr, len)
        })
    }
}

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

/// The CRC trailer the ESP8266 SDK bootloader expects, from the zlib CRC-32 `crc` of all
/// bytes before it.
pub const fn crc_trailer(crc: u32) -> u32 {
    if crc & 0x8000_0000 != 0 { crc ^ 0xFFFF_FFFF } else { crc + 1 }
}

const ZEROS: [u8; 16] = [0; 16];

/// Where the XOR checksum byte goes: the next file position that is 15 mod 16.
const fn checksum_position(end_of_segments: u32) -> u32 {
    end_of_segments | (IROM_ALIGN - 1)
}

const fn padding(len: u32, align: u32) -> u32 {
    (align - len % align) % align
}

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

fn le32(bytes: [u8; 4]) -> u32 {
    u32::from_le_bytes(bytes)
}

fn word(bytes: &[u8; 8], at: usize) -> u32 {
    le32([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Reading stopped; the reason is in the reader ([`Reader::take_error`]). A zero-sized
/// error keeps every `?` of a scan a register test: with the 20-byte [`ImageError`] on
/// each return, scanning cost the bootloader (a 4 KB sector in all) 2 KB more.
struct Stop;

/// Reads an image front to back through the caller's scratch buffer, feeding every byte
/// it hands out to a CRC. All positions are checked against the image's end first, so no
/// arithmetic can overflow.
struct Reader<'a, F: ReadNorFlash> {
    flash: &'a mut F,
    buf: &'a mut [u8],
    /// Flash offset of `buf[0]` and how many bytes of `buf` hold flash data.
    buf_at: u32,
    buf_len: u32,
    start: u32,
    pos: u32,
    end: u32,
    capacity: u32,
    crc: Crc32,
    /// Why the last [`Stop`] happened.
    error: Option<ImageError>,
}

impl<'a, F: ReadNorFlash> Reader<'a, F> {
    fn new(flash: &'a mut F, scratch: &'a mut [u8], start: u32, len: u32) -> Result<Self, ImageError> {
        let read_size = F::READ_SIZE.max(1);
        let min = MIN_SCRATCH.max(read_size);
        if scratch.len() < min {
            return Err(ImageError::ScratchTooSmall { len: scratch.len(), min });
        }
        // Whole read units only, and never more than a u32 can count.
        let usable = (scratch.len() - scratch.len() % read_size).min(1 << 30);
        let capacity = u32::try_from(flash.capacity()).unwrap_or(u32::MAX);
        let end = start.checked_add(len).filter(|&end| end <= capacity).ok_or(ImageError::OutOfFlash {
            offset: start,
            len,
            capacity,
        })?;
        Ok(Reader {
            flash,
            buf: &mut scratch[..usable],
            buf_at: 0,
            buf_len: 0,
            start,
            pos: start,
            end,
            capacity,
            crc: Crc32::new(),
            error: None,
        })
    }

    /// Runs `read` and turns a [`Stop`] back into its reason.
    fn run<T>(&mut self, read: impl FnOnce(&mut Self) -> Result<T, Stop>) -> Result<T, ImageError> {
        read(self).map_err(|Stop| self.take_error())
    }

    /// Records why reading stops.
    #[inline(never)]
    fn fail(&mut self, error: ImageError) -> Stop {
        self.error = Some(error);
        Stop
    }

    fn take_error(&mut self) -> ImageError {
        // Every `Stop` comes from `fail`.
        self.error.take().unwrap_or(ImageError::Flash(NorFlashErrorKind::Other))
    }

    /// Position inside the image.
    fn offset(&self) -> u32 {
        self.pos - self.start
    }

    fn remaining(&self) -> u32 {
        self.end - self.pos
    }

    fn len(&self) -> u32 {
        self.end - self.start
    }

    /// Fails unless `n` more bytes are left.
    fn need(&mut self, n: u32) -> Result<(), Stop> {
        if n > self.remaining() {
            let error = ImageError::Truncated { needed: self.offset().saturating_add(n), len: self.len() };
            return Err(self.fail(error));
        }
        Ok(())
    }

    /// Hands the next `n` bytes to `f`, in pieces of at most the scratch size. One copy
    /// serves every caller (a `dyn` callback, never inlined): the bootloader that runs this
    /// must fit a 4 KB sector.
    #[inline(never)]
    fn consume(&mut self, n: u32, f: &mut dyn FnMut(&[u8])) -> Result<(), Stop> {
        self.need(n)?;
        let mut left = n;
        while left > 0 {
            let buffered = self.pos >= self.buf_at && self.pos - self.buf_at < self.buf_len;
            if !buffered {
                self.fill()?;
            }
            let in_buf = self.pos - self.buf_at;
            let take = (self.buf_len - in_buf).min(left);
            let bytes = &self.buf[in_buf as usize..(in_buf + take) as usize];
            self.crc.update(bytes);
            f(bytes);
            self.pos += take;
            left -= take;
        }
        Ok(())
    }

    /// Skips `n` bytes (they still go into the CRC).
    fn skip(&mut self, n: u32) -> Result<(), Stop> {
        self.consume(n, &mut |_| {})
    }

    /// Reads the aligned flash window that starts at or just before `pos`. In u32
    /// arithmetic (no 64-bit code for a 32-bit core): `at <= pos <= end <= capacity`, and
    /// the buffer, a whole number of read units, is at most 1 GB.
    fn fill(&mut self) -> Result<(), Stop> {
        let read_size = F::READ_SIZE.max(1) as u32;
        let at = self.pos - self.pos % read_size;
        let wanted = (self.end - at).min(self.buf.len() as u32).div_ceil(read_size) * read_size;
        let len = wanted.min(self.capacity - at);
        if let Err(error) = self.flash.read(at, &mut self.buf[..len as usize]) {
            return Err(self.fail(ImageError::Flash(error.kind())));
        }
        self.buf_at = at;
        self.buf_len = len;
        if self.buf_len <= self.pos - self.buf_at {
            // Only when the flash is not a whole number of read units.
            return Err(self.fail(ImageError::Flash(NorFlashErrorKind::OutOfBounds)));
        }
        Ok(())
    }

    #[inline(never)]
    fn read_into(&mut self, out: &mut [u8]) -> Result<(), Stop> {
        let mut filled = 0;
        self.consume(out.len() as u32, &mut |bytes| {
            out[filled..filled + bytes.len()].copy_from_slice(bytes);
            filled += bytes.len();
        })
    }

    #[inline(never)]
    fn read_u32(&mut self) -> Result<u32, Stop> {
        let mut bytes = [0u8; 4];
        self.read_into(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn read_array<const N: usize>(&mut self) -> Result<[u8; N], Stop> {
        let mut out = [0u8; N];
        self.read_into(&mut out)?;
        Ok(out)
    }
}

/// Reads the image of `len` bytes at flash `offset` and checks its structure: both headers,
/// the IROM length, segment count and ranges, that `len` is exactly the image, and the
/// descriptor when IROM starts with one. The checksum and CRC are read and computed but
/// not compared: [`inspect`] does that; tools that describe a damaged image use this.
pub fn scan<F: ReadNorFlash>(
    flash: &mut F,
    offset: u32,
    len: u32,
    scratch: &mut [u8],
) -> Result<ImageInfo, ImageError> {
    let mut info = ImageInfo::default();
    scan_image(flash, offset, len, scratch, Scan::Exact, &mut info)?;
    Ok(info)
}

/// How [`scan_image`] reads an image.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// `len` is the image's length; the descriptor is checked whole (texts included).
    Exact,
    /// `len` only bounds the image (its headers say where it ends); of the descriptor only
    /// the link address is read (what a bootloader checks; the rest reads as empty).
    Boot,
}

/// [`scan`] into `info`, as `mode` says. Filling the caller's `ImageInfo` in place spares
/// the bootloader the copies of a 180-byte return value.
#[inline(never)]
fn scan_image<F: ReadNorFlash>(
    flash: &mut F,
    offset: u32,
    len: u32,
    scratch: &mut [u8],
    mode: Scan,
    info: &mut ImageInfo,
) -> Result<(), ImageError> {
    Reader::new(flash, scratch, offset, len)?.run(|reader| scan_headers(reader, len, mode, info))
}

/// The body of [`scan_image`].
fn scan_headers<F: ReadNorFlash>(
    reader: &mut Reader<'_, F>,
    len: u32,
    scan: Scan,
    info: &mut ImageInfo,
) -> Result<(), Stop> {
    // Headers are read a word at a time: whole u32 loads, no byte shuffling (the
    // bootloader that runs this must fit a 4 KB sector).
    let head = reader.read_u32()?;
    let entry = reader.read_u32()?;
    let [magic, marker, mode, size_freq] = head.to_le_bytes();
    if magic != MAGIC_V2 {
        return Err(reader.fail(ImageError::BadMagic(magic)));
    }
    if marker != V2_MARKER {
        return Err(reader.fail(ImageError::BadV2Marker(marker)));
    }
    let params = FlashParams::from_header_bytes(mode, size_freq).map_err(|error| reader.fail(error))?;

    // The IROM segment: its load address is written as 0 and means nothing.
    reader.read_u32()?;
    let irom_len = reader.read_u32()?;
    if !irom_len.is_multiple_of(IROM_ALIGN) {
        return Err(reader.fail(ImageError::IromLength(irom_len)));
    }
    reader.need(irom_len)?;
    let mut descriptor = None;
    let mut irom_left = irom_len;
    if irom_len >= descriptor::SIZE as u32 {
        let magic = reader.read_u32()?;
        let link_addr = reader.read_u32()?;
        irom_left -= 8;
        if magic == descriptor::MAGIC {
            descriptor = Some(if scan == Scan::Boot {
                Descriptor::linked_at(link_addr)
            } else {
                let mut bytes = [0u8; descriptor::SIZE];
                bytes[..4].copy_from_slice(&magic.to_le_bytes());
                bytes[4..8].copy_from_slice(&link_addr.to_le_bytes());
                reader.read_into(&mut bytes[8..])?;
                irom_left -= descriptor::SIZE as u32 - 8;
                Descriptor::parse(&bytes).map_err(|error| reader.fail(ImageError::BadDescriptor(error)))?
            });
        }
    }
    reader.skip(irom_left)?;

    let second = reader.read_u32()?;
    let second_entry = reader.read_u32()?;
    let [second_magic, count, second_mode, second_size_freq] = second.to_le_bytes();
    if second_magic != MAGIC_SEGMENTS {
        return Err(reader.fail(ImageError::BadSegmentMagic(second_magic)));
    }
    let segment_count = usize::from(count);
    if segment_count > MAX_RAM_SEGMENTS {
        return Err(reader.fail(ImageError::TooManySegments(segment_count)));
    }
    if (second_mode, second_size_freq, second_entry) != (mode, size_freq, entry) {
        return Err(reader.fail(ImageError::HeaderMismatch));
    }

    let mut computed_checksum = CHECKSUM_SEED;
    for index in 0..segment_count {
        let addr = reader.read_u32()?;
        let len = reader.read_u32()?;
        if !len.is_multiple_of(SEGMENT_ALIGN) {
            return Err(reader.fail(ImageError::SegmentLength { index, len }));
        }
        // Any RAM for an image at rest; to boot, only what a firmware may load: copying it
        // then overwrites neither the bootloader (cache RAM) nor its stack (DRAM's top).
        let loadable = match scan {
            Scan::Exact => MemoryKind::ram_holding(addr, len).is_some(),
            Scan::Boot => inside(addr, len, DRAM_USABLE) || inside(addr, len, IRAM),
        };
        if !loadable {
            return Err(reader.fail(ImageError::SegmentOutsideRam { index, addr, len }));
        }
        reader.consume(len, &mut |bytes| {
            computed_checksum = bytes.iter().fold(computed_checksum, |s, b| s ^ b)
        })?;
        info.segments[index] = (addr, len);
    }

    let here = reader.offset();
    reader.skip(checksum_position(here) - here)?;
    let [checksum] = reader.read_array()?;
    let computed_crc = crc_trailer(reader.crc.finish());
    let crc = reader.read_u32()?;
    if scan == Scan::Exact && reader.remaining() != 0 {
        return Err(reader.fail(ImageError::TrailingBytes { expected: reader.offset(), len }));
    }
    info.params = params;
    info.entry = entry;
    info.irom_len = irom_len;
    info.segment_count = segment_count;
    info.len = reader.offset();
    info.checksum = checksum;
    info.computed_checksum = computed_checksum;
    info.crc = crc;
    info.computed_crc = computed_crc;
    info.descriptor = descriptor;
    Ok(())
}

/// Reads and fully checks the image of `len` bytes at flash `offset`: everything [`scan`]
/// checks, then the XOR checksum and the CRC trailer. `scratch` (at least
/// [`MIN_SCRATCH`] bytes; the agent passes its 4 KB sector buffer) sets the read size.
pub fn inspect<F: ReadNorFlash>(
    flash: &mut F,
    offset: u32,
    len: u32,
    scratch: &mut [u8],
) -> Result<ImageInfo, ImageError> {
    let info = scan(flash, offset, len, scratch)?;
    check_integrity(&info)?;
    Ok(info)
}

fn check_integrity(info: &ImageInfo) -> Result<(), ImageError> {
    if !info.checksum_valid() {
        return Err(ImageError::ChecksumMismatch { stored: info.checksum, computed: info.computed_checksum });
    }
    if !info.crc_valid() {
        return Err(ImageError::CrcMismatch { stored: info.crc, computed: info.computed_crc });
    }
    Ok(())
}

/// [`inspect`] plus the checks that make an image safe to boot from `slot`: it fits, and its
/// descriptor was linked for this very slot.
pub fn verify_for_slot<F: ReadNorFlash>(
    flash: &mut F,
    slot: &Slot,
    len: u32,
    scratch: &mut [u8],
) -> Result<ImageInfo, ImageError> {
    if len > slot.capacity {
        return Err(ImageError::TooLarge { len, capacity: slot.capacity });
    }
    let info = inspect(flash, slot.offset, len, scratch)?;
    let descriptor = info.descriptor.ok_or(ImageError::NoDescriptor)?;
    let expected = slot.irom_link_addr();
    if descriptor.link_addr != expected {
        return Err(ImageError::WrongSlot { linked: descriptor.link_addr, expected });
    }
    Ok(info)
}

/// What a bootloader checks before it starts the image at flash `offset`, which may take
/// up to `capacity` bytes (`FlashLayout::rom_capacity`); nobody says how long the image
/// is, so its headers do. Everything [`inspect`] checks; the descriptor, when the image
/// carries one, linked for this offset (an image without one, otherwise valid, boots like
/// rBoot boots it); and every RAM segment inside the memory a firmware may load
/// (`DRAM_USABLE` and `IRAM`), so copying it overwrites neither the bootloader nor its stack.
#[inline(never)]
pub fn verify_bootable<F: ReadNorFlash>(
    flash: &mut F,
    offset: u32,
    capacity: u32,
    scratch: &mut [u8],
    info: &mut ImageInfo,
) -> Result<(), ImageError> {
    if offset == 0 || offset == u32::MAX {
        return Err(ImageError::NoRom(offset));
    }
    scan_image(flash, offset, capacity, scratch, Scan::Boot, info)?;
    check_integrity(info)?;
    if let Some(descriptor) = info.descriptor {
        let expected = irom_link_addr_for(offset);
        if descriptor.link_addr != expected {
            return Err(ImageError::WrongSlot { linked: descriptor.link_addr, expected });
        }
    }
    Ok(())
}

/// Whether `addr..addr + len` lies inside `range`.
const fn inside(addr: u32, len: u32, range: core::ops::Range<u32>) -> bool {
    addr >= range.start && addr <= range.end && len <= range.end - addr
}

/// What rBoot's `check_image` does with the ROM at `offset`, returning the entry point its
/// stage 2 loader jumps to. rBoot (without `BOOT_IROM_CHKSUM`, its default) reads the
/// header; for a v2 image (0xEA, 0x04) it skips the IROM segment by the length in the IROM
/// header and reads the 0xE9 header that follows without checking that magic; a plain
/// 0xE9 image has no IROM. It then XORs the data of the RAM segments (any number, any
/// address) and compares the byte at the next position that is 15 mod 16. Nothing else:
/// no CRC, IROM unchecked, no trailing bytes or segment ranges looked at. Where rBoot's
/// 32-bit arithmetic would wrap or read past the chip, this fails instead.
pub fn rboot_check<F: ReadNorFlash>(flash: &mut F, offset: u32) -> Result<u32, ImageError> {
    if offset == 0 || offset == u32::MAX {
        return Err(ImageError::NoRom(offset));
    }
    let capacity = u32::try_from(flash.capacity()).unwrap_or(u32::MAX);
    let mut scratch = [0u8; MIN_SCRATCH];
    let until_end =
        |at: u32| capacity.checked_sub(at).ok_or(ImageError::OutOfFlash { offset: at, len: 0, capacity });

    // rBoot reads a whole `rom_header_new` (16 bytes) whatever the magic.
    let first: [u8; 16] =
        Reader::new(flash, &mut scratch, offset, until_end(offset)?)?.run(|reader| reader.read_array())?;
    let rom_at = match first {
        [0xE9, ..] => offset,
        [MAGIC_V2, V2_MARKER, ..] => {
            let irom_len = le32([first[12], first[13], first[14], first[15]]);
            offset
                .checked_add(2 * HEADER_LEN)
                .and_then(|at| at.checked_add(irom_len))
                .ok_or(ImageError::OutOfFlash { offset, len: u32::MAX, capacity })?
        }
        [magic, ..] => return Err(ImageError::BadMagic(magic)),
    };

    let mut reader = Reader::new(flash, &mut scratch, rom_at, until_end(rom_at)?)?;
    let (entry, stored, computed) = reader.run(|reader| {
        let header: [u8; 8] = reader.read_array()?;
        let mut computed = CHECKSUM_SEED;
        for _ in 0..header[1] {
            let segment_header: [u8; 8] = reader.read_array()?;
            reader.consume(word(&segment_header, 4), &mut |bytes| {
                computed = bytes.iter().fold(computed, |s, b| s ^ b)
            })?;
        }
        // rBoot rounds its absolute flash read position, not the image-relative one.
        reader.skip(checksum_position(reader.pos) - reader.pos)?;
        let [stored] = reader.read_array()?;
        Ok((word(&header, 4), stored, computed))
    })?;
    if stored != computed {
        return Err(ImageError::ChecksumMismatch { stored, computed });
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;
    use std::vec;
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;
    use crate::flash::ErrorType;
    use crate::layout::{DEFAULT_LAYOUT, SlotId};

    /// A read-only flash over bytes that insists on `ALIGN`-aligned reads, like the ROM's
    /// SPIRead (4), and counts reads.
    struct AlignedFlash<const ALIGN: usize> {
        data: Vec<u8>,
        reads: usize,
    }

    #[derive(Debug)]
    struct AlignedFlashError(NorFlashErrorKind);

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
    fn flash_with<const ALIGN: usize>(image: &[u8], offset: usize, size: usize) -> AlignedFlash<ALIGN> {
        let mut data = vec![0xFF; size];
        data[offset..offset + image.len()].copy_from_slice(image);
        AlignedFlash { data, reads: 0 }
    }

    fn write(params: FlashParams, entry: u32, irom: &[u8], segments: &[Segment<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        let len = write_v2(params, entry, irom, segments, &mut |bytes| out.extend_from_slice(bytes)).unwrap();
        assert_eq!(len as usize, out.len());
        out
    }

    const DIO_4M_80: FlashParams =
        FlashParams { mode: FlashMode::Dio, size: FlashSize::Size4M, freq: FlashFreq::Freq80M };

    /// IROM with a descriptor linked for `link_addr`, `extra` bytes of code after it.
    fn irom_for(link_addr: u32, extra: usize) -> Vec<u8> {
        let descriptor = Descriptor::new(link_addr, *b"buildid!", "blinky", "1.2.3").unwrap();
        let mut irom = descriptor.to_bytes().to_vec();
        irom.extend((0..extra).map(|i| (i * 7 + 3) as u8));
        irom
    }

    /// A typical image: IROM with descriptor, one IRAM and two DRAM segments of odd sizes.
    fn sample_image(link_addr: u32) -> Vec<u8> {
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

    #[test]
    fn header_codes_and_names() {
        assert_eq!(FlashMode::from_name("dio"), Some(FlashMode::Dio));
        assert_eq!(FlashMode::from_name("DOUT"), Some(FlashMode::Dout));
        assert_eq!(FlashMode::from_name("fastread"), None);
        assert_eq!(FlashSize::from_name("1MB"), Some(FlashSize::Size1M));
        assert_eq!(FlashSize::from_name("2MB-c1"), Some(FlashSize::Size2MC1));
        assert_eq!(FlashSize::from_name("3MB"), None);
        assert_eq!(FlashFreq::from_name("40m"), Some(FlashFreq::Freq40M));
        assert_eq!(FlashFreq::from_name("80m"), Some(FlashFreq::Freq80M));
        let codes: Vec<(u8, &str)> = FlashSize::ALL.iter().map(|s| (s.code(), s.name())).collect();
        assert_eq!(
            codes,
            [
                (1, "256KB"),
                (0, "512KB"),
                (2, "1MB"),
                (3, "2MB"),
                (4, "4MB"),
                (5, "2MB-c1"),
                (6, "4MB-c1"),
                (8, "8MB"),
                (9, "16MB")
            ]
        );
        assert_eq!(DIO_4M_80.to_header_bytes(), [0x02, 0x4F]);
        let params =
            FlashParams { mode: FlashMode::Qout, size: FlashSize::Size512K, freq: FlashFreq::Freq26M };
        assert_eq!(params.to_header_bytes(), [0x01, 0x01]);
        assert_eq!(FlashParams::from_header_bytes(0x01, 0x01), Ok(params));
        assert_eq!(FlashParams::from_header_bytes(0x02, 0x4F), Ok(DIO_4M_80));
        assert_eq!(FlashParams::from_header_bytes(4, 0x20), Err(ImageError::UnknownFlashMode(4)));
        assert_eq!(FlashParams::from_header_bytes(0, 0x70), Err(ImageError::UnknownFlashSize(7)));
        assert_eq!(FlashParams::from_header_bytes(0, 0x23), Err(ImageError::UnknownFlashFreq(3)));
        assert_eq!(FlashParams::default().to_header_bytes(), [0x00, 0x20]);
        assert_eq!(FlashSize::Size4MC1.bytes(), 0x40_0000);
    }

    #[test]
    fn memory_ranges() {
        assert_eq!(MemoryKind::of(0x3FFE_8000), Some(MemoryKind::Dram));
        assert_eq!(MemoryKind::of(0x3FFE_7FFF), None);
        assert_eq!(MemoryKind::of(0x4010_7FFF), Some(MemoryKind::Iram));
        assert_eq!(MemoryKind::of(0x4020_2010), Some(MemoryKind::Irom));
        assert_eq!(MemoryKind::of(0x4030_0000), None);
        assert_eq!(MemoryKind::ram_holding(0x3FFF_FFFC, 4), Some(MemoryKind::Dram));
        assert_eq!(MemoryKind::ram_holding(0x3FFF_FFFC, 8), None);
        assert_eq!(MemoryKind::ram_holding(0x4010_0000, 0x8000), Some(MemoryKind::Iram));
        assert_eq!(MemoryKind::ram_holding(0x4010_0004, u32::MAX), None);
        assert_eq!(MemoryKind::ram_holding(0x4020_0000, 4), None);
    }

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

    #[test]
    fn inspect_reads_back_what_was_written() {
        let image = sample_image(0x4020_2010);
        for scratch_len in [64, 65, 100, 4096] {
            let mut flash = flash_with::<4>(&image, 0x2000, 0x10000);
            let mut scratch = vec![0u8; scratch_len];
            let info = inspect(&mut flash, 0x2000, image.len() as u32, &mut scratch).unwrap();
            assert_eq!(info.params, DIO_4M_80);
            assert_eq!(info.entry, 0x4010_0004);
            assert_eq!(info.irom_len, 112);
            assert_eq!(info.segments(), &[(0x4010_0000, 32), (0x3FFE_8000, 8), (0x3FFE_8008, 4)]);
            assert_eq!(info.len, image.len() as u32);
            assert_eq!(info.checksum, image[207]);
            assert_eq!(info.crc, u32::from_le_bytes(image[208..].try_into().unwrap()));
            let descriptor = info.descriptor.unwrap();
            assert_eq!(
                (descriptor.link_addr, descriptor.name(), descriptor.version()),
                (0x4020_2010, "blinky", "1.2.3")
            );
        }
        // A 64-byte scratch reads the 212-byte image in four windows, not byte by byte.
        let mut flash = flash_with::<4>(&image, 0x2000, 0x10000);
        inspect(&mut flash, 0x2000, image.len() as u32, &mut [0u8; 64]).unwrap();
        assert_eq!(flash.reads, 4);
    }

    #[test]
    fn unaligned_offsets_work_with_an_aligned_driver() {
        let image = sample_image(0x4020_2010);
        let mut flash = flash_with::<4>(&image, 0x1003, 0x2000);
        assert!(inspect(&mut flash, 0x1003, image.len() as u32, &mut [0u8; 64]).is_ok());
        // An image ending at the very end of the flash.
        let size = 0x1000 + image.len().next_multiple_of(4);
        let mut flash = flash_with::<4>(&image, size - image.len(), size);
        assert!(inspect(&mut flash, (size - image.len()) as u32, image.len() as u32, &mut [0u8; 64]).is_ok());
    }

    #[test]
    fn images_without_descriptor_or_with_tiny_irom_are_fine_for_inspect() {
        let image = write(FlashParams::default(), 0x4010_0000, &[0x55; 48], &[]);
        let info = inspect(&mut RamFlash(image.clone()), 0, image.len() as u32, &mut [0; 64]).unwrap();
        assert_eq!(info.descriptor, None);
        let image = write(FlashParams::default(), 0x4010_0000, &[], &[]);
        let info = inspect(&mut RamFlash(image.clone()), 0, image.len() as u32, &mut [0; 64]).unwrap();
        assert_eq!((info.irom_len, info.descriptor), (0, None));
    }

    /// A byte-granular flash that is exactly the given bytes.
    struct RamFlash(Vec<u8>);

    impl ErrorType for RamFlash {
        type Error = AlignedFlashError;
    }

    impl ReadNorFlash for RamFlash {
        const READ_SIZE: usize = 1;

        fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), AlignedFlashError> {
            let source = self.0.get(offset as usize..offset as usize + bytes.len());
            bytes.copy_from_slice(source.ok_or(AlignedFlashError(NorFlashErrorKind::OutOfBounds))?);
            Ok(())
        }

        fn capacity(&self) -> usize {
            self.0.len()
        }
    }

    fn inspect_bytes(image: &[u8]) -> Result<ImageInfo, ImageError> {
        inspect(&mut RamFlash(image.to_vec()), 0, image.len() as u32, &mut [0; 64])
    }

    /// Recomputes checksum and CRC after a structural edit, so only the edit is tested.
    fn reseal(image: &mut [u8]) {
        let n = image.len();
        let crc = crc_trailer(crc32fast::hash(&image[..n - 4]));
        image[n - 4..].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn each_corruption_has_its_error() {
        let good = sample_image(0x4020_2010);
        let len = good.len() as u32;
        let edit = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut image = good.clone();
            f(&mut image);
            inspect_bytes(&image)
        };
        let sealed = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut image = good.clone();
            f(&mut image);
            reseal(&mut image);
            inspect_bytes(&image)
        };

        assert_eq!(edit(&|i| i[0] = 0xE9), Err(ImageError::BadMagic(0xE9)));
        assert_eq!(edit(&|i| i[1] = 3), Err(ImageError::BadV2Marker(3)));
        assert_eq!(edit(&|i| i[2] = 9), Err(ImageError::UnknownFlashMode(9)));
        assert_eq!(edit(&|i| i[3] = 0xA0), Err(ImageError::UnknownFlashSize(0xA)));
        assert_eq!(edit(&|i| i[12] = 113), Err(ImageError::IromLength(113)));
        assert_eq!(edit(&|i| i[15] = 0x10), Err(ImageError::Truncated { needed: 16 + 0x1000_0070, len }));
        assert_eq!(edit(&|i| i[128] = 0xEA), Err(ImageError::BadSegmentMagic(0xEA)));
        assert_eq!(edit(&|i| i[129] = 16), Err(ImageError::TooManySegments(16)));
        assert_eq!(edit(&|i| i[131] = 0x20), Err(ImageError::HeaderMismatch));
        assert_eq!(edit(&|i| i[132] = 0x08), Err(ImageError::HeaderMismatch));
        assert_eq!(edit(&|i| i[140] = 30), Err(ImageError::SegmentLength { index: 0, len: 30 }));
        assert_eq!(
            edit(&|i| i[179] = 0x40),
            Err(ImageError::SegmentOutsideRam { index: 1, addr: 0x40FE_8000, len: 8 })
        );
        // A segment that starts in DRAM but runs past its end.
        assert_eq!(
            edit(&|i| i[192..196].copy_from_slice(&[0xFE, 0xFF, 0xFF, 0x3F])),
            Err(ImageError::SegmentOutsideRam { index: 2, addr: 0x3FFF_FFFE, len: 4 })
        );
        assert_eq!(
            edit(&|i| i[150] ^= 1),
            Err(ImageError::ChecksumMismatch { stored: good[207], computed: good[207] ^ 1 })
        );
        let computed = crc_trailer(crc32fast::hash(&{
            let mut image = good[..208].to_vec();
            image[100] ^= 0x80;
            image
        }));
        let stored = u32::from_le_bytes(good[208..].try_into().unwrap());
        assert_eq!(edit(&|i| i[100] ^= 0x80), Err(ImageError::CrcMismatch { stored, computed }));
        assert!(matches!(edit(&|i| i[210] ^= 1), Err(ImageError::CrcMismatch { .. })));
        // A padding byte is covered by the CRC, not by the checksum.
        assert!(matches!(edit(&|i| i[205] = 1), Err(ImageError::CrcMismatch { .. })));
        // The descriptor's text is checked when its magic is there.
        assert_eq!(sealed(&|i| i[16 + 16] = 0xFF), Err(ImageError::BadDescriptor(DescriptorError::BadText)));
        // Without its magic there is simply no descriptor.
        assert_eq!(sealed(&|i| i[16] = b'X').map(|info| info.descriptor), Ok(None));
    }

    #[test]
    fn length_must_match_exactly() {
        let image = sample_image(0x4020_2010);
        let len = image.len() as u32;
        for cut in [0, 1, 7, 8, 20, 127, 128, 200, 207, 208, 211] {
            let result = inspect_bytes(&image[..cut]);
            assert!(
                matches!(result, Err(ImageError::Truncated { len, .. }) if len == cut as u32),
                "{cut}: {result:?}"
            );
        }
        let mut longer = image.clone();
        longer.extend_from_slice(&[0xFF; 4]);
        assert_eq!(inspect_bytes(&longer), Err(ImageError::TrailingBytes { expected: len, len: len + 4 }));
        // Within a larger flash, the declared length decides.
        let mut flash = flash_with::<1>(&image, 0, 0x1000);
        assert_eq!(
            inspect(&mut flash, 0, len + 16, &mut [0; 64]).unwrap_err(),
            ImageError::TrailingBytes { expected: len, len: len + 16 }
        );
        assert_eq!(
            inspect(&mut flash, 0xF00, 0x200, &mut [0; 64]).unwrap_err(),
            ImageError::OutOfFlash { offset: 0xF00, len: 0x200, capacity: 0x1000 }
        );
        assert_eq!(
            inspect(&mut flash, 0, len, &mut [0; 63]).unwrap_err(),
            ImageError::ScratchTooSmall { len: 63, min: 64 }
        );
    }

    #[test]
    fn flash_errors_are_reported() {
        // A flash that is not a whole number of 4-byte read units: the last read cannot be
        // aligned, and the driver's error comes through.
        let mut image = sample_image(0x4020_2010);
        image.pop();
        let len = image.len() as u32;
        let mut flash = AlignedFlash::<4> { data: image, reads: 0 };
        assert_eq!(
            inspect(&mut flash, 0, len, &mut [0; 64]),
            Err(ImageError::Flash(NorFlashErrorKind::NotAligned))
        );
    }

    fn bootable<F: ReadNorFlash>(
        flash: &mut F,
        offset: u32,
        capacity: u32,
        scratch: &mut [u8],
    ) -> Result<ImageInfo, ImageError> {
        let mut info = ImageInfo::default();
        verify_bootable(flash, offset, capacity, scratch, &mut info).map(|()| info)
    }

    #[test]
    fn verify_bootable_finds_the_length_from_the_headers() {
        let layout = DEFAULT_LAYOUT;
        let user2 = layout.slot(SlotId::User2);
        let image = sample_image(user2.irom_link_addr());
        let mut flash = flash_with::<4>(&image, user2.offset as usize, layout.flash_size as usize);
        let mut scratch = [0u8; 256];
        let info = bootable(&mut flash, user2.offset, user2.capacity, &mut scratch).unwrap();
        assert_eq!(info.len, image.len() as u32);
        let inspected = inspect(&mut flash, user2.offset, image.len() as u32, &mut scratch).unwrap();
        // Of the descriptor only the link address is read.
        let read = info.descriptor.unwrap();
        assert_eq!((read.link_addr, read.name()), (0x4028_2010, ""));
        assert_eq!(inspected.descriptor.unwrap().name(), "blinky");
        assert_eq!(ImageInfo { descriptor: None, ..info }, ImageInfo { descriptor: None, ..inspected });
        // Each RAM segment's data is where ram_segments_at says.
        let segments: Vec<_> = info.ram_segments_at(user2.offset).collect();
        assert_eq!(segments.iter().map(|&(_, addr, len)| (addr, len)).collect::<Vec<_>>(), info.segments());
        let expected: [&[u8]; 3] =
            [&(0..29u8).chain([0; 3]).collect::<Vec<_>>(), &[0xAA; 6], &[0x11, 0x22, 0x33, 0x44]];
        for ((at, _, len), data) in segments.into_iter().zip(expected) {
            let at = (at - user2.offset) as usize;
            assert_eq!(&image[at..at + data.len()], data);
            assert_eq!(len as usize, data.len().next_multiple_of(4));
        }

        // Bounded by the capacity, checked like inspect, descriptor for this offset.
        let short = image.len() as u32 - 1;
        assert!(matches!(
            bootable(&mut flash, user2.offset, short, &mut scratch),
            Err(ImageError::Truncated { len, .. }) if len == short
        ));
        let user1 = layout.slot(SlotId::User1);
        let mut elsewhere = flash_with::<4>(&image, user1.offset as usize, layout.flash_size as usize);
        assert_eq!(
            bootable(&mut elsewhere, user1.offset, user1.capacity, &mut scratch),
            Err(ImageError::WrongSlot { linked: 0x4028_2010, expected: 0x4020_2010 })
        );
        let mut broken = image.clone();
        broken[100] ^= 1;
        let mut flash = flash_with::<4>(&broken, user2.offset as usize, layout.flash_size as usize);
        assert!(matches!(
            bootable(&mut flash, user2.offset, user2.capacity, &mut scratch),
            Err(ImageError::CrcMismatch { .. })
        ));
        let mut erased = flash_with::<4>(&[], 0, layout.flash_size as usize);
        assert_eq!(
            bootable(&mut erased, user2.offset, user2.capacity, &mut scratch),
            Err(ImageError::BadMagic(0xFF))
        );
        assert_eq!(bootable(&mut erased, 0, 0x1000, &mut scratch), Err(ImageError::NoRom(0)));
    }

    #[test]
    fn verify_bootable_takes_foreign_images_but_not_segments_over_the_bootloader() {
        let layout = DEFAULT_LAYOUT;
        let user1 = layout.slot(SlotId::User1);
        let mut scratch = [0u8; 64];
        // No descriptor (an SDK or C build): bootable like rBoot boots it.
        let foreign =
            write(DIO_4M_80, 0x4010_0004, &[0x5A; 48], &[Segment { addr: 0x4010_0000, data: &[1; 8] }]);
        let mut flash = flash_with::<4>(&foreign, user1.offset as usize, layout.flash_size as usize);
        let info = bootable(&mut flash, user1.offset, user1.capacity, &mut scratch).unwrap();
        assert_eq!(info.descriptor, None);
        // A DRAM segment in the ROM's top 16 KB (the stack the copy runs on) is refused.
        let over_stack = write(
            DIO_4M_80,
            0x4010_0004,
            &irom_for(user1.irom_link_addr(), 0),
            &[Segment { addr: 0x3FFF_FF00, data: &[1; 16] }],
        );
        let mut flash = flash_with::<4>(&over_stack, user1.offset as usize, layout.flash_size as usize);
        assert_eq!(
            bootable(&mut flash, user1.offset, user1.capacity, &mut scratch),
            Err(ImageError::SegmentOutsideRam { index: 0, addr: 0x3FFF_FF00, len: 16 })
        );
        let mut flash = flash_with::<4>(&over_stack, user1.offset as usize, layout.flash_size as usize);
        assert!(
            inspect(&mut flash, user1.offset, over_stack.len() as u32, &mut scratch).is_ok(),
            "inspect allows it"
        );
    }

    #[test]
    fn verify_for_slot_checks_size_descriptor_and_link_address() {
        let layout = DEFAULT_LAYOUT;
        let user1 = layout.slot(SlotId::User1);
        let user2 = layout.slot(SlotId::User2);
        let image = sample_image(user2.irom_link_addr());
        let len = image.len() as u32;
        let mut flash = flash_with::<4>(&image, user2.offset as usize, layout.flash_size as usize);
        let mut scratch = [0u8; 4096];
        let info = verify_for_slot(&mut flash, user2, len, &mut scratch).unwrap();
        assert_eq!(info.descriptor.unwrap().link_addr, 0x4028_2010);

        // The same bytes in user1's place: linked for the other slot.
        let mut flash = flash_with::<4>(&image, user1.offset as usize, layout.flash_size as usize);
        assert_eq!(
            verify_for_slot(&mut flash, user1, len, &mut scratch),
            Err(ImageError::WrongSlot { linked: 0x4028_2010, expected: 0x4020_2010 })
        );
        assert_eq!(
            verify_for_slot(&mut flash, user1, user1.capacity + 1, &mut scratch),
            Err(ImageError::TooLarge { len: user1.capacity + 1, capacity: user1.capacity })
        );

        let bare = write(DIO_4M_80, 0x4010_0000, &[0; 64], &[]);
        let mut flash = flash_with::<4>(&bare, user1.offset as usize, layout.flash_size as usize);
        assert_eq!(
            verify_for_slot(&mut flash, user1, bare.len() as u32, &mut scratch),
            Err(ImageError::NoDescriptor)
        );
        // inspect errors pass through.
        let mut broken = sample_image(user1.irom_link_addr());
        broken[88] ^= 1;
        let mut flash = flash_with::<4>(&broken, user1.offset as usize, layout.flash_size as usize);
        assert!(matches!(
            verify_for_slot(&mut flash, user1, broken.len() as u32, &mut scratch),
            Err(ImageError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn rboot_check_mirrors_rboot() {
        let image = sample_image(0x4020_2010);
        let mut flash = flash_with::<4>(&image, 0x2000, 0x10000);
        assert_eq!(rboot_check(&mut flash, 0x2000), Ok(0x4010_0004));

        // IROM is not covered: a torn IROM still boots.
        let mut torn = image.clone();
        torn[100] ^= 0xFF;
        let mut flash = flash_with::<4>(&torn, 0x2000, 0x10000);
        assert_eq!(rboot_check(&mut flash, 0x2000), Ok(0x4010_0004));
        assert!(matches!(
            inspect(&mut flash, 0x2000, torn.len() as u32, &mut [0; 64]),
            Err(ImageError::CrcMismatch { .. })
        ));

        // Nor is the CRC, nor the second header's magic, nor whatever follows the checksum.
        let mut loose = image.clone();
        loose[128] = 0x00;
        loose[210] ^= 0xFF;
        let mut flash = flash_with::<4>(&loose, 0x2000, 0x10000);
        assert_eq!(rboot_check(&mut flash, 0x2000), Ok(0x4010_0004));

        // RAM data is.
        let mut bad = image.clone();
        bad[150] ^= 0x04;
        let mut flash = flash_with::<4>(&bad, 0x2000, 0x10000);
        assert_eq!(
            rboot_check(&mut flash, 0x2000),
            Err(ImageError::ChecksumMismatch { stored: image[207], computed: image[207] ^ 0x04 })
        );

        // Erased flash, offsets rBoot treats as empty, a header pointing past the chip.
        let mut flash = flash_with::<4>(&image, 0x2000, 0x10000);
        assert_eq!(rboot_check(&mut flash, 0x4000), Err(ImageError::BadMagic(0xFF)));
        assert_eq!(rboot_check(&mut flash, 0), Err(ImageError::NoRom(0)));
        assert_eq!(rboot_check(&mut flash, u32::MAX), Err(ImageError::NoRom(u32::MAX)));
        let mut far = image.clone();
        far[14] = 0x01; // IROM "length" of 64 KB + 112
        let mut flash = flash_with::<4>(&far, 0x2000, 0x10000);
        assert!(matches!(rboot_check(&mut flash, 0x2000), Err(ImageError::OutOfFlash { .. })));

        // A plain 0xE9 image (no IROM) boots too: the v2 image's tail is one.
        let mut flash = flash_with::<4>(&image, 0x2000, 0x10000);
        assert_eq!(rboot_check(&mut flash, 0x2000 + 128), Ok(0x4010_0004));
    }

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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            scratch_len in 64usize..300,
            claimed_extra in 0u32..8,
        ) {
            let mut flash = RamFlash(bytes.clone());
            let mut scratch = vec![0u8; scratch_len];
            let len = (bytes.len() as u32).saturating_sub(claimed_extra);
            let _ = scan(&mut flash, 0, len, &mut scratch);
            let _ = inspect(&mut flash, claimed_extra.min(len), len - claimed_extra.min(len), &mut scratch);
            let _ = rboot_check(&mut flash, claimed_extra);
            let _ = rboot_check(&mut flash, 1);
        }

        #[test]
        fn mutated_images_never_panic_and_bit_flips_are_caught(
            at in 0usize..212,
            bit in 0u8..8,
            noise in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let mut image = sample_image(0x4020_2010);
            image[at] ^= 1 << bit;
            prop_assert!(inspect_bytes(&image).is_err(), "flip at {} bit {} passed", at, bit);
            image.extend_from_slice(&noise);
            let _ = inspect(&mut RamFlash(image.clone()), 0, image.len() as u32, &mut [0; 64]);
            let _ = rboot_check(&mut RamFlash(image), 1);
        }

        #[test]
        fn written_images_round_trip(
            irom in proptest::collection::vec(any::<u8>(), 0..300),
            sizes in proptest::collection::vec(0usize..40, 0..=MAX_RAM_SEGMENTS),
            entry in any::<u32>(),
            mode in 0u8..4,
        ) {
            let data: Vec<Vec<u8>> = sizes.iter().map(|&n| (0..n).map(|i| (i * 31 + n) as u8).collect()).collect();
            let segments: Vec<Segment<'_>> = data
                .iter()
                .enumerate()
                .map(|(i, d)| Segment { addr: 0x3FFE_8000 + 64 * i as u32, data: d })
                .collect();
            let params = FlashParams { mode: FlashMode::from_code(mode).unwrap(), ..FlashParams::default() };
            let image = write(params, entry, &irom, &segments);
            prop_assert_eq!(image.len() % 16, 4);
            let info = inspect_bytes(&image).unwrap();
            prop_assert_eq!(info.params, params);
            prop_assert_eq!(info.entry, entry);
            prop_assert_eq!(info.irom_len as usize, irom.len().next_multiple_of(16));
            let expected: Vec<(u32, u32)> =
                segments.iter().map(|s| (s.addr, s.data.len().next_multiple_of(4) as u32)).collect();
            prop_assert_eq!(info.segments(), &expected[..]);
            let mut flash = RamFlash([vec![0xFF; 16], image].concat());
            prop_assert_eq!(rboot_check(&mut flash, 16), Ok(entry));
        }
    }
}
