//! The agent on smoltcp: [`ota_init`] is the one call an application makes, then it polls
//! the returned [`OtaAgent`] from its main loop. The rules are the [`Listener`]'s; this
//! driver only maps them onto smoltcp's sockets.
//!
//! Two TCP sockets listen on the port. The first (large receive buffer) carries the one
//! session; a client arriving while that one is busy lands on the second (tiny buffers),
//! hears `ERR: Connection Already Exists` and is closed, never touching the session. The
//! sockets live in the application's `SocketSet` with buffers from [`OtaBuffers`], which
//! the application keeps in a [`StaticCell`](crate::static_cell::StaticCell): no
//! allocator, nothing large on the stack, no `unsafe` in the application.
//!
//! smoltcp hands a new connection to the first listening socket in the set, and the session
//! socket is added first, so a client only meets the second socket while a session is
//! open, or for the few milliseconds its connection takes to close. A finished connection
//! in TIME-WAIT is dropped at once so the port listens again without smoltcp's 10 s wait.
//!
//! With the `mdns` feature and [`AgentConfig::mdns`] set, a third socket (UDP, port 5353,
//! in the 224.0.0.251 group that [`OtaAgent::poll_interface`] joins) answers mDNS for
//! `_tcpflash._tcp.local` and the board's host name ([`crate::mdns`]): the `SocketSet` then
//! needs three free entries.
//!
//! ```no_run
//! use ota_agent::layout::DEFAULT_LAYOUT;
//! use ota_agent::net::{AgentConfig, OtaBuffers, ota_init};
//! use ota_agent::static_cell::StaticCell;
//! use smoltcp::iface::{SocketSet, SocketStorage};
//!
//! static SOCKETS: StaticCell<[SocketStorage<'static>; 2]> = StaticCell::new([SocketStorage::EMPTY; 2]);
//! static OTA: StaticCell<OtaBuffers> = StaticCell::new(OtaBuffers::new());
//!
//! let mut sockets = SocketSet::new(&mut SOCKETS.take()[..]);
//! let mut agent = ota_init(AgentConfig::new(DEFAULT_LAYOUT), &mut sockets, OTA.take());
//! // In the main loop, with the board's clock, interface, device, flash and platform:
//! // agent.poll_interface(clock.now(), &mut iface, &mut device, &mut sockets, &mut flash, &mut platform);
//! # let _ = &mut agent;
//! ```

use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::tcp;
#[cfg(feature = "mdns")]
use smoltcp::socket::udp;
use smoltcp::time::{Duration, Instant};

use crate::auth::{Key, PeerKey};
use crate::boot::{BootStatus, CommitError, DEFAULT_TRIAL_ATTEMPTS, Running};
use crate::flash::NorFlash;
use crate::layout::{FlashLayout, SlotId};
pub use crate::listener::Platform;
use crate::listener::{Admission, Connection, Listener};
use crate::protocol::{DEFAULT_PORT, MAX_REPLY_LINE};
pub use crate::session::Confirm;
use crate::session::{DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT, SessionConfig};
use crate::writer::{SECTOR, SectorBuffer};

/// Default receive buffer of the session socket (the TCP window): three sectors. While the
/// core erases and programs one sector (it serves no packets meanwhile), the next is already
/// in and the host can send a third, so a push runs at the flash chip's pace up to about
/// 20 ms of round trip. Two segments (2920 bytes) left the core waiting for data a fifth of
/// the push (`cargo xtask bench` models both).
pub const DEFAULT_RX: usize = 3 * SECTOR;
/// Default transmit buffer: two reply lines.
pub const DEFAULT_TX: usize = 2 * MAX_REPLY_LINE;
/// The rejecting socket only ever sends one short line and discards what it receives.
const REJECT_RX: usize = 64;
const REJECT_TX: usize = 64;
/// Bytes of the agent's TCP socket buffers with the default sizes (the window, the reply
/// lines, the rejecting socket's), for footprint reports.
pub const SOCKET_BUFFER_BYTES: usize = DEFAULT_RX + DEFAULT_TX + REJECT_RX + REJECT_TX;
/// Bytes of the mDNS socket's payload buffers (its packet metadata aside).
#[cfg(feature = "mdns")]
pub const MDNS_BUFFER_BYTES: usize = MDNS_RX + MDNS_TX;
/// The mDNS socket's buffers: one query of up to 512 bytes at a time (a larger one, a
/// querier's long known-answer list, is dropped by smoltcp), and one reply
/// ([`crate::mdns::MAX_REPLY`]).
#[cfg(feature = "mdns")]
const MDNS_RX: usize = 512;
#[cfg(feature = "mdns")]
const MDNS_TX: usize = crate::mdns::MAX_REPLY;
#[cfg(feature = "mdns")]
const MDNS_PACKETS: usize = 2;

/// How the agent runs.
#[derive(Clone, Copy, Debug)]
pub struct AgentConfig {
    pub layout: &'static FlashLayout,
    pub port: u16,
    /// A silent client is dropped after this long.
    pub idle_timeout: Duration,
    /// A client's header lines must be done within this long of its connection.
    pub header_timeout: Duration,
    /// The slot running now. `None` (the default) reads it at the first poll, from
    /// tcpflash-boot's hand-off record, else rBoot's config; set it when the platform knows
    /// better (rBoot's GPIO or temporary boot). Set, it turns [`AgentConfig::pre_erase`] off:
    /// the next reset may boot the other slot.
    pub running_slot: Option<SlotId>,
    /// Who confirms a new firmware that runs on trial (with tcpflash-boot): the pushing
    /// host's check-in after the reboot (the default), or the application
    /// ([`OtaAgent::confirm`]) once it knows it is healthy.
    pub confirm: Confirm,
    /// Boots a new firmware gets to confirm itself before tcpflash-boot goes back.
    pub trial_attempts: u8,
    /// The pre-shared key: with one, only a client that proves it holds the key can push
    /// ([`crate::auth`]). `None` (the default) lets any client push, as the seed did.
    pub key: Option<&'static Key>,
    /// Erase the idle slot in the background, a sector per poll while no client is served,
    /// once the running firmware is confirmed: the next push then only programs (about half
    /// the time). On by default; the previous firmware is then no longer kept in the idle
    /// slot (nothing can go back to it). See [`crate::session::Session::pre_erase`].
    pub pre_erase: bool,
    /// Answer mDNS as this board (feature `mdns`): `None` (the default) opens no socket.
    #[cfg(feature = "mdns")]
    pub mdns: Option<crate::mdns::MdnsConfig>,
}

impl AgentConfig {
    pub const fn new(layout: &'static FlashLayout) -> AgentConfig {
        AgentConfig {
            layout,
            port: DEFAULT_PORT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            running_slot: None,
            confirm: Confirm::OnCheckIn,
            trial_attempts: DEFAULT_TRIAL_ATTEMPTS,
            key: None,
            pre_erase: true,
            #[cfg(feature = "mdns")]
            mdns: None,
        }
    }

    /// The session settings this agent runs with.
    pub fn session(&self) -> SessionConfig {
        SessionConfig {
            idle_timeout: self.idle_timeout,
            header_timeout: self.header_timeout,
            key: self.key,
            confirm: self.confirm,
            trial_attempts: self.trial_attempts,
            pre_erase: self.pre_erase && self.running_slot.is_none(),
            ..SessionConfig::new(self.layout)
        }
    }
}

/// All the memory the agent uses, for a [`StaticCell`](crate::static_cell::StaticCell).
/// `RX`/`TX` size the session socket.
pub struct OtaBuffers<const RX: usize = DEFAULT_RX, const TX: usize = DEFAULT_TX> {
    sector: SectorBuffer,
    rx: [u8; RX],
    tx: [u8; TX],
    reject_rx: [u8; REJECT_RX],
    reject_tx: [u8; REJECT_TX],
    #[cfg(feature = "mdns")]
    mdns: MdnsBuffers,
}

/// The mDNS socket's memory.
#[cfg(feature = "mdns")]
struct MdnsBuffers {
    rx_meta: [udp::PacketMetadata; MDNS_PACKETS],
    rx: [u8; MDNS_RX],
    tx_meta: [udp::PacketMetadata; MDNS_PACKETS],
    tx: [u8; MDNS_TX],
}

impl<const RX: usize, const TX: usize> OtaBuffers<RX, TX> {
    pub const fn new() -> Self {
        const { assert!(TX >= MAX_REPLY_LINE, "the transmit buffer must hold a whole reply line") };
        OtaBuffers {
            sector: [0; SECTOR],
            rx: [0; RX],
            tx: [0; TX],
            reject_rx: [0; REJECT_RX],
            reject_tx: [0; REJECT_TX],
            #[cfg(feature = "mdns")]
            mdns: MdnsBuffers {
                rx_meta: [udp::PacketMetadata::EMPTY; MDNS_PACKETS],
                rx: [0; MDNS_RX],
                tx_meta: [udp::PacketMetadata::EMPTY; MDNS_PACKETS],
                tx: [0; MDNS_TX],
            },
        }
    }
}

impl<const RX: usize, const TX: usize> Default for OtaBuffers<RX, TX> {
    fn default() -> Self {
        Self::new()
    }
}

/// The running agent: poll it from the main loop.
pub struct OtaAgent<'a> {
    listener: Listener<'a>,
    session_socket: SocketHandle,
    reject_socket: SocketHandle,
    port: u16,
    /// Read at the first poll (it needs the flash and the platform).
    running_known: bool,
    running_slot: Option<SlotId>,
    /// When the rejecting socket refused its client, to drop one that never closes.
    refused_at: Option<Instant>,
    #[cfg(feature = "mdns")]
    mdns: Option<Mdns>,
}

/// The mDNS side of the agent.
#[cfg(feature = "mdns")]
struct Mdns {
    socket: SocketHandle,
    config: crate::mdns::MdnsConfig,
    /// Made at the first poll, once the running firmware is known.
    responder: Option<crate::mdns::Responder>,
    /// The interface's address, as the last [`OtaAgent::poll_interface`] (or
    /// [`OtaAgent::set_mdns_address`]) saw it.
    addr: Option<[u8; 4]>,
    joined: bool,
}

/// Registers the agent's listening sockets in `sockets` (which needs two free entries) and
/// returns the agent.
pub fn ota_init<'a, const RX: usize, const TX: usize>(
    config: AgentConfig,
    sockets: &mut SocketSet<'a>,
    buffers: &'a mut OtaBuffers<RX, TX>,
) -> OtaAgent<'a> {
    #[cfg(not(feature = "mdns"))]
    let OtaBuffers { sector, rx, tx, reject_rx, reject_tx } = buffers;
    #[cfg(feature = "mdns")]
    let OtaBuffers { sector, rx, tx, reject_rx, reject_tx, mdns } = buffers;
    // smoltcp hands a new connection to the first listening socket in the set; the session
    // socket is added first so it gets the client whenever it is free.
    let session_socket = sockets
        .add(tcp::Socket::new(tcp::SocketBuffer::new(&mut rx[..]), tcp::SocketBuffer::new(&mut tx[..])));
    let reject_socket = sockets.add(tcp::Socket::new(
        tcp::SocketBuffer::new(&mut reject_rx[..]),
        tcp::SocketBuffer::new(&mut reject_tx[..]),
    ));
    #[cfg(feature = "mdns")]
    let mdns = config.mdns.map(|mdns_config| {
        let MdnsBuffers { rx_meta, rx, tx_meta, tx } = mdns;
        let mut socket = udp::Socket::new(
            udp::PacketBuffer::new(&mut rx_meta[..], &mut rx[..]),
            udp::PacketBuffer::new(&mut tx_meta[..], &mut tx[..]),
        );
        // RFC 6762 section 11: every mDNS reply goes out with an IP TTL of 255.
        socket.set_hop_limit(Some(255));
        let _ = socket.bind(crate::mdns::PORT);
        Mdns { socket: sockets.add(socket), config: mdns_config, responder: None, addr: None, joined: false }
    });
    OtaAgent {
        listener: Listener::new(config.session(), sector),
        session_socket,
        reject_socket,
        port: config.port,
        running_known: false,
        running_slot: config.running_slot,
        refused_at: None,
        #[cfg(feature = "mdns")]
        mdns,
    }
}

impl<'a> OtaAgent<'a> {
    /// Serves the sockets: accepts, feeds the session, sends replies, closes, re-listens,
    /// pre-erases a sector of the idle slot while no client is served
    /// ([`AgentConfig::pre_erase`]: the longest stall, one sector erase), and calls
    /// `platform.reboot()` when an update is done. Call it after each `Interface::poll` (or
    /// use [`OtaAgent::poll_interface`]).
    // Out of line: inlined into the application's main loop, every access to the agent
    // went through main's large stack frame (three instructions each).
    #[inline(never)]
    pub fn poll<F: NorFlash, P: Platform>(
        &mut self,
        now: Instant,
        sockets: &mut SocketSet<'_>,
        flash: &mut F,
        platform: &mut P,
    ) {
        if !self.running_known {
            let layout = self.listener.session().config().layout;
            let mut running = Running::read(flash, layout, platform.boot_handoff());
            if let Some(slot) = self.running_slot {
                running = Running { slot: Some(slot), status: BootStatus::Untracked, ..running };
            }
            self.listener.set_running(running);
            self.running_known = true;
            #[cfg(feature = "mdns")]
            self.start_mdns(flash);
        }
        self.serve_session(now, sockets.get_mut::<tcp::Socket>(self.session_socket), flash, platform);
        self.serve_reject(now, sockets.get_mut::<tcp::Socket>(self.reject_socket));
        self.listener.idle(flash);
        self.listener.poll(now, platform);
        #[cfg(feature = "mdns")]
        self.serve_mdns(now, sockets);
    }

    /// Polls the interface, serves the agent, and polls again so replies leave at once.
    #[allow(clippy::too_many_arguments)]
    pub fn poll_interface<D: Device + ?Sized, F: NorFlash, P: Platform>(
        &mut self,
        now: Instant,
        iface: &mut Interface,
        device: &mut D,
        sockets: &mut SocketSet<'_>,
        flash: &mut F,
        platform: &mut P,
    ) {
        #[cfg(feature = "mdns")]
        self.mdns_interface(iface);
        iface.poll(now, device, sockets);
        self.poll(now, sockets, flash, platform);
        iface.poll(now, device, sockets);
    }

    /// The rules' state, for status: the session's progress, its last failure, a pending
    /// reboot.
    pub fn listener(&self) -> &Listener<'a> {
        &self.listener
    }

    /// How the device runs (its slot, a trial?, its build), once known (after the first
    /// poll).
    pub fn running(&self) -> Option<&Running> {
        self.running_known.then(|| self.listener.running())
    }

    /// Confirms this firmware when it runs on trial (with [`Confirm::ByApplication`], call
    /// it once the application knows it is healthy); nothing to do otherwise. Until it is
    /// confirmed, a reset or a crash makes tcpflash-boot count an attempt, and after the
    /// last one it goes back to the firmware this one replaced.
    pub fn confirm<F: NorFlash>(&mut self, flash: &mut F) -> Result<(), CommitError> {
        self.listener.confirm(flash)
    }

    /// When the agent next needs a poll although no packet arrives.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let refused = self.refused_at.map(|since| since + crate::listener::REFUSED_LINGER);
        #[cfg(feature = "mdns")]
        let refused = earliest(refused, self.mdns.as_ref().and_then(|mdns| mdns.responder?.poll_at()));
        earliest(self.listener.poll_timeout(), refused)
    }

    /// The mDNS responder, once the first poll made it (feature `mdns`, with
    /// [`AgentConfig::mdns`]): its records and address.
    #[cfg(feature = "mdns")]
    pub fn mdns(&self) -> Option<&crate::mdns::Responder> {
        self.mdns.as_ref()?.responder.as_ref()
    }

    /// The address the A record gives, for an application that calls [`OtaAgent::poll`]
    /// itself ([`OtaAgent::poll_interface`] takes it from the interface, and joins the mDNS
    /// group, which such an application does with `iface.join_multicast_group`).
    #[cfg(feature = "mdns")]
    pub fn set_mdns_address(&mut self, addr: Option<smoltcp::wire::Ipv4Address>) {
        if let Some(mdns) = self.mdns.as_mut() {
            mdns.addr = addr.map(|addr| addr.octets());
        }
    }

    /// Joins the mDNS group once, and follows the interface's address.
    #[cfg(feature = "mdns")]
    fn mdns_interface(&mut self, iface: &mut Interface) {
        let Some(mdns) = self.mdns.as_mut() else { return };
        if !mdns.joined {
            let [a, b, c, d] = crate::mdns::GROUP;
            mdns.joined = iface.join_multicast_group(smoltcp::wire::Ipv4Address::new(a, b, c, d)).is_ok();
        }
        mdns.addr = iface.ipv4_addr().map(|addr| addr.octets());
    }

    /// The records, from the running firmware's descriptor (read once, at the first poll).
    #[cfg(feature = "mdns")]
    fn start_mdns<F: NorFlash>(&mut self, flash: &mut F) {
        let Some(mdns) = self.mdns.as_mut() else { return };
        let layout = self.listener.session().config().layout;
        let running = self.listener.running();
        let firmware = running.slot.and_then(|slot| {
            let mut bytes = [0u8; crate::descriptor::SIZE];
            flash.read(layout.slot(slot).offset + crate::layout::IMAGE_IROM_OFFSET, &mut bytes).ok()?;
            crate::descriptor::Descriptor::parse(&bytes).ok()
        });
        let key = self.listener.session().config().key.is_some();
        let records =
            crate::mdns::Records::new(&mdns.config, firmware.as_ref(), running.slot, key, self.port);
        mdns.responder = Some(crate::mdns::Responder::new(records));
    }

    /// Answers the queries that came in, and sends a due announcement.
    #[cfg(feature = "mdns")]
    #[inline(never)]
    fn serve_mdns(&mut self, now: Instant, sockets: &mut SocketSet<'_>) {
        use crate::mdns::{Destination, GROUP, PORT};
        let Some(mdns) = self.mdns.as_mut() else { return };
        let Some(responder) = mdns.responder.as_mut() else { return };
        responder.set_address(mdns.addr, now);
        let socket = sockets.get_mut::<udp::Socket>(mdns.socket);
        let [a, b, c, d] = GROUP;
        let group = smoltcp::wire::IpEndpoint::new(smoltcp::wire::Ipv4Address::new(a, b, c, d).into(), PORT);
        // At most the queries the buffer holds, then one announcement.
        for _ in 0..=MDNS_PACKETS {
            let (answer, to) = match socket.recv() {
                Ok((packet, meta)) => match responder.query(packet, meta.endpoint.port) {
                    Some(answer) if answer.destination() == Destination::Unicast => (answer, meta.endpoint),
                    Some(answer) => (answer, group),
                    None => continue,
                },
                Err(_) => match responder.announcement_due(now) {
                    Some(answer) => (answer, group),
                    None => return,
                },
            };
            let len = responder.reply_len(&answer);
            if let Ok(out) = socket.send(len, to) {
                responder.render(&answer, out);
            }
        }
    }

    fn serve_session<F: NorFlash, P: Platform>(
        &mut self,
        now: Instant,
        socket: &mut tcp::Socket<'_>,
        flash: &mut F,
        platform: &mut P,
    ) {
        use tcp::State;
        match socket.state() {
            State::Closed | State::TimeWait => {
                // TimeWait would keep the port from listening for 10 s; the peer has closed
                // already, so drop it.
                socket.abort();
                if self.listener.is_busy() {
                    self.listener.disconnected();
                }
                let _ = socket.listen(self.port);
                return;
            }
            State::Listen | State::SynReceived | State::SynSent => return,
            State::Established | State::CloseWait
                if !self.listener.is_busy()
                    && self.listener.accept_from(now, peer_of(socket), platform) == Admission::Refuse =>
            {
                socket.abort();
                return;
            }
            _ if !self.listener.is_busy() => {
                // A connection whose session already ended (dropped): finish it off.
                socket.abort();
                return;
            }
            _ => {}
        }
        self.listener.serve(now, &mut SmolConnection(socket), flash);
    }

    fn serve_reject(&mut self, now: Instant, socket: &mut tcp::Socket<'_>) {
        use tcp::State;
        // Whatever a refused client sends is dropped.
        let _ = socket.recv(|data| (data.len(), ()));
        match socket.state() {
            State::Closed | State::TimeWait => {
                socket.abort();
                self.refused_at = None;
                let _ = socket.listen(self.port);
            }
            State::Established | State::CloseWait => {
                let _ = socket.send_slice(Listener::refusal().as_bytes());
                socket.close();
                self.refused_at = Some(now);
            }
            State::Listen | State::SynReceived | State::SynSent => {}
            State::FinWait1 | State::FinWait2 | State::Closing | State::LastAck => {
                if self.refused_at.is_some_and(|since| Listener::refused_expired(since, now)) {
                    socket.abort();
                }
            }
        }
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The client's address, for the per-address lockout; folded here, where only the address
/// kinds this smoltcp build knows can occur (no IPv6 code without IPv6).
fn peer_of(socket: &tcp::Socket<'_>) -> PeerKey {
    PeerKey::of(socket.remote_endpoint().map(|endpoint| endpoint.addr.into()))
}

/// The session socket as the listener sees it.
struct SmolConnection<'s, 'b>(&'s mut tcp::Socket<'b>);

impl Connection for SmolConnection<'_, '_> {
    fn receive(&mut self, take: &mut dyn FnMut(&[u8]) -> usize) -> usize {
        self.0
            .recv(|data| {
                let n = take(data);
                (n, n)
            })
            .unwrap_or(0)
    }

    fn can_send_line(&self) -> bool {
        self.0.can_send() && self.0.send_capacity() - self.0.send_queue() >= MAX_REPLY_LINE
    }

    fn send_line(&mut self, line: &[u8]) {
        let _ = self.0.send_slice(line);
    }

    fn peer_closed(&self) -> bool {
        !self.0.may_recv() && self.0.recv_queue() == 0
    }

    /// smoltcp keeps sent bytes until they are acknowledged.
    fn all_sent(&self) -> bool {
        self.0.send_queue() == 0
    }

    fn close(&mut self) {
        self.0.close();
    }

    fn abort(&mut self) {
        self.0.abort();
    }
}
