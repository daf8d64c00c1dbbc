//! Authenticated pushes and the SHA-256 check against the virtual ESP8266 (`xtask sim
//! --key-file`, the real binary) over real TCP: the real `cargo tcpflash`, the seed's
//! `tcp_flash.py`, and raw conversations for what no honest client does (replays, tampered
//! lines and bytes, a cut exchange).

mod virtual_device;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ota_agent::auth::{self, Digest256, Key, NONCE_LEN, Nonce};
use ota_agent::layout::{BOOT_CONFIG_OFFSET, SlotId};
use virtual_device::*;

const KEY: Key = *b"tcpflash test key, not a secret!";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The test key in a file, as hex digits (the CLI and the sim read both formats).
fn key_file(dir: &Path, name: &str, key: &Key) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{}\n", hex(key))).unwrap();
    path
}

fn config_bytes(flash: &[u8]) -> Vec<u8> {
    flash[BOOT_CONFIG_OFFSET as usize..BOOT_CONFIG_OFFSET as usize + 28].to_vec()
}

/// A virtual device running the factory user1, with `key` (and a lockout of `backoff` s).
fn keyed_sim(dir: &Path, key: Option<&Path>, backoff: &str) -> Sim {
    let images = images();
    let mut args = vec!["--image", images.factory_user1.to_str().unwrap(), "--auth-backoff", backoff];
    if let Some(key) = key {
        args.extend(["--key-file", key.to_str().unwrap()]);
    }
    let sim = Sim::start_with(&dir.join("flash.bin"), &args);
    sim.wait_line("booted user1");
    sim
}

/// `cargo tcpflash` through the real binary. Its builds go to their own target dir: with a
/// key file the firmware is rebuilt with the key, which must not change the images the other
/// tests read from example-blinky's. Returns the output and the images it pushed.
fn cli_push(port: u16, key: Option<&Path>) -> (Output, [Vec<u8>; 2]) {
    let _build = build_lock();
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("auth-firmware");
    let mut command = Command::new(tcpflash());
    command
        .args(["tcpflash", "--host", "127.0.0.1", "--port", &port.to_string(), "--manifest-path"])
        .arg(manifest())
        .arg("--target-dir")
        .arg(&target)
        .env_remove("TCPFLASH_HOST")
        .env_remove(auth::KEY_FILE_ENV);
    if let Some(key) = key {
        command.arg("--key-file").arg(key);
    }
    let output = command.output().unwrap();
    let out_dir = target.join("tcpflash").join(LAYOUT.name);
    let read = |slot: SlotId| std::fs::read(out_dir.join(slot.file_name())).unwrap_or_default();
    (output, [read(SlotId::User1), read(SlotId::User2)])
}

fn read_line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line
}

/// A raw connection to the device.
struct Raw {
    stream: TcpStream,
    replies: BufReader<TcpStream>,
}

impl Raw {
    fn connect(port: u16) -> Raw {
        Raw::connect_from([127, 0, 0, 1], port)
    }

    /// A connection to 127.0.0.1 from another loopback address (the device sees that one).
    fn connect_from(source: [u8; 4], port: u16) -> Raw {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.bind(&std::net::SocketAddr::from((source, 0)).into()).unwrap();
        socket.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into()).unwrap();
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let replies = BufReader::new(stream.try_clone().unwrap());
        Raw { stream, replies }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn line(&mut self) -> String {
        read_line(&mut self.replies)
    }

    /// Everything the device still says, until it closes.
    fn rest(mut self) -> String {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        let mut rest = String::new();
        self.replies.read_to_string(&mut rest).unwrap();
        rest
    }

    /// `OTA`, `GetNextFlash` and `GetNonce`: the slot the device names and its nonce.
    fn ask_nonce(port: u16) -> (Raw, String, Nonce) {
        Raw::ask_nonce_from([127, 0, 0, 1], port)
    }

    fn ask_nonce_from(source: [u8; 4], port: u16) -> (Raw, String, Nonce) {
        let mut raw = Raw::connect_from(source, port);
        raw.send(b"OTA\r\nGetNextFlash\r\nGetNonce\r\n");
        let slot = raw.line();
        let line = raw.line();
        let hex = line.trim_end().strip_prefix("Nonce: ").unwrap_or_else(|| panic!("no nonce: {line:?}"));
        let mut nonce = [0u8; NONCE_LEN];
        ota_agent::hex::decode(hex.as_bytes(), &mut nonce).unwrap();
        (raw, slot, nonce)
    }
}

/// The header lines of a push of `image` to `slot`, proving `key` over `nonce`.
fn auth_lines(key: &Key, nonce: &Nonce, slot: SlotId, image: &[u8], sha_sent: &Digest256) -> String {
    let sha = auth::sha256(image);
    let tag = auth::session_mac(key, nonce, slot, image.len() as u32, &sha);
    format!("Sha256: {}\r\nAuth: {}\r\nFirmwareLength: {}\r\n", hex(sha_sent), hex(&tag), image.len())
}

#[test]
fn the_cli_with_the_key_pushes_and_the_new_firmware_carries_the_key() {
    let dir = scratch("auth-cli-key");
    let key = key_file(&dir, "tcpflash.key", &KEY);
    let sim = keyed_sim(&dir, Some(&key), "1");
    assert!(sim.wait_line("listening on").contains("pushes must prove the key in"));

    let (output, images) = cli_push(sim.port, Some(&key));
    let stderr = flat(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("Authenticated the device accepted the proof of its key"), "{stderr}");
    let nonce = sim.wait_line("reply: Nonce: ");
    assert_eq!(nonce.len(), "reply: Nonce: ".len() + 2 * NONCE_LEN, "{nonce}");
    sim.wait_line("booted user2 (example-blinky 0.1.0");
    assert_slot_holds(&sim.flash_bytes(), SlotId::User2, &images[1]);
    // The firmware was built with the key file the push used: it keeps requiring it.
    for image in &images {
        assert!(image.windows(KEY.len()).any(|w| w == KEY), "the key is built into the image");
    }
    assert!(String::from_utf8_lossy(&output.stdout).contains("the device now runs user2"));
}

#[test]
fn without_the_key_the_cli_hears_the_device_wants_one_and_nothing_changes() {
    let dir = scratch("auth-cli-none");
    let key = key_file(&dir, "tcpflash.key", &KEY);
    let sim = keyed_sim(&dir, Some(&key), "1");
    let before = sim.flash_bytes();

    let (output, _) = cli_push(sim.port, None);
    let stderr = flat(&output.stderr);
    assert_eq!(output.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("the device answered: ERR: Authentication required"), "{stderr}");
    assert!(stderr.contains("pass the same key file with --key-file PATH"), "{stderr}");
    assert!(sim.flash_bytes() == before, "a refused push changes nothing");
    assert_eq!(sim.count("rebooting"), 0);
}

#[test]
fn a_wrong_key_is_refused_and_locks_the_device_even_for_the_right_key() {
    let dir = scratch("auth-cli-wrong");
    let key = key_file(&dir, "tcpflash.key", &KEY);
    let mut other = KEY;
    other[0] ^= 0x20;
    let wrong = dir.join("wrong.key");
    std::fs::write(&wrong, other).unwrap(); // the raw format
    // A lockout far longer than the test, so the second push surely meets it.
    let sim = keyed_sim(&dir, Some(&key), "600");
    let before = sim.flash_bytes();

    let (output, _) = cli_push(sim.port, Some(&wrong));
    let stderr = flat(&output.stderr);
    assert_eq!(output.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("the device answered: ERR: Authentication failed"), "{stderr}");
    assert!(stderr.contains("the key does not match the device's"), "{stderr}");

    let (output, _) = cli_push(sim.port, Some(&key));
    let stderr = flat(&output.stderr);
    assert_eq!(output.status.code(), Some(5), "{stderr}");
    let at =
        stderr.find("ERR: Too many failed authentications, retry in ").unwrap_or_else(|| panic!("{stderr}"));
    let seconds: u32 = stderr[at..].split(" in ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!((1..=600).contains(&seconds), "{stderr}");
    assert!(stderr.contains("wait as long as it says"), "{stderr}");
    assert!(sim.flash_bytes() == before);
}

#[test]
fn the_seed_client_against_a_keyed_device_gets_a_clear_err_line() {
    let images = images();
    let dir = scratch("auth-seed");
    let key = key_file(&dir, "tcpflash.key", &KEY);
    let sim = keyed_sim(&dir, Some(&key), "1");
    let before = sim.flash_bytes();

    let output = Command::new("python3")
        .arg(root().join("tools/tcp_flash.py"))
        .arg("127.0.0.1")
        .args([&images.user1, &images.user2])
        .env("TCP_FLASH_PORT", sim.port.to_string())
        .output()
        .unwrap_or_else(|error| panic!("python3 is needed by this test ({error}): apt-get install python3"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    // The seed prints the reply it got instead of `Ready`, and exits with 3.
    assert!(stdout.contains("Received response: ERR: Authentication required"), "{stdout}");
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    assert!(sim.flash_bytes() == before);
}

#[test]
fn a_replayed_session_and_a_tampered_sha_line_fail_authentication() {
    let images = images();
    let image = images.bytes(SlotId::User2);
    let dir = scratch("auth-replay");
    let key = key_file(&dir, "tcpflash.key", &KEY);
    let sim = keyed_sim(&dir, Some(&key), "0.001");
    let config = config_bytes(&sim.flash_bytes());

    // An honest exchange, recorded: the device says Ready. The client then goes away.
    let (mut raw, slot, nonce) = Raw::ask_nonce(sim.port);
    assert_eq!(slot, "user2.bin\r\n");
    let recorded = auth_lines(&KEY, &nonce, SlotId::User2, &image, &auth::sha256(&image));
    raw.send(recorded.as_bytes());
    assert_eq!(raw.line(), "Ready\r\n");
    drop(raw);
    sim.wait_line(" gone");

    // Replayed word for word in a new connection: a new nonce, so the proof is wrong.
    let mut replay = Raw::connect(sim.port);
    let mut transcript = b"OTA\r\nGetNextFlash\r\nGetNonce\r\n".to_vec();
    transcript.extend_from_slice(recorded.as_bytes());
    transcript.extend_from_slice(&image);
    replay.send(&transcript);
    let replies = replay.rest();
    let lines: Vec<&str> = replies.split_inclusive("\r\n").collect();
    assert_eq!(lines.len(), 3, "{replies}");
    assert_eq!(lines[0], "user2.bin\r\n");
    assert!(
        lines[1].starts_with("Nonce: ") && lines[1] != format!("Nonce: {}\r\n", hex(&nonce)),
        "{replies}"
    );
    assert_eq!(lines[2], "ERR: Authentication failed\r\n");

    // A proof over the real image, with another SHA-256 on the line: refused before Ready.
    let (mut raw, _, nonce) = retry_nonce(sim.port);
    let other_sha = auth::sha256(&images.bytes(SlotId::User1));
    raw.send(auth_lines(&KEY, &nonce, SlotId::User2, &image, &other_sha).as_bytes());
    assert_eq!(raw.rest(), "ERR: Authentication failed\r\n");

    assert_eq!(config_bytes(&sim.flash_bytes()), config);
    assert_eq!(sim.count("rebooting"), 0);
}

/// `ask_nonce`, again after a lockout (this file's tiny back-off makes that rare) or while
/// the device still serves the previous connection (it serves one at a time).
fn retry_nonce(port: u16) -> (Raw, String, Nonce) {
    for _ in 0..20 {
        let mut raw = Raw::connect(port);
        raw.send(b"OTA\r\nGetNextFlash\r\nGetNonce\r\n");
        let slot = raw.line();
        if slot.starts_with("ERR: Connection Already Exists") {
            std::thread::sleep(std::time::Duration::from_millis(200));
            continue;
        }
        let line = raw.line();
        if let Some(hex) = line.trim_end().strip_prefix("Nonce: ") {
            let mut nonce = [0u8; NONCE_LEN];
            ota_agent::hex::decode(hex.as_bytes(), &mut nonce).unwrap();
            return (raw, slot, nonce);
        }
        assert!(line.starts_with("ERR: Too many failed authentications"), "{line:?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("the lockout never ended");
}

#[test]
fn a_tampered_image_byte_with_the_right_length_is_invalid_and_the_old_slot_stays() {
    let images = images();
    let image = images.bytes(SlotId::User2);
    let dir = scratch("auth-tampered");
    let key = key_file(&dir, "tcpflash.key", &KEY);
    let sim = keyed_sim(&dir, Some(&key), "1");
    let config = config_bytes(&sim.flash_bytes());

    let (mut raw, _, nonce) = Raw::ask_nonce(sim.port);
    raw.send(auth_lines(&KEY, &nonce, SlotId::User2, &image, &auth::sha256(&image)).as_bytes());
    assert_eq!(raw.line(), "Ready\r\n");
    let mut tampered = image.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01; // the CRC trailer's last byte
    raw.send(&tampered);
    assert_eq!(raw.rest(), "Invalid\r\nERR: Image SHA-256 mismatch\r\n");
    assert_eq!(config_bytes(&sim.flash_bytes()), config);
    assert_eq!(status(&sim.flash)["booted_slot"], "user1");
}

#[test]
fn a_cut_auth_exchange_changes_nothing_and_the_next_push_works() {
    let images = images();
    let image = images.bytes(SlotId::User2);
    let dir = scratch("auth-cut");
    let key = key_file(&dir, "tcpflash.key", &KEY);
    let sim = keyed_sim(&dir, Some(&key), "600");
    let before = sim.flash_bytes();

    // After the nonce, half an Auth line, then the client closes.
    let (mut raw, _, nonce) = Raw::ask_nonce(sim.port);
    let lines = auth_lines(&KEY, &nonce, SlotId::User2, &image, &auth::sha256(&image));
    raw.send(&lines.as_bytes()[..lines.find("Auth: ").unwrap() + 30]);
    assert_eq!(raw.rest(), "", "nothing more from the device, no Ready");
    // Before the nonce arrives.
    let mut raw = Raw::connect(sim.port);
    raw.send(b"OTA\r\nGetNextFlash\r\nGetNon");
    assert_eq!(raw.rest(), "user2.bin\r\n");
    assert!(sim.flash_bytes() == before);

    // No failed proof was counted (a 600 s lockout would refuse this): a full push works.
    let (mut raw, _, nonce) = Raw::ask_nonce(sim.port);
    raw.send(auth_lines(&KEY, &nonce, SlotId::User2, &image, &auth::sha256(&image)).as_bytes());
    assert_eq!(raw.line(), "Ready\r\n");
    raw.send(&image);
    assert_eq!(raw.rest(), "Flashing\r\nFlash upgrade success. Rebooting in 2s.\r\n");
    sim.wait_line("booted user2");
}

#[test]
fn without_a_key_a_wrong_sha256_is_invalid_and_a_keyed_cli_is_warned() {
    let images = images();
    let image = images.bytes(SlotId::User2);
    let dir = scratch("auth-nokey");
    let sim = keyed_sim(&dir, None, "1");
    assert!(sim.wait_line("listening on").ends_with("no key)"));
    let config = config_bytes(&sim.flash_bytes());

    let mut raw = Raw::connect(sim.port);
    let wrong = auth::sha256(&images.bytes(SlotId::User1));
    raw.send(
        format!("OTA\r\nGetNextFlash\r\nSha256: {}\r\nFirmwareLength: {}\r\n", hex(&wrong), image.len())
            .as_bytes(),
    );
    assert_eq!(raw.line(), "user2.bin\r\n");
    assert_eq!(raw.line(), "Ready\r\n");
    raw.send(&image);
    assert_eq!(raw.rest(), "Invalid\r\nERR: Image SHA-256 mismatch\r\n");
    assert_eq!(config_bytes(&sim.flash_bytes()), config, "the boot config is untouched");

    // A client with a key meets a device without one: warned, pushed, checked by SHA-256.
    let key = key_file(&dir, "tcpflash.key", &KEY);
    let (output, pushed) = cli_push(sim.port, Some(&key));
    let stderr = flat(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("Warning the device has no key"), "{stderr}");
    assert!(sim.wait_line("reply: NoKey").ends_with("NoKey"));
    sim.wait_line("booted user2");
    assert_slot_holds(&sim.flash_bytes(), SlotId::User2, &pushed[1]);
}

#[test]
fn a_sim_key_file_that_is_not_a_key_is_refused_with_the_fix() {
    let dir = scratch("auth-bad-key");
    let bad = dir.join("bad.key");
    std::fs::write(&bad, "0123").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["sim", "--port", "0", "--flash"])
        .arg(dir.join("flash.bin"))
        .arg("--key-file")
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = flat(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("is not a key file: it holds 4 bytes"), "{stderr}");
    // The sentence is said once, not again as a cause.
    assert_eq!(stderr.matches("it holds").count(), 1, "{stderr}");
    assert!(stderr.contains("head -c 32 /dev/urandom"), "{stderr}");
    assert!(!dir.join("flash.bin").exists(), "refused before anything is created");
}

#[test]
fn failed_proofs_from_another_address_do_not_lock_the_owner_out() {
    let images = images();
    let image = images.bytes(SlotId::User2);
    let dir = scratch("auth-other-address");
    let key = key_file(&dir, "tcpflash.key", &KEY);
    // A lockout far longer than the test: if it held the owner, the push below would fail.
    let sim = keyed_sim(&dir, Some(&key), "600");
    let mut wrong = KEY;
    wrong[3] ^= 1;
    let attacker = [127, 0, 0, 2];
    let (mut raw, slot, nonce) = Raw::ask_nonce_from(attacker, sim.port);
    assert_eq!(slot, "user2.bin\r\n");
    let sha = auth::sha256(&image);
    raw.send(auth_lines(&wrong, &nonce, SlotId::User2, &image, &sha).as_bytes());
    assert_eq!(raw.rest(), "ERR: Authentication failed\r\n");
    // That address is locked out now...
    let (slot, answer) = nonce_answer_from(attacker, sim.port);
    assert_eq!(slot, "user2.bin\r\n");
    assert!(answer.starts_with("ERR: Too many failed authentications, retry in "), "{answer:?}");
    // ...the owner at 127.0.0.1 is not.
    let (output, pushed) = cli_push(sim.port, Some(&key));
    assert!(output.status.success(), "{}", flat(&output.stderr));
    assert_slot_holds(&sim.flash_bytes(), SlotId::User2, &pushed[1]);
}

/// `OTA`, `GetNextFlash`, `GetNonce` from `source` once the device has let the previous
/// connection go: the slot line and the line after it.
fn nonce_answer_from(source: [u8; 4], port: u16) -> (String, String) {
    for _ in 0..50 {
        let mut raw = Raw::connect_from(source, port);
        raw.send(b"OTA\r\nGetNextFlash\r\nGetNonce\r\n");
        let first = raw.line();
        if first.starts_with("ERR: Connection Already Exists") {
            std::thread::sleep(std::time::Duration::from_millis(100));
            continue;
        }
        return (first, raw.line());
    }
    panic!("the device stayed busy");
}

/// Connects, sends `OTA` then nothing more (a client that holds the session without pushing).
fn stalling_client(port: u16, trickle: bool) -> std::thread::JoinHandle<String> {
    let mut raw = Raw::connect(port);
    std::thread::spawn(move || {
        if trickle {
            // One byte every 1.5 s: never idle for long, never done with its lines.
            for byte in b"OTA\r\nGetNextFlash\r\nGetNonce\r\n".iter().cycle().take(40) {
                if raw.stream.write_all(&[*byte]).is_err() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1500));
            }
        }
        let mut all = String::new();
        let _ = raw.replies.read_to_string(&mut all);
        all
    })
}

#[test]
fn a_keyed_push_succeeds_while_a_trickling_client_is_connected() {
    let dir = scratch("auth-trickle");
    let key = key_file(&dir, "tcpflash.key", &KEY);
    let sim = keyed_sim(&dir, Some(&key), "1");
    let images = images();
    // Built (when it must be) before the trickler connects: the push has to start within
    // the trickler's 10 s.
    let tcpflash = tcpflash();
    let trickler = stalling_client(sim.port, true);
    sim.wait_line("client 127.0.0.1:");
    // Prebuilt images: the push starts while the trickler still holds the session.
    let output = Command::new(tcpflash)
        .args(["tcpflash", "push", "--host", "127.0.0.1", "--port", &sim.port.to_string(), "--key-file"])
        .arg(&key)
        .arg(&images.user1)
        .arg(&images.user2)
        .output()
        .unwrap();
    let stderr = flat(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("the device serves another client"), "it waited: {stderr}");
    let heard = trickler.join().unwrap();
    assert!(heard.ends_with("ERR: Header lines too slow\r\n"), "{heard:?}");
    assert_slot_holds(&sim.flash_bytes(), SlotId::User2, &images.bytes(SlotId::User2));
}

#[test]
fn a_push_succeeds_after_a_silent_client_is_dropped() {
    let dir = scratch("auth-silent");
    let sim = keyed_sim(&dir, None, "1");
    let silent = stalling_client(sim.port, false);
    sim.wait_line("client 127.0.0.1:");
    let (output, pushed) = cli_push(sim.port, None);
    assert!(output.status.success(), "{}", flat(&output.stderr));
    // Dropped at the header deadline (10 s), not the idle timeout (30 s).
    assert_eq!(silent.join().unwrap(), "ERR: Header lines too slow\r\n");
    assert_slot_holds(&sim.flash_bytes(), SlotId::User2, &pushed[1]);
}
