//! The mDNS responder fed arbitrary packets: the first two input bytes are the source port
//! (little-endian), the rest the UDP payload. It must never panic, and reply only to a
//! query (QR clear, opcode 0) with a well-formed response that has answers, fits the cap,
//! and goes by unicast exactly when the source port is not 5353.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_agent::descriptor::Descriptor;
use ota_agent::layout::SlotId;
use ota_agent::mdns::{Destination, MAX_REPLY, MdnsConfig, PORT, Records, Responder};
use smoltcp::time::Instant;

fuzz_target!(|data: &[u8]| {
    let Some((port, packet)) = data.split_first_chunk::<2>() else { return };
    let port = u16::from_le_bytes(*port);
    let firmware = Descriptor::new(0x4020_2010, [1; 8], "fuzz-fw", "1.0.0").unwrap();
    let config = MdnsConfig::new([1, 2, 3]).with_host("fuzz");
    let records = Records::new(&config, Some(&firmware), Some(SlotId::User1), false, 65056);
    let mut responder = Responder::new(records);
    responder.set_address(Some([10, 0, 0, 1]), Instant::ZERO);
    let mut out = [0u8; MAX_REPLY];
    if let Some((destination, len)) = responder.respond(packet, port, &mut out) {
        assert!((12..=MAX_REPLY).contains(&len));
        assert!(packet.len() >= 12 && packet[2] & 0xF8 == 0, "a reply to something that is not a query");
        assert_eq!(out[2] & 0x84, 0x84, "a response, authoritative");
        assert!(u16::from_be_bytes([out[6], out[7]]) > 0, "a reply without answers");
        assert_eq!(destination == Destination::Unicast, port != PORT);
        assert_eq!(responder.reply_len(&responder.query(packet, port).unwrap()), len);
    }
});
