//! The agent's side of the boot: how the running firmware was started (what it reports in
//! `BootState:`), and the two things the agent writes: the switch to a verified image and,
//! on a trial, the confirmation.
//!
//! - Booted by tcpflash-boot (its hand-off record says so): a verified image starts on
//!   trial ([`commit_update`] writes the trial record; the config keeps naming the confirmed
//!   slot), and the firmware confirms it ([`confirm_running`]: the confirmed word, then the
//!   config synced to the new slot). A firmware that never confirms is reverted by the
//!   bootloader after the allowed attempts.
//! - Booted by rBoot or anything else (no hand-off): the config switches for good, as the
//!   seed did; rBoot knows no trials.
//!
//! Every write is power-cut safe: the trial record and the config live in sectors of their
//! own, each written so that a torn write leaves the other authoritative.

use core::fmt;

use super::config::{BootConfigError, point_config};
use super::handoff::{HandOff, HandOffKind};
use super::trial::{self, TRIAL_LEN, Trial, TrialRecord, TrialWriteError};
use crate::descriptor::{self, BUILD_ID_LEN, Descriptor};
use crate::flash::{NorFlash, ReadNorFlash};
use crate::layout::{FlashLayout, IMAGE_IROM_OFFSET, SlotId};
use crate::text::{Message, Sink};
use crate::writer::SectorBuffer;

/// How many boots a new firmware gets to confirm itself before the bootloader goes back.
pub const DEFAULT_TRIAL_ATTEMPTS: u8 = 3;

/// How the running firmware was started.
// Word-aligned like `Running`: four bytes move as one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(align(4))]
pub enum BootStatus {
    /// Not by tcpflash-boot (rBoot, or a bootloader that leaves no hand-off): no trials;
    /// an update switches the config for good.
    Untracked,
    /// The confirmed slot.
    Confirmed,
    /// On trial: boot `attempt` of `max`; `confirmed` once the firmware confirmed.
    Trial { attempt: u8, max: u8, confirmed: bool },
    /// A trial ran out of attempts without confirming: back on the slot it replaced.
    Reverted,
    /// The preferred slot was not bootable: another one.
    Fallback,
}

impl BootStatus {
    /// Whether updates start trials (the bootloader is tcpflash-boot).
    pub const fn tracked(self) -> bool {
        !matches!(self, BootStatus::Untracked)
    }

    /// On trial and not confirmed yet.
    pub const fn unconfirmed_trial(self) -> bool {
        matches!(self, BootStatus::Trial { confirmed: false, .. })
    }
}

/// The running firmware: its slot, how it was started, its build.
// Word-aligned: of bytes only, it was copied into the session a byte at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(align(4))]
pub struct Running {
    /// `None` when what booted is not a slot of the layout (updates are refused).
    pub slot: Option<SlotId>,
    pub status: BootStatus,
    /// From the slot descriptor of the running image, when it carries one.
    pub build_id: Option<[u8; BUILD_ID_LEN]>,
}

impl Running {
    /// A firmware started by a bootloader without trials (rBoot) from `slot`.
    pub const fn untracked(slot: Option<SlotId>) -> Running {
        Running { slot, status: BootStatus::Untracked, build_id: None }
    }

    /// How this firmware was started: from tcpflash-boot's hand-off record when there is
    /// one (and it names a slot of the layout), else from rBoot's config.
    pub fn read<F: ReadNorFlash>(flash: &mut F, layout: &FlashLayout, handoff: Option<HandOff>) -> Running {
        let tracked = handoff.and_then(|handoff| Some((handoff, layout.slot_at(handoff.offset)?)));
        let (slot, status) = match tracked {
            Some((handoff, slot)) => {
                let status = match handoff.kind {
                    HandOffKind::Confirmed => BootStatus::Confirmed,
                    HandOffKind::Reverted => BootStatus::Reverted,
                    HandOffKind::Fallback => BootStatus::Fallback,
                    HandOffKind::Trial => {
                        let trial = read_trial(flash, layout);
                        let (max, confirmed) = trial.map_or((handoff.attempt, false), |trial| {
                            (trial.record.max_attempts, trial.confirmed)
                        });
                        BootStatus::Trial { attempt: handoff.attempt, max, confirmed }
                    }
                };
                (Some(slot), status)
            }
            None => (super::running_slot(flash, layout), BootStatus::Untracked),
        };
        let build_id = slot.and_then(|slot| build_id_of(flash, layout, slot));
        Running { slot, status, build_id }
    }
}

/// Why the switch to a verified image, or a confirmation, failed. Nothing is lost either
/// way: the confirmed slot still boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitError {
    Config(BootConfigError),
    Trial(TrialWriteError),
}

impl Message for CommitError {
    fn write_message<S: Sink + ?Sized>(&self, out: &mut S) {
        match self {
            CommitError::Config(error) => error.write_message(out),
            CommitError::Trial(error) => error.write_message(out),
        }
    }
}

impl fmt::Display for CommitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::text::display(self, f)
    }
}

/// Makes the verified image in `target` the one that boots next. With tcpflash-boot
/// (`status` tracked): a trial of `max_attempts` boots, falling back to `running`; the
/// config is first made to name `running` (confirmed) and to list `target`, in case it
/// does not yet. Else: the config switches to `target` for good.
pub fn commit_update<F: NorFlash>(
    flash: &mut F,
    layout: &FlashLayout,
    running: SlotId,
    target: SlotId,
    status: BootStatus,
    max_attempts: u8,
    sector: &mut SectorBuffer,
) -> Result<(), CommitError> {
    if !status.tracked() {
        return point_config(flash, layout, None, target, sector).map(|_| ()).map_err(CommitError::Config);
    }
    // The trial names both roms by their index in the config: both must be listed, and the
    // config names the confirmed one until the trial is confirmed.
    let config = point_config(flash, layout, Some(target), running, sector).map_err(CommitError::Config)?;
    let index = |slot: SlotId| {
        let offset = layout.slot(slot).offset;
        config.roms.iter().position(|&rom| rom == offset).unwrap_or(0) as u8
    };
    let record = TrialRecord {
        trial_rom: index(target),
        fallback_rom: index(running),
        max_attempts: max_attempts.clamp(1, trial::MAX_ATTEMPTS),
        trial_offset: layout.slot(target).offset,
        fallback_offset: layout.slot(running).offset,
    };
    trial::begin_trial(flash, layout, &record).map_err(CommitError::Trial)
}

/// Confirms the running trial firmware: the confirmed word (from then on the bootloader
/// boots it whatever the config says), then the config synced to it (so rBoot, and every
/// reader of the config, agrees).
pub fn confirm_running<F: NorFlash>(
    flash: &mut F,
    layout: &FlashLayout,
    running: SlotId,
    sector: &mut SectorBuffer,
) -> Result<(), CommitError> {
    trial::confirm(flash, layout).map_err(CommitError::Trial)?;
    point_config(flash, layout, None, running, sector).map(|_| ()).map_err(CommitError::Config)
}

fn read_trial<F: ReadNorFlash>(flash: &mut F, layout: &FlashLayout) -> Option<Trial> {
    let mut bytes = [0u8; TRIAL_LEN];
    flash.read(layout.boot_state_offset(), &mut bytes).ok()?;
    Trial::parse(&bytes).ok()
}

fn build_id_of<F: ReadNorFlash>(
    flash: &mut F,
    layout: &FlashLayout,
    slot: SlotId,
) -> Option<[u8; BUILD_ID_LEN]> {
    let mut bytes = [0u8; descriptor::SIZE];
    flash.read(layout.slot(slot).offset + IMAGE_IROM_OFFSET, &mut bytes).ok()?;
    Descriptor::parse(&bytes).ok().map(|descriptor| descriptor.build_id)
}
