//! `cargo tcpflash --host` through the real binary against devices scripted in the test:
//! silent, refusing, answering `ERR:`, off-protocol, reverting, never coming back. Every
//! error must say what happened and what to do, with its own exit status. (Pushes to the
//! virtual ESP8266 are tested in xtask, which owns it.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::{blinky, flat_stderr, repo, tcpflash};

/// Upper bound for a CLI run, so a bug fails the test instead of hanging it (never a
/// pass/fail criterion on speed).
const PATIENCE: Duration = Duration::from_secs(120);

/// Pushes example-blinky to 127.0.0.1:`port`.
fn push(port: u16, extra: &[&str]) -> Command {
    let mut command = tcpflash(&["--host", "127.0.0.1", "--port", &port.to_string(), "--manifest-path"]);
    command.arg(blinky()).args(extra);
    command
}

fn run(command: &mut Command) -> Output {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + PATIENCE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("cargo tcpflash still runs after {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A scripted device: each connection is handed to the next script; connections are counted.
struct FakeDevice {
    port: u16,
    connections: Arc<AtomicUsize>,
}

type Script = Box<dyn FnOnce(TcpStream) + Send>;

fn fake_device(scripts: Vec<Script>) -> FakeDevice {
    fake_device_on(TcpListener::bind("127.0.0.1:0").unwrap(), scripts)
}

fn fake_device_on(listener: TcpListener, scripts: Vec<Script>) -> FakeDevice {
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&connections);
    std::thread::spawn(move || {
        let scripts = Mutex::new(scripts.into_iter());
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let script = scripts.lock().unwrap().next();
            match script {
                Some(script) => {
                    std::thread::spawn(move || script(stream));
                }
                // Past the script: the device is gone.
                None => return,
            }
        }
    });
    FakeDevice { port, connections }
}

fn line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line
}

/// Reads the opening lines; returns the reader for more.
fn opening(stream: &TcpStream) -> BufReader<TcpStream> {
    opening_with(stream, 8 * 1024)
}

/// [`opening`] with a reader that buffers at most `capacity` bytes ahead.
fn opening_with(stream: &TcpStream, capacity: usize) -> BufReader<TcpStream> {
    let mut reader = BufReader::with_capacity(capacity, stream.try_clone().unwrap());
    assert_eq!(line(&mut reader), "OTA\r\n");
    assert_eq!(line(&mut reader), "GetNextFlash\r\n");
    reader
}

/// Reads the header lines up to `FirmwareLength`: the SHA-256 the client announced (it
/// always sends one) and the length.
fn headers(reader: &mut impl BufRead) -> (String, usize) {
    let sha = line(reader);
    let sha = sha.trim_end().strip_prefix("Sha256: ").unwrap_or_else(|| panic!("no Sha256 line: {sha:?}"));
    let length = line(reader);
    let len = length.trim_end().strip_prefix("FirmwareLength: ").unwrap().parse().unwrap();
    (sha.to_owned(), len)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn drain(mut reader: impl Read) {
    let _ = std::io::copy(&mut reader, &mut std::io::sink());
}

/// The device's side of a successful push of the slot it names.
fn accepts(slot: &'static str) -> Script {
    Box::new(move |mut stream| {
        let mut reader = opening(&stream);
        stream.write_all(format!("{slot}\r\n").as_bytes()).unwrap();
        let (sha, len) = headers(&mut reader);
        stream.write_all(b"Ready\r\n").unwrap();
        let mut image = vec![0u8; len];
        reader.read_exact(&mut image).unwrap();
        assert_eq!(&image[..2], &[0xEA, 0x04], "a v2 image");
        assert_eq!(sha, hex(&ota_agent::auth::sha256(&image)), "the announced SHA-256 is the image's");
        stream.write_all(b"Flashing\r\n").unwrap();
        stream.write_all(b"Flash upgrade success. Rebooting in 2s.\r\n").unwrap();
        drain(reader);
    })
}

/// Answers the opening with `reply` and waits for the client to close.
fn answers(reply: &'static str) -> Script {
    Box::new(move |mut stream| {
        let reader = opening(&stream);
        stream.write_all(reply.as_bytes()).unwrap();
        drain(reader);
    })
}

/// The device after its reboot: names the slot it would write (`asks`), then answers
/// `GetBootState` with `boot_state` (an agent older than the extension answers `ERR:`).
fn returns(asks: &'static str, boot_state: &'static str) -> Script {
    Box::new(move |mut stream| {
        let mut reader = opening(&stream);
        stream.write_all(format!("{asks}\r\n").as_bytes()).unwrap();
        assert_eq!(line(&mut reader), "GetBootState\r\n");
        stream.write_all(format!("{boot_state}\r\n").as_bytes()).unwrap();
        drain(reader);
    })
}

fn assert_exit(output: &Output, code: i32) -> String {
    let stderr = flat_stderr(output);
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    stderr
}

#[test]
fn a_device_that_never_answers_times_out_within_the_configured_time() {
    // Asked during the build, silent; asked again after it, silent again.
    let device = fake_device(vec![Box::new(drain), Box::new(drain)]);
    let output = run(&mut push(device.port, &["--timeout", "1.5"]));
    let stderr = assert_exit(&output, 4);
    let expected =
        format!("no answer from 127.0.0.1:{} within 1.5 s while waiting for the slot name", device.port);
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("raise --timeout"), "{stderr}");
}

#[test]
fn a_refused_connection_asks_whether_the_agent_runs() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let output = run(&mut push(port, &[]));
    let stderr = assert_exit(&output, 4);
    assert!(stderr.contains(&format!("the device at 127.0.0.1:{port} refused the connection")), "{stderr}");
    assert!(stderr.contains("calling ota_init()") && stderr.contains("--port"), "{stderr}");
}

#[test]
fn an_unknown_name_is_reported_before_building() {
    let output = run(tcpflash(&["--host", "no-such-device.invalid", "--manifest-path"]).arg(blinky()));
    let stderr = assert_exit(&output, 4);
    assert!(stderr.contains("cannot resolve the device name `no-such-device.invalid`"), "{stderr}");
    assert!(stderr.contains("IP address with --host"), "{stderr}");
    assert!(!stderr.contains("Linking"), "nothing was built first: {stderr}");
}

#[test]
fn the_host_comes_from_the_flag_then_tcpflash_host_then_the_metadata() {
    let from_env = run(tcpflash(&["--manifest-path"]).arg(blinky()).env("TCPFLASH_HOST", "env-host.invalid"));
    assert!(assert_exit(&from_env, 4).contains("`env-host.invalid`"));
    let flag_wins = run(tcpflash(&["--host", "flag-host.invalid", "--manifest-path"])
        .arg(blinky())
        .env("TCPFLASH_HOST", "env-host.invalid"));
    assert!(assert_exit(&flag_wins, 4).contains("`flag-host.invalid`"));

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/main.rs"), "#![no_std]\n#![no_main]\n").unwrap();
    std::fs::write(
        dir.path().join("Cargo.toml"),
        "[package]\nname = \"meta-firmware\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
         [package.metadata.tcpflash]\nhost = \"meta-host.invalid\"\nport = 4321\n\n[workspace]\n",
    )
    .unwrap();
    let from_metadata = run(tcpflash(&["--manifest-path"]).arg(dir.path().join("Cargo.toml")));
    assert!(assert_exit(&from_metadata, 4).contains("`meta-host.invalid`"));

    let nowhere = run(tcpflash(&["--manifest-path"]).arg(blinky()));
    let stderr = assert_exit(&nowhere, 2);
    assert!(stderr.contains("no device to push to"), "{stderr}");
    assert!(stderr.contains("TCPFLASH_HOST") && stderr.contains("[package.metadata.tcpflash]"), "{stderr}");
}

#[test]
fn an_err_line_is_shown_verbatim_with_what_to_do() {
    let device = fake_device(vec![Box::new(|mut stream| {
        let mut reader = opening(&stream);
        stream.write_all(b"user2.bin\r\n").unwrap();
        headers(&mut reader);
        stream.write_all(b"ERR: Firmware length is too big\r\n").unwrap();
        drain(reader);
    })]);
    let output = run(&mut push(device.port, &[]));
    let stderr = assert_exit(&output, 5);
    assert!(stderr.contains("the device answered: ERR: Firmware length is too big"), "{stderr}");
    assert!(stderr.contains("--layout"), "{stderr}");
}

fn busy() -> Script {
    Box::new(|mut stream| {
        stream.write_all(b"ERR: Connection Already Exists\r\n").unwrap();
        drain(stream);
    })
}

#[test]
fn a_busy_device_is_waited_for_and_then_pushed_to() {
    let device = fake_device(vec![
        busy(),
        busy(),
        accepts("user2.bin"),
        returns("user1.bin", "BootState: confirmed user2 -"),
    ]);
    let output = run(&mut push(device.port, &[]));
    let stderr = assert_exit(&output, 0);
    assert_eq!(stderr.matches("the device serves another client").count(), 1, "said once: {stderr}");
    assert_eq!(device.connections.load(Ordering::SeqCst), 4);
}

#[test]
fn a_device_busy_the_whole_time_says_so() {
    let device = fake_device((0..200).map(|_| busy()).collect());
    let stderr = assert_exit(&run(&mut push(device.port, &["--reboot-timeout", "1"])), 5);
    assert!(stderr.contains("the device answered: ERR: Connection Already Exists"), "{stderr}");
    assert!(stderr.contains("another push to this device is in progress"), "{stderr}");
}

#[test]
fn an_off_protocol_reply_names_the_step() {
    let device = fake_device(vec![answers("HTTP/1.1 400 Bad Request\r\n")]);
    let stderr = assert_exit(&run(&mut push(device.port, &[])), 5);
    assert!(
        stderr.contains(
            "unexpected reply from the device while waiting for the slot name: \"HTTP/1.1 400 Bad Request\""
        ),
        "{stderr}"
    );
    assert!(stderr.contains("does not speak TCP-OTA"), "{stderr}");
}

#[test]
fn an_invalid_image_shows_the_devices_reason() {
    let device = fake_device(vec![Box::new(|mut stream| {
        let mut reader = opening(&stream);
        stream.write_all(b"user1.bin\r\n").unwrap();
        let (_, len) = headers(&mut reader);
        stream.write_all(b"Ready\r\n").unwrap();
        let mut image = vec![0u8; len];
        reader.read_exact(&mut image).unwrap();
        stream.write_all(b"Invalid\r\n").unwrap();
        stream.write_all(b"ERR: CRC mismatch (stored 0x00000001, computed 0x00000002)\r\n").unwrap();
        drain(reader);
    })]);
    let stderr = assert_exit(&run(&mut push(device.port, &[])), 5);
    assert!(
        stderr.contains(
            "the device refused the image: Invalid, ERR: CRC mismatch (stored 0x00000001, computed 0x00000002)"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("the device kept its current firmware"), "{stderr}");
}

#[test]
fn a_device_dropping_the_connection_mid_image_is_an_interrupted_transfer() {
    let device = fake_device(vec![Box::new(|mut stream| {
        let mut reader = opening(&stream);
        stream.write_all(b"user2.bin\r\n").unwrap();
        headers(&mut reader);
        stream.write_all(b"Ready\r\n").unwrap();
        let mut some = [0u8; 1000];
        reader.read_exact(&mut some).unwrap();
        // Gone, with the rest of the image unread: the client gets a reset.
    })]);
    let stderr = assert_exit(&run(&mut push(device.port, &[])), 4);
    assert!(
        stderr.contains(&format!("the transfer to 127.0.0.1:{} was interrupted", device.port)),
        "{stderr}"
    );
}

#[test]
fn an_old_agent_back_on_the_old_slot_reverted() {
    let device = fake_device(vec![accepts("user2.bin"), returns("user2.bin", "ERR: Unexpected header.")]);
    let output = run(&mut push(device.port, &[]));
    let stderr = assert_exit(&output, 6);
    assert!(stderr.contains("did not confirm and the device went back"), "{stderr}");
    assert!(stderr.contains("it runs user1 again (the image went to user2)"), "{stderr}");
    assert_eq!(device.connections.load(Ordering::SeqCst), 2, "one push, one check");
}

#[test]
fn an_old_agent_back_on_the_new_slot_is_a_success() {
    let device = fake_device(vec![accepts("user1.bin"), returns("user2.bin", "ERR: Unexpected header.")]);
    let output = run(&mut push(device.port, &[]));
    assert_exit(&output, 0);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("pushed user1.bin (example-blinky 0.1.0, build "), "{stdout}");
    assert!(stdout.contains("the device now runs user1"), "{stdout}");
}

#[test]
fn a_trial_boot_that_reverted_names_both_builds() {
    let device = fake_device(vec![
        accepts("user2.bin"),
        returns("user2.bin", "BootState: reverted user1 0011223344556677"),
    ]);
    let output = run(&mut push(device.port, &[]));
    let stderr = assert_exit(&output, 6);
    assert!(stderr.contains("the new firmware (build "), "{stderr}");
    assert!(stderr.contains("it runs user1 (build 0011223344556677) again"), "{stderr}");
}

#[test]
fn a_trial_boot_on_the_new_slot_reports_its_state() {
    let device = fake_device(vec![
        accepts("user1.bin"),
        returns("user2.bin", "BootState: trial user1 0011223344556677 1/3"),
    ]);
    let output = run(&mut push(device.port, &[]));
    assert_exit(&output, 0);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("the device now runs user1"), "{stdout}");
    assert!(stdout.contains("on trial (boot 1 of 3"), "{stdout}");
}

#[test]
fn a_device_that_does_not_come_back_is_reported_after_the_reboot_timeout() {
    // After the push the fake device is gone: every reconnection is refused.
    let device = fake_device(vec![accepts("user2.bin")]);
    let mut child = push(device.port, &["--reboot-timeout", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The clock starts at the push's connection (after the build), and stops at the exit.
    let deadline = Instant::now() + PATIENCE;
    while device.connections.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline && child.try_wait().unwrap().is_none(), "no push arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
    let pushed_at = Instant::now();
    let output = child.wait_with_output().unwrap();
    let took = pushed_at.elapsed();
    let stderr = assert_exit(&output, 4);
    // It waited the 1 s it was given, and gave up then: a hang guard, not a benchmark.
    assert!(took >= Duration::from_secs(1), "gave up after {took:?}");
    assert!(took < Duration::from_secs(30), "still waiting after {took:?}");
    assert!(stderr.contains("the device did not answer within"), "{stderr}");
    assert!(stderr.contains("refused the connection"), "the last failure is named: {stderr}");
    assert!(stderr.contains("ota_init()") && stderr.contains("--no-verify"), "{stderr}");
}

#[test]
fn no_verify_stops_after_the_push() {
    let device = fake_device(vec![accepts("user2.bin")]);
    let output = run(&mut push(device.port, &["--no-verify"]));
    assert_exit(&output, 0);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("the device reboots into it (not checked: --no-verify)"), "{stdout}");
    assert_eq!(device.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn an_image_too_large_for_its_slot_is_refused_before_connecting() {
    // 300 KB of constant bytes in IROM: more than a 512 KB chip's slots hold.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(
        dir.path().join("Cargo.toml"),
        "[package]\nname = \"heavy-firmware\"\nversion = \"0.3.0\"\nedition = \"2024\"\n\n\
         [profile.release]\nopt-level = \"s\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("src/main.rs"),
        "#![no_std]\n#![no_main]\n#[panic_handler]\nfn panic(_: &core::panic::PanicInfo) -> ! { loop {} }\n\
         #[unsafe(link_section = \".irom0.text\")]\n#[used]\nstatic BALLAST: [u32; 76800] = [0x5A5A_5A5A; 76800];\n\
         #[unsafe(no_mangle)]\npub extern \"C\" fn main() -> ! {\n    \
         // SAFETY: an aligned word of a static.\n    \
         let _ = unsafe { core::ptr::read_volatile((&raw const BALLAST).cast::<u32>()) }; loop {} }\n",
    )
    .unwrap();
    std::fs::copy(repo().join("example-blinky/rust-toolchain.toml"), dir.path().join("rust-toolchain.toml"))
        .unwrap();
    // The device is asked for its slot while the firmware builds; it never answers here.
    let (seen_tx, seen) = std::sync::mpsc::channel();
    let device = fake_device(vec![Box::new(move |stream| {
        let mut received = Vec::new();
        let _ = (&stream).read_to_end(&mut received);
        let _ = seen_tx.send(received);
    })]);
    let output =
        run(tcpflash(&["--host", "127.0.0.1", "--port", &device.port.to_string(), "--layout", "512KB"])
            .arg("--manifest-path")
            .arg(dir.path().join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", repo().join("target/firmware-fixtures")));
    let stderr = assert_exit(&output, 3);
    assert!(stderr.contains("too large for user1 by "), "{stderr}");
    // Found before anything was pushed: at most the opening lines of the early question.
    if device.connections.load(Ordering::SeqCst) > 0 {
        let received = seen.recv_timeout(PATIENCE).unwrap();
        assert!(
            b"OTA\r\nGetNextFlash\r\n".starts_with(&received),
            "{:?}",
            received.escape_ascii().to_string()
        );
    }
}

#[test]
fn help_lists_the_exit_statuses() {
    let output = run(&mut tcpflash(&["--help"]));
    assert_exit(&output, 0);
    let help = String::from_utf8_lossy(&output.stdout);
    for line in [
        "3  the firmware did not build",
        "4  network: name not resolved, connection refused, timeout, transfer interrupted",
        "5  the device refused",
        "6  the device came back on the old slot: it reverted",
        "--connect-timeout <SECS>",
        "--reboot-timeout <SECS>",
    ] {
        assert!(help.contains(line), "{line:?} missing from:\n{help}");
    }
}

#[test]
fn a_key_file_that_is_missing_or_not_a_key_is_a_usage_error_naming_the_fix() {
    let device = fake_device(vec![]);
    let missing = run(&mut push(device.port, &["--key-file", "/nonexistent/tcpflash.key"]));
    let stderr = assert_exit(&missing, 2);
    assert!(stderr.contains("cannot read the key file /nonexistent/tcpflash.key"), "{stderr}");
    assert!(stderr.contains("--key-file or TCPFLASH_KEY_FILE"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "not a key\n").unwrap();
    let mut command = push(device.port, &[]);
    command.env("TCPFLASH_KEY_FILE", &bad);
    let stderr = assert_exit(&run(&mut command), 2);
    assert!(
        stderr.contains("is not a key file: it holds 10 bytes, 9 without the whitespace around them"),
        "{stderr}"
    );
    // The sentence is said once, not again as a cause.
    assert_eq!(stderr.matches("it holds").count(), 1, "{stderr}");
    assert!(stderr.contains("head -c 32 /dev/urandom"), "{stderr}");
    assert_eq!(device.connections.load(Ordering::SeqCst), 0, "nothing is sent without a usable key");
}

#[test]
fn a_device_on_an_unconfirmed_trial_refuses_and_the_help_says_why() {
    let device =
        fake_device(vec![answers("user1.bin\r\nERR: Running firmware is on trial, not confirmed yet\r\n")]);
    let output = run(&mut push(device.port, &[]));
    let stderr = assert_exit(&output, 5);
    assert!(stderr.contains("ERR: Running firmware is on trial, not confirmed yet"), "{stderr}");
    assert!(stderr.contains("has not confirmed itself yet"), "{stderr}");
}

/// A listener whose connections have a small receive buffer: a client writing to a device
/// that stops reading blocks after a few kilobytes, mid-image.
fn small_window_listener() -> TcpListener {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    socket.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    socket.listen(4).unwrap();
    socket.into()
}

/// What the device saw of a connection the client gave up on.
#[derive(Debug)]
struct Seen {
    image_bytes: usize,
    len: usize,
    reset: bool,
}

/// Reads the rest of a connection: how many bytes came, and whether it ended in a reset.
fn read_to_end_or_reset(mut reader: impl Read) -> (usize, bool) {
    let mut total = 0;
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return (total, false),
            Ok(n) => total += n,
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return (total, true),
            Err(error) => panic!("{error}"),
        }
    }
}

/// A device that answers up to `Ready` (or not, with `ready` false), reads `image_bytes`
/// of the image (all of it with `usize::MAX`) and then waits: it tells `at_point` where it
/// stands, and `seen` what it saw by the end. It keeps its end open after the client's
/// close, until the test is done.
fn stops_at(
    ready: bool,
    image_bytes: usize,
    at_point: std::sync::mpsc::Sender<()>,
    seen: std::sync::mpsc::Sender<Seen>,
) -> Script {
    Box::new(move |mut stream| {
        // Buffering little here, so a device that stops reading stops the client soon.
        let mut reader = opening_with(&stream, 64);
        stream.write_all(b"user2.bin\r\n").unwrap();
        let (_, len) = headers(&mut reader);
        if ready {
            stream.write_all(b"Ready\r\n").unwrap();
        }
        let mut image = vec![0u8; image_bytes.min(len)];
        reader.read_exact(&mut image).unwrap();
        // Let the client fill what the connection buffers, then say where we are.
        std::thread::sleep(Duration::from_millis(300));
        at_point.send(()).unwrap();
        // The test sends SIGINT now; the client looks at it within 0.1 s, blocked as it is.
        std::thread::sleep(Duration::from_secs(1));
        let (more, reset) = read_to_end_or_reset(reader);
        seen.send(Seen { image_bytes: image.len() + more, len, reset }).unwrap();
        // Closing now would end the client's wait before its Ctrl-C: stay until it is gone.
        std::thread::sleep(PATIENCE);
        drop(stream);
    })
}

/// Runs a push, sends it SIGINT once the device reaches its point, returns its output.
fn interrupted_push(device: &FakeDevice, at_point: std::sync::mpsc::Receiver<()>) -> Output {
    let child = push(device.port, &[]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    at_point.recv_timeout(PATIENCE).expect("the push reached the device's point");
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    child.wait_with_output().unwrap()
}

#[test]
fn ctrl_c_before_the_image_resets_and_says_the_device_keeps_its_firmware() {
    let (point_tx, point) = std::sync::mpsc::channel();
    let (seen_tx, seen) = std::sync::mpsc::channel();
    let device = fake_device(vec![stops_at(false, 0, point_tx, seen_tx)]);
    let output = interrupted_push(&device, point);
    let stderr = assert_exit(&output, 130);
    assert!(stderr.contains("stopped (Ctrl-C) before any image byte was sent"), "{stderr}");
    assert!(stderr.contains("the device drops what it received and keeps its firmware"), "{stderr}");
    let seen = seen.recv_timeout(PATIENCE).unwrap();
    assert!(seen.reset && seen.image_bytes == 0, "{seen:?}");
}

#[test]
fn ctrl_c_mid_image_resets_so_the_rest_never_arrives() {
    let (point_tx, point) = std::sync::mpsc::channel();
    let (seen_tx, seen) = std::sync::mpsc::channel();
    let device = fake_device_on(small_window_listener(), vec![stops_at(true, 1000, point_tx, seen_tx)]);
    let output = interrupted_push(&device, point);
    let stderr = assert_exit(&output, 130);
    assert!(stderr.contains("stopped (Ctrl-C) after "), "{stderr}");
    assert!(stderr.contains(" bytes of user2.bin"), "{stderr}");
    assert!(stderr.contains("the device drops what it received and keeps its firmware"), "{stderr}");
    let seen = seen.recv_timeout(PATIENCE).unwrap();
    // What the device got ends in a reset, short of the image: it can never install it.
    assert!(seen.reset && seen.image_bytes < seen.len, "{seen:?}");
}

#[test]
fn ctrl_c_after_the_last_byte_checks_what_the_device_runs() {
    let (point_tx, point) = std::sync::mpsc::channel();
    let (seen_tx, seen) = std::sync::mpsc::channel();
    // The device got everything, did not install it, and answers the check from user1.
    let device = fake_device(vec![
        stops_at(true, usize::MAX, point_tx, seen_tx),
        returns("user2.bin", "BootState: confirmed user1 -"),
    ]);
    let output = interrupted_push(&device, point);
    let stderr = assert_exit(&output, 130);
    assert!(stderr.contains("were sent: the device did not install it and still runs user1"), "{stderr}");
    let seen = seen.recv_timeout(PATIENCE).unwrap();
    assert_eq!(seen.image_bytes, seen.len, "{seen:?}");
    assert!(seen.reset, "Ctrl-C reset the connection: {seen:?}");
    assert_eq!(device.connections.load(Ordering::SeqCst), 2, "the push and the check");
}

#[test]
fn a_device_s_escape_sequences_never_reach_the_terminal_raw() {
    let device = fake_device(vec![answers("ERR: \x1b[2J\x1b]0;owned\x07 \u{9b}31m boom\r\n")]);
    let output = run(&mut push(device.port, &[]));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(5), "{stderr}");
    for raw in ['\x1b', '\x07', '\u{9b}'] {
        assert!(!stderr.contains(raw), "{raw:?} reached the terminal: {stderr:?}");
    }
    assert!(stderr.contains("ERR: \\u{1b}[2J\\u{1b}]0;owned\\u{7} \\u{9b}31m boom"), "{stderr}");
}

#[test]
fn a_host_with_a_port_or_port_0_is_refused_before_building() {
    let output = run(tcpflash(&["--host", "127.0.0.1:47001", "--manifest-path"]).arg(blinky()));
    let stderr = assert_exit(&output, 2);
    assert!(stderr.contains("--host `127.0.0.1:47001` carries a port"), "{stderr}");
    assert!(stderr.contains("--host 127.0.0.1 --port 47001"), "{stderr}");
    assert!(!stderr.contains("Compiling") && !stderr.contains("Linking"), "{stderr}");
    let output = run(tcpflash(&["--host", "[::1]:47001", "--manifest-path"]).arg(blinky()));
    assert!(assert_exit(&output, 2).contains("--host ::1 --port 47001"));
    let output = run(tcpflash(&["--host", "127.0.0.1", "--port", "0", "--manifest-path"]).arg(blinky()));
    let stderr = assert_exit(&output, 2);
    assert!(stderr.contains("0 is not in 1..=65535"), "{stderr}");
}

/// The seed's C agent as it answers (read from its source): slot name, then `Ready` for a
/// `FirmwareLength` line and `ERR: Unexpected header.` for any other header line. What it
/// received on a push is kept in `seen`.
fn seed_agent(slot: &'static str, seen: Arc<Mutex<Vec<u8>>>) -> Script {
    Box::new(move |mut stream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut got = Vec::new();
        for expected in ["OTA\r\n", "GetNextFlash\r\n"] {
            let text = line(&mut reader);
            got.extend_from_slice(text.as_bytes());
            assert_eq!(text, expected);
        }
        stream.write_all(format!("{slot}\r\n").as_bytes()).unwrap();
        let header = line(&mut reader);
        got.extend_from_slice(header.as_bytes());
        let Some(len) = header.trim_end().strip_prefix("FirmwareLength: ") else {
            stream.write_all(b"ERR: Unexpected header.\r\n").unwrap();
            *seen.lock().unwrap() = got;
            return;
        };
        stream.write_all(b"Ready\r\n").unwrap();
        let mut image = vec![0u8; len.parse().unwrap()];
        reader.read_exact(&mut image).unwrap();
        got.extend_from_slice(&image);
        stream.write_all(b"Flashing\r\n").unwrap();
        stream.write_all(b"Flash upgrade success. Rebooting in 2s.\r\n").unwrap();
        *seen.lock().unwrap() = got;
        drain(reader);
    })
}

fn built_image(slot: &str) -> Vec<u8> {
    std::fs::read(repo().join("example-blinky/target/tcpflash/1MB").join(slot)).unwrap()
}

#[test]
fn the_seeds_agent_refuses_the_sha256_line_and_gets_the_seeds_lines_only() {
    let (refused, plain) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
    let device = fake_device(vec![
        seed_agent("user2.bin", Arc::clone(&refused)),
        seed_agent("user2.bin", Arc::clone(&plain)),
        // After the reboot it names user1 (it runs user2) and refuses GetBootState.
        seed_agent("user1.bin", Arc::new(Mutex::new(Vec::new()))),
    ]);
    let output = run(&mut push(device.port, &[]));
    let stderr = assert_exit(&output, 0);
    assert!(stderr.contains("answered the SHA-256 line with `ERR: Unexpected header.`"), "{stderr}");
    assert_eq!(stderr.matches("seed's lines only").count(), 1, "said once: {stderr}");
    assert!(refused.lock().unwrap().starts_with(b"OTA\r\nGetNextFlash\r\nSha256: "));
    // The second connection: exactly the seed's lines and the image.
    let image = built_image("user2.bin");
    let mut expected = format!("OTA\r\nGetNextFlash\r\nFirmwareLength: {}\r\n", image.len()).into_bytes();
    expected.extend_from_slice(&image);
    assert!(*plain.lock().unwrap() == expected, "the seed's lines and the image, nothing else");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("the device now runs user2"), "{stdout}");
}

#[test]
fn a_keyed_push_never_falls_back_to_the_seeds_lines() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let device = fake_device(vec![seed_agent("user2.bin", Arc::clone(&seen))]);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    let output = run(push(device.port, &["--key-file"]).arg(&key));
    let stderr = assert_exit(&output, 5);
    assert!(stderr.contains("does not know tcpflash's extension lines"), "{stderr}");
    assert!(stderr.contains("never falls back"), "{stderr}");
    assert_eq!(device.connections.load(Ordering::SeqCst), 1, "no second, plain push");
}

#[test]
fn prebuilt_images_go_to_a_seed_agent_with_plain() {
    // Built once by the building form (any test's build will do).
    let built = run(tcpflash(&["build", "--manifest-path"]).arg(blinky()));
    assert!(built.status.success(), "{}", flat_stderr(&built));
    let plain = Arc::new(Mutex::new(Vec::new()));
    let device = fake_device(vec![
        seed_agent("user1.bin", Arc::clone(&plain)),
        seed_agent("user2.bin", Arc::new(Mutex::new(Vec::new()))),
    ]);
    let dir = repo().join("example-blinky/target/tcpflash/1MB");
    let output =
        run(tcpflash(&["push", "--plain", "--host", "127.0.0.1", "--port", &device.port.to_string()])
            .arg(dir.join("user1.bin"))
            .arg(dir.join("user2.bin")));
    let stderr = assert_exit(&output, 0);
    assert!(!stderr.contains("Compiling") && !stderr.contains("Linking"), "nothing built: {stderr}");
    let image = built_image("user1.bin");
    assert!(plain.lock().unwrap().ends_with(&image));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("pushed user1.bin (") && stdout.contains("example-blinky 0.1.0, build "),
        "{stdout}"
    );
}

#[test]
fn prebuilt_images_are_checked_before_connecting() {
    let built = run(tcpflash(&["build", "--manifest-path"]).arg(blinky()));
    assert!(built.status.success(), "{}", flat_stderr(&built));
    let device = fake_device(vec![]);
    let port = device.port.to_string();
    let dir = repo().join("example-blinky/target/tcpflash/1MB");
    let push_files =
        |a: &Path, b: &Path| run(tcpflash(&["push", "--host", "127.0.0.1", "--port", &port]).arg(a).arg(b));

    let swapped = push_files(&dir.join("user2.bin"), &dir.join("user1.bin"));
    let stderr = assert_exit(&swapped, 3);
    assert!(stderr.contains("the files are swapped"), "{stderr}");
    assert!(stderr.contains("give user1.bin first"), "{stderr}");

    let missing = push_files(&dir.join("user1.bin"), &dir.join("nope.bin"));
    let stderr = assert_exit(&missing, 3);
    assert!(stderr.contains("cannot read the user2 image"), "{stderr}");

    let other = tempfile::tempdir().unwrap();
    let text = other.path().join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    let not_image = push_files(&text, &dir.join("user2.bin"));
    let stderr = assert_exit(&not_image, 3);
    assert!(stderr.contains("(the user1 image) is not an ESP8266 application image"), "{stderr}");

    // Linked for the 1MB layout, pushed as 4MB: refused, the layout named.
    let wrong_layout = run(tcpflash(&["push", "--layout", "4MB", "--host", "127.0.0.1", "--port", &port])
        .arg(dir.join("user1.bin"))
        .arg(dir.join("user2.bin")));
    let stderr = assert_exit(&wrong_layout, 3);
    assert!(stderr.contains("of the 4MB layout"), "{stderr}");
    assert_eq!(device.connections.load(Ordering::SeqCst), 0, "nothing connected");
}
