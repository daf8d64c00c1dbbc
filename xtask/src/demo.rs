//! `cargo xtask demo`: the whole flow on one machine, no board. Checks the tools (installing
//! what rustup can install, naming the Debian packages it cannot), builds example-blinky and
//! tcpflash-boot for QEMU's XTFPGA board, starts the board (`cargo tcpflash sim --board
//! qemu`: the firmware and the bootloader as lx106 machine code) on a free port with a fresh
//! flash file, pushes twice through the real `cargo-tcpflash` binary (user2, then user1),
//! shows the flash's status after each push, and stops QEMU. The fast host-built virtual
//! ESP8266 (`cargo xtask sim`) stays what the tests and the proof mostly push to.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cargo_tcpflash::build::BuildOptions;
use cargo_tcpflash::build::{self, BuildError};
use clap::Args;
use miette::Diagnostic;
use ota_agent::layout::SlotId;
use thiserror::Error;

use crate::qemu_board::SimProcess;
use crate::sim::{self, SimError};

/// The system tools the demo's steps run, and the Debian package of each.
pub const SYSTEM_TOOLS: [(&str, &str); 3] = [
    ("xtensa-lx106-elf-as", "binutils-xtensa-lx106"),
    ("xtensa-lx106-elf-ld", "binutils-xtensa-lx106"),
    ("qemu-system-xtensa", "qemu-system-misc"),
];
/// How long the board may take to start and its firmware to listen (the builds are done).
const BOARD_PATIENCE: Duration = Duration::from_secs(120);

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The firmware to build and push (it must call ota_init()).
    #[arg(long, default_value = "example-blinky/Cargo.toml", value_name = "PATH")]
    pub manifest_path: PathBuf,
}

#[derive(Debug, Error, Diagnostic)]
pub enum DemoError {
    #[error("rustup is not installed")]
    #[diagnostic(help("install it from https://rustup.rs, then run `cargo xtask demo` again"))]
    NoRustup,
    #[error("`{command}` failed")]
    #[diagnostic(help(
        "run it yourself to see why (network access to static.rust-lang.org is needed), then retry"
    ))]
    InstallFailed { command: String },
    #[error("{} not on PATH (the demo builds with GNU binutils for lx106 and runs QEMU)", tools.join(", "))]
    #[diagnostic(help("install the packages with `sudo apt-get install {}`, or run the demo as root to have it do so", packages.join(" ")))]
    MissingTools { tools: Vec<&'static str>, packages: Vec<&'static str> },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Qemu(#[from] cargo_tcpflash::qemu_board::BoardError),
    #[error("the QEMU board did not come up: {why}")]
    #[diagnostic(help("run `cargo xtask sim --board qemu --flash /tmp/board.flash` to see it on its own"))]
    Board { why: String },
    #[error("cannot read the firmware's toolchain file {}", path.display())]
    #[diagnostic(help(
        "the firmware folder needs a rust-toolchain.toml naming its nightly (`channel = \"nightly-...\"`)"
    ))]
    ToolchainFile { path: PathBuf },
    #[error("cannot run `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`cargo build -p cargo-tcpflash` failed")]
    #[diagnostic(help("cargo's errors are printed above"))]
    BuildTcpflash,
    #[error(transparent)]
    #[diagnostic(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Sim(#[from] SimError),
    #[error("push {number} failed: `cargo tcpflash` exited with {status}")]
    #[diagnostic(help("its error is printed above"))]
    Push { number: usize, status: std::process::ExitStatus },
    #[error("after push {number} the device runs {found}, not {expected}")]
    WrongSlot { number: usize, expected: &'static str, found: String },
    #[error("cannot create a temporary folder for the flash file")]
    TempDir(#[source] std::io::Error),
}

/// The repository root (xtask sits one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

pub fn run(args: &DemoArgs) -> Result<(), DemoError> {
    let root = workspace_root();
    let manifest = if args.manifest_path.is_absolute() {
        args.manifest_path.clone()
    } else {
        root.join(&args.manifest_path)
    };
    let firmware_dir = manifest.parent().unwrap_or(&root).to_path_buf();

    step("Checking the tools");
    let channel = pinned_channel(&firmware_dir)?;
    ensure_toolchain(&channel)?;
    ensure_system_tools(&SYSTEM_TOOLS)?;

    let qemu = cargo_tcpflash::qemu_board::find_qemu()?;
    println!("{}: ok", qemu.display());

    step("Building the firmware for both slots of QEMU's XTFPGA board (--board qemu)");
    let build_args = BuildOptions {
        manifest_path: Some(manifest.clone()),
        board: Some(cargo_tcpflash::qemu_board::BOARD.into()),
        ..BuildOptions::default()
    };
    let firmware = build::build(&build_args)?;
    print!("{}", cargo_tcpflash::build_cmd::summary(&firmware));

    step("Building tcpflash-boot for the board (QEMU runs it in place of the mask ROM)");
    let bootloader = cargo_tcpflash::qemu_board::build_bootloader()?;
    println!("{}", bootloader.elf.display());

    step("Building cargo-tcpflash");
    let tcpflash = build_tcpflash_binary(&root)?;

    step("Starting the QEMU board: cargo tcpflash sim --board qemu");
    let dir = tempfile::tempdir().map_err(DemoError::TempDir)?;
    let flash_path = dir.path().join("qemu-board.flash");
    let board_error = |why| DemoError::Board { why };
    let mut board =
        SimProcess::start(&tcpflash, &flash_path, &manifest, Some("  [QEMU board] "), BOARD_PATIENCE)
            .map_err(board_error)?;
    board.wait("[uart] tcpflash-boot started user1", BOARD_PATIENCE).map_err(board_error)?;
    board.wait("listening on port", BOARD_PATIENCE).map_err(board_error)?;
    let port = board.port;

    let result = (|| {
        for (number, expected) in [(1, SlotId::User2), (2, SlotId::User1)] {
            step(&format!("Push {number}: cargo tcpflash --host 127.0.0.1 --port {port} --board qemu"));
            let started = Instant::now();
            let status = Command::new(&tcpflash)
                .args(["tcpflash", "--host", "127.0.0.1", "--port", &port.to_string(), "--board", "qemu"])
                .arg("--manifest-path")
                .arg(&manifest)
                .status()
                .map_err(|source| DemoError::Spawn { command: tcpflash.display().to_string(), source })?;
            if !status.success() {
                return Err(DemoError::Push { number, status });
            }
            println!(
                "push {number} took {:.1} s, the reboot and the check-in included",
                started.elapsed().as_secs_f64()
            );
            let status = sim::status_json(&flash_path, None)?;
            println!("status: {status}");
            let booted = status["booted_slot"].as_str().unwrap_or("none").to_owned();
            if booted != expected.name() {
                return Err(DemoError::WrongSlot { number, expected: expected.name(), found: booted });
            }
        }
        Ok(())
    })();

    step("Stopping the QEMU board (Ctrl-C)");
    let stopped = board.interrupt(BOARD_PATIENCE).map_err(board_error);
    result?;
    stopped?;
    println!(
        "demo: pushed user2, then user1, to example-blinky running as lx106 machine code on QEMU's XTFPGA board; \
         each time tcpflash-boot booted the new slot on trial and the check-in confirmed it"
    );
    Ok(())
}

fn step(what: &str) {
    println!("\n==> {what}");
}

/// The nightly the firmware pins in its rust-toolchain.toml.
pub fn pinned_channel(firmware_dir: &Path) -> Result<String, DemoError> {
    let path = firmware_dir.join("rust-toolchain.toml");
    cargo_tcpflash::build::cargo::toolchain_file_channel(&path).ok_or(DemoError::ToolchainFile { path })
}

/// Installs the pinned toolchain and its `rust-src` through rustup when missing.
fn ensure_toolchain(channel: &str) -> Result<(), DemoError> {
    let installed = output("rustup", &["toolchain", "list"]).ok_or(DemoError::NoRustup)?;
    if !installed.lines().any(|line| line.starts_with(channel)) {
        let args = ["toolchain", "install", channel, "--profile", "minimal", "--component", "rust-src"];
        install("rustup", &args)?;
    }
    let components =
        output("rustup", &["component", "list", "--installed", "--toolchain", channel]).unwrap_or_default();
    if !components.lines().any(|line| line.starts_with("rust-src")) {
        install("rustup", &["component", "add", "rust-src", "--toolchain", channel])?;
    }
    println!("toolchain {channel} with rust-src: ok");
    Ok(())
}

/// Tools from the system's packages: as root, missing ones are installed with apt-get;
/// otherwise the one `sudo apt-get install ...` line that does it is printed and the demo stops.
pub fn ensure_system_tools(tools: &[(&'static str, &'static str)]) -> Result<(), DemoError> {
    let missing = |tools: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        tools.iter().copied().filter(|(tool, _)| !on_path(tool)).collect()
    };
    let absent = missing(tools);
    if absent.is_empty() {
        println!("system tools ({}): ok", tools.iter().map(|(tool, _)| *tool).collect::<Vec<_>>().join(", "));
        return Ok(());
    }
    let mut packages: Vec<&'static str> = absent.iter().map(|(_, package)| *package).collect();
    packages.dedup();
    if output("id", &["-u"]).is_some_and(|uid| uid.trim() == "0") {
        install("apt-get", &["update", "-q"])?;
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend(&packages);
        install("apt-get", &args)?;
    }
    let still = missing(tools);
    if still.is_empty() {
        return Ok(());
    }
    Err(DemoError::MissingTools { tools: still.iter().map(|(tool, _)| *tool).collect(), packages })
}

fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(tool).is_file())
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn install(program: &str, args: &[&str]) -> Result<(), DemoError> {
    let command = format!("{program} {}", args.join(" "));
    println!("installing: {command}");
    let status = Command::new(program)
        .args(args)
        .status()
        .map_err(|source| DemoError::Spawn { command: command.clone(), source })?;
    if status.success() { Ok(()) } else { Err(DemoError::InstallFailed { command }) }
}

/// Builds the `cargo-tcpflash` binary of this workspace and returns its path (from cargo's
/// own report, so `CARGO_TARGET_DIR` and profiles are respected).
pub fn build_tcpflash_binary(root: &Path) -> Result<PathBuf, DemoError> {
    build_tcpflash_binary_with(root, &[])
}

/// The same, with extra `cargo build` arguments (e.g. `--release` for measurements).
pub fn build_tcpflash_binary_with(root: &Path, extra: &[&str]) -> Result<PathBuf, DemoError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(&cargo)
        .current_dir(root)
        .args([
            "build",
            "-p",
            "cargo-tcpflash",
            "--bin",
            "cargo-tcpflash",
            "--message-format=json-render-diagnostics",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|source| DemoError::Spawn { command: "cargo build -p cargo-tcpflash".into(), source })?;
    let mut executable = None;
    let stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
    for message in cargo_metadata::Message::parse_stream(stdout) {
        if let Ok(cargo_metadata::Message::CompilerArtifact(artifact)) = message
            && artifact.target.name == "cargo-tcpflash"
            && let Some(path) = artifact.executable
        {
            executable = Some(path.into_std_path_buf());
        }
    }
    let status = child.wait().map_err(|source| DemoError::Spawn { command: "cargo build".into(), source })?;
    match executable {
        Some(path) if status.success() => Ok(path),
        _ => Err(DemoError::BuildTcpflash),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_tools_pass_and_missing_ones_name_their_packages() {
        ensure_system_tools(&[("sh", "dash")]).unwrap();
        let error = DemoError::MissingTools {
            tools: vec!["xtensa-lx106-elf-as", "xtensa-lx106-elf-ld"],
            packages: vec!["binutils-xtensa-lx106"],
        };
        assert!(error.to_string().starts_with("xtensa-lx106-elf-as, xtensa-lx106-elf-ld not on PATH"));
        let help = miette::Diagnostic::help(&error).unwrap().to_string();
        assert!(help.contains("sudo apt-get install binutils-xtensa-lx106"), "{help}");
    }

    #[test]
    fn reads_the_pinned_channel_of_example_blinky() {
        let channel = pinned_channel(&workspace_root().join("example-blinky")).unwrap();
        assert!(channel.starts_with("nightly-20"), "{channel}");
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(pinned_channel(dir.path()), Err(DemoError::ToolchainFile { .. })));
        std::fs::write(
            dir.path().join("rust-toolchain.toml"),
            "[toolchain]\nchannel = \"nightly-2030-01-02\"\n",
        )
        .unwrap();
        assert_eq!(pinned_channel(dir.path()).unwrap(), "nightly-2030-01-02");
    }
}
