//! The agent on real smoltcp: a smoltcp client, driven by the crate's sans-IO `Client`,
//! pushes images to `ota_init`'s agent through two interfaces on a simulated wire, with
//! smoltcp's `FaultInjector` dropping packets both ways. Time is simulated, so the runs are
//! deterministic and no test depends on the speed of the machine.

mod common;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use common::*;
use ota_agent::boot::BootConfig;
use ota_agent::client::{Client, ClientError, Event, Transmit};
use ota_agent::flash::RamNor;
use ota_agent::layout::SlotId;
use ota_agent::net::{AgentConfig, OtaAgent, OtaBuffers, Platform, ota_init};
use ota_agent::protocol::DEFAULT_PORT;
use ota_agent::session::Phase;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet, SocketStorage};
use smoltcp::phy::{self, DeviceCapabilities, FaultInjector, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

const DEVICE_IP: IpAddress = IpAddress::v4(10, 0, 0, 1);
const HOST_IP: IpAddress = IpAddress::v4(10, 0, 0, 2);
const STEP: Duration = Duration::from_millis(5);

thread_local!(static NOW: std::cell::Cell<Instant> = const { std::cell::Cell::new(Instant::ZERO) });

/// `TRACE=1 cargo test ...` prints every packet that reaches the wire (after the fault
/// injector's transmit drops, before its receive drops).
fn trace(what: &str, packet: &[u8], is_device: bool) {
    if std::env::var_os("TRACE").is_some() {
        let side = if is_device { "device" } else { "host" };
        eprintln!("{} {side} {what} {} bytes", NOW.with(|now| now.get()), packet.len());
    }
}

/// Two packet queues crossing: what one end transmits, the other receives.
#[derive(Default)]
struct Wire {
    to_device: VecDeque<Vec<u8>>,
    to_host: VecDeque<Vec<u8>>,
}

struct WireEnd {
    wire: Rc<RefCell<Wire>>,
    is_device: bool,
}

struct RxToken(Vec<u8>);

struct TxToken {
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
        caps.max_transmission_unit = 1500;
        caps
    }
}

/// A `'static` buffer without smoltcp's `alloc` feature (each test leaks a few KB).
fn leak(len: usize) -> &'static mut [u8] {
    Box::leak(vec![0; len].into_boxed_slice())
}

struct Board {
    reboots: Vec<Instant>,
    now: Instant,
}

impl Platform for Board {
    fn reboot(&mut self) {
        self.reboots.push(self.now);
    }

    /// Never the same bytes twice in a test run, which is all a nonce needs here.
    fn fill_random(&mut self, buf: &mut [u8]) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static DRAWS: AtomicU64 = AtomicU64::new(1);
        let mut rng = Rng::new(DRAWS.fetch_add(1, Ordering::Relaxed));
        buf.fill_with(|| rng.byte());
    }
}

fn interface(device: &mut FaultInjector<WireEnd>, ip: IpAddress) -> Interface {
    let mut iface = Interface::new(Config::new(HardwareAddress::Ip), device, Instant::ZERO);
    iface.update_ip_addrs(|addrs| addrs.push(IpCidr::new(ip, 24)).unwrap());
    iface
}

/// A push from the host: a smoltcp socket driven by the sans-IO client.
struct Push {
    socket: SocketHandle,
    client: Client,
    images: [Vec<u8>; 2],
    events: Vec<Event>,
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
            connected: false,
        }
    }

    fn connect(&mut self, iface: &mut Interface, sockets: &mut SocketSet<'static>, local_port: u16) {
        let socket = sockets.get_mut::<tcp::Socket>(self.socket);
        socket.connect(iface.context(), (DEVICE_IP, DEFAULT_PORT), local_port).unwrap();
    }

    fn done(&self) -> bool {
        self.client.is_done()
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
            let (n, event) = socket
                .recv(|data| {
                    let (n, event) = client.receive(data);
                    (n, (n, event))
                })
                .unwrap();
            if let Some(event) = event {
                self.events.push(event);
                if let Event::NextSlot(slot) = event {
                    self.client.send_image(self.images[slot.index()].len() as u32);
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
                    let image = &self.images[self.client.slot().unwrap().index()];
                    socket.send_slice(&image[offset as usize..(offset + len) as usize]).unwrap_or(0)
                }
                Transmit::Nothing => 0,
            };
            if n == 0 {
                break;
            }
            self.client.sent(n);
        }
        if self.connected
            && !socket.is_active()
            && let Some(event) = self.client.closed()
        {
            self.events.push(event);
        }
    }
}

/// The whole world: device flash, agent, both interfaces, the faulty wire, a clock.
struct World {
    now: Instant,
    flash: RamNor,
    board: Board,
    agent: OtaAgent<'static>,
    device_iface: Interface,
    device_phy: FaultInjector<WireEnd>,
    device_sockets: SocketSet<'static>,
    host_iface: Interface,
    host_phy: FaultInjector<WireEnd>,
    host_sockets: SocketSet<'static>,
}

impl World {
    fn new(flash: RamNor, drop_percent: u8, seed: u32) -> World {
        World::with_config(flash, drop_percent, seed, AgentConfig::new(LAYOUT))
    }

    fn with_config(flash: RamNor, drop_percent: u8, seed: u32, config: AgentConfig) -> World {
        let wire = Rc::new(RefCell::new(Wire::default()));
        let mut device_phy = FaultInjector::new(WireEnd { wire: wire.clone(), is_device: true }, seed);
        let mut host_phy = FaultInjector::new(WireEnd { wire, is_device: false }, seed.wrapping_mul(7) + 1);
        device_phy.set_drop_chance(drop_percent);
        host_phy.set_drop_chance(drop_percent);
        let device_iface = interface(&mut device_phy, DEVICE_IP);
        let host_iface = interface(&mut host_phy, HOST_IP);
        let storage: &'static mut [SocketStorage<'static>] = Box::leak(Box::new([SocketStorage::EMPTY; 4]));
        let mut device_sockets = SocketSet::new(&mut storage[..]);
        let buffers: &'static mut OtaBuffers = Box::leak(Box::new(OtaBuffers::new()));
        let agent = ota_init(config, &mut device_sockets, buffers);
        World {
            now: Instant::ZERO,
            flash,
            board: Board { reboots: Vec::new(), now: Instant::ZERO },
            agent,
            device_iface,
            device_phy,
            device_sockets,
            host_iface,
            host_phy,
            host_sockets: SocketSet::new(&mut Box::leak(Box::new([SocketStorage::EMPTY; 8]))[..]),
        }
    }

    fn step(&mut self, pushes: &mut [&mut Push]) {
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

    fn run_until(
        &mut self,
        pushes: &mut [&mut Push],
        limit: Duration,
        mut done: impl FnMut(&World, &[&mut Push]) -> bool,
    ) {
        let end = self.now + limit;
        while !done(self, pushes) {
            if self.now >= end {
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
                panic!(
                    "not done after {limit} of simulated time: session {:?} {:?} {:?}, reboots {:?}, pushes {states:?}",
                    self.agent.session().phase(),
                    self.agent.session().progress(),
                    self.agent.session().last_failure(),
                    self.board.reboots
                );
            }
            self.step(pushes);
        }
    }

    fn push(&mut self, images: [Vec<u8>; 2], local_port: u16) -> Push {
        let mut push = Push::new(&mut self.host_sockets, images);
        push.connect(&mut self.host_iface, &mut self.host_sockets, local_port);
        push
    }
}

fn images(seed: u64, code_len: usize) -> [Vec<u8>; 2] {
    [image_for(SlotId::User1, code_len, seed), image_for(SlotId::User2, code_len, seed + 1)]
}

fn current_slot(flash: &RamNor) -> SlotId {
    BootConfig::parse(config_bytes(flash)[..25].try_into().unwrap()).unwrap().current_slot(LAYOUT).unwrap()
}

#[test]
fn an_image_pushed_over_a_lossy_link_lands_byte_for_byte_and_switches() {
    // TCP's retransmission back-off under heavy loss can exceed the 30 s idle timeout; that
    // timeout has its own test.
    let config = AgentConfig { idle_timeout: Duration::from_secs(300), ..AgentConfig::new(LAYOUT) };
    for (drop_percent, seed) in [(0, 1), (2, 2), (5, 3), (5, 4), (10, 5), (10, 6)] {
        let images = images(seed as u64, 60_000);
        let mut world = World::with_config(factory_flash(SlotId::User1), drop_percent, seed, config);
        let mut push = world.push(images.clone(), 49152);
        world.run_until(&mut [&mut push], Duration::from_secs(600), |world, pushes| {
            pushes[0].done() && !world.board.reboots.is_empty()
        });
        eprintln!("drop {drop_percent}%: done after {} simulated", world.now);
        assert_eq!(
            push.events,
            [Event::NextSlot(SlotId::User2), Event::Ready, Event::Flashing, Event::Success],
            "drop {drop_percent}%"
        );
        let image = &images[1];
        assert_eq!(slot_bytes(&world.flash, SlotId::User2, image.len()), &image[..], "drop {drop_percent}%");
        assert_eq!(current_slot(&world.flash), SlotId::User2);
        assert_eq!(world.board.reboots.len(), 1);
        let success_at = world.agent.session().reboot_at().unwrap() - Duration::from_secs(2);
        assert!(world.board.reboots[0] >= success_at + Duration::from_secs(2));
    }
}

#[test]
fn a_bad_image_is_refused_and_the_next_push_succeeds_right_away() {
    let mut images = images(10, 20_000);
    let good = images[1].clone();
    images[1][5000] ^= 0x10;
    let mut world = World::new(factory_flash(SlotId::User1), 5, 10);
    let mut bad = world.push(images.clone(), 49152);
    world.run_until(&mut [&mut bad], Duration::from_secs(300), |_, pushes| pushes[0].done());
    assert_eq!(bad.events[..3], [Event::NextSlot(SlotId::User2), Event::Ready, Event::Invalid]);
    let Event::Failed(ClientError::ImageRejected(reason)) = bad.events[3] else { panic!("{:?}", bad.events) };
    assert!(reason.to_string().starts_with("CRC mismatch"), "{reason}");
    assert_eq!(current_slot(&world.flash), SlotId::User1);
    // Until the refused connection has closed on both sides, a newcomer is turned away.
    world.run_until(&mut [&mut bad], Duration::from_secs(60), |world, _| {
        world.agent.session().phase() == Phase::Idle
    });

    images[1] = good.clone();
    let mut retry = world.push(images, 49153);
    world.run_until(&mut [&mut retry], Duration::from_secs(300), |_, pushes| pushes[0].done());
    assert_eq!(retry.events.last(), Some(&Event::Success), "{:?}", retry.events);
    assert_eq!(slot_bytes(&world.flash, SlotId::User2, good.len()), &good[..]);
    assert_eq!(current_slot(&world.flash), SlotId::User2);
}

#[test]
fn a_second_client_is_turned_away_without_disturbing_the_first() {
    let images = images(20, 60_000);
    let mut world = World::new(factory_flash(SlotId::User1), 0, 20);
    let mut first = world.push(images.clone(), 49152);
    // The first client is mid-image when the second one arrives.
    world.run_until(&mut [&mut first], Duration::from_secs(60), |world, _| {
        world.agent.session().progress().is_some_and(|(received, _)| received > 10_000)
    });
    let mut second = world.push(images.clone(), 49153);
    world.run_until(&mut [&mut first, &mut second], Duration::from_secs(60), |_, pushes| pushes[1].done());
    let Event::Failed(ClientError::Device(reason)) = second.events[0] else { panic!("{:?}", second.events) };
    assert_eq!(reason.to_string(), "Connection Already Exists");
    assert_eq!(world.agent.session().phase(), Phase::Open, "the first session goes on");

    // A third client that connects and vanishes with a reset does not disturb it either.
    // (The second client, done, closes its side; the turned-away connection then ends.)
    world.run_until(&mut [&mut first, &mut second], Duration::from_secs(60), |world, _| {
        world.agent.session().progress().is_some_and(|(received, _)| received > 20_000)
    });
    let mut third = world.push(images.clone(), 49154);
    world.run_until(&mut [&mut first, &mut second, &mut third], Duration::from_secs(60), |world, pushes| {
        world.host_sockets.get::<tcp::Socket>(pushes[2].socket).may_send()
    });
    world.host_sockets.get_mut::<tcp::Socket>(third.socket).abort();
    assert_eq!(world.agent.session().phase(), Phase::Open);
    world.run_until(&mut [&mut first], Duration::from_secs(600), |_, pushes| pushes[0].done());
    assert_eq!(first.events, [Event::NextSlot(SlotId::User2), Event::Ready, Event::Flashing, Event::Success]);
    assert_eq!(slot_bytes(&world.flash, SlotId::User2, images[1].len()), &images[1][..]);
    assert_eq!(current_slot(&world.flash), SlotId::User2);
}

#[test]
fn a_client_that_vanishes_mid_image_frees_the_agent_and_switches_nothing() {
    let images = images(30, 60_000);
    let mut world = World::new(factory_flash(SlotId::User1), 0, 30);
    let config = config_bytes(&world.flash);
    let mut first = world.push(images.clone(), 49152);
    world.run_until(&mut [&mut first], Duration::from_secs(60), |world, _| {
        world.agent.session().progress().is_some_and(|(received, _)| received > 20_000)
    });
    world.host_sockets.get_mut::<tcp::Socket>(first.socket).abort();
    world
        .run_until(&mut [], Duration::from_secs(60), |world, _| world.agent.session().phase() == Phase::Idle);
    assert_eq!(config_bytes(&world.flash), config);

    let mut second = world.push(images.clone(), 49153);
    world.run_until(&mut [&mut second], Duration::from_secs(600), |_, pushes| pushes[0].done());
    assert_eq!(second.events.last(), Some(&Event::Success), "{:?}", second.events);
    assert_eq!(slot_bytes(&world.flash, SlotId::User2, images[1].len()), &images[1][..]);
}

#[test]
fn a_silent_client_is_dropped_after_the_idle_timeout() {
    let images = images(40, 1000);
    let mut world = World::new(factory_flash(SlotId::User1), 0, 40);
    let silent = world.push(images, 49152);
    world.run_until(&mut [], Duration::from_secs(5), |world, _| world.agent.session().phase() == Phase::Open);
    let opened = world.now;
    // Nothing is driven on the host side: the client never sends a byte.
    world
        .run_until(&mut [], Duration::from_secs(60), |world, _| world.agent.session().phase() != Phase::Open);
    assert!(world.now >= opened + Duration::from_secs(30));
    assert!(world.now < opened + Duration::from_secs(31));
    // What the host received: exactly the timeout line.
    assert_eq!(world.host_receives_line(&silent), b"ERR: Idle timeout\r\n");
}

impl World {
    /// Steps until the host socket of `push` holds a whole line, without driving the client.
    fn host_receives_line(&mut self, push: &Push) -> Vec<u8> {
        let mut received = Vec::new();
        let end = self.now + Duration::from_secs(30);
        while !received.ends_with(b"\r\n") {
            assert!(self.now < end);
            self.step(&mut []);
            let socket = self.host_sockets.get_mut::<tcp::Socket>(push.socket);
            while let Ok(n) = socket.recv(|data| (data.len(), data.to_vec())) {
                if n.is_empty() {
                    break;
                }
                received.extend(n);
            }
        }
        received
    }
}
