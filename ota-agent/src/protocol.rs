//! The TCP-OTA wire protocol: the one definition of every line both sides exchange, and
//! of how those lines are split, parsed and encoded.
//!
//! | step | direction | message |
//! |---|---|---|
//! | 1 | host -> device | `OTA` |
//! | 2 | host -> device | `GetNextFlash` |
//! | 3 | device -> host | `user1.bin` or `user2.bin` (the slot NOT running now) |
//! | 4 | host -> device | `FirmwareLength: <len>` |
//! | 5 | device -> host | `Ready` |
//! | 6 | host -> device | the image, exactly len bytes |
//! | 7 | device -> host | `Flashing` or `Invalid` |
//! | 8 | device -> host | `Flash upgrade success. Rebooting in 2s.` |
//!
//! Every line ends with CR LF (a bare LF is accepted from the host). Errors are
//! `ERR: <reason>`, after which the device closes the connection.
//!
//! Extensions are header lines the host sends between steps 3 and 4, each at most once; a
//! device only answers what it was asked, so old clients never see anything new:
//!
//! | direction | message | meaning |
//! |---|---|---|
//! | host -> device | `Sha256: <64 hex>` | the image's SHA-256: the device checks the slot read back from flash against it before switching (`Invalid`, `ERR: Image SHA-256 mismatch`) |
//! | host -> device | `GetNonce` | asks for a nonce to authenticate with |
//! | device -> host | `Nonce: <32 hex>` | a fresh random nonce, for this session only |
//! | device -> host | `NoKey` | (instead) the device has no key: no authentication needed |
//! | host -> device | `Auth: <64 hex>` | HMAC-SHA256 with the key over the nonce, slot, length and SHA-256 ([`crate::auth`]) |
//! | host -> device | `GetBootState` | asks how the running firmware was started |
//! | device -> host | `BootState: <state> <slot> <build> [<attempt>/<max>]` | `state` is `confirmed`, `trial` (not confirmed yet: boot `attempt` of `max`), `reverted` (a trial ran out of attempts; back on the slot it replaced), `fallback` (the preferred slot did not boot) or `untracked` (not booted by tcpflash-boot: no trials); `build` is the running build id in hex, `-` when unknown |
//!
//! A device with a key answers `FirmwareLength` with `Ready` only after a good `Auth` (it
//! needs `GetNonce`, `Sha256` and `Auth` first); otherwise `ERR: Authentication required`
//! (nothing tried) or `ERR: Authentication failed` (whatever part was wrong). Failures lock
//! `GetNonce` for a while: `ERR: Too many failed authentications, retry in <n> s`.
//!
//! A device started by tcpflash-boot on a trial confirms itself when a client sends
//! `GetNextFlash` (the pushing host checks in after the reboot), unless the firmware
//! confirms itself (`AgentConfig::confirm`); until then it refuses updates with `ERR:
//! Running firmware is on trial, not confirmed yet`.

use core::fmt;

use crate::auth::{DIGEST_LEN, Digest256, NONCE_LEN, Nonce};
use crate::boot::BootStatus;
use crate::descriptor::BUILD_ID_LEN;
use crate::layout::SlotId;
use crate::text::{self, Message, Sink};

/// The seed's port: a palindrome near the top of the range.
pub const DEFAULT_PORT: u16 = 65056;
pub const LINE_END: &str = "\r\n";

pub const OTA: &str = "OTA";
pub const GET_NEXT_FLASH: &str = "GetNextFlash";
pub const FIRMWARE_LENGTH: &str = "FirmwareLength: ";
pub const READY: &str = "Ready";
pub const FLASHING: &str = "Flashing";
pub const INVALID: &str = "Invalid";
pub const SUCCESS: &str = "Flash upgrade success. Rebooting in 2s.";
pub const ERR_PREFIX: &str = "ERR: ";
/// Extension: the image's SHA-256 follows, as 64 hex digits.
pub const SHA256: &str = "Sha256: ";
/// Extension: the host asks for a nonce.
pub const GET_NONCE: &str = "GetNonce";
/// Extension: the device's nonce follows, as 32 hex digits.
pub const NONCE: &str = "Nonce: ";
/// Extension: the device's answer to `GetNonce` when it has no key.
pub const NO_KEY: &str = "NoKey";
/// Extension: the host's HMAC-SHA256 follows, as 64 hex digits.
pub const AUTH: &str = "Auth: ";
/// Extension: the host asks how the running firmware was started.
pub const GET_BOOT_STATE: &str = "GetBootState";
/// Extension: the device's answer to `GetBootState`.
pub const BOOT_STATE: &str = "BootState: ";

/// The delay `SUCCESS` promises between the reply and the reboot.
pub const REBOOT_DELAY_MS: u64 = 2000;

/// Longest request line the device accepts, line end excluded: `Sha256: <64 hex>`.
pub const MAX_REQUEST_LINE: usize = SHA256.len() + 2 * DIGEST_LEN;
/// Longest reply line, CR LF included: the seed client reads each reply with `recv(128)`.
pub const MAX_REPLY_LINE: usize = 128;

/// The reasons the device gives after `ERR: `. The first four are the seed agent's.
pub mod reason {
    pub const INVALID_PROTOCOL: &str = "Invalid protocol";
    pub const INVALID_LENGTH: &str = "Invalid firmware length";
    pub const LENGTH_TOO_BIG: &str = "Firmware length is too big";
    pub const BUSY: &str = "Connection Already Exists";
    pub const LINE_TOO_LONG: &str = "Line too long";
    pub const IDLE_TIMEOUT: &str = "Idle timeout";
    pub const TOO_MANY_BYTES: &str = "More bytes than FirmwareLength";
    pub const TRUNCATED: &str = "Connection closed before the whole image arrived";
    pub const REBOOT_PENDING: &str = "An update is done, reboot pending";
    pub const UNKNOWN_RUNNING_SLOT: &str = "Boot config names no slot of this layout";
    pub const INVALID_DIGEST: &str = "Invalid digest: 64 hex digits expected";
    /// A device with a key got `FirmwareLength` without `GetNonce`, `Sha256` and `Auth`.
    pub const AUTH_REQUIRED: &str = "Authentication required";
    /// The proof was wrong; deliberately not saying which part.
    pub const AUTH_FAILED: &str = "Authentication failed";
    /// Followed by `, retry in <n> s`.
    pub const AUTH_LOCKED: &str = "Too many failed authentications";
    pub const SHA256_MISMATCH: &str = "Image SHA-256 mismatch";
    /// The driver gave the session no random nonce (a bug in the driver, not the client).
    pub const NO_NONCE: &str = "No random nonce available";
    /// The header lines took longer than the device allows from the connection on.
    pub const HEADER_TIMEOUT: &str = "Header lines too slow";
    /// More header bytes than any valid header phase has.
    pub const TOO_MANY_HEADER_BYTES: &str = "Too many header bytes";
    /// The image arrived slower than the minimum pace.
    pub const TOO_SLOW: &str = "Image transfer too slow";
    /// The running firmware is on trial: an update would overwrite the confirmed one.
    pub const ON_TRIAL: &str = "Running firmware is on trial, not confirmed yet";
}

/// The lines above as the device uses them: in IROM, out of its scarce DRAM
/// ([`crate::text`]). The `&str` constants stay the source of truth.
pub mod in_irom {
    use crate::irom_text;
    use crate::layout::SlotId;
    use crate::text::IromText;

    irom_text! {
        pub LINE_END = super::LINE_END;
        pub OTA = super::OTA;
        pub GET_NEXT_FLASH = super::GET_NEXT_FLASH;
        pub FIRMWARE_LENGTH = super::FIRMWARE_LENGTH;
        pub READY = super::READY;
        pub FLASHING = super::FLASHING;
        pub INVALID = super::INVALID;
        pub SUCCESS = super::SUCCESS;
        pub ERR_PREFIX = super::ERR_PREFIX;
        pub SHA256 = super::SHA256;
        pub GET_NONCE = super::GET_NONCE;
        pub NONCE = super::NONCE;
        pub NO_KEY = super::NO_KEY;
        pub AUTH = super::AUTH;
        pub GET_BOOT_STATE = super::GET_BOOT_STATE;
        pub BOOT_STATE = super::BOOT_STATE;
        STATE_UNTRACKED = "untracked";
        STATE_CONFIRMED = "confirmed";
        STATE_TRIAL = "trial";
        STATE_REVERTED = "reverted";
        STATE_FALLBACK = "fallback";
        /// ` <attempt>/<max>` after a trial's state.
        pub(crate) TRIAL_COUNT = " {}/{}";
        USER1_BIN = SlotId::User1.file_name();
        USER2_BIN = SlotId::User2.file_name();
    }

    /// The word `BootState:` names a [`crate::boot::BootStatus`] with.
    pub fn state_word(status: crate::boot::BootStatus) -> IromText {
        use crate::boot::BootStatus;
        match status {
            BootStatus::Untracked => STATE_UNTRACKED,
            BootStatus::Confirmed | BootStatus::Trial { confirmed: true, .. } => STATE_CONFIRMED,
            BootStatus::Trial { .. } => STATE_TRIAL,
            BootStatus::Reverted => STATE_REVERTED,
            BootStatus::Fallback => STATE_FALLBACK,
        }
    }

    /// [`SlotId::file_name`].
    pub fn file_name(slot: SlotId) -> IromText {
        match slot {
            SlotId::User1 => USER1_BIN,
            SlotId::User2 => USER2_BIN,
        }
    }

    /// [`super::reason`].
    pub mod reason {
        use crate::irom_text;
        use crate::protocol::reason;

        irom_text! {
            pub INVALID_PROTOCOL = reason::INVALID_PROTOCOL;
            pub INVALID_LENGTH = reason::INVALID_LENGTH;
            pub LENGTH_TOO_BIG = reason::LENGTH_TOO_BIG;
            pub BUSY = reason::BUSY;
            pub LINE_TOO_LONG = reason::LINE_TOO_LONG;
            pub IDLE_TIMEOUT = reason::IDLE_TIMEOUT;
            pub TOO_MANY_BYTES = reason::TOO_MANY_BYTES;
            pub TRUNCATED = reason::TRUNCATED;
            pub REBOOT_PENDING = reason::REBOOT_PENDING;
            pub UNKNOWN_RUNNING_SLOT = reason::UNKNOWN_RUNNING_SLOT;
            pub INVALID_DIGEST = reason::INVALID_DIGEST;
            pub AUTH_REQUIRED = reason::AUTH_REQUIRED;
            pub AUTH_FAILED = reason::AUTH_FAILED;
            pub AUTH_LOCKED = reason::AUTH_LOCKED;
            pub SHA256_MISMATCH = reason::SHA256_MISMATCH;
            pub NO_NONCE = reason::NO_NONCE;
            pub HEADER_TIMEOUT = reason::HEADER_TIMEOUT;
            pub TOO_MANY_HEADER_BYTES = reason::TOO_MANY_HEADER_BYTES;
            pub TOO_SLOW = reason::TOO_SLOW;
            pub ON_TRIAL = reason::ON_TRIAL;
        }
    }
}

/// A line the host sends, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Ota,
    GetNextFlash,
    /// The image length; never 0.
    FirmwareLength(u32),
    /// Extension: the image's SHA-256.
    Sha256(Digest256),
    /// Extension: the host asks for a nonce.
    GetNonce,
    /// Extension: HMAC-SHA256 proving the host holds the key ([`crate::auth::session_mac`]).
    Auth(Digest256),
    /// Extension: how the running firmware was started.
    GetBootState,
}

/// Why a host line is not a [`Request`]. `Display` gives the reason the device sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// Not a line of the protocol (no prefix matching: `O` and `OTAX` are unknown).
    Unknown,
    /// `FirmwareLength: ` followed by nothing, a non-digit, or 0.
    InvalidLength,
    /// A length that does not fit 32 bits.
    LengthTooBig,
    /// `Sha256: ` or `Auth: ` followed by anything but 64 hex digits.
    InvalidDigest,
}

impl Message for RequestError {
    fn write_message<S: Sink + ?Sized>(&self, out: &mut S) {
        out.push_text(match self {
            RequestError::Unknown => in_irom::reason::INVALID_PROTOCOL,
            RequestError::InvalidLength => in_irom::reason::INVALID_LENGTH,
            RequestError::LengthTooBig => in_irom::reason::LENGTH_TOO_BIG,
            RequestError::InvalidDigest => in_irom::reason::INVALID_DIGEST,
        });
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        text::display(self, f)
    }
}

impl Request {
    /// Decodes one line, line end already removed. Matches whole lines exactly.
    pub fn parse(line: &[u8]) -> Result<Request, RequestError> {
        if in_irom::OTA.is(line) {
            return Ok(Request::Ota);
        }
        if in_irom::GET_NEXT_FLASH.is(line) {
            return Ok(Request::GetNextFlash);
        }
        if let Some(digits) = in_irom::FIRMWARE_LENGTH.strip_from(line) {
            return match parse_decimal(digits)? {
                0 => Err(RequestError::InvalidLength),
                len => Ok(Request::FirmwareLength(len)),
            };
        }
        if let Some(hex) = in_irom::SHA256.strip_from(line) {
            return parse_digest(hex).map(Request::Sha256);
        }
        if in_irom::GET_NONCE.is(line) {
            return Ok(Request::GetNonce);
        }
        if let Some(hex) = in_irom::AUTH.strip_from(line) {
            return parse_digest(hex).map(Request::Auth);
        }
        if in_irom::GET_BOOT_STATE.is(line) {
            return Ok(Request::GetBootState);
        }
        Err(RequestError::Unknown)
    }

    /// Appends this request, line end included, to `out`.
    pub fn encode<const N: usize>(&self, out: &mut LineBuf<N>) {
        // Requests are short; `LineBuf` truncates rather than fail if N is too small.
        match *self {
            Request::Ota => out.push_text(in_irom::OTA),
            Request::GetNextFlash => out.push_text(in_irom::GET_NEXT_FLASH),
            Request::FirmwareLength(len) => {
                out.push_text(in_irom::FIRMWARE_LENGTH);
                out.push_dec(len);
            }
            Request::Sha256(digest) => {
                out.push_text(in_irom::SHA256);
                push_hex_bytes(out, &digest);
            }
            Request::GetNonce => out.push_text(in_irom::GET_NONCE),
            Request::Auth(tag) => {
                out.push_text(in_irom::AUTH);
                push_hex_bytes(out, &tag);
            }
            Request::GetBootState => out.push_text(in_irom::GET_BOOT_STATE),
        }
        out.push_text(in_irom::LINE_END);
    }
}

/// Exactly 64 hex digits, either case. Out of line: two requests use it.
#[inline(never)]
fn parse_digest(hex: &[u8]) -> Result<Digest256, RequestError> {
    let mut digest = [0u8; DIGEST_LEN];
    crate::hex::decode(hex, &mut digest).map_err(|_| RequestError::InvalidDigest)?;
    Ok(digest)
}

/// `bytes` (at most 32) as lowercase hex digits, two per byte.
fn push_hex_bytes<S: Sink + ?Sized>(out: &mut S, bytes: &[u8]) {
    let mut digits = [0u8; 2 * DIGEST_LEN];
    let digits = &mut digits[..2 * bytes.len()];
    crate::hex::encode(bytes, digits);
    out.push_bytes(digits);
}

/// Strict unsigned decimal: digits only, no sign, no spaces.
fn parse_decimal(digits: &[u8]) -> Result<u32, RequestError> {
    if digits.is_empty() {
        return Err(RequestError::InvalidLength);
    }
    let mut value: u32 = 0;
    for &byte in digits {
        if !byte.is_ascii_digit() {
            return Err(RequestError::InvalidLength);
        }
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u32::from(byte - b'0')))
            .ok_or(RequestError::LengthTooBig)?;
    }
    Ok(value)
}

/// A line the device sends, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// Step 3: the slot the host must send an image for.
    NextSlot(SlotId),
    Ready,
    Flashing,
    Invalid,
    Success,
    /// `ERR: <reason>`.
    Error(&'a str),
    /// Extension: the answer to `GetNonce` from a device with a key.
    Nonce(Nonce),
    /// Extension: the answer to `GetNonce` from a device without a key.
    NoKey,
    /// Extension: the answer to `GetBootState`.
    BootState(BootReport),
}

/// How the running firmware was started, as `BootState:` says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootReport {
    /// On the wire a trial that is confirmed reads `confirmed` (its attempt is not sent).
    pub status: BootStatus,
    pub slot: SlotId,
    pub build_id: Option<[u8; BUILD_ID_LEN]>,
}

impl BootReport {
    /// Parses the text after `BootState: `.
    fn parse(text: &str) -> Option<BootReport> {
        let mut words = text.split(' ');
        let (state, slot, build) = (words.next()?, words.next()?, words.next()?);
        let slot = SlotId::ALL.into_iter().find(|id| id.name() == slot)?;
        let build_id = match build {
            "-" => None,
            hex => {
                let mut id = [0u8; BUILD_ID_LEN];
                crate::hex::decode(hex.as_bytes(), &mut id).ok()?;
                Some(id)
            }
        };
        let status = match (state, words.next()) {
            ("untracked", None) => BootStatus::Untracked,
            ("confirmed", None) => BootStatus::Confirmed,
            ("reverted", None) => BootStatus::Reverted,
            ("fallback", None) => BootStatus::Fallback,
            ("trial", Some(count)) => {
                let (attempt, max) = count.split_once('/')?;
                BootStatus::Trial { attempt: attempt.parse().ok()?, max: max.parse().ok()?, confirmed: false }
            }
            _ => return None,
        };
        words.next().is_none().then_some(BootReport { status, slot, build_id })
    }
}

impl<'a> Reply<'a> {
    /// Decodes one line, line end already removed. `None` for anything not in the protocol.
    pub fn parse(line: &'a [u8]) -> Option<Reply<'a>> {
        let text = core::str::from_utf8(line).ok()?;
        if let Some(reason) = text.strip_prefix(ERR_PREFIX) {
            return Some(Reply::Error(reason));
        }
        if let Some(report) = text.strip_prefix(BOOT_STATE) {
            return BootReport::parse(report).map(Reply::BootState);
        }
        if let Some(hex) = text.strip_prefix(NONCE) {
            let mut nonce = [0u8; NONCE_LEN];
            crate::hex::decode(hex.as_bytes(), &mut nonce).ok()?;
            return Some(Reply::Nonce(nonce));
        }
        let reply = match text {
            READY => Reply::Ready,
            FLASHING => Reply::Flashing,
            INVALID => Reply::Invalid,
            SUCCESS => Reply::Success,
            NO_KEY => Reply::NoKey,
            _ => Reply::NextSlot(SlotId::ALL.into_iter().find(|slot| slot.file_name() == text)?),
        };
        Some(reply)
    }

    /// This reply as one line, ready for a single write.
    // Inlined, a constant reply becomes one call with its text; out of line, each would
    // be a `Reply` constant in `.rodata`, DRAM on the ESP8266.
    #[inline]
    pub fn encode(&self) -> ReplyLine {
        let text = match *self {
            Reply::NextSlot(slot) => in_irom::file_name(slot),
            Reply::Ready => in_irom::READY,
            Reply::Flashing => in_irom::FLASHING,
            Reply::Invalid => in_irom::INVALID,
            Reply::Success => in_irom::SUCCESS,
            Reply::NoKey => in_irom::NO_KEY,
            Reply::Error(reason) => return ReplyLine::error_message(reason),
            Reply::Nonce(nonce) => return nonce_line(&nonce),
            Reply::BootState(report) => return boot_state_line(&report),
        };
        ReplyLine::line(&text)
    }
}

/// `Nonce: <32 hex>` CR LF.
fn nonce_line(nonce: &Nonce) -> ReplyLine {
    let mut line = ReplyLine::new();
    line.put_nonce(nonce);
    line
}

/// `BootState: <state> <slot> <build> [<attempt>/<max>]` CR LF, without `core::fmt`.
fn boot_state_line(report: &BootReport) -> ReplyLine {
    let mut line = ReplyLine::new();
    line.put_boot_state(report.status, report.slot, report.build_id.as_ref());
    line
}

/// A small fixed-capacity byte buffer for outgoing lines. Writes past the capacity are cut
/// off, so a long error reason can never overflow it.
#[derive(Clone, Copy)]
pub struct LineBuf<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

/// One reply line with its CR LF.
pub type ReplyLine = LineBuf<MAX_REPLY_LINE>;

impl<const N: usize> LineBuf<N> {
    pub const fn new() -> Self {
        LineBuf { bytes: [0; N], len: 0 }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(N - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }
}

impl<const N: usize> Default for LineBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Sink for LineBuf<N> {
    fn push_bytes(&mut self, bytes: &[u8]) {
        self.push(bytes);
    }
}

impl<const N: usize> fmt::Write for LineBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.push(s.as_bytes()) == s.len() { Ok(()) } else { Err(fmt::Error) }
    }
}

impl<const N: usize> fmt::Debug for LineBuf<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.as_bytes().escape_ascii())
    }
}

impl ReplyLine {
    /// `text` CR LF.
    pub fn text(text: &str) -> ReplyLine {
        ReplyLine::line(text)
    }

    /// `message` CR LF, cut to one line like [`ReplyLine::error_message`]. Uses no `core::fmt`.
    pub fn line<M: Message + ?Sized>(message: &M) -> ReplyLine {
        let mut line = ReplyLine::new();
        line.put_line(message);
        line
    }

    /// [`ReplyLine::line`] into this (empty) line: the device renders its replies in place
    /// rather than move 132-byte lines around.
    pub(crate) fn put_line<M: Message + ?Sized>(&mut self, message: &M) {
        message.write_message(&mut Clipped { line: self });
        self.push_text(in_irom::LINE_END);
    }

    /// [`ReplyLine::error_message`] into this (empty) line.
    pub(crate) fn put_error<M: Message + ?Sized>(&mut self, reason: &M) {
        self.push_text(in_irom::ERR_PREFIX);
        self.put_line(reason);
    }

    /// `Nonce: <32 hex>` CR LF into this (empty) line.
    #[inline(never)]
    pub(crate) fn put_nonce(&mut self, nonce: &Nonce) {
        self.push_text(in_irom::NONCE);
        push_hex_bytes(self, nonce);
        self.push_text(in_irom::LINE_END);
    }

    /// `BootState: ...` ([`Reply::BootState`]) into this (empty) line; the fields by
    /// reference, so the device builds no [`BootReport`].
    #[inline(never)]
    pub(crate) fn put_boot_state(
        &mut self,
        status: BootStatus,
        slot: SlotId,
        build_id: Option<&[u8; BUILD_ID_LEN]>,
    ) {
        self.push_text(in_irom::BOOT_STATE);
        self.push_text(in_irom::state_word(status));
        self.push_bytes(b" ");
        self.push_bytes(slot.name().as_bytes());
        self.push_bytes(b" ");
        match build_id {
            Some(id) => push_hex_bytes(self, id),
            None => self.push_bytes(b"-"),
        }
        if let BootStatus::Trial { attempt, max, confirmed: false } = status {
            // Through the template code the error lines use (the line is far from full, so
            // nothing is clipped): no second copy of the decimal digits.
            let counts = [text::Arg::Dec(attempt.into()), text::Arg::Dec(max.into())];
            Clipped { line: self }.push_template(in_irom::TRIAL_COUNT, &counts);
        }
        self.push_text(in_irom::LINE_END);
    }

    /// `ERR: <reason>` CR LF. A reason too long for one line is cut; CR and LF inside it
    /// become spaces, so the reply always stays exactly one line. The device's errors go
    /// through [`ReplyLine::error_message`] instead, which needs no `core::fmt`.
    pub fn error(reason: &dyn fmt::Display) -> ReplyLine {
        use fmt::Write;
        let mut line = ReplyLine::new();
        line.push_text(in_irom::ERR_PREFIX);
        let mut body = Clipped { line: &mut line };
        let _ = write!(body, "{reason}");
        line.push_text(in_irom::LINE_END);
        line
    }

    /// `ERR: <reason>` CR LF, cut to one line like [`ReplyLine::error`].
    pub fn error_message<M: Message + ?Sized>(reason: &M) -> ReplyLine {
        let mut line = ReplyLine::new();
        line.put_error(reason);
        line
    }

    /// Appends what fits while keeping room for the line end.
    fn push_clipped(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if self.len + LINE_END.len() >= MAX_REPLY_LINE {
                return;
            }
            let byte = if byte == b'\r' || byte == b'\n' { b' ' } else { byte };
            self.push(&[byte]);
        }
    }
}

struct Clipped<'a> {
    line: &'a mut ReplyLine,
}

impl Sink for Clipped<'_> {
    fn push_bytes(&mut self, bytes: &[u8]) {
        self.line.push_clipped(bytes);
    }
}

impl fmt::Write for Clipped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.line.push_clipped(s.as_bytes());
        Ok(())
    }
}

/// Splits a byte stream into lines without ever holding more than `N` bytes. Used by the
/// device for requests and by the client for replies.
#[derive(Clone, Copy)]
pub struct LineReader<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

/// A line longer than the reader holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineTooLong;

impl<const N: usize> LineReader<N> {
    pub const fn new() -> Self {
        LineReader { bytes: [0; N], len: 0 }
    }

    /// Bytes of an unfinished line held so far.
    pub fn pending(&self) -> usize {
        self.len
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Consumes `data` up to and including the first LF. Returns the bytes consumed and, if a
    /// line ended, the line without its CR LF (or bare LF). A line that cannot fit is reported
    /// as soon as it overflows, without waiting for its end. Holds at most `N` bytes, the CR
    /// included.
    pub fn feed(&mut self, data: &[u8]) -> (usize, Option<Result<&[u8], LineTooLong>>) {
        for (i, &byte) in data.iter().enumerate() {
            if byte == b'\n' {
                let mut line = &self.bytes[..self.len];
                if let Some(stripped) = line.strip_suffix(b"\r") {
                    line = stripped;
                }
                self.len = 0;
                return (i + 1, Some(Ok(line)));
            }
            if self.len == N {
                self.len = 0;
                return (i + 1, Some(Err(LineTooLong)));
            }
            self.bytes[self.len] = byte;
            self.len += 1;
        }
        (data.len(), None)
    }
}

impl<const N: usize> Default for LineReader<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_match_whole_lines_only() {
        assert_eq!(Request::parse(b"OTA"), Ok(Request::Ota));
        assert_eq!(Request::parse(b"GetNextFlash"), Ok(Request::GetNextFlash));
        for line in [&b"O"[..], b"OTAX", b"ota", b" OTA", b"OTA ", b"GetNextFlas", b"GetNextFlashX", b""] {
            assert_eq!(Request::parse(line), Err(RequestError::Unknown), "{line:?}");
        }
    }

    #[test]
    fn firmware_length_is_strict_decimal() {
        assert_eq!(Request::parse(b"FirmwareLength: 1"), Ok(Request::FirmwareLength(1)));
        assert_eq!(Request::parse(b"FirmwareLength: 004096"), Ok(Request::FirmwareLength(4096)));
        assert_eq!(Request::parse(b"FirmwareLength: 4294967295"), Ok(Request::FirmwareLength(u32::MAX)));
        assert_eq!(Request::parse(b"FirmwareLength: 4294967296"), Err(RequestError::LengthTooBig));
        assert_eq!(Request::parse(b"FirmwareLength: 99999999999"), Err(RequestError::LengthTooBig));
        for bad in
            [&b"FirmwareLength: "[..], b"FirmwareLength: 0", b"FirmwareLength: 000", b"FirmwareLength: -1"]
        {
            assert_eq!(Request::parse(bad), Err(RequestError::InvalidLength), "{bad:?}");
        }
        for bad in
            [&b"FirmwareLength: +5"[..], b"FirmwareLength: 5 ", b"FirmwareLength: 1e3", b"FirmwareLength:  5"]
        {
            assert_eq!(Request::parse(bad), Err(RequestError::InvalidLength), "{bad:?}");
        }
        assert_eq!(Request::parse(b"FirmwareLength:5"), Err(RequestError::Unknown));
        assert_eq!(RequestError::LengthTooBig.to_string(), "Firmware length is too big");
    }

    #[test]
    fn requests_encode_to_the_exact_seed_bytes() {
        let mut out = LineBuf::<64>::new();
        Request::Ota.encode(&mut out);
        Request::GetNextFlash.encode(&mut out);
        Request::FirmwareLength(123456).encode(&mut out);
        assert_eq!(out.as_bytes(), b"OTA\r\nGetNextFlash\r\nFirmwareLength: 123456\r\n");
    }

    #[test]
    fn extension_requests_parse_exactly_and_encode_back() {
        let digest: [u8; 32] = core::array::from_fn(|i| (i * 9) as u8);
        let hex = "0009121b242d363f48515a636c757e879099a2abb4bdc6cfd8e1eaf3fc050e17";
        let mut out = LineBuf::<256>::new();
        Request::Sha256(digest).encode(&mut out);
        Request::GetNonce.encode(&mut out);
        Request::Auth(digest).encode(&mut out);
        let expected =
            [&b"Sha256: "[..], hex.as_bytes(), b"\r\nGetNonce\r\nAuth: ", hex.as_bytes(), b"\r\n"].concat();
        assert_eq!(out.as_bytes(), expected);
        assert_eq!(Request::parse(format!("Sha256: {hex}").as_bytes()), Ok(Request::Sha256(digest)));
        let upper = format!("Auth: {}", hex.to_uppercase());
        assert_eq!(Request::parse(upper.as_bytes()), Ok(Request::Auth(digest)));
        assert_eq!(Request::parse(b"GetNonce"), Ok(Request::GetNonce));
        for bad in [&b"GetNonce "[..], b"getnonce", b"Sha256:", b"Auth:", b"Sha256 "] {
            assert_eq!(Request::parse(bad), Err(RequestError::Unknown), "{bad:?}");
        }
        for bad in [
            "Sha256: ".to_owned(),
            format!("Sha256: {}", &hex[..62]),
            format!("Sha256: {hex}0"),
            format!("Sha256: {hex} "),
            format!("Auth: {}g", &hex[..63]),
            format!("Auth:  {}", &hex[..63]),
        ] {
            assert_eq!(Request::parse(bad.as_bytes()), Err(RequestError::InvalidDigest), "{bad:?}");
        }
        // The longest request line is exactly what the device holds.
        assert_eq!(format!("Sha256: {hex}").len(), MAX_REQUEST_LINE);
    }

    #[test]
    fn replies_round_trip() {
        let cases: [(Reply, &[u8]); 7] = [
            (Reply::NextSlot(SlotId::User1), b"user1.bin\r\n"),
            (Reply::NextSlot(SlotId::User2), b"user2.bin\r\n"),
            (Reply::Ready, b"Ready\r\n"),
            (Reply::Flashing, b"Flashing\r\n"),
            (Reply::Invalid, b"Invalid\r\n"),
            (Reply::Success, b"Flash upgrade success. Rebooting in 2s.\r\n"),
            (Reply::Error("Invalid protocol"), b"ERR: Invalid protocol\r\n"),
        ];
        for (reply, bytes) in cases {
            assert_eq!(reply.encode().as_bytes(), bytes);
            assert_eq!(Reply::parse(&bytes[..bytes.len() - 2]), Some(reply));
        }
        let nonce: Nonce = core::array::from_fn(|i| 0xF0 + i as u8);
        let line = Reply::Nonce(nonce).encode();
        assert_eq!(line.as_bytes(), b"Nonce: f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff\r\n");
        assert_eq!(Reply::parse(b"Nonce: f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"), Some(Reply::Nonce(nonce)));
        assert_eq!(Reply::NoKey.encode().as_bytes(), b"NoKey\r\n");
        assert_eq!(Reply::parse(b"NoKey"), Some(Reply::NoKey));
        assert_eq!(Reply::parse(b"Nonce: f0f1"), None);
        assert_eq!(Reply::parse(b"NoKey "), None);
        assert_eq!(Reply::parse(b"user3.bin"), None);
        assert_eq!(Reply::parse(b"Ready "), None);
        assert_eq!(Reply::parse(b"\xff"), None);
    }

    #[test]
    fn boot_state_lines_are_exact_and_round_trip() {
        let id = Some([0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
        let trial = |attempt, max, confirmed| BootStatus::Trial { attempt, max, confirmed };
        type Case = (BootStatus, SlotId, Option<[u8; BUILD_ID_LEN]>, &'static [u8]);
        let cases: [Case; 7] = [
            (BootStatus::Untracked, SlotId::User1, None, b"BootState: untracked user1 -\r\n"),
            (BootStatus::Confirmed, SlotId::User2, id, b"BootState: confirmed user2 0011223344556677\r\n"),
            (trial(1, 3, false), SlotId::User1, id, b"BootState: trial user1 0011223344556677 1/3\r\n"),
            (trial(12, 31, false), SlotId::User2, None, b"BootState: trial user2 - 12/31\r\n"),
            (trial(2, 3, true), SlotId::User2, None, b"BootState: confirmed user2 -\r\n"),
            (BootStatus::Reverted, SlotId::User1, None, b"BootState: reverted user1 -\r\n"),
            (BootStatus::Fallback, SlotId::User2, None, b"BootState: fallback user2 -\r\n"),
        ];
        for (status, slot, build_id, bytes) in cases {
            let report = BootReport { status, slot, build_id };
            assert_eq!(Reply::BootState(report).encode().as_bytes(), bytes);
            let mut line = ReplyLine::new();
            line.put_boot_state(status, slot, build_id.as_ref());
            assert_eq!(line.as_bytes(), bytes);
            if !matches!(status, BootStatus::Trial { confirmed: true, .. }) {
                assert_eq!(Reply::parse(&bytes[..bytes.len() - 2]), Some(Reply::BootState(report)));
            }
        }
    }

    #[test]
    fn error_lines_stay_one_line_and_fit_the_seed_recv() {
        let long = "x".repeat(500);
        let line = ReplyLine::error(&long.as_str());
        assert_eq!(line.len(), MAX_REPLY_LINE);
        assert!(line.as_bytes().starts_with(b"ERR: xxx"));
        assert!(line.as_bytes().ends_with(b"x\r\n"));
        let line = ReplyLine::error(&"two\r\nlines");
        assert_eq!(line.as_bytes(), b"ERR: two  lines\r\n");
    }

    #[test]
    fn the_irom_copies_are_the_protocol_strings() {
        let pairs = [
            (in_irom::LINE_END, LINE_END),
            (in_irom::OTA, OTA),
            (in_irom::GET_NEXT_FLASH, GET_NEXT_FLASH),
            (in_irom::FIRMWARE_LENGTH, FIRMWARE_LENGTH),
            (in_irom::READY, READY),
            (in_irom::FLASHING, FLASHING),
            (in_irom::INVALID, INVALID),
            (in_irom::SUCCESS, SUCCESS),
            (in_irom::ERR_PREFIX, ERR_PREFIX),
            (in_irom::SHA256, SHA256),
            (in_irom::GET_NONCE, GET_NONCE),
            (in_irom::NONCE, NONCE),
            (in_irom::NO_KEY, NO_KEY),
            (in_irom::AUTH, AUTH),
            (in_irom::reason::INVALID_DIGEST, reason::INVALID_DIGEST),
            (in_irom::reason::AUTH_REQUIRED, reason::AUTH_REQUIRED),
            (in_irom::reason::AUTH_FAILED, reason::AUTH_FAILED),
            (in_irom::reason::AUTH_LOCKED, reason::AUTH_LOCKED),
            (in_irom::reason::SHA256_MISMATCH, reason::SHA256_MISMATCH),
            (in_irom::reason::NO_NONCE, reason::NO_NONCE),
            (in_irom::reason::INVALID_PROTOCOL, reason::INVALID_PROTOCOL),
            (in_irom::reason::INVALID_LENGTH, reason::INVALID_LENGTH),
            (in_irom::reason::LENGTH_TOO_BIG, reason::LENGTH_TOO_BIG),
            (in_irom::reason::BUSY, reason::BUSY),
            (in_irom::reason::LINE_TOO_LONG, reason::LINE_TOO_LONG),
            (in_irom::reason::IDLE_TIMEOUT, reason::IDLE_TIMEOUT),
            (in_irom::reason::TOO_MANY_BYTES, reason::TOO_MANY_BYTES),
            (in_irom::reason::TRUNCATED, reason::TRUNCATED),
            (in_irom::reason::REBOOT_PENDING, reason::REBOOT_PENDING),
            (in_irom::reason::UNKNOWN_RUNNING_SLOT, reason::UNKNOWN_RUNNING_SLOT),
        ];
        for (stored, text) in pairs {
            assert_eq!(stored.to_string(), text);
            assert!(stored.is(text.as_bytes()));
        }
        for slot in SlotId::ALL {
            assert_eq!(in_irom::file_name(slot).to_string(), slot.file_name());
        }
        assert_eq!(RequestError::InvalidLength.to_string(), reason::INVALID_LENGTH);
    }

    #[test]
    fn error_messages_are_cut_and_kept_on_one_line_like_error() {
        let long = "y".repeat(300);
        for reason in [long.as_str(), "two\r\nlines", "Idle timeout", ""] {
            let line = ReplyLine::error_message(reason);
            assert_eq!(line.as_bytes(), ReplyLine::error(&reason).as_bytes(), "{reason:?}");
            assert!(line.len() <= MAX_REPLY_LINE && line.as_bytes().ends_with(b"\r\n"));
        }
        assert_eq!(
            ReplyLine::error_message(&in_irom::reason::BUSY).as_bytes(),
            b"ERR: Connection Already Exists\r\n"
        );
        assert_eq!(ReplyLine::line(&in_irom::READY).as_bytes(), b"Ready\r\n");
    }

    #[test]
    fn line_reader_handles_any_split() {
        let mut reader = LineReader::<8>::new();
        assert_eq!(reader.feed(b"OT"), (2, None));
        assert_eq!(reader.feed(b"A\r"), (2, None));
        assert_eq!(reader.feed(b"\nGet"), (1, Some(Ok(&b"OTA"[..]))));
        assert_eq!(reader.pending(), 0);
        assert_eq!(reader.feed(b"ab\ncd\n"), (3, Some(Ok(&b"ab"[..]))));
        assert_eq!(reader.feed(b"cd\n"), (3, Some(Ok(&b"cd"[..]))));
        // A bare LF ends a line too; only one CR is stripped.
        assert_eq!(reader.feed(b"x\r\r\n"), (4, Some(Ok(&b"x\r"[..]))));
    }

    #[test]
    fn line_reader_reports_overflow_at_once() {
        let mut reader = LineReader::<4>::new();
        assert_eq!(reader.feed(b"abc\r\n"), (5, Some(Ok(&b"abc"[..]))));
        assert_eq!(reader.feed(b"abcd\r\n"), (5, Some(Err(LineTooLong))));
        assert_eq!(reader.feed(b"abcdefgh"), (5, Some(Err(LineTooLong))));
    }
}
