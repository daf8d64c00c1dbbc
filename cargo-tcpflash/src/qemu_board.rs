//! QEMU's XTFPGA board (`qemu-system-xtensa -M lx60-nommu -cpu lx106`) as a device: a
//! firmware and tcpflash-boot built with `--board qemu` run there as lx106 machine code, the
//! board's 4 MiB CFI flash is a file, QEMU's user-mode network forwards a port of 127.0.0.1
//! to the agent, and the UART's lines come back as text. `cargo tcpflash sim --board qemu`
//! serves it ([`serve`]); the repository's tests drive [`QemuBoard`] directly.
//!
//! QEMU runs the bootloader's ELF (`-kernel`) where an ESP8266 has its mask ROM and sector 0:
//! it loads the bootloader into RAM at power-on and again at every FPGA reset, as the mask
//! ROM loads sector 0. (This board has no mask ROM to read a v1 image from flash, and
//! tcpflash-boot's build for it is larger than the sector.) From there the bootloader does
//! what it does on an ESP8266, on this board's CFI flash: rBoot's config, the trial record,
//! the slot check, the attempt bit, the RAM segments (and IROM, where the cache would map it),
//! the hand-off record, the jump. So the flash file's sector 0 holds a labelled stand-in,
//! not a copy of the bootloader that nothing would read; its header carries the flash size,
//! which the bootloader (like rBoot) reads there.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use miette::Diagnostic;
use ota_agent::boards::xtfpga::FLASH_SIZE;
use ota_agent::boot::handoff::HANDOFF_ADDR;
use ota_agent::image::{FlashParams, FlashSize, Segment, write_v1};
use ota_agent::layout::{FlashLayout, LAYOUTS, SlotId};
use thiserror::Error;

use crate::build::BuildOptions;
use crate::build::{self, Bootloader, BuildError, Firmware};
use crate::serial::flasher::{self, FlashError};
use crate::sim::ServeArgs;

/// The emulator, as Debian's `qemu-system-misc` installs it.
pub const QEMU: &str = "qemu-system-xtensa";
pub const QEMU_INSTALL: &str = "sudo apt-get install qemu-system-misc";
/// The board's name for `--board`.
pub const BOARD: &str = "qemu";
/// Longest a test's QEMU run may last: it is started under `timeout`, so a forgotten one ends.
pub const RUN_LIMIT: Lifetime = Lifetime::Limit(Duration::from_secs(300));
/// A board a person runs (`sim --board qemu`).
pub const INTERACTIVE_LIMIT: Lifetime = Lifetime::WithThisProcess;

/// How long a board runs at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// This long (tests and the proof: a harness that dies leaves nothing behind for long).
    Limit(Duration),
    /// As long as the thread that starts it (at most a day): QEMU is killed when this process
    /// dies, even by SIGKILL (`setpriv --pdeathsig KILL` on `timeout` and on QEMU).
    WithThisProcess,
}

/// The day a board a person runs lasts at most.
const DAY: Duration = Duration::from_secs(86_400);
/// Port the agent listens on inside the guest.
const AGENT_PORT: u16 = ota_agent::protocol::DEFAULT_PORT;
/// Attempts at a free host port (another process may take the one picked first).
const PORT_ATTEMPTS: usize = 5;
/// How long QEMU may take to start (it refuses a taken port at once).
const START_PATIENCE: Duration = Duration::from_secs(10);
/// How long a QMP exchange may take.
const QMP_PATIENCE: Duration = Duration::from_secs(10);
/// What the stand-in in sector 0 says, for anyone reading the flash file.
pub const SECTOR_0_LABEL: &[u8] =
    b"tcpflash QEMU board: QEMU -kernel runs tcpflash-boot in place of the mask ROM and this sector\0\0\0";
/// The bootloader's lines start with this.
pub const BOOT_PREFIX: &str = "tcpflash-boot: ";
/// `sim --board qemu` prints the board's UART lines after this.
pub const UART_PREFIX: &str = "[uart] ";

#[derive(Debug, Error, Diagnostic)]
pub enum BoardError {
    #[error("`{QEMU}` was not found on PATH")]
    #[diagnostic(code(tcpflash::qemu::missing), help("install it with: {QEMU_INSTALL}"))]
    QemuMissing,

    #[error(transparent)]
    #[diagnostic(transparent)]
    Build(#[from] BuildError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Install(#[from] FlashError),

    #[error("cannot {what} {}", path.display())]
    #[diagnostic(code(tcpflash::qemu::io))]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("QEMU ended before the board said `{expected}`: {stderr}")]
    #[diagnostic(
        code(tcpflash::qemu::exited),
        help("the UART lines so far: {lines:?}; QEMU's own message is above")
    )]
    Exited { expected: String, stderr: String, lines: Vec<String> },

    #[error("no UART line with `{expected}` within {} s", waited.as_secs())]
    #[diagnostic(code(tcpflash::qemu::silent), help("the UART lines so far: {lines:?}"))]
    Silent { expected: String, waited: Duration, lines: Vec<String> },

    #[error("QEMU's monitor (QMP) answered `{command}` with {answer}")]
    #[diagnostic(code(tcpflash::qemu::qmp), help("QEMU 7.2's human monitor commands are expected"))]
    Qmp { command: String, answer: String },

    #[error("{} is {size} bytes; the QEMU board's flash file is {FLASH_SIZE}", path.display())]
    #[diagnostic(
        code(tcpflash::qemu::flash_size),
        help(
            "QEMU takes a CFI flash file of exactly 4 MiB: pass another --flash, or delete this one for a factory install"
        )
    )]
    FlashSize { path: PathBuf, size: u64 },

    #[error("{option} does not apply to the QEMU board")]
    #[diagnostic(code(tcpflash::qemu::option))]
    Unsupported {
        option: &'static str,
        #[help]
        help: &'static str,
    },

    #[error("QEMU stopped by itself: {stderr}")]
    #[diagnostic(
        code(tcpflash::qemu::ended),
        help("QEMU's message is above; the flash file keeps what was written")
    )]
    Ended { stderr: String },
}

/// Builds a firmware for the QEMU board (`--board qemu`).
pub fn build_firmware(manifest: &Path, target_dir: Option<PathBuf>) -> Result<Firmware, BuildError> {
    build::build(&BuildOptions {
        manifest_path: Some(manifest.to_path_buf()),
        board: Some(BOARD.into()),
        target_dir,
        ..BuildOptions::default()
    })
}

/// Builds tcpflash-boot for the QEMU board, from the source cargo-tcpflash was built from:
/// its ELF is what QEMU runs.
pub fn build_bootloader() -> Result<Bootloader, BuildError> {
    build::build_bootloader(&BuildOptions {
        manifest_path: Some(build::tcpflash_boot_manifest()),
        board: Some(BOARD.into()),
        ..BuildOptions::default()
    })
}

/// The v1 image in sector 0: one DRAM segment holding [`SECTOR_0_LABEL`], and the layout's
/// flash size in its header, where the bootloader reads the chip size.
pub fn sector_0_stand_in(layout: &FlashLayout) -> Vec<u8> {
    let size = FlashSize::from_name(layout.name).expect("every layout name is an esptool flash size");
    let params = FlashParams { size, ..FlashParams::default() };
    let label = Segment { addr: ota_agent::layout::DRAM.start, data: SECTOR_0_LABEL };
    let mut image = Vec::new();
    write_v1(params, ota_agent::layout::IRAM.start, &[label], &mut |bytes| image.extend_from_slice(bytes))
        .expect("one small segment");
    image
}

/// A 4 MiB flash holding what `serial-flash` installs for `layout` (sector 0's stand-in, the
/// boot config selecting user1, `user1` at its slot), erased elsewhere.
pub fn factory_flash(layout: &'static FlashLayout, user1: &[u8]) -> Result<Vec<u8>, FlashError> {
    let regions =
        flasher::plan_install(layout, "sector 0's stand-in", sector_0_stand_in(layout), user1.to_vec())?;
    let mut flash = vec![0xFF; FLASH_SIZE as usize];
    for region in &regions {
        let at = region.offset as usize;
        flash[at..at + region.data.len()].copy_from_slice(&region.data);
    }
    Ok(flash)
}

/// The layout of a QEMU board's flash file: the one its sector 0 stand-in's header names
/// (the file is always 4 MiB, whatever the layout). `None` for any other file.
pub fn flash_layout(bytes: &[u8]) -> Option<&'static FlashLayout> {
    let sector = bytes.get(..0x1000).filter(|_| bytes.len() == FLASH_SIZE as usize)?;
    if !sector.windows(SECTOR_0_LABEL.len()).any(|window| window == SECTOR_0_LABEL) {
        return None;
    }
    let size = ota_agent::boot::rboot_flash_size(sector[3] >> 4);
    LAYOUTS.iter().find(|layout| layout.flash_size == size)
}

/// `qemu-system-xtensa` on `PATH`.
pub fn find_qemu() -> Result<PathBuf, BoardError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(QEMU))
        .find(|candidate| candidate.is_file())
        .ok_or(BoardError::QemuMissing)
}

/// One UART line and when it arrived.
#[derive(Clone, Debug)]
pub struct Line {
    pub at: Instant,
    pub text: String,
}

type Lines = Arc<(Mutex<Vec<Line>>, Condvar)>;

/// The board running under QEMU, stopped when dropped.
pub struct QemuBoard {
    child: Child,
    lines: Lines,
    /// Holds the QMP socket (socket paths must be short) and QEMU's stderr.
    dir: tempfile::TempDir,
    /// The host port forwarded to the agent's port.
    pub port: u16,
}

impl QemuBoard {
    /// Starts QEMU on `kernel` (tcpflash-boot's ELF) with `flash` (a file of exactly 4 MiB)
    /// and the agent's port forwarded from a free port on 127.0.0.1, ended after `limit`;
    /// returns once the board printed its first line.
    pub fn start(kernel: &Path, flash: &Path, limit: Lifetime) -> Result<QemuBoard, BoardError> {
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port().map_err(io("find a free port on", Path::new("127.0.0.1")))?;
            match QemuBoard::start_on(kernel, flash, port, limit) {
                // QEMU refuses to start when the port was taken meanwhile; it says so at once.
                Err(error @ BoardError::Exited { .. }) if error.to_string().contains("host forwarding") => {
                    last = Some(error)
                }
                other => return other,
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// The same on a given host `port`.
    pub fn start_on(
        kernel: &Path,
        flash: &Path,
        port: u16,
        limit: Lifetime,
    ) -> Result<QemuBoard, BoardError> {
        let mut board = QemuBoard::spawn(kernel, flash, port, limit)?;
        board.wait_line("", 0, START_PATIENCE)?;
        Ok(board)
    }

    fn spawn(kernel: &Path, flash: &Path, port: u16, limit: Lifetime) -> Result<QemuBoard, BoardError> {
        let qemu = find_qemu()?;
        let size = std::fs::metadata(flash).map_err(io("read", flash))?.len();
        if size != u64::from(FLASH_SIZE) {
            return Err(BoardError::FlashSize { path: flash.into(), size });
        }
        let dir = tempfile::Builder::new()
            .prefix("tcpflash-qemu")
            .tempdir()
            .map_err(io("create a directory in", &std::env::temp_dir()))?;
        let stderr = dir.path().join("stderr");
        let stderr_file = std::fs::File::create(&stderr).map_err(io("create", &stderr))?;
        // `timeout` ends QEMU after the limit even if this process dies without stopping it,
        // passes our SIGTERM on when we stop it, and kills it 5 s later if it is still there
        // (seen once). It also puts QEMU in a process group of its own: a terminal's Ctrl-C
        // reaches us, and we stop QEMU. A board that lives with this process has `setpriv`
        // give `timeout` and QEMU each a parent-death signal: a SIGKILL of ours takes both.
        let (seconds, guard): (u64, &[&str]) = match limit {
            Lifetime::Limit(limit) => (limit.as_secs(), &[]),
            Lifetime::WithThisProcess => (DAY.as_secs(), &["setpriv", "--pdeathsig", "KILL", "--"]),
        };
        let mut timeout = guard.to_vec();
        timeout.extend(["timeout", "-k", "5", "-s", "KILL"]);
        let mut child = Command::new(timeout[0])
            .args(&timeout[1..])
            .arg(seconds.to_string())
            .args(guard)
            .arg(&qemu)
            .args(["-M", "lx60-nommu", "-cpu", "lx106", "-nographic", "-monitor", "none"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", dir.path().join("qmp").display()))
            .arg("-kernel")
            .arg(kernel)
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", flash.display()))
            .arg("-netdev")
            .arg(format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:{AGENT_PORT}"))
            .args(["-net", "nic,model=open_eth,netdev=n0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr_file)
            .spawn()
            .map_err(io("start", &qemu))?;
        let lines: Lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = Arc::clone(&lines);
        let stdout = child.stdout.take().expect("stdout is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let text = line.trim_end_matches('\r').to_string();
                sink.0.lock().unwrap().push(Line { at: Instant::now(), text });
                sink.1.notify_all();
            }
            // QEMU is gone: wake the waiters.
            sink.1.notify_all();
        });
        Ok(QemuBoard { child, lines, dir, port })
    }

    /// Every UART line so far.
    pub fn lines(&self) -> Vec<Line> {
        self.lines.0.lock().unwrap().clone()
    }

    /// The UART lines' text.
    pub fn texts(&self) -> Vec<String> {
        self.lines().into_iter().map(|line| line.text).collect()
    }

    /// Waits for a line containing `expected`, at index `from` or later; returns its index.
    pub fn wait_line(
        &mut self,
        expected: &str,
        from: usize,
        patience: Duration,
    ) -> Result<usize, BoardError> {
        let deadline = Instant::now() + patience;
        let (lock, wake) = &*self.lines;
        let mut lines = lock.lock().unwrap();
        loop {
            if let Some(index) = lines.iter().skip(from).position(|line| line.text.contains(expected)) {
                return Ok(from + index);
            }
            let texts = lines.iter().map(|line| line.text.clone()).collect::<Vec<_>>();
            if let Ok(Some(_)) = self.child.try_wait() {
                let stderr = read_text(&self.dir.path().join("stderr"));
                return Err(BoardError::Exited { expected: expected.into(), stderr, lines: texts });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(BoardError::Silent { expected: expected.into(), waited: patience, lines: texts });
            }
            // Wake up now and then to notice QEMU's end.
            let wait = (deadline - now).min(Duration::from_millis(200));
            lines = wake.wait_timeout(lines, wait).unwrap().0;
        }
    }

    /// QEMU's own messages so far.
    pub fn stderr_text(&self) -> String {
        read_text(&self.dir.path().join("stderr"))
    }

    /// Whether QEMU still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Runs a human monitor command through QMP and returns its output.
    pub fn monitor(&self, command: &str) -> Result<String, BoardError> {
        let path = self.dir.path().join("qmp");
        let qmp_error = |answer: String| BoardError::Qmp { command: command.into(), answer };
        let stream = UnixStream::connect(&path).map_err(io("connect to", &path))?;
        stream.set_read_timeout(Some(QMP_PATIENCE)).map_err(io("set a timeout on", &path))?;
        let mut reader = BufReader::new(stream.try_clone().map_err(io("use", &path))?);
        let mut writer = stream;
        // The greeting, then one reply per command; events may come in between.
        let mut answer = |request: Option<serde_json::Value>| -> Result<serde_json::Value, BoardError> {
            if let Some(request) = request {
                writeln!(writer, "{request}").map_err(io("write to", &path))?;
            }
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).map_err(io("read from", &path))? == 0 {
                    return Err(qmp_error("nothing (the socket closed)".into()));
                }
                let value: serde_json::Value =
                    serde_json::from_str(&line).map_err(|error| qmp_error(format!("{line:?} ({error})")))?;
                if value.get("event").is_none() {
                    return Ok(value);
                }
            }
        };
        answer(None)?;
        answer(Some(serde_json::json!({ "execute": "qmp_capabilities" })))?;
        let reply = answer(Some(serde_json::json!({
            "execute": "human-monitor-command",
            "arguments": { "command-line": command },
        })))?;
        match reply.get("return").and_then(serde_json::Value::as_str) {
            Some(text) => Ok(text.to_string()),
            None => Err(qmp_error(reply.to_string())),
        }
    }

    /// `count` 32-bit words of physical memory at `addr`.
    pub fn read_words(&self, addr: u32, count: usize) -> Result<Vec<u32>, BoardError> {
        let command = format!("xp /{count}xw {addr:#x}");
        let text = self.monitor(&command)?;
        // Lines like `00000000600012f0: 0x42464354 0x01010100 ...`.
        let words: Vec<u32> = text
            .lines()
            .filter_map(|line| line.split_once(": ").map(|(_, words)| words))
            .flat_map(str::split_whitespace)
            .filter_map(|word| u32::from_str_radix(word.trim_start_matches("0x"), 16).ok())
            .collect();
        if words.len() != count {
            return Err(BoardError::Qmp { command, answer: text });
        }
        Ok(words)
    }

    /// The hand-off record in RAM, as the firmware finds it.
    pub fn handoff(&self) -> Result<[u32; 4], BoardError> {
        let words = self.read_words(HANDOFF_ADDR, 4)?;
        Ok([words[0], words[1], words[2], words[3]])
    }

    /// The CPU's program counter.
    pub fn pc(&self) -> Result<u32, BoardError> {
        let text = self.monitor("info registers")?;
        text.split_whitespace()
            .find_map(|field| field.strip_prefix("PC="))
            .and_then(|pc| u32::from_str_radix(pc, 16).ok())
            .ok_or(BoardError::Qmp { command: "info registers".into(), answer: text })
    }

    /// Stops QEMU (SIGTERM through `timeout`: QEMU closes the flash file) and waits for it.
    pub fn stop(mut self) -> Result<ExitStatus, BoardError> {
        self.terminate()
    }

    /// Kills QEMU at once (SIGKILL), the closest thing to pulling the board's power: the
    /// flash file keeps whatever the chip had been told to do so far.
    pub fn kill(mut self) -> Result<ExitStatus, BoardError> {
        // QEMU is `timeout`'s only child.
        let pid = self.child.id();
        let children = format!("/proc/{pid}/task/{pid}/children");
        let qemu = std::fs::read_to_string(&children).map_err(io("read", Path::new(&children)))?;
        for qemu in qemu.split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", qemu]).status();
        }
        self.child.wait().map_err(io("wait for", Path::new(QEMU)))
    }

    fn terminate(&mut self) -> Result<ExitStatus, BoardError> {
        if let Some(status) = self.child.try_wait().map_err(io("wait for", Path::new(QEMU)))? {
            return Ok(status);
        }
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        self.child.wait().map_err(io("wait for", Path::new(QEMU)))
    }
}

impl Drop for QemuBoard {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// `cargo tcpflash sim --board qemu`: the flash file (a factory install when new: user1
/// built for the QEMU board, or `--image`), tcpflash-boot's QEMU build as the board's boot
/// ROM, the agent's port forwarded from 127.0.0.1:`--port`; prints the UART's lines until
/// Ctrl-C or SIGTERM, then stops QEMU.
pub fn serve(args: &ServeArgs) -> Result<(), BoardError> {
    refuse_options(args)?;
    let path = args.flash.clone().expect("clap requires --flash");
    // The signals only set the flag from here on: QEMU is stopped, never left behind.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(io("handle the signals of", &path))?;
    }
    let bootloader = build_bootloader()?;
    let layout = if path.exists() {
        let bytes = std::fs::read(&path).map_err(io("read", &path))?;
        if bytes.len() != FLASH_SIZE as usize {
            return Err(BoardError::FlashSize { path, size: bytes.len() as u64 });
        }
        if args.key_file.is_some() {
            println!(
                "note: --key-file only applies to a factory install; the firmware in the flash keeps its own key"
            );
        }
        flash_layout(&bytes).map_or("unknown", |layout| layout.name)
    } else {
        factory_install(&path, args)?.name
    };
    let board = match args.port {
        0 => QemuBoard::start(&bootloader.elf, &path, INTERACTIVE_LIMIT)?,
        port => QemuBoard::start_on(&bootloader.elf, &path, port, INTERACTIVE_LIMIT)?,
    };
    println!(
        "listening on 127.0.0.1:{} (flash {}, layout {layout}, QEMU board: {} runs {} as its boot ROM; UART lines follow {UART_PREFIX:?})",
        board.port,
        path.display(),
        QEMU,
        bootloader.elf.display(),
    );
    relay(board, &stop)
}

/// Prints the board's UART lines until `stop` is set (then stops QEMU) or QEMU ends.
fn relay(mut board: QemuBoard, stop: &AtomicBool) -> Result<(), BoardError> {
    let mut shown = 0;
    loop {
        let waited = board.wait_line("", shown, Duration::from_millis(100));
        shown = print_lines(&board, shown);
        match waited {
            Ok(_) | Err(BoardError::Silent { .. }) => {}
            Err(BoardError::Exited { stderr, .. }) => return Err(BoardError::Ended { stderr }),
            Err(other) => return Err(other),
        }
        if stop.load(Ordering::SeqCst) {
            board.terminate()?;
            print_lines(&board, shown);
            println!("stopped");
            return Ok(());
        }
    }
}

/// Prints the UART lines from index `from` on; returns how many there are.
fn print_lines(board: &QemuBoard, from: usize) -> usize {
    let texts = board.texts();
    for line in &texts[from..] {
        println!("{UART_PREFIX}{line}");
    }
    let _ = std::io::stdout().flush();
    texts.len()
}

/// The options of the virtual ESP8266 that a firmware running as machine code has no use
/// for: refused, rather than silently ignored.
fn refuse_options(args: &ServeArgs) -> Result<(), BoardError> {
    let refuse = |option, help| Err(BoardError::Unsupported { option, help });
    if args.bootloader.is_some() {
        return refuse(
            "--bootloader",
            "QEMU runs tcpflash-boot's --board qemu build (from the source cargo-tcpflash was built from) in place of the mask ROM",
        );
    }
    if args.timed {
        return refuse(
            "--timed",
            "the board's CFI flash takes QEMU's time; --timed models an ESP8266's SPI flash",
        );
    }
    if !args.crashing.is_empty() {
        return refuse(
            "--crashing",
            "build the failing firmware instead (example-blinky: --features panic-at-boot) and push it",
        );
    }
    if args.idle_timeout != 30.0 {
        return refuse("--idle-timeout", "the agent's timeouts are the firmware's own, built into it");
    }
    if args.auth_backoff != 1.0 {
        return refuse("--auth-backoff", "the agent's lockout is the firmware's own, built into it");
    }
    Ok(())
}

/// Writes a new flash file: the factory install of `--image`, or of the firmware built for
/// the QEMU board (with `--key-file`'s key built in, when given).
fn factory_install(path: &Path, args: &ServeArgs) -> Result<&'static FlashLayout, BoardError> {
    let (layout, user1) = match &args.image {
        Some(image) => {
            let layout = match args.build.layout.as_deref() {
                None => ota_agent::layout::DEFAULT_LAYOUT,
                Some(name) => {
                    FlashLayout::by_name(name).ok_or(BuildError::UnknownLayout { name: name.into() })?
                }
            };
            (layout, std::fs::read(image).map_err(io("read", image))?)
        }
        None => {
            let mut build = BuildOptions::from(&args.build);
            build.board = Some(BOARD.into());
            if let Some(key) = &args.key_file {
                build.key_file = Some(std::path::absolute(key).map_err(io("find", key))?);
            }
            let firmware = build::build(&build)?;
            let bin = &firmware.slot(SlotId::User1).bin;
            (firmware.layout, std::fs::read(bin).map_err(io("read", bin))?)
        }
    };
    let bytes = factory_flash(layout, &user1)?;
    std::fs::write(path, bytes).map_err(io("write", path))?;
    println!(
        "factory install into {}: sector 0's stand-in, the boot config and user1 ({} bytes) for the {} layout, in a {} byte CFI flash",
        path.display(),
        user1.len(),
        layout.name,
        FLASH_SIZE
    );
    Ok(layout)
}

fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default().trim().to_string()
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BoardError {
    let path = path.to_path_buf();
    move |source| BoardError::Io { what, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ota_agent::layout::DEFAULT_LAYOUT;

    #[test]
    fn sector_0_holds_a_labelled_v1_image_with_the_flash_size() {
        let image = sector_0_stand_in(DEFAULT_LAYOUT);
        let info = crate::serial::bootloader::check(&image).expect("a valid v1 image");
        assert_eq!(info.segments, [(ota_agent::layout::DRAM.start, SECTOR_0_LABEL.len() as u32)]);
        assert_eq!(ota_agent::boot::rboot_flash_size(image[3] >> 4), DEFAULT_LAYOUT.flash_size);
        assert!(image.windows(15).any(|w| w == b"tcpflash-boot i"));
    }

    #[test]
    fn a_qemu_flash_file_names_its_layout_in_sector_0() {
        for layout in &LAYOUTS {
            let mut flash = vec![0xFF; FLASH_SIZE as usize];
            let stand_in = sector_0_stand_in(layout);
            flash[..stand_in.len()].copy_from_slice(&stand_in);
            assert_eq!(flash_layout(&flash).map(|found| found.name), Some(layout.name));
            assert_eq!(flash_layout(&flash[..0x10_0000]), None, "not 4 MiB: not the board's");
        }
        let mut other = vec![0xFF; FLASH_SIZE as usize];
        let stand_in = crate::sim::stand_in_bootloader(DEFAULT_LAYOUT);
        other[..stand_in.len()].copy_from_slice(&stand_in);
        assert_eq!(flash_layout(&other), None, "the virtual ESP8266's stand-in");
    }
}
