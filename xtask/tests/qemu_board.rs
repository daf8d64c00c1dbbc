//! example-blinky and tcpflash-boot built with `--board qemu`, run on QEMU's XTFPGA board
//! with a 4 MiB CFI flash file: pushed to over real TCP (QEMU's user-mode network, forwarded
//! to 127.0.0.1) by cargo-tcpflash (its push code and its binary), rebooted through the real
//! bootloader; and the bootloader's lx106 build on a set of flashes, against the host's
//! decision. The cases are `xtask::qemu_board::cases`, which `cargo xtask proof` runs too.
//!
//! Needs `qemu-system-xtensa`, binutils-xtensa-lx106 and the pinned nightly with rust-src
//! (`.ci/run` installs them).

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use xtask::qemu_board::cases::{self, Case, Fixture};

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let scratch =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("qemu-board-{}", std::process::id()));
        Fixture::build(&scratch).unwrap_or_else(|error| panic!("{error}"))
    })
}

/// Prints every case; fails with the failing ones.
fn all_pass(cases: &[Case], expected: usize) {
    for case in cases {
        match &case.outcome {
            Ok(seen) => eprintln!("qemu board: ok {}: {seen}", case.name),
            Err(why) => eprintln!("qemu board: FAIL {}: {why}", case.name),
        }
    }
    let failed: Vec<&str> =
        cases.iter().filter(|case| case.outcome.is_err()).map(|case| case.name.as_str()).collect();
    assert!(failed.is_empty(), "failed: {failed:#?}");
    assert_eq!(cases.len(), expected);
}

#[test]
fn pushes_reboot_through_tcpflash_boot_and_survive_bad_images_and_power_cuts() {
    all_pass(&cases::pushes(fixture()), 5);
}

#[test]
fn the_bootloaders_lx106_build_picks_the_slot_the_host_decides() {
    all_pass(&cases::boot_scenarios(fixture()), 15);
}

#[test]
fn a_firmware_that_panics_at_boot_is_reverted_and_the_cli_exits_6() {
    all_pass(&[cases::panic_at_boot(fixture())], 1);
}

#[test]
fn a_keyed_firmware_takes_its_key_and_refuses_another() {
    all_pass(&cases::keyed(fixture()), 2);
}

#[test]
fn sim_board_qemu_serves_the_machine_code_and_status_reads_its_file() {
    all_pass(&[cases::sim_board(fixture())], 1);
}

/// `cargo xtask demo` as a person runs it: two pushes to the QEMU board through the real
/// binaries, each booted by tcpflash-boot on trial and confirmed.
#[test]
fn the_demo_pushes_twice_to_the_qemu_board() {
    fixture(); // its builds first: the demo's are then cached
    let _guest = cases::one_guest();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask")).arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for line in [
        "  [QEMU board] [uart] tcpflash-boot: rom 1 @ 0x00082000: trial 1/3, build ",
        "  [QEMU board] [uart] tcpflash-boot: rom 0 @ 0x00002000: trial 1/3, build ",
        "  [QEMU board] stopped",
        "demo: pushed user2, then user1, to example-blinky running as lx106 machine code",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
    assert_eq!(stdout.matches("the device now runs").count(), 2, "{stdout}");
}
