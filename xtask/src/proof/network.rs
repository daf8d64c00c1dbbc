//! The network-fault campaign: whatever a client or the network does, the device keeps
//! running the slot it ran, listens again, and takes the next push.
//!
//! Three rigs, each pushing example-blinky's real images:
//!
//! - the session in memory (simulated time, so hundreds of cases are cheap): the connection
//!   closed or reset at every byte of the request lines and at many offsets of the image,
//!   garbage at every byte of the request lines, a stall at every step;
//! - the virtual ESP8266 (`VirtualDevice`) on a real TCP listener on 127.0.0.1, with a short
//!   idle timeout: closes and resets at every protocol step and at image offsets, stalls,
//!   garbage, a second client during a transfer; each case is followed by a push with
//!   `cargo tcpflash`'s own push code and a wait for the device to come back on the new slot;
//! - the agent on smoltcp (`tcpflash_sim::wire`): pushes over a wire that drops and
//!   corrupts packets, with a small MTU: each lands intact or fails with a clear error, and
//!   a push over a clean wire follows.

use std::fmt;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use cargo_tcpflash::push::{self as host_push, Target, Timeouts};
use ota_agent::boot::CONFIG_STRUCT_LEN;
use ota_agent::client::Event;
use ota_agent::flash::{ErrorType, NorError, NorFlash, RamNor, ReadNorFlash};
use ota_agent::layout::{BOOT_CONFIG_OFFSET, SlotId};
use ota_agent::net::AgentConfig;
use ota_agent::protocol::{LineBuf, Reply, ReplyLine, Request, RequestError};
use ota_agent::session::{Failure, Phase};
use ota_agent::writer::SECTOR;
use smoltcp::time::Duration;
use tcpflash_sim::wire::{LinkFaults, World};
use tcpflash_sim::{DeviceEvent, DeviceStatus, VirtualDevice, rboot};

use super::Blinky;
use super::agent::{Agent, IDLE_TIMEOUT, client_push, succeeded};

/// How the campaign runs.
#[derive(Clone, Debug)]
pub struct NetOptions {
    /// The virtual device's idle timeout: short, so stalls cost little.
    pub tcp_idle_timeout: StdDuration,
    /// Virtual devices serving the TCP cases side by side (each case waits for a reboot).
    pub tcp_devices: usize,
    /// Image offsets closed at in memory: every `stride` bytes, and around each sector edge.
    pub session_stride: usize,
    /// The smoltcp pushes: (drop %, corrupt %, MTU); each runs with two seeds.
    pub smoltcp_links: Vec<(u8, u8, usize)>,
}

impl Default for NetOptions {
    fn default() -> NetOptions {
        let mut links = Vec::new();
        for drop in [0, 5, 15, 30] {
            for corrupt in [0, 10] {
                for mtu in [1500, 296] {
                    links.push((drop, corrupt, mtu));
                }
            }
        }
        NetOptions {
            tcp_idle_timeout: StdDuration::from_secs(1),
            tcp_devices: 4,
            session_stride: 997,
            smoltcp_links: links,
        }
    }
}

/// The campaign's figures and every failure, described.
#[derive(Clone, Debug, Default)]
pub struct NetReport {
    pub session_cases: usize,
    pub tcp_cases: usize,
    pub smoltcp_cases: usize,
    /// smoltcp pushes that landed, and those that failed with an error (each error's text).
    pub smoltcp_landed: usize,
    pub smoltcp_errors: Vec<String>,
    pub failures: Vec<String>,
}

impl NetReport {
    pub fn cases(&self) -> usize {
        self.session_cases + self.tcp_cases + self.smoltcp_cases
    }
}

impl fmt::Display for NetReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "session in memory: {} cases", self.session_cases)?;
        writeln!(f, "virtual ESP8266 over TCP: {} cases", self.tcp_cases)?;
        writeln!(
            f,
            "smoltcp over a faulty wire: {} pushes, {} landed, {} failed with an error",
            self.smoltcp_cases,
            self.smoltcp_landed,
            self.smoltcp_errors.len()
        )?;
        let mut errors = self.smoltcp_errors.clone();
        errors.sort();
        errors.dedup();
        for error in errors {
            writeln!(f, "    error seen: {error}")?;
        }
        for failure in &self.failures {
            writeln!(f, "FAILED: {failure}")?;
        }
        writeln!(f, "network faults: cases={} failures={}", self.cases(), self.failures.len())
    }
}

/// Runs the three rigs.
pub fn campaign(blinky: &Blinky, options: &NetOptions) -> NetReport {
    let mut report = NetReport::default();
    session_cases(blinky, options, &mut report);
    tcp_cases(blinky, options, &mut report);
    smoltcp_cases(blinky, options, &mut report);
    report
}

// ---------------------------------------------------------------------------------------
// The session in memory

/// What the seed client sends before the image, for an image of `len` bytes.
fn request_lines(len: usize) -> Vec<u8> {
    let mut lines = LineBuf::<64>::new();
    Request::Ota.encode(&mut lines);
    Request::GetNextFlash.encode(&mut lines);
    Request::FirmwareLength(len as u32).encode(&mut lines);
    lines.as_bytes().to_vec()
}

fn hello_len() -> usize {
    let mut lines = LineBuf::<64>::new();
    Request::Ota.encode(&mut lines);
    Request::GetNextFlash.encode(&mut lines);
    lines.len()
}

/// The replies a client hears when it stops after `sent` bytes of `request_lines` + image
/// and closes its side: the lines its complete requests earned, then, in the image,
/// `Invalid` and the truncation.
fn replies_when_closed(target: SlotId, header: usize, image_len: usize, sent: usize) -> Vec<u8> {
    let mut out = Vec::new();
    if sent >= hello_len() {
        out.extend_from_slice(Reply::NextSlot(target).encode().as_bytes());
    }
    if sent >= header {
        out.extend_from_slice(Reply::Ready.encode().as_bytes());
        out.extend_from_slice(Reply::Invalid.encode().as_bytes());
        let failure = Failure::Truncated { received: (sent - header) as u32, len: image_len as u32 };
        out.extend_from_slice(ReplyLine::error_message(&failure).as_bytes());
    }
    out
}

/// The replies of a client that goes silent after `sent` bytes: its earned lines, then the
/// idle timeout (after `Invalid` in the image).
fn replies_when_stalled(target: SlotId, header: usize, sent: usize) -> Vec<u8> {
    let mut out = Vec::new();
    if sent >= hello_len() {
        out.extend_from_slice(Reply::NextSlot(target).encode().as_bytes());
    }
    if sent >= header {
        out.extend_from_slice(Reply::Ready.encode().as_bytes());
        out.extend_from_slice(Reply::Invalid.encode().as_bytes());
    }
    out.extend_from_slice(ReplyLine::error_message(&Failure::IdleTimeout).as_bytes());
    out
}

/// Where a connection is cut: each byte of the request lines, every `stride` bytes of the
/// image, and the bytes around each sector edge.
fn cut_offsets(header: usize, image_len: usize, stride: usize) -> Vec<usize> {
    let mut offsets: Vec<usize> = (0..header).collect();
    offsets.extend((0..image_len).step_by(stride).map(|at| header + at));
    for edge in (SECTOR..image_len).step_by(SECTOR) {
        offsets.extend([edge - 1, edge, edge + 1].map(|at| header + at));
    }
    offsets.push(header + image_len - 1);
    offsets.sort_unstable();
    offsets.dedup();
    offsets
}

/// A fault the session cases inject: it drives the agent and the chip, then says what broke.
type SessionFault<'f> = dyn FnMut(&mut Agent<'_>, &mut RamNor<Vec<u8>>) -> Result<(), String> + 'f;

fn config_of(flash: &RamNor<Vec<u8>>) -> Vec<u8> {
    let at = BOOT_CONFIG_OFFSET as usize;
    flash.bytes()[at..at + CONFIG_STRUCT_LEN].to_vec()
}

/// The checks after every fault, in memory: the agent listens again, nothing switched, rBoot
/// still boots the running slot, and a push by the real client lands and boots.
fn after_fault_in_memory(
    blinky: &Blinky,
    label: &str,
    agent: &mut Agent<'_>,
    flash: &mut RamNor<Vec<u8>>,
    config_before: &[u8],
    running: SlotId,
    checked: bool,
) -> Result<(), String> {
    agent.disconnect();
    if agent.phase() != Phase::Idle {
        return Err(format!("{label}: the agent does not listen again (phase {:?})", agent.phase()));
    }
    if config_of(flash) != config_before {
        return Err(format!("{label}: the boot config changed"));
    }
    let booted = rboot::boot(&mut flash.clone()).ok().and_then(|boot| boot.slot(blinky.layout));
    if booted != Some(running) {
        return Err(format!("{label}: rBoot would boot {booted:?}, not the running {running}"));
    }
    let events = client_push(agent, flash, blinky.image_refs(), checked);
    if !succeeded(&events) {
        return Err(format!("{label}: the following push failed: {events:?}"));
    }
    check_landed(blinky, label, flash, running.other())
}

/// rBoot boots `slot`, which holds its image byte for byte.
fn check_landed(
    blinky: &Blinky,
    label: &str,
    flash: &mut RamNor<Vec<u8>>,
    slot: SlotId,
) -> Result<(), String> {
    let booted = rboot::boot(&mut flash.clone()).ok().and_then(|boot| boot.slot(blinky.layout));
    if booted != Some(slot) {
        return Err(format!("{label}: after the push rBoot boots {booted:?}, not {slot}"));
    }
    let image = blinky.image(slot);
    let at = blinky.layout.slot(slot).offset as usize;
    if &flash.bytes()[at..at + image.len()] != image {
        return Err(format!("{label}: {slot} does not hold {} byte for byte", slot.file_name()));
    }
    Ok(())
}

fn session_cases(blinky: &Blinky, options: &NetOptions, report: &mut NetReport) {
    let running = SlotId::User1;
    let target = running.other();
    let image = blinky.image(target);
    let header = request_lines(image.len());
    let stream = [header.as_slice(), image].concat();
    let factory = blinky.factory_flash();
    let config_before = config_of(&factory);
    let mut sector = [0u8; SECTOR];
    let mut run = |label: String, fault: &mut SessionFault<'_>| {
        report.session_cases += 1;
        let mut flash = factory.clone();
        // A device fresh from its last reboot; the fault and the following push meet
        // the same agent.
        let mut agent = Agent::new(&mut sector, blinky.layout, Some(running));
        agent.accept();
        let checked = report.session_cases.is_multiple_of(3);
        let result = fault(&mut agent, &mut flash).and_then(|()| {
            after_fault_in_memory(blinky, &label, &mut agent, &mut flash, &config_before, running, checked)
        });
        if let Err(problem) = result {
            report.failures.push(problem);
        }
    };

    for (i, cut) in cut_offsets(header.len(), image.len(), options.session_stride).into_iter().enumerate() {
        let reset = i % 2 == 1;
        let how = if reset { "reset" } else { "closed" };
        run(format!("session: connection {how} after {cut} bytes"), &mut |agent, flash| {
            agent.send(flash, &stream[..cut]);
            if reset {
                return Ok(());
            }
            agent.input_closed(flash);
            let expected = replies_when_closed(target, header.len(), image.len(), cut);
            expect_replies(&format!("session: closed after {cut} bytes"), agent.replies(), &expected)
        });
    }

    // Garbage at every byte of the request lines, and where the image starts.
    let garbage: &[u8] = b"\x00\xfe garbage \x7f\r\n";
    for at in 0..=header.len() {
        run(format!("session: garbage at byte {at}"), &mut |agent, flash| {
            agent.send(flash, &[&stream[..at], garbage, &stream[at..]].concat());
            let replies = String::from_utf8_lossy(agent.replies()).into_owned();
            let last = replies.lines().last().unwrap_or("");
            match last.strip_prefix("ERR: ") {
                Some(reason) if !reason.is_empty() && agent.phase() == Phase::Closing => Ok(()),
                _ => Err(format!("session: garbage at byte {at}: no error reply, got {replies:?}")),
            }
        });
    }

    // A stall at every step.
    let image_stalls = [0, 1, SECTOR - 1, SECTOR, image.len() / 2, image.len() - 1];
    let stalls = [0, hello_len(), header.len()].into_iter().chain(image_stalls.map(|at| header.len() + at));
    for sent in stalls {
        run(format!("session: silent after {sent} bytes"), &mut |agent, flash| {
            agent.send(flash, &stream[..sent]);
            agent.wait(flash, IDLE_TIMEOUT);
            let expected = replies_when_stalled(target, header.len(), sent);
            expect_replies(&format!("session: silent after {sent} bytes"), agent.replies(), &expected)?;
            if agent.phase() != Phase::Closing {
                return Err(format!("session: silent after {sent} bytes: not closing ({:?})", agent.phase()));
            }
            Ok(())
        });
    }
}

fn expect_replies(label: &str, got: &[u8], expected: &[u8]) -> Result<(), String> {
    if got == expected {
        Ok(())
    } else {
        Err(format!(
            "{label}: replies {:?}, expected {:?}",
            got.escape_ascii().to_string(),
            expected.escape_ascii().to_string()
        ))
    }
}

// ---------------------------------------------------------------------------------------
// The virtual ESP8266 over TCP

/// A RAM flash the campaign reads while the device thread serves from it.
#[derive(Clone)]
struct SharedFlash(Arc<Mutex<RamNor<Vec<u8>>>>);

impl SharedFlash {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().expect("flash lock").bytes().to_vec()
    }
}

impl ErrorType for SharedFlash {
    type Error = NorError;
}

impl ReadNorFlash for SharedFlash {
    const READ_SIZE: usize = RamNor::<Vec<u8>>::READ_SIZE;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), NorError> {
        self.0.lock().expect("flash lock").read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.0.lock().expect("flash lock").capacity()
    }
}

impl NorFlash for SharedFlash {
    const WRITE_SIZE: usize = RamNor::<Vec<u8>>::WRITE_SIZE;
    const ERASE_SIZE: usize = RamNor::<Vec<u8>>::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), NorError> {
        self.0.lock().expect("flash lock").erase(from, to)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), NorError> {
        self.0.lock().expect("flash lock").write(offset, bytes)
    }
}

/// A virtual ESP8266 serving in a thread on a free port of 127.0.0.1.
struct Rig<'b> {
    blinky: &'b Blinky,
    port: u16,
    flash: SharedFlash,
    log: Arc<Mutex<Vec<DeviceEvent>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

/// How long a raw client waits for each answer.
const ANSWER_TIMEOUT: StdDuration = StdDuration::from_secs(10);

impl<'b> Rig<'b> {
    fn start(blinky: &'b Blinky, idle_timeout: StdDuration) -> Result<Rig<'b>, String> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let flash = SharedFlash(Arc::new(Mutex::new(blinky.factory_flash())));
        let mut device = VirtualDevice::new(flash.clone(), blinky.layout).map_err(|e| e.to_string())?;
        device.set_idle_timeout(idle_timeout);
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, flag) = (Arc::clone(&log), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            device
                .serve(&listener, &flag, &mut |event| sink.lock().expect("log lock").push(event.clone()))
                .map_err(|e| e.to_string())
        });
        Ok(Rig { blinky, port, flash, log, stop, thread: Some(thread) })
    }

    fn running(&self) -> Option<SlotId> {
        DeviceStatus::of(&self.flash.bytes(), self.blinky.layout).booted_slot()
    }

    fn config(&self) -> Vec<u8> {
        let at = BOOT_CONFIG_OFFSET as usize;
        self.flash.bytes()[at..at + CONFIG_STRUCT_LEN].to_vec()
    }

    fn reboots(&self) -> usize {
        self.log.lock().expect("log lock").iter().filter(|e| **e == DeviceEvent::Rebooting).count()
    }

    fn connect(&self) -> Result<Raw, String> {
        let stream =
            TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| format!("cannot connect: {e}"))?;
        stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Raw { stream })
    }

    /// Asks the agent which slot it wants, until it answers (a closing connection or a
    /// reboot may hold it briefly). Proves it listens again.
    fn asks_for(&self) -> Result<SlotId, String> {
        let deadline = StdInstant::now() + StdDuration::from_secs(10);
        loop {
            let answer = self.connect().and_then(|mut raw| {
                raw.send(&request_lines(1)[..hello_len()])?;
                raw.line()
            });
            let last = match answer {
                Ok(line) => match Reply::parse(line.strip_suffix(b"\r\n").unwrap_or(&line)) {
                    Some(Reply::NextSlot(slot)) => return Ok(slot),
                    _ => String::from_utf8_lossy(&line).into_owned(),
                },
                Err(error) => error,
            };
            if StdInstant::now() >= deadline {
                return Err(format!("the agent does not listen again: last answer {last:?}"));
            }
            std::thread::sleep(StdDuration::from_millis(50));
        }
    }

    /// The following push, with `cargo tcpflash`'s push code, and the wait for the device
    /// to come back on the new slot.
    fn push_lands(&self) -> Result<(), String> {
        let target = Target {
            host: "127.0.0.1".into(),
            port: self.port,
            addrs: vec![([127, 0, 0, 1], self.port).into()],
        };
        let timeouts = Timeouts {
            connect: StdDuration::from_secs(5),
            reply: StdDuration::from_secs(10),
            reboot: StdDuration::from_secs(15),
        };
        let pushed = host_push::push(&target, self.blinky.image_refs(), None, &timeouts, &mut |_| {})
            .map_err(|e| format!("the following push failed: {e}"))?;
        let now_running = host_push::await_return(&target, &timeouts, &mut |_| {})
            .map_err(|e| format!("the device did not come back after the following push: {e}"))?;
        if now_running != pushed.slot {
            return Err(format!(
                "after the following push the device runs {now_running}, not {}",
                pushed.slot
            ));
        }
        let image = self.blinky.image(pushed.slot);
        let at = self.blinky.layout.slot(pushed.slot).offset as usize;
        if &self.flash.bytes()[at..at + image.len()] != image {
            return Err(format!("{} does not hold the pushed image byte for byte", pushed.slot));
        }
        Ok(())
    }

    fn stop(mut self) -> Result<(), String> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take().map(|thread| thread.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err("the virtual device panicked".into()),
            None => Ok(()),
        }
    }
}

/// A raw client connection, for scripted faults.
struct Raw {
    stream: TcpStream,
}

impl Raw {
    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream.write_all(bytes).map_err(|e| format!("send failed: {e}"))
    }

    /// One reply line (CR LF included).
    fn line(&mut self) -> Result<Vec<u8>, String> {
        let mut line = Vec::new();
        let mut byte = [0u8];
        while !line.ends_with(b"\r\n") {
            match self.stream.read(&mut byte) {
                Ok(0) => return Err(format!("closed after {:?}", line.escape_ascii().to_string())),
                Ok(_) => line.push(byte[0]),
                Err(e) => {
                    return Err(format!("no reply line ({e}) after {:?}", line.escape_ascii().to_string()));
                }
            }
        }
        Ok(line)
    }

    /// Everything until the device closes.
    fn rest(&mut self) -> Result<Vec<u8>, String> {
        let mut rest = Vec::new();
        match self.stream.read_to_end(&mut rest) {
            Ok(_) => Ok(rest),
            Err(e) => {
                Err(format!("the device did not close ({e}); got {:?}", rest.escape_ascii().to_string()))
            }
        }
    }

    /// Closes with a reply still unread, which makes the kernel reset the connection (std
    /// has no SO_LINGER): waits for the device's reply to arrive first.
    fn reset(self) {
        std::thread::sleep(StdDuration::from_millis(50));
        drop(self);
    }

    fn half_close(&mut self) -> Result<(), String> {
        self.stream.shutdown(Shutdown::Write).map_err(|e| e.to_string())
    }

    /// Sends the request lines and reads the slot and `Ready`.
    fn until_ready(&mut self, target: SlotId, image_len: usize) -> Result<(), String> {
        let lines = request_lines(image_len);
        self.send(&lines[..hello_len()])?;
        expect_replies("slot", &self.line()?, Reply::NextSlot(target).encode().as_bytes())?;
        self.send(&lines[hello_len()..])?;
        expect_replies("Ready", &self.line()?, Reply::Ready.encode().as_bytes())
    }
}

/// How a TCP case leaves the device.
enum Leaves {
    /// Running the same slot, config untouched.
    Unchanged,
    /// A push in the case itself landed (the second-client case).
    Switched,
}

type TcpCase = (String, Box<dyn Fn(&Rig<'_>, SlotId) -> Result<Leaves, String> + Send + Sync>);

fn tcp_case(
    name: impl Into<String>,
    case: impl Fn(&Rig<'_>, SlotId) -> Result<Leaves, String> + Send + Sync + 'static,
) -> TcpCase {
    (name.into(), Box::new(case))
}

fn tcp_case_list(blinky: &Blinky) -> Vec<TcpCase> {
    let image_len = blinky.images[0].len().min(blinky.images[1].len());
    let mut cases = Vec::new();
    let image = |rig: &Rig<'_>, target: SlotId| rig.blinky.image(target).to_vec();

    // Closed (FIN) or dropped with replies unread (RST) at every protocol step.
    cases.push(tcp_case("tcp: closed before a byte", |rig, _| {
        let mut raw = rig.connect()?;
        raw.half_close()?;
        expect_replies("closed before a byte", &raw.rest()?, b"").map(|()| Leaves::Unchanged)
    }));
    cases.push(tcp_case("tcp: closed inside the OTA line", |rig, _| {
        let mut raw = rig.connect()?;
        raw.send(b"OT")?;
        raw.half_close()?;
        expect_replies("closed inside OTA", &raw.rest()?, b"").map(|()| Leaves::Unchanged)
    }));
    cases.push(tcp_case("tcp: closed after OTA", |rig, _| {
        let mut raw = rig.connect()?;
        raw.send(b"OTA\r\n")?;
        raw.half_close()?;
        expect_replies("closed after OTA", &raw.rest()?, b"").map(|()| Leaves::Unchanged)
    }));
    cases.push(tcp_case("tcp: reset after GetNextFlash, slot unread", |rig, _| {
        let mut raw = rig.connect()?;
        raw.send(&request_lines(1)[..hello_len()])?;
        raw.reset();
        Ok(Leaves::Unchanged)
    }));
    cases.push(tcp_case("tcp: closed after the slot name", |rig, target| {
        let mut raw = rig.connect()?;
        raw.send(&request_lines(1)[..hello_len()])?;
        expect_replies("slot", &raw.line()?, Reply::NextSlot(target).encode().as_bytes())?;
        raw.half_close()?;
        expect_replies("closed after the slot", &raw.rest()?, b"").map(|()| Leaves::Unchanged)
    }));
    cases.push(tcp_case("tcp: reset after FirmwareLength, Ready unread", move |rig, target| {
        let mut raw = rig.connect()?;
        let lines = request_lines(image(rig, target).len());
        raw.send(&lines[..hello_len()])?;
        raw.line()?;
        raw.send(&lines[hello_len()..])?;
        raw.reset();
        Ok(Leaves::Unchanged)
    }));
    let offsets = [
        0,
        1,
        100,
        SECTOR - 1,
        SECTOR,
        SECTOR + 1,
        3 * SECTOR + 7,
        image_len / 2,
        image_len - 16,
        image_len - 1,
    ];
    for (i, at) in offsets.into_iter().enumerate() {
        if i % 3 == 2 {
            cases.push(tcp_case(
                format!("tcp: dropped (reset) after {at} image bytes"),
                move |rig, target| {
                    // `Ready` stays unread, so closing resets the connection (RST).
                    let mut raw = rig.connect()?;
                    let image = image(rig, target);
                    let lines = request_lines(image.len());
                    raw.send(&lines[..hello_len()])?;
                    raw.line()?;
                    raw.send(&lines[hello_len()..])?;
                    raw.send(&image[..at])?;
                    raw.reset();
                    Ok(Leaves::Unchanged)
                },
            ));
        } else {
            cases.push(tcp_case(format!("tcp: closed after {at} image bytes"), move |rig, target| {
                let mut raw = rig.connect()?;
                let image = image(rig, target);
                raw.until_ready(target, image.len())?;
                raw.send(&image[..at])?;
                raw.half_close()?;
                let mut expected = Reply::Invalid.encode().as_bytes().to_vec();
                let failure = Failure::Truncated { received: at as u32, len: image.len() as u32 };
                expected.extend_from_slice(ReplyLine::error_message(&failure).as_bytes());
                expect_replies(&format!("closed after {at} image bytes"), &raw.rest()?, &expected)?;
                Ok(Leaves::Unchanged)
            }));
        }
    }

    // Stalls beyond the idle timeout at each step.
    let stalls: [(&str, Option<usize>); 5] = [
        ("before a byte", None),
        ("after OTA", None),
        ("after the slot name", None),
        ("after Ready", Some(0)),
        ("in the image", Some(2 * SECTOR + 3)),
    ];
    for (step, (what, image_at)) in stalls.into_iter().enumerate() {
        cases.push(tcp_case(format!("tcp: silent {what}"), move |rig, target| {
            let mut raw = rig.connect()?;
            let image = image(rig, target);
            let mut expected = Vec::new();
            match step {
                0 => {}
                1 => raw.send(b"OTA\r\n")?,
                2 => {
                    raw.send(&request_lines(1)[..hello_len()])?;
                    expect_replies("slot", &raw.line()?, Reply::NextSlot(target).encode().as_bytes())?;
                }
                _ => {
                    raw.until_ready(target, image.len())?;
                    raw.send(&image[..image_at.unwrap_or(0)])?;
                    expected.extend_from_slice(Reply::Invalid.encode().as_bytes());
                }
            }
            expected.extend_from_slice(ReplyLine::error_message(&Failure::IdleTimeout).as_bytes());
            expect_replies(&format!("silent {what}"), &raw.rest()?, &expected)?;
            Ok(Leaves::Unchanged)
        }));
    }

    // Garbage between the steps.
    let unknown = ReplyLine::error_message(&Failure::Request(RequestError::Unknown)).as_bytes().to_vec();
    let garbage_cases: [(&str, &[u8], &[u8]); 3] = [
        ("garbage instead of OTA", b"", b"\x00\xff\x13garbage\r\n"),
        ("garbage between OTA and GetNextFlash", b"OTA\r\n", b"hello there\r\n"),
        ("GetNextFlash again after the slot name", b"OTA\r\nGetNextFlash\r\n", b"GetNextFlash\r\n"),
    ];
    for (what, before, garbage) in garbage_cases {
        let unknown = unknown.clone();
        cases.push(tcp_case(format!("tcp: {what}"), move |rig, target| {
            let mut raw = rig.connect()?;
            raw.send(before)?;
            if before.ends_with(b"GetNextFlash\r\n") {
                expect_replies("slot", &raw.line()?, Reply::NextSlot(target).encode().as_bytes())?;
            }
            raw.send(garbage)?;
            expect_replies(what, &raw.line()?, &unknown)?;
            raw.half_close()?;
            expect_replies(what, &raw.rest()?, b"").map(|()| Leaves::Unchanged)
        }));
    }
    cases.push(tcp_case("tcp: a length that is not a number", |rig, target| {
        let mut raw = rig.connect()?;
        raw.send(&request_lines(1)[..hello_len()])?;
        expect_replies("slot", &raw.line()?, Reply::NextSlot(target).encode().as_bytes())?;
        raw.send(b"FirmwareLength: lots\r\n")?;
        let expected = match Request::parse(b"FirmwareLength: lots") {
            Err(error) => ReplyLine::error_message(&Failure::Request(error)).as_bytes().to_vec(),
            Ok(request) => return Err(format!("`FirmwareLength: lots` parses as {request:?}")),
        };
        expect_replies("bad length", &raw.line()?, &expected).map(|()| Leaves::Unchanged)
    }));
    cases.push(tcp_case("tcp: a line longer than any request", |rig, _| {
        let mut raw = rig.connect()?;
        raw.send(&[b'A'; 300])?;
        let expected = ReplyLine::error_message(&Failure::LineTooLong);
        expect_replies("long line", &raw.line()?, expected.as_bytes()).map(|()| Leaves::Unchanged)
    }));
    cases.push(tcp_case("tcp: garbage where the image goes", move |rig, target| {
        let mut raw = rig.connect()?;
        let len = image(rig, target).len();
        raw.until_ready(target, len)?;
        raw.send(&vec![0x55; len])?;
        expect_replies("garbage image", &raw.line()?, Reply::Invalid.encode().as_bytes())?;
        let reason = raw.line()?;
        if !reason.starts_with(b"ERR: ") || reason.len() <= b"ERR: \r\n".len() {
            return Err(format!("garbage image: no reason, got {:?}", reason.escape_ascii().to_string()));
        }
        Ok(Leaves::Unchanged)
    }));

    // A second client during a transfer.
    cases.push(tcp_case(
        "tcp: a second client while the first sends; the first goes on",
        move |rig, target| {
            let mut first = rig.connect()?;
            let image = image(rig, target);
            first.until_ready(target, image.len())?;
            first.send(&image[..image.len() / 2])?;
            second_client_refused(rig, false)?;
            first.send(&image[image.len() / 2..])?;
            expect_replies("first client", &first.line()?, Reply::Flashing.encode().as_bytes())?;
            expect_replies("first client", &first.line()?, Reply::Success.encode().as_bytes())?;
            Ok(Leaves::Switched)
        },
    ));
    cases.push(tcp_case(
        "tcp: a second client pushing while the first sends; the first vanishes",
        move |rig, target| {
            let mut first = rig.connect()?;
            let image = image(rig, target);
            first.until_ready(target, image.len())?;
            first.send(&image[..image.len() / 3])?;
            second_client_refused(rig, true)?;
            drop(first);
            Ok(Leaves::Unchanged)
        },
    ));
    cases.push(tcp_case("tcp: a second client while the first stalls", move |rig, target| {
        let mut first = rig.connect()?;
        let image = image(rig, target);
        first.until_ready(target, image.len())?;
        first.send(&image[..5000])?;
        second_client_refused(rig, false)?;
        let mut expected = Reply::Invalid.encode().as_bytes().to_vec();
        expected.extend_from_slice(ReplyLine::error_message(&Failure::IdleTimeout).as_bytes());
        expect_replies("stalled first client", &first.rest()?, &expected).map(|()| Leaves::Unchanged)
    }));
    cases
}

/// A second client while one is served: it hears that the device is busy.
fn second_client_refused(rig: &Rig<'_>, send_requests: bool) -> Result<(), String> {
    let mut second = rig.connect()?;
    if send_requests {
        // The device may close before it has read everything: a failed send is fine.
        let _ = second.send(&request_lines(1000));
    }
    let busy = ReplyLine::error_message(&ota_agent::protocol::in_irom::reason::BUSY);
    expect_replies("second client", &second.line()?, busy.as_bytes())
}

/// A case on a rig, then the checks every case ends with.
fn run_tcp_case(
    rig: &Rig<'_>,
    name: &str,
    case: &(dyn Fn(&Rig<'_>, SlotId) -> Result<Leaves, String> + Send + Sync),
) -> Result<(), String> {
    let running = rig.running().ok_or("the device boots no slot before the case")?;
    let config = rig.config();
    let reboots = rig.reboots();
    let leaves = case(rig, running.other()).map_err(|problem| format!("{name}: {problem}"))?;
    let wanted = match leaves {
        Leaves::Unchanged => running,
        Leaves::Switched => running.other(),
    };
    if matches!(leaves, Leaves::Switched) {
        // The device reboots 2 s after the success; until then it refuses new pushes.
        let deadline = StdInstant::now() + StdDuration::from_secs(10);
        while rig.reboots() == reboots {
            if StdInstant::now() >= deadline {
                return Err(format!("{name}: the device did not reboot after the update"));
            }
            std::thread::sleep(StdDuration::from_millis(50));
        }
    }
    let asks = rig.asks_for().map_err(|problem| format!("{name}: {problem}"))?;
    if asks != wanted.other() {
        return Err(format!(
            "{name}: the agent asks for {asks}, so it runs {}; expected {wanted}",
            asks.other()
        ));
    }
    if matches!(leaves, Leaves::Unchanged) {
        if rig.config() != config {
            return Err(format!("{name}: the boot config changed"));
        }
        if rig.reboots() != reboots {
            return Err(format!("{name}: the device rebooted"));
        }
    }
    if rig.running() != Some(wanted) {
        return Err(format!("{name}: rBoot would boot {:?}, not {wanted}", rig.running()));
    }
    rig.push_lands().map_err(|problem| format!("{name}: {problem}"))
}

fn tcp_cases(blinky: &Blinky, options: &NetOptions, report: &mut NetReport) {
    let cases = tcp_case_list(blinky);
    let devices = options.tcp_devices.max(1);
    let results: Vec<(usize, Vec<String>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..devices)
            .map(|worker| {
                let cases = &cases;
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    let rig = match Rig::start(blinky, options.tcp_idle_timeout) {
                        Ok(rig) => rig,
                        Err(problem) => {
                            return (0, vec![format!("tcp: the virtual device did not start: {problem}")]);
                        }
                    };
                    let mut ran = 0;
                    for (name, case) in cases.iter().skip(worker).step_by(devices) {
                        ran += 1;
                        if let Err(problem) = run_tcp_case(&rig, name, case.as_ref()) {
                            failures.push(problem);
                        }
                    }
                    if let Err(problem) = rig.stop() {
                        failures.push(format!("tcp: the virtual device ended with an error: {problem}"));
                    }
                    (ran, failures)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().unwrap_or((0, vec!["tcp: a worker panicked".into()])))
            .collect()
    });
    for (ran, failures) in results {
        report.tcp_cases += ran;
        report.failures.extend(failures);
    }
}

// ---------------------------------------------------------------------------------------
// smoltcp over a faulty wire

/// Simulated time a push may take before the campaign calls it stuck.
const SMOLTCP_LIMIT: Duration = Duration::from_secs(900);
/// The host socket gives up after this long without an answer.
const HOST_TIMEOUT: Duration = Duration::from_secs(60);

fn smoltcp_cases(blinky: &Blinky, options: &NetOptions, report: &mut NetReport) {
    let mut flash = blinky.factory_flash();
    let mut port = 49152u16;
    for (i, &(drop_percent, corrupt_percent, mtu)) in options.smoltcp_links.iter().enumerate() {
        for seed in [2 * i as u32 + 1, 2 * i as u32 + 2] {
            let faults = LinkFaults { drop_percent, corrupt_percent, mtu, seed };
            report.smoltcp_cases += 1;
            port = port.wrapping_add(1).max(49152);
            match smoltcp_push(blinky, &mut flash, faults, port) {
                Ok(None) => report.smoltcp_landed += 1,
                Ok(Some(error)) => report.smoltcp_errors.push(error),
                Err(problem) => report.failures.push(format!("smoltcp ({faults}): {problem}")),
            }
        }
    }
}

/// The agent as rBoot boots it from `flash`.
fn boot_world(blinky: &Blinky, flash: &RamNor<Vec<u8>>, faults: LinkFaults) -> Result<World, String> {
    let mut booted = flash.clone();
    let boot = rboot::boot(&mut booted).map_err(|bricked| format!("the device is bricked: {bricked}"))?;
    let config = AgentConfig { running_slot: boot.slot(blinky.layout), ..AgentConfig::new(blinky.layout) };
    let mut world = World::with_config(booted, faults, config);
    world.host_timeout = Some(HOST_TIMEOUT);
    Ok(world)
}

/// One push over a faulty wire: `Ok(None)` when it landed, `Ok(Some(error))` when it failed
/// with an error and left the device as it was; then a push over a clean wire must land.
fn smoltcp_push(
    blinky: &Blinky,
    flash: &mut RamNor<Vec<u8>>,
    faults: LinkFaults,
    port: u16,
) -> Result<Option<String>, String> {
    let running = rboot::boot(&mut flash.clone()).ok().and_then(|boot| boot.slot(blinky.layout));
    let running = running.ok_or("the device boots no slot")?;
    let target = running.other();
    let config_before = config_of(flash);

    let mut world = boot_world(blinky, flash, faults)?;
    let mut push = world.push(blinky.images.clone(), port);
    world
        .run_pushes(&mut [&mut push], SMOLTCP_LIMIT)
        .map_err(|stuck| format!("neither landed nor failed: {stuck}"))?;
    let switched = config_of(&world.flash) != config_before;
    let outcome = push.outcome().copied();
    let error = match outcome {
        Some(Event::Success) if switched => None,
        Some(Event::Success) => return Err("the client heard success but the config did not switch".into()),
        Some(Event::Failed(error)) => {
            let text = error.to_string();
            if text.trim().is_empty() {
                return Err(format!("failed without a reason: {error:?}"));
            }
            Some(text)
        }
        other => return Err(format!("ended without an outcome: {other:?}")),
    };
    // Landed or not, the device must boot a good image: the new one if it switched (even
    // when the client missed the last reply), the old one if not.
    let expected = if switched { target } else { running };
    check_landed(blinky, &format!("after a push over ({faults})"), &mut world.flash, expected)?;
    *flash = world.flash.clone();

    // The agent listens again: after a failure, a push over a clean wire lands.
    if error.is_some() {
        let mut clean = boot_world(blinky, flash, LinkFaults::clean(faults.seed))?;
        let mut push = clean.push(blinky.images.clone(), port.wrapping_add(1000));
        clean
            .run_pushes(&mut [&mut push], SMOLTCP_LIMIT)
            .map_err(|stuck| format!("the clean push after a failure: {stuck}"))?;
        if push.outcome() != Some(&Event::Success) {
            return Err(format!("the clean push after a failure did not land: {:?}", push.events));
        }
        let now = if switched { running } else { target };
        check_landed(blinky, &format!("the clean push after ({faults})"), &mut clean.flash, now)?;
        *flash = clean.flash.clone();
    }
    Ok(error)
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn a_connection_is_cut_at_every_request_byte_and_around_every_sector_edge() {
        let offsets = cut_offsets(42, 3 * SECTOR + 10, 1000);
        assert!((0..42).all(|at| offsets.contains(&at)));
        for edge in [SECTOR, 2 * SECTOR, 3 * SECTOR] {
            assert!([edge - 1, edge, edge + 1].iter().all(|at| offsets.contains(&(42 + at))));
        }
        assert_eq!(offsets.last(), Some(&(42 + 3 * SECTOR + 9)), "the last image byte");
        assert!(offsets.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn the_replies_a_closing_client_hears_follow_the_protocol_table() {
        let header = request_lines(5000).len();
        assert_eq!(replies_when_closed(SlotId::User2, header, 5000, 3), b"");
        assert_eq!(replies_when_closed(SlotId::User2, header, 5000, hello_len()), b"user2.bin\r\n");
        assert_eq!(
            replies_when_closed(SlotId::User1, header, 5000, header + 7),
            b"user1.bin\r\nReady\r\nInvalid\r\nERR: Connection closed before the whole image arrived (7 of 5000 bytes)\r\n"
        );
        assert_eq!(replies_when_stalled(SlotId::User2, header, 0), b"ERR: Idle timeout\r\n");
    }

    #[test]
    fn session_and_smoltcp_cases_pass_on_small_images_and_count() {
        let blinky = Blinky::small();
        let options =
            NetOptions { smoltcp_links: vec![(0, 0, 1500), (30, 10, 296)], ..NetOptions::default() };
        let mut report = NetReport::default();
        session_cases(&blinky, &options, &mut report);
        smoltcp_cases(&blinky, &options, &mut report);
        assert!(report.failures.is_empty(), "{report}");
        let image_len = blinky.images[1].len();
        let header = request_lines(image_len).len();
        let garbage = header + 1;
        let stalls = 9;
        assert_eq!(report.session_cases, cut_offsets(header, image_len, 997).len() + garbage + stalls);
        assert_eq!(report.smoltcp_cases, 4);
        assert!(report.smoltcp_landed >= 2, "{report}");
    }

    #[test]
    fn a_reply_that_differs_is_a_failure_naming_both() {
        let problem = expect_replies("step", b"Ready\r\n", b"Invalid\r\n").unwrap_err();
        assert_eq!(problem, r#"step: replies "Ready\\r\\n", expected "Invalid\\r\\n""#);
    }
}
