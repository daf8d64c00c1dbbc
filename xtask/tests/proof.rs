//! `cargo xtask proof` in CI: the power-cut and network-fault campaigns on example-blinky's
//! real images (built by cargo-tcpflash's pipeline into `target/proof`), the QEMU cases and
//! the QEMU-board cases, run once through the same library call as the command; each test
//! asserts on one part.
//!
//! Needs what `.ci/run` installs (the firmware's nightly, lx106 binutils, QEMU).

use std::sync::OnceLock;

use ota_agent::client::Event;
use ota_agent::layout::SlotId;
use smoltcp::time::Duration;
use tcpflash_sim::wire::{LinkFaults, World};
use xtask::proof::{self, Blinky, ProofReport};

fn blinky() -> &'static Blinky {
    static BLINKY: OnceLock<Blinky> = OnceLock::new();
    BLINKY.get_or_init(|| {
        Blinky::build(&proof::default_target_dir()).unwrap_or_else(|error| {
            panic!("building example-blinky failed: {:?}", miette::Report::new(error))
        })
    })
}

/// The whole proof, run once for all tests.
fn report() -> &'static ProofReport {
    static REPORT: OnceLock<ProofReport> = OnceLock::new();
    REPORT.get_or_init(|| {
        let report = proof::run(blinky(), &mut |part| eprintln!("== {part}"));
        eprint!("{report}");
        report
    })
}

#[test]
fn the_proof_ends_with_one_line_of_figures_and_finds_nothing() {
    let report = report();
    let text = report.to_string();
    let last = text.lines().last().unwrap();
    assert_eq!(last, report.summary());
    let figures: Vec<(&str, usize)> = last
        .strip_prefix("proof: ")
        .unwrap()
        .split(' ')
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap();
            (name, value.parse().unwrap())
        })
        .collect();
    let names: Vec<&str> = figures.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        [
            "cut_points",
            "cut_failures",
            "trial_cut_points",
            "trial_cut_failures",
            "net_cases",
            "hostile_cases",
            "net_failures",
            "qemu_cases",
            "qemu_failures",
            "qemu_board_cases",
            "qemu_board_failures"
        ]
    );
    assert_eq!(report.failures(), 0, "{text}");
    assert!(figures.iter().filter(|(name, _)| name.ends_with("_failures")).all(|(_, n)| *n == 0), "{last}");
}

#[test]
fn every_power_cut_of_a_real_update_boots_the_old_or_the_new_image() {
    let cuts = &report().cuts;
    assert!(cuts.failures.is_empty(), "{cuts}");
    let names: Vec<&str> = cuts.updates.iter().map(|update| update.name.as_str()).collect();
    assert_eq!(names, ["user1 -> user2", "user2 -> user1"]);
    for update in &cuts.updates {
        // example-blinky's image spans a dozen sectors: erases, ~200 page programs, the config.
        assert!(update.agent_ops > 100, "{cuts}");
        // Cuts before the config switch boot the old image, later ones the new one; torn
        // config sectors make rBoot rewrite its config, which is cut too.
        assert!(update.booted_old > update.agent_ops / 2 && update.booted_new > 0, "{cuts}");
        assert!(update.rboot_cuts > 0 && update.config_tears > 0, "{cuts}");
    }
    assert!(cuts.cut_points() > 2 * 100);
}

#[test]
fn every_power_cut_of_a_trial_update_and_its_confirmation_boots_a_good_image() {
    let cuts = &report().trial_cuts;
    assert!(cuts.failures.is_empty(), "{cuts}");
    let names: Vec<&str> = cuts.steps.iter().map(|step| step.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "user1 -> user2 (trial)",
            "user2 on trial, check-in confirms",
            "user2 confirmed, user1 pre-erased",
            "user2 confirmed -> user1 (trial)"
        ]
    );
    let [update, confirm, pre_erase, again] = &cuts.steps[..] else { unreachable!() };
    // The real image: erases, ~200 page programs, the config and the trial record.
    assert!(update.agent_ops > 100 && again.agent_ops > 100, "{cuts}");
    assert!(confirm.agent_ops >= 2 && confirm.boot_cuts > 0, "{cuts}");
    assert_eq!(confirm.booted_old, 0, "a check-in never goes back: {cuts}");
    // A sector erase for each sector user1.bin took; user2 boots after every cut of them.
    let sectors = blinky().image(SlotId::User1).len().div_ceil(ota_agent::writer::SECTOR);
    assert_eq!(pre_erase.agent_ops, sectors, "{cuts}");
    assert_eq!(pre_erase.booted_old, 0, "{cuts}");
    // Into the pre-erased slot the push only programs: fewer operations than the first.
    assert!(again.agent_ops < update.agent_ops, "{cuts}");
}

#[test]
fn every_network_fault_leaves_the_running_slot_and_the_next_push_lands() {
    let net = &report().net;
    assert!(net.failures.is_empty(), "{net}");
    assert!(net.session_cases > 100, "{net}");
    assert!(net.tcp_cases >= 25, "{net}");
    assert_eq!(net.hostile_cases, 8, "{net}");
    assert_eq!(net.smoltcp_cases, 2 * proof::network::NetOptions::default().smoltcp_links.len());
    // A link that neither drops nor corrupts lands every push, whatever its MTU; on the others
    // each push lands or fails with a reason (which depends on the image's length, so on the
    // firmware's code: the proof's own unit test pins the outcome of each seed exactly).
    for (faults, error) in &net.smoltcp_outcomes {
        if faults.drop_percent == 0 && faults.corrupt_percent == 0 {
            assert_eq!(error, &None, "({faults}) {net}");
        }
        assert!(error.as_ref().is_none_or(|text| !text.trim().is_empty()), "({faults}) {net}");
    }
}

#[test]
fn the_qemu_cases_run_in_the_proof() {
    let report = report();
    assert_eq!(report.qemu_cases(), 4);
    assert_eq!(report.qemu_failures(), 0);
}

#[test]
fn the_qemu_board_cases_run_in_the_proof() {
    let report = report();
    // 5 pushes, 15 boot decisions, panic-at-boot, 2 keyed, sim --board qemu.
    assert_eq!(report.qemu_board_cases(), 24, "{report}");
    assert_eq!(report.qemu_board_failures(), 0, "{report}");
}

/// Issue 3's missing test: a smoltcp client pushes the real `user2.bin`, and the slot then
/// holds the file byte for byte.
#[test]
fn a_smoltcp_client_pushes_example_blinkys_real_user2_and_the_slot_equals_the_file() {
    let blinky = blinky();
    let file = std::fs::read(&blinky.files[1]).unwrap();
    assert!(blinky.files[1].ends_with("user2.bin"));
    let mut world = World::new(blinky.factory_flash(), blinky.layout, LinkFaults::clean(1));
    let mut push = world.push(blinky.images.clone(), 49152);
    world.run_pushes(&mut [&mut push], Duration::from_secs(120)).unwrap();
    assert_eq!(push.events, [Event::NextSlot(SlotId::User2), Event::Ready, Event::Flashing, Event::Success]);
    let at = blinky.layout.slot(SlotId::User2).offset as usize;
    assert!(world.flash.bytes()[at..at + file.len()] == file[..], "user2 holds user2.bin byte for byte");
    assert!(world.flash.bytes()[at + file.len()..].iter().take(16).all(|&b| b == 0xFF));
}
