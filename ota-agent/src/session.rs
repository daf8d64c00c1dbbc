//! One TCP-OTA conversation as a sans-IO state machine: bytes in, reply lines out, and the
//! flash work done through an `embedded-storage` `NorFlash`.
//!
//! The driver (`crate::net` for smoltcp, the virtual ESP8266 for std sockets) feeds received
//! bytes with [`Session::receive`], calls [`Session::poll`] after each batch (that is where
//! a complete image is verified and the boot config switched, and where the idle timeout
//! fires), sends each [`Session::next_reply`] in one write, and closes the connection when
//! [`Session::phase`] says so. Segmentation never matters: lines are assembled byte by byte
//! in a small buffer and the image streams through the sector writer.
//!
//! The boot config is touched only after the whole image was read back from the slot and
//! verified (`image::verify_for_slot`), so no failure here can switch to a bad image.
//!
//! Extension lines belong in the `Headers` state, stored until `FirmwareLength` ends the
//! headers: `Sha256` (checked against the slot read back from flash before the switch),
//! and with a key `GetNonce` and `Auth`, checked when `FirmwareLength` arrives, before
//! `Ready` ([`crate::auth`]). The driver draws the nonce for each session
//! ([`Session::provide_nonce`]), since only it knows the board's random source.

use core::fmt;

use smoltcp::time::{Duration, Instant};

use crate::auth::{self, DEFAULT_AUTH_BACKOFF, Digest256, Key, Nonce, Throttle};
use crate::boot::{BootConfigError, switch_boot_config};
use crate::flash::NorFlash;
use crate::image::{self, ImageError};
use crate::irom_text;
use crate::layout::{FlashLayout, SlotId};
use crate::protocol::{
    LineReader, LineTooLong, MAX_REQUEST_LINE, REBOOT_DELAY_MS, Reply, ReplyLine, Request, RequestError,
    in_irom::reason,
};
use crate::text::{self, Arg, Message, Sink};
use crate::writer::{SectorBuffer, SectorWriter, WriteError};

/// How long a client may stay silent before its session ends.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a session needs to know about the device.
#[derive(Clone, Copy, Debug)]
pub struct SessionConfig {
    pub layout: &'static FlashLayout,
    /// A silent client is dropped after this long; so is one that never closes after the
    /// last reply.
    pub idle_timeout: Duration,
    /// With a key, every session must prove it holds it before `Ready`.
    pub key: Option<&'static Key>,
    /// How long the first failed proof locks authentication; each further one doubles it.
    pub auth_backoff: Duration,
}

impl SessionConfig {
    pub const fn new(layout: &'static FlashLayout) -> SessionConfig {
        SessionConfig {
            layout,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            key: None,
            auth_backoff: DEFAULT_AUTH_BACKOFF,
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
    /// The last reply is queued: send the queued replies, then close. Input is discarded.
    Closing,
    /// The client did not close in time after the last reply: drop the connection.
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
    TooManyBytes,
    /// The client stopped sending before the whole image arrived.
    Truncated {
        received: u32,
        len: u32,
    },
    RebootPending,
    UnknownRunningSlot,
    /// A device with a key got `FirmwareLength` without `GetNonce`, `Sha256` and `Auth`.
    AuthRequired,
    /// The proof did not match (key, nonce, slot, length or SHA-256: not said which).
    AuthFailed,
    /// `GetNonce` while failed proofs lock authentication, for this many more seconds.
    AuthLocked {
        seconds: u32,
    },
    /// The driver gave this session no nonce.
    NoNonce,
    Write(WriteError),
    Image(ImageError),
    BootConfig(BootConfigError),
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
            Failure::BootConfig(error) => return error.write_message(out),
            Failure::LineTooLong => reason::LINE_TOO_LONG,
            // The seed's exact words: clients may match on them.
            Failure::LengthTooBig { .. } => reason::LENGTH_TOO_BIG,
            Failure::IdleTimeout => reason::IDLE_TIMEOUT,
            Failure::TooManyBytes => reason::TOO_MANY_BYTES,
            Failure::Truncated { .. } => reason::TRUNCATED,
            Failure::RebootPending => reason::REBOOT_PENDING,
            Failure::UnknownRunningSlot => reason::UNKNOWN_RUNNING_SLOT,
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
    },
    /// Every byte is in; [`Session::poll`] verifies and switches.
    Complete {
        target: SlotId,
        len: u32,
    },
    Closing {
        since: Instant,
    },
    /// Closing took longer than the idle timeout.
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
    Error(Failure),
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
    running: Option<SlotId>,
    last_input: Instant,
    reboot_at: Option<Instant>,
    last_failure: Option<Failure>,
    headers: Headers,
    /// This session's nonce, from the driver; used for one proof at most.
    nonce: Option<Nonce>,
    /// Outlives sessions, so a client cannot escape the lockout by reconnecting.
    throttle: Throttle,
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
            running: None,
            last_input: Instant::ZERO,
            reboot_at: None,
            last_failure: None,
            headers: Headers::default(),
            nonce: None,
            throttle: Throttle::new(),
        }
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// A client connected. `running` is the slot the device runs now (`None` when the boot
    /// config names no slot of the layout: the client is refused at `GetNextFlash`).
    pub fn start(&mut self, now: Instant, running: Option<SlotId>) {
        self.lines.clear();
        self.queue = [None; MAX_QUEUED];
        self.running = running;
        self.last_input = now;
        self.last_failure = None;
        self.headers = Headers::default();
        self.nonce = None;
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

    /// The connection is gone (reset, or closed and finished): back to idle. An image not yet
    /// verified is abandoned, so nothing switches behind the client's back.
    pub fn reset(&mut self) {
        self.state = State::Idle;
        self.queue = [None; MAX_QUEUED];
        self.lines.clear();
        self.headers = Headers::default();
        self.nonce = None;
    }

    /// The client closed its sending side. Replies can still go out.
    pub fn input_closed(&mut self, now: Instant) {
        match self.state {
            State::Receiving { len, .. } => {
                let received = len - self.writer.remaining();
                self.fail(now, Failure::Truncated { received, len });
            }
            State::ExpectOta | State::ExpectGetNextFlash | State::Headers { .. } => {
                self.state = State::Closing { since: now };
            }
            State::Idle | State::Complete { .. } | State::Closing { .. } | State::Abort => {}
        }
    }

    pub fn phase(&self) -> Phase {
        match self.state {
            State::Idle => Phase::Idle,
            State::Closing { .. } => Phase::Closing,
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
            State::Closing { .. } | State::Abort => data.len(),
            State::ExpectOta | State::ExpectGetNextFlash | State::Headers { .. } => {
                let (consumed, line) = self.lines.feed(data);
                let request = match line {
                    None => return consumed,
                    Some(Ok(line)) => Request::parse(line),
                    Some(Err(LineTooLong)) => {
                        self.fail(now, Failure::LineTooLong);
                        return consumed;
                    }
                };
                self.on_request(now, request);
                consumed
            }
            State::Receiving { target, len } => {
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
            State::Complete { .. } => {
                self.fail(now, Failure::TooManyBytes);
                data.len()
            }
        }
    }

    /// Finishes a complete image (write the last sector, verify, switch the boot config) and
    /// enforces the idle timeout. Call after each batch of received bytes and periodically.
    #[inline(never)]
    pub fn poll<F: NorFlash>(&mut self, now: Instant, flash: &mut F) {
        match self.state {
            State::Complete { target, len } => self.finish(now, flash, target, len),
            State::ExpectOta
            | State::ExpectGetNextFlash
            | State::Headers { .. }
            | State::Receiving { .. } => {
                if now >= self.last_input + self.config.idle_timeout {
                    self.fail(now, Failure::IdleTimeout);
                }
            }
            State::Closing { since } => {
                if now >= since + self.config.idle_timeout {
                    self.state = State::Abort;
                }
            }
            State::Idle | State::Abort => {}
        }
    }

    /// When [`Session::poll`] must run next although no byte arrives (a timeout, or an
    /// image complete and waiting to be verified), quinn-proto style: drivers need not
    /// guess deadlines. `None` while nothing is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let idle = self.config.idle_timeout;
        let session = match self.state {
            State::Complete { .. } => Some(self.last_input),
            State::ExpectOta
            | State::ExpectGetNextFlash
            | State::Headers { .. }
            | State::Receiving { .. } => Some(self.last_input + idle),
            State::Closing { since } => Some(since + idle),
            State::Idle | State::Abort => None,
        };
        match (session, self.reboot_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next reply line, to be sent in one write.
    pub fn next_reply(&mut self) -> Option<ReplyLine> {
        let next = self.queue[0].take()?;
        self.queue.rotate_left(1);
        Some(match next {
            Outgoing::NextSlot(slot) => Reply::NextSlot(slot).encode(),
            Outgoing::Ready => Reply::Ready.encode(),
            Outgoing::Flashing => Reply::Flashing.encode(),
            Outgoing::Invalid => Reply::Invalid.encode(),
            Outgoing::Success => Reply::Success.encode(),
            Outgoing::Nonce => Reply::Nonce(self.nonce.unwrap_or_default()).encode(),
            Outgoing::NoKey => Reply::NoKey.encode(),
            Outgoing::Error(failure) => ReplyLine::error_message(&failure),
        })
    }

    /// Whether a reply is waiting to be sent.
    pub fn has_reply(&self) -> bool {
        self.queue[0].is_some()
    }

    /// When the device should reboot into the new slot, once an update succeeded.
    pub fn reboot_at(&self) -> Option<Instant> {
        self.reboot_at
    }

    /// The slot the current or last client was told to send.
    pub fn target(&self) -> Option<SlotId> {
        match self.state {
            State::Headers { target } | State::Receiving { target, .. } | State::Complete { target, .. } => {
                Some(target)
            }
            _ => self.running.map(SlotId::other),
        }
    }

    /// Failed proofs in a row (authentication locks for longer with each).
    pub fn auth_failures(&self) -> u32 {
        self.throttle.failures()
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

    #[inline(never)]
    fn on_request(&mut self, now: Instant, request: Result<Request, RequestError>) {
        let protocol_error = Failure::Request(RequestError::Unknown);
        match (self.state, request) {
            (State::ExpectOta, Ok(Request::Ota)) => self.state = State::ExpectGetNextFlash,
            (State::ExpectGetNextFlash, Ok(Request::GetNextFlash)) => match self.running {
                Some(running) => {
                    let target = running.other();
                    self.push(Outgoing::NextSlot(target));
                    self.state = State::Headers { target };
                }
                None => self.fail(now, Failure::UnknownRunningSlot),
            },
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
            (State::Headers { target }, Ok(Request::FirmwareLength(len))) => {
                if let Some(key) = self.config.key
                    && let Err(failure) = self.authenticate(now, key, target, len)
                {
                    return self.fail(now, failure);
                }
                let slot = self.config.layout.slot(target);
                if len > slot.capacity {
                    return self.fail(now, Failure::LengthTooBig { len, capacity: slot.capacity });
                }
                self.writer.begin_in_slot(slot, len);
                self.push(Outgoing::Ready);
                self.state = State::Receiving { target, len };
            }
            // A malformed length is reported as such; any other line out of place is not
            // the protocol.
            (State::Headers { .. }, Err(error)) => self.fail(now, Failure::Request(error)),
            _ => self.fail(now, protocol_error),
        }
    }

    /// Answers `GetNonce`: `NoKey`, the nonce, or why not (locked, no nonce drawn).
    fn give_nonce(&mut self, now: Instant) {
        self.headers.nonce_asked = true;
        if self.config.key.is_none() {
            return self.push(Outgoing::NoKey);
        }
        if let Some(left) = self.throttle.locked_for(now) {
            let seconds = u32::try_from(left.total_millis().div_ceil(1000)).unwrap_or(u32::MAX);
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
            self.throttle.succeeded();
            Ok(())
        } else {
            self.throttle.failed(now, self.config.auth_backoff);
            Err(Failure::AuthFailed)
        }
    }

    fn finish<F: NorFlash>(&mut self, now: Instant, flash: &mut F, target: SlotId, len: u32) {
        let layout = self.config.layout;
        let slot = layout.slot(target);
        if let Err(error) = self.writer.finish(flash) {
            return self.fail(now, Failure::Write(error));
        }
        let sha256 = self.headers.sha256.as_ref();
        if let Err(error) = image::verify_for_slot(flash, slot, len, self.writer.buffer(), sha256) {
            return self.fail(now, Failure::Image(error));
        }
        // An SDK map boots through Espressif's bootloader: the driver's platform switches
        // with the SDK's upgrade API when it reboots, which happens only from here on.
        if layout.sdk_map().is_none()
            && let Err(error) = switch_boot_config(flash, layout, target, self.writer.buffer())
        {
            return self.fail(now, Failure::BootConfig(error));
        }
        self.push(Outgoing::Flashing);
        self.push(Outgoing::Success);
        self.reboot_at = Some(now + Duration::from_millis(REBOOT_DELAY_MS));
        self.state = State::Closing { since: now };
    }

    /// Queues `ERR: <failure>` (after `Invalid` once the image phase began) and closes.
    fn fail(&mut self, now: Instant, failure: Failure) {
        if matches!(self.state, State::Receiving { .. } | State::Complete { .. }) {
            self.push(Outgoing::Invalid);
        }
        self.push(Outgoing::Error(failure));
        self.last_failure = Some(failure);
        self.state = State::Closing { since: now };
    }

    fn push(&mut self, reply: Outgoing) {
        match self.queue.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some(reply),
            None => debug_assert!(false, "reply queue overflow"),
        }
    }
}
