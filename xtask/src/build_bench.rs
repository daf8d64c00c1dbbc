//! `cargo xtask build-bench`: what the build pipeline costs on top of cargo, and what the
//! image conversion costs against esptool (issue 2's figures). A benchmark: it prints, it
//! never fails on a number. Run it as `cargo run --release -p xtask -- build-bench`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use cargo_tcpflash::build::BuildOptions;
use cargo_tcpflash::build::{self, BuildError};

use crate::demo::{self, DemoError};

#[derive(Debug, clap::Args)]
pub struct BuildBenchArgs {
    /// Measured rounds of each part (the median is reported).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum BuildBenchError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Demo(#[from] DemoError),
    #[error("{0}")]
    Io(String),
    #[error("`{command}` failed: {stderr}")]
    #[diagnostic(help("esptool comes with `pip install esptool`"))]
    Command { command: String, stderr: String },
}

pub fn run(args: &BuildBenchArgs) -> Result<(), BuildBenchError> {
    let root = demo::workspace_root();
    let manifest = root.join("example-blinky/Cargo.toml");
    let main_rs = root.join("example-blinky/src/main.rs");
    let build_args = BuildOptions {
        manifest_path: Some(manifest),
        // Its own target dir: the touches below must not disturb anyone's images.
        target_dir: Some(root.join("target/build-bench")),
        ..BuildOptions::default()
    };
    if cfg!(debug_assertions) {
        eprintln!(
            "note: a debug build of xtask: tcpflash's own steps run unoptimized; use `cargo run --release -p xtask -- build-bench`"
        );
    }
    build::build(&build_args)?; // warm: core, compiler_builtins, the assembled builtins

    let mut rounds = Vec::new();
    for _ in 0..args.runs {
        touch(&main_rs)?;
        let started = Instant::now();
        let firmware = build::build(&build_args)?;
        rounds.push((firmware.timings.compile, started.elapsed()));
    }
    let compile = median(rounds.iter().map(|r| r.0).collect());
    let total = median(rounds.iter().map(|r| r.1).collect());
    let build_ratio = total.as_secs_f64() / compile.as_secs_f64();

    let elf = root.join("target/build-bench/tcpflash/1MB/user1.elf");
    let tcpflash =
        demo::build_tcpflash_binary_with(&root, if cfg!(debug_assertions) { &[] } else { &["--release"] })?;
    let out = std::env::temp_dir().join(format!("tcpflash-build-bench-{}", std::process::id()));
    let ours_out = out.with_extension("ours.bin");
    let theirs_out = out.with_extension("esptool.bin");
    let ours = time_command(args.runs, || {
        let mut command = Command::new(&tcpflash);
        command.arg("tcpflash").arg("image").arg(&elf).arg("-o").arg(&ours_out);
        command
    })?;
    let theirs = time_command(args.runs, || {
        let mut command = Command::new("esptool");
        command.args(["--chip", "esp8266", "elf2image", "--version", "2", "-o"]).arg(&theirs_out).arg(&elf);
        command
    })?;
    let same = std::fs::read(&ours_out).ok() == std::fs::read(&theirs_out).ok();
    let _ = std::fs::remove_file(&ours_out);
    let _ = std::fs::remove_file(&theirs_out);
    let image_ratio = ours.as_secs_f64() / theirs.as_secs_f64();

    println!("| step (example-blinky, after touching src/main.rs; median of {}) | time |", args.runs);
    println!("|---|---|");
    println!("| cargo's compile alone (nightly, fat LTO, asm out) | {} |", ms(compile));
    println!(
        "| `cargo tcpflash build`, both slots (compile + tcpflash's passes, as, 2 links, 2 conversions) | {} |",
        ms(total)
    );
    println!("| `cargo tcpflash image user1.elf` (process) | {} |", ms(ours));
    println!("| `esptool elf2image --version 2 user1.elf` (process) | {} |", ms(theirs));
    println!("images identical: {same}");
    println!(
        "build-bench: compile_s={:.3} build_s={:.3} build_ratio={build_ratio:.2} image_s={:.4} esptool_s={:.4} image_ratio={image_ratio:.3}",
        compile.as_secs_f64(),
        total.as_secs_f64(),
        ours.as_secs_f64(),
        theirs.as_secs_f64()
    );
    Ok(())
}

/// Marks the file changed now, as an edit would.
fn touch(path: &Path) -> Result<(), BuildBenchError> {
    let file = std::fs::File::options()
        .append(true)
        .open(path)
        .map_err(|e| BuildBenchError::Io(format!("cannot open {}: {e}", path.display())))?;
    file.set_modified(SystemTime::now())
        .map_err(|e| BuildBenchError::Io(format!("cannot touch {}: {e}", path.display())))
}

fn time_command(runs: u32, make: impl Fn() -> Command) -> Result<Duration, BuildBenchError> {
    let mut times = Vec::new();
    for _ in 0..runs {
        let mut command = make();
        let started = Instant::now();
        let output =
            command.output().map_err(|e| BuildBenchError::Io(format!("cannot run {command:?}: {e}")))?;
        times.push(started.elapsed());
        if !output.status.success() {
            return Err(BuildBenchError::Command {
                command: format!("{command:?}"),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
    }
    Ok(median(times))
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1000.0)
}
