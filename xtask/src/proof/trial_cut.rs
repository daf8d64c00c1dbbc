//! The power-cut campaign on a device that tcpflash-boot boots: an update starts a trial,
//! the pushing host's check-in confirms it. Three steps of one device's life are cut at
//! every flash operation in turn:
//!
//! 1. the factory device (user1 confirmed) takes user2.bin: the image, the config and the
//!    trial record;
//! 2. user2 boots on trial and the check-in confirms it: the confirmed word and the config;
//! 3. the confirmed user2 pre-erases user1 in the background, a sector at a time: nothing
//!    but user1 may change (user2, the config and the trial record never);
//! 4. the confirmed user2 takes user1.bin, into the pre-erased slot: a new trial, over the
//!    old record.
//!
//! After each cut, power returns and tcpflash-boot (the sim's run of its loader) boots; its
//! own write (the attempt bit) is cut too. Each boot is judged: a slot of the layout holding
//! example-blinky's image byte for byte; during an update the old image (confirmed) or the
//! new one on trial, never the new one as confirmed; during the check-in and the pre-erase
//! always the new one. Then the booted firmware takes a check-in, pre-erases its idle slot
//! (what it finds erased learnt again by reading) and takes the next push, and the device
//! boots that.

use std::fmt;

use ota_agent::boot::handoff::HandOffKind;
use ota_agent::boot::{BootStatus, Running};
use ota_agent::flash::{NorFlash, RamNor, Recording};
use ota_agent::layout::SlotId;
use ota_agent::writer::SECTOR;
use tcpflash_sim::{Launched, boot, inspect_slot};

use super::Blinky;
use super::agent::{Agent, check_in, client_push, succeeded};

/// One step's cuts.
#[derive(Clone, Debug, Default)]
pub struct StepCuts {
    pub name: String,
    /// Flash operations of the uncut step: each is a cut point.
    pub agent_ops: usize,
    /// Cuts of tcpflash-boot's own write (the attempt bit) on the way back.
    pub boot_cuts: usize,
    pub booted_old: usize,
    pub booted_new: usize,
}

impl StepCuts {
    pub fn cut_points(&self) -> usize {
        self.agent_ops + self.boot_cuts
    }
}

#[derive(Clone, Debug, Default)]
pub struct TrialCutReport {
    pub steps: Vec<StepCuts>,
    pub failures: Vec<String>,
}

impl TrialCutReport {
    pub fn cut_points(&self) -> usize {
        self.steps.iter().map(StepCuts::cut_points).sum()
    }
}

impl fmt::Display for TrialCutReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.steps {
            writeln!(
                f,
                "{}: {} cut points ({} agent flash operations, {} of tcpflash-boot's attempt bit); booted \
                 the old image {} times, the new one {} times",
                step.name,
                step.cut_points(),
                step.agent_ops,
                step.boot_cuts,
                step.booted_old,
                step.booted_new
            )?;
        }
        for failure in &self.failures {
            writeln!(f, "FAILED: {failure}")?;
        }
        writeln!(f, "trial power cuts: cut_points={} failures={}", self.cut_points(), self.failures.len())
    }
}

/// What a step does to the flash of a firmware that runs as `Running` says.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Push,
    CheckIn,
    /// The agent's pre-erase of the idle slot, run to its end.
    PreErase,
    /// After a reboot the agent learns by reading that its idle slot is erased (its
    /// pre-erase finds nothing to erase), then takes the push, which only programs.
    PushPreErased,
}

/// What may boot after a cut of a step.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The old image (confirmed) or the new one on trial.
    OldOrTrial,
    /// The new image, on trial or confirmed.
    New,
}

pub fn campaign(blinky: &Blinky) -> TrialCutReport {
    let mut report = TrialCutReport::default();
    let mut flash = blinky.factory_flash();
    flash.allow_bit_clearing();
    let steps = [
        ("user1 -> user2 (trial)", Step::Push, SlotId::User1, Expect::OldOrTrial),
        ("user2 on trial, check-in confirms", Step::CheckIn, SlotId::User1, Expect::New),
        ("user2 confirmed, user1 pre-erased", Step::PreErase, SlotId::User1, Expect::New),
        ("user2 confirmed -> user1 (trial)", Step::PushPreErased, SlotId::User2, Expect::OldOrTrial),
    ];
    for (name, step, old, expect) in steps {
        let judge = Judge { blinky, old, expect };
        match cut_step(&judge, name, step, flash, &mut report) {
            Some(next) => flash = next,
            None => break,
        }
    }
    report
}

/// Powers `flash` on; the firmware that starts and how it runs.
fn power_on(flash: &mut RamNor<Vec<u8>>, blinky: &Blinky) -> Result<(Launched, Running), String> {
    let launched = boot::boot(flash).map_err(|halted| format!("bricked: {halted}"))?;
    let running = Running::read(flash, blinky.layout, launched.handoff);
    Ok((launched, running))
}

/// Runs `step` on the firmware `flash` boots.
fn run_step<F: NorFlash>(blinky: &Blinky, flash: &mut F, running: Running, step: Step) -> Result<(), String> {
    let mut sector = [0u8; SECTOR];
    let mut agent = Agent::booted(&mut sector, blinky.layout, running);
    match step {
        Step::Push | Step::PushPreErased => {
            if step == Step::PushPreErased {
                while agent.session.pre_erase(flash) {}
            }
            let events = client_push(&mut agent, flash, blinky.image_refs(), true);
            if succeeded(&events) { Ok(()) } else { Err(format!("the push failed: {events:?}")) }
        }
        Step::CheckIn => {
            let replies = check_in(&mut agent, flash);
            let text = String::from_utf8_lossy(&replies).into_owned();
            if text.contains("BootState: confirmed") {
                Ok(())
            } else {
                Err(format!("the check-in did not confirm: {text:?}"))
            }
        }
        Step::PreErase => {
            while agent.session.pre_erase(flash) {}
            let idle = blinky.layout.slot(running.slot.map_or(SlotId::User2, SlotId::other));
            match agent.session.pre_erased() {
                Some((slot, erased)) if slot == idle.id && erased == idle.capacity => Ok(()),
                other => Err(format!("the pre-erase stopped at {other:?}")),
            }
        }
    }
}

/// The first byte outside the idle slot (of the firmware running `running`) where `after`
/// differs from `before`: the pre-erase may change nothing else.
fn touched_outside_idle_slot(
    blinky: &Blinky,
    running: Running,
    before: &RamNor<Vec<u8>>,
    after: &RamNor<Vec<u8>>,
) -> Option<usize> {
    let idle = blinky.layout.slot(running.slot?.other());
    let (start, end) = (idle.offset as usize, idle.end() as usize);
    let differs = |range: std::ops::Range<usize>| {
        range
            .clone()
            .zip(&before.bytes()[range.clone()])
            .zip(&after.bytes()[range])
            .find_map(|((at, a), b)| (a != b).then_some(at))
    };
    differs(0..start).or_else(|| differs(end..before.bytes().len()))
}

/// Cuts every flash operation of `step` on the firmware `before` boots; returns the flash
/// after the uncut step and a reboot, for the next step.
fn cut_step(
    judge: &Judge<'_>,
    name: &str,
    step: Step,
    before: RamNor<Vec<u8>>,
    report: &mut TrialCutReport,
) -> Option<RamNor<Vec<u8>>> {
    let blinky = judge.blinky;
    let mut cuts = StepCuts { name: name.to_owned(), ..StepCuts::default() };
    // The power-on that starts the step's firmware, its own write (a trial's attempt bit)
    // cut too, judged like any other.
    judge.power_returns(&format!("{name}, power-on"), before.clone(), &mut cuts, report);
    // The device is on: tcpflash-boot has started the firmware that runs the step.
    let mut booted = before;
    let running = match power_on(&mut booted, blinky) {
        Ok((_, running)) => running,
        Err(problem) => {
            report.failures.push(format!("{name}: before the step: {problem}"));
            return None;
        }
    };

    let mut recorded = Recording::new(booted.clone());
    if let Err(problem) = run_step(blinky, &mut recorded, running, step) {
        report.failures.push(format!("{name}: uncut: {problem}"));
        return None;
    }
    let (clean, log) = (recorded.inner, recorded.log);
    cuts.agent_ops = log.len();

    for cut in 0..log.len() {
        let label = format!("{name}, cut at agent op {cut} of {} ({:?})", log.len(), log[cut]);
        let mut flash = booted.clone();
        flash.cut_power_at(booted.ops() + cut as u64);
        let _ = run_step(blinky, &mut flash, running, step);
        if !flash.power_lost() {
            report.failures.push(format!("{label}: the power was never cut"));
            continue;
        }
        flash.restore_power();
        if step == Step::PreErase
            && let Some(at) = touched_outside_idle_slot(blinky, running, &booted, &flash)
        {
            report
                .failures
                .push(format!("{label}: the pre-erase changed flash at {at:#x}, outside the idle slot"));
        }
        judge.power_returns(&label, flash, &mut cuts, report);
    }

    // The uncut step, then a reboot: what the next step starts from.
    let mut next = clean.clone();
    match power_on(&mut next, blinky).and_then(|(launched, running)| judge.boot(&next, &launched, running)) {
        Ok(Booted::New) => {}
        other => {
            report
                .failures
                .push(format!("{name}: after the uncut step the new image does not boot: {other:?}"));
            return None;
        }
    }
    report.steps.push(cuts);
    Some(clean)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Booted {
    Old,
    New,
}

struct Judge<'a> {
    blinky: &'a Blinky,
    /// The slot running before the step.
    old: SlotId,
    expect: Expect,
}

impl Judge<'_> {
    /// Power is back: tcpflash-boot's attempt bit is cut too, then the boot is judged and the
    /// booted firmware takes a check-in and the next push.
    fn power_returns(
        &self,
        label: &str,
        flash: RamNor<Vec<u8>>,
        cuts: &mut StepCuts,
        report: &mut TrialCutReport,
    ) {
        // tcpflash-boot writes at most the attempt bit: cut it where it does.
        let start = flash.ops();
        let mut probe = flash.clone();
        let _ = boot::boot(&mut probe);
        for cut in 0..probe.ops() - start {
            cuts.boot_cuts += 1;
            let label = format!("{label}; tcpflash-boot's attempt bit cut at its op {cut}");
            let mut torn = flash.clone();
            torn.cut_power_at(start + cut);
            let _ = boot::boot(&mut torn);
            torn.restore_power();
            self.judge_and_go_on(&label, torn, cuts, report);
        }
        self.judge_and_go_on(label, flash, cuts, report);
    }

    fn judge_and_go_on(
        &self,
        label: &str,
        mut flash: RamNor<Vec<u8>>,
        cuts: &mut StepCuts,
        report: &mut TrialCutReport,
    ) {
        let judged = power_on(&mut flash, self.blinky)
            .and_then(|(launched, running)| Ok((self.boot(&flash, &launched, running)?, running)));
        let running = match judged {
            Ok((Booted::Old, running)) => {
                cuts.booted_old += 1;
                running
            }
            Ok((Booted::New, running)) => {
                cuts.booted_new += 1;
                running
            }
            Err(problem) => return report.failures.push(format!("{label}: {problem}")),
        };
        if let Err(problem) = self.life_goes_on(&mut flash, running) {
            report.failures.push(format!("{label}: {problem}"));
        }
    }

    /// Judges what tcpflash-boot started: a slot holding example-blinky's image for it,
    /// intact, started the way the step allows.
    fn boot(&self, flash: &RamNor<Vec<u8>>, launched: &Launched, running: Running) -> Result<Booted, String> {
        let layout = self.blinky.layout;
        let slot =
            launched.slot(layout).ok_or_else(|| format!("booted {:#x}, not a slot", launched.offset))?;
        let mut copy = flash.clone();
        let status = inspect_slot(&mut copy, layout.slot(slot));
        status.check.map_err(|error| format!("booted {slot}, which fails the check: {error}"))?;
        let expected = self.blinky.image(slot);
        let at = layout.slot(slot).offset as usize;
        if &flash.bytes()[at..at + expected.len()] != expected {
            return Err(format!("booted {slot}, whose image is not {} byte for byte", slot.file_name()));
        }
        let booted = if slot == self.old { Booted::Old } else { Booted::New };
        let kind = launched.kind();
        match (self.expect, booted) {
            (Expect::New, Booted::Old) => Err(format!("went back to {slot} ({kind:?}) during a check-in")),
            (Expect::OldOrTrial, Booted::New) if kind != Some(HandOffKind::Trial) => {
                Err(format!("started the new {slot} as {kind:?}, not on trial"))
            }
            (_, Booted::Old) if running.status.unconfirmed_trial() => {
                Err(format!("started the old {slot} on trial"))
            }
            _ => Ok(booted),
        }
    }

    /// The booted firmware takes a check-in (confirming a trial) and the next push, and the
    /// device then starts the pushed image on trial.
    fn life_goes_on(&self, flash: &mut RamNor<Vec<u8>>, running: Running) -> Result<(), String> {
        let mut sector = [0u8; SECTOR];
        let mut agent = Agent::booted(&mut sector, self.blinky.layout, running);
        let replies = check_in(&mut agent, flash);
        let confirmed = String::from_utf8_lossy(&replies).contains("BootState: confirmed");
        let tracked_and_unconfirmed = running.status != BootStatus::Untracked && !confirmed;
        if tracked_and_unconfirmed {
            return Err(format!("the check-in did not confirm: {:?}", String::from_utf8_lossy(&replies)));
        }
        let running = agent.running();
        // Idle between the check-in and the push: the pre-erase learns by reading what an
        // interrupted one left, and erases the rest.
        while agent.session.pre_erase(flash) {}
        let events = client_push(&mut agent, flash, self.blinky.image_refs(), true);
        if !succeeded(&events) {
            return Err(format!("after recovery the next push failed: {events:?}"));
        }
        let (launched, _) =
            power_on(flash, self.blinky).map_err(|problem| format!("after the next push: {problem}"))?;
        let pushed = running.slot.map(SlotId::other);
        if launched.slot(self.blinky.layout) != pushed || launched.kind() != Some(HandOffKind::Trial) {
            return Err(format!(
                "after the next push the device started {launched:?}, not {pushed:?} on trial"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cut_of_a_trial_update_and_its_confirmation_boots_a_good_image() {
        let blinky = Blinky::small();
        let report = campaign(&blinky);
        assert!(report.failures.is_empty(), "{report}");
        assert_eq!(report.steps.len(), 4, "{report}");
        // The confirmation is two writes at most (the confirmed word; the config), each a
        // handful of operations; an update also writes the image.
        let [update, confirm, pre_erase, again] = &report.steps[..] else { unreachable!() };
        // The pre-erase erases what user1's image took, a sector at a time; the confirmed
        // user2 boots after every cut of it.
        let sectors = blinky.image(SlotId::User1).len().div_ceil(SECTOR);
        assert_eq!(pre_erase.agent_ops, sectors, "{report}");
        assert_eq!(pre_erase.booted_old, 0, "{report}");
        assert!(confirm.agent_ops >= 2 && confirm.agent_ops < update.agent_ops, "{report}");
        // Until the trial record is whole, the old image boots; the check-in never goes back.
        assert!(update.booted_old > 0 && again.booted_old > 0, "{report}");
        assert_eq!(confirm.booted_old, 0, "{report}");
        assert_eq!(
            confirm.booted_new,
            confirm.agent_ops + confirm.boot_cuts + 1,
            "and the power-on: {report}"
        );
        assert!(confirm.boot_cuts > 0, "tcpflash-boot's attempt bit was cut: {report}");
    }

    #[test]
    fn a_pre_erase_that_strays_outside_the_idle_slot_is_a_failure() {
        let blinky = Blinky::small();
        let before = blinky.factory_flash();
        let running = Running::untracked(Some(SlotId::User2));
        let mut after = before.clone();
        assert_eq!(touched_outside_idle_slot(&blinky, running, &before, &after), None);
        let user1 = blinky.layout.slot(SlotId::User1);
        after.erase(user1.offset, user1.offset + 0x1000).unwrap();
        assert_eq!(touched_outside_idle_slot(&blinky, running, &before, &after), None, "user1 is idle");
        let config = ota_agent::layout::BOOT_CONFIG_OFFSET;
        after.erase(config, config + 0x1000).unwrap();
        assert_eq!(
            touched_outside_idle_slot(&blinky, running, &before, &after),
            Some(config as usize),
            "the config is not"
        );
    }

    #[test]
    fn a_boot_of_the_new_image_as_confirmed_during_an_update_is_a_failure() {
        let blinky = Blinky::small();
        // A flash whose config names user2 for good (what the seed's agent did): after a
        // cut, the new image would start confirmed.
        let mut flash = blinky.factory_flash();
        flash.allow_bit_clearing();
        let mut sector = [0u8; SECTOR];
        let at = blinky.layout.slot(SlotId::User2).offset;
        flash
            .write(at, &{
                let mut image = blinky.image(SlotId::User2).to_vec();
                image.resize(image.len().next_multiple_of(4), 0xFF);
                image
            })
            .unwrap();
        ota_agent::boot::switch_boot_config(&mut flash, blinky.layout, SlotId::User2, &mut sector).unwrap();
        let judge = Judge { blinky: &blinky, old: SlotId::User1, expect: Expect::OldOrTrial };
        let (launched, running) = power_on(&mut flash, &blinky).unwrap();
        let problem = judge.boot(&flash, &launched, running).unwrap_err();
        assert_eq!(problem, "started the new user2 as Some(Confirmed), not on trial");
    }
}
