//! The virtual ESP8266: tcpflash-boot's decision at power-on (the bootloader's own code:
//! [`crate::boot`]), then the agent's rules ([`Listener`]) served on a real `std::net`
//! listener, and a reboot through the bootloader again when an update is done.
//!
//! One thread, no async: the loop accepts, reads with a short timeout, feeds the session,
//! sends each reply line in one write, and checks the stop flag between steps. A flash
//! operation therefore always completes before a stop takes effect, and the flash file is
//! never left half-written by one. Like the agent on smoltcp, a second client while one is
//! served hears `ERR: Connection Already Exists` and is closed.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration as StdDuration;

use smoltcp::time::{Duration, Instant};

use super::status::{Identity, SlotStatus, inspect_slot};
use crate::boot::{self, HaltReason, Halted, Launched};
use crate::sdk_boot::{self, SdkBoot, SdkBootEvent, SdkBricked};
use ota_agent::auth::{DEFAULT_AUTH_BACKOFF, Key};
use ota_agent::boot::Running;
use ota_agent::descriptor::{self, BUILD_ID_LEN, Descriptor};
use ota_agent::flash::NorFlash;
use ota_agent::layout::sdk::SdkMap;
use ota_agent::layout::{FlashLayout, IMAGE_IROM_OFFSET, SlotId};
use ota_agent::listener::{Admission, Connection, Listener, Platform};
use ota_agent::protocol::{ReplyLine, reason};
use ota_agent::session::{DEFAULT_IDLE_TIMEOUT, SessionConfig};
use ota_agent::writer::{SECTOR, SectorBuffer};

/// How long the loop waits for bytes before it looks at the clock and the stop flag.
const READ_SLICE: StdDuration = StdDuration::from_millis(2);
/// A reply line that cannot be written in this long means the client is gone.
const WRITE_TIMEOUT: StdDuration = StdDuration::from_secs(5);

/// What the virtual device reports, one line each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceEvent {
    /// tcpflash-boot handed over to a rom; the agent runs from it.
    Booted {
        slot: Option<SlotId>,
        rom: u8,
        offset: u32,
        firmware: Option<Descriptor>,
    },
    /// A line the second stage printed on its console (tcpflash-boot's, rBoot's model's).
    Bootloader(String),
    /// The firmware just booted was declared to crash before it confirms
    /// ([`VirtualDevice::declare_crashing`]): the device resets.
    Crashed {
        slot: Option<SlotId>,
        firmware: Option<Descriptor>,
    },
    /// Something the SDK's bootloader did before booting (an SDK map).
    SdkBoot(SdkBootEvent),
    Connected(SocketAddr),
    /// A second client while one is served: it got `ERR: Connection Already Exists`.
    Refused(SocketAddr),
    /// A reply line the agent sent (without its CR LF).
    Replied(String),
    Disconnected(SocketAddr),
    /// The client reset the connection (RST) rather than closing it.
    Reset(SocketAddr),
    /// The agent's reboot after an update.
    Rebooting,
    /// mDNS records announced after a boot (`--name`): host, instance, TXT strings.
    Announcing {
        host: String,
        instance: String,
        port: u16,
        txt: Vec<String>,
    },
}

impl fmt::Display for DeviceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceEvent::Booted { slot: Some(slot), firmware, .. } => {
                write!(f, "booted {slot} ({})", Identity(firmware.as_ref()))
            }
            DeviceEvent::Booted { slot: None, rom, offset, firmware } => write!(
                f,
                "booted rom {rom} at {offset:#x}, not a slot of this layout ({})",
                Identity(firmware.as_ref())
            ),
            DeviceEvent::Bootloader(line) => f.write_str(line),
            DeviceEvent::Crashed { slot, firmware } => match slot {
                Some(slot) => write!(
                    f,
                    "{slot} ({}) crashed before it confirmed; resetting",
                    Identity(firmware.as_ref())
                ),
                None => write!(
                    f,
                    "the firmware ({}) crashed before it confirmed; resetting",
                    Identity(firmware.as_ref())
                ),
            },
            DeviceEvent::SdkBoot(event) => write!(f, "{event}"),
            DeviceEvent::Connected(peer) => write!(f, "client {peer} connected"),
            DeviceEvent::Refused(peer) => write!(f, "client {peer} refused: another push is in progress"),
            DeviceEvent::Replied(line) => write!(f, "reply: {line}"),
            DeviceEvent::Disconnected(peer) => write!(f, "client {peer} gone"),
            DeviceEvent::Reset(peer) => write!(f, "client {peer} reset the connection"),
            DeviceEvent::Rebooting => f.write_str("rebooting"),
            DeviceEvent::Announcing { host, instance, port, txt } => write!(
                f,
                "mdns: {host}.local, {instance}._tcpflash._tcp.local port {port} ({}), on 127.0.0.1",
                txt.join(" ")
            ),
        }
    }
}

/// Why serving ended other than by the stop flag.
#[derive(Debug)]
pub enum ServeError {
    /// The second stage found nothing to boot: the device needs a serial install.
    Bricked(Halted),
    /// The SDK's bootloader found nothing to boot (an SDK map).
    SdkBricked(SdkBricked),
    Io(io::Error),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeError::Bricked(bricked) => write!(f, "the device is bricked: {bricked}"),
            ServeError::SdkBricked(bricked) => write!(f, "the device is bricked: {bricked}"),
            ServeError::Io(error) => write!(f, "listener failed: {error}"),
        }
    }
}

impl std::error::Error for ServeError {}

/// The flash file is not the layout's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeMismatch {
    pub file_size: usize,
    pub layout: &'static FlashLayout,
}

impl fmt::Display for SizeMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the flash file holds {} bytes but the {} layout needs {}",
            self.file_size, self.layout.name, self.layout.flash_size
        )
    }
}

impl std::error::Error for SizeMismatch {}

/// A virtual ESP8266. Its flash is any `NorFlash`: a [`super::FileFlash`] for `cargo xtask
/// sim`, a `RamNor` in tests, or a wrapper that times or cuts the operations.
pub struct VirtualDevice<F: NorFlash> {
    flash: F,
    layout: &'static FlashLayout,
    idle_timeout: StdDuration,
    key: Option<&'static Key>,
    auth_backoff: StdDuration,
    /// Builds that crash right after they start, before they confirm (the fault switch).
    crashing: Vec<[u8; BUILD_ID_LEN]>,
    /// The agent's pre-erase of the idle slot (on, as `AgentConfig`'s default).
    pre_erase: bool,
    /// Announces the device over mDNS on the loopback interface.
    mdns: Option<crate::mdns::Announcer>,
}

/// Boots in a row after which the device gives up (a bootloader that keeps booting a
/// crashing firmware, which tcpflash-boot never does: it reverts after the trial's attempts).
const MAX_BOOTS: u32 = 64;

enum AgentExit {
    /// After an update that verified this slot.
    Reboot(Option<SlotId>),
    Stopped,
}

impl<F: NorFlash> VirtualDevice<F> {
    pub fn new(flash: F, layout: &'static FlashLayout) -> Result<VirtualDevice<F>, SizeMismatch> {
        if flash.capacity() != layout.flash_size as usize {
            return Err(SizeMismatch { file_size: flash.capacity(), layout });
        }
        let idle = StdDuration::from_micros(DEFAULT_IDLE_TIMEOUT.total_micros());
        let backoff = StdDuration::from_micros(DEFAULT_AUTH_BACKOFF.total_micros());
        Ok(VirtualDevice {
            flash,
            layout,
            idle_timeout: idle,
            key: None,
            auth_backoff: backoff,
            crashing: Vec::new(),
            pre_erase: true,
            mdns: None,
        })
    }

    /// How long the agent waits for a silent client (the agent's default: 30 s).
    pub fn set_idle_timeout(&mut self, timeout: StdDuration) {
        self.idle_timeout = timeout;
    }

    /// The agent's pre-shared key, as a firmware built with `TCPFLASH_KEY_FILE` has it:
    /// every push must then authenticate. Each session's nonce comes from the OS RNG.
    pub fn set_key(&mut self, key: Key) {
        // The agent takes a `&'static` key, as firmware holds it in a static; one per device.
        self.key = Some(Box::leak(Box::new(key)));
    }

    /// How long the first failed authentication locks the agent (the agent's default: 1 s;
    /// each further failure doubles it).
    pub fn set_auth_backoff(&mut self, backoff: StdDuration) {
        self.auth_backoff = backoff;
    }

    /// Whether the agent pre-erases the idle slot while no client is served, once the
    /// running firmware is confirmed (`AgentConfig::pre_erase`, on by default).
    pub fn set_pre_erase(&mut self, on: bool) {
        self.pre_erase = on;
    }

    /// The fault switch: a firmware of this build crashes right after it starts, before it
    /// can confirm (as `example-blinky`'s `panic-at-boot` does on a board). The device resets
    /// at once, and tcpflash-boot counts the attempt.
    pub fn declare_crashing(&mut self, build_id: [u8; BUILD_ID_LEN]) {
        self.crashing.push(build_id);
    }

    /// Answer mDNS as `announcer` says (records renewed at each boot).
    pub fn set_mdns(&mut self, announcer: crate::mdns::Announcer) {
        self.mdns = Some(announcer);
    }

    pub fn flash(&self) -> &F {
        &self.flash
    }

    pub fn into_flash(self) -> F {
        self.flash
    }

    pub fn layout(&self) -> &'static FlashLayout {
        self.layout
    }

    /// Power on: tcpflash-boot decides (and counts a trial's attempt), and the firmware it
    /// picked runs; one declared to crash resets at once, and the bootloader runs again.
    pub fn power_on(&mut self, log: &mut dyn FnMut(&DeviceEvent)) -> Result<Launched, Halted> {
        for _ in 0..MAX_BOOTS {
            let launched = boot::boot(&mut self.flash);
            let console = match &launched {
                Ok(launched) => &launched.console,
                Err(halted) => &halted.console,
            };
            for line in console {
                log(&DeviceEvent::Bootloader(line.clone()));
            }
            let launched = launched?;
            let offset = launched.offset;
            let mut bytes = [0u8; descriptor::SIZE];
            let firmware = match self.flash.read(offset.wrapping_add(IMAGE_IROM_OFFSET), &mut bytes) {
                Ok(()) => Descriptor::parse(&bytes).ok(),
                Err(_) => None,
            };
            let slot = launched.slot(self.layout);
            if firmware.is_some_and(|firmware| self.crashing.contains(&firmware.build_id)) {
                log(&DeviceEvent::Crashed { slot, firmware });
                continue;
            }
            log(&DeviceEvent::Booted { slot, rom: launched.rom, offset, firmware });
            return Ok(launched);
        }
        Err(Halted { reason: HaltReason::CrashLoop { boots: MAX_BOOTS }, console: Vec::new() })
    }

    /// Power on with an SDK map: the SDK's bootloader decides ([`sdk_boot`]).
    pub fn power_on_sdk(
        &mut self,
        map: &SdkMap,
        log: &mut dyn FnMut(&DeviceEvent),
    ) -> Result<SdkBoot, SdkBricked> {
        let boot = sdk_boot::boot(&mut self.flash, map)?;
        for event in &boot.events {
            log(&DeviceEvent::SdkBoot(*event));
        }
        let mut bytes = [0u8; descriptor::SIZE];
        let firmware = match self.flash.read(boot.offset.wrapping_add(IMAGE_IROM_OFFSET), &mut bytes) {
            Ok(()) => Descriptor::parse(&bytes).ok(),
            Err(_) => None,
        };
        log(&DeviceEvent::Booted {
            slot: Some(boot.slot),
            rom: boot.slot.index() as u8,
            offset: boot.offset,
            firmware,
        });
        Ok(boot)
    }

    /// Boots and serves `listener` until `stop` is set, rebooting after each update.
    pub fn serve(
        &mut self,
        listener: &TcpListener,
        stop: &AtomicBool,
        log: &mut dyn FnMut(&DeviceEvent),
    ) -> Result<(), ServeError> {
        listener.set_nonblocking(true).map_err(ServeError::Io)?;
        loop {
            let running = match self.layout.sdk_map() {
                None => {
                    let launched = self.power_on(log).map_err(ServeError::Bricked)?;
                    Running::read(&mut self.flash, self.layout, launched.handoff)
                }
                // Espressif's bootloader keeps no trials.
                Some(map) => {
                    let slot = self.power_on_sdk(map, log).map_err(ServeError::SdkBricked)?.slot;
                    Running::untracked(Some(slot))
                }
            };
            let exit = self.run_agent(listener, running, stop, log).map_err(ServeError::Io)?;
            match exit {
                AgentExit::Reboot(target) => {
                    // On an SDK map the platform's reboot is the switch: the upgrade flag.
                    if let (Some(map), Some(target)) = (self.layout.sdk_map(), target) {
                        sdk_boot::upgrade_reboot(&mut self.flash, map, target.other())
                            .map_err(ServeError::SdkBricked)?;
                    }
                    log(&DeviceEvent::Rebooting)
                }
                AgentExit::Stopped => return Ok(()),
            }
        }
    }

    /// The firmware's life between two boots: the agent's loop, with the agent's own rules
    /// ([`Listener`]) over `std::net`.
    fn run_agent(
        &mut self,
        listener: &TcpListener,
        running: Running,
        stop: &AtomicBool,
        log: &mut dyn FnMut(&DeviceEvent),
    ) -> io::Result<AgentExit> {
        let mut sector: SectorBuffer = [0; SECTOR];
        let config = SessionConfig {
            idle_timeout: Duration::from_micros(self.idle_timeout.as_micros() as u64),
            key: self.key,
            auth_backoff: Duration::from_micros(self.auth_backoff.as_micros() as u64),
            pre_erase: self.pre_erase,
            ..SessionConfig::new(self.layout)
        };
        let mut rules = Listener::new(config, &mut sector);
        rules.set_running(running);
        if let Some(announcer) = self.mdns.as_mut() {
            let firmware = running.slot.and_then(|slot| {
                let mut bytes = [0u8; descriptor::SIZE];
                self.flash.read(self.layout.slot(slot).offset + IMAGE_IROM_OFFSET, &mut bytes).ok()?;
                Descriptor::parse(&bytes).ok()
            });
            announcer.boot(firmware.as_ref(), &running, self.key.is_some());
            if let Some(records) = announcer.records() {
                let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
                log(&DeviceEvent::Announcing {
                    host: text(records.host()),
                    instance: text(records.instance()),
                    port: records.port(),
                    txt: records.txt().map(text).collect(),
                });
            }
        }
        let clock = std::time::Instant::now();
        let now = || Instant::from_micros(clock.elapsed().as_micros() as i64);
        let mut client: Option<Client> = None;
        let mut refused: Vec<(TcpStream, Instant)> = Vec::new();
        loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(AgentExit::Stopped);
            }
            if rules.reboot_due(now()) {
                return Ok(AgentExit::Reboot(rules.session().target()));
            }
            self.serve_current(&mut client, &mut rules, now(), log);
            if let Some(announcer) = self.mdns.as_mut() {
                announcer.poll();
            }
            loop {
                let accepted = listener.accept();
                if accepted.is_ok() {
                    // A client that closed and reconnected at once: its close came first, so
                    // this finds the old session over rather than "Connection Already Exists".
                    self.serve_current(&mut client, &mut rules, now(), log);
                }
                match accepted {
                    Ok((stream, peer)) => match rules.accept(now(), Some(peer.ip()), &mut OsRandom) {
                        Admission::Serve => match Client::new(stream, peer) {
                            Ok(new) => {
                                log(&DeviceEvent::Connected(peer));
                                client = Some(new);
                            }
                            Err(_) => {
                                log(&DeviceEvent::Disconnected(peer));
                                rules.disconnected();
                            }
                        },
                        Admission::Refuse => {
                            log(&DeviceEvent::Refused(peer));
                            if let Some(stream) = refuse(stream) {
                                refused.push((stream, now()));
                            }
                        }
                    },
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    // A client that reset before it was accepted, or no file descriptors
                    // left: nothing to serve now, the loop tries again.
                    Err(_) => break,
                }
            }
            refused.retain_mut(|(stream, since)| drain(stream) && !Listener::refused_expired(*since, now()));
            // A sector of the pre-erase per turn while nobody is served; idle otherwise.
            if client.is_none() && !rules.idle(&mut self.flash) {
                std::thread::sleep(READ_SLICE);
            }
        }
    }

    /// Serves the connected client one round, and forgets it when it is gone.
    fn serve_current(
        &mut self,
        client: &mut Option<Client>,
        rules: &mut Listener<'_>,
        now: Instant,
        log: &mut dyn FnMut(&DeviceEvent),
    ) {
        let Some(open) = client else { return };
        rules.serve(now, &mut StdConnection { client: open, log }, &mut self.flash);
        if open.broken || (open.write_closed && open.eof && open.pending.is_empty()) || !rules.is_busy() {
            log(&if open.reset {
                DeviceEvent::Reset(open.peer)
            } else {
                DeviceEvent::Disconnected(open.peer)
            });
            *client = None;
            rules.disconnected();
        }
    }

    /// The current content of each slot, for logs and status.
    pub fn slot_status(&mut self, slot: SlotId) -> SlotStatus {
        let slot = *self.layout.slot(slot);
        inspect_slot(&mut self.flash, &slot)
    }
}

struct Client {
    stream: TcpStream,
    peer: SocketAddr,
    /// Bytes read from the socket that the session has not taken yet.
    pending: Vec<u8>,
    /// The client closed its sending side.
    eof: bool,
    write_closed: bool,
    /// A read or write failed: the connection is gone.
    broken: bool,
    /// It went by a reset from the client.
    reset: bool,
}

impl Client {
    fn new(stream: TcpStream, peer: SocketAddr) -> io::Result<Client> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(READ_SLICE))?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            peer,
            pending: Vec::new(),
            eof: false,
            write_closed: false,
            broken: false,
            reset: false,
        })
    }
}

/// The client's socket as the listener sees it, logging each reply line it sends.
struct StdConnection<'c, 'l> {
    client: &'c mut Client,
    log: &'l mut dyn FnMut(&DeviceEvent),
}

impl Connection for StdConnection<'_, '_> {
    fn receive(&mut self, take: &mut dyn FnMut(&[u8]) -> usize) -> usize {
        let client = &mut *self.client;
        if client.pending.is_empty() && !client.eof && !client.broken {
            let mut buf = [0u8; 16 * 1024];
            match client.stream.read(&mut buf) {
                Ok(0) => client.eof = true,
                Ok(n) => client.pending.extend_from_slice(&buf[..n]),
                Err(error) if is_timeout(&error) => {}
                Err(error) => {
                    client.reset = error.kind() == io::ErrorKind::ConnectionReset;
                    client.broken = true;
                }
            }
        }
        if client.pending.is_empty() {
            return 0;
        }
        let taken = take(&client.pending);
        client.pending.drain(..taken);
        taken
    }

    fn can_send_line(&self) -> bool {
        !self.client.write_closed && !self.client.broken
    }

    fn send_line(&mut self, line: &[u8]) {
        (self.log)(&DeviceEvent::Replied(String::from_utf8_lossy(line).trim_end().to_owned()));
        if let Err(error) = self.client.stream.write_all(line) {
            self.client.reset = error.kind() == io::ErrorKind::ConnectionReset;
            self.client.broken = true;
        }
    }

    fn peer_closed(&self) -> bool {
        self.client.eof && self.client.pending.is_empty()
    }

    /// Written lines are in the kernel's buffer, which delivers them even after a close.
    fn all_sent(&self) -> bool {
        true
    }

    fn close(&mut self) {
        // Our side is shut after the last reply; the client's remaining bytes are read and
        // dropped until it closes too, so it gets every reply rather than a reset.
        if !self.client.write_closed {
            let _ = self.client.stream.shutdown(Shutdown::Write);
            self.client.write_closed = true;
        }
    }

    fn abort(&mut self) {
        let _ = self.client.stream.shutdown(Shutdown::Both);
        self.client.broken = true;
    }
}

/// Nonces from the OS RNG (getrandom), as a board's come from its hardware RNG. The virtual
/// device reboots by returning from its loop, never through the platform.
struct OsRandom;

impl Platform for OsRandom {
    fn reboot(&mut self) {}

    /// An OS without randomness to give stops the device: a guessable nonce would let a
    /// recorded push be replayed.
    fn fill_random(&mut self, buf: &mut [u8]) {
        getrandom::fill(buf).expect("the OS random source failed");
    }
}

/// Tells a second client the device is busy and starts closing it.
fn refuse(stream: TcpStream) -> Option<TcpStream> {
    stream.set_nonblocking(false).ok()?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT)).ok()?;
    let mut stream = stream;
    stream.write_all(ReplyLine::error(&reason::BUSY).as_bytes()).ok()?;
    stream.shutdown(Shutdown::Write).ok()?;
    stream.set_nonblocking(true).ok()?;
    Some(stream)
}

/// Reads and drops what a refused client sends; false once it has closed.
fn drain(stream: &mut TcpStream) -> bool {
    let mut sink = [0u8; 1024];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(error) => return is_timeout(&error),
        }
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::fixtures::{LAYOUT, flash_with, image_for};
    use ota_agent::boot::BootConfig;
    use ota_agent::flash::RamNor;

    type Served = std::thread::JoinHandle<(Result<(), ServeError>, RamNor<Vec<u8>>)>;

    /// Serves `flash` on a free port in a thread: the port, the log lines, the thread.
    fn serve_in_thread(
        flash: RamNor<Vec<u8>>,
        stop: Arc<AtomicBool>,
    ) -> (u16, Arc<Mutex<Vec<String>>>, Served) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let thread = std::thread::spawn(move || {
            let mut device = VirtualDevice::new(flash, LAYOUT).unwrap();
            let result =
                device.serve(&listener, &stop, &mut |event| sink.lock().unwrap().push(event.to_string()));
            (result, device.into_flash())
        });
        (port, log, thread)
    }

    fn wait_for(log: &Mutex<Vec<String>>, line: &str) {
        let deadline = std::time::Instant::now() + StdDuration::from_secs(60);
        while !log.lock().unwrap().iter().any(|l| l == line) {
            assert!(std::time::Instant::now() < deadline, "no {line:?} in {:?}", log.lock().unwrap());
            std::thread::sleep(StdDuration::from_millis(5));
        }
    }

    #[test]
    fn serves_a_push_reboots_into_the_new_slot_and_stops_on_the_flag() {
        let stop = Arc::new(AtomicBool::new(false));
        let flash = flash_with(Some(BootConfig::for_layout(LAYOUT, SlotId::User1)), [true, false]);
        let (port, log, thread) = serve_in_thread(flash, Arc::clone(&stop));

        let image = image_for(SlotId::User2, 9);
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        // Any segmentation works: the request lines byte by byte.
        for byte in b"OTA\r\nGetNextFlash\r\n" {
            stream.write_all(&[*byte]).unwrap();
        }
        let mut reply = [0u8; 11];
        stream.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"user2.bin\r\n");
        stream.write_all(format!("FirmwareLength: {}\r\n", image.len()).as_bytes()).unwrap();
        let mut ready = [0u8; 7];
        stream.read_exact(&mut ready).unwrap();
        assert_eq!(&ready, b"Ready\r\n");
        stream.write_all(&image).unwrap();
        let mut rest = String::new();
        stream.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "Flashing\r\nFlash upgrade success. Rebooting in 2s.\r\n");

        wait_for(&log, "booted user2 (fw 1.0.0, build 0909090909090909)");
        stop.store(true, Ordering::SeqCst);
        let (result, flash) = thread.join().unwrap();
        assert!(result.is_ok());
        let at = LAYOUT.slot(SlotId::User2).offset as usize;
        assert_eq!(&flash.bytes()[at..at + image.len()], &image[..]);
        let log = log.lock().unwrap();
        assert_eq!(log[0], "tcpflash-boot: rom 0 @ 0x00002000: confirmed, build 0101010101010101");
        assert_eq!(log[1], "booted user1 (fw 1.0.0, build 0101010101010101)");
        let replies: Vec<&str> = log.iter().filter_map(|l| l.strip_prefix("reply: ")).collect();
        assert_eq!(replies, ["user2.bin", "Ready", "Flashing", "Flash upgrade success. Rebooting in 2s."]);
        assert_eq!(log.iter().filter(|l| *l == "rebooting").count(), 1);
    }

    /// On an SDK map the virtual device boots as the SDK does: user1 after a first install,
    /// the other bin once the agent's reboot set the upgrade flag, and user1 again when the
    /// chosen image is bad.
    #[test]
    fn on_an_sdk_map_the_upgrade_flag_switches_and_a_bad_image_falls_back() {
        let map = ota_agent::layout::sdk::SdkMap::by_name("sdk-1MB").unwrap();
        let layout = &map.layout;
        let image = |slot: SlotId, seed: u8| {
            let link = layout.slot(slot).irom_link_addr();
            let irom = ota_agent::image::samples::irom_for(link, 300 + seed as usize);
            let segments = [ota_agent::image::Segment { addr: 0x4010_0000, data: &[seed; 64] }];
            ota_agent::image::samples::write(Default::default(), 0x4010_0004, &irom, &segments)
        };
        let mut flash = RamNor::new(layout.flash_size);
        let user1 = image(SlotId::User1, 1);
        flash.write(0x1000, &[&user1[..], &[0xFF; 3][..(4 - user1.len() % 4) % 4]].concat()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let stopper = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut device = VirtualDevice::new(flash, layout).unwrap();
            let result = device.serve(&listener, &stopper, &mut |e| sink.lock().unwrap().push(e.to_string()));
            (result, device.into_flash())
        });
        let user2 = image(SlotId::User2, 2);
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .write_all(format!("OTA\r\nGetNextFlash\r\nFirmwareLength: {}\r\n", user2.len()).as_bytes())
            .unwrap();
        let mut head = [0u8; 18];
        stream.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"user2.bin\r\nReady\r\n");
        stream.write_all(&user2).unwrap();
        let mut rest = String::new();
        stream.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "Flashing\r\nFlash upgrade success. Rebooting in 2s.\r\n");
        wait_for(&log, "booted user2 (blinky 1.2.3, build 6275696c64696421)");
        stop.store(true, Ordering::SeqCst);
        let (result, mut flash) = thread.join().unwrap();
        assert!(result.is_ok());
        let log = log.lock().unwrap().clone();
        assert_eq!(log[0], "booted user1 (blinky 1.2.3, build 6275696c64696421)");
        assert_eq!(&flash.bytes()[0x1000..0x1000 + user1.len()], &user1[..], "user1 (at 0x1000) untouched");

        // The SDK's bootloader starts the other image when the chosen one is bad.
        flash.erase(0x8_1000, 0x8_2000).unwrap();
        let mut device = VirtualDevice::new(flash, layout).unwrap();
        let mut events = Vec::new();
        let boot = device.power_on_sdk(map, &mut |e| events.push(e.to_string())).unwrap();
        assert_eq!(boot.slot, SlotId::User1);
        assert_eq!(events[0], "SDK boot: user2 is bad (first byte 0xff), starting the other image");
    }

    #[test]
    fn a_device_without_a_good_rom_is_bricked_and_does_not_serve() {
        let stop = Arc::new(AtomicBool::new(false));
        let flash = flash_with(Some(BootConfig::for_layout(LAYOUT, SlotId::User1)), [false, false]);
        let (_, log, thread) = serve_in_thread(flash, stop);
        let (result, _) = thread.join().unwrap();
        let Err(ServeError::Bricked(halted)) = result else { panic!("{result:?}") };
        assert_eq!(
            halted.console,
            [
                "tcpflash-boot: rom 0 @ 0x00002000: not bootable",
                "tcpflash-boot: rom 1 @ 0x00082000: not bootable",
                "tcpflash-boot: no bootable rom, halted"
            ],
            "both roms were tried"
        );
        assert_eq!(
            halted.to_string(),
            "tcpflash-boot found no bootable slot (rom 0 @ 0x00002000: not bootable; rom 1 @ 0x00082000: not bootable)"
        );
        assert!(log.lock().unwrap().iter().all(|line| !line.starts_with("booted")));
    }

    #[test]
    fn a_trial_that_crashes_is_booted_its_attempts_then_the_device_goes_back() {
        let mut flash = flash_with(Some(BootConfig::for_layout(LAYOUT, SlotId::User1)), [true, true]);
        flash.allow_bit_clearing();
        let mut sector = [0; SECTOR];
        let confirmed = ota_agent::boot::BootStatus::Confirmed;
        ota_agent::boot::commit_update(
            &mut flash,
            LAYOUT,
            SlotId::User1,
            SlotId::User2,
            confirmed,
            3,
            &mut sector,
        )
        .unwrap();
        let mut device = VirtualDevice::new(flash, LAYOUT).unwrap();
        device.declare_crashing([2; 8]);
        let mut log = Vec::new();
        let launched = device.power_on(&mut |event| log.push(event.to_string())).unwrap();
        assert_eq!(launched.slot(LAYOUT), Some(SlotId::User1));
        assert_eq!(launched.kind(), Some(ota_agent::boot::handoff::HandOffKind::Reverted));
        let crash = "user2 (fw 1.0.0, build 0202020202020202) crashed before it confirmed; resetting";
        assert_eq!(
            log,
            [
                "tcpflash-boot: rom 1 @ 0x00082000: trial 1/3, build 0202020202020202",
                crash,
                "tcpflash-boot: rom 1 @ 0x00082000: trial 2/3, build 0202020202020202",
                crash,
                "tcpflash-boot: rom 1 @ 0x00082000: trial 3/3, build 0202020202020202",
                crash,
                "tcpflash-boot: rom 0 @ 0x00002000: trial not confirmed, reverted, build 0101010101010101",
                "booted user1 (fw 1.0.0, build 0101010101010101)",
            ]
        );
        // The next power-on stays on the confirmed slot and counts nothing more.
        let mut again = Vec::new();
        device.power_on(&mut |event| again.push(event.to_string())).unwrap();
        assert_eq!(
            again[0],
            "tcpflash-boot: rom 0 @ 0x00002000: trial not confirmed, reverted, build 0101010101010101"
        );
    }

    #[test]
    fn under_rboot_a_push_switches_the_config_for_good_and_no_trial_begins() {
        use crate::fixtures::{image_for, rboot_bootloader};
        let mut flash = flash_with(Some(BootConfig::for_layout(LAYOUT, SlotId::User1)), [true, false]);
        let loader = rboot_bootloader();
        flash.erase(0, 0x1000).unwrap();
        flash.write(0, &loader).unwrap();
        let mut device = VirtualDevice::new(flash, LAYOUT).unwrap();
        let mut log = Vec::new();
        let launched = device.power_on(&mut |event| log.push(event.to_string())).unwrap();
        assert_eq!((launched.stage, launched.handoff), (crate::SecondStage::Rboot, None));
        assert_eq!(log, ["booted user1 (fw 1.0.0, build 0101010101010101)"]);
        // The agent of an rBoot installation switches the config itself, as the seed did.
        let mut flash = device.into_flash();
        let mut sector = [0; SECTOR];
        let image = image_for(SlotId::User2, 9);
        let mut padded = image.clone();
        padded.resize(image.len().next_multiple_of(4), 0xFF);
        flash.write(LAYOUT.slot(SlotId::User2).offset, &padded).unwrap();
        let running = ota_agent::boot::Running::read(&mut flash, LAYOUT, None);
        assert_eq!(running.status, ota_agent::boot::BootStatus::Untracked);
        ota_agent::boot::commit_update(
            &mut flash,
            LAYOUT,
            SlotId::User1,
            SlotId::User2,
            running.status,
            3,
            &mut sector,
        )
        .unwrap();
        let state = LAYOUT.boot_state_offset() as usize;
        assert!(flash.bytes()[state..state + 32].iter().all(|&b| b == 0xFF), "no trial record");
        let launched = crate::boot::boot(&mut flash).unwrap();
        assert_eq!(launched.slot(LAYOUT), Some(SlotId::User2));
    }

    #[test]
    fn a_flash_of_the_wrong_size_is_refused() {
        let error = VirtualDevice::new(RamNor::new(0x8_0000), LAYOUT).err().unwrap();
        assert_eq!(error.to_string(), "the flash file holds 524288 bytes but the 1MB layout needs 1048576");
    }
}
