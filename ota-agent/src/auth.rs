//! Authenticated pushes and end-to-end integrity, shared by the device and the host.
//!
//! - The image's SHA-256, computed on the device from the slot read back from flash, so it
//!   covers the network and the flash write alike (checked in the validator's one pass,
//!   `image::verify_for_slot`).
//! - The proof that a client holds the device's pre-shared key: HMAC-SHA256 over a fresh
//!   nonce from the device and the session's parameters ([`session_mac`]), checked in
//!   constant time ([`verify_session_mac`]). The nonce changes every session, so a recorded
//!   session replayed later carries the wrong proof.
//! - The lockout after failed proofs ([`Throttle`]), and the key file format ([`parse_key`]).
//!
//! The authenticated message is, byte for byte:
//!
//! | bytes | what |
//! |---|---|
//! | 16 | ASCII `tcpflash-auth-v1` |
//! | 16 | the nonce of `Nonce: <32 hex>` |
//! | 1 | the slot the device named: 0 for `user1.bin`, 1 for `user2.bin` |
//! | 4 | the image length of `FirmwareLength`, little-endian |
//! | 32 | the image's SHA-256, as in `Sha256: <64 hex>` |

use core::fmt;
use core::net::IpAddr;

use sha2::{Digest, Sha256};
use smoltcp::time::{Duration, Instant};

use crate::irom_text;
use crate::layout::SlotId;

pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 16;
/// A SHA-256 digest, and an HMAC-SHA256 tag.
pub const DIGEST_LEN: usize = 32;

/// The pre-shared key: 32 random bytes.
pub type Key = [u8; KEY_LEN];
pub type Nonce = [u8; NONCE_LEN];
/// A SHA-256 digest or an HMAC-SHA256 tag.
pub type Digest256 = [u8; DIGEST_LEN];

/// The environment variable naming the key file, read by the firmware's build (to embed the
/// key) and by `cargo tcpflash` (to prove it).
pub const KEY_FILE_ENV: &str = "TCPFLASH_KEY_FILE";

/// How long the first failed proof locks authentication; each further failure doubles it.
pub const DEFAULT_AUTH_BACKOFF: Duration = Duration::from_secs(1);
/// The lockout stops doubling after this many failures (1 s grows to at most 64 s).
const MAX_DOUBLINGS: u32 = 6;

/// Separates this use of the key from any other (and a later version of the message).
const CONTEXT_TEXT: &str = "tcpflash-auth-v1";

irom_text! {
    CONTEXT = CONTEXT_TEXT;
}

/// The byte that stands for `slot` in the authenticated message.
fn slot_byte(slot: SlotId) -> u8 {
    match slot {
        SlotId::User1 => 0,
        SlotId::User2 => 1,
    }
}

/// Length of the authenticated message (the table in the module docs).
const MESSAGE_LEN: usize = CONTEXT_TEXT.len() + NONCE_LEN + 1 + 4 + DIGEST_LEN;

/// HMAC-SHA256's block: a key up to this long is padded, not hashed.
const BLOCK_LEN: usize = 64;
const _: () = assert!(KEY_LEN <= BLOCK_LEN);

/// HMAC-SHA256 (RFC 2104) with `key` over the session's parameters: the inner hash over
/// the padded key and the message, the outer one over the padded key and the inner digest.
/// Written out over [`sha256`] so the device has one SHA-256 finalisation for its two
/// hashes and the image's (the `hmac` crate's inlined its own twice: 1.4 KB of IROM).
#[inline(never)]
fn session_tag(key: &Key, nonce: &Nonce, slot: SlotId, len: u32, sha256_of_image: &Digest256) -> Digest256 {
    let mut inner = [0u8; BLOCK_LEN + MESSAGE_LEN];
    let (padded, message) = inner.split_at_mut(BLOCK_LEN);
    pad_key(padded, key, 0x36);
    for (at, byte) in message[..CONTEXT_TEXT.len()].iter_mut().enumerate() {
        *byte = CONTEXT.byte(at);
    }
    let rest = &mut message[CONTEXT_TEXT.len()..];
    rest[..NONCE_LEN].copy_from_slice(nonce);
    rest[NONCE_LEN] = slot_byte(slot);
    rest[NONCE_LEN + 1..NONCE_LEN + 5].copy_from_slice(&len.to_le_bytes());
    rest[NONCE_LEN + 5..].copy_from_slice(sha256_of_image);
    let inner_digest = sha256(&inner);
    let mut outer = [0u8; BLOCK_LEN + DIGEST_LEN];
    let (padded, digest) = outer.split_at_mut(BLOCK_LEN);
    pad_key(padded, key, 0x5C);
    digest.copy_from_slice(&inner_digest);
    sha256(&outer)
}

/// `key` zero-padded to a block, each byte XORed with `pad` (HMAC's ipad or opad).
fn pad_key(block: &mut [u8], key: &Key, pad: u8) {
    for (at, byte) in block.iter_mut().enumerate() {
        *byte = key.get(at).copied().unwrap_or(0) ^ pad;
    }
}

/// What a client sends as `Auth: <64 hex>`: HMAC-SHA256 with `key` over the message in the
/// module's table.
pub fn session_mac(key: &Key, nonce: &Nonce, slot: SlotId, len: u32, sha256: &Digest256) -> Digest256 {
    session_tag(key, nonce, slot, len, sha256)
}

/// Whether `tag` is [`session_mac`] of these parameters. Constant-time: how much of a wrong
/// tag was right does not show in the time it takes (every byte is compared, and the
/// differences are only looked at once, behind `black_box`).
#[inline(never)]
pub fn verify_session_mac(
    key: &Key,
    nonce: &Nonce,
    slot: SlotId,
    len: u32,
    sha256: &Digest256,
    tag: &Digest256,
) -> bool {
    let expected = session_tag(key, nonce, slot, len, sha256);
    let differences = expected.iter().zip(tag).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    core::hint::black_box(differences) == 0
}

/// SHA-256 of bytes in memory (the host's images, and HMAC's two hashes).
#[inline(never)]
pub fn sha256(bytes: &[u8]) -> Digest256 {
    let mut hasher = Sha256::new();
    hasher.update(bytes);
    finish_sha256(&mut hasher)
}

/// The hasher's digest. Out of line: inlined, SHA-256's padding doubled the agent's poll;
/// the image check and [`sha256`] share it.
#[inline(never)]
pub(crate) fn finish_sha256(hasher: &mut Sha256) -> Digest256 {
    core::mem::take(hasher).finalize().into()
}

/// Failed proofs lock authentication for a delay that doubles with each failure in a row,
/// on the session's clock; a good proof clears it. While locked, no nonce is given out, so
/// no proof can even be tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttle {
    failures: u32,
    locked_until: Instant,
}

impl Throttle {
    pub const fn new() -> Throttle {
        Throttle { failures: 0, locked_until: Instant::ZERO }
    }

    /// How long authentication stays locked, if it is.
    pub fn locked_for(&self, now: Instant) -> Option<Duration> {
        (self.failures > 0 && now < self.locked_until).then(|| self.locked_until - now)
    }

    /// Failed proofs in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A proof failed at `now`: lock for `base`, doubled for each earlier failure in a row.
    pub fn failed(&mut self, now: Instant, base: Duration) {
        self.failures = self.failures.saturating_add(1);
        let doublings = (self.failures - 1).min(MAX_DOUBLINGS);
        self.locked_until = now + base * (1u32 << doublings);
    }

    pub fn succeeded(&mut self) {
        *self = Throttle::new();
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new()
    }
}

/// How many client addresses the lockout remembers; the one whose last failure is oldest
/// makes room for a new one.
pub const LOCKOUT_ENTRIES: usize = 4;

/// Failed proofs lock out the address they came from, not everyone: an owner at another
/// address can still push while someone else guesses. A small fixed table, no allocation;
/// a flood from more addresses than it holds evicts the oldest entries (what remains of that
/// attack is in the README). Addresses are kept as [`PeerKey`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Lockouts {
    entries: [Option<(PeerKey, Throttle)>; LOCKOUT_ENTRIES],
}

/// A client address as the lockout table keeps it: an IPv4 address as its 32 bits, an
/// IPv6 one folded to 32 (two addresses may share an entry: they then share a lockout),
/// 0 for an address the driver could not tell. Four bytes compare in a few instructions,
/// where `IpAddr` costs the agent's IROM a comparison of two enums at every use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PeerKey(u32);

impl PeerKey {
    pub fn of(peer: Option<IpAddr>) -> PeerKey {
        PeerKey(match peer {
            None => 0,
            Some(IpAddr::V4(v4)) => u32::from(v4),
            Some(IpAddr::V6(v6)) => {
                let bits = u128::from(v6);
                (bits as u32) ^ ((bits >> 32) as u32) ^ ((bits >> 64) as u32) ^ ((bits >> 96) as u32)
            }
        })
    }
}

impl Lockouts {
    pub const fn new() -> Lockouts {
        Lockouts { entries: [None; LOCKOUT_ENTRIES] }
    }

    /// How long `peer` stays locked out, if it is.
    pub fn locked_for(&self, peer: PeerKey, now: Instant) -> Option<Duration> {
        self.entry(peer).and_then(|throttle| throttle.locked_for(now))
    }

    /// Failed proofs in a row from `peer`.
    pub fn failures(&self, peer: PeerKey) -> u32 {
        self.entry(peer).map_or(0, Throttle::failures)
    }

    /// A proof from `peer` failed at `now`.
    pub fn failed(&mut self, peer: PeerKey, now: Instant, base: Duration) {
        let index = match self.entries.iter().position(|entry| matches!(entry, Some((at, _)) if *at == peer))
        {
            Some(index) => index,
            None => {
                // A free entry, else the one whose lockout ends first (its failure is oldest).
                let index = self
                    .entries
                    .iter()
                    .position(Option::is_none)
                    .or_else(|| {
                        (0..LOCKOUT_ENTRIES).min_by_key(|&i| self.entries[i].map(|(_, t)| t.locked_until))
                    })
                    .unwrap_or(0);
                self.entries[index] = Some((peer, Throttle::new()));
                index
            }
        };
        if let Some((_, throttle)) = &mut self.entries[index] {
            throttle.failed(now, base);
        }
    }

    /// A good proof from `peer` clears its record.
    pub fn succeeded(&mut self, peer: PeerKey) {
        for entry in &mut self.entries {
            if matches!(entry, Some((at, _)) if *at == peer) {
                *entry = None;
            }
        }
    }

    fn entry(&self, peer: PeerKey) -> Option<&Throttle> {
        self.entries.iter().flatten().find(|(at, _)| *at == peer).map(|(_, throttle)| throttle)
    }
}

/// Why a key file is not a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFileError {
    /// Neither exactly 32 bytes nor 64 hex digits (surrounding whitespace aside): the
    /// file's length, and its length without the surrounding whitespace.
    WrongLength { len: usize, trimmed: usize },
    /// 64 characters, but this one (0-based) is not a hex digit.
    NotHex { at: usize },
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            KeyFileError::WrongLength { len, trimmed } => {
                write!(f, "it holds {len} bytes")?;
                if trimmed != len {
                    write!(f, ", {trimmed} without the whitespace around them")?;
                }
                if len == KEY_LEN + 1 {
                    f.write_str(" (32 raw bytes and a newline? a raw key is exactly 32 bytes)")?;
                }
                Ok(())
            }
            KeyFileError::NotHex { at } => {
                write!(f, "character {} of the 64 is not a hex digit", at + 1)
            }
        }
    }
}

impl core::error::Error for KeyFileError {}

/// The key in a key file: exactly 32 bytes (raw, e.g. `head -c 32 /dev/urandom`), or 64 hex
/// digits with optional surrounding whitespace (e.g. `openssl rand -hex 32`).
pub fn parse_key(file: &[u8]) -> Result<Key, KeyFileError> {
    if let Ok(raw) = <[u8; KEY_LEN]>::try_from(file) {
        return Ok(raw);
    }
    let text = file.trim_ascii();
    if text.len() != 2 * KEY_LEN {
        return Err(KeyFileError::WrongLength { len: file.len(), trimmed: text.len() });
    }
    let mut key = [0u8; KEY_LEN];
    crate::hex::decode(text, &mut key).map_err(|at| KeyFileError::NotHex { at })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    const KEY: Key = *b"0123456789abcdef0123456789abcdef";

    fn v4(last: u8) -> PeerKey {
        PeerKey::of(Some(IpAddr::V4(core::net::Ipv4Addr::new(127, 0, 0, last))))
    }

    #[test]
    fn peer_keys_tell_addresses_apart() {
        assert_eq!(v4(1), PeerKey(0x7F00_0001));
        assert_ne!(v4(1), v4(2));
        assert_eq!(PeerKey::of(None), PeerKey(0));
        let v6 = |last: u16| {
            PeerKey::of(Some(IpAddr::V6(core::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, last))))
        };
        assert_ne!(v6(1), v6(2));
        assert_eq!(v6(1), PeerKey(0xfe80_0000 ^ 1));
    }

    #[test]
    fn a_lockout_holds_its_address_only_and_the_oldest_entry_makes_room() {
        let base = Duration::from_secs(1);
        let t0 = Instant::from_secs(100);
        let mut lockouts = Lockouts::new();
        lockouts.failed(v4(2), t0, base);
        assert_eq!(lockouts.locked_for(v4(2), t0), Some(base));
        assert_eq!(lockouts.locked_for(v4(1), t0), None, "another address is not locked out");
        lockouts.failed(v4(2), t0, base);
        assert_eq!(lockouts.failures(v4(2)), 2);
        // Four more addresses fail later: the table holds four, v4(2)'s record goes first.
        for (i, last) in (3..7).enumerate() {
            lockouts.failed(v4(last), t0 + Duration::from_secs(10 + i as u64), base);
        }
        assert_eq!(lockouts.failures(v4(2)), 0, "evicted");
        assert_eq!(lockouts.failures(v4(3)), 1);
        assert_eq!(lockouts.failures(v4(6)), 1);
        lockouts.succeeded(v4(6));
        assert_eq!(lockouts.failures(v4(6)), 0);
        assert_eq!(lockouts.failures(v4(5)), 1);
    }

    #[test]
    fn the_session_mac_is_hmac_sha256_over_the_documented_bytes() {
        // Computed independently with Python's hmac module over the table in the module
        // docs: key b"0123456789abcdef" * 2, nonce 00..0f, user2, 300000 bytes, the SHA-256
        // of b"image":
        //   msg = b"tcpflash-auth-v1" + bytes(range(16)) + b"\x01" + (300000).to_bytes(4,
        //         "little") + hashlib.sha256(b"image").digest()
        //   hmac.new(key, msg, "sha256").hexdigest()
        let nonce: Nonce = core::array::from_fn(|i| i as u8);
        let tag = session_mac(&KEY, &nonce, SlotId::User2, 300_000, &sha256(b"image"));
        let mut expected = [0u8; 32];
        crate::hex::decode(
            b"65f10b56027f4319a06448837095441f67ff1c16ea7945e3652f7c9339fd7fd4",
            &mut expected,
        )
        .unwrap();
        assert_eq!(tag, expected);
        assert!(verify_session_mac(&KEY, &nonce, SlotId::User2, 300_000, &sha256(b"image"), &tag));
    }

    #[test]
    fn the_session_mac_equals_the_hmac_crate() {
        use hmac::{Hmac, KeyInit, Mac};
        for seed in 0u8..8 {
            let key: Key = core::array::from_fn(|i| (i as u8).wrapping_mul(31).wrapping_add(seed));
            let nonce: Nonce = core::array::from_fn(|i| (i as u8) ^ seed);
            let digest = sha256(&[seed; 100]);
            let (slot, len) = (SlotId::ALL[usize::from(seed % 2)], 1000 + u32::from(seed));
            let mut message = Vec::from(CONTEXT_TEXT.as_bytes());
            message.extend_from_slice(&nonce);
            message.push(seed % 2);
            message.extend_from_slice(&len.to_le_bytes());
            message.extend_from_slice(&digest);
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
            mac.update(&message);
            let expected: Digest256 = mac.finalize().into_bytes().into();
            assert_eq!(session_mac(&key, &nonce, slot, len, &digest), expected);
        }
    }

    #[test]
    fn any_changed_parameter_fails_the_check() {
        let nonce = [7u8; NONCE_LEN];
        let digest = sha256(b"firmware");
        let tag = session_mac(&KEY, &nonce, SlotId::User1, 1000, &digest);
        assert!(verify_session_mac(&KEY, &nonce, SlotId::User1, 1000, &digest, &tag));
        let mut other_key = KEY;
        other_key[31] ^= 1;
        let mut other_nonce = nonce;
        other_nonce[0] ^= 0x80;
        let mut other_digest = digest;
        other_digest[5] ^= 1;
        let mut other_tag = tag;
        other_tag[31] ^= 1;
        assert!(!verify_session_mac(&other_key, &nonce, SlotId::User1, 1000, &digest, &tag));
        assert!(!verify_session_mac(&KEY, &other_nonce, SlotId::User1, 1000, &digest, &tag));
        assert!(!verify_session_mac(&KEY, &nonce, SlotId::User2, 1000, &digest, &tag));
        assert!(!verify_session_mac(&KEY, &nonce, SlotId::User1, 1001, &digest, &tag));
        assert!(!verify_session_mac(&KEY, &nonce, SlotId::User1, 1000, &other_digest, &tag));
        assert!(!verify_session_mac(&KEY, &nonce, SlotId::User1, 1000, &digest, &other_tag));
    }

    #[test]
    fn each_failure_doubles_the_lockout_up_to_64_times_the_base() {
        let base = Duration::from_secs(1);
        let mut throttle = Throttle::new();
        let t0 = Instant::from_secs(1000);
        assert_eq!(throttle.locked_for(t0), None);
        throttle.failed(t0, base);
        assert_eq!(throttle.locked_for(t0), Some(Duration::from_secs(1)));
        assert_eq!(throttle.locked_for(t0 + Duration::from_millis(999)), Some(Duration::from_millis(1)));
        assert_eq!(throttle.locked_for(t0 + base), None);
        let mut now = t0 + base;
        let mut lockouts = Vec::new();
        for _ in 0..9 {
            throttle.failed(now, base);
            let locked = throttle.locked_for(now).unwrap();
            lockouts.push(locked.secs());
            now += locked;
            assert_eq!(throttle.locked_for(now), None);
        }
        assert_eq!(lockouts, [2, 4, 8, 16, 32, 64, 64, 64, 64]);
        assert_eq!(throttle.failures(), 10);
        throttle.succeeded();
        throttle.failed(now, base);
        assert_eq!(throttle.locked_for(now), Some(base), "a success starts the doubling over");
    }

    #[test]
    fn key_files_are_32_raw_bytes_or_64_hex_digits() {
        let raw: Vec<u8> = (0..32).map(|i| (i * 37 + 10) as u8).collect();
        assert_eq!(parse_key(&raw).unwrap().to_vec(), raw, "raw bytes, even ones that look like whitespace");
        let hex: std::string::String = raw.iter().map(|b| std::format!("{b:02X}")).collect();
        assert_eq!(parse_key(hex.as_bytes()).unwrap().to_vec(), raw);
        let lower = std::format!("  {}\n", hex.to_lowercase());
        assert_eq!(parse_key(lower.as_bytes()).unwrap().to_vec(), raw);
        assert_eq!(parse_key(b"abc"), Err(KeyFileError::WrongLength { len: 3, trimmed: 3 }));
        assert_eq!(parse_key(&[0u8; 33]), Err(KeyFileError::WrongLength { len: 33, trimmed: 33 }));
        let mut with_newline = std::vec![0x80u8; 32];
        with_newline.push(b'\n');
        let error = parse_key(&with_newline).unwrap_err();
        assert_eq!(
            error.to_string(),
            "it holds 33 bytes, 32 without the whitespace around them (32 raw bytes and a newline? a raw key is \
             exactly 32 bytes)"
        );
        let mut bad = hex.clone().into_bytes();
        bad[17] = b'g';
        assert_eq!(parse_key(&bad), Err(KeyFileError::NotHex { at: 17 }));
        assert_eq!(KeyFileError::NotHex { at: 17 }.to_string(), "character 18 of the 64 is not a hex digit");
        assert_eq!(KeyFileError::WrongLength { len: 3, trimmed: 3 }.to_string(), "it holds 3 bytes");
    }
}
