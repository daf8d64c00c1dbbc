//! The agent's device code (session, sector writer, image validator) compiled for lx106 by
//! cargo-tcpflash's pipeline and run under QEMU, against the host build of the same code.
//!
//! Needs `qemu-system-xtensa` (`apt-get install qemu-system-misc`), binutils-xtensa-lx106 and
//! the firmware's pinned nightly with rust-src (`.ci/run` installs them all); without them the
//! tests fail with the install command.

use std::path::PathBuf;
use std::sync::OnceLock;

use miette::Diagnostic;
use ota_agent::boot::{BootConfig, CONFIG_LEN, CONFIG_STRUCT_LEN};
use ota_agent::layout::{BOOT_CONFIG_OFFSET, SlotId};
use ota_agent::session::Phase;

use scripted_push::{LAYOUT, exit_code};
use xtask::qemu::{
    self, CASE_TIMEOUT, Case, Program, QEMU_INSTALL, RunError, Transcript, run_case, run_on_host,
    run_on_qemu, standard_cases, test_image,
};

fn qemu() -> PathBuf {
    qemu::find_qemu().unwrap_or_else(|error| panic!("{error}: install it with `{QEMU_INSTALL}`"))
}

/// Built once for all tests (parallel builds would share the object files).
fn program() -> &'static Program {
    static PROGRAM: OnceLock<Program> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        qemu::build_program(&qemu::program_manifest()).unwrap_or_else(|error| {
            panic!("building the QEMU program failed: {:?}", miette::Report::new(error))
        })
    })
}

fn case(name: &str) -> Case {
    standard_cases().into_iter().find(|case| case.name == name).expect("a standard case")
}

fn config_at(flash: &[u8]) -> [u8; CONFIG_STRUCT_LEN] {
    let at = BOOT_CONFIG_OFFSET as usize;
    flash[at..at + CONFIG_STRUCT_LEN].try_into().unwrap()
}

#[test]
fn pushes_run_as_lx106_code_end_like_the_host_build() {
    let qemu = qemu();
    let program = program();
    let cases = standard_cases();
    let names: Vec<_> = cases.iter().map(|case| case.name).collect();
    assert_eq!(names, ["good-image", "corrupted-image", "truncated-image", "wrong-slot-image"]);
    let [user1, user2] = LAYOUT.slots;
    let new_image = test_image(&user2, "2.0.0", 2);
    let config_before = BootConfig::for_layout(&LAYOUT, SlotId::User1).to_bytes();

    for case in &cases {
        let result = run_case(&qemu, program, case, CASE_TIMEOUT);
        assert!(result.passed(), "{}: {:#?}", case.name, result.problems);
        let device = result.transcript.expect("a passed case has the QEMU transcript");
        let replies = device.reply_texts();
        assert_eq!(replies[..2], ["user2.bin\\r\\n", "Ready\\r\\n"], "{}", case.name);
        // A success closes (the device reboots once it is delivered); a failure drops.
        let expected_phase = if case.name == "good-image" { Phase::Closing } else { Phase::Dropping };
        assert_eq!(device.phase, expected_phase, "{}", case.name);
        let user1_bytes = &device.flash[user1.offset as usize..user1.end() as usize];
        assert_eq!(user1_bytes, &case.expected.flash[user1.offset as usize..user1.end() as usize]);
        match case.name {
            "good-image" => {
                assert_eq!(replies[2..], ["Flashing\\r\\n", "Flash upgrade success. Rebooting in 2s.\\r\\n"]);
                let slot = &device.flash[user2.offset as usize..][..new_image.len()];
                assert!(slot == new_image.as_slice(), "user2 holds the pushed image byte for byte");
                let config = BootConfig::parse(config_at(&device.flash)[..CONFIG_LEN].try_into().unwrap())
                    .expect("a valid boot config");
                assert_eq!(config.current_slot(&LAYOUT), Some(SlotId::User2));
                assert_eq!(device.running, Some(SlotId::User2));
                assert!(device.reboot_pending);
            }
            failed => {
                assert_eq!(replies[2], "Invalid\\r\\n", "{failed}");
                let reason = match failed {
                    "corrupted-image" => "ERR: CRC mismatch (stored 0x",
                    "truncated-image" => "ERR: Connection closed before the whole image arrived (5000 of ",
                    "wrong-slot-image" => {
                        "ERR: image linked for 0x40202010, this slot needs 0x40206010\\r\\n"
                    }
                    other => panic!("no expectation for {other}"),
                };
                assert!(replies[3].starts_with(reason), "{failed}: {}", replies[3]);
                assert_eq!(config_at(&device.flash), config_before, "{failed}: boot config untouched");
                assert_eq!(device.running, Some(SlotId::User1));
                assert!(!device.reboot_pending);
            }
        }
        eprintln!("{}: {} ms under QEMU", case.name, result.elapsed.unwrap().as_millis());
    }
}

#[test]
fn the_checks_catch_every_kind_of_wrong_outcome() {
    let good = case("good-image");
    let host = Transcript::parse(&run_on_host(&good.script).unwrap()).unwrap();
    assert_eq!(good.check(&host), Vec::<String>::new());

    let mut wrong_reply = host.clone();
    wrong_reply.replies[2] = b"Invalid\r\n".to_vec();
    assert!(good.check(&wrong_reply)[0].starts_with("replies user2.bin\\r\\n | Ready\\r\\n | Invalid"));

    let mut torn = host.clone();
    let at = LAYOUT.slots[1].offset as usize + 5000;
    torn.flash[at] ^= 1;
    assert_eq!(
        good.check(&torn),
        [format!("flash differs from the expected contents first at {at:#x} (32768 vs 32768 bytes)")]
    );

    let mut not_switched = host.clone();
    not_switched.running = Some(SlotId::User1);
    not_switched.reboot_pending = false;
    not_switched.phase = Phase::Open;
    assert_eq!(
        good.check(&not_switched),
        [
            "phase Open instead of Closing",
            "reboot pending: false instead of true",
            "boot config selects Some(User1) instead of user2"
        ]
    );

    // The failure cases expect another outcome than the good one.
    assert!(!case("corrupted-image").check(&host).is_empty());
}

#[test]
fn transcripts_that_stop_early_are_refused() {
    let bytes = run_on_host(&case("truncated-image").script).unwrap();
    assert!(Transcript::parse(&bytes).is_ok());
    let error = Transcript::parse(&bytes[..bytes.len() - 5]).unwrap_err();
    assert_eq!(error, "the transcript has no end record (the run did not finish)");
    let error = Transcript::parse(&bytes[..bytes.len() - 100]).unwrap_err();
    assert_eq!(error, "the transcript ends inside a record");
    assert_eq!(Transcript::parse(b"junk").unwrap_err(), "the transcript does not start with TQT1");
}

#[test]
fn a_bad_script_stops_the_program_with_its_reason() {
    let qemu = qemu();
    let program = program();
    let dir = program.cases_dir.join("bad-script");
    let error = run_on_qemu(&qemu, &program.elf, &dir, b"TQS2", CASE_TIMEOUT).unwrap_err();
    let RunError::Exit { code, stderr } = &error else { panic!("{error}") };
    assert_eq!(*code, Some(exit_code::BAD_SCRIPT as i32));
    assert_eq!(stderr, "qemu-agent: the script does not start with TQS1\n");
    assert!(error.to_string().starts_with("QEMU exited with 4 (the program could not run the script)"));

    // The right magic but the wrong flash size: checked before anything is written.
    let mut script = b"TQS1".to_vec();
    script.extend_from_slice(&0x1000u32.to_le_bytes());
    let error = run_on_qemu(&qemu, &program.elf, &dir, &script, CASE_TIMEOUT).unwrap_err();
    let RunError::Exit { stderr, .. } = &error else { panic!("{error}") };
    assert_eq!(stderr, "qemu-agent: the script holds 4096 bytes of flash, the device has 32768\n");
}

#[test]
fn missing_qemu_names_the_package_to_install() {
    let empty = tempfile::tempdir().unwrap();
    let error = qemu::find_qemu_in(empty.path().as_os_str()).unwrap_err();
    assert_eq!(error.to_string(), "`qemu-system-xtensa` was not found on PATH");
    let help = error.help().expect("a help text").to_string();
    assert_eq!(help, "install it with: sudo apt-get install qemu-system-misc");
}
