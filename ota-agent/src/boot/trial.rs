//! The trial record: a new firmware boots on trial for a few attempts and must confirm
//! itself, or the bootloader returns to the slot that worked before.
//!
//! It lives at the start of the boot-state sector ([`FlashLayout::boot_state_offset`]), its
//! own sector, so a power cut while it is written can never tear rBoot's config too. 32
//! bytes, little-endian:
//!
//! | off | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `TCFT` |
//! | 4 | 1 | version 1 |
//! | 5 | 1 | `trial_rom`: index into the config's `roms[]` |
//! | 6 | 1 | `fallback_rom`: the confirmed slot to return to |
//! | 7 | 1 | `max_attempts`, 1..=31 |
//! | 8 | 4 | `trial_offset` (must equal `roms[trial_rom]`) |
//! | 12 | 4 | `fallback_offset` (must equal `roms[fallback_rom]`) |
//! | 16 | 4 | CRC-32 (zlib) of bytes 0..16 |
//! | 20 | 4 | attempts word: erased, one more 0 bit programmed before each trial boot |
//! | 24 | 4 | confirmed word: erased = not confirmed, anything else = confirmed |
//! | 28 | 4 | reserved, erased |
//!
//! Bytes 0..20 go in one write after an erase: a torn write fails the CRC and the record is
//! ignored. The attempts and confirmed words are single-word programs without an erase:
//! they only ever clear bits, so a torn one is either counted or not.

use core::fmt;

use crate::crc::crc32;
use crate::flash::{NorFlash, NorFlashError, NorFlashErrorKind};
use crate::irom_text;
use crate::layout::{FlashLayout, SECTOR_SIZE};
use crate::text::{Message, Sink};

/// `TCFT` in flash byte order.
pub const TRIAL_MAGIC: [u8; 4] = *b"TCFT";
pub const TRIAL_VERSION: u8 = 1;
/// The whole record.
pub const TRIAL_LEN: usize = 32;
/// The part the agent writes in one go (through the CRC).
pub const TRIAL_HEADER_LEN: usize = 20;
/// Offset of the attempts word inside the record.
pub const ATTEMPTS_AT: u32 = 20;
/// Offset of the confirmed word inside the record.
pub const CONFIRMED_AT: u32 = 24;
/// Most attempts a trial may allow: the attempts word has 32 bits, and one stays as the
/// proof that the limit was reached.
pub const MAX_ATTEMPTS: u8 = 31;
/// The erased state of a flash word.
pub const ERASED: u32 = u32::MAX;

const CRC_AT: usize = 16;

/// What the agent records when it starts a trial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrialRecord {
    pub trial_rom: u8,
    pub fallback_rom: u8,
    pub max_attempts: u8,
    pub trial_offset: u32,
    pub fallback_offset: u32,
}

/// A record as found in flash: what was written, and what happened since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trial {
    pub record: TrialRecord,
    /// Trial boots started so far (0 bits of the attempts word, 0..=32).
    pub attempts_used: u8,
    pub confirmed: bool,
}

/// Why a record is ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrialError {
    /// No record (an erased sector reads `ff ff ff ff`), or not ours.
    BadMagic,
    BadVersion(u8),
    /// A torn or damaged write.
    BadCrc {
        stored: u32,
        computed: u32,
    },
    /// `max_attempts` outside 1..=31.
    BadMaxAttempts(u8),
    /// A rom index is not below the config's `count`.
    RomOutOfRange {
        rom: u8,
        count: u8,
    },
    /// The config's `roms[rom]` is not the offset the record names: the config changed
    /// since the trial began.
    OffsetMismatch {
        rom: u8,
        recorded: u32,
        config: u32,
    },
}

impl fmt::Display for TrialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TrialError::BadMagic => f.write_str("no trial record (magic is not TCFT)"),
            TrialError::BadVersion(version) => write!(f, "trial record version {version}, not 1"),
            TrialError::BadCrc { stored, computed } => {
                write!(f, "trial record CRC is {stored:#010x}, computed {computed:#010x}")
            }
            TrialError::BadMaxAttempts(max) => write!(f, "trial record allows {max} attempts, not 1..=31"),
            TrialError::RomOutOfRange { rom, count } => {
                write!(f, "trial record names rom {rom}, the config has {count}")
            }
            TrialError::OffsetMismatch { rom, recorded, config } => {
                write!(f, "trial record has rom {rom} at {recorded:#x}, the config at {config:#x}")
            }
        }
    }
}

impl TrialRecord {
    /// Bytes 0..20: what [`begin_trial`] writes.
    pub fn encode(&self) -> [u8; TRIAL_HEADER_LEN] {
        let mut bytes = [0u8; TRIAL_HEADER_LEN];
        bytes[..4].copy_from_slice(&TRIAL_MAGIC);
        bytes[4..8].copy_from_slice(&[TRIAL_VERSION, self.trial_rom, self.fallback_rom, self.max_attempts]);
        bytes[8..12].copy_from_slice(&self.trial_offset.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.fallback_offset.to_le_bytes());
        let crc = crc32(&bytes[..CRC_AT]);
        bytes[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// The whole record as it reads right after [`begin_trial`]: no attempt used, not
    /// confirmed, reserved erased.
    pub fn to_bytes(&self) -> [u8; TRIAL_LEN] {
        let mut bytes = [0xFF; TRIAL_LEN];
        bytes[..TRIAL_HEADER_LEN].copy_from_slice(&self.encode());
        bytes
    }
}

impl Trial {
    /// Reads a record on its own (magic, version, CRC, `max_attempts`); whether it fits the
    /// config is [`Trial::check_roms`]'s business.
    #[inline]
    pub fn parse(bytes: &[u8; TRIAL_LEN]) -> Result<Trial, TrialError> {
        if bytes[..4] != TRIAL_MAGIC {
            return Err(TrialError::BadMagic);
        }
        if bytes[4] != TRIAL_VERSION {
            return Err(TrialError::BadVersion(bytes[4]));
        }
        let stored = word(bytes, CRC_AT);
        let computed = crc32(&bytes[..CRC_AT]);
        if stored != computed {
            return Err(TrialError::BadCrc { stored, computed });
        }
        let max_attempts = bytes[7];
        if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
            return Err(TrialError::BadMaxAttempts(max_attempts));
        }
        Ok(Trial {
            record: TrialRecord {
                trial_rom: bytes[5],
                fallback_rom: bytes[6],
                max_attempts,
                trial_offset: word(bytes, 8),
                fallback_offset: word(bytes, 12),
            },
            attempts_used: attempts_used(word(bytes, ATTEMPTS_AT as usize)),
            confirmed: word(bytes, CONFIRMED_AT as usize) != ERASED,
        })
    }

    /// Checks both roms against the config's first `count` entries of `roms`.
    pub fn check_roms(&self, roms: &[u32], count: u8) -> Result<(), TrialError> {
        let record = &self.record;
        for (rom, recorded) in
            [(record.trial_rom, record.trial_offset), (record.fallback_rom, record.fallback_offset)]
        {
            let config = *roms
                .get(usize::from(rom))
                .filter(|_| rom < count)
                .ok_or(TrialError::RomOutOfRange { rom, count })?;
            if config != recorded {
                return Err(TrialError::OffsetMismatch { rom, recorded, config });
            }
        }
        Ok(())
    }

    /// Whether the trial slot has used up its attempts without confirming.
    pub fn exhausted(&self) -> bool {
        !self.confirmed && self.attempts_used >= self.record.max_attempts
    }
}

fn word(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Attempts used, as the attempts word counts them: its 0 bits.
pub const fn attempts_used(word: u32) -> u8 {
    word.count_zeros() as u8
}

/// The attempts word after one more attempt: its lowest 1 bit programmed to 0. A word
/// with no 1 bit left stays as it is.
pub const fn next_attempts_word(word: u32) -> u32 {
    word & word.wrapping_sub(1)
}

/// A write to the boot-state sector failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrialWriteError {
    Read(NorFlashErrorKind),
    Erase(NorFlashErrorKind),
    Program(NorFlashErrorKind),
    /// Read back after writing, the record is not what was written.
    Mismatch,
    /// There is no valid record to count an attempt in or to confirm.
    NoRecord(TrialError),
}

irom_text! {
    STATE_READ = "boot state read failed";
    STATE_ERASE = "boot state erase failed";
    STATE_WRITE = "boot state write failed";
    STATE_MISMATCH = "trial record reads back wrong after writing";
    NO_RECORD = "no trial record";
}

/// The short words the agent sends after `ERR: ` (no `core::fmt` on the device).
impl Message for TrialWriteError {
    fn write_message<S: Sink + ?Sized>(&self, out: &mut S) {
        out.push_text(match self {
            TrialWriteError::Read(_) => STATE_READ,
            TrialWriteError::Erase(_) => STATE_ERASE,
            TrialWriteError::Program(_) => STATE_WRITE,
            TrialWriteError::Mismatch => STATE_MISMATCH,
            TrialWriteError::NoRecord(_) => NO_RECORD,
        });
    }
}

impl fmt::Display for TrialWriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrialWriteError::Read(kind) => write!(f, "boot state read failed: {kind}"),
            TrialWriteError::Erase(kind) => write!(f, "boot state erase failed: {kind}"),
            TrialWriteError::Program(kind) => write!(f, "boot state write failed: {kind}"),
            TrialWriteError::Mismatch => f.write_str("trial record reads back wrong after writing"),
            TrialWriteError::NoRecord(error) => write!(f, "no trial record: {error}"),
        }
    }
}

fn read_record<F: NorFlash>(flash: &mut F, layout: &FlashLayout) -> Result<[u8; TRIAL_LEN], TrialWriteError> {
    let mut bytes = [0u8; TRIAL_LEN];
    flash.read(layout.boot_state_offset(), &mut bytes).map_err(|e| TrialWriteError::Read(e.kind()))?;
    Ok(bytes)
}

/// Starts a trial: erases the boot-state sector and writes bytes 0..20 of `record` in one
/// write, then reads the whole record back.
pub fn begin_trial<F: NorFlash>(
    flash: &mut F,
    layout: &FlashLayout,
    record: &TrialRecord,
) -> Result<(), TrialWriteError> {
    let at = layout.boot_state_offset();
    // Encoded once: the bytes written, then what the record must read back as.
    let mut expected = [0xFF; TRIAL_LEN];
    expected[..TRIAL_HEADER_LEN].copy_from_slice(&record.encode());
    flash.erase(at, at + SECTOR_SIZE).map_err(|e| TrialWriteError::Erase(e.kind()))?;
    flash.write(at, &expected[..TRIAL_HEADER_LEN]).map_err(|e| TrialWriteError::Program(e.kind()))?;
    if read_record(flash, layout)? != expected {
        return Err(TrialWriteError::Mismatch);
    }
    Ok(())
}

/// Programs one more 0 bit into the attempts word (what the bootloader does before each
/// trial boot) and returns the attempts used now. Needs a valid record; a word already all
/// 0 is left alone.
pub fn count_attempt<F: NorFlash>(flash: &mut F, layout: &FlashLayout) -> Result<u8, TrialWriteError> {
    let bytes = read_record(flash, layout)?;
    Trial::parse(&bytes).map_err(TrialWriteError::NoRecord)?;
    let old = word(&bytes, ATTEMPTS_AT as usize);
    let new = next_attempts_word(old);
    if new != old {
        program_word(flash, layout.boot_state_offset() + ATTEMPTS_AT, new)?;
    }
    Ok(attempts_used(new))
}

/// Confirms the trial: programs the confirmed word to 0, so the trial slot boots from now
/// on. Needs a valid record; confirming twice changes nothing.
pub fn confirm<F: NorFlash>(flash: &mut F, layout: &FlashLayout) -> Result<(), TrialWriteError> {
    let bytes = read_record(flash, layout)?;
    // One match on the parse: no copies of the whole `Result` on the way.
    match Trial::parse(&bytes) {
        Ok(Trial { confirmed: true, .. }) => Ok(()),
        Ok(_) => program_word(flash, layout.boot_state_offset() + CONFIRMED_AT, 0),
        Err(error) => Err(TrialWriteError::NoRecord(error)),
    }
}

fn program_word<F: NorFlash>(flash: &mut F, at: u32, value: u32) -> Result<(), TrialWriteError> {
    flash.write(at, &value.to_le_bytes()).map_err(|e| TrialWriteError::Program(e.kind()))?;
    let mut check = [0u8; 4];
    flash.read(at, &mut check).map_err(|e| TrialWriteError::Read(e.kind()))?;
    if u32::from_le_bytes(check) != value {
        return Err(TrialWriteError::Mismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flash::{NorError, RamNor};
    use crate::layout::DEFAULT_LAYOUT;

    fn record() -> TrialRecord {
        TrialRecord {
            trial_rom: 1,
            fallback_rom: 0,
            max_attempts: 3,
            trial_offset: 0x82000,
            fallback_offset: 0x2000,
        }
    }

    #[test]
    fn encodes_the_documented_bytes() {
        let bytes = record().to_bytes();
        let mut expected = vec![b'T', b'C', b'F', b'T', 1, 1, 0, 3];
        expected.extend_from_slice(&0x82000u32.to_le_bytes());
        expected.extend_from_slice(&0x2000u32.to_le_bytes());
        let crc = crc32fast::hash(&expected);
        expected.extend_from_slice(&crc.to_le_bytes());
        expected.extend_from_slice(&[0xFF; 12]);
        assert_eq!(bytes.to_vec(), expected);
        let trial = Trial::parse(&bytes).unwrap();
        assert_eq!(trial, Trial { record: record(), attempts_used: 0, confirmed: false });
    }

    #[test]
    fn parse_refuses_each_damage() {
        let good = record().to_bytes();
        assert_eq!(Trial::parse(&[0xFF; TRIAL_LEN]), Err(TrialError::BadMagic));
        let mut bad = good;
        bad[4] = 2;
        assert_eq!(Trial::parse(&bad), Err(TrialError::BadVersion(2)));
        for at in [5, 8, 15, 16, 19] {
            let mut torn = good;
            torn[at] ^= 0x01;
            assert!(matches!(Trial::parse(&torn), Err(TrialError::BadCrc { .. })), "byte {at}");
        }
        for max in [0, 32, 255] {
            let bytes = TrialRecord { max_attempts: max, ..record() }.to_bytes();
            assert_eq!(Trial::parse(&bytes), Err(TrialError::BadMaxAttempts(max)));
        }
        // A header cut after 12 bytes: the rest reads erased, so the CRC is wrong.
        let mut cut = [0xFF; TRIAL_LEN];
        cut[..12].copy_from_slice(&good[..12]);
        assert!(matches!(Trial::parse(&cut), Err(TrialError::BadCrc { stored: 0xFFFF_FFFF, .. })));
    }

    #[test]
    fn attempts_and_confirmation_read_from_their_words() {
        let mut bytes = record().to_bytes();
        bytes[20..24].copy_from_slice(&0xFFFF_FFF8u32.to_le_bytes());
        let trial = Trial::parse(&bytes).unwrap();
        assert_eq!((trial.attempts_used, trial.confirmed, trial.exhausted()), (3, false, true));
        bytes[24] = 0xFE; // a torn confirm still confirms
        let trial = Trial::parse(&bytes).unwrap();
        assert_eq!((trial.confirmed, trial.exhausted()), (true, false));
        assert_eq!(attempts_used(0), 32);
        assert_eq!(next_attempts_word(ERASED), 0xFFFF_FFFE);
        assert_eq!(next_attempts_word(0xFFFF_FF00), 0xFFFF_FE00);
        assert_eq!(next_attempts_word(0), 0);
        assert_eq!(next_attempts_word(0x8000_0000), 0);
    }

    #[test]
    fn roms_must_match_the_config() {
        let trial = Trial::parse(&record().to_bytes()).unwrap();
        let roms = [0x2000, 0x82000, 0, 0];
        assert_eq!(trial.check_roms(&roms, 2), Ok(()));
        assert_eq!(trial.check_roms(&roms, 1), Err(TrialError::RomOutOfRange { rom: 1, count: 1 }));
        let moved = [0x2000, 0x90000, 0, 0];
        assert_eq!(
            trial.check_roms(&moved, 2),
            Err(TrialError::OffsetMismatch { rom: 1, recorded: 0x82000, config: 0x90000 })
        );
        assert_eq!(
            TrialError::OffsetMismatch { rom: 1, recorded: 0x82000, config: 0x90000 }.to_string(),
            "trial record has rom 1 at 0x82000, the config at 0x90000"
        );
    }

    #[test]
    fn agent_writes_begin_count_and_confirm() {
        let layout = DEFAULT_LAYOUT;
        let at = layout.boot_state_offset() as usize;
        let mut flash = RamNor::new(layout.flash_size);
        flash.allow_bit_clearing();
        // Whatever was in the sector before goes.
        flash.write(at as u32 + 64, &[0; 4]).unwrap();
        assert!(matches!(
            count_attempt(&mut flash, layout),
            Err(TrialWriteError::NoRecord(TrialError::BadMagic))
        ));
        let mut recorded = crate::flash::Recording::new(flash);
        begin_trial(&mut recorded, layout, &record()).unwrap();
        let ops = recorded.take_log();
        let mut flash = recorded.inner;
        assert_eq!(
            ops,
            [
                crate::flash::FlashOp::EraseSector(at as u32),
                crate::flash::FlashOp::Program { offset: at as u32, len: 20 }
            ]
        );
        assert_eq!(&flash.bytes()[at..at + TRIAL_LEN], &record().to_bytes());
        assert!(flash.bytes()[at + TRIAL_LEN..at + 0x1000].iter().all(|&b| b == 0xFF));

        for expected in 1..=3 {
            assert_eq!(count_attempt(&mut flash, layout), Ok(expected));
        }
        assert_eq!(&flash.bytes()[at + 20..at + 24], &[0xF8, 0xFF, 0xFF, 0xFF]);
        let trial = Trial::parse(flash.bytes()[at..at + TRIAL_LEN].try_into().unwrap()).unwrap();
        assert!(trial.exhausted());
        confirm(&mut flash, layout).unwrap();
        confirm(&mut flash, layout).unwrap();
        assert_eq!(&flash.bytes()[at + 24..at + 28], &[0; 4]);
        assert!(flash.bytes()[at + 28..at + 32].iter().all(|&b| b == 0xFF), "reserved stays erased");
        let trial = Trial::parse(flash.bytes()[at..at + TRIAL_LEN].try_into().unwrap()).unwrap();
        assert_eq!((trial.attempts_used, trial.confirmed), (3, true));
    }

    #[test]
    fn the_attempts_word_saturates_at_32() {
        let layout = DEFAULT_LAYOUT;
        let mut flash = RamNor::new(layout.flash_size);
        flash.allow_bit_clearing();
        begin_trial(&mut flash, layout, &record()).unwrap();
        for expected in 1..=32 {
            assert_eq!(count_attempt(&mut flash, layout), Ok(expected));
        }
        let before = flash.ops();
        assert_eq!(count_attempt(&mut flash, layout), Ok(32));
        assert_eq!(flash.ops(), before, "nothing left to program");
    }

    #[test]
    fn a_cut_begin_leaves_no_valid_record() {
        let layout = DEFAULT_LAYOUT;
        let at = layout.boot_state_offset() as usize;
        for cut in 0..2 {
            let mut flash = RamNor::new(layout.flash_size);
            begin_trial(&mut flash, layout, &record()).unwrap();
            confirm_with_bit_clearing(&mut flash);
            flash.cut_power_at(flash.ops() + cut);
            assert!(begin_trial(&mut flash, layout, &record()).is_err());
            flash.restore_power();
            let bytes: &[u8; TRIAL_LEN] = flash.bytes()[at..at + TRIAL_LEN].try_into().unwrap();
            // A cut erase leaves the old, confirmed record's first half erased; a cut
            // program leaves half the header.
            assert!(Trial::parse(bytes).is_err(), "cut at {cut}: {bytes:02x?}");
        }
    }

    fn confirm_with_bit_clearing(flash: &mut RamNor<Vec<u8>>) {
        flash.allow_bit_clearing();
        confirm(flash, DEFAULT_LAYOUT).unwrap();
    }

    #[test]
    fn strict_flash_refuses_a_second_program_of_the_attempts_word() {
        // Without bit clearing allowed, RamNor treats a re-program as the bug it usually is.
        let layout = DEFAULT_LAYOUT;
        let mut flash = RamNor::new(layout.flash_size);
        begin_trial(&mut flash, layout, &record()).unwrap();
        assert_eq!(count_attempt(&mut flash, layout), Ok(1));
        let at = layout.boot_state_offset() + ATTEMPTS_AT;
        assert_eq!(
            count_attempt(&mut flash, layout),
            Err(TrialWriteError::Program(NorError::NotErased { offset: at }.kind()))
        );
    }
}
