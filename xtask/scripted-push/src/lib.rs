//! A scripted OTA push through the device code: `ota_agent::session::Session` with its sector
//! writer and image validator, over a flash that lives in RAM.
//!
//! The same runner is compiled twice: into the lx106 program `xtask/qemu-agent` that QEMU
//! runs, and into xtask on the host, where it runs over `ota_agent::flash::RamNor`. Both write
//! a transcript (every reply line, the final state and the whole flash) in the format of
//! [`script`], so any difference between the compiled device code and its host build shows up
//! as differing bytes.
#![cfg_attr(not(test), no_std)]

pub mod script;

use ota_agent::layout::{FlashLayout, Slot, SlotId};

/// Bytes of the RAM flash: the boot config sector and two 8 KB slots.
pub const FLASH_SIZE: usize = 0x8000;

/// A flash small enough for the ESP8266's 80 KB of DRAM (the real layouts need 512 KB and
/// more), shaped like rBoot's default: ROM 0 at 0x2000, ROM 1 at half the flash + 0x2000, so
/// a lost config recreated by rBoot's rule still names both slots.
pub const LAYOUT: FlashLayout = FlashLayout {
    name: "qemu-32KB",
    flash_size: FLASH_SIZE as u32,
    slots: [
        Slot { id: SlotId::User1, offset: 0x2000, capacity: 0x2000 },
        Slot { id: SlotId::User2, offset: 0x6000, capacity: 0x2000 },
    ],
};

/// Exit codes of the QEMU program (QEMU exits with them).
pub mod exit_code {
    pub const DONE: u32 = 0;
    pub const NO_SCRIPT: u32 = 3;
    pub const BAD_SCRIPT: u32 = 4;
    pub const PANIC: u32 = 101;
    /// LLVM's trap (`abort`, in the program's `semihosting.s`).
    pub const ABORT: u32 = 134;

    /// What an exit code says, for error messages.
    pub const fn meaning(code: u32) -> &'static str {
        match code {
            DONE => "done",
            NO_SCRIPT => "the program could not open script.bin",
            BAD_SCRIPT => "the program could not run the script",
            PANIC => "the program panicked",
            ABORT => "the program trapped (abort)",
            _ => "not one of the program's exit codes: QEMU itself failed",
        }
    }
}
