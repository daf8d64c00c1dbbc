//! Property tests of the session: arbitrary bytes and mutated pushes under arbitrary
//! segmentation never panic, always answer in whole lines, and never touch the boot config
//! unless the image in the slot verifies.

mod common;

use common::*;
use ota_agent::boot::running_slot;
use ota_agent::flash::RamNor;
use ota_agent::image;
use ota_agent::layout::SlotId;
use ota_agent::protocol::MAX_REPLY_LINE;
use ota_agent::session::{Phase, Session, SessionConfig};
use ota_agent::writer::SECTOR;
use proptest::prelude::*;
use smoltcp::time::{Duration, Instant};

/// Feeds `input` cut at `cuts` (then whole), polling after each piece, advancing time a
/// little per piece. Returns the reply lines.
fn run(flash: &mut RamNor<Vec<u8>>, input: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut sector = [0u8; SECTOR];
    let mut session = Session::new(SessionConfig::new(LAYOUT), &mut sector);
    let mut now = Instant::from_secs(1);
    let running = running_slot(flash, LAYOUT);
    session.set_running(ota_agent::boot::Running::untracked(running));
    session.start(now, None);
    let mut lines = Vec::new();
    let mut rest = input;
    let mut sizes = cuts.iter().copied().chain(std::iter::repeat(usize::MAX));
    while !rest.is_empty() {
        let n = sizes.next().unwrap().clamp(1, rest.len());
        let mut piece = &rest[..n];
        rest = &rest[n..];
        loop {
            while let Some(line) = session.next_reply() {
                lines.push(line.as_bytes().to_vec());
            }
            if piece.is_empty() || session.phase() == Phase::Idle {
                break;
            }
            let taken = session.receive(now, piece, flash);
            assert!(taken <= piece.len());
            piece = &piece[taken..];
        }
        session.poll(now, flash);
        now += Duration::from_millis(10);
    }
    session.input_closed(now);
    session.poll(now, flash);
    while let Some(line) = session.next_reply() {
        lines.push(line.as_bytes().to_vec());
    }
    lines
}

fn check(input: &[u8], cuts: &[usize]) -> Result<(), TestCaseError> {
    let before = factory_flash(SlotId::User1);
    let mut flash = before.clone();
    let lines = run(&mut flash, input, cuts);
    for line in &lines {
        prop_assert!(line.len() <= MAX_REPLY_LINE);
        prop_assert!(line.ends_with(b"\r\n"));
        prop_assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
    }
    let switched = config_bytes(&flash) != config_bytes(&before);
    let succeeded = lines.last().is_some_and(|l| l == b"Flash upgrade success. Rebooting in 2s.\r\n");
    prop_assert_eq!(switched, succeeded, "replies {:?}", lines);
    let user1 = LAYOUT.slot(SlotId::User1);
    prop_assert!(
        slot_bytes(&flash, SlotId::User1, user1.capacity as usize)
            == slot_bytes(&before, SlotId::User1, user1.capacity as usize),
        "the running slot was written"
    );
    if switched {
        // Independently of the session: the slot holds an image that verifies.
        let slot = LAYOUT.slot(SlotId::User2);
        // The length the input announced: its digits, whatever ends the line (CR LF, or the
        // bare LF the session also accepts).
        let at =
            input.windows(16).position(|w| w == b"FirmwareLength: ").expect("a length was announced") + 16;
        let digits: Vec<u8> = input[at..].iter().copied().take_while(u8::is_ascii_digit).collect();
        let len: u32 = std::str::from_utf8(&digits).unwrap().parse().unwrap();
        let mut scratch = [0u8; 256];
        prop_assert!(image::verify_for_slot(&mut flash, slot, len, &mut scratch, None).is_ok());
    }
    Ok(())
}

fn valid_push() -> Vec<u8> {
    let image = image_for(SlotId::User2, 200, 77);
    let mut message = b"OTA\r\nGetNextFlash\r\n".to_vec();
    message.extend_from_slice(format!("FirmwareLength: {}\r\n", image.len()).as_bytes());
    message.extend_from_slice(&image);
    message
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Insert { at: usize, byte: u8 },
    Remove { at: usize },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Remove { at }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn apply(message: &mut Vec<u8>, mutation: &Mutation) {
    let len = message.len().max(1);
    match *mutation {
        Mutation::Flip { at, bit } => {
            if !message.is_empty() {
                message[at % len] ^= 1 << bit;
            }
        }
        Mutation::Insert { at, byte } => message.insert(at % (message.len() + 1), byte),
        Mutation::Remove { at } => {
            if !message.is_empty() {
                message.remove(at % len);
            }
        }
        Mutation::Truncate { at } => message.truncate(at % len),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_or_switch(
        input in proptest::collection::vec(any::<u8>(), 0..600),
        cuts in proptest::collection::vec(1usize..64, 0..40),
    ) {
        check(&input, &cuts)?;
    }

    #[test]
    fn arbitrary_header_text_never_panics_or_switches(
        input in "(OTA|GetNextFlash|FirmwareLength: [0-9]{0,12}|\r|\n|[ -~]{0,8}){0,12}",
        cuts in proptest::collection::vec(1usize..8, 0..40),
    ) {
        check(input.as_bytes(), &cuts)?;
    }

    #[test]
    fn mutated_pushes_switch_only_to_a_verified_image(
        mutations in proptest::collection::vec(mutation(), 0..3),
        cuts in proptest::collection::vec(1usize..600, 0..20),
    ) {
        let mut message = valid_push();
        for mutation in &mutations {
            apply(&mut message, mutation);
        }
        check(&message, &cuts)?;
    }
}

#[test]
fn the_unmutated_push_does_switch() {
    // The property above would hold vacuously if no push ever succeeded.
    let before = factory_flash(SlotId::User1);
    let mut flash = before.clone();
    let lines = run(&mut flash, &valid_push(), &[7, 300, 1]);
    assert_eq!(lines.last().unwrap(), b"Flash upgrade success. Rebooting in 2s.\r\n");
    assert_ne!(config_bytes(&flash), config_bytes(&before));
}
