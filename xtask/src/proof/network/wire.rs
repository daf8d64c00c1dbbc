//! The agent on smoltcp (`tcpflash_sim::wire`): pushes over a wire that drops and corrupts
//! packets, with a small MTU: each lands intact or fails with a clear error, and a push over
//! a clean wire follows.

use ota_agent::client::Event;
use ota_agent::flash::RamNor;
use ota_agent::net::AgentConfig;
use smoltcp::time::Duration;
use tcpflash_sim::rboot;
use tcpflash_sim::wire::{LinkFaults, World};

use crate::proof::Blinky;

use super::*;

/// Simulated time a push may take before the campaign calls it stuck.
const SMOLTCP_LIMIT: Duration = Duration::from_secs(900);
/// The host socket gives up after this long without an answer.
const HOST_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) fn cases(blinky: &Blinky, options: &NetOptions, report: &mut NetReport) {
    let mut flash = blinky.factory_flash();
    let mut port = 49152u16;
    for (i, &(drop_percent, corrupt_percent, mtu)) in options.smoltcp_links.iter().enumerate() {
        for seed in [2 * i as u32 + 1, 2 * i as u32 + 2] {
            let faults = LinkFaults { drop_percent, corrupt_percent, mtu, seed };
            report.smoltcp_cases += 1;
            port = port.wrapping_add(1).max(49152);
            match smoltcp_push(blinky, &mut flash, faults, port) {
                Ok(outcome) => report.smoltcp_outcomes.push((faults, outcome)),
                Err(problem) => report.failures.push(format!("smoltcp ({faults}): {problem}")),
            }
        }
    }
}

/// The agent as rBoot boots it from `flash`.
fn boot_world(blinky: &Blinky, flash: &RamNor<Vec<u8>>, faults: LinkFaults) -> Result<World, String> {
    let mut booted = flash.clone();
    let boot = rboot::boot(&mut booted).map_err(|bricked| format!("the device is bricked: {bricked}"))?;
    let config = AgentConfig { running_slot: boot.slot(blinky.layout), ..AgentConfig::new(blinky.layout) };
    let mut world = World::with_config(booted, faults, config);
    world.host_timeout = Some(HOST_TIMEOUT);
    Ok(world)
}

/// One push over a faulty wire: `Ok(None)` when it landed, `Ok(Some(error))` when it failed
/// with an error and left the device as it was; then a push over a clean wire must land.
fn smoltcp_push(
    blinky: &Blinky,
    flash: &mut RamNor<Vec<u8>>,
    faults: LinkFaults,
    port: u16,
) -> Result<Option<String>, String> {
    let running = rboot::boot(&mut flash.clone()).ok().and_then(|boot| boot.slot(blinky.layout));
    let running = running.ok_or("the device boots no slot")?;
    let target = running.other();
    let config_before = config_of(flash);

    let mut world = boot_world(blinky, flash, faults)?;
    let mut push = world.push(blinky.images.clone(), port);
    world
        .run_pushes(&mut [&mut push], SMOLTCP_LIMIT)
        .map_err(|stuck| format!("neither landed nor failed: {stuck}"))?;
    let switched = config_of(&world.flash) != config_before;
    let outcome = push.outcome().copied();
    let error = match outcome {
        Some(Event::Success) if switched => None,
        Some(Event::Success) => return Err("the client heard success but the config did not switch".into()),
        Some(Event::Failed(error)) => {
            let text = error.to_string();
            if text.trim().is_empty() {
                return Err(format!("failed without a reason: {error:?}"));
            }
            Some(text)
        }
        other => return Err(format!("ended without an outcome: {other:?}")),
    };
    // Landed or not, the device must boot a good image: the new one if it switched (even
    // when the client missed the last reply), the old one if not.
    let expected = if switched { target } else { running };
    check_landed(blinky, &format!("after a push over ({faults})"), &mut world.flash, expected)?;
    *flash = world.flash.clone();

    // The agent listens again: after a failure, a push over a clean wire lands.
    if error.is_some() {
        let mut clean = boot_world(blinky, flash, LinkFaults::clean(faults.seed))?;
        let mut push = clean.push(blinky.images.clone(), port.wrapping_add(1000));
        clean
            .run_pushes(&mut [&mut push], SMOLTCP_LIMIT)
            .map_err(|stuck| format!("the clean push after a failure: {stuck}"))?;
        if push.outcome() != Some(&Event::Success) {
            return Err(format!("the clean push after a failure did not land: {:?}", push.events));
        }
        let now = if switched { running } else { target };
        check_landed(blinky, &format!("the clean push after ({faults})"), &mut clean.flash, now)?;
        *flash = clean.flash.clone();
    }
    Ok(error)
}
