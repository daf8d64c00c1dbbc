//! The virtual device's mDNS socket (`tcpflash_sim::mdns::Announcer`) over real UDP, inside
//! a network namespace of the test's own (`unshare --net`: loopback only, so nothing reaches
//! a real interface). Queries are built and answers parsed with simple-dns.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use ota_agent::boot::Running;
use ota_agent::descriptor::Descriptor;
use ota_agent::layout::SlotId;
use simple_dns::rdata::RData;
use simple_dns::{CLASS, Name, Packet, QCLASS, QTYPE, Question, TYPE};
use tcpflash_sim::mdns::Announcer;

const NETNS_ENV: &str = "TCPFLASH_TEST_NETNS";
const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);

/// Outside a private namespace: runs test `name` again inside one and fails unless it
/// passed there (false: the caller returns). Inside: checks that loopback is the only
/// interface, and returns true.
fn in_private_netns(name: &str) -> bool {
    if std::env::var_os(NETNS_ENV).is_some() {
        let devices = std::fs::read_to_string("/proc/self/net/dev").unwrap();
        let names: Vec<&str> =
            devices.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
        assert_eq!(names, ["lo"], "not in a private network namespace");
        return true;
    }
    let output = Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && ip link set lo multicast on && exec \"$@\"",
            "sh",
        ])
        .arg(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(NETNS_ENV, "1")
        .output()
        .expect("run unshare (util-linux)");
    assert!(
        output.status.success(),
        "{name} in a private network namespace (needs root for `unshare --net`, and iproute2's `ip`): {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("1 passed"), "the test ran there");
    false
}

fn firmware(name: &str) -> Descriptor {
    Descriptor::new(0x4020_2010, [7; 8], name, "2.0.0").unwrap()
}

/// A querier on `port` (5353 shares the port; any other is a legacy querier).
fn querier(port: u16) -> UdpSocket {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket.set_reuse_port(true).unwrap();
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).into()).unwrap();
    socket.join_multicast_v4(&GROUP, &Ipv4Addr::LOCALHOST).unwrap();
    socket.set_multicast_if_v4(&Ipv4Addr::LOCALHOST).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    socket.into()
}

fn query(id: u16, name: &str, kind: TYPE) -> Vec<u8> {
    let mut packet = Packet::new_query(id);
    packet.questions.push(Question::new(
        Name::new_unchecked(name),
        QTYPE::TYPE(kind),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    packet.build_bytes_vec().unwrap()
}

/// Polls the announcers and collects the replies `socket` receives for `time` (a bound:
/// the test checks what arrived, never how fast).
fn exchange(announcers: &mut [Announcer], socket: &UdpSocket, time: Duration) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut got = Vec::new();
    let end = Instant::now() + time;
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        for announcer in announcers.iter_mut() {
            announcer.poll();
        }
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            // The querier's own multicast comes back on loopback: only responses count.
            if Packet::parse(&buf[..n]).is_ok_and(|p| p.has_flags(simple_dns::PacketFlag::RESPONSE)) {
                got.push((buf[..n].to_vec(), from));
            }
        }
    }
    got
}

fn pointers(replies: &[(Vec<u8>, SocketAddr)]) -> Vec<String> {
    let mut names: Vec<String> = replies
        .iter()
        .flat_map(|(bytes, _)| {
            let packet = Packet::parse(bytes).unwrap();
            packet
                .answers
                .iter()
                .filter_map(|record| match &record.rdata {
                    RData::PTR(ptr) => Some(ptr.0.to_string()),
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn two_virtual_devices_announce_and_answer_on_loopback_only() {
    if !in_private_netns("two_virtual_devices_announce_and_answer_on_loopback_only") {
        return;
    }
    let socket = querier(5353);
    let running = Running::untracked(Some(SlotId::User1));
    let mut announcers =
        [Announcer::open_loopback("alpha", 4001).unwrap(), Announcer::open_loopback("beta", 4002).unwrap()];
    announcers[0].boot(Some(&firmware("fw")), &running, false);
    announcers[1].boot(Some(&firmware("fw")), &running, true);
    // The announcements, from 127.0.0.1:5353.
    let announced = exchange(&mut announcers, &socket, Duration::from_millis(2500));
    assert_eq!(pointers(&announced), ["fw-000fa1._tcpflash._tcp.local", "fw-000fa2._tcpflash._tcp.local"]);
    assert_eq!(announced.len(), 4, "two announcements each");
    assert!(announced.iter().all(|(_, from)| *from == SocketAddr::from(([127, 0, 0, 1], 5353))));

    // A browse is answered by both, with each one's port and host name.
    socket.send_to(&query(0, "_tcpflash._tcp.local", TYPE::PTR), (GROUP, 5353)).unwrap();
    let replies = exchange(&mut announcers, &socket, Duration::from_millis(500));
    assert_eq!(replies.len(), 2, "{replies:?}");
    let mut srv: Vec<String> = replies
        .iter()
        .flat_map(|(bytes, _)| {
            Packet::parse(bytes)
                .unwrap()
                .additional_records
                .iter()
                .filter_map(|r| match &r.rdata {
                    RData::SRV(srv) => Some(format!("{} {}", srv.target, srv.port)),
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
        .collect();
    srv.sort();
    assert_eq!(srv, ["alpha.local 4001", "beta.local 4002"]);

    // A legacy querier gets a unicast answer with its id, from the one device asked.
    let legacy = querier(40000);
    legacy.send_to(&query(0x77, "beta.local", TYPE::A), (GROUP, 5353)).unwrap();
    let replies = exchange(&mut announcers, &legacy, Duration::from_millis(500));
    let unicast: Vec<_> =
        replies.iter().filter(|(bytes, _)| Packet::parse(bytes).unwrap().id() == 0x77).collect();
    assert_eq!(unicast.len(), 1, "{replies:?}");
    let packet = Packet::parse(&unicast[0].0).unwrap();
    let RData::A(a) = &packet.answers[0].rdata else { panic!() };
    assert_eq!(Ipv4Addr::from(a.address), Ipv4Addr::LOCALHOST);

    // Garbage and questions for others: no reply.
    socket.send_to(&[0xFF; 30], (GROUP, 5353)).unwrap();
    socket.send_to(&query(0, "gamma.local", TYPE::A), (GROUP, 5353)).unwrap();
    assert!(exchange(&mut announcers, &socket, Duration::from_millis(500)).is_empty());

    // A new build is announced again.
    announcers[1].boot(Some(&firmware("fw2")), &Running::untracked(Some(SlotId::User2)), true);
    let again = exchange(&mut announcers, &socket, Duration::from_millis(1500));
    assert_eq!(pointers(&again), ["fw2-000fa2._tcpflash._tcp.local"]);
}
