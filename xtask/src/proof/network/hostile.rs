//! Hostile clients (issue "hostile networks"): over real TCP against the virtual device's std
//! driver and on the smoltcp wire. A client that trickles its header lines, one that stays
//! silent, bytes beyond `FirmwareLength` (with the image, or in a later write), failed proofs
//! from another address, a flood of connections during a push. Each time the running slot
//! stays, the hostile client is dropped or refused, and a push with `cargo tcpflash`'s own
//! code lands (waiting, as it does, while the device serves the other client).

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration as StdDuration;

use ota_agent::auth::{self, Key};
use ota_agent::layout::SlotId;
use ota_agent::protocol::reason;
use smoltcp::socket::tcp;
use smoltcp::time::Duration;
use tcpflash_sim::wire::{LinkFaults, World};

use super::tcp::Rig;
use super::*;

/// The key of the keyed device in the lockout case.
const KEY: Key = [0x5C; 32];

/// A case: runs its rig and says what went wrong.
type Case = fn(&Blinky) -> Result<(), String>;

/// Runs every case; counts them in `report.hostile_cases`.
pub(super) fn cases(blinky: &Blinky, report: &mut NetReport) {
    let tcp_cases: [(&str, Case); 6] = [
        ("a trickling client", |b| stalling(b, true)),
        ("a silent client", |b| stalling(b, false)),
        ("bytes beyond the length in the image's write", |b| over_long_tcp(b, false)),
        ("bytes beyond the length in a later write", |b| over_long_tcp(b, true)),
        ("failed proofs from another address", lockout_elsewhere),
        ("a flood of connections during a push", flood),
    ];
    let smoltcp_cases: [(&str, Case); 2] = [
        ("bytes beyond the length in the image's segment", |b| over_long_smoltcp(b, false)),
        ("bytes beyond the length in a later segment", |b| over_long_smoltcp(b, true)),
    ];
    // The TCP cases wait out real deadlines: side by side.
    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = tcp_cases
            .iter()
            .map(|(name, case)| {
                scope.spawn(move || case(blinky).map_err(|e| format!("hostile tcp, {name}: {e}")))
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().unwrap_or(Err("the case panicked".into()))).collect()
    });
    for result in results {
        report.hostile_cases += 1;
        if let Err(problem) = result {
            report.failures.push(problem);
        }
    }
    for (name, case) in smoltcp_cases {
        report.hostile_cases += 1;
        if let Err(problem) = case(blinky) {
            report.failures.push(format!("hostile smoltcp, {name}: {problem}"));
        }
    }
}

fn rig(blinky: &Blinky, key: Option<Key>) -> Result<Rig<'_>, String> {
    // The idle timeout is the device's default: the header deadline (10 s) must come first.
    Rig::start_keyed(blinky, StdDuration::from_secs(30), key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn err_line(reason: &str) -> String {
    format!("ERR: {reason}\r\n")
}

/// A client that connects and trickles its header lines (or sends nothing) holds the device
/// until the header deadline; a push waiting meanwhile lands.
fn stalling(blinky: &Blinky, trickle: bool) -> Result<(), String> {
    let rig = rig(blinky, None)?;
    let config = rig.config();
    let mut raw = rig.connect()?;
    raw.stream.set_read_timeout(Some(StdDuration::from_secs(30))).map_err(|e| e.to_string())?;
    let mut writer = raw.stream.try_clone().map_err(|e| e.to_string())?;
    let trickler = std::thread::spawn(move || {
        if trickle {
            for byte in b"OTA\r\nGetNextFlash\r\n".iter().cycle().take(12) {
                if writer.write_all(&[*byte]).is_err() {
                    break;
                }
                std::thread::sleep(StdDuration::from_millis(1500));
            }
        }
    });
    // The push starts while the hostile client holds the session.
    std::thread::sleep(StdDuration::from_millis(200));
    let landed = rig.push_lands();
    let heard = raw.rest().unwrap_or_default();
    let _ = trickler.join();
    let expected = err_line(reason::HEADER_TIMEOUT);
    let heard = String::from_utf8_lossy(&heard).into_owned();
    let outcome = if !heard.ends_with(&expected) {
        Err(format!("the hostile client heard {heard:?}, not the header deadline"))
    } else if rig.config() == config {
        Err("the push after it did not switch the device".into())
    } else {
        landed
    };
    rig.stop()?;
    outcome
}

/// The image and ten bytes more, together or in a later write: refused, nothing switches,
/// and a push then lands.
fn over_long_tcp(blinky: &Blinky, later: bool) -> Result<(), String> {
    let rig = rig(blinky, None)?;
    let config = rig.config();
    let slot = rig.asks_for()?;
    let image = blinky.image(slot);
    let mut raw = rig.connect()?;
    let mut message = request_lines(image.len());
    message.extend_from_slice(image);
    if later {
        raw.send(&message)?;
        std::thread::sleep(StdDuration::from_millis(100));
        raw.send(b"0123456789")?;
    } else {
        message.extend_from_slice(b"0123456789");
        raw.send(&message)?;
    }
    let heard = String::from_utf8_lossy(&raw.rest()?).into_owned();
    let outcome = if !heard.ends_with(&err_line(reason::TOO_MANY_BYTES)) {
        Err(format!("heard {heard:?}"))
    } else if rig.config() != config || rig.reboots() != 0 {
        Err("the device switched or rebooted".into())
    } else {
        rig.push_lands()
    };
    rig.stop()?;
    outcome
}

/// Failed proofs from 127.0.0.2 lock that address out, not the owner's.
fn lockout_elsewhere(blinky: &Blinky) -> Result<(), String> {
    let rig = rig(blinky, Some(KEY))?;
    let mut wrong = KEY;
    wrong[0] ^= 1;
    for attempt in 0..2 {
        let mut raw = connect_from([127, 0, 0, 2], rig.port)?;
        raw.send(b"OTA\r\nGetNextFlash\r\nGetNonce\r\n")?;
        let _slot = raw.line()?;
        let answer = String::from_utf8_lossy(&raw.line()?).into_owned();
        if attempt == 1 {
            if !answer.starts_with(&format!("ERR: {}", reason::AUTH_LOCKED)) {
                return Err(format!("the second try from 127.0.0.2 heard {answer:?}, not the lockout"));
            }
            break;
        }
        let Some(digits) = answer.trim_end().strip_prefix("Nonce: ") else {
            return Err(format!("no nonce: {answer:?}"));
        };
        let mut nonce = [0u8; auth::NONCE_LEN];
        ota_agent::hex::decode(digits.as_bytes(), &mut nonce).map_err(|_| "a bad nonce".to_owned())?;
        let image = blinky.image(SlotId::User2);
        let sha = auth::sha256(image);
        let tag = auth::session_mac(&wrong, &nonce, SlotId::User2, image.len() as u32, &sha);
        let lines =
            format!("Sha256: {}\r\nAuth: {}\r\nFirmwareLength: {}\r\n", hex(&sha), hex(&tag), image.len());
        raw.send(lines.as_bytes())?;
        let heard = String::from_utf8_lossy(&raw.rest()?).into_owned();
        if heard != err_line(reason::AUTH_FAILED) {
            return Err(format!("a wrong proof heard {heard:?}"));
        }
        // Wait for the device to let that connection go.
        rig.asks_for()?;
    }
    let outcome = rig.push_lands_with(Some(&KEY));
    rig.stop()?;
    outcome
}

fn connect_from(source: [u8; 4], port: u16) -> Result<tcp_raw::Raw, String> {
    tcp_raw::connect_from(source, port)
}

mod tcp_raw {
    pub(super) use super::super::tcp::Raw;

    pub(super) fn connect_from(source: [u8; 4], port: u16) -> Result<Raw, String> {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| e.to_string())?;
        socket.bind(&std::net::SocketAddr::from((source, 0)).into()).map_err(|e| e.to_string())?;
        socket
            .connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
            .map_err(|e| format!("cannot connect from {source:?}: {e}"))?;
        let stream: std::net::TcpStream = socket.into();
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).map_err(|e| e.to_string())?;
        Ok(Raw { stream })
    }
}

/// Connections opened one after another while a push holds the session (half its image
/// sent, the rest held back until the flood is over): each hears it is busy, the push then
/// completes and switches the device, and the next push lands. (A flood that never stops
/// keeps the device busy: see the README.)
fn flood(blinky: &Blinky) -> Result<(), String> {
    const FLOOD: usize = 40;
    let rig = rig(blinky, None)?;
    let slot = rig.asks_for()?;
    let image = blinky.image(slot);
    let mut raw = rig.connect()?;
    let mut first = request_lines(image.len());
    let half = image.len() / 2;
    first.extend_from_slice(&image[..half]);
    raw.send(&first)?;
    let mut refused = 0;
    for _ in 0..FLOOD {
        let mut stream = TcpStream::connect(("127.0.0.1", rig.port)).map_err(|e| e.to_string())?;
        // Its first line, then gone.
        stream.set_read_timeout(Some(StdDuration::from_secs(10))).map_err(|e| e.to_string())?;
        let mut line = [0u8; 64];
        let n = std::io::Read::read(&mut stream, &mut line).unwrap_or(0);
        if line[..n].starts_with(err_line(reason::BUSY).as_bytes()) {
            refused += 1;
        }
    }
    raw.send(&image[half..])?;
    let heard = String::from_utf8_lossy(&raw.rest()?).into_owned();
    let outcome = if refused != FLOOD {
        Err(format!("{refused} of {FLOOD} flooding connections were refused as busy"))
    } else if !heard.contains("Flashing\r\n") || !heard.contains("Flash upgrade success") {
        Err(format!("the push under the flood heard {heard:?}"))
    } else {
        // It rebooted into the image: the agent then asks for the other slot.
        let deadline = std::time::Instant::now() + StdDuration::from_secs(10);
        while rig.reboots() == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(StdDuration::from_millis(10));
        }
        match rig.asks_for() {
            Ok(next) if next == slot.other() => rig.push_lands(),
            Ok(next) => Err(format!("after the push of {slot} under the flood the device asks for {next}")),
            Err(error) => Err(error),
        }
    };
    rig.stop()?;
    outcome
}

/// On the smoltcp wire: the image and ten bytes more in its segment or a later one.
fn over_long_smoltcp(blinky: &Blinky, later: bool) -> Result<(), String> {
    let mut world = World::new(blinky.factory_flash(), blinky.layout, LinkFaults::clean(71));
    let config = config_of(&world.flash).to_vec();
    let push =
        world.push([blinky.image(SlotId::User1).to_vec(), blinky.image(SlotId::User2).to_vec()], 49152);
    world
        .run_until(&mut [], Duration::from_secs(5), |world, _| {
            world.host_sockets.get::<tcp::Socket>(push.socket).may_send()
        })
        .map_err(|e| e.0)?;
    let image = blinky.image(SlotId::User2);
    let mut stream = request_lines(image.len());
    stream.extend_from_slice(image);
    let limit = Duration::from_secs(60);
    if later {
        world.send_raw(&push, &stream, limit).map_err(|e| e.0)?;
        let _ = world.run_until(&mut [], Duration::from_millis(100), |_, _| false);
        world.send_raw(&push, b"0123456789", limit).map_err(|e| e.0)?;
    } else {
        stream.extend_from_slice(b"0123456789");
        world.send_raw(&push, &stream, limit).map_err(|e| e.0)?;
    }
    let heard = world.receive_all(&push, limit);
    let heard = String::from_utf8_lossy(&heard).into_owned();
    if !heard.ends_with(&err_line(reason::TOO_MANY_BYTES)) {
        return Err(format!("heard {heard:?}"));
    }
    if config_of(&world.flash) != config || !world.board.reboots.is_empty() {
        return Err("the device switched or rebooted".into());
    }
    Ok(())
}
