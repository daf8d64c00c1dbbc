//! The host side of TCP-OTA as a sans-IO state machine, `no_std` like the rest of the crate
//! so the CLI (std sockets), the in-process smoltcp tests and code running under QEMU all
//! drive the same logic.
//!
//! The driver loop: send what [`Client::transmit`] asks for and report it with
//! [`Client::sent`]; feed received bytes to [`Client::receive`] until it returns no event;
//! answer [`Event::NextSlot`] with [`Client::send_image`]; stop at [`Event::Success`] or
//! [`Event::Failed`]. Tell it when the connection closes ([`Client::closed`]). Timeouts are
//! the driver's, since only it knows the clock.
//!
//! Answered with [`Client::send_image`], what goes on the wire is exactly what the seed's
//! `tcp_flash.py` sends: `OTA` and `GetNextFlash` in one write, then `FirmwareLength`, then
//! the image. [`Client::send_checked_image`] adds the extension lines: `Sha256`, and with a
//! key ([`Client::with_key`]) `GetNonce` and, once the nonce is in, `Auth`.

use core::fmt;

use crate::auth::{self, Digest256, Key};
use crate::layout::SlotId;
use crate::protocol::{BootReport, LineBuf, LineReader, LineTooLong, MAX_REPLY_LINE, Reply, Request};

/// Text from the device (an `ERR:` reason or an unexpected line), kept without allocating.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Text {
    bytes: [u8; MAX_REPLY_LINE],
    len: usize,
}

impl Text {
    fn new(bytes: &[u8]) -> Text {
        let len = bytes.len().min(MAX_REPLY_LINE);
        let mut text = Text { bytes: [0; MAX_REPLY_LINE], len };
        text.bytes[..len].copy_from_slice(&bytes[..len]);
        text
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match core::str::from_utf8(self.as_bytes()) {
            Ok(text) => f.write_str(text),
            Err(_) => write!(f, "{}", self.as_bytes().escape_ascii()),
        }
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.as_bytes().escape_ascii())
    }
}

/// Where the conversation stood when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Waiting for `user1.bin` / `user2.bin`.
    NextSlot,
    /// Waiting for the caller to pick the image.
    ChooseImage,
    /// Waiting for the device's nonce (or `NoKey`).
    Nonce,
    Ready,
    /// Sending the image.
    Image,
    /// Waiting for `Flashing` or `Invalid`.
    Verdict,
    /// Waiting for the success line after `Flashing`.
    Success,
    /// Waiting for the reason after `Invalid`.
    Reason,
    /// Waiting for `BootState:`.
    BootState,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::NextSlot => "waiting for the slot name",
            Step::ChooseImage => "choosing the image",
            Step::Nonce => "waiting for the nonce to authenticate with",
            Step::Ready => "waiting for Ready",
            Step::Image => "sending the image",
            Step::Verdict => "waiting for the device to check the image",
            Step::Success => "waiting for the success line",
            Step::Reason => "waiting for the reason the image was refused",
            Step::BootState => "waiting for the device to say how it booted",
        })
    }
}

/// Why a push failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// `Invalid`, then `ERR: <reason>`: the device refused the image and kept its boot
    /// config. The reason is empty when the device closed without giving one.
    ImageRejected(Text),
    /// `ERR: <reason>` before the image was complete (the seed's `Invalid protocol`,
    /// `Firmware length is too big`, `Connection Already Exists`, ...).
    Device(Text),
    /// A line that is not in the protocol, or not at this step.
    Unexpected { line: Text, during: Step },
    /// A reply line longer than any the protocol has.
    LineTooLong { during: Step },
    /// The device closed the connection before the conversation ended.
    Closed { during: Step },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::ImageRejected(reason) if reason.len == 0 => {
                f.write_str("the device refused the image")
            }
            ClientError::ImageRejected(reason) => write!(f, "the device refused the image: {reason}"),
            ClientError::Device(reason) => write!(f, "the device answered: ERR: {reason}"),
            ClientError::Unexpected { line, during } => write!(f, "unexpected reply {line:?} while {during}"),
            ClientError::LineTooLong { during } => write!(f, "reply line too long while {during}"),
            ClientError::Closed { during } => write!(f, "the device closed the connection while {during}"),
        }
    }
}

impl core::error::Error for ClientError {}

/// What a batch of received bytes meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The device wants the image for this slot: answer with [`Client::send_image`]
    /// (or close, if you only wanted to know).
    NextSlot(SlotId),
    /// The device is ready for the image; [`Client::transmit`] now yields it.
    Ready,
    /// The device verified the image and switched its boot config.
    Flashing,
    /// The device refused the image (or could not write it); `Failed(ImageRejected)` with
    /// the reason follows. Stop sending the image.
    Invalid,
    /// The device reboots into the new slot in 2 s. The conversation is over.
    Success,
    /// The device said how it was started (the answer to [`Client::ask_boot_state`]). The
    /// conversation is over.
    BootState(BootReport),
    /// The conversation is over and failed.
    Failed(ClientError),
}

/// What the driver should send next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transmit<'a> {
    /// Protocol bytes, to be sent as one write where possible.
    Bytes(&'a [u8]),
    /// `len` bytes of the image starting at `offset`.
    Image { offset: u32, len: u32 },
    /// Nothing now; wait for the device.
    Nothing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    AwaitSlot,
    ChooseImage,
    AwaitNonce,
    AwaitReady,
    SendingImage,
    AwaitVerdict,
    AwaitSuccess,
    AwaitReason,
    AwaitBootReport,
    Done,
}

/// A parsed reply that no longer borrows the line buffer.
enum Owned {
    /// Any reply but `Error`, which carries no borrowed data.
    Plain(Reply<'static>),
    Error(Text),
}

impl From<Reply<'_>> for Owned {
    fn from(reply: Reply<'_>) -> Owned {
        match reply {
            Reply::Error(reason) => Owned::Error(Text::new(reason.as_bytes())),
            Reply::NextSlot(slot) => Owned::Plain(Reply::NextSlot(slot)),
            Reply::Ready => Owned::Plain(Reply::Ready),
            Reply::Flashing => Owned::Plain(Reply::Flashing),
            Reply::Invalid => Owned::Plain(Reply::Invalid),
            Reply::Success => Owned::Plain(Reply::Success),
            Reply::Nonce(nonce) => Owned::Plain(Reply::Nonce(nonce)),
            Reply::NoKey => Owned::Plain(Reply::NoKey),
            Reply::BootState(report) => Owned::Plain(Reply::BootState(report)),
        }
    }
}

/// Whether the push was authenticated, as far as the client knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authentication {
    /// No nonce asked for (no key, or not that far yet).
    NotAsked,
    /// The client has a key but the device answered `NoKey`: the push goes without proof
    /// (the SHA-256 is still checked).
    DeviceHasNoKey,
    /// The proof went out; the device's `Ready` means it was accepted.
    Sent,
}

/// Room for the longest burst of requests: `Sha256`, `Auth` and `FirmwareLength` lines.
const OUT_CAPACITY: usize = 192;

/// One push to one device.
pub struct Client {
    state: State,
    lines: LineReader<MAX_REPLY_LINE>,
    /// Protocol bytes not yet sent.
    out: LineBuf<OUT_CAPACITY>,
    out_sent: usize,
    image_len: u32,
    image_sent: u32,
    slot: Option<SlotId>,
    key: Option<Key>,
    /// The image's SHA-256, when the extension lines are sent.
    sha256: Option<Digest256>,
    authentication: Authentication,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// A client that opens with `OTA` and `GetNextFlash`, as the seed does, in one write.
    pub fn new() -> Client {
        let mut out = LineBuf::new();
        Request::Ota.encode(&mut out);
        Request::GetNextFlash.encode(&mut out);
        Client {
            state: State::AwaitSlot,
            lines: LineReader::new(),
            out,
            out_sent: 0,
            image_len: 0,
            image_sent: 0,
            slot: None,
            key: None,
            sha256: None,
            authentication: Authentication::NotAsked,
        }
    }

    /// A client that proves it holds `key` when the device asks for one. Answer
    /// [`Event::NextSlot`] with [`Client::send_checked_image`].
    pub fn with_key(key: &Key) -> Client {
        Client { key: Some(*key), ..Client::new() }
    }

    /// Whether the push was authenticated, as far as the client knows.
    pub fn authentication(&self) -> Authentication {
        self.authentication
    }

    /// The slot the device asked for, once it said.
    pub fn slot(&self) -> Option<SlotId> {
        self.slot
    }

    /// Image bytes sent so far and the image length, once an image was chosen.
    pub fn progress(&self) -> (u32, u32) {
        (self.image_sent, self.image_len)
    }

    /// Whether the conversation is over (successfully or not).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Answers [`Event::NextSlot`] as the seed does: the image for that slot is `len` bytes
    /// (not 0). No SHA-256, so no authentication either: a client with a key uses
    /// [`Client::send_checked_image`].
    pub fn send_image(&mut self, len: u32) {
        debug_assert!(self.key.is_none(), "a client with a key answers with send_checked_image");
        if self.choose(len) {
            self.queue(Request::FirmwareLength(len));
            self.state = State::AwaitReady;
        }
    }

    /// Answers [`Event::NextSlot`] with the extension lines: the device checks the slot
    /// against `sha256` (the image's SHA-256) before it switches. With a key, the client first
    /// asks for a nonce and proves the key over it, the slot, `len` and `sha256`.
    pub fn send_checked_image(&mut self, len: u32, sha256: &Digest256) {
        if !self.choose(len) {
            return;
        }
        self.sha256 = Some(*sha256);
        if self.key.is_some() {
            self.queue(Request::GetNonce);
            self.state = State::AwaitNonce;
        } else {
            self.queue(Request::Sha256(*sha256));
            self.queue(Request::FirmwareLength(len));
            self.state = State::AwaitReady;
        }
    }

    /// Answers [`Event::NextSlot`] with a question instead of an image: how the running
    /// firmware was started ([`Event::BootState`] follows). A device older than the
    /// extension answers with an `ERR:` line. `GetNextFlash` has already confirmed a trial
    /// that confirms on check-in.
    pub fn ask_boot_state(&mut self) {
        debug_assert_eq!(self.state, State::ChooseImage, "ask_boot_state answers Event::NextSlot");
        if self.state == State::ChooseImage {
            self.queue(Request::GetBootState);
            self.state = State::AwaitBootReport;
        }
    }

    /// Takes the image length; false when no image was asked for.
    fn choose(&mut self, len: u32) -> bool {
        debug_assert_eq!(self.state, State::ChooseImage, "send_image answers Event::NextSlot");
        debug_assert!(len > 0, "the device refuses an empty image");
        if self.state != State::ChooseImage {
            return false;
        }
        self.image_len = len;
        self.image_sent = 0;
        true
    }

    /// What to send now.
    pub fn transmit(&self) -> Transmit<'_> {
        if self.out_sent < self.out.len() {
            return Transmit::Bytes(&self.out.as_bytes()[self.out_sent..]);
        }
        if self.state == State::SendingImage && self.image_sent < self.image_len {
            return Transmit::Image { offset: self.image_sent, len: self.image_len - self.image_sent };
        }
        Transmit::Nothing
    }

    /// `n` bytes of what [`Client::transmit`] returned went out.
    pub fn sent(&mut self, n: usize) {
        if self.out_sent < self.out.len() {
            self.out_sent = (self.out_sent + n).min(self.out.len());
            if self.out_sent == self.out.len() {
                self.out = LineBuf::new();
                self.out_sent = 0;
            }
        } else if self.state == State::SendingImage {
            let n = u32::try_from(n).unwrap_or(u32::MAX).min(self.image_len - self.image_sent);
            self.image_sent += n;
            if self.image_sent == self.image_len {
                self.state = State::AwaitVerdict;
            }
        }
    }

    /// Consumes received bytes up to the first line that means something; returns how many
    /// it took and that line's event (`None` for a line the client answers by itself, such as
    /// the nonce: look at [`Client::transmit`] again). Call again with the rest.
    pub fn receive(&mut self, data: &[u8]) -> (usize, Option<Event>) {
        if self.state == State::Done {
            return (data.len(), None);
        }
        let (consumed, line) = self.lines.feed(data);
        let event = match line {
            None => None,
            Some(Err(LineTooLong)) => Some(self.fail(ClientError::LineTooLong { during: self.step() })),
            Some(Ok(line)) => {
                let text = Text::new(line);
                let reply = Reply::parse(line).map(Owned::from);
                self.on_reply(reply, text)
            }
        };
        (consumed, event)
    }

    /// The connection closed (EOF or reset). Returns the failure, unless it was over.
    pub fn closed(&mut self) -> Option<Event> {
        if self.state == State::Done {
            return None;
        }
        let error = match self.state {
            State::AwaitReason => ClientError::ImageRejected(Text::new(b"")),
            _ => ClientError::Closed { during: self.step() },
        };
        Some(self.fail(error))
    }

    fn on_reply(&mut self, reply: Option<Owned>, text: Text) -> Option<Event> {
        let during = self.step();
        let reply = match reply {
            Some(Owned::Error(reason)) if self.state == State::AwaitReason => {
                return Some(self.fail(ClientError::ImageRejected(reason)));
            }
            Some(Owned::Error(reason)) => return Some(self.fail(ClientError::Device(reason))),
            Some(Owned::Plain(reply)) => Some(reply),
            None => None,
        };
        let event = match (self.state, reply) {
            (State::AwaitNonce, Some(Reply::Nonce(nonce))) => {
                let (Some(key), Some(sha256), Some(slot)) = (self.key, self.sha256, self.slot) else {
                    unreachable!("a nonce is asked for only with a key, an image and a slot")
                };
                let tag = auth::session_mac(&key, &nonce, slot, self.image_len, &sha256);
                self.queue(Request::Sha256(sha256));
                self.queue(Request::Auth(tag));
                self.queue(Request::FirmwareLength(self.image_len));
                self.authentication = Authentication::Sent;
                self.state = State::AwaitReady;
                return None;
            }
            (State::AwaitNonce, Some(Reply::NoKey)) => {
                let sha256 = self.sha256.expect("a nonce is asked for only with an image");
                self.queue(Request::Sha256(sha256));
                self.queue(Request::FirmwareLength(self.image_len));
                self.authentication = Authentication::DeviceHasNoKey;
                self.state = State::AwaitReady;
                return None;
            }
            _ => self.on_seed_reply(reply, text, during),
        };
        Some(event)
    }

    /// The replies of the seed's table.
    fn on_seed_reply(&mut self, reply: Option<Reply<'static>>, text: Text, during: Step) -> Event {
        match (self.state, reply) {
            (State::AwaitSlot, Some(Reply::NextSlot(slot))) => {
                self.slot = Some(slot);
                self.state = State::ChooseImage;
                Event::NextSlot(slot)
            }
            (State::AwaitReady, Some(Reply::Ready)) => {
                self.state = State::SendingImage;
                Event::Ready
            }
            // The device may refuse before the image is complete (a flash failure).
            (State::SendingImage | State::AwaitVerdict, Some(Reply::Invalid)) => {
                self.state = State::AwaitReason;
                Event::Invalid
            }
            (State::AwaitVerdict, Some(Reply::Flashing)) => {
                self.state = State::AwaitSuccess;
                Event::Flashing
            }
            (State::AwaitSuccess, Some(Reply::Success)) => {
                self.state = State::Done;
                Event::Success
            }
            (State::AwaitBootReport, Some(Reply::BootState(report))) => {
                self.state = State::Done;
                Event::BootState(report)
            }
            _ => self.fail(ClientError::Unexpected { line: text, during }),
        }
    }

    fn fail(&mut self, error: ClientError) -> Event {
        self.state = State::Done;
        Event::Failed(error)
    }

    fn step(&self) -> Step {
        match self.state {
            State::AwaitSlot => Step::NextSlot,
            State::ChooseImage => Step::ChooseImage,
            State::AwaitNonce => Step::Nonce,
            State::AwaitReady => Step::Ready,
            State::SendingImage => Step::Image,
            State::AwaitVerdict | State::Done => Step::Verdict,
            State::AwaitSuccess => Step::Success,
            State::AwaitReason => Step::Reason,
            State::AwaitBootReport => Step::BootState,
        }
    }

    fn queue(&mut self, request: Request) {
        request.encode(&mut self.out);
    }
}
