//! The ESP8266 board: the mask ROM's SPI flash and UART routines (through function
//! pointers, `ota_agent::boards::esp8266::rom`), RTC memory for the hand-off, a call to the
//! entry point. The flash cache is off the whole time, so the ROM's SPI routines need no
//! cache juggling. Not yet run on a board (see the README).

use ota_agent::boards::esp8266::rom;
use ota_agent::boot::handoff::HandOff;
use ota_agent::boot::loader::{self, BoardError, BootBoard};

/// Writing 0x73 here feeds the hardware watchdog the ROM leaves running (what Sming's
/// `WDT.alive()` does): checking a slot reads up to a megabyte.
const WDT_FEED: *mut u32 = 0x6000_0914 as *mut u32;
const WDT_FEED_VALUE: u32 = 0x73;

pub struct Esp8266;

/// The board tcpflash-boot runs on.
pub fn board() -> Esp8266 {
    Esp8266
}

fn feed_watchdog() {
    // SAFETY: a write-only register, always mapped.
    unsafe { WDT_FEED.write_volatile(WDT_FEED_VALUE) };
}

fn status(code: i32) -> Result<(), BoardError> {
    if code == 0 { Ok(()) } else { Err(BoardError) }
}

impl BootBoard for Esp8266 {
    fn read_flash(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), BoardError> {
        // SPIRead moves whole words to a word-aligned buffer.
        if !offset.is_multiple_of(4) || !buf.len().is_multiple_of(4) || !buf.as_ptr().cast::<u32>().is_aligned() {
            return Err(BoardError);
        }
        feed_watchdog();
        // SAFETY: an aligned, exclusive buffer of `buf.len()` bytes; the cache is off.
        status(unsafe { rom::spi_read(offset, buf.as_mut_ptr().cast(), buf.len() as u32) })
    }

    fn program_word(&mut self, offset: u32, word: u32) -> Result<(), BoardError> {
        let word = [word];
        // SAFETY: an aligned word on the stack; the cache is off.
        unsafe {
            status(rom::spi_unlock())?;
            status(rom::spi_write(offset, word.as_ptr(), 4))
        }
    }

    fn print_byte(&mut self, byte: u8) {
        // SAFETY: the ROM's UART0 routine; the ROM set the UART up.
        unsafe { rom::uart_tx_one_char(byte) };
    }

    unsafe fn copy_segment(&mut self, offset: u32, addr: u32, len: u32) -> Result<(), BoardError> {
        feed_watchdog();
        // SAFETY: the caller vouches for addr..addr + len (aligned: segment addresses and
        // lengths are words); SPIRead writes it word by word.
        status(unsafe { rom::spi_read(offset, addr as *mut u32, len) })
    }

    unsafe fn jump(&mut self, handoff: &HandOff, entry: u32) -> ! {
        // SAFETY: RTC user memory holds the record; the caller copied the firmware.
        unsafe { loader::hand_over(handoff, entry) }
    }
}
