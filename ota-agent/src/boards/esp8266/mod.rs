//! ESP8266 backends: the ROM's flash routines, reboot, a millisecond clock, the watchdog,
//! GPIO2's LED and IP over SLIP on UART0, by register access and ROM calls only (upstream
//! rustc refuses inline asm for lx106).
//!
//! Only the ROM addresses are compiled on the host (the start-up code cargo-tcpflash
//! generates needs one). Nothing here can run on the host or under QEMU (no ESP8266 peripherals there): it is
//! compiled for lx106 in CI as part of `example-blinky`, and not yet verified on a board.

#[cfg(target_arch = "xtensa")]
pub mod clock;
#[cfg(target_arch = "xtensa")]
pub mod flash;
#[cfg(target_arch = "xtensa")]
pub mod led;
pub mod rom;
#[cfg(target_arch = "xtensa")]
pub mod slip_uart;
#[cfg(target_arch = "xtensa")]
pub mod watchdog;

#[cfg(target_arch = "xtensa")]
pub use clock::{Clock, init_80mhz};
#[cfg(target_arch = "xtensa")]
pub use flash::RomFlash;
#[cfg(target_arch = "xtensa")]
pub use led::Led;
#[cfg(target_arch = "xtensa")]
pub use slip_uart::SlipUart;
#[cfg(target_arch = "xtensa")]
pub use watchdog::Watchdog;

/// Reboots through the ROM, so rBoot runs again and starts the slot its config names.
#[cfg(target_arch = "xtensa")]
pub struct Esp8266;

#[cfg(target_arch = "xtensa")]
impl crate::net::Platform for Esp8266 {
    fn reboot(&mut self) {
        reset()
    }

    fn fill_random(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(4) {
            let word = hardware_random().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    fn boot_handoff(&mut self) -> Option<crate::boot::handoff::HandOff> {
        crate::boot::handoff::read_handoff()
    }
}

/// The hardware random number generator: a fresh 32-bit value at each read. Espressif's
/// SDK reads the same register for `os_random()`; its entropy comes from the RF subsystem,
/// so it is at its best with the radio on (a firmware without WiFi should know that).
#[cfg(target_arch = "xtensa")]
const RANDOM_REGISTER: *const u32 = 0x3FF2_0E44 as *const u32;

#[cfg(target_arch = "xtensa")]
fn hardware_random() -> u32 {
    // SAFETY: a read-only register, always mapped.
    unsafe { RANDOM_REGISTER.read_volatile() }
}

/// The eFuse words that hold the chip's MAC (as esptool's `read_mac` reads them).
#[cfg(target_arch = "xtensa")]
const EFUSE_MAC0: *const u32 = 0x3FF0_0050 as *const u32;
#[cfg(target_arch = "xtensa")]
const EFUSE_MAC1: *const u32 = 0x3FF0_0054 as *const u32;

/// The last three bytes of the chip's station MAC (what tells boards apart on mDNS), from
/// its eFuses: `MAC1 >> 8`, `MAC1`, `MAC0 >> 24`, as esptool reads them.
#[cfg(target_arch = "xtensa")]
pub fn mac_tail() -> [u8; 3] {
    // SAFETY: read-only eFuse registers, always mapped.
    let (mac0, mac1) = unsafe { (EFUSE_MAC0.read_volatile(), EFUSE_MAC1.read_volatile()) };
    [(mac1 >> 8) as u8, mac1 as u8, (mac0 >> 24) as u8]
}

/// Turns off the hardware watchdog the ROM leaves running. A firmware that does this loses
/// the way back from a hang: prefer [`Watchdog::start`] and feed it.
#[cfg(target_arch = "xtensa")]
pub fn disable_watchdog() {
    // SAFETY: ROM routine without preconditions.
    unsafe { rom::ets_wdt_disable() };
}

/// Restarts the chip through the ROM (tcpflash-boot runs again): what a panic handler
/// should end with, so a firmware that fails is not stuck until someone power-cycles it.
#[cfg(target_arch = "xtensa")]
pub fn reset() -> ! {
    // SAFETY: the ROM's reset routine; nothing runs after it.
    unsafe { rom::software_reset() };
    loop {}
}
