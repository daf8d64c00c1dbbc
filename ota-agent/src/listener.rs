//! The agent's network rules, once for every driver (smoltcp on a board, `std::net` in the
//! virtual device, the SDK's espconn): who gets the session, how bytes reach it, how replies
//! leave, when a connection is closed or dropped, when the device reboots.
//!
//! A driver owns the sockets and the clock; it tells the [`Listener`] what happened
//! ([`Listener::accept`], [`Listener::serve`], [`Listener::disconnected`]) through a
//! [`Connection`], the few primitives every socket API has, and asks it when to come back
//! ([`Listener::poll_timeout`]). The rules:
//!
//! - One session at a time. Any other client hears `ERR: Connection Already Exists` in one
//!   write and is closed without touching the session; if it does not go away within
//!   [`REFUSED_LINGER`], the driver drops it ([`Listener::refused_expired`]).
//! - Each reply line goes out in one write, and only when the connection has room for a
//!   whole line (the seed client reads each reply with one `recv`).
//! - At most [`FEED_PER_POLL`] bytes reach the session per round, so the network stack runs
//!   between two flash stalls and the window it frees is advertised.
//! - A session that failed gets its `ERR:` line out and its connection dropped at once,
//!   without waiting for the client; a committed update closes its connection once the
//!   last reply is queued, and the device reboots as soon as that reply is out (at the
//!   latest when the session said). A gone connection ends the session (an image not yet
//!   committed is abandoned).
//! - While no client is served, the driver lets the session pre-erase the idle slot, one
//!   sector per poll ([`Listener::idle`]).

use core::net::IpAddr;

use smoltcp::time::Instant;

use crate::auth::{NONCE_LEN, PeerKey};
use crate::boot::handoff::HandOff;
use crate::boot::{CommitError, Running};
use crate::flash::NorFlash;
use crate::protocol::{MAX_REPLY_LINE, ReplyLine, in_irom};
use crate::session::{Phase, Session, SessionConfig};
use crate::writer::{SECTOR, SectorBuffer};

/// Bytes handed to the session per round: at most one sector's flash work between two runs
/// of the network stack.
pub const FEED_PER_POLL: usize = SECTOR;

/// How long a refused client may take to read its error line and close.
pub const REFUSED_LINGER: smoltcp::time::Duration = smoltcp::time::Duration::from_secs(1);

/// What the listener needs of the board: its random source (nonces) and its reset.
pub trait Platform {
    /// Restart into the new firmware. Called once, when the session's reboot time has come,
    /// which only a verified image sets; normally does not return. On an SDK map
    /// ([`crate::layout::sdk`]) this is also where the slot switches (the SDK's upgrade flag).
    fn reboot(&mut self);

    /// Fills `buf` with unpredictable bytes (a hardware RNG): each session's nonce, when
    /// the agent has a key. Predictable bytes would let a recorded session be replayed.
    fn fill_random(&mut self, buf: &mut [u8]);

    /// The record tcpflash-boot left for this firmware (RTC memory on an ESP8266), read once
    /// at start: it says how the firmware was started (a trial?). `None` without
    /// tcpflash-boot: updates then switch for good, as with rBoot.
    fn boot_handoff(&mut self) -> Option<HandOff> {
        None
    }
}

/// The primitives of one TCP connection that the rules need; each driver implements it
/// for its socket type.
pub trait Connection {
    /// Offers the bytes received so far to `take`, which returns how many it consumed; the
    /// rest stay for the next call. Returns the number consumed (0 when nothing is waiting).
    fn receive(&mut self, take: &mut dyn FnMut(&[u8]) -> usize) -> usize;

    /// Whether a whole reply line can be queued in one write now.
    fn can_send_line(&self) -> bool;

    /// Queues `line` in one write. Called only after [`Connection::can_send_line`].
    fn send_line(&mut self, line: &[u8]);

    /// The peer has closed its sending side and every byte it sent has been received.
    fn peer_closed(&self) -> bool;

    /// Everything queued has left (acknowledged by the peer, where the driver can tell).
    fn all_sent(&self) -> bool;

    /// Closes our side once the queued bytes are out (FIN).
    fn close(&mut self);

    /// Drops the connection at once (RST).
    fn abort(&mut self);
}

/// What a driver does with a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// It gets the session: pass it to [`Listener::serve`].
    Serve,
    /// A session is running: send it [`Listener::refusal`], close it, and drop it once
    /// [`Listener::refused_expired`] says so.
    Refuse,
}

/// The agent's rules around one [`Session`].
pub struct Listener<'a> {
    session: Session<'a>,
    /// A connection holds the session.
    busy: bool,
    rebooted: bool,
}

impl<'a> Listener<'a> {
    /// The rules for `config`; tell them how the device runs with
    /// [`Listener::set_running`] before the first connection.
    pub fn new(config: SessionConfig, sector: &'a mut SectorBuffer) -> Listener<'a> {
        Listener { session: Session::new(config, sector), busy: false, rebooted: false }
    }

    /// The session, for status: progress, the last failure, a pending reboot.
    pub fn session(&self) -> &Session<'a> {
        &self.session
    }

    /// How the device runs (its slot, a trial?, its build), once the driver read it at start.
    pub fn set_running(&mut self, running: Running) {
        self.session.set_running(running);
    }

    pub fn running(&self) -> &Running {
        self.session.running()
    }

    /// Confirms the running firmware when it is on trial; nothing to do otherwise.
    pub fn confirm<F: NorFlash>(&mut self, flash: &mut F) -> Result<(), CommitError> {
        self.session.confirm(flash)
    }

    /// Whether a connection holds the session.
    pub fn is_busy(&self) -> bool {
        self.busy
    }

    /// A connection from `peer` (when the driver knows it) was established: it gets the
    /// session if none is running. A session with a key draws this connection's nonce from
    /// the platform.
    pub fn accept(&mut self, now: Instant, peer: Option<IpAddr>, platform: &mut dyn Platform) -> Admission {
        self.accept_from(now, PeerKey::of(peer), platform)
    }

    /// [`Listener::accept`] with the address already folded ([`Session::start_from`]).
    #[inline(never)]
    pub(crate) fn accept_from(
        &mut self,
        now: Instant,
        peer: PeerKey,
        platform: &mut dyn Platform,
    ) -> Admission {
        if self.busy {
            return Admission::Refuse;
        }
        self.busy = true;
        self.session.start_from(now, peer);
        if self.session.config().key.is_some() {
            let mut nonce = [0u8; NONCE_LEN];
            platform.fill_random(&mut nonce);
            self.session.provide_nonce(nonce);
        }
        Admission::Serve
    }

    /// The line a refused connection hears before it is closed.
    pub fn refusal() -> ReplyLine {
        ReplyLine::error_message(&in_irom::reason::BUSY)
    }

    /// Whether a connection refused at `since` has had its time to go away.
    pub fn refused_expired(since: Instant, now: Instant) -> bool {
        now >= since + REFUSED_LINGER
    }

    /// One round for the connection that holds the session: replies out, bytes in (up to
    /// [`FEED_PER_POLL`]), the session's timers and its end of image, then close or drop
    /// the connection when the session is over. `flash` is where the image goes.
    pub fn serve<C: Connection + ?Sized, F: NorFlash>(&mut self, now: Instant, conn: &mut C, flash: &mut F) {
        if !self.busy {
            return;
        }
        let mut budget = FEED_PER_POLL;
        loop {
            self.send_replies(conn);
            let session = &mut self.session;
            let consumed =
                conn.receive(&mut |data| session.receive(now, &data[..data.len().min(budget)], flash));
            budget -= consumed;
            if consumed == 0 || budget == 0 {
                break;
            }
        }
        if conn.peer_closed() {
            self.session.input_closed(now);
        }
        self.session.poll(now, flash);
        self.send_replies(conn);
        let replies_out = !self.session.has_reply();
        match self.session.phase() {
            Phase::Abort => {
                conn.abort();
                self.disconnected();
            }
            Phase::Closing if replies_out => {
                conn.close();
                if conn.all_sent() {
                    self.session.delivered(now);
                }
            }
            Phase::Dropping if replies_out => {
                if conn.all_sent() {
                    conn.abort();
                    self.disconnected();
                } else {
                    conn.close();
                }
            }
            Phase::Idle | Phase::Open | Phase::Closing | Phase::Dropping => {}
        }
    }

    /// The connection that held the session is gone (closed by both sides, reset, or
    /// dropped): the session ends and the next connection may have it.
    pub fn disconnected(&mut self) {
        self.busy = false;
        self.session.reset();
    }

    /// Work while no client is served: one step of the idle slot's pre-erase
    /// ([`Session::pre_erase`]), at most one sector erase. Call once per poll of the driver;
    /// returns whether it worked.
    pub fn idle<F: NorFlash>(&mut self, flash: &mut F) -> bool {
        // The session itself does nothing while it has a client.
        self.session.pre_erase(flash)
    }

    /// Runs the timers when no connection needs serving: the reboot after an update.
    /// Returns after calling `platform.reboot()` (which normally does not return).
    pub fn poll(&mut self, now: Instant, platform: &mut dyn Platform) {
        if let Some(at) = self.session.reboot_at()
            && now >= at
            && !self.rebooted
        {
            self.rebooted = true;
            platform.reboot();
        }
    }

    /// Whether the update is done and its reboot time has come (for drivers that reboot
    /// themselves, like the virtual device).
    pub fn reboot_due(&self, now: Instant) -> bool {
        self.session.reboot_at().is_some_and(|at| now >= at)
    }

    /// When the listener next needs [`Listener::serve`], [`Listener::poll`] or
    /// [`Listener::idle`] although nothing arrives: the session's deadline, the reboot, or at
    /// once ([`Instant::ZERO`]) while the pre-erase has a step to do. `None`: only on input.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // The reboot once, from the listener's own record: after it (a platform whose reboot
        // returns, as in tests) only the connection's deadline.
        let session = if self.busy {
            self.session.deadline()
        } else {
            self.session.pre_erase_pending().then_some(Instant::ZERO)
        };
        match (session, self.session.reboot_at().filter(|_| !self.rebooted)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Each reply line goes out in one write, while a whole line fits.
    fn send_replies<C: Connection + ?Sized>(&mut self, conn: &mut C) {
        while self.session.has_reply() && conn.can_send_line() {
            let mut line = ReplyLine::new();
            if !self.session.take_reply(&mut line) {
                return;
            }
            debug_assert!(line.len() <= MAX_REPLY_LINE);
            conn.send_line(line.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use super::*;
    use crate::flash::RamNor;
    use crate::layout::DEFAULT_LAYOUT;
    use smoltcp::time::Duration;

    /// A connection made of two byte queues and flags.
    #[derive(Default)]
    struct Fake {
        inbox: Vec<u8>,
        sent: Vec<Vec<u8>>,
        room: bool,
        peer_closed: bool,
        delivered: bool,
        closed: bool,
        aborted: bool,
    }

    impl Connection for Fake {
        fn receive(&mut self, take: &mut dyn FnMut(&[u8]) -> usize) -> usize {
            if self.inbox.is_empty() {
                return 0;
            }
            let n = take(&self.inbox);
            self.inbox.drain(..n);
            n
        }
        fn can_send_line(&self) -> bool {
            self.room
        }
        fn send_line(&mut self, line: &[u8]) {
            self.sent.push(line.to_vec());
        }
        fn peer_closed(&self) -> bool {
            self.peer_closed && self.inbox.is_empty()
        }
        fn all_sent(&self) -> bool {
            self.delivered
        }
        fn close(&mut self) {
            self.closed = true;
        }
        fn abort(&mut self) {
            self.aborted = true;
        }
    }

    struct NoBoard;

    impl Platform for NoBoard {
        fn reboot(&mut self) {
            panic!("no reboot expected");
        }
        fn fill_random(&mut self, buf: &mut [u8]) {
            buf.fill(7);
        }
    }

    fn running_on_user1(mut listener: Listener<'_>) -> Listener<'_> {
        listener.set_running(Running {
            slot: Some(crate::layout::SlotId::User1),
            status: crate::boot::BootStatus::Untracked,
            build_id: None,
        });
        listener
    }

    fn erased() -> RamNor<Vec<u8>> {
        RamNor::new(DEFAULT_LAYOUT.flash_size)
    }

    #[test]
    fn one_session_at_a_time_and_the_next_client_after_it() {
        let mut sector = [0u8; SECTOR];
        let mut listener = running_on_user1(Listener::new(SessionConfig::new(DEFAULT_LAYOUT), &mut sector));
        let now = Instant::from_secs(1);
        assert_eq!(listener.accept(now, None, &mut NoBoard), Admission::Serve);
        assert_eq!(listener.accept(now, None, &mut NoBoard), Admission::Refuse);
        assert_eq!(Listener::refusal().as_bytes(), b"ERR: Connection Already Exists\r\n");
        assert!(!Listener::refused_expired(now, now + Duration::from_millis(999)));
        assert!(Listener::refused_expired(now, now + REFUSED_LINGER));
        listener.disconnected();
        assert_eq!(listener.accept(now, None, &mut NoBoard), Admission::Serve);
    }

    #[test]
    fn replies_wait_for_room_for_a_whole_line_and_go_one_per_write() {
        let mut sector = [0u8; SECTOR];
        let mut listener = running_on_user1(Listener::new(SessionConfig::new(DEFAULT_LAYOUT), &mut sector));
        let mut flash = erased();
        let now = Instant::from_secs(1);
        listener.accept(now, None, &mut NoBoard);
        let mut conn = Fake { inbox: b"OTA\r\nGetNextFlash\r\nBogus\r\n".to_vec(), ..Fake::default() };
        listener.serve(now, &mut conn, &mut flash);
        assert!(conn.sent.is_empty(), "no room: nothing sent");
        assert_eq!(conn.inbox, b"Bogus\r\n", "and nothing more read while a reply waits");
        conn.room = true;
        listener.serve(now, &mut conn, &mut flash);
        assert_eq!(conn.sent, [b"user2.bin\r\n".to_vec(), b"ERR: Invalid protocol\r\n".to_vec()]);
        assert!(conn.closed && !conn.aborted, "closed once the last reply is queued");
    }

    #[test]
    fn a_round_feeds_at_most_one_sector_of_image() {
        let mut sector = [0u8; SECTOR];
        let mut listener = running_on_user1(Listener::new(SessionConfig::new(DEFAULT_LAYOUT), &mut sector));
        let mut flash = erased();
        let now = Instant::from_secs(1);
        listener.accept(now, None, &mut NoBoard);
        let mut conn = Fake { room: true, ..Fake::default() };
        conn.inbox.extend_from_slice(b"OTA\r\nGetNextFlash\r\nFirmwareLength: 100000\r\n");
        listener.serve(now, &mut conn, &mut flash);
        assert_eq!(conn.sent, [b"user2.bin\r\n".to_vec(), b"Ready\r\n".to_vec()]);
        conn.inbox = std::vec![0xAB; 3 * SECTOR];
        listener.serve(now, &mut conn, &mut flash);
        assert_eq!(listener.session().progress(), Some((SECTOR as u32, 100_000)));
        listener.serve(now, &mut conn, &mut flash);
        assert_eq!(listener.session().progress(), Some((2 * SECTOR as u32, 100_000)));
    }

    #[test]
    fn a_silent_client_gets_the_timeout_line_and_is_dropped_without_waiting_for_it() {
        let mut sector = [0u8; SECTOR];
        let config = SessionConfig {
            idle_timeout: Duration::from_secs(5),
            pre_erase: false,
            ..SessionConfig::new(DEFAULT_LAYOUT)
        };
        let mut listener = running_on_user1(Listener::new(config, &mut sector));
        let mut flash = erased();
        let start = Instant::from_secs(10);
        assert_eq!(listener.poll_timeout(), None, "nothing to wait for without a client");
        listener.accept(start, None, &mut NoBoard);
        assert_eq!(listener.poll_timeout(), Some(start + Duration::from_secs(5)));
        let mut conn = Fake { room: true, ..Fake::default() };
        let deadline = listener.poll_timeout().unwrap();
        listener.serve(deadline, &mut conn, &mut flash);
        assert_eq!(conn.sent, [b"ERR: Idle timeout\r\n".to_vec()]);
        assert!(conn.closed && !conn.aborted, "the line goes out with a FIN");
        // The line is not acknowledged: dropped after the linger, whatever the client does.
        let deadline = listener.poll_timeout().unwrap();
        assert_eq!(deadline, start + Duration::from_secs(5) + crate::session::DROP_LINGER);
        listener.serve(deadline, &mut conn, &mut flash);
        assert!(conn.aborted && !listener.is_busy());

        // Acknowledged at once: dropped at once.
        listener.accept(start, None, &mut NoBoard);
        let mut conn = Fake { room: true, delivered: true, ..Fake::default() };
        listener.serve(start + Duration::from_secs(5), &mut conn, &mut flash);
        assert_eq!(conn.sent, [b"ERR: Idle timeout\r\n".to_vec()]);
        assert!(conn.aborted && !listener.is_busy(), "free for the next client");
    }
}
