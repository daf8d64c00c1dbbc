//! `cargo tcpflash build`: build both slots and print where the images are.

use crate::build::{self, BuildError, Firmware};
use crate::cli::BuildArgs;

pub fn run(args: &BuildArgs) -> Result<Firmware, BuildError> {
    let firmware = build::build(args)?;
    print!("{}", summary(&firmware));
    Ok(firmware)
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
