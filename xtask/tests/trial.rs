//! Trial boots over real TCP against the virtual ESP8266 (`xtask sim`, which boots through
//! tcpflash-boot's own loader): a firmware that crashes before it confirms is reported as
//! reverted, the device listens on the old slot, and the next good push confirms.

mod virtual_device;

use cargo_tcpflash::build::BuildOptions;
use ota_agent::descriptor::{self, Descriptor};
use ota_agent::layout::{IMAGE_IROM_OFFSET, SlotId};
use virtual_device::*;

/// The build id in an image's slot descriptor, as `cargo tcpflash` prints it.
fn build_id(image: &[u8]) -> String {
    let at = IMAGE_IROM_OFFSET as usize;
    let bytes: &[u8; descriptor::SIZE] = image[at..at + descriptor::SIZE].try_into().unwrap();
    let id = Descriptor::parse(bytes).unwrap().build_id_hex();
    String::from_utf8(id.to_vec()).unwrap()
}

#[test]
fn a_firmware_that_crashes_before_it_confirms_is_reverted_and_the_next_good_push_confirms() {
    let images = images();
    let factory_id = build_id(&std::fs::read(&images.factory_user1).unwrap());
    let good_id = build_id(&images.bytes(SlotId::User2));
    // The firmware that fails on purpose (`panic-at-boot`), built first to learn its id.
    let crashing_id = {
        let _build = build_lock();
        let args = BuildOptions {
            manifest_path: Some(manifest()),
            features: vec!["panic-at-boot".into()],
            ..BuildOptions::default()
        };
        let built = cargo_tcpflash::build::build(&args).expect("the panic-at-boot build builds");
        build_id(&std::fs::read(&built.slot(SlotId::User2).bin).unwrap())
    };
    assert_ne!(crashing_id, good_id);

    let flash = scratch("trial").join("flash.bin");
    let factory = images.factory_user1.to_str().unwrap();
    let sim = Sim::start_with(&flash, &["--image", factory, "--crashing", &crashing_id]);
    sim.wait_line("booted user1");

    let pushed = push(sim.port, &["--features", "panic-at-boot"]);
    assert_eq!(pushed.output.status.code(), Some(6), "{}", pushed.stderr());
    let stderr = pushed.stderr();
    assert!(
        stderr.contains(&format!(
            "the new firmware (build {crashing_id}) did not confirm and the device went back: it runs user1 (build {factory_id}) again (the image went to user2)"
        )),
        "{stderr}"
    );
    // tcpflash-boot gave the trial its three boots, then went back.
    assert_eq!(sim.count("crashed before it confirmed; resetting"), 3, "{:#?}", sim.lines());
    assert!(
        sim.count("tcpflash-boot: rom 0 @ 0x00002000: trial not confirmed, reverted") >= 1,
        "{:#?}",
        sim.lines()
    );
    let state = status(&flash);
    assert_eq!(state["booted_slot"], "user1", "{state}");
    assert_eq!(state["boot_status"]["state"], "reverted", "{state}");

    // The next good push lands in user2 again, starts a trial, and the check-in confirms it.
    let pushed = push(sim.port, &[]);
    pushed.assert_ok();
    assert!(pushed.stdout().contains("the device now runs user2, confirmed"), "{}", pushed.stdout());
    assert_slot_holds(&sim.flash_bytes(), SlotId::User2, pushed.image(SlotId::User2));
    let state = status(&flash);
    assert_eq!(state["booted_slot"], "user2", "{state}");
    assert_eq!(state["boot_status"]["state"], "confirmed", "{state}");
    // Confirmed for good: the config names user2 too, so rBoot would agree.
    assert_eq!(state["config"]["current_slot"], "user2", "{state}");
}
