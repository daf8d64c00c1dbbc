//! Pushing to several boards at once: `--host` given more than once, `--host NAME.local`
//! (found by mDNS), `--all` (every board announcing this firmware's name). The firmware is
//! built once; the pushes run in parallel, one progress line per board (indicatif's
//! `MultiProgress`, drawn when stderr is a terminal), and end with a table (board, old
//! build, new build, outcome, time) on stdout. The exit status is 0 when every board runs
//! the new firmware, else the status of the first failed board in the table (see
//! `cargo tcpflash --help`).

use std::io::IsTerminal;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use ota_agent::client::Authentication;
use ota_agent::layout::SlotId;
use ota_agent::protocol::DEFAULT_PORT;

use crate::build::{self, FirmwarePackage, status};
use crate::cli::PushArgs;
use crate::discover::{self, Board, DiscoverError, Fleet};
use crate::push::{self, Progress, Protocol, PushError, Timeouts};
use crate::push_cmd::{HOST_ENV, PushCmdError};

/// The fleet options of the push.
#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    /// Push to every board that announces this firmware's name over mDNS (what
    /// `cargo tcpflash list` shows), all in parallel. Combines with --host.
    #[arg(long)]
    pub all: bool,
    /// Seconds to listen for mDNS answers (for --all and --host NAME.local).
    #[arg(long, default_value = "3", value_name = "SECS", value_parser = crate::cli::parse_seconds)]
    pub discover_timeout: Duration,
}

/// Whether this push goes through the fleet: `--all`, several `--host`s, or a `NAME.local`.
pub fn wanted(args: &PushArgs) -> bool {
    let env_host = || std::env::var(HOST_ENV).ok().filter(|host| discover::is_mdns_name(host.trim()));
    args.fleet.all
        || args.device.host.len() > 1
        || args.device.host.iter().any(|host| discover::is_mdns_name(host))
        || (args.device.host.is_empty() && env_host().is_some())
}

/// One board to push to.
struct Destination {
    /// As the user named it (`kitchen.local`, `10.0.0.4`), with its address.
    label: String,
    target: push::Target,
    /// The build it announced, when it was found by mDNS.
    old_build: Option<String>,
}

/// How the push to one board ended.
struct Row {
    label: String,
    old_build: Option<String>,
    new_build: Option<String>,
    outcome: Result<String, Failure>,
    time: Duration,
}

/// A board's push that failed: its exit status, one line for the table, the full report.
struct Failure {
    code: i32,
    line: String,
    report: String,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
enum FleetError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Discover(#[from] DiscoverError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Push(#[from] PushCmdError),
}

impl FleetError {
    fn exit_code(&self) -> i32 {
        match self {
            FleetError::Discover(error) => error.exit_code(),
            FleetError::Push(error) => error.exit_code(),
        }
    }
}

impl From<PushError> for FleetError {
    fn from(error: PushError) -> Self {
        FleetError::Push(error.into())
    }
}

impl From<build::BuildError> for FleetError {
    fn from(error: build::BuildError) -> Self {
        FleetError::Push(error.into())
    }
}

/// Runs the fleet push and returns the process exit status; errors are printed here.
pub fn run(args: &PushArgs) -> i32 {
    match execute(args) {
        Ok(rows) => {
            for row in &rows {
                if let Err(failure) = &row.outcome {
                    eprintln!("{}: {}", row.label, failure.report);
                }
            }
            print!("{}", table(&rows));
            rows.iter().find_map(|row| row.outcome.as_ref().err()).map_or(0, |failure| failure.code)
        }
        Err(error) => {
            let code = error.exit_code();
            eprintln!("{:?}", miette::Report::new(error));
            code
        }
    }
}

fn execute(args: &PushArgs) -> Result<Vec<Row>, FleetError> {
    let mut hosts = args.device.host.clone();
    if hosts.is_empty()
        && let Ok(host) = std::env::var(HOST_ENV)
        && !host.trim().is_empty()
    {
        hosts.push(host.trim().to_owned());
    }
    let package = FirmwarePackage::locate(&(&args.build).into())?;
    // mDNS first (names and --all), before the slow build.
    let needs_mdns = args.fleet.all || hosts.iter().any(|host| discover::is_mdns_name(host));
    let timeout = args.fleet.discover_timeout;
    let fleet = if needs_mdns {
        status("Browsing", &format!("for boards over mDNS ({} s)", timeout.as_secs_f64()));
        discover::browse(timeout)?
    } else {
        Fleet::default()
    };
    let port =
        args.device.port.or(package.metadata.port.map(std::num::NonZeroU16::get)).unwrap_or(DEFAULT_PORT);
    let mut destinations = Vec::new();
    for host in &hosts {
        if discover::is_mdns_name(host) {
            destinations.push(from_board(discover::resolve(&fleet, host, timeout)?));
        } else {
            let target = push::resolve(host, port)?;
            destinations.push(Destination { label: target.to_string(), target, old_build: None });
        }
    }
    if args.fleet.all {
        let running = fleet.running(&package.name);
        if running.is_empty() {
            return Err(DiscoverError::NoneRunning { firmware: package.name.clone(), timeout }.into());
        }
        destinations.extend(running.into_iter().map(from_board));
    }
    // A board named twice (by name and by --all) gets one push.
    let mut seen = std::collections::HashSet::new();
    destinations.retain(|d| seen.insert(d.target.addrs.clone()));

    let (key, build_args) = crate::push_cmd::key_and_build(args)?;
    let firmware = build::build(&build_args)?;
    let images = [
        crate::push_cmd::read_image(&firmware, SlotId::User1)?,
        crate::push_cmd::read_image(&firmware, SlotId::User2)?,
    ];
    let timeouts = args.device.timeouts();
    status(
        "Pushing",
        &format!(
            "{} {} (build {}) to {} board{}",
            firmware.package.name,
            firmware.package.version,
            firmware.build_id_hex(),
            destinations.len(),
            if destinations.len() == 1 { "" } else { "s" }
        ),
    );
    let cancel = crate::push_cmd::cancel_on_ctrl_c();

    let bars = MultiProgress::with_draw_target(if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let width = destinations.iter().map(|d| d.label.chars().count()).max().unwrap_or(0).min(48);
    let style = ProgressStyle::with_template(&format!(
        "{{prefix:>{width}}} [{{bar:25}}] {{bytes:>9}}/{{total_bytes:9}} {{msg}}"
    ))
    .expect("valid template")
    .progress_chars("=> ");
    let job = Job {
        images: [&images[0][..], &images[1][..]],
        key: key.as_ref(),
        protocol: if args.device.plain { Protocol::Plain } else { Protocol::Auto },
        timeouts: &timeouts,
        cancel: &cancel,
        no_verify: args.device.no_verify,
    };
    let rows = std::thread::scope(|scope| {
        let handles: Vec<_> = destinations
            .into_iter()
            .map(|destination| {
                let bar = bars.add(ProgressBar::new(0));
                bar.set_style(style.clone());
                bar.set_prefix(destination.label.clone());
                bar.set_message("connecting");
                bar.enable_steady_tick(Duration::from_millis(100));
                scope.spawn(move || push_one(destination, job, bar))
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().expect("a push thread panicked")).collect::<Vec<Row>>()
    });
    Ok(rows)
}

fn from_board(board: &Board) -> Destination {
    let target = push::Target { host: board.host.clone(), port: board.port, addrs: board.endpoints() };
    Destination {
        label: format!("{} ({})", board.host, board.address_text()),
        target,
        old_build: board.build.clone(),
    }
}

/// What every board of the fleet gets.
#[derive(Clone, Copy)]
struct Job<'a> {
    images: [&'a [u8]; 2],
    key: Option<&'a ota_agent::auth::Key>,
    protocol: Protocol,
    timeouts: &'a Timeouts,
    cancel: &'a AtomicBool,
    no_verify: bool,
}

/// Pushes to one board and waits for it to come back, reporting on `bar`.
fn push_one(destination: Destination, job: Job<'_>, bar: ProgressBar) -> Row {
    let Job { images, key, protocol, timeouts, cancel, no_verify } = job;
    let start = Instant::now();
    let mut report = |progress: Progress<'_>| match progress {
        Progress::Connected(_) => bar.set_message("connected"),
        Progress::Authentication(Authentication::Sent) => bar.set_message("authenticated"),
        Progress::Authentication(_) => bar.set_message("no key on the device"),
        Progress::Sending { slot, len } => {
            bar.set_length(u64::from(len));
            bar.set_message(format!("sending {}", slot.file_name()));
        }
        Progress::Sent(n) => bar.inc(n as u64),
        Progress::Verifying => bar.set_message("the device checks the image"),
        Progress::AwaitingReboot => bar.set_message("waiting for the reboot"),
        Progress::Plain(_) => bar.set_message("no extensions on the device: the seed's lines only"),
        Progress::Busy => bar.set_message("the device serves another client: waiting"),
        Progress::Reply(_) | Progress::Retrying => {}
    };
    let mut new_build = None;
    let outcome = (|| {
        let pushed =
            push::push_with(&destination.target, images, key, protocol, timeouts, cancel, &mut report)?;
        new_build = pushed.build_id.map(hex::encode);
        if no_verify {
            return Ok(format!("pushed {} (not checked: --no-verify)", pushed.slot.file_name()));
        }
        let returned = push::await_return(&destination.target, timeouts, cancel, &mut report)?;
        if let Some(build) = returned.boot.and_then(|boot| boot.build_id) {
            new_build = Some(hex::encode(build));
        }
        if !returned.runs(&pushed) {
            return Err(PushError::Reverted {
                pushed: pushed.slot,
                running: returned.slot,
                new_build: pushed.build_id,
                running_build: returned.boot.and_then(|boot| boot.build_id),
            });
        }
        Ok(format!("ok, runs {}", returned.slot))
    })();
    let time = start.elapsed();
    let outcome = outcome.map_err(|error| Failure {
        code: error.exit_code(),
        line: push::printable(&error.to_string()),
        report: format!("{:?}", miette::Report::new(error)),
    });
    let text = match &outcome {
        Ok(text) => text.clone(),
        Err(failure) => format!("FAILED: {}", failure.line),
    };
    bar.finish_with_message(text.clone());
    if bar.is_hidden() {
        let (verb, what) = match &outcome {
            Ok(text) => ("Done", text),
            Err(failure) => ("Failed", &failure.line),
        };
        status(verb, &format!("{}: {what} ({:.1} s)", destination.label, time.as_secs_f64()));
    }
    Row { label: destination.label, old_build: destination.old_build, new_build, outcome, time }
}

/// The end-of-push table.
fn table(rows: &[Row]) -> String {
    let dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "?".into());
    let header = ["BOARD", "OLD BUILD", "NEW BUILD", "TIME", "OUTCOME"].map(String::from);
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|row| {
            [
                row.label.clone(),
                dash(&row.old_build),
                dash(&row.new_build),
                format!("{:.1} s", row.time.as_secs_f64()),
                match &row.outcome {
                    Ok(text) => text.clone(),
                    Err(failure) => format!("FAILED: {}", failure.line),
                },
            ]
        })
        .collect();
    let failed = rows.iter().filter(|row| row.outcome.is_err()).count();
    let mut out = discover::columns(&header, &cells);
    out.push_str(&format!("{} of {} boards updated, {failed} failed\n", rows.len() - failed, rows.len()));
    out
}
