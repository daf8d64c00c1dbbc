use clap::Parser;

use cargo_tcpflash::cli::{CargoCli, Command};

fn main() -> miette::Result<()> {
    let CargoCli::Tcpflash(cli) = CargoCli::parse();
    match cli.command {
        Some(Command::Build(_args)) => Err(miette::miette!("`cargo tcpflash build` is not built yet")),
        Some(Command::Image(_args)) => Err(miette::miette!("`cargo tcpflash image` is not built yet")),
        None => Err(miette::miette!("pushing is not built yet")),
    }
}
