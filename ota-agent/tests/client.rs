//! The sans-IO client: the exact bytes it sends, every event and failure it reports, and a
//! whole push against the real session in memory, under several segmentations.

mod common;

use common::*;
use ota_agent::boot::running_slot;
use ota_agent::client::{Client, ClientError, Event, Step, Transmit};
use ota_agent::layout::SlotId;
use ota_agent::session::{Phase, Session, SessionConfig};
use ota_agent::writer::SECTOR;
use smoltcp::time::Instant;

/// Feeds all of `data`, collecting events.
fn feed(client: &mut Client, mut data: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    while !data.is_empty() {
        let (n, event) = client.receive(data);
        events.extend(event);
        data = &data[n..];
        assert!(n > 0 || client.is_done());
        if n == 0 {
            break;
        }
    }
    events
}

#[test]
fn sends_exactly_what_the_seed_sends() {
    let mut client = Client::new();
    assert_eq!(client.transmit(), Transmit::Bytes(b"OTA\r\nGetNextFlash\r\n"));
    client.sent(5);
    assert_eq!(client.transmit(), Transmit::Bytes(b"GetNextFlash\r\n"));
    client.sent(14);
    assert_eq!(client.transmit(), Transmit::Nothing);

    assert_eq!(feed(&mut client, b"user2.bin\r\n"), [Event::NextSlot(SlotId::User2)]);
    assert_eq!(client.slot(), Some(SlotId::User2));
    assert_eq!(client.transmit(), Transmit::Nothing, "nothing until the image is chosen");
    client.send_image(1000);
    assert_eq!(client.transmit(), Transmit::Bytes(b"FirmwareLength: 1000\r\n"));
    client.sent(22);
    assert_eq!(client.transmit(), Transmit::Nothing, "no image before Ready");

    assert_eq!(feed(&mut client, b"Rea"), []);
    assert_eq!(feed(&mut client, b"dy\r\n"), [Event::Ready]);
    assert_eq!(client.transmit(), Transmit::Image { offset: 0, len: 1000 });
    client.sent(300);
    assert_eq!(client.transmit(), Transmit::Image { offset: 300, len: 700 });
    client.sent(700);
    assert_eq!(client.transmit(), Transmit::Nothing);
    assert_eq!(client.progress(), (1000, 1000));

    let (n, event) = client.receive(b"Flashing\r\nFlash upgrade success. Rebooting in 2s.\r\n");
    assert_eq!((n, event), (10, Some(Event::Flashing)));
    assert!(!client.is_done());
    assert_eq!(feed(&mut client, b"Flash upgrade success. Rebooting in 2s.\r\n"), [Event::Success]);
    assert!(client.is_done());
    assert_eq!(client.closed(), None, "closing after success is no failure");
}

fn at_image_phase() -> Client {
    let mut client = Client::new();
    client.sent(19);
    feed(&mut client, b"user1.bin\r\n");
    client.send_image(64);
    client.sent(20);
    feed(&mut client, b"Ready\r\n");
    client
}

#[test]
fn a_refused_image_reports_the_reason() {
    let mut client = at_image_phase();
    client.sent(64);
    let events = feed(&mut client, b"Invalid\r\nERR: CRC mismatch (stored 0x1, computed 0x2)\r\n");
    let [Event::Invalid, Event::Failed(ClientError::ImageRejected(text))] = events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(text.to_string(), "CRC mismatch (stored 0x1, computed 0x2)");
    assert_eq!(
        ClientError::ImageRejected(text).to_string(),
        "the device refused the image: CRC mismatch (stored 0x1, computed 0x2)"
    );
    assert!(client.is_done());
}

#[test]
fn a_refusal_during_the_image_stops_the_sending() {
    let mut client = at_image_phase();
    client.sent(10);
    assert_eq!(feed(&mut client, b"Invalid\r\n"), [Event::Invalid]);
    assert_eq!(client.transmit(), Transmit::Nothing);
    // The device closes without a reason.
    let Some(Event::Failed(ClientError::ImageRejected(text))) = client.closed() else { panic!() };
    assert_eq!(text.as_bytes(), b"");
    assert_eq!(ClientError::ImageRejected(text).to_string(), "the device refused the image");
}

#[test]
fn device_errors_before_the_image_are_reported_verbatim() {
    let mut client = Client::new();
    let events = feed(&mut client, b"ERR: Connection Already Exists\r\n");
    let [Event::Failed(ClientError::Device(text))] = events[..] else { panic!("{events:?}") };
    assert_eq!(text.to_string(), "Connection Already Exists");
    assert_eq!(ClientError::Device(text).to_string(), "the device answered: ERR: Connection Already Exists");
    assert!(client.is_done());
    assert_eq!(feed(&mut client, b"more\r\n"), [], "nothing after the end");

    let mut client = Client::new();
    feed(&mut client, b"user2.bin\r\n");
    client.send_image(u32::MAX);
    let events = feed(&mut client, b"ERR: Firmware length is too big\r\n");
    let [Event::Failed(ClientError::Device(text))] = events[..] else { panic!("{events:?}") };
    assert_eq!(text.to_string(), "Firmware length is too big");
}

#[test]
fn unexpected_lines_name_the_step() {
    let cases: [(&[u8], Step); 4] = [
        (b"user3.bin\r\n", Step::NextSlot),
        (b"Ready\r\n", Step::NextSlot),
        (b"Flashing\r\n", Step::NextSlot),
        (b"\xff\xfe\r\n", Step::NextSlot),
    ];
    for (line, step) in cases {
        let mut client = Client::new();
        let events = feed(&mut client, line);
        let [Event::Failed(ClientError::Unexpected { line: text, during })] = events[..] else {
            panic!("{events:?}")
        };
        assert_eq!(during, step);
        assert_eq!(text.as_bytes(), &line[..line.len() - 2]);
    }
    // A success line without `Flashing` first is not success.
    let mut client = at_image_phase();
    client.sent(64);
    let events = feed(&mut client, b"Flash upgrade success. Rebooting in 2s.\r\n");
    let [Event::Failed(ClientError::Unexpected { during: Step::Verdict, .. })] = events[..] else {
        panic!("{events:?}")
    };
    // Ready before the length was sent.
    let mut client = Client::new();
    feed(&mut client, b"user2.bin\r\n");
    let events = feed(&mut client, b"Ready\r\n");
    let [Event::Failed(error @ ClientError::Unexpected { during: Step::ChooseImage, .. })] = events[..]
    else {
        panic!("{events:?}")
    };
    assert_eq!(error.to_string(), "unexpected reply \"Ready\" while choosing the image");
}

#[test]
fn a_close_or_a_runaway_line_is_a_failure_at_its_step() {
    let mut client = at_image_phase();
    client.sent(30);
    let Some(Event::Failed(error)) = client.closed() else { panic!() };
    assert_eq!(error, ClientError::Closed { during: Step::Image });
    assert_eq!(error.to_string(), "the device closed the connection while sending the image");

    let mut client = Client::new();
    let events = feed(&mut client, &[b'x'; 300]);
    assert_eq!(events, [Event::Failed(ClientError::LineTooLong { during: Step::NextSlot })]);
}

/// Client and session wired together in memory, the transport cutting bytes as told.
fn push_in_memory(
    images: &[Vec<u8>; 2],
    running: SlotId,
    segmentation: Segmentation,
) -> (Vec<Event>, Vec<u8>) {
    let mut flash = factory_flash(running);
    let mut sector = [0u8; SECTOR];
    let mut session = Session::new(SessionConfig::new(LAYOUT), &mut sector);
    let mut now = Instant::from_secs(1);
    let running = running_slot(&mut flash, LAYOUT);
    session.set_running(ota_agent::boot::Running::untracked(running));
    session.start(now, None);
    let mut client = Client::new();
    let mut events = Vec::new();
    let mut to_host = Vec::new();
    for _ in 0..100_000 {
        // Host -> device.
        let outgoing: Vec<u8> = match client.transmit() {
            Transmit::Bytes(bytes) => bytes.to_vec(),
            Transmit::Image { offset, len } => {
                let image = &images[client.slot().unwrap().index()];
                image[offset as usize..(offset + len) as usize].to_vec()
            }
            Transmit::Nothing => Vec::new(),
        };
        client.sent(outgoing.len());
        for piece in segmentation.split(&outgoing) {
            let mut piece = piece;
            while !piece.is_empty() && session.phase() == Phase::Open {
                while let Some(line) = session.next_reply() {
                    to_host.extend_from_slice(line.as_bytes());
                }
                let n = session.receive(now, piece, &mut flash);
                piece = &piece[n..];
            }
            session.poll(now, &mut flash);
        }
        settle(&mut session, &mut now, &mut flash);
        while let Some(line) = session.next_reply() {
            to_host.extend_from_slice(line.as_bytes());
        }
        // Device -> host.
        let incoming = std::mem::take(&mut to_host);
        for piece in segmentation.split(&incoming) {
            for event in feed(&mut client, piece) {
                if let Event::NextSlot(slot) = event {
                    client.send_image(images[slot.index()].len() as u32);
                }
                events.push(event);
            }
        }
        if client.is_done() {
            return (events, config_bytes(&flash));
        }
    }
    panic!("no end: {events:?}");
}

#[test]
fn client_and_session_agree_under_any_segmentation() {
    let images = [image_for(SlotId::User1, 6000, 1), image_for(SlotId::User2, 7000, 2)];
    for segmentation in Segmentation::all() {
        for running in SlotId::ALL {
            let (events, config) = push_in_memory(&images, running, segmentation);
            assert_eq!(
                events,
                [Event::NextSlot(running.other()), Event::Ready, Event::Flashing, Event::Success],
                "{segmentation:?}"
            );
            assert_eq!(config, ota_agent::boot::BootConfig::for_layout(LAYOUT, running.other()).to_bytes());
        }
    }
    // Both images linked for user1: the device running user1 refuses.
    let wrong = [images[0].clone(), images[0].clone()];
    let (events, _) = push_in_memory(&wrong, SlotId::User1, Segmentation::OneByte);
    let [.., Event::Invalid, Event::Failed(ClientError::ImageRejected(text))] = events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(text.to_string(), "image linked for 0x40202010, this slot needs 0x40282010");
}
