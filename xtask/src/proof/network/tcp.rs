//! The virtual ESP8266 (`VirtualDevice`) on a real TCP listener on 127.0.0.1, with a short
//! idle timeout: closes and resets at every protocol step and at image offsets, stalls,
//! garbage, a second client during a transfer; each case is followed by a push with
//! `cargo tcpflash`'s own push code and a wait for the device to come back on the new slot.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use cargo_tcpflash::push::{self as host_push, Target, Timeouts};
use ota_agent::boot::CONFIG_STRUCT_LEN;
use ota_agent::flash::{ErrorType, NorError, NorFlash, RamNor, ReadNorFlash};
use ota_agent::layout::{BOOT_CONFIG_OFFSET, SlotId};
use ota_agent::protocol::{Reply, ReplyLine, Request, RequestError};
use ota_agent::session::Failure;
use ota_agent::writer::SECTOR;
use tcpflash_sim::{DeviceEvent, DeviceStatus, VirtualDevice};

use crate::proof::Blinky;

use super::*;

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
pub(super) struct Rig<'b> {
    blinky: &'b Blinky,
    pub(super) port: u16,
    flash: SharedFlash,
    log: Arc<Mutex<Vec<DeviceEvent>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

/// How long a raw client waits for each answer.
const ANSWER_TIMEOUT: StdDuration = StdDuration::from_secs(10);

impl<'b> Rig<'b> {
    pub(super) fn start(blinky: &'b Blinky, idle_timeout: StdDuration) -> Result<Rig<'b>, String> {
        Rig::start_keyed(blinky, idle_timeout, None)
    }

    pub(super) fn start_keyed(
        blinky: &'b Blinky,
        idle_timeout: StdDuration,
        key: Option<ota_agent::auth::Key>,
    ) -> Result<Rig<'b>, String> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let flash = SharedFlash(Arc::new(Mutex::new(blinky.factory_flash())));
        let mut device = VirtualDevice::new(flash.clone(), blinky.layout).map_err(|e| e.to_string())?;
        device.set_idle_timeout(idle_timeout);
        if let Some(key) = key {
            device.set_key(key);
        }
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

    pub(super) fn config(&self) -> Vec<u8> {
        let at = BOOT_CONFIG_OFFSET as usize;
        self.flash.bytes()[at..at + CONFIG_STRUCT_LEN].to_vec()
    }

    pub(super) fn reboots(&self) -> usize {
        self.log.lock().expect("log lock").iter().filter(|e| **e == DeviceEvent::Rebooting).count()
    }

    pub(super) fn connect(&self) -> Result<Raw, String> {
        let stream =
            TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| format!("cannot connect: {e}"))?;
        stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Raw { stream })
    }

    /// Asks the agent which slot it wants, until it answers (a closing connection or a
    /// reboot may hold it briefly). Proves it listens again.
    pub(super) fn asks_for(&self) -> Result<SlotId, String> {
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
    pub(super) fn push_lands(&self) -> Result<(), String> {
        self.push_lands_with(None)
    }

    /// [`Rig::push_lands`] proving `key`.
    pub(super) fn push_lands_with(&self, key: Option<&ota_agent::auth::Key>) -> Result<(), String> {
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
        let pushed = host_push::push(
            &target,
            self.blinky.image_refs(),
            key,
            &timeouts,
            &Default::default(),
            &mut |_| {},
        )
        .map_err(|e| format!("the following push failed: {e}"))?;
        let returned = host_push::await_return(&target, &timeouts, &Default::default(), &mut |_| {})
            .map_err(|e| format!("the device did not come back after the following push: {e}"))?;
        if !returned.runs(&pushed) {
            return Err(format!(
                "after the following push the device runs {returned:?}, not {}",
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

    pub(super) fn stop(mut self) -> Result<(), String> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take().map(|thread| thread.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err("the virtual device panicked".into()),
            None => Ok(()),
        }
    }
}

/// A raw client connection, for scripted faults.
pub(super) struct Raw {
    pub(super) stream: TcpStream,
}

impl Raw {
    pub(super) fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream.write_all(bytes).map_err(|e| format!("send failed: {e}"))
    }

    /// One reply line (CR LF included).
    pub(super) fn line(&mut self) -> Result<Vec<u8>, String> {
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
    pub(super) fn rest(&mut self) -> Result<Vec<u8>, String> {
        let mut rest = Vec::new();
        match self.stream.read_to_end(&mut rest) {
            Ok(_) => Ok(rest),
            Err(e) => {
                Err(format!("the device did not close ({e}); got {:?}", rest.escape_ascii().to_string()))
            }
        }
    }

    /// Resets the connection (SO_LINGER 0, so closing sends RST, not FIN) and waits until
    /// the device has seen the reset as a reset.
    fn reset(self, rig: &Rig<'_>) -> Result<(), String> {
        let local = self.stream.local_addr().map_err(|e| e.to_string())?;
        socket2::SockRef::from(&self.stream)
            .set_linger(Some(StdDuration::ZERO))
            .map_err(|e| e.to_string())?;
        drop(self);
        let deadline = StdInstant::now() + ANSWER_TIMEOUT;
        while !rig.log.lock().expect("log lock").contains(&DeviceEvent::Reset(local)) {
            if StdInstant::now() >= deadline {
                return Err(format!("the device never saw {local}'s connection reset"));
            }
            std::thread::sleep(StdDuration::from_millis(5));
        }
        Ok(())
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
        raw.reset(rig)?;
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
        raw.reset(rig)?;
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
                    raw.reset(rig)?;
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
            let (mut first, image) = first_client_part_way(rig, target, image(rig, target).len() / 2, false)?;
            first.send(&image[image.len() / 2..])?;
            expect_replies("first client", &first.line()?, Reply::Flashing.encode().as_bytes())?;
            expect_replies("first client", &first.line()?, Reply::Success.encode().as_bytes())?;
            Ok(Leaves::Switched)
        },
    ));
    cases.push(tcp_case(
        "tcp: a second client pushing while the first sends; the first vanishes",
        move |rig, target| {
            let (first, _) = first_client_part_way(rig, target, image(rig, target).len() / 3, true)?;
            drop(first);
            Ok(Leaves::Unchanged)
        },
    ));
    cases.push(tcp_case("tcp: a second client while the first stalls", move |rig, target| {
        let (mut first, _) = first_client_part_way(rig, target, 5000, false)?;
        let mut expected = Reply::Invalid.encode().as_bytes().to_vec();
        expected.extend_from_slice(ReplyLine::error_message(&Failure::IdleTimeout).as_bytes());
        expect_replies("stalled first client", &first.rest()?, &expected).map(|()| Leaves::Unchanged)
    }));
    cases
}

/// A first client `sent` bytes into its image, then a second client (sending the request
/// lines or not) that is refused. The first client and its whole image, for the rest.
fn first_client_part_way<'b>(
    rig: &Rig<'b>,
    target: SlotId,
    sent: usize,
    second_sends: bool,
) -> Result<(Raw, &'b [u8]), String> {
    let mut first = rig.connect()?;
    let image = rig.blinky.image(target);
    first.until_ready(target, image.len())?;
    first.send(&image[..sent])?;
    second_client_refused(rig, second_sends)?;
    Ok((first, image))
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

pub(super) fn cases(blinky: &Blinky, options: &NetOptions, report: &mut NetReport) {
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
