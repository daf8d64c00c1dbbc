//! The virtual device's mDNS: the agent's own responder ([`ota_agent::mdns`]) over a std UDP
//! socket, on the loopback interface only, so several virtual devices on one machine form a
//! fleet that `cargo tcpflash list` finds.
//!
//! Never on a real interface: the socket joins 224.0.0.251 on 127.0.0.1 alone, sends its
//! multicast out through 127.0.0.1 (`IP_MULTICAST_IF`), takes no datagram for groups other
//! sockets joined elsewhere (`IP_MULTICAST_ALL` off), and answers only queries whose source
//! is a loopback address (so a unicast reply never leaves the machine either).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};

use ota_agent::boot::Running;
use ota_agent::descriptor::Descriptor;
use ota_agent::mdns::{Destination, MAX_REPLY, MdnsConfig, PORT, Records, Responder};
use smoltcp::time::Instant;
use socket2::{Domain, Protocol, Socket, Type};

const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
/// Datagrams handled per poll, so a flood cannot hold the device's loop.
const PER_POLL: usize = 16;

/// A virtual device's mDNS responder on the loopback interface.
pub struct Announcer {
    socket: UdpSocket,
    config: MdnsConfig,
    /// The agent's TCP port (the SRV record's).
    port: u16,
    responder: Option<Responder>,
    clock: std::time::Instant,
}

impl Announcer {
    /// Opens the shared mDNS port on the loopback interface for a device named `name` (its
    /// host name: `name.local`) whose agent listens on 127.0.0.1:`port`. The instance name
    /// is the firmware's name and the port as six hex digits: a virtual device has no MAC.
    pub fn open_loopback(name: &str, port: u16) -> io::Result<Announcer> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        // Other responders and queriers on this machine share the port.
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_multicast_all_v4(false)?;
        socket.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT)).into())?;
        socket.join_multicast_v4(&GROUP, &Ipv4Addr::LOCALHOST)?;
        socket.set_multicast_if_v4(&Ipv4Addr::LOCALHOST)?;
        socket.set_multicast_loop_v4(true)?;
        socket.set_multicast_ttl_v4(255)?;
        socket.set_nonblocking(true)?;
        let host: &'static str = Box::leak(name.to_owned().into_boxed_str());
        let [hi, lo] = port.to_be_bytes();
        Ok(Announcer {
            socket: socket.into(),
            config: MdnsConfig::new([0, hi, lo]).with_host(host),
            port,
            responder: None,
            clock: std::time::Instant::now(),
        })
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.clock.elapsed().as_micros() as i64)
    }

    /// The device booted `firmware` from `running`'s slot: its records, announced anew.
    pub fn boot(&mut self, firmware: Option<&Descriptor>, running: &Running, key_required: bool) {
        let records = Records::new(&self.config, firmware, running.slot, key_required, self.port);
        let now = self.now();
        match &mut self.responder {
            Some(responder) => responder.set_records(records, now),
            None => {
                let mut responder = Responder::new(records);
                responder.set_address(Some(Ipv4Addr::LOCALHOST.octets()), now);
                self.responder = Some(responder);
            }
        }
    }

    /// The records announced, once booted.
    pub fn records(&self) -> Option<&Records> {
        self.responder.as_ref().map(Responder::records)
    }

    /// Answers what came in and sends a due announcement; never blocks.
    pub fn poll(&mut self) {
        let now = self.now();
        let Some(responder) = self.responder.as_mut() else { return };
        let mut query = [0u8; 1500];
        let mut reply = [0u8; MAX_REPLY];
        for _ in 0..PER_POLL {
            let Ok((len, from)) = self.socket.recv_from(&mut query) else { break };
            if !from.ip().is_loopback() {
                continue;
            }
            if let Some((destination, n)) = responder.respond(&query[..len], from.port(), &mut reply) {
                let to = match destination {
                    Destination::Multicast => SocketAddr::V4(SocketAddrV4::new(GROUP, PORT)),
                    Destination::Unicast => from,
                };
                let _ = self.socket.send_to(&reply[..n], to);
            }
        }
        if let Some(n) = responder.poll_announce(now, &mut reply) {
            let _ = self.socket.send_to(&reply[..n], SocketAddrV4::new(GROUP, PORT));
        }
    }
}
