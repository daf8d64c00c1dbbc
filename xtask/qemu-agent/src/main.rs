//! The lx106 program QEMU runs: reads `script.bin` from QEMU's working directory through
//! semihosting, runs it (see the library) over a flash in RAM, and writes the transcript to
//! stdout. Its exit codes are `scripted_push::exit_code`.
#![no_std]
#![no_main]

use core::fmt::Write;
use core::panic::PanicInfo;

use ota_agent::writer::{SECTOR, SectorBuffer};
use ota_agent::flash::RamNor;
use ota_agent::static_cell::StaticCell;
use scripted_push::script::{self, SEGMENT};
use scripted_push::{FLASH_SIZE, exit_code};

mod semihosting;

use semihosting::{File, Stderr};

/// The big buffers live in `.bss`, as on the device: the stack stays small.
static FLASH: StaticCell<RamNor<[u8; FLASH_SIZE]>> = StaticCell::new(RamNor::from_storage([0; FLASH_SIZE]));
static SECTOR_BUFFER: StaticCell<SectorBuffer> = StaticCell::new([0; SECTOR]);
static SEGMENT_BUFFER: StaticCell<[u8; SEGMENT]> = StaticCell::new([0; SEGMENT]);

/// Called by `main` in `semihosting.s` once the stack is set.
#[allow(unsafe_code)] // the entry semihosting.s calls by name
#[unsafe(no_mangle)]
pub extern "C" fn qemu_agent_main() -> ! {
    let (flash, sector, segment) = (FLASH.take(), SECTOR_BUFFER.take(), SEGMENT_BUFFER.take());
    let Some(mut file) = File::open_read(c"script.bin") else {
        let _ = writeln!(Stderr, "qemu-agent: cannot open script.bin");
        semihosting::exit(exit_code::NO_SCRIPT);
    };
    let result =
        script::run(&mut file, flash, sector, segment, &mut |bytes| semihosting::write_stdout(bytes));
    match result {
        Ok(()) => semihosting::exit(exit_code::DONE),
        Err(error) => {
            let _ = writeln!(Stderr, "qemu-agent: {error}");
            semihosting::exit(exit_code::BAD_SCRIPT)
        }
    }
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    let _ = writeln!(Stderr, "qemu-agent: {info}");
    semihosting::exit(exit_code::PANIC)
}
