//! The agent's mDNS responder (RFC 6762, DNS-SD of RFC 6763), sans-IO: a packet in, maybe a
//! packet out. Every driver shares it: the smoltcp driver ([`crate::net`], feature `mdns`)
//! and the virtual device over a std UDP socket. `no_std`, no allocator; the constant names
//! live in IROM like the agent's texts.
//!
//! A board answers for
//! - `_tcpflash._tcp.local` PTR → `INSTANCE._tcpflash._tcp.local` (with the SRV, TXT and A
//!   records as additional records, so one answer is enough to push);
//! - `INSTANCE._tcpflash._tcp.local` SRV (priority 0, weight 0, the agent's port, target
//!   `HOST.local`) and TXT (`fw=`, `ver=`, `build=`, `slot=`, `key=`, see [`Records`]);
//! - `HOST.local` A (the interface's IPv4 address, once it has one);
//! - `_services._dns-sd._udp.local` PTR → `_tcpflash._tcp.local` (service enumeration).
//!
//! It announces itself twice, a second apart, once it has an address (and again when the
//! address changes). Queries from port 5353 get a multicast reply (RFC 6762 section 6);
//! queries from any other port are "legacy unicast": a unicast reply with the query's id,
//! its questions repeated and TTLs of at most 10 s (section 6.7). Responses, other opcodes,
//! questions for other names, and anything malformed get no reply.
//!
//! Not done: probing for a unique name before use and renaming on a conflict (section 8.1;
//! the default host name carries the MAC's last three bytes, and the host tool reports two
//! boards announcing one name), known-answer suppression (7.1: a querier that knows the
//! records still gets them), NSEC negative answers (6.1), goodbye packets, IPv6.

pub mod records;

pub use records::{MdnsConfig, Records};

use smoltcp::time::{Duration, Instant};

use crate::irom_text;
use crate::text::IromText;

/// The mDNS port.
pub const PORT: u16 = 5353;
/// The IPv4 mDNS group, `224.0.0.251`.
pub const GROUP: [u8; 4] = [224, 0, 0, 251];
/// A buffer this large holds any reply (the longest names, the full TXT record, four
/// repeated legacy questions: 368 bytes).
pub const MAX_REPLY: usize = 512;

const TYPE_A: u16 = 1;
const TYPE_PTR: u16 = 12;
const TYPE_TXT: u16 = 16;
const TYPE_SRV: u16 = 33;
const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;
const CLASS_ANY: u16 = 255;
/// The top bit of a question's class (unicast response wanted) and of a record's class
/// (cache flush: this record replaces what caches hold for the name and type).
const TOP_BIT: u16 = 0x8000;
/// QR (a response) and the opcode.
const RESPONSE_OR_OPCODE: u16 = 0xF800;
/// QR and AA: an authoritative response.
const RESPONSE_FLAGS: u16 = 0x8400;

/// Records with a host name (SRV, A) live 120 s in caches, the others 75 min (RFC 6762
/// section 10); legacy unicast replies at most 10 s.
const TTL_HOST: u32 = 120;
const TTL_SERVICE: u32 = 4500;
const TTL_LEGACY: u32 = 10;

/// Unsolicited announcements, a second apart (RFC 6762 section 8.3: at least two).
const ANNOUNCEMENTS: u8 = 2;
const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(1);
/// Questions a legacy unicast reply repeats; matching questions beyond these are answered
/// without being repeated.
const MAX_QUESTIONS: usize = 4;
/// The longest name, uncompressed (RFC 1035 section 3.1).
const MAX_NAME: usize = 255;

irom_text! {
    /// `_tcpflash._tcp.local` in wire form.
    SERVICE = "\x09_tcpflash\x04_tcp\x05local\x00";
    /// `_services._dns-sd._udp` in wire form (`local` follows).
    SERVICES_HEAD = "\x09_services\x07_dns-sd\x04_udp";
    SERVICES = "\x09_services\x07_dns-sd\x04_udp\x05local\x00";
    LOCAL = "\x05local\x00";
}

/// Where `local` starts within [`SERVICE`].
const SERVICE_LOCAL_AT: usize = 15;

// The records a reply carries, as bits.
const PTR: u8 = 1;
const SRV: u8 = 2;
const TXT: u8 = 4;
const A: u8 = 8;
const ENUM: u8 = 16;

/// The names this board answers for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Name {
    Service,
    Instance,
    Host,
    Services,
}

/// Where a reply goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// To the group, `224.0.0.251:5353`.
    Multicast,
    /// Back to the query's source address and port (legacy unicast).
    Unicast,
}

/// What to answer to one query: [`Responder::query`] decides, [`Responder::render`] writes
/// it (two steps, so a driver can let go of the query's buffer before it writes the reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    id: u16,
    legacy: bool,
    answers: u8,
    additionals: u8,
    asked: u8,
    questions: [(Name, u16, u16); MAX_QUESTIONS],
}

impl Answer {
    pub fn destination(&self) -> Destination {
        if self.legacy { Destination::Unicast } else { Destination::Multicast }
    }

    /// Every record, unsolicited.
    const fn announcement() -> Answer {
        Answer {
            id: 0,
            legacy: false,
            answers: PTR | SRV | TXT | A,
            additionals: 0,
            asked: 0,
            questions: [(Name::Service, 0, 0); MAX_QUESTIONS],
        }
    }
}

/// The responder of one board.
#[derive(Clone, Copy, Debug)]
pub struct Responder {
    records: Records,
    addr: Option<[u8; 4]>,
    /// When the next announcement is due, and how many are left.
    next_announcement: Option<Instant>,
    announcements_left: u8,
}

impl Responder {
    /// A responder for `records`; it has no address yet (see [`Responder::set_address`]).
    pub const fn new(records: Records) -> Responder {
        Responder { records, addr: None, next_announcement: None, announcements_left: 0 }
    }

    pub fn records(&self) -> &Records {
        &self.records
    }

    pub fn address(&self) -> Option<[u8; 4]> {
        self.addr
    }

    /// The interface's IPv4 address (the A record). A new address is announced from `now`.
    pub fn set_address(&mut self, addr: Option<[u8; 4]>, now: Instant) {
        if addr == self.addr {
            return;
        }
        self.addr = addr;
        self.announce_from(now);
    }

    /// New records (the board's firmware or slot changed): announced from `now`.
    pub fn set_records(&mut self, records: Records, now: Instant) {
        if records != self.records {
            self.records = records;
            self.announce_from(now);
        }
    }

    fn announce_from(&mut self, now: Instant) {
        let due = self.addr.is_some();
        self.next_announcement = due.then_some(now);
        self.announcements_left = if due { ANNOUNCEMENTS } else { 0 };
    }

    /// When [`Responder::poll_announce`] has something to send next.
    pub fn poll_at(&self) -> Option<Instant> {
        self.next_announcement
    }

    /// An announcement due by `now`, written into `out` (its length; it goes to the group).
    pub fn poll_announce(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        let answer = self.announcement_due(now)?;
        self.render(&answer, out)
    }

    /// The announcement due by `now`, if one is (to [`Responder::render`]; it goes to the
    /// group).
    pub fn announcement_due(&mut self, now: Instant) -> Option<Answer> {
        let due = self.next_announcement?;
        if now < due {
            return None;
        }
        self.announcements_left = self.announcements_left.saturating_sub(1);
        self.next_announcement = (self.announcements_left > 0).then(|| now + ANNOUNCE_INTERVAL);
        Some(Answer::announcement())
    }

    /// [`Responder::query`] then [`Responder::render`]: the reply to `packet` (a UDP payload
    /// that came from `source_port`), written into `out`, and where it goes.
    pub fn respond(&self, packet: &[u8], source_port: u16, out: &mut [u8]) -> Option<(Destination, usize)> {
        let answer = self.query(packet, source_port)?;
        Some((answer.destination(), self.render(&answer, out)?))
    }

    /// What to answer to `packet`, a UDP payload from `source_port`: `None` for anything that
    /// is not a well-formed query asking for one of this board's records.
    // Out of line: inlined into the driver's poll, its name buffer sat in every frame.
    #[inline(never)]
    pub fn query(&self, packet: &[u8], source_port: u16) -> Option<Answer> {
        let flags = be16(packet, 2)?;
        if flags & RESPONSE_OR_OPCODE != 0 {
            return None;
        }
        let count = be16(packet, 4)?;
        let legacy = source_port != PORT;
        let mut answer = Answer { id: be16(packet, 0)?, legacy, ..Answer::announcement() };
        answer.answers = 0;
        let mut name = [0u8; MAX_NAME];
        let mut at = 12;
        // Each question takes at least five bytes, so the packet bounds the loop.
        for _ in 0..count {
            let (len, next) = read_name(packet, at, &mut name)?;
            let qtype = be16(packet, next)?;
            let class = be16(packet, next + 2)? & !TOP_BIT;
            at = next + 4;
            if class != CLASS_IN && class != CLASS_ANY {
                continue;
            }
            let Some(kind) = self.classify(&name[..len]) else { continue };
            let bits = match (kind, qtype) {
                (Name::Service, TYPE_PTR | TYPE_ANY) => PTR,
                (Name::Services, TYPE_PTR | TYPE_ANY) => ENUM,
                (Name::Instance, TYPE_SRV) => SRV,
                (Name::Instance, TYPE_TXT) => TXT,
                (Name::Instance, TYPE_ANY) => SRV | TXT,
                (Name::Host, TYPE_A | TYPE_ANY) if self.addr.is_some() => A,
                _ => 0,
            };
            if bits == 0 {
                continue;
            }
            answer.answers |= bits;
            if legacy && usize::from(answer.asked) < MAX_QUESTIONS {
                answer.questions[usize::from(answer.asked)] = (kind, qtype, class);
                answer.asked += 1;
            }
        }
        if answer.answers == 0 {
            return None;
        }
        // What the querier needs next to connect (RFC 6763 section 12).
        let mut extra = 0;
        if answer.answers & PTR != 0 {
            extra |= SRV | TXT | A;
        }
        if answer.answers & SRV != 0 {
            extra |= A;
        }
        if self.addr.is_none() {
            extra &= !A;
        }
        answer.additionals = extra & !answer.answers;
        Some(answer)
    }

    /// Writes the reply `answer` describes into `out`; `None` when it does not fit.
    pub fn render(&self, answer: &Answer, out: &mut [u8]) -> Option<usize> {
        let len = self.write(answer, out);
        (len <= out.len()).then_some(len)
    }

    /// The length of the reply `answer` describes, so a driver can ask its socket for
    /// exactly that much room and [`Responder::render`] into it.
    pub fn reply_len(&self, answer: &Answer) -> usize {
        self.write(answer, &mut [])
    }

    /// Writes the reply into `out` as far as it fits; its whole length.
    #[inline(never)]
    fn write(&self, answer: &Answer, out: &mut [u8]) -> usize {
        let answers = if self.addr.is_none() { answer.answers & !A } else { answer.answers };
        let additionals = if self.addr.is_none() { answer.additionals & !A } else { answer.additionals };
        let legacy = answer.legacy;
        let asked = if legacy { usize::from(answer.asked) } else { 0 };
        let mut w = Writer::new(out);
        w.u16(if legacy { answer.id } else { 0 });
        w.u16(RESPONSE_FLAGS);
        w.u16(asked as u16);
        w.u16(answers.count_ones() as u16);
        w.u16(0);
        w.u16(additionals.count_ones() as u16);
        for &(kind, qtype, class) in &answer.questions[..asked] {
            self.name(&mut w, kind);
            w.u16(qtype);
            w.u16(class);
        }
        self.write_records(&mut w, answers, legacy);
        self.write_records(&mut w, additionals, legacy);
        w.at
    }

    fn write_records(&self, w: &mut Writer<'_>, bits: u8, legacy: bool) {
        if bits & ENUM != 0 {
            self.name(w, Name::Services);
            w.record_head(TYPE_PTR, false, TTL_SERVICE, legacy);
            let mark = w.length_mark();
            self.name(w, Name::Service);
            w.patch_length(mark);
        }
        if bits & PTR != 0 {
            self.name(w, Name::Service);
            w.record_head(TYPE_PTR, false, TTL_SERVICE, legacy);
            let mark = w.length_mark();
            self.name(w, Name::Instance);
            w.patch_length(mark);
        }
        if bits & SRV != 0 {
            self.name(w, Name::Instance);
            w.record_head(TYPE_SRV, true, TTL_HOST, legacy);
            let mark = w.length_mark();
            w.u16(0);
            w.u16(0);
            w.u16(self.records.port());
            self.name(w, Name::Host);
            w.patch_length(mark);
        }
        if bits & TXT != 0 {
            self.name(w, Name::Instance);
            w.record_head(TYPE_TXT, true, TTL_SERVICE, legacy);
            let txt = self.records.txt_wire();
            w.u16(txt.len() as u16);
            w.bytes(txt);
        }
        if bits & A != 0
            && let Some(addr) = self.addr
        {
            self.name(w, Name::Host);
            w.record_head(TYPE_A, true, TTL_HOST, legacy);
            w.u16(4);
            w.bytes(&addr);
        }
    }

    /// Writes a name, pointing back at an earlier copy of it (or of its tail) when the
    /// packet has one.
    fn name(&self, w: &mut Writer<'_>, kind: Name) {
        match kind {
            Name::Service => w.service(),
            Name::Instance => {
                if !w.pointer(w.instance_at) {
                    w.instance_at = w.here();
                    w.label(self.records.instance());
                    w.service();
                }
            }
            Name::Host => {
                if !w.pointer(w.host_at) {
                    w.host_at = w.here();
                    w.label(self.records.host());
                    w.local();
                }
            }
            Name::Services => {
                w.text(SERVICES_HEAD);
                w.local();
            }
        }
    }

    fn classify(&self, name: &[u8]) -> Option<Name> {
        if equals(name, SERVICE) {
            Some(Name::Service)
        } else if strip_label(name, self.records.instance()).is_some_and(|rest| equals(rest, SERVICE)) {
            Some(Name::Instance)
        } else if strip_label(name, self.records.host()).is_some_and(|rest| equals(rest, LOCAL)) {
            Some(Name::Host)
        } else if equals(name, SERVICES) {
            Some(Name::Services)
        } else {
            None
        }
    }
}

fn be16(packet: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*packet.get(at)?, *packet.get(at.checked_add(1)?)?]))
}

/// Reads the name at `at` into `out` uncompressed (labels and the root's zero byte) and
/// returns its length and where the packet goes on after it. A compression pointer must
/// point before the one that led to it (so no loop can run forever), labels must be whole
/// and the name at most 255 bytes; anything else is malformed.
fn read_name(packet: &[u8], mut at: usize, out: &mut [u8; MAX_NAME]) -> Option<(usize, usize)> {
    let mut len = 0;
    let mut after = None;
    let mut limit = at;
    loop {
        let byte = *packet.get(at)?;
        match byte & 0xC0 {
            0x00 => {
                let n = usize::from(byte);
                if len + 1 + n > MAX_NAME {
                    return None;
                }
                let label = packet.get(at + 1..at + 1 + n)?;
                out[len] = byte;
                out[len + 1..len + 1 + n].copy_from_slice(label);
                len += 1 + n;
                at += 1 + n;
                if n == 0 {
                    return Some((len, after.unwrap_or(at)));
                }
            }
            0xC0 => {
                let target = usize::from(byte & 0x3F) << 8 | usize::from(*packet.get(at + 1)?);
                after.get_or_insert(at + 2);
                if target >= limit {
                    return None;
                }
                limit = target;
                at = target;
            }
            _ => return None,
        }
    }
}

/// Whether `name` is `text`, ASCII letters in either case.
fn equals(name: &[u8], text: IromText) -> bool {
    name.len() == text.len()
        && name.iter().enumerate().all(|(at, byte)| byte.eq_ignore_ascii_case(&text.byte(at)))
}

/// The rest of `name` after its first label, when that label is `label` (either case).
fn strip_label<'n>(name: &'n [u8], label: &[u8]) -> Option<&'n [u8]> {
    let (&len, rest) = name.split_first()?;
    if usize::from(len) != label.len() {
        return None;
    }
    let (head, tail) = rest.split_at_checked(label.len())?;
    head.eq_ignore_ascii_case(label).then_some(tail)
}

/// Writes a reply; past the end of its buffer it only counts, so its length says whether
/// it fitted.
struct Writer<'o> {
    out: &'o mut [u8],
    at: usize,
    /// Where names already written start (0: not yet; offset 0 is the header).
    service_at: usize,
    local_at: usize,
    instance_at: usize,
    host_at: usize,
}

impl<'o> Writer<'o> {
    fn new(out: &'o mut [u8]) -> Writer<'o> {
        Writer { out, at: 0, service_at: 0, local_at: 0, instance_at: 0, host_at: 0 }
    }

    fn here(&self) -> usize {
        self.at
    }

    fn bytes(&mut self, bytes: &[u8]) {
        if let Some(slot) = self.out.get_mut(self.at..self.at + bytes.len()) {
            slot.copy_from_slice(bytes);
        }
        self.at += bytes.len();
    }

    fn u16(&mut self, value: u16) {
        self.bytes(&value.to_be_bytes());
    }

    fn text(&mut self, text: IromText) {
        text.for_each_chunk(|chunk| self.bytes(chunk));
    }

    fn label(&mut self, label: &[u8]) {
        self.bytes(&[label.len() as u8]);
        self.bytes(label);
    }

    /// A compression pointer to `to`, when a name was written there.
    fn pointer(&mut self, to: usize) -> bool {
        if to == 0 {
            return false;
        }
        self.u16(0xC000 | to as u16);
        true
    }

    fn service(&mut self) {
        if !self.pointer(self.service_at) {
            self.service_at = self.at;
            if self.local_at == 0 {
                self.local_at = self.at + SERVICE_LOCAL_AT;
            }
            self.text(SERVICE);
        }
    }

    fn local(&mut self) {
        if !self.pointer(self.local_at) {
            self.local_at = self.at;
            self.text(LOCAL);
        }
    }

    /// Type, class (with the cache-flush bit for a record only this board holds, except in
    /// legacy unicast replies) and TTL.
    fn record_head(&mut self, kind: u16, unique: bool, ttl: u32, legacy: bool) {
        self.u16(kind);
        self.u16(if unique && !legacy { CLASS_IN | TOP_BIT } else { CLASS_IN });
        self.bytes(&(if legacy { ttl.min(TTL_LEGACY) } else { ttl }).to_be_bytes());
    }

    /// Room for an RDLENGTH that [`Writer::patch_length`] fills in.
    fn length_mark(&mut self) -> usize {
        self.u16(0);
        self.at
    }

    fn patch_length(&mut self, mark: usize) {
        let len = (self.at - mark) as u16;
        if let Some(slot) = self.out.get_mut(mark - 2..mark) {
            slot.copy_from_slice(&len.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests;
