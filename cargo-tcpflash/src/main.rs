use std::io::IsTerminal;

use clap::Parser;

use cargo_tcpflash::cli::{CargoCli, Command};

fn main() -> miette::Result<()> {
    let CargoCli::Tcpflash(cli) = CargoCli::parse();
    cargo_tcpflash::report::install(Box::new(cargo_tcpflash::cli::StderrReporter));
    // Wrapped lines help on a terminal; in a log they split flags like `--no-verify`.
    let wrap = std::io::stderr().is_terminal();
    let _ = miette::set_hook(Box::new(move |_| {
        Box::new(miette::MietteHandlerOpts::new().wrap_lines(wrap).build())
    }));
    match cli.command {
        Some(Command::Build(args)) => cargo_tcpflash::build_cmd::run(&args).map(drop).map_err(Into::into),
        Some(Command::Image(args)) => Ok(cargo_tcpflash::image_cmd::run(&args)?),
        Some(Command::CLib(args)) => cargo_tcpflash::build_cmd::c_lib(&args).map(drop).map_err(Into::into),
        Some(Command::SerialFlash(args)) => {
            let installed = cargo_tcpflash::serial::cli::run(&args)?;
            eprintln!("{installed}");
            Ok(())
        }
        Some(Command::Sim(args)) => Ok(cargo_tcpflash::sim::run(&args)?),
        Some(Command::New(args)) => {
            let path = cargo_tcpflash::new_cmd::run(&args)?;
            eprintln!(
                "Created {}: `cargo tcpflash build` there builds it; see its README for the first install and pushes",
                path.display()
            );
            Ok(())
        }
        // A push picks its exit status by kind of failure (see --help).
        Some(Command::Push(args)) => std::process::exit(cargo_tcpflash::push_cmd::run_prebuilt(&args)),
        Some(Command::List(args)) => Ok(cargo_tcpflash::discover::list(&args)?),
        None => std::process::exit(cargo_tcpflash::push_cmd::run(&cli.push)),
    }
}
