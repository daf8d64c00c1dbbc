//! example-blinky on QEMU's XTFPGA board (`-M lx60-nommu -cpu lx106`), booted by
//! tcpflash-boot, both built with `--board qemu`: the board itself ([`QemuBoard`], the flash
//! file's factory install) lives in cargo-tcpflash, which serves it as `cargo tcpflash sim
//! --board qemu`; here is what the repository checks it with.
//!
//! [`host_boot`] runs the bootloader's flow on the host over a copy of a flash, which tells a
//! test exactly what the board must print and hand over; QMP (`xp`, `info registers`) reads
//! the hand-off record and the CPU's state back from the running board. [`cases`] are the
//! pushes, refusals, power cuts, trial boots and boot decisions the tests and `cargo xtask
//! proof` run on the board.

pub mod cases;

use std::time::Duration;

pub use cargo_tcpflash::qemu_board::{
    BOOT_PREFIX, BoardError, Line, QemuBoard, RUN_LIMIT, SECTOR_0_LABEL, build_bootloader, build_firmware,
    factory_flash, sector_0_stand_in,
};
use ota_agent::boot::handoff::HandOff;
use ota_agent::boot::loader::{self, Halt, HostBoard, Launch, LoaderBuffers};

/// What tcpflash-boot does with a flash, worked out on the host by the same flow
/// ([`loader::load`] on a [`HostBoard`]).
#[derive(Clone, Debug)]
pub struct HostBoot {
    /// Its UART lines, without line ends.
    pub lines: Vec<String>,
    pub result: Result<Launch, Halt>,
    /// The flash after the boot (a trial boot programs an attempt bit).
    pub flash: Vec<u8>,
    /// The IROM it places: address and bytes.
    pub irom: Option<(u32, Vec<u8>)>,
}

/// Runs the bootloader's flow over a copy of `flash`.
pub fn host_boot(flash: &[u8]) -> HostBoot {
    let mut board = HostBoard::new(flash.to_vec());
    let result = loader::load(&mut board, &mut LoaderBuffers::new());
    let text = board.console_text();
    HostBoot {
        lines: text.split_terminator("\r\n").map(str::to_string).collect(),
        result,
        flash: board.flash.bytes().to_vec(),
        irom: board.irom.take(),
    }
}

/// Checks that the board, whose UART lines from `from` on follow a boot from a flash that
/// held `before`, booted as [`host_boot`] says: the same bootloader lines, then either the
/// firmware's first line and the same hand-off record in RAM, or (nothing bootable) the CPU
/// still in the bootloader. Returns the index of the last line checked and the host's boot.
pub fn check_boot(
    board: &mut QemuBoard,
    from: usize,
    before: &[u8],
    patience: Duration,
) -> Result<(usize, HostBoot), String> {
    let expected = host_boot(before);
    let last = expected.lines.last().ok_or("the host's boot printed nothing")?;
    let at =
        board.wait_line(last, from, patience).map_err(|error| format!("{:?}", miette::Report::new(error)))?;
    let texts = board.texts();
    let printed: Vec<&str> =
        texts[from..=at].iter().map(String::as_str).filter(|line| line.starts_with(BOOT_PREFIX)).collect();
    if printed != expected.lines {
        return Err(format!("the bootloader printed {printed:#?}, the host's run {:#?}", expected.lines));
    }
    match &expected.result {
        Ok(launch) => {
            // The record is written just before the jump: the firmware's first line follows it.
            let booted = board
                .wait_line(" booted", at + 1, patience)
                .map_err(|error| format!("{:?}", miette::Report::new(error)))?;
            let words = board.handoff().map_err(|error| error.to_string())?;
            if HandOff::parse_words(words) != Ok(launch.handoff) {
                return Err(format!(
                    "the hand-off in RAM is {words:08x?}, the host expects {:?}",
                    launch.handoff
                ));
            }
            // The IROM's head (the slot descriptor) where the cache would map it.
            if let Some((addr, bytes)) = &expected.irom {
                let head: Vec<u32> = bytes
                    .chunks_exact(4)
                    .take(16)
                    .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
                    .collect();
                let placed = board.read_words(*addr, head.len()).map_err(|error| error.to_string())?;
                if placed != head {
                    return Err(format!("IROM at {addr:#010x} holds {placed:08x?}, the image {head:08x?}"));
                }
            }
            Ok((booted, expected))
        }
        Err(_) => {
            let pc = board.pc().map_err(|error| error.to_string())?;
            if !ota_agent::layout::BOOTLOADER_IRAM.contains(&pc) {
                return Err(format!("halted, yet the CPU is at {pc:#010x}, outside the bootloader"));
            }
            Ok((at, expected))
        }
    }
}
