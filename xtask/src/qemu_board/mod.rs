//! example-blinky on QEMU's XTFPGA board (`-M lx60-nommu -cpu lx106`), booted by
//! tcpflash-boot, both built with `--board qemu`: the board itself ([`QemuBoard`], the flash
//! file's factory install) lives in cargo-tcpflash, which serves it as `cargo tcpflash sim
//! --board qemu`; here is what the repository checks it with.
//!
//! [`host_boot`] runs the bootloader's flow on the host over a copy of a flash, which tells a
//! test exactly what the board must print and hand over; QMP (`xp`, `info registers`) reads
//! the hand-off record and the CPU's state back from the running board. [`cases`] are the
//! pushes, refusals, power cuts, trial boots and boot decisions the tests and `cargo xtask
//! proof` run on the board.

pub mod cases;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub use cargo_tcpflash::qemu_board::{
    BOOT_PREFIX, BoardError, Line, QemuBoard, RUN_LIMIT, SECTOR_0_LABEL, build_bootloader, build_firmware,
    factory_flash, sector_0_stand_in,
};
use ota_agent::boot::handoff::HandOff;
use ota_agent::boot::loader::{self, Halt, HostBoard, Launch, LoaderBuffers};

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

/// `cargo tcpflash sim --board qemu` as a child process, its stdout collected line by line
/// (and echoed after `echo`, when given).
pub struct SimProcess {
    child: Child,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
    /// The host port forwarded to the agent.
    pub port: u16,
}

impl SimProcess {
    /// Starts `tcpflash sim --board qemu --port 0 --flash FLASH --manifest-path MANIFEST`
    /// and waits (up to `patience`) for the line that says where it listens.
    pub fn start(
        tcpflash: &Path,
        flash: &Path,
        manifest: &Path,
        echo: Option<&'static str>,
        patience: Duration,
    ) -> Result<SimProcess, String> {
        let mut child = Command::new(tcpflash)
            .args(["tcpflash", "sim", "--board", "qemu", "--port", "0", "--flash"])
            .arg(flash)
            .arg("--manifest-path")
            .arg(manifest)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|error| format!("cannot run {}: {error}", tcpflash.display()))?;
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = Arc::clone(&lines);
        let stdout = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(prefix) = echo {
                    println!("{prefix}{line}");
                }
                sink.0.lock().unwrap().push(line);
                sink.1.notify_all();
            }
            sink.1.notify_all();
        });
        let mut sim = SimProcess { child, lines, port: 0 };
        let listening = sim.wait("listening on 127.0.0.1:", patience)?;
        let port = listening.split("127.0.0.1:").nth(1).and_then(|rest| rest.split(' ').next());
        sim.port = port.and_then(|port| port.parse().ok()).ok_or(format!("no port in {listening:?}"))?;
        Ok(sim)
    }

    /// Waits for a line containing `text`; returns it.
    pub fn wait(&mut self, text: &str, patience: Duration) -> Result<String, String> {
        let deadline = Instant::now() + patience;
        let (list, ready) = &*self.lines;
        let mut lines = list.lock().unwrap();
        loop {
            if let Some(line) = lines.iter().find(|line| line.contains(text)) {
                return Ok(line.clone());
            }
            let ended = matches!(self.child.try_wait(), Ok(Some(_)));
            if ended || Instant::now() >= deadline {
                let why = if ended { "it ended" } else { "it did not come" };
                return Err(format!(
                    "no line with {text:?} from sim --board qemu ({why}):\n{}",
                    lines.join("\n")
                ));
            }
            lines = ready.wait_timeout(lines, Duration::from_millis(200)).unwrap().0;
        }
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.0.lock().unwrap().clone()
    }

    /// SIGINT, as Ctrl-C: the sim must stop QEMU, say `stopped` and exit 0.
    pub fn interrupt(&mut self, patience: Duration) -> Result<(), String> {
        self.signal("-INT");
        let deadline = Instant::now() + patience;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                _ if Instant::now() >= deadline => return Err("sim --board qemu ignores Ctrl-C".into()),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        // The reader thread may still hold the last lines.
        std::thread::sleep(Duration::from_millis(100));
        let lines = self.lines();
        if !status.success() {
            return Err(format!("sim --board qemu exited with {status} after Ctrl-C:\n{}", lines.join("\n")));
        }
        if lines.last().map(String::as_str) != Some("stopped") {
            return Err(format!("sim --board qemu did not say it stopped:\n{}", lines.join("\n")));
        }
        Ok(())
    }

    /// SIGKILL: the sim gets no chance to stop its QEMU.
    pub fn kill(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    fn signal(&self, signal: &str) {
        let _ = Command::new("kill").args([signal, &self.child.id().to_string()]).status();
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        // SIGTERM first: the sim stops its QEMU (which would outlive a killed sim until its
        // `timeout`).
        if let Ok(None) = self.child.try_wait() {
            self.signal("-TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
