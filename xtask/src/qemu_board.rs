//! example-blinky on QEMU's XTFPGA board (`-M lx60-nommu -cpu lx106`), booted by
//! tcpflash-boot: both built with `--board qemu`, a 4 MiB CFI flash file laid out as a
//! factory install leaves it, QEMU's user-mode network with the agent's port forwarded to
//! 127.0.0.1, and the board's UART lines.
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
//!
//! [`host_boot`] runs the same flow on the host over a copy of a flash, which tells a test
//! exactly what the board must print and hand over; QMP (`xp`, `info registers`) reads the
//! hand-off record and the CPU's state back from the running board.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cargo_tcpflash::build::{self, Bootloader, BuildError, Firmware};
use cargo_tcpflash::cli::BuildArgs;
use ota_agent::boards::xtfpga::FLASH_SIZE;
use ota_agent::boot::handoff::{HANDOFF_ADDR, HandOff};
use ota_agent::boot::loader::{self, Halt, HostBoard, Launch, LoaderBuffers};
use ota_agent::image::{FlashParams, FlashSize, Segment, write_v1};
use ota_agent::layout::FlashLayout;

use crate::qemu::{QemuError, find_qemu};
use crate::serial::flasher::{self, FlashError};

/// Longest a test's QEMU run may last: it is started under `timeout`, so a forgotten one ends.
pub const RUN_LIMIT: Duration = Duration::from_secs(300);
/// The same for `cargo xtask qemu-board`, which a person watches.
pub const INTERACTIVE_LIMIT: Duration = Duration::from_secs(3600);
/// Port the agent listens on inside the guest.
const AGENT_PORT: u16 = ota_agent::protocol::DEFAULT_PORT;
/// Attempts at a free host port (another process may take the one picked first).
const PORT_ATTEMPTS: usize = 5;
/// How long a QMP exchange may take.
const QMP_PATIENCE: Duration = Duration::from_secs(10);
/// What the stand-in in sector 0 says, for anyone reading the flash file.
pub const SECTOR_0_LABEL: &[u8] =
    b"tcpflash QEMU board: QEMU -kernel runs tcpflash-boot in place of the mask ROM and this sector\0\0\0";
/// The bootloader's lines start with this.
pub const BOOT_PREFIX: &str = "tcpflash-boot: ";

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum BoardError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Qemu(#[from] QemuError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Build(#[from] BuildError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Install(#[from] FlashError),

    #[error("cannot {what} {path}")]
    #[diagnostic(code(xtask::qemu_board::io))]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("QEMU ended before the board said `{expected}`: {stderr}")]
    #[diagnostic(
        code(xtask::qemu_board::exited),
        help("the UART lines so far: {lines:?}; QEMU's own message is above")
    )]
    Exited { expected: String, stderr: String, lines: Vec<String> },

    #[error("no UART line with `{expected}` within {} s", waited.as_secs())]
    #[diagnostic(code(xtask::qemu_board::silent), help("the UART lines so far: {lines:?}"))]
    Silent { expected: String, waited: Duration, lines: Vec<String> },

    #[error("QEMU's monitor (QMP) answered `{command}` with {answer}")]
    #[diagnostic(code(xtask::qemu_board::qmp), help("QEMU 7.2's human monitor commands are expected"))]
    Qmp { command: String, answer: String },
}

/// Builds a firmware for the QEMU board (`--board qemu`).
pub fn build_firmware(manifest: &Path, target_dir: Option<PathBuf>) -> Result<Firmware, BuildError> {
    build::build(&BuildArgs {
        manifest_path: Some(manifest.to_path_buf()),
        board: Some("qemu".into()),
        target_dir,
        ..BuildArgs::default()
    })
}

/// Builds tcpflash-boot for the QEMU board: its ELF is what QEMU runs.
pub fn build_bootloader() -> Result<Bootloader, BuildError> {
    build::build_bootloader(&BuildArgs {
        manifest_path: Some(crate::footprint::bootloader_manifest()),
        board: Some("qemu".into()),
        ..BuildArgs::default()
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

/// What tcpflash-boot does with a flash, worked out on the host by the same flow
/// ([`loader::load`] on a [`HostBoard`]).
#[derive(Clone, Debug)]
pub struct HostBoot {
    /// Its UART lines, without line ends.
    pub lines: Vec<String>,
    pub result: Result<Launch, Halt>,
    /// The flash after the boot (a trial boot programs an attempt bit).
    pub flash: Vec<u8>,
    /// The IROM it places: address and bytes.
    pub irom: Option<(u32, Vec<u8>)>,
}

/// Runs the bootloader's flow over a copy of `flash`.
pub fn host_boot(flash: &[u8]) -> HostBoot {
    let mut board = HostBoard::new(flash.to_vec());
    let result = loader::load(&mut board, &mut LoaderBuffers::new());
    let text = board.console_text();
    HostBoot {
        lines: text.split_terminator("\r\n").map(str::to_string).collect(),
        result,
        flash: board.flash.bytes().to_vec(),
        irom: board.irom.take(),
    }
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
    stderr: PathBuf,
    /// Holds the QMP socket (socket paths must be short).
    sockets: tempfile::TempDir,
    /// The host port forwarded to the agent's port.
    pub port: u16,
}

impl QemuBoard {
    /// Starts QEMU on `kernel` (tcpflash-boot's ELF) with `flash` (a file of exactly 4 MiB)
    /// and the agent's port forwarded from a free port on 127.0.0.1. QEMU's stderr goes to
    /// `flash` + `.stderr`.
    pub fn start(kernel: &Path, flash: &Path) -> Result<QemuBoard, BoardError> {
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port().map_err(io("find a free port on", Path::new("127.0.0.1")))?;
            let mut board = QemuBoard::start_on(kernel, flash, port, RUN_LIMIT)?;
            // QEMU refuses to start when the port was taken meanwhile; it says so at once.
            match board.wait_line("", 0, Duration::from_secs(10)) {
                Ok(_) => return Ok(board),
                Err(error @ BoardError::Exited { .. }) if board.stderr_text().contains("host forwarding") => {
                    last = Some(error)
                }
                Err(error) => return Err(error),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// The same on a given host `port`, ended by `timeout` after `limit`.
    pub fn start_on(
        kernel: &Path,
        flash: &Path,
        port: u16,
        limit: Duration,
    ) -> Result<QemuBoard, BoardError> {
        let qemu = find_qemu()?;
        let stderr = flash.with_extension("stderr");
        let stderr_file = std::fs::File::create(&stderr).map_err(io("create", &stderr))?;
        let sockets = tempfile::Builder::new()
            .prefix("tcpflash-qmp")
            .tempdir()
            .map_err(io("create a directory in", &std::env::temp_dir()))?;
        // `timeout` ends QEMU even if this process dies without stopping it, passes our
        // SIGTERM on when we stop it, and kills it 5 s later if it is still there (seen once).
        let mut child = Command::new("timeout")
            .args(["-k", "5", "-s", "KILL", &limit.as_secs().to_string()])
            .arg(&qemu)
            .args(["-M", "lx60-nommu", "-cpu", "lx106", "-nographic", "-monitor", "none"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", sockets.path().join("qmp").display()))
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
        Ok(QemuBoard { child, lines, stderr, sockets, port })
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
                let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default().trim().to_string();
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
        std::fs::read_to_string(&self.stderr).unwrap_or_default().trim().to_string()
    }

    /// Runs a human monitor command through QMP and returns its output.
    pub fn monitor(&self, command: &str) -> Result<String, BoardError> {
        let path = self.sockets.path().join("qmp");
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

    /// Stops QEMU (SIGTERM through `timeout`) and waits for it.
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
        self.child.wait().map_err(io("wait for", Path::new("qemu")))
    }

    fn terminate(&mut self) -> Result<ExitStatus, BoardError> {
        if let Some(status) = self.child.try_wait().map_err(io("wait for", Path::new("qemu")))? {
            return Ok(status);
        }
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        self.child.wait().map_err(io("wait for", Path::new("qemu")))
    }
}

impl Drop for QemuBoard {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// Checks that the board, whose UART lines from `from` on follow a boot from a flash that
/// held `before`, booted as [`host_boot`] says: the same bootloader lines, then either the
/// firmware's first line and the same hand-off record in RAM, or (nothing bootable) the CPU
/// still in the bootloader. Returns the index of the last line checked and the host's boot.
pub fn check_boot(
    board: &mut QemuBoard,
    from: usize,
    before: &[u8],
    patience: Duration,
) -> Result<(usize, HostBoot), String> {
    let expected = host_boot(before);
    let last = expected.lines.last().ok_or("the host's boot printed nothing")?;
    let at =
        board.wait_line(last, from, patience).map_err(|error| format!("{:?}", miette::Report::new(error)))?;
    let texts = board.texts();
    let printed: Vec<&str> =
        texts[from..=at].iter().map(String::as_str).filter(|line| line.starts_with(BOOT_PREFIX)).collect();
    if printed != expected.lines {
        return Err(format!("the bootloader printed {printed:#?}, the host's run {:#?}", expected.lines));
    }
    match &expected.result {
        Ok(launch) => {
            // The record is written just before the jump: the firmware's first line follows it.
            let booted = board
                .wait_line(" booted", at + 1, patience)
                .map_err(|error| format!("{:?}", miette::Report::new(error)))?;
            let words = board.handoff().map_err(|error| error.to_string())?;
            if HandOff::parse_words(words) != Ok(launch.handoff) {
                return Err(format!(
                    "the hand-off in RAM is {words:08x?}, the host expects {:?}",
                    launch.handoff
                ));
            }
            // The IROM's head (the slot descriptor) where the cache would map it.
            if let Some((addr, bytes)) = &expected.irom {
                let head: Vec<u32> = bytes
                    .chunks_exact(4)
                    .take(16)
                    .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
                    .collect();
                let placed = board.read_words(*addr, head.len()).map_err(|error| error.to_string())?;
                if placed != head {
                    return Err(format!("IROM at {addr:#010x} holds {placed:08x?}, the image {head:08x?}"));
                }
            }
            Ok((booted, expected))
        }
        Err(_) => {
            let pc = board.pc().map_err(|error| error.to_string())?;
            if !ota_agent::layout::BOOTLOADER_IRAM.contains(&pc) {
                return Err(format!("halted, yet the CPU is at {pc:#010x}, outside the bootloader"));
            }
            Ok((at, expected))
        }
    }
}

/// `cargo xtask qemu-board`.
#[derive(Debug, clap::Args)]
pub struct QemuBoardArgs {
    /// Host port forwarded to the agent (push with `--host 127.0.0.1 --port PORT`).
    #[arg(long, default_value_t = AGENT_PORT)]
    pub port: u16,
    /// The 4 MiB flash file; made with a factory install when missing (or with --fresh).
    #[arg(long, default_value = "target/qemu-board.flash", value_name = "PATH")]
    pub flash: PathBuf,
    /// Start from a factory install even if the flash file exists.
    #[arg(long)]
    pub fresh: bool,
    /// The firmware to run.
    #[arg(long, default_value = "example-blinky/Cargo.toml", value_name = "PATH")]
    pub manifest_path: PathBuf,
}

/// Builds tcpflash-boot and the firmware for the board, prepares the flash file, runs QEMU
/// and prints the board's UART lines until QEMU ends (Ctrl-C ends it).
pub fn run(args: &QemuBoardArgs) -> Result<(), BoardError> {
    let root = crate::demo::workspace_root();
    let bootloader = build_bootloader()?;
    let firmware = build_firmware(&root.join(&args.manifest_path), None)?;
    let user1 = firmware.slot(ota_agent::layout::SlotId::User1);
    let flash = root.join(&args.flash);
    if args.fresh || !flash.exists() {
        let image = std::fs::read(&user1.bin).map_err(io("read", &user1.bin))?;
        let bytes = factory_flash(firmware.layout, &image)?;
        std::fs::write(&flash, bytes).map_err(io("write", &flash))?;
        eprintln!("factory install written to {}", flash.display());
    }
    let mut board = QemuBoard::start_on(&bootloader.elf, &flash, args.port, INTERACTIVE_LIMIT)?;
    eprintln!(
        "QEMU runs {} (booting {}) with the agent on 127.0.0.1:{port}; push with\n  cargo tcpflash --host 127.0.0.1 --port {port} --board qemu --manifest-path {}",
        bootloader.elf.display(),
        flash.display(),
        args.manifest_path.display(),
        port = args.port,
    );
    let mut shown = 0;
    loop {
        let waited = board.wait_line("", shown, INTERACTIVE_LIMIT);
        let texts = board.texts();
        for line in &texts[shown..] {
            println!("{line}");
        }
        shown = texts.len();
        match waited {
            Ok(_) => {}
            Err(BoardError::Exited { stderr, .. }) => {
                eprintln!("{stderr}");
                return Ok(());
            }
            Err(other) => return Err(other),
        }
    }
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
}
