//! `cargo tcpflash build`: build both slots (or a bootloader's image) and print where the
//! images are.

use ota_agent::layout::BOOTLOADER_MAX_LEN;

use crate::build::{self, Bootloader, BuildError, Built, Firmware};
use crate::cli::BuildArgs;

pub fn run(args: &BuildArgs) -> Result<Built, BuildError> {
    let built = build::build_package(&args.into())?;
    match &built {
        Built::Firmware(firmware) => print!("{}", summary(firmware)),
        Built::Bootloader(bootloader) => print!("{}", bootloader_summary(bootloader)),
    }
    Ok(built)
}

/// `cargo tcpflash c-lib`: the agent's C library and header, with their sizes.
pub fn c_lib(args: &crate::cli::CLibArgs) -> Result<crate::build::c_lib::CLib, BuildError> {
    let lib = crate::build::c_lib::build_c_lib(&args.output, args.sdk.as_deref(), &args.target_dir)?;
    println!(
        "{}: IROM {} bytes, IRAM {} bytes, DRAM {} bytes\n{}: void ota_init(void); void ota_init_with_key(const unsigned char key[32]);",
        lib.archive.display(),
        lib.irom,
        lib.iram,
        lib.dram,
        lib.header.display()
    );
    Ok(lib)
}

/// Paths, sizes and how full each slot is.
pub fn summary(firmware: &Firmware) -> String {
    let platform = match firmware.platform {
        crate::build::Platform::BareMetal => String::new(),
        other => format!(", platform {other}"),
    };
    let mut text = format!(
        "{} {} (build {}), layout {}, flash {} {} {}, board {}{platform}\n",
        firmware.package.name,
        firmware.package.version,
        firmware.build_id_hex(),
        firmware.layout.name,
        firmware.params.mode,
        firmware.params.size,
        firmware.params.freq,
        firmware.board,
    );
    for slot in &firmware.slots {
        text += &format!(
            "  {}: {} ({} bytes, {:.1}% of the {} KB slot at {:#x})\n",
            slot.slot.id,
            slot.bin.display(),
            slot.image_len,
            slot.percent_used(),
            slot.slot.capacity / 1024,
            slot.slot.offset,
        );
    }
    text
}

/// The image's path and how much of sector 0 it takes (where it must fit sector 0).
pub fn bootloader_summary(bootloader: &Bootloader) -> String {
    let size = if bootloader.board.bootloader_in_sector_0() {
        format!(
            "{} of {BOOTLOADER_MAX_LEN} bytes, {:.1}% of sector 0",
            bootloader.image_len,
            100.0 * f64::from(bootloader.image_len) / f64::from(BOOTLOADER_MAX_LEN)
        )
    } else {
        format!("{} bytes, board {}: no sector-0 limit", bootloader.image_len, bootloader.board)
    };
    format!(
        "{} {} (bootloader), flash {} {} {}\n  image: {} ({size})\n",
        bootloader.package.name,
        bootloader.package.version,
        bootloader.params.mode,
        bootloader.params.size,
        bootloader.params.freq,
        bootloader.bin.display(),
    )
}
