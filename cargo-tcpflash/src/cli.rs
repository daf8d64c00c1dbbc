//! Command-line definitions. `cargo tcpflash ...` runs this binary with `tcpflash` as its
//! first argument, so the parser is wrapped in a `cargo` level.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo", bin_name = "cargo", styles = clap::builder::Styles::styled())]
pub enum CargoCli {
    /// Build ESP8266 firmware for both OTA slots and push it to a device over TCP.
    Tcpflash(Cli),
}

#[derive(Debug, Args)]
#[command(version, args_conflicts_with_subcommands = true, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub push: PushArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the firmware, link it for both slots and write user1.bin and user2.bin.
    Build(BuildArgs),
    /// Convert an ESP8266 ELF into a v2 image, or describe an image (--info).
    Image(ImageArgs),
    /// Create a firmware crate that builds and pushes as it is (ota-agent, the pinned
    /// nightly, a main.rs with the agent, the watchdog fed and a panic that resets).
    New(crate::new_cmd::NewArgs),
    /// Push images built elsewhere: `cargo tcpflash push --host H USER1.BIN USER2.BIN` (the
    /// seed client's order); checked before connecting, verified after the reboot.
    Push(PrebuiltArgs),
    /// Write libota_agent.a and ota_agent.h: the agent for C firmware on the NONOS SDK
    /// (`void ota_init(void);` in user_init, as the seed's tcp_ota.h).
    CLib(CLibArgs),
    /// First install over USB serial: tcpflash-boot (or --bootloader), the boot config and
    /// user1 through the ESP8266 ROM loader.
    SerialFlash(crate::serial::cli::SerialFlashArgs),
    /// The virtual ESP8266: the real agent on 127.0.0.1 with its flash in a file (`sim
    /// status` describes a flash file).
    Sim(crate::sim::SimArgs),
    /// The boards that announce themselves over mDNS (`_tcpflash._tcp.local`): host name,
    /// address, firmware, version, build, slot, whether a key is required.
    List(crate::discover::ListArgs),
}

#[derive(Debug, Args)]
pub struct CLibArgs {
    /// The folder to write libota_agent.a and ota_agent.h into.
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// The ESP8266 NONOS SDK folder (its ROM table decides which routines the library
    /// takes from the ROM).
    #[arg(long, value_name = "PATH", env = "ESP8266_NONOS_SDK")]
    pub sdk: Option<PathBuf>,
    /// Where the library is built.
    #[arg(long, value_name = "DIRECTORY", default_value = "target")]
    pub target_dir: PathBuf,
}

/// Which firmware to build and how; shared by `build` and the push.
#[derive(Debug, Clone, Default, Args)]
pub struct BuildArgs {
    /// Package to build (when the manifest is a workspace).
    #[arg(short, long, value_name = "SPEC")]
    pub package: Option<String>,
    /// Path to the firmware's Cargo.toml.
    #[arg(long, value_name = "PATH")]
    pub manifest_path: Option<PathBuf>,
    /// Space or comma separated list of features to activate.
    #[arg(short = 'F', long, value_delimiter = ',')]
    pub features: Vec<String>,
    /// Activate all available features.
    #[arg(long)]
    pub all_features: bool,
    /// Do not activate the `default` feature.
    #[arg(long)]
    pub no_default_features: bool,
    /// Build with the release profile (the default: firmware needs fat LTO).
    #[arg(short, long, conflicts_with = "profile")]
    pub release: bool,
    /// Build with the given cargo profile.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Directory for all generated artifacts (default: cargo's, from the firmware's metadata).
    #[arg(long, value_name = "DIRECTORY")]
    pub target_dir: Option<PathBuf>,
    /// Board: esp8266 or qemu (QEMU's XTFPGA board with an lx106 core) (default: metadata,
    /// else esp8266).
    #[arg(long, value_name = "BOARD")]
    pub board: Option<String>,
    /// Flash layout: 512KB, 1MB, 2MB or 4MB (rBoot), or an SDK map for --platform nonos-sdk:
    /// sdk-1MB, sdk-2MB, sdk-4MB, sdk-2MB-c1, sdk-4MB-c1 (default: metadata, else 1MB).
    #[arg(long, value_name = "LAYOUT")]
    pub layout: Option<String>,
    /// Platform: bare-metal (the firmware owns the chip, boots through rBoot) or nonos-sdk
    /// (linked with Espressif's NONOS SDK for WiFi) (default: metadata, else bare-metal).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// The ESP8266 NONOS SDK folder, for --platform nonos-sdk (default: $ESP8266_NONOS_SDK,
    /// then [package.metadata.tcpflash] sdk).
    #[arg(long, value_name = "PATH", env = "ESP8266_NONOS_SDK")]
    pub sdk: Option<PathBuf>,
    /// Flash mode written in the image header: qio, qout, dio or dout.
    #[arg(long, value_name = "MODE")]
    pub flash_mode: Option<String>,
    /// Flash size written in the image header (default: the layout's size).
    #[arg(long, value_name = "SIZE")]
    pub flash_size: Option<String>,
    /// Flash frequency written in the image header: 40m, 26m, 20m or 80m.
    #[arg(long, value_name = "FREQ")]
    pub flash_freq: Option<String>,
    /// The key file the firmware's build script embeds (`TCPFLASH_KEY_FILE` in the cargo it
    /// runs), as an absolute path; set by the push from its own key.
    #[arg(skip)]
    pub key_file: Option<PathBuf>,
}

impl From<&BuildArgs> for crate::build::BuildOptions {
    fn from(args: &BuildArgs) -> Self {
        crate::build::BuildOptions {
            package: args.package.clone(),
            manifest_path: args.manifest_path.clone(),
            features: args.features.clone(),
            all_features: args.all_features,
            no_default_features: args.no_default_features,
            release: args.release,
            profile: args.profile.clone(),
            target_dir: args.target_dir.clone(),
            board: args.board.clone(),
            layout: args.layout.clone(),
            platform: args.platform.clone(),
            sdk: args.sdk.clone(),
            flash_mode: args.flash_mode.clone(),
            flash_size: args.flash_size.clone(),
            flash_freq: args.flash_freq.clone(),
            key_file: args.key_file.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// The ELF to convert, or the image to describe with --info.
    #[arg(value_name = "FILE")]
    pub input: PathBuf,
    /// Where to write the image.
    #[arg(short, long, value_name = "OUT", required_unless_present = "info")]
    pub output: Option<PathBuf>,
    /// Describe FILE (an image): header, segments, checksum, CRC and slot descriptor.
    #[arg(long, conflicts_with = "output")]
    pub info: bool,
    /// Flash mode: qio, qout, dio or dout.
    #[arg(long, default_value = "qio", value_name = "MODE")]
    pub flash_mode: String,
    /// Flash size: 256KB, 512KB, 1MB, 2MB, 4MB, 2MB-c1, 4MB-c1, 8MB or 16MB.
    #[arg(long, default_value = "1MB", value_name = "SIZE")]
    pub flash_size: String,
    /// Flash frequency: 40m, 26m, 20m or 80m.
    #[arg(long, default_value = "40m", value_name = "FREQ")]
    pub flash_freq: String,
}

/// What a push's exit status means (shown by `--help`).
pub const EXIT_CODES: &str = "\
Pushing (no subcommand): build both slots, push the image the device asks for, then wait for
the device to reboot and check it runs the new slot.

Exit status:
  0  pushed, and the device runs the new slot (or --no-verify)
  1  other errors
  2  bad command line, or no device given (--host, $TCPFLASH_HOST, metadata `host`)
  3  the firmware did not build, or an image does not fit its slot
  4  network: name not resolved, connection refused, timeout, transfer interrupted,
     device did not come back after rebooting
  5  the device refused: an `ERR:` line, `Invalid` image, or a reply that is not the protocol
  6  the device came back on the old slot: it reverted
130  stopped by Ctrl-C
Several boards (--all, --host given more than once, NAME.local): the status of the first
failed board in the table, 0 when every board runs the new firmware. (the connection is reset; the message says what the device does)";

/// Push options: used when no subcommand is given (build, then push).
#[derive(Debug, Args)]
pub struct PushArgs {
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub fleet: crate::fleet::FleetArgs,
    #[command(flatten)]
    pub build: BuildArgs,
}

/// `cargo tcpflash push USER1.BIN USER2.BIN`: images built elsewhere (a C project's, the
/// seed's `make`), in the seed client's order.
#[derive(Debug, Args)]
pub struct PrebuiltArgs {
    /// The image for the first slot (user1.bin).
    #[arg(value_name = "USER1.BIN")]
    pub user1: PathBuf,
    /// The image for the second slot (user2.bin).
    #[arg(value_name = "USER2.BIN")]
    pub user2: PathBuf,
    /// The flash layout the images were built for (default: the flash size in their
    /// headers): 512KB, 1MB, 2MB, 4MB or an SDK map (sdk-1MB...).
    #[arg(long, value_name = "LAYOUT")]
    pub layout: Option<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Which device, how to talk to it, and how long to wait.
#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// Device to push to (default: $TCPFLASH_HOST, then [package.metadata.tcpflash] host).
    /// NAME.local is found by mDNS; give --host several times to push to several boards at
    /// once.
    #[arg(long, value_name = "HOST")]
    pub host: Vec<String>,
    /// TCP port of the device's agent (default: [package.metadata.tcpflash] port, then 65056).
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// The device's key file (32 random bytes or 64 hex digits): proves to a device built
    /// with a key that this push may replace its firmware, and is built into the new firmware.
    #[arg(long, value_name = "PATH", env = ota_agent::auth::KEY_FILE_ENV)]
    pub key_file: Option<PathBuf>,
    /// Do not wait for the device to come back on the new slot.
    #[arg(long)]
    pub no_verify: bool,
    /// Seconds to wait for the TCP connection to open.
    #[arg(long, default_value = "5", value_name = "SECS", value_parser = parse_seconds)]
    pub connect_timeout: Duration,
    /// Seconds to wait for each answer of the device (and for it to take more data).
    #[arg(long, default_value = "10", value_name = "SECS", value_parser = parse_seconds)]
    pub timeout: Duration,
    /// Seconds to wait for the device to answer again after it rebooted.
    #[arg(long, default_value = "30", value_name = "SECS", value_parser = parse_seconds)]
    pub reboot_timeout: Duration,
    /// Speak the seed's lines only (no SHA-256 line, no key): for an agent without
    /// tcpflash's extensions, such as the seed's C agent (a refusal of the SHA-256 line
    /// falls back to this by itself, unless the push has a key).
    #[arg(long, conflicts_with = "key_file")]
    pub plain: bool,
}

impl DeviceArgs {
    pub fn timeouts(&self) -> crate::push::Timeouts {
        crate::push::Timeouts {
            connect: self.connect_timeout,
            reply: self.timeout,
            reboot: self.reboot_timeout,
        }
    }
}

/// A positive number of seconds, fractions allowed (`0.5`).
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text.trim().parse().map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(seconds > 0.0 && seconds <= 86_400.0) {
        return Err(format!("{text} s is out of range: use a number of seconds above 0, at most 86400"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The CLI's [`crate::report::Reporter`]: cargo-style status lines on stderr (the verb
/// right-aligned in 12 columns, as cargo prints `Compiling`).
pub struct StderrReporter;

impl crate::report::Reporter for StderrReporter {
    fn status(&self, verb: &str, what: &str) {
        eprintln!("{verb:>12} {what}");
    }
}
