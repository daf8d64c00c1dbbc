//! Pushing over TCP: the std-socket driver around `ota_agent::client::Client`, which holds
//! the protocol. This module owns what the sans-IO client leaves to its driver: name
//! resolution, connecting, timeouts, writing the image in pieces, the first exchange while
//! the firmware still builds ([`EarlyPush`]), and the wait for the device to come back after
//! its reboot.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use miette::Diagnostic;
use ota_agent::auth::{self, Key};
use ota_agent::boot::BootStatus;
use ota_agent::client::{Authentication, Client, ClientError, Event, Step, Transmit};
use ota_agent::descriptor::{self, BUILD_ID_LEN, Descriptor};
use ota_agent::layout::{IMAGE_IROM_OFFSET, SlotId};
use ota_agent::protocol::{BootReport, ERR_PREFIX, reason};
use thiserror::Error;

/// Exit statuses, one per kind of failure (listed in `--help`, see `cli::EXIT_CODES`).
pub mod exit {
    pub const OTHER: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const BUILD: i32 = 3;
    pub const NETWORK: i32 = 4;
    pub const REFUSED: i32 = 5;
    pub const REVERTED: i32 = 6;
    /// Stopped by Ctrl-C (128 + SIGINT, as shells report it).
    pub const CANCELLED: i32 = 130;
}

/// The largest piece of image handed to one `write` call.
const WRITE_CHUNK: usize = 16 * 1024;
/// Pause before the first attempt to reach a rebooting device, and between attempts (`cargo
/// xtask bench` models the check after a push with it).
pub const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// How long an early connection ([`EarlyPush`]) is held for a build that goes on: half the
/// agent's 10 s for the header lines (`session::DEFAULT_HEADER_TIMEOUT`), so the rest of them
/// still have time. A longer build pushes on a new connection.
pub const EARLY_HOLD: Duration = Duration::from_secs(5);
/// The socket's send buffer (Linux doubles it). The device's window is 12 KB, so more
/// buffering gains nothing; what it buys instead: the progress bar counts bytes the device
/// took, not bytes the kernel queued, and Ctrl-C leaves little in flight.
const SEND_BUFFER: usize = 16 * 1024;
/// How often a blocked read or write looks at the cancel flag.
const CANCEL_TICK: Duration = Duration::from_millis(100);

/// How long to wait for what.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// For the TCP connection to open.
    pub connect: Duration,
    /// For each answer of the device, and for it to take more bytes.
    pub reply: Duration,
    /// For the device to answer again after its reboot.
    pub reboot: Duration,
}

/// A device address, resolved.
#[derive(Clone, Debug)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub addrs: Vec<SocketAddr>,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // An address prints as a socket address (`[::1]:65056`), a name with what it resolved to.
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return write!(f, "{}", SocketAddr::new(ip, self.port));
        }
        match self.addrs.first() {
            Some(addr) => write!(f, "{}:{} ({addr})", self.host, self.port),
            None => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// What happens during a push, for the command line to show.
#[derive(Clone, Copy, Debug)]
pub enum Progress<'a> {
    Connected(SocketAddr),
    /// A line the device sent (an `ERR:` line is reported through the error instead).
    Reply(&'a str),
    /// The device said `Ready` to a push with a key: whether it took a proof of the key, or
    /// has no key and took the push without one.
    Authentication(Authentication),
    /// The image transfer starts.
    Sending {
        slot: SlotId,
        len: u32,
    },
    /// This many more image bytes went out.
    Sent(usize),
    /// Every image byte is out; the device is checking it.
    Verifying,
    /// The device refused the extension lines with this `ERR:` line: the push starts over
    /// with the seed's lines only.
    Plain(&'a str),
    /// The device serves another client: waiting for it.
    Busy,
    /// Waiting for the device to reboot and answer again.
    AwaitingReboot,
    /// An attempt to reach the rebooting device failed; another follows.
    Retrying,
}

/// A finished push: the device took the image and reboots into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pushed {
    pub slot: SlotId,
    pub addr: SocketAddr,
    pub len: u32,
    /// The pushed image's build id, from its slot descriptor.
    pub build_id: Option<[u8; BUILD_ID_LEN]>,
}

/// The device after its reboot: the slot it runs, and how it booted when it can say
/// (`GetBootState`; agents older than the extension, and the seed's, cannot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Returned {
    pub slot: SlotId,
    pub boot: Option<BootReport>,
}

impl Returned {
    /// Whether the device runs the firmware that was pushed, as far as it can tell: the
    /// pushed slot, not reverted (confirmed, or on a trial the check-in just confirmed).
    pub fn runs(&self, pushed: &Pushed) -> bool {
        self.slot == pushed.slot && self.boot.is_none_or(|boot| boot.status != BootStatus::Reverted)
    }
}

/// The build id in an image's slot descriptor, if it carries one.
pub fn build_id_of(image: &[u8]) -> Option<[u8; BUILD_ID_LEN]> {
    let at = IMAGE_IROM_OFFSET as usize;
    let bytes: &[u8; descriptor::SIZE] = image.get(at..at + descriptor::SIZE)?.try_into().ok()?;
    Descriptor::parse(bytes).ok().map(|descriptor| descriptor.build_id)
}

#[derive(Debug, Error, Diagnostic)]
pub enum PushError {
    #[error("cannot resolve the device name `{host}`: {cause}")]
    #[diagnostic(
        code(tcpflash::push::resolve),
        help(
            "check the spelling, or pass the device's IP address with --host (its DHCP lease or serial log shows it)"
        )
    )]
    Resolve { host: String, cause: io::Error },

    #[error("the device at {addr} refused the connection")]
    #[diagnostic(
        code(tcpflash::push::refused),
        help(
            "is the firmware on the device calling ota_init()? Is the port right? The agent listens on 65056 \
             unless configured otherwise (--port, or `port` in [package.metadata.tcpflash])"
        )
    )]
    Refused { addr: SocketAddr },

    #[error("no connection to {addr} within {} s", secs(*timeout))]
    #[diagnostic(
        code(tcpflash::push::connect_timeout),
        help(
            "is the device powered and on this network? Check the address; on a slow network raise --connect-timeout"
        )
    )]
    ConnectTimeout { addr: SocketAddr, timeout: Duration },

    #[error("cannot connect to {addr}: {cause}")]
    #[diagnostic(
        code(tcpflash::push::connect),
        help("check that this computer can reach the device's network")
    )]
    Connect { addr: SocketAddr, cause: io::Error },

    #[error("no answer from {addr} within {} s while {during}", secs(*timeout))]
    #[diagnostic(
        code(tcpflash::push::timeout),
        help(
            "the device may be hung or busy, or what listens on that port is not a tcpflash/TCP-OTA agent; \
             for a slow device raise --timeout"
        )
    )]
    Timeout { addr: SocketAddr, during: Step, timeout: Duration },

    #[error("the transfer to {addr} was interrupted: {what}")]
    #[diagnostic(code(tcpflash::push::interrupted))]
    Interrupted {
        addr: SocketAddr,
        what: String,
        #[help]
        help: String,
    },

    #[error("stopped (Ctrl-C) {stage}")]
    #[diagnostic(code(tcpflash::push::cancelled))]
    Cancelled {
        addr: SocketAddr,
        stage: CancelStage,
        #[help]
        help: String,
    },

    #[error("the device at {addr} closed the connection while {during}")]
    #[diagnostic(
        code(tcpflash::push::closed),
        help("the device may have rebooted, or another program holds the port; push again")
    )]
    Closed { addr: SocketAddr, during: Step },

    #[error("the device refused the image: {reply}")]
    #[diagnostic(code(tcpflash::push::invalid))]
    Rejected {
        reply: String,
        #[help]
        help: String,
    },

    #[error("the device answered: {line}")]
    #[diagnostic(code(tcpflash::push::device_error))]
    Device {
        line: String,
        #[help]
        help: String,
    },

    #[error(
        "the device does not know tcpflash's extension lines: it answered the SHA-256 line with `{line}`"
    )]
    #[diagnostic(
        code(tcpflash::push::no_extensions),
        help(
            "{}",
            if *keyed {
                "a push with a key never falls back to the seed's plain lines: they would carry the image without \
                 the proof, and the device could not check it. This device runs an agent without the \
                 extensions (such as the seed's C agent): push without --key-file, or update its agent"
            } else {
                "the device runs an agent without tcpflash's extensions (such as the seed's C agent): push with \
                 --plain (the seed's lines only; that agent checks little of the image)"
            }
        )
    )]
    NoExtensions { line: String, keyed: bool },

    #[error("unexpected reply from the device while {during}: {line:?}")]
    #[diagnostic(
        code(tcpflash::push::unexpected),
        help("what listens on that port does not speak TCP-OTA: check --host and --port")
    )]
    Unexpected { line: String, during: Step },

    #[error("the device did not answer within {} s after rebooting ({last})", secs(*waited))]
    #[diagnostic(code(tcpflash::push::not_back))]
    NotBack {
        waited: Duration,
        last: String,
        #[help]
        help: String,
    },

    #[error(
        "the new firmware{} did not confirm and the device went back: it runs {running}{} again (the image went to {pushed})",
        build_text(new_build),
        build_text(running_build)
    )]
    #[diagnostic(
        code(tcpflash::push::reverted),
        help(
            "the new firmware reset or hung before it confirmed (with tcpflash-boot it confirms when it answers \
             this check, or when the application calls the agent's confirm), or the bootloader found the image \
             bad; check the device's serial log"
        )
    )]
    Reverted {
        pushed: SlotId,
        running: SlotId,
        new_build: Option<[u8; BUILD_ID_LEN]>,
        running_build: Option<[u8; BUILD_ID_LEN]>,
    },
}

impl PushError {
    /// The process exit status for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            PushError::Resolve { .. }
            | PushError::Refused { .. }
            | PushError::ConnectTimeout { .. }
            | PushError::Connect { .. }
            | PushError::Timeout { .. }
            | PushError::Interrupted { .. }
            | PushError::Closed { .. }
            | PushError::NotBack { .. } => exit::NETWORK,
            PushError::Rejected { .. }
            | PushError::Device { .. }
            | PushError::NoExtensions { .. }
            | PushError::Unexpected { .. } => exit::REFUSED,
            PushError::Reverted { .. } => exit::REVERTED,
            PushError::Cancelled { .. } => exit::CANCELLED,
        }
    }
}

/// Where a push stood when Ctrl-C stopped it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelStage {
    /// No image byte had gone out.
    BeforeImage,
    /// Part of the image had gone out.
    Partial { slot: SlotId, sent: u32, len: u32 },
    /// Every image byte had gone out (to the kernel, at least): the device may have it all.
    AllSent { slot: SlotId, len: u32 },
}

impl std::fmt::Display for CancelStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            CancelStage::BeforeImage => f.write_str("before any image byte was sent"),
            CancelStage::Partial { slot, sent, len } => {
                write!(f, "after {sent} of {len} bytes of {}", slot.file_name())
            }
            CancelStage::AllSent { slot, len } => {
                write!(f, "after all {len} bytes of {} were sent", slot.file_name())
            }
        }
    }
}

impl CancelStage {
    /// What the device does now, as far as the stage tells.
    fn help(&self) -> String {
        match self {
            CancelStage::BeforeImage | CancelStage::Partial { .. } => {
                "the connection was reset before the image \
                 was complete: the device drops what it received and keeps its firmware"
                    .into()
            }
            CancelStage::AllSent { .. } => {
                "the device had the whole image and may install it: push again, or \
                 check which slot it runs with another push"
                    .into()
            }
        }
    }
}

/// ` (build <hex>)`, or nothing when the build is unknown.
fn build_text(build: &Option<[u8; BUILD_ID_LEN]>) -> String {
    build.map(|id| format!(" (build {})", hex::encode(id))).unwrap_or_default()
}

fn secs(duration: Duration) -> String {
    let text = format!("{:.1}", duration.as_secs_f64());
    text.strip_suffix(".0").map(str::to_owned).unwrap_or(text)
}

/// Resolves `host` once, before anything slow happens.
pub fn resolve(host: &str, port: u16) -> Result<Target, PushError> {
    let resolve_error = |source| PushError::Resolve { host: host.to_owned(), cause: source };
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs().map_err(resolve_error)?.collect();
    if addrs.is_empty() {
        return Err(resolve_error(io::Error::new(io::ErrorKind::NotFound, "no address for this name")));
    }
    Ok(Target { host: host.to_owned(), port, addrs })
}

/// Which request lines a push sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// tcpflash's extension lines (the image's SHA-256; with a key, its proof). A device that
    /// refuses the SHA-256 line (an agent without the extensions, such as the seed's) gets
    /// the push again with the seed's lines only; a keyed push never falls back.
    #[default]
    Auto,
    /// The seed's lines only (`--plain`): the device checks what it checks (the seed's
    /// agent, the image's first 16 bytes), nothing is proven.
    Plain,
}

/// Pushes the image the device asks for: `images` holds user1's and user2's, in that order.
/// The image's SHA-256 goes along (the device checks the slot against it before it
/// switches) unless the device does not know that line (see [`Protocol`]); with `key`, the
/// push proves it holds the device's key.
///
/// Setting `cancel` stops the push within a tenth of a second: the connection is reset (not
/// closed), so bytes the kernel still holds never reach the device.
pub fn push(
    target: &Target,
    images: [&[u8]; 2],
    key: Option<&Key>,
    timeouts: &Timeouts,
    cancel: &AtomicBool,
    report: &mut dyn FnMut(Progress<'_>),
) -> Result<Pushed, PushError> {
    push_with(target, images, key, Protocol::Auto, timeouts, cancel, report)
}

/// [`push`] with the protocol chosen.
pub fn push_with(
    target: &Target,
    images: [&[u8]; 2],
    key: Option<&Key>,
    protocol: Protocol,
    timeouts: &Timeouts,
    cancel: &AtomicBool,
    report: &mut dyn FnMut(Progress<'_>),
) -> Result<Pushed, PushError> {
    let job = Job { target, images, key, plain: protocol == Protocol::Plain, timeouts, cancel };
    let pushed = job.when_free(report);
    job.or_plain(pushed, report)
}

/// One push's parameters, for its attempts.
#[derive(Clone, Copy)]
struct Job<'a> {
    target: &'a Target,
    images: [&'a [u8]; 2],
    key: Option<&'a Key>,
    /// The seed's lines only.
    plain: bool,
    timeouts: &'a Timeouts,
    cancel: &'a AtomicBool,
}

impl Job<'_> {
    /// `pushed` as it ended, unless the device refused the SHA-256 line: then the push again
    /// with the seed's lines only (see [`Protocol::Auto`]; never for a keyed push).
    fn or_plain(
        &self,
        pushed: Result<Pushed, PushError>,
        report: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Pushed, PushError> {
        match pushed {
            Err(PushError::NoExtensions { line, .. }) if !self.plain && self.key.is_none() => {
                report(Progress::Plain(&line));
                Job { plain: true, ..*self }.when_free(report)
            }
            other => other,
        }
    }

    /// [`Job::once`], waiting (up to `timeouts.reboot`) while the device serves another
    /// client: its agent serves one at a time and drops a client that dawdles within seconds.
    fn when_free(&self, report: &mut dyn FnMut(Progress<'_>)) -> Result<Pushed, PushError> {
        let start = Instant::now();
        let mut said = false;
        loop {
            match self.once(report) {
                Err(PushError::Device { line, .. })
                    if line.ends_with(reason::BUSY)
                        && start.elapsed() < self.timeouts.reboot
                        && !self.cancel.load(Ordering::SeqCst) =>
                {
                    if !said {
                        report(Progress::Busy);
                        said = true;
                    }
                    std::thread::sleep(RETRY_PAUSE);
                }
                other => return other,
            }
        }
    }

    fn once(&self, report: &mut dyn FnMut(Progress<'_>)) -> Result<Pushed, PushError> {
        let Job { target, images, key, plain, timeouts, cancel } = *self;
        let mut conn = Conn::open(target, timeouts, cancel)?;
        report(Progress::Connected(conn.addr));
        let mut client = key.map_or_else(Client::new, Client::with_key);
        conn.push_with(&mut client, Goal::Push { images, key, plain }, report)
    }
}

/// A push whose first exchange runs while the firmware builds: a thread connects, sends
/// `OTA` and `GetNextFlash` and reads the slot's name, then holds the connection (up to
/// [`EARLY_HOLD`]) until [`EarlyPush::push`] carries on with the images. The device answers
/// during the build instead of after it.
pub struct EarlyPush {
    thread: JoinHandle<Result<Opened, PushError>>,
    /// Sent to, or dropped: the build is over (the thread hands the connection back, or
    /// lets it go).
    go: mpsc::Sender<()>,
}

/// An early connection that got the slot's name.
struct Opened {
    conn: Conn<'static>,
    client: Client,
    slot: SlotId,
}

/// The early connection's cancel flag, never set: Ctrl-C during the build stops the
/// process as before.
static NEVER: AtomicBool = AtomicBool::new(false);

impl EarlyPush {
    /// Starts the first exchange with `target` in a thread.
    pub fn start(target: &Target, timeouts: &Timeouts, key: Option<Key>) -> EarlyPush {
        EarlyPush::holding(target, timeouts, key, EARLY_HOLD)
    }

    /// [`EarlyPush::start`], holding the connection for `hold` at most.
    fn holding(target: &Target, timeouts: &Timeouts, key: Option<Key>, hold: Duration) -> EarlyPush {
        let (go, ready) = mpsc::channel();
        let (target, timeouts) = (target.clone(), *timeouts);
        let thread = std::thread::spawn(move || {
            let mut conn = Conn::open(&target, &timeouts, &NEVER)?;
            let mut client = key.as_ref().map_or_else(Client::new, Client::with_key);
            let Reached::Slot(slot) = conn.converse_with(&mut client, Goal::Slot, &mut |_| {})? else {
                unreachable!("asking for the slot stops at the slot")
            };
            match ready.recv_timeout(hold) {
                Ok(()) => Ok(Opened { conn, client, slot }),
                // Held too long (the build goes on), or the build failed: the device is let go.
                Err(_) => Err(PushError::Closed { addr: conn.addr, during: Step::ChooseImage }),
            }
        });
        EarlyPush { thread, go }
    }

    /// The push, carried on from the early exchange: what [`push_with`] does after the
    /// build. When the device did not answer early for a reason that may have passed since
    /// (not listening yet, busy, an update's reboot pending, the connection dropped before
    /// any image byte), it is [`push_with`] itself, on a new connection; a device that
    /// refuses the SHA-256 line gets the seed's lines as [`Protocol::Auto`] says. Progress
    /// is reported as `push_with` reports it.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        self,
        target: &Target,
        images: [&[u8]; 2],
        key: Option<&Key>,
        protocol: Protocol,
        timeouts: &Timeouts,
        cancel: &AtomicBool,
        report: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Pushed, PushError> {
        let _ = self.go.send(());
        let early = self.thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let again = |report: &mut dyn FnMut(Progress<'_>)| {
            push_with(target, images, key, protocol, timeouts, cancel, report)
        };
        let Opened { conn, mut client, slot } = match early {
            Ok(opened) => opened,
            Err(error) if is_transient(&error) => return again(report),
            // A definite answer (an off-protocol reply, a refusal): a push now hears it too.
            Err(error) => return Err(error),
        };
        let mut conn = Conn { cancel, ..conn };
        report(Progress::Connected(conn.addr));
        let job = Job { target, images, key, plain: protocol == Protocol::Plain, timeouts, cancel };
        let goal = Goal::Push { images, key, plain: job.plain };
        let pushed = conn
            .on_event(Event::NextSlot(slot), &mut client, &goal, report)
            .and_then(|_| conn.push_with(&mut client, goal, report));
        match pushed {
            // The device let the held connection go before any image byte (a header
            // deadline shorter than the agent's default): once more, from the start.
            Err(error) if client.progress().0 == 0 && dropped_early(&error) => again(report),
            other => job.or_plain(other, report),
        }
    }
}

/// Whether `error` is the device giving up on a connection held too long for it.
fn dropped_early(error: &PushError) -> bool {
    match error {
        PushError::Closed { .. } => true,
        PushError::Device { line, .. } => {
            line.ends_with(reason::HEADER_TIMEOUT) || line.ends_with(reason::IDLE_TIMEOUT)
        }
        _ => false,
    }
}

/// After a push: waits for the device to reboot, asks `GetNextFlash` again (which confirms
/// a trial that confirms on check-in) and `GetBootState`, and returns the slot it runs now
/// (the other one than it asks for) and how it booted. Connection failures, and the agent's
/// "reboot pending" and "busy" refusals, are retried until `timeouts.reboot` has passed.
pub fn await_return(
    target: &Target,
    timeouts: &Timeouts,
    cancel: &AtomicBool,
    report: &mut dyn FnMut(Progress<'_>),
) -> Result<Returned, PushError> {
    report(Progress::AwaitingReboot);
    // A device that reboots once the success line is delivered is back well before the 2 s
    // the line promises; look early and retry.
    std::thread::sleep(RETRY_PAUSE);
    let start = Instant::now();
    loop {
        let attempt =
            Conn::open(target, timeouts, cancel).and_then(|mut conn| conn.converse(Goal::Ask, &mut |_| {}));
        let error = match attempt {
            Ok(Reached::Asked(returned)) => return Ok(returned),
            Ok(Reached::Pushed { .. } | Reached::Slot(_)) => unreachable!("asking runs to the boot state"),
            Err(error) if is_transient(&error) => error,
            Err(error) => return Err(error),
        };
        if start.elapsed() >= timeouts.reboot {
            return Err(not_back(start.elapsed(), &error));
        }
        report(Progress::Retrying);
        std::thread::sleep(RETRY_PAUSE);
    }
}

/// The device did not answer as it should within the reboot timeout; `last` is why the last
/// attempt failed.
fn not_back(waited: Duration, last: &PushError) -> PushError {
    let busy = matches!(last, PushError::Device { line, .. } if line.ends_with(reason::BUSY));
    let help = if busy {
        "the device is back and answers, but another client held its agent the whole time (it serves one \
         at a time): wait for that client to finish, then push again or check with another push"
    } else {
        "the device accepted the image and rebooted; if the new firmware does not call ota_init() it cannot \
         answer, so check its serial log. Raise --reboot-timeout for a slow network, or skip this check \
         with --no-verify"
    };
    PushError::NotBack { waited, last: last.to_string(), help: help.into() }
}

/// Errors that a rebooting device produces on its way back.
fn is_transient(error: &PushError) -> bool {
    match error {
        PushError::Device { line, .. } => {
            line.ends_with(reason::REBOOT_PENDING) || line.ends_with(reason::BUSY)
        }
        other => other.exit_code() == exit::NETWORK,
    }
}

#[derive(Clone, Copy)]
enum Goal<'a> {
    /// The whole protocol, with these images (and the key, if any); `plain`: the seed's
    /// lines only.
    Push { images: [&'a [u8]; 2], key: Option<&'a Key>, plain: bool },
    /// `OTA` / `GetNextFlash`, then `GetBootState`, then close.
    Ask,
    /// `OTA` / `GetNextFlash` and the slot's name, before the images exist.
    Slot,
}

enum Reached {
    Pushed { slot: SlotId, len: u32 },
    Slot(SlotId),
    Asked(Returned),
}

struct Conn<'c> {
    stream: TcpStream,
    addr: SocketAddr,
    timeouts: Timeouts,
    cancel: &'c AtomicBool,
    /// Where the conversation stands, for messages about timeouts and broken connections.
    step: Step,
    /// The slot the device asked for, when only asking.
    asked: Option<SlotId>,
    /// Bytes received after the slot's name when a conversation stopped there (an `ERR:`
    /// line the device sent with it): the next part of the conversation reads them first.
    pending: Vec<u8>,
}

impl<'c> Conn<'c> {
    /// Connects to the first address that answers.
    fn open(target: &Target, timeouts: &Timeouts, cancel: &'c AtomicBool) -> Result<Conn<'c>, PushError> {
        let mut last = None;
        for &addr in &target.addrs {
            match TcpStream::connect_timeout(&addr, timeouts.connect) {
                Ok(stream) => {
                    let io = |source| PushError::Connect { addr, cause: source };
                    // Short socket timeouts: a blocked read or write looks at `cancel` each
                    // tick, and gives up at the reply timeout.
                    let tick = Some(CANCEL_TICK.min(timeouts.reply).max(Duration::from_millis(1)));
                    stream.set_read_timeout(tick).map_err(io)?;
                    stream.set_write_timeout(tick).map_err(io)?;
                    stream.set_nodelay(true).map_err(io)?;
                    // At least two segments: a buffer below the path's MSS (loopback's is 64 KB)
                    // stalls each write on the peer's delayed ACK (40 ms on Linux).
                    let socket = socket2::SockRef::from(&stream);
                    let mss = socket.tcp_mss().map_or(1460, |mss| mss as usize);
                    socket.set_send_buffer_size(SEND_BUFFER.max(2 * mss)).map_err(io)?;
                    let step = Step::NextSlot;
                    let pending = Vec::new();
                    return Ok(Conn {
                        stream,
                        addr,
                        timeouts: *timeouts,
                        cancel,
                        step,
                        asked: None,
                        pending,
                    });
                }
                Err(source) => last = Some(connect_error(addr, source, timeouts.connect)),
            }
        }
        Err(last.expect("a resolved target has an address"))
    }

    /// Asks (a new client) until `goal` is reached or the conversation fails.
    fn converse(
        &mut self,
        goal: Goal<'_>,
        report: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Reached, PushError> {
        self.converse_with(&mut Client::new(), goal, report)
    }

    /// The whole push (`goal` is a [`Goal::Push`]) with `client`, from wherever its
    /// conversation stands.
    fn push_with(
        &mut self,
        client: &mut Client,
        goal: Goal<'_>,
        report: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Pushed, PushError> {
        let Goal::Push { images, .. } = goal else { unreachable!("a push has images") };
        match self.converse_with(client, goal, report)? {
            Reached::Pushed { slot, len } => {
                Ok(Pushed { slot, addr: self.addr, len, build_id: build_id_of(images[slot.index()]) })
            }
            Reached::Asked(_) | Reached::Slot(_) => unreachable!("a push runs to its end"),
        }
    }

    /// Runs `client` until `goal` is reached or the conversation fails.
    fn converse_with(
        &mut self,
        client: &mut Client,
        goal: Goal<'_>,
        report: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Reached, PushError> {
        let pending = std::mem::take(&mut self.pending);
        if let Some(reached) = self.feed(&pending, client, &goal, report)? {
            return Ok(reached);
        }
        let mut buf = [0u8; 512];
        loop {
            match client.transmit() {
                Transmit::Bytes(bytes) => {
                    let n = self.write(bytes, client)?;
                    client.sent(n);
                    continue;
                }
                Transmit::Image { offset, len } => {
                    let Goal::Push { images, .. } = &goal else {
                        unreachable!("images go out only when pushing")
                    };
                    let image = images[client.slot().expect("the device named the slot").index()];
                    let chunk = (len as usize).min(WRITE_CHUNK);
                    let n = self.write(&image[offset as usize..offset as usize + chunk], client)?;
                    client.sent(n);
                    report(Progress::Sent(n));
                    if client.transmit() == Transmit::Nothing {
                        self.step = Step::Verdict;
                        report(Progress::Verifying);
                        // No half-close: espconn (the SDK's agents, the seed's) takes a FIN
                        // for the end of the connection; the device commits after its short
                        // grace for stray bytes instead.
                    }
                    // The device may refuse before the image is complete (a flash failure):
                    // look at what it said without waiting.
                    let n = self.read_now(&mut buf, client)?;
                    if let Some(reached) = self.feed(&buf[..n], client, &goal, report)? {
                        return Ok(reached);
                    }
                    continue;
                }
                Transmit::Nothing => {}
            }
            let n = self.read(&mut buf, client)?;
            let reached = if n == 0 {
                let event = client.closed();
                match event {
                    Some(event) => self.on_event(event, client, &goal, report)?,
                    None => None,
                }
            } else {
                self.feed(&buf[..n], client, &goal, report)?
            };
            if let Some(reached) = reached {
                return Ok(reached);
            }
        }
    }

    /// Feeds received bytes to the client and acts on each event.
    fn feed(
        &mut self,
        mut data: &[u8],
        client: &mut Client,
        goal: &Goal<'_>,
        report: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Option<Reached>, PushError> {
        while !data.is_empty() {
            let (taken, event) = client.receive(data);
            data = &data[taken..];
            if let Some(event) = event
                && let Some(reached) = self.on_event(event, client, goal, report)?
            {
                self.pending.extend_from_slice(data);
                return Ok(Some(reached));
            }
        }
        Ok(None)
    }

    fn on_event(
        &mut self,
        event: Event,
        client: &mut Client,
        goal: &Goal<'_>,
        report: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Option<Reached>, PushError> {
        match event {
            Event::NextSlot(slot) => {
                report(Progress::Reply(slot.file_name()));
                match goal {
                    Goal::Slot => {
                        self.step = Step::ChooseImage;
                        return Ok(Some(Reached::Slot(slot)));
                    }
                    Goal::Ask => {
                        self.asked = Some(slot);
                        self.step = Step::BootState;
                        client.ask_boot_state();
                    }
                    Goal::Push { images, plain, .. } => {
                        let image = images[slot.index()];
                        let len = u32::try_from(image.len()).expect("images fit their slot");
                        if *plain {
                            client.send_image(len);
                        } else {
                            client.send_checked_image(len, &auth::sha256(image));
                        }
                        self.step = Step::Ready;
                    }
                }
            }
            Event::Ready => {
                self.step = Step::Image;
                // Whether the push is authenticated comes first: it is about the whole push.
                if let Goal::Push { key: Some(_), .. } = goal {
                    report(Progress::Authentication(client.authentication()));
                }
                report(Progress::Reply(ota_agent::protocol::READY));
                let (_, len) = client.progress();
                report(Progress::Sending { slot: client.slot().expect("slot known"), len });
            }
            Event::Flashing => {
                self.step = Step::Success;
                report(Progress::Reply(ota_agent::protocol::FLASHING));
            }
            Event::Invalid => {
                self.step = Step::Reason;
                report(Progress::Reply(ota_agent::protocol::INVALID));
            }
            Event::Success => {
                report(Progress::Reply(ota_agent::protocol::SUCCESS));
                let (_, len) = client.progress();
                return Ok(Some(Reached::Pushed { slot: client.slot().expect("slot known"), len }));
            }
            Event::BootState(boot) => {
                let slot = self.asked.expect("the slot came first").other();
                return Ok(Some(Reached::Asked(Returned { slot, boot: Some(boot) })));
            }
            // An agent older than `GetBootState` (or the seed's) refuses the line: the slot
            // it named is all it can say.
            Event::Failed(ClientError::Device(_)) if matches!(goal, Goal::Ask) && self.asked.is_some() => {
                let slot = self.asked.expect("checked").other();
                return Ok(Some(Reached::Asked(Returned { slot, boot: None })));
            }
            Event::Failed(error) => return Err(self.failure(error, client, goal)),
        }
        Ok(None)
    }

    /// Turns the client's verdict into an error a person can act on.
    fn failure(&self, error: ClientError, client: &Client, goal: &Goal<'_>) -> PushError {
        let addr = self.addr;
        match error {
            ClientError::ImageRejected(reason) => {
                let reason = printable(&reason.to_string());
                let reply = if reason.is_empty() {
                    format!("{}, then the connection closed", ota_agent::protocol::INVALID)
                } else {
                    format!("{}, {ERR_PREFIX}{reason}", ota_agent::protocol::INVALID)
                };
                PushError::Rejected { reply, help: rejected_help(&reason) }
            }
            ClientError::Device(reason) => {
                let reason = reason.to_string();
                let line = format!("{ERR_PREFIX}{}", printable(&reason));
                // Refused at our header lines for a reason our agent never gives: a device
                // without the extensions (the seed's agent answers `Unexpected header.`).
                if let Goal::Push { plain: false, key, .. } = goal
                    && self.step == Step::Ready
                    && !is_our_reason(&reason)
                {
                    return PushError::NoExtensions { line, keyed: key.is_some() };
                }
                PushError::Device { line, help: device_help(&reason) }
            }
            ClientError::Unexpected { line, during } => {
                PushError::Unexpected { line: line.to_string(), during }
            }
            ClientError::LineTooLong { during } => {
                PushError::Unexpected { line: "a line longer than any TCP-OTA reply".into(), during }
            }
            ClientError::Closed { during: during @ (Step::Image | Step::Verdict | Step::Success) } => {
                interrupted(addr, during, client)
            }
            ClientError::Closed { during } => PushError::Closed { addr, during },
        }
    }

    /// Writes some of `bytes`, waiting up to the reply timeout for the device to take them.
    fn write(&mut self, bytes: &[u8], client: &Client) -> Result<usize, PushError> {
        let deadline = Instant::now() + self.timeouts.reply;
        loop {
            self.check_cancel(client)?;
            match self.stream.write(bytes) {
                Ok(0) => return Err(self.lost(client)),
                Ok(n) => return Ok(n),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if is_timeout(&error) => {
                    if Instant::now() >= deadline {
                        return Err(self.timed_out());
                    }
                }
                Err(_) => return Err(self.lost(client)),
            }
        }
    }

    /// Waits up to the reply timeout for bytes; 0 means the device closed.
    fn read(&mut self, buf: &mut [u8], client: &Client) -> Result<usize, PushError> {
        let deadline = Instant::now() + self.timeouts.reply;
        loop {
            self.check_cancel(client)?;
            match self.stream.read(buf) {
                Ok(n) => return Ok(n),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if is_timeout(&error) => {
                    if Instant::now() >= deadline {
                        return Err(self.timed_out());
                    }
                }
                // A reset reads like a close: the client says what that means at this step.
                Err(_) => return Ok(0),
            }
        }
    }

    /// Stops here when `cancel` is set: the connection is reset (SO_LINGER 0 makes the close
    /// a reset), so whatever the kernel has not sent yet is dropped, not delivered.
    fn check_cancel(&mut self, client: &Client) -> Result<(), PushError> {
        if !self.cancel.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
        let (sent, len) = client.progress();
        let stage = match client.slot() {
            Some(slot) if len > 0 && sent == len => CancelStage::AllSent { slot, len },
            Some(slot) if sent > 0 => CancelStage::Partial { slot, sent, len },
            _ => CancelStage::BeforeImage,
        };
        Err(PushError::Cancelled { addr: self.addr, stage, help: stage.help() })
    }

    /// Bytes already received, without waiting.
    fn read_now(&mut self, buf: &mut [u8], client: &mut Client) -> Result<usize, PushError> {
        let io = |source| PushError::Connect { addr: self.addr, cause: source };
        self.stream.set_nonblocking(true).map_err(io)?;
        let result = self.stream.read(buf);
        self.stream.set_nonblocking(false).map_err(io)?;
        match result {
            Ok(0) => {
                let event = client.closed().expect("the conversation was open");
                match event {
                    Event::Failed(error) => Err(self.failure(error, client, &Goal::Ask)),
                    _ => unreachable!("closing only fails"),
                }
            }
            Ok(n) => Ok(n),
            Err(error) if is_timeout(&error) => Ok(0),
            Err(_) => Err(self.lost(client)),
        }
    }

    /// The connection broke (reset, broken pipe) while we were writing.
    /// The device stayed silent (or took no data) for the reply timeout.
    fn timed_out(&self) -> PushError {
        PushError::Timeout { addr: self.addr, during: self.step, timeout: self.timeouts.reply }
    }

    fn lost(&self, client: &Client) -> PushError {
        match self.step {
            during @ (Step::Image | Step::Verdict | Step::Success) => interrupted(self.addr, during, client),
            during => PushError::Closed { addr: self.addr, during },
        }
    }
}

/// The connection broke during the image or after it; what the device does depends on
/// whether it got every byte.
fn interrupted(addr: SocketAddr, during: Step, client: &Client) -> PushError {
    let help = if during == Step::Image {
        "the device keeps running its current firmware (it switches only after checking the whole image); \
         check its power and network, then push again"
    } else {
        "every byte was sent, so the device may have had the whole image and installed it (it installs a \
         verified image when the connection closes); push again: it asks for the slot it does not run, which \
         tells where it is"
    };
    PushError::Interrupted { addr, what: interrupted_what(during, client), help: help.into() }
}

/// `text` from a device, safe for a terminal: control characters (escape sequences that
/// clear the screen, recolour it or set the window title; C1 controls too) are shown escaped.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn interrupted_what(during: Step, client: &Client) -> String {
    let (sent, len) = client.progress();
    let slot = client.slot().map_or("the image", SlotId::file_name);
    match during {
        Step::Image => format!("the connection was lost after {sent} of {len} bytes of {slot}"),
        _ => {
            format!("the connection was lost after all {len} bytes of {slot}, before the device confirmed it")
        }
    }
}

fn connect_error(addr: SocketAddr, source: io::Error, timeout: Duration) -> PushError {
    match source.kind() {
        io::ErrorKind::ConnectionRefused => PushError::Refused { addr },
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => PushError::ConnectTimeout { addr, timeout },
        _ => PushError::Connect { addr, cause: source },
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Whether `reason` is one our agent gives (so it is not a device without the extensions).
fn is_our_reason(reason: &str) -> bool {
    use ota_agent::protocol::reason::*;
    let ours = [
        INVALID_LENGTH,
        LENGTH_TOO_BIG,
        BUSY,
        LINE_TOO_LONG,
        IDLE_TIMEOUT,
        TOO_MANY_BYTES,
        TRUNCATED,
        REBOOT_PENDING,
        UNKNOWN_RUNNING_SLOT,
        INVALID_DIGEST,
        AUTH_REQUIRED,
        AUTH_FAILED,
        AUTH_LOCKED,
        SHA256_MISMATCH,
        NO_NONCE,
        HEADER_TIMEOUT,
        TOO_MANY_HEADER_BYTES,
        TOO_SLOW,
        ON_TRIAL,
    ];
    ours.iter().any(|ours| reason.starts_with(ours))
}

/// What to do about the agent's `ERR:` reasons (the seed's and ours).
fn device_help(reason: &str) -> String {
    let help = if reason == reason::BUSY {
        "another push to this device is in progress: wait for it to finish, then push again"
    } else if reason == reason::REBOOT_PENDING {
        "the device is about to reboot into the update it just took: push again in a few seconds"
    } else if reason == reason::LENGTH_TOO_BIG {
        "the image does not fit the device's slot: build for the device's flash layout (--layout, or `layout` in [package.metadata.tcpflash])"
    } else if reason == reason::UNKNOWN_RUNNING_SLOT {
        "the device's rBoot config names a ROM that is not one of the layout's slots: reinstall it with `cargo xtask serial-flash`"
    } else if reason == reason::IDLE_TIMEOUT {
        "the device gave up waiting for data: the network stalled; push again"
    } else if reason == reason::HEADER_TIMEOUT {
        "the device bounds the request lines to a few seconds and they came too slowly: the network \
         stalled; push again"
    } else if reason == reason::TOO_SLOW {
        "the image came slower than the device's minimum pace (1 KB/s): the network is too slow or \
         stalled; push again on a better link"
    } else if reason == reason::ON_TRIAL {
        "the device runs a new firmware on trial that has not confirmed itself yet, and its slot's old \
         firmware is the way back: wait until the firmware confirms (it calls the agent's confirm), or \
         reset the device until tcpflash-boot goes back, then push again"
    } else if reason == reason::AUTH_REQUIRED {
        "the device's firmware was built with a key: pass the same key file with --key-file PATH (or set \
         TCPFLASH_KEY_FILE)"
    } else if reason == reason::AUTH_FAILED {
        "the key does not match the device's: pass the key file its firmware was built with (--key-file or \
         TCPFLASH_KEY_FILE). Each failed attempt locks the device's authentication for longer (1 s, doubling \
         up to 64 s)"
    } else if reason.starts_with(reason::AUTH_LOCKED) {
        "earlier pushes with a wrong key locked the device for a while: wait as long as it says, then push \
         again with the key file its firmware was built with"
    } else if reason == reason::NO_NONCE {
        "the device's agent had no random nonce to give: its Platform::fill_random is not wired to a random \
         source; fix the firmware (serial flash)"
    } else if reason == reason::INVALID_PROTOCOL {
        "the agent refused a line this push sent; an agent older than the Sha256 and GetNonce extension lines \
         (such as the seed's C agent) refuses them: use the seed's tcp_flash.py for such a device"
    } else {
        "the device's agent did not accept the conversation; its reason is above"
    };
    help.to_owned()
}

/// What to do about an image the device checked and refused.
fn rejected_help(reason: &str) -> String {
    let help = if reason.contains("linked for") {
        "the image was linked for another flash address than the device's slot: build for the device's flash layout (--layout)"
    } else if reason.contains("mismatch") {
        "the image arrived damaged; the device kept its current firmware. Push again; if it persists, check the network"
    } else if reason.is_empty() {
        "the device kept its current firmware"
    } else {
        "the device kept its current firmware; its reason is above"
    };
    help.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_per_kind() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(PushError::Refused { addr }.exit_code(), exit::NETWORK);
        assert_eq!(
            PushError::Rejected { reply: String::new(), help: String::new() }.exit_code(),
            exit::REFUSED
        );
        let reverted = PushError::Reverted {
            pushed: SlotId::User2,
            running: SlotId::User1,
            new_build: Some([0xAB; 8]),
            running_build: None,
        };
        assert_eq!(reverted.exit_code(), exit::REVERTED);
        assert_eq!(
            reverted.to_string(),
            "the new firmware (build abababababababab) did not confirm and the device went back: it runs user1 again (the image went to user2)"
        );
        let codes = [
            exit::OTHER,
            exit::USAGE,
            exit::BUILD,
            exit::NETWORK,
            exit::REFUSED,
            exit::REVERTED,
            exit::CANCELLED,
        ];
        let mut sorted = codes.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), codes.len());
    }

    #[test]
    fn seconds_print_without_needless_decimals() {
        assert_eq!(secs(Duration::from_secs(10)), "10");
        assert_eq!(secs(Duration::from_millis(500)), "0.5");
    }

    #[test]
    fn a_rebooting_device_is_retried_but_a_refusal_is_not() {
        let device = |reason: &str| PushError::Device { line: format!("ERR: {reason}"), help: String::new() };
        assert!(is_transient(&device(reason::REBOOT_PENDING)));
        assert!(!is_transient(&device(reason::LENGTH_TOO_BIG)));
        assert!(is_transient(&PushError::Refused { addr: "127.0.0.1:1".parse().unwrap() }));
        assert!(!is_transient(&PushError::Unexpected { line: "x".into(), during: Step::NextSlot }));
    }

    #[test]
    fn a_device_busy_after_its_reboot_is_not_said_to_lack_the_agent() {
        let busy = PushError::Device { line: format!("ERR: {}", reason::BUSY), help: String::new() };
        let PushError::NotBack { help, last, .. } = not_back(Duration::from_secs(30), &busy) else {
            panic!()
        };
        assert!(help.contains("another client held its agent"), "{help}");
        assert!(!help.contains("ota_init"), "{help}");
        assert_eq!(last, "the device answered: ERR: Connection Already Exists");
        let refused = PushError::Refused { addr: "127.0.0.1:1".parse().unwrap() };
        let PushError::NotBack { help, .. } = not_back(Duration::from_secs(30), &refused) else { panic!() };
        assert!(help.contains("ota_init()"), "{help}");
    }

    #[test]
    fn addresses_print_as_socket_addresses() {
        assert_eq!(resolve("::1", 47001).unwrap().to_string(), "[::1]:47001");
        assert_eq!(resolve("127.0.0.1", 47001).unwrap().to_string(), "127.0.0.1:47001");
        assert_eq!(
            resolve("localhost", 47001).unwrap().to_string().split(' ').next(),
            Some("localhost:47001")
        );
    }

    #[test]
    fn device_text_is_printable() {
        assert_eq!(printable("ok \x1b[2J\u{9b}1m\x07 é"), "ok \\u{1b}[2J\\u{9b}1m\\u{7} é");
        assert_eq!(printable("tab\there"), "tab\\there");
    }

    /// [`EarlyPush`] against scripted devices on 127.0.0.1.
    mod early {
        use std::io::{BufRead, BufReader};
        use std::net::TcpListener;
        use std::sync::Arc;
        use std::sync::atomic::AtomicUsize;

        use super::*;

        /// Upper bound for a step, so a bug fails the test instead of hanging it.
        const PATIENCE: Duration = Duration::from_secs(60);

        type Script = Box<dyn FnOnce(TcpStream) + Send>;

        fn timeouts() -> Timeouts {
            Timeouts { connect: PATIENCE, reply: PATIENCE, reboot: PATIENCE }
        }

        /// A device that hands each connection to the next script; connections are counted.
        fn device(scripts: Vec<Script>) -> (Target, Arc<AtomicUsize>) {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let target = resolve("127.0.0.1", listener.local_addr().unwrap().port()).unwrap();
            let connections = Arc::new(AtomicUsize::new(0));
            let count = Arc::clone(&connections);
            std::thread::spawn(move || {
                let mut scripts = scripts.into_iter();
                for stream in listener.incoming() {
                    count.fetch_add(1, Ordering::SeqCst);
                    match (stream, scripts.next()) {
                        (Ok(stream), Some(script)) => drop(std::thread::spawn(move || script(stream))),
                        _ => return,
                    }
                }
            });
            (target, connections)
        }

        fn line(reader: &mut impl BufRead) -> String {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            line
        }

        /// Reads `OTA` and `GetNextFlash` and answers `reply`.
        fn opening(stream: &mut TcpStream, reply: &[u8]) -> BufReader<TcpStream> {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            assert_eq!(line(&mut reader), "OTA\r\n");
            assert_eq!(line(&mut reader), "GetNextFlash\r\n");
            stream.write_all(reply).unwrap();
            reader
        }

        /// Names user2, tells `told` so, and takes a whole push.
        fn accepts(told: mpsc::Sender<&'static str>) -> Script {
            Box::new(move |mut stream| {
                let mut reader = opening(&mut stream, b"user2.bin\r\n");
                let _ = told.send("asked");
                assert!(line(&mut reader).starts_with("Sha256: "));
                let length = line(&mut reader);
                let len: usize = length.trim_end().strip_prefix("FirmwareLength: ").unwrap().parse().unwrap();
                stream.write_all(b"Ready\r\n").unwrap();
                reader.read_exact(&mut vec![0; len]).unwrap();
                stream.write_all(b"Flashing\r\nFlash upgrade success. Rebooting in 2s.\r\n").unwrap();
                let _ = told.send("pushed");
                let _ = io::copy(&mut reader, &mut io::sink());
            })
        }

        fn push_now(early: EarlyPush, target: &Target, seen: &mut Vec<String>) -> Result<Pushed, PushError> {
            let images = [vec![1u8; 3000], vec![2u8; 3000]];
            let never = AtomicBool::new(false);
            let mut report = |progress: Progress<'_>| seen.push(format!("{progress:?}"));
            early.push(
                target,
                [&images[0], &images[1]],
                None,
                Protocol::Auto,
                &timeouts(),
                &never,
                &mut report,
            )
        }

        #[test]
        fn the_device_names_its_slot_while_the_build_runs_and_the_push_carries_on() {
            let (told, heard) = mpsc::channel();
            let (target, connections) = device(vec![accepts(told)]);
            let early = EarlyPush::start(&target, &timeouts(), None);
            // The "build" ends only once the device has answered: the question came first.
            assert_eq!(heard.recv_timeout(PATIENCE), Ok("asked"));
            let mut seen = Vec::new();
            let pushed = push_now(early, &target, &mut seen).unwrap();
            assert_eq!((pushed.slot, pushed.len), (SlotId::User2, 3000));
            assert_eq!(heard.recv_timeout(PATIENCE), Ok("pushed"));
            assert_eq!(connections.load(Ordering::SeqCst), 1, "one connection for the whole push");
            // The progress a push reports, in its order.
            assert!(seen[0].starts_with("Connected("), "{seen:?}");
            assert_eq!(seen[1..3], ["Reply(\"user2.bin\")", "Reply(\"Ready\")"], "{seen:?}");
            assert!(seen.last().unwrap().contains("Flash upgrade success"), "{seen:?}");
        }

        #[test]
        fn a_device_busy_during_the_build_gets_the_push_on_a_new_connection() {
            let (told, heard) = mpsc::channel();
            let busy: Script = Box::new(|mut stream| {
                stream.write_all(b"ERR: Connection Already Exists\r\n").unwrap();
            });
            let (target, connections) = device(vec![busy, accepts(told)]);
            let early = EarlyPush::start(&target, &timeouts(), None);
            let pushed = push_now(early, &target, &mut Vec::new()).unwrap();
            assert_eq!(pushed.slot, SlotId::User2);
            assert_eq!(heard.recv_timeout(PATIENCE), Ok("asked"));
            assert_eq!(connections.load(Ordering::SeqCst), 2);
        }

        #[test]
        fn a_build_longer_than_the_hold_lets_the_device_go_and_pushes_on_a_new_connection() {
            let (let_go, released) = mpsc::channel();
            let held: Script = Box::new(move |mut stream| {
                let mut reader = opening(&mut stream, b"user2.bin\r\n");
                // Nothing more on this connection: the client closes it.
                let mut rest = Vec::new();
                let _ = reader.read_to_end(&mut rest);
                let_go.send(rest).unwrap();
            });
            let (told, heard) = mpsc::channel();
            let (target, connections) = device(vec![held, accepts(told)]);
            let early = EarlyPush::holding(&target, &timeouts(), None, Duration::from_millis(20));
            assert_eq!(released.recv_timeout(PATIENCE), Ok(Vec::new()), "closed without a header line");
            push_now(early, &target, &mut Vec::new()).unwrap();
            assert_eq!(heard.recv_timeout(PATIENCE), Ok("asked"));
            assert_eq!(connections.load(Ordering::SeqCst), 2);
        }

        #[test]
        fn a_device_that_drops_the_held_connection_gets_the_push_on_a_new_one() {
            let (dropped, gone) = mpsc::channel();
            let impatient: Script = Box::new(move |mut stream| {
                let _reader = opening(&mut stream, b"user2.bin\r\nERR: Header lines too slow\r\n");
                drop(stream);
                dropped.send(()).unwrap();
            });
            let (told, heard) = mpsc::channel();
            let (target, connections) = device(vec![impatient, accepts(told)]);
            let early = EarlyPush::start(&target, &timeouts(), None);
            gone.recv_timeout(PATIENCE).unwrap();
            push_now(early, &target, &mut Vec::new()).unwrap();
            assert_eq!(heard.recv_timeout(PATIENCE), Ok("asked"));
            assert_eq!(connections.load(Ordering::SeqCst), 2);
        }

        #[test]
        fn a_refusal_sent_with_the_slot_s_name_is_read_after_the_build() {
            let refusing: Script = Box::new(|mut stream| {
                let reply = b"user1.bin\r\nERR: Running firmware is on trial, not confirmed yet\r\n";
                let mut reader = opening(&mut stream, reply);
                let _ = io::copy(&mut reader, &mut io::sink());
            });
            let (target, connections) = device(vec![refusing]);
            let early = EarlyPush::start(&target, &timeouts(), None);
            let error = push_now(early, &target, &mut Vec::new()).unwrap_err();
            assert!(
                matches!(&error, PushError::Device { line, .. } if line.ends_with("not confirmed yet")),
                "{error:?}"
            );
            assert_eq!(connections.load(Ordering::SeqCst), 1);
        }

        #[test]
        fn a_definite_early_answer_is_the_push_s_error() {
            let off: Script = Box::new(|mut stream| {
                let mut reader = opening(&mut stream, b"HTTP/1.1 400 Bad Request\r\n");
                let _ = io::copy(&mut reader, &mut io::sink());
            });
            let (target, connections) = device(vec![off]);
            let early = EarlyPush::start(&target, &timeouts(), None);
            let error = push_now(early, &target, &mut Vec::new()).unwrap_err();
            assert!(
                matches!(&error, PushError::Unexpected { line, during: Step::NextSlot } if line == "HTTP/1.1 400 Bad Request"),
                "{error:?}"
            );
            assert_eq!(connections.load(Ordering::SeqCst), 1, "no second try for an answer that stays");
        }
    }
}
