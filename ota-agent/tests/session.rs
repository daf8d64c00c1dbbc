//! The sans-IO session against the protocol table: every row and every error path, with
//! exact reply bytes, under whole, one-byte and random segmentation, on a strict NOR model.

mod common;

use common::*;
use ota_agent::boot::running_slot;
use ota_agent::boot::{BootConfig, BootMode};
use ota_agent::flash::{NorFlash, RamNor};
use ota_agent::layout::{BOOT_CONFIG_OFFSET, SlotId};
use ota_agent::protocol::MAX_REQUEST_LINE;
use ota_agent::session::{DROP_LINGER, MAX_HEADER_BYTES, Phase, Session, SessionConfig};
use ota_agent::writer::SECTOR;
use smoltcp::time::{Duration, Instant};

const HELLO: &[u8] = b"OTA\r\nGetNextFlash\r\n";
const SUCCESS_REPLIES: &[u8] =
    b"user2.bin\r\nReady\r\nFlashing\r\nFlash upgrade success. Rebooting in 2s.\r\n";

/// A device: flash, a session and everything it answered, one line per write.
struct Device {
    session: Session<'static>,
    flash: RamNor<Vec<u8>>,
    now: Instant,
    writes: Vec<Vec<u8>>,
}

impl Device {
    fn new(flash: RamNor<Vec<u8>>) -> Device {
        Device::with_config(flash, SessionConfig::new(LAYOUT))
    }

    fn with_config(mut flash: RamNor<Vec<u8>>, config: SessionConfig) -> Device {
        let sector = Box::leak(Box::new([0u8; SECTOR]));
        let mut session = Session::new(config, sector);
        let now = Instant::from_secs(100);
        let running = running_slot(&mut flash, LAYOUT);
        session.set_running(ota_agent::boot::Running::untracked(running));
        session.start(now, None);
        Device { session, flash, now, writes: Vec::new() }
    }

    fn drain(&mut self) {
        while let Some(line) = self.session.next_reply() {
            self.writes.push(line.as_bytes().to_vec());
        }
    }

    /// What a driver does with one received segment.
    fn segment(&mut self, mut data: &[u8]) {
        loop {
            self.drain();
            if data.is_empty() || self.session.phase() == Phase::Idle {
                break;
            }
            let n = self.session.receive(self.now, data, &mut self.flash);
            data = &data[n..];
        }
        self.session.poll(self.now, &mut self.flash);
        self.drain();
    }

    fn send(&mut self, data: &[u8], segmentation: Segmentation) {
        for piece in segmentation.split(data) {
            self.segment(piece);
        }
        settle(&mut self.session, &mut self.now, &mut self.flash);
        self.drain();
    }

    fn replies(&self) -> Vec<u8> {
        self.writes.concat()
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.session.poll(self.now, &mut self.flash);
        self.drain();
    }
}

fn push_message(len: usize, image: &[u8]) -> Vec<u8> {
    let mut message = HELLO.to_vec();
    message.extend_from_slice(format!("FirmwareLength: {len}\r\n").as_bytes());
    message.extend_from_slice(image);
    message
}

/// Flash bytes outside the target slot's image: they must never change.
fn assert_only_slot_changed(
    before: &RamNor<Vec<u8>>,
    after: &RamNor<Vec<u8>>,
    slot: SlotId,
    written_len: usize,
) {
    let start = LAYOUT.slot(slot).offset as usize;
    let end = start + written_len.next_multiple_of(SECTOR);
    let (b, a) = (before.bytes(), after.bytes());
    assert!(a[..start] == b[..start], "flash before the slot changed");
    assert!(a[end..] == b[end..], "flash after the image's last sector changed");
}

#[test]
fn a_valid_image_is_written_verified_and_switched_under_any_segmentation() {
    let image = image_for(SlotId::User2, 9000, 1);
    let message = push_message(image.len(), &image);
    for segmentation in Segmentation::all() {
        let before = factory_flash(SlotId::User1);
        let mut device = Device::new(before.clone());
        device.send(&message, segmentation);
        assert_eq!(device.replies(), SUCCESS_REPLIES, "{segmentation:?}");
        assert_eq!(
            device.writes,
            [
                &b"user2.bin\r\n"[..],
                b"Ready\r\n",
                b"Flashing\r\n",
                b"Flash upgrade success. Rebooting in 2s.\r\n"
            ],
            "one line per write"
        );
        assert_eq!(slot_bytes(&device.flash, SlotId::User2, image.len()), &image[..]);
        let tail_end = image.len().next_multiple_of(SECTOR);
        let slot = LAYOUT.slot(SlotId::User2).offset as usize;
        assert!(
            device.flash.bytes()[slot + image.len()..slot + tail_end].iter().all(|&b| b == 0xFF),
            "last sector padded with 0xFF"
        );
        let config = BootConfig::parse(config_bytes(&device.flash)[..25].try_into().unwrap()).unwrap();
        assert_eq!(config, BootConfig::for_layout(LAYOUT, SlotId::User2));
        assert_eq!(device.session.reboot_at(), Some(device.now + Duration::from_secs(2)));
        assert_eq!(device.session.phase(), Phase::Closing);
        assert_only_slot_changed_except_config(&before, &device.flash, image.len());
    }
}

fn assert_only_slot_changed_except_config(
    before: &RamNor<Vec<u8>>,
    after: &RamNor<Vec<u8>>,
    image_len: usize,
) {
    let mut before = before.bytes().to_vec();
    let config = BOOT_CONFIG_OFFSET as usize;
    before[config..config + 28].copy_from_slice(&after.bytes()[config..config + 28]);
    assert_only_slot_changed(&RamNor::from_storage(before), after, SlotId::User2, image_len);
}

#[test]
fn a_header_line_split_anywhere_is_reassembled() {
    let image = image_for(SlotId::User2, 300, 2);
    let message = push_message(image.len(), &image);
    let headers_end = message.len() - image.len();
    for cut in 1..headers_end {
        let mut device = Device::new(factory_flash(SlotId::User1));
        device.segment(&message[..cut]);
        device.segment(&message[cut..]);
        settle(&mut device.session, &mut device.now, &mut device.flash);
        device.drain();
        assert_eq!(device.replies(), SUCCESS_REPLIES, "cut at {cut}");
    }
}

#[test]
fn a_device_running_user2_asks_for_user1_and_switches_back() {
    let image = image_for(SlotId::User1, 5000, 3);
    let mut message = HELLO.to_vec();
    message.extend_from_slice(format!("FirmwareLength: {}\r\n", image.len()).as_bytes());
    message.extend_from_slice(&image);
    let mut device = Device::new(factory_flash(SlotId::User2));
    device.send(&message, Segmentation::Random { seed: 9, max: 700 });
    assert_eq!(
        device.replies(),
        b"user1.bin\r\nReady\r\nFlashing\r\nFlash upgrade success. Rebooting in 2s.\r\n"
    );
    assert_eq!(slot_bytes(&device.flash, SlotId::User1, image.len()), &image[..]);
    assert_eq!(config_bytes(&device.flash), BootConfig::for_layout(LAYOUT, SlotId::User1).to_bytes());
}

#[test]
fn the_seed_clients_pacing_works() {
    // tcp_flash.py: one write of OTA+GetNextFlash, one recv; FirmwareLength, one recv; the
    // image with sendall, one recv.
    let image = image_for(SlotId::User2, 2000, 4);
    let mut device = Device::new(factory_flash(SlotId::User1));
    device.segment(b"OTA\r\nGetNextFlash\r\n");
    assert_eq!(device.writes, [b"user2.bin\r\n"]);
    device.segment(format!("FirmwareLength: {}\r\n", image.len()).as_bytes());
    assert_eq!(device.writes[1], b"Ready\r\n");
    device.send(&image, Segmentation::Random { seed: 4, max: 1460 });
    assert_eq!(device.writes[2..], [&b"Flashing\r\n"[..], b"Flash upgrade success. Rebooting in 2s.\r\n"]);
}

/// Each protocol error: the exact reply bytes, the session closing, the flash untouched.
#[test]
fn header_errors_answer_with_the_seed_reasons_and_touch_nothing() {
    let capacity = LAYOUT.slot(SlotId::User2).capacity;
    let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"O\r\n".to_vec(), b"ERR: Invalid protocol\r\n".to_vec()),
        (b"OTAX\r\n".to_vec(), b"ERR: Invalid protocol\r\n".to_vec()),
        (b"ota\r\n".to_vec(), b"ERR: Invalid protocol\r\n".to_vec()),
        (b"\r\n".to_vec(), b"ERR: Invalid protocol\r\n".to_vec()),
        (b"GetNextFlash\r\n".to_vec(), b"ERR: Invalid protocol\r\n".to_vec()),
        (b"OTA\r\nOTA\r\n".to_vec(), b"ERR: Invalid protocol\r\n".to_vec()),
        (b"OTA\r\nGetNextFlas\r\n".to_vec(), b"ERR: Invalid protocol\r\n".to_vec()),
        (b"OTA\r\nFirmwareLength: 10\r\n".to_vec(), b"ERR: Invalid protocol\r\n".to_vec()),
        (b"OTA\r\nGetNextFlash\r\nHello\r\n".to_vec(), b"user2.bin\r\nERR: Invalid protocol\r\n".to_vec()),
        (
            b"OTA\r\nGetNextFlash\r\nGetNextFlash\r\n".to_vec(),
            b"user2.bin\r\nERR: Invalid protocol\r\n".to_vec(),
        ),
        (
            b"OTA\r\nGetNextFlash\r\nFirmwareLength:10\r\n".to_vec(),
            b"user2.bin\r\nERR: Invalid protocol\r\n".to_vec(),
        ),
        (
            b"OTA\r\nGetNextFlash\r\nFirmwareLength: 0\r\n".to_vec(),
            b"user2.bin\r\nERR: Invalid firmware length\r\n".to_vec(),
        ),
        (
            b"OTA\r\nGetNextFlash\r\nFirmwareLength: \r\n".to_vec(),
            b"user2.bin\r\nERR: Invalid firmware length\r\n".to_vec(),
        ),
        (
            b"OTA\r\nGetNextFlash\r\nFirmwareLength: 12a\r\n".to_vec(),
            b"user2.bin\r\nERR: Invalid firmware length\r\n".to_vec(),
        ),
        (
            b"OTA\r\nGetNextFlash\r\nFirmwareLength: -5\r\n".to_vec(),
            b"user2.bin\r\nERR: Invalid firmware length\r\n".to_vec(),
        ),
        (
            b"OTA\r\nGetNextFlash\r\nFirmwareLength: 4294967296\r\n".to_vec(),
            b"user2.bin\r\nERR: Firmware length is too big\r\n".to_vec(),
        ),
        (
            format!("OTA\r\nGetNextFlash\r\nFirmwareLength: {}\r\n", capacity + 1).into_bytes(),
            b"user2.bin\r\nERR: Firmware length is too big\r\n".to_vec(),
        ),
        // One byte past the longest line (`Sha256: <64 hex>`).
        (
            format!("{}\r\n", "A".repeat(MAX_REQUEST_LINE + 1)).into_bytes(),
            b"ERR: Line too long\r\n".to_vec(),
        ),
        (
            format!("OTA\r\nGetNextFlash\r\nFirmwareLength: {}1\r\n", "0".repeat(MAX_REQUEST_LINE))
                .into_bytes(),
            b"user2.bin\r\nERR: Line too long\r\n".to_vec(),
        ),
    ];
    for (input, expected) in cases {
        for segmentation in
            [Segmentation::Whole, Segmentation::OneByte, Segmentation::Random { seed: 5, max: 4 }]
        {
            let before = factory_flash(SlotId::User1);
            let mut device = Device::new(before.clone());
            device.send(&input, segmentation);
            assert_eq!(
                device.replies().escape_ascii().to_string(),
                expected.escape_ascii().to_string(),
                "input {:?} {segmentation:?}",
                input.escape_ascii().to_string()
            );
            assert_eq!(device.session.phase(), Phase::Dropping);
            // More bytes after the error are discarded and answer nothing.
            device.send(b"OTA\r\nGetNextFlash\r\n", segmentation);
            assert_eq!(device.replies(), expected);
            assert!(
                device.flash.bytes() == before.bytes(),
                "flash touched for {:?}",
                input.escape_ascii().to_string()
            );
            assert_eq!(device.session.reboot_at(), None);
        }
    }
}

#[test]
fn the_full_slot_capacity_is_accepted() {
    let capacity = LAYOUT.slot(SlotId::User2).capacity;
    let mut device = Device::new(factory_flash(SlotId::User1));
    device.send(
        format!("OTA\r\nGetNextFlash\r\nFirmwareLength: {capacity}\r\n").as_bytes(),
        Segmentation::Whole,
    );
    assert_eq!(device.replies(), b"user2.bin\r\nReady\r\n");
    assert_eq!(device.session.progress(), Some((0, capacity)));
}

/// Sends `sent` as the image after announcing `announced` bytes; returns the device.
fn push_bytes(announced: usize, sent: &[u8], segmentation: Segmentation) -> (Device, RamNor<Vec<u8>>) {
    let before = factory_flash(SlotId::User1);
    let mut device = Device::new(before.clone());
    let mut message = HELLO.to_vec();
    message.extend_from_slice(format!("FirmwareLength: {announced}\r\n").as_bytes());
    message.extend_from_slice(sent);
    device.send(&message, segmentation);
    (device, before)
}

/// The reply after `Ready`, and a check that the config and the running slot are intact.
fn refusal(device: &Device, before: &RamNor<Vec<u8>>) -> String {
    let replies = device.replies();
    let after_ready = replies.strip_prefix(&b"user2.bin\r\nReady\r\n"[..]).expect("got to Ready");
    assert_eq!(config_bytes(&device.flash), config_bytes(before), "boot config changed");
    assert_eq!(
        slot_bytes(&device.flash, SlotId::User1, LAYOUT.slot(SlotId::User1).capacity as usize),
        slot_bytes(before, SlotId::User1, LAYOUT.slot(SlotId::User1).capacity as usize),
        "running slot changed"
    );
    assert_eq!(device.session.reboot_at(), None);
    assert_eq!(device.session.phase(), Phase::Dropping);
    String::from_utf8(after_ready.to_vec()).unwrap()
}

#[test]
fn a_corrupted_byte_anywhere_is_refused_and_nothing_switches() {
    let image = image_for(SlotId::User2, 700, 6);
    for at in 0..image.len() {
        let mut bad = image.clone();
        bad[at] ^= 1 << (at % 8);
        let (device, before) = push_bytes(bad.len(), &bad, Segmentation::Whole);
        let answer = refusal(&device, &before);
        assert!(answer.starts_with("Invalid\r\nERR: "), "byte {at}: {answer:?}");
        assert!(answer.ends_with("\r\n") && answer.matches("\r\n").count() == 2, "byte {at}: {answer:?}");
    }
}

#[test]
fn corrupted_code_reports_the_crc_and_a_bad_header_its_magic() {
    let image = image_for(SlotId::User2, 700, 7);
    let mut bad = image.clone();
    bad[0x100] ^= 0x80;
    let (device, before) = push_bytes(bad.len(), &bad, Segmentation::OneByte);
    let answer = refusal(&device, &before);
    assert!(answer.starts_with("Invalid\r\nERR: CRC mismatch (stored 0x"), "{answer:?}");

    let mut bad = image.clone();
    bad[0] = 0xE9;
    let (device, before) = push_bytes(bad.len(), &bad, Segmentation::Whole);
    assert_eq!(refusal(&device, &before), "Invalid\r\nERR: not a v2 image (first byte 0xe9, not 0xea)\r\n");
}

#[test]
fn an_image_linked_for_the_other_slot_is_refused() {
    let image = image_for(SlotId::User1, 3000, 8);
    for segmentation in Segmentation::all() {
        let (device, before) = push_bytes(image.len(), &image, segmentation);
        assert_eq!(
            refusal(&device, &before),
            "Invalid\r\nERR: image linked for 0x40202010, this slot needs 0x40282010\r\n"
        );
    }
}

#[test]
fn an_image_without_descriptor_is_refused() {
    let image = image_without_descriptor(3000, 9);
    let (device, before) = push_bytes(image.len(), &image, Segmentation::Random { seed: 3, max: 100 });
    assert_eq!(refusal(&device, &before), "Invalid\r\nERR: no tcpflash slot descriptor\r\n");
}

#[test]
fn a_truncated_image_is_refused() {
    let image = image_for(SlotId::User2, 3000, 10);
    for cut in [1, 4, 17, image.len() / 2, image.len() - 5] {
        let short = &image[..image.len() - cut];
        let (device, before) =
            push_bytes(short.len(), short, Segmentation::Random { seed: cut as u64, max: 999 });
        let answer = refusal(&device, &before);
        assert!(answer.starts_with("Invalid\r\nERR: "), "cut {cut}: {answer:?}");
    }
}

#[test]
fn a_client_that_stops_sending_early_gets_invalid_with_the_count() {
    let image = image_for(SlotId::User2, 3000, 11);
    let (mut device, before) = push_bytes(image.len(), &image[..1000], Segmentation::OneByte);
    device.session.input_closed(device.now);
    device.drain();
    assert_eq!(
        refusal(&device, &before),
        format!(
            "Invalid\r\nERR: Connection closed before the whole image arrived (1000 of {} bytes)\r\n",
            image.len()
        )
    );
}

#[test]
fn bytes_beyond_the_announced_length_are_refused_never_written() {
    let image = image_for(SlotId::User2, 3000, 12);
    let mut sent = image.clone();
    sent.extend_from_slice(b"EXTRA");
    // Arriving with the image: refused before anything switches.
    let (device, before) = push_bytes(image.len(), &sent, Segmentation::Whole);
    assert_eq!(refusal(&device, &before), "Invalid\r\nERR: More bytes than FirmwareLength\r\n");
    let slot = LAYOUT.slot(SlotId::User2).offset as usize;
    let end = slot + image.len().next_multiple_of(SECTOR);
    let tail = &device.flash.bytes()[slot + image.len()..end];
    assert!(
        tail == &before.bytes()[slot + image.len()..end] || tail.iter().all(|&b| b == 0xFF),
        "extra bytes written"
    );

    // Arriving in later segments, after the image was verified: refused before the commit,
    // whichever segment brings them; nothing switched, nothing written past the image.
    let (device, before) = push_bytes(image.len(), &sent, Segmentation::OneByte);
    assert_eq!(
        String::from_utf8(device.replies()).unwrap(),
        "user2.bin\r\nReady\r\nFlashing\r\nERR: More bytes than FirmwareLength\r\n"
    );
    assert_eq!(config_bytes(&device.flash), config_bytes(&before), "nothing switched");
    assert!(device.flash.bytes()[slot + image.len()..end].iter().all(|&b| b == 0xFF));

    // Arriving after the success line: the update stands, the bytes are discarded.
    let mut device = Device::new(before.clone());
    device.send(&push_message(image.len(), &image), Segmentation::Whole);
    assert_eq!(device.replies(), SUCCESS_REPLIES);
    device.send(b"EXTRA", Segmentation::Whole);
    assert_eq!(device.replies(), SUCCESS_REPLIES, "nothing more said");
    assert_eq!(device.session.phase(), Phase::Closing);
    assert_eq!(config_bytes(&device.flash), BootConfig::for_layout(LAYOUT, SlotId::User2).to_bytes());
}

/// `push_message` with the image's SHA-256 declared, as `cargo tcpflash` sends it.
fn checked_push_message(image: &[u8]) -> Vec<u8> {
    let digest: String = ota_agent::auth::sha256(image).iter().map(|b| format!("{b:02x}")).collect();
    let mut message = HELLO.to_vec();
    message.extend_from_slice(format!("Sha256: {digest}\r\nFirmwareLength: {}\r\n", image.len()).as_bytes());
    message.extend_from_slice(image);
    message
}

#[test]
fn a_client_that_declared_the_sha256_gets_its_commit_without_the_grace() {
    let image = image_for(SlotId::User2, 3000, 21);
    for segmentation in Segmentation::all() {
        let before = factory_flash(SlotId::User1);
        let mut device = Device::new(before.clone());
        // No `settle`: no time passes after the last byte.
        for piece in segmentation.split(&checked_push_message(&image)) {
            device.segment(piece);
        }
        assert_eq!(device.replies(), SUCCESS_REPLIES, "{segmentation:?}");
        assert_eq!(device.session.phase(), Phase::Closing);
        assert_eq!(config_bytes(&device.flash), BootConfig::for_layout(LAYOUT, SlotId::User2).to_bytes());
    }

    // Without the digest the same push waits the grace for stray bytes.
    let mut device = Device::new(factory_flash(SlotId::User1));
    device.segment(&push_message(image.len(), &image));
    assert_eq!(String::from_utf8(device.replies()).unwrap(), "user2.bin\r\nReady\r\nFlashing\r\n");
    assert_eq!(device.session.poll_timeout(), Some(device.now + ota_agent::session::COMMIT_GRACE));

    // A stray byte that comes with the image still fails the checked push: nothing switches.
    let before = factory_flash(SlotId::User1);
    let mut device = Device::new(before.clone());
    let mut sent = checked_push_message(&image);
    sent.push(b'!');
    device.send(&sent, Segmentation::Whole);
    assert_eq!(refusal(&device, &before), "Invalid\r\nERR: More bytes than FirmwareLength\r\n");
}

#[test]
fn after_the_commit_the_reboot_comes_as_soon_as_the_client_is_done() {
    use ota_agent::session::CLOSE_GRACE;
    let image = image_for(SlotId::User2, 3000, 22);
    let committed = || {
        let mut device = Device::new(factory_flash(SlotId::User1));
        device.segment(&checked_push_message(&image));
        assert_eq!(device.replies(), SUCCESS_REPLIES);
        assert_eq!(
            device.session.reboot_at(),
            Some(device.now + Duration::from_secs(2)),
            "2 s at the latest"
        );
        device
    };
    // The line acknowledged, the client's side still open: our close gets its moment.
    let mut device = committed();
    let acked = device.now + Duration::from_millis(7);
    device.session.delivered(acked);
    assert_eq!(device.session.reboot_at(), Some(acked + CLOSE_GRACE));
    // Then the client closes too: at once.
    let closed = acked + Duration::from_millis(3);
    device.session.input_closed(closed);
    device.session.delivered(closed);
    assert_eq!(device.session.reboot_at(), Some(closed));

    // The seed's client closes after `Flashing`, and its socket resets the success line: the
    // connection is gone, so the reboot is due at once, not 2 s later.
    let mut device = Device::new(factory_flash(SlotId::User1));
    device.segment(&push_message(image.len(), &image));
    device.session.input_closed(device.now);
    device.session.poll(device.now, &mut device.flash);
    device.drain();
    assert_eq!(device.replies(), SUCCESS_REPLIES);
    let commit = device.now;
    device.session.reset();
    assert_eq!(device.session.reboot_at(), Some(commit));

    // Before the commit, a gone connection schedules nothing.
    let mut device = Device::new(factory_flash(SlotId::User1));
    device.segment(&push_message(image.len(), &image));
    device.session.reset();
    assert_eq!(device.session.reboot_at(), None);
}

#[test]
fn the_idle_timeout_ends_a_stalled_session_at_every_step() {
    let stalls: [(&[u8], &[u8]); 5] = [
        (b"", b"ERR: Idle timeout\r\n"),
        (b"OT", b"ERR: Idle timeout\r\n"),
        (b"OTA\r\n", b"ERR: Idle timeout\r\n"),
        (b"OTA\r\nGetNextFlash\r\n", b"user2.bin\r\nERR: Idle timeout\r\n"),
        (b"OTA\r\nGetNextFlash\r\nFirmwareLength: 3", b"user2.bin\r\nERR: Idle timeout\r\n"),
    ];
    // A header timeout longer than the idle timeout, so silence is what ends these.
    let config = SessionConfig { header_timeout: Duration::from_secs(60), ..SessionConfig::new(LAYOUT) };
    for (input, expected) in stalls {
        let before = factory_flash(SlotId::User1);
        let mut device = Device::with_config(before.clone(), config);
        device.send(input, Segmentation::Whole);
        device.advance(Duration::from_millis(29_999));
        assert_eq!(device.session.phase(), Phase::Open);
        device.advance(Duration::from_millis(1));
        assert_eq!(device.replies(), expected, "{:?}", input.escape_ascii().to_string());
        assert_eq!(device.session.phase(), Phase::Dropping);
        assert!(device.flash.bytes() == before.bytes());
    }

    // In the middle of the image; each piece restarts the clock. (A large image, so its
    // minimum pace leaves room for the stall.)
    let image = image_for(SlotId::User2, 60_000, 13);
    let mut message = HELLO.to_vec();
    message.extend_from_slice(format!("FirmwareLength: {}\r\n", image.len()).as_bytes());
    message.extend_from_slice(&image[..2000]);
    let before = factory_flash(SlotId::User1);
    let mut device = Device::new(before.clone());
    for piece in message.chunks(100) {
        device.segment(piece);
        device.advance(Duration::from_millis(500));
    }
    device.advance(Duration::from_secs(29));
    assert_eq!(device.session.phase(), Phase::Open);
    device.advance(Duration::from_millis(500));
    assert_eq!(refusal(&device, &before), "Invalid\r\nERR: Idle timeout\r\n");

    // The connection is dropped once the line is out, at the latest a moment later: the
    // device does not wait for the client to close.
    device.advance(DROP_LINGER - Duration::from_millis(1));
    assert_eq!(device.session.phase(), Phase::Dropping);
    device.advance(Duration::from_millis(1));
    assert_eq!(device.session.phase(), Phase::Abort);
}

#[test]
fn a_client_that_trickles_its_header_lines_is_dropped_at_the_header_timeout() {
    // One byte every 5 s keeps the idle timeout away but not the header deadline.
    let before = factory_flash(SlotId::User1);
    let mut device = Device::new(before.clone());
    for &byte in b"OTA\r\nGetNextFlash\r\nFirmw" {
        if device.session.phase() != Phase::Open {
            break;
        }
        device.send(&[byte], Segmentation::Whole);
        device.advance(Duration::from_secs(2));
    }
    assert_eq!(String::from_utf8(device.replies()).unwrap(), "ERR: Header lines too slow\r\n");
    assert_eq!(device.now, Instant::from_secs(100 + 10), "exactly at the deadline");
    assert_eq!(device.session.phase(), Phase::Dropping);
    assert!(device.flash.bytes() == before.bytes());
}

#[test]
fn header_lines_beyond_the_byte_limit_are_refused() {
    let before = factory_flash(SlotId::User1);
    let mut device = Device::new(before.clone());
    // Well-formed lines, none of them the one that ends the headers.
    let mut input = b"OTA\r\nGetNextFlash\r\n".to_vec();
    while input.len() <= MAX_HEADER_BYTES as usize {
        input.extend_from_slice(b"GetBootState\r\n");
    }
    device.send(&input, Segmentation::Whole);
    let replies = String::from_utf8(device.replies()).unwrap();
    assert!(replies.ends_with("ERR: Too many header bytes\r\n"), "{replies}");
    assert_eq!(device.session.phase(), Phase::Dropping);
    assert!(device.flash.bytes() == before.bytes());
}

#[test]
fn an_image_slower_than_the_minimum_pace_is_refused() {
    // 40 KB may take 30 s of grace plus 40 s; sent at 0.5 KB/s it falls behind.
    let image = image_for(SlotId::User2, 40_000, 14);
    let before = factory_flash(SlotId::User1);
    let mut device = Device::new(before.clone());
    device.send(&push_message(image.len(), &[]), Segmentation::Whole);
    let ready_at = device.now;
    let allowed = Duration::from_secs(30 + image.len() as u64 / 1024);
    for piece in image.chunks(512) {
        device.send(piece, Segmentation::Whole);
        device.advance(Duration::from_secs(1));
        if device.session.phase() != Phase::Open {
            break;
        }
    }
    assert_eq!(refusal(&device, &before), "Invalid\r\nERR: Image transfer too slow\r\n");
    assert!(device.now >= ready_at + allowed && device.now < ready_at + allowed + Duration::from_secs(2));
}

#[test]
fn the_idle_timeout_is_configurable() {
    let config = SessionConfig { idle_timeout: Duration::from_secs(5), ..SessionConfig::new(LAYOUT) };
    let mut device = Device::with_config(factory_flash(SlotId::User1), config);
    device.send(b"OTA\r\n", Segmentation::Whole);
    device.advance(Duration::from_millis(4_999));
    assert!(device.replies().is_empty());
    device.advance(Duration::from_millis(1));
    assert_eq!(device.replies(), b"ERR: Idle timeout\r\n");
}

#[test]
fn after_success_a_new_client_hears_that_a_reboot_is_pending() {
    let image = image_for(SlotId::User2, 1000, 14);
    let mut device = Device::new(factory_flash(SlotId::User1));
    device.send(&push_message(image.len(), &image), Segmentation::Whole);
    assert_eq!(device.replies(), SUCCESS_REPLIES);
    let config = config_bytes(&device.flash);
    device.session.reset();
    assert_eq!(device.session.phase(), Phase::Idle);
    device.writes.clear();
    let now = device.now;
    device.session.set_running(ota_agent::boot::Running::untracked(Some(SlotId::User1)));
    device.session.start(now, None);
    device.send(HELLO, Segmentation::Whole);
    assert_eq!(device.replies(), b"ERR: An update is done, reboot pending\r\n");
    assert_eq!(config_bytes(&device.flash), config);
}

#[test]
fn a_session_reset_mid_transfer_leaves_the_config_alone_and_the_next_one_works() {
    let image = image_for(SlotId::User2, 9000, 15);
    let message = push_message(image.len(), &image);
    let before = factory_flash(SlotId::User1);
    let mut device = Device::new(before.clone());
    device.send(&message[..message.len() - 100], Segmentation::Whole);
    device.session.reset();
    assert_eq!(config_bytes(&device.flash), config_bytes(&before));
    // Even with every byte in, a reset before `poll` abandons the image.
    let now = device.now;
    device.session.set_running(ota_agent::boot::Running::untracked(Some(SlotId::User1)));
    device.session.start(now, None);
    for byte in &message {
        let _ = device.session.receive(now, std::slice::from_ref(byte), &mut device.flash);
        device.drain();
    }
    device.session.reset();
    device.session.poll(now, &mut device.flash);
    assert_eq!(config_bytes(&device.flash), config_bytes(&before));

    device.writes.clear();
    device.session.set_running(ota_agent::boot::Running::untracked(Some(SlotId::User1)));
    device.session.start(now, None);
    device.send(&message, Segmentation::Random { seed: 15, max: 3000 });
    assert_eq!(device.replies(), SUCCESS_REPLIES);
}

#[test]
fn a_boot_config_naming_an_unknown_rom_refuses_the_update() {
    let mut flash = erased_flash();
    let mut config = BootConfig::for_layout(LAYOUT, SlotId::User1);
    config.roms[0] = 0x40_0000;
    flash.write(BOOT_CONFIG_OFFSET, &config.to_bytes()).unwrap();
    assert_eq!(running_slot(&mut flash, LAYOUT), None);
    let mut device = Device::new(flash);
    device.send(HELLO, Segmentation::Whole);
    assert_eq!(device.replies(), b"ERR: Boot config names no slot of this layout\r\n");
}

#[test]
fn the_running_slot_comes_from_the_boot_config() {
    assert_eq!(running_slot(&mut factory_flash(SlotId::User1), LAYOUT), Some(SlotId::User1));
    assert_eq!(running_slot(&mut factory_flash(SlotId::User2), LAYOUT), Some(SlotId::User2));
    // No valid config: rBoot writes its default and boots ROM 0.
    assert_eq!(running_slot(&mut erased_flash(), LAYOUT), Some(SlotId::User1));
}

#[test]
fn switching_preserves_every_other_config_field_and_the_rest_of_the_sector() {
    let mut flash = factory_flash(SlotId::User1);
    flash.erase(BOOT_CONFIG_OFFSET, BOOT_CONFIG_OFFSET + SECTOR as u32).unwrap();
    let mut config = BootConfig::for_layout(LAYOUT, SlotId::User1);
    config.mode = BootMode::GpioRom;
    config.gpio_rom = 1;
    config.unused = [7, 9];
    flash.write(BOOT_CONFIG_OFFSET, &config.to_bytes()).unwrap();
    let other: Vec<u8> = (0..256).map(|i| i as u8).collect();
    flash.write(BOOT_CONFIG_OFFSET + 0x800, &other).unwrap();

    let image = image_for(SlotId::User2, 1000, 16);
    let mut device = Device::new(flash);
    device.send(&push_message(image.len(), &image), Segmentation::Whole);
    assert_eq!(device.replies(), SUCCESS_REPLIES);
    let stored = config_bytes(&device.flash);
    let parsed = BootConfig::parse(stored[..25].try_into().unwrap()).expect("checksum right");
    let mut expected = config;
    expected.current_rom = 1;
    assert_eq!(parsed, expected);
    assert_eq!(stored, expected.to_bytes());
    let at = BOOT_CONFIG_OFFSET as usize + 0x800;
    assert_eq!(&device.flash.bytes()[at..at + 256], &other[..], "rest of the sector preserved");
}

#[test]
fn an_invalid_boot_config_is_replaced_by_rboots_default_pointing_at_the_new_slot() {
    let mut flash = factory_flash(SlotId::User1);
    flash.erase(BOOT_CONFIG_OFFSET, BOOT_CONFIG_OFFSET + SECTOR as u32).unwrap();
    let image = image_for(SlotId::User2, 1000, 17);
    let mut device = Device::new(flash);
    device.send(&push_message(image.len(), &image), Segmentation::Whole);
    assert_eq!(device.replies(), SUCCESS_REPLIES);
    assert_eq!(config_bytes(&device.flash), BootConfig::for_layout(LAYOUT, SlotId::User2).to_bytes());
}

#[test]
fn a_flash_failure_at_any_operation_never_claims_success_or_leaves_a_wrong_switch() {
    let image = image_for(SlotId::User2, 9000, 18);
    let message = push_message(image.len(), &image);
    let mut dry = Device::new(factory_flash(SlotId::User1));
    let start = dry.flash.ops();
    dry.send(&message, Segmentation::Whole);
    let total = dry.flash.ops() - start;
    assert!(total > 5);
    let old_config = config_bytes(&factory_flash(SlotId::User1));
    let new_config = BootConfig::for_layout(LAYOUT, SlotId::User2).to_bytes().to_vec();
    for cut in 0..total {
        let mut device = Device::new(factory_flash(SlotId::User1));
        let at = device.flash.ops() + cut;
        device.flash.cut_power_at(at);
        device.send(&message, Segmentation::Random { seed: cut, max: 2000 });
        let answer = String::from_utf8(device.replies()).unwrap();
        // A failure before the image is verified, or while the switch is written after it.
        assert!(
            answer.starts_with("user2.bin\r\nReady\r\nInvalid\r\nERR: ")
                || answer.starts_with("user2.bin\r\nReady\r\nFlashing\r\nERR: boot config "),
            "cut {cut}: {answer:?}"
        );
        assert!(answer.ends_with("\r\n") && answer.matches("\r\n").count() == 4, "cut {cut}: {answer:?}");
        assert_eq!(device.session.reboot_at(), None);
        let config = config_bytes(&device.flash);
        // Untouched; or torn while it was rewritten (then rBoot falls back to its default,
        // which boots the old user1); or, when the write failed after the config bytes got
        // in, switched to the image that was verified.
        let torn = BootConfig::parse(config[..25].try_into().unwrap()).is_err();
        let switched_to_verified = config == new_config
            && slot_bytes(&device.flash, SlotId::User2, image.len()) == &image[..]
            && answer.contains("ERR: boot config");
        assert!(config == old_config || torn || switched_to_verified, "cut {cut}: {answer:?}");
    }
}

#[test]
fn flash_errors_name_the_operation() {
    let image = image_for(SlotId::User2, 9000, 19);
    let mut device = Device::new(factory_flash(SlotId::User1));
    let first_op = device.flash.ops();
    device.flash.cut_power_at(first_op);
    device.send(&push_message(image.len(), &image), Segmentation::Whole);
    assert_eq!(
        String::from_utf8(device.replies()).unwrap(),
        "user2.bin\r\nReady\r\nInvalid\r\nERR: flash erase at 0x82000 failed: An implementation specific error occurred\r\n"
    );
}

/// On an SDK map the slot switch is the SDK's upgrade flag, set by the platform at reboot:
/// the session writes the image and nothing else. Writing rBoot's config at 0x1000 there
/// would land in user1, the running firmware.
#[test]
fn on_an_sdk_map_only_the_slot_changes_and_the_reboot_is_scheduled() {
    let map = ota_agent::layout::sdk::SdkMap::by_name("sdk-1MB").unwrap();
    let layout = &map.layout;
    let user2 = layout.slot(SlotId::User2);
    let image = image_linked_at(user2.irom_link_addr(), 3000, 5);
    let mut before = RamNor::from_storage(vec![0xFF; layout.flash_size as usize]);
    before.write(0x1000, &[0xE9; 64]).unwrap();
    let mut device = Device::with_config(before.clone(), SessionConfig::new(layout));
    device.session.set_running(ota_agent::boot::Running::untracked(Some(SlotId::User1)));
    device.session.start(device.now, None);
    device.send(&push_message(image.len(), &image), Segmentation::Whole);
    assert_eq!(device.replies(), SUCCESS_REPLIES);
    assert!(device.session.reboot_at().is_some(), "the reboot is scheduled");
    let (b, a) = (before.bytes(), device.flash.bytes());
    let start = user2.offset as usize;
    assert!(a[..start] == b[..start], "nothing before user2 changed (user1 at 0x1000 included)");
    assert_eq!(&a[start..start + image.len()], &image[..]);
    assert!(a[start + image.len()..].iter().all(|&byte| byte == 0xFF));
}
