//! QEMU's XTFPGA board (`-M lx60-nommu -cpu lx106`): the CFI flash through
//! `ota_agent::boards::xtfpga`'s driver (memory-mapped reads, buffered programs), the 16550
//! UART, and RAM where the ESP8266 has its flash cache: the booted image's IROM is copied to
//! where the cache would map it (instrom0 is RAM here). The hand-off record lands in system
//! RAM at the ESP8266's RTC address, which survives the FPGA reset.

use ota_agent::boards::xtfpga::{CfiFlash, Uart};
use ota_agent::boot::handoff::HandOff;
use ota_agent::boot::loader::{self, BoardError, BootBoard};
use ota_agent::flash::ReadNorFlash;

pub struct Xtfpga {
    flash: CfiFlash,
}

/// The board tcpflash-boot runs on.
pub fn board() -> Xtfpga {
    Xtfpga { flash: CfiFlash::new() }
}

impl BootBoard for Xtfpga {
    fn read_flash(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), BoardError> {
        self.flash.read(offset, buf).map_err(|_| BoardError)
    }

    fn program_word(&mut self, offset: u32, word: u32) -> Result<(), BoardError> {
        self.flash.program_word(offset, word).map_err(|_| BoardError)
    }

    fn print_byte(&mut self, byte: u8) {
        Uart::write_byte(byte);
    }

    unsafe fn copy_segment(&mut self, offset: u32, addr: u32, len: u32) -> Result<(), BoardError> {
        // SAFETY: the caller vouches for addr..addr + len.
        unsafe { self.flash.copy_words(offset, addr as *mut u32, len) }.map_err(|_| BoardError)
    }

    unsafe fn place_irom(&mut self, offset: u32, addr: u32, len: u32) -> Result<(), BoardError> {
        // SAFETY: as for a segment: instrom0 is RAM nothing running uses.
        unsafe { self.flash.copy_words(offset, addr as *mut u32, len) }.map_err(|_| BoardError)
    }

    unsafe fn jump(&mut self, handoff: &HandOff, entry: u32) -> ! {
        // SAFETY: system RAM holds the record; the caller copied the firmware.
        unsafe { loader::hand_over(handoff, entry) }
    }
}
