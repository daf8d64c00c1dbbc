//! What rBoot does at power-on, as a pure function of the flash: read the config, write
//! the default one when it is unreadable, check the chosen ROM, fall back to the previous
//! ROMs when it is bad, and rewrite `current_rom` when the choice changed.
//!
//! Modelled on rBoot v1.4.2's `find_image` as tcpflash expects it built: with
//! `BOOT_CONFIG_CHKSUM` and `BOOT_BIG_FLASH`, without `BOOT_IROM_CHKSUM`; GPIO boot is not
//! modelled (the pin reads high) and the RTC holds no temporary-boot request (a cold boot).
//! Like rBoot, it works on the whole config sector: a rewrite erases the sector and writes
//! all 4096 bytes back, the bytes after the config included.
//!
//! Only `NorFlash` is used, so a power-cut campaign can run it on a [`ota_agent::flash::RamNor`]
//! thousands of times, cuts during its own config writes included.

use std::fmt;

use ota_agent::boot::{BootConfig, CONFIG_LEN, CONFIG_STRUCT_LEN, ConfigError};
use ota_agent::flash::{NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash};
use ota_agent::image::{self, ImageError, MAGIC_SEGMENTS};
use ota_agent::layout::{BOOT_CONFIG_OFFSET, FlashLayout, SECTOR_SIZE, SlotId};

/// Where `roms[]` starts inside the config.
const ROMS_AT: usize = 8;

/// Something rBoot did on the way to its choice (the lines it prints on the UART).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootEvent {
    /// The config was unreadable, so rBoot wrote its default (2 ROMs, booting ROM 0).
    DefaultConfigWritten { reason: ConfigError, flash_size: u32 },
    /// `current_rom` was not below `count`: rBoot tried ROM 0.
    InvalidRomSelected { current_rom: u8, count: u8 },
    /// The ROM failed rBoot's check.
    BadRom { rom: i32, offset: u32, error: ImageError },
    /// `current_rom` was rewritten to the ROM that boots.
    ConfigUpdated { current_rom: u8 },
}

impl fmt::Display for BootEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootEvent::DefaultConfigWritten { reason, flash_size } => {
                write!(f, "rBoot: writing default boot config for {} KB flash ({reason})", flash_size / 1024)
            }
            BootEvent::InvalidRomSelected { current_rom, count } => {
                write!(f, "rBoot: invalid rom {current_rom} selected (count {count}), defaulting to 0")
            }
            BootEvent::BadRom { rom, offset, error } => {
                write!(f, "rBoot: rom {rom} at {offset:#x} is bad: {error}")
            }
            BootEvent::ConfigUpdated { current_rom } => {
                write!(f, "rBoot: updating boot config: current_rom = {current_rom}")
            }
        }
    }
}

/// The ROM rBoot hands over to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Boot {
    /// Index in `roms[]`.
    pub rom: u8,
    /// Flash offset of the image.
    pub offset: u32,
    /// The entry point the image's header names.
    pub entry: u32,
    /// The config as it is in flash after booting.
    pub config: BootConfig,
    pub events: Vec<BootEvent>,
}

impl Boot {
    /// The layout's slot this ROM is, if it is one.
    pub fn slot(&self, layout: &FlashLayout) -> Option<SlotId> {
        layout.slot_at(self.offset)
    }

    /// Whether rBoot rewrote the config sector (default config or a new `current_rom`).
    pub fn rewrote_config(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, BootEvent::DefaultConfigWritten { .. } | BootEvent::ConfigUpdated { .. }))
    }
}

/// The device does not start a firmware: it is bricked until reflashed over serial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bricked {
    /// Sector 0 holds no bootloader image (first byte should be 0xE9).
    NoBootloader { found: u8 },
    /// Every ROM in the config failed rBoot's check; `events` says why, ROM by ROM.
    NoGoodRom { events: Vec<BootEvent> },
    /// The ROM index walk never comes back to the start (a config with `count` 0): rBoot
    /// loops forever.
    Hangs { events: Vec<BootEvent> },
    /// A flash operation failed (the power was cut while rBoot read or wrote).
    Flash(NorFlashErrorKind),
}

impl fmt::Display for Bricked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bricked::NoBootloader { found } => {
                write!(f, "no bootloader at 0x0 (first byte {found:#04x}, not 0xe9)")
            }
            Bricked::NoGoodRom { events } => {
                f.write_str("no good ROM")?;
                write_bad_roms(f, events)
            }
            Bricked::Hangs { events } => {
                f.write_str("rBoot loops over ROMs forever (config count is 0)")?;
                write_bad_roms(f, events)
            }
            Bricked::Flash(kind) => write!(f, "flash failed while booting: {kind}"),
        }
    }
}

fn write_bad_roms(f: &mut fmt::Formatter<'_>, events: &[BootEvent]) -> fmt::Result {
    for event in events {
        if let BootEvent::BadRom { rom, offset, error } = event {
            write!(f, "; rom {rom} at {offset:#x}: {error}")?;
        }
    }
    Ok(())
}

impl std::error::Error for Bricked {}

/// The flash size rBoot (with `BOOT_BIG_FLASH`) derives from the size code in its own
/// image header: byte 3's high nibble.
pub fn rboot_flash_size(size_code: u8) -> u32 {
    match size_code {
        0 => 0x8_0000,
        1 => 0x4_0000,
        2 => 0x10_0000,
        3 => 0x20_0000,
        4 => 0x40_0000,
        // "unknown: assume at least 4 Mbit"
        _ => 0x8_0000,
    }
}

/// Runs rBoot's boot decision on `flash`, writing the config sector when rBoot would.
pub fn boot<F: NorFlash>(flash: &mut F) -> Result<Boot, Bricked> {
    let fail = |e: F::Error| Bricked::Flash(e.kind());
    let mut header = [0u8; 8];
    flash.read(0, &mut header).map_err(fail)?;
    if header[0] != MAGIC_SEGMENTS {
        return Err(Bricked::NoBootloader { found: header[0] });
    }
    let flash_size = rboot_flash_size(header[3] >> 4);

    let mut sector = vec![0u8; SECTOR_SIZE as usize];
    flash.read(BOOT_CONFIG_OFFSET, &mut sector).map_err(fail)?;
    let mut events = Vec::new();
    let head: &[u8; CONFIG_LEN] = sector[..CONFIG_LEN].try_into().expect("sector holds a config");
    if let Err(reason) = BootConfig::parse(head) {
        // rBoot zeroes the struct, fills in the default and writes the sector at once.
        events.push(BootEvent::DefaultConfigWritten { reason, flash_size });
        sector[..CONFIG_STRUCT_LEN].copy_from_slice(&BootConfig::rboot_default(flash_size).to_bytes());
        write_sector(flash, &sector).map_err(fail)?;
    }

    let mut update = false;
    let count = sector[5];
    let mut current_rom = sector[3];
    if current_rom >= count {
        events.push(BootEvent::InvalidRomSelected { current_rom, count });
        current_rom = 0;
        sector[3] = 0;
        update = true;
    }
    let mut rom = i32::from(current_rom);
    let mut tried = Vec::new();
    let entry = loop {
        let offset = rom_offset(&sector, rom);
        match check_image(flash, offset) {
            Ok(entry) => break entry,
            Err(error) => events.push(BootEvent::BadRom { rom, offset, error }),
        }
        // Each previous ROM in turn, wrapping to the last, until back at current_rom.
        update = true;
        tried.push(rom);
        rom -= 1;
        if rom < 0 {
            rom = i32::from(count) - 1;
        }
        if rom == i32::from(current_rom) {
            return Err(Bricked::NoGoodRom { events });
        }
        if tried.contains(&rom) {
            return Err(Bricked::Hangs { events });
        }
    };

    // Only reached with 0 <= rom < count (or rom == current_rom, which is below count).
    let rom = u8::try_from(rom).expect("rom index below count");
    if update {
        sector[3] = rom;
        let checksum = sector[..CONFIG_LEN - 1].iter().fold(0xEF, |acc, b| acc ^ b);
        sector[CONFIG_LEN - 1] = checksum;
        write_sector(flash, &sector).map_err(fail)?;
        events.push(BootEvent::ConfigUpdated { current_rom: rom });
    }
    let head: &[u8; CONFIG_LEN] = sector[..CONFIG_LEN].try_into().expect("sector holds a config");
    let config = BootConfig::parse(head).expect("rBoot's own config is valid");
    Ok(Boot { rom, offset: rom_offset(&sector, i32::from(rom)), entry, config, events })
}

/// `roms[index]` read from the sector buffer as rBoot's C does, so an index past the four
/// declared ROMs (a config with `count` above 4) reads the bytes that follow, and -1 the
/// bytes before.
fn rom_offset(sector: &[u8], index: i32) -> u32 {
    let at = ROMS_AT as i64 + 4 * i64::from(index);
    match usize::try_from(at).ok().and_then(|at| sector.get(at..at + 4)) {
        Some(word) => u32::from_le_bytes([word[0], word[1], word[2], word[3]]),
        None => 0,
    }
}

fn write_sector<F: NorFlash>(flash: &mut F, sector: &[u8]) -> Result<(), F::Error> {
    flash.erase(BOOT_CONFIG_OFFSET, BOOT_CONFIG_OFFSET + SECTOR_SIZE)?;
    flash.write(BOOT_CONFIG_OFFSET, sector)
}

/// What rBoot's `check_image` does with the ROM at `offset`, returning the entry point its
/// stage 2 loader jumps to. rBoot (without `BOOT_IROM_CHKSUM`, its default) reads the
/// header; for a v2 image (0xEA, 0x04) it skips the IROM segment by the length in the IROM
/// header and reads the 0xE9 header that follows without checking that magic; a plain
/// 0xE9 image has no IROM. It then XORs the data of the RAM segments (any number, any
/// address) and compares the byte at the next position that is 15 mod 16. Nothing else:
/// no CRC, IROM unchecked, no trailing bytes or segment ranges looked at. Where rBoot's
/// 32-bit arithmetic would wrap or read past the chip, this fails instead.
pub fn check_image<F: ReadNorFlash>(flash: &mut F, offset: u32) -> Result<u32, ImageError> {
    if offset == 0 || offset == u32::MAX {
        return Err(ImageError::NoRom(offset));
    }
    let capacity = u32::try_from(flash.capacity()).unwrap_or(u32::MAX);
    let mut scratch = [0u8; image::MIN_SCRATCH];
    let until_end =
        |at: u32| capacity.checked_sub(at).ok_or(ImageError::OutOfFlash { offset: at, len: 0, capacity });

    // rBoot reads a whole `rom_header_new` (16 bytes) whatever the magic.
    let first: [u8; 16] = image::Reader::new(flash, &mut scratch, offset, until_end(offset)?)?
        .run(|reader| reader.read_array())?;
    let rom_at = match first {
        [0xE9, ..] => offset,
        [image::MAGIC_V2, image::V2_MARKER, ..] => {
            let irom_len = u32::from_le_bytes([first[12], first[13], first[14], first[15]]);
            offset
                .checked_add(2 * image::HEADER_LEN)
                .and_then(|at| at.checked_add(irom_len))
                .ok_or(ImageError::OutOfFlash { offset, len: u32::MAX, capacity })?
        }
        [magic, ..] => return Err(ImageError::BadMagic(magic)),
    };

    let mut reader = image::Reader::new(flash, &mut scratch, rom_at, until_end(rom_at)?)?;
    let (entry, stored, computed) = reader.run(|reader| {
        let header: [u8; 8] = reader.read_array()?;
        let mut computed = image::CHECKSUM_SEED;
        for _ in 0..header[1] {
            let segment_header: [u8; 8] = reader.read_array()?;
            reader.consume(word(&segment_header, 4), &mut |bytes| {
                computed = bytes.iter().fold(computed, |s, b| s ^ b)
            })?;
        }
        // rBoot rounds its absolute flash read position, not the image-relative one.
        reader.skip(image::checksum_position(reader.position()) - reader.position())?;
        let [stored] = reader.read_array()?;
        Ok((word(&header, 4), stored, computed))
    })?;
    if stored != computed {
        return Err(ImageError::ChecksumMismatch { stored, computed });
    }
    Ok(entry)
}

fn word(bytes: &[u8; 8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{LAYOUT, flash_with};
    use ota_agent::boot::BootMode;
    use ota_agent::flash::{NorError, RamNor, ReadNorFlash, Recording};

    fn config_in(flash: &mut RamNor<Vec<u8>>) -> BootConfig {
        let mut head = [0u8; CONFIG_LEN];
        flash.read(BOOT_CONFIG_OFFSET, &mut head).unwrap();
        BootConfig::parse(&head).unwrap()
    }

    /// Damages the RAM segment of the image in `slot`, so rBoot's checksum fails.
    fn corrupt(flash: &mut RamNor<Vec<u8>>, slot: SlotId) {
        let at = (LAYOUT.slot(slot).offset + 0x10 + 0x110 + 8 + 8) as usize;
        let mut bytes = flash.bytes().to_vec();
        bytes[at] ^= 0x01;
        *flash = RamNor::from_storage(bytes);
    }

    #[test]
    fn boots_the_configured_rom_without_writing() {
        for slot in SlotId::ALL {
            let flash = flash_with(Some(BootConfig::for_layout(LAYOUT, slot)), [true, true]);
            let mut flash = Recording::new(flash);
            let boot = boot(&mut flash).unwrap();
            assert_eq!(boot.slot(LAYOUT), Some(slot));
            assert_eq!((boot.rom as usize, boot.entry, boot.events.len()), (slot.index(), 0x4010_0004, 0));
            assert!(flash.take_log().is_empty(), "a good config and ROM are left alone");
        }
    }

    #[test]
    fn a_bad_current_rom_falls_back_to_the_previous_and_rewrites_current_rom() {
        let mut config = BootConfig::for_layout(LAYOUT, SlotId::User2);
        config.unused = [7, 9];
        let mut flash = flash_with(Some(config), [true, true]);
        flash.write(BOOT_CONFIG_OFFSET + 0x800, b"kept").unwrap();
        corrupt(&mut flash, SlotId::User2);
        let boot = boot(&mut flash).unwrap();
        assert_eq!(boot.slot(LAYOUT), Some(SlotId::User1));
        assert!(matches!(
            boot.events[..],
            [
                BootEvent::BadRom { rom: 1, offset: 0x82000, error: ImageError::ChecksumMismatch { .. } },
                BootEvent::ConfigUpdated { current_rom: 0 }
            ]
        ));
        let written = config_in(&mut flash);
        assert_eq!(written, BootConfig { current_rom: 0, ..config }, "only current_rom changes");
        assert_eq!(&flash.bytes()[0x1800..0x1804], b"kept", "the rest of the sector is written back");
        // The next boot finds nothing to fix.
        assert!(super::boot(&mut flash).unwrap().events.is_empty());
    }

    #[test]
    fn rom_0_bad_wraps_around_to_the_last_rom() {
        let mut flash = flash_with(Some(BootConfig::for_layout(LAYOUT, SlotId::User1)), [true, true]);
        corrupt(&mut flash, SlotId::User1);
        let boot = boot(&mut flash).unwrap();
        assert_eq!((boot.rom, boot.slot(LAYOUT)), (1, Some(SlotId::User2)));
        assert_eq!(config_in(&mut flash).current_rom, 1);
    }

    #[test]
    fn an_empty_slot_is_a_bad_rom() {
        let mut flash = flash_with(Some(BootConfig::for_layout(LAYOUT, SlotId::User2)), [true, false]);
        let boot = boot(&mut flash).unwrap();
        assert_eq!(boot.slot(LAYOUT), Some(SlotId::User1));
        assert!(matches!(
            boot.events[0],
            BootEvent::BadRom { rom: 1, error: ImageError::BadMagic(0xFF), .. }
        ));
    }

    #[test]
    fn an_unreadable_config_gets_rboots_default_from_the_bootloader_flash_size() {
        for damage in [None, Some(0usize), Some(1), Some(24)] {
            let mut flash = flash_with(Some(BootConfig::for_layout(LAYOUT, SlotId::User2)), [true, true]);
            let mut bytes = flash.bytes().to_vec();
            match damage {
                Some(at) => bytes[BOOT_CONFIG_OFFSET as usize + at] ^= 0x10,
                None => bytes[BOOT_CONFIG_OFFSET as usize..0x2000].fill(0xFF),
            }
            bytes[BOOT_CONFIG_OFFSET as usize + 0x100] = 0x42;
            flash = RamNor::from_storage(bytes);
            let boot = boot(&mut flash).unwrap();
            assert_eq!(boot.slot(LAYOUT), Some(SlotId::User1), "damage {damage:?}");
            assert!(matches!(
                boot.events[..],
                [BootEvent::DefaultConfigWritten { flash_size: 0x10_0000, .. }]
            ));
            assert_eq!(config_in(&mut flash), BootConfig::rboot_default(0x10_0000));
            assert_eq!(flash.bytes()[BOOT_CONFIG_OFFSET as usize + 0x100], 0x42, "rest of sector kept");
            assert!(flash.bytes()[BOOT_CONFIG_OFFSET as usize + CONFIG_STRUCT_LEN..][..4] == [0xFF; 4]);
        }
    }

    #[test]
    fn the_default_config_uses_the_size_in_the_bootloader_header() {
        // A 512 KB bootloader on this 1 MB chip puts ROM 1 at 0x42000, where nothing is.
        let mut flash = flash_with(None, [false, true]);
        let mut bytes = flash.bytes().to_vec();
        bytes[3] = 0x00;
        flash = RamNor::from_storage(bytes);
        let error = boot(&mut flash).unwrap_err();
        let Bricked::NoGoodRom { events } = &error else { panic!("{error:?}") };
        assert!(matches!(events[0], BootEvent::DefaultConfigWritten { flash_size: 0x8_0000, .. }));
        assert!(matches!(events[1], BootEvent::BadRom { rom: 0, offset: 0x2000, .. }));
        assert!(matches!(events[2], BootEvent::BadRom { rom: 1, offset: 0x42000, .. }));
        assert_eq!(rboot_flash_size(3), 0x20_0000);
        assert_eq!(rboot_flash_size(4), 0x40_0000);
        assert_eq!(rboot_flash_size(7), 0x8_0000);
    }

    #[test]
    fn current_rom_past_count_boots_rom_0_and_is_rewritten() {
        let mut config = BootConfig::for_layout(LAYOUT, SlotId::User2);
        config.current_rom = 3;
        let mut flash = flash_with(Some(config), [true, true]);
        let boot = boot(&mut flash).unwrap();
        assert_eq!(boot.slot(LAYOUT), Some(SlotId::User1));
        assert_eq!(
            boot.events,
            [
                BootEvent::InvalidRomSelected { current_rom: 3, count: 2 },
                BootEvent::ConfigUpdated { current_rom: 0 }
            ]
        );
        assert_eq!(config_in(&mut flash).current_rom, 0);
    }

    #[test]
    fn no_good_rom_is_bricked_and_nothing_is_rewritten_to_a_bad_choice() {
        let config = BootConfig::for_layout(LAYOUT, SlotId::User2);
        let mut flash = flash_with(Some(config), [false, false]);
        let error = boot(&mut flash).unwrap_err();
        assert!(matches!(&error, Bricked::NoGoodRom { events } if events.len() == 2));
        assert_eq!(config_in(&mut flash), config);
        let text = error.to_string();
        assert!(text.contains("rom 1 at 0x82000") && text.contains("rom 0 at 0x2000"), "{text}");
    }

    #[test]
    fn a_config_with_no_roms_hangs_when_rom_0_is_bad() {
        let mut config = BootConfig::for_layout(LAYOUT, SlotId::User1);
        config.count = 0;
        let mut flash = flash_with(Some(config), [false, true]);
        assert!(matches!(boot(&mut flash), Err(Bricked::Hangs { .. })));
    }

    #[test]
    fn roms_beyond_the_fourth_are_read_from_the_sector_like_rboot_does() {
        let mut config = BootConfig::for_layout(LAYOUT, SlotId::User1);
        config.count = 6;
        config.current_rom = 5;
        let mut flash = flash_with(Some(config), [true, true]);
        // roms[5] is the word at config offset 28: just past the struct.
        flash.write(BOOT_CONFIG_OFFSET + 28, &0x82000u32.to_le_bytes()).unwrap();
        let boot = boot(&mut flash).unwrap();
        assert_eq!((boot.rom, boot.offset, boot.slot(LAYOUT)), (5, 0x82000, Some(SlotId::User2)));
        assert!(boot.events.is_empty());
        assert_eq!(boot.config.mode, BootMode::Standard);
    }

    #[test]
    fn sector_0_without_a_bootloader_is_bricked() {
        let mut flash = RamNor::new(LAYOUT.flash_size);
        assert_eq!(boot(&mut flash), Err(Bricked::NoBootloader { found: 0xFF }));
    }

    #[test]
    fn a_power_cut_during_the_config_rewrite_is_reported_and_the_next_boot_recovers() {
        let mut flash = flash_with(Some(BootConfig::for_layout(LAYOUT, SlotId::User2)), [true, true]);
        corrupt(&mut flash, SlotId::User2);
        for cut in 0..3 {
            let mut cut_flash = flash.clone();
            cut_flash.cut_power_at(cut);
            assert_eq!(boot(&mut cut_flash), Err(Bricked::Flash(NorError::PowerLost.kind())));
            cut_flash.restore_power();
            let boot = boot(&mut cut_flash).unwrap();
            assert_eq!(boot.slot(LAYOUT), Some(SlotId::User1), "cut at op {cut}");
        }
    }

    /// `image` at `offset` in an erased chip of `size` bytes.
    fn placed(image: &[u8], offset: usize, size: usize) -> RamNor<Vec<u8>> {
        let mut bytes = vec![0xFF; size];
        bytes[offset..offset + image.len()].copy_from_slice(image);
        RamNor::from_storage(bytes)
    }

    #[test]
    fn check_image_mirrors_rboot() {
        let image = ota_agent::image::samples::sample_image(0x4020_2010);
        let mut flash = placed(&image, 0x2000, 0x10000);
        assert_eq!(check_image(&mut flash, 0x2000), Ok(0x4010_0004));

        // IROM is not covered: a torn IROM still boots.
        let mut torn = image.clone();
        torn[100] ^= 0xFF;
        let mut flash = placed(&torn, 0x2000, 0x10000);
        assert_eq!(check_image(&mut flash, 0x2000), Ok(0x4010_0004));
        assert!(matches!(
            ota_agent::image::inspect(&mut flash, 0x2000, torn.len() as u32, &mut [0; 64]),
            Err(ImageError::CrcMismatch { .. })
        ));

        // Nor is the CRC, nor the second header's magic, nor whatever follows the checksum.
        let mut loose = image.clone();
        loose[128] = 0x00;
        loose[210] ^= 0xFF;
        let mut flash = placed(&loose, 0x2000, 0x10000);
        assert_eq!(check_image(&mut flash, 0x2000), Ok(0x4010_0004));

        // RAM data is.
        let mut bad = image.clone();
        bad[150] ^= 0x04;
        let mut flash = placed(&bad, 0x2000, 0x10000);
        assert_eq!(
            check_image(&mut flash, 0x2000),
            Err(ImageError::ChecksumMismatch { stored: image[207], computed: image[207] ^ 0x04 })
        );

        // Erased flash, offsets rBoot treats as empty, a header pointing past the chip.
        let mut flash = placed(&image, 0x2000, 0x10000);
        assert_eq!(check_image(&mut flash, 0x4000), Err(ImageError::BadMagic(0xFF)));
        assert_eq!(check_image(&mut flash, 0), Err(ImageError::NoRom(0)));
        assert_eq!(check_image(&mut flash, u32::MAX), Err(ImageError::NoRom(u32::MAX)));
        let mut far = image.clone();
        far[14] = 0x01; // IROM "length" of 64 KB + 112
        let mut flash = placed(&far, 0x2000, 0x10000);
        assert!(matches!(check_image(&mut flash, 0x2000), Err(ImageError::OutOfFlash { .. })));

        // A plain 0xE9 image (no IROM) boots too: the v2 image's tail is one.
        let mut flash = placed(&image, 0x2000, 0x10000);
        assert_eq!(check_image(&mut flash, 0x2000 + 128), Ok(0x4010_0004));
    }
}
