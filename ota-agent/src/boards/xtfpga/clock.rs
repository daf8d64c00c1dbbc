//! A millisecond clock from the CPU cycle counter CCOUNT, which QEMU advances with host
//! time at the core's clock (the FPGA's clock register says which: 40 MHz for lx106).

use smoltcp::time::Instant;

use super::FPGA;

/// The FPGA register that holds the CPU clock in Hz.
const CLOCK_HZ: *const u32 = (FPGA + 0x4) as *const u32;

unsafe extern "C" {
    /// In `board.s`: `rsr a2, ccount`.
    fn tcpflash_xtfpga_ccount() -> u32;
}

/// The cycle counter now.
pub fn ccount() -> u32 {
    // SAFETY: reads a special register, touches no memory.
    unsafe { tcpflash_xtfpga_ccount() }
}

/// Time since the clock was made, extended past CCOUNT's 32-bit wrap (every 107 s at
/// 40 MHz) as long as `now` is called at least that often.
pub struct Clock {
    cycles_per_us: u64,
    last: u32,
    cycles: u64,
}

impl Clock {
    pub fn new() -> Clock {
        // SAFETY: a read-only FPGA register.
        let hz = unsafe { CLOCK_HZ.read_volatile() };
        Clock { cycles_per_us: u64::from(hz / 1_000_000).max(1), last: ccount(), cycles: 0 }
    }

    pub fn now(&mut self) -> Instant {
        let count = ccount();
        self.cycles += u64::from(count.wrapping_sub(self.last));
        self.last = count;
        Instant::from_micros((self.cycles / self.cycles_per_us) as i64)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
