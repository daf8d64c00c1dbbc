//! The `serial-flash` subcommand: arguments, file reading, one progress bar.

use std::path::{Path, PathBuf};

use crate::cli::BuildArgs;
use clap::Args;
use indicatif::ProgressBar;
use ota_agent::layout::{DEFAULT_LAYOUT, FlashLayout, SlotId};

use crate::build::Sdk;

use super::flasher::{
    self, ClassicReset, ConnectOptions, FlashError, NoReset, Region, ResetStrategy, SdkFiles, WriteProgress,
};
use super::rom::ChipDescription;

#[derive(Debug, Clone, Args)]
pub struct SerialFlashArgs {
    /// Serial port of the board's USB-serial adapter, e.g. /dev/ttyUSB0.
    #[arg(long, value_name = "PORT")]
    pub port: String,
    /// Second-stage bootloader written at 0x0 (an ESP8266 v1 image such as rBoot's
    /// rboot.bin). Default: tcpflash-boot, built for the firmware's flash layout (trial boots
    /// that go back to the old firmware when a new one does not confirm). Not for an SDK map
    /// (`--layout sdk-...`): the SDK's own boot_v1.7.bin goes there, with
    /// esp_init_data_default_v08.bin and blank.bin, all from the SDK (--sdk).
    #[arg(long, value_name = "FILE")]
    pub bootloader: Option<PathBuf>,
    /// Baud rate to talk to the ROM loader at (it detects the rate from SYNC).
    #[arg(long, default_value_t = 115_200, value_name = "BAUD")]
    pub baud: u32,
    /// Do not toggle DTR/RTS to reset into the loader (and to reboot after): the board is
    /// already in its bootloader, or the adapter has no auto-reset circuit.
    #[arg(long)]
    pub no_reset: bool,
    /// Connection attempts; each resets the board (unless --no-reset) and sends up to 5 SYNCs.
    #[arg(long, default_value_t = 7, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub connect_attempts: u32,
    /// Install this prebuilt user1.bin instead of building the firmware (then --layout says
    /// which layout it was built for).
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    #[command(flatten)]
    pub build: BuildArgs,
}

/// What was installed, for the summary line (and tests).
#[derive(Debug, Clone)]
pub struct Installed {
    pub chip: ChipDescription,
    pub layout: &'static FlashLayout,
    /// (name, flash offset, length) in the order written.
    pub regions: Vec<(String, u32, usize)>,
}

/// Runs `serial-flash`. Files given on the command line are checked first; then the port
/// is opened, before anything slow is built (the firmware, tcpflash-boot), so a missing
/// adapter is found at once; nothing is written until every region has passed its checks.
pub fn run(args: &SerialFlashArgs) -> Result<Installed, FlashError> {
    let bootloader = match &args.bootloader {
        Some(path) => Some((path.display().to_string(), read("bootloader", path)?)),
        None => None,
    };
    let image = match &args.image {
        Some(path) => {
            let layout = resolve_layout(args.build.layout.as_deref())?;
            let sdk = match layout.sdk_map() {
                Some(_) => Some(Sdk::locate(args.build.sdk.as_deref(), None, Path::new("."))?),
                None => None,
            };
            Some((layout, read("image", path)?, sdk))
        }
        None => None,
    };
    // With every file at hand (nothing to build), the whole install is checked before the
    // port is touched.
    let planned = match &image {
        Some((layout, user1, sdk)) if layout.sdk_map().is_some() || bootloader.is_some() => {
            Some((*layout, plan(layout, user1.clone(), sdk.as_ref(), bootloader.clone(), &args.build)?))
        }
        _ => None,
    };
    let port = flasher::open_port(&args.port, args.baud)?;
    let (layout, regions) = match planned {
        Some(planned) => planned,
        None => {
            let (layout, user1, sdk) = match image {
                Some(given) => given,
                // The same build as `cargo tcpflash build`: its layout comes from the firmware's
                // metadata too.
                None => {
                    let firmware = crate::build::build(&(&args.build).into())?;
                    let user1 = firmware.slot(SlotId::User1);
                    (firmware.layout, read("image", &user1.bin)?, firmware.sdk.clone())
                }
            };
            (layout, plan(layout, user1, sdk.as_ref(), bootloader, &args.build)?)
        }
    };

    let reset: &dyn ResetStrategy = if args.no_reset { &NoReset } else { &ClassicReset };
    let options = ConnectOptions { reset, attempts: args.connect_attempts };
    let mut client = flasher::connect(port, &args.port, options)?;
    let chip = flasher::check_chip(&mut client, &args.port, layout)?;

    let mut progress = Bar(progress_bar(regions.iter().map(|r| r.data.len() as u64).sum()));
    flasher::write_regions(&mut client, &regions, &mut progress)?;
    flasher::finish(&mut client)?;
    progress.0.finish_and_clear();
    reset.restart(client.port_mut().as_mut());
    Ok(Installed { chip, layout, regions: summary(&regions) })
}

/// The regions to write: on an SDK map the SDK's boot files around user1; else the given
/// bootloader (or tcpflash-boot, built here), the boot config and user1.
fn plan(
    layout: &'static FlashLayout,
    user1: Vec<u8>,
    sdk: Option<&Sdk>,
    bootloader: Option<(String, Vec<u8>)>,
    build: &BuildArgs,
) -> Result<Vec<Region>, FlashError> {
    if let Some(map) = layout.sdk_map() {
        if bootloader.is_some() {
            return Err(FlashError::BootloaderOnSdkMap { layout: layout.name });
        }
        let sdk = sdk.expect("an SDK map's build or --sdk located the SDK");
        let file = |name: &str| read("SDK file", &sdk.path.join("bin").join(name));
        let files = SdkFiles {
            bootloader: file(SdkFiles::BOOTLOADER)?,
            init_data: file(SdkFiles::INIT_DATA)?,
            blank: file(SdkFiles::BLANK)?,
        };
        let boot_path = sdk.path.join("bin").join(SdkFiles::BOOTLOADER).display().to_string();
        return flasher::plan_sdk_install(map, &boot_path, files, user1);
    }
    let (name, loader) = match bootloader {
        Some(given) => given,
        None => ("tcpflash-boot".to_owned(), tcpflash_boot(layout, build)?),
    };
    flasher::plan_install(layout, &name, loader, user1)
}

/// tcpflash-boot (`ota-agent/boot`), built for `layout` with the firmware's flash options.
pub fn tcpflash_boot(layout: &FlashLayout, firmware: &BuildArgs) -> Result<Vec<u8>, FlashError> {
    let args = crate::build::BuildOptions {
        manifest_path: Some(crate::build::tcpflash_boot_manifest()),
        layout: Some(layout.name.to_owned()),
        flash_mode: firmware.flash_mode.clone(),
        flash_size: firmware.flash_size.clone(),
        flash_freq: firmware.flash_freq.clone(),
        ..Default::default()
    };
    let built = crate::build::build_bootloader(&args)?;
    read("bootloader", &built.bin)
}

fn resolve_layout(name: Option<&str>) -> Result<&'static FlashLayout, FlashError> {
    match name {
        None => Ok(DEFAULT_LAYOUT),
        Some(name) => FlashLayout::by_name(name).ok_or_else(|| FlashError::UnknownLayout {
            name: name.to_owned(),
            known: FlashLayout::names().collect::<Vec<_>>().join(", "),
        }),
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, FlashError> {
    std::fs::read(path).map_err(|source| FlashError::ReadFile {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// One bar over every byte of every region; drawn only when stderr is a terminal.
/// The serial write's progress as a bar on the terminal.
struct Bar(ProgressBar);

impl WriteProgress for Bar {
    fn step(&mut self, what: &str) {
        self.0.set_message(what.to_owned());
    }

    fn written(&mut self, bytes: u64) {
        self.0.inc(bytes);
    }
}

fn progress_bar(total: u64) -> ProgressBar {
    crate::progress::byte_bar(total, "{msg:32} [{bar:30}] {bytes}/{total_bytes} ({eta})")
}

fn summary(regions: &[Region]) -> Vec<(String, u32, usize)> {
    regions.iter().map(|r| (r.name.clone(), r.offset, r.data.len())).collect()
}

impl std::fmt::Display for Installed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Installed on an {} ({} layout):", self.chip.name, self.layout.name)?;
        for (name, offset, len) in &self.regions {
            write!(f, " {name} at {offset:#x} ({len} bytes);")?;
        }
        f.write_str(" rebooted.")
    }
}
