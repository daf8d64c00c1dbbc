//! `cargo tcpflash --host H`: build both slots, push the image the device asks for, and
//! check it came back on the new slot. The device is asked which slot it wants while the
//! firmware builds ([`push::EarlyPush`]). Output: cargo-style status lines and the progress
//! bar on stderr, one result line on stdout; errors as miette reports, with an exit status
//! per kind of failure (`cli::EXIT_CODES`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use miette::Diagnostic;
use ota_agent::auth::{self, Key, KeyFileError};
use ota_agent::client::Authentication;
use ota_agent::layout::SlotId;
use ota_agent::protocol::DEFAULT_PORT;
use thiserror::Error;

use crate::build::{self, BuildError, Firmware, FirmwarePackage, status};
use crate::cli::{DeviceArgs, PrebuiltArgs, PushArgs};
use crate::prebuilt;
use crate::push::{self, CancelStage, Progress, Protocol, PushError, Timeouts, exit};

/// The environment variable naming the device when `--host` is not given.
pub const HOST_ENV: &str = "TCPFLASH_HOST";

#[derive(Debug, Error, Diagnostic)]
pub enum PushCmdError {
    #[error("no device to push to")]
    #[diagnostic(
        code(tcpflash::push::no_host),
        help(
            "pass --host 192.168.1.50 (the device's address), set TCPFLASH_HOST, or add `host = \"...\"` under \
             [package.metadata.tcpflash] in the firmware's Cargo.toml"
        )
    )]
    NoHost,

    #[error("cannot read the key file {}", path.display())]
    #[diagnostic(
        code(tcpflash::push::key_file),
        help("check the path given with --key-file or TCPFLASH_KEY_FILE")
    )]
    KeyFileUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{} is not a key file: {reason}", path.display())]
    #[diagnostic(
        code(tcpflash::push::key_format),
        help(
            "a key file holds 32 random bytes (`head -c 32 /dev/urandom > tcpflash.key`) or 64 hex digits \
             (`openssl rand -hex 32 > tcpflash.key`); the firmware must be built with the same file"
        )
    )]
    KeyFileFormat { path: PathBuf, reason: KeyFileError },

    #[error("--host `{host}` carries a port")]
    #[diagnostic(
        code(tcpflash::push::host_with_port),
        help("give the port on its own: --host {} --port {port}", bare_host(host))
    )]
    HostWithPort { host: String, port: u16 },

    #[error("prebuilt images go to one board named by its address: {hosts}")]
    #[diagnostic(
        code(tcpflash::push::prebuilt_one_board),
        help(
            "give --host once, with an address or a name DNS resolves; several boards, NAME.local and --all \
             are for the building form (`cargo tcpflash --host a --host b`)"
        )
    )]
    PrebuiltOneBoard { hosts: String },

    #[error("stopped (Ctrl-C) after all {len} bytes of {} were sent: {outcome}", slot.file_name())]
    #[diagnostic(code(tcpflash::push::cancelled))]
    CancelledAfterImage {
        slot: SlotId,
        len: u32,
        outcome: String,
        #[help]
        help: Option<String>,
    },

    #[error(transparent)]
    #[diagnostic(transparent)]
    Build(#[from] BuildError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Push(#[from] PushError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Prebuilt(#[from] prebuilt::PrebuiltError),
}

impl PushCmdError {
    pub fn exit_code(&self) -> i32 {
        match self {
            PushCmdError::NoHost
            | PushCmdError::KeyFileUnreadable { .. }
            | PushCmdError::KeyFileFormat { .. }
            | PushCmdError::HostWithPort { .. }
            | PushCmdError::PrebuiltOneBoard { .. } => exit::USAGE,
            PushCmdError::CancelledAfterImage { .. } => exit::CANCELLED,
            PushCmdError::Build(_) | PushCmdError::Prebuilt(_) => exit::BUILD,
            PushCmdError::Push(error) => error.exit_code(),
        }
    }
}

/// Runs the push and returns the process exit status; errors are printed here.
pub fn run(args: &PushArgs) -> i32 {
    if crate::fleet::wanted(args) {
        return crate::fleet::run(args);
    }
    report_errors(|| execute(args))
}

/// `cargo tcpflash push USER1.BIN USER2.BIN`, like [`run`].
pub fn run_prebuilt(args: &PrebuiltArgs) -> i32 {
    report_errors(|| execute_prebuilt(args))
}

fn report_errors(work: impl FnOnce() -> Result<(), PushCmdError>) -> i32 {
    match work() {
        Ok(()) => 0,
        Err(error) => {
            let code = error.exit_code();
            eprintln!("{:?}", miette::Report::new(error));
            code
        }
    }
}

fn execute(args: &PushArgs) -> Result<(), PushCmdError> {
    // Where to push is settled (and the name resolved) before the slow build.
    let (host, port) = destination(&args.device, Some(&args.build))?;
    let target = push::resolve(&host, port)?;
    let (key, build_args) = key_and_build(args)?;
    let timeouts = args.device.timeouts();
    // The device names its slot while the firmware builds; a build that fails lets it go.
    let early = push::EarlyPush::start(&target, &timeouts, key);
    let firmware = build::build(&build_args)?;
    let images = [read_image(&firmware, SlotId::User1)?, read_image(&firmware, SlotId::User2)?];
    let name = format!("{} {}", firmware.package.name, firmware.package.version);
    let what = format!("{name}, build {}", firmware.build_id_hex());
    deliver(&target, &args.device, key.as_ref(), Some(early), [&images[0], &images[1]], &name, &what)
}

/// The push's key, and the build options of a firmware that keeps requiring it: its build
/// script embeds the same file (as an absolute path: cargo runs build scripts in the
/// package's folder).
pub(crate) fn key_and_build(args: &PushArgs) -> Result<(Option<Key>, build::BuildOptions), PushCmdError> {
    let mut options = build::BuildOptions::from(&args.build);
    let Some(path) = &args.device.key_file else { return Ok((None, options)) };
    let key = load_key(path)?;
    let absolute = std::path::absolute(path)
        .map_err(|source| PushCmdError::KeyFileUnreadable { path: path.clone(), source })?;
    options.key_file = Some(absolute);
    Ok((Some(key), options))
}

fn execute_prebuilt(args: &PrebuiltArgs) -> Result<(), PushCmdError> {
    // Everything is checked before a connection opens: the files, then the device's name.
    let images = prebuilt::check(&args.user1, &args.user2, args.layout.as_deref())?;
    let hosts = &args.device.host;
    if hosts.len() > 1 || hosts.iter().any(|host| crate::discover::is_mdns_name(host)) {
        return Err(PushCmdError::PrebuiltOneBoard { hosts: hosts.join(", ") });
    }
    let (host, port) = destination(&args.device, None)?;
    let target = push::resolve(&host, port)?;
    let key = match &args.device.key_file {
        Some(path) => Some(load_key(path)?),
        None => None,
    };
    let name = images.describe();
    deliver(&target, &args.device, key.as_ref(), None, images.refs(), &name, &name)
}

/// Pushes `images` (carrying on from `early` when the device was asked during the build),
/// then checks the device came back on the new slot, and says so. `name` is what is pushed,
/// for the status line; `what` ends the result line's parenthesis.
fn deliver(
    target: &push::Target,
    device: &DeviceArgs,
    key: Option<&Key>,
    early: Option<push::EarlyPush>,
    images: [&[u8]; 2],
    name: &str,
    what: &str,
) -> Result<(), PushCmdError> {
    let timeouts = device.timeouts();
    status("Pushing", &format!("{name} to {target}"));
    let cancel = cancel_on_ctrl_c();
    let protocol = if device.plain { Protocol::Plain } else { Protocol::Auto };
    let mut shown = Shown::default();
    let pushed = match early {
        Some(early) => {
            early.push(target, images, key, protocol, &timeouts, &cancel, &mut |p| shown.progress(p))
        }
        None => {
            push::push_with(target, images, key, protocol, &timeouts, &cancel, &mut |p| shown.progress(p))
        }
    };
    shown.finish();
    let pushed = match pushed {
        Err(PushError::Cancelled { stage: CancelStage::AllSent { slot, len }, .. }) => {
            return Err(after_cancel(target, &timeouts, slot, len, &mut shown));
        }
        other => other?,
    };
    let what = format!("{} ({what})", pushed.slot.file_name());
    if device.no_verify {
        println!("pushed {what} to {target}; the device reboots into it (not checked: --no-verify)");
        return Ok(());
    }
    let returned = push::await_return(target, &timeouts, &cancel, &mut |p| shown.progress(p))?;
    if !returned.runs(&pushed) {
        return Err(PushError::Reverted {
            pushed: pushed.slot,
            running: returned.slot,
            new_build: pushed.build_id,
            running_build: returned.boot.and_then(|boot| boot.build_id),
        }
        .into());
    }
    let running = returned.slot;
    status("Verified", &format!("the device came back on {running}"));
    println!("pushed {what} to {target}; the device now runs {running}{}", boot_words(&returned));
    Ok(())
}

/// From here Ctrl-C stops the push cleanly (the connection is reset, and we say what the
/// device does): the flag it sets. A second Ctrl-C quits at once.
pub(crate) fn cancel_on_ctrl_c() -> Arc<AtomicBool> {
    let cancel = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register_conditional_shutdown(
        signal_hook::consts::SIGINT,
        exit::CANCELLED,
        Arc::clone(&cancel),
    );
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&cancel));
    cancel
}

/// How the device says it booted, for the status line.
fn boot_words(returned: &push::Returned) -> String {
    use ota_agent::boot::BootStatus;
    match returned.boot.map(|boot| boot.status) {
        Some(BootStatus::Confirmed | BootStatus::Trial { confirmed: true, .. }) => ", confirmed".into(),
        Some(BootStatus::Trial { attempt, max, .. }) => {
            format!(", on trial (boot {attempt} of {max}: it goes back unless the firmware confirms itself)")
        }
        Some(BootStatus::Untracked) => " (its bootloader keeps no trials)".into(),
        Some(BootStatus::Fallback) => ", after its preferred slot failed to boot".into(),
        Some(BootStatus::Reverted) | None => String::new(),
    }
}

/// How long the check after a Ctrl-C waits for the device.
const CANCEL_CHECK: Duration = Duration::from_secs(10);

/// Ctrl-C came after the whole image went out: the device may install it. Looks (for a
/// short while) at which slot it runs, and says so.
fn after_cancel(
    target: &push::Target,
    timeouts: &Timeouts,
    slot: SlotId,
    len: u32,
    shown: &mut Shown,
) -> PushCmdError {
    status("Checking", &format!("which firmware the device runs (up to {} s)", CANCEL_CHECK.as_secs()));
    let timeouts = Timeouts { reboot: CANCEL_CHECK, ..*timeouts };
    // This check has its own flag: the first Ctrl-C is spent; a second one quits.
    let never = AtomicBool::new(false);
    let (outcome, help) = match push::await_return(target, &timeouts, &never, &mut |p| shown.progress(p)) {
        Ok(returned) if returned.slot == slot => {
            (format!("the device installed it anyway and now runs {slot}"), None)
        }
        Ok(returned) => (format!("the device did not install it and still runs {}", returned.slot), None),
        Err(error) => (
            format!(
                "the device had the whole image and may install it; it did not answer within {} s",
                CANCEL_CHECK.as_secs()
            ),
            Some(format!(
                "{error}; push again later: the device asks for the slot it does not run, which tells where it is"
            )),
        ),
    };
    PushCmdError::CancelledAfterImage { slot, len, outcome, help }
}

/// The host part of `host:port` (brackets of an IPv6 address removed).
fn bare_host(host: &str) -> String {
    match host.parse::<SocketAddr>() {
        Ok(addr) => addr.ip().to_string(),
        Err(_) => host.rsplit_once(':').map_or(host, |(name, _)| name).to_owned(),
    }
}

/// A `--host` that carries a port (`10.0.1.4:65056`, `[::1]:65056`, `name:65056`): the port
/// goes in `--port`. A bare IPv6 address (`::1`) is a host.
fn port_in_host(host: &str) -> Option<u16> {
    if let Ok(addr) = host.parse::<SocketAddr>() {
        return Some(addr.port());
    }
    if host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let (name, port) = host.rsplit_once(':')?;
    (!name.is_empty() && !name.contains(':')).then(|| port.parse().ok()).flatten()
}

/// Host from --host, $TCPFLASH_HOST, then the firmware's metadata (when there is a
/// firmware); port from --port, the metadata, then the agent's default.
fn destination(
    args: &DeviceArgs,
    firmware: Option<&crate::cli::BuildArgs>,
) -> Result<(String, u16), PushCmdError> {
    let env_host = std::env::var(HOST_ENV).ok().filter(|host| !host.trim().is_empty());
    let given = args.host.first().cloned().or(env_host);
    if let Some(host) = &given
        && let Some(port) = port_in_host(host)
    {
        return Err(PushCmdError::HostWithPort { host: host.clone(), port });
    }
    if let (Some(host), Some(port)) = (&given, args.port) {
        return Ok((host.clone(), port));
    }
    let Some(firmware) = firmware else {
        let host = given.ok_or(PushCmdError::NoHost)?;
        return Ok((host, args.port.unwrap_or(DEFAULT_PORT)));
    };
    let metadata = FirmwarePackage::locate(&firmware.into())?.metadata;
    let host = given.or(metadata.host).ok_or(PushCmdError::NoHost)?;
    Ok((host, args.port.or(metadata.port.map(std::num::NonZeroU16::get)).unwrap_or(DEFAULT_PORT)))
}

/// Reads the key file.
pub(crate) fn load_key(path: &Path) -> Result<Key, PushCmdError> {
    let unreadable = |source| PushCmdError::KeyFileUnreadable { path: path.to_owned(), source };
    let bytes = std::fs::read(path).map_err(unreadable)?;
    let key = auth::parse_key(&bytes)
        .map_err(|reason| PushCmdError::KeyFileFormat { path: path.to_owned(), reason })?;
    Ok(key)
}

pub(crate) fn read_image(firmware: &Firmware, slot: SlotId) -> Result<Vec<u8>, BuildError> {
    let path = &firmware.slot(slot).bin;
    std::fs::read(path).map_err(|source| BuildError::Io { path: path.clone(), source })
}

/// Status lines and the progress bar.
#[derive(Default)]
struct Shown {
    bar: Option<ProgressBar>,
    /// The transfer under way: its image and length, and when it started.
    sending: Option<(SlotId, u32, Instant)>,
}

impl Shown {
    fn progress(&mut self, progress: Progress<'_>) {
        match progress {
            Progress::Connected(addr) => status("Connected", &format!("to {addr}")),
            Progress::Authentication(Authentication::Sent) => {
                self.println("Authenticated", "the device accepted the proof of its key")
            }
            Progress::Authentication(_) => self.println(
                "Warning",
                "the device has no key (its firmware was built without TCPFLASH_KEY_FILE): this push is not \
                 authenticated, only its SHA-256 is checked; the new firmware requires the key",
            ),
            Progress::Reply(line) => self.println("Device", line),
            Progress::Sending { slot, len } => {
                let bar = progress_bar(u64::from(len), slot);
                // On a terminal the bar is the "Sending" line; in a log, one line says it.
                if bar.is_hidden() {
                    status("Sending", &format!("{} ({len} bytes)", slot.file_name()));
                }
                self.bar = Some(bar);
                self.sending = Some((slot, len, Instant::now()));
            }
            Progress::Sent(n) => {
                if let Some(bar) = &self.bar {
                    bar.inc(n as u64);
                }
            }
            Progress::Verifying => self.finish(),
            Progress::Plain(line) => self.println(
                "Warning",
                &format!(
                    "the device answered the SHA-256 line with `{line}`: it runs an agent without tcpflash's \
                     extensions (such as the seed's), so the push starts over with the seed's lines only; \
                     that agent checks little of the image (the seed's, its first 16 bytes)"
                ),
            ),
            Progress::Busy => {
                status("Waiting", "the device serves another client; trying again until it is free")
            }
            Progress::AwaitingReboot => status("Waiting", "for the device to reboot and answer again"),
            Progress::Retrying => {}
        }
    }

    /// A status line that does not tear the progress bar.
    fn println(&self, verb: &str, what: &str) {
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.suspend(|| status(verb, what)),
            _ => status(verb, what),
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if let Some((slot, len, since)) = self.sending.take() {
            let took = since.elapsed().as_secs_f64();
            status("Sent", &format!("{} ({len} bytes) in {took:.1} s", slot.file_name()));
        }
    }
}

/// Bytes sent and the rate; drawn only when stderr is a terminal.
fn progress_bar(total: u64, slot: SlotId) -> ProgressBar {
    let bar = crate::progress::byte_bar(
        total,
        "{prefix:>12.cyan.bold} {msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ({eta})",
    );
    bar.set_prefix("Sending");
    bar.set_message(slot.file_name());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}
