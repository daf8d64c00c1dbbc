//! The QEMU board's cases: example-blinky and tcpflash-boot as lx106 machine code, pushed to
//! over real TCP (QEMU's user-mode network on 127.0.0.1). `tests/qemu_board.rs` runs them
//! group by group, `cargo xtask proof` all of them ([`run_all`]); each case passes or says
//! why not, and one QEMU guest runs at a time (each busy-polls a core).
//!
//! What the board must do comes from the host: the bootloader's flow over a copy of the flash
//! ([`super::host_boot`]), the agent's host build for the flash a push leaves, and
//! `ota_agent::boot::decide` with the validator's `verify_bootable` for the boot decisions.
//!
//! - [`pushes`]: power-on, user2 then user1 pushed (each a trial the check-in confirms), a
//!   corrupted image refused, QEMU killed mid-push and restarted;
//! - [`boot_scenarios`]: the bootloader on 15 flashes against the host's decision;
//! - [`panic_at_boot`]: the real CLI pushes a firmware that panics before it confirms: it
//!   resets, tcpflash-boot goes back after 3 attempts, exit status 6 names both builds;
//! - [`keyed`]: a firmware built with a key takes the CLI's `--key-file` push and refuses a
//!   wrong key;
//! - [`sim_board`]: `cargo tcpflash sim --board qemu` (the real binary): a push lands, `sim
//!   status` reads the file, Ctrl-C stops QEMU, and a sim killed with SIGKILL takes QEMU
//!   with it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cargo_tcpflash::build::BuildOptions;
use cargo_tcpflash::build::{self, Bootloader, BuildError, Firmware};
use cargo_tcpflash::push::{self, Progress, Target, Timeouts};
use ota_agent::auth::{self, KEY_FILE_ENV};
use ota_agent::boot::decision::decide;
use ota_agent::boot::handoff::{HandOff, HandOffKind};
use ota_agent::boot::trial::{ATTEMPTS_AT, CONFIRMED_AT, TRIAL_LEN, TrialRecord};
use ota_agent::boot::{BootConfig, BootStatus, CONFIG_LEN, CONFIG_STRUCT_LEN, Running};
use ota_agent::flash::RamNor;
use ota_agent::image::{ImageInfo, Segment, verify_bootable, write_v2};
use ota_agent::layout::{BOOT_CONFIG_OFFSET, FlashLayout, SlotId, rom_capacity};
use ota_agent::protocol::{INVALID, SUCCESS};
use ota_agent::writer::SECTOR;

use super::{BOOT_PREFIX, HostBoot, QemuBoard, RUN_LIMIT, SimProcess, check_boot, host_boot};
use crate::proof::agent::{Agent, client_push, succeeded};

/// Generous: a slow CI machine must fail on a bug, not on speed.
pub const PATIENCE: Duration = Duration::from_secs(60);
/// The attempts tcpflash-boot gives a trial (the agent's default).
const ATTEMPTS: usize = ota_agent::boot::DEFAULT_TRIAL_ATTEMPTS as usize;

/// One case's outcome: what it saw, or why it failed.
pub type Outcome = Result<String, String>;

pub struct Case {
    pub name: String,
    pub outcome: Outcome,
}

/// Every case run, in order.
#[derive(Default)]
pub struct Report {
    pub cases: Vec<Case>,
}

impl Report {
    pub fn failures(&self) -> usize {
        self.cases.iter().filter(|case| case.outcome.is_err()).count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for case in &self.cases {
            match &case.outcome {
                Ok(seen) => writeln!(f, "ok   {}: {seen}", case.name)?,
                Err(why) => writeln!(f, "FAIL {}: {why}", case.name)?,
            }
        }
        writeln!(f, "{} QEMU-board cases, {} failed", self.cases.len(), self.failures())
    }
}

/// Fails the case with a message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($message:tt)+) => {
        if !$cond {
            return Err(format!($($message)+));
        }
    };
}

/// An error as miette renders it.
fn report(error: impl miette::Diagnostic + Send + Sync + 'static) -> String {
    format!("{:?}", miette::Report::new(error))
}

/// One QEMU guest at a time, across every caller in this process.
pub fn one_guest() -> MutexGuard<'static, ()> {
    static ONE_GUEST: Mutex<()> = Mutex::new(());
    ONE_GUEST.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// tcpflash-boot and example-blinky built for the board, the `cargo-tcpflash` binary, and
/// where the cases put their files.
pub struct Fixture {
    pub bootloader: Bootloader,
    pub firmware: Firmware,
    /// `user1.bin`, `user2.bin`.
    pub images: [Vec<u8>; 2],
    pub manifest: PathBuf,
    pub tcpflash: PathBuf,
    /// Flash files, one folder per case.
    pub scratch: PathBuf,
    /// Where the panic-at-boot and keyed builds go (away from the images above).
    pub variants_dir: PathBuf,
}

impl Fixture {
    /// Builds everything for the cases (example-blinky into cargo-tcpflash's default target
    /// dir, as `cargo tcpflash --board qemu` does).
    pub fn build(scratch: &Path) -> Result<Fixture, String> {
        let root = crate::demo::workspace_root();
        let bootloader = super::build_bootloader().map_err(report)?;
        let manifest = root.join("example-blinky/Cargo.toml");
        let firmware = super::build_firmware(&manifest, None).map_err(report)?;
        let read = |slot: SlotId| {
            let path = &firmware.slot(slot).bin;
            std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
        };
        let images = [read(SlotId::User1)?, read(SlotId::User2)?];
        let tcpflash = crate::demo::build_tcpflash_binary(&root).map_err(report)?;
        let variants_dir = root.join("target/qemu-board-variants");
        Ok(Fixture {
            bootloader,
            firmware,
            images,
            manifest,
            tcpflash,
            scratch: scratch.into(),
            variants_dir,
        })
    }

    pub fn layout(&self) -> &'static FlashLayout {
        self.firmware.layout
    }

    pub fn build_id(&self) -> String {
        self.firmware.build_id_hex()
    }

    fn image_refs(&self) -> [&[u8]; 2] {
        [&self.images[0], &self.images[1]]
    }

    /// An empty folder for `case`.
    fn case_dir(&self, case: &str) -> Result<PathBuf, String> {
        let dir = self.scratch.join(case);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
        Ok(dir)
    }

    /// A new flash file for `case`, holding `bytes`.
    fn flash_file(&self, case: &str, bytes: &[u8]) -> Result<PathBuf, String> {
        let path = self.case_dir(case)?.join("flash.bin");
        std::fs::write(&path, bytes).map_err(|error| format!("cannot write {}: {error}", path.display()))?;
        Ok(path)
    }

    fn factory(&self) -> Result<Vec<u8>, String> {
        super::factory_flash(self.layout(), &self.images[0]).map_err(report)
    }

    fn start(&self, flash: &Path) -> Result<QemuBoard, String> {
        QemuBoard::start(&self.bootloader.elf, flash, RUN_LIMIT).map_err(report)
    }

    /// `cargo tcpflash` (the real binary) with `args`, its key file variable cleared.
    fn cli(&self, args: &[&str]) -> Result<Output, String> {
        Command::new(&self.tcpflash)
            .arg("tcpflash")
            .args(args)
            .env_remove(KEY_FILE_ENV)
            .env_remove(cargo_tcpflash::push_cmd::HOST_ENV)
            .output()
            .map_err(|error| format!("cannot run {}: {error}", self.tcpflash.display()))
    }

    /// `cargo tcpflash --host 127.0.0.1 --port PORT --board qemu` on example-blinky, patient.
    fn cli_push(&self, port: u16, extra: &[&str]) -> Result<Output, String> {
        let port = port.to_string();
        let manifest = self.manifest.to_str().ok_or("the manifest path is not UTF-8")?;
        let mut args = vec!["--host", "127.0.0.1", "--port", &port, "--board", "qemu"];
        args.extend(["--manifest-path", manifest, "--timeout", "60", "--reboot-timeout", "90"]);
        args.extend(extra);
        self.cli(&args)
    }

    /// A variant of example-blinky for the board, built into the variants' target dir: its
    /// build id and images.
    fn variant(&self, features: &[&str], key_file: Option<&Path>) -> Result<(String, [Vec<u8>; 2]), String> {
        let firmware = build::build(&BuildOptions {
            manifest_path: Some(self.manifest.clone()),
            board: Some("qemu".into()),
            features: features.iter().map(|feature| feature.to_string()).collect(),
            target_dir: Some(self.variants_dir.clone()),
            key_file: key_file.map(Path::to_path_buf),
            ..BuildOptions::default()
        })
        .map_err(|error: BuildError| report(error))?;
        let image = |slot: SlotId| read(&firmware.slot(slot).bin);
        Ok((firmware.build_id_hex(), [image(SlotId::User1)?, image(SlotId::User2)?]))
    }
}

/// Every case, in the order above.
pub fn run_all(fixture: &Fixture) -> Report {
    let mut report = Report::default();
    report.cases.extend(pushes(fixture));
    report.cases.extend(boot_scenarios(fixture));
    report.cases.push(panic_at_boot(fixture));
    report.cases.extend(keyed(fixture));
    report.cases.push(sim_board(fixture));
    report
}

fn case(name: impl Into<String>, outcome: Outcome) -> Case {
    Case { name: name.into(), outcome }
}

/// One step of a [`sequence`].
type Step<S> = dyn Fn(&mut S) -> Outcome;

/// Runs `steps` in order on one `state`; after a failure the rest do not run (and fail).
fn sequence<S>(state: &mut S, steps: Vec<(&str, &Step<S>)>) -> Vec<Case> {
    let mut failed = false;
    steps
        .into_iter()
        .map(|(name, step)| {
            let outcome = if failed { Err("not run: an earlier step failed".into()) } else { step(state) };
            failed |= outcome.is_err();
            case(name, outcome)
        })
        .collect()
}

/// The line the bootloader prints for a confirmed boot of `slot` holding `build`.
fn confirmed_line(layout: &FlashLayout, slot: SlotId, build: &str) -> String {
    let slot = layout.slot(slot);
    format!("tcpflash-boot: rom {} @ {:#010x}: confirmed, build {build}", slot.id.index(), slot.offset)
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y).or((a.len() != b.len()).then(|| a.len().min(b.len())))
}

fn same_flash(actual: &[u8], expected: &[u8], what: &str) -> Result<(), String> {
    match first_difference(actual, expected) {
        Some(at) => Err(format!("{what}: the flash file differs first at {at:#x}")),
        None => Ok(()),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
}

fn timeouts() -> Timeouts {
    Timeouts { connect: PATIENCE, reply: PATIENCE, reboot: PATIENCE }
}

/// Pushes `images` with cargo-tcpflash's push code and `key` (the device picks the slot),
/// reporting the replies; `abort` runs after each piece of image that goes out, with the
/// total so far.
fn push_images(
    target: &Target,
    images: [&[u8]; 2],
    key: Option<&auth::Key>,
    abort: &mut dyn FnMut(usize),
) -> (Result<push::Pushed, push::PushError>, Vec<String>) {
    let mut replies = Vec::new();
    let mut sent = 0;
    let result =
        push::push(target, images, key, &timeouts(), &Default::default(), &mut |progress| match progress {
            Progress::Reply(line) => replies.push(line.to_string()),
            Progress::Sent(more) => {
                sent += more;
                abort(sent);
            }
            _ => {}
        });
    (result, replies)
}

fn target(board: &QemuBoard) -> Result<Target, String> {
    push::resolve("127.0.0.1", board.port).map_err(report)
}

/// The device's check-in (`GetNextFlash`, `GetBootState`), which confirms a trial; then
/// waits until the agent has seen the client leave.
fn check_in(board: &mut QemuBoard) -> Result<push::Returned, String> {
    let returned =
        push::await_return(&target(board)?, &timeouts(), &Default::default(), &mut |_| {}).map_err(report)?;
    idle(board)?;
    Ok(returned)
}

/// Waits until the agent of the running boot has seen every client leave (its UART says
/// so): until then it turns the next one away. Clients of an earlier boot do not count: a
/// device that committed an update resets as soon as its client closed, before it says the
/// client left.
fn idle(board: &mut QemuBoard) -> Result<(), String> {
    loop {
        let texts = board.texts();
        let boot = texts.iter().rposition(|line| line.starts_with("tcpflash-boot: rom")).unwrap_or(0);
        // `client left` may say why: `client left: CRC mismatch ...`.
        let count = |what: &str| texts[boot..].iter().filter(|line| line.starts_with(what)).count();
        if count("client left") >= count("client connected") {
            return Ok(());
        }
        board.wait_line("client left", texts.len(), PATIENCE).map_err(report)?;
    }
}

/// The same push through the agent's host build, on a copy of `flash`, for a firmware that
/// tcpflash-boot started (confirmed) from `running`: the flash it leaves, and whether it took
/// the push.
fn reference_push(fx: &Fixture, flash: &[u8], running: SlotId, images: [&[u8]; 2]) -> (Vec<u8>, bool) {
    let mut reference = RamNor::from_storage(flash.to_vec());
    let mut sector = [0u8; SECTOR];
    let booted = Running { slot: Some(running), status: BootStatus::Confirmed, build_id: None };
    let mut agent = Agent::booted(&mut sector, fx.layout(), booted);
    let events = client_push(&mut agent, &mut reference, images, true);
    (reference.bytes().to_vec(), succeeded(&events))
}

fn waited(board: &mut QemuBoard, expected: &str, from: usize) -> Result<usize, String> {
    board
        .wait_line(expected, from, PATIENCE)
        .map_err(|error| format!("{}\nUART: {:#?}", report(error), board.texts()))
}

fn booted(board: &mut QemuBoard, from: usize, before: &[u8]) -> Result<(usize, HostBoot), String> {
    check_boot(board, from, before, PATIENCE).map_err(|error| format!("{error}\nUART: {:#?}", board.texts()))
}

/// The running board, if any.
fn on(board: &mut Option<QemuBoard>) -> Result<&mut QemuBoard, String> {
    board.as_mut().ok_or_else(|| "the board is not running".into())
}

/// The state the push cases share: one flash file, the board on it.
struct PushRun<'f> {
    fx: &'f Fixture,
    flash: PathBuf,
    board: Option<QemuBoard>,
    /// Index of the UART line where the running firmware said it listens.
    listening: usize,
}

impl PushRun<'_> {
    /// Power-on: tcpflash-boot boots the factory install's user1.
    fn power_on(&mut self) -> Outcome {
        let fx = self.fx;
        let factory = read(&self.flash)?;
        self.board = Some(fx.start(&self.flash)?);
        let board = on(&mut self.board)?;
        let (end, host) = booted(board, 0, &factory)?;
        let expected = confirmed_line(fx.layout(), SlotId::User1, &fx.build_id());
        ensure!(host.lines == [expected.clone()], "the host's boot: {:?}", host.lines);
        let texts = board.texts();
        let first = "example-blinky 0.1.0 on qemu: booted, IROM linked at 0x40202010";
        ensure!(texts[..=end] == [expected.clone(), first.into()], "UART: {texts:#?}");
        self.listening = waited(board, "listening on port", end)?;
        let said = board.texts()[self.listening].clone();
        ensure!(
            said.contains("tcpflash-boot started user1 (Confirmed)"),
            "the agent read no hand-off: {said}"
        );
        Ok(format!("{expected}; {said}"))
    }

    /// A push that lands: the replies; the reset; tcpflash-boot's trial boot of the pushed build from exactly the flash the host
    /// build's push leaves (the image byte for byte), the hand-off in RAM; and the check-in,
    /// which names the other slot for the next push and confirms the trial.
    fn push_and_reboot(&mut self, slot: SlotId) -> Outcome {
        let fx = self.fx;
        let layout = fx.layout();
        let (reference, landed) = reference_push(fx, &read(&self.flash)?, slot.other(), fx.image_refs());
        ensure!(landed, "the host build refuses the push");
        let from = self.listening;
        let board = on(&mut self.board)?;
        let started = Instant::now();
        let (pushed, replies) = push_images(&target(board)?, fx.image_refs(), None, &mut |_| {});
        let pushed = pushed.map_err(|error| format!("{}\nUART: {:#?}", report(error), board.texts()))?;
        let push_time = started.elapsed();
        ensure!(pushed.slot == slot, "pushed to {}", pushed.slot);
        ensure!(replies == [slot.file_name(), "Ready", "Flashing", SUCCESS], "replies {replies:?}");

        let done = waited(board, "update done", from)?;
        let reset = waited(board, "resetting", done + 1)?;
        let lines = board.lines();
        // Informational (host time under load is no measure of the device's clock): the
        // agent resets 100 ms after its close, 2 s after the commit at the latest.
        let delay = lines[reset].at - lines[done].at;
        // The bootloader finds what the host build's push leaves, and boots the new slot on trial.
        let (end, host) = booted(board, reset, &reference)?;
        let handoff =
            host.result.as_ref().map_err(|halt| format!("the host's boot halts: {halt:?}"))?.handoff;
        ensure!(handoff.offset == layout.slot(slot).offset, "the bootloader starts {handoff:?}");
        ensure!(
            handoff.kind == HandOffKind::Trial && handoff.attempt == 1,
            "not a first trial boot: {handoff:?}"
        );
        let boot_line = host.lines.last().cloned().unwrap_or_default();
        ensure!(
            boot_line.ends_with(&format!(", build {}", fx.build_id())),
            "{boot_line}: not the pushed build"
        );
        let after = read(&self.flash)?;
        let image = &fx.images[slot.index()];
        let at = layout.slot(slot).offset as usize;
        ensure!(after[at..at + image.len()] == image[..], "{slot} is not at its offset byte for byte");
        same_flash(&after, &host.flash, "after the push and the trial boot, against the host's")?;
        let listening = waited(board, "listening on port", end)?;
        let said = board.texts()[listening].clone();
        ensure!(said.contains(&format!("tcpflash-boot started {slot} (Trial")), "{said}");

        let returned = check_in(board)?;
        ensure!(returned.slot == slot, "GetNextFlash says the device runs {}", returned.slot);
        ensure!(returned.runs(&pushed), "the check-in does not report the pushed build: {returned:?}");
        let status = returned.boot.map(|boot| boot.status);
        // A trial the check-in confirmed reads `confirmed` on the wire.
        ensure!(status == Some(BootStatus::Confirmed), "the check-in did not confirm the trial: {status:?}");
        self.listening = listening;
        Ok(format!(
            "{slot} ({} bytes) pushed in {} ms, reset {} ms after the commit; {boot_line}; check-in: {status:?}",
            image.len(),
            push_time.as_millis(),
            delay.as_millis()
        ))
    }

    fn push_user2(&mut self) -> Outcome {
        self.push_and_reboot(SlotId::User2)
    }

    fn push_user1(&mut self) -> Outcome {
        self.push_and_reboot(SlotId::User1)
    }

    /// A corrupted image: `Invalid`, the same flash as the host build's refusal, the running
    /// slot and the boot state untouched, no reset.
    fn corrupted(&mut self) -> Outcome {
        let fx = self.fx;
        let layout = fx.layout();
        let before = read(&self.flash)?;
        let mut broken = fx.images[1].clone();
        broken[0x400] ^= 0x10; // inside IROM: only the CRC notices
        let images = [fx.images[0].as_slice(), broken.as_slice()];
        let (reference, landed) = reference_push(fx, &before, SlotId::User1, images);
        ensure!(!landed, "the host build takes the corrupted image");
        let listening = self.listening;
        let board = on(&mut self.board)?;
        let (result, replies) = push_images(&target(board)?, images, None, &mut |_| {});
        ensure!(result.is_err(), "a corrupted image was taken");
        ensure!(replies == ["user2.bin", "Ready", INVALID], "replies {replies:?}");
        let returned = check_in(board)?;
        ensure!(returned.slot == SlotId::User1, "the device runs {}", returned.slot);
        // The check-in waited the agent's reboot delay first: a reset would have shown by now.
        let since = board.texts()[listening..].to_vec();
        ensure!(!since.iter().any(|line| line.starts_with(BOOT_PREFIX)), "a reset: {since:#?}");
        let after = read(&self.flash)?;
        same_flash(&after, &reference, "after the refused push, against the host build's")?;
        ensure!(after[..0x2000] == before[..0x2000], "sector 0 or the boot config changed");
        let state = layout.boot_state_offset() as usize;
        ensure!(after[state..state + TRIAL_LEN] == before[state..state + TRIAL_LEN], "a trial began");
        Ok(format!("replies {replies:?}; user1 still runs"))
    }

    /// QEMU killed at a random moment of a push (`TCPFLASH_KILL_SEED` repeats one): restarted
    /// on the same file, the old slot boots and the next push lands.
    fn killed(&mut self) -> Outcome {
        let fx = self.fx;
        let before = read(&self.flash)?;
        let seed =
            std::env::var("TCPFLASH_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
                    as usize
            });
        // Before the last 16 KB (the client's largest write): the kill lands mid-transfer,
        // never after the agent has everything.
        let cut = seed % (fx.images[1].len() - 16 * 1024);
        let target = target(on(&mut self.board)?)?;
        let mut board = self.board.take();
        let mut killed = Ok(());
        let (result, _) = push_images(&target, fx.image_refs(), None, &mut |sent| {
            if sent >= cut
                && let Some(board) = board.take()
            {
                killed = board.kill().map(|_| ()).map_err(report);
            }
        });
        killed?;
        ensure!(board.is_none(), "the push ended before {cut} bytes went out: {:?}", result.map_err(report));
        ensure!(result.is_err(), "the push finished without the board");
        let cut_flash = read(&self.flash)?;
        ensure!(cut_flash[..0x2000] == before[..0x2000], "a cut transfer changed the boot config");
        self.board = Some(fx.start(&self.flash)?);
        let board = on(&mut self.board)?;
        let (end, host) = booted(board, 0, &cut_flash)?;
        let expected = confirmed_line(fx.layout(), SlotId::User1, &fx.build_id());
        ensure!(host.lines == [expected], "the old slot does not boot: {:?}", host.lines);
        self.listening = waited(board, "listening on port", end)?;
        let next = self.push_and_reboot(SlotId::User2)?;
        Ok(format!("killed after {cut} image bytes (TCPFLASH_KILL_SEED={seed}); user1 booted; then {next}"))
    }
}

/// Power-on, user2 then user1 pushed, a corrupted image, QEMU killed mid-push: one board,
/// one flash file, in turn.
pub fn pushes(fx: &Fixture) -> Vec<Case> {
    let _guest = one_guest();
    let flash = match fx.factory().and_then(|factory| fx.flash_file("pushes", &factory)) {
        Ok(flash) => flash,
        Err(why) => return vec![case("push cases: the factory install", Err(why))],
    };
    let mut run = PushRun { fx, flash, board: None, listening: 0 };
    let cases = sequence(
        &mut run,
        vec![
            ("power-on boots the factory install's user1", &PushRun::power_on),
            ("push user2: a trial boot of it, confirmed by the check-in", &PushRun::push_user2),
            ("push user1: the same back", &PushRun::push_user1),
            ("a corrupted image: Invalid, user1 keeps running", &PushRun::corrupted),
            ("QEMU killed mid-push: the old slot boots, the next push lands", &PushRun::killed),
        ],
    );
    if let Some(board) = run.board.take() {
        let _ = board.stop();
    }
    cases
}

/// A flash as the scenarios start it: the factory install plus user2 in its slot.
fn both_slots(fx: &Fixture) -> Result<Vec<u8>, String> {
    let mut flash = fx.factory()?;
    let user2 = fx.layout().slot(SlotId::User2).offset as usize;
    flash[user2..user2 + fx.images[1].len()].copy_from_slice(&fx.images[1]);
    Ok(flash)
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
    ota_agent::boot::trial::begin_trial(&mut bytes, layout, &record).expect("a trial record fits its sector");
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
    let info = ota_agent::image::inspect(&mut flash, 0, image.len() as u32, &mut [0; 4096])
        .expect("example-blinky's image inspects");
    let mut irom = image[16..16 + info.irom_len as usize].to_vec();
    irom.resize(irom.len() + len.saturating_sub(image.len()), 0);
    let data: Vec<(u32, &[u8])> =
        info.ram_segments_at(0).map(|(at, addr, n)| (addr, &image[at as usize..(at + n) as usize])).collect();
    let segments: Vec<Segment<'_>> = data.iter().map(|&(addr, data)| Segment { addr, data }).collect();
    let mut out = Vec::new();
    write_v2(info.params, info.entry, &irom, &segments, &mut |bytes| out.extend_from_slice(bytes))
        .expect("the grown image fits its format");
    out
}

/// What the host decides for `flash`: `decide` with the full validator as the slot check.
fn host_decision(flash: &[u8], layout: &FlashLayout) -> Option<HandOff> {
    let config: &[u8; CONFIG_STRUCT_LEN] =
        flash[BOOT_CONFIG_OFFSET as usize..][..CONFIG_STRUCT_LEN].try_into().expect("sized");
    let state = layout.boot_state_offset() as usize;
    let trial: &[u8; TRIAL_LEN] = flash[state..state + TRIAL_LEN].try_into().expect("sized");
    let chip = ota_agent::boot::rboot_flash_size(flash[3] >> 4);
    let mut valid = |_: u8, offset: u32| {
        let mut reader = RamNor::from_storage(flash[..chip as usize].to_vec());
        let mut info = ImageInfo::default();
        verify_bootable(&mut reader, offset, rom_capacity(chip, offset), &mut [0; 512], &mut info).is_ok()
    };
    decide(config, trial, chip, &mut valid).boot.map(|boot| boot.handoff())
}

type Edit<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;

/// The bootloader's lx106 build on 15 flashes: the rom it boots and its hand-off equal the
/// host's decision, the two halting cases stay halted in the bootloader, the flash after the
/// boot equals the host's.
pub fn boot_scenarios(fx: &Fixture) -> Vec<Case> {
    let _guest = one_guest();
    let layout = fx.layout();
    let (user1, user2) = (layout.slot(SlotId::User1).offset, layout.slot(SlotId::User2).offset);
    let handoff = |rom, kind, attempt, offset| Some(HandOff { rom, kind, attempt, offset });
    let config = |current| BootConfig::for_layout(layout, current);
    let broken = |flash: &mut Vec<u8>, offset: u32| flash[offset as usize + 0x300] ^= 0x01;
    let scenarios: Vec<(&str, Edit<'_>, Option<HandOff>)> = vec![
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
                let image = grown(&fx.images[0], 400 * 1024);
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
    scenarios
        .into_iter()
        .map(|(name, edit, expected)| case(format!("boot: {name}"), boot_scenario(fx, &edit, expected)))
        .collect()
}

fn boot_scenario(fx: &Fixture, edit: &Edit<'_>, expected: Option<HandOff>) -> Outcome {
    let mut flash = both_slots(fx)?;
    edit(&mut flash);
    let decided = host_decision(&flash, fx.layout());
    ensure!(decided == expected, "the host decides {decided:?}, the scenario expects {expected:?}");
    let path = fx.flash_file("scenario", &flash)?;
    let started = Instant::now();
    let mut board = fx.start(&path)?;
    let (end, host) = booted(&mut board, 0, &flash)?;
    let lines = board.lines();
    // QEMU's start to the bootloader's last line (its checks), and on to the firmware's
    // first (the copy and the jump).
    let checked = lines[host.lines.len() - 1].at - started;
    let copied = lines[end].at - lines[host.lines.len() - 1].at;
    let launched = host.result.as_ref().ok().map(|launch| launch.handoff);
    ensure!(launched == decided, "the host's loader starts {launched:?}, the decision is {decided:?}");
    let texts = board.texts();
    match decided {
        Some(_) => ensure!(texts[end].contains(" booted, IROM linked at"), "UART: {texts:#?}"),
        None => ensure!(
            host.lines.last().map(String::as_str) == Some("tcpflash-boot: no bootable rom, halted"),
            "{:?}",
            host.lines
        ),
    }
    board.stop().map_err(report)?;
    same_flash(&read(&path)?, &host.flash, "after the boot")?;
    Ok(format!(
        "{:?} (QEMU start to the boot line {} ms, then to the firmware {} ms)",
        host.lines,
        checked.as_millis(),
        copied.as_millis()
    ))
}

/// The `panic-at-boot` firmware pushed with the real CLI (`--features panic-at-boot`): the
/// agent starts it on trial; it panics and resets at each of its 3 boots (tcpflash-boot's
/// lines for each equal the host's flow over the flash), tcpflash-boot goes back to user1,
/// and `cargo tcpflash` exits with 6, naming both builds; `sim status` reads the revert.
pub fn panic_at_boot(fx: &Fixture) -> Case {
    let _guest = one_guest();
    case("panic-at-boot pushed: 3 trial boots, reverted to user1, exit status 6", panic_at_boot_outcome(fx))
}

fn panic_at_boot_outcome(fx: &Fixture) -> Outcome {
    let factory_id = fx.build_id();
    let (crashing_id, crashing) = fx.variant(&["panic-at-boot"], None)?;
    ensure!(crashing_id != factory_id, "the panic-at-boot build has the factory's id");
    let factory = fx.factory()?;
    let path = fx.flash_file("panic-at-boot", &factory)?;
    let mut board = fx.start(&path)?;
    let (end, _) = booted(&mut board, 0, &factory)?;
    let listening = waited(&mut board, "listening on port", end)?;

    let variants = fx.variants_dir.to_str().ok_or("the target dir is not UTF-8")?;
    let output = fx.cli_push(board.port, &["--features", "panic-at-boot", "--target-dir", variants])?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    ensure!(output.status.code() == Some(6), "cargo tcpflash exited with {}:\n{stderr}", output.status);
    let said = format!(
        "the new firmware (build {crashing_id}) did not confirm and the device went back: it runs user1 \
         (build {factory_id}) again (the image went to user2)"
    );
    ensure!(stderr.contains(&said), "cargo tcpflash said:\n{stderr}");

    // The bootloader's lines since the push: the host's flow, boot after boot, from the
    // flash the push left (each trial boot programs an attempt bit; the firmware panics
    // before it writes anything).
    let texts = board.texts();
    let reset =
        texts[listening..].iter().position(|line| line == "resetting").ok_or("no reset after the push")?;
    let printed: Vec<&String> =
        texts[listening + reset..].iter().filter(|line| line.starts_with(BOOT_PREFIX)).collect();
    // `panic: panicked at src/main.rs:..`, the message on the next line.
    let panics = texts.iter().filter(|line| line.starts_with("panic: panicked at")).count();
    ensure!(panics == ATTEMPTS, "{panics} panics, not {ATTEMPTS}: {texts:#?}");
    let (mut flash, landed) = reference_push(fx, &factory, SlotId::User1, [&fx.images[0], &crashing[1]]);
    ensure!(landed, "the host build refuses the panic-at-boot image");
    let mut expected = Vec::new();
    for _ in 0..=ATTEMPTS {
        let boot = host_boot(&flash);
        expected.extend(boot.lines);
        flash = boot.flash;
    }
    same_flash(&read(&path)?, &flash, "after the push and the boots, against the host's")?;
    ensure!(
        printed == expected.iter().collect::<Vec<_>>(),
        "the bootloader printed {printed:#?}, the host's flow {expected:#?}"
    );
    let last = expected.last().cloned().unwrap_or_default();
    ensure!(last.contains("trial not confirmed, reverted"), "the last boot: {last}");
    let status = cargo_tcpflash::sim::status_json(&path, None).map_err(report)?;
    ensure!(
        status["booted_slot"] == "user1" && status["boot_status"]["state"] == "reverted",
        "sim status: {status}"
    );
    board.stop().map_err(report)?;
    Ok(format!("{} panics; {last}; exit 6", panics))
}

/// A firmware built with a key (`TCPFLASH_KEY_FILE`): the CLI's `--key-file` push lands
/// (authenticated, confirmed), and a push with another key is refused with `ERR:
/// Authentication failed`, the flash untouched.
pub fn keyed(fx: &Fixture) -> Vec<Case> {
    let _guest = one_guest();
    let mut state = Keyed { fx, board: None, flash: PathBuf::new() };
    let cases = sequence(
        &mut state,
        vec![
            ("keyed firmware: a --key-file push lands", &Keyed::right_key),
            ("keyed firmware: a wrong key is refused", &Keyed::wrong_key),
        ],
    );
    if let Some(board) = state.board.take() {
        let _ = board.stop();
    }
    cases
}

struct Keyed<'f> {
    fx: &'f Fixture,
    board: Option<QemuBoard>,
    flash: PathBuf,
}

impl Keyed<'_> {
    /// The key the variant is built with: a fixed file, rewritten only when it differs, so the
    /// build is cached from one run to the next.
    fn key_file(&self) -> Result<PathBuf, String> {
        let path = self.fx.variants_dir.join("qemu-board-test.key");
        let key = "5e".repeat(32);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(key.as_str()) {
            std::fs::create_dir_all(&self.fx.variants_dir).map_err(|error| error.to_string())?;
            std::fs::write(&path, &key)
                .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
        }
        Ok(path)
    }

    fn right_key(&mut self) -> Outcome {
        let fx = self.fx;
        let key = self.key_file()?;
        let (keyed_id, [user1, _]) = fx.variant(&[], Some(&key))?;
        ensure!(keyed_id != fx.build_id(), "the keyed build has the unkeyed build's id");
        let factory = super::factory_flash(fx.layout(), &user1).map_err(report)?;
        self.flash = fx.flash_file("keyed", &factory)?;
        self.board = Some(fx.start(&self.flash)?);
        let board = self.board.as_mut().ok_or("no board")?;
        let (end, _) = booted(board, 0, &factory)?;
        waited(board, "listening on port", end)?;
        let variants = fx.variants_dir.to_str().ok_or("the target dir is not UTF-8")?;
        let key_arg = key.to_str().ok_or("the key path is not UTF-8")?;
        let output = fx.cli_push(board.port, &["--key-file", key_arg, "--target-dir", variants])?;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        );
        ensure!(output.status.success(), "cargo tcpflash exited with {}:\n{stderr}", output.status);
        ensure!(stderr.contains("Authenticated"), "no proof of the key was taken:\n{stderr}");
        ensure!(stdout.contains("the device now runs user2, confirmed"), "{stdout}");
        idle(board)?;
        Ok(stdout.trim().to_string())
    }

    fn wrong_key(&mut self) -> Outcome {
        let fx = self.fx;
        let before = read(&self.flash)?;
        let board = self.board.as_mut().ok_or("no board")?;
        let wrong = auth::parse_key("a7".repeat(32).as_bytes()).map_err(|error| format!("{error:?}"))?;
        let (result, replies) = push_images(&target(board)?, fx.image_refs(), Some(&wrong), &mut |_| {});
        let error = match result {
            Ok(pushed) => return Err(format!("the wrong key's push landed in {}", pushed.slot)),
            Err(error) => error.to_string(),
        };
        ensure!(
            error.contains("ERR: Authentication failed"),
            "the push failed otherwise: {error} ({replies:?})"
        );
        idle(board)?;
        same_flash(&read(&self.flash)?, &before, "after the refused push")?;
        Ok(error)
    }
}

/// `cargo tcpflash sim --board qemu` (the real binary) on a new flash file: the factory
/// install, the UART lines with their prefix, a push that lands and boots through
/// tcpflash-boot, `sim status` reading the file, Ctrl-C (SIGINT) stopping QEMU; then a sim
/// killed with SIGKILL, whose QEMU must not outlive it.
pub fn sim_board(fx: &Fixture) -> Case {
    let _guest = one_guest();
    case(
        "sim --board qemu: a push lands, sim status reads the file, Ctrl-C stops QEMU, SIGKILL takes it along",
        sim_board_outcome(fx),
    )
}

fn sim_board_outcome(fx: &Fixture) -> Outcome {
    let flash = fx.case_dir("sim")?.join("board.flash");
    let mut sim = SimProcess::start(&fx.tcpflash, &flash, &fx.manifest, None, PATIENCE)?;
    let result = sim_board_push(fx, &mut sim, &flash);
    // Ctrl-C as a terminal sends it: QEMU stops, the sim says so and exits 0.
    let stopped = sim.interrupt(PATIENCE);
    let seen = result?;
    stopped?;
    ensure!(!qemu_runs_on(&flash), "QEMU still runs on {}", flash.display());
    // Killed without a chance to stop QEMU: QEMU goes with it (its parent-death signal).
    let mut sim = SimProcess::start(&fx.tcpflash, &flash, &fx.manifest, None, PATIENCE)?;
    sim.wait("[uart] tcpflash-boot started user2", PATIENCE)?;
    ensure!(qemu_runs_on(&flash), "no QEMU runs on {}", flash.display());
    sim.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while qemu_runs_on(&flash) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(!qemu_runs_on(&flash), "QEMU outlived a sim killed with SIGKILL");
    Ok(format!("{seen}; QEMU gone with a killed sim"))
}

fn sim_board_push(fx: &Fixture, sim: &mut SimProcess, flash: &Path) -> Outcome {
    let confirmed = confirmed_line(fx.layout(), SlotId::User1, &fx.build_id());
    sim.wait(&format!("[uart] {confirmed}"), PATIENCE)?;
    sim.wait("[uart] tcpflash-boot started user1 (Confirmed); listening on port", PATIENCE)?;
    let output = fx.cli_push(sim.port, &[])?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    ensure!(
        output.status.success(),
        "cargo tcpflash exited with {}:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(stdout.contains("the device now runs user2, confirmed"), "{stdout}");
    let user2 = fx.layout().slot(SlotId::User2);
    let trial =
        format!("[uart] tcpflash-boot: rom 1 @ {:#010x}: trial 1/3, build {}", user2.offset, fx.build_id());
    sim.wait(&trial, PATIENCE)?;
    let status = fx.cli(&["sim", "status", "--flash", flash.to_str().ok_or("not UTF-8")?])?;
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    ensure!(status.status.success(), "sim status exited with {}: {text}", status.status);
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|error| format!("{error}: {text}"))?;
    ensure!(json["layout"] == fx.layout().name, "{json}");
    ensure!(json["booted_slot"] == "user2" && json["boot_status"]["state"] == "confirmed", "{json}");
    ensure!(json["slots"]["user2"]["build_id"] == fx.build_id(), "{json}");
    let bytes = read(flash)?;
    let at = user2.offset as usize;
    ensure!(bytes[at..at + fx.images[1].len()] == fx.images[1][..], "user2 is not in the file byte for byte");
    Ok(format!("pushed user2 through 127.0.0.1:{}; sim status: booted_slot user2, confirmed", sim.port))
}

/// Whether a QEMU process runs with `flash` as its flash file.
fn qemu_runs_on(flash: &Path) -> bool {
    let needle = format!("file={}", flash.display());
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    entries.filter_map(Result::ok).any(|entry| {
        std::fs::read(entry.path().join("cmdline")).is_ok_and(|cmdline| {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(cargo_tcpflash::qemu_board::QEMU) && cmdline.contains(&needle)
        })
    })
}
