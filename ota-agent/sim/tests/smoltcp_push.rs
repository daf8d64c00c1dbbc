//! The agent on real smoltcp: a smoltcp client, driven by the crate's sans-IO `Client`,
//! pushes images to `ota_init`'s agent through two interfaces on a simulated wire, with
//! smoltcp's `FaultInjector` dropping packets both ways (the harness is
//! `tcpflash_sim::wire`). Time is simulated, so the runs are deterministic and no test
//! depends on the speed of the machine. `TRACE=1` prints every packet.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::*;
use ota_agent::boot::BootConfig;
use ota_agent::client::{ClientError, Event};
use ota_agent::flash::RamNor;
use ota_agent::layout::SlotId;
use ota_agent::net::AgentConfig;
use ota_agent::session::Phase;
use smoltcp::socket::tcp;
use smoltcp::time::Duration;
use tcpflash_sim::wire::{LinkFaults, Push, World};

fn world(flash: RamNor<Vec<u8>>, drop_percent: u8, seed: u32) -> World {
    World::new(flash, LAYOUT, LinkFaults::dropping(drop_percent, seed))
}

fn images(seed: u64, code_len: usize) -> [Vec<u8>; 2] {
    [image_for(SlotId::User1, code_len, seed), image_for(SlotId::User2, code_len, seed + 1)]
}

fn current_slot(flash: &RamNor<Vec<u8>>) -> SlotId {
    BootConfig::parse(config_bytes(flash)[..25].try_into().unwrap()).unwrap().current_slot(LAYOUT).unwrap()
}

#[test]
fn an_image_pushed_over_a_lossy_link_lands_byte_for_byte_and_switches() {
    // TCP's retransmission back-off under heavy loss can exceed the 30 s idle timeout; that
    // timeout has its own test.
    let config = AgentConfig { idle_timeout: Duration::from_secs(300), ..AgentConfig::new(LAYOUT) };
    for (drop_percent, seed) in [(0, 1), (2, 2), (5, 3), (5, 4), (10, 5), (10, 6)] {
        let images = images(seed as u64, 60_000);
        let mut world = World::with_config(
            factory_flash(SlotId::User1),
            LinkFaults::dropping(drop_percent, seed),
            config,
        );
        let mut push = world.push(images.clone(), 49152);
        world
            .run_until(&mut [&mut push], Duration::from_secs(600), |world, pushes| {
                pushes[0].done() && !world.board.reboots.is_empty()
            })
            .unwrap();
        eprintln!("drop {drop_percent}%: done after {} simulated", world.now);
        assert_eq!(
            push.events,
            [Event::NextSlot(SlotId::User2), Event::Ready, Event::Flashing, Event::Success],
            "drop {drop_percent}%"
        );
        let image = &images[1];
        assert_eq!(slot_bytes(&world.flash, SlotId::User2, image.len()), &image[..], "drop {drop_percent}%");
        assert_eq!(current_slot(&world.flash), SlotId::User2);
        assert_eq!(world.board.reboots.len(), 1);
        let success_at = world.agent.listener().session().reboot_at().unwrap() - Duration::from_secs(2);
        assert!(world.board.reboots[0] >= success_at + Duration::from_secs(2));
    }
}

#[test]
fn a_bad_image_is_refused_and_the_next_push_succeeds_right_away() {
    let mut images = images(10, 20_000);
    let good = images[1].clone();
    images[1][5000] ^= 0x10;
    let mut world = world(factory_flash(SlotId::User1), 5, 10);
    let mut bad = world.push(images.clone(), 49152);
    world.run_until(&mut [&mut bad], Duration::from_secs(300), |_, pushes| pushes[0].done()).unwrap();
    assert_eq!(bad.events[..3], [Event::NextSlot(SlotId::User2), Event::Ready, Event::Invalid]);
    let Event::Failed(ClientError::ImageRejected(reason)) = bad.events[3] else { panic!("{:?}", bad.events) };
    assert!(reason.to_string().starts_with("CRC mismatch"), "{reason}");
    assert_eq!(current_slot(&world.flash), SlotId::User1);
    // Until the refused connection has closed on both sides, a newcomer is turned away.
    world
        .run_until(&mut [&mut bad], Duration::from_secs(60), |world, _| {
            world.agent.listener().session().phase() == Phase::Idle
        })
        .unwrap();

    images[1] = good.clone();
    let mut retry = world.push(images, 49153);
    world.run_until(&mut [&mut retry], Duration::from_secs(300), |_, pushes| pushes[0].done()).unwrap();
    assert_eq!(retry.events.last(), Some(&Event::Success), "{:?}", retry.events);
    assert_eq!(slot_bytes(&world.flash, SlotId::User2, good.len()), &good[..]);
    assert_eq!(current_slot(&world.flash), SlotId::User2);
}

#[test]
fn a_second_client_is_turned_away_without_disturbing_the_first() {
    let images = images(20, 450_000);
    let mut world = world(factory_flash(SlotId::User1), 0, 20);
    let mut first = world.push(images.clone(), 49152);
    // The first client is mid-image when the second one arrives.
    world
        .run_until(&mut [&mut first], Duration::from_secs(60), |world, _| {
            world.agent.listener().session().progress().is_some_and(|(received, _)| received > 10_000)
        })
        .unwrap();
    let mut second = world.push(images.clone(), 49153);
    world
        .run_until(&mut [&mut first, &mut second], Duration::from_secs(60), |_, pushes| pushes[1].done())
        .unwrap();
    let Event::Failed(ClientError::Device(reason)) = second.events[0] else { panic!("{:?}", second.events) };
    assert_eq!(reason.to_string(), "Connection Already Exists");
    assert_eq!(world.agent.listener().session().phase(), Phase::Open, "the first session goes on");

    // A third client that connects and vanishes with a reset does not disturb it either.
    // (The second client, done, closes its side; the turned-away connection then ends: give
    // it a few round trips, whatever the window makes of the first push meanwhile.)
    world
        .run_until(&mut [&mut first, &mut second], Duration::from_secs(60), |world, _| {
            world.agent.listener().session().progress().is_some_and(|(received, _)| received > 100_000)
        })
        .unwrap();
    let mut third = world.push(images.clone(), 49154);
    world
        .run_until(&mut [&mut first, &mut second, &mut third], Duration::from_secs(60), |world, pushes| {
            world.host_sockets.get::<tcp::Socket>(pushes[2].socket).may_send()
        })
        .unwrap();
    world.host_sockets.get_mut::<tcp::Socket>(third.socket).abort();
    assert_eq!(world.agent.listener().session().phase(), Phase::Open);
    world.run_until(&mut [&mut first], Duration::from_secs(600), |_, pushes| pushes[0].done()).unwrap();
    assert_eq!(first.events, [Event::NextSlot(SlotId::User2), Event::Ready, Event::Flashing, Event::Success]);
    assert_eq!(slot_bytes(&world.flash, SlotId::User2, images[1].len()), &images[1][..]);
    assert_eq!(current_slot(&world.flash), SlotId::User2);
}

/// The seed's `tcp_flash.py` reads `Flashing` and closes; the success line then meets a
/// closed socket, which answers with a reset. Our client reads the success line and
/// closes. Either way the device reboots at once, long before the seed's 2 s (and before
/// `CLOSE_GRACE`, which is only for a client that keeps its side open).
#[test]
fn the_device_reboots_as_soon_as_the_client_is_done() {
    use ota_agent::session::CLOSE_GRACE;
    let images = images(25, 30_000);
    for checked in [false, true] {
        let mut world = world(factory_flash(SlotId::User1), 0, 25);
        let mut push = world.push(images.clone(), 49152);
        push.checked = checked;
        let last = if checked { Event::Success } else { Event::Flashing };
        world
            .run_until(&mut [&mut push], Duration::from_secs(60), |_, pushes| {
                pushes[0].events.contains(&last)
            })
            .unwrap();
        let done_at = world.now;
        let host = push.socket;
        world.host_sockets.get_mut::<tcp::Socket>(host).close();
        world
            .run_until(&mut [], Duration::from_secs(5), |world, _| {
                let socket = world.host_sockets.get::<tcp::Socket>(host);
                !world.board.reboots.is_empty() || (!checked && socket.recv_queue() > 0)
            })
            .unwrap();
        if !checked {
            // The seed's socket is closed: the success line is answered with a reset.
            world.host_sockets.get_mut::<tcp::Socket>(host).abort();
            world
                .run_until(&mut [], Duration::from_secs(5), |world, _| !world.board.reboots.is_empty())
                .unwrap();
        }
        assert_eq!(current_slot(&world.flash), SlotId::User2, "checked {checked}");
        assert_eq!(world.board.reboots.len(), 1);
        let after = world.board.reboots[0] - done_at;
        assert!(after < CLOSE_GRACE, "checked {checked}: rebooted {after} after the client was done");
    }
}

/// `ota_init`'s agent pre-erases the idle slot between clients, a sector per poll, and asks
/// to be polled at once meanwhile; the running slot and the config stay as they were.
#[test]
fn the_agent_pre_erases_the_idle_slot_between_clients() {
    let before = factory_flash(SlotId::User1);
    let mut world = world(before.clone(), 0, 26);
    let user2 = *LAYOUT.slot(SlotId::User2);
    let sectors = user2.capacity / ota_agent::layout::SECTOR_SIZE;
    world.step(&mut []);
    assert_eq!(world.agent.poll_timeout(), Some(smoltcp::time::Instant::ZERO), "more to erase: poll at once");
    let erased = |world: &World| world.agent.listener().session().pre_erased().map(|(_, bytes)| bytes);
    assert_eq!(erased(&world), Some(ota_agent::layout::SECTOR_SIZE), "one sector per poll");
    world
        .run_until(&mut [], Duration::from_secs(10), |world, _| {
            !world.agent.listener().session().pre_erase_pending()
        })
        .unwrap();
    assert_eq!(erased(&world), Some(user2.capacity));
    assert!(world.now < smoltcp::time::Instant::ZERO + tcpflash_sim::wire::STEP * (sectors + 2));
    assert_eq!(world.agent.poll_timeout(), None);
    let (a, b) = (world.flash.bytes(), before.bytes());
    assert!(a[user2.offset as usize..user2.end() as usize].iter().all(|&byte| byte == 0xFF));
    assert!(a[..user2.offset as usize] == b[..user2.offset as usize], "user1 and the config untouched");

    let images = images(26, 60_000);
    let mut push = world.push(images.clone(), 49152);
    world.run_pushes(&mut [&mut push], Duration::from_secs(60)).unwrap();
    assert_eq!(push.events.last(), Some(&Event::Success));
    assert_eq!(slot_bytes(&world.flash, SlotId::User2, images[1].len()), &images[1][..]);
}

#[test]
fn a_client_that_vanishes_mid_image_frees_the_agent_and_switches_nothing() {
    let images = images(30, 60_000);
    let mut world = world(factory_flash(SlotId::User1), 0, 30);
    let config = config_bytes(&world.flash);
    let mut first = world.push(images.clone(), 49152);
    world
        .run_until(&mut [&mut first], Duration::from_secs(60), |world, _| {
            world.agent.listener().session().progress().is_some_and(|(received, _)| received > 20_000)
        })
        .unwrap();
    world.host_sockets.get_mut::<tcp::Socket>(first.socket).abort();
    world
        .run_until(&mut [], Duration::from_secs(60), |world, _| {
            world.agent.listener().session().phase() == Phase::Idle
        })
        .unwrap();
    assert_eq!(config_bytes(&world.flash), config);

    let mut second = world.push(images.clone(), 49153);
    world.run_until(&mut [&mut second], Duration::from_secs(600), |_, pushes| pushes[0].done()).unwrap();
    assert_eq!(second.events.last(), Some(&Event::Success), "{:?}", second.events);
    assert_eq!(slot_bytes(&world.flash, SlotId::User2, images[1].len()), &images[1][..]);
}

#[test]
fn a_silent_client_is_dropped_after_the_header_timeout() {
    let images = images(40, 1000);
    let mut world = world(factory_flash(SlotId::User1), 0, 40);
    let silent = world.push(images, 49152);
    world
        .run_until(&mut [], Duration::from_secs(5), |world, _| {
            world.agent.listener().session().phase() == Phase::Open
        })
        .unwrap();
    let opened = world.now;
    // Nothing is driven on the host side: the client never sends a byte.
    world
        .run_until(&mut [], Duration::from_secs(60), |world, _| {
            world.agent.listener().session().phase() != Phase::Open
        })
        .unwrap();
    // The header phase is bounded (10 s by default), well before the 30 s idle timeout.
    assert!(world.now >= opened + Duration::from_secs(10));
    assert!(world.now < opened + Duration::from_secs(11));
    // What the host received: exactly the timeout line.
    assert_eq!(
        world.host_receives_line(&silent, Duration::from_secs(30)).unwrap(),
        b"ERR: Header lines too slow\r\n"
    );
}

#[test]
fn corrupted_packets_and_a_small_mtu_still_land_the_image_byte_for_byte() {
    let config = AgentConfig { idle_timeout: Duration::from_secs(300), ..AgentConfig::new(LAYOUT) };
    let cases = [
        LinkFaults { corrupt_percent: 10, ..LinkFaults::clean(7) },
        LinkFaults { mtu: 296, ..LinkFaults::clean(8) },
        LinkFaults { drop_percent: 5, corrupt_percent: 5, mtu: 576, seed: 9 },
    ];
    for faults in cases {
        let images = images(u64::from(faults.seed), 30_000);
        let mut world = World::with_config(factory_flash(SlotId::User1), faults, config);
        let mut push = world.push(images.clone(), 49152);
        world.run_pushes(&mut [&mut push], Duration::from_secs(600)).unwrap();
        assert_eq!(
            push.events,
            [Event::NextSlot(SlotId::User2), Event::Ready, Event::Flashing, Event::Success],
            "{faults}"
        );
        assert_eq!(slot_bytes(&world.flash, SlotId::User2, images[1].len()), &images[1][..], "{faults}");
        assert_eq!(current_slot(&world.flash), SlotId::User2, "{faults}");
    }
}

#[test]
fn a_keyed_agent_takes_a_proven_push_over_smoltcp_and_refuses_a_wrong_key_or_none() {
    static KEY: ota_agent::auth::Key = [0xC3; 32];
    // Half the packets are lost: the header lines take longer than the default 10 s. No
    // pre-erase, so the flash shows what the refused pushes wrote: nothing.
    let config = AgentConfig {
        key: Some(&KEY),
        header_timeout: Duration::from_secs(120),
        pre_erase: false,
        ..AgentConfig::new(LAYOUT)
    };
    let images = images(50, 20_000);

    // No key (the seed's lines) and a wrong key: refused before Ready, nothing written.
    let mut world = World::with_config(factory_flash(SlotId::User1), LinkFaults::dropping(10, 50), config);
    let before = world.flash.clone();
    let mut seed = world.push(images.clone(), 49152);
    world.run_pushes(&mut [&mut seed], Duration::from_secs(600)).unwrap();
    let Some(Event::Failed(ClientError::Device(reason))) = seed.outcome() else {
        panic!("{:?}", seed.events)
    };
    assert_eq!(reason.to_string(), "Authentication required");
    // Until a refused connection has closed on both sides, a newcomer is turned away.
    let idle = |world: &World, _: &[&mut Push]| world.agent.listener().session().phase() == Phase::Idle;
    world.run_until(&mut [&mut seed], Duration::from_secs(60), idle).unwrap();
    let mut wrong_key = KEY;
    wrong_key[9] ^= 4;
    let mut wrong = world.push_with_key(images.clone(), 49153, &wrong_key);
    world.run_pushes(&mut [&mut wrong], Duration::from_secs(600)).unwrap();
    let Some(Event::Failed(ClientError::Device(reason))) = wrong.outcome() else {
        panic!("{:?}", wrong.events)
    };
    assert_eq!(reason.to_string(), "Authentication failed");
    assert!(world.flash.bytes() == before.bytes(), "refused pushes write nothing");
    world.run_until(&mut [&mut wrong], Duration::from_secs(60), idle).unwrap();

    // The right key, once the failure's 1 s lockout is over: the nonce came from the board.
    let unlocked = world.now + Duration::from_secs(1);
    world.run_until(&mut [], Duration::from_secs(2), |world, _| world.now >= unlocked).unwrap();
    let mut right = world.push_with_key(images.clone(), 49154, &KEY);
    world.run_pushes(&mut [&mut right], Duration::from_secs(600)).unwrap();
    assert_eq!(right.events, [Event::NextSlot(SlotId::User2), Event::Ready, Event::Flashing, Event::Success]);
    assert_eq!(right.client.authentication(), ota_agent::client::Authentication::Sent);
    assert_eq!(slot_bytes(&world.flash, SlotId::User2, images[1].len()), &images[1][..]);
    assert_eq!(current_slot(&world.flash), SlotId::User2);
}

#[test]
fn bytes_beyond_the_length_are_refused_in_the_last_segment_or_a_later_one() {
    for later in [false, true] {
        let images = images(61, 20_000);
        let image = &images[1];
        let mut world = world(factory_flash(SlotId::User1), 0, 61);
        let config = config_bytes(&world.flash).to_vec();
        let push = world.push(images.clone(), 49152);
        world
            .run_until(&mut [], Duration::from_secs(5), |world, _| {
                world.host_sockets.get::<tcp::Socket>(push.socket).may_send()
            })
            .unwrap();
        // The seed's lines (no SHA-256), the image, and ten bytes more.
        let mut stream = format!("OTA\r\nGetNextFlash\r\nFirmwareLength: {}\r\n", image.len()).into_bytes();
        stream.extend_from_slice(image);
        let limit = Duration::from_secs(60);
        if later {
            world.send_raw(&push, &stream, limit).unwrap();
            // Well after the last image segment, within the device's grace for stray bytes.
            world.run_until(&mut [], Duration::from_millis(100), |_, _| false).unwrap_err();
            world.send_raw(&push, b"0123456789", limit).unwrap();
        } else {
            stream.extend_from_slice(b"0123456789");
            world.send_raw(&push, &stream, limit).unwrap();
        }
        let replies = String::from_utf8(world.receive_all(&push, limit)).unwrap();
        // Caught with the image (before the check: `Invalid`) or after it, before the commit.
        let verdict = if later { "Flashing" } else { "Invalid" };
        assert_eq!(
            replies,
            format!("user2.bin\r\nReady\r\n{verdict}\r\nERR: More bytes than FirmwareLength\r\n"),
            "later {later}"
        );
        assert_eq!(config_bytes(&world.flash), config, "nothing switched (later {later})");
        assert!(world.board.reboots.is_empty());
    }
}
