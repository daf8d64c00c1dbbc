//! The agent's espconn driver (`ota_agent::espconn::ota_init`) on the fake SDK, over real
//! TCP on 127.0.0.1: pushes by `cargo tcpflash`'s push code and by the seed's client, and
//! the awkward clients (split header lines, extra bytes, a second client, a stalled one).
//! Each test checks the replies, the flash file, the upgrade flag and that the agent broke
//! none of the SDK's rules.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cargo_tcpflash::push::{self, Target, Timeouts};
use ota_agent::image::samples::{irom_for, write};
use ota_agent::image::{FlashParams, Segment};
use ota_agent::layout::sdk::SdkMap;
use ota_agent::layout::{FlashLayout, SlotId};
use ota_agent::net::AgentConfig;
use ota_agent::protocol::DEFAULT_PORT;
use smoltcp::time::Duration as SmolDuration;
use tcpflash_sdk_fake::{Config, Device, Status};
use tcpflash_sim::FileFlash;

const SUCCESS: &str = "user2.bin\r\nReady\r\nFlashing\r\nFlash upgrade success. Rebooting in 2s.\r\n";

fn map() -> &'static SdkMap {
    SdkMap::by_name("sdk-1MB").unwrap()
}

fn layout() -> &'static FlashLayout {
    &map().layout
}

/// A valid image for `slot` of the sdk-1MB map, about `kib` KB.
fn image(slot: SlotId, kib: usize, seed: u8) -> Vec<u8> {
    let mut irom = irom_for(layout().slot(slot).irom_link_addr(), kib * 1024);
    for (i, byte) in irom.iter_mut().enumerate().skip(64) {
        *byte = (i as u8).wrapping_mul(31).wrapping_add(seed);
    }
    let iram: Vec<u8> = (0..200).map(|i| (i as u8) ^ seed).collect();
    write(FlashParams::default(), 0x4010_0000, &irom, &[Segment { addr: 0x4010_0000, data: &iram }])
}

/// A flash file as a first install leaves it, user1 running.
fn flash_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("board.flash");
    let user1 = image(SlotId::User1, 20, 1);
    FileFlash::create(&path, layout().flash_size, &[("user1", 0x1000, &user1)]).unwrap();
    path
}

/// Boots the fake board and starts the agent as `user_init` would.
fn boot(dir: &Path, config: impl FnOnce(&mut Config), agent: AgentConfig) -> (Device, u16) {
    let mut fake = Config::new(&flash_file(dir), u32::from(map().size_map), 0);
    config(&mut fake);
    let device = Device::boot(fake);
    ota_agent::espconn::ota_init(agent).expect("the agent starts");
    let port = device.port(DEFAULT_PORT).expect("the agent listens on 65056");
    (device, port)
}

fn agent() -> AgentConfig {
    AgentConfig::new(layout())
}

/// Runs the fake SDK until `client` (on its own thread) is done, then a little longer.
fn serve<T: Send + 'static>(device: &Device, client: impl FnOnce() -> T + Send + 'static) -> (T, Status) {
    let handle = std::thread::spawn(client);
    let status = device.run_until(Duration::from_secs(60), |_| handle.is_finished());
    // A device that rebooted serves nothing more, and may do so as soon as the client closed:
    // the client can still be on its way out (a process exiting).
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while status.rebooted && !handle.is_finished() && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(handle.is_finished(), "the client did not finish: {status:?}");
    (handle.join().unwrap(), status)
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream
}

/// Everything the device sends until it closes.
fn read_all(stream: &mut TcpStream) -> String {
    let mut text = Vec::new();
    let _ = stream.read_to_end(&mut text);
    String::from_utf8_lossy(&text).into_owned()
}

fn assert_clean(status: &Status) {
    assert!(status.violations.is_empty(), "the agent broke SDK rules: {:?}", status.violations);
    assert_eq!(status.refused_sends, 0, "a second espconn_send before the sent callback");
}

/// The board, run until the agent reboots it (2 s after the success line).
fn await_reboot(device: &Device) -> Status {
    let status = device.run_until(Duration::from_secs(10), |_| false);
    assert!(status.rebooted, "no reboot: {status:?}");
    status
}

fn assert_user2_holds(device: &Device, image: &[u8]) {
    let flash = device.flash();
    let at = layout().slot(SlotId::User2).offset as usize;
    assert!(flash[at..at + image.len()] == *image, "user2 holds the pushed image");
}

#[test]
fn cargo_tcpflash_pushes_over_espconn_and_the_upgrade_flag_switches_at_reboot() {
    let dir = tempfile::tempdir().unwrap();
    // The SDK's microsecond clock wraps one second into the test.
    let (device, port) = boot(dir.path(), |fake| fake.time_offset_us = u32::MAX - 1_000_000, agent());
    let images = [image(SlotId::User1, 150, 3), image(SlotId::User2, 150, 4)];
    let sent = images.clone();
    let (pushed, status) = serve(&device, move || {
        let target = Target {
            host: "127.0.0.1".into(),
            port,
            addrs: vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))],
        };
        let timeouts = Timeouts {
            connect: Duration::from_secs(5),
            reply: Duration::from_secs(20),
            reboot: Duration::from_secs(5),
        };
        push::push(&target, [&sent[0], &sent[1]], None, &timeouts, &Default::default(), &mut |_| {})
    });
    let pushed = pushed.expect("the push succeeds");
    assert_eq!((pushed.slot, pushed.len as usize), (SlotId::User2, images[1].len()));
    assert_eq!(status.upgrade_flag, None, "nothing switches before the reboot time");
    assert!(status.releases > 0, "the receive hold was released as the ring drained");
    let status = await_reboot(&device);
    assert_eq!(status.upgrade_flag, Some(2), "UPGRADE_FLAG_FINISH, then system_upgrade_reboot");
    assert_user2_holds(&device, &images[1]);
    assert_clean(&status);
}

#[test]
fn the_seeds_client_pushes_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (device, port) = boot(dir.path(), |_| {}, agent());
    let images = [image(SlotId::User1, 60, 5), image(SlotId::User2, 60, 6)];
    for (slot, bytes) in SlotId::ALL.iter().zip(&images) {
        std::fs::write(dir.path().join(slot.file_name()), bytes).unwrap();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/tcp_flash.py");
    let work = dir.path().to_path_buf();
    let (output, status) = serve(&device, move || {
        Command::new("python3")
            .arg(script)
            .args(["127.0.0.1", "user1.bin", "user2.bin"])
            .current_dir(work)
            .env("TCP_FLASH_PORT", port.to_string())
            .output()
            .expect("python3 runs")
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    // It reads once after the image and closes: `Flashing`, and the success line when it
    // arrived in time for that read (it goes in its own write, after the sent callback).
    assert!(stdout.contains("Sending 61748 bytes of firmware\nReceived response: Flashing\r\n"), "{stdout}");
    assert_clean(&status);
    let status = await_reboot(&device);
    assert_eq!(status.upgrade_flag, Some(2));
    assert_user2_holds(&device, &images[1]);
}

#[test]
fn header_lines_split_anywhere_still_push() {
    let dir = tempfile::tempdir().unwrap();
    let (device, port) = boot(dir.path(), |_| {}, agent());
    let image = image(SlotId::User2, 30, 7);
    let sent = image.clone();
    let (replies, status) = serve(&device, move || {
        let mut stream = connect(port);
        stream.set_nodelay(true).unwrap();
        let header = format!("OTA\r\nGetNextFlash\r\nFirmwareLength: {}\r\n", sent.len());
        let mut replies = Vec::new();
        for (i, byte) in header.bytes().enumerate() {
            stream.write_all(&[byte]).unwrap();
            std::thread::sleep(Duration::from_millis(2));
            if header[..=i].ends_with("GetNextFlash\r\n") || i + 1 == header.len() {
                let mut line = [0u8; 128];
                let n = stream.read(&mut line).unwrap();
                replies.extend_from_slice(&line[..n]);
            }
        }
        stream.write_all(&sent).unwrap();
        replies.extend(read_all(&mut stream).into_bytes());
        String::from_utf8(replies).unwrap()
    });
    assert_eq!(replies, SUCCESS);
    assert_clean(&status);
    assert_eq!(await_reboot(&device).upgrade_flag, Some(2));
    assert_user2_holds(&device, &image);
}

#[test]
fn extra_bytes_after_the_image_refuse_it_and_nothing_switches() {
    let dir = tempfile::tempdir().unwrap();
    let (device, port) = boot(dir.path(), |_| {}, agent());
    let image = image(SlotId::User2, 30, 8);
    let (replies, _) = serve(&device, move || {
        let mut stream = connect(port);
        let mut message = format!("OTA\r\nGetNextFlash\r\nFirmwareLength: {}\r\n", image.len()).into_bytes();
        message.extend_from_slice(&image);
        message.extend_from_slice(b"trailing garbage");
        stream.write_all(&message).unwrap();
        read_all(&mut stream)
    });
    assert_eq!(replies, "user2.bin\r\nReady\r\nInvalid\r\nERR: More bytes than FirmwareLength\r\n");
    let status = device.run_until(Duration::from_secs(3), |_| false);
    assert!(!status.rebooted && status.upgrade_flag.is_none(), "{status:?}");
    assert_clean(&status);
}

#[test]
fn a_second_client_comes_and_goes_without_disturbing_the_push() {
    let dir = tempfile::tempdir().unwrap();
    let (device, port) = boot(dir.path(), |_| {}, agent());
    let image = image(SlotId::User2, 120, 9);
    let sent = image.clone();
    let ((replies, refused), status) = serve(&device, move || {
        let mut first = connect(port);
        let mut message = format!("OTA\r\nGetNextFlash\r\nFirmwareLength: {}\r\n", sent.len()).into_bytes();
        message.extend_from_slice(&sent);
        let (head, tail) = message.split_at(message.len() / 2);
        first.write_all(head).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let mut second = connect(port);
        second.write_all(b"OTA\r\nGetNextFlash\r\n").unwrap();
        let refused = read_all(&mut second);
        drop(second);
        first.write_all(tail).unwrap();
        (read_all(&mut first), refused)
    });
    assert_eq!(refused, "ERR: Connection Already Exists\r\n", "one line, then closed");
    assert_eq!(replies, SUCCESS);
    assert_clean(&status);
    assert_eq!(await_reboot(&device).upgrade_flag, Some(2));
    assert_user2_holds(&device, &image);
}

#[test]
fn a_stalled_client_is_told_and_dropped_and_the_next_one_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentConfig { idle_timeout: SmolDuration::from_secs(1), ..agent() };
    let (device, port) = boot(dir.path(), |_| {}, agent);
    let image = image(SlotId::User2, 20, 10);
    let ((stalled, replies), status) = serve(&device, move || {
        let mut first = connect(port);
        first.write_all(b"OTA\r\nGetNextFlash\r\nFirmwareLength: 99").unwrap();
        let mut line = [0u8; 128];
        let n = first.read(&mut line).unwrap();
        let stalled = format!("{}{}", String::from_utf8_lossy(&line[..n]), read_all(&mut first));
        let _ = first.shutdown(Shutdown::Both);
        let mut second = connect(port);
        let mut message = format!("OTA\r\nGetNextFlash\r\nFirmwareLength: {}\r\n", image.len()).into_bytes();
        message.extend_from_slice(&image);
        second.write_all(&message).unwrap();
        (stalled, read_all(&mut second))
    });
    assert_eq!(stalled, "user2.bin\r\nERR: Idle timeout\r\n");
    assert_eq!(replies, SUCCESS);
    assert_eq!(status.idle_closes, 0, "the session's timeout came first, not the SDK's");
    assert_clean(&status);
    assert_eq!(await_reboot(&device).upgrade_flag, Some(2));
}

/// The fake keeps its own rules and reports a breach (here a test calling the SDK the wrong
/// way stands in for a broken agent; the driver's own breaches are caught by the tests
/// above failing, which was checked by breaking the driver on purpose).
#[test]
fn the_fake_reports_a_call_the_sdk_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let (device, _port) = boot(dir.path(), |_| {}, agent());
    assert!(device.status().violations.is_empty());
    assert_eq!(
        tcpflash_sdk_fake::espconn_regist_time(std::ptr::null_mut(), 5, 0),
        -12,
        "a server the SDK does not know"
    );
    let status = device.status();
    assert_eq!(status.violations.len(), 1, "{status:?}");
    assert!(status.violations[0].contains("before espconn_accept"));
}

/// With `AgentConfig::mdns`, the agent waits for the station's address, then starts the
/// SDK's own responder once, with the records the smoltcp responder announces; the strings
/// it hands over stay valid (the SDK keeps their pointers).
#[test]
fn with_mdns_the_sdk_responder_gets_the_same_records_once_the_station_has_an_address() {
    use ota_agent::descriptor::{self, Descriptor};
    use ota_agent::mdns::{MdnsConfig, Records};
    use tcpflash_sdk_fake::MdnsRegistration;

    let dir = tempfile::tempdir().unwrap();
    let mdns = MdnsConfig::new([0xA1, 0xB2, 0xC3]).with_host("kitchen");
    let config = AgentConfig { mdns: Some(mdns), ..agent() };
    let (device, _) = boot(dir.path(), |fake| fake.station_ip = None, config);
    let status = device.run_until(Duration::from_secs(20), |status| status.ip_polls_without_address >= 2);
    assert!(status.ip_polls_without_address >= 2, "{status:?}");
    assert_eq!(status.mdns, None, "no responder without an address");

    device.set_station_ip(Some([10, 0, 0, 7]));
    let status = device.run_until(Duration::from_secs(20), |status| status.mdns.is_some());
    let user1 = image(SlotId::User1, 20, 1);
    let at = ota_agent::layout::IMAGE_IROM_OFFSET as usize;
    let firmware = Descriptor::parse(user1[at..at + descriptor::SIZE].try_into().unwrap()).unwrap();
    let records = Records::new(&mdns, Some(&firmware), Some(SlotId::User1), false, DEFAULT_PORT);
    let expected = MdnsRegistration {
        host_name: "kitchen".into(),
        server_name: "tcpflash".into(),
        server_port: DEFAULT_PORT,
        ip: [10, 0, 0, 7],
        txt: records.txt().map(|t| String::from_utf8(t.to_vec()).unwrap()).collect(),
    };
    assert_eq!(status.mdns.as_ref(), Some(&expected), "{status:?}");
    assert_eq!(expected.txt, ["fw=blinky", "ver=1.2.3", "build=6275696c64696421", "slot=user1", "key=no"]);
    assert!(status.violations.is_empty(), "{:?}", status.violations);
    // Later, the strings the SDK kept still read the same.
    let later = device.run_until(Duration::from_millis(300), |_| false);
    assert!(later.violations.is_empty(), "{:?}", later.violations);
    assert_eq!(device.mdns_strings_now(), Some(expected));
}
