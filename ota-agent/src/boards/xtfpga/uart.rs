//! The board's 16550 UART (QEMU's `-serial`, stdout with `-nographic`), transmit only:
//! what the firmware says about itself.

use core::fmt;

use super::UART_BASE as BASE;

/// Registers are 4 bytes apart (register shift 2).
const THR: *mut u32 = BASE as *mut u32;
const LSR: *const u32 = (BASE + 5 * 4) as *const u32;
/// Line status: the transmit holding register is empty.
const LSR_THRE: u32 = 0x20;

/// Write with `write!`/`writeln!`; `\n` goes out as CR LF.
pub struct Uart;

impl Uart {
    pub fn write_byte(byte: u8) {
        // SAFETY: the UART's line status and transmit registers; nothing else drives them.
        unsafe {
            while LSR.read_volatile() & LSR_THRE == 0 {}
            THR.write_volatile(u32::from(byte));
        }
    }
}

impl fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                Uart::write_byte(b'\r');
            }
            Uart::write_byte(byte);
        }
        Ok(())
    }
}
