//! The push script (what the client does) and the transcript (what the device did), and the
//! runner between them. Both formats are plain byte records so the lx106 program needs no
//! parser beyond a few `u32::from_le_bytes`.
//!
//! Script: `TQS1`, the flash contents (`u32` length, bytes), then events: `D` + `u32` length +
//! bytes (the client sends them), `C` (the client closes its sending side), `.` (end).
//!
//! Transcript: `TQT1`, then records of a tag, a `u32` length and the bytes: `R` one reply
//! line, `P` the final phase, `B` whether a reboot is pending, `S` the slot the boot config
//! now selects, `F` the whole flash, `.` the end (its presence proves the run completed).

use core::fmt;

use ota_agent::boot::running_slot;
use ota_agent::boot::{BootStatus, Running};
use ota_agent::flash::{NorFlash, NorFlashError, NorFlashErrorKind};
use ota_agent::layout::SlotId;
use ota_agent::session::{COMMIT_GRACE, Phase, Session, SessionConfig};
use ota_agent::writer::{SECTOR, SectorBuffer};
use smoltcp::time::{Duration, Instant};

use crate::LAYOUT;

pub const SCRIPT_MAGIC: [u8; 4] = *b"TQS1";
pub const TRANSCRIPT_MAGIC: [u8; 4] = *b"TQT1";

/// Event tags of a script.
pub mod event {
    pub const SEND: u8 = b'D';
    pub const CLOSE_INPUT: u8 = b'C';
    pub const END: u8 = b'.';
}

/// Record tags of a transcript.
pub mod record {
    pub const REPLY: u8 = b'R';
    pub const PHASE: u8 = b'P';
    pub const REBOOT_PENDING: u8 = b'B';
    pub const RUNNING: u8 = b'S';
    pub const FLASH: u8 = b'F';
    pub const END: u8 = b'.';
}

/// The most bytes handed to the session at once: one TCP segment at the usual MSS. Longer
/// `Send` events are fed in pieces of this size, the same on both builds.
pub const SEGMENT: usize = 1460;

/// What the client does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    Send(&'a [u8]),
    CloseInput,
}

/// Writes a script: the device's flash before the push, then the client's events.
pub fn encode_script(flash: &[u8], events: &[Event<'_>], sink: &mut dyn FnMut(&[u8])) {
    sink(&SCRIPT_MAGIC);
    sink(&(flash.len() as u32).to_le_bytes());
    sink(flash);
    for event in events {
        match event {
            Event::Send(bytes) => {
                sink(&[event::SEND]);
                sink(&(bytes.len() as u32).to_le_bytes());
                sink(bytes);
            }
            Event::CloseInput => sink(&[event::CLOSE_INPUT]),
        }
    }
    sink(&[event::END]);
}

/// `Phase` as one transcript byte.
pub const fn phase_code(phase: Phase) -> u8 {
    match phase {
        Phase::Idle => 0,
        Phase::Open => 1,
        Phase::Closing => 2,
        Phase::Abort => 3,
        Phase::Dropping => 4,
    }
}

pub const fn phase_from_code(code: u8) -> Option<Phase> {
    match code {
        0 => Some(Phase::Idle),
        1 => Some(Phase::Open),
        2 => Some(Phase::Closing),
        3 => Some(Phase::Abort),
        4 => Some(Phase::Dropping),
        _ => None,
    }
}

/// A slot (or none) as one transcript byte.
pub const fn slot_code(slot: Option<SlotId>) -> u8 {
    match slot {
        None => 0,
        Some(SlotId::User1) => 1,
        Some(SlotId::User2) => 2,
    }
}

pub const fn slot_from_code(code: u8) -> Option<Option<SlotId>> {
    match code {
        0 => Some(None),
        1 => Some(Some(SlotId::User1)),
        2 => Some(Some(SlotId::User2)),
        _ => None,
    }
}

/// Splits a transcript into its records, after checking the magic.
pub fn records(transcript: &[u8]) -> Result<Records<'_>, TranscriptError> {
    match transcript.strip_prefix(&TRANSCRIPT_MAGIC) {
        Some(rest) => Ok(Records { rest }),
        None => Err(TranscriptError::BadMagic),
    }
}

pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<(u8, &'a [u8]), TranscriptError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&tag, rest) = self.rest.split_first()?;
        let Some((len, rest)) = rest.split_first_chunk::<4>() else {
            self.rest = &[];
            return Some(Err(TranscriptError::Truncated));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            self.rest = &[];
            return Some(Err(TranscriptError::Truncated));
        }
        let (body, rest) = rest.split_at(len);
        self.rest = rest;
        Some(Ok((tag, body)))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TranscriptError {
    BadMagic,
    Truncated,
}

impl fmt::Display for TranscriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TranscriptError::BadMagic => "the transcript does not start with TQT1",
            TranscriptError::Truncated => "the transcript ends inside a record",
        })
    }
}

/// Where the script comes from: a byte slice on the host, a semihosting file under QEMU.
pub trait Source {
    /// Fills `buf` completely, or fails.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ReadFailed>;
}

/// The script source ended or could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadFailed;

impl Source for &[u8] {
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ReadFailed> {
        let (head, rest) = self.split_at_checked(buf.len()).ok_or(ReadFailed)?;
        buf.copy_from_slice(head);
        *self = rest;
        Ok(())
    }
}

/// Why a script could not be run. Session failures are not errors here: they are outcomes,
/// recorded in the transcript.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScriptError {
    Read,
    BadMagic,
    FlashSize {
        script: u32,
        flash: u32,
    },
    UnknownEvent(u8),
    /// Loading the initial flash contents or dumping the flash failed.
    Flash(NorFlashErrorKind),
}

impl From<ReadFailed> for ScriptError {
    fn from(_: ReadFailed) -> ScriptError {
        ScriptError::Read
    }
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScriptError::Read => f.write_str("the script ended early or could not be read"),
            ScriptError::BadMagic => f.write_str("the script does not start with TQS1"),
            ScriptError::FlashSize { script, flash } => {
                write!(f, "the script holds {script} bytes of flash, the device has {flash}")
            }
            ScriptError::UnknownEvent(tag) => write!(f, "unknown script event {tag:#04x}"),
            ScriptError::Flash(kind) => write!(f, "flash access failed: {kind}"),
        }
    }
}

/// Runs a script against the session, as a network driver would: loads the flash, starts a
/// session for the slot the boot config names, feeds each sent segment (sending each queued
/// reply before more input, calling `poll` after each batch), and writes the transcript to
/// `out`. The clock advances 1 ms per segment, far from any timeout.
pub fn run<S: Source, F: NorFlash>(
    source: &mut S,
    flash: &mut F,
    sector: &mut SectorBuffer,
    segment: &mut [u8; SEGMENT],
    out: &mut dyn FnMut(&[u8]),
) -> Result<(), ScriptError> {
    let mut magic = [0u8; 4];
    source.read_exact(&mut magic)?;
    if magic != SCRIPT_MAGIC {
        return Err(ScriptError::BadMagic);
    }
    load_flash(source, flash, sector)?;
    out(&TRANSCRIPT_MAGIC);

    let step = Duration::from_millis(1);
    let mut now = Instant::from_millis(0);
    let mut session = Session::new(SessionConfig::new(&LAYOUT), sector);
    let running = running_slot(flash, &LAYOUT);
    session.set_running(Running { slot: running, status: BootStatus::Untracked, build_id: None });
    session.start(now, None);
    loop {
        let mut tag = [0u8; 1];
        source.read_exact(&mut tag)?;
        match tag[0] {
            event::SEND => {
                let mut left = read_u32(source)? as usize;
                while left > 0 {
                    let piece = &mut segment[..left.min(SEGMENT)];
                    source.read_exact(piece)?;
                    left -= piece.len();
                    feed(&mut session, now, piece, flash, out);
                    now += step;
                }
            }
            event::CLOSE_INPUT => {
                session.input_closed(now);
                session.poll(now, flash);
                send_replies(&mut session, out);
                now += step;
            }
            event::END => break,
            other => return Err(ScriptError::UnknownEvent(other)),
        }
    }
    // The client sends nothing more: a verified image commits once the grace has passed.
    session.poll(now, flash);
    send_replies(&mut session, out);
    now += COMMIT_GRACE;
    session.poll(now, flash);
    send_replies(&mut session, out);

    put_record(out, record::PHASE, &[phase_code(session.phase())]);
    put_record(out, record::REBOOT_PENDING, &[u8::from(session.reboot_at().is_some())]);
    put_record(out, record::RUNNING, &[slot_code(running_slot(flash, &LAYOUT))]);
    dump_flash(flash, segment, out)?;
    put_record(out, record::END, &[]);
    Ok(())
}

/// One received segment: the session takes what it can, replies go out before it takes more.
fn feed<F: NorFlash>(
    session: &mut Session<'_>,
    now: Instant,
    mut data: &[u8],
    flash: &mut F,
    out: &mut dyn FnMut(&[u8]),
) {
    loop {
        send_replies(session, out);
        let taken = session.receive(now, data, flash);
        session.poll(now, flash);
        send_replies(session, out);
        data = &data[taken..];
        // Nothing taken with no reply queued: the session is idle, the rest is dropped.
        if data.is_empty() || taken == 0 {
            return;
        }
    }
}

fn send_replies(session: &mut Session<'_>, out: &mut dyn FnMut(&[u8])) {
    while let Some(line) = session.next_reply() {
        put_record(out, record::REPLY, line.as_bytes());
    }
}

fn put_record(out: &mut dyn FnMut(&[u8]), tag: u8, body: &[u8]) {
    out(&[tag]);
    out(&(body.len() as u32).to_le_bytes());
    out(body);
}

fn read_u32<S: Source>(source: &mut S) -> Result<u32, ReadFailed> {
    let mut bytes = [0u8; 4];
    source.read_exact(&mut bytes)?;
    Ok(u32::from_le_bytes(bytes))
}

/// Erases the whole flash and programs the script's contents, a sector at a time.
fn load_flash<S: Source, F: NorFlash>(
    source: &mut S,
    flash: &mut F,
    sector: &mut SectorBuffer,
) -> Result<(), ScriptError> {
    let len = read_u32(source)?;
    let capacity = flash.capacity() as u32;
    if len != capacity {
        return Err(ScriptError::FlashSize { script: len, flash: capacity });
    }
    flash.erase(0, len).map_err(|e| ScriptError::Flash(e.kind()))?;
    for at in (0..len).step_by(SECTOR) {
        let chunk = &mut sector[..(len - at).min(SECTOR as u32) as usize];
        source.read_exact(chunk)?;
        flash.write(at, chunk).map_err(|e| ScriptError::Flash(e.kind()))?;
    }
    Ok(())
}

fn dump_flash<F: NorFlash>(
    flash: &mut F,
    buf: &mut [u8],
    out: &mut dyn FnMut(&[u8]),
) -> Result<(), ScriptError> {
    let len = flash.capacity() as u32;
    out(&[record::FLASH]);
    out(&len.to_le_bytes());
    let mut at = 0;
    while at < len {
        let chunk = &mut buf[..(len - at).min(SEGMENT as u32) as usize];
        flash.read(at, chunk).map_err(|e| ScriptError::Flash(e.kind()))?;
        out(chunk);
        at += chunk.len() as u32;
    }
    Ok(())
}
