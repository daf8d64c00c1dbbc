//! The session fed arbitrary bytes in arbitrary pieces, on a factory-installed flash: it
//! must never panic, answer only whole lines, and never switch to a slot that does not hold
//! a verified image. The first byte of the input sets the segmentation.
#![no_main]

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{LAYOUT, factory_flash};
use libfuzzer_sys::fuzz_target;
use ota_agent::image;
use ota_agent::layout::SlotId;
use ota_agent::protocol::MAX_REPLY_LINE;
use ota_agent::boot::running_slot;
use ota_agent::session::{Phase, Session, SessionConfig};
use ota_agent::writer::SECTOR;
use smoltcp::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let Some((&piece, input)) = data.split_first() else { return };
    let piece = usize::from(piece).max(1);
    let mut flash = factory_flash(SlotId::User1);
    let mut sector = [0u8; SECTOR];
    let mut session = Session::new(SessionConfig::new(LAYOUT), &mut sector);
    let mut now = Instant::from_secs(1);
    session.set_running(ota_agent::boot::Running::untracked(Some(SlotId::User1)));
    session.start(now, None);
    let mut lines = Vec::new();
    for mut chunk in input.chunks(piece) {
        while !chunk.is_empty() && session.phase() != Phase::Idle {
            let taken = session.receive(now, chunk, &mut flash);
            assert!(taken <= chunk.len());
            chunk = &chunk[taken..];
            while let Some(line) = session.next_reply() {
                lines.push(line.as_bytes().to_vec());
            }
            if taken == 0 {
                break;
            }
        }
        session.poll(now, &mut flash);
        now += Duration::from_millis(10);
    }
    session.input_closed(now);
    session.poll(now, &mut flash);
    while let Some(line) = session.next_reply() {
        lines.push(line.as_bytes().to_vec());
    }
    for line in &lines {
        assert!(line.len() <= MAX_REPLY_LINE && line.ends_with(b"\r\n"), "{line:?}");
    }
    if running_slot(&mut flash, LAYOUT) == Some(SlotId::User2) {
        // The switch happened: the slot must verify on its own at an announced length.
        let slot = LAYOUT.slot(SlotId::User2);
        let mut scratch = [0u8; 256];
        let verified = announced_lengths(input)
            .any(|len| image::verify_for_slot(&mut flash, slot, len, &mut scratch, None).is_ok());
        assert!(verified, "switched to an unverified image");
        assert!(lines.iter().any(|l| l.starts_with(b"Flash upgrade success")), "switched silently");
    }
});

/// Every `FirmwareLength: N` the input announces.
fn announced_lengths(input: &[u8]) -> impl Iterator<Item = u32> + '_ {
    const KEY: &[u8] = b"FirmwareLength: ";
    input.windows(KEY.len()).enumerate().filter(|(_, w)| *w == KEY).filter_map(|(at, _)| {
        let digits: Vec<u8> =
            input[at + KEY.len()..].iter().copied().take_while(u8::is_ascii_digit).collect();
        std::str::from_utf8(&digits).ok()?.parse().ok()
    })
}
