//! Shared by the tests that run the virtual ESP8266 (`xtask sim`, the real binary) and push
//! to it over real TCP on 127.0.0.1: one example-blinky build per test binary, the real
//! `cargo-tcpflash` binary, the device's output lines, its status, and the flash file.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use cargo_tcpflash::build::BuildOptions;
use ota_agent::layout::{DEFAULT_LAYOUT, FlashLayout, SlotId};
use serde_json::Value;

/// A test waits this long for something that takes milliseconds, so a bug fails the test
/// instead of hanging it. Never a pass/fail criterion on speed.
pub const PATIENCE: Duration = Duration::from_secs(90);
pub const LAYOUT: &FlashLayout = DEFAULT_LAYOUT;

pub fn root() -> PathBuf {
    xtask::demo::workspace_root()
}

pub fn manifest() -> PathBuf {
    root().join("example-blinky/Cargo.toml")
}

/// Everything that builds example-blinky rewrites the same user1.bin/user2.bin: one at a time.
pub fn build_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A scratch folder for this test process, under cargo's target dir.
pub fn scratch(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sim-tests-{}", std::process::id())).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The images of one build, copied aside, and a factory user1 that differs from them (flash
/// mode dout), so a push over it is visible byte for byte.
pub struct Images {
    pub user1: PathBuf,
    pub user2: PathBuf,
    pub factory_user1: PathBuf,
}

impl Images {
    pub fn path(&self, slot: SlotId) -> &Path {
        match slot {
            SlotId::User1 => &self.user1,
            SlotId::User2 => &self.user2,
        }
    }

    pub fn bytes(&self, slot: SlotId) -> Vec<u8> {
        std::fs::read(self.path(slot)).unwrap()
    }
}

pub fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let _build = build_lock();
        let dir = scratch("images");
        let args = |mode: Option<&str>| BuildOptions {
            manifest_path: Some(manifest()),
            flash_mode: mode.map(str::to_owned),
            ..BuildOptions::default()
        };
        let dout = cargo_tcpflash::build::build(&args(Some("dout"))).expect("example-blinky builds");
        let factory_user1 = dir.join("factory-user1.bin");
        std::fs::copy(&dout.slot(SlotId::User1).bin, &factory_user1).unwrap();
        let firmware = cargo_tcpflash::build::build(&args(None)).expect("example-blinky builds");
        let copy = |slot: SlotId| {
            let to = dir.join(slot.file_name());
            std::fs::copy(&firmware.slot(slot).bin, &to).unwrap();
            to
        };
        Images { user1: copy(SlotId::User1), user2: copy(SlotId::User2), factory_user1 }
    })
}

/// The workspace's `cargo-tcpflash` binary, built once.
pub fn tcpflash() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| xtask::demo::build_tcpflash_binary(&root()).expect("cargo-tcpflash builds"))
}

/// The virtual ESP8266 as a child process, its stdout collected line by line.
pub struct Sim {
    child: Child,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
    pub port: u16,
    pub flash: PathBuf,
}

impl Sim {
    /// Starts `xtask sim` on a free port; a new flash file gets `factory` as user1.
    pub fn start(flash: &Path, factory: &Path) -> Sim {
        Sim::start_with(flash, &["--image", factory.to_str().unwrap()])
    }

    pub fn start_with(flash: &Path, extra: &[&str]) -> Sim {
        let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["sim", "--port", "0", "--flash"])
            .arg(flash)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = Arc::clone(&lines);
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let (list, ready) = &*sink;
                list.lock().unwrap().push(line);
                ready.notify_all();
            }
        });
        let mut sim = Sim { child, lines, port: 0, flash: flash.to_path_buf() };
        let listening = sim.wait_line("listening on 127.0.0.1:");
        let port = listening.split("127.0.0.1:").nth(1).unwrap().split(' ').next().unwrap();
        sim.port = port.parse().unwrap();
        sim
    }

    /// Waits for the first line (from the start) containing `text`.
    pub fn wait_line(&self, text: &str) -> String {
        self.wait_nth(text, 1)
    }

    /// Waits until `n` lines contain `text`; returns the n-th.
    pub fn wait_nth(&self, text: &str, n: usize) -> String {
        let (list, ready) = &*self.lines;
        let deadline = Instant::now() + PATIENCE;
        let mut lines = list.lock().unwrap();
        loop {
            if let Some(line) = lines.iter().filter(|line| line.contains(text)).nth(n - 1) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no line #{n} with {text:?} from the virtual device:\n{}",
                lines.join("\n")
            );
            lines = ready.wait_timeout(lines, left).unwrap().0;
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.0.lock().unwrap().clone()
    }

    pub fn count(&self, text: &str) -> usize {
        self.lines().iter().filter(|line| line.contains(text)).count()
    }

    /// SIGKILL: the process dies wherever it is.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as a service manager stops it; returns its exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the virtual device ignores SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn flash_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.flash).unwrap()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `xtask sim status --flash PATH`, parsed.
pub fn status(flash: &Path) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["sim", "status", "--flash"])
        .arg(flash)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout}");
    let value: Value = serde_json::from_str(&stdout).unwrap();
    // It fails exactly when the flash boots nothing.
    assert_eq!(
        output.status.success(),
        value["bricked"].is_null(),
        "sim status: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    value
}

/// What a push through the CLI printed, and the images that build made.
pub struct Pushed {
    pub output: Output,
    pub images: [Vec<u8>; 2],
}

impl Pushed {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        flat(&self.output.stderr)
    }

    pub fn image(&self, slot: SlotId) -> &[u8] {
        &self.images[slot.index()]
    }

    pub fn assert_ok(&self) {
        assert!(self.output.status.success(), "push failed ({}):\n{}", self.output.status, self.stderr());
    }
}

/// `cargo tcpflash --host 127.0.0.1 --port PORT` on example-blinky, through the real binary.
pub fn push(port: u16, extra: &[&str]) -> Pushed {
    let _build = build_lock();
    let output = Command::new(tcpflash())
        .args(["tcpflash", "--host", "127.0.0.1", "--port", &port.to_string(), "--manifest-path"])
        .arg(manifest())
        .args(extra)
        .env_remove("TCPFLASH_HOST")
        .output()
        .unwrap();
    let out_dir = manifest().parent().unwrap().join("target/tcpflash").join(LAYOUT.name);
    let read = |slot: SlotId| std::fs::read(out_dir.join(slot.file_name())).unwrap_or_default();
    Pushed { output, images: [read(SlotId::User1), read(SlotId::User2)] }
}

/// stderr with miette's frame characters and line wrapping taken out.
pub fn flat(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes).replace(['│', '×', '╰', '─', '▶'], " ");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The bytes of `slot` in a flash image, `len` long.
pub fn slot_bytes(flash: &[u8], slot: SlotId, len: usize) -> &[u8] {
    let at = LAYOUT.slot(slot).offset as usize;
    &flash[at..at + len]
}

/// Checks that `image` sits in `slot` and the rest of its last sector is erased.
pub fn assert_slot_holds(flash: &[u8], slot: SlotId, image: &[u8]) {
    assert_eq!(slot_bytes(flash, slot, image.len()), image, "{slot} holds the image byte for byte");
    let at = LAYOUT.slot(slot).offset as usize + image.len();
    let sector_end = at.next_multiple_of(ota_agent::layout::SECTOR_SIZE as usize);
    assert!(flash[at..sector_end].iter().all(|&b| b == 0xFF), "{slot}: the last sector is padded with 0xFF");
}
