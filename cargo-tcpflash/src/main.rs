use clap::Parser;

use cargo_tcpflash::cli::{CargoCli, Command};

fn main() -> miette::Result<()> {
    let CargoCli::Tcpflash(cli) = CargoCli::parse();
    match cli.command {
        Some(Command::Build(_args)) => Err(miette::miette!("`cargo tcpflash build` is not built yet")),
        Some(Command::Image(args)) => Ok(cargo_tcpflash::image_cmd::run(&args)?),
        None => Err(miette::miette!("pushing is not built yet")),
    }
}
