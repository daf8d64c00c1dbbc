//! The power-cut campaign: a real update of example-blinky through the real session, with the
//! power cut at every flash operation in turn, then rBoot (the model) boots.
//!
//! Two updates are cut: the factory device (user1 running) taking user2.bin, and the device
//! that took it (user2 running) taking user1.bin back. For each cut, [`RamNor`] tears the
//! operation in half (an erase leaves its first half erased, a page program its first half
//! programmed) and stops the chip. After power returns, the boot is judged:
//!
//! - rBoot boots a slot of the layout, and that slot passes the agent's full image check
//!   (`image::verify_for_slot`: headers, checksum, CRC, descriptor linked for the slot);
//! - the slot holds `user1.bin` or `user2.bin` byte for byte: the old image or the new one,
//!   never a torn one;
//! - its descriptor is example-blinky's, so the firmware that runs is one that listens;
//! - and it does listen: the agent of that firmware takes the next push, and rBoot boots it.
//!
//! When rBoot rewrites its config on the way (a torn config sector), the power is cut at
//! each of rBoot's own flash operations too, and the next boot is judged the same way. The
//! config writes (the agent's switch and rBoot's rewrites) are also torn at every byte of
//! the config, which the halving model alone would not reach.

use std::collections::HashSet;
use std::fmt;

use ota_agent::boot::CONFIG_STRUCT_LEN;
use ota_agent::flash::{FlashOp, NorFlash, RamNor, Recording};
use ota_agent::layout::{BOOT_CONFIG_OFFSET, SECTOR_SIZE, SlotId};
use ota_agent::writer::SECTOR;
use tcpflash_sim::inspect_slot;
use tcpflash_sim::rboot::{self, Boot, Bricked};

use super::Blinky;
use super::agent::{Agent, client_push, succeeded};

/// How many times in a row a boot's own config rewrite is cut.
const MAX_RBOOT_DEPTH: usize = 2;

/// One update's cut points.
#[derive(Clone, Debug, Default)]
pub struct UpdateCuts {
    pub name: String,
    /// Flash operations of the uncut update: each is a cut point.
    pub agent_ops: usize,
    /// Cuts during rBoot's own config rewrites (distinct states only).
    pub rboot_cuts: usize,
    /// Config writes torn at each byte of the config.
    pub config_tears: usize,
    /// How the judged boots ended.
    pub booted_old: usize,
    pub booted_new: usize,
}

impl UpdateCuts {
    pub fn cut_points(&self) -> usize {
        self.agent_ops + self.rboot_cuts + self.config_tears
    }
}

/// The campaign's figures and every failure, described.
#[derive(Clone, Debug, Default)]
pub struct CutReport {
    pub updates: Vec<UpdateCuts>,
    pub failures: Vec<String>,
}

impl CutReport {
    pub fn cut_points(&self) -> usize {
        self.updates.iter().map(UpdateCuts::cut_points).sum()
    }
}

impl fmt::Display for CutReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for update in &self.updates {
            writeln!(
                f,
                "{}: {} cut points ({} agent flash operations, {} during rBoot's config rewrites, {} config \
                 tears at each byte); booted the old image {} times, the new one {} times",
                update.name,
                update.cut_points(),
                update.agent_ops,
                update.rboot_cuts,
                update.config_tears,
                update.booted_old,
                update.booted_new
            )?;
        }
        for failure in &self.failures {
            writeln!(f, "FAILED: {failure}")?;
        }
        writeln!(f, "power cuts: cut_points={} failures={}", self.cut_points(), self.failures.len())
    }
}

/// Runs the campaign on both updates.
pub fn campaign(blinky: &Blinky) -> CutReport {
    let mut report = CutReport::default();
    let factory = blinky.factory_flash();
    let Some(after_first) = cut_update(blinky, "user1 -> user2", factory, SlotId::User1, &mut report) else {
        return report;
    };
    cut_update(blinky, "user2 -> user1", after_first, SlotId::User2, &mut report);
    report
}

/// Cuts every operation of the update of `before` (running `running`); returns the flash
/// after the uncut update and its reboot, for the next update.
fn cut_update(
    blinky: &Blinky,
    name: &str,
    before: RamNor<Vec<u8>>,
    running: SlotId,
    report: &mut CutReport,
) -> Option<RamNor<Vec<u8>>> {
    let mut cuts = UpdateCuts { name: name.to_owned(), ..UpdateCuts::default() };
    let mut judge = Judge { blinky, old: running, seen: HashSet::new() };

    // The uncut update: how many operations it performs, and where the config write starts.
    let mut recorded = Recording::new(before.clone());
    let events = push(blinky, &mut recorded, Some(running));
    let (mut clean, log) = (recorded.inner, recorded.log);
    if !succeeded(&events) {
        report.failures.push(format!("{name}: the uncut update failed: {events:?}"));
        return None;
    }
    let config_erase = log.iter().rposition(|op| *op == FlashOp::EraseSector(BOOT_CONFIG_OFFSET));
    let Some(config_erase) = config_erase else {
        report.failures.push(format!("{name}: the update never erased the boot config sector"));
        return None;
    };
    cuts.agent_ops = log.len();

    for cut in 0..log.len() {
        let label = format!("{name}, cut at agent op {cut} of {} ({:?})", log.len(), log[cut]);
        let mut flash = before.clone();
        flash.cut_power_at(before.ops() + cut as u64);
        let events = push(blinky, &mut flash, Some(running));
        if !flash.power_lost() {
            report.failures.push(format!("{label}: the power was never cut (events {events:?})"));
            continue;
        }
        if succeeded(&events) {
            report.failures.push(format!("{label}: the client was told the update succeeded"));
        }
        flash.restore_power();
        judge.power_returns(&label, flash, Origin::AgentCut(cut), 0, &mut cuts, report);
    }

    // The agent's config write torn anywhere in the config, in the order it programs it.
    // It is the update's last work, so everything else is as the uncut update left it.
    for (label, flash) in config_tears(&clean, &log[config_erase + 1..]) {
        cuts.config_tears += 1;
        // Judged like a cut (a valid, expected image boots); the next push is not run for
        // each of these hundreds of states.
        judge.power_returns(&format!("{name}, {label}"), flash, Origin::Uncut, 1, &mut cuts, report);
    }

    // The device reboots into the new image for the next update.
    let boot = rboot::boot(&mut clean);
    match judge.boot(&label_clean(name), &mut clean, boot) {
        Ok(Booted::New) => {}
        other => {
            report.failures.push(format!("{name}: the uncut update does not boot the new image: {other:?}"));
            return None;
        }
    }
    report.updates.push(cuts);
    Some(clean)
}

fn label_clean(name: &str) -> String {
    format!("{name}, uncut")
}

/// A push of the image for the slot the agent asks for, as `cargo tcpflash` sends it.
fn push(
    blinky: &Blinky,
    flash: &mut impl NorFlash,
    running: Option<SlotId>,
) -> Vec<ota_agent::client::Event> {
    let mut sector = [0u8; SECTOR];
    let mut agent = Agent::new(&mut sector, blinky.layout, running);
    client_push(&mut agent, flash, blinky.image_refs(), true)
}

fn sector_of(flash: &RamNor<Vec<u8>>) -> Vec<u8> {
    let at = BOOT_CONFIG_OFFSET as usize;
    flash.bytes()[at..at + SECTOR_SIZE as usize].to_vec()
}

/// The states a torn write of the config can leave, taken from the program operations the
/// agent really performed after erasing the config sector (`programs`), in their order: cut
/// at each byte of the config. While the magic byte is still erased, rBoot refuses the
/// config whatever else it holds, so those cuts are taken byte by byte; from the magic byte
/// on, the byte being programmed is tried in every state its bits can be in mid-program
/// (any subset of its 0 bits programmed), which byte-level tearing would not reach.
fn config_tears(clean: &RamNor<Vec<u8>>, programs: &[FlashOp]) -> Vec<(String, RamNor<Vec<u8>>)> {
    let at = BOOT_CONFIG_OFFSET as usize;
    let config = at..at + CONFIG_STRUCT_LEN;
    let target = clean.bytes();
    let mut state = target.to_vec();
    state[at..at + SECTOR_SIZE as usize].fill(0xFF);
    let mut tears = Vec::new();
    for op in programs {
        let FlashOp::Program { offset, len } = *op else { continue };
        for p in offset as usize..(offset + len) as usize {
            if config.contains(&p) {
                let last = target[p];
                let zeros = !last;
                let magic_started = p == at || state[at] != 0xFF;
                // Subsets of the 0 bits, from none programmed up to all but one.
                let mut programmed = 0u8;
                loop {
                    if programmed != zeros && (magic_started || programmed == 0) {
                        let mut torn = state.clone();
                        torn[p] = !programmed;
                        tears.push((
                            format!(
                                "agent's config write torn at config byte {} ({:#04x} on the way to {last:#04x})",
                                p - at,
                                torn[p]
                            ),
                            RamNor::from_storage(torn),
                        ));
                    }
                    if programmed == zeros {
                        break;
                    }
                    programmed = (programmed.wrapping_sub(zeros)) & zeros;
                }
            }
            state[p] = target[p];
        }
    }
    // Cut right after the last byte: the whole config is in place.
    tears.push(("agent's config write cut just after its last byte".to_owned(), RamNor::from_storage(state)));
    tears
}

/// `flash` with the config sector erased and then the first `k` bytes of `sector` written.
fn with_sector_prefix(flash: &RamNor<Vec<u8>>, sector: &[u8], k: usize) -> RamNor<Vec<u8>> {
    let mut bytes = flash.bytes().to_vec();
    let at = BOOT_CONFIG_OFFSET as usize;
    bytes[at..at + SECTOR_SIZE as usize].fill(0xFF);
    bytes[at..at + k].copy_from_slice(&sector[..k]);
    RamNor::from_storage(bytes)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Booted {
    Old,
    New,
}

/// Where the slots' contents of a state come from: rBoot writes only the config sector, so
/// a state is known by its origin and its config sector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Origin {
    /// The agent's update cut at this operation.
    AgentCut(usize),
    /// The update done (only its config write torn).
    Uncut,
}

struct Judge<'a> {
    blinky: &'a Blinky,
    /// The slot running before the update.
    old: SlotId,
    /// States reached through rBoot's rewrites already judged: many torn config writes make
    /// rBoot write the very same sector, so their cuts are the same states.
    seen: HashSet<(Origin, Vec<u8>)>,
}

impl Judge<'_> {
    /// Power is back on `flash`: rBoot boots, the boot is judged, and at the top level
    /// (`depth` 0) the booted agent takes a push. When rBoot rewrites its config on the way,
    /// that rewrite is cut at each of its operations (up to [`MAX_RBOOT_DEPTH`] in a row)
    /// and, after the agent's cuts, torn at each byte of the config.
    fn power_returns(
        &mut self,
        label: &str,
        flash: RamNor<Vec<u8>>,
        origin: Origin,
        depth: usize,
        cuts: &mut UpdateCuts,
        report: &mut CutReport,
    ) {
        let start = flash.ops();
        let mut booted = flash.clone();
        let boot = rboot::boot(&mut booted);
        let rewrites = booted.ops() - start;
        if rewrites > 0 && depth < MAX_RBOOT_DEPTH {
            let mut states = Vec::new();
            for cut in 0..rewrites {
                let label = format!("{label}; rBoot's config rewrite cut at its op {cut} of {rewrites}");
                let mut torn = flash.clone();
                torn.cut_power_at(start + cut);
                match rboot::boot(&mut torn) {
                    Err(Bricked::Flash(_)) => {}
                    other => report.failures.push(format!("{label}: rBoot went on without power: {other:?}")),
                }
                torn.restore_power();
                states.push((label, torn, false));
            }
            if depth == 0 {
                let written = sector_of(&booted);
                for k in 0..=CONFIG_STRUCT_LEN {
                    let label = format!("{label}; rBoot's config write torn after byte {k}");
                    states.push((label, with_sector_prefix(&flash, &written, k), true));
                }
            }
            for (label, state, is_tear) in states {
                if !self.seen.insert((origin, sector_of(&state))) {
                    continue;
                }
                if is_tear {
                    cuts.config_tears += 1;
                } else {
                    cuts.rboot_cuts += 1;
                }
                self.power_returns(&label, state, origin, depth + 1, cuts, report);
            }
        }
        match self.boot(label, &mut booted, boot) {
            Ok(Booted::Old) => cuts.booted_old += 1,
            Ok(Booted::New) => cuts.booted_new += 1,
            Err(problem) => return report.failures.push(problem),
        }
        if depth == 0
            && let Err(problem) = self.next_push_lands(label, booted)
        {
            report.failures.push(problem);
        }
    }

    /// Judges what rBoot booted: a slot holding example-blinky's image for it, intact.
    fn boot(
        &self,
        label: &str,
        flash: &mut RamNor<Vec<u8>>,
        boot: Result<Boot, Bricked>,
    ) -> Result<Booted, String> {
        let layout = self.blinky.layout;
        let boot = boot.map_err(|bricked| format!("{label}: bricked: {bricked}"))?;
        let slot = boot
            .slot(layout)
            .ok_or_else(|| format!("{label}: booted ROM {} at {:#x}, not a slot", boot.rom, boot.offset))?;
        let status = inspect_slot(flash, layout.slot(slot));
        let info = status
            .check
            .map_err(|error| format!("{label}: booted {slot}, which fails the check: {error}"))?;
        let expected = self.blinky.image(slot);
        let at = layout.slot(slot).offset as usize;
        let held = &flash.bytes()[at..at + expected.len()];
        if info.len as usize != expected.len() || held != expected {
            let first = held.iter().zip(expected).position(|(a, b)| a != b);
            return Err(format!(
                "{label}: booted {slot}, whose image is not {} byte for byte (first difference at {first:?})",
                slot.file_name()
            ));
        }
        match status.descriptor {
            Some(descriptor) if descriptor.name() == self.blinky.name => {}
            other => {
                return Err(format!(
                    "{label}: booted {slot}, whose descriptor is not {}'s: {other:?}",
                    self.blinky.name
                ));
            }
        }
        Ok(if slot == self.old { Booted::Old } else { Booted::New })
    }

    /// The agent of the booted firmware takes the next push, and rBoot boots it.
    fn next_push_lands(&self, label: &str, mut flash: RamNor<Vec<u8>>) -> Result<(), String> {
        let running = rboot::boot(&mut flash).ok().and_then(|boot| boot.slot(self.blinky.layout));
        let events = push(self.blinky, &mut flash, running);
        if !succeeded(&events) {
            return Err(format!("{label}: after recovery the next push failed: {events:?}"));
        }
        let boot = rboot::boot(&mut flash);
        let next = Judge { blinky: self.blinky, old: running.unwrap_or(SlotId::User1), seen: HashSet::new() };
        match next.boot(&format!("{label}; after the next push"), &mut flash, boot)? {
            Booted::New => Ok(()),
            Booted::Old => Err(format!("{label}: after the next push rBoot still boots {running:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use ota_agent::boot::BootConfig;

    use super::*;

    /// The factory flash with `bytes` at the start of `slot` and the config booting `slot`.
    fn booting(blinky: &Blinky, slot: SlotId, bytes: &[u8]) -> RamNor<Vec<u8>> {
        let mut flash = blinky.factory.clone();
        let at = blinky.layout.slot(slot).offset as usize;
        flash[at..at + bytes.len()].copy_from_slice(bytes);
        let config = BootConfig::for_layout(blinky.layout, slot).to_bytes();
        let at = BOOT_CONFIG_OFFSET as usize;
        flash[at..at + config.len()].copy_from_slice(&config);
        RamNor::from_storage(flash)
    }

    fn judged(blinky: &Blinky, mut flash: RamNor<Vec<u8>>) -> Result<Booted, String> {
        let boot = rboot::boot(&mut flash);
        Judge { blinky, old: SlotId::User1, seen: HashSet::new() }.boot("case", &mut flash, boot)
    }

    #[test]
    fn the_campaign_cuts_every_operation_of_both_updates_and_finds_nothing() {
        let blinky = Blinky::small();
        let mut uncut = blinky.factory_flash();
        assert!(succeeded(&push(&blinky, &mut uncut, Some(SlotId::User1))));
        let ops = uncut.ops() as usize;

        let report = campaign(&blinky);
        assert!(report.failures.is_empty(), "{report}");
        assert_eq!(report.updates.len(), 2);
        for update in &report.updates {
            assert_eq!(update.agent_ops, ops, "every operation of the update is a cut point");
            assert!(update.booted_old > 0 && update.booted_new > 0, "{report}");
            assert!(update.rboot_cuts > 0, "a torn config erase makes rBoot rewrite it: {report}");
            assert!(update.config_tears > CONFIG_STRUCT_LEN, "{report}");
        }
        let text = report.to_string();
        assert!(text.ends_with(&format!("power cuts: cut_points={} failures=0\n", report.cut_points())));
    }

    #[test]
    fn a_switch_to_a_torn_image_is_a_failure() {
        let blinky = Blinky::small();
        // A page of IROM never programmed: rBoot, which checks only the RAM segments, boots it.
        let mut torn = blinky.images[1].clone();
        torn[1024..1280].fill(0xFF);
        let problem = judged(&blinky, booting(&blinky, SlotId::User2, &torn)).unwrap_err();
        assert!(problem.starts_with("case: booted user2, which fails the check"), "{problem}");
    }

    #[test]
    fn a_good_image_that_is_neither_file_is_a_failure() {
        let blinky = Blinky::small();
        let other = crate::qemu::test_image(blinky.layout.slot(SlotId::User2), "3.0.0", 3);
        let problem = judged(&blinky, booting(&blinky, SlotId::User2, &other)).unwrap_err();
        assert!(problem.contains("is not user2.bin byte for byte"), "{problem}");
        assert_eq!(judged(&blinky, booting(&blinky, SlotId::User2, &blinky.images[1])), Ok(Booted::New));
    }

    #[test]
    fn a_firmware_that_is_not_the_agents_is_a_failure() {
        let mut blinky = Blinky::small();
        blinky.name = "example-blinky".into();
        let problem = judged(&blinky, booting(&blinky, SlotId::User1, &blinky.images[0])).unwrap_err();
        assert!(problem.contains("whose descriptor is not example-blinky's"), "{problem}");
    }

    #[test]
    fn a_bricked_device_is_a_failure() {
        let blinky = Blinky::small();
        let mut flash = booting(&blinky, SlotId::User2, &[0xAA; 16]).into_storage();
        let at = blinky.layout.slot(SlotId::User1).offset as usize;
        flash[at] = 0;
        let problem = judged(&blinky, RamNor::from_storage(flash)).unwrap_err();
        assert!(problem.starts_with("case: bricked: no good ROM"), "{problem}");
    }
}
