//! One TCP-OTA conversation as a sans-IO state machine: bytes in, reply lines out, and the
//! flash work done through an `embedded-storage` `NorFlash`.
//!
//! The driver (the [`crate::listener::Listener`] for every driver) feeds received bytes with
//! [`Session::receive`], calls [`Session::poll`] after each batch and when
//! [`Session::poll_timeout`] says (that is where a complete image is verified, the update
//! committed and the deadlines enforced), sends each [`Session::next_reply`] in one write,
//! and treats the connection as [`Session::phase`] says. Segmentation never matters: lines
//! are assembled byte by byte in a small buffer and the image streams through the sector
//! writer.
//!
//! The update commits only after the whole image was read back from the slot and verified
//! (`image::verify_for_slot`) and `Flashing` went out. A client that declared the image's
//! SHA-256 named exactly the bytes it meant, so its update commits at once (a stray byte
//! after the image then only fails the session while it arrives with the image); any other
//! client must close its side or send nothing more for [`COMMIT_GRACE`]: a byte beyond
//! `FirmwareLength`, in whatever segment it arrives, ends its session with an error and
//! nothing switched. Committing is a trial on a device started by tcpflash-boot, a switch for
//! good on one started by rBoot ([`crate::boot::commit_update`]).
//!
//! After the commit the device reboots as soon as the client has the success line and is
//! done: at once once it has closed its side (or the connection is gone), [`CLOSE_GRACE`]
//! after the line is acknowledged (so our close reaches a client that keeps its side open),
//! and at the latest `REBOOT_DELAY_MS` (the seed's 2 s) after the commit.
//!
//! Deadlines keep one client from holding the device: the header lines must be done within
//! [`SessionConfig::header_timeout`] of the connection and within [`MAX_HEADER_BYTES`]; the
//! image must keep a minimum pace ([`MIN_PACE`] bytes a second, after one idle timeout of
//! grace); silence ends a session after [`SessionConfig::idle_timeout`]. A session that ends
//! with `ERR:` asks for its connection to be dropped as soon as that line is out.
//!
//! Extension lines belong in the `Headers` state, stored until `FirmwareLength` ends the
//! headers: `Sha256` (checked in the same pass that verifies the slot), `GetBootState`
//! (answered at once), and with a key `GetNonce` and `Auth`, checked when `FirmwareLength`
//! arrives, before `Ready` ([`crate::auth`]). Failed proofs lock out the address they came
//! from. The driver draws the nonce for each session ([`Session::provide_nonce`]), since
//! only it knows the board's random source.

use core::fmt;
use core::net::IpAddr;

use smoltcp::time::{Duration, Instant};

use crate::auth::{self, DEFAULT_AUTH_BACKOFF, Digest256, Key, Lockouts, NONCE_LEN, Nonce, PeerKey};
use crate::boot::{self, BootStatus, CommitError, DEFAULT_TRIAL_ATTEMPTS, Running};
use crate::flash::NorFlash;
use crate::image::{self, ImageError};
use crate::irom_text;
use crate::layout::{FlashLayout, SECTOR_SIZE, SlotId};
use crate::protocol::{
    LineReader, LineTooLong, MAX_REQUEST_LINE, REBOOT_DELAY_MS, ReplyLine, Request, RequestError, in_irom,
    in_irom::reason,
};
use crate::text::{self, Arg, Message, Sink};
use crate::writer::{SectorBuffer, SectorWriter, WriteError};

/// How long a client may stay silent before its session ends.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the header lines may take, from the connection to `Ready`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of header lines a session takes: every request and extension line once
/// (about 250 bytes) with room to spare. A client that trickles bytes cannot hold the device.
pub const MAX_HEADER_BYTES: u32 = 512;
/// The slowest an image may arrive, in bytes a second averaged from `Ready` on, after one
/// idle timeout of grace: a 400 KB image then has 400 s plus the grace. Real links run at
/// 10 KB/s (SLIP at 115200 baud) to several 100 KB/s (WiFi); a client that sends one byte
/// now and then to defeat the idle timeout is dropped.
pub const MIN_PACE: u32 = 1024;

/// After the success line is delivered, the time the device gives its own close (FIN) to
/// leave before it reboots.
pub const CLOSE_GRACE: Duration = Duration::from_millis(100);
/// After `Flashing`, how long the device waits for the client to close its side or to send
/// bytes beyond the image before it commits. A client that half-closes after the image, or
/// that declared the image's SHA-256 (as `cargo tcpflash` does), skips the wait.
pub const COMMIT_GRACE: Duration = Duration::from_millis(250);
/// How long a connection that ended with `ERR:` gets to take the line before it is dropped.
pub const DROP_LINGER: Duration = Duration::from_secs(1);

/// Who confirms a firmware that runs on trial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirm {
    /// The pushing host's check-in after the reboot (`GetNextFlash`): a firmware that comes
    /// up far enough to run the agent and answer is healthy.
    OnCheckIn,
    /// The application, when it knows it is healthy (`OtaAgent::confirm`). Until then the
    /// device refuses updates: one would overwrite the only confirmed firmware.
    ByApplication,
}

/// What a session needs to know about the device.
#[derive(Clone, Copy, Debug)]
pub struct SessionConfig {
    pub layout: &'static FlashLayout,
    /// A silent client is dropped after this long.
    pub idle_timeout: Duration,
    /// The header lines must be done within this long of the connection.
    pub header_timeout: Duration,
    /// With a key, every session must prove it holds it before `Ready`.
    pub key: Option<&'static Key>,
    /// How long the first failed proof locks its address out; each further one doubles it.
    pub auth_backoff: Duration,
    /// Who confirms a trial.
    pub confirm: Confirm,
    /// Boots a new firmware gets to confirm itself (with tcpflash-boot).
    pub trial_attempts: u8,
    /// Erase the idle slot in the background once the running firmware is confirmed
    /// ([`Session::pre_erase`]), so the next push only programs.
    pub pre_erase: bool,
}

impl SessionConfig {
    pub const fn new(layout: &'static FlashLayout) -> SessionConfig {
        SessionConfig {
            layout,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            key: None,
            auth_backoff: DEFAULT_AUTH_BACKOFF,
            confirm: Confirm::OnCheckIn,
            trial_attempts: DEFAULT_TRIAL_ATTEMPTS,
            pre_erase: true,
        }
    }
}

/// What the driver should do with the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No client.
    Idle,
    /// Reading the client's bytes.
    Open,
    /// The update is committed: send the replies, close our side, and tell
    /// [`Session::delivered`] once they are out (the device reboots then). Input is discarded.
    Closing,
    /// The session failed: send the `ERR:` line, close, and drop the connection as soon as
    /// it is out, without waiting for the client.
    Dropping,
    /// Drop the connection now.
    Abort,
}

/// Why a session ended early. `Display` is the reason sent after `ERR: `.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A header line was wrong for where the conversation stands.
    Request(RequestError),
    LineTooLong,
    /// The length fits 32 bits but not the slot.
    LengthTooBig {
        len: u32,
        capacity: u32,
    },
    IdleTimeout,
    /// The header lines took longer than the header timeout.
    HeaderTimeout,
    /// More than [`MAX_HEADER_BYTES`] of header lines.
    TooManyHeaderBytes,
    /// The image fell behind [`MIN_PACE`].
    TooSlow,
    /// Bytes beyond `FirmwareLength`: nothing switched.
    TooManyBytes,
    /// The client stopped sending before the whole image arrived.
    Truncated {
        received: u32,
        len: u32,
    },
    RebootPending,
    UnknownRunningSlot,
    /// The running firmware is on trial and confirms itself ([`Confirm::ByApplication`]).
    OnTrial,
    /// A device with a key got `FirmwareLength` without `GetNonce`, `Sha256` and `Auth`.
    AuthRequired,
    /// The proof did not match (key, nonce, slot, length or SHA-256: not said which).
    AuthFailed,
    /// `GetNonce` while failed proofs lock this address out, for this many more seconds.
    AuthLocked {
        seconds: u32,
    },
    /// The driver gave this session no nonce.
    NoNonce,
    Write(WriteError),
    Image(ImageError),
    /// The switch to the verified image (or a confirmation) could not be written.
    Commit(CommitError),
}

irom_text! {
    RECEIVED_OF_LEN = " ({} of {} bytes)";
    RETRY_IN = ", retry in {} s";
}

impl Message for Failure {
    // One `push_text` for every plain reason: each call site is inlined whole.
    fn write_message<S: Sink + ?Sized>(&self, out: &mut S) {
        let text = match *self {
            Failure::Request(error) => return error.write_message(out),
            Failure::Write(error) => return error.write_message(out),
            Failure::Image(error) => return error.write_message(out),
            Failure::Commit(error) => return error.write_message(out),
            Failure::LineTooLong => reason::LINE_TOO_LONG,
            // The seed's exact words: clients may match on them.
            Failure::LengthTooBig { .. } => reason::LENGTH_TOO_BIG,
            Failure::IdleTimeout => reason::IDLE_TIMEOUT,
            Failure::HeaderTimeout => reason::HEADER_TIMEOUT,
            Failure::TooManyHeaderBytes => reason::TOO_MANY_HEADER_BYTES,
            Failure::TooSlow => reason::TOO_SLOW,
            Failure::TooManyBytes => reason::TOO_MANY_BYTES,
            Failure::Truncated { .. } => reason::TRUNCATED,
            Failure::RebootPending => reason::REBOOT_PENDING,
            Failure::UnknownRunningSlot => reason::UNKNOWN_RUNNING_SLOT,
            Failure::OnTrial => reason::ON_TRIAL,
            Failure::AuthRequired => reason::AUTH_REQUIRED,
            Failure::AuthFailed => reason::AUTH_FAILED,
            Failure::AuthLocked { .. } => reason::AUTH_LOCKED,
            Failure::NoNonce => reason::NO_NONCE,
        };
        out.push_text(text);
        match *self {
            Failure::Truncated { received, len } => {
                out.push_template(RECEIVED_OF_LEN, &[Arg::Dec(received), Arg::Dec(len)])
            }
            Failure::AuthLocked { seconds } => out.push_template(RETRY_IN, &[Arg::Dec(seconds)]),
            _ => {}
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        text::display(self, f)
    }
}

/// Whether `after` has passed since `since`. Out of line: each 64-bit sum and comparison
/// inlined was some 40 bytes of IROM, and `Session::poll` has six.
#[inline(never)]
fn due(now: Instant, since: Instant, after: Duration) -> bool {
    now >= since + after
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    ExpectOta,
    ExpectGetNextFlash,
    /// Header lines until `FirmwareLength`.
    Headers {
        target: SlotId,
    },
    Receiving {
        target: SlotId,
        len: u32,
        /// The image must be in by then ([`MIN_PACE`]).
        deadline: Instant,
    },
    /// Every byte is in; [`Session::poll`] verifies.
    Complete {
        target: SlotId,
        len: u32,
    },
    /// Verified, `Flashing` queued: committed on the client's close or after the grace.
    Verified {
        target: SlotId,
        since: Instant,
    },
    Closing {
        since: Instant,
    },
    Dropping {
        since: Instant,
    },
    Abort,
}

/// A reply waiting to go out, kept compact until it is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outgoing {
    NextSlot(SlotId),
    Ready,
    Flashing,
    Invalid,
    Success,
    /// The session's nonce (kept in the session: a nonce here would widen every entry).
    Nonce,
    NoKey,
    BootState,
    /// `ERR: ` and [`Session::last_failure`]: a session fails once, so the failure is kept
    /// there only and an entry stays two bytes.
    Error,
}

/// The extension headers of the session so far.
#[derive(Clone, Copy, Debug, Default)]
struct Headers {
    /// `GetNonce` was answered.
    nonce_asked: bool,
    sha256: Option<Digest256>,
    /// The client's `Auth`.
    tag: Option<Digest256>,
}

/// Every step queues at most two replies (`Invalid` + `ERR`, `Flashing` + success).
const MAX_QUEUED: usize = 2;

/// The device side of one connection at a time; reused for the next.
pub struct Session<'a> {
    config: SessionConfig,
    state: State,
    lines: LineReader<{ MAX_REQUEST_LINE + 1 }>,
    queue: [Option<Outgoing>; MAX_QUEUED],
    writer: SectorWriter<'a>,
    running: Running,
    /// The client's address, for the lockout.
    peer: PeerKey,
    connected_at: Instant,
    last_input: Instant,
    header_bytes: u32,
    /// The client closed its sending side.
    input_closed: bool,
    reboot_at: Option<Instant>,
    last_failure: Option<Failure>,
    headers: Headers,
    /// This session's nonce, from the driver; used for one proof at most.
    nonce: Option<Nonce>,
    /// Outlives sessions, so a client cannot escape its lockout by reconnecting.
    lockouts: Lockouts,
    /// The idle slot reads erased from its start up to this flash offset (0: nothing known).
    /// Learnt by reading or erasing since this firmware started, never assumed; forgotten
    /// when a push writes the slot.
    pre_erased: u32,
}

impl<'a> Session<'a> {
    /// A session without a client; `sector` is the one 4 KB buffer it streams through.
    pub fn new(config: SessionConfig, sector: &'a mut SectorBuffer) -> Session<'a> {
        Session {
            config,
            state: State::Idle,
            lines: LineReader::new(),
            queue: [None; MAX_QUEUED],
            writer: SectorWriter::new(sector),
            running: Running { slot: None, status: BootStatus::Untracked, build_id: None },
            peer: PeerKey::default(),
            connected_at: Instant::ZERO,
            last_input: Instant::ZERO,
            header_bytes: 0,
            input_closed: false,
            reboot_at: None,
            last_failure: None,
            headers: Headers::default(),
            nonce: None,
            lockouts: Lockouts::new(),
            pre_erased: 0,
        }
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// How the device runs now ([`Running::read`] at start). With no slot, clients are
    /// refused at `GetNextFlash`.
    pub fn set_running(&mut self, running: Running) {
        self.running = running;
    }

    pub fn running(&self) -> &Running {
        &self.running
    }

    /// A client connected from `peer` (when the driver knows it: the lockout is per
    /// address).
    pub fn start(&mut self, now: Instant, peer: Option<IpAddr>) {
        self.start_from(now, PeerKey::of(peer));
    }

    /// [`Session::start`] with the address already folded: a driver that knows its address
    /// type converts it where the compiler sees which kinds can occur.
    pub(crate) fn start_from(&mut self, now: Instant, peer: PeerKey) {
        // What the last connection left (the drivers reset it already; one code for both).
        self.reset();
        self.peer = peer;
        self.connected_at = now;
        self.last_input = now;
        self.header_bytes = 0;
        self.input_closed = false;
        self.last_failure = None;
        self.state = State::ExpectOta;
        if self.reboot_at.is_some() {
            self.fail(now, Failure::RebootPending);
        }
    }

    /// A fresh random nonce for the session just started: call right after
    /// [`Session::start`] (which forgets the last one). Without it, a device with a key
    /// answers `GetNonce` with an error, so no session can authenticate.
    pub fn provide_nonce(&mut self, nonce: Nonce) {
        self.nonce = Some(nonce);
    }

    /// The connection is gone (reset, or closed and finished): back to idle. An image not
    /// yet committed is abandoned, so nothing switches behind the client's back; after a
    /// commit nobody waits for the success line any more, so the reboot is due at once.
    // Out of line: the drivers call it from two places, and every start does.
    #[inline(never)]
    pub fn reset(&mut self) {
        if let State::Closing { since } = self.state {
            // The commit set the reboot 2 s after `since` (or sooner): now it is due.
            self.reboot_at = Some(since);
        }
        self.state = State::Idle;
        self.queue = [None; MAX_QUEUED];
        self.lines.clear();
        self.headers = Headers::default();
        self.nonce = None;
    }

    /// The client closed its sending side. Replies can still go out; a verified image
    /// commits at the next [`Session::poll`].
    pub fn input_closed(&mut self, now: Instant) {
        if self.input_closed {
            return;
        }
        self.input_closed = true;
        match self.state {
            State::Receiving { len, .. } => {
                let received = len - self.writer.remaining();
                self.fail(now, Failure::Truncated { received, len });
            }
            // Nothing asked, nothing to answer: let the connection go.
            State::ExpectOta | State::ExpectGetNextFlash | State::Headers { .. } => {
                self.state = State::Dropping { since: now };
            }
            State::Idle
            | State::Complete { .. }
            | State::Verified { .. }
            | State::Closing { .. }
            | State::Dropping { .. }
            | State::Abort => {}
        }
    }

    /// The replies of a committed update are out (sent and, where the driver can tell,
    /// acknowledged): the device need not wait the 2 s any longer. A client that closed its
    /// side is done: reboot now. One that keeps it open gets [`CLOSE_GRACE`] for our own
    /// close to reach it (reading until the connection closes, it sees a close, not a
    /// vanished peer).
    pub fn delivered(&mut self, now: Instant) {
        if let (State::Closing { .. }, Some(at)) = (self.state, self.reboot_at)
            && !self.has_reply()
        {
            let grace = if self.input_closed { Duration::ZERO } else { CLOSE_GRACE };
            self.reboot_at = Some(at.min(now + grace));
        }
    }

    pub fn phase(&self) -> Phase {
        match self.state {
            State::Idle => Phase::Idle,
            State::Closing { .. } => Phase::Closing,
            State::Dropping { .. } => Phase::Dropping,
            State::Abort => Phase::Abort,
            _ => Phase::Open,
        }
    }

    /// Consumes bytes from the client and returns how many it took. It stops after each
    /// line that queues a reply and at the end of the image, so call it again with the rest
    /// (after sending the replies: it takes nothing while replies are queued), then call
    /// [`Session::poll`].
    // Out of line, like `poll` and `on_request`: inlined into the driver's loops, the
    // session's steps were copied several times over (3 KB of IROM with the extensions).
    #[inline(never)]
    pub fn receive<F: NorFlash>(&mut self, now: Instant, data: &[u8], flash: &mut F) -> usize {
        if data.is_empty() || self.queue[0].is_some() {
            return 0;
        }
        self.last_input = now;
        match self.state {
            State::Idle => 0,
            State::Closing { .. } | State::Dropping { .. } | State::Abort => data.len(),
            State::ExpectOta | State::ExpectGetNextFlash | State::Headers { .. } => {
                let (consumed, line) = self.lines.feed(data);
                self.header_bytes = self.header_bytes.saturating_add(consumed as u32);
                if self.header_bytes > MAX_HEADER_BYTES {
                    self.fail(now, Failure::TooManyHeaderBytes);
                    return consumed;
                }
                let request = match line {
                    None => return consumed,
                    Some(Ok(line)) => Request::parse(line),
                    Some(Err(LineTooLong)) => {
                        self.fail(now, Failure::LineTooLong);
                        return consumed;
                    }
                };
                if self.on_request(now, request) {
                    self.check_in(now, flash);
                }
                consumed
            }
            State::Receiving { target, len, .. } => {
                let take = data.len().min(self.writer.remaining() as usize);
                if let Err(error) = self.writer.write(flash, &data[..take]) {
                    self.fail(now, Failure::Write(error));
                    return data.len();
                }
                if self.writer.remaining() == 0 {
                    self.state = State::Complete { target, len };
                }
                take
            }
            // Anything beyond the image, before the commit: nothing switches.
            State::Complete { .. } | State::Verified { .. } => {
                self.fail(now, Failure::TooManyBytes);
                data.len()
            }
        }
    }

    /// Verifies a complete image, commits a verified one, and enforces the deadlines. Call
    /// after each batch of received bytes and whenever [`Session::poll_timeout`] comes.
    #[inline(never)]
    pub fn poll<F: NorFlash>(&mut self, now: Instant, flash: &mut F) {
        let idle = self.config.idle_timeout;
        match self.state {
            State::Complete { target, len } => self.verify(now, flash, target, len),
            State::Verified { target, since } => {
                if self.input_closed || due(now, since, COMMIT_GRACE) {
                    self.commit(now, flash, target);
                }
            }
            State::ExpectOta | State::ExpectGetNextFlash | State::Headers { .. } => {
                if due(now, self.connected_at, self.config.header_timeout) {
                    self.fail(now, Failure::HeaderTimeout);
                } else if due(now, self.last_input, idle) {
                    self.fail(now, Failure::IdleTimeout);
                }
            }
            State::Receiving { deadline, .. } => {
                if due(now, self.last_input, idle) {
                    self.fail(now, Failure::IdleTimeout);
                } else if now >= deadline {
                    self.fail(now, Failure::TooSlow);
                }
            }
            State::Closing { since } => {
                if due(now, since, idle) {
                    self.state = State::Abort;
                }
            }
            State::Dropping { since } => {
                if due(now, since, DROP_LINGER) {
                    self.state = State::Abort;
                }
            }
            State::Idle | State::Abort => {}
        }
    }

    /// When [`Session::poll`] must run next although no byte arrives (a deadline, or an
    /// image complete and waiting to be verified), quinn-proto style: drivers need not
    /// guess deadlines. `None` while nothing is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.deadline(), self.reboot_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// [`Session::poll_timeout`] without the reboot: the connection's own deadline.
    pub fn deadline(&self) -> Option<Instant> {
        let idle = self.config.idle_timeout;
        match self.state {
            State::Complete { .. } => Some(self.last_input),
            State::Verified { since, .. } => Some(since + COMMIT_GRACE),
            State::ExpectOta | State::ExpectGetNextFlash | State::Headers { .. } => {
                Some((self.last_input + idle).min(self.connected_at + self.config.header_timeout))
            }
            State::Receiving { deadline, .. } => Some((self.last_input + idle).min(deadline)),
            State::Closing { since } => Some(since + idle),
            State::Dropping { since } => Some(since + DROP_LINGER),
            State::Idle | State::Abort => None,
        }
    }

    /// The next reply line, to be sent in one write.
    pub fn next_reply(&mut self) -> Option<ReplyLine> {
        let mut line = ReplyLine::new();
        self.take_reply(&mut line).then_some(line)
    }

    /// [`Session::next_reply`] written into `line` (empty): the listener's line stays where
    /// it is. False when no reply is waiting.
    #[inline(never)]
    pub(crate) fn take_reply(&mut self, line: &mut ReplyLine) -> bool {
        let Some(next) = self.queue[0].take() else { return false };
        self.queue.rotate_left(1);
        let text = match next {
            Outgoing::NextSlot(slot) => in_irom::file_name(slot),
            Outgoing::Ready => in_irom::READY,
            Outgoing::Flashing => in_irom::FLASHING,
            Outgoing::Invalid => in_irom::INVALID,
            Outgoing::Success => in_irom::SUCCESS,
            Outgoing::NoKey => in_irom::NO_KEY,
            Outgoing::Nonce => {
                line.put_nonce(self.nonce.as_ref().unwrap_or(&[0; NONCE_LEN]));
                return true;
            }
            Outgoing::BootState => {
                let running = &self.running;
                let slot = running.slot.unwrap_or(SlotId::User1);
                line.put_boot_state(running.status, slot, running.build_id.as_ref());
                return true;
            }
            Outgoing::Error => {
                // Queued only by `fail`, which sets the failure first.
                let failure = self.last_failure.unwrap_or(Failure::Request(RequestError::Unknown));
                line.put_error(&failure);
                return true;
            }
        };
        line.put_line(&text);
        true
    }

    /// Whether a reply is waiting to be sent.
    pub fn has_reply(&self) -> bool {
        self.queue[0].is_some()
    }

    /// When the device should reboot into the new slot, once an update is committed.
    pub fn reboot_at(&self) -> Option<Instant> {
        self.reboot_at
    }

    /// The slot the current or last client was told to send.
    pub fn target(&self) -> Option<SlotId> {
        match self.state {
            State::Headers { target }
            | State::Receiving { target, .. }
            | State::Complete { target, .. }
            | State::Verified { target, .. } => Some(target),
            _ => self.running.slot.map(SlotId::other),
        }
    }

    /// Failed proofs in a row from `peer` (its lockout grows with each).
    pub fn auth_failures(&self, peer: Option<IpAddr>) -> u32 {
        self.lockouts.failures(PeerKey::of(peer))
    }

    /// Why the last session failed, for the device's log.
    pub fn last_failure(&self) -> Option<Failure> {
        self.last_failure
    }

    /// Image bytes received so far and the announced length, while receiving.
    pub fn progress(&self) -> Option<(u32, u32)> {
        match self.state {
            State::Receiving { len, .. } => Some((len - self.writer.remaining(), len)),
            State::Complete { len, .. } => Some((len, len)),
            _ => None,
        }
    }

    /// Confirms the running firmware when it is on trial (what the application calls with
    /// [`Confirm::ByApplication`]; on check-in the session does it itself). Nothing to do
    /// otherwise.
    pub fn confirm<F: NorFlash>(&mut self, flash: &mut F) -> Result<(), CommitError> {
        let (BootStatus::Trial { attempt, max, confirmed: false }, Some(running)) =
            (self.running.status, self.running.slot)
        else {
            return Ok(());
        };
        boot::confirm_running(flash, self.config.layout, running, self.writer.buffer())?;
        self.running.status = BootStatus::Trial { attempt, max, confirmed: true };
        Ok(())
    }

    /// One step of the idle slot's pre-erase ([`SessionConfig::pre_erase`]), for the driver
    /// to call while it serves no client: reads the next sector of the idle slot and erases
    /// it unless it reads erased. At most one 4 KB read and one sector erase (45 ms typical,
    /// 400 ms at most on a W25Q32) per call. Runs only once the running firmware is confirmed
    /// (never while the idle slot is what a trial would fall back to), with no reboot
    /// pending, and not on an SDK map (the SDK's boot flag decides what boots there). Without
    /// tcpflash-boot the running slot must be the one rBoot's config boots, as
    /// [`Running::read`] finds it: a driver told otherwise (a temporary or GPIO boot) turns
    /// the pre-erase off. Returns whether it did a step (more may follow:
    /// [`Session::pre_erase_pending`]).
    ///
    /// What is erased is learnt again after each reboot by reading, so a power cut mid-erase
    /// costs nothing but that sector's erase again; the read-back check after a push catches
    /// a sector an interrupted erase left reading erased but weak.
    #[inline(never)]
    pub fn pre_erase<F: NorFlash>(&mut self, flash: &mut F) -> bool {
        let Some(at) = self.pre_erase_next() else { return false };
        let sector = self.writer.buffer();
        let erased = flash.read(at, sector).is_ok() && sector.iter().all(|&byte| byte == 0xFF);
        if !erased && flash.erase(at, at + SECTOR_SIZE).is_err() {
            // A flash that fails is left alone; the push erases as usual.
            self.config.pre_erase = false;
            return false;
        }
        self.pre_erased = at + SECTOR_SIZE;
        true
    }

    /// Whether [`Session::pre_erase`] has a step to do now.
    pub fn pre_erase_pending(&self) -> bool {
        self.pre_erase_next().is_some()
    }

    /// How far the idle slot reads erased (its offset when nothing is known), for status.
    pub fn pre_erased(&self) -> Option<(SlotId, u32)> {
        let slot = self.config.layout.slot(self.running.slot?.other());
        Some((slot.id, self.pre_erased.clamp(slot.offset, slot.end()) - slot.offset))
    }

    /// The idle slot's next sector to pre-erase, when one may be erased now.
    fn pre_erase_next(&self) -> Option<u32> {
        let confirmed = matches!(
            self.running.status,
            BootStatus::Confirmed | BootStatus::Untracked | BootStatus::Trial { confirmed: true, .. }
        );
        let layout = self.config.layout;
        let slot = layout.slot(self.running.slot?.other());
        let at = self.pre_erased.max(slot.offset);
        let idle = matches!(self.state, State::Idle) && self.reboot_at.is_none();
        let ours = self.config.pre_erase && layout.has_boot_config();
        (ours && confirmed && idle && at + SECTOR_SIZE <= slot.end()).then_some(at)
    }

    /// Takes one request line; true when it was an accepted `GetNextFlash`, which
    /// [`Session::check_in`] answers (it may write the confirmation: not generic here, so
    /// this code exists once whatever the flash type).
    #[inline(never)]
    fn on_request(&mut self, now: Instant, request: Result<Request, RequestError>) -> bool {
        let protocol_error = Failure::Request(RequestError::Unknown);
        match (self.state, request) {
            (State::ExpectOta, Ok(Request::Ota)) => self.state = State::ExpectGetNextFlash,
            (State::ExpectGetNextFlash, Ok(Request::GetNextFlash)) => return self.may_check_in(now),
            (State::Headers { .. }, Ok(Request::Sha256(digest))) if self.headers.sha256.is_none() => {
                self.headers.sha256 = Some(digest);
            }
            (State::Headers { .. }, Ok(Request::GetNonce)) if !self.headers.nonce_asked => {
                self.give_nonce(now)
            }
            (State::Headers { .. }, Ok(Request::Auth(tag)))
                if self.config.key.is_some() && self.headers.nonce_asked && self.headers.tag.is_none() =>
            {
                self.headers.tag = Some(tag);
            }
            (State::Headers { .. }, Ok(Request::GetBootState)) => self.push(Outgoing::BootState),
            (State::Headers { target }, Ok(Request::FirmwareLength(len))) => {
                // Replacing a firmware that has not confirmed itself would lose the way back.
                if self.running.status.unconfirmed_trial() {
                    self.fail(now, Failure::OnTrial);
                    return false;
                }
                if let Some(key) = self.config.key
                    && let Err(failure) = self.authenticate(now, key, target, len)
                {
                    self.fail(now, failure);
                    return false;
                }
                let slot = self.config.layout.slot(target);
                if len > slot.capacity {
                    self.fail(now, Failure::LengthTooBig { len, capacity: slot.capacity });
                    return false;
                }
                self.writer.begin_in_slot(slot, len, self.pre_erased);
                self.pre_erased = 0;
                self.push(Outgoing::Ready);
                let allowed = Duration::from_secs(u64::from(len / MIN_PACE)) + self.config.idle_timeout;
                self.state = State::Receiving { target, len, deadline: now + allowed };
            }
            // A malformed length is reported as such; any other line out of place is not
            // the protocol.
            (State::Headers { .. }, Err(error)) => self.fail(now, Failure::Request(error)),
            _ => self.fail(now, protocol_error),
        }
        false
    }

    /// Whether `GetNextFlash` can be answered: a running slot is known.
    fn may_check_in(&mut self, now: Instant) -> bool {
        if self.running.slot.is_none() {
            self.fail(now, Failure::UnknownRunningSlot);
            return false;
        }
        true
    }

    /// Answers `GetNextFlash`: the slot not running. A firmware on trial that confirms on
    /// check-in confirms here (the pushing host checking in after the reboot is the sign it
    /// is healthy); one that confirms itself is only asked, and refuses a push until then.
    fn check_in<F: NorFlash>(&mut self, now: Instant, flash: &mut F) {
        if self.config.confirm == Confirm::OnCheckIn
            && let Err(error) = self.confirm(flash)
        {
            return self.fail(now, Failure::Commit(error));
        }
        let target = self.running.slot.expect("may_check_in checked").other();
        self.push(Outgoing::NextSlot(target));
        self.state = State::Headers { target };
    }

    /// Answers `GetNonce`: `NoKey`, the nonce, or why not (locked out, no nonce drawn).
    fn give_nonce(&mut self, now: Instant) {
        self.headers.nonce_asked = true;
        if self.config.key.is_none() {
            return self.push(Outgoing::NoKey);
        }
        if let Some(left) = self.lockouts.locked_for(self.peer, now) {
            // Whole seconds, rounded up; `+ 999` rather than `div_ceil`, whose remainder is a
            // second 64-bit division here (milliseconds cannot overflow by 999).
            #[allow(clippy::manual_div_ceil)]
            let seconds = u32::try_from((left.total_millis() + 999) / 1000).unwrap_or(u32::MAX);
            return self.fail(now, Failure::AuthLocked { seconds });
        }
        match self.nonce {
            Some(_) => self.push(Outgoing::Nonce),
            None => self.fail(now, Failure::NoNonce),
        }
    }

    /// Checks the client's proof for this slot and length. The nonce is spent either way.
    fn authenticate(&mut self, now: Instant, key: &Key, target: SlotId, len: u32) -> Result<(), Failure> {
        let nonce = self.nonce.take().filter(|_| self.headers.nonce_asked);
        let (Some(nonce), Some(sha256), Some(tag)) = (nonce, self.headers.sha256, self.headers.tag) else {
            return Err(Failure::AuthRequired);
        };
        if auth::verify_session_mac(key, &nonce, target, len, &sha256, &tag) {
            self.lockouts.succeeded(self.peer);
            Ok(())
        } else {
            self.lockouts.failed(self.peer, now, self.config.auth_backoff);
            Err(Failure::AuthFailed)
        }
    }

    /// The whole image is in: write the last sector, read the slot back and verify it (its
    /// SHA-256 in the same pass), then `Flashing` and the wait before the commit.
    fn verify<F: NorFlash>(&mut self, now: Instant, flash: &mut F, target: SlotId, len: u32) {
        let slot = self.config.layout.slot(target);
        if let Err(error) = self.writer.finish(flash) {
            return self.fail(now, Failure::Write(error));
        }
        let sha256 = self.headers.sha256.as_ref();
        if let Err(error) = image::verify_for_slot(flash, slot, len, self.writer.buffer(), sha256) {
            return self.fail(now, Failure::Image(error));
        }
        self.push(Outgoing::Flashing);
        self.state = State::Verified { target, since: now };
        // A client that closed can send nothing more; one that declared the SHA-256 has
        // what it meant verified, byte for byte: no grace for either.
        if self.input_closed || self.headers.sha256.is_some() {
            self.commit(now, flash, target);
        }
    }

    /// Makes the verified image the one that boots next (a trial with tcpflash-boot).
    fn commit<F: NorFlash>(&mut self, now: Instant, flash: &mut F, target: SlotId) {
        let running = self.running.slot.unwrap_or(target.other());
        let (layout, status, attempts) =
            (self.config.layout, self.running.status, self.config.trial_attempts);
        // An SDK map boots through Espressif's bootloader: the driver's platform switches
        // with the SDK's upgrade API when it reboots (the rBoot config's place is in user1).
        if layout.has_boot_config()
            && let Err(error) =
                boot::commit_update(flash, layout, running, target, status, attempts, self.writer.buffer())
        {
            return self.fail(now, Failure::Commit(error));
        }
        self.push(Outgoing::Success);
        self.reboot_at = Some(now + Duration::from_millis(REBOOT_DELAY_MS));
        self.state = State::Closing { since: now };
    }

    /// Queues `ERR: <failure>` (after `Invalid` while the image was still coming in) and asks
    /// for the connection to be dropped once it is out.
    fn fail(&mut self, now: Instant, failure: Failure) {
        if matches!(self.state, State::Receiving { .. } | State::Complete { .. }) {
            self.push(Outgoing::Invalid);
        }
        self.last_failure = Some(failure);
        self.push(Outgoing::Error);
        self.state = State::Dropping { since: now };
    }

    // Out of line: it queues a reply from a dozen places.
    #[inline(never)]
    fn push(&mut self, reply: Outgoing) {
        match self.queue.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some(reply),
            None => debug_assert!(false, "reply queue overflow"),
        }
    }
}
