//! Which rom boots: a pure function of the config sector, the trial record, the flash size
//! and a way to ask whether a rom's image is bootable. tcpflash-boot runs it on the board,
//! the virtual device and the tests run the very same code.
//!
//! 1. The config is rBoot's, or rBoot's default for the flash size when it is unreadable;
//!    `count` is clamped to 1..=4 and a `current_rom` not below it counts as 0.
//! 2. The trial record counts when it parses and both of its roms match the config.
//! 3. A confirmed trial prefers the trial rom; an unconfirmed one with attempts left
//!    prefers it too and counts an attempt; an exhausted one prefers the fallback rom and
//!    bans the trial image; without a trial, `current_rom` is preferred.
//! 4. The preferred rom boots if it is bootable, else the others in rBoot's order
//!    (preferred - 1, preferred - 2, ... wrapping), never the banned image. None bootable:
//!    nothing boots.
//!
//! Slots are checked lazily (checking one reads all of it), in that order, and at most once
//! per rom.

use crate::boot::config::{BootConfig, CONFIG_LEN, CONFIG_STRUCT_LEN, MAX_ROMS};
use crate::boot::handoff::{HandOff, HandOffKind};
use crate::boot::trial::{TRIAL_LEN, Trial, TrialError};

/// Answers "can the image of rom `rom`, at flash `offset`, boot?".
pub trait SlotCheck {
    fn bootable(&mut self, rom: u8, offset: u32) -> bool;
}

impl<F: FnMut(u8, u32) -> bool> SlotCheck for F {
    fn bootable(&mut self, rom: u8, offset: u32) -> bool {
        self(rom, offset)
    }
}

/// What kind of boot the decision makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootKind {
    /// The confirmed slot: no trial, or a confirmed one.
    Confirmed,
    /// A trial boot: `attempt` (1-based, this one included) of `max`.
    Trial { attempt: u8, max: u8 },
    /// The trial used its attempts without confirming: back on the fallback rom.
    Reverted,
    /// The preferred rom was not bootable: another one.
    Fallback,
}

impl BootKind {
    pub const fn handoff_kind(self) -> HandOffKind {
        match self {
            BootKind::Confirmed => HandOffKind::Confirmed,
            BootKind::Trial { .. } => HandOffKind::Trial,
            BootKind::Reverted => HandOffKind::Reverted,
            BootKind::Fallback => HandOffKind::Fallback,
        }
    }
}

/// The rom that boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Boot {
    /// Index in the config's `roms[]`.
    pub rom: u8,
    /// Flash offset of its image.
    pub offset: u32,
    pub kind: BootKind,
    /// Program one more attempt bit before booting (a trial boot).
    pub count_attempt: bool,
}

impl Boot {
    /// The record the firmware gets.
    pub const fn handoff(&self) -> HandOff {
        let attempt = match self.kind {
            BootKind::Trial { attempt, .. } => attempt,
            _ => 0,
        };
        HandOff { rom: self.rom, kind: self.kind.handoff_kind(), attempt, offset: self.offset }
    }
}

/// What became of the trial record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrialStatus {
    /// No record.
    None,
    /// A record that is damaged or does not fit the config: ignored (`Trial::parse` and
    /// `Trial::check_roms` on the same bytes say why).
    Ignored,
    Confirmed {
        trial_rom: u8,
    },
    /// Attempts left: `attempts_used` before this boot.
    Running {
        trial_rom: u8,
        attempts_used: u8,
        max: u8,
    },
    /// Attempts used up without a confirmation: the trial image is banned.
    Exhausted {
        trial_rom: u8,
        fallback_rom: u8,
    },
}

/// Everything the decision noticed on the way, for the bootloader's line on the UART.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Events {
    /// The config was unreadable (`BootConfig::parse` on the same bytes says why): rBoot's
    /// default for the flash size was used. Flags, not reasons: the bootloader carries no
    /// more than it needs.
    pub default_config: bool,
    /// The config's `count` (outside 1..=4, so clamped).
    pub count_clamped: Option<u8>,
    /// The config's `current_rom` (not below `count`, so 0 was used).
    pub current_rom_out_of_range: Option<u8>,
    pub trial: TrialStatus,
    /// Bit `i` set: rom `i` was checked and is not bootable.
    pub not_bootable: u8,
}

/// The decision: the rom that boots (none when no rom is bootable), the config as used
/// (default, count clamped, current_rom corrected) and the events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub boot: Option<Boot>,
    pub config: BootConfig,
    pub events: Events,
}

/// Decides which rom boots from the config sector's first 28 bytes, the trial record's 32
/// bytes and the flash size (for rBoot's default config).
#[inline(never)]
pub fn decide(
    config: &[u8; CONFIG_STRUCT_LEN],
    trial: &[u8; TRIAL_LEN],
    flash_size: u32,
    slots: &mut dyn SlotCheck,
) -> Decision {
    // Built in place, returned whole: no copies of the config or the events.
    let mut decision = Decision {
        boot: None,
        config: BootConfig::rboot_default(flash_size),
        events: Events {
            default_config: false,
            count_clamped: None,
            current_rom_out_of_range: None,
            trial: TrialStatus::None,
            not_bootable: 0,
        },
    };
    let Decision { boot, config: effective, events } = &mut decision;
    let head: &[u8; CONFIG_LEN] = config[..CONFIG_LEN].try_into().expect("28 bytes hold 25");
    match BootConfig::parse(head) {
        Ok(parsed) => *effective = parsed,
        Err(_) => events.default_config = true,
    }
    let count = effective.count.clamp(1, MAX_ROMS as u8);
    if count != effective.count {
        events.count_clamped = Some(effective.count);
        effective.count = count;
    }
    if effective.current_rom >= count {
        events.current_rom_out_of_range = Some(effective.current_rom);
        effective.current_rom = 0;
    }

    let mut preferred = effective.current_rom;
    let mut kind = BootKind::Confirmed;
    let mut count_attempt = false;
    let mut banned = None;
    match Trial::parse(trial).and_then(|trial| trial.check_roms(&effective.roms, count).map(|()| trial)) {
        Err(TrialError::BadMagic) => {}
        Err(_) => events.trial = TrialStatus::Ignored,
        Ok(Trial { record, attempts_used, confirmed }) => {
            let trial_rom = record.trial_rom;
            let max = record.max_attempts;
            preferred = trial_rom;
            events.trial = if confirmed {
                TrialStatus::Confirmed { trial_rom }
            } else if attempts_used < max {
                kind = BootKind::Trial { attempt: attempts_used + 1, max };
                count_attempt = true;
                TrialStatus::Running { trial_rom, attempts_used, max }
            } else {
                preferred = record.fallback_rom;
                kind = BootKind::Reverted;
                // Banned by offset: another index naming the same image is the same trial.
                banned = Some(record.trial_offset);
                TrialStatus::Exhausted { trial_rom, fallback_rom: record.fallback_rom }
            };
        }
    }

    // Indices as usize in the walk: LLVM re-masks u8 values at every use.
    let (count, preferred) = (usize::from(count), usize::from(preferred));
    let mut rom = preferred;
    for _ in 0..count {
        let offset = effective.roms[rom % MAX_ROMS];
        if banned != Some(offset) {
            if slots.bootable(rom as u8, offset) {
                let (kind, count_attempt) =
                    if rom == preferred { (kind, count_attempt) } else { (BootKind::Fallback, false) };
                *boot = Some(Boot { rom: rom as u8, offset, kind, count_attempt });
                break;
            }
            events.not_bootable |= 1 << rom;
        }
        rom = if rom == 0 { count - 1 } else { rom - 1 };
    }
    decision
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;
    use crate::boot::config::BootMode;
    use crate::boot::trial::{ATTEMPTS_AT, CONFIRMED_AT, TrialRecord};
    use crate::layout::{DEFAULT_LAYOUT, SlotId};

    const MB: u32 = 0x10_0000;

    fn config_bytes(config: &BootConfig) -> [u8; CONFIG_STRUCT_LEN] {
        config.to_bytes()
    }

    fn two_slots(current: SlotId) -> [u8; CONFIG_STRUCT_LEN] {
        config_bytes(&BootConfig::for_layout(DEFAULT_LAYOUT, current))
    }

    /// A trial of user2 (rom 1) falling back to user1 (rom 0).
    fn trial(max: u8, used: u8, confirmed: bool) -> [u8; TRIAL_LEN] {
        let record = TrialRecord {
            trial_rom: 1,
            fallback_rom: 0,
            max_attempts: max,
            trial_offset: 0x82000,
            fallback_offset: 0x2000,
        };
        let mut bytes = record.to_bytes();
        let attempts = if used >= 32 { 0 } else { u32::MAX << used };
        bytes[ATTEMPTS_AT as usize..][..4].copy_from_slice(&attempts.to_le_bytes());
        if confirmed {
            bytes[CONFIRMED_AT as usize..][..4].copy_from_slice(&0u32.to_le_bytes());
        }
        bytes
    }

    const NO_TRIAL: [u8; TRIAL_LEN] = [0xFF; TRIAL_LEN];

    /// Runs the decision with the roms in `bootable` valid, recording the checks.
    fn run(
        config: &[u8; CONFIG_STRUCT_LEN],
        trial: &[u8; TRIAL_LEN],
        bootable: &[u32],
    ) -> (Decision, Vec<u8>) {
        let mut checked = Vec::new();
        let decision = decide(config, trial, MB, &mut |rom: u8, offset: u32| {
            checked.push(rom);
            bootable.contains(&offset)
        });
        (decision, checked)
    }

    #[test]
    fn no_trial_boots_current_rom_and_checks_only_it() {
        let (decision, checked) = run(&two_slots(SlotId::User2), &NO_TRIAL, &[0x2000, 0x82000]);
        assert_eq!(
            decision.boot,
            Some(Boot { rom: 1, offset: 0x82000, kind: BootKind::Confirmed, count_attempt: false })
        );
        assert_eq!(checked, [1]);
        assert_eq!(decision.events.trial, TrialStatus::None);
        assert_eq!(decision.events.not_bootable, 0);
    }

    #[test]
    fn running_trial_boots_the_trial_rom_and_counts() {
        let (decision, _) = run(&two_slots(SlotId::User1), &trial(3, 1, false), &[0x2000, 0x82000]);
        let boot = decision.boot.unwrap();
        assert_eq!(
            boot,
            Boot {
                rom: 1,
                offset: 0x82000,
                kind: BootKind::Trial { attempt: 2, max: 3 },
                count_attempt: true
            }
        );
        assert_eq!(boot.handoff(), HandOff { rom: 1, kind: HandOffKind::Trial, attempt: 2, offset: 0x82000 });
        assert_eq!(decision.events.trial, TrialStatus::Running { trial_rom: 1, attempts_used: 1, max: 3 });
    }

    #[test]
    fn exhausted_trial_reverts_and_never_checks_the_trial_rom() {
        let (decision, checked) = run(&two_slots(SlotId::User1), &trial(3, 3, false), &[0x2000, 0x82000]);
        assert_eq!(
            decision.boot,
            Some(Boot { rom: 0, offset: 0x2000, kind: BootKind::Reverted, count_attempt: false })
        );
        assert_eq!(checked, [0]);
        assert_eq!(decision.events.trial, TrialStatus::Exhausted { trial_rom: 1, fallback_rom: 0 });
        // With the fallback broken there is nothing left to boot.
        let (decision, checked) = run(&two_slots(SlotId::User1), &trial(3, 7, false), &[0x82000]);
        assert_eq!(decision.boot, None);
        assert_eq!(checked, [0]);
        assert_eq!(decision.events.not_bootable, 0b01);
    }

    #[test]
    fn confirmed_trial_boots_the_trial_rom_whatever_the_config_says() {
        let (decision, _) = run(&two_slots(SlotId::User1), &trial(2, 2, true), &[0x2000, 0x82000]);
        assert_eq!(
            decision.boot,
            Some(Boot { rom: 1, offset: 0x82000, kind: BootKind::Confirmed, count_attempt: false })
        );
    }

    #[test]
    fn an_invalid_trial_rom_falls_back_without_counting() {
        let (decision, checked) = run(&two_slots(SlotId::User1), &trial(3, 0, false), &[0x2000]);
        assert_eq!(
            decision.boot,
            Some(Boot { rom: 0, offset: 0x2000, kind: BootKind::Fallback, count_attempt: false })
        );
        assert_eq!(checked, [1, 0]);
        assert_eq!(decision.events.not_bootable, 0b10);
        assert_eq!(decision.boot.unwrap().handoff().kind, HandOffKind::Fallback);
    }

    #[test]
    fn unreadable_config_uses_rboots_default_for_the_flash_size() {
        let (decision, checked) = run(&[0xFF; CONFIG_STRUCT_LEN], &NO_TRIAL, &[0x2000]);
        assert!(decision.events.default_config);
        assert_eq!(decision.config, BootConfig::rboot_default(MB));
        assert_eq!(decision.boot.map(|b| b.offset), Some(0x2000));
        assert_eq!(checked, [0]);
        // The trial record still counts against the default config's roms.
        let (decision, _) = run(&[0; CONFIG_STRUCT_LEN], &trial(1, 0, false), &[0x2000, 0x82000]);
        assert_eq!(decision.boot.map(|b| (b.rom, b.count_attempt)), Some((1, true)));
    }

    #[test]
    fn count_and_current_rom_are_corrected_like_rboot() {
        let mut config = BootConfig::for_layout(DEFAULT_LAYOUT, SlotId::User1);
        config.count = 9;
        config.current_rom = 3;
        config.roms[3] = 0x40000;
        let (decision, checked) = run(&config_bytes(&config), &NO_TRIAL, &[0x2000]);
        assert_eq!(decision.events.count_clamped, Some(9));
        assert_eq!(decision.events.current_rom_out_of_range, None);
        assert_eq!(checked, [3, 2, 1, 0], "rBoot's order: current, current - 1, ...");
        assert_eq!(decision.boot.map(|b| (b.rom, b.kind)), Some((0, BootKind::Fallback)));

        config.count = 2;
        let (decision, checked) = run(&config_bytes(&config), &NO_TRIAL, &[0x82000]);
        assert_eq!(decision.events.current_rom_out_of_range, Some(3));
        assert_eq!(checked, [0, 1], "rom 0, then wrapping to the last");
        assert_eq!(decision.boot.map(|b| (b.rom, b.kind)), Some((1, BootKind::Fallback)));

        config.count = 0;
        config.current_rom = 0;
        let (decision, checked) = run(&config_bytes(&config), &NO_TRIAL, &[]);
        assert_eq!((decision.events.count_clamped, decision.boot), (Some(0), None));
        assert_eq!(checked, [0], "one rom, tried once (rBoot would loop forever)");
    }

    #[test]
    fn a_trial_that_does_not_fit_the_config_is_ignored() {
        let mut config = BootConfig::for_layout(DEFAULT_LAYOUT, SlotId::User1);
        config.roms[1] = 0x90000;
        let (decision, _) = run(&config_bytes(&config), &trial(3, 0, false), &[0x2000, 0x90000]);
        assert_eq!(decision.events.trial, TrialStatus::Ignored);
        assert_eq!(decision.boot.map(|b| (b.rom, b.kind)), Some((0, BootKind::Confirmed)));
        let mut torn = trial(3, 0, false);
        torn[9] ^= 0x10;
        let (decision, _) = run(&two_slots(SlotId::User1), &torn, &[0x2000, 0x82000]);
        assert_eq!(decision.events.trial, TrialStatus::Ignored);
        assert_eq!(decision.boot.map(|b| b.rom), Some(0));
    }

    #[test]
    fn the_banned_image_is_skipped_under_any_index() {
        // roms 0 and 2 hold the same image: the exhausted trial's.
        let mut config = BootConfig::for_layout(DEFAULT_LAYOUT, SlotId::User1);
        config.count = 3;
        config.roms = [0x82000, 0x2000, 0x82000, 0];
        let record = TrialRecord {
            trial_rom: 0,
            fallback_rom: 1,
            max_attempts: 1,
            trial_offset: 0x82000,
            fallback_offset: 0x2000,
        };
        let mut bytes = record.to_bytes();
        bytes[20] = 0xFE;
        let (decision, checked) = run(&config_bytes(&config), &bytes, &[0x82000]);
        assert_eq!(decision.boot, None);
        assert_eq!(checked, [1]);
    }

    // ---- properties -------------------------------------------------------------------

    /// rBoot v1.4.2's choice (find_image without GPIO or RTC) for a readable config with
    /// `count` in 1..=4, written from rboot.c's loop.
    fn rboot_choice(config: &BootConfig, bootable: &dyn Fn(u32) -> bool) -> Option<u8> {
        let count = i32::from(config.count);
        let current = if i32::from(config.current_rom) >= count { 0 } else { i32::from(config.current_rom) };
        let mut rom = current;
        loop {
            if bootable(config.roms[rom as usize]) {
                return Some(rom as u8);
            }
            rom -= 1;
            if rom < 0 {
                rom = count - 1;
            }
            if rom == current {
                return None;
            }
        }
    }

    #[derive(Clone, Debug)]
    enum ConfigCase {
        Valid(BootConfig),
        Blank,
        Torn(BootConfig, usize),
    }

    fn config_case() -> impl Strategy<Value = ConfigCase> {
        let rom = prop_oneof![Just(0x2000u32), Just(0x82000), Just(0x40000), Just(0xC2000), any::<u32>()];
        let config = (0u8..6, 0u8..7, proptest::array::uniform4(rom), 0u8..4).prop_map(
            |(current_rom, count, roms, mode)| BootConfig {
                mode: BootMode::Other(mode),
                current_rom,
                gpio_rom: 0,
                count,
                unused: [0; 2],
                roms,
            },
        );
        prop_oneof![
            4 => config.clone().prop_map(ConfigCase::Valid),
            1 => Just(ConfigCase::Blank),
            1 => (config, 0usize..CONFIG_LEN).prop_map(|(c, at)| ConfigCase::Torn(c, at)),
        ]
    }

    impl ConfigCase {
        fn bytes(&self) -> [u8; CONFIG_STRUCT_LEN] {
            match self {
                ConfigCase::Valid(config) => config.to_bytes(),
                ConfigCase::Blank => [0xFF; CONFIG_STRUCT_LEN],
                // Programmed up to `at`, erased after: what a cut write leaves.
                ConfigCase::Torn(config, at) => {
                    let mut bytes = config.to_bytes();
                    bytes[*at..].fill(0xFF);
                    bytes
                }
            }
        }
    }

    #[derive(Clone, Debug)]
    enum TrialCase {
        None,
        Torn { record: TrialRecord, at: usize },
        Valid { record: TrialRecord, used: u8, confirmed: bool },
    }

    fn trial_case() -> impl Strategy<Value = TrialCase> {
        let record = (0u8..5, 0u8..5, 0u8..34).prop_map(|(trial_rom, fallback_rom, max_attempts)| {
            TrialRecord { trial_rom, fallback_rom, max_attempts, trial_offset: 0, fallback_offset: 0 }
        });
        prop_oneof![
            1 => Just(TrialCase::None),
            1 => (record.clone(), 0usize..20).prop_map(|(record, at)| TrialCase::Torn { record, at }),
            6 => (record, 0u8..=32, any::<bool>())
                .prop_map(|(record, used, confirmed)| TrialCase::Valid { record, used, confirmed }),
        ]
    }

    impl TrialCase {
        /// The record's bytes; its offsets come from `roms` (usually matching, sometimes
        /// off by a sector when `mismatch`).
        fn bytes(&self, roms: &[u32; 4], mismatch: bool) -> [u8; TRIAL_LEN] {
            let fill = |record: &TrialRecord| {
                let offset = |rom: u8| roms.get(usize::from(rom)).copied().unwrap_or(0x2000);
                TrialRecord {
                    trial_offset: offset(record.trial_rom).wrapping_add(if mismatch { 0x1000 } else { 0 }),
                    fallback_offset: offset(record.fallback_rom),
                    ..*record
                }
            };
            match self {
                TrialCase::None => NO_TRIAL,
                TrialCase::Torn { record, at } => {
                    let mut bytes = fill(record).to_bytes();
                    bytes[*at..20].fill(0xFF);
                    bytes
                }
                TrialCase::Valid { record, used, confirmed } => {
                    let mut bytes = fill(record).to_bytes();
                    let attempts = if *used >= 32 { 0 } else { u32::MAX << used };
                    bytes[20..24].copy_from_slice(&attempts.to_le_bytes());
                    if *confirmed {
                        bytes[24..28].copy_from_slice(&[0; 4]);
                    }
                    bytes
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn the_decision_keeps_its_promises(
            config in config_case(),
            trial_case in trial_case(),
            mismatch in proptest::bool::weighted(0.1),
            valid in proptest::array::uniform4(any::<bool>()),
            flash_size in prop_oneof![Just(0x8_0000u32), Just(MB), Just(0x40_0000)],
        ) {
            let config_bytes = config.bytes();
            // The effective config, worked out independently of `decide`.
            let parsed = BootConfig::parse(config_bytes[..CONFIG_LEN].try_into().unwrap());
            let effective = parsed.unwrap_or_else(|_| BootConfig::rboot_default(flash_size));
            let count = effective.count.clamp(1, 4);
            let trial_bytes = trial_case.bytes(&effective.roms, mismatch);
            // Validity per image offset (rom i's image is valid when valid[i]; an offset
            // named twice takes the first index's answer).
            let offset_valid = |offset: u32| {
                let index = effective.roms[..usize::from(count)].iter().position(|&o| o == offset);
                index.is_some_and(|index| valid[index])
            };
            let mut checks = [0u8; 4];
            let mut wrong_check = None;
            let decision = decide(&config_bytes, &trial_bytes, flash_size, &mut |rom: u8, offset: u32| {
                if rom >= count || offset != effective.roms[usize::from(rom)] {
                    wrong_check = Some((rom, offset));
                }
                checks[usize::from(rom) % 4] += 1;
                offset_valid(offset)
            });
            prop_assert_eq!(wrong_check, None);
            prop_assert!(checks.iter().all(|&n| n <= 1), "a rom checked twice: {checks:?}");
            prop_assert_eq!(decision.events.default_config, parsed.is_err());

            let trial = Trial::parse(&trial_bytes).ok().filter(|t| t.check_roms(&effective.roms, count).is_ok());
            let banned = trial.filter(|t| t.exhausted()).map(|t| t.record.trial_offset);
            let roms = &effective.roms[..usize::from(count)];
            let any_bootable = roms.iter().any(|&o| offset_valid(o) && Some(o) != banned);

            match decision.boot {
                None => prop_assert!(!any_bootable, "nothing booted though a rom was bootable"),
                Some(boot) => {
                    // Never an invalid slot, never the banned (exhausted trial) image.
                    prop_assert!(offset_valid(boot.offset));
                    prop_assert_ne!(Some(boot.offset), banned);
                    prop_assert_eq!(boot.offset, effective.roms[usize::from(boot.rom)]);
                    prop_assert_eq!(boot.count_attempt, matches!(boot.kind, BootKind::Trial { .. }));
                }
            }
            match (trial, decision.boot) {
                (Some(t), Some(boot)) if t.confirmed && offset_valid(t.record.trial_offset) => {
                    // A confirmed trial boots the trial slot, whatever current_rom says.
                    prop_assert_eq!(boot.rom, t.record.trial_rom);
                    prop_assert_eq!(boot.kind, BootKind::Confirmed);
                }
                (Some(t), Some(boot)) if !t.confirmed && t.attempts_used < t.record.max_attempts
                    && offset_valid(t.record.trial_offset) => {
                    prop_assert_eq!(boot.kind, BootKind::Trial { attempt: t.attempts_used + 1, max: t.record.max_attempts });
                }
                (Some(t), Some(boot)) if t.exhausted() && boot.rom == t.record.fallback_rom => {
                    prop_assert_eq!(boot.kind, BootKind::Reverted);
                }
                (None, boot) => {
                    // Without a trial, exactly rBoot's choice (its count clamped to 1..=4).
                    let clamped = BootConfig { count, ..effective };
                    let expected = rboot_choice(&clamped, &offset_valid);
                    prop_assert_eq!(boot.map(|b| b.rom), expected);
                    if let Some(boot) = boot {
                        let current = if effective.current_rom >= count { 0 } else { effective.current_rom };
                        let kind = if boot.rom == current { BootKind::Confirmed } else { BootKind::Fallback };
                        prop_assert_eq!(boot.kind, kind);
                    }
                }
                _ => {}
            }
        }
    }
}
