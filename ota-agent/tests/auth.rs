//! Authenticated pushes and the SHA-256 check, sans-IO: the real session and the real client
//! in memory, exact bytes on the wire, and the flash before and after.
//!
//! Covered: the key right (any segmentation), wrong, or missing (the seed's client); a
//! recorded session replayed; an image byte tampered with, or the whole image swapped for
//! another valid one of the same length; a tampered `Sha256`, `Auth` or `FirmwareLength`
//! line; the auth exchange cut at every byte; integrity without a key; the lockout after
//! failed proofs; malformed and out-of-place extension lines.

mod common;

use common::*;
use ota_agent::auth::{self, Digest256, Key, NONCE_LEN, Nonce};
use ota_agent::boot::running_slot;
use ota_agent::client::{Authentication, Client, ClientError, Event, Step, Transmit};
use ota_agent::flash::RamNor;
use ota_agent::layout::SlotId;
use ota_agent::session::{Phase, Session, SessionConfig};
use ota_agent::writer::SECTOR;
use smoltcp::time::{Duration, Instant};

const KEY: Key = [0x5A; 32];
const HELLO: &[u8] = b"OTA\r\nGetNextFlash\r\n";
const SUCCESS: &[u8] = b"Flashing\r\nFlash upgrade success. Rebooting in 2s.\r\n";

fn images() -> [Vec<u8>; 2] {
    [image_for(SlotId::User1, 6000, 11), image_for(SlotId::User2, 7000, 12)]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A device running user1: flash, the session, a clock and a counter for nonces.
struct Device {
    session: Session<'static>,
    flash: RamNor<Vec<u8>>,
    now: Instant,
    nonces: u8,
    /// The nonce of the current session.
    nonce: Nonce,
    replies: Vec<u8>,
}

impl Device {
    fn new(key: Option<Key>) -> Device {
        Device::with_backoff(key, Duration::from_secs(1))
    }

    fn with_backoff(key: Option<Key>, auth_backoff: Duration) -> Device {
        let key: Option<&'static Key> = key.map(|key| &*Box::leak(Box::new(key)));
        let config = SessionConfig { key, auth_backoff, ..SessionConfig::new(LAYOUT) };
        let sector = Box::leak(Box::new([0u8; SECTOR]));
        let mut device = Device {
            session: Session::new(config, sector),
            flash: factory_flash(SlotId::User1),
            now: Instant::from_secs(100),
            nonces: 0,
            nonce: [0; NONCE_LEN],
            replies: Vec::new(),
        };
        device.connect();
        device
    }

    /// A new client: a new session with a nonce never used before.
    fn connect(&mut self) {
        self.session.reset();
        let running = running_slot(&mut self.flash, LAYOUT);
        self.session.set_running(ota_agent::boot::Running::untracked(running));
        self.session.start(self.now, None);
        self.nonces += 1;
        self.nonce = [self.nonces; NONCE_LEN];
        self.nonce[0] = 0xA0;
        self.session.provide_nonce(self.nonce);
        self.replies.clear();
    }

    fn drain(&mut self) {
        while let Some(line) = self.session.next_reply() {
            self.replies.extend_from_slice(line.as_bytes());
        }
    }

    /// What a driver does with received bytes, cut as told.
    fn send(&mut self, data: &[u8], segmentation: Segmentation) {
        for mut piece in segmentation.split(data) {
            loop {
                self.drain();
                if piece.is_empty() || self.session.phase() != Phase::Open {
                    break;
                }
                let n = self.session.receive(self.now, piece, &mut self.flash);
                piece = &piece[n..];
            }
            self.session.poll(self.now, &mut self.flash);
            self.drain();
        }
        settle(&mut self.session, &mut self.now, &mut self.flash);
        self.drain();
    }

    fn close_input(&mut self) {
        self.session.input_closed(self.now);
        self.session.poll(self.now, &mut self.flash);
        self.drain();
    }

    fn replies(&self) -> String {
        self.replies.escape_ascii().to_string()
    }
}

/// Changes the host's bytes on their way to the device.
type Tamper<'a> = &'a mut dyn FnMut(&mut Vec<u8>);

/// The client and the device in memory, the transport cutting bytes as told. NextSlot is
/// answered with the extension lines (SHA-256 of the image for that slot). Returns the
/// client's events and every byte the host sent.
fn push(
    device: &mut Device,
    client: &mut Client,
    images: &[Vec<u8>; 2],
    segmentation: Segmentation,
    tamper: Tamper<'_>,
) -> (Vec<Event>, Vec<u8>) {
    let mut events = Vec::new();
    let mut sent = Vec::new();
    for _ in 0..10_000 {
        let mut outgoing: Vec<u8> = match client.transmit() {
            Transmit::Bytes(bytes) => bytes.to_vec(),
            Transmit::Image { offset, len } => {
                images[client.slot().unwrap().index()][offset as usize..(offset + len) as usize].to_vec()
            }
            Transmit::Nothing => Vec::new(),
        };
        client.sent(outgoing.len());
        tamper(&mut outgoing);
        sent.extend_from_slice(&outgoing);
        let before = device.replies.len();
        device.send(&outgoing, segmentation);
        let incoming = device.replies[before..].to_vec();
        for piece in segmentation.split(&incoming) {
            let mut piece = piece;
            while !piece.is_empty() {
                let (n, event) = client.receive(piece);
                piece = &piece[n..];
                if let Some(Event::NextSlot(slot)) = event {
                    let image = &images[slot.index()];
                    client.send_checked_image(image.len() as u32, &auth::sha256(image));
                }
                events.extend(event);
            }
        }
        if device.session.phase() != Phase::Open && !client.is_done() {
            events.extend(client.closed());
        }
        if client.is_done() {
            return (events, sent);
        }
    }
    panic!("no end: {events:?}");
}

fn no_tamper() -> impl FnMut(&mut Vec<u8>) {
    |_| {}
}

fn device_error(events: &[Event]) -> String {
    match events.last() {
        Some(Event::Failed(ClientError::Device(text))) => text.to_string(),
        other => panic!("no device error but {other:?} in {events:?}"),
    }
}

fn rejection(events: &[Event]) -> String {
    match events.last() {
        Some(Event::Failed(ClientError::ImageRejected(text))) => text.to_string(),
        other => panic!("no rejection but {other:?} in {events:?}"),
    }
}

#[test]
fn the_right_key_pushes_under_any_segmentation_with_the_exact_lines() {
    let images = images();
    for segmentation in Segmentation::all() {
        let mut device = Device::new(Some(KEY));
        let mut client = Client::with_key(&KEY);
        let (events, sent) = push(&mut device, &mut client, &images, segmentation, &mut no_tamper());
        assert_eq!(
            events,
            [Event::NextSlot(SlotId::User2), Event::Ready, Event::Flashing, Event::Success],
            "{segmentation:?}"
        );
        assert_eq!(client.authentication(), Authentication::Sent);
        let image = &images[1];
        let sha = auth::sha256(image);
        let tag = auth::session_mac(&KEY, &device.nonce, SlotId::User2, image.len() as u32, &sha);
        let mut expected = format!(
            "OTA\r\nGetNextFlash\r\nGetNonce\r\nSha256: {}\r\nAuth: {}\r\nFirmwareLength: {}\r\n",
            hex(&sha),
            hex(&tag),
            image.len()
        )
        .into_bytes();
        expected.extend_from_slice(image);
        assert!(sent == expected, "{segmentation:?}: the host sent other bytes");
        let replies = format!("user2.bin\\r\\nNonce: {}\\r\\nReady\\r\\n", hex(&device.nonce));
        assert_eq!(device.replies(), format!("{replies}{}", SUCCESS.escape_ascii()), "{segmentation:?}");
        assert_eq!(slot_bytes(&device.flash, SlotId::User2, image.len()), &image[..]);
        assert_eq!(running_slot(&mut device.flash, LAYOUT), Some(SlotId::User2));
        assert_eq!(device.session.auth_failures(None), 0);
    }
}

#[test]
fn a_wrong_key_is_refused_before_ready_and_the_flash_is_untouched() {
    let mut device = Device::new(Some(KEY));
    let before = device.flash.clone();
    let mut wrong = KEY;
    wrong[0] ^= 1;
    let mut client = Client::with_key(&wrong);
    let (events, _) = push(&mut device, &mut client, &images(), Segmentation::Whole, &mut no_tamper());
    assert_eq!(device_error(&events), "Authentication failed");
    assert_eq!(events[..1], [Event::NextSlot(SlotId::User2)]);
    assert!(!device.replies().contains("Ready"));
    assert!(device.flash.bytes() == before.bytes(), "a refused push writes nothing");
    assert_eq!(device.session.phase(), Phase::Dropping);
    assert_eq!(device.session.auth_failures(None), 1);
}

#[test]
fn without_a_key_the_seed_bytes_hear_authentication_required() {
    let images = images();
    for segmentation in [Segmentation::Whole, Segmentation::OneByte, Segmentation::Random { seed: 3, max: 5 }]
    {
        let mut device = Device::new(Some(KEY));
        let before = device.flash.clone();
        // Exactly what tcp_flash.py sends, image and all.
        let mut seed = HELLO.to_vec();
        seed.extend_from_slice(format!("FirmwareLength: {}\r\n", images[1].len()).as_bytes());
        seed.extend_from_slice(&images[1]);
        device.send(&seed, segmentation);
        device.close_input();
        assert_eq!(device.replies(), "user2.bin\\r\\nERR: Authentication required\\r\\n", "{segmentation:?}");
        assert!(device.flash.bytes() == before.bytes());
        assert_eq!(device.session.auth_failures(None), 0, "not trying is not a failed proof");
    }
    // Our client without a key: the SHA-256 alone is not enough either.
    let mut device = Device::new(Some(KEY));
    let mut client = Client::new();
    let (events, _) = push(&mut device, &mut client, &images, Segmentation::Whole, &mut no_tamper());
    assert_eq!(device_error(&events), "Authentication required");
    assert_eq!(client.authentication(), Authentication::NotAsked);
}

#[test]
fn a_recorded_session_replayed_later_fails() {
    let images = images();
    let mut recorded_on = Device::new(Some(KEY));
    let mut client = Client::with_key(&KEY);
    let (events, recording) =
        push(&mut recorded_on, &mut client, &images, Segmentation::Whole, &mut no_tamper());
    assert_eq!(events.last(), Some(&Event::Success));

    // The same bytes to the same kind of device: its nonce is new, so the proof is wrong.
    for segmentation in [Segmentation::Whole, Segmentation::OneByte] {
        let mut device = Device::new(Some(KEY));
        device.nonces = 7;
        device.connect();
        assert_ne!(device.nonce, recorded_on.nonce);
        let before = device.flash.clone();
        device.send(&recording, segmentation);
        device.close_input();
        assert_eq!(
            device.replies(),
            format!("user2.bin\\r\\nNonce: {}\\r\\nERR: Authentication failed\\r\\n", hex(&device.nonce)),
            "{segmentation:?}"
        );
        assert!(device.flash.bytes() == before.bytes());
    }
}

#[test]
fn a_nonce_proves_one_attempt_only_and_never_outlives_its_session() {
    let images = images();
    let mut device = Device::new(Some(KEY));
    // Without a nonce from the driver, nothing can authenticate: `start` forgets the last
    // session's (here one never asked for), so a stale nonce is never given out.
    device.session.set_running(ota_agent::boot::Running::untracked(Some(SlotId::User1)));
    device.session.start(device.now, None);
    device.send(b"OTA\r\nGetNextFlash\r\nGetNonce\r\n", Segmentation::Whole);
    assert_eq!(device.replies(), "user2.bin\\r\\nERR: No random nonce available\\r\\n");

    // A proof made for a nonce of a session that ended is wrong in the next one.
    device.connect();
    device.send(b"OTA\r\nGetNextFlash\r\nGetNonce\r\n", Segmentation::Whole);
    let old_nonce = device.nonce;
    device.close_input();
    device.connect();
    let sha = auth::sha256(&images[1]);
    let len = images[1].len() as u32;
    let old_tag = auth::session_mac(&KEY, &old_nonce, SlotId::User2, len, &sha);
    let lines = format!(
        "OTA\r\nGetNextFlash\r\nGetNonce\r\nSha256: {}\r\nAuth: {}\r\nFirmwareLength: {len}\r\n",
        hex(&sha),
        hex(&old_tag)
    );
    device.send(lines.as_bytes(), Segmentation::Whole);
    assert!(device.replies().ends_with("ERR: Authentication failed\\r\\n"), "{}", device.replies());
}

#[test]
fn a_tampered_image_byte_is_invalid_and_the_boot_config_stays() {
    let images = images();
    let len = images[1].len();
    for at in [0, 100, len / 2, len - 5, len - 1] {
        let mut device = Device::new(Some(KEY));
        let config = config_bytes(&device.flash);
        let mut client = Client::with_key(&KEY);
        // The image goes out in one batch after `Ready`; the request lines are far shorter.
        let mut flip = |bytes: &mut Vec<u8>| {
            if bytes.len() == len {
                bytes[at] ^= 0x01;
            }
        };
        let (events, _) = push(&mut device, &mut client, &images, Segmentation::Whole, &mut flip);
        assert_eq!(events[..3], [Event::NextSlot(SlotId::User2), Event::Ready, Event::Invalid], "byte {at}");
        assert_eq!(rejection(&events), "Image SHA-256 mismatch", "byte {at}");
        assert_eq!(config_bytes(&device.flash), config, "byte {at}");
    }
}

#[test]
fn another_valid_image_of_the_same_length_is_caught_only_by_the_sha256() {
    let images = images();
    let swapped = image_for(SlotId::User2, 7000, 99);
    assert_eq!(swapped.len(), images[1].len());
    assert_ne!(swapped, images[1]);
    // The SHA-256 sent is the real image's; the bytes that arrive are the other image's.
    let mut device = Device::new(None);
    let config = config_bytes(&device.flash);
    let mut client = Client::new();
    let mut swap = |bytes: &mut Vec<u8>| {
        if bytes.len() == images[1].len() {
            *bytes = swapped.clone();
        }
    };
    let (events, _) = push(&mut device, &mut client, &images, Segmentation::Whole, &mut swap);
    assert_eq!(rejection(&events), "Image SHA-256 mismatch");
    assert_eq!(config_bytes(&device.flash), config);

    // Control: with the seed's lines the same swap goes through (the structure is valid).
    let mut device = Device::new(None);
    let mut message = HELLO.to_vec();
    message.extend_from_slice(format!("FirmwareLength: {}\r\n", swapped.len()).as_bytes());
    message.extend_from_slice(&swapped);
    device.send(&message, Segmentation::Whole);
    assert_eq!(device.replies(), format!("user2.bin\\r\\nReady\\r\\n{}", SUCCESS.escape_ascii()));
}

#[test]
fn a_tampered_sha_auth_or_length_line_fails_authentication_without_saying_which() {
    let images = images();
    let other_sha = hex(&auth::sha256(b"something else"));
    type Edit = Box<dyn Fn(&str) -> String>;
    let edits: [(&str, Edit); 4] = [
        ("sha", Box::new(move |_: &str| format!("Sha256: {other_sha}\r\n"))),
        (
            "auth",
            Box::new(|line: &str| {
                let mut text = line.to_owned();
                let last = text.len() - 3;
                let digit = if &text[last..last + 1] == "0" { "1" } else { "0" };
                text.replace_range(last..last + 1, digit);
                text
            }),
        ),
        (
            "length",
            Box::new(|line: &str| {
                let len: u32 = line.trim_end().strip_prefix("FirmwareLength: ").unwrap().parse().unwrap();
                format!("FirmwareLength: {}\r\n", len + 1)
            }),
        ),
        ("case", Box::new(|line: &str| line.to_uppercase().replace("SHA256: ", "Sha256: "))),
    ];
    for (name, edit) in &edits {
        let prefix = match *name {
            "sha" | "case" => "Sha256: ",
            "auth" => "Auth: ",
            _ => "FirmwareLength: ",
        };
        let mut device = Device::new(Some(KEY));
        let before = device.flash.clone();
        let mut client = Client::with_key(&KEY);
        let mut tamper = |bytes: &mut Vec<u8>| {
            let Ok(text) = std::str::from_utf8(bytes) else { return };
            let edited: String = text
                .split_inclusive("\r\n")
                .map(|line| if line.starts_with(prefix) { edit(line) } else { line.to_owned() })
                .collect();
            *bytes = edited.into_bytes();
        };
        let (events, _) = push(&mut device, &mut client, &images, Segmentation::Whole, &mut tamper);
        if *name == "case" {
            // Hex digits in upper case are the same digest: not tampering at all.
            assert_eq!(events.last(), Some(&Event::Success), "{name}: {events:?}");
            continue;
        }
        assert_eq!(device_error(&events), "Authentication failed", "{name}");
        assert!(!device.replies().contains("Ready"), "{name}");
        assert!(device.flash.bytes() == before.bytes(), "{name}");
    }
}

#[test]
fn the_auth_exchange_cut_at_any_byte_answers_nothing_more_and_the_next_push_works() {
    let images = images();
    // How many bytes the request lines of one honest push take.
    let mut client = Client::with_key(&KEY);
    let (_, full) =
        push(&mut Device::new(Some(KEY)), &mut client, &images, Segmentation::Whole, &mut no_tamper());
    let lines_end = full.len() - images[1].len();
    let mut device = Device::new(Some(KEY));
    let before = device.flash.clone();
    for cut in 0..lines_end {
        device.connect();
        let mut client = Client::with_key(&KEY);
        let mut sent = 0usize;
        let mut cut_off = |bytes: &mut Vec<u8>| {
            let keep = cut.saturating_sub(sent).min(bytes.len());
            sent += bytes.len();
            bytes.truncate(keep);
        };
        let mut events = Vec::new();
        // Drive by hand: stop once the transport has nothing more to carry.
        for _ in 0..20 {
            let mut outgoing = match client.transmit() {
                Transmit::Bytes(bytes) => bytes.to_vec(),
                _ => Vec::new(),
            };
            client.sent(outgoing.len());
            cut_off(&mut outgoing);
            let before = device.replies.len();
            device.send(&outgoing, Segmentation::OneByte);
            let incoming = device.replies[before..].to_vec();
            let mut data = &incoming[..];
            while !data.is_empty() {
                let (n, event) = client.receive(data);
                data = &data[n..];
                if let Some(Event::NextSlot(slot)) = event {
                    let image = &images[slot.index()];
                    client.send_checked_image(image.len() as u32, &auth::sha256(image));
                }
                events.extend(event);
            }
        }
        device.close_input();
        let replies = device.replies();
        assert!(!replies.contains("Ready") && !replies.contains("ERR"), "cut at {cut}: {replies}");
        assert_eq!(device.session.phase(), Phase::Dropping, "cut at {cut}");
        assert!(device.flash.bytes() == before.bytes(), "cut at {cut}");
        assert!(!events.contains(&Event::Ready), "cut at {cut}");
    }
    assert_eq!(device.session.auth_failures(None), 0);
    device.connect();
    let mut client = Client::with_key(&KEY);
    let (events, _) = push(&mut device, &mut client, &images, Segmentation::Whole, &mut no_tamper());
    assert_eq!(events.last(), Some(&Event::Success), "{events:?}");
}

#[test]
fn without_a_key_the_sha256_is_checked_and_the_seed_flow_is_unchanged() {
    let images = images();
    // Our client: Sha256 and FirmwareLength, nothing else.
    let mut device = Device::new(None);
    let mut client = Client::new();
    let (events, sent) = push(&mut device, &mut client, &images, Segmentation::OneByte, &mut no_tamper());
    assert_eq!(events, [Event::NextSlot(SlotId::User2), Event::Ready, Event::Flashing, Event::Success]);
    let head = format!(
        "OTA\r\nGetNextFlash\r\nSha256: {}\r\nFirmwareLength: {}\r\n",
        hex(&auth::sha256(&images[1])),
        images[1].len()
    );
    assert!(sent.starts_with(head.as_bytes()), "{}", sent[..200].escape_ascii());
    assert_eq!(device.replies(), format!("user2.bin\\r\\nReady\\r\\n{}", SUCCESS.escape_ascii()));

    // A wrong SHA-256: Invalid, and the config untouched.
    let mut device = Device::new(None);
    let config = config_bytes(&device.flash);
    let mut message = HELLO.to_vec();
    let wrong: Digest256 = auth::sha256(&images[0]);
    message.extend_from_slice(
        format!("Sha256: {}\r\nFirmwareLength: {}\r\n", hex(&wrong), images[1].len()).as_bytes(),
    );
    message.extend_from_slice(&images[1]);
    device.send(&message, Segmentation::Random { seed: 9, max: 300 });
    assert_eq!(device.replies(), "user2.bin\\r\\nReady\\r\\nInvalid\\r\\nERR: Image SHA-256 mismatch\\r\\n");
    assert_eq!(config_bytes(&device.flash), config);

    // The seed's bytes: exactly the seed's answers.
    let mut device = Device::new(None);
    let mut message = HELLO.to_vec();
    message.extend_from_slice(format!("FirmwareLength: {}\r\n", images[1].len()).as_bytes());
    message.extend_from_slice(&images[1]);
    device.send(&message, Segmentation::Whole);
    assert_eq!(device.replies(), format!("user2.bin\\r\\nReady\\r\\n{}", SUCCESS.escape_ascii()));

    // A client with a key meets a device without one: told `NoKey`, it pushes without a proof.
    let mut device = Device::new(None);
    let mut client = Client::with_key(&KEY);
    let (events, sent) = push(&mut device, &mut client, &images, Segmentation::Whole, &mut no_tamper());
    assert_eq!(events.last(), Some(&Event::Success));
    assert_eq!(client.authentication(), Authentication::DeviceHasNoKey);
    assert!(!sent.windows(6).any(|w| w == b"Auth: "), "no proof for a device without a key");
    assert!(device.replies().starts_with("user2.bin\\r\\nNoKey\\r\\nReady\\r\\n"), "{}", device.replies());
}

#[test]
fn failed_proofs_lock_get_nonce_for_a_doubling_delay_and_a_good_one_resets_it() {
    let images = images();
    let mut device = Device::with_backoff(Some(KEY), Duration::from_secs(10));
    let mut wrong = KEY;
    wrong[31] ^= 0x80;
    let attempt = |device: &mut Device, key: &Key| {
        device.connect();
        let mut client = Client::with_key(key);
        push(device, &mut client, &images, Segmentation::Whole, &mut no_tamper()).0
    };

    assert_eq!(device_error(&attempt(&mut device, &wrong)), "Authentication failed");
    let failed_at = device.now;
    // Locked for 10 s: even the right key gets no nonce, and the reply says for how long.
    device.now = failed_at + Duration::from_millis(1);
    assert_eq!(device_error(&attempt(&mut device, &KEY)), "Too many failed authentications, retry in 10 s");
    assert!(!device.replies().contains("Nonce"));
    device.now = failed_at + Duration::from_millis(9_500);
    assert_eq!(device_error(&attempt(&mut device, &KEY)), "Too many failed authentications, retry in 1 s");
    assert_eq!(device.session.auth_failures(None), 1, "a locked request is not another failure");

    // After the delay, a second failure locks for twice as long.
    device.now = failed_at + Duration::from_secs(10);
    assert_eq!(device_error(&attempt(&mut device, &wrong)), "Authentication failed");
    let second = device.now;
    device.now = second + Duration::from_millis(19_999);
    assert_eq!(device_error(&attempt(&mut device, &KEY)), "Too many failed authentications, retry in 1 s");
    device.now = second + Duration::from_secs(20);
    // The seed flow during a lockout: still just "required" (it never asked for a nonce).
    device.connect();
    device.send(b"OTA\r\nGetNextFlash\r\nFirmwareLength: 5\r\n", Segmentation::Whole);
    assert_eq!(device.replies(), "user2.bin\\r\\nERR: Authentication required\\r\\n");

    // The right key once the lock is over: pushed, and the count starts over.
    let events = attempt(&mut device, &KEY);
    assert_eq!(events.last(), Some(&Event::Success), "{events:?}");
    assert_eq!(device.session.auth_failures(None), 0);
}

#[test]
fn a_good_proof_clears_the_failure_count() {
    let images = images();
    let mut device = Device::with_backoff(Some(KEY), Duration::from_secs(4));
    let mut wrong = KEY;
    wrong[3] ^= 2;
    for _ in 0..3 {
        device.connect();
        let mut client = Client::with_key(&wrong);
        push(&mut device, &mut client, &images, Segmentation::Whole, &mut no_tamper());
        device.now += Duration::from_secs(64);
    }
    assert_eq!(device.session.auth_failures(None), 3);
    device.connect();
    let mut client = Client::with_key(&KEY);
    let (events, _) = push(&mut device, &mut client, &images, Segmentation::Whole, &mut no_tamper());
    assert_eq!(events.last(), Some(&Event::Success));
    assert_eq!(device.session.auth_failures(None), 0);
}

#[test]
fn extension_lines_out_of_place_or_malformed_are_refused() {
    let digest = "ab".repeat(32);
    let cases: Vec<(Option<Key>, String, &str)> = vec![
        // Before GetNextFlash, the extensions are not the protocol.
        (Some(KEY), "OTA\r\nGetNonce\r\n".into(), "ERR: Invalid protocol\\r\\n"),
        (None, format!("OTA\r\nSha256: {digest}\r\n"), "ERR: Invalid protocol\\r\\n"),
        // Each at most once.
        (
            Some(KEY),
            "OTA\r\nGetNextFlash\r\nGetNonce\r\nGetNonce\r\n".into(),
            "user2.bin\\r\\nNonce: NONCE\\r\\nERR: Invalid protocol\\r\\n",
        ),
        (
            None,
            format!("OTA\r\nGetNextFlash\r\nSha256: {digest}\r\nSha256: {digest}\r\n"),
            "user2.bin\\r\\nERR: Invalid protocol\\r\\n",
        ),
        // Auth needs a nonce first, and a device with a key.
        (
            Some(KEY),
            format!("OTA\r\nGetNextFlash\r\nAuth: {digest}\r\n"),
            "user2.bin\\r\\nERR: Invalid protocol\\r\\n",
        ),
        (
            None,
            format!("OTA\r\nGetNextFlash\r\nGetNonce\r\nAuth: {digest}\r\n"),
            "user2.bin\\r\\nNoKey\\r\\nERR: Invalid protocol\\r\\n",
        ),
        // Digests are exactly 64 hex digits.
        (
            None,
            "OTA\r\nGetNextFlash\r\nSha256: abc\r\n".into(),
            "user2.bin\\r\\nERR: Invalid digest: 64 hex digits expected\\r\\n",
        ),
        (
            None,
            format!("OTA\r\nGetNextFlash\r\nSha256: {}x\r\n", &digest[..63]),
            "user2.bin\\r\\nERR: Invalid digest: 64 hex digits expected\\r\\n",
        ),
        (
            Some(KEY),
            format!("OTA\r\nGetNextFlash\r\nGetNonce\r\nAuth: {digest}0\r\n"),
            "user2.bin\\r\\nNonce: NONCE\\r\\nERR: Invalid digest: 64 hex digits expected\\r\\n",
        ),
        // No prefix matching.
        (
            Some(KEY),
            "OTA\r\nGetNextFlash\r\nGetNonc\r\n".into(),
            "user2.bin\\r\\nERR: Invalid protocol\\r\\n",
        ),
        (
            Some(KEY),
            "OTA\r\nGetNextFlash\r\nGetNonceX\r\n".into(),
            "user2.bin\\r\\nERR: Invalid protocol\\r\\n",
        ),
        // A key but no Sha256: nothing to authenticate.
        (
            Some(KEY),
            format!("OTA\r\nGetNextFlash\r\nGetNonce\r\nAuth: {digest}\r\nFirmwareLength: 9\r\n"),
            "user2.bin\\r\\nNonce: NONCE\\r\\nERR: Authentication required\\r\\n",
        ),
    ];
    for (key, input, expected) in cases {
        for segmentation in [Segmentation::Whole, Segmentation::OneByte] {
            let mut device = Device::new(key);
            let before = device.flash.clone();
            device.send(input.as_bytes(), segmentation);
            let expected = expected.replace("NONCE", &hex(&device.nonce));
            assert_eq!(device.replies(), expected, "{input:?} {segmentation:?}");
            assert_eq!(device.session.phase(), Phase::Dropping, "{input:?}");
            assert!(device.flash.bytes() == before.bytes());
            assert_eq!(device.session.auth_failures(None), 0, "{input:?}: no proof was checked");
        }
    }
}

#[test]
fn the_client_sends_the_exact_extension_bytes_and_reports_each_refusal() {
    let sha = auth::sha256(b"image bytes");
    // With a key: GetNonce first, then Sha256, Auth and FirmwareLength in one write.
    let mut client = Client::with_key(&KEY);
    client.sent(HELLO.len());
    assert_eq!(client.receive(b"user1.bin\r\n"), (11, Some(Event::NextSlot(SlotId::User1))));
    client.send_checked_image(4000, &sha);
    assert_eq!(client.transmit(), Transmit::Bytes(b"GetNonce\r\n"));
    client.sent(10);
    assert_eq!(client.transmit(), Transmit::Nothing, "nothing more until the nonce is in");
    let nonce: Nonce = core::array::from_fn(|i| 0xF0 | i as u8);
    let line = format!("Nonce: {}\r\n", hex(&nonce));
    assert_eq!(client.receive(line.as_bytes()), (line.len(), None));
    let tag = auth::session_mac(&KEY, &nonce, SlotId::User1, 4000, &sha);
    let expected = format!("Sha256: {}\r\nAuth: {}\r\nFirmwareLength: 4000\r\n", hex(&sha), hex(&tag));
    assert_eq!(client.transmit(), Transmit::Bytes(expected.as_bytes()));
    assert_eq!(client.authentication(), Authentication::Sent);

    // The device refuses at the nonce (locked): a device error at that step.
    let mut client = Client::with_key(&KEY);
    client.sent(HELLO.len());
    client.receive(b"user2.bin\r\n");
    client.send_checked_image(10, &sha);
    client.sent(10);
    let (_, event) = client.receive(b"ERR: Too many failed authentications, retry in 3 s\r\n");
    let Some(Event::Failed(ClientError::Device(text))) = event else { panic!("{event:?}") };
    assert_eq!(text.to_string(), "Too many failed authentications, retry in 3 s");

    // A nonce that is not 32 hex digits, or a reply out of place, is not the protocol.
    for bad in [&b"Nonce: 1234\r\n"[..], b"Ready\r\n", b"Nonce: \r\n"] {
        let mut client = Client::with_key(&KEY);
        client.sent(HELLO.len());
        client.receive(b"user2.bin\r\n");
        client.send_checked_image(10, &sha);
        let (_, event) = client.receive(bad);
        let Some(Event::Failed(ClientError::Unexpected { during, .. })) = event else { panic!("{event:?}") };
        assert_eq!(during, Step::Nonce);
    }
    // The device closing while the nonce is awaited.
    let mut client = Client::with_key(&KEY);
    client.sent(HELLO.len());
    client.receive(b"user2.bin\r\n");
    client.send_checked_image(10, &sha);
    assert_eq!(client.closed(), Some(Event::Failed(ClientError::Closed { during: Step::Nonce })));

    // Without a key: Sha256 then FirmwareLength, in one write.
    let mut client = Client::new();
    client.sent(HELLO.len());
    client.receive(b"user2.bin\r\n");
    client.send_checked_image(77, &sha);
    let expected = format!("Sha256: {}\r\nFirmwareLength: 77\r\n", hex(&sha));
    assert_eq!(client.transmit(), Transmit::Bytes(expected.as_bytes()));
}
