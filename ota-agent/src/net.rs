//! The agent on smoltcp: [`ota_init`] is the one call an application makes, then it polls
//! the returned [`OtaAgent`] from its main loop.
//!
//! Two TCP sockets listen on the port. The first (large receive buffer) carries the one
//! session; a client arriving while that one is busy lands on the second (tiny buffers),
//! hears `ERR: Connection Already Exists` and is closed, never touching the session. The
//! sockets live in the application's `SocketSet` with buffers from [`OtaBuffers`], which
//! the application places in a `static`: no allocator, and nothing large on the stack.
//!
//! smoltcp hands a new connection to the first listening socket in the set, and the session
//! socket is added first, so a client only meets the second socket while a session is
//! open, or for the few milliseconds its connection takes to close (a client retrying
//! within that moment is told `Connection Already Exists`). A finished connection in
//! TIME-WAIT is dropped at once so the port listens again without smoltcp's 10 s wait.
//!
//! ```ignore
//! static mut OTA: OtaBuffers = OtaBuffers::new();
//! let mut agent = ota_init(AgentConfig::new(DEFAULT_LAYOUT), &mut sockets, unsafe { &mut *addr_of_mut!(OTA) });
//! loop {
//!     let now = clock.now();
//!     agent.poll_interface(now, &mut iface, &mut device, &mut sockets, &mut flash, &mut platform);
//! }
//! ```

use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};

use crate::auth::{Key, NONCE_LEN};
use crate::boot;
use crate::flash::NorFlash;
use crate::layout::{FlashLayout, SlotId};
use crate::protocol::{DEFAULT_PORT, MAX_REPLY_LINE, ReplyLine, in_irom};
use crate::session::{DEFAULT_IDLE_TIMEOUT, Phase, Session, SessionConfig};
use crate::writer::{SECTOR, SectorBuffer};

/// Default receive buffer of the session socket (the TCP window): three sectors. While the
/// core erases and programs one sector (it serves no packets meanwhile), the next is already
/// in and the host can send a third, so a push runs at the flash chip's pace up to about
/// 20 ms of round trip. Two segments (2920 bytes) left the core waiting for data a fifth of
/// the push (`cargo xtask bench` models both).
pub const DEFAULT_RX: usize = 3 * SECTOR;
/// Bytes handed to the session per poll: at most one sector's flash work between two runs
/// of the network stack, so the window it frees is advertised before the next stall.
const FEED_PER_POLL: usize = SECTOR;
/// Default transmit buffer: two reply lines.
pub const DEFAULT_TX: usize = 2 * MAX_REPLY_LINE;
/// The rejecting socket only ever sends one short line and discards what it receives.
const REJECT_RX: usize = 64;
const REJECT_TX: usize = 64;

/// What is board-specific.
pub trait Platform {
    /// Restart into the new firmware. Called once, 2 s after a successful update; normally
    /// does not return.
    fn reboot(&mut self);

    /// Fills `buf` with unpredictable bytes (a hardware RNG): each session's nonce, when
    /// the agent has a key. Predictable bytes would let a recorded session be replayed.
    fn fill_random(&mut self, buf: &mut [u8]);
}

/// How the agent runs.
#[derive(Clone, Copy, Debug)]
pub struct AgentConfig {
    pub layout: &'static FlashLayout,
    pub port: u16,
    /// A silent client is dropped after this long.
    pub idle_timeout: Duration,
    /// The slot running now. `None` (the default) reads it from rBoot's config at the first
    /// poll; set it when the platform knows better (rBoot's GPIO or temporary boot).
    pub running_slot: Option<SlotId>,
    /// The pre-shared key: with one, only a client that proves it holds the key can push
    /// ([`crate::auth`]). `None` (the default) lets any client push, as the seed did.
    pub key: Option<&'static Key>,
}

impl AgentConfig {
    pub const fn new(layout: &'static FlashLayout) -> AgentConfig {
        AgentConfig {
            layout,
            port: DEFAULT_PORT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            running_slot: None,
            key: None,
        }
    }
}

/// All the memory the agent uses, for a `static`. `RX`/`TX` size the session socket.
pub struct OtaBuffers<const RX: usize = DEFAULT_RX, const TX: usize = DEFAULT_TX> {
    sector: SectorBuffer,
    rx: [u8; RX],
    tx: [u8; TX],
    reject_rx: [u8; REJECT_RX],
    reject_tx: [u8; REJECT_TX],
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
    session: Session<'a>,
    session_socket: SocketHandle,
    reject_socket: SocketHandle,
    port: u16,
    running: Option<SlotId>,
    running_known: bool,
    /// When the rejecting socket started closing, to drop a client that never closes.
    reject_closing_since: Option<Instant>,
    rebooted: bool,
}

/// Registers the agent's listening sockets in `sockets` (which needs two free entries) and
/// returns the agent.
pub fn ota_init<'a, const RX: usize, const TX: usize>(
    config: AgentConfig,
    sockets: &mut SocketSet<'a>,
    buffers: &'a mut OtaBuffers<RX, TX>,
) -> OtaAgent<'a> {
    let OtaBuffers { sector, rx, tx, reject_rx, reject_tx } = buffers;
    // smoltcp hands a new connection to the first listening socket in the set; the session
    // socket is added first so it gets the client whenever it is free.
    let session_socket = sockets
        .add(tcp::Socket::new(tcp::SocketBuffer::new(&mut rx[..]), tcp::SocketBuffer::new(&mut tx[..])));
    let reject_socket = sockets.add(tcp::Socket::new(
        tcp::SocketBuffer::new(&mut reject_rx[..]),
        tcp::SocketBuffer::new(&mut reject_tx[..]),
    ));
    let session_config = SessionConfig {
        idle_timeout: config.idle_timeout,
        key: config.key,
        ..SessionConfig::new(config.layout)
    };
    OtaAgent {
        session: Session::new(session_config, sector),
        session_socket,
        reject_socket,
        port: config.port,
        running: config.running_slot,
        running_known: config.running_slot.is_some(),
        reject_closing_since: None,
        rebooted: false,
    }
}

impl<'a> OtaAgent<'a> {
    /// Serves the sockets: accepts, feeds the session, sends replies, closes, re-listens,
    /// and calls `platform.reboot()` when an update is done. Call it after each
    /// `Interface::poll` (or use [`OtaAgent::poll_interface`]).
    pub fn poll<F: NorFlash, P: Platform>(
        &mut self,
        now: Instant,
        sockets: &mut SocketSet<'_>,
        flash: &mut F,
        platform: &mut P,
    ) {
        if !self.running_known {
            self.running = boot::running_slot(flash, self.session.config().layout);
            self.running_known = true;
        }
        self.serve_session(now, sockets.get_mut::<tcp::Socket>(self.session_socket), flash, platform);
        self.serve_reject(now, sockets.get_mut::<tcp::Socket>(self.reject_socket));
        if let Some(at) = self.session.reboot_at()
            && now >= at
            && !self.rebooted
        {
            self.rebooted = true;
            platform.reboot();
        }
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
        iface.poll(now, device, sockets);
        self.poll(now, sockets, flash, platform);
        iface.poll(now, device, sockets);
    }

    /// The session, for status: progress, the last failure, a pending reboot.
    pub fn session(&self) -> &Session<'a> {
        &self.session
    }

    /// The slot the device runs, once known (after the first poll).
    pub fn running_slot(&self) -> Option<SlotId> {
        self.running
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
                self.session.reset();
                let _ = socket.listen(self.port);
                return;
            }
            State::Listen | State::SynReceived | State::SynSent => return,
            State::Established | State::CloseWait if self.session.phase() == Phase::Idle => {
                self.session.start(now, self.running);
                if self.session.config().key.is_some() {
                    let mut nonce = [0u8; NONCE_LEN];
                    platform.fill_random(&mut nonce);
                    self.session.provide_nonce(nonce);
                }
            }
            _ => {}
        }
        if self.session.phase() == Phase::Idle {
            // The connection outlived its session (reset above never happens mid-way).
            socket.abort();
            return;
        }
        let mut budget = FEED_PER_POLL;
        loop {
            self.send_replies(socket);
            let session = &mut self.session;
            let consumed = socket.recv(|data| {
                let n = session.receive(now, &data[..data.len().min(budget)], flash);
                (n, n)
            });
            let consumed = consumed.unwrap_or(0);
            budget -= consumed;
            if consumed == 0 || budget == 0 {
                break;
            }
        }
        if !socket.may_recv() && socket.recv_queue() == 0 {
            self.session.input_closed(now);
        }
        self.session.poll(now, flash);
        self.send_replies(socket);
        match self.session.phase() {
            Phase::Closing if !self.session.has_reply() => socket.close(),
            Phase::Abort => {
                socket.abort();
                self.session.reset();
            }
            _ => {}
        }
    }

    /// Each reply line goes out in one write; the seed client expects one line per `recv`.
    fn send_replies(&mut self, socket: &mut tcp::Socket<'_>) {
        while socket.can_send() && socket.send_capacity() - socket.send_queue() >= MAX_REPLY_LINE {
            let Some(line) = self.session.next_reply() else { return };
            let _ = socket.send_slice(line.as_bytes());
        }
    }

    fn serve_reject(&mut self, now: Instant, socket: &mut tcp::Socket<'_>) {
        use tcp::State;
        // Whatever a rejected client sends is dropped.
        let _ = socket.recv(|data| (data.len(), ()));
        match socket.state() {
            State::Closed | State::TimeWait => {
                socket.abort();
                self.reject_closing_since = None;
                let _ = socket.listen(self.port);
            }
            State::Established | State::CloseWait => {
                let _ = socket.send_slice(ReplyLine::error_message(&in_irom::reason::BUSY).as_bytes());
                socket.close();
                self.reject_closing_since = Some(now);
            }
            State::Listen | State::SynReceived | State::SynSent => {}
            State::FinWait1 | State::FinWait2 | State::Closing | State::LastAck => {
                if let Some(since) = self.reject_closing_since
                    && now >= since + self.session.config().idle_timeout
                {
                    socket.abort();
                }
            }
        }
    }
}
