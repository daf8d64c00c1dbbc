//! The responder against queries built by simple-dns, its answers parsed back by simple-dns.

use std::collections::HashMap;
use std::string::{String, ToString};
use std::vec::Vec;

use proptest::prelude::*;
use simple_dns::rdata::RData;
use simple_dns::{CLASS, Name as DnsName, Packet, PacketFlag, QCLASS, QTYPE, Question, ResourceRecord, TYPE};

use super::*;
use crate::descriptor::Descriptor;
use crate::layout::SlotId;

const ADDR: [u8; 4] = [192, 168, 1, 50];
const AGENT_PORT: u16 = 65056;
const INSTANCE: &str = "example-blinky-a1b2c3._tcpflash._tcp.local";
const HOST: &str = "kitchen.local";

fn firmware() -> Descriptor {
    Descriptor::new(0x4020_2010, [0xAB, 0xCD, 0xEF, 1, 2, 3, 4, 5], "example_blinky", "0.1.0").unwrap()
}

fn records(host: Option<&'static str>) -> Records {
    let mut config = MdnsConfig::new([0xA1, 0xB2, 0xC3]);
    config.host = host;
    Records::new(&config, Some(&firmware()), Some(SlotId::User2), true, AGENT_PORT)
}

fn responder() -> Responder {
    let mut responder = Responder::new(records(Some("kitchen")));
    responder.set_address(Some(ADDR), Instant::ZERO);
    responder
}

fn query(questions: &[(&str, TYPE)]) -> Vec<u8> {
    query_with(0, questions, false)
}

fn query_with(id: u16, questions: &[(&str, TYPE)], unicast_response: bool) -> Vec<u8> {
    let mut packet = Packet::new_query(id);
    for &(name, kind) in questions {
        packet.questions.push(Question::new(
            DnsName::new_unchecked(name),
            QTYPE::TYPE(kind),
            QCLASS::CLASS(CLASS::IN),
            unicast_response,
        ));
    }
    packet.build_bytes_vec_compressed().unwrap()
}

/// The reply to `packet` from `port`, parsed.
fn ask(responder: &Responder, packet: &[u8], port: u16) -> Option<(Destination, Vec<u8>)> {
    let mut out = [0u8; MAX_REPLY];
    let (destination, len) = responder.respond(packet, port, &mut out)?;
    Some((destination, out[..len].to_vec()))
}

fn names(records: &[ResourceRecord<'_>]) -> Vec<(String, u16)> {
    records.iter().map(|r| (r.name.to_string(), u16::from(r.rdata.type_code()))).collect()
}

fn txt_of(record: &ResourceRecord<'_>) -> HashMap<String, Option<String>> {
    match &record.rdata {
        RData::TXT(txt) => txt.attributes(),
        other => panic!("not a TXT record: {other:?}"),
    }
}

#[test]
fn a_browse_gets_the_pointer_and_everything_needed_to_connect() {
    let responder = responder();
    let (destination, bytes) = ask(&responder, &query(&[("_tcpflash._tcp.local", TYPE::PTR)]), PORT).unwrap();
    assert_eq!(destination, Destination::Multicast);
    let reply = Packet::parse(&bytes).unwrap();
    assert_eq!(reply.id(), 0, "multicast replies carry id 0");
    assert!(reply.has_flags(PacketFlag::RESPONSE | PacketFlag::AUTHORITATIVE_ANSWER));
    assert!(reply.questions.is_empty());
    assert_eq!(names(&reply.answers), [("_tcpflash._tcp.local".into(), 12)]);
    let RData::PTR(ptr) = &reply.answers[0].rdata else { panic!() };
    assert_eq!(ptr.0.to_string(), INSTANCE);
    assert_eq!((reply.answers[0].ttl, reply.answers[0].cache_flush), (4500, false), "a shared record");
    assert_eq!(
        names(&reply.additional_records),
        [(INSTANCE.into(), 33), (INSTANCE.into(), 16), (HOST.into(), 1)]
    );
    let [srv, txt, a] = &reply.additional_records[..] else { panic!() };
    let RData::SRV(srv_data) = &srv.rdata else { panic!() };
    assert_eq!((srv_data.priority, srv_data.weight, srv_data.port), (0, 0, AGENT_PORT));
    assert_eq!(srv_data.target.to_string(), HOST);
    assert_eq!((srv.ttl, srv.cache_flush), (120, true));
    let attributes = txt_of(txt);
    let expected: HashMap<String, Option<String>> = [
        ("fw", "example_blinky"),
        ("ver", "0.1.0"),
        ("build", "abcdef0102030405"),
        ("slot", "user2"),
        ("key", "yes"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Some(v.to_string())))
    .collect();
    assert_eq!(attributes, expected);
    assert_eq!((txt.ttl, txt.cache_flush), (4500, true));
    let RData::A(address) = &a.rdata else { panic!() };
    assert_eq!(address.address.to_be_bytes(), ADDR);
    assert_eq!((a.ttl, a.cache_flush, a.class), (120, true, CLASS::IN));
    // Names after the first are compressed: the whole reply is well under the cap.
    assert!(bytes.len() < 260, "{} bytes", bytes.len());
}

#[test]
fn each_record_is_answered_by_its_own_name_and_type_in_either_case() {
    let responder = responder();
    type Records<'a> = &'a [(&'a str, u16)];
    let cases: [(&str, TYPE, Records, Records); 6] = [
        (INSTANCE, TYPE::SRV, &[(INSTANCE, 33)], &[(HOST, 1)]),
        (INSTANCE, TYPE::TXT, &[(INSTANCE, 16)], &[]),
        ("EXAMPLE-Blinky-A1B2C3._TCPFLASH._tcp.LOCAL", TYPE::TXT, &[(INSTANCE, 16)], &[]),
        (HOST, TYPE::A, &[(HOST, 1)], &[]),
        ("KITCHEN.Local", TYPE::A, &[(HOST, 1)], &[]),
        ("_services._dns-sd._udp.local", TYPE::PTR, &[("_services._dns-sd._udp.local", 12)], &[]),
    ];
    for (name, kind, answers, additionals) in cases {
        let (_, bytes) = ask(&responder, &query(&[(name, kind)]), PORT).unwrap_or_else(|| panic!("{name}"));
        let reply = Packet::parse(&bytes).unwrap();
        let owned = |list: &[(&str, u16)]| list.iter().map(|&(n, t)| (n.to_string(), t)).collect::<Vec<_>>();
        assert_eq!(names(&reply.answers), owned(answers), "{name} {kind:?}");
        assert_eq!(names(&reply.additional_records), owned(additionals), "{name} {kind:?}");
    }
    // Service enumeration points at the service type.
    let (_, bytes) = ask(&responder, &query(&[("_services._dns-sd._udp.local", TYPE::PTR)]), PORT).unwrap();
    let reply = Packet::parse(&bytes).unwrap();
    let RData::PTR(ptr) = &reply.answers[0].rdata else { panic!() };
    assert_eq!(ptr.0.to_string(), "_tcpflash._tcp.local");
}

#[test]
fn several_questions_and_any_are_answered_once_each() {
    let responder = responder();
    let packet = query(&[
        ("_tcpflash._tcp.local", TYPE::PTR),
        (INSTANCE, TYPE::SRV),
        ("_http._tcp.local", TYPE::PTR),
        (HOST, TYPE::A),
    ]);
    let (_, bytes) = ask(&responder, &packet, PORT).unwrap();
    let reply = Packet::parse(&bytes).unwrap();
    assert_eq!(
        names(&reply.answers),
        [("_tcpflash._tcp.local".into(), 12), (INSTANCE.into(), 33), (HOST.into(), 1)]
    );
    assert_eq!(names(&reply.additional_records), [(INSTANCE.into(), 16)]);

    let mut any = Packet::new_query(0);
    any.questions.push(Question::new(DnsName::new_unchecked(INSTANCE), QTYPE::ANY, QCLASS::ANY, true));
    let (destination, bytes) = ask(&responder, &any.build_bytes_vec().unwrap(), PORT).unwrap();
    assert_eq!(destination, Destination::Multicast, "a QU question still gets a multicast reply");
    let reply = Packet::parse(&bytes).unwrap();
    assert_eq!(names(&reply.answers), [(INSTANCE.into(), 33), (INSTANCE.into(), 16)]);
    assert_eq!(names(&reply.additional_records), [(HOST.into(), 1)]);
}

#[test]
fn a_query_from_another_port_gets_a_legacy_unicast_reply() {
    let responder = responder();
    let packet = query_with(0x1234, &[(HOST, TYPE::A), ("_tcpflash._tcp.local", TYPE::PTR)], false);
    let (destination, bytes) = ask(&responder, &packet, 40000).unwrap();
    assert_eq!(destination, Destination::Unicast);
    let reply = Packet::parse(&bytes).unwrap();
    assert_eq!(reply.id(), 0x1234);
    let questions: Vec<String> =
        reply.questions.iter().map(|q| format!("{} {:?}", q.qname, q.qtype)).collect();
    assert_eq!(questions, [format!("{HOST} TYPE(A)"), "_tcpflash._tcp.local TYPE(PTR)".into()]);
    for record in reply.answers.iter().chain(&reply.additional_records) {
        assert!(record.ttl <= 10 && !record.cache_flush, "{record:?}");
    }
    assert_eq!(names(&reply.answers), [("_tcpflash._tcp.local".into(), 12), (HOST.into(), 1)]);
}

#[test]
fn other_names_types_and_classes_get_no_reply() {
    let responder = responder();
    for (name, kind) in [
        ("_http._tcp.local", TYPE::PTR),
        ("other-a1b2c3._tcpflash._tcp.local", TYPE::SRV),
        ("example-blinky-a1b2c3._tcpflash._udp.local", TYPE::SRV),
        ("example-blinky-a1b2c3.local", TYPE::A),
        ("kitchen2.local", TYPE::A),
        ("kitchen.local.example", TYPE::A),
        ("_tcpflash._tcp.local", TYPE::SRV),
        (HOST, TYPE::AAAA),
        (HOST, TYPE::TXT),
        (INSTANCE, TYPE::A),
    ] {
        assert_eq!(ask(&responder, &query(&[(name, kind)]), PORT), None, "{name} {kind:?}");
    }
    let mut chaos = Packet::new_query(0);
    chaos.questions.push(Question::new(
        DnsName::new_unchecked(HOST),
        QTYPE::TYPE(TYPE::A),
        QCLASS::CLASS(CLASS::CH),
        false,
    ));
    assert_eq!(ask(&responder, &chaos.build_bytes_vec().unwrap(), PORT), None);
}

#[test]
fn responses_and_other_opcodes_get_no_reply() {
    let responder = responder();
    let mut response = Packet::new_reply(0);
    response.questions.push(Question::new(
        DnsName::new_unchecked(HOST),
        QTYPE::TYPE(TYPE::A),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    assert_eq!(ask(&responder, &response.build_bytes_vec().unwrap(), PORT), None);
    let mut update = query(&[(HOST, TYPE::A)]);
    update[2] |= 5 << 3; // opcode UPDATE
    assert_eq!(ask(&responder, &update, PORT), None);
}

#[test]
fn without_an_address_there_is_no_a_record_and_no_announcement() {
    let mut responder = Responder::new(records(None));
    let mut out = [0u8; MAX_REPLY];
    assert_eq!(responder.poll_at(), None);
    assert_eq!(responder.poll_announce(Instant::from_secs(5), &mut out), None);
    let host = "example-blinky-a1b2c3.local";
    assert_eq!(ask(&responder, &query(&[(host, TYPE::A)]), PORT), None);
    let (_, bytes) = ask(&responder, &query(&[("_tcpflash._tcp.local", TYPE::PTR)]), PORT).unwrap();
    let reply = Packet::parse(&bytes).unwrap();
    assert_eq!(names(&reply.additional_records), [(INSTANCE.into(), 33), (INSTANCE.into(), 16)]);
    // The default host name is the instance's: the firmware's name and the id.
    let RData::SRV(srv) = &reply.additional_records[0].rdata else { panic!() };
    assert_eq!(srv.target.to_string(), host);
}

#[test]
fn it_announces_twice_a_second_apart_and_again_for_a_new_address() {
    let mut responder = Responder::new(records(Some("kitchen")));
    let mut out = [0u8; MAX_REPLY];
    let t0 = Instant::from_secs(10);
    responder.set_address(Some(ADDR), t0);
    assert_eq!(responder.poll_at(), Some(t0));
    let len = responder.poll_announce(t0, &mut out).unwrap();
    let announcement = Packet::parse(&out[..len]).unwrap();
    assert_eq!(
        names(&announcement.answers),
        [("_tcpflash._tcp.local".into(), 12), (INSTANCE.into(), 33), (INSTANCE.into(), 16), (HOST.into(), 1)]
    );
    assert_eq!(responder.poll_announce(t0 + Duration::from_millis(999), &mut out), None);
    assert!(responder.poll_announce(t0 + Duration::from_secs(1), &mut out).is_some());
    assert_eq!(responder.poll_at(), None);
    assert_eq!(responder.poll_announce(t0 + Duration::from_secs(60), &mut out), None);
    // The same address again changes nothing; a new one is announced.
    responder.set_address(Some(ADDR), t0 + Duration::from_secs(61));
    assert_eq!(responder.poll_at(), None);
    let t1 = t0 + Duration::from_secs(62);
    responder.set_address(Some([10, 0, 0, 7]), t1);
    let len = responder.poll_announce(t1, &mut out).unwrap();
    let announcement = Packet::parse(&out[..len]).unwrap();
    let RData::A(a) = &announcement.answers[3].rdata else { panic!() };
    assert_eq!(a.address.to_be_bytes(), [10, 0, 0, 7]);
    // New records (a push booted another build) are announced too.
    let other = Records::new(&MdnsConfig::new([1, 2, 3]), None, None, false, 1);
    responder.set_records(other, t1 + Duration::from_secs(5));
    assert_eq!(responder.poll_at(), Some(t1 + Duration::from_secs(5)));
}

#[test]
fn names_and_txt_follow_the_firmware_and_config() {
    let plain = Records::new(&MdnsConfig::new([0, 0x0F, 0xFF]), None, None, false, 1);
    assert_eq!(plain.instance(), b"tcpflash-000fff");
    assert_eq!(plain.host(), b"tcpflash-000fff");
    assert_eq!(plain.txt().collect::<Vec<_>>(), [&b"key=no"[..]]);
    let mac = MdnsConfig::from_mac([0x5C, 0xCF, 0x7F, 0x01, 0x02, 0x03]);
    let config = mac.with_host("Living room.lamp_1");
    let named = Records::new(&config, Some(&firmware()), Some(SlotId::User1), false, 8266);
    assert_eq!(named.host(), b"Living-room-lamp-1");
    assert_eq!(named.instance(), b"example-blinky-010203");
    assert_eq!(named.port(), 8266);
    let txt: Vec<&[u8]> = named.txt().collect();
    assert_eq!(
        txt,
        [&b"fw=example_blinky"[..], b"ver=0.1.0", b"build=abcdef0102030405", b"slot=user1", b"key=no"]
    );
    let long = "x".repeat(100);
    let long: &'static str = Box::leak(long.into_boxed_str());
    assert_eq!(Records::new(&mac.with_host(long), None, None, false, 1).host().len(), 63);
}

#[test]
fn the_longest_names_and_four_legacy_questions_fit_the_reply_cap() {
    let name = "n".repeat(32);
    let version = "v".repeat(16);
    let descriptor = Descriptor::new(0, [0xFF; 8], &name, &version).unwrap();
    let host: &'static str = Box::leak("h".repeat(63).into_boxed_str());
    let config = MdnsConfig::new([1, 2, 3]).with_host(host);
    let mut responder =
        Responder::new(Records::new(&config, Some(&descriptor), Some(SlotId::User1), true, 1));
    responder.set_address(Some(ADDR), Instant::ZERO);
    assert_eq!(responder.records().txt().count(), 5, "every TXT string fits");
    let instance = format!("{name}-010203._tcpflash._tcp.local");
    let host = format!("{host}.local");
    let packet = query_with(
        7,
        &[
            ("_tcpflash._tcp.local", TYPE::PTR),
            (&instance, TYPE::SRV),
            (&instance, TYPE::TXT),
            (&host, TYPE::A),
            ("_services._dns-sd._udp.local", TYPE::PTR),
        ],
        false,
    );
    let (_, bytes) = ask(&responder, &packet, 1234).expect("fits");
    let reply = Packet::parse(&bytes).unwrap();
    assert_eq!(reply.questions.len(), 4);
    assert_eq!(reply.answers.len(), 5);
    // Too small a buffer: no reply rather than a cut one.
    let mut small = [0u8; 100];
    assert_eq!(responder.respond(&packet, 1234, &mut small), None);
}

#[test]
fn every_truncation_of_a_query_gets_no_reply() {
    let responder = responder();
    let packet = query(&[("_tcpflash._tcp.local", TYPE::PTR), (HOST, TYPE::A)]);
    assert!(ask(&responder, &packet, PORT).is_some());
    for len in 0..packet.len() {
        assert_eq!(ask(&responder, &packet[..len], PORT), None, "cut at {len}");
    }
}

#[test]
fn compression_loops_and_bad_labels_get_no_reply() {
    let responder = responder();
    let header = [0u8, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    // A pointer to itself, a pointer forward, a pointer into a loop of two.
    let own = [&header[..], &[0xC0, 12, 0, 1, 0, 1]].concat();
    let forward = [&header[..], &[0xC0, 14, 0, 0, 1, 0, 1]].concat();
    let pair = [&header[..], &[1, b'a', 0xC0, 12, 0, 1, 0, 1]].concat();
    // Label kinds 01 and 10 (reserved), a label running past the end.
    let reserved = [&header[..], &[0x40, 0, 0, 1, 0, 1]].concat();
    let past = [&header[..], &[9, b'_', b't', 0, 1, 0, 1]].concat();
    for packet in [own, forward, pair, reserved, past] {
        assert_eq!(ask(&responder, &packet, PORT), None, "{packet:x?}");
    }
    // A backward pointer is fine: the second question names the first's name.
    let first = b"\x09_tcpflash\x04_tcp\x05local\x00";
    let mut two = [&[0u8, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0][..], first, &[0, 12, 0, 1]].concat();
    two.extend_from_slice(&[0xC0, 12, 0, 12, 0, 1]);
    assert!(ask(&responder, &two, PORT).is_some());
}

#[test]
fn a_name_longer_than_255_bytes_gets_no_reply() {
    let responder = responder();
    let mut packet = vec![0u8, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for _ in 0..5 {
        packet.push(60);
        packet.extend([b'a'; 60]);
    }
    packet.extend_from_slice(b"\x05local\x00\x00\x01\x00\x01");
    assert_eq!(ask(&responder, &packet, PORT), None);
}

proptest! {
    /// Garbage never panics, and whatever reply comes out is well-formed DNS.
    #[test]
    fn arbitrary_bytes_never_panic(packet in proptest::collection::vec(any::<u8>(), 0..300), port in any::<u16>()) {
        let responder = responder();
        if let Some((_, reply)) = ask(&responder, &packet, port) {
            prop_assert!(Packet::parse(&reply).is_ok());
        }
    }

    /// A valid query with bytes flipped: no panic; any reply parses and answers only what a
    /// question of the mutated packet asked for.
    #[test]
    fn mutated_queries_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let responder = responder();
        let mut packet = query(&[("_tcpflash._tcp.local", TYPE::PTR), (INSTANCE, TYPE::TXT), (HOST, TYPE::A)]);
        for (index, byte) in flips {
            let at = index.index(packet.len());
            packet[at] ^= byte;
        }
        if let Some((_, reply)) = ask(&responder, &packet, PORT) {
            let reply = Packet::parse(&reply).unwrap();
            prop_assert!(!reply.answers.is_empty());
        }
    }
}
