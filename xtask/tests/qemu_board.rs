//! example-blinky and tcpflash-boot built with `--board qemu`, run on QEMU's XTFPGA board
//! with a 4 MiB CFI flash file: pushed to over real TCP (QEMU's user-mode network, forwarded
//! to 127.0.0.1) by cargo-tcpflash's push code, rebooted through the real bootloader; and
//! the bootloader's lx106 build on a set of flashes, against the host's decision.
//!
//! What the board must do after each boot comes from the host: the same loader flow over a
//! copy of the flash (`qemu_board::host_boot`), and `ota_agent::boot::decide` with the
//! validator's `verify_bootable` as the slot check.
//!
//! Needs `qemu-system-xtensa`, binutils-xtensa-lx106 and the pinned nightly with rust-src
//! (`.ci/run` installs them).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use cargo_tcpflash::build::{Bootloader, Firmware};
use cargo_tcpflash::push::{self, Progress, Target, Timeouts};
use ota_agent::boot::decision::decide;
use ota_agent::boot::handoff::{HandOff, HandOffKind};
use ota_agent::boot::trial::{ATTEMPTS_AT, CONFIRMED_AT, TRIAL_LEN, TrialRecord};
use ota_agent::boot::{BootConfig, CONFIG_LEN, CONFIG_STRUCT_LEN};
use ota_agent::flash::RamNor;
use ota_agent::image::{ImageInfo, Segment, verify_bootable, write_v2};
use ota_agent::layout::{BOOT_CONFIG_OFFSET, FlashLayout, SlotId, rom_capacity};
use ota_agent::protocol::{INVALID, SUCCESS};
use ota_agent::writer::SECTOR;
use xtask::proof::agent::{Agent, client_push, succeeded};
use xtask::qemu_board::{self, HostBoot, QemuBoard, check_boot};

/// Generous: a slow CI machine must fail on a bug, not on speed.
const PATIENCE: Duration = Duration::from_secs(60);

/// One QEMU guest at a time: each busy-polls a core.
static ONE_GUEST: Mutex<()> = Mutex::new(());

/// tcpflash-boot and example-blinky for the board, built once for the whole file.
struct Builds {
    bootloader: Bootloader,
    firmware: Firmware,
    images: [Vec<u8>; 2],
}

fn builds() -> &'static Builds {
    static BUILDS: OnceLock<Builds> = OnceLock::new();
    BUILDS.get_or_init(|| {
        fn report<T>(error: cargo_tcpflash::build::BuildError) -> T {
            panic!("{:?}", miette::Report::new(error))
        }
        let bootloader = qemu_board::build_bootloader().unwrap_or_else(report);
        let manifest = xtask::demo::workspace_root().join("example-blinky/Cargo.toml");
        let firmware = qemu_board::build_firmware(&manifest, None).unwrap_or_else(report);
        let read = |slot: SlotId| std::fs::read(&firmware.slot(slot).bin).unwrap();
        let images = [read(SlotId::User1), read(SlotId::User2)];
        Builds { bootloader, firmware, images }
    })
}

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

fn assert_same_flash(actual: &[u8], expected: &[u8], what: &str) {
    if let Some(at) = first_difference(actual, expected) {
        panic!("{what}: the flash file differs first at {at:#x}");
    }
}

fn start(kernel: &Path, flash: &Path) -> QemuBoard {
    QemuBoard::start(kernel, flash).unwrap_or_else(|error| panic!("{:?}", miette::Report::new(error)))
}

/// Checks a boot from `before`; returns the index of its last line and the host's boot.
fn booted(board: &mut QemuBoard, from: usize, before: &[u8]) -> (usize, HostBoot) {
    check_boot(board, from, before, PATIENCE)
        .unwrap_or_else(|error| panic!("{error}\nUART: {:#?}", board.texts()))
}

/// The boot line the bootloader prints for a confirmed boot of `slot` holding `build`.
fn confirmed_line(layout: &FlashLayout, slot: SlotId, build: &str) -> String {
    let slot = layout.slot(slot);
    format!("tcpflash-boot: rom {} @ {:#010x}: confirmed, build {build}", slot.id.index(), slot.offset)
}

/// Pushes `images` (the device picks the slot), reporting the replies; `abort` runs after
/// each piece of image that goes out, with the total so far.
fn push_images(
    target: &Target,
    images: [&[u8]; 2],
    abort: &mut dyn FnMut(usize),
) -> (Result<push::Pushed, push::PushError>, Vec<String>) {
    let timeouts = Timeouts { connect: PATIENCE, reply: PATIENCE, reboot: PATIENCE };
    let mut replies = Vec::new();
    let mut sent = 0;
    let result =
        push::push(target, images, None, &timeouts, &Default::default(), &mut |progress| match progress {
            Progress::Reply(line) => replies.push(line.to_string()),
            Progress::Sent(more) => {
                sent += more;
                abort(sent);
            }
            _ => {}
        });
    (result, replies)
}

/// The slot the device says it runs (it names the other one in `GetNextFlash`).
fn running(board: &mut QemuBoard, target: &Target) -> SlotId {
    let timeouts = Timeouts { connect: PATIENCE, reply: PATIENCE, reboot: PATIENCE };
    let slot = push::await_return(target, &timeouts, &Default::default(), &mut |_| {}).unwrap();
    idle(board);
    slot.slot
}

/// Waits until the agent has seen every client leave (its UART says so): until then it
/// turns the next one away.
fn idle(board: &mut QemuBoard) {
    loop {
        let texts = board.texts();
        // `client left` may say why: `client left: CRC mismatch ...`.
        let count = |what: &str| texts.iter().filter(|line| line.starts_with(what)).count();
        if count("client left") >= count("client connected") {
            return;
        }
        board.wait_line("client left", texts.len(), PATIENCE).unwrap();
    }
}

/// The same push through the agent's host build, on a copy of `flash`, for a firmware
/// running `running`: the flash it leaves and whether it succeeded.
fn reference_push(flash: &[u8], running: SlotId, images: [&[u8]; 2]) -> (Vec<u8>, bool) {
    let mut reference = RamNor::from_storage(flash.to_vec());
    let mut sector = [0u8; SECTOR];
    let mut agent = Agent::new(&mut sector, builds().firmware.layout, Some(running));
    let events = client_push(&mut agent, &mut reference, images, true);
    (reference.bytes().to_vec(), succeeded(&events))
}

/// A push that lands: the replies, the flash byte for byte (the image, and all of it against
/// the same push through the agent's host build), the 2 s reset delay, the reboot through
/// tcpflash-boot into the pushed build, and `GetNextFlash` naming the other slot. Returns where the UART
/// lines of the new boot end.
fn push_and_reboot(board: &mut QemuBoard, flash_path: &Path, slot: SlotId, from: usize) -> usize {
    let builds = builds();
    let layout = builds.firmware.layout;
    let images = [builds.images[0].as_slice(), builds.images[1].as_slice()];
    let (reference, landed) = reference_push(&std::fs::read(flash_path).unwrap(), slot.other(), images);
    assert!(landed, "the host build takes the push");
    let target = push::resolve("127.0.0.1", board.port).unwrap();
    let started = Instant::now();
    let (pushed, replies) = push_images(&target, images, &mut |_| {});
    let pushed =
        pushed.unwrap_or_else(|error| panic!("{:?}\nUART: {:#?}", miette::Report::new(error), board.texts()));
    let push_time = started.elapsed();
    assert_eq!(pushed.slot, slot);
    assert_eq!(replies, [slot.file_name(), "Ready", "Flashing", SUCCESS]);

    // The agent resets once its answer is delivered (after the close's 100 ms, at the latest
    // 2 s after the answer): the flash it leaves is what the bootloader finds.
    let before = std::fs::read(flash_path).unwrap();
    let image = &builds.images[slot.index()];
    let at = layout.slot(slot).offset as usize;
    assert!(before[at..at + image.len()] == image[..], "{slot} at its offset, byte for byte");
    assert_same_flash(&before, &reference, "against the host build's push");
    let done = board.wait_line("update done", from, PATIENCE).unwrap();
    let reset = board.wait_line("resetting", done + 1, PATIENCE).unwrap();
    let lines = board.lines();
    let delay = lines[reset].at - lines[done].at;
    assert!(
        (Duration::from_millis(50)..Duration::from_secs(2)).contains(&delay),
        "the reset came {delay:?} after the update: not the close's 100 ms, nor within the 2 s bound \
         (is the CCOUNT clock's rate wrong?)"
    );
    let (end, host) = booted(board, reset, &before);
    let handoff = host.result.as_ref().expect("the pushed slot boots").handoff;
    assert_eq!(handoff.offset, layout.slot(slot).offset, "the bootloader starts the pushed slot");
    let build = builds.firmware.build_id_hex();
    let boot_line = host.lines.last().unwrap();
    assert!(boot_line.ends_with(&format!(", build {build}")), "{boot_line}: the pushed build");
    assert_same_flash(&std::fs::read(flash_path).unwrap(), &host.flash, "after the boot");
    assert_eq!(running(board, &target), slot, "GetNextFlash names the other slot");
    eprintln!(
        "qemu board: {slot} pushed ({} bytes) in {} ms; {boot_line}",
        image.len(),
        push_time.as_millis()
    );
    end
}

#[test]
fn pushes_reboot_through_tcpflash_boot_and_survive_bad_images_and_power_cuts() {
    let _one = ONE_GUEST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let builds = builds();
    let layout = builds.firmware.layout;
    let build = builds.firmware.build_id_hex();
    let kernel = &builds.bootloader.elf;
    let dir = scratch("push");
    let factory = qemu_board::factory_flash(layout, &builds.images[0]).unwrap();
    let flash_path = dir.join("flash.bin");
    std::fs::write(&flash_path, &factory).unwrap();

    // Power-on: tcpflash-boot boots the factory install's user1.
    let mut board = start(kernel, &flash_path);
    let (end, host) = booted(&mut board, 0, &factory);
    assert_eq!(host.lines, [confirmed_line(layout, SlotId::User1, &build)]);
    assert_eq!(
        board.texts()[..=end],
        [
            confirmed_line(layout, SlotId::User1, &build),
            "example-blinky 0.1.0 on qemu: booted, IROM linked at 0x40202010".into(),
        ]
    );
    let listening = board.wait_line("listening on port", end, PATIENCE).unwrap();

    // user2, then user1: each lands and boots through the bootloader.
    let end = push_and_reboot(&mut board, &flash_path, SlotId::User2, listening);
    assert!(board.texts()[end].contains("IROM linked at 0x40282010"), "user2's link address runs");
    let listening = board.wait_line("listening on port", end, PATIENCE).unwrap();
    let end = push_and_reboot(&mut board, &flash_path, SlotId::User1, listening);
    let listening = board.wait_line("listening on port", end, PATIENCE).unwrap();

    // A corrupted image: `Invalid`, the running slot and the boot state stay.
    let before = std::fs::read(&flash_path).unwrap();
    let mut broken = builds.images[1].clone();
    broken[0x400] ^= 0x10; // inside IROM: only the CRC notices
    let (reference, landed) = reference_push(&before, SlotId::User1, [&builds.images[0], &broken]);
    assert!(!landed, "the host build refuses it too");
    let target = push::resolve("127.0.0.1", board.port).unwrap();
    let (result, replies) = push_images(&target, [&builds.images[0], &broken], &mut |_| {});
    assert!(result.is_err(), "a corrupted image is refused");
    assert_eq!(replies, ["user2.bin", "Ready", INVALID]);
    assert_eq!(running(&mut board, &target), SlotId::User1, "the old slot keeps running");
    // `running` waited the agent's reboot delay first: a reset would have shown by now.
    let since = &board.texts()[listening..];
    assert!(!since.iter().any(|line| line.starts_with(qemu_board::BOOT_PREFIX)), "no reset: {since:#?}");
    let after = std::fs::read(&flash_path).unwrap();
    assert_same_flash(&after, &reference, "after the refused push, against the host build's");
    let state = layout.boot_state_offset() as usize;
    assert_eq!(after[..0x2000], before[..0x2000], "sector 0 and the boot config are untouched");
    assert_eq!(after[state..state + TRIAL_LEN], before[state..state + TRIAL_LEN], "no trial began");

    // QEMU killed at a random moment of a push: the old slot boots, and a push then lands.
    let seed = std::env::var("TCPFLASH_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as usize
    });
    // Before the last 16 KB (the client's largest write): the kill lands mid-transfer, never
    // after the agent has everything.
    let cut = seed % (builds.images[1].len() - 16 * 1024);
    eprintln!("qemu board: QEMU killed after {cut} image bytes out (TCPFLASH_KILL_SEED={seed})");
    let mut board = Some(board);
    let (result, _) = push_images(&target, [&builds.images[0], &builds.images[1]], &mut |sent| {
        if sent >= cut
            && let Some(board) = board.take()
        {
            board.kill().unwrap();
        }
    });
    assert!(result.is_err(), "the push cannot finish without the board");
    let result = result.map_err(|error| format!("{:?}", miette::Report::new(error)));
    assert!(board.is_none(), "QEMU was killed during the transfer, yet the push ended with {result:?}");
    let cut_flash = std::fs::read(&flash_path).unwrap();
    assert_eq!(cut_flash[..0x2000], before[..0x2000], "a cut transfer leaves the boot config");
    let mut board = start(kernel, &flash_path);
    let (end, host) = booted(&mut board, 0, &cut_flash);
    assert_eq!(host.lines, [confirmed_line(layout, SlotId::User1, &build)], "the old slot boots");
    let listening = board.wait_line("listening on port", end, PATIENCE).unwrap();
    push_and_reboot(&mut board, &flash_path, SlotId::User2, listening);
    board.stop().unwrap();
}

/// A flash as the scenarios start it: the factory install plus user2 in its slot.
fn both_slots() -> Vec<u8> {
    let builds = builds();
    let layout = builds.firmware.layout;
    let mut flash = qemu_board::factory_flash(layout, &builds.images[0]).unwrap();
    let user2 = layout.slot(SlotId::User2).offset as usize;
    flash[user2..user2 + builds.images[1].len()].copy_from_slice(&builds.images[1]);
    flash
}

fn erase(flash: &mut [u8], offset: u32, len: u32) {
    flash[offset as usize..(offset + len) as usize].fill(0xFF);
}

fn write_config(flash: &mut [u8], config: &BootConfig) {
    erase(flash, BOOT_CONFIG_OFFSET, 0x1000);
    let at = BOOT_CONFIG_OFFSET as usize;
    flash[at..at + CONFIG_STRUCT_LEN].copy_from_slice(&config.to_bytes());
}

/// A trial of user2 falling back to user1, `used` attempts counted, maybe confirmed.
fn write_trial(flash: &mut [u8], layout: &FlashLayout, max: u8, used: u8, confirmed: bool) {
    let record = TrialRecord {
        trial_rom: 1,
        fallback_rom: 0,
        max_attempts: max,
        trial_offset: layout.slot(SlotId::User2).offset,
        fallback_offset: layout.slot(SlotId::User1).offset,
    };
    let mut bytes = RamNor::from_storage(flash.to_vec());
    bytes.allow_bit_clearing();
    ota_agent::boot::trial::begin_trial(&mut bytes, layout, &record).unwrap();
    flash.copy_from_slice(bytes.bytes());
    let at = layout.boot_state_offset() as usize;
    let attempts = if used >= 32 { 0 } else { u32::MAX << used };
    flash[at + ATTEMPTS_AT as usize..][..4].copy_from_slice(&attempts.to_le_bytes());
    if confirmed {
        flash[at + CONFIRMED_AT as usize..][..4].copy_from_slice(&0u32.to_le_bytes());
    }
}

/// `image` with its IROM grown to about `len` bytes in all (zeros after the code, which
/// nothing reads): a 400 KB-class slot for the boot time.
fn grown(image: &[u8], len: usize) -> Vec<u8> {
    let mut flash = RamNor::from_storage(image.to_vec());
    let info = ota_agent::image::inspect(&mut flash, 0, image.len() as u32, &mut [0; 4096]).unwrap();
    let mut irom = image[16..16 + info.irom_len as usize].to_vec();
    irom.resize(irom.len() + len.saturating_sub(image.len()), 0);
    let data: Vec<(u32, &[u8])> =
        info.ram_segments_at(0).map(|(at, addr, n)| (addr, &image[at as usize..(at + n) as usize])).collect();
    let segments: Vec<Segment<'_>> = data.iter().map(|&(addr, data)| Segment { addr, data }).collect();
    let mut out = Vec::new();
    write_v2(info.params, info.entry, &irom, &segments, &mut |bytes| out.extend_from_slice(bytes)).unwrap();
    out
}

/// What the host decides for `flash`: `decide` with the full validator as the slot check.
fn host_decision(flash: &[u8], layout: &FlashLayout) -> Option<HandOff> {
    let config: &[u8; CONFIG_STRUCT_LEN] =
        flash[BOOT_CONFIG_OFFSET as usize..][..CONFIG_STRUCT_LEN].try_into().unwrap();
    let state = layout.boot_state_offset() as usize;
    let trial: &[u8; TRIAL_LEN] = flash[state..state + TRIAL_LEN].try_into().unwrap();
    let chip = ota_agent::boot::rboot_flash_size(flash[3] >> 4);
    let mut valid = |_: u8, offset: u32| {
        let mut reader = RamNor::from_storage(flash[..chip as usize].to_vec());
        let mut info = ImageInfo::default();
        verify_bootable(&mut reader, offset, rom_capacity(chip, offset), &mut [0; 512], &mut info).is_ok()
    };
    decide(config, trial, chip, &mut valid).boot.map(|boot| boot.handoff())
}

#[test]
fn the_bootloaders_lx106_build_picks_the_slot_the_host_decides() {
    let _one = ONE_GUEST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let builds = builds();
    let layout = builds.firmware.layout;
    let (user1, user2) = (layout.slot(SlotId::User1).offset, layout.slot(SlotId::User2).offset);
    let handoff = |rom, kind, attempt, offset| Some(HandOff { rom, kind, attempt, offset });
    let config = |current| BootConfig::for_layout(layout, current);
    let broken = |flash: &mut Vec<u8>, offset: u32| flash[offset as usize + 0x300] ^= 0x01;

    type Edit = Box<dyn Fn(&mut Vec<u8>)>;
    let scenarios: Vec<(&str, Edit, Option<HandOff>)> = vec![
        ("the factory install", Box::new(|_| {}), handoff(0, HandOffKind::Confirmed, 0, user1)),
        (
            "a config selecting user2",
            Box::new(move |f| write_config(f, &config(SlotId::User2))),
            handoff(1, HandOffKind::Confirmed, 0, user2),
        ),
        (
            "a blank config (rBoot's default)",
            Box::new(|f| erase(f, BOOT_CONFIG_OFFSET, 0x1000)),
            handoff(0, HandOffKind::Confirmed, 0, user1),
        ),
        (
            "a torn config selecting user2 (its first word never written)",
            Box::new(move |f| {
                write_config(f, &config(SlotId::User2));
                erase(f, BOOT_CONFIG_OFFSET, 4);
            }),
            handoff(0, HandOffKind::Confirmed, 0, user1),
        ),
        (
            "a config whose checksum fails",
            Box::new(move |f| {
                write_config(f, &config(SlotId::User2));
                f[BOOT_CONFIG_OFFSET as usize + CONFIG_LEN - 1] ^= 0x01;
            }),
            handoff(0, HandOffKind::Confirmed, 0, user1),
        ),
        (
            "a config naming an invalid slot",
            Box::new(move |f| {
                write_config(f, &config(SlotId::User2));
                broken(f, user2);
            }),
            handoff(0, HandOffKind::Fallback, 0, user1),
        ),
        (
            "a config naming an erased slot",
            Box::new(move |f| {
                write_config(f, &config(SlotId::User2));
                erase(f, user2, 0x1000);
            }),
            handoff(0, HandOffKind::Fallback, 0, user1),
        ),
        (
            "a trial with attempts left",
            Box::new(move |f| write_trial(f, layout, 3, 1, false)),
            handoff(1, HandOffKind::Trial, 2, user2),
        ),
        (
            "a trial at its last attempt",
            Box::new(move |f| write_trial(f, layout, 3, 2, false)),
            handoff(1, HandOffKind::Trial, 3, user2),
        ),
        (
            "an exhausted trial",
            Box::new(move |f| write_trial(f, layout, 3, 3, false)),
            handoff(0, HandOffKind::Reverted, 0, user1),
        ),
        (
            "a confirmed trial",
            Box::new(move |f| write_trial(f, layout, 3, 3, true)),
            handoff(1, HandOffKind::Confirmed, 0, user2),
        ),
        (
            "a trial whose image is broken",
            Box::new(move |f| {
                write_trial(f, layout, 3, 0, false);
                broken(f, user2);
            }),
            handoff(0, HandOffKind::Fallback, 0, user1),
        ),
        (
            "a 400 KB image",
            Box::new(move |f| {
                let image = grown(&builds.images[0], 400 * 1024);
                f[user1 as usize..][..image.len()].copy_from_slice(&image);
            }),
            handoff(0, HandOffKind::Confirmed, 0, user1),
        ),
        (
            "both slots invalid",
            Box::new(move |f| {
                broken(f, user1);
                erase(f, user2, 0x1000);
            }),
            None,
        ),
        (
            "an exhausted trial whose fallback is broken",
            Box::new(move |f| {
                write_trial(f, layout, 2, 2, false);
                broken(f, user1);
            }),
            None,
        ),
    ];

    let dir = scratch("scenarios");
    let flash_path = dir.join("flash.bin");
    for (name, edit, expected) in &scenarios {
        let mut flash = both_slots();
        edit(&mut flash);
        let decided = host_decision(&flash, layout);
        assert_eq!(decided, *expected, "{name}: the host's decision");
        std::fs::write(&flash_path, &flash).unwrap();

        let started = Instant::now();
        let mut board = start(&builds.bootloader.elf, &flash_path);
        let (end, host) = booted(&mut board, 0, &flash);
        let lines = board.lines();
        // QEMU's start to the bootloader's last line (its checks), and on to the firmware's
        // first (the copy and the jump).
        let checked = lines[host.lines.len() - 1].at - started;
        let copied = lines[end].at - lines[host.lines.len() - 1].at;
        assert_eq!(host.result.ok().map(|launch| launch.handoff), decided, "{name}: the host's loader");
        match decided {
            Some(_) => assert!(board.texts()[end].contains(" booted, IROM linked at"), "{name}"),
            None => {
                assert_eq!(host.lines.last().unwrap(), "tcpflash-boot: no bootable rom, halted", "{name}")
            }
        }
        board.stop().unwrap();
        assert_same_flash(&std::fs::read(&flash_path).unwrap(), &host.flash, name);
        eprintln!(
            "qemu board: {name}: {:?} (QEMU start to the boot line {} ms, then to the firmware {} ms)",
            host.lines,
            checked.as_millis(),
            copied.as_millis()
        );
    }
}
