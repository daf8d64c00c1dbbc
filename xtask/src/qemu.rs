//! `cargo xtask qemu`: the agent's device code (session, sector writer, image validator) run as
//! real lx106 machine code.
//!
//! The program `xtask/qemu-agent` is built with cargo-tcpflash's own pipeline and run under
//! QEMU's `sim` machine, one push script per case. The host build of the same runner
//! (`scripted-push`) runs each script over `RamNor`. A case passes when both transcripts are
//! byte-identical and show what the case expects, worked out here without the session: the
//! reply lines and the whole flash afterwards.
//!
//! QEMU's `sim` machine maps RAM wherever the lx106 core has local memories, and those cover
//! the ESP8266 addresses our linker scripts use: DRAM 0x3FFE8000 (inside dataram0,
//! 0x3FFC0000..0x40000000), IRAM 0x40100000 (instram1) and IROM 0x40200000 (instrom0, 1 MB).
//! `-device loader` loads the ELF and starts the CPU at its entry.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cargo_tcpflash::build::BuildOptions;
use cargo_tcpflash::build::{self, BuildError};
use ota_agent::boot::BootConfig;
use ota_agent::crc::Crc32;
use ota_agent::descriptor::Descriptor;
use ota_agent::flash::RamNor;
use ota_agent::image::{self, FlashParams, ImageError, Segment};
use ota_agent::layout::{DRAM, IRAM, SECTOR_SIZE, Slot, SlotId};
use ota_agent::protocol::{LineBuf, Reply, ReplyLine, Request};
use ota_agent::session::{Failure, Phase};
use ota_agent::writer::SECTOR;
use scripted_push::script::{self, Event, SEGMENT, ScriptError, record};
use scripted_push::{FLASH_SIZE, LAYOUT, exit_code};

use crate::footprint::Sizes;

pub const QEMU: &str = "qemu-system-xtensa";
pub const QEMU_INSTALL: &str = "sudo apt-get install qemu-system-misc";
/// A case takes well under a second; this only stops a hung program.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(30);

/// The QEMU program's manifest in this repository.
pub fn program_manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("qemu-agent/Cargo.toml")
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum QemuError {
    #[error("`{QEMU}` was not found on PATH")]
    #[diagnostic(code(xtask::qemu::missing), help("install it with: {QEMU_INSTALL}"))]
    QemuMissing,

    #[error(transparent)]
    #[diagnostic(transparent)]
    Build(#[from] BuildError),

    #[error("cannot read the program's sections: {0}")]
    #[diagnostic(code(xtask::qemu::elf))]
    Elf(String),

    #[error("cannot {what} {path}")]
    #[diagnostic(code(xtask::qemu::io))]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{failures} of {cases} QEMU cases failed")]
    #[diagnostic(
        code(xtask::qemu::failed),
        help("each failing case is listed above; its files are in {}", dir.display())
    )]
    CasesFailed { failures: usize, cases: usize, dir: PathBuf },
}

/// The built lx106 program.
#[derive(Debug, Clone)]
pub struct Program {
    pub elf: PathBuf,
    /// Its v2 image, as it would be pushed to a board.
    pub image_len: u32,
    pub sizes: Sizes,
    /// Where the cases' scripts and transcripts go.
    pub cases_dir: PathBuf,
}

/// Builds the program with cargo-tcpflash's pipeline; QEMU runs the user1 ELF.
pub fn build_program(manifest: &Path) -> Result<Program, QemuError> {
    let args = BuildOptions { manifest_path: Some(manifest.to_path_buf()), ..BuildOptions::default() };
    let firmware = build::build(&args)?;
    let slot = firmware.slot(SlotId::User1);
    let sizes = Sizes::of_elf(&slot.elf).map_err(QemuError::Elf)?;
    let cases_dir = firmware.package.target_dir.join("qemu-cases");
    Ok(Program { elf: slot.elf.clone(), image_len: slot.image_len, sizes, cases_dir })
}

/// QEMU on `PATH`.
pub fn find_qemu() -> Result<PathBuf, QemuError> {
    find_qemu_in(&std::env::var_os("PATH").unwrap_or_default())
}

/// QEMU in one of the directories of `path` (a `PATH`-style list).
pub fn find_qemu_in(path: &OsStr) -> Result<PathBuf, QemuError> {
    std::env::split_paths(path)
        .map(|dir| dir.join(QEMU))
        .find(|candidate| candidate.is_file())
        .ok_or(QemuError::QemuMissing)
}

/// What the device did, read from a transcript.
#[derive(Clone, PartialEq, Eq)]
pub struct Transcript {
    pub replies: Vec<Vec<u8>>,
    pub phase: Phase,
    pub reboot_pending: bool,
    /// The slot the boot config selects after the push.
    pub running: Option<SlotId>,
    pub flash: Vec<u8>,
}

impl fmt::Debug for Transcript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transcript")
            .field("replies", &self.reply_texts())
            .field("phase", &self.phase)
            .field("reboot_pending", &self.reboot_pending)
            .field("running", &self.running)
            .field("flash", &format_args!("{} bytes", self.flash.len()))
            .finish()
    }
}

impl Transcript {
    pub fn parse(bytes: &[u8]) -> Result<Transcript, String> {
        let (mut replies, mut phase, mut reboot, mut running, mut flash) =
            (Vec::new(), None, None, None, None);
        let mut ended = false;
        for item in script::records(bytes).map_err(|e| e.to_string())? {
            let (tag, body) = item.map_err(|e| e.to_string())?;
            if ended {
                return Err("bytes after the end record".into());
            }
            let byte = || match body {
                [byte] => Ok(*byte),
                _ => Err(format!("record {:?} holds {} bytes, not 1", tag as char, body.len())),
            };
            match tag {
                record::REPLY => replies.push(body.to_vec()),
                record::PHASE => phase = Some(script::phase_from_code(byte()?).ok_or("unknown phase code")?),
                record::REBOOT_PENDING => reboot = Some(byte()? != 0),
                record::RUNNING => {
                    running = Some(script::slot_from_code(byte()?).ok_or("unknown slot code")?)
                }
                record::FLASH => flash = Some(body.to_vec()),
                record::END => ended = true,
                other => return Err(format!("unknown record tag {other:#04x}")),
            }
        }
        let missing = |what: &str| format!("the transcript has no {what} record (the run did not finish)");
        if !ended {
            return Err(missing("end"));
        }
        Ok(Transcript {
            replies,
            phase: phase.ok_or_else(|| missing("phase"))?,
            reboot_pending: reboot.ok_or_else(|| missing("reboot"))?,
            running: running.ok_or_else(|| missing("running slot"))?,
            flash: flash.ok_or_else(|| missing("flash"))?,
        })
    }

    /// The reply lines as readable text (CR LF escaped).
    pub fn reply_texts(&self) -> Vec<String> {
        self.replies.iter().map(|line| line.escape_ascii().to_string()).collect()
    }
}

/// What a case must end with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub replies: Vec<Vec<u8>>,
    pub reboot_pending: bool,
    pub running: SlotId,
    pub flash: Vec<u8>,
}

/// One scripted push and what it must lead to.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: &'static str,
    pub script: Vec<u8>,
    pub expected: Expected,
}

impl Case {
    /// Differences between a transcript and this case's expectations, one line each.
    pub fn check(&self, transcript: &Transcript) -> Vec<String> {
        let expected = &self.expected;
        let mut problems = Vec::new();
        if transcript.replies != expected.replies {
            let texts = |lines: &[Vec<u8>]| {
                lines.iter().map(|l| l.escape_ascii().to_string()).collect::<Vec<_>>().join(" | ")
            };
            problems.push(format!(
                "replies {} instead of {}",
                texts(&transcript.replies),
                texts(&expected.replies)
            ));
        }
        // Every case ends with the session done: closing after a committed update, dropping
        // the connection after an error.
        let phase = if expected.reboot_pending { Phase::Closing } else { Phase::Dropping };
        if transcript.phase != phase {
            problems.push(format!("phase {:?} instead of {phase:?}", transcript.phase));
        }
        if transcript.reboot_pending != expected.reboot_pending {
            problems.push(format!(
                "reboot pending: {} instead of {}",
                transcript.reboot_pending, expected.reboot_pending
            ));
        }
        if transcript.running != Some(expected.running) {
            problems.push(format!(
                "boot config selects {:?} instead of {}",
                transcript.running, expected.running
            ));
        }
        if let Some(at) = first_difference(&transcript.flash, &expected.flash) {
            problems.push(format!(
                "flash differs from the expected contents first at {at:#x} ({} vs {} bytes)",
                transcript.flash.len(),
                expected.flash.len()
            ));
        }
        problems
    }
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y).or((a.len() != b.len()).then(|| a.len().min(b.len())))
}

/// Runs a script on the host build of the runner, over `RamNor`: the reference transcript.
pub fn run_on_host(script: &[u8]) -> Result<Vec<u8>, ScriptError> {
    let mut flash = RamNor::new(FLASH_SIZE as u32);
    let mut sector = [0u8; SECTOR];
    let mut segment = [0u8; SEGMENT];
    let mut transcript = Vec::new();
    let mut source = script;
    script::run(&mut source, &mut flash, &mut sector, &mut segment, &mut |bytes| {
        transcript.extend_from_slice(bytes)
    })?;
    Ok(transcript)
}

/// Why a QEMU run gave no transcript.
#[derive(Debug)]
pub enum RunError {
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    Timeout(Duration),
    /// QEMU ended with a code other than 0 (the program's exit code, or QEMU's own failure).
    Exit {
        code: Option<i32>,
        stderr: String,
    },
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Io { what, path, source } => write!(f, "cannot {what} {}: {source}", path.display()),
            RunError::Timeout(limit) => write!(f, "QEMU did not finish within {} s", limit.as_secs()),
            RunError::Exit { code: Some(code), stderr } => {
                let meaning = u32::try_from(*code).map_or("?", exit_code::meaning);
                write!(f, "QEMU exited with {code} ({meaning}): {}", stderr.trim())
            }
            RunError::Exit { code: None, stderr } => {
                write!(f, "QEMU was killed by a signal: {}", stderr.trim())
            }
        }
    }
}

/// A transcript from QEMU and how long the run took.
#[derive(Debug, Clone)]
pub struct QemuRun {
    pub transcript: Vec<u8>,
    pub elapsed: Duration,
}

/// Runs `script` under QEMU in `dir` (created; `script.bin`, `transcript.bin` and `stderr.txt`
/// are left there for a look after a failure).
pub fn run_on_qemu(
    qemu: &Path,
    elf: &Path,
    dir: &Path,
    script: &[u8],
    timeout: Duration,
) -> Result<QemuRun, RunError> {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RunError {
        let path = path.to_path_buf();
        move |source| RunError::Io { what, path, source }
    }
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let script_path = dir.join("script.bin");
    std::fs::write(&script_path, script).map_err(io("write", &script_path))?;
    let transcript_path = dir.join("transcript.bin");
    let stderr_path = dir.join("stderr.txt");
    let stdout = std::fs::File::create(&transcript_path).map_err(io("create", &transcript_path))?;
    let stderr = std::fs::File::create(&stderr_path).map_err(io("create", &stderr_path))?;

    let started = Instant::now();
    let mut child = Command::new(qemu)
        .args(["-M", "sim", "-cpu", "lx106", "-semihosting", "-nographic", "-monitor", "none"])
        .arg("-device")
        .arg(format!("loader,file={},cpu-num=0", elf.display()))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(io("start", qemu))?;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(io("wait for", qemu))? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(RunError::Timeout(timeout));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    if !status.success() {
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        return Err(RunError::Exit { code: status.code(), stderr });
    }
    let transcript = std::fs::read(&transcript_path).map_err(io("read", &transcript_path))?;
    Ok(QemuRun { transcript, elapsed })
}

/// One case's result: the QEMU transcript and everything wrong with it.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: &'static str,
    pub elapsed: Option<Duration>,
    pub transcript: Option<Transcript>,
    pub problems: Vec<String>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Runs a case on the host and under QEMU and compares: the transcripts must be equal byte
/// for byte, and both must meet the case's expectations.
pub fn run_case(qemu: &Path, program: &Program, case: &Case, timeout: Duration) -> CaseResult {
    let mut result = CaseResult { name: case.name, elapsed: None, transcript: None, problems: Vec::new() };
    let host = match run_on_host(&case.script) {
        Ok(bytes) => bytes,
        Err(error) => {
            result.problems.push(format!("host run: {error}"));
            return result;
        }
    };
    match Transcript::parse(&host) {
        Ok(transcript) => {
            result.problems.extend(case.check(&transcript).into_iter().map(|p| format!("host: {p}")))
        }
        Err(error) => result.problems.push(format!("host transcript: {error}")),
    }
    let run = match run_on_qemu(qemu, &program.elf, &program.cases_dir.join(case.name), &case.script, timeout)
    {
        Ok(run) => run,
        Err(error) => {
            result.problems.push(format!("qemu: {error}"));
            return result;
        }
    };
    result.elapsed = Some(run.elapsed);
    match Transcript::parse(&run.transcript) {
        Ok(transcript) => {
            result.problems.extend(case.check(&transcript).into_iter().map(|p| format!("qemu: {p}")));
            result.transcript = Some(transcript);
        }
        Err(error) => result.problems.push(format!("qemu transcript: {error}")),
    }
    if let Some(at) = first_difference(&run.transcript, &host) {
        result.problems.push(format!(
            "the QEMU transcript differs from the host's at byte {at} ({} vs {} bytes)",
            run.transcript.len(),
            host.len()
        ));
    }
    result
}

/// The whole QEMU proof: program figures and every case's result.
#[derive(Debug, Clone)]
pub struct Report {
    pub program: Program,
    pub cases: Vec<CaseResult>,
}

impl Report {
    pub fn failures(&self) -> usize {
        self.cases.iter().filter(|case| !case.passed()).count()
    }

    pub fn summary(&self) -> String {
        format!("qemu: cases={} failures={}", self.cases.len(), self.failures())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sizes = &self.program.sizes;
        writeln!(
            f,
            "program {}: image {} bytes; IROM {} B, IRAM {} B, DRAM (.data+.rodata+.bss) {} B",
            self.program.elf.display(),
            self.program.image_len,
            sizes.irom,
            sizes.iram,
            sizes.ram
        )?;
        for case in &self.cases {
            let time = case.elapsed.map_or("-".into(), |t| format!("{} ms", t.as_millis()));
            let verdict = if case.passed() { "ok" } else { "FAILED" };
            let replies = case.transcript.as_ref().map(|t| t.reply_texts().join(" | ")).unwrap_or_default();
            writeln!(f, "{:<16} {verdict:<6} {time:>7}  {replies}", case.name)?;
            for problem in &case.problems {
                writeln!(f, "    {problem}")?;
            }
        }
        writeln!(f, "{}", self.summary())
    }
}

/// Builds the program and runs the standard cases.
pub fn run_all(manifest: &Path, timeout: Duration) -> Result<Report, QemuError> {
    let qemu = find_qemu()?;
    let program = build_program(manifest)?;
    let cases = standard_cases().iter().map(|case| run_case(&qemu, &program, case, timeout)).collect();
    Ok(Report { program, cases })
}

/// Image bytes sent before the client goes away in the truncated case: past the first
/// sector, so the writer has flashed one sector and holds part of the next.
const TRUNCATE_AT: usize = SECTOR + 904;

/// The pushes: a good image, a corrupted one (one IROM byte flipped: only the CRC catches
/// it), one cut short by the client, and one linked for the other slot. The device runs
/// user1; every push goes to user2, which holds the remains of an older image.
pub fn standard_cases() -> Vec<Case> {
    let [user1, user2] = LAYOUT.slots;
    let running = test_image(&user1, "1.0.0", 1);
    let new = test_image(&user2, "2.0.0", 2);
    let mut corrupted = new.clone();
    corrupted[image::HEADER_LEN as usize * 2 + 2000] ^= 0x10;
    let linked_for_user1 = test_image(&user1, "2.0.0", 3);

    let mut before = vec![0xFF; FLASH_SIZE];
    put(
        &mut before,
        ota_agent::layout::BOOT_CONFIG_OFFSET,
        &BootConfig::for_layout(&LAYOUT, SlotId::User1).to_bytes(),
    );
    put(&mut before, user1.offset, &running);
    put(&mut before, user2.offset, &pattern(user2.capacity as usize, 0xA5));

    let replies_until_ready = [Reply::NextSlot(SlotId::User2).encode(), Reply::Ready.encode()];
    let invalid = |failure: Failure| {
        let mut lines = replies_until_ready.to_vec();
        lines.extend([Reply::Invalid.encode(), ReplyLine::error(&failure)]);
        lines
    };
    let lines = |lines: Vec<ReplyLine>| lines.iter().map(|line| line.as_bytes().to_vec()).collect();

    let mut switched = with_slot_written(&before, &user2, &new);
    put(
        &mut switched,
        ota_agent::layout::BOOT_CONFIG_OFFSET,
        &BootConfig::for_layout(&LAYOUT, SlotId::User2).to_bytes(),
    );
    let good = Case {
        name: "good-image",
        script: push_script(&before, &new, new.len()),
        expected: Expected {
            replies: lines(
                [replies_until_ready.as_slice(), &[Reply::Flashing.encode(), Reply::Success.encode()]]
                    .concat(),
            ),
            reboot_pending: true,
            running: SlotId::User2,
            flash: switched,
        },
    };

    let crc_failure = Failure::Image(ImageError::CrcMismatch {
        stored: u32::from_le_bytes(corrupted[corrupted.len() - 4..].try_into().unwrap()),
        computed: image::crc_trailer(crc32(&corrupted[..corrupted.len() - 4])),
    });
    let corrupted_case = Case {
        name: "corrupted-image",
        script: push_script(&before, &corrupted, corrupted.len()),
        expected: Expected {
            replies: lines(invalid(crc_failure)),
            reboot_pending: false,
            running: SlotId::User1,
            flash: with_slot_written(&before, &user2, &corrupted),
        },
    };

    let mut first_sector_only = before.clone();
    put(&mut first_sector_only, user2.offset, &new[..SECTOR]);
    let truncated = Case {
        name: "truncated-image",
        script: push_script(&before, &new[..TRUNCATE_AT], new.len()),
        expected: Expected {
            replies: lines(invalid(Failure::Truncated {
                received: TRUNCATE_AT as u32,
                len: new.len() as u32,
            })),
            reboot_pending: false,
            running: SlotId::User1,
            flash: first_sector_only,
        },
    };

    let wrong_slot = Case {
        name: "wrong-slot-image",
        script: push_script(&before, &linked_for_user1, linked_for_user1.len()),
        expected: Expected {
            replies: lines(invalid(Failure::Image(ImageError::WrongSlot {
                linked: user1.irom_link_addr(),
                expected: user2.irom_link_addr(),
            }))),
            reboot_pending: false,
            running: SlotId::User1,
            flash: with_slot_written(&before, &user2, &linked_for_user1),
        },
    };
    vec![good, corrupted_case, truncated, wrong_slot]
}

/// The seed client's conversation: `OTA` and `GetNextFlash` in one write, the length, then
/// `image` (all of it or the start of it) in one send, and the client closes.
fn push_script(flash: &[u8], image: &[u8], announced_len: usize) -> Vec<u8> {
    let mut hello = LineBuf::<64>::new();
    Request::Ota.encode(&mut hello);
    Request::GetNextFlash.encode(&mut hello);
    let mut length = LineBuf::<64>::new();
    Request::FirmwareLength(announced_len as u32).encode(&mut length);
    let events = [
        Event::Send(hello.as_bytes()),
        Event::Send(length.as_bytes()),
        Event::Send(image),
        Event::CloseInput,
    ];
    let mut script = Vec::new();
    script::encode_script(flash, &events, &mut |bytes| script.extend_from_slice(bytes));
    script
}

/// The flash after the sector writer put `image` into `slot`: whole sectors erased, the image,
/// then 0xFF to the end of its last sector.
fn with_slot_written(flash: &[u8], slot: &Slot, image: &[u8]) -> Vec<u8> {
    let mut after = flash.to_vec();
    let sectors = image.len().div_ceil(SECTOR_SIZE as usize) * SECTOR_SIZE as usize;
    let start = slot.offset as usize;
    after[start..start + sectors].fill(0xFF);
    put(&mut after, slot.offset, image);
    after
}

fn put(flash: &mut [u8], offset: u32, bytes: &[u8]) {
    flash[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
}

/// A v2 image for `slot` of about 6 KB (two sectors): its descriptor, IROM, an IRAM and a
/// DRAM segment, contents from `seed`.
pub fn test_image(slot: &Slot, version: &str, seed: u8) -> Vec<u8> {
    let descriptor = Descriptor::new(slot.irom_link_addr(), [seed; 8], "qemu-case", version)
        .expect("the name and version fit")
        .to_bytes();
    let irom = [descriptor.as_slice(), &pattern(4960, seed)].concat();
    let iram = pattern(300, seed.wrapping_add(0x40));
    let dram = pattern(701, seed.wrapping_add(0x80));
    let segments = [Segment { addr: IRAM.start, data: &iram }, Segment { addr: DRAM.start, data: &dram }];
    let mut out = Vec::new();
    image::write_v2(FlashParams::default(), IRAM.start, &irom, &segments, &mut |bytes| {
        out.extend_from_slice(bytes)
    })
    .expect("the test image is well formed");
    out
}

/// Deterministic bytes without long runs (xorshift).
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut state = 0x9E37_79B9u32 ^ u32::from(seed).wrapping_mul(0x0101_0101);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = Crc32::new();
    crc.update(bytes);
    crc.finish()
}
