//! `cargo tcpflash image`: convert an ELF into a v2 image, or describe an image (`--info`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use miette::Diagnostic;
use ota_agent::flash::RamNor;
use ota_agent::image::{
    self, FlashFreq, FlashMode, FlashParams, FlashSize, ImageError, ImageInfo, MemoryKind,
};
use ota_agent::layout::sdk::{SDK_MAPS, SdkMap, gen_appbin_link_addr};
use ota_agent::layout::{IMAGE_IROM_OFFSET, LAYOUTS};
use thiserror::Error;

use crate::cli::ImageArgs;
use crate::elf2image::{self, ElfError};

#[derive(Debug, Error, Diagnostic)]
pub enum ImageCommandError {
    #[error("cannot read {}", path.display())]
    #[diagnostic(code(tcpflash::image::read))]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write {}", path.display())]
    #[diagnostic(code(tcpflash::image::write))]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot convert {}", path.display())]
    Convert {
        path: PathBuf,
        #[source]
        #[diagnostic_source]
        source: ElfError,
    },

    #[error("unknown --{option} `{value}`")]
    #[diagnostic(code(tcpflash::image::bad_option), help("use one of: {choices}"))]
    BadOption { option: &'static str, value: String, choices: String },

    #[error("{} is not a valid v2 image: {reason}", path.display())]
    #[diagnostic(
        code(tcpflash::image::unreadable),
        help(
            "pass an image written by `cargo tcpflash image`, `cargo tcpflash build` or `esptool elf2image --version 2`"
        )
    )]
    Unreadable { path: PathBuf, reason: ImageError },

    #[error("{} is corrupt: {reason}", path.display())]
    #[diagnostic(
        code(tcpflash::image::corrupt),
        help("the file was damaged after it was written; build or convert it again")
    )]
    Corrupt { path: PathBuf, reason: ImageError },
}

/// Runs the subcommand: prints what it did, or the image's description.
pub fn run(args: &ImageArgs) -> Result<(), ImageCommandError> {
    let input = std::fs::read(&args.input)
        .map_err(|source| ImageCommandError::Read { path: args.input.clone(), source })?;
    if args.info {
        let (text, result) = describe(&input);
        print!("{text}");
        return result.map_err(|error| match error {
            DescribeError::Unreadable(source) => {
                ImageCommandError::Unreadable { path: args.input.clone(), reason: source }
            }
            DescribeError::Corrupt(source) => {
                ImageCommandError::Corrupt { path: args.input.clone(), reason: source }
            }
        });
    }
    let params = flash_params(&args.flash_mode, &args.flash_size, &args.flash_freq)?;
    let image = elf2image::elf_to_image(&input, params)
        .map_err(|source| ImageCommandError::Convert { path: args.input.clone(), source })?;
    // `required_unless_present = "info"` makes clap insist on -o here.
    let output = args.output.as_deref().unwrap_or(Path::new("image.bin"));
    std::fs::write(output, &image)
        .map_err(|source| ImageCommandError::Write { path: output.to_path_buf(), source })?;
    println!(
        "wrote {} ({} bytes, {} {} {})",
        output.display(),
        image.len(),
        params.mode,
        params.size,
        params.freq
    );
    Ok(())
}

/// Parses esptool's names for the header flash parameters.
pub fn flash_params(mode: &str, size: &str, freq: &str) -> Result<FlashParams, ImageCommandError> {
    fn bad<T: Copy>(
        option: &'static str,
        value: &str,
        all: &[T],
        name: fn(T) -> &'static str,
    ) -> ImageCommandError {
        let choices = all.iter().map(|&v| name(v)).collect::<Vec<_>>().join(", ");
        ImageCommandError::BadOption { option, value: value.to_string(), choices }
    }
    Ok(FlashParams {
        mode: FlashMode::from_name(mode)
            .ok_or_else(|| bad("flash-mode", mode, FlashMode::ALL, FlashMode::name))?,
        size: FlashSize::from_name(size)
            .ok_or_else(|| bad("flash-size", size, FlashSize::ALL, FlashSize::name))?,
        freq: FlashFreq::from_name(freq)
            .ok_or_else(|| bad("flash-freq", freq, FlashFreq::ALL, FlashFreq::name))?,
    })
}

/// Why `describe` could not give a clean bill of health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DescribeError {
    /// The structure is broken: nothing past the error can be described.
    Unreadable(ImageError),
    /// The structure is fine, the checksum or CRC is not.
    Corrupt(ImageError),
}

/// The `--info` text for `image`, and whether the image is sound. The text holds
/// everything that could be read, also for a corrupt image.
pub fn describe(image: &[u8]) -> (String, Result<(), DescribeError>) {
    let mut text = String::new();
    let Ok(len) = u32::try_from(image.len()) else {
        return (text, Err(DescribeError::Unreadable(ImageError::SizeOverflow)));
    };
    let mut flash = RamNor::from_storage(image.to_vec());
    let info = match image::scan(&mut flash, 0, len, &mut [0u8; 4096]) {
        Ok(info) => info,
        Err(error) => return (text, Err(DescribeError::Unreadable(error))),
    };
    write_info(&mut text, &info).expect("writing to a String");
    let result = if !info.checksum_valid() {
        Err(DescribeError::Corrupt(ImageError::ChecksumMismatch {
            stored: info.checksum,
            computed: info.computed_checksum,
        }))
    } else if !info.crc_valid() {
        Err(DescribeError::Corrupt(ImageError::CrcMismatch { stored: info.crc, computed: info.computed_crc }))
    } else {
        Ok(())
    };
    (text, result)
}

fn write_info(out: &mut String, info: &ImageInfo) -> std::fmt::Result {
    let [mode, size_freq] = info.params.to_header_bytes();
    writeln!(out, "v2 image, {} bytes", info.len)?;
    if let Some(app) = info.sdk_app {
        writeln!(
            out,
            "written by:  the SDK's gen_appbin.py, app {app} (first header bytes 2..3: 00 {app:02x})"
        )?;
    }
    writeln!(out, "flash mode:  {} ({mode:#04x})", info.params.mode)?;
    writeln!(out, "flash size:  {} ({:#x})", info.params.size, size_freq >> 4)?;
    writeln!(out, "flash freq:  {} ({:#x})", info.params.freq, size_freq & 0xF)?;
    writeln!(out, "entry:       {:#010x}", info.entry)?;
    writeln!(out, "segments:    {} (IROM + {} RAM)", info.segment_count + 1, info.segment_count)?;
    writeln!(out, "  IROM  {:>7} bytes at image offset {IMAGE_IROM_OFFSET:#x}", info.irom_len)?;
    for &(addr, len) in info.segments() {
        let kind = MemoryKind::of(addr).map_or("?", MemoryKind::name);
        writeln!(out, "  {kind:<4}  {len:>7} bytes at {addr:#010x}")?;
    }
    writeln!(
        out,
        "checksum:    {:#04x} {}",
        info.checksum,
        verdict(info.checksum_valid(), info.checksum.into(), info.computed_checksum.into(), 4)
    )?;
    writeln!(
        out,
        "CRC:         {:#010x} {}",
        info.crc,
        verdict(info.crc_valid(), info.crc, info.computed_crc, 10)
    )?;
    match &info.descriptor {
        None => match info.sdk_app.zip(SdkMap::for_flash_size(info.params.size)) {
            Some((app, map)) => writeln!(
                out,
                "descriptor:  none (an SDK image: its map and app number put IROM at {:#010x}, user{app} of {})",
                gen_appbin_link_addr(info.params.size, app).unwrap_or_default(),
                map.layout.name,
            )?,
            None => writeln!(out, "descriptor:  none (not built by tcpflash: no slot check possible)")?,
        },
        Some(descriptor) => {
            writeln!(out, "descriptor:")?;
            writeln!(out, "  name:      {}", descriptor.name())?;
            writeln!(out, "  version:   {}", descriptor.version())?;
            writeln!(out, "  build id:  {}", String::from_utf8_lossy(&descriptor.build_id_hex()))?;
            writeln!(
                out,
                "  linked at: {:#010x} ({})",
                descriptor.link_addr,
                slots_linked_at(descriptor.link_addr)
            )?;
        }
    }
    Ok(())
}

fn verdict(valid: bool, stored: u32, computed: u32, width: usize) -> String {
    if valid {
        "valid".into()
    } else {
        format!("INVALID (stored {stored:#0width$x}, computed {computed:#0width$x})")
    }
}

/// Which slots of which layouts run IROM code linked at `link_addr`.
pub fn slots_linked_at(link_addr: u32) -> String {
    let matches: Vec<String> = LAYOUTS
        .iter()
        .chain(SDK_MAPS.iter().map(|map| &map.layout))
        .flat_map(|layout| layout.slots.iter().map(move |slot| (layout, slot)))
        .filter(|(_, slot)| slot.irom_link_addr() == link_addr)
        .map(|(layout, slot)| format!("{} of {}", slot.id, layout.name))
        .collect();
    if matches.is_empty() { "no slot of any layout".into() } else { matches.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_addresses_name_their_slots() {
        assert_eq!(slots_linked_at(0x4028_2010), "user2 of 1MB");
        assert_eq!(slots_linked_at(0x4024_2010), "user2 of 512KB");
        assert_eq!(
            slots_linked_at(0x4020_2010),
            "user1 of 512KB, user1 of 1MB, user1 of 2MB, user2 of 2MB, user1 of 4MB, user2 of 4MB"
        );
        assert_eq!(
            slots_linked_at(0x4020_1010),
            "user1 of sdk-1MB, user1 of sdk-2MB, user1 of sdk-4MB, user1 of sdk-2MB-c1, user2 of sdk-2MB-c1, \
             user1 of sdk-4MB-c1, user2 of sdk-4MB-c1"
        );
        assert_eq!(slots_linked_at(0x4028_1010), "user2 of sdk-1MB, user2 of sdk-2MB, user2 of sdk-4MB");
        assert_eq!(slots_linked_at(0x4030_0000), "no slot of any layout");
    }

    #[test]
    fn flash_params_by_name_and_errors() {
        let params = flash_params("dio", "2MB-c1", "80m").unwrap();
        assert_eq!(params.to_header_bytes(), [0x02, 0x5F]);
        let error = flash_params("dio", "3MB", "80m").unwrap_err();
        assert_eq!(error.to_string(), "unknown --flash-size `3MB`");
        let help = error.help().unwrap().to_string();
        assert_eq!(help, "use one of: 256KB, 512KB, 1MB, 2MB, 4MB, 2MB-c1, 4MB-c1, 8MB, 16MB");
    }
}
