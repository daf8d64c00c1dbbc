//! A fake of the NONOS SDK functions the OTA agent calls, on the host, over real TCP on
//! 127.0.0.1: what lets the espconn driver (and `ota_init()` from C) be tested without a
//! board. It keeps the SDK's rules as its sources (third_party/lwip/app/espconn*.c, 3.0.x)
//! describe them, and records every breach as a violation:
//!
//! - the connect, receive and sent callbacks get the connection's own copy of the
//!   listener's `struct espconn` (callbacks copied from the listener at accept); the
//!   disconnect and reconnect callbacks get the listener's struct with the gone peer's
//!   address copied in;
//! - received bytes are a fresh buffer, poisoned and freed when the callback returns;
//! - `espconn_send` does not copy: the bytes are read when they go out, and a second send
//!   before the sent callback fails (`ESPCONN_ARG`, -12, as the sources return it);
//! - `espconn_disconnect`, `espconn_abort` and `system_upgrade_reboot` inside a callback are
//!   violations; `espconn_regist_time` and `espconn_tcp_set_max_con_allow` fail before
//!   `espconn_accept`;
//! - the idle timeout (`espconn_regist_time`) closes a connection that neither received
//!   nor had data acknowledged for that long; a connection over the limit is refused at
//!   accept, without a word;
//! - `espconn_recv_hold` stops the window: at most a window (`espconn_tcp_get_wnd` × 1460
//!   bytes) is delivered until `espconn_recv_unhold`; the rest waits in the kernel, so the
//!   client really is held back;
//! - `os_timer`s fire from the event loop, never inside another callback; arming an armed
//!   timer, setting its function while armed, or a delay outside the documented 5 ms to
//!   0x68D7A3 ms is a violation;
//! - `spi_flash_*` want 4-byte aligned buffers and lengths and act on a flash file with NOR
//!   rules ([`tcpflash_sim::FileFlash`]).
//!
//! The event loop runs on the thread that calls [`Device::run_until`] (or
//! `tcpflash_fake_run` from C), like the SDK's one task.
#![allow(unsafe_code)] // the SDK's C ABI: raw pointers to the agent's structs, each use says why

use std::ffi::{c_char, c_void};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ota_agent::espconn::ffi::{
    ConnectCallback, EspTcp, Espconn, EtsTimer, ReconnectCallback, RecvCallback, SentCallback, TimerFunc,
};
use ota_agent::flash::{NorFlash, ReadNorFlash};
use tcpflash_sim::FileFlash;

const ESPCONN_OK: i8 = 0;
const ESPCONN_RST: i8 = -9;
const ESPCONN_ARG: i8 = -12;
const ESPCONN_ISCONN: i8 = -15;
/// lwIP's `MEMP_NUM_TCP_PCB` in the SDK: connections a server takes unless told otherwise.
const DEFAULT_MAX_CONNECTIONS: u8 = 5;
const MSS: usize = 1460;
/// `enum espconn_state`: `ESPCONN_CONNECT`.
const STATE_CONNECT: u32 = 2;

/// How the fake board is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// The flash file (its length is the chip size).
    pub flash: PathBuf,
    /// What `system_get_flash_size_map` returns (2 to 6 are the OTA maps).
    pub size_map: u32,
    /// What `system_upgrade_userbin_check` returns: 0 user1, 1 user2.
    pub running_bin: u8,
    /// What `espconn_tcp_get_wnd` returns (windows of 1460 bytes).
    pub window_mss: u8,
    /// Where `system_get_time` starts: near `u32::MAX` to make it wrap during a test.
    pub time_offset_us: u32,
    /// What `wifi_get_ip_info` gives for the station: `None` until DHCP is done (0.0.0.0);
    /// [`Device::set_station_ip`] changes it while the board runs.
    pub station_ip: Option<[u8; 4]>,
}

impl Config {
    pub fn new(flash: &Path, size_map: u32, running_bin: u8) -> Config {
        Config {
            flash: flash.to_path_buf(),
            size_map,
            running_bin,
            window_mss: 4,
            time_offset_us: 0,
            station_ip: Some([127, 0, 0, 1]),
        }
    }
}

/// What the fake saw, for the test to check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// The last `system_upgrade_flag_set`.
    pub upgrade_flag: Option<u8>,
    /// `system_upgrade_reboot` was called (the loop then stops: the board restarts).
    pub rebooted: bool,
    /// Every rule the agent broke.
    pub violations: Vec<String>,
    /// `espconn_send` calls refused because a send was in flight.
    pub refused_sends: usize,
    /// Connections refused at accept (over the server's limit).
    pub refused_at_accept: usize,
    /// Connections the idle timeout closed.
    pub idle_closes: usize,
    /// `espconn_recv_unhold` calls (window releases).
    pub releases: usize,
    /// Connections open now.
    pub open_connections: usize,
    /// What `espconn_mdns_init` was given (the strings read as the SDK would).
    pub mdns: Option<MdnsRegistration>,
    /// `wifi_get_ip_info` calls while the station had no address yet.
    pub ip_polls_without_address: usize,
}

/// A `struct mdns_info` as the fake's `espconn_mdns_init` read it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MdnsRegistration {
    pub host_name: String,
    pub server_name: String,
    pub server_port: u16,
    pub ip: [u8; 4],
    pub txt: Vec<String>,
}

struct Server {
    espconn: *mut Espconn,
    listener: TcpListener,
    asked_port: u16,
    max_connections: u8,
    timeout: Option<Duration>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Closing {
    Graceful,
    Abort,
}

struct Conn {
    server: usize,
    stream: TcpStream,
    espconn: *mut Espconn,
    peer: SocketAddr,
    /// A send the SDK still has to put on the wire: the agent's bytes, not copied.
    pending: Option<(*const u8, usize)>,
    held: bool,
    held_len: usize,
    last_activity: Instant,
    closing: Option<Closing>,
}

struct Timer {
    timer: *mut EtsTimer,
    due: Instant,
    period: Option<Duration>,
}

struct World {
    config: Config,
    start: Instant,
    flash: FileFlash,
    servers: Vec<Server>,
    conns: Vec<Conn>,
    timers: Vec<Timer>,
    in_callback: bool,
    /// The `struct mdns_info` copy the SDK keeps (its string pointers included).
    mdns_info: Option<ota_agent::espconn::ffi::MdnsInfo>,
    status: Status,
}

/// The world behind the C functions.
struct Shared(Option<World>);

// SAFETY: the raw pointers inside point at the agent's statics and at connection structs
// this fake leaks; only the thread running the event loop (holding `Device`) calls through
// them, and the mutex serializes every access to the world itself.
unsafe impl Send for Shared {}

static WORLD: Mutex<Shared> = Mutex::new(Shared(None));
/// One fake board per process at a time (tests in one binary take turns).
static BOARD: Mutex<()> = Mutex::new(());

fn world() -> MutexGuard<'static, Shared> {
    WORLD.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `f` on the world; a call from the agent without a booted fake is a violation of
/// the test's set-up, reported by panicking.
fn with<R>(f: impl FnOnce(&mut World) -> R) -> R {
    let mut shared = world();
    f(shared.0.as_mut().expect("the fake SDK is not booted: call Device::boot first"))
}

impl World {
    fn violation(&mut self, what: String) {
        eprintln!("fake SDK: rule broken: {what}");
        self.status.violations.push(what);
    }

    /// The connection an espconn pointer names: its own copy, or the listener's struct
    /// with a peer address in it (`espconn_find_connection`).
    fn find(&self, espconn: *mut Espconn) -> Option<usize> {
        if let Some(index) = self.conns.iter().position(|conn| conn.espconn == espconn) {
            return Some(index);
        }
        let server = self.servers.iter().position(|server| server.espconn == espconn)?;
        // SAFETY: a server struct registered by `espconn_accept`, alive for the program.
        let tcp = unsafe { (*espconn).tcp.as_ref()? };
        let peer = SocketAddr::from((tcp.remote_ip, tcp.remote_port as u16));
        self.conns.iter().position(|conn| conn.server == server && conn.peer == peer)
    }

    fn now_us(&self) -> u32 {
        (self.start.elapsed().as_micros() as u64 as u32).wrapping_add(self.config.time_offset_us)
    }
}

/// An event of the loop, dispatched with the world unlocked (callbacks call back in).
enum Event {
    Connect(ConnectCallback, *mut Espconn),
    Receive(RecvCallback, *mut Espconn, Vec<u8>),
    Sent(SentCallback, *mut Espconn),
    /// The listener's struct, with the gone peer copied in.
    Disconnect(ConnectCallback, *mut Espconn, SocketAddr),
    Reconnect(ReconnectCallback, *mut Espconn, SocketAddr, i8),
    Timer(TimerFunc, *mut c_void),
}

/// Fills a freed struct with garbage and leaks it: a later use reads nonsense.
fn poison<T>(ptr: *mut T) {
    // SAFETY: `ptr` came from `Box::into_raw` and is never freed (leaked on purpose).
    unsafe { std::ptr::write_bytes(ptr.cast::<u8>(), 0xDB, std::mem::size_of::<T>()) };
}

impl World {
    /// The next thing the SDK would do, in its order: timers, sends going out, closes,
    /// new connections, received bytes, idle timeouts.
    fn next_event(&mut self) -> Option<Event> {
        if self.status.rebooted {
            return None;
        }
        let now = Instant::now();
        if let Some(index) = self.timers.iter().position(|timer| timer.due <= now) {
            let timer = self.timers.remove(index);
            if let Some(period) = timer.period {
                self.timers.push(Timer { due: now + period, ..timer });
            }
            // SAFETY: an armed timer the agent keeps in a static.
            let (func, arg) = unsafe { ((*timer.timer).func, (*timer.timer).arg) };
            match func {
                Some(func) => return Some(Event::Timer(func, arg)),
                None => self.violation("a timer armed without a function".into()),
            }
        }
        for index in 0..self.conns.len() {
            if let Some((data, len)) = self.conns[index].pending.take() {
                // SAFETY: the agent promised the bytes stay until the sent callback; this
                // reads them only now, as the SDK does.
                let bytes = unsafe { std::slice::from_raw_parts(data, len) }.to_vec();
                let conn = &mut self.conns[index];
                let _ = conn.stream.set_nonblocking(false);
                let written = conn.stream.write_all(&bytes);
                let _ = conn.stream.set_nonblocking(true);
                conn.last_activity = now;
                if written.is_ok() {
                    // SAFETY: the connection's own struct, alive until its disconnect.
                    if let Some(sent) = unsafe { (*conn.espconn).sent_callback } {
                        return Some(Event::Sent(sent, conn.espconn));
                    }
                }
            }
        }
        if let Some(index) = self.conns.iter().position(|conn| conn.closing.is_some()) {
            return Some(self.close(index, false));
        }
        for server in 0..self.servers.len() {
            match self.servers[server].listener.accept() {
                Ok((stream, peer)) => return self.accept(server, stream, peer),
                Err(error) if error.kind() == ErrorKind::WouldBlock => {}
                Err(error) => self.violation(format!("accept failed: {error}")),
            }
        }
        for index in 0..self.conns.len() {
            let window = usize::from(self.config.window_mss) * MSS;
            let conn = &mut self.conns[index];
            let room = if conn.held { window.saturating_sub(conn.held_len) } else { MSS };
            if room == 0 {
                continue;
            }
            let mut buf = vec![0u8; room.min(MSS)];
            match conn.stream.read(&mut buf) {
                Ok(0) => return Some(self.close(index, true)),
                Ok(n) => {
                    buf.truncate(n);
                    if conn.held {
                        conn.held_len += n;
                    }
                    conn.last_activity = now;
                    // SAFETY: the connection's own struct.
                    if let Some(receive) = unsafe { (*conn.espconn).recv_callback } {
                        return Some(Event::Receive(receive, conn.espconn, buf));
                    }
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return Some(self.reset(index)),
            }
        }
        for index in 0..self.conns.len() {
            let server = &self.servers[self.conns[index].server];
            if server.timeout.is_some_and(|timeout| now >= self.conns[index].last_activity + timeout) {
                self.status.idle_closes += 1;
                return Some(self.close(index, true));
            }
        }
        None
    }

    fn accept(&mut self, server: usize, stream: TcpStream, peer: SocketAddr) -> Option<Event> {
        let live = self.conns.iter().filter(|conn| conn.server == server).count();
        if live >= usize::from(self.servers[server].max_connections) {
            self.status.refused_at_accept += 1;
            let _ = stream.shutdown(Shutdown::Both);
            return None;
        }
        let _ = stream.set_nonblocking(true);
        let _ = stream.set_nodelay(true);
        let listener = self.servers[server].espconn;
        let SocketAddr::V4(v4) = peer else { return None };
        // SAFETY: the listener's struct and its TCP part, set up by the agent before
        // `espconn_accept` and alive for the program.
        let copy = unsafe {
            let tcp = &mut *(*listener).tcp;
            tcp.remote_ip = v4.ip().octets();
            tcp.remote_port = i32::from(v4.port());
            let own_tcp = Box::into_raw(Box::new(EspTcp {
                remote_port: tcp.remote_port,
                local_port: tcp.local_port,
                local_ip: [127, 0, 0, 1],
                remote_ip: tcp.remote_ip,
                connect_callback: tcp.connect_callback,
                reconnect_callback: tcp.reconnect_callback,
                disconnect_callback: tcp.disconnect_callback,
                write_finish_fn: tcp.write_finish_fn,
            }));
            Box::into_raw(Box::new(Espconn {
                kind: (*listener).kind,
                state: STATE_CONNECT,
                tcp: own_tcp,
                recv_callback: (*listener).recv_callback,
                sent_callback: (*listener).sent_callback,
                link_cnt: (*listener).link_cnt,
                reverse: (*listener).reverse,
            }))
        };
        self.conns.push(Conn {
            server,
            stream,
            espconn: copy,
            peer,
            pending: None,
            held: false,
            held_len: 0,
            last_activity: Instant::now(),
            closing: None,
        });
        // SAFETY: the copy just made.
        unsafe { (*(*copy).tcp).connect_callback }.map(|connect| Event::Connect(connect, copy))
    }

    /// Ends connection `index` (FIN, or RST for an abort) and reports it through the
    /// listener's disconnect callback, as `espconn_tcp_disconnect_successful` does.
    fn close(&mut self, index: usize, by_peer: bool) -> Event {
        let conn = self.conns.remove(index);
        if conn.closing == Some(Closing::Abort) {
            let _ = socket2::SockRef::from(&conn.stream).set_linger(Some(Duration::ZERO));
        } else if !by_peer {
            let _ = conn.stream.shutdown(Shutdown::Write);
        }
        drop(conn.stream);
        let listener = self.servers[conn.server].espconn;
        // SAFETY: the connection's own structs, freed (poisoned) from here on.
        let callback = unsafe { (*(*conn.espconn).tcp).disconnect_callback };
        poison(unsafe { (*conn.espconn).tcp });
        poison(conn.espconn);
        match callback {
            Some(callback) => Event::Disconnect(callback, listener, conn.peer),
            None => Event::Timer(noop, std::ptr::null_mut()),
        }
    }

    /// The peer reset the connection: the listener's reconnect callback.
    fn reset(&mut self, index: usize) -> Event {
        let conn = self.conns.remove(index);
        let listener = self.servers[conn.server].espconn;
        // SAFETY: as in `close`.
        let callback = unsafe { (*(*conn.espconn).tcp).reconnect_callback };
        poison(unsafe { (*conn.espconn).tcp });
        poison(conn.espconn);
        match callback {
            Some(callback) => Event::Reconnect(callback, listener, conn.peer, ESPCONN_RST),
            None => Event::Timer(noop, std::ptr::null_mut()),
        }
    }
}

unsafe extern "C" fn noop(_: *mut c_void) {}

/// Calls one event's callback, with the world unlocked and `in_callback` set.
fn dispatch(event: Event) {
    with(|world| world.in_callback = true);
    // SAFETY: the callbacks the agent registered, with the arguments the SDK would pass.
    unsafe {
        match event {
            Event::Connect(callback, conn) | Event::Sent(callback, conn) => callback(conn.cast()),
            Event::Receive(callback, conn, mut data) => {
                callback(conn.cast(), data.as_mut_ptr(), data.len() as u16);
                // The SDK frees the buffer when the callback returns.
                data.fill(0xA5);
            }
            Event::Disconnect(callback, listener, peer) => {
                set_peer(listener, peer);
                callback(listener.cast());
            }
            Event::Reconnect(callback, listener, peer, err) => {
                set_peer(listener, peer);
                callback(listener.cast(), err);
            }
            Event::Timer(func, arg) => {
                with(|world| world.in_callback = false);
                func(arg);
            }
        }
    }
    with(|world| world.in_callback = false);
}

/// # Safety
/// `listener` is a registered server struct.
unsafe fn set_peer(listener: *mut Espconn, peer: SocketAddr) {
    let SocketAddr::V4(v4) = peer else { return };
    // SAFETY: the caller's promise.
    let tcp = unsafe { &mut *(*listener).tcp };
    tcp.remote_ip = v4.ip().octets();
    tcp.remote_port = i32::from(v4.port());
}

/// The fake board, for one test at a time.
pub struct Device {
    _board: MutexGuard<'static, ()>,
}

impl Device {
    /// Powers the fake board on: a fresh SDK world over `config.flash`. Call the agent's
    /// `ota_init` next, as `user_init` would.
    pub fn boot(config: Config) -> Device {
        let board = BOARD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        boot_world(config);
        Device { _board: board }
    }

    /// The 127.0.0.1 port standing in for the port the agent listens on (`asked`).
    pub fn port(&self, asked: u16) -> Option<u16> {
        port_for(asked)
    }

    /// Runs the SDK's task until `stop` says so, the board reboots, or `timeout` passes.
    pub fn run_until(&self, timeout: Duration, mut stop: impl FnMut(&Status) -> bool) -> Status {
        let end = Instant::now() + timeout;
        loop {
            let status = self.status();
            if status.rebooted || stop(&status) || Instant::now() >= end {
                return status;
            }
            step();
        }
    }

    pub fn status(&self) -> Status {
        status()
    }

    /// The station gets (or loses) its address.
    pub fn set_station_ip(&self, ip: Option<[u8; 4]>) {
        with(|world| world.config.station_ip = ip);
    }

    /// What the strings `espconn_mdns_init` was given say now (the SDK reads them for as
    /// long as it runs).
    pub fn mdns_strings_now(&self) -> Option<MdnsRegistration> {
        with(|world| world.mdns_info.as_ref().map(read_mdns_info))
    }

    /// The flash as it is now.
    pub fn flash(&self) -> Vec<u8> {
        with(|world| world.flash.bytes().to_vec())
    }
}

fn boot_world(config: Config) {
    let flash = FileFlash::open(&config.flash).unwrap_or_else(|error| panic!("fake SDK flash: {error}"));
    let mut shared = world();
    // The last board's connection structs stay leaked (poisoned); its sockets close here.
    shared.0 = Some(World {
        config,
        start: Instant::now(),
        flash,
        servers: Vec::new(),
        conns: Vec::new(),
        timers: Vec::new(),
        in_callback: false,
        mdns_info: None,
        status: Status::default(),
    });
}

fn port_for(asked: u16) -> Option<u16> {
    with(|world| {
        world
            .servers
            .iter()
            .find(|server| server.asked_port == asked)
            .and_then(|server| server.listener.local_addr().ok())
            .map(|addr| addr.port())
    })
}

fn status() -> Status {
    with(|world| {
        let mut status = world.status.clone();
        status.open_connections = world.conns.len();
        status
    })
}

/// One round of the SDK's task: every event due, then a short sleep when idle.
fn step() {
    let mut any = false;
    // Bounded, so a caller's deadline is seen even if the agent keeps re-arming at 0 ms.
    for _ in 0..1000 {
        let Some(event) = with(World::next_event) else { break };
        any = true;
        dispatch(event);
    }
    if !any {
        std::thread::sleep(Duration::from_micros(500));
    }
}

// ---- the SDK's functions ----------------------------------------------------------------
//
// Safety, for every `unsafe` one: the pointers are the agent's own structs (listener,
// connection, timer) or buffers, valid for the call, as the SDK's API requires.

/// Looks up the connection `conn` names, or records the bad handle.
fn conn_index(world: &mut World, conn: *mut Espconn, what: &str) -> Option<usize> {
    let found = world.find(conn);
    if found.is_none() {
        world.violation(format!("{what} on a connection the SDK does not know"));
    }
    found
}

#[unsafe(no_mangle)]
#[allow(clippy::missing_safety_doc)] // the SDK's contract, above
pub unsafe extern "C" fn espconn_accept(conn: *mut Espconn) -> i8 {
    with(|world| {
        if world.servers.iter().any(|server| server.espconn == conn) {
            return ESPCONN_ISCONN;
        }
        // SAFETY: the agent's listener struct with its TCP part.
        let asked_port = unsafe { (*(*conn).tcp).local_port } as u16;
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port on 127.0.0.1");
        listener.set_nonblocking(true).expect("non-blocking listener");
        world.servers.push(Server {
            espconn: conn,
            listener,
            asked_port,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            timeout: Some(Duration::from_secs(10)),
        });
        ESPCONN_OK
    })
}

#[unsafe(no_mangle)]
#[allow(clippy::missing_safety_doc)] // the SDK's contract, above
pub unsafe extern "C" fn espconn_regist_connectcb(conn: *mut Espconn, cb: ConnectCallback) -> i8 {
    // SAFETY: the agent's struct with its TCP part.
    unsafe { (*(*conn).tcp).connect_callback = Some(cb) };
    ESPCONN_OK
}

#[unsafe(no_mangle)]
#[allow(clippy::missing_safety_doc)] // the SDK's contract, above
pub unsafe extern "C" fn espconn_regist_reconcb(conn: *mut Espconn, cb: ReconnectCallback) -> i8 {
    // SAFETY: as above.
    unsafe { (*(*conn).tcp).reconnect_callback = Some(cb) };
    ESPCONN_OK
}

#[unsafe(no_mangle)]
#[allow(clippy::missing_safety_doc)] // the SDK's contract, above
pub unsafe extern "C" fn espconn_regist_disconcb(conn: *mut Espconn, cb: ConnectCallback) -> i8 {
    // SAFETY: as above.
    unsafe { (*(*conn).tcp).disconnect_callback = Some(cb) };
    ESPCONN_OK
}

#[unsafe(no_mangle)]
#[allow(clippy::missing_safety_doc)] // the SDK's contract, above
pub unsafe extern "C" fn espconn_regist_recvcb(conn: *mut Espconn, cb: RecvCallback) -> i8 {
    // SAFETY: the agent's struct.
    unsafe { (*conn).recv_callback = Some(cb) };
    ESPCONN_OK
}

#[unsafe(no_mangle)]
#[allow(clippy::missing_safety_doc)] // the SDK's contract, above
pub unsafe extern "C" fn espconn_regist_sentcb(conn: *mut Espconn, cb: SentCallback) -> i8 {
    // SAFETY: the agent's struct.
    unsafe { (*conn).sent_callback = Some(cb) };
    ESPCONN_OK
}

#[unsafe(no_mangle)]
pub extern "C" fn espconn_regist_time(conn: *mut Espconn, interval: u32, type_flag: u8) -> i8 {
    with(|world| {
        let Some(server) = world.servers.iter_mut().find(|server| server.espconn == conn) else {
            world.violation("espconn_regist_time before espconn_accept (the SDK ignores it)".into());
            return ESPCONN_ARG;
        };
        if type_flag != 0 {
            return ESPCONN_ARG;
        }
        server.timeout = (interval > 0).then(|| Duration::from_secs(u64::from(interval)));
        ESPCONN_OK
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn espconn_tcp_set_max_con_allow(conn: *mut Espconn, num: u8) -> i8 {
    with(|world| {
        let Some(server) = world.servers.iter_mut().find(|server| server.espconn == conn) else {
            world.violation("espconn_tcp_set_max_con_allow before espconn_accept".into());
            return ESPCONN_ARG;
        };
        server.max_connections = num;
        ESPCONN_OK
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn espconn_tcp_get_wnd() -> u8 {
    with(|world| world.config.window_mss)
}

#[unsafe(no_mangle)]
pub extern "C" fn espconn_send(conn: *mut Espconn, data: *mut u8, len: u16) -> i8 {
    with(|world| {
        let Some(index) = conn_index(world, conn, "espconn_send") else { return ESPCONN_ARG };
        if data.is_null() || len == 0 {
            return ESPCONN_ARG;
        }
        let conn = &mut world.conns[index];
        if conn.pending.is_some() || conn.closing.is_some() {
            world.status.refused_sends += 1;
            return ESPCONN_ARG;
        }
        conn.pending = Some((data.cast_const(), usize::from(len)));
        ESPCONN_OK
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn espconn_disconnect(conn: *mut Espconn) -> i8 {
    end_connection(conn, Closing::Graceful, "espconn_disconnect")
}

#[unsafe(no_mangle)]
pub extern "C" fn espconn_abort(conn: *mut Espconn) -> i8 {
    end_connection(conn, Closing::Abort, "espconn_abort")
}

fn end_connection(conn: *mut Espconn, how: Closing, what: &str) -> i8 {
    with(|world| {
        if world.in_callback {
            world.violation(format!("{what} inside a callback"));
            return ESPCONN_ARG;
        }
        let Some(index) = conn_index(world, conn, what) else { return ESPCONN_ARG };
        world.conns[index].closing.get_or_insert(how);
        ESPCONN_OK
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn espconn_recv_hold(conn: *mut Espconn) -> i8 {
    with(|world| {
        let Some(index) = conn_index(world, conn, "espconn_recv_hold") else { return ESPCONN_ARG };
        let conn = &mut world.conns[index];
        if !conn.held {
            conn.held = true;
            conn.held_len = 0;
        }
        ESPCONN_OK
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn espconn_recv_unhold(conn: *mut Espconn) -> i8 {
    with(|world| {
        let Some(index) = conn_index(world, conn, "espconn_recv_unhold") else { return ESPCONN_ARG };
        let conn = &mut world.conns[index];
        if conn.held {
            conn.held = false;
            conn.held_len = 0;
            world.status.releases += 1;
        }
        ESPCONN_OK
    })
}

#[unsafe(no_mangle)]
#[allow(clippy::missing_safety_doc)] // the SDK's contract, above
pub unsafe extern "C" fn ets_timer_setfn(timer: *mut EtsTimer, func: TimerFunc, arg: *mut c_void) {
    with(|world| {
        if world.timers.iter().any(|armed| armed.timer == timer) {
            world.violation("os_timer_setfn on an armed timer".into());
        }
    });
    // SAFETY: the agent's timer struct.
    unsafe {
        (*timer).func = Some(func);
        (*timer).arg = arg;
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn ets_timer_arm_new(timer: *mut EtsTimer, time: u32, repeat: bool, ms_flag: bool) {
    with(|world| {
        if world.timers.iter().any(|armed| armed.timer == timer) {
            world.violation("os_timer_arm on an armed timer (disarm it first)".into());
            return;
        }
        if ms_flag && !(5..=0x68_D7A3).contains(&time) {
            world.violation(format!("os_timer_arm for {time} ms: the SDK documents 5 to 0x68D7A3"));
        }
        let delay = if ms_flag {
            Duration::from_millis(u64::from(time))
        } else {
            Duration::from_micros(u64::from(time))
        };
        world.timers.push(Timer { timer, due: Instant::now() + delay, period: repeat.then_some(delay) });
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn ets_timer_disarm(timer: *mut EtsTimer) {
    with(|world| world.timers.retain(|armed| armed.timer != timer));
}

#[unsafe(no_mangle)]
#[allow(clippy::missing_safety_doc)] // the SDK's contract: `info` is a `struct ip_info`
pub unsafe extern "C" fn wifi_get_ip_info(if_index: u8, info: *mut ota_agent::espconn::ffi::IpInfo) -> bool {
    with(|world| {
        if if_index != ota_agent::espconn::ffi::STATION_IF {
            world.violation(format!(
                "wifi_get_ip_info for interface {if_index}: the agent's board is a station"
            ));
        }
        let ip = match world.config.station_ip {
            Some(ip) => u32::from_ne_bytes(ip),
            None => {
                world.status.ip_polls_without_address += 1;
                0
            }
        };
        // SAFETY: the caller's struct.
        unsafe { info.write(ota_agent::espconn::ffi::IpInfo { ip, netmask: 0, gw: 0 }) };
        true
    })
}

/// As the SDK's `mdns_init`: copies the struct and keeps the strings' pointers (read at once
/// here, and again by [`Device::mdns_strings_now`]), needs an address.
#[unsafe(no_mangle)]
#[allow(clippy::missing_safety_doc)] // the SDK's contract: `info` is a `struct mdns_info`
pub unsafe extern "C" fn espconn_mdns_init(info: *mut ota_agent::espconn::ffi::MdnsInfo) {
    // SAFETY: the caller's struct.
    let info = unsafe { *info };
    let registration = read_mdns_info(&info);
    with(|world| {
        world.mdns_info = Some(info);
        if info.host_name.is_null() || info.server_name.is_null() {
            world.violation("espconn_mdns_init without a host or server name".into());
        }
        if info.ip_addr == 0 {
            world.violation("espconn_mdns_init with ipAddr 0 (the SDK refuses: \"mdns ip error\")".into());
        }
        if world.status.mdns.is_some() {
            world.violation("espconn_mdns_init twice".into());
        }
        world.status.mdns = Some(registration);
    });
}

/// The strings of a `struct mdns_info`.
fn read_mdns_info(info: &ota_agent::espconn::ffi::MdnsInfo) -> MdnsRegistration {
    let text = |ptr: *const c_char| -> Option<String> {
        // SAFETY: the SDK reads these as C strings; the agent promises they live for good.
        (!ptr.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(ptr) }.to_string_lossy().into_owned())
    };
    MdnsRegistration {
        host_name: text(info.host_name).unwrap_or_default(),
        server_name: text(info.server_name).unwrap_or_default(),
        server_port: info.server_port,
        ip: (info.ip_addr as u32).to_ne_bytes(),
        txt: info.txt_data.iter().map_while(|&ptr| text(ptr)).collect(),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn system_get_time() -> u32 {
    with(|world| world.now_us())
}

#[unsafe(no_mangle)]
#[allow(clippy::missing_safety_doc)] // the SDK's contract, above
pub unsafe extern "C" fn os_get_random(buf: *mut u8, len: usize) -> i32 {
    // SAFETY: the caller's buffer of `len` bytes.
    let buf = unsafe { std::slice::from_raw_parts_mut(buf, len) };
    if getrandom::fill(buf).is_ok() { 0 } else { -1 }
}

#[unsafe(no_mangle)]
pub extern "C" fn system_get_flash_size_map() -> u32 {
    with(|world| world.config.size_map)
}

#[unsafe(no_mangle)]
pub extern "C" fn system_upgrade_userbin_check() -> u8 {
    with(|world| world.config.running_bin)
}

#[unsafe(no_mangle)]
pub extern "C" fn system_upgrade_flag_set(flag: u8) {
    with(|world| world.status.upgrade_flag = Some(flag));
}

#[unsafe(no_mangle)]
pub extern "C" fn system_upgrade_reboot() {
    with(|world| {
        if world.in_callback {
            world.violation("system_upgrade_reboot inside a callback".into());
        }
        world.status.rebooted = true;
    });
}

const SPI_FLASH_RESULT_OK: u32 = 0;
const SPI_FLASH_RESULT_ERR: u32 = 1;

fn flash_op(what: &str, aligned: bool, op: impl FnOnce(&mut FileFlash) -> bool) -> u32 {
    with(|world| {
        if !aligned {
            world.violation(format!("{what}: buffer, address or length not 4-byte aligned"));
            return SPI_FLASH_RESULT_ERR;
        }
        if op(&mut world.flash) { SPI_FLASH_RESULT_OK } else { SPI_FLASH_RESULT_ERR }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn spi_flash_erase_sector(sector: u16) -> u32 {
    let at = u32::from(sector) * 0x1000;
    flash_op("spi_flash_erase_sector", true, |flash| flash.erase(at, at + 0x1000).is_ok())
}

#[unsafe(no_mangle)]
#[allow(clippy::missing_safety_doc)] // the SDK's contract, above
pub unsafe extern "C" fn spi_flash_write(dest: u32, src: *const u32, size: u32) -> u32 {
    let aligned = dest.is_multiple_of(4) && size.is_multiple_of(4) && (src as usize).is_multiple_of(4);
    flash_op("spi_flash_write", aligned, |flash| {
        // SAFETY: the caller's aligned buffer of `size` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(src.cast::<u8>(), size as usize) };
        flash.write(dest, bytes).is_ok()
    })
}

#[unsafe(no_mangle)]
#[allow(clippy::missing_safety_doc)] // the SDK's contract, above
pub unsafe extern "C" fn spi_flash_read(src: u32, dest: *mut u32, size: u32) -> u32 {
    let aligned = src.is_multiple_of(4) && size.is_multiple_of(4) && (dest as usize).is_multiple_of(4);
    flash_op("spi_flash_read", aligned, |flash| {
        // SAFETY: the caller's aligned buffer of `size` bytes.
        let bytes = unsafe { std::slice::from_raw_parts_mut(dest.cast::<u8>(), size as usize) };
        flash.read(src, bytes).is_ok()
    })
}

// ---- for C test programs ----------------------------------------------------------------

/// `int tcpflash_fake_boot(const char *flash, uint32_t size_map, uint8_t running_bin)`:
/// [`Device::boot`] for C (one board per process). 0 on success.
///
/// # Safety
/// `flash` is a NUL-terminated path.
#[unsafe(no_mangle)]
#[allow(clippy::missing_safety_doc)] // the SDK's contract, above
pub unsafe extern "C" fn tcpflash_fake_boot(flash: *const c_char, size_map: u32, running_bin: u8) -> i32 {
    // SAFETY: the caller's NUL-terminated string.
    let path = unsafe { std::ffi::CStr::from_ptr(flash) }.to_string_lossy().into_owned();
    boot_world(Config::new(Path::new(&path), size_map, running_bin));
    0
}

/// `uint16_t tcpflash_fake_port(uint16_t asked)`: the 127.0.0.1 port for the agent's.
#[unsafe(no_mangle)]
pub extern "C" fn tcpflash_fake_port(asked: u16) -> u16 {
    port_for(asked).unwrap_or(0)
}

/// `int tcpflash_fake_run(uint32_t max_ms)`: runs the SDK's task until the board reboots
/// (returns the upgrade flag then, or 256 when none was set) or `max_ms` pass (-1).
#[unsafe(no_mangle)]
pub extern "C" fn tcpflash_fake_run(max_ms: u32) -> i32 {
    let end = Instant::now() + Duration::from_millis(u64::from(max_ms));
    while Instant::now() < end {
        let status = status();
        if status.rebooted {
            return status.upgrade_flag.map_or(256, i32::from);
        }
        step();
    }
    -1
}

/// `uint32_t tcpflash_fake_violations(void)`: how many SDK rules the agent broke.
#[unsafe(no_mangle)]
pub extern "C" fn tcpflash_fake_violations() -> u32 {
    status().violations.len() as u32
}
