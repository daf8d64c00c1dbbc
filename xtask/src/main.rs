//! `cargo xtask <task>`: project automation (see `cargo xtask --help`).

use clap::{Parser, Subcommand};
use xtask::serial::cli::SerialFlashArgs;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", styles = clap::builder::Styles::styled())]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// `cargo tcpflash serial-flash` for example-blinky: first install over USB serial
    /// (tcpflash-boot, boot config and user1 through the ESP8266 ROM loader).
    SerialFlash(SerialFlashArgs),
    /// Measure the RAM and IROM the OTA agent adds to example-blinky (builds it twice), and
    /// tcpflash-boot's image against the 4096 bytes of sector 0.
    Footprint {
        /// The firmware to measure; it must have an `ota` feature that pulls the agent in.
        #[arg(long, default_value = "example-blinky/Cargo.toml", value_name = "PATH")]
        manifest_path: std::path::PathBuf,
        /// The bootloader to measure.
        #[arg(long, default_value = "ota-agent/boot/Cargo.toml", value_name = "PATH")]
        bootloader_manifest_path: std::path::PathBuf,
    },
    /// Run the agent's session, sector writer and image validator as lx106 code under QEMU and
    /// compare every push with the host build (needs qemu-system-xtensa).
    Qemu,
    /// The proof that nothing is lost: power cuts at every flash operation of a real update,
    /// network faults at every step, and the QEMU cases; ends with one `proof:` line.
    Proof,
    /// `cargo tcpflash sim` for example-blinky: the virtual ESP8266 serving the real agent on
    /// 127.0.0.1 with its flash in a file (`sim status` describes a flash file); with
    /// `--board qemu`, example-blinky as lx106 machine code on QEMU's XTFPGA board.
    Sim(xtask::sim::SimArgs),
    /// How long a push takes on a timed model of a board (the seed's strategy, ours, the flash
    /// floor) and how fast `cargo tcpflash` pushes over loopback against the seed's Python
    /// client; ends with one `bench:` line. Numbers, not a pass/fail test.
    Bench(xtask::bench::BenchArgs),
    /// Measure the build pipeline against cargo's compile, and `cargo tcpflash image` against
    /// esptool (use `cargo run --release -p xtask -- build-bench`).
    BuildBench(xtask::build_bench::BuildBenchArgs),
    /// The whole flow without a board: build example-blinky, start the virtual ESP8266, push
    /// twice through `cargo tcpflash` (user2, then user1), show the status after each.
    Demo(xtask::demo::DemoArgs),
}

/// The firmware `serial-flash` and `sim` build here when --manifest-path does not say
/// (`cargo tcpflash` takes the current folder's, as cargo does).
fn example_blinky() -> std::path::PathBuf {
    xtask::demo::workspace_root().join("example-blinky/Cargo.toml")
}

fn main() -> miette::Result<()> {
    let cli = Cli::parse();
    cargo_tcpflash::report::install(Box::new(cargo_tcpflash::cli::StderrReporter));
    match cli.command {
        Command::SerialFlash(mut args) => {
            args.build.manifest_path.get_or_insert_with(example_blinky);
            let installed = xtask::serial::cli::run(&args)?;
            eprintln!("{installed}");
        }
        Command::Footprint { manifest_path, bootloader_manifest_path } => {
            print!("{}", xtask::footprint::measure(manifest_path)?.report());
            let bootloader = xtask::footprint::measure_bootloader(bootloader_manifest_path)?;
            print!("{}", bootloader.report());
            if !bootloader.fits() {
                std::process::exit(1);
            }
        }
        Command::Qemu => {
            let report = xtask::qemu::run_all(&xtask::qemu::program_manifest(), xtask::qemu::CASE_TIMEOUT)?;
            print!("{report}");
            if report.failures() > 0 {
                let dir = report.program.cases_dir.clone();
                Err(xtask::qemu::QemuError::CasesFailed {
                    failures: report.failures(),
                    cases: report.cases.len(),
                    dir,
                })?;
            }
        }
        Command::Proof => {
            let target_dir = xtask::proof::default_target_dir();
            eprintln!("building example-blinky into {}", target_dir.display());
            let blinky = xtask::proof::Blinky::build(&target_dir)?;
            let report = xtask::proof::run(&blinky, &mut |part| eprintln!("== {part}"));
            print!("{report}");
            if report.failures() > 0 {
                std::process::exit(1);
            }
        }
        Command::Sim(mut args) => {
            args.serve.build.manifest_path.get_or_insert_with(example_blinky);
            xtask::sim::run(&args)?
        }
        Command::Demo(args) => xtask::demo::run(&args)?,
        Command::Bench(args) => xtask::bench::run(&args)?,
        Command::BuildBench(args) => xtask::build_bench::run(&args)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
