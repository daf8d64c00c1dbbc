//! Blinks the LED on GPIO2 (active low on ESP-01 and ESP-12 modules).
#![no_std]
#![no_main]

use core::panic::PanicInfo;

use ota_agent::esp8266::rom;

mod led;

#[unsafe(no_mangle)]
pub extern "C" fn main() -> ! {
    // SAFETY: ROM routines with no preconditions beyond a running CPU.
    unsafe { rom::ets_wdt_disable() };
    let mut led = led::Led::gpio2();
    loop {
        led.toggle();
        // SAFETY: plain busy wait.
        unsafe { rom::ets_delay_us(500_000) };
    }
}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    loop {}
}
