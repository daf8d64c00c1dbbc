//! The agent's mDNS responder on real smoltcp (feature `mdns`): the device announces itself
//! and answers queries built by simple-dns on the simulated wire of `tcpflash_sim::wire`
//! (never a real interface), and a push still lands with the UDP socket beside the TCP ones.
//! Time is simulated, so the announcements' spacing is exact.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::*;
use ota_agent::client::Event;
use ota_agent::layout::SlotId;
use ota_agent::mdns::MdnsConfig;
use ota_agent::net::AgentConfig;
use simple_dns::rdata::RData;
use simple_dns::{CLASS, Name, Packet, QCLASS, QTYPE, Question, TYPE};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address};
use tcpflash_sim::wire::{LinkFaults, World};

const GROUP: Ipv4Address = Ipv4Address::new(224, 0, 0, 251);
const INSTANCE: &str = "test-firmware-a1b2c3._tcpflash._tcp.local";

fn world() -> World {
    let config = AgentConfig { mdns: Some(MdnsConfig::new([0xA1, 0xB2, 0xC3])), ..AgentConfig::new(LAYOUT) };
    let mut world = World::with_config(factory_flash(SlotId::User1), LinkFaults::clean(1), config);
    world.host_iface.join_multicast_group(GROUP).unwrap();
    world
}

/// A host UDP socket bound to `port`.
fn host_socket(world: &mut World, port: u16) -> SocketHandle {
    let leak = |len| -> &'static mut [u8] { Box::leak(vec![0u8; len].into_boxed_slice()) };
    let meta = || -> &'static mut [udp::PacketMetadata] {
        Box::leak(vec![udp::PacketMetadata::EMPTY; 8].into_boxed_slice())
    };
    let mut socket = udp::Socket::new(
        udp::PacketBuffer::new(meta(), leak(4096)),
        udp::PacketBuffer::new(meta(), leak(4096)),
    );
    socket.bind(port).unwrap();
    world.host_sockets.add(socket)
}

/// Steps `time` and returns what `socket` received: (when, payload, from, to).
fn collect(
    world: &mut World,
    socket: SocketHandle,
    time: Duration,
) -> Vec<(Instant, Vec<u8>, IpEndpoint, Option<IpAddress>)> {
    let mut got = Vec::new();
    let end = world.now + time;
    while world.now < end {
        world.step(&mut []);
        let socket = world.host_sockets.get_mut::<udp::Socket>(socket);
        while let Ok((data, meta)) = socket.recv() {
            got.push((world.now, data.to_vec(), meta.endpoint, meta.local_address));
        }
    }
    got
}

fn query(id: u16, questions: &[(&str, TYPE)]) -> Vec<u8> {
    let mut packet = Packet::new_query(id);
    for &(name, kind) in questions {
        packet.questions.push(Question::new(
            Name::new_unchecked(name),
            QTYPE::TYPE(kind),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
    }
    packet.build_bytes_vec().unwrap()
}

fn send(world: &mut World, socket: SocketHandle, packet: &[u8]) {
    world
        .host_sockets
        .get_mut::<udp::Socket>(socket)
        .send_slice(packet, (IpAddress::Ipv4(GROUP), 5353))
        .unwrap();
}

fn records(packet: &Packet<'_>) -> Vec<String> {
    packet
        .answers
        .iter()
        .chain(&packet.additional_records)
        .map(|record| match &record.rdata {
            RData::PTR(ptr) => format!("{} PTR {}", record.name, ptr.0),
            RData::SRV(srv) => format!("{} SRV {} {}", record.name, srv.port, srv.target),
            RData::TXT(txt) => {
                let mut strings: Vec<String> = txt
                    .attributes()
                    .into_iter()
                    .map(|(k, v)| format!("{k}={}", v.unwrap_or_default()))
                    .collect();
                strings.sort();
                format!("{} TXT {}", record.name, strings.join(" "))
            }
            RData::A(a) => format!("{} A {}", record.name, std::net::Ipv4Addr::from(a.address)),
            other => format!("{} {other:?}", record.name),
        })
        .collect()
}

#[test]
fn the_device_announces_itself_twice_a_second_apart_to_the_group() {
    let mut world = world();
    let socket = host_socket(&mut world, 5353);
    let got = collect(&mut world, socket, Duration::from_secs(5));
    assert_eq!(got.len(), 2, "two announcements in 5 s: {got:?}");
    let gap = got[1].0 - got[0].0;
    assert!(gap >= Duration::from_secs(1) && gap < Duration::from_millis(1100), "{gap}");
    for (_, payload, from, to) in &got {
        assert_eq!(*from, IpEndpoint::new(IpAddress::v4(10, 0, 0, 1), 5353));
        assert_eq!(*to, Some(IpAddress::Ipv4(GROUP)));
        let packet = Packet::parse(payload).unwrap();
        assert_eq!(
            records(&packet),
            [
                format!("_tcpflash._tcp.local PTR {INSTANCE}"),
                format!("{INSTANCE} SRV 65056 test-firmware-a1b2c3.local"),
                format!("{INSTANCE} TXT build=6300000000000000 fw=test-firmware key=no slot=user1 ver=1.0.0"),
                "test-firmware-a1b2c3.local A 10.0.0.1".to_owned(),
            ]
        );
    }
}

#[test]
fn queries_get_answers_garbage_gets_none_and_a_push_still_lands() {
    let mut world = world();
    let socket = host_socket(&mut world, 5353);
    collect(&mut world, socket, Duration::from_secs(3)); // the announcements

    send(&mut world, socket, &query(0, &[("_tcpflash._tcp.local", TYPE::PTR)]));
    let got = collect(&mut world, socket, Duration::from_millis(100));
    let replies: Vec<_> = got.iter().filter(|g| g.2.addr == IpAddress::v4(10, 0, 0, 1)).collect();
    assert_eq!(replies.len(), 1, "{got:?}");
    assert_eq!(replies[0].3, Some(IpAddress::Ipv4(GROUP)), "a reply to port 5353 is multicast");
    let packet = Packet::parse(&replies[0].1).unwrap();
    assert_eq!(records(&packet).len(), 4);

    // Garbage, a response and a question for someone else: no reply.
    for packet in [vec![0xFF; 40], vec![], query(0, &[("other.local", TYPE::A)])] {
        send(&mut world, socket, &packet);
    }
    let got = collect(&mut world, socket, Duration::from_secs(2));
    assert!(got.iter().all(|g| g.2.addr != IpAddress::v4(10, 0, 0, 1)), "{got:?}");

    // Legacy unicast: from another port, the reply comes back to it with the query's id.
    let legacy = host_socket(&mut world, 40000);
    send(&mut world, legacy, &query(0x4242, &[("test-firmware-a1b2c3.local", TYPE::A)]));
    let got = collect(&mut world, legacy, Duration::from_millis(100));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].3, Some(IpAddress::v4(10, 0, 0, 2)), "unicast to the querier");
    let packet = Packet::parse(&got[0].1).unwrap();
    assert_eq!(packet.id(), 0x4242);
    assert_eq!(records(&packet), ["test-firmware-a1b2c3.local A 10.0.0.1"]);
    assert!(packet.answers[0].ttl <= 10);

    let images = [image_for(SlotId::User1, 20_000, 5), image_for(SlotId::User2, 20_000, 6)];
    let mut push = world.push(images, 49152);
    world.run_pushes(&mut [&mut push], Duration::from_secs(60)).unwrap();
    assert_eq!(push.events, [Event::NextSlot(SlotId::User2), Event::Ready, Event::Flashing, Event::Success]);
}

#[test]
fn without_mdns_in_the_config_nothing_is_announced() {
    let mut world =
        World::with_config(factory_flash(SlotId::User1), LinkFaults::clean(1), AgentConfig::new(LAYOUT));
    world.host_iface.join_multicast_group(GROUP).unwrap();
    let socket = host_socket(&mut world, 5353);
    assert!(collect(&mut world, socket, Duration::from_secs(3)).is_empty());
    send(&mut world, socket, &query(0, &[("_tcpflash._tcp.local", TYPE::PTR)]));
    assert!(
        collect(&mut world, socket, Duration::from_secs(1))
            .iter()
            .all(|g| g.2.addr != IpAddress::v4(10, 0, 0, 1))
    );
    assert!(world.agent.mdns().is_none());
}
