//! `cargo tcpflash sim`: the virtual ESP8266 on 127.0.0.1, its flash in a file.
//!
//! A new flash file gets the factory install `serial-flash` would write (bootloader at 0x0,
//! boot config at 0x1000, user1 in the first slot). The virtual device runs no machine code,
//! so unless `--bootloader` names an image, sector 0 holds a small v1 image labelled as the
//! virtual device's stand-in for tcpflash-boot (whose flow the device runs on the host); its
//! header carries the flash size. With `--bootloader rboot.bin` (any image that does not name
//! tcpflash-boot) the device runs the rBoot model instead. Everything else lives in
//! `tcpflash_sim`.
//!
//! `--board qemu` runs the firmware itself instead, as lx106 machine code on QEMU's XTFPGA
//! board (`crate::qemu_board`).

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::cli::BuildArgs;
use clap::{Args, Subcommand};
use miette::Diagnostic;
use ota_agent::auth::{self, Key, KeyFileError};
use ota_agent::boot::BootStatus;
use ota_agent::descriptor::BUILD_ID_LEN;
use ota_agent::image::FlashSize;
use ota_agent::layout::{DEFAULT_LAYOUT, FlashLayout, LAYOUTS, SlotId};
use ota_agent::protocol::DEFAULT_PORT;
use serde_json::{Value, json};
use tcpflash_sim::timed::{FlashTimings, TimedFlash};
use tcpflash_sim::{DeviceStatus, FileFlash, OpenError, SecondStage, ServeError, SlotStatus, VirtualDevice};
use thiserror::Error;

use crate::serial::bootloader;
use crate::serial::flasher::{self, FlashError};

/// Entry point of the stand-in bootloader (never run: the boot model stands in for it).
const STAND_IN_ENTRY: u32 = 0x4010_0000;
/// What the stand-in bootloader's one segment says, for anyone reading the flash file.
/// It names tcpflash-boot, so the virtual device runs tcpflash-boot's flow for it.
pub const STAND_IN_LABEL: &[u8] =
    b"tcpflash virtual ESP8266: stand-in for tcpflash-boot (the device runs its flow on the host), not executable code";

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SimArgs {
    #[command(subcommand)]
    pub command: Option<SimCommand>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Print one JSON line: `booted_slot` (what tcpflash-boot starts from this flash at the
    /// next power-on), `next_slot` (where a push goes), `bricked`, `boot` (rom, offset, the
    /// bootloader's lines), `boot_status` (confirmed, trial with its attempt, reverted...),
    /// the boot config, and per slot `valid` (the agent's full check), `error`, `len`,
    /// `rboot_ok`, `name`, `version` and `build_id`. Exits with an error when the flash boots
    /// nothing (after printing the status).
    Status(StatusArgs),
}

/// Serve the virtual device until Ctrl-C or SIGTERM.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The flash file: created with a factory install if missing, kept across runs.
    #[arg(long, value_name = "PATH", required = true)]
    pub flash: Option<PathBuf>,
    /// TCP port to listen on, on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = DEFAULT_PORT, value_name = "PORT")]
    pub port: u16,
    /// Factory install this user1.bin instead of building the firmware (example-blinky unless
    /// --manifest-path says otherwise). Only used when the flash file is new; --layout then
    /// says which layout the image was built for.
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// Put this bootloader at 0x0 of a new flash file instead of the stand-in: tcpflash-boot's
    /// image (the device runs its flow, as with the stand-in), or any other ESP8266 v1 image
    /// such as rBoot's rboot.bin (the device then runs the rBoot model: no trial boots).
    #[arg(long, value_name = "FILE")]
    pub bootloader: Option<PathBuf>,
    /// Seconds the agent waits for a silent client before dropping it.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub idle_timeout: f64,
    /// Give the agent this key file (32 random bytes or 64 hex digits), as firmware built with
    /// TCPFLASH_KEY_FILE has it: every push must then prove it holds the key.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Seconds the first failed authentication locks the agent (each further failure doubles
    /// it, up to 64 times).
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub auth_backoff: f64,
    /// Make each flash operation take a W25Q32's typical time (4 KB sector erase 45 ms, 64 KB
    /// block erase 150 ms, page program 0.7 ms, reads 7 us per 64 bytes), the device serving
    /// nothing meanwhile, as a board's single core; the network stays loopback's. For
    /// deterministic numbers on a modelled link, see `cargo xtask bench`.
    #[arg(long)]
    pub timed: bool,
    /// Keep the previous firmware in the idle slot: no pre-erase (the agent's default erases
    /// the idle slot in the background once the running firmware is confirmed, so the next
    /// push only programs).
    #[arg(long)]
    pub no_pre_erase: bool,
    /// A fault switch for tests of trial boots: the firmware with this build id (16 hex
    /// digits, as `cargo tcpflash` prints it) crashes at each start, before it confirms, and
    /// the device resets. Repeat for several builds.
    #[arg(long, value_name = "BUILD_ID", value_parser = parse_build_id)]
    pub crashing: Vec<[u8; BUILD_ID_LEN]>,
    /// Announce the device over mDNS as NAME.local (service _tcpflash._tcp, with the agent's
    /// port and the firmware's name, version, build and slot), on the loopback interface only:
    /// `cargo tcpflash list` then finds it, and several virtual devices form a fleet for
    /// `cargo tcpflash --all`. Letters, digits and `-`, at most 63.
    #[arg(long, value_name = "NAME", value_parser = parse_name)]
    pub name: Option<String>,
    #[command(flatten)]
    pub build: BuildArgs,
}

fn parse_name(text: &str) -> Result<String, String> {
    let label = text.strip_suffix(".local").unwrap_or(text);
    if label.is_empty() || label.len() > 63 || !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(format!("`{text}` is not a host name: use letters, digits and `-`, at most 63 of them"));
    }
    Ok(label.to_owned())
}

fn parse_build_id(text: &str) -> Result<[u8; BUILD_ID_LEN], String> {
    let mut id = [0u8; BUILD_ID_LEN];
    ota_agent::hex::decode(text.as_bytes(), &mut id)
        .map_err(|_| format!("a build id is {} hex digits, not `{text}`", 2 * BUILD_ID_LEN))?;
    Ok(id)
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The flash file of a virtual device.
    #[arg(long, value_name = "PATH")]
    pub flash: PathBuf,
    /// Flash layout (default: the one whose size matches the file).
    #[arg(long, value_name = "LAYOUT")]
    pub layout: Option<String>,
}

#[derive(Debug, Error, Diagnostic)]
pub enum SimError {
    #[error("cannot use the flash file {}", path.display())]
    #[diagnostic(help("check the path; delete the file to start over with a factory install"))]
    Flash {
        path: PathBuf,
        #[source]
        source: OpenError,
    },
    #[error("no flash file at {}", path.display())]
    #[diagnostic(help("`cargo tcpflash sim --flash {}` creates one with a factory install", path.display()))]
    NoFlashFile { path: PathBuf },
    #[error("{} is {size} bytes, which is no flash layout's size", path.display())]
    #[diagnostic(help("flash files are 512KB, 1MB, 2MB or 4MB; delete it to start over"))]
    UnknownSize { path: PathBuf, size: usize },
    #[error("{} is {size} bytes, but the {layout} layout needs {needed}", path.display())]
    #[diagnostic(help("leave out --layout to use the file's own size, or delete the file to start over"))]
    LayoutMismatch { path: PathBuf, size: usize, layout: &'static str, needed: u32 },
    #[error("unknown flash layout `{name}`")]
    #[diagnostic(help("use one of: 512KB, 1MB, 2MB, 4MB"))]
    UnknownLayout { name: String },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Install(#[from] FlashError),
    #[error("cannot listen on 127.0.0.1:{port}")]
    #[diagnostic(help(
        "another program (or virtual device) uses that port: pick another with --port, or 0 for any"
    ))]
    Listen {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the mDNS port (UDP 5353) on the loopback interface")]
    #[diagnostic(help(
        "another program holds UDP 5353 without sharing it (SO_REUSEADDR), or loopback has no multicast \
         (`ip link set lo multicast on`); leave out --name to run without mDNS"
    ))]
    Mdns(#[source] std::io::Error),
    #[error("cannot install the Ctrl-C/SIGTERM handler")]
    Signals(#[source] std::io::Error),
    #[error("--idle-timeout must be more than 0 and at most {MAX_SECONDS} seconds (a day), not {value}")]
    #[diagnostic(help("for example --idle-timeout 30"))]
    BadTimeout { value: f64 },
    #[error("--auth-backoff must be more than 0 and at most 3600 seconds, not {value}")]
    #[diagnostic(help("for example --auth-backoff 1"))]
    BadBackoff { value: f64 },
    #[error("cannot read the key file {}", path.display())]
    #[diagnostic(help("check the path given with --key-file"))]
    KeyFileUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a key file: {reason}", path.display())]
    #[diagnostic(help(
        "a key file holds 32 random bytes (`head -c 32 /dev/urandom > tcpflash.key`) or 64 hex digits"
    ))]
    KeyFileFormat { path: PathBuf, reason: KeyFileError },
    #[error("the virtual ESP8266 stopped: {0}")]
    #[diagnostic(help(
        "a real board in this state needs `cargo tcpflash serial-flash`; for the virtual one, delete the flash file to start over"
    ))]
    Serve(ServeError),
    #[error("{} is a QEMU board's flash file", path.display())]
    #[diagnostic(help("serve it with --board qemu (the virtual ESP8266 would read it as a 4MB flash)"))]
    QemuFlash { path: PathBuf },
    #[error(transparent)]
    #[diagnostic(transparent)]
    QemuBoard(#[from] crate::qemu_board::BoardError),
    #[error("the flash {} boots nothing: {reason}", path.display())]
    #[diagnostic(help(
        "the status above says why slot by slot; a real board in this state needs `cargo tcpflash serial-flash`"
    ))]
    Bricked { path: PathBuf, reason: String },
}

/// The longest idle timeout: a day (longer ones would overflow the agent's clock arithmetic
/// and mean nothing for a device anyway).
const MAX_SECONDS: f64 = 86_400.0;

/// Runs `cargo tcpflash sim ...`.
pub fn run(args: &SimArgs) -> Result<(), SimError> {
    match &args.command {
        Some(SimCommand::Status(status)) => {
            let json = status_json(&status.flash, status.layout.as_deref())?;
            println!("{json}");
            // The status is printed either way; a flash that boots nothing is a failure.
            match json["bricked"].as_str() {
                Some(reason) => {
                    Err(SimError::Bricked { path: status.flash.clone(), reason: reason.to_owned() })
                }
                None => Ok(()),
            }
        }
        None => serve(&args.serve),
    }
}

/// Opens (or factory-installs) the flash, listens, and serves until Ctrl-C or SIGTERM.
pub fn serve(args: &ServeArgs) -> Result<(), SimError> {
    // `--board qemu`: the firmware as lx106 machine code under QEMU, not the host build.
    if args.build.board.as_deref() == Some(crate::qemu_board::BOARD) {
        return Ok(crate::qemu_board::serve(args)?);
    }
    let path = args.flash.clone().expect("clap requires --flash");
    if !(args.idle_timeout > 0.0 && args.idle_timeout <= MAX_SECONDS) {
        return Err(SimError::BadTimeout { value: args.idle_timeout });
    }
    if !(args.auth_backoff > 0.0 && args.auth_backoff <= 3600.0) {
        return Err(SimError::BadBackoff { value: args.auth_backoff });
    }
    let key = args.key_file.as_deref().map(read_key).transpose()?;
    let (flash, layout) = open_or_install(&path, args)?;
    let timings = FlashTimings::default();
    let flash =
        if args.timed { TimedFlash::sleeping(flash, timings) } else { TimedFlash::new(flash, timings) };
    let mut device = VirtualDevice::new(flash, layout).expect("the layout was chosen from the file's size");
    device.set_idle_timeout(std::time::Duration::from_secs_f64(args.idle_timeout));
    device.set_auth_backoff(std::time::Duration::from_secs_f64(args.auth_backoff));
    device.set_pre_erase(!args.no_pre_erase);
    if let Some(key) = key {
        device.set_key(key);
    }
    for &build_id in &args.crashing {
        device.declare_crashing(build_id);
    }

    // A signal only sets the flag; the device checks it between flash operations.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(SimError::Signals)?;
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, args.port))
        .map_err(|source| SimError::Listen { port: args.port, source })?;
    let addr = listener.local_addr().map_err(|source| SimError::Listen { port: args.port, source })?;
    let auth = match &args.key_file {
        Some(file) => format!("pushes must prove the key in {}", file.display()),
        None => "no key".to_owned(),
    };
    if let Some(name) = &args.name {
        let announcer =
            tcpflash_sim::mdns::Announcer::open_loopback(name, addr.port()).map_err(SimError::Mdns)?;
        device.set_mdns(announcer);
    }
    println!("listening on {addr} (flash {}, layout {}, {auth})", path.display(), layout.name);
    if args.timed {
        println!(
            "timed: sector erase {:?}, block erase {:?}, page program {:?}, read {:?} per 64 bytes",
            timings.sector_erase, timings.block_erase, timings.page_program, timings.read_64_bytes
        );
    }
    let served = device.serve(&listener, &stop, &mut |event| println!("{event}"));
    let _ = device.flash().inner().sync();
    if args.timed {
        let work = device.flash().work();
        println!(
            "flash work: {} sector erases, {} block erases, {} page programs, {} bytes read: {:.3} s",
            work.sector_erases,
            work.block_erases,
            work.page_programs,
            work.bytes_read,
            work.total().as_secs_f64()
        );
    }
    served.map_err(SimError::Serve)?;
    println!("stopped");
    Ok(())
}

fn read_key(path: &Path) -> Result<Key, SimError> {
    let bytes =
        std::fs::read(path).map_err(|source| SimError::KeyFileUnreadable { path: path.into(), source })?;
    auth::parse_key(&bytes).map_err(|reason| SimError::KeyFileFormat { path: path.into(), reason })
}

/// The flash file and its layout; a missing file gets the factory install first.
fn open_or_install(path: &Path, args: &ServeArgs) -> Result<(FileFlash, &'static FlashLayout), SimError> {
    if path.exists() {
        let flash = FileFlash::open(path).map_err(|source| SimError::Flash { path: path.into(), source })?;
        if crate::qemu_board::flash_layout(flash.bytes()).is_some() {
            return Err(SimError::QemuFlash { path: path.into() });
        }
        let layout = layout_for_size(path, flash.bytes().len(), args.build.layout.as_deref())?;
        return Ok((flash, layout));
    }
    let (layout, user1) = match &args.image {
        Some(image) => (named_layout(args.build.layout.as_deref())?, read("image", image)?),
        None => {
            // The firmware of the current folder, as cargo finds it (or --manifest-path).
            let firmware = crate::build::build(&(&args.build).into()).map_err(FlashError::from)?;
            (firmware.layout, read("image", &firmware.slot(SlotId::User1).bin)?)
        }
    };
    let bootloader = match &args.bootloader {
        Some(file) => Some((file.display().to_string(), read("bootloader", file)?)),
        None => None,
    };
    let flash = factory_install(path, layout, user1, bootloader)?;
    Ok((flash, layout))
}

/// Creates the flash file of a new virtual device with what `serial-flash` would write:
/// `bootloader` (name, bytes) or the stand-in at 0x0, the boot config, and `user1`.
pub fn factory_install(
    path: &Path,
    layout: &'static FlashLayout,
    user1: Vec<u8>,
    bootloader: Option<(String, Vec<u8>)>,
) -> Result<FileFlash, SimError> {
    let (name, bootloader) = bootloader.unwrap_or_else(|| {
        ("the virtual device's stand-in for tcpflash-boot".to_owned(), stand_in_bootloader(layout))
    });
    let regions = flasher::plan_install(layout, &name, bootloader, user1)?;
    let parts: Vec<(&str, u32, &[u8])> =
        regions.iter().map(|r| (r.name.as_str(), r.offset, r.data.as_slice())).collect();
    let flash = FileFlash::create(path, layout.flash_size, &parts)
        .map_err(|source| SimError::Flash { path: path.into(), source })?;
    let summary: Vec<String> =
        regions.iter().map(|r| format!("{} at {:#x} ({} bytes)", r.name, r.offset, r.data.len())).collect();
    println!("factory install into {}: {}", path.display(), summary.join(", "));
    Ok(flash)
}

/// A v1 image that tcpflash-boot's place at 0x0 holds on the virtual device. Its one DRAM
/// segment is a label saying what it is (and naming tcpflash-boot, which is how the device
/// knows to run its flow); header byte 3 carries the layout's flash size, as a real
/// bootloader's does.
pub fn stand_in_bootloader(layout: &FlashLayout) -> Vec<u8> {
    let mut image = bootloader::build_v1(STAND_IN_ENTRY, &[(ota_agent::layout::DRAM.start, STAND_IN_LABEL)]);
    let size = FlashSize::from_name(layout.name).expect("every layout name is an esptool flash size");
    // The size nibble is not covered by the image checksum.
    image[3] = size.code() << 4 | (image[3] & 0x0F);
    image
}

/// `sim status` as a JSON value.
pub fn status_json(path: &Path, layout: Option<&str>) -> Result<Value, SimError> {
    if !path.exists() {
        return Err(SimError::NoFlashFile { path: path.into() });
    }
    let bytes = std::fs::read(path).map_err(|source| SimError::Flash {
        path: path.into(),
        source: OpenError::Io { path: path.into(), source },
    })?;
    // A QEMU board's file is 4 MiB whatever its layout: its sector 0 says which.
    let layout = match (layout, crate::qemu_board::flash_layout(&bytes)) {
        (None, Some(board)) => board,
        (layout, _) => layout_for_size(path, bytes.len(), layout)?,
    };
    Ok(device_status_json(&DeviceStatus::of(&bytes[..layout.flash_size as usize], layout)))
}

/// The JSON form of a device's status.
pub fn device_status_json(status: &DeviceStatus) -> Value {
    let name = |slot: Option<SlotId>| slot.map(SlotId::name);
    let slots: serde_json::Map<String, Value> =
        status.slots.iter().map(|slot| (slot.slot.id.name().to_owned(), slot_json(slot))).collect();
    let config = match &status.config {
        Ok(config) => json!({
            "valid": true,
            "current_rom": config.current_rom,
            "count": config.count,
            "roms": config.roms,
            "current_slot": name(config.current_slot(status.layout)),
        }),
        Err(error) => json!({ "valid": false, "error": error.to_string() }),
    };
    let (boot, bricked) = match &status.started {
        Ok(launched) => {
            let stage = match launched.stage {
                SecondStage::TcpflashBoot => "tcpflash-boot",
                SecondStage::Rboot => "rBoot",
            };
            let console = &launched.console;
            (
                json!({ "by": stage, "rom": launched.rom, "offset": launched.offset, "console": console }),
                Value::Null,
            )
        }
        Err(halted) => (Value::Null, Value::String(halted.to_string())),
    };
    let trial = status.running.map(|running| boot_status_json(running.status));
    json!({
        "layout": status.layout.name,
        "booted_slot": name(status.booted_slot()),
        "next_slot": name(status.next_slot()),
        "bricked": bricked,
        "boot": boot,
        "boot_status": trial,
        "config": config,
        "slots": slots,
    })
}

/// `{"state": "trial", "attempt": 1, "max": 3, "confirmed": false}` and the like.
fn boot_status_json(status: BootStatus) -> Value {
    let state = ota_agent::protocol::in_irom::state_word(status).to_string();
    match status {
        BootStatus::Trial { attempt, max, confirmed } => {
            json!({ "state": state, "attempt": attempt, "max": max, "confirmed": confirmed })
        }
        _ => json!({ "state": state }),
    }
}

fn slot_json(slot: &SlotStatus) -> Value {
    let descriptor = slot.descriptor.as_ref();
    json!({
        "offset": slot.slot.offset,
        "capacity": slot.slot.capacity,
        "valid": slot.valid(),
        "error": slot.check.as_ref().err().map(ToString::to_string),
        "len": slot.image_len(),
        "rboot_ok": slot.rboot_ok,
        "name": descriptor.map(|d| d.name().to_owned()),
        "version": descriptor.map(|d| d.version().to_owned()),
        "build_id": descriptor.map(|d| String::from_utf8_lossy(&d.build_id_hex()).into_owned()),
    })
}

/// The layout named on the command line, else the one of the file's size.
fn layout_for_size(path: &Path, size: usize, named: Option<&str>) -> Result<&'static FlashLayout, SimError> {
    match named {
        Some(name) => {
            let layout = named_layout(Some(name))?;
            if layout.flash_size as usize != size {
                return Err(SimError::LayoutMismatch {
                    path: path.into(),
                    size,
                    layout: layout.name,
                    needed: layout.flash_size,
                });
            }
            Ok(layout)
        }
        None => LAYOUTS
            .iter()
            .find(|layout| layout.flash_size as usize == size)
            .ok_or(SimError::UnknownSize { path: path.into(), size }),
    }
}

fn named_layout(name: Option<&str>) -> Result<&'static FlashLayout, SimError> {
    match name {
        None => Ok(DEFAULT_LAYOUT),
        Some(name) => FlashLayout::by_name(name).ok_or_else(|| SimError::UnknownLayout { name: name.into() }),
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, FlashError> {
    std::fs::read(path).map_err(|source| FlashError::ReadFile {
        what,
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ota_agent::flash::RamNor;
    use tcpflash_sim::rboot;

    #[test]
    fn the_stand_in_bootloader_is_a_labelled_v1_image_with_the_layout_size() {
        for layout in &LAYOUTS {
            let image = stand_in_bootloader(layout);
            let info = bootloader::check(&image).unwrap();
            assert_eq!(info.segments, [(0x3FFE_8000, STAND_IN_LABEL.len() as u32)]);
            assert!(image.windows(10).any(|w| w == b"stand-in f"), "the label is readable in the file");
            assert_eq!(rboot::rboot_flash_size(image[3] >> 4), layout.flash_size, "{}", layout.name);
        }
    }

    #[test]
    fn layouts_follow_the_file_size_unless_named() {
        let path = Path::new("f.bin");
        assert_eq!(layout_for_size(path, 0x10_0000, None).unwrap().name, "1MB");
        assert_eq!(layout_for_size(path, 0x40_0000, None).unwrap().name, "4MB");
        assert!(matches!(layout_for_size(path, 12288, None), Err(SimError::UnknownSize { .. })));
        assert!(matches!(
            layout_for_size(path, 0x10_0000, Some("2MB")),
            Err(SimError::LayoutMismatch { .. })
        ));
        assert!(matches!(layout_for_size(path, 0x10_0000, Some("3MB")), Err(SimError::UnknownLayout { .. })));
    }

    #[test]
    fn status_of_an_empty_chip_is_bricked_with_no_slots_valid() {
        let chip = RamNor::new(0x10_0000);
        let value = device_status_json(&DeviceStatus::of(chip.bytes(), DEFAULT_LAYOUT));
        assert_eq!(value["booted_slot"], Value::Null);
        assert_eq!(value["next_slot"], Value::Null);
        assert!(value["bricked"].as_str().unwrap().contains("no bootloader at 0x0"), "{value}");
        assert_eq!(value["boot_status"], Value::Null);
        assert_eq!(value["slots"]["user1"]["valid"], false);
        assert_eq!(value["slots"]["user2"]["version"], Value::Null);
        assert_eq!(value["config"]["valid"], false);
    }
}
