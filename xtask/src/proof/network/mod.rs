//! The network-fault campaign: whatever a client or the network does, the device keeps
//! running the slot it ran, listens again, and takes the next push.
//!
//! Three rigs, each pushing example-blinky's real images:
//!
//! - the session in memory (simulated time, so hundreds of cases are cheap): the connection
//!   closed or reset at every byte of the request lines and at many offsets of the image,
//!   garbage at every byte of the request lines, a stall at every step;
//! - the virtual ESP8266 (`VirtualDevice`) on a real TCP listener on 127.0.0.1, with a short
//!   idle timeout: closes and resets at every protocol step and at image offsets, stalls,
//!   garbage, a second client during a transfer; each case is followed by a push with
//!   `cargo tcpflash`'s own push code and a wait for the device to come back on the new slot;
//! - the agent on smoltcp (`tcpflash_sim::wire`): pushes over a wire that drops and
//!   corrupts packets, with a small MTU: each lands intact or fails with a clear error, and
//!   a push over a clean wire follows.

mod hostile;
mod session;
mod tcp;
mod wire;

use std::fmt;

use std::time::Duration as StdDuration;
use tcpflash_sim::wire::LinkFaults;

use ota_agent::boot::CONFIG_STRUCT_LEN;
use ota_agent::flash::RamNor;
use ota_agent::layout::{BOOT_CONFIG_OFFSET, SlotId};
use ota_agent::protocol::{LineBuf, Reply, ReplyLine, Request};
use ota_agent::session::Failure;
use ota_agent::writer::SECTOR;
use tcpflash_sim::rboot;

use crate::proof::Blinky;

/// How the campaign runs.
#[derive(Clone, Debug)]
pub struct NetOptions {
    /// The virtual device's idle timeout: short, so stalls cost little.
    pub tcp_idle_timeout: StdDuration,
    /// Virtual devices serving the TCP cases side by side (each case waits for a reboot).
    pub tcp_devices: usize,
    /// Image offsets closed at in memory: every `stride` bytes, and around each sector edge.
    pub session_stride: usize,
    /// The smoltcp pushes: (drop %, corrupt %, MTU); each runs with two seeds.
    pub smoltcp_links: Vec<(u8, u8, usize)>,
}

impl Default for NetOptions {
    fn default() -> NetOptions {
        let mut links = Vec::new();
        for drop in [0, 5, 15, 30] {
            for corrupt in [0, 10] {
                for mtu in [1500, 296] {
                    links.push((drop, corrupt, mtu));
                }
            }
        }
        NetOptions {
            tcp_idle_timeout: StdDuration::from_secs(1),
            tcp_devices: 4,
            session_stride: 997,
            smoltcp_links: links,
        }
    }
}

/// The campaign's figures and every failure, described.
#[derive(Clone, Debug, Default)]
pub struct NetReport {
    pub session_cases: usize,
    pub tcp_cases: usize,
    pub smoltcp_cases: usize,
    /// Hostile clients: trickling, silent, over-long images, failed proofs from another
    /// address, a flood, over TCP and on smoltcp.
    pub hostile_cases: usize,
    /// Each smoltcp push's wire and outcome: `None` when it landed, else the client's error.
    /// The wire is simulated, so the outcome of each seed is reproducible.
    pub smoltcp_outcomes: Vec<(LinkFaults, Option<String>)>,
    pub failures: Vec<String>,
}

impl NetReport {
    pub fn cases(&self) -> usize {
        self.session_cases + self.tcp_cases + self.smoltcp_cases + self.hostile_cases
    }

    /// smoltcp pushes that landed.
    pub fn smoltcp_landed(&self) -> usize {
        self.smoltcp_outcomes.iter().filter(|(_, error)| error.is_none()).count()
    }
}

impl fmt::Display for NetReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "session in memory: {} cases", self.session_cases)?;
        writeln!(f, "virtual ESP8266 over TCP: {} cases", self.tcp_cases)?;
        writeln!(f, "hostile clients (TCP and smoltcp): {} cases", self.hostile_cases)?;
        writeln!(
            f,
            "smoltcp over a faulty wire: {} pushes, {} landed, {} failed with an error",
            self.smoltcp_cases,
            self.smoltcp_landed(),
            self.smoltcp_cases - self.smoltcp_landed()
        )?;
        let mut errors: Vec<&String> =
            self.smoltcp_outcomes.iter().filter_map(|(_, error)| error.as_ref()).collect();
        errors.sort();
        errors.dedup();
        for error in errors {
            writeln!(f, "    error seen: {error}")?;
        }
        for failure in &self.failures {
            writeln!(f, "FAILED: {failure}")?;
        }
        writeln!(f, "network faults: cases={} failures={}", self.cases(), self.failures.len())
    }
}

/// Runs the three rigs.
pub fn campaign(blinky: &Blinky, options: &NetOptions) -> NetReport {
    let mut report = NetReport::default();
    session::cases(blinky, options, &mut report);
    tcp::cases(blinky, options, &mut report);
    wire::cases(blinky, options, &mut report);
    hostile::cases(blinky, &mut report);
    report
}

/// What the seed client sends before the image, for an image of `len` bytes.
pub(super) fn request_lines(len: usize) -> Vec<u8> {
    let mut lines = LineBuf::<64>::new();
    Request::Ota.encode(&mut lines);
    Request::GetNextFlash.encode(&mut lines);
    Request::FirmwareLength(len as u32).encode(&mut lines);
    lines.as_bytes().to_vec()
}

pub(super) fn hello_len() -> usize {
    let mut lines = LineBuf::<64>::new();
    Request::Ota.encode(&mut lines);
    Request::GetNextFlash.encode(&mut lines);
    lines.len()
}

/// The replies a client hears when it stops after `sent` bytes of `request_lines` + image
/// and closes its side: the lines its complete requests earned, then, in the image,
/// `Invalid` and the truncation.
pub(super) fn replies_when_closed(target: SlotId, header: usize, image_len: usize, sent: usize) -> Vec<u8> {
    let truncated =
        Failure::Truncated { received: sent.saturating_sub(header) as u32, len: image_len as u32 };
    earned(target, header, sent, Some(&truncated), None)
}

/// The replies of a client that goes silent after `sent` bytes: its earned lines, then the
/// idle timeout (after `Invalid` in the image), or the request lines' own, shorter bound.
pub(super) fn replies_when_stalled(target: SlotId, header: usize, sent: usize) -> Vec<u8> {
    earned(target, header, sent, Some(&Failure::IdleTimeout), Some(&Failure::HeaderTimeout))
}

/// The lines `sent` bytes earn (the slot's name, `Ready`), then `in_image` after `Invalid`
/// when the cut falls in the image, or `in_header` when it falls before.
fn earned(
    target: SlotId,
    header: usize,
    sent: usize,
    in_image: Option<&Failure>,
    in_header: Option<&Failure>,
) -> Vec<u8> {
    let mut out = Vec::new();
    if sent >= hello_len() {
        out.extend_from_slice(Reply::NextSlot(target).encode().as_bytes());
    }
    let failure = if sent >= header {
        out.extend_from_slice(Reply::Ready.encode().as_bytes());
        out.extend_from_slice(Reply::Invalid.encode().as_bytes());
        in_image
    } else {
        in_header
    };
    if let Some(failure) = failure {
        out.extend_from_slice(ReplyLine::error_message(failure).as_bytes());
    }
    out
}

/// Where a connection is cut: each byte of the request lines, every `stride` bytes of the
/// image, and the bytes around each sector edge.
pub(super) fn cut_offsets(header: usize, image_len: usize, stride: usize) -> Vec<usize> {
    let mut offsets: Vec<usize> = (0..header).collect();
    offsets.extend((0..image_len).step_by(stride).map(|at| header + at));
    for edge in (SECTOR..image_len).step_by(SECTOR) {
        offsets.extend([edge - 1, edge, edge + 1].map(|at| header + at));
    }
    offsets.push(header + image_len - 1);
    offsets.sort_unstable();
    offsets.dedup();
    offsets
}

pub(super) fn expect_replies(label: &str, got: &[u8], expected: &[u8]) -> Result<(), String> {
    if got == expected {
        Ok(())
    } else {
        Err(format!(
            "{label}: replies {:?}, expected {:?}",
            got.escape_ascii().to_string(),
            expected.escape_ascii().to_string()
        ))
    }
}

pub(super) fn config_of(flash: &RamNor<Vec<u8>>) -> Vec<u8> {
    let at = BOOT_CONFIG_OFFSET as usize;
    flash.bytes()[at..at + CONFIG_STRUCT_LEN].to_vec()
}

/// rBoot boots `slot`, which holds its image byte for byte.
pub(super) fn check_landed(
    blinky: &Blinky,
    label: &str,
    flash: &mut RamNor<Vec<u8>>,
    slot: SlotId,
) -> Result<(), String> {
    let booted = rboot::boot(&mut flash.clone()).ok().and_then(|boot| boot.slot(blinky.layout));
    if booted != Some(slot) {
        return Err(format!("{label}: after the push rBoot boots {booted:?}, not {slot}"));
    }
    let image = blinky.image(slot);
    let at = blinky.layout.slot(slot).offset as usize;
    if &flash.bytes()[at..at + image.len()] != image {
        return Err(format!("{label}: {slot} does not hold {} byte for byte", slot.file_name()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn a_connection_is_cut_at_every_request_byte_and_around_every_sector_edge() {
        let offsets = cut_offsets(42, 3 * SECTOR + 10, 1000);
        assert!((0..42).all(|at| offsets.contains(&at)));
        for edge in [SECTOR, 2 * SECTOR, 3 * SECTOR] {
            assert!([edge - 1, edge, edge + 1].iter().all(|at| offsets.contains(&(42 + at))));
        }
        assert_eq!(offsets.last(), Some(&(42 + 3 * SECTOR + 9)), "the last image byte");
        assert!(offsets.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn the_replies_a_closing_client_hears_follow_the_protocol_table() {
        let header = request_lines(5000).len();
        assert_eq!(replies_when_closed(SlotId::User2, header, 5000, 3), b"");
        assert_eq!(replies_when_closed(SlotId::User2, header, 5000, hello_len()), b"user2.bin\r\n");
        assert_eq!(
            replies_when_closed(SlotId::User1, header, 5000, header + 7),
            b"user1.bin\r\nReady\r\nInvalid\r\nERR: Connection closed before the whole image arrived (7 of 5000 bytes)\r\n"
        );
        assert_eq!(replies_when_stalled(SlotId::User2, header, 0), b"ERR: Header lines too slow\r\n");
        assert_eq!(
            replies_when_stalled(SlotId::User2, header, header),
            b"user2.bin\r\nReady\r\nInvalid\r\nERR: Idle timeout\r\n"
        );
    }

    #[test]
    fn session_and_smoltcp_cases_pass_on_small_images_and_count() {
        let blinky = Blinky::small();
        let options =
            NetOptions { smoltcp_links: vec![(0, 0, 1500), (30, 10, 296)], ..NetOptions::default() };
        let mut report = NetReport::default();
        session::cases(&blinky, &options, &mut report);
        wire::cases(&blinky, &options, &mut report);
        assert!(report.failures.is_empty(), "{report}");
        let image_len = blinky.images[1].len();
        let header = request_lines(image_len).len();
        let garbage = header + 1;
        let stalls = 9;
        assert_eq!(report.session_cases, cut_offsets(header, image_len, 997).len() + garbage + stalls);
        assert_eq!(report.smoltcp_cases, 4);
        // The wire is simulated from its seed: each push's outcome is known exactly.
        let outcomes: Vec<(String, Option<String>)> = report
            .smoltcp_outcomes
            .iter()
            .map(|(faults, error)| (faults.to_string(), error.clone()))
            .collect();
        let closed = Some("the device closed the connection while waiting for the slot name".to_owned());
        assert_eq!(
            outcomes,
            [
                ("drop 0%, corrupt 0%, MTU 1500, seed 1".to_owned(), None),
                ("drop 0%, corrupt 0%, MTU 1500, seed 2".to_owned(), None),
                ("drop 30%, corrupt 10%, MTU 296, seed 3".to_owned(), closed.clone()),
                ("drop 30%, corrupt 10%, MTU 296, seed 4".to_owned(), closed),
            ],
            "{report}"
        );
    }

    #[test]
    fn a_reply_that_differs_is_a_failure_naming_both() {
        let problem = expect_replies("step", b"Ready\r\n", b"Invalid\r\n").unwrap_err();
        assert_eq!(problem, r#"step: replies "Ready\\r\\n", expected "Invalid\\r\\n""#);
    }
}
