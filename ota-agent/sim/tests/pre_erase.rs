//! The idle slot's pre-erase (`Session::pre_erase`): only the idle slot, only once the
//! running firmware is confirmed, never while a client is served or a reboot is pending,
//! learnt again by reading after a reboot, and a push into the erased range only programs.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::*;
use ota_agent::boot::{BootConfig, BootStatus, Running};
use ota_agent::flash::{FlashOp, NorFlash, RamNor, Recording};
use ota_agent::layout::{BOOT_CONFIG_OFFSET, SECTOR_SIZE, SlotId};
use ota_agent::listener::Listener;
use ota_agent::session::{Phase, Session, SessionConfig};
use ota_agent::writer::SECTOR;
use smoltcp::time::Instant;

const USER2: u32 = 0x8_2000;

/// The session of a firmware that just booted as `running` says.
fn booted(running: Running) -> Session<'static> {
    let sector = Box::leak(Box::new([0u8; SECTOR]));
    let mut session = Session::new(SessionConfig::new(LAYOUT), sector);
    session.set_running(running);
    session
}

fn confirmed_on_user1() -> Running {
    Running { slot: Some(SlotId::User1), status: BootStatus::Confirmed, build_id: None }
}

/// Steps until the pre-erase has nothing more to do; returns the steps taken.
fn pre_erase_all(session: &mut Session<'_>, flash: &mut impl NorFlash) -> usize {
    let mut steps = 0;
    while session.pre_erase(flash) {
        steps += 1;
        assert!(steps <= 1000, "the pre-erase never ends");
    }
    assert!(!session.pre_erase_pending());
    steps
}

fn erases(log: &[FlashOp]) -> Vec<FlashOp> {
    log.iter().copied().filter(|op| !matches!(op, FlashOp::Program { .. })).collect()
}

#[test]
fn only_the_idle_slot_is_erased_a_sector_a_step_and_what_reads_erased_is_not_erased_again() {
    let before = factory_flash(SlotId::User1);
    let mut flash = Recording::new(before.clone());
    let mut session = booted(confirmed_on_user1());
    let user2 = *LAYOUT.slot(SlotId::User2);
    let sectors = (user2.capacity / SECTOR_SIZE) as usize;
    assert!(session.pre_erase(&mut flash));
    assert_eq!(flash.take_log(), [FlashOp::EraseSector(USER2)], "one sector erase per step");
    assert_eq!(pre_erase_all(&mut session, &mut flash), sectors - 1);
    assert_eq!(session.pre_erased(), Some((SlotId::User2, user2.capacity)));
    // The factory image in user2 was 2 sectors long; the rest of the slot read erased.
    let log = flash.take_log();
    assert_eq!(erases(&log), [FlashOp::EraseSector(USER2 + SECTOR_SIZE)]);
    assert!(flash.inner.bytes()[USER2 as usize..user2.end() as usize].iter().all(|&b| b == 0xFF));
    let (b, a) = (before.bytes(), flash.inner.bytes());
    assert!(a[..USER2 as usize] == b[..USER2 as usize], "user1, the config and the boot state untouched");
    assert!(a[user2.end() as usize..] == b[user2.end() as usize..], "nothing past the slot");

    // After a reboot nothing is assumed: it is read again, and nothing erased.
    let mut session = booted(confirmed_on_user1());
    assert_eq!(session.pre_erased(), Some((SlotId::User2, 0)));
    assert_eq!(pre_erase_all(&mut session, &mut flash), sectors);
    assert!(erases(&flash.take_log()).is_empty());
}

#[test]
fn it_waits_for_a_confirmed_firmware_and_never_erases_the_slot_a_trial_falls_back_to() {
    let trial = |confirmed| BootStatus::Trial { attempt: 1, max: 3, confirmed };
    for (status, erases) in [
        (BootStatus::Confirmed, true),
        (trial(true), true),
        (trial(false), false),
        (BootStatus::Reverted, false),
        (BootStatus::Fallback, false),
    ] {
        let mut flash = factory_flash(SlotId::User1);
        let mut session = booted(Running { slot: Some(SlotId::User1), status, build_id: None });
        assert_eq!(session.pre_erase_pending(), erases, "{status:?}");
        assert_eq!(session.pre_erase(&mut flash), erases, "{status:?}");
    }
    // The check-in confirms a trial: from then on the idle slot may go.
    let mut flash = factory_flash(SlotId::User1);
    let mut session = booted(Running { slot: Some(SlotId::User1), status: trial(false), build_id: None });
    session.confirm(&mut flash).ok();
    assert!(!session.pre_erase(&mut flash), "no trial record here: confirming fails, nothing erased");

    // No running slot known: nothing.
    let session = booted(Running { slot: None, status: BootStatus::Untracked, build_id: None });
    assert!(!session.pre_erase_pending());
}

#[test]
fn not_when_the_next_reset_may_boot_the_idle_slot_nor_on_an_sdk_map() {
    use ota_agent::net::AgentConfig;
    // rBoot's config boots user1, which runs: user2 may go.
    let mut flash = factory_flash(SlotId::User1);
    let mut session = booted(Running::untracked(Some(SlotId::User1)));
    assert!(session.pre_erase(&mut flash));
    // A platform that names the running slot itself (rBoot's temporary or GPIO boot): the
    // config may boot the other slot at the next reset, so it is never erased.
    assert!(AgentConfig::new(LAYOUT).session().pre_erase, "on by default");
    let told = AgentConfig { running_slot: Some(SlotId::User2), ..AgentConfig::new(LAYOUT) };
    assert!(!told.session().pre_erase);
    assert!(!AgentConfig { pre_erase: false, ..AgentConfig::new(LAYOUT) }.session().pre_erase);

    // On an SDK map the SDK's boot flag decides what boots: nothing is erased.
    let map = ota_agent::layout::sdk::SdkMap::by_name("sdk-1MB").unwrap();
    let sector = Box::leak(Box::new([0u8; SECTOR]));
    let mut session = Session::new(SessionConfig::new(&map.layout), sector);
    session.set_running(Running::untracked(Some(SlotId::User1)));
    let mut flash = RamNor::from_storage(vec![0u8; map.layout.flash_size as usize]);
    assert!(!session.pre_erase_pending());
    assert!(!session.pre_erase(&mut flash));
    assert!(flash.bytes().iter().all(|&b| b == 0));
}

#[test]
fn not_while_a_client_is_served_nor_once_a_reboot_is_pending_and_a_push_only_programs() {
    let image = image_for(SlotId::User2, 200_000, 7);
    let mut flash = Recording::new(factory_flash(SlotId::User1));
    let mut session = booted(Running::untracked(Some(SlotId::User1)));
    let now = Instant::from_secs(1);
    session.start(now, None);
    assert!(!session.pre_erase(&mut flash), "a client holds the session");
    session.reset();
    pre_erase_all(&mut session, &mut flash);
    flash.take_log();

    session.start(now, None);
    let mut message = b"OTA\r\nGetNextFlash\r\n".to_vec();
    message.extend_from_slice(format!("FirmwareLength: {}\r\n", image.len()).as_bytes());
    message.extend_from_slice(&image);
    let mut rest = &message[..];
    while !rest.is_empty() {
        while session.next_reply().is_some() {}
        let n = session.receive(now, &rest[..rest.len().min(1460)], &mut flash);
        session.poll(now, &mut flash);
        rest = &rest[n..];
    }
    session.input_closed(now);
    session.poll(now, &mut flash);
    assert_eq!(session.phase(), Phase::Closing, "{:?}", session.last_failure());
    assert_eq!(slot_bytes(&flash.inner, SlotId::User2, image.len()), &image[..]);
    let erased = erases(&flash.take_log());
    assert_eq!(
        erased,
        [FlashOp::EraseSector(BOOT_CONFIG_OFFSET)],
        "only the config's sector: the image only programs"
    );
    let config = BootConfig::parse(config_bytes(&flash.inner)[..25].try_into().unwrap()).unwrap();
    assert_eq!(config.current_slot(LAYOUT), Some(SlotId::User2));

    // Committed, reboot pending: the new image is never touched.
    session.reset();
    assert!(session.reboot_at().is_some());
    assert!(!session.pre_erase_pending() && !session.pre_erase(&mut flash));
}

#[test]
fn a_push_that_fails_midway_is_erased_again_by_reading_what_it_wrote() {
    let image = image_for(SlotId::User2, 100_000, 8);
    let mut flash = Recording::new(factory_flash(SlotId::User1));
    let mut session = booted(Running::untracked(Some(SlotId::User1)));
    pre_erase_all(&mut session, &mut flash);
    flash.take_log();
    let now = Instant::from_secs(1);
    session.start(now, None);
    let mut message = b"OTA\r\nGetNextFlash\r\n".to_vec();
    message.extend_from_slice(format!("FirmwareLength: {}\r\n", image.len()).as_bytes());
    message.extend_from_slice(&image[..50_000]);
    let mut rest = &message[..];
    while !rest.is_empty() {
        while session.next_reply().is_some() {}
        let n = session.receive(now, rest, &mut flash);
        rest = &rest[n..];
    }
    session.reset();
    assert!(erases(&flash.take_log()).is_empty(), "the push only programmed");
    // Of 50,000 image bytes, 12 whole sectors were written (the rest was still in the
    // sector buffer): only those are erased again.
    pre_erase_all(&mut session, &mut flash);
    let expected: Vec<FlashOp> = (0..12).map(|i| FlashOp::EraseSector(USER2 + i * SECTOR_SIZE)).collect();
    assert_eq!(erases(&flash.take_log()), expected);
}

#[test]
fn the_listener_asks_to_be_polled_at_once_while_the_pre_erase_has_work() {
    let mut sector = [0u8; SECTOR];
    let mut listener = Listener::new(SessionConfig::new(LAYOUT), &mut sector);
    listener.set_running(confirmed_on_user1());
    let mut flash = RamNor::new(LAYOUT.flash_size);
    assert_eq!(listener.poll_timeout(), Some(Instant::ZERO));
    struct Board;
    impl ota_agent::listener::Platform for Board {
        fn reboot(&mut self) {}
        fn fill_random(&mut self, _: &mut [u8]) {}
    }
    listener.accept(Instant::from_secs(1), None, &mut Board);
    assert!(!listener.idle(&mut flash), "not while a client is served");
    assert_ne!(listener.poll_timeout(), Some(Instant::ZERO));
    listener.disconnected();
    while listener.idle(&mut flash) {}
    assert_eq!(listener.poll_timeout(), None, "done: nothing to wait for");
}
