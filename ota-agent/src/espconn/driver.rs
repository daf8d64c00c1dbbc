//! The espconn driver's logic, without the SDK: what to do on each callback and timer. The
//! rules themselves are the [`Listener`]'s; this maps them onto the SDK's callback world:
//!
//! - received bytes arrive in a buffer the SDK frees when the callback returns, so they are
//!   copied into a ring and fed to the session from a timer task, at most a sector per run,
//!   so lwIP acknowledges and the WiFi stack runs between two flash stalls;
//! - the SDK reopens the TCP window as soon as a callback has the data, so the connection is
//!   kept on `espconn_recv_hold` and the window released (unhold, hold) only while the ring
//!   has room for a whole window more: the ring never overflows;
//! - `espconn_send` does not copy: one reply line is in flight, from the driver's own
//!   buffer, until the sent callback;
//! - disconnecting, aborting and rebooting happen only in the timer task, never inside a
//!   callback (the SDK forbids it);
//! - a client arriving while a session runs hears `ERR: Connection Already Exists` and is
//!   disconnected once that line is out, or dropped after [`REFUSED_LINGER`].
//!
//! The SDK names a connection by the peer's address in every callback (the disconnect and
//! reconnect callbacks get the listener's struct with the peer copied in), so that is how
//! the driver tells connections apart; the per-connection handle is used only while the
//! connection lives.

use smoltcp::time::Instant;

use crate::auth::PeerKey;
use crate::boot::Running;
use crate::flash::NorFlash;
use crate::layout::SlotId;
use crate::listener::{Admission, Connection, Listener, Platform, REFUSED_LINGER};
use crate::protocol::{MAX_REPLY_LINE, ReplyLine};
use crate::session::SessionConfig;
use crate::writer::{SECTOR, SectorBuffer};

/// Bytes of received data the driver buffers: two sectors, more than the SDK's default
/// TCP window (4 × 1460), so a whole window can be in flight while the session writes a
/// sector. With a larger window (`espconn_tcp_set_wnd`) the hold is released only once the
/// ring is empty, and a window that still does not fit is drained in the callback.
pub const RX: usize = 2 * SECTOR;
/// Refused clients tracked at once (the listener allows two connections: the session and
/// one refused client; the SDK refuses a third at accept).
pub const MAX_REFUSED: usize = 2;

/// A connection's peer, as every espconn callback gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub ip: [u8; 4],
    pub port: u16,
}

/// What the driver asks of the SDK. `H` is the SDK's per-connection handle (a pointer to
/// the connection's `struct espconn` on the device).
pub trait Espconn {
    type Handle: Copy;

    /// `espconn_send`: `data` stays untouched until the sent callback (the SDK does not
    /// copy it). Returns the SDK's status (0 = queued).
    fn send(&mut self, conn: Self::Handle, data: &[u8]) -> i8;
    /// `espconn_disconnect` (never called inside a callback).
    fn disconnect(&mut self, conn: Self::Handle);
    /// `espconn_abort` (never called inside a callback).
    fn abort(&mut self, conn: Self::Handle);
    /// `espconn_recv_hold`.
    fn hold(&mut self, conn: Self::Handle) -> i8;
    /// `espconn_recv_unhold`.
    fn unhold(&mut self, conn: Self::Handle) -> i8;
    /// The TCP window in bytes (`espconn_tcp_get_wnd()` × MSS).
    fn window(&self) -> usize;
    /// Runs [`Driver::run`] after `delay_ms` (an `os_timer`; re-arming replaces the last).
    fn arm(&mut self, delay_ms: u32);
}

/// The connection that holds the session.
struct SessionConn<H> {
    peer: Peer,
    handle: H,
    /// A reply line is queued in the SDK and its sent callback has not come.
    in_flight: bool,
    /// The listener wants the connection closed (FIN) once the last line is out.
    close: bool,
    /// The listener or a failed send wants the connection dropped (RST).
    abort: bool,
    /// `espconn_disconnect` was called: wait for the disconnect callback.
    closing: bool,
    /// The connection is on `espconn_recv_hold`.
    held: bool,
    /// The disconnect callback came (espconn closes the whole connection at the peer's FIN):
    /// the handle is gone, but the bytes it brought are still fed and the close counts as
    /// the end of the input, so a verified image still commits (the seed's client closes
    /// right after it reads `Flashing`).
    gone: bool,
}

/// A client refused while a session runs.
struct Refused<H> {
    peer: Peer,
    handle: H,
    since: Instant,
    line: ReplyLine,
    /// The refusal line was queued and not yet sent.
    in_flight: bool,
    closing: bool,
}

/// The driver's memory: the received bytes waiting for the session and the reply line in
/// flight. Zeroed, so a `static` of it costs no image bytes (`.bss`).
pub struct DriverBuffers {
    ring: Ring,
    /// The reply line in flight (`espconn_send` does not copy).
    tx: [u8; MAX_REPLY_LINE],
}

impl DriverBuffers {
    pub const fn new() -> DriverBuffers {
        DriverBuffers { ring: Ring::new(), tx: [0; MAX_REPLY_LINE] }
    }
}

impl Default for DriverBuffers {
    fn default() -> Self {
        Self::new()
    }
}

/// The ring of received bytes waiting for the session.
struct Ring {
    buf: [u8; RX],
    start: usize,
    len: usize,
}

impl Ring {
    const fn new() -> Ring {
        Ring { buf: [0; RX], start: 0, len: 0 }
    }

    fn free(&self) -> usize {
        RX - self.len
    }

    /// Appends all of `data`; the caller made sure it fits.
    fn push(&mut self, data: &[u8]) {
        debug_assert!(data.len() <= self.free());
        let mut at = (self.start + self.len) % RX;
        for chunk in [&data[..data.len().min(RX - at)], &data[data.len().min(RX - at)..]] {
            self.buf[at..at + chunk.len()].copy_from_slice(chunk);
            at = (at + chunk.len()) % RX;
        }
        self.len += data.len();
    }

    /// Offers the oldest contiguous bytes to `take`; drops what it consumed.
    fn offer(&mut self, take: &mut dyn FnMut(&[u8]) -> usize) -> usize {
        if self.len == 0 {
            return 0;
        }
        let contiguous = self.len.min(RX - self.start);
        let n = take(&self.buf[self.start..self.start + contiguous]).min(contiguous);
        self.start = (self.start + n) % RX;
        self.len -= n;
        if self.len == 0 {
            self.start = 0;
        }
        n
    }

    fn clear(&mut self) {
        self.start = 0;
        self.len = 0;
    }
}

/// The agent over espconn: one [`Listener`], the received bytes, the reply in flight.
pub struct Driver<'a, H: Copy> {
    listener: Listener<'a>,
    session: Option<SessionConn<H>>,
    refused: [Option<Refused<H>>; MAX_REFUSED],
    ring: &'a mut Ring,
    tx: &'a mut [u8; MAX_REPLY_LINE],
}

impl<'a, H: Copy> Driver<'a, H> {
    pub fn new(
        config: SessionConfig,
        sector: &'a mut SectorBuffer,
        buffers: &'a mut DriverBuffers,
        running: Option<SlotId>,
    ) -> Driver<'a, H> {
        buffers.ring.clear();
        // Espressif's bootloader keeps no trials: an update switches for good.
        let mut listener = Listener::new(config, sector);
        listener.set_running(Running::untracked(running));
        Driver {
            listener,
            session: None,
            refused: [None, None],
            ring: &mut buffers.ring,
            tx: &mut buffers.tx,
        }
    }

    /// The rules' state, for status.
    pub fn listener(&self) -> &Listener<'a> {
        &self.listener
    }

    /// Bytes received and not yet fed to the session.
    pub fn buffered(&self) -> usize {
        self.ring.len
    }

    /// The connect callback: the session, or a refusal line (sent from here: sending is
    /// allowed in callbacks, disconnecting is not).
    pub fn connected<S: Espconn<Handle = H>, P: Platform>(
        &mut self,
        now: Instant,
        peer: Peer,
        handle: H,
        sdk: &mut S,
        platform: &mut P,
    ) {
        let from = PeerKey::of(Some(core::net::IpAddr::from(peer.ip)));
        match self.listener.accept_from(now, from, platform) {
            Admission::Serve => {
                self.ring.clear();
                let held = sdk.hold(handle) == 0;
                self.session = Some(SessionConn {
                    peer,
                    handle,
                    in_flight: false,
                    close: false,
                    abort: false,
                    closing: false,
                    held,
                    gone: false,
                });
                sdk.arm(0);
            }
            Admission::Refuse => {
                let Some(entry) = self.refused.iter_mut().find(|entry| entry.is_none()) else {
                    // More clients than the listener allows: the SDK should have refused it.
                    sdk.arm(0);
                    return;
                };
                // Stored first: the SDK reads the line from here until the sent callback.
                let refused = entry.insert(Refused {
                    peer,
                    handle,
                    since: now,
                    line: Listener::refusal(),
                    in_flight: false,
                    closing: false,
                });
                refused.in_flight = sdk.send(handle, refused.line.as_bytes()) == 0;
                sdk.arm(0);
            }
        }
    }

    /// The receive callback: the bytes are copied (the SDK frees them on return) and the
    /// session fed from the timer task. Returns `false` when they did not fit: the
    /// connection is then dropped (the SDK ignored the hold; never seen).
    pub fn received<S: Espconn<Handle = H>, F: NorFlash>(
        &mut self,
        now: Instant,
        peer: Peer,
        data: &[u8],
        sdk: &mut S,
        flash: &mut F,
    ) -> bool {
        let Some(conn) = self.session.as_mut().filter(|conn| conn.peer == peer) else {
            // A refused client's bytes (or a late segment of a finished session): dropped.
            return true;
        };
        if conn.closing || conn.abort {
            return true;
        }
        if data.len() > self.ring.free() {
            // Without a working hold the window can outrun the ring: make room here.
            self.serve(now, sdk, flash);
        }
        let fits = match &mut self.session {
            Some(conn) if conn.peer == peer => {
                if data.len() <= self.ring.free() {
                    self.ring.push(data);
                    true
                } else {
                    conn.abort = true;
                    false
                }
            }
            _ => true,
        };
        sdk.arm(0);
        fits
    }

    /// The sent callback: the next line may go.
    pub fn sent<S: Espconn<Handle = H>>(&mut self, peer: Peer, sdk: &mut S) {
        if let Some(conn) = self.session.as_mut().filter(|conn| conn.peer == peer) {
            conn.in_flight = false;
        } else if let Some(refused) = self.refused.iter_mut().flatten().find(|r| r.peer == peer) {
            refused.in_flight = false;
        }
        sdk.arm(0);
    }

    /// The disconnect or reconnect (error) callback: the connection is gone and its handle
    /// with it.
    pub fn disconnected<S: Espconn<Handle = H>>(&mut self, peer: Peer, sdk: &mut S) {
        // The session ends in the timer task, once what the peer sent has been fed.
        if let Some(conn) = self.session.as_mut().filter(|conn| conn.peer == peer) {
            conn.gone = true;
        }
        for entry in &mut self.refused {
            if entry.as_ref().is_some_and(|refused| refused.peer == peer) {
                *entry = None;
            }
        }
        sdk.arm(0);
    }

    /// The timer task, outside every callback: feeds the session, sends replies, closes,
    /// releases the TCP window, reboots when the update is done, and arms the next run.
    pub fn run<S: Espconn<Handle = H>, F: NorFlash, P: Platform>(
        &mut self,
        now: Instant,
        sdk: &mut S,
        flash: &mut F,
        platform: &mut P,
    ) {
        let before = self.ring.len;
        self.serve(now, sdk, flash);
        let fed = self.ring.len < before;
        self.finish_session(sdk);
        self.release_window(sdk);
        self.serve_refused(now, sdk);
        // On an SDK map the first step finds the SDK's boot flag in charge and gives up.
        self.listener.idle(flash);
        self.listener.poll(now, platform);
        self.arm_next(now, fed, sdk);
    }

    fn serve<S: Espconn<Handle = H>, F: NorFlash>(&mut self, now: Instant, sdk: &mut S, flash: &mut F) {
        // Also while closing: should the SDK never report the disconnect, the session's
        // deadline turns the close into an abort instead of a timer spinning at 0 ms.
        let Some(conn) = self.session.as_mut() else { return };
        let mut connection = SdkConnection { conn, ring: self.ring, tx: self.tx, sdk };
        self.listener.serve(now, &mut connection, flash);
    }

    /// Carries out what the listener asked for: close once the last line is out, or drop;
    /// ends a session whose connection is gone once its bytes are fed.
    fn finish_session<S: Espconn<Handle = H>>(&mut self, sdk: &mut S) {
        let Some(conn) = self.session.as_mut() else { return };
        if conn.gone {
            if self.ring.len == 0 {
                self.session = None;
                if self.listener.is_busy() {
                    self.listener.disconnected();
                }
            }
            return;
        }
        if conn.abort {
            sdk.abort(conn.handle);
            self.session = None;
            self.ring.clear();
            if self.listener.is_busy() {
                self.listener.disconnected();
            }
        } else if conn.close && !conn.in_flight && !conn.closing {
            conn.closing = true;
            sdk.disconnect(conn.handle);
        }
    }

    /// Reopens the window (unhold, hold again) while the ring can take a whole window more.
    fn release_window<S: Espconn<Handle = H>>(&mut self, sdk: &mut S) {
        let Some(conn) = self.session.as_mut() else { return };
        if conn.held && !conn.closing && !conn.gone && self.ring.free() >= sdk.window().min(RX) {
            sdk.unhold(conn.handle);
            conn.held = sdk.hold(conn.handle) == 0;
        }
    }

    fn serve_refused<S: Espconn<Handle = H>>(&mut self, now: Instant, sdk: &mut S) {
        for entry in &mut self.refused {
            let Some(refused) = entry else { continue };
            if Listener::refused_expired(refused.since, now) {
                sdk.abort(refused.handle);
                *entry = None;
            } else if !refused.in_flight && !refused.closing {
                refused.closing = true;
                sdk.disconnect(refused.handle);
            }
        }
    }

    /// The next run: at once while bytes wait and the session takes them, else at the
    /// earliest deadline (the session's, the reboot, a refused client's linger).
    fn arm_next<S: Espconn<Handle = H>>(&self, now: Instant, fed: bool, sdk: &mut S) {
        let more = fed && self.ring.len > 0;
        let linger = self.refused.iter().flatten().map(|refused| refused.since + REFUSED_LINGER).min();
        let deadline = match (self.listener.poll_timeout(), linger) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let delay = if more {
            Some(0)
        } else {
            deadline.map(|at| {
                if at <= now { 0 } else { (at - now).total_millis().min(u64::from(u32::MAX)) as u32 }
            })
        };
        if let Some(delay) = delay {
            sdk.arm(delay);
        }
    }
}

/// The session's connection as the listener sees it.
struct SdkConnection<'c, H: Copy, S> {
    conn: &'c mut SessionConn<H>,
    ring: &'c mut Ring,
    tx: &'c mut [u8; MAX_REPLY_LINE],
    sdk: &'c mut S,
}

impl<H: Copy, S: Espconn<Handle = H>> Connection for SdkConnection<'_, H, S> {
    fn receive(&mut self, take: &mut dyn FnMut(&[u8]) -> usize) -> usize {
        self.ring.offer(take)
    }

    fn can_send_line(&self) -> bool {
        !self.conn.in_flight && !self.conn.close && !self.conn.abort && !self.conn.gone
    }

    fn send_line(&mut self, line: &[u8]) {
        let len = line.len().min(MAX_REPLY_LINE);
        self.tx[..len].copy_from_slice(&line[..len]);
        if self.sdk.send(self.conn.handle, &self.tx[..len]) == 0 {
            self.conn.in_flight = true;
        } else {
            // The SDK refused the line: the client would miss a reply, so drop it.
            self.conn.abort = true;
        }
    }

    /// espconn reports no half close, only the whole disconnect (the disconnect callback),
    /// which also ends the input once every byte is fed; otherwise the session commits a
    /// verified image after its grace for stray bytes.
    fn peer_closed(&self) -> bool {
        self.conn.gone && self.ring.len == 0
    }

    /// The sent callback came for the last line.
    fn all_sent(&self) -> bool {
        !self.conn.in_flight
    }

    fn close(&mut self) {
        self.conn.close = true;
    }

    fn abort(&mut self) {
        self.conn.abort = true;
    }
}

#[cfg(test)]
mod tests {
    //! The driver against an SDK model that keeps the SDK's rules and fails the test when
    //! the driver breaks one: no second send before the sent callback, no disconnect or
    //! abort inside a callback, no byte beyond the window while the connection is held.
    extern crate std;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    use super::*;
    use crate::flash::RamNor;
    use crate::image::samples::{irom_for, write};
    use crate::image::{FlashParams, Segment};
    use crate::layout::sdk::SdkMap;
    use crate::session::{CLOSE_GRACE, COMMIT_GRACE};
    use smoltcp::time::Duration;

    const A: Peer = Peer { ip: [10, 0, 0, 2], port: 40001 };
    const B: Peer = Peer { ip: [10, 0, 0, 3], port: 40002 };
    const WINDOW: usize = 4 * 1460;
    const SUCCESS: &[u8] = b"user2.bin\r\nReady\r\nFlashing\r\nFlash upgrade success. Rebooting in 2s.\r\n";
    const SUCCESS_LINE: &[u8] = b"Flash upgrade success. Rebooting in 2s.\r\n";

    #[derive(Default)]
    struct Conn {
        received: Vec<u8>,
        in_flight: bool,
        held: bool,
        /// Bytes delivered since the last hold: at most a window while held.
        since_hold: usize,
        disconnected: bool,
        aborted: bool,
    }

    #[derive(Default)]
    struct Model {
        conns: BTreeMap<(u8, u16), Conn>,
        in_callback: bool,
        hold_works: bool,
        armed: Option<u32>,
        releases: usize,
    }

    fn key(peer: Peer) -> (u8, u16) {
        (peer.ip[3], peer.port)
    }

    impl Espconn for Model {
        type Handle = Peer;
        fn send(&mut self, conn: Peer, data: &[u8]) -> i8 {
            let conn = self.conns.get_mut(&key(conn)).expect("a live connection");
            if conn.in_flight {
                panic!("a second espconn_send before the sent callback");
            }
            conn.in_flight = true;
            conn.received.extend_from_slice(data);
            0
        }
        fn disconnect(&mut self, conn: Peer) {
            assert!(!self.in_callback, "espconn_disconnect inside a callback");
            self.conns.get_mut(&key(conn)).unwrap().disconnected = true;
        }
        fn abort(&mut self, conn: Peer) {
            assert!(!self.in_callback, "espconn_abort inside a callback");
            self.conns.get_mut(&key(conn)).unwrap().aborted = true;
        }
        fn hold(&mut self, conn: Peer) -> i8 {
            if !self.hold_works {
                return -12;
            }
            let conn = self.conns.get_mut(&key(conn)).unwrap();
            conn.held = true;
            conn.since_hold = 0;
            0
        }
        fn unhold(&mut self, conn: Peer) -> i8 {
            self.conns.get_mut(&key(conn)).unwrap().held = false;
            self.releases += 1;
            0
        }
        fn window(&self) -> usize {
            WINDOW
        }
        fn arm(&mut self, delay_ms: u32) {
            self.armed = Some(delay_ms);
        }
    }

    #[derive(Default)]
    struct Board {
        rebooted: bool,
    }

    impl Platform for Board {
        fn reboot(&mut self) {
            self.rebooted = true;
        }
        fn fill_random(&mut self, buf: &mut [u8]) {
            buf.fill(3);
        }
    }

    struct World {
        driver: Driver<'static, Peer>,
        sdk: Model,
        flash: RamNor<Vec<u8>>,
        board: Board,
        now: Instant,
    }

    fn layout() -> &'static crate::layout::FlashLayout {
        &SdkMap::by_name("sdk-1MB").unwrap().layout
    }

    impl World {
        fn new(hold_works: bool) -> World {
            let sector = std::boxed::Box::leak(std::boxed::Box::new([0u8; SECTOR]));
            let buffers = std::boxed::Box::leak(std::boxed::Box::new(DriverBuffers::new()));
            World {
                driver: Driver::new(SessionConfig::new(layout()), sector, buffers, Some(SlotId::User1)),
                sdk: Model { hold_works, ..Model::default() },
                flash: RamNor::new(layout().flash_size),
                board: Board::default(),
                now: Instant::from_secs(50),
            }
        }

        fn connect(&mut self, peer: Peer) {
            self.sdk.conns.insert(key(peer), Conn::default());
            self.sdk.in_callback = true;
            self.driver.connected(self.now, peer, peer, &mut self.sdk, &mut self.board);
            self.sdk.in_callback = false;
        }

        /// Delivers what the window lets through, like lwIP: returns the bytes taken.
        fn deliver(&mut self, peer: Peer, data: &[u8]) -> usize {
            let conn = &self.sdk.conns[&key(peer)];
            let room = if conn.held { WINDOW - conn.since_hold } else { data.len() };
            let n = data.len().min(room).min(1460);
            if n == 0 {
                return 0;
            }
            self.sdk.conns.get_mut(&key(peer)).unwrap().since_hold += n;
            self.sdk.in_callback = true;
            assert!(self.driver.received(self.now, peer, &data[..n], &mut self.sdk, &mut self.flash));
            self.sdk.in_callback = false;
            assert!(self.driver.buffered() <= RX);
            n
        }

        /// The sent callbacks of every line in flight, then the timer if armed.
        fn settle(&mut self) {
            for _ in 0..50 {
                let peers: Vec<(u8, u16)> =
                    self.sdk.conns.iter().filter(|(_, c)| c.in_flight).map(|(k, _)| *k).collect();
                for (last, port) in peers {
                    self.sdk.conns.get_mut(&(last, port)).unwrap().in_flight = false;
                    self.sdk.in_callback = true;
                    self.driver.sent(Peer { ip: [10, 0, 0, last], port }, &mut self.sdk);
                    self.sdk.in_callback = false;
                }
                match self.sdk.armed.take() {
                    Some(0) => self.driver.run(self.now, &mut self.sdk, &mut self.flash, &mut self.board),
                    other => {
                        self.sdk.armed = other;
                        return;
                    }
                }
            }
            panic!("the driver keeps re-arming at once");
        }

        /// Sends `data` as fast as the window allows, settling in between.
        fn push(&mut self, peer: Peer, mut data: &[u8]) {
            while !data.is_empty() {
                let n = self.deliver(peer, data);
                data = &data[n..];
                self.settle();
                if n == 0 {
                    assert!(self.sdk.releases > 0 || self.driver.buffered() > 0, "stalled for good");
                }
            }
            self.settle();
        }

        fn advance(&mut self, by: Duration) {
            self.now += by;
            self.driver.run(self.now, &mut self.sdk, &mut self.flash, &mut self.board);
            self.settle();
        }

        fn gone(&mut self, peer: Peer) {
            self.sdk.in_callback = true;
            self.driver.disconnected(peer, &mut self.sdk);
            self.sdk.in_callback = false;
            self.settle();
        }
    }

    fn image() -> Vec<u8> {
        let irom = irom_for(layout().slot(SlotId::User2).irom_link_addr(), 40_000);
        write(FlashParams::default(), 0x4010_0000, &irom, &[Segment { addr: 0x4010_0000, data: &[1; 64] }])
    }

    fn request(image: &[u8]) -> Vec<u8> {
        let mut bytes =
            std::format!("OTA\r\nGetNextFlash\r\nFirmwareLength: {}\r\n", image.len()).into_bytes();
        bytes.extend_from_slice(image);
        bytes
    }

    #[test]
    fn a_push_lands_within_the_window_one_line_in_flight_and_reboots_from_the_timer() {
        let mut world = World::new(true);
        let image = image();
        world.connect(A);
        world.push(A, &request(&image));
        // Verified; espconn reports no half close, so the commit waits out the grace for
        // stray bytes, on the timer.
        assert_eq!(world.sdk.conns[&key(A)].received, &SUCCESS[..SUCCESS.len() - SUCCESS_LINE.len()]);
        assert_eq!(world.sdk.armed, Some(COMMIT_GRACE.total_millis() as u32));
        assert!(!world.board.rebooted);
        world.advance(COMMIT_GRACE);
        assert_eq!(world.sdk.conns[&key(A)].received, SUCCESS);
        let slot = layout().slot(SlotId::User2).offset as usize;
        assert_eq!(&world.flash.bytes()[slot..slot + image.len()], &image[..]);
        assert!(world.sdk.releases >= image.len() / WINDOW, "the window was released as the ring drained");
        assert!(world.sdk.conns[&key(A)].disconnected, "closed from the timer once the last line was out");
        // The sent callback said the success line is out: no reason to wait the 2 s, only
        // the moment the close takes.
        assert!(!world.board.rebooted);
        assert_eq!(world.sdk.armed, Some(CLOSE_GRACE.total_millis() as u32));
        world.gone(A);
        world.advance(CLOSE_GRACE);
        assert!(world.board.rebooted, "rebooted once the success line was delivered");
    }

    #[test]
    fn a_client_that_closes_after_flashing_still_gets_its_update() {
        // The seed's client reads `Flashing` and closes; espconn turns its FIN into the
        // disconnect callback. The image was verified: the close ends the input, it commits.
        let mut world = World::new(true);
        let image = image();
        world.connect(A);
        world.push(A, &request(&image));
        assert!(world.sdk.conns[&key(A)].received.ends_with(b"Flashing\r\n"));
        world.gone(A);
        assert!(!world.driver.listener().is_busy(), "the session ended with its connection");
        // Nobody waits for the success line any more: no 2 s timer.
        assert!(world.board.rebooted, "the update was committed and the device rebooted at once");
    }

    #[test]
    fn a_second_client_hears_the_refusal_and_is_closed_without_disturbing_the_first() {
        let mut world = World::new(true);
        let image = image();
        let request = request(&image);
        world.connect(A);
        world.push(A, &request[..30_000]);
        world.connect(B);
        world.deliver(B, b"OTA\r\nGetNextFlash\r\n");
        world.settle();
        assert_eq!(world.sdk.conns[&key(B)].received, b"ERR: Connection Already Exists\r\n");
        assert!(world.sdk.conns[&key(B)].disconnected, "disconnected once its line was sent");
        world.gone(B);
        world.push(A, &request[30_000..]);
        world.advance(COMMIT_GRACE);
        assert_eq!(world.sdk.conns[&key(A)].received, SUCCESS);
        assert!(!world.sdk.conns[&key(A)].aborted);
    }

    #[test]
    fn a_refused_client_whose_line_never_goes_out_is_dropped_after_the_linger() {
        let mut world = World::new(true);
        world.connect(A);
        world.connect(B);
        assert_eq!(world.sdk.armed, Some(0));
        world.sdk.armed = None;
        world.driver.run(world.now, &mut world.sdk, &mut world.flash, &mut world.board);
        assert!(!world.sdk.conns[&key(B)].disconnected, "its line is still in flight");
        world.now += REFUSED_LINGER;
        world.driver.run(world.now, &mut world.sdk, &mut world.flash, &mut world.board);
        assert!(world.sdk.conns[&key(B)].aborted);
        assert!(!world.sdk.conns[&key(A)].aborted && !world.sdk.conns[&key(A)].disconnected);
    }

    #[test]
    fn a_stalled_client_hears_the_header_timeout_and_the_next_client_gets_the_session() {
        let mut world = World::new(true);
        world.connect(A);
        world.push(A, b"OTA\r\nGetNext");
        let deadline = world.sdk.armed.expect("the header deadline is armed");
        assert_eq!(deadline, 10_000);
        world.advance(Duration::from_secs(10));
        assert_eq!(world.sdk.conns[&key(A)].received, b"ERR: Header lines too slow\r\n");
        assert!(world.sdk.conns[&key(A)].aborted, "dropped once its ERR line was out");
        world.gone(A);
        world.connect(B);
        world.push(B, b"OTA\r\nGetNextFlash\r\n");
        assert_eq!(world.sdk.conns[&key(B)].received, b"user2.bin\r\n");
    }

    /// Without a working hold lwIP keeps the window open: a burst larger than the ring is
    /// then drained into the session inside the callback rather than overflowing it.
    #[test]
    fn without_hold_a_burst_larger_than_the_ring_is_drained_in_the_callback() {
        let mut world = World::new(false);
        let image = image();
        world.connect(A);
        let request = request(&image);
        let header = request.len() - image.len();
        world.push(A, &request[..header]);
        assert_eq!(world.sdk.conns[&key(A)].received, b"user2.bin\r\nReady\r\n");
        // Ten segments (more than the ring holds) before the timer gets to run.
        for burst in image.chunks(10 * 1460) {
            for chunk in burst.chunks(1460) {
                world.deliver(A, chunk);
            }
            world.settle();
        }
        world.advance(COMMIT_GRACE);
        assert_eq!(world.sdk.conns[&key(A)].received, SUCCESS);
    }
}
