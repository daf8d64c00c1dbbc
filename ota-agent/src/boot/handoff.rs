//! The hand-off record: what tcpflash-boot tells the firmware it starts.
//!
//! The bootloader runs from the cache's own RAM, so it cannot map the firmware's flash
//! megabyte and keep running: it leaves this record, and the firmware's start-up code maps
//! the megabyte of the offset it names. The agent reads it too, to learn how it was booted
//! (a trial, which attempt). 16 bytes, four little-endian words in RTC user memory (which
//! survives a reset, not a power cut, and takes only 32-bit accesses):
//!
//! | off | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `TCFB` |
//! | 4 | 1 | version 1 |
//! | 5 | 1 | rom index booted |
//! | 6 | 1 | kind: 0 confirmed, 1 trial, 2 reverted, 3 fallback |
//! | 7 | 1 | attempt number (trial) or 0 |
//! | 8 | 4 | flash offset of the booted image |
//! | 12 | 4 | check: `!(word0 ^ word1 ^ word2)` |

use core::fmt;

use crate::layout::RTC_USER_MEMORY;

/// `TCFB` as the first word reads.
pub const HANDOFF_MAGIC: u32 = u32::from_le_bytes(*b"TCFB");
pub const HANDOFF_VERSION: u8 = 1;
pub const HANDOFF_LEN: usize = 16;
/// The last 16 bytes of RTC user memory (rBoot uses its start): 0x600012F0.
pub const HANDOFF_ADDR: u32 = RTC_USER_MEMORY.end - HANDOFF_LEN as u32;
/// Byte offsets of the words the firmware's start-up code reads.
pub const HANDOFF_INFO_AT: u32 = 4;
pub const HANDOFF_OFFSET_AT: u32 = 8;
pub const HANDOFF_CHECK_AT: u32 = 12;

/// How the bootloader chose the image it started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandOffKind {
    /// The confirmed slot (no trial, or a confirmed one).
    Confirmed,
    /// The trial slot, not yet confirmed.
    Trial,
    /// The trial used up its attempts: back on the slot it replaced.
    Reverted,
    /// The preferred slot was not bootable: another one.
    Fallback,
}

impl HandOffKind {
    pub const fn code(self) -> u8 {
        match self {
            HandOffKind::Confirmed => 0,
            HandOffKind::Trial => 1,
            HandOffKind::Reverted => 2,
            HandOffKind::Fallback => 3,
        }
    }

    pub const fn from_code(code: u8) -> Option<HandOffKind> {
        match code {
            0 => Some(HandOffKind::Confirmed),
            1 => Some(HandOffKind::Trial),
            2 => Some(HandOffKind::Reverted),
            3 => Some(HandOffKind::Fallback),
            _ => None,
        }
    }
}

/// A decoded hand-off record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandOff {
    pub rom: u8,
    pub kind: HandOffKind,
    /// 1-based attempt number of a trial boot, else 0.
    pub attempt: u8,
    /// Flash offset of the image booted: its megabyte is the one to map.
    pub offset: u32,
}

/// Why a hand-off record is not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandOffError {
    /// No record (booted by another bootloader, or after a power cut).
    BadMagic(u32),
    BadVersion(u8),
    BadCheck,
    UnknownKind(u8),
}

impl fmt::Display for HandOffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HandOffError::BadMagic(found) => write!(f, "no hand-off record (magic {found:#010x})"),
            HandOffError::BadVersion(version) => write!(f, "hand-off record version {version}, not 1"),
            HandOffError::BadCheck => f.write_str("hand-off record check word does not match"),
            HandOffError::UnknownKind(kind) => write!(f, "hand-off record kind {kind} is unknown"),
        }
    }
}

impl HandOff {
    /// The four words as they go to RTC memory, check word last.
    pub const fn to_words(&self) -> [u32; 4] {
        let info = HANDOFF_VERSION as u32
            | (self.rom as u32) << 8
            | (self.kind.code() as u32) << 16
            | (self.attempt as u32) << 24;
        [HANDOFF_MAGIC, info, self.offset, check(HANDOFF_MAGIC, info, self.offset)]
    }

    pub fn to_bytes(&self) -> [u8; HANDOFF_LEN] {
        let mut bytes = [0u8; HANDOFF_LEN];
        for (chunk, word) in bytes.chunks_exact_mut(4).zip(self.to_words()) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        bytes
    }

    pub fn parse_words(words: [u32; 4]) -> Result<HandOff, HandOffError> {
        let [magic, info, offset, stored] = words;
        if magic != HANDOFF_MAGIC {
            return Err(HandOffError::BadMagic(magic));
        }
        let [version, rom, kind, attempt] = info.to_le_bytes();
        if version != HANDOFF_VERSION {
            return Err(HandOffError::BadVersion(version));
        }
        if stored != check(magic, info, offset) {
            return Err(HandOffError::BadCheck);
        }
        let kind = HandOffKind::from_code(kind).ok_or(HandOffError::UnknownKind(kind))?;
        Ok(HandOff { rom, kind, attempt, offset })
    }

    pub fn parse(bytes: &[u8; HANDOFF_LEN]) -> Result<HandOff, HandOffError> {
        let word = |i: usize| {
            u32::from_le_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]])
        };
        HandOff::parse_words([word(0), word(1), word(2), word(3)])
    }

    /// The flash megabyte the cache must map for the booted image.
    pub const fn megabyte(&self) -> u32 {
        self.offset / crate::layout::IROM_WINDOW
    }
}

/// The check word: `!(word0 ^ word1 ^ word2)`, so an all-zero or all-ones memory never
/// passes.
pub const fn check(magic: u32, info: u32, offset: u32) -> u32 {
    !(magic ^ info ^ offset)
}

/// The record tcpflash-boot left at [`HANDOFF_ADDR`], if a valid one is there (RTC user
/// memory on an ESP8266, system RAM on QEMU's XTFPGA board: both keep it across a reset).
#[cfg(target_arch = "xtensa")]
#[allow(unsafe_code)] // a fixed, always-mapped memory address
pub fn read_handoff() -> Option<HandOff> {
    let base = HANDOFF_ADDR as *const u32;
    // SAFETY: HANDOFF_ADDR is word-aligned RAM on every board this crate builds for, read
    // with 32-bit loads as RTC memory requires.
    let words = core::array::from_fn(|i| unsafe { base.add(i).read_volatile() });
    HandOff::parse_words(words).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_documented_bytes_at_the_documented_address() {
        assert_eq!(HANDOFF_ADDR, 0x6000_12F0);
        let record = HandOff { rom: 1, kind: HandOffKind::Trial, attempt: 2, offset: 0x10_2000 };
        let bytes = record.to_bytes();
        assert_eq!(&bytes[..12], b"TCFB\x01\x01\x01\x02\x00\x20\x10\x00");
        let w0 = u32::from_le_bytes(*b"TCFB");
        assert_eq!(u32::from_le_bytes(bytes[12..].try_into().unwrap()), !(w0 ^ 0x0201_0101 ^ 0x10_2000));
        assert_eq!(HandOff::parse(&bytes), Ok(record));
        assert_eq!(record.megabyte(), 1);
    }

    #[test]
    fn every_field_is_checked() {
        let record = HandOff { rom: 0, kind: HandOffKind::Confirmed, attempt: 0, offset: 0x2000 };
        let words = record.to_words();
        assert_eq!(HandOff::parse_words([0; 4]), Err(HandOffError::BadMagic(0)));
        assert_eq!(HandOff::parse_words([u32::MAX; 4]), Err(HandOffError::BadMagic(u32::MAX)));
        let mut bad = words;
        bad[1] ^= 0x02;
        assert_eq!(HandOff::parse_words(bad), Err(HandOffError::BadVersion(3)));
        for (i, bit) in [(1, 8), (1, 16), (1, 31), (2, 0), (2, 20), (3, 5)] {
            let mut bad = words;
            bad[i] ^= 1 << bit;
            assert_eq!(HandOff::parse_words(bad), Err(HandOffError::BadCheck), "word {i} bit {bit}");
        }
        let mut unknown = words;
        unknown[1] |= 7 << 16;
        unknown[3] = check(unknown[0], unknown[1], unknown[2]);
        assert_eq!(HandOff::parse_words(unknown), Err(HandOffError::UnknownKind(7)));
        for kind in [HandOffKind::Confirmed, HandOffKind::Trial, HandOffKind::Reverted, HandOffKind::Fallback]
        {
            assert_eq!(HandOffKind::from_code(kind.code()), Some(kind));
        }
    }
}
