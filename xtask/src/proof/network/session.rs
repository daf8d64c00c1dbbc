//! The session in memory (simulated time, so hundreds of cases are cheap): the connection
//! closed or reset at every byte of the request lines and at many offsets of the image,
//! garbage at every byte of the request lines, a stall at every step.

use ota_agent::flash::RamNor;
use ota_agent::layout::SlotId;
use ota_agent::session::Phase;
use ota_agent::writer::SECTOR;
use tcpflash_sim::rboot;

use crate::proof::Blinky;
use crate::proof::agent::{Agent, IDLE_TIMEOUT, client_push, succeeded};

use super::*;

/// A fault the session cases inject: it drives the agent and the chip, then says what broke.
type SessionFault<'f> = dyn FnMut(&mut Agent<'_>, &mut RamNor<Vec<u8>>) -> Result<(), String> + 'f;

/// The checks after every fault, in memory: the agent listens again, nothing switched, rBoot
/// still boots the running slot, and a push by the real client lands and boots.
fn after_fault_in_memory(
    blinky: &Blinky,
    label: &str,
    agent: &mut Agent<'_>,
    flash: &mut RamNor<Vec<u8>>,
    config_before: &[u8],
    running: SlotId,
    checked: bool,
) -> Result<(), String> {
    agent.disconnect();
    if agent.phase() != Phase::Idle {
        return Err(format!("{label}: the agent does not listen again (phase {:?})", agent.phase()));
    }
    if config_of(flash) != config_before {
        return Err(format!("{label}: the boot config changed"));
    }
    let booted = rboot::boot(&mut flash.clone()).ok().and_then(|boot| boot.slot(blinky.layout));
    if booted != Some(running) {
        return Err(format!("{label}: rBoot would boot {booted:?}, not the running {running}"));
    }
    let events = client_push(agent, flash, blinky.image_refs(), checked);
    if !succeeded(&events) {
        return Err(format!("{label}: the following push failed: {events:?}"));
    }
    check_landed(blinky, label, flash, running.other())
}

pub(super) fn cases(blinky: &Blinky, options: &NetOptions, report: &mut NetReport) {
    let running = SlotId::User1;
    let target = running.other();
    let image = blinky.image(target);
    let header = request_lines(image.len());
    let stream = [header.as_slice(), image].concat();
    let factory = blinky.factory_flash();
    let config_before = config_of(&factory);
    let mut sector = [0u8; SECTOR];
    let mut run = |label: String, fault: &mut SessionFault<'_>| {
        report.session_cases += 1;
        let mut flash = factory.clone();
        // A device fresh from its last reboot; the fault and the following push meet
        // the same agent.
        let mut agent = Agent::new(&mut sector, blinky.layout, Some(running));
        agent.accept();
        let checked = report.session_cases.is_multiple_of(3);
        let result = fault(&mut agent, &mut flash).and_then(|()| {
            after_fault_in_memory(blinky, &label, &mut agent, &mut flash, &config_before, running, checked)
        });
        if let Err(problem) = result {
            report.failures.push(problem);
        }
    };

    for (i, cut) in cut_offsets(header.len(), image.len(), options.session_stride).into_iter().enumerate() {
        let reset = i % 2 == 1;
        let how = if reset { "reset" } else { "closed" };
        run(format!("session: connection {how} after {cut} bytes"), &mut |agent, flash| {
            agent.send(flash, &stream[..cut]);
            if reset {
                return Ok(());
            }
            agent.input_closed(flash);
            let expected = replies_when_closed(target, header.len(), image.len(), cut);
            expect_replies(&format!("session: closed after {cut} bytes"), agent.replies(), &expected)
        });
    }

    // Garbage at every byte of the request lines, and where the image starts.
    let garbage: &[u8] = b"\x00\xfe garbage \x7f\r\n";
    for at in 0..=header.len() {
        run(format!("session: garbage at byte {at}"), &mut |agent, flash| {
            agent.send(flash, &[&stream[..at], garbage, &stream[at..]].concat());
            let replies = String::from_utf8_lossy(agent.replies()).into_owned();
            let last = replies.lines().last().unwrap_or("");
            match last.strip_prefix("ERR: ") {
                Some(reason) if !reason.is_empty() && agent.phase() == Phase::Dropping => Ok(()),
                _ => Err(format!("session: garbage at byte {at}: no error reply, got {replies:?}")),
            }
        });
    }

    // A stall at every step.
    let image_stalls = [0, 1, SECTOR - 1, SECTOR, image.len() / 2, image.len() - 1];
    let stalls = [0, hello_len(), header.len()].into_iter().chain(image_stalls.map(|at| header.len() + at));
    for sent in stalls {
        run(format!("session: silent after {sent} bytes"), &mut |agent, flash| {
            agent.send(flash, &stream[..sent]);
            agent.wait(flash, IDLE_TIMEOUT);
            let expected = replies_when_stalled(target, header.len(), sent);
            expect_replies(&format!("session: silent after {sent} bytes"), agent.replies(), &expected)?;
            if agent.phase() != Phase::Dropping {
                return Err(format!(
                    "session: silent after {sent} bytes: not dropping ({:?})",
                    agent.phase()
                ));
            }
            Ok(())
        });
    }
}
