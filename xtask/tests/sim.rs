//! The virtual ESP8266 and `cargo tcpflash`, both as real binaries over real TCP on
//! 127.0.0.1: pushes, restarts, a device killed mid-transfer, refused images.

mod virtual_device;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::mpsc;
use std::time::Instant;

use ota_agent::boot::BootConfig;
use ota_agent::descriptor::{self, Descriptor};
use ota_agent::layout::{BOOT_CONFIG_OFFSET, SECTOR_SIZE, SlotId};
use virtual_device::*;

fn config_bytes(flash: &[u8]) -> &[u8] {
    &flash[BOOT_CONFIG_OFFSET as usize..BOOT_CONFIG_OFFSET as usize + 28]
}

fn build_id_of(image: &[u8]) -> String {
    let bytes: &[u8; descriptor::SIZE] = image[16..16 + descriptor::SIZE].try_into().unwrap();
    String::from_utf8(Descriptor::parse(bytes).unwrap().build_id_hex().to_vec()).unwrap()
}

fn assert_slot_status(status: &serde_json::Value, slot: SlotId, image: &[u8]) {
    let json = &status["slots"][slot.name()];
    assert_eq!(json["valid"], true, "{json}");
    assert_eq!(json["len"], image.len(), "{json}");
    assert_eq!(json["name"], "example-blinky", "{json}");
    assert_eq!(json["version"], "0.1.0", "{json}");
    assert_eq!(json["build_id"], build_id_of(image).as_str(), "{json}");
}

#[test]
fn two_pushes_alternate_the_slots_and_status_and_flash_file_agree_with_the_images() {
    let images = images();
    let flash = scratch("alternate").join("flash.bin");
    let factory = std::fs::read(&images.factory_user1).unwrap();
    // Without the background pre-erase, the slot a push leaves keeps its image: the flash
    // file and `sim status` show both. (The pre-erase: ota-agent/sim/tests/pre_erase.rs.)
    let factory_path = images.factory_user1.to_str().unwrap();
    let mut sim = Sim::start_with(&flash, &["--image", factory_path, "--no-pre-erase"]);
    sim.wait_line("booted user1 (example-blinky 0.1.0, build ");

    // The factory install: what serial-flash writes, with the stand-in bootloader.
    let bytes = sim.flash_bytes();
    assert_eq!(bytes.len(), LAYOUT.flash_size as usize);
    let stand_in = xtask::sim::stand_in_bootloader(LAYOUT);
    assert_eq!(&bytes[..stand_in.len()], &stand_in[..]);
    assert_eq!(config_bytes(&bytes), BootConfig::for_layout(LAYOUT, SlotId::User1).to_bytes());
    assert_slot_holds(&bytes, SlotId::User1, &factory);
    let before = status(&flash);
    assert_eq!(
        (&before["booted_slot"], &before["next_slot"]),
        (&"user1".into(), &"user2".into()),
        "{before}"
    );
    assert_slot_status(&before, SlotId::User1, &factory);
    assert_eq!(before["slots"]["user2"]["valid"], false, "{before}");

    let first = push(sim.port, &[]);
    first.assert_ok();
    assert!(first.stdout().contains("the device now runs user2"), "{}", first.stdout());
    let user2 = first.image(SlotId::User2).to_vec();
    assert_eq!(
        sim.wait_line("booted user2"),
        format!("booted user2 (example-blinky 0.1.0, build {})", build_id_of(&user2))
    );
    let bytes = sim.flash_bytes();
    assert_slot_holds(&bytes, SlotId::User2, &user2);
    assert_slot_holds(&bytes, SlotId::User1, &factory);
    assert_eq!(config_bytes(&bytes), BootConfig::for_layout(LAYOUT, SlotId::User2).to_bytes());
    let after_first = status(&flash);
    assert_eq!(after_first["booted_slot"], "user2", "{after_first}");
    assert_eq!(after_first["next_slot"], "user1", "{after_first}");
    assert_slot_status(&after_first, SlotId::User2, &user2);

    let second = push(sim.port, &[]);
    second.assert_ok();
    assert!(second.stdout().contains("the device now runs user1"), "{}", second.stdout());
    let user1 = second.image(SlotId::User1).to_vec();
    assert_ne!(
        user1, factory,
        "the pushed user1 differs from the factory one (flash mode), so the write shows"
    );
    sim.wait_nth("booted user1", 2);
    let bytes = sim.flash_bytes();
    assert_slot_holds(&bytes, SlotId::User1, &user1);
    assert_slot_holds(&bytes, SlotId::User2, &user2);
    assert_eq!(config_bytes(&bytes), BootConfig::for_layout(LAYOUT, SlotId::User1).to_bytes());
    let after_second = status(&flash);
    assert_eq!(after_second["booted_slot"], "user1", "{after_second}");
    assert_eq!(after_second["next_slot"], "user2", "{after_second}");
    assert_slot_status(&after_second, SlotId::User1, &user1);
    assert_slot_status(&after_second, SlotId::User2, &user2);

    // SIGTERM stops it cleanly; the state is in the file and survives a restart.
    assert!(sim.terminate().success());
    assert_eq!(sim.lines().last().map(String::as_str), Some("stopped"));
    assert_eq!(sim.flash_bytes(), bytes);
    let again = Sim::start(&flash, &images.factory_user1);
    again.wait_line("booted user1");
    assert_eq!(again.count("factory install"), 0, "an existing flash file is reused: {:?}", again.lines());
}

/// Forwards a client to the device, but only the first `limit` bytes the client sends;
/// when the device's side closes, the client's connection is dropped too.
struct Proxy {
    port: u16,
    limit_reached: mpsc::Receiver<()>,
}

fn proxy(device_port: u16, limit: usize) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (reached, limit_reached) = mpsc::channel();
    std::thread::spawn(move || {
        let (client, _) = listener.accept().unwrap();
        let device = TcpStream::connect(("127.0.0.1", device_port)).unwrap();
        let (mut from_client, mut to_device) = (client.try_clone().unwrap(), device.try_clone().unwrap());
        std::thread::spawn(move || {
            let mut forwarded = 0;
            let mut buf = [0u8; 4096];
            while forwarded < limit {
                let want = buf.len().min(limit - forwarded);
                let Ok(n @ 1..) = from_client.read(&mut buf[..want]) else { return };
                if to_device.write_all(&buf[..n]).is_err() {
                    return;
                }
                forwarded += n;
            }
            let _ = reached.send(());
        });
        let (mut from_device, mut to_client) = (device, client);
        let _ = std::io::copy(&mut from_device, &mut to_client);
        // The device is gone: so is the client's connection (with unread bytes: a reset).
        let _ = to_client.shutdown(Shutdown::Both);
    });
    Proxy { port, limit_reached }
}

#[test]
fn a_device_killed_mid_transfer_is_an_interrupted_push_and_boots_its_old_slot_after_restart() {
    let images = images();
    let flash = scratch("killed").join("flash.bin");
    let mut sim = Sim::start(&flash, &images.user1);
    sim.wait_line("booted user1");
    let config_before = config_bytes(&sim.flash_bytes()).to_vec();

    // Let the request lines and half the image through, then kill the device.
    let image = images.bytes(SlotId::User2);
    let header = format!("OTA\r\nGetNextFlash\r\nFirmwareLength: {}\r\n", image.len()).len();
    let half = image.len() / 2;
    let proxy = proxy(sim.port, header + half);
    let port = proxy.port;
    let pushing = std::thread::spawn(move || push(port, &["--timeout", "30"]));
    proxy.limit_reached.recv_timeout(PATIENCE).expect("the client sends the image");
    // Wait until the device has written the last whole sector it got.
    let slot = LAYOUT.slot(SlotId::User2).offset as usize;
    let last_full = half / SECTOR_SIZE as usize * SECTOR_SIZE as usize;
    let deadline = Instant::now() + PATIENCE;
    while sim.flash_bytes()[slot..slot + last_full] != image[..last_full] {
        assert!(Instant::now() < deadline, "the device never wrote the first half: {:?}", sim.lines());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    sim.kill();

    let pushed = pushing.join().unwrap();
    assert_eq!(pushed.output.status.code(), Some(4), "a network failure: {}", pushed.stderr());
    let stderr = pushed.stderr();
    assert!(stderr.contains(&format!("the transfer to 127.0.0.1:{port} was interrupted")), "{stderr}");
    // The client wrote every byte (the proxy took them all), so it cannot know the device
    // did not get them: it says what may have happened, and the status below what did.
    assert!(stderr.contains("the device may have had the whole image and installed it"), "{stderr}");

    // The slot is half written, the config untouched.
    let bytes = sim.flash_bytes();
    assert_eq!(config_bytes(&bytes), &config_before[..]);
    assert_eq!(&bytes[slot..slot + last_full], &image[..last_full]);
    let torn = status(&flash);
    assert_eq!(torn["booted_slot"], "user1", "{torn}");
    assert_eq!(torn["slots"]["user2"]["valid"], false, "{torn}");

    // Restarted, the device boots the old slot, and a new push goes through.
    let sim = Sim::start(&flash, &images.user1);
    sim.wait_line("booted user1");
    let retry = push(sim.port, &[]);
    retry.assert_ok();
    assert!(retry.stdout().contains("the device now runs user2"), "{}", retry.stdout());
    assert_slot_holds(&sim.flash_bytes(), SlotId::User2, retry.image(SlotId::User2));
    assert_eq!(status(&flash)["booted_slot"], "user2");
}

#[test]
fn sigterm_mid_transfer_stops_cleanly_and_changes_nothing_but_whole_sectors() {
    let images = images();
    let flash = scratch("sigterm").join("flash.bin");
    let mut sim = Sim::start(&flash, &images.user1);
    sim.wait_line("booted user1");
    let before = sim.flash_bytes();

    // A raw client that sends a third of the image and stays.
    let image = images.bytes(SlotId::User2);
    let mut client = TcpStream::connect(("127.0.0.1", sim.port)).unwrap();
    let mut replies = BufReader::new(client.try_clone().unwrap());
    client.write_all(b"OTA\r\nGetNextFlash\r\n").unwrap();
    assert_eq!(read_line(&mut replies), "user2.bin\r\n");
    client.write_all(format!("FirmwareLength: {}\r\n", image.len()).as_bytes()).unwrap();
    assert_eq!(read_line(&mut replies), "Ready\r\n");
    let third = image.len() / 3;
    client.write_all(&image[..third]).unwrap();
    let slot = LAYOUT.slot(SlotId::User2).offset as usize;
    let written = third / SECTOR_SIZE as usize * SECTOR_SIZE as usize;
    let deadline = Instant::now() + PATIENCE;
    while sim.flash_bytes()[slot..slot + written] != image[..written] {
        assert!(Instant::now() < deadline, "the device never wrote: {:?}", sim.lines());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    assert!(sim.terminate().success(), "SIGTERM ends it with success");
    assert_eq!(sim.lines().last().map(String::as_str), Some("stopped"));
    let after = sim.flash_bytes();
    assert_eq!(&after[slot..slot + written], &image[..written]);
    let changed: Vec<usize> = (0..after.len()).filter(|&i| after[i] != before[i]).collect();
    assert!(
        changed.iter().all(|&i| (slot..slot + written).contains(&i)),
        "only the sectors the device completed changed"
    );
    assert_eq!(status(&flash)["booted_slot"], "user1");
}

fn read_line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line
}

/// A raw TCP-OTA conversation: returns every line the device sent after the image.
fn raw_push(port: u16, image: &[u8]) -> (String, Vec<String>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut replies = BufReader::new(stream.try_clone().unwrap());
    stream.write_all(b"OTA\r\nGetNextFlash\r\n").unwrap();
    let slot = read_line(&mut replies);
    stream.write_all(format!("FirmwareLength: {}\r\n", image.len()).as_bytes()).unwrap();
    assert_eq!(read_line(&mut replies), "Ready\r\n", "the device named {slot:?} first");
    stream.write_all(image).unwrap();
    let mut rest = String::new();
    replies.read_to_string(&mut rest).unwrap();
    (slot, rest.split_inclusive("\r\n").map(str::to_owned).collect())
}

#[test]
fn a_corrupted_image_is_invalid_and_the_old_slot_is_kept() {
    let images = images();
    let flash = scratch("corrupted").join("flash.bin");
    let sim = Sim::start(&flash, &images.user1);
    sim.wait_line("booted user1");
    let config_before = config_bytes(&sim.flash_bytes()).to_vec();

    // One bit of code flipped: rBoot's checksum does not cover IROM, the agent's CRC does.
    let mut damaged = images.bytes(SlotId::User2);
    damaged[16 + descriptor::SIZE + 100] ^= 0x04;
    let (slot, replies) = raw_push(sim.port, &damaged);
    assert_eq!(slot, "user2.bin\r\n");
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(replies[0], "Invalid\r\n");
    assert!(replies[1].starts_with("ERR: CRC mismatch (stored 0x"), "{replies:?}");

    // An image linked for the other slot: refused before the switch too.
    let (_, replies) = raw_push(sim.port, &images.bytes(SlotId::User1));
    assert_eq!(replies[0], "Invalid\r\n");
    assert_eq!(replies[1], "ERR: image linked for 0x40202010, this slot needs 0x40282010\r\n");

    let bytes = sim.flash_bytes();
    assert_eq!(config_bytes(&bytes), &config_before[..], "the boot config is untouched");
    let status = status(&flash);
    assert_eq!(status["booted_slot"], "user1", "{status}");
    assert_eq!(status["slots"]["user2"]["valid"], false, "{status}");
    assert_eq!(sim.count("rebooting"), 0, "{:?}", sim.lines());

    // The device still takes a good image afterwards.
    let (_, replies) = raw_push(sim.port, &images.bytes(SlotId::User2));
    assert_eq!(replies, ["Flashing\r\n", "Flash upgrade success. Rebooting in 2s.\r\n"]);
    sim.wait_line("booted user2");
}

#[test]
fn a_second_client_hears_the_device_is_busy_and_the_first_is_unharmed() {
    let images = images();
    let flash = scratch("busy").join("flash.bin");
    let sim = Sim::start(&flash, &images.user1);
    sim.wait_line("booted user1");
    let mut first = TcpStream::connect(("127.0.0.1", sim.port)).unwrap();
    let mut first_replies = BufReader::new(first.try_clone().unwrap());
    first.write_all(b"OTA\r\nGetNextFlash\r\n").unwrap();
    assert_eq!(read_line(&mut first_replies), "user2.bin\r\n");

    let mut second = TcpStream::connect(("127.0.0.1", sim.port)).unwrap();
    second.set_read_timeout(Some(PATIENCE)).unwrap();
    second.write_all(b"OTA\r\nGetNextFlash\r\n").unwrap();
    let mut answer = String::new();
    second.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "ERR: Connection Already Exists\r\n");

    let image = images.bytes(SlotId::User2);
    first.write_all(format!("FirmwareLength: {}\r\n", image.len()).as_bytes()).unwrap();
    assert_eq!(read_line(&mut first_replies), "Ready\r\n");
    first.write_all(&image).unwrap();
    assert_eq!(read_line(&mut first_replies), "Flashing\r\n");
    sim.wait_line("booted user2");
}

#[test]
fn status_says_what_to_do_about_a_missing_or_foreign_file() {
    let dir = scratch("status-errors");
    let missing = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["sim", "status", "--flash"])
        .arg(dir.join("nope.bin"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let stderr = flat(&missing.stderr);
    assert!(
        stderr.contains("no flash file at") && stderr.contains("creates one with a factory install"),
        "{stderr}"
    );

    let odd = dir.join("odd.bin");
    std::fs::write(&odd, vec![0xFF; 12288]).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["sim", "status", "--flash"])
        .arg(&odd)
        .output()
        .unwrap();
    assert!(flat(&output.stderr).contains("is 12288 bytes, which is no flash layout's size"));
}

#[test]
fn a_port_in_use_is_refused_with_the_fix() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let flash = scratch("port-taken").join("flash.bin");
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["sim", "--port", &port.to_string(), "--image"])
        .arg(&images().user1)
        .arg("--flash")
        .arg(&flash)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = flat(&output.stderr);
    assert!(stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("--port"), "{stderr}");
}

#[test]
fn a_flash_without_a_bootable_rom_is_reported_as_bricked() {
    let flash = scratch("bricked").join("flash.bin");
    std::fs::write(&flash, vec![0xFF; LAYOUT.flash_size as usize]).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["sim", "--port", "0", "--flash"])
        .arg(&flash)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = flat(&output.stderr);
    assert!(
        stderr.contains("the device is bricked: no bootloader at 0x0 (first byte 0xff, not 0xe9)"),
        "{stderr}"
    );
    assert!(stderr.contains("cargo tcpflash serial-flash"), "{stderr}");
    assert_eq!(status(&flash)["bricked"], "no bootloader at 0x0 (first byte 0xff, not 0xe9)");
    assert!(std::fs::read(&flash).unwrap().iter().all(|&b| b == 0xFF), "nothing was written");
}

#[test]
fn prebuilt_images_are_pushed_to_both_slots_in_turn() {
    let images = images();
    let flash = scratch("prebuilt").join("flash.bin");
    let sim = Sim::start(&flash, &images.factory_user1);
    sim.wait_line("booted user1");
    let push_files = || {
        Command::new(tcpflash())
            .args(["tcpflash", "push", "--host", "127.0.0.1", "--port", &sim.port.to_string()])
            .arg(&images.user1)
            .arg(&images.user2)
            .output()
            .unwrap()
    };
    // The factory user1 booted once already.
    for (slot, boots) in [(SlotId::User2, 1), (SlotId::User1, 2)] {
        let output = push_files();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{}", flat(&output.stderr));
        assert!(stdout.contains(&format!("the device now runs {slot}")), "{stdout}");
        sim.wait_nth(&format!("booted {slot} (example-blinky 0.1.0"), boots);
        assert_slot_holds(&sim.flash_bytes(), slot, &images.bytes(slot));
    }
}

#[test]
fn bytes_beyond_the_length_are_refused_in_the_same_write_or_a_later_one() {
    let images = images();
    let image = images.bytes(SlotId::User2);
    for later in [false, true] {
        let flash = scratch(&format!("overlong-{later}")).join("flash.bin");
        let sim = Sim::start(&flash, &images.factory_user1);
        sim.wait_line("booted user1");
        let config = config_bytes(&sim.flash_bytes()).to_vec();
        let mut stream = TcpStream::connect(("127.0.0.1", sim.port)).unwrap();
        let mut message = format!("OTA\r\nGetNextFlash\r\nFirmwareLength: {}\r\n", image.len()).into_bytes();
        message.extend_from_slice(&image);
        if later {
            stream.write_all(&message).unwrap();
            // After the image, within the device's grace for stray bytes.
            std::thread::sleep(std::time::Duration::from_millis(100));
            stream.write_all(b"0123456789").unwrap();
        } else {
            message.extend_from_slice(b"0123456789");
            stream.write_all(&message).unwrap();
        }
        let mut replies = String::new();
        let _ = stream.read_to_string(&mut replies);
        assert!(replies.starts_with("user2.bin\r\nReady\r\n"), "{replies:?}");
        assert!(replies.ends_with("ERR: More bytes than FirmwareLength\r\n"), "later {later}: {replies:?}");
        assert!(!replies.contains("Flash upgrade success"), "{replies:?}");
        assert_eq!(config_bytes(&sim.flash_bytes()), &config[..], "nothing switched (later {later})");
        assert_eq!(sim.count("rebooting"), 0);
    }
}
