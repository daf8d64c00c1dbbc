//! The seed's client, `tools/tcp_flash.py` (ported to Python 3, logic unchanged), against
//! the virtual ESP8266: old clients keep working with our agent.

mod virtual_device;

use std::process::{Command, Output};

use ota_agent::descriptor;
use ota_agent::layout::SlotId;
use virtual_device::*;

fn seed_client(port: u16, user1: &std::path::Path, user2: &std::path::Path) -> Output {
    let script = root().join("tools/tcp_flash.py");
    Command::new("python3")
        .arg(&script)
        .arg("127.0.0.1")
        .args([user1, user2])
        .env("TCP_FLASH_PORT", port.to_string())
        .output()
        .unwrap_or_else(|error| panic!("python3 is needed by this test ({error}): apt-get install python3"))
}

#[test]
fn the_seed_client_pushes_to_the_virtual_device() {
    let images = images();
    let flash = scratch("seed-push").join("flash.bin");
    let sim = Sim::start(&flash, &images.user1);
    sim.wait_line("booted user1");

    let output = seed_client(sim.port, &images.user1, &images.user2);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let image = images.bytes(SlotId::User2);
    assert!(stdout.contains(&format!("Flashing \"{}\"...", images.user2.display())), "{stdout}");
    assert!(stdout.contains(&format!("Sending {} bytes of firmware", image.len())), "{stdout}");
    assert!(stdout.contains("Received response: Flashing"), "{stdout}");

    sim.wait_line("booted user2 (example-blinky 0.1.0");
    assert_slot_holds(&sim.flash_bytes(), SlotId::User2, &image);
    let status = status(&flash);
    assert_eq!(status["booted_slot"], "user2", "{status}");
    assert_eq!(status["slots"]["user2"]["valid"], true, "{status}");

    // And the other way round: now it asks for user1.
    let output = seed_client(sim.port, &images.user1, &images.user2);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(&format!("Flashing \"{}\"...", images.user1.display())), "{stdout}");
    sim.wait_nth("booted user1", 2);
}

#[test]
fn the_seed_client_with_a_corrupted_image_hears_invalid_and_the_old_slot_stays() {
    let images = images();
    let dir = scratch("seed-corrupted");
    let flash = dir.join("flash.bin");
    // No pre-erase: the damaged image stays in user2 for the status to show why it failed.
    let sim = Sim::start_with(&flash, &["--image", images.user1.to_str().unwrap(), "--no-pre-erase"]);
    sim.wait_line("booted user1");
    let before = sim.flash_bytes();

    let mut damaged = images.bytes(SlotId::User2);
    damaged[16 + descriptor::SIZE + 7] ^= 0x80;
    let damaged_path = dir.join("user2.bin");
    std::fs::write(&damaged_path, &damaged).unwrap();
    let output = seed_client(sim.port, &images.user1, &damaged_path);
    let stdout = String::from_utf8_lossy(&output.stdout);
    // The seed client exits 0 whatever the device says; it prints the answer.
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("Received response: Invalid"), "{stdout}");

    let after = sim.flash_bytes();
    let config = ota_agent::layout::BOOT_CONFIG_OFFSET as usize;
    assert_eq!(after[config..config + 4096], before[config..config + 4096], "the boot config is untouched");
    let status = status(&flash);
    assert_eq!(status["booted_slot"], "user1", "{status}");
    assert_eq!(status["slots"]["user2"]["valid"], false, "{status}");
    assert!(status["slots"]["user2"]["error"].as_str().unwrap().contains("CRC mismatch"), "{status}");
    assert_eq!(sim.count("rebooting"), 0);
}
