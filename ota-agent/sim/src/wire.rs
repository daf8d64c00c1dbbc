//! The agent on real smoltcp, in one process: `ota_init`'s agent and a smoltcp host socket
//! driven by the sans-IO [`Client`], on two interfaces joined by a simulated wire, with
//! smoltcp's `FaultInjector` dropping and corrupting packets and a configurable MTU.
//!
//! Time is simulated (each [`World::step`] advances it by [`STEP`]), so runs are
//! deterministic for a seed and no outcome depends on the speed of the machine. The agent
//! tests (`tests/smoltcp_push.rs`) and `cargo xtask proof`'s network campaign drive it.
//!
//! Every [`World`] and [`Push`] leaks its socket buffers (about 20 KB a world): the agent's
//! sockets borrow them for the program's life, as on the device, and smoltcp is built
//! without an allocator.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet, SocketStorage};
use smoltcp::phy::{self, DeviceCapabilities, FaultInjector, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

use ota_agent::auth::{self, Key};
use ota_agent::client::{Client, Event, Transmit};
use ota_agent::flash::RamNor;
use ota_agent::net::{AgentConfig, OtaAgent, OtaBuffers, Platform, ota_init};
use ota_agent::protocol::DEFAULT_PORT;

pub const DEVICE_IP: IpAddress = IpAddress::v4(10, 0, 0, 1);
pub const HOST_IP: IpAddress = IpAddress::v4(10, 0, 0, 2);
/// Simulated time per step of the world.
pub const STEP: Duration = Duration::from_millis(5);
/// An Ethernet-sized IP packet.
pub const DEFAULT_MTU: usize = 1500;

thread_local!(static NOW: std::cell::Cell<Instant> = const { std::cell::Cell::new(Instant::ZERO) });

/// `TRACE=1` prints every packet that reaches the wire (after the fault injector's transmit
/// drops, before its receive drops).
fn trace(what: &str, packet: &[u8], is_device: bool) {
    if std::env::var_os("TRACE").is_some() {
        let side = if is_device { "device" } else { "host" };
        eprintln!("{} {side} {what} {} bytes", NOW.with(|now| now.get()), packet.len());
    }
}

/// What the wire does to packets, the same both ways.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkFaults {
    /// Percent of packets lost.
    pub drop_percent: u8,
    /// Percent of packets with one byte changed (the IP and TCP checksums should catch it).
    pub corrupt_percent: u8,
    /// The largest IP packet either interface sends.
    pub mtu: usize,
    /// Seeds the fault injectors: the same seed, the same run.
    pub seed: u32,
}

impl LinkFaults {
    /// A perfect wire.
    pub const fn clean(seed: u32) -> LinkFaults {
        LinkFaults { drop_percent: 0, corrupt_percent: 0, mtu: DEFAULT_MTU, seed }
    }

    pub const fn dropping(drop_percent: u8, seed: u32) -> LinkFaults {
        LinkFaults { drop_percent, ..LinkFaults::clean(seed) }
    }
}

impl fmt::Display for LinkFaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "drop {}%, corrupt {}%, MTU {}, seed {}",
            self.drop_percent, self.corrupt_percent, self.mtu, self.seed
        )
    }
}

/// Two packet queues crossing: what one end transmits, the other receives.
#[derive(Default)]
struct Wire {
    to_device: VecDeque<Vec<u8>>,
    to_host: VecDeque<Vec<u8>>,
}

/// One interface's end of the wire.
pub struct WireEnd {
    wire: Rc<RefCell<Wire>>,
    is_device: bool,
    mtu: usize,
}

pub struct RxToken(Vec<u8>);

pub struct TxToken {
    wire: Rc<RefCell<Wire>>,
    is_device: bool,
}

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0; len];
        let result = f(&mut packet);
        trace("tx", &packet, self.is_device);
        let mut wire = self.wire.borrow_mut();
        if self.is_device {
            wire.to_host.push_back(packet)
        } else {
            wire.to_device.push_back(packet)
        }
        result
    }
}

impl phy::Device for WireEnd {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken;

    fn receive(&mut self, _: Instant) -> Option<(RxToken, TxToken)> {
        let mut wire = self.wire.borrow_mut();
        let inbox = if self.is_device { &mut wire.to_device } else { &mut wire.to_host };
        let packet = inbox.pop_front()?;
        trace("rx", &packet, self.is_device);
        Some((RxToken(packet), TxToken { wire: self.wire.clone(), is_device: self.is_device }))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken> {
        Some(TxToken { wire: self.wire.clone(), is_device: self.is_device })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

fn leak(len: usize) -> &'static mut [u8] {
    Box::leak(vec![0u8; len].into_boxed_slice())
}

/// The board around the agent: it records reboots instead of rebooting.
pub struct Board {
    pub reboots: Vec<Instant>,
    now: Instant,
    random: u64,
}

impl Platform for Board {
    fn reboot(&mut self) {
        self.reboots.push(self.now);
    }

    /// Never the same bytes twice in a world (splitmix64), which is all a nonce needs here.
    fn fill_random(&mut self, buf: &mut [u8]) {
        for byte in buf {
            self.random = self.random.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.random;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            *byte = (z ^ (z >> 31)) as u8;
        }
    }
}

fn interface(device: &mut FaultInjector<WireEnd>, ip: IpAddress) -> Interface {
    let mut iface = Interface::new(Config::new(HardwareAddress::Ip), device, Instant::ZERO);
    iface.update_ip_addrs(|addrs| addrs.push(IpCidr::new(ip, 24)).expect("one address fits"));
    iface
}

/// A push from the host: a smoltcp socket driven by the sans-IO client, answering the
/// device's slot with the seed's request (`send_image`).
pub struct Push {
    pub socket: SocketHandle,
    pub client: Client,
    /// user1's and user2's image; the device picks.
    pub images: [Vec<u8>; 2],
    /// What the client made of the device's replies, in order.
    pub events: Vec<Event>,
    /// Answer with the extension lines (`send_checked_image`: the image's SHA-256, and the
    /// proof when the client has a key) instead of the seed's request.
    pub checked: bool,
    connected: bool,
}

impl Push {
    fn new(sockets: &mut SocketSet<'static>, images: [Vec<u8>; 2]) -> Push {
        let socket = tcp::Socket::new(tcp::SocketBuffer::new(leak(4096)), tcp::SocketBuffer::new(leak(8192)));
        Push {
            socket: sockets.add(socket),
            client: Client::new(),
            images,
            events: Vec::new(),
            checked: false,
            connected: false,
        }
    }

    /// Whether the client's conversation is over (successfully or not).
    pub fn done(&self) -> bool {
        self.client.is_done()
    }

    /// The last event, once done: `Success` or `Failed(..)`.
    pub fn outcome(&self) -> Option<&Event> {
        self.events.last().filter(|_| self.done())
    }

    /// One turn of the host's driver loop.
    fn drive(&mut self, sockets: &mut SocketSet<'static>) {
        let socket = sockets.get_mut::<tcp::Socket>(self.socket);
        if self.client.is_done() {
            socket.close();
            return;
        }
        if socket.may_send() {
            self.connected = true;
        }
        while socket.can_recv() {
            let client = &mut self.client;
            let Ok((n, event)) = socket.recv(|data| {
                let (n, event) = client.receive(data);
                (n, (n, event))
            }) else {
                break;
            };
            if let Some(event) = event {
                self.events.push(event);
                if let Event::NextSlot(slot) = event {
                    let image = &self.images[slot.index()];
                    if self.checked {
                        self.client.send_checked_image(image.len() as u32, &auth::sha256(image));
                    } else {
                        self.client.send_image(image.len() as u32);
                    }
                }
            }
            if n == 0 || self.client.is_done() {
                break;
            }
        }
        loop {
            let n = match self.client.transmit() {
                Transmit::Bytes(bytes) => socket.send_slice(bytes).unwrap_or(0),
                Transmit::Image { offset, len } => {
                    let Some(slot) = self.client.slot() else { break };
                    let image = &self.images[slot.index()];
                    socket.send_slice(&image[offset as usize..(offset + len) as usize]).unwrap_or(0)
                }
                Transmit::Nothing => 0,
            };
            if n == 0 {
                break;
            }
            self.client.sent(n);
        }
        // Never connected (the SYN went unanswered until the socket's timeout) or closed
        // later: either way the conversation is over.
        let gave_up = !self.connected && socket.state() == tcp::State::Closed;
        if (self.connected || gave_up)
            && !socket.is_active()
            && let Some(event) = self.client.closed()
        {
            self.events.push(event);
        }
    }
}

/// The simulated time ran out before the condition held.
#[derive(Clone, PartialEq, Eq)]
pub struct NotDone(pub String);

impl fmt::Display for NotDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NotDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotDone {}

/// The whole world: device flash, agent, both interfaces, the faulty wire, a clock.
pub struct World {
    pub now: Instant,
    pub flash: RamNor<Vec<u8>>,
    pub board: Board,
    pub agent: OtaAgent<'static>,
    pub device_iface: Interface,
    pub device_phy: FaultInjector<WireEnd>,
    pub device_sockets: SocketSet<'static>,
    pub host_iface: Interface,
    pub host_phy: FaultInjector<WireEnd>,
    pub host_sockets: SocketSet<'static>,
    /// A host socket gives up after this long without an answer (smoltcp's socket timeout):
    /// a push over a dead link then ends with `Closed` instead of never.
    pub host_timeout: Option<Duration>,
}

impl World {
    /// The agent with its default config on a wire that drops `drop_percent` of packets.
    pub fn new(
        flash: RamNor<Vec<u8>>,
        layout: &'static ota_agent::layout::FlashLayout,
        faults: LinkFaults,
    ) -> World {
        World::with_config(flash, faults, AgentConfig::new(layout))
    }

    pub fn with_config(flash: RamNor<Vec<u8>>, faults: LinkFaults, config: AgentConfig) -> World {
        let wire = Rc::new(RefCell::new(Wire::default()));
        let end = |is_device| WireEnd { wire: wire.clone(), is_device, mtu: faults.mtu };
        let mut device_phy = FaultInjector::new(end(true), faults.seed);
        let mut host_phy = FaultInjector::new(end(false), faults.seed.wrapping_mul(7).wrapping_add(1));
        for phy in [&mut device_phy, &mut host_phy] {
            phy.set_drop_chance(faults.drop_percent);
            phy.set_corrupt_chance(faults.corrupt_percent);
        }
        let device_iface = interface(&mut device_phy, DEVICE_IP);
        let host_iface = interface(&mut host_phy, HOST_IP);
        let storage: &'static mut [SocketStorage<'static>] = Box::leak(Box::new([SocketStorage::EMPTY; 4]));
        let mut device_sockets = SocketSet::new(&mut storage[..]);
        let buffers: &'static mut OtaBuffers = Box::leak(Box::new(OtaBuffers::new()));
        let agent = ota_init(config, &mut device_sockets, buffers);
        let host_storage: &'static mut [SocketStorage<'static>] =
            Box::leak(Box::new([SocketStorage::EMPTY; 8]));
        World {
            now: Instant::ZERO,
            flash,
            board: Board { reboots: Vec::new(), now: Instant::ZERO, random: u64::from(faults.seed) },
            agent,
            device_iface,
            device_phy,
            device_sockets,
            host_iface,
            host_phy,
            host_sockets: SocketSet::new(&mut host_storage[..]),
            host_timeout: None,
        }
    }

    /// Advances the clock one step: the device polls, then the host drives `pushes`.
    pub fn step(&mut self, pushes: &mut [&mut Push]) {
        self.now += STEP;
        NOW.with(|n| n.set(self.now));
        self.board.now = self.now;
        self.agent.poll_interface(
            self.now,
            &mut self.device_iface,
            &mut self.device_phy,
            &mut self.device_sockets,
            &mut self.flash,
            &mut self.board,
        );
        self.host_iface.poll(self.now, &mut self.host_phy, &mut self.host_sockets);
        for push in pushes.iter_mut() {
            push.drive(&mut self.host_sockets);
        }
        self.host_iface.poll(self.now, &mut self.host_phy, &mut self.host_sockets);
    }

    /// Steps until `done` holds, for at most `limit` of simulated time.
    pub fn run_until(
        &mut self,
        pushes: &mut [&mut Push],
        limit: Duration,
        mut done: impl FnMut(&World, &[&mut Push]) -> bool,
    ) -> Result<(), NotDone> {
        let end = self.now + limit;
        while !done(self, pushes) {
            if self.now >= end {
                return Err(self.not_done(pushes, limit));
            }
            self.step(pushes);
        }
        Ok(())
    }

    /// Steps until every one of `pushes` is done, for at most `limit` of simulated time.
    pub fn run_pushes(&mut self, pushes: &mut [&mut Push], limit: Duration) -> Result<(), NotDone> {
        self.run_until(pushes, limit, |_, pushes| pushes.iter().all(|push| push.done()))
    }

    fn not_done(&self, pushes: &[&mut Push], limit: Duration) -> NotDone {
        let states: Vec<_> = pushes
            .iter()
            .map(|p| {
                (
                    self.host_sockets.get::<tcp::Socket>(p.socket).state(),
                    p.events.clone(),
                    p.client.progress(),
                )
            })
            .collect();
        let session = self.agent.listener().session();
        NotDone(format!(
            "not done after {limit} of simulated time: session {:?} {:?} {:?}, reboots {:?}, pushes {states:?}",
            session.phase(),
            session.progress(),
            session.last_failure(),
            self.board.reboots
        ))
    }

    /// A host socket connecting from `local_port` to the agent, for a push of `images`.
    pub fn push(&mut self, images: [Vec<u8>; 2], local_port: u16) -> Push {
        let push = Push::new(&mut self.host_sockets, images);
        let socket = self.host_sockets.get_mut::<tcp::Socket>(push.socket);
        socket.set_timeout(self.host_timeout);
        socket
            .connect(self.host_iface.context(), (DEVICE_IP, DEFAULT_PORT), local_port)
            .expect("a fresh socket connects");
        push
    }

    /// [`World::push`] with the extension lines, proving `key` when the device asks.
    pub fn push_with_key(&mut self, images: [Vec<u8>; 2], local_port: u16, key: &Key) -> Push {
        let mut push = self.push(images, local_port);
        push.client = Client::with_key(key);
        push.checked = true;
        push
    }

    /// Sends `bytes` from the host socket of `push` as the window allows, without driving its
    /// client (a hand-written client), for at most `limit` of simulated time.
    pub fn send_raw(&mut self, push: &Push, mut bytes: &[u8], limit: Duration) -> Result<(), NotDone> {
        let end = self.now + limit;
        while !bytes.is_empty() {
            if self.now >= end {
                return Err(NotDone(format!("the device took no more bytes within {limit}")));
            }
            let socket = self.host_sockets.get_mut::<tcp::Socket>(push.socket);
            if socket.can_send() {
                let n = socket.send_slice(bytes).expect("a socket that can send takes bytes");
                bytes = &bytes[n..];
            }
            self.step(&mut []);
        }
        Ok(())
    }

    /// Everything the host socket of `push` receives until the device closes or resets
    /// (or `limit` of simulated time passes).
    pub fn receive_all(&mut self, push: &Push, limit: Duration) -> Vec<u8> {
        let mut received = Vec::new();
        let end = self.now + limit;
        loop {
            if !self.step_and_take(push, &mut received) || self.now >= end {
                return received;
            }
        }
    }

    /// One step of the world, then what the host socket of `push` received onto `received`;
    /// whether the socket may still receive.
    fn step_and_take(&mut self, push: &Push, received: &mut Vec<u8>) -> bool {
        self.step(&mut []);
        let socket = self.host_sockets.get_mut::<tcp::Socket>(push.socket);
        while let Ok(bytes) = socket.recv(|data| (data.len(), data.to_vec())) {
            if bytes.is_empty() {
                break;
            }
            received.extend(bytes);
        }
        socket.may_recv()
    }

    /// Steps until the host socket of `push` holds a whole line, without driving its client.
    pub fn host_receives_line(&mut self, push: &Push, limit: Duration) -> Result<Vec<u8>, NotDone> {
        let mut received = Vec::new();
        let end = self.now + limit;
        while !received.ends_with(b"\r\n") {
            if self.now >= end {
                return Err(NotDone(format!("no whole line within {limit}: {:?}", received.escape_ascii())));
            }
            self.step_and_take(push, &mut received);
        }
        Ok(received)
    }
}
