//! The image's fixed parts: header bytes, flash parameters, memories, and the padding and
//! trailer rules both the writer and the reader follow.

use core::fmt;

use crate::descriptor::{BUILD_ID_LEN, Descriptor};
use crate::layout::{DRAM, DRAM_USABLE, IRAM, IROM};

use super::ImageError;

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
            MemoryKind::Dram => (DRAM.start, DRAM.end),
            MemoryKind::Iram => (IRAM.start, IRAM.end),
            MemoryKind::Irom => (IROM.start, IROM.end),
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

/// Whether a bootloader may load a RAM segment to `addr..addr + len`: inside the DRAM a
/// firmware may use ([`DRAM_USABLE`]) or IRAM. Copying it then overwrites neither the
/// bootloader (cache RAM) nor its stack (DRAM's top).
pub const fn loadable_at_boot(addr: u32, len: u32) -> bool {
    inside(addr, len, DRAM_USABLE) || inside(addr, len, IRAM)
}

/// Whether `addr..addr + len` lies inside `range`.
const fn inside(addr: u32, len: u32, range: core::ops::Range<u32>) -> bool {
    addr >= range.start && addr <= range.end && len <= range.end - addr
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

/// What an image holds, as found by [`scan`](super::scan) (stored and computed integrity
/// values side by side) and by [`inspect`](super::inspect) (where they are known to agree).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImageInfo {
    /// The flash parameters, from the header before the RAM segments (in esptool's images
    /// the first header repeats them).
    pub params: FlashParams,
    /// For an image written by the SDK's `gen_appbin.py`: the app number (1 or 2) its first
    /// header carries in bytes 2..3 (`00 01`, `00 02`) instead of the flash parameters.
    pub sdk_app: Option<u8>,
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
        ram_segments_at(image_offset, self.irom_len, self.segments())
    }
}

/// What a bootloader needs of an image it boots: where to start it and what to copy where
/// (what [`check_bootable`](super::check_bootable) fills in). [`SegmentTable::EMPTY`] is
/// all zero, so a `static` of it costs no image bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentTable {
    pub entry: u32,
    /// IROM bytes as stored (padded to 16).
    pub irom_len: u32,
    pub segment_count: u32,
    /// The RAM segments' addresses and lengths, `segment_count` of them.
    pub segments: [(u32, u32); MAX_RAM_SEGMENTS],
    /// The slot descriptor's build id when the image carries a descriptor (the
    /// bootloader's line says which build it starts), as the two little-endian words its
    /// eight bytes make: words are what the bootloader reads and prints cheaply.
    pub build_id: Option<[u32; 2]>,
}

impl SegmentTable {
    pub const EMPTY: SegmentTable = SegmentTable {
        entry: 0,
        irom_len: 0,
        segment_count: 0,
        segments: [(0, 0); MAX_RAM_SEGMENTS],
        build_id: None,
    };

    /// `(address, length)` of each RAM segment, in image order.
    pub fn segments(&self) -> &[(u32, u32)] {
        &self.segments[..self.segment_count as usize]
    }

    /// The build id's bytes, in their order.
    pub fn build_id_bytes(&self) -> Option<[u8; BUILD_ID_LEN]> {
        self.build_id.map(|[low, high]| {
            let mut bytes = [0; BUILD_ID_LEN];
            bytes[..4].copy_from_slice(&low.to_le_bytes());
            bytes[4..].copy_from_slice(&high.to_le_bytes());
            bytes
        })
    }

    /// As [`ImageInfo::ram_segments_at`].
    pub fn ram_segments_at(&self, image_offset: u32) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
        ram_segments_at(image_offset, self.irom_len, self.segments())
    }
}

/// Where each RAM segment's data lies in an image at flash `image_offset` whose IROM
/// segment holds `irom_len` bytes: after the image header, the IROM segment's header, IROM
/// and the second header, each segment's data follows its own 8-byte header.
fn ram_segments_at(
    image_offset: u32,
    irom_len: u32,
    segments: &[(u32, u32)],
) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
    let mut at = image_offset + 3 * HEADER_LEN + irom_len;
    segments.iter().map(move |&(addr, len)| {
        let data = at + HEADER_LEN;
        at = data + len;
        (data, addr, len)
    })
}

/// The CRC trailer the ESP8266 SDK bootloader expects, from the zlib CRC-32 `crc` of all
/// bytes before it.
pub const fn crc_trailer(crc: u32) -> u32 {
    if crc & 0x8000_0000 != 0 { crc ^ 0xFFFF_FFFF } else { crc + 1 }
}

/// Whether first-header bytes 2..3 are `gen_appbin.py`'s `00` and app number (1 or 2).
/// esptool writes the flash parameters there; both forms are read.
pub const fn sdk_app_number(mode: u8, size_freq: u8) -> Option<u8> {
    match (mode, size_freq) {
        (0, app @ (1 | 2)) => Some(app),
        _ => None,
    }
}

/// Where the XOR checksum byte goes: the next file position that is 15 mod 16.
pub const fn checksum_position(end_of_segments: u32) -> u32 {
    end_of_segments | (IROM_ALIGN - 1)
}

pub const fn padding(len: u32, align: u32) -> u32 {
    (align - len % align) % align
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::image::test_support::DIO_4M_80;

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
}
