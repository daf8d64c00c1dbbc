//! The firmware between two boots, in memory: the agent's real [`Session`] on a flash, with
//! a simulated clock and a driver that does what the smoltcp and std drivers do (feed bytes,
//! send each reply, poll). The real sans-IO [`Client`] can talk to it directly, so a whole
//! push costs no socket and no waiting.

use ota_agent::auth;
use ota_agent::boot::Running;
use ota_agent::client::{Client, Event, Transmit};
use ota_agent::flash::NorFlash;
use ota_agent::layout::{FlashLayout, SlotId};
use ota_agent::session::{Phase, Session, SessionConfig};
use ota_agent::writer::SectorBuffer;
use smoltcp::time::{Duration, Instant};

/// Bytes per received segment: one TCP segment on Ethernet.
pub const SEGMENT: usize = 1460;
/// The idle timeout of in-memory agents: time is simulated, so the agent's default.
pub const IDLE_TIMEOUT: Duration = ota_agent::session::DEFAULT_IDLE_TIMEOUT;

/// An agent serving one client at a time, in memory.
pub struct Agent<'s> {
    pub session: Session<'s>,
    pub now: Instant,
    /// Everything the agent sent on the current connection.
    replies: Vec<u8>,
}

impl<'s> Agent<'s> {
    /// The agent of a firmware running `running` (as rBoot booted it).
    pub fn new(
        sector: &'s mut SectorBuffer,
        layout: &'static FlashLayout,
        running: Option<SlotId>,
    ) -> Agent<'s> {
        Agent::booted(sector, layout, Running::untracked(running))
    }

    /// The agent of a firmware started as `running` says (tcpflash-boot's hand-off).
    pub fn booted(sector: &'s mut SectorBuffer, layout: &'static FlashLayout, running: Running) -> Agent<'s> {
        let mut session = Session::new(SessionConfig::new(layout), sector);
        session.set_running(running);
        Agent { session, now: Instant::from_secs(1), replies: Vec::new() }
    }

    /// A client connects.
    pub fn accept(&mut self) {
        self.replies.clear();
        self.session.start(self.now, None);
    }

    /// How the firmware runs now (a check-in may have confirmed it).
    pub fn running(&self) -> Running {
        *self.session.running()
    }

    /// The connection is gone (closed on both sides, or reset): the agent listens again.
    pub fn disconnect(&mut self) {
        self.drain();
        self.session.reset();
    }

    /// What the agent sent on this connection.
    pub fn replies(&self) -> &[u8] {
        &self.replies
    }

    pub fn phase(&self) -> Phase {
        self.session.phase()
    }

    fn drain(&mut self) {
        while let Some(line) = self.session.next_reply() {
            self.replies.extend_from_slice(line.as_bytes());
        }
    }

    /// One received segment, as a driver handles it.
    pub fn receive<F: NorFlash>(&mut self, flash: &mut F, mut data: &[u8]) {
        loop {
            self.drain();
            if data.is_empty() || self.session.phase() == Phase::Idle {
                break;
            }
            let taken = self.session.receive(self.now, data, flash);
            if taken == 0 && !self.session.has_reply() {
                break;
            }
            data = &data[taken..];
        }
        self.session.poll(self.now, flash);
        self.drain();
    }

    /// `data` cut into segments.
    pub fn send<F: NorFlash>(&mut self, flash: &mut F, data: &[u8]) {
        for segment in data.chunks(SEGMENT) {
            self.receive(flash, segment);
        }
    }

    /// The client closed its sending side.
    pub fn input_closed<F: NorFlash>(&mut self, flash: &mut F) {
        self.session.input_closed(self.now);
        self.session.poll(self.now, flash);
        self.drain();
    }

    /// Time passes without a byte from the client.
    pub fn wait<F: NorFlash>(&mut self, flash: &mut F, by: Duration) {
        self.now += by;
        self.session.poll(self.now, flash);
        self.drain();
    }
}

/// One whole push by the real client: connect, converse, and close. The client sends the
/// `Sha256` line as well (`checked`), or only the seed's requests. Returns the client's
/// events; the last is `Success` or `Failed`.
pub fn client_push<F: NorFlash>(
    agent: &mut Agent<'_>,
    flash: &mut F,
    images: [&[u8]; 2],
    checked: bool,
) -> Vec<Event> {
    agent.accept();
    let mut client = Client::new();
    let mut events = Vec::new();
    let mut read = 0;
    while !client.is_done() {
        let before = agent.replies().len();
        match client.transmit() {
            Transmit::Bytes(bytes) => {
                let bytes = bytes.to_vec();
                agent.send(flash, &bytes);
                client.sent(bytes.len());
            }
            Transmit::Image { offset, len } => {
                let slot = client.slot().expect("an image is sent only once the device named its slot");
                let n = (len as usize).min(SEGMENT);
                let at = offset as usize;
                agent.receive(flash, &images[slot.index()][at..at + n]);
                client.sent(n);
            }
            Transmit::Nothing => {}
        }
        let mut heard = false;
        while read < agent.replies().len() && !client.is_done() {
            let (n, event) = client.receive(&agent.replies()[read..]);
            read += n;
            heard |= n > 0;
            match event {
                Some(Event::NextSlot(slot)) => {
                    events.push(Event::NextSlot(slot));
                    let image = images[slot.index()];
                    if checked {
                        client.send_checked_image(image.len() as u32, &auth::sha256(image));
                    } else {
                        client.send_image(image.len() as u32);
                    }
                }
                Some(event) => events.push(event),
                None if n == 0 => break,
                None => {}
            }
        }
        let idle =
            matches!(client.transmit(), Transmit::Nothing) && !heard && agent.replies().len() == before;
        if idle && !client.is_done() {
            // Nothing to send and nothing more to hear: the agent has closed (or would time
            // the client out).
            if agent.phase() == Phase::Open {
                agent.wait(flash, IDLE_TIMEOUT);
                continue;
            }
            events.extend(client.closed());
        }
    }
    agent.disconnect();
    events
}

/// The pushing host's check-in after the reboot, as `cargo tcpflash` makes it: `OTA`,
/// `GetNextFlash`, `GetBootState`, close. Returns the replies.
pub fn check_in<F: NorFlash>(agent: &mut Agent<'_>, flash: &mut F) -> Vec<u8> {
    agent.accept();
    agent.send(flash, b"OTA\r\nGetNextFlash\r\nGetBootState\r\n");
    agent.input_closed(flash);
    let replies = agent.replies().to_vec();
    agent.disconnect();
    replies
}

/// Whether `events` are those of a push that landed.
pub fn succeeded(events: &[Event]) -> bool {
    events.last() == Some(&Event::Success)
}
