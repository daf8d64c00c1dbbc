//! example-blinky on QEMU's XTFPGA board (`-M lx60-nommu -cpu lx106`): the firmware built
//! with `--board qemu`, a 4 MiB CFI flash file laid out as a factory install leaves it, QEMU's
//! user-mode network with the agent's port forwarded to 127.0.0.1, and the board's UART lines.
//!
//! There is no bootloader on this board yet: QEMU runs user1's ELF (`-kernel`), and runs it
//! again after the firmware resets the board, whatever the boot config selects.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cargo_tcpflash::build::{self, BuildError, Firmware};
use cargo_tcpflash::cli::BuildArgs;
use ota_agent::boards::xtfpga::FLASH_SIZE;
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

    #[error("QEMU ended before the firmware said `{expected}`: {stderr}")]
    #[diagnostic(
        code(xtask::qemu_board::exited),
        help("the UART lines so far: {lines:?}; QEMU's own message is above")
    )]
    Exited { expected: String, stderr: String, lines: Vec<String> },

    #[error("no UART line with `{expected}` within {} s", waited.as_secs())]
    #[diagnostic(code(xtask::qemu_board::silent), help("the UART lines so far: {lines:?}"))]
    Silent { expected: String, waited: Duration, lines: Vec<String> },
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

/// A 4 MiB flash holding what `serial-flash` installs for `layout` (the stand-in
/// bootloader, the boot config selecting user1, `user1` at its slot), erased elsewhere.
pub fn factory_flash(layout: &'static FlashLayout, user1: &[u8]) -> Result<Vec<u8>, FlashError> {
    let bootloader = crate::sim::stand_in_bootloader(layout);
    let regions = flasher::plan_install(layout, "the stand-in bootloader", bootloader, user1.to_vec())?;
    let mut flash = vec![0xFF; FLASH_SIZE as usize];
    for region in &regions {
        let at = region.offset as usize;
        flash[at..at + region.data.len()].copy_from_slice(&region.data);
    }
    Ok(flash)
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
    /// The host port forwarded to the agent's port.
    pub port: u16,
}

impl QemuBoard {
    /// Starts QEMU on `kernel` with `flash` (a file of exactly 4 MiB) and the agent's port
    /// forwarded from a free port on 127.0.0.1. QEMU's stderr goes to `flash` + `.stderr`.
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
        // `timeout` ends QEMU even if this process dies without stopping it, passes our
        // SIGTERM on when we stop it, and kills it 5 s later if it is still there (seen once).
        let mut child = Command::new("timeout")
            .args(["-k", "5", "-s", "KILL", &limit.as_secs().to_string()])
            .arg(&qemu)
            .args(["-M", "lx60-nommu", "-cpu", "lx106", "-nographic", "-monitor", "none"])
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
        Ok(QemuBoard { child, lines, stderr, port })
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

    /// Stops QEMU (SIGTERM through `timeout`) and waits for it.
    pub fn stop(mut self) -> Result<ExitStatus, BoardError> {
        self.terminate()
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

/// Builds the firmware for the board, prepares the flash file, runs QEMU and prints the
/// board's UART lines until QEMU ends (Ctrl-C ends it).
pub fn run(args: &QemuBoardArgs) -> Result<(), BoardError> {
    let root = crate::demo::workspace_root();
    let firmware = build_firmware(&root.join(&args.manifest_path), None)?;
    let user1 = firmware.slot(ota_agent::layout::SlotId::User1);
    let flash = root.join(&args.flash);
    if args.fresh || !flash.exists() {
        let image = std::fs::read(&user1.bin).map_err(io("read", &user1.bin))?;
        let bytes = factory_flash(firmware.layout, &image)?;
        std::fs::write(&flash, bytes).map_err(io("write", &flash))?;
        eprintln!("factory install written to {}", flash.display());
    }
    let mut board = QemuBoard::start_on(&user1.elf, &flash, args.port, INTERACTIVE_LIMIT)?;
    eprintln!(
        "QEMU runs {} with the agent on 127.0.0.1:{port}; push with\n  cargo tcpflash --host 127.0.0.1 --port {port} --board qemu --manifest-path {}",
        user1.elf.display(),
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
