//! The lx106 program QEMU runs: reads `script.bin` from QEMU's working directory through
//! semihosting, runs it (see the library) over a flash in RAM, and writes the transcript to
//! stdout. Its exit codes are `scripted_push::exit_code`.
#![no_std]
#![no_main]

use core::fmt::Write;
use core::panic::PanicInfo;

use ota_agent::writer::{SECTOR, SectorBuffer};
use ota_agent::flash::RamNor;
use scripted_push::script::{self, SEGMENT};
use scripted_push::{FLASH_SIZE, exit_code};

mod semihosting;

use semihosting::{File, Stderr};

/// The big buffers live in `.bss`, as on the device: the stack stays small.
static mut FLASH: RamNor<[u8; FLASH_SIZE]> = RamNor::from_storage([0; FLASH_SIZE]);
static mut SECTOR_BUFFER: SectorBuffer = [0; SECTOR];
static mut SEGMENT_BUFFER: [u8; SEGMENT] = [0; SEGMENT];

/// Called by `main` in `semihosting.s` once the stack is set.
#[unsafe(no_mangle)]
pub extern "C" fn qemu_agent_main() -> ! {
    // SAFETY: the only references to these statics, taken once; nothing else runs.
    let (flash, sector, segment) =
        unsafe { (&mut *(&raw mut FLASH), &mut *(&raw mut SECTOR_BUFFER), &mut *(&raw mut SEGMENT_BUFFER)) };
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
