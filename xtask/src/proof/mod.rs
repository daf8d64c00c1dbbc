//! `cargo xtask proof`: the evidence that no push can leave a board without a good firmware
//! that still listens for the next push.
//!
//! - [`power_cut`]: a real update of example-blinky, with the power cut at every flash
//!   operation in turn (and at every operation of rBoot's own config rewrites), then the
//!   rBoot model boots and the result is judged;
//! - [`network`]: connections closed at every protocol step and at many image offsets,
//!   stalls, garbage and a second client, against the session, the virtual ESP8266 on real
//!   TCP, and the agent on smoltcp over a lossy, corrupting, small-MTU wire;
//! - the QEMU cases of [`crate::qemu`]: the agent's device code as real lx106 code;
//! - the QEMU-board cases of [`crate::qemu_board::cases`]: example-blinky and tcpflash-boot
//!   as one lx106 firmware on QEMU's XTFPGA board, pushed to over real TCP (pushes, a bad
//!   image, a killed board, the boot decisions, a firmware that panics before it confirms,
//!   keys, `sim --board qemu`).
//!
//! The images are example-blinky's `user1.bin` and `user2.bin`, built by cargo-tcpflash's
//! pipeline into their own target dir (`target/proof`), so the campaigns never race other
//! builds.

pub mod agent;
pub mod network;
pub mod power_cut;
pub mod trial_cut;

use std::fmt;
use std::path::{Path, PathBuf};

use cargo_tcpflash::build::BuildOptions;
use cargo_tcpflash::build::{self, BuildError};
use ota_agent::flash::RamNor;
use ota_agent::layout::{FlashLayout, SlotId};

use crate::qemu::{self, QemuError};
use crate::qemu_board::cases as board_cases;
use crate::serial::flasher::{self, FlashError};

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ProofError {
    #[error("building example-blinky for the proof failed")]
    #[diagnostic(
        code(xtask::proof::build),
        help("`cargo tcpflash build --manifest-path example-blinky/Cargo.toml` shows the same error")
    )]
    Build(#[source] BuildError),

    #[error("cannot read {path}")]
    #[diagnostic(code(xtask::proof::io))]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    #[diagnostic(transparent)]
    Install(#[from] FlashError),
}

/// example-blinky as the pipeline built it, and the flash a factory install leaves.
#[derive(Clone)]
pub struct Blinky {
    /// The package name every image's descriptor must carry: the firmware that runs the agent.
    pub name: String,
    pub layout: &'static FlashLayout,
    /// `user1.bin` and `user2.bin`, and the files they were read from.
    pub images: [Vec<u8>; 2],
    pub files: [PathBuf; 2],
    /// What `serial-flash` writes (the virtual device's stand-in bootloader, the boot config
    /// booting user1, user1.bin), erased elsewhere.
    pub factory: Vec<u8>,
}

impl Blinky {
    /// Builds example-blinky into `target_dir` and lays out the factory flash.
    pub fn build(target_dir: &Path) -> Result<Blinky, ProofError> {
        let args = BuildOptions {
            manifest_path: Some(crate::demo::workspace_root().join("example-blinky/Cargo.toml")),
            target_dir: Some(target_dir.to_path_buf()),
            ..BuildOptions::default()
        };
        let firmware = build::build(&args).map_err(ProofError::Build)?;
        let files = SlotId::ALL.map(|slot| firmware.slot(slot).bin.clone());
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| ProofError::Read { path: path.clone(), source })
        };
        let images = [read(&files[0])?, read(&files[1])?];
        let mut blinky = Blinky::from_images(firmware.package.name.clone(), firmware.layout, images)?;
        blinky.files = files;
        Ok(blinky)
    }

    /// The fixture from images already in memory (`files` left empty).
    pub fn from_images(
        name: String,
        layout: &'static FlashLayout,
        images: [Vec<u8>; 2],
    ) -> Result<Blinky, ProofError> {
        let bootloader = crate::sim::stand_in_bootloader(layout);
        let regions =
            flasher::plan_install(layout, "the stand-in bootloader", bootloader, images[0].clone())?;
        let mut factory = vec![0xFF; layout.flash_size as usize];
        for region in &regions {
            let at = region.offset as usize;
            factory[at..at + region.data.len()].copy_from_slice(&region.data);
        }
        Ok(Blinky { name, layout, images, files: Default::default(), factory })
    }

    pub fn image(&self, slot: SlotId) -> &[u8] {
        &self.images[slot.index()]
    }

    pub fn image_refs(&self) -> [&[u8]; 2] {
        [&self.images[0], &self.images[1]]
    }

    pub fn factory_flash(&self) -> RamNor<Vec<u8>> {
        RamNor::from_storage(self.factory.clone())
    }

    /// Two small images named `qemu-case`, one per slot of the 1 MB layout: fast unit tests.
    #[cfg(test)]
    pub(crate) fn small() -> Blinky {
        let [user1, user2] = ota_agent::layout::DEFAULT_LAYOUT.slots;
        let images =
            [crate::qemu::test_image(&user1, "1.0.0", 1), crate::qemu::test_image(&user2, "2.0.0", 2)];
        Blinky::from_images("qemu-case".into(), ota_agent::layout::DEFAULT_LAYOUT, images).unwrap()
    }
}

/// Where the proof builds example-blinky.
pub fn default_target_dir() -> PathBuf {
    crate::demo::workspace_root().join("target/proof")
}

/// Everything `cargo xtask proof` found.
pub struct ProofReport {
    pub cuts: power_cut::CutReport,
    pub trial_cuts: trial_cut::TrialCutReport,
    pub net: network::NetReport,
    pub qemu: Result<qemu::Report, QemuError>,
    /// The QEMU-board cases, or why they could not run (a build failed).
    pub qemu_board: Result<board_cases::Report, String>,
}

impl ProofReport {
    pub fn qemu_cases(&self) -> usize {
        self.qemu.as_ref().map_or(0, |report| report.cases.len())
    }

    /// A QEMU run that could not start (no QEMU, the program does not build) is one failure.
    pub fn qemu_failures(&self) -> usize {
        self.qemu.as_ref().map_or(1, |report| report.failures())
    }

    pub fn qemu_board_cases(&self) -> usize {
        self.qemu_board.as_ref().map_or(0, |report| report.cases.len())
    }

    /// QEMU-board cases that could not start (a build failed) are one failure.
    pub fn qemu_board_failures(&self) -> usize {
        self.qemu_board.as_ref().map_or(1, board_cases::Report::failures)
    }

    pub fn failures(&self) -> usize {
        self.cuts.failures.len()
            + self.trial_cuts.failures.len()
            + self.net.failures.len()
            + self.qemu_failures()
            + self.qemu_board_failures()
    }

    /// The one line the proof ends with.
    pub fn summary(&self) -> String {
        format!(
            "proof: cut_points={} cut_failures={} trial_cut_points={} trial_cut_failures={} net_cases={} \
             hostile_cases={} net_failures={} qemu_cases={} qemu_failures={} qemu_board_cases={} \
             qemu_board_failures={}",
            self.cuts.cut_points(),
            self.cuts.failures.len(),
            self.trial_cuts.cut_points(),
            self.trial_cuts.failures.len(),
            self.net.cases(),
            self.net.hostile_cases,
            self.net.failures.len(),
            self.qemu_cases(),
            self.qemu_failures(),
            self.qemu_board_cases(),
            self.qemu_board_failures()
        )
    }
}

impl fmt::Display for ProofReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "== power cuts")?;
        write!(f, "{}", self.cuts)?;
        writeln!(f, "== power cuts on trial boots (tcpflash-boot)")?;
        write!(f, "{}", self.trial_cuts)?;
        writeln!(f, "== network faults")?;
        write!(f, "{}", self.net)?;
        writeln!(f, "== QEMU")?;
        match &self.qemu {
            Ok(report) => write!(f, "{report}")?,
            Err(error) => {
                let mut text = String::new();
                let _ = miette::GraphicalReportHandler::new().render_report(&mut text, error);
                write!(f, "QEMU cases could not run:\n{text}")?;
            }
        }
        writeln!(f, "== QEMU board")?;
        match &self.qemu_board {
            Ok(report) => write!(f, "{report}")?,
            Err(error) => writeln!(f, "QEMU-board cases could not run:\n{error}")?,
        }
        writeln!(f, "{}", self.summary())
    }
}

/// Runs both campaigns on `blinky` and the QEMU cases; `progress` hears each part start and
/// how long it took (times are reported, never judged).
pub fn run(blinky: &Blinky, progress: &mut dyn FnMut(&str)) -> ProofReport {
    let timed = |part: &str, progress: &mut dyn FnMut(&str), start: std::time::Instant| {
        progress(&format!("{part} took {:.1} s", start.elapsed().as_secs_f64()));
    };
    progress("power cuts: a real update of example-blinky, the power cut at every flash operation");
    let start = std::time::Instant::now();
    let cuts = power_cut::campaign(blinky);
    timed("power cuts", progress, start);
    progress(
        "trial power cuts: an update, its trial boot and the confirmation under tcpflash-boot, cut at every flash operation",
    );
    let start = std::time::Instant::now();
    let trial_cuts = trial_cut::campaign(blinky);
    timed("trial power cuts", progress, start);
    progress("network faults: session, virtual ESP8266 on 127.0.0.1, smoltcp over a faulty wire");
    let start = std::time::Instant::now();
    let net = network::campaign(blinky, &network::NetOptions::default());
    timed("network faults", progress, start);
    progress("QEMU: the agent's device code as lx106 machine code");
    let start = std::time::Instant::now();
    let qemu = qemu::run_all(&qemu::program_manifest(), qemu::CASE_TIMEOUT);
    timed("QEMU", progress, start);
    progress("QEMU board: example-blinky and tcpflash-boot as lx106 machine code, pushed over real TCP");
    let start = std::time::Instant::now();
    let scratch = default_target_dir().join("qemu-board");
    let qemu_board = board_cases::Fixture::build(&scratch).map(|fixture| board_cases::run_all(&fixture));
    timed("QEMU board", progress, start);
    ProofReport { cuts, trial_cuts, net, qemu, qemu_board }
}
