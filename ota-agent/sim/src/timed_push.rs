//! One push on a timed model, as a deterministic discrete-event simulation: the real sans-IO
//! [`Client`] on the host, the real agent [`Session`] (or [`SeedAgent`], the seed's C
//! agent) on the device, a link and a device that behave like a board. No wall clock: the
//! numbers depend only on the inputs.
//!
//! The model:
//! - **link**: each direction sends one packet at a time at `bandwidth` (payload plus 40
//!   header bytes) and delivers it `rtt / 2` later; no loss, no congestion control (the
//!   receive windows here are below any initial congestion window);
//! - **TCP**: the host sends segments of up to `mss` bytes while the device's last advertised
//!   window allows. The device's stack runs between two polls of the agent: it acknowledges
//!   what has arrived, advertising the free part of its receive buffer of `rx_window` bytes,
//!   and sends the agent's replies. A pure window update goes out, as smoltcp sends it, when
//!   the window at least doubled;
//! - **device**: one core. A poll hands the agent at most `feed_per_poll` received bytes and
//!   lets it work (flash operations cost [`FlashTimings`]); until that work is done, nothing
//!   else runs: packets that arrive wait in the receive buffer, unacknowledged.
//!
//! Connecting takes one round trip; the push ends when the client has its last reply.
//!
//! [`cycle`] carries on to where a developer sees the new firmware answer: the wait before
//! the reboot, the bootloader on the timed flash, and the host's check (`GetNextFlash` on a
//! new connection, answered by the new firmware).

use std::collections::VecDeque;
use std::time::Duration;

use smoltcp::time::Instant;

use super::timed::{FlashTimings, FlashWork, TimedFlash};
use ota_agent::boot::{self, BootStatus, Running};
use ota_agent::client::{Client, Event, Transmit};
use ota_agent::flash::RamNor;
use ota_agent::layout::{FlashLayout, SlotId};
use ota_agent::protocol::{LineReader, MAX_REQUEST_LINE, Reply, ReplyLine, Request, RequestError, SUCCESS};
use ota_agent::session::{Session, SessionConfig};
use ota_agent::writer::{EraseStrategy, SECTOR, SectorBuffer, SectorWriter};

/// Bytes of IPv4 and TCP header on each packet.
const HEADER_BYTES: u64 = 40;
/// More events than any push needs: the model is stuck.
const MAX_EVENTS: u64 = 50_000_000;

/// The network between host and device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkModel {
    /// Bytes per second in each direction.
    pub bandwidth: u64,
    pub rtt: Duration,
    /// Largest segment payload.
    pub mss: usize,
}

impl Default for LinkModel {
    /// 1 MB/s, 5 ms round trip, Ethernet-sized segments: a good WiFi link to an ESP8266.
    fn default() -> LinkModel {
        LinkModel { bandwidth: 1_000_000, rtt: Duration::from_millis(5), mss: 1460 }
    }
}

/// How the device's network stack and driver serve the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceModel {
    /// The TCP receive window: the size of the agent's socket receive buffer.
    pub rx_window: usize,
    /// Received bytes handed to the agent per poll; the stack acknowledges in between.
    pub feed_per_poll: usize,
}

/// Which device code runs, and the client that goes with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agent {
    /// Our agent ([`Session`]) under tcpflash-boot (the confirmed firmware runs; a push
    /// starts a trial), pushed to by our client with the `Sha256` line.
    Ours,
    /// [`Agent::Ours`] with the idle slot pre-erased before the client connects (the agent's
    /// default once the running firmware is confirmed: done in the background while the
    /// developer edits, so not timed).
    OursPreErased,
    /// The seed's C agent ([`SeedAgent`]), pushed to by the seed's client (`tcp_flash.py`).
    Seed,
}

/// Everything the model needs besides the device's code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushModel {
    pub flash: FlashTimings,
    pub link: LinkModel,
    pub device: DeviceModel,
}

/// How a modelled push went.
#[derive(Debug)]
pub struct Outcome {
    /// From the client's connect to its last reply (`Flash upgrade success...`).
    pub time: Duration,
    /// When the first image byte reached the device.
    pub first_image_byte: Duration,
    /// What the flash chip did, all of it on the device's one core.
    pub flash_work: FlashWork,
    /// The slot the image went to.
    pub slot: SlotId,
    /// The device's flash afterwards.
    pub flash: RamNor<Vec<u8>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ModelError {
    /// The client ended the push with an error.
    Failed(Box<ota_agent::client::ClientError>),
    /// Nothing left to happen, or far too much: a bug in the model or the agent.
    Stuck { at: Duration },
    /// The bootloader found nothing to boot after the push.
    Boot(String),
    /// The device never rebooted after the push.
    NoReboot,
}

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelError::Failed(error) => write!(f, "the modelled push failed: {error}"),
            ModelError::Stuck { at } => {
                write!(f, "the push model made no progress after {at:?} (a bug in the model or the agent)")
            }
            ModelError::Boot(why) => write!(f, "the modelled device did not boot after the push: {why}"),
            ModelError::NoReboot => f.write_str("the modelled device never rebooted after the push"),
        }
    }
}

impl std::error::Error for ModelError {}

/// The device side of the model: our session or the seed's agent.
trait DeviceAgent {
    /// A client connected; the device runs as `running` says.
    fn start(&mut self, now: Instant, running: Running);
    fn receive(&mut self, now: Instant, data: &[u8], flash: &mut TimedFlash<RamNor<Vec<u8>>>) -> usize;
    fn poll(&mut self, now: Instant, flash: &mut TimedFlash<RamNor<Vec<u8>>>);
    fn next_reply(&mut self) -> Option<ReplyLine>;
    /// When the agent needs a poll although nothing arrives (our session's grace before it
    /// commits a verified image: the client does not half-close, so nothing else tells it
    /// that no byte follows the image).
    fn poll_timeout(&self) -> Option<Instant>;
}

impl DeviceAgent for Session<'_> {
    fn start(&mut self, now: Instant, running: Running) {
        self.set_running(running);
        Session::start(self, now, None)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Session::poll_timeout(self)
    }

    fn receive(&mut self, now: Instant, data: &[u8], flash: &mut TimedFlash<RamNor<Vec<u8>>>) -> usize {
        Session::receive(self, now, data, flash)
    }

    fn poll(&mut self, now: Instant, flash: &mut TimedFlash<RamNor<Vec<u8>>>) {
        Session::poll(self, now, flash)
    }

    fn next_reply(&mut self) -> Option<ReplyLine> {
        Session::next_reply(self)
    }
}

/// The seed's C agent as its blog post describes it: answer `OTA`, `GetNextFlash` and
/// `FirmwareLength` with the slot name and `Ready`, then copy the image into a 4 KB buffer
/// and, each time it fills, erase that sector and write it, inside the receive callback;
/// after the last byte, answer `Flashing` and the success line at once. Its boot switch
/// (`system_upgrade_reboot`) happens at the reboot, 2 s after the client is done, and it
/// reads nothing back. Error handling is left out: the model only runs good pushes.
pub struct SeedAgent<'a> {
    lines: LineReader<{ MAX_REQUEST_LINE + 1 }>,
    state: SeedState,
    target: SlotId,
    layout: &'static FlashLayout,
    writer: SectorWriter<'a>,
    replies: VecDeque<ReplyLine>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SeedState {
    Ota,
    GetNextFlash,
    Length,
    Image,
    Done,
}

impl<'a> SeedAgent<'a> {
    pub fn new(layout: &'static FlashLayout, running: SlotId, sector: &'a mut SectorBuffer) -> SeedAgent<'a> {
        SeedAgent {
            lines: LineReader::new(),
            state: SeedState::Ota,
            target: running.other(),
            layout,
            writer: SectorWriter::with_strategy(sector, EraseStrategy::SectorBySector),
            replies: VecDeque::new(),
        }
    }

    fn on_request(&mut self, request: Result<Request, RequestError>) {
        match (self.state, request) {
            (SeedState::Ota, Ok(Request::Ota)) => self.state = SeedState::GetNextFlash,
            (SeedState::GetNextFlash, Ok(Request::GetNextFlash)) => {
                self.replies.push_back(Reply::NextSlot(self.target).encode());
                self.state = SeedState::Length;
            }
            (SeedState::Length, Ok(Request::FirmwareLength(len))) => {
                self.writer.begin(self.layout.slot(self.target).offset, len);
                self.replies.push_back(Reply::Ready.encode());
                self.state = SeedState::Image;
            }
            _ => self.state = SeedState::Done,
        }
    }
}

impl DeviceAgent for SeedAgent<'_> {
    fn start(&mut self, _now: Instant, _running: Running) {}

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn receive(&mut self, _now: Instant, data: &[u8], flash: &mut TimedFlash<RamNor<Vec<u8>>>) -> usize {
        match self.state {
            SeedState::Image => {
                let take = data.len().min(self.writer.remaining() as usize);
                let written = self.writer.write(flash, &data[..take]);
                if self.writer.remaining() == 0 || written.is_err() {
                    let finished = written.and_then(|()| self.writer.finish(flash));
                    let verdict = if finished.is_ok() { Reply::Flashing } else { Reply::Invalid };
                    self.replies.push_back(verdict.encode());
                    self.replies.push_back(Reply::Success.encode());
                    self.state = SeedState::Done;
                }
                take
            }
            SeedState::Done => data.len(),
            _ => {
                let (consumed, line) = self.lines.feed(data);
                match line {
                    Some(Ok(line)) => {
                        let request = Request::parse(line);
                        self.on_request(request);
                    }
                    Some(Err(_)) => self.state = SeedState::Done,
                    None => {}
                }
                consumed
            }
        }
    }

    fn poll(&mut self, _now: Instant, _flash: &mut TimedFlash<RamNor<Vec<u8>>>) {}

    fn next_reply(&mut self) -> Option<ReplyLine> {
        self.replies.pop_front()
    }
}

/// A packet from the device: an acknowledgement with its window, and reply bytes if any.
struct ToHost {
    arrive: u64,
    ack: usize,
    window: usize,
    data: Vec<u8>,
}

/// Pushes to a device whose flash is `flash` (its boot config names the running slot; the
/// image goes to the other one). `images` holds user1's and user2's images.
pub fn push(
    model: &PushModel,
    agent: Agent,
    layout: &'static FlashLayout,
    flash: RamNor<Vec<u8>>,
    images: [&[u8]; 2],
) -> Result<Outcome, ModelError> {
    let mut flash = flash;
    // Known before the client connects: not part of the push.
    let running = boot::running_slot(&mut flash, layout).expect("the boot config names a slot");
    let mut sector: SectorBuffer = [0; SECTOR];
    match agent {
        Agent::Ours | Agent::OursPreErased => {
            let mut session = Session::new(SessionConfig::new(layout), &mut sector);
            let running = confirmed(running);
            if agent == Agent::OursPreErased {
                pre_erase(&mut session, running, &mut flash);
            }
            let mut flash = TimedFlash::new(flash, model.flash);
            let end = Simulation::new(model, &mut session, &mut flash).run(running, images, Goal::Push)?;
            Ok(outcome(&end, running.slot.expect("a slot runs").other(), flash))
        }
        Agent::Seed => {
            let mut flash = TimedFlash::new(flash, model.flash);
            let mut seed = SeedAgent::new(layout, running, &mut sector);
            let end = Simulation::new(model, &mut seed, &mut flash).run(
                Running::untracked(Some(running)),
                images,
                Goal::SeedPush,
            )?;
            Ok(outcome(&end, running.other(), flash))
        }
    }
}

/// The confirmed firmware in `slot`, as tcpflash-boot starts it.
fn confirmed(slot: SlotId) -> Running {
    Running { slot: Some(slot), status: BootStatus::Confirmed, build_id: None }
}

/// The session's own pre-erase of the idle slot, run to its end (untimed: it happens while
/// nobody pushes).
fn pre_erase(session: &mut Session<'_>, running: Running, flash: &mut RamNor<Vec<u8>>) {
    session.set_running(running);
    while session.pre_erase(flash) {}
}

fn outcome(end: &Ending, slot: SlotId, flash: TimedFlash<RamNor<Vec<u8>>>) -> Outcome {
    Outcome {
        time: Duration::from_nanos(end.time),
        first_image_byte: Duration::from_nanos(end.first_image_byte),
        flash_work: flash.work(),
        slot,
        flash: flash.into_inner(),
    }
}

/// How the host looks for the device after a push: its first attempt `first_look` after
/// the success line, then every `retry` until the device listens (`cargo tcpflash`'s
/// `await_return`). All zero: the moment the device listens, as no real host can know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostCheck {
    pub first_look: Duration,
    pub retry: Duration,
}

impl HostCheck {
    /// A host that connects the moment the device listens again.
    pub const IDEAL: HostCheck = HostCheck { first_look: Duration::ZERO, retry: Duration::ZERO };

    /// When the host connects, the device listening from `listening` (nanoseconds from the
    /// host's success line).
    fn attempt(&self, listening: u64) -> u64 {
        let first = self.first_look.as_nanos() as u64;
        let retry = self.retry.as_nanos() as u64;
        if listening <= first || retry == 0 {
            return first.max(listening);
        }
        first + (listening - first).div_ceil(retry) * retry
    }
}

/// The whole cycle of one push, from the host's connect to the new firmware's answer to
/// `GetNextFlash` reaching the host; its parts add up to [`Cycle::total`].
#[derive(Debug)]
pub struct Cycle {
    /// The push: connect to the client's last reply.
    pub push: Duration,
    /// The push's flash work.
    pub push_work: FlashWork,
    /// From the client's last reply to the device's reset: our agent's reboot once the
    /// client is done (its close reaches the device half a round trip later); the seed's
    /// 2 s timer and its boot switch (the SDK's flag: a sector erase and a page program).
    pub to_reboot: Duration,
    /// The bootloader on the timed flash: tcpflash-boot reads the config, the trial record,
    /// the whole image (its checks) and copies the RAM segments, then the agent reads how it
    /// was started; the SDK's bootloader (the seed's) checks nothing: the headers and the RAM
    /// segments. The ROM's and the firmware's own start-up are left out (the same for both).
    pub boot: Duration,
    /// From the device listening again to the host's check connecting.
    pub wait: Duration,
    /// The check: connect, `OTA` and `GetNextFlash`, the answer (ours confirms the trial
    /// on the flash first).
    pub check: Duration,
    /// The device's flash afterwards.
    pub flash: RamNor<Vec<u8>>,
}

impl Cycle {
    pub fn total(&self) -> Duration {
        self.push + self.to_reboot + self.boot + self.wait + self.check
    }
}

/// How long the seed's agent waits after its success line before it reboots.
pub const SEED_REBOOT_DELAY: Duration = Duration::from_secs(2);

/// A push and everything up to the new firmware's answer to the host's check
/// ([`Cycle`]). The device's flash needs a bootloader header at 0 ([`device_flash`]).
pub fn cycle(
    model: &PushModel,
    host: &HostCheck,
    agent: Agent,
    layout: &'static FlashLayout,
    flash: RamNor<Vec<u8>>,
    images: [&[u8]; 2],
) -> Result<Cycle, ModelError> {
    let mut flash = flash;
    // Real NOR: the bootloader's attempt bit and the confirmation program single words.
    flash.allow_bit_clearing();
    let running = boot::running_slot(&mut flash, layout).expect("the boot config names a slot");
    match agent {
        Agent::Ours | Agent::OursPreErased => our_cycle(model, host, agent, layout, running, flash, images),
        Agent::Seed => seed_cycle(model, host, layout, running, flash, images),
    }
}

fn our_cycle(
    model: &PushModel,
    host: &HostCheck,
    agent: Agent,
    layout: &'static FlashLayout,
    running: SlotId,
    mut flash: RamNor<Vec<u8>>,
    images: [&[u8]; 2],
) -> Result<Cycle, ModelError> {
    let mut sector: SectorBuffer = [0; SECTOR];
    let mut session = Session::new(SessionConfig::new(layout), &mut sector);
    let started = confirmed(running);
    if agent == Agent::OursPreErased {
        pre_erase(&mut session, started, &mut flash);
    }
    let mut flash = TimedFlash::new(flash, model.flash);
    let end = Simulation::new(model, &mut session, &mut flash).run(started, images, Goal::Push)?;
    // The client closes once it has the success line: its close (and the line's
    // acknowledgement) reach the device half a round trip later, and the session says when
    // the device resets.
    let closed = end.time + model.link.rtt.as_nanos() as u64 / 2;
    session.input_closed(instant(closed));
    session.delivered(instant(closed));
    let reset = session.reboot_at().ok_or(ModelError::NoReboot)?;
    let reset = (reset.total_micros().max(0) as u64 * 1000).max(end.time);
    let push_work = flash.work();
    flash.take_busy();
    let launched =
        crate::boot::tcpflash_boot(&mut flash).map_err(|halted| ModelError::Boot(halted.to_string()))?;
    let restarted = Running::read(&mut flash, layout, launched.handoff);
    let boot = flash.take_busy();
    let mut sector: SectorBuffer = [0; SECTOR];
    let mut fresh = Session::new(SessionConfig::new(layout), &mut sector);
    let asked = Simulation::new(model, &mut fresh, &mut flash).run(restarted, images, Goal::Ask)?;
    let times = CycleTimes { pushed: end.time, reset, boot, checked: asked.time };
    Ok(times.cycle(host, push_work, flash.into_inner()))
}

fn seed_cycle(
    model: &PushModel,
    host: &HostCheck,
    layout: &'static FlashLayout,
    running: SlotId,
    flash: RamNor<Vec<u8>>,
    images: [&[u8]; 2],
) -> Result<Cycle, ModelError> {
    let mut flash = TimedFlash::new(flash, model.flash);
    let mut sector: SectorBuffer = [0; SECTOR];
    let mut seed = SeedAgent::new(layout, running, &mut sector);
    let end = Simulation::new(model, &mut seed, &mut flash).run(
        Running::untracked(Some(running)),
        images,
        Goal::SeedPush,
    )?;
    let departed = end.success_departed.ok_or(ModelError::NoReboot)?;
    // Its timer from the success line, then `system_upgrade_reboot` writes the SDK's flag.
    let switch = model.flash.sector_erase + model.flash.page_program;
    let reset = departed + (SEED_REBOOT_DELAY + switch).as_nanos() as u64;
    let push_work = flash.work();
    let boot = sdk_boot_reads(flash.inner_mut(), layout, running.other(), &model.flash)?;
    let mut sector: SectorBuffer = [0; SECTOR];
    let mut fresh = SeedAgent::new(layout, running.other(), &mut sector);
    let restarted = Running::untracked(Some(running.other()));
    let asked = Simulation::new(model, &mut fresh, &mut flash).run(restarted, images, Goal::Ask)?;
    let times = CycleTimes { pushed: end.time, reset, boot, checked: asked.time };
    Ok(times.cycle(host, push_work, flash.into_inner()))
}

/// A cycle's moments, in the simulation's nanoseconds: the push's end, the reset, the
/// boot's length and the check's.
struct CycleTimes {
    pushed: u64,
    reset: u64,
    boot: Duration,
    checked: u64,
}

impl CycleTimes {
    /// The cycle's parts; the host looks when `host` says, once the device listens again.
    fn cycle(&self, host: &HostCheck, push_work: FlashWork, flash: RamNor<Vec<u8>>) -> Cycle {
        let listening = self.reset - self.pushed + self.boot.as_nanos() as u64;
        Cycle {
            push: Duration::from_nanos(self.pushed),
            push_work,
            to_reboot: Duration::from_nanos(self.reset - self.pushed),
            boot: self.boot,
            wait: Duration::from_nanos(host.attempt(listening) - listening),
            check: Duration::from_nanos(self.checked),
            flash,
        }
    }
}

/// What the SDK's bootloader reads to start the image in `slot`: the image's headers and its
/// RAM segments (it checks nothing).
fn sdk_boot_reads(
    flash: &mut RamNor<Vec<u8>>,
    layout: &FlashLayout,
    slot: SlotId,
    timings: &FlashTimings,
) -> Result<Duration, ModelError> {
    let slot = layout.slot(slot);
    let mut scratch = [0u8; ota_agent::image::BOOT_SCRATCH];
    let mut table = ota_agent::image::SegmentTable::EMPTY;
    if !ota_agent::image::check_bootable(flash, slot.offset, slot.capacity, &mut scratch, &mut table) {
        return Err(ModelError::Boot(format!("no bootable image in {}", slot.id)));
    }
    // The v2 header, the IROM's segment header, the v1 header of the RAM part, then each RAM
    // segment with its header.
    let segments: Duration = table.segments().iter().map(|&(_, len)| timings.read(8 + len as usize)).sum();
    Ok(timings.read(8) * 3 + segments)
}

/// The state of one run; times are nanoseconds from the client's connect.
struct Simulation<'m, 'f, A> {
    model: &'m PushModel,
    agent: &'m mut A,
    flash: &'f mut TimedFlash<RamNor<Vec<u8>>>,
    /// Every byte the client wrote to its socket, in order.
    stream: Vec<u8>,
    /// Bytes of `stream` put on the wire.
    sent: usize,
    /// How far the device's last acknowledgement and window let the host send.
    send_limit: usize,
    to_device_free: u64,
    /// Segments on the way: arrival time and the stream offset they end at.
    to_device: VecDeque<(u64, usize)>,
    to_host_free: u64,
    to_host: VecDeque<ToHost>,
    /// Stream bytes arrived at the device, and handed to the agent.
    received: usize,
    consumed: usize,
    /// The last acknowledgement and window the device sent.
    acked: usize,
    advertised: usize,
    /// Replies waiting for the stack.
    replies: Vec<u8>,
    /// The device's core is busy until then.
    device_free: u64,
    /// The agent worked since the stack last ran.
    stack_due: bool,
    /// Where the image starts in `stream`, once the client sends it.
    image_at: Option<usize>,
    /// When the packet with the success line left the device.
    success_departed: Option<u64>,
}

/// What the client is after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Goal {
    /// Our client's push: the image with its `Sha256` line.
    Push,
    /// The seed client's push: exactly what `tcp_flash.py` sends.
    SeedPush,
    /// The host's check after a push: the device's answer to `GetNextFlash`.
    Ask,
}

/// Where a run ended, in nanoseconds from the connect.
struct Ending {
    /// The client had its last reply (the success line; the slot name when asking).
    time: u64,
    first_image_byte: u64,
    success_departed: Option<u64>,
}

impl<'m, 'f, A: DeviceAgent> Simulation<'m, 'f, A> {
    fn new(model: &'m PushModel, agent: &'m mut A, flash: &'f mut TimedFlash<RamNor<Vec<u8>>>) -> Self {
        Simulation {
            model,
            agent,
            flash,
            stream: Vec::new(),
            sent: 0,
            send_limit: model.device.rx_window,
            to_device_free: 0,
            to_device: VecDeque::new(),
            to_host_free: 0,
            to_host: VecDeque::new(),
            received: 0,
            consumed: 0,
            acked: 0,
            advertised: model.device.rx_window,
            replies: Vec::new(),
            device_free: 0,
            stack_due: false,
            image_at: None,
            success_departed: None,
        }
    }

    /// Runs the client to its goal against the device started as `running` says.
    fn run(mut self, running: Running, images: [&[u8]; 2], goal: Goal) -> Result<Ending, ModelError> {
        let half_rtt = self.model.link.rtt.as_nanos() as u64 / 2;
        // SYN, SYN-ACK: both sides are connected one round trip after the connect.
        let mut now = 2 * half_rtt;
        let mut client = Client::new();
        self.agent.start(instant(now), running);
        let mut first_image_byte = None;
        for _ in 0..MAX_EVENTS {
            self.pump(&mut client, images);
            self.send_segments(now, half_rtt);
            let device_at = self.device_has_work().then_some(self.device_free.max(now));
            // A deadline of the session (only its commit grace comes due in a good push).
            let timer = self.agent.poll_timeout().map(|at| (at.total_micros().max(0) as u64 * 1000).max(now));
            let timer =
                timer.filter(|&at| at > now || self.device_free <= now).map(|at| at.max(self.device_free));
            let next = [
                self.to_device.front().map(|s| s.0),
                self.to_host.front().map(|p| p.arrive),
                device_at,
                timer,
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next else {
                return Err(ModelError::Stuck { at: Duration::from_nanos(now) });
            };
            now = next;
            while self.to_device.front().is_some_and(|s| s.0 <= now) {
                let (_, end) = self.to_device.pop_front().expect("checked");
                self.received = end;
                if first_image_byte.is_none() && self.image_at.is_some_and(|at| end > at) {
                    first_image_byte = Some(now);
                }
            }
            while self.to_host.front().is_some_and(|p| p.arrive <= now) {
                let packet = self.to_host.pop_front().expect("checked");
                self.send_limit = self.send_limit.max(packet.ack + packet.window);
                let mut data = &packet.data[..];
                while !data.is_empty() {
                    let (taken, event) = client.receive(data);
                    data = &data[taken..];
                    match event {
                        Some(Event::NextSlot(slot)) => {
                            let image = images[slot.index()];
                            match goal {
                                Goal::Push => client
                                    .send_checked_image(image.len() as u32, &ota_agent::auth::sha256(image)),
                                Goal::SeedPush => client.send_image(image.len() as u32),
                                Goal::Ask => return Ok(self.ending(now, None)),
                            }
                        }
                        // Every header line went into the socket before `Ready` could come.
                        Some(Event::Ready) => self.image_at = Some(self.stream.len()),
                        Some(Event::Success) => return Ok(self.ending(now, first_image_byte)),
                        Some(Event::Failed(error)) => return Err(ModelError::Failed(Box::new(error))),
                        Some(Event::Flashing | Event::Invalid | Event::BootState(_)) | None => {}
                    }
                }
            }
            let timer_due = self.agent.poll_timeout().is_some_and(|at| at <= instant(now));
            if (self.device_has_work() || timer_due) && self.device_free <= now {
                self.device_cycle(now, half_rtt);
            }
        }
        Err(ModelError::Stuck { at: Duration::from_nanos(now) })
    }

    fn ending(&self, now: u64, first_image_byte: Option<u64>) -> Ending {
        Ending {
            time: now,
            first_image_byte: first_image_byte.unwrap_or(now),
            success_departed: self.success_departed,
        }
    }

    /// Moves what the client wants to send into its socket.
    fn pump(&mut self, client: &mut Client, images: [&[u8]; 2]) {
        loop {
            let n = match client.transmit() {
                Transmit::Bytes(bytes) => {
                    self.stream.extend_from_slice(bytes);
                    bytes.len()
                }
                Transmit::Image { offset, len } => {
                    let image = images[client.slot().expect("an image follows the slot").index()];
                    self.stream.extend_from_slice(&image[offset as usize..(offset + len) as usize]);
                    len as usize
                }
                Transmit::Nothing => return,
            };
            client.sent(n);
        }
    }

    /// Puts segments on the wire while the device's window allows.
    fn send_segments(&mut self, now: u64, half_rtt: u64) {
        let limit = self.send_limit.min(self.stream.len());
        while self.sent < limit {
            let len = (limit - self.sent).min(self.model.link.mss);
            let depart = now.max(self.to_device_free);
            self.to_device_free = depart + self.wire_time(len);
            self.sent += len;
            self.to_device.push_back((self.to_device_free + half_rtt, self.sent));
        }
    }

    fn wire_time(&self, payload: usize) -> u64 {
        (payload as u64 + HEADER_BYTES) * 1_000_000_000 / self.model.link.bandwidth
    }

    fn device_has_work(&self) -> bool {
        self.stack_due || self.received > self.consumed || self.received > self.acked
    }

    /// One turn of the device's main loop at `now`: the stack acknowledges and sends the
    /// replies of the last poll, then the agent gets its share of the received bytes and
    /// works; the core is busy for as long as its flash operations take.
    fn device_cycle(&mut self, now: u64, half_rtt: u64) {
        self.run_stack(now, half_rtt);
        self.stack_due = false;
        let at = instant(now);
        if self.received == self.consumed {
            // Nothing new: the session's timer (its commit after the grace).
            if self.agent.poll_timeout().is_some_and(|due| due <= at) {
                self.agent.poll(at, self.flash);
                self.collect_replies();
                self.device_free = now + self.flash.take_busy().as_nanos() as u64;
                self.stack_due = true;
            }
            return;
        }
        let mut budget = self.model.device.feed_per_poll;
        loop {
            self.collect_replies();
            let end = self.received.min(self.consumed.saturating_add(budget));
            if end == self.consumed {
                break;
            }
            let taken = self.agent.receive(at, &self.stream[self.consumed..end], self.flash);
            self.consumed += taken;
            budget -= taken;
            if taken == 0 && self.agent_has_no_reply() {
                break;
            }
        }
        self.agent.poll(at, self.flash);
        self.collect_replies();
        self.device_free = now + self.flash.take_busy().as_nanos() as u64;
        self.stack_due = true;
    }

    fn agent_has_no_reply(&mut self) -> bool {
        match self.agent.next_reply() {
            Some(line) => {
                self.replies.extend_from_slice(line.as_bytes());
                false
            }
            None => true,
        }
    }

    fn collect_replies(&mut self) {
        while let Some(line) = self.agent.next_reply() {
            self.replies.extend_from_slice(line.as_bytes());
        }
    }

    /// Acknowledges what arrived and sends the replies, as one packet when there is
    /// something to say.
    fn run_stack(&mut self, now: u64, half_rtt: u64) {
        let window = self.model.device.rx_window - (self.received - self.consumed);
        // What is left of the window last advertised, seen from what has arrived since.
        let left = (self.acked + self.advertised).saturating_sub(self.received);
        let window_update = window > 0 && window / 2 >= left;
        if self.received == self.acked && !window_update && self.replies.is_empty() {
            return;
        }
        let data = std::mem::take(&mut self.replies);
        let depart = now.max(self.to_host_free);
        if data.windows(SUCCESS.len()).any(|window| window == SUCCESS.as_bytes()) {
            self.success_departed = Some(depart);
        }
        self.to_host_free = depart + self.wire_time(data.len());
        self.to_host.push_back(ToHost {
            arrive: self.to_host_free + half_rtt,
            ack: self.received,
            window,
            data,
        });
        self.acked = self.received;
        self.advertised = window;
    }
}

/// The agent's clock at model time `nanos`.
fn instant(nanos: u64) -> Instant {
    Instant::from_micros((nanos / 1000) as i64)
}

/// A chip of `layout` whose boot config runs `running`, with `contents` in user1 and user2
/// (each padded with 0xFF to whole words); a bootloader's header at 0 (which gives the
/// chip's size to tcpflash-boot, as rBoot reads it), everything else erased.
pub fn device_flash(layout: &FlashLayout, running: SlotId, contents: [&[u8]; 2]) -> RamNor<Vec<u8>> {
    use ota_agent::boot::BootConfig;
    use ota_agent::flash::NorFlash;
    use ota_agent::layout::BOOT_CONFIG_OFFSET;
    let mut flash = RamNor::new(layout.flash_size);
    let size = ota_agent::image::FlashSize::from_name(layout.name).expect("an esptool flash size");
    flash.write(0, &[ota_agent::image::MAGIC_SEGMENTS, 0, 0, size.code() << 4]).expect("sector 0 is erased");
    let config = BootConfig::for_layout(layout, running).to_bytes();
    flash.write(BOOT_CONFIG_OFFSET, &config).expect("the config fits the chip");
    for slot in &layout.slots {
        let mut bytes = contents[slot.id.index()].to_vec();
        bytes.resize(bytes.len().next_multiple_of(4), 0xFF);
        flash.write(slot.offset, &bytes).expect("the content fits its slot");
    }
    flash
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, LAYOUT};
    use crate::rboot;
    use crate::timed::{flash_floor, image_of_len};
    use ota_agent::boot::BootConfig;
    use ota_agent::flash::{FlashOp, ReadNorFlash};
    use ota_agent::layout::{DEFAULT_LAYOUT, SECTOR_SIZE};
    use ota_agent::session::Phase;

    const KB: usize = 1024;

    fn images(len: usize, seed: u8) -> [Vec<u8>; 2] {
        [0, 1].map(|i| image_of_len(DEFAULT_LAYOUT, &DEFAULT_LAYOUT.slots[i], len, seed))
    }

    /// user1 runs `running[0]`, user2 holds an older image.
    fn device(running: &[Vec<u8>; 2]) -> RamNor<Vec<u8>> {
        let old = images(300 * KB, 1);
        device_flash(DEFAULT_LAYOUT, SlotId::User1, [&running[0], &old[1]])
    }

    fn model(rx_window: usize, flash: FlashTimings) -> PushModel {
        PushModel {
            flash,
            link: LinkModel::default(),
            device: DeviceModel { rx_window, feed_per_poll: SECTOR },
        }
    }

    fn instant_flash() -> FlashTimings {
        FlashTimings {
            sector_erase: Duration::ZERO,
            block_erase: Duration::ZERO,
            page_program: Duration::ZERO,
            read_64_bytes: Duration::ZERO,
        }
    }

    fn slot_bytes(flash: &RamNor<Vec<u8>>, slot: SlotId, len: usize) -> &[u8] {
        let at = DEFAULT_LAYOUT.slot(slot).offset as usize;
        &flash.bytes()[at..at + len]
    }

    #[test]
    fn with_instant_flash_and_a_wide_window_a_push_takes_its_round_trips_and_the_wire_time() {
        let new = images(100 * KB, 2);
        let model = model(64 * KB, instant_flash());
        let out = push(&model, Agent::Seed, DEFAULT_LAYOUT, device(&new), [&new[0], &new[1]]).unwrap();
        // Connect, slot name, Ready, image and the reply: four round trips, plus the image on
        // the wire at 1 MB/s with a 40-byte header per 1460-byte segment.
        let segments = new[1].len().div_ceil(1460) as u64;
        let wire = Duration::from_nanos((new[1].len() as u64 + 40 * segments) * 1000);
        let least = 4 * model.link.rtt + wire;
        assert!(
            out.time >= least && out.time < least + Duration::from_millis(1),
            "{:?} vs {least:?}",
            out.time
        );
        assert_eq!(slot_bytes(&out.flash, SlotId::User2, new[1].len()), &new[1][..]);
    }

    #[test]
    fn a_small_window_limits_a_push_to_a_window_per_round_trip() {
        let new = images(100 * KB, 2);
        let model = model(2920, instant_flash());
        let out = push(&model, Agent::Seed, DEFAULT_LAYOUT, device(&new), [&new[0], &new[1]]).unwrap();
        let round_trips = new[1].len().div_ceil(2920) as u32;
        let least = model.link.rtt * round_trips;
        assert!(out.time > least && out.time < least * 3 / 2, "{:?} vs {least:?}", out.time);
    }

    #[test]
    fn the_seed_erases_and_writes_each_sector_on_its_core_and_never_reads_back() {
        let new = images(400 * KB, 2);
        let model = model(5840, FlashTimings::default());
        let out = push(&model, Agent::Seed, DEFAULT_LAYOUT, device(&new), [&new[0], &new[1]]).unwrap();
        let sectors = new[1].len().div_ceil(SECTOR) as u32;
        let work = out.flash_work;
        assert_eq!((work.sector_erases, work.block_erases, work.bytes_read), (sectors, 0, 0));
        assert_eq!(work.page_programs, new[1].len().div_ceil(256) as u32);
        let stalls = (model.flash.sector_erase + model.flash.page_program * 16) * (sectors - 1);
        assert!(out.time > stalls + 4 * model.link.rtt, "{:?}", out.time);
        assert_eq!(out.slot, SlotId::User2);
        assert_eq!(slot_bytes(&out.flash, SlotId::User2, new[1].len()), &new[1][..]);
        let config = BootConfig::parse(out.flash.bytes()[0x1000..0x1019].try_into().unwrap()).unwrap();
        assert_eq!(
            config.current_slot(DEFAULT_LAYOUT),
            Some(SlotId::User1),
            "the seed switches at its reboot"
        );
    }

    #[test]
    fn ours_writes_verifies_and_starts_a_trial_and_the_model_is_deterministic() {
        let new = images(400 * KB, 2);
        let model = model(3 * SECTOR, FlashTimings::default());
        let run = || push(&model, Agent::Ours, DEFAULT_LAYOUT, device(&new), [&new[0], &new[1]]).unwrap();
        let out = run();
        assert_eq!(slot_bytes(&out.flash, SlotId::User2, new[1].len()), &new[1][..]);
        let mut flash = out.flash.clone();
        assert_eq!(boot::running_slot(&mut flash, DEFAULT_LAYOUT), Some(SlotId::User1), "confirmed: user1");
        let at = DEFAULT_LAYOUT.boot_state_offset() as usize;
        let record =
            ota_agent::boot::trial::Trial::parse(flash.bytes()[at..at + 32].try_into().unwrap()).unwrap();
        assert_eq!(record.record.trial_offset, DEFAULT_LAYOUT.slot(SlotId::User2).offset, "user2 on trial");
        let floor = flash_floor(DEFAULT_LAYOUT.slot(SlotId::User2), new[1].len() as u32, &model.flash);
        let work = out.flash_work;
        // The image's erases are the floor's; one more sector is the trial record's.
        assert_eq!((work.sector_erases, work.block_erases), (floor.sector_erases + 1, floor.block_erases));
        // One read of the image (its checks and its SHA-256 in one pass), then the config
        // sector (it names user1 and lists user2 already: not rewritten) and the trial record
        // read back.
        assert_eq!(work.bytes_read, new[1].len() as u64 + 4096 + 32, "the slot is read back once");
        assert!(out.time > work.total() && out.time > floor.total());
        let again = run();
        assert_eq!(
            (again.time, again.first_image_byte, again.flash_work),
            (out.time, out.first_image_byte, work)
        );
    }

    /// Feeds `bytes` to `session` the way a driver does, stopping when the flash fails.
    fn feed(
        session: &mut Session<'_>,
        flash: &mut impl ota_agent::flash::NorFlash,
        now: Instant,
        mut bytes: &[u8],
    ) {
        while !bytes.is_empty() && session.phase() == Phase::Open {
            while session.next_reply().is_some() {}
            let taken = session.receive(now, &bytes[..bytes.len().min(1460)], flash);
            session.poll(now, flash);
            bytes = &bytes[taken..];
        }
        session.poll(now, flash);
        // The client half-closes after its last byte: the agent commits then.
        if session.phase() == Phase::Open {
            session.input_closed(now);
            session.poll(now, flash);
        }
    }

    fn request(image: &[u8]) -> Vec<u8> {
        let mut bytes = format!("OTA\r\nGetNextFlash\r\nFirmwareLength: {}\r\n", image.len()).into_bytes();
        bytes.extend_from_slice(image);
        bytes
    }

    #[test]
    fn a_power_cut_in_a_block_erase_leaves_the_old_slot_booting() {
        let user2 = *LAYOUT.slot(SlotId::User2);
        let image = image_of_len(LAYOUT, &user2, 200 * KB, 3);
        let factory =
            fixtures::flash_with(Some(BootConfig::for_layout(LAYOUT, SlotId::User1)), [true, false]);
        let user1_before = factory.bytes()[0x2000..0x2000 + 4096].to_vec();
        let now = Instant::from_secs(1);
        let mut sector = [0u8; SECTOR];

        // A clean run shows where the first block erase is.
        let mut dry = ota_agent::flash::Recording::new(factory.clone());
        let mut session = Session::new(SessionConfig::new(LAYOUT), &mut sector);
        session.set_running(ota_agent::boot::Running::untracked(Some(SlotId::User1)));
        session.start(now, None);
        feed(&mut session, &mut dry, now, &request(&image));
        let log = dry.take_log();
        let first_block = log.iter().position(|op| matches!(op, FlashOp::EraseBlock(_))).unwrap();
        assert_eq!(log[first_block], FlashOp::EraseBlock(user2.offset.next_multiple_of(0x1_0000)));

        let mut flash = factory.clone();
        flash.cut_power_at(first_block as u64);
        let mut session = Session::new(SessionConfig::new(LAYOUT), &mut sector);
        session.set_running(ota_agent::boot::Running::untracked(Some(SlotId::User1)));
        session.start(now, None);
        feed(&mut session, &mut flash, now, &request(&image));
        assert!(flash.power_lost());
        flash.restore_power();
        let half = (user2.offset.next_multiple_of(0x1_0000) + 0x8000) as usize;
        assert!(flash.bytes()[half - 0x8000..half].iter().all(|&b| b == 0xFF), "the block is half erased");
        let boot = rboot::boot(&mut flash).unwrap();
        assert_eq!(boot.slot(LAYOUT), Some(SlotId::User1), "the old slot still boots");
        assert_eq!(&flash.bytes()[0x2000..0x2000 + 4096], &user1_before[..]);
        assert_eq!(&flash.bytes()[0x1000..0x2000], &factory.bytes()[0x1000..0x2000], "config untouched");

        // The next push succeeds over the half-erased block.
        let mut session = Session::new(SessionConfig::new(LAYOUT), &mut sector);
        session.set_running(ota_agent::boot::Running::untracked(Some(SlotId::User1)));
        session.start(now, None);
        feed(&mut session, &mut flash, now, &request(&image));
        assert_eq!(rboot::boot(&mut flash).unwrap().slot(LAYOUT), Some(SlotId::User2));
        let at = user2.offset as usize;
        assert_eq!(&flash.bytes()[at..at + image.len()], &image[..]);
        assert_eq!(SECTOR_SIZE as usize, SECTOR);
    }

    #[test]
    fn into_a_pre_erased_slot_ours_only_programs() {
        let new = images(400 * KB, 2);
        let model = model(3 * SECTOR, FlashTimings::default());
        let run = |agent| push(&model, agent, DEFAULT_LAYOUT, device(&new), [&new[0], &new[1]]).unwrap();
        let (erasing, pre_erased) = (run(Agent::Ours), run(Agent::OursPreErased));
        assert_eq!(slot_bytes(&pre_erased.flash, SlotId::User2, new[1].len()), &new[1][..]);
        let work = pre_erased.flash_work;
        assert_eq!((work.sector_erases, work.block_erases), (1, 0), "only the trial record's sector");
        assert_eq!(work.page_programs, erasing.flash_work.page_programs);
        let floor = flash_floor(DEFAULT_LAYOUT.slot(SlotId::User2), new[1].len() as u32, &model.flash);
        assert!(pre_erased.time < floor.total() && pre_erased.time > floor.program);
    }

    fn our_check() -> HostCheck {
        HostCheck { first_look: Duration::from_millis(250), retry: Duration::from_millis(250) }
    }

    #[test]
    fn our_cycle_reboots_once_the_client_closes_boots_through_the_check_and_answers_confirmed() {
        let new = images(400 * KB, 2);
        let model = model(3 * SECTOR, FlashTimings::default());
        let cycle = cycle(
            &model,
            &our_check(),
            Agent::OursPreErased,
            DEFAULT_LAYOUT,
            device(&new),
            [&new[0], &new[1]],
        )
        .unwrap();
        // The client's close reaches the device half a round trip after its success line.
        assert_eq!(cycle.to_reboot, model.link.rtt / 2);
        // tcpflash-boot reads the whole image to check it (and the agent its record).
        let image_read = model.flash.read(new[1].len());
        assert!(cycle.boot > image_read && cycle.boot < image_read * 2, "{:?}", cycle.boot);
        // `cargo tcpflash` looks 250 ms after the success line: the device is back by then.
        assert_eq!(cycle.to_reboot + cycle.boot + cycle.wait, Duration::from_millis(250));
        // Connect, ask, answer after the confirmation's config rewrite (a sector erase).
        assert!(cycle.check > 2 * model.link.rtt + model.flash.sector_erase);
        assert!(cycle.check < 3 * model.link.rtt + 2 * model.flash.sector_erase);
        assert_eq!(cycle.total(), cycle.push + Duration::from_millis(250) + cycle.check);
        // The check-in confirmed user2: the config names it, the trial is confirmed.
        let mut flash = cycle.flash;
        assert_eq!(boot::running_slot(&mut flash, DEFAULT_LAYOUT), Some(SlotId::User2));
        let at = DEFAULT_LAYOUT.boot_state_offset() as usize;
        let record =
            ota_agent::boot::trial::Trial::parse(flash.bytes()[at..at + 32].try_into().unwrap()).unwrap();
        assert!(record.confirmed && record.attempts_used == 1);
    }

    #[test]
    fn the_seeds_cycle_waits_its_two_seconds_and_its_switch() {
        let new = images(100 * KB, 2);
        let model = model(4 * 1460, FlashTimings::default());
        let cycle =
            cycle(&model, &HostCheck::IDEAL, Agent::Seed, DEFAULT_LAYOUT, device(&new), [&new[0], &new[1]])
                .unwrap();
        // From the success line leaving the device: 2 s, then the SDK's flag written.
        let switch = model.flash.sector_erase + model.flash.page_program;
        let after_line = SEED_REBOOT_DELAY + switch;
        assert!(cycle.to_reboot < after_line && cycle.to_reboot > after_line - model.link.rtt);
        assert_eq!(cycle.wait, Duration::ZERO, "the ideal host connects as the device listens");
        assert!(cycle.boot < Duration::from_millis(1), "headers and RAM segments only: {:?}", cycle.boot);
        assert!(cycle.check >= 2 * model.link.rtt && cycle.check < 3 * model.link.rtt);
    }

    #[test]
    fn the_host_looks_at_its_first_look_then_at_each_retry() {
        let ms = |ms: u64| ms * 1_000_000;
        let check = our_check();
        assert_eq!(check.attempt(ms(60)), ms(250));
        assert_eq!(check.attempt(ms(250)), ms(250));
        assert_eq!(check.attempt(ms(251)), ms(500));
        assert_eq!(check.attempt(ms(900)), ms(1000));
        assert_eq!(HostCheck::IDEAL.attempt(ms(60)), ms(60));
    }

    #[test]
    fn device_flash_holds_the_config_and_both_slots() {
        let new = images(8 * KB, 4);
        let mut flash = device_flash(DEFAULT_LAYOUT, SlotId::User2, [&new[0], &new[1]]);
        assert_eq!(boot::running_slot(&mut flash, DEFAULT_LAYOUT), Some(SlotId::User2));
        assert_eq!(slot_bytes(&flash, SlotId::User1, new[0].len()), &new[0][..]);
        let mut word = [0u8; 4];
        flash.read(0x40_000, &mut word).unwrap();
        assert_eq!(word, [0xFF; 4]);
    }
}
