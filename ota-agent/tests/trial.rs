//! The session on a device booted by tcpflash-boot: a verified push starts a trial (the
//! config keeps naming the confirmed slot), the check-in or the application confirms it,
//! `GetBootState` says which, and a firmware that must confirm itself refuses pushes until
//! it has.

mod common;

use common::*;
use ota_agent::boot::trial::{ATTEMPTS_AT, CONFIRMED_AT, TRIAL_LEN, Trial, TrialRecord};
use ota_agent::boot::{BootConfig, BootStatus, Running, commit_update};
use ota_agent::flash::{NorFlash, RamNor, ReadNorFlash};
use ota_agent::layout::{BOOT_CONFIG_OFFSET, SlotId};
use ota_agent::session::{Confirm, Phase, Session, SessionConfig};
use ota_agent::writer::SECTOR;
use smoltcp::time::Instant;

/// One connection to a session running `running`; returns the replies and the session's
/// phase after `input` and the deadlines that follow it.
fn converse(
    flash: &mut RamNor<Vec<u8>>,
    config: SessionConfig,
    running: Running,
    input: &[u8],
) -> (String, Phase, Running) {
    let mut sector = [0u8; SECTOR];
    let mut session = Session::new(config, &mut sector);
    session.set_running(running);
    let mut now = Instant::from_secs(100);
    session.start(now, None);
    let mut replies = Vec::new();
    let mut rest = input;
    while !rest.is_empty() && session.phase() == Phase::Open {
        while let Some(line) = session.next_reply() {
            replies.extend_from_slice(line.as_bytes());
        }
        let taken = session.receive(now, rest, flash);
        rest = &rest[taken..];
        session.poll(now, flash);
    }
    if session.phase() == Phase::Open {
        session.input_closed(now);
    }
    settle(&mut session, &mut now, flash);
    while let Some(line) = session.next_reply() {
        replies.extend_from_slice(line.as_bytes());
    }
    (String::from_utf8(replies).unwrap(), session.phase(), *session.running())
}

fn push_lines(image: &[u8]) -> Vec<u8> {
    let mut input = format!("OTA\r\nGetNextFlash\r\nFirmwareLength: {}\r\n", image.len()).into_bytes();
    input.extend_from_slice(image);
    input
}

fn trial_of(flash: &mut RamNor<Vec<u8>>) -> Trial {
    let mut bytes = [0u8; TRIAL_LEN];
    flash.read(LAYOUT.boot_state_offset(), &mut bytes).unwrap();
    Trial::parse(&bytes).unwrap()
}

fn config_of(flash: &RamNor<Vec<u8>>) -> Option<SlotId> {
    let at = BOOT_CONFIG_OFFSET as usize;
    BootConfig::parse(flash.bytes()[at..at + 25].try_into().unwrap()).unwrap().current_slot(LAYOUT)
}

fn confirmed_user1() -> Running {
    Running { slot: Some(SlotId::User1), status: BootStatus::Confirmed, build_id: None }
}

/// The factory flash with a trial of user2 started from user1, as after a push and one boot.
fn on_trial() -> (RamNor<Vec<u8>>, Running) {
    let mut flash = factory_flash(SlotId::User1);
    flash.allow_bit_clearing();
    let mut sector = [0u8; SECTOR];
    commit_update(&mut flash, LAYOUT, SlotId::User1, SlotId::User2, BootStatus::Confirmed, 3, &mut sector)
        .unwrap();
    // tcpflash-boot counted the first attempt.
    flash.write(LAYOUT.boot_state_offset() + ATTEMPTS_AT, &0xFFFF_FFFEu32.to_le_bytes()).unwrap();
    let running = Running {
        slot: Some(SlotId::User2),
        status: BootStatus::Trial { attempt: 1, max: 3, confirmed: false },
        build_id: Some([7; 8]),
    };
    (flash, running)
}

#[test]
fn a_verified_push_starts_a_trial_and_the_config_keeps_the_confirmed_slot() {
    let mut flash = factory_flash(SlotId::User1);
    let image = image_for(SlotId::User2, 20_000, 3);
    let (replies, phase, _) =
        converse(&mut flash, SessionConfig::new(LAYOUT), confirmed_user1(), &push_lines(&image));
    assert_eq!(replies, "user2.bin\r\nReady\r\nFlashing\r\nFlash upgrade success. Rebooting in 2s.\r\n");
    assert_eq!(phase, Phase::Closing);
    assert_eq!(config_of(&flash), Some(SlotId::User1), "rBoot's config still names the confirmed slot");
    let trial = trial_of(&mut flash);
    let expected = TrialRecord {
        trial_rom: 1,
        fallback_rom: 0,
        max_attempts: 3,
        trial_offset: LAYOUT.slot(SlotId::User2).offset,
        fallback_offset: LAYOUT.slot(SlotId::User1).offset,
    };
    assert_eq!((trial.record, trial.attempts_used, trial.confirmed), (expected, 0, false));
}

#[test]
fn the_check_in_confirms_a_trial_and_syncs_the_config() {
    let (mut flash, running) = on_trial();
    let (replies, _, after) =
        converse(&mut flash, SessionConfig::new(LAYOUT), running, b"OTA\r\nGetNextFlash\r\nGetBootState\r\n");
    assert_eq!(replies, "user1.bin\r\nBootState: confirmed user2 0707070707070707\r\n");
    assert_eq!(after.status, BootStatus::Trial { attempt: 1, max: 3, confirmed: true });
    let trial = trial_of(&mut flash);
    assert!(trial.confirmed);
    let at = (LAYOUT.boot_state_offset() + CONFIRMED_AT) as usize;
    assert_eq!(flash.bytes()[at..at + 4], [0; 4], "the confirmed word is programmed to 0");
    assert_eq!(config_of(&flash), Some(SlotId::User2), "the config follows the confirmed slot");
}

#[test]
fn a_firmware_that_confirms_itself_refuses_pushes_until_it_has() {
    let (mut flash, running) = on_trial();
    let before = flash.bytes().to_vec();
    let config = SessionConfig { confirm: Confirm::ByApplication, ..SessionConfig::new(LAYOUT) };
    let image = image_for(SlotId::User1, 20_000, 4);
    let (replies, phase, _) = converse(&mut flash, config, running, &push_lines(&image));
    assert_eq!(replies, "user1.bin\r\nERR: Running firmware is on trial, not confirmed yet\r\n");
    assert_eq!(phase, Phase::Dropping);
    assert!(flash.bytes() == before.as_slice(), "nothing written: user1 is the way back");

    // The check-in only asks: the state says it is still on trial.
    let (replies, _, _) = converse(&mut flash, config, running, b"OTA\r\nGetNextFlash\r\nGetBootState\r\n");
    assert_eq!(replies, "user1.bin\r\nBootState: trial user2 0707070707070707 1/3\r\n");
    assert!(!trial_of(&mut flash).confirmed);

    // The application confirms; then the push goes through and starts a trial of user1.
    let confirmed = {
        let mut sector = [0u8; SECTOR];
        let mut session = Session::new(config, &mut sector);
        session.set_running(running);
        session.confirm(&mut flash).unwrap();
        *session.running()
    };
    assert!(trial_of(&mut flash).confirmed);
    let (replies, _, _) = converse(&mut flash, config, confirmed, &push_lines(&image));
    assert!(replies.ends_with("Flash upgrade success. Rebooting in 2s.\r\n"), "{replies}");
    let trial = trial_of(&mut flash);
    assert_eq!((trial.record.trial_rom, trial.record.fallback_rom, trial.confirmed), (0, 1, false));
    assert_eq!(config_of(&flash), Some(SlotId::User2));
}

#[test]
fn boot_state_names_the_state_the_slot_and_the_build() {
    let (mut flash, running) = on_trial();
    let config = SessionConfig { confirm: Confirm::ByApplication, ..SessionConfig::new(LAYOUT) };
    let (replies, _, _) =
        converse(&mut flash, config, confirmed_user1(), b"OTA\r\nGetNextFlash\r\nGetBootState\r\n");
    assert_eq!(replies, "user2.bin\r\nBootState: confirmed user1 -\r\n");
    let untracked = Running::untracked(Some(SlotId::User1));
    let (replies, _, _) = converse(&mut flash, config, untracked, b"OTA\r\nGetNextFlash\r\nGetBootState\r\n");
    assert_eq!(replies, "user2.bin\r\nBootState: untracked user1 -\r\n");
    // With check-in confirmation the trial is confirmed before the state is read.
    let (replies, _, _) =
        converse(&mut flash, SessionConfig::new(LAYOUT), running, b"OTA\r\nGetNextFlash\r\nGetBootState\r\n");
    assert_eq!(replies, "user1.bin\r\nBootState: confirmed user2 0707070707070707\r\n");
}
