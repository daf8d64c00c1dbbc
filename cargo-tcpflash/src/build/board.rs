//! The boards a firmware builds for. Same layouts, link addresses and images on each; what
//! differs is the start-up code (stack, how `abort` resets), the board's own assembly, and
//! the `tcpflash_board` cfg the firmware's code selects its drivers with.

use ota_agent::boards::{esp8266, xtfpga};

/// A board `cargo tcpflash build --board` knows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Board {
    /// An ESP8266: the bootloader has set the stack; the ROM resets.
    #[default]
    Esp8266,
    /// QEMU's XTFPGA board with an lx106 core (`-M lx60-nommu -cpu lx106`): no ROM.
    Qemu,
}

impl Board {
    pub const ALL: [Board; 2] = [Board::Esp8266, Board::Qemu];

    /// The name on the command line, in `[package.metadata.tcpflash] board`, and in the cfg.
    pub fn name(self) -> &'static str {
        match self {
            Board::Esp8266 => "esp8266",
            Board::Qemu => "qemu",
        }
    }

    pub fn from_name(name: &str) -> Option<Board> {
        Board::ALL.into_iter().find(|board| board.name() == name)
    }

    /// The names, for messages: `esp8266, qemu`.
    pub fn names() -> String {
        Board::ALL.map(Board::name).join(", ")
    }

    /// Name of the rustc target spec. One per board, so cargo keeps each board's build in
    /// its own directory instead of rebuilding everything when the cfg changes.
    pub fn target_name(self) -> &'static str {
        match self {
            Board::Esp8266 => super::support::TARGET_NAME,
            Board::Qemu => "xtensa-xtfpga-none-elf",
        }
    }

    /// rustc flags that announce the board: `cfg(tcpflash_board = "...")`, declared so no
    /// crate warns about an unexpected cfg.
    pub fn rustc_flags(self) -> [String; 2] {
        let values = Board::ALL.map(|board| format!("\"{}\"", board.name())).join(", ");
        [
            format!("--cfg=tcpflash_board=\"{}\"", self.name()),
            format!("--check-cfg=cfg(tcpflash_board, values({values}))"),
        ]
    }

    /// Assembly the board needs linked into every firmware.
    pub fn asm(self) -> Option<&'static str> {
        match self {
            Board::Esp8266 => None,
            Board::Qemu => Some(xtfpga::ASM),
        }
    }

    /// Whether a bootloader must fit sector 0 (4096 bytes with its header): on an ESP8266
    /// the mask ROM loads it from there. QEMU's board has room (its stand-in for the mask
    /// ROM loads whatever v1 image flash 0x0 holds), so its build of a bootloader may carry
    /// what the sector could not.
    pub fn bootloader_in_sector_0(self) -> bool {
        self == Board::Esp8266
    }

    /// Literals the entry code below needs.
    pub(super) fn entry_literals(self) -> String {
        match self {
            Board::Esp8266 => String::new(),
            Board::Qemu => format!("    .literal .Lstack_top, {:#x}\n", xtfpga::STACK_TOP),
        }
    }

    /// Instructions at the entry, before `.bss` is cleared. An ESP8266's bootloader has set
    /// the stack; QEMU starts a `-kernel` with none, so set it (at the top of dataram0,
    /// where a bootloader leaves it too: harmless after one).
    pub(super) fn entry_code(self) -> &'static str {
        match self {
            Board::Esp8266 => "",
            Board::Qemu => "    l32r a1, .Lstack_top\n",
        }
    }

    /// Literals and instructions of `abort` (LLVM's trap), after its label: a reset, so
    /// the board comes back and still listens for the next push.
    pub(super) fn abort(self) -> (String, &'static str) {
        match self {
            Board::Esp8266 => (
                format!("    .literal .Lsoftware_reset, {:#x}\n", esp8266::rom::SOFTWARE_RESET),
                "    l32r a0, .Lsoftware_reset\n    callx0 a0\n",
            ),
            Board::Qemu => (
                format!(
                    "    .literal .Lreset_register, {:#x}\n    .literal .Lreset_magic, {:#x}\n",
                    xtfpga::RESET_REGISTER,
                    xtfpga::RESET_MAGIC
                ),
                "    l32r a2, .Lreset_register\n    l32r a3, .Lreset_magic\n    s32i a3, a2, 0\n",
            ),
        }
    }
}

impl std::fmt::Display for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_esp8266_bootloader_must_fit_sector_0() {
        assert!(Board::Esp8266.bootloader_in_sector_0());
        assert!(!Board::Qemu.bootloader_in_sector_0());
    }
}
