//! example-blinky built with `--board qemu`, run on QEMU's XTFPGA board with a 4 MiB CFI
//! flash file, and updated over real TCP (QEMU's user-mode network, forwarded to
//! 127.0.0.1) by cargo-tcpflash's push code: the whole agent on the board's own drivers.
//!
//! Needs `qemu-system-xtensa`, binutils-xtensa-lx106 and the firmware's pinned nightly with
//! rust-src (`.ci/run` installs them).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cargo_tcpflash::push::{self, Progress, Timeouts};
use ota_agent::boot::{BootConfig, CONFIG_LEN};
use ota_agent::flash::RamNor;
use ota_agent::layout::{BOOT_CONFIG_OFFSET, SlotId};
use ota_agent::protocol::SUCCESS;
use ota_agent::writer::SECTOR;
use xtask::proof::agent::{Agent, client_push, succeeded};
use xtask::qemu_board::{self, QemuBoard};

/// Generous: a slow CI machine must fail on a bug, not on speed.
const PATIENCE: Duration = Duration::from_secs(60);

fn scratch(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("qemu-board-{}", std::process::id())).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y).or((a.len() != b.len()).then(|| a.len().min(b.len())))
}

#[test]
fn example_blinky_on_the_qemu_board_takes_a_push_over_tcp_and_resets() {
    let manifest = xtask::demo::workspace_root().join("example-blinky/Cargo.toml");
    let firmware = qemu_board::build_firmware(&manifest, None)
        .unwrap_or_else(|error| panic!("{:?}", miette::Report::new(error)));
    let layout = firmware.layout;
    let read = |slot: SlotId| std::fs::read(&firmware.slot(slot).bin).unwrap();
    let images = [read(SlotId::User1), read(SlotId::User2)];
    let [user1_slot, user2_slot] = layout.slots;

    let dir = scratch("push");
    let factory = qemu_board::factory_flash(layout, &images[0]).unwrap();
    let flash_path = dir.join("flash.bin");
    std::fs::write(&flash_path, &factory).unwrap();

    // The reference: the same push through the agent's host build, on a RAM flash.
    let mut reference = RamNor::from_storage(factory.clone());
    let mut sector = [0u8; SECTOR];
    let mut agent = Agent::new(&mut sector, layout, Some(SlotId::User1));
    let events = client_push(&mut agent, &mut reference, [&images[0], &images[1]], true);
    assert!(succeeded(&events), "{events:?}");

    let mut board = QemuBoard::start(&firmware.slot(SlotId::User1).elf, &flash_path)
        .unwrap_or_else(|error| panic!("{:?}", miette::Report::new(error)));
    let listening = board.wait_line("listening on port", 0, PATIENCE).unwrap();
    assert_eq!(
        board.texts()[..=listening],
        [
            "example-blinky 0.1.0 on qemu: booted, IROM linked at 0x40202010",
            "boot config selects user1; listening on port 65056",
        ]
    );

    let target = push::resolve("127.0.0.1", board.port).unwrap();
    let timeouts = Timeouts { connect: PATIENCE, reply: PATIENCE, reboot: PATIENCE };
    let mut replies = Vec::new();
    let mut sending = None;
    let started = Instant::now();
    let pushed = push::push(
        &target,
        [&images[0], &images[1]],
        None,
        &timeouts,
        &Default::default(),
        &mut |progress| match progress {
            Progress::Reply(line) => replies.push(line.to_string()),
            Progress::Sending { .. } => sending = Some(Instant::now()),
            _ => {}
        },
    )
    .unwrap_or_else(|error| panic!("{:?}\nUART: {:#?}", miette::Report::new(error), board.texts()));
    let push_time = started.elapsed();
    let transfer_time = sending.expect("the image was sent").elapsed();
    assert_eq!(pushed.slot, SlotId::User2);
    assert_eq!(pushed.len as usize, images[1].len());
    assert_eq!(replies, ["user2.bin", "Ready", "Flashing", SUCCESS]);

    // The board resets 2 s later (by its CCOUNT clock) and QEMU runs the kernel again.
    let done = board.wait_line("update done", listening, PATIENCE).unwrap();
    let resetting = board.wait_line("resetting", done + 1, PATIENCE).unwrap();
    let rebooted = board.wait_line("listening on port", resetting, PATIENCE).unwrap();
    let back = push::await_return(&target, &timeouts, &Default::default(), &mut |_| {}).unwrap();
    assert_eq!(back.slot, SlotId::User2, "the agent reads the boot config it switched");
    let lines = board.lines();
    let texts: Vec<&str> = lines.iter().map(|line| line.text.as_str()).collect();
    assert_eq!(
        texts[listening + 1..=rebooted],
        [
            "client connected",
            "update done: user2 verified and selected; resetting in 2 s",
            "client left",
            "resetting",
            "example-blinky 0.1.0 on qemu: booted, IROM linked at 0x40202010",
            "boot config selects user2; listening on port 65056",
        ]
    );
    let reboot_delay = lines[resetting].at - lines[done].at;
    assert!(
        (Duration::from_millis(1500)..Duration::from_secs(6)).contains(&reboot_delay),
        "the 2 s reboot delay took {reboot_delay:?}: the CCOUNT clock runs at the wrong rate"
    );
    board.stop().unwrap();

    let flash = std::fs::read(&flash_path).unwrap();
    assert_eq!(flash.len(), 4 << 20);
    let at = user2_slot.offset as usize;
    assert!(flash[at..at + images[1].len()] == images[1], "user2.bin at user2's offset, byte for byte");
    let config = &flash[BOOT_CONFIG_OFFSET as usize..][..CONFIG_LEN];
    let config = BootConfig::parse(config.try_into().unwrap()).expect("a valid boot config");
    assert_eq!(config.current_slot(layout), Some(SlotId::User2));
    // The boot config's sector shares its 64 KB block with the bootloader and user1: the
    // driver's read-modify-write kept them.
    assert_eq!(flash[..0x1000], factory[..0x1000]);
    let user1 = user1_slot.offset as usize..user1_slot.end() as usize;
    assert!(flash[user1.clone()] == factory[user1], "user1's slot is untouched");
    if let Some(at) = first_difference(&flash, reference.bytes()) {
        panic!("the flash differs from the host build's push first at {at:#x}");
    }

    eprintln!(
        "qemu board: pushed {} bytes over loopback in {} ms (connect to the success line; {} ms from \
         `Ready` on); reset after {} ms",
        images[1].len(),
        push_time.as_millis(),
        transfer_time.as_millis(),
        reboot_delay.as_millis()
    );
}
