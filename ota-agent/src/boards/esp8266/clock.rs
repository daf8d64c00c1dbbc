//! CPU clock set-up and a millisecond clock from the FRC2 timer.

use smoltcp::time::Instant;

use super::rom;

/// APB clock after [`init_80mhz`]: what timers and UART dividers count.
pub const APB_HZ: u32 = 80_000_000;

const FRC2_COUNT: *const u32 = 0x6000_0624 as *const u32;
const FRC2_CTRL: *mut u32 = 0x6000_0628 as *mut u32;
/// Enabled, free running, prescaler /256: 312.5 kHz.
const FRC2_ENABLE_DIV256: u32 = (1 << 7) | (2 << 2);
const FRC2_HZ: u64 = APB_HZ as u64 / 256;

/// Sets the PLL for 80 MHz from a 26 MHz crystal (the ROM boots as if the crystal were
/// 40 MHz), tells the ROM's delay loop, and starts FRC2.
pub fn init_80mhz() {
    // SAFETY: documented PLL values for 26 MHz crystals (I2C block 103, host 4); the ROM
    // routines have no other preconditions.
    unsafe {
        rom::rom_i2c_write_reg(103, 4, 1, 136);
        rom::rom_i2c_write_reg(103, 4, 2, 145);
        rom::ets_update_cpu_frequency(80);
        FRC2_CTRL.write_volatile(FRC2_ENABLE_DIV256);
    }
}

/// Milliseconds since [`init_80mhz`], extended past FRC2's 32-bit wrap (every 3.8 hours) as
/// long as `now` is called at least that often.
pub struct Clock {
    last: u32,
    ticks: u64,
}

impl Clock {
    pub const fn new() -> Clock {
        Clock { last: 0, ticks: 0 }
    }

    pub fn now(&mut self) -> Instant {
        // SAFETY: read-only timer register.
        let count = unsafe { FRC2_COUNT.read_volatile() };
        self.ticks += u64::from(count.wrapping_sub(self.last));
        self.last = count;
        Instant::from_micros((self.ticks * 1_000_000 / FRC2_HZ) as i64)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
