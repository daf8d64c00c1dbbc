//! What a board announces: its instance and host names and the TXT record, built once from
//! the running firmware's descriptor, its slot and whether a key is required. The smoltcp
//! responder renders them into packets; the SDK platform hands the same strings to
//! `espconn_mdns_init`.

use crate::descriptor::Descriptor;
use crate::irom_text;
use crate::layout::SlotId;

/// The longest DNS label.
pub const MAX_LABEL: usize = 63;
/// Room for the TXT record's strings, each with its length byte: `fw=` and a 32-byte name,
/// `ver=` and a 16-byte version, `build=` and 16 hex digits, `slot=user1`, `key=yes`.
pub const TXT_CAP: usize = 104;

irom_text! {
    /// The name when the firmware carries no descriptor.
    FALLBACK_NAME = "tcpflash";
    TXT_FW = "fw=";
    TXT_VER = "ver=";
    TXT_BUILD = "build=";
    TXT_SLOT = "slot=user";
    TXT_KEY_YES = "key=yes";
    TXT_KEY_NO = "key=no";
}

/// How a board names itself on mDNS (in [`crate::net::AgentConfig`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MdnsConfig {
    /// The host name (`HOST.local`), one DNS label. `None` (the default): the firmware's
    /// name and the id as six hex digits, `example-blinky-a1b2c3`. Characters other than
    /// ASCII letters, digits and `-` become `-`; it is cut at 63 bytes.
    pub host: Option<&'static str>,
    /// What tells this board from others running the same firmware: the last three bytes of
    /// its MAC address, or any id the application has.
    pub id: [u8; 3],
}

impl MdnsConfig {
    pub const fn new(id: [u8; 3]) -> MdnsConfig {
        MdnsConfig { host: None, id }
    }

    /// `id` from a MAC address: its last three bytes.
    pub const fn from_mac(mac: [u8; 6]) -> MdnsConfig {
        MdnsConfig::new([mac[3], mac[4], mac[5]])
    }

    pub const fn with_host(self, host: &'static str) -> MdnsConfig {
        MdnsConfig { host: Some(host), ..self }
    }
}

/// One DNS label, at most 63 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Label {
    len: u8,
    bytes: [u8; MAX_LABEL],
}

impl Label {
    const EMPTY: Label = Label { len: 0, bytes: [0; MAX_LABEL] };

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Appends `bytes`, each one a letter, digit or `-` (anything else becomes `-`), up to
    /// the label's limit.
    fn push_sanitized(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if usize::from(self.len) == MAX_LABEL {
                return;
            }
            self.bytes[usize::from(self.len)] = if byte.is_ascii_alphanumeric() { byte } else { b'-' };
            self.len += 1;
        }
    }

    fn push_hex(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            let mut digits = [0u8; 2];
            crate::hex::encode(&[byte], &mut digits);
            self.push_sanitized(&digits);
        }
    }
}

impl core::fmt::Debug for Label {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Labels only hold ASCII letters, digits and `-`.
        f.write_str(core::str::from_utf8(self.as_bytes()).unwrap_or("?"))
    }
}

/// The records' contents: `INSTANCE._tcpflash._tcp.local` (PTR, SRV, TXT) and `HOST.local`
/// (A).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Records {
    /// The instance: the firmware's name and the id (`example-blinky-a1b2c3`), so two boards
    /// given the same host name still announce two services.
    instance: Label,
    host: Label,
    /// The TXT record's strings as they go on the wire, each after its length byte.
    txt: [u8; TXT_CAP],
    txt_len: u8,
    port: u16,
}

impl Records {
    /// The records of a board whose agent listens on `port`, running `firmware` (its
    /// descriptor, when the image has one) from `slot`.
    pub fn new(
        config: &MdnsConfig,
        firmware: Option<&Descriptor>,
        slot: Option<SlotId>,
        key_required: bool,
        port: u16,
    ) -> Records {
        let mut instance = Label::EMPTY;
        match firmware.map(Descriptor::name_bytes).filter(|name| !name.is_empty()) {
            Some(name) => instance.push_sanitized(name),
            None => FALLBACK_NAME.for_each_chunk(|chunk| instance.push_sanitized(chunk)),
        }
        instance.push_sanitized(b"-");
        instance.push_hex(&config.id);
        let host = match config.host {
            Some(host) if !host.is_empty() => {
                let mut label = Label::EMPTY;
                label.push_sanitized(host.as_bytes());
                label
            }
            _ => instance,
        };
        let mut records = Records { instance, host, txt: [0; TXT_CAP], txt_len: 0, port };
        if let Some(firmware) = firmware {
            records.push_txt(&[Part::Text(TXT_FW), Part::Bytes(firmware.name_bytes())]);
            records.push_txt(&[Part::Text(TXT_VER), Part::Bytes(firmware.version_bytes())]);
            records.push_txt(&[Part::Text(TXT_BUILD), Part::Bytes(&firmware.build_id_hex())]);
        }
        if let Some(slot) = slot {
            records.push_txt(&[Part::Text(TXT_SLOT), Part::Bytes(&[b'1' + slot.index() as u8])]);
        }
        records.push_txt(&[Part::Text(if key_required { TXT_KEY_YES } else { TXT_KEY_NO })]);
        records
    }

    /// The instance label (`example-blinky-a1b2c3`).
    pub fn instance(&self) -> &[u8] {
        self.instance.as_bytes()
    }

    /// The host label (`HOST` of `HOST.local`).
    pub fn host(&self) -> &[u8] {
        self.host.as_bytes()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TXT record's data as it goes on the wire.
    pub fn txt_wire(&self) -> &[u8] {
        &self.txt[..usize::from(self.txt_len)]
    }

    /// The TXT record's strings (`fw=example-blinky`, ...), in order.
    pub fn txt(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = self.txt_wire();
        core::iter::from_fn(move || {
            let (&len, tail) = rest.split_first()?;
            let (string, tail) = tail.split_at(usize::from(len).min(tail.len()));
            rest = tail;
            Some(string)
        })
    }

    /// Appends one string made of `parts`; one that does not fit is left out whole.
    fn push_txt(&mut self, parts: &[Part<'_>]) {
        let len: usize = parts.iter().map(Part::len).sum();
        let at = usize::from(self.txt_len);
        if len > usize::from(u8::MAX) || at + 1 + len > TXT_CAP {
            return;
        }
        self.txt[at] = len as u8;
        let mut end = at + 1;
        for part in parts {
            match part {
                Part::Text(text) => text.for_each_chunk(|chunk| {
                    self.txt[end..end + chunk.len()].copy_from_slice(chunk);
                    end += chunk.len();
                }),
                Part::Bytes(bytes) => {
                    self.txt[end..end + bytes.len()].copy_from_slice(bytes);
                    end += bytes.len();
                }
            }
        }
        self.txt_len = end as u8;
    }
}

enum Part<'a> {
    Text(crate::text::IromText),
    Bytes(&'a [u8]),
}

impl Part<'_> {
    fn len(&self) -> usize {
        match self {
            Part::Text(text) => text.len(),
            Part::Bytes(bytes) => bytes.len(),
        }
    }
}
