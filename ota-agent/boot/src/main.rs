//! tcpflash-boot: the second-stage bootloader in sector 0 of an ESP8266.
//!
//! The mask ROM loads it into the flash cache's RAM and starts it with the cache off. It
//! runs `ota_agent::boot::loader::load` (rBoot's config, the trial record, the shared
//! decision, a full check of the chosen slot, the attempt bit, the RAM segments copied),
//! then leaves the hand-off record and jumps to the firmware, whose start-up code maps its
//! flash megabyte. With no bootable slot it says why on UART0 and waits: a reset into the
//! ROM's download mode still reaches the serial loader.
//!
//! Built with `--board qemu` it runs the same flow on QEMU's XTFPGA board (`xtfpga.rs`):
//! the same code, linked at the same addresses, on that board's flash and UART.
#![no_std]
#![no_main]

#[cfg_attr(tcpflash_board = "qemu", path = "xtfpga.rs")]
#[cfg_attr(not(tcpflash_board = "qemu"), path = "esp8266.rs")]
mod board;

use ota_agent::boot::loader::{self, BootBoard, LoaderBuffers};

/// In `.bss`: no bytes in the image, and the stack stays small.
static mut BUFFERS: LoaderBuffers = LoaderBuffers::new();

/// Called by the start-up code cargo-tcpflash generates for bootloaders.
#[unsafe(no_mangle)]
pub extern "C" fn main() -> ! {
    let mut board = board::board();
    // SAFETY: the only reference to BUFFERS; nothing else runs.
    let buffers = unsafe { &mut *(&raw mut BUFFERS) };
    match loader::load(&mut board, buffers) {
        // SAFETY: `load` copied the firmware's segments and returned its entry.
        Ok(launch) => unsafe { board.jump(&launch.handoff, launch.entry) },
        Err(_) => halt(),
    }
}

/// Waits for a reset, doing nothing that could touch the flash.
fn halt() -> ! {
    loop {
        core::hint::spin_loop();
    }
}

/// Waits for a reset. Says nothing: formatting the message would pull in `core::fmt`, and
/// even a fixed text costs bytes of the 4 KB sector (nothing in the loader should panic).
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    halt()
}
