//! rBoot's boot config: which slot the second-stage bootloader starts.
//!
//! Format (rBoot's `rboot_config`, built with BOOT_CONFIG_CHKSUM), at the start of flash
//! sector 1: magic 0xE1, version 0x01, mode, current_rom, gpio_rom, count, 2 unused bytes,
//! `roms[4]` as u32 LE flash offsets, then a checksum byte: 0xEF XOR bytes 0..24.

use core::fmt;

use crate::flash::{NorFlash, ReadNorFlash};
use crate::irom_text;
use crate::layout::{BOOT_CONFIG_OFFSET, FlashLayout, SECTOR_SIZE, SlotId};
use crate::text::{self, Message, Sink};
use crate::writer::SectorBuffer;

pub const CONFIG_MAGIC: u8 = 0xE1;
pub const CONFIG_VERSION: u8 = 0x01;
/// Bytes rBoot reads and checks (the C struct is padded to 28).
pub const CONFIG_LEN: usize = 25;
/// The bytes rBoot writes back (`sizeof(rboot_config)`).
pub const CONFIG_STRUCT_LEN: usize = 28;
pub const MAX_ROMS: usize = 4;
/// Offsets of the fields the firmware's start-up code reads (as rBoot's
/// `Cache_Read_Enable_New` does): `current_rom` and `roms[]`.
pub const CONFIG_CURRENT_ROM_AT: usize = 3;
pub const CONFIG_ROMS_AT: usize = 8;
const CHECKSUM_SEED: u8 = 0xEF;

/// rBoot's boot modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootMode {
    Standard,
    GpioRom,
    TempRom,
    Other(u8),
}

impl BootMode {
    fn from_byte(byte: u8) -> BootMode {
        match byte {
            0 => BootMode::Standard,
            1 => BootMode::GpioRom,
            2 => BootMode::TempRom,
            other => BootMode::Other(other),
        }
    }

    fn to_byte(self) -> u8 {
        match self {
            BootMode::Standard => 0,
            BootMode::GpioRom => 1,
            BootMode::TempRom => 2,
            BootMode::Other(byte) => byte,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    BadMagic(u8),
    BadVersion(u8),
    BadChecksum { stored: u8, computed: u8 },
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::BadMagic(found) => write!(f, "boot config magic is {found:#04x}, not 0xe1"),
            ConfigError::BadVersion(found) => write!(f, "boot config version is {found}, not 1"),
            ConfigError::BadChecksum { stored, computed } => {
                write!(f, "boot config checksum is {stored:#04x}, computed {computed:#04x}")
            }
        }
    }
}

/// A decoded rBoot config. Unknown fields are kept so a rewrite preserves them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootConfig {
    pub mode: BootMode,
    pub current_rom: u8,
    pub gpio_rom: u8,
    pub count: u8,
    pub unused: [u8; 2],
    pub roms: [u32; MAX_ROMS],
}

impl BootConfig {
    /// What tcpflash installs: the layout's two slots, booting `current`.
    pub fn for_layout(layout: &FlashLayout, current: SlotId) -> BootConfig {
        let mut roms = [0u32; MAX_ROMS];
        for slot in layout.slots {
            roms[slot.id.index()] = slot.offset;
        }
        BootConfig {
            mode: BootMode::Standard,
            current_rom: current.index() as u8,
            gpio_rom: 0,
            count: 2,
            unused: [0; 2],
            roms,
        }
    }

    /// The config rBoot writes itself when it finds none: two ROMs at 0x2000 and
    /// half the flash + 0x2000, booting ROM 0. For every tcpflash layout this equals
    /// `for_layout(layout, User1)`.
    pub fn rboot_default(flash_size: u32) -> BootConfig {
        let mut roms = [0u32; MAX_ROMS];
        roms[0] = 0x2000;
        roms[1] = flash_size / 2 + 0x2000;
        BootConfig { mode: BootMode::Standard, current_rom: 0, gpio_rom: 0, count: 2, unused: [0; 2], roms }
    }

    #[inline(never)]
    pub fn parse(bytes: &[u8; CONFIG_LEN]) -> Result<BootConfig, ConfigError> {
        if bytes[0] != CONFIG_MAGIC {
            return Err(ConfigError::BadMagic(bytes[0]));
        }
        if bytes[1] != CONFIG_VERSION {
            return Err(ConfigError::BadVersion(bytes[1]));
        }
        let computed = checksum(&bytes[..CONFIG_LEN - 1]);
        let stored = bytes[CONFIG_LEN - 1];
        if computed != stored {
            return Err(ConfigError::BadChecksum { stored, computed });
        }
        let mut roms = [0u32; MAX_ROMS];
        for (i, rom) in roms.iter_mut().enumerate() {
            let at = CONFIG_ROMS_AT + 4 * i;
            *rom = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        }
        Ok(BootConfig {
            mode: BootMode::from_byte(bytes[2]),
            current_rom: bytes[3],
            gpio_rom: bytes[4],
            count: bytes[5],
            unused: [bytes[6], bytes[7]],
            roms,
        })
    }

    /// The 28 bytes rBoot writes (checksum included, padding zero).
    pub fn to_bytes(&self) -> [u8; CONFIG_STRUCT_LEN] {
        let mut bytes = [0u8; CONFIG_STRUCT_LEN];
        bytes[..8].copy_from_slice(&[
            CONFIG_MAGIC,
            CONFIG_VERSION,
            self.mode.to_byte(),
            self.current_rom,
            self.gpio_rom,
            self.count,
            self.unused[0],
            self.unused[1],
        ]);
        for (i, rom) in self.roms.iter().enumerate() {
            bytes[CONFIG_ROMS_AT + 4 * i..][..4].copy_from_slice(&rom.to_le_bytes());
        }
        bytes[CONFIG_LEN - 1] = checksum(&bytes[..CONFIG_LEN - 1]);
        bytes
    }

    /// The slot `current_rom` points at, if it is one of the layout's.
    pub fn current_slot(&self, layout: &FlashLayout) -> Option<SlotId> {
        let rom = *self.roms.get(usize::from(self.current_rom))?;
        layout.slot_at(rom)
    }

    /// Points `current_rom` at `slot`, adding the slot to `roms` if the config lacks it.
    /// Everything else is preserved.
    pub fn select(&mut self, layout: &FlashLayout, slot: SlotId) {
        let offset = layout.slot(slot).offset;
        let count = usize::from(self.count).min(MAX_ROMS);
        let index = match self.roms[..count].iter().position(|&rom| rom == offset) {
            Some(index) => index,
            None => {
                let index = slot.index().max(count).min(MAX_ROMS - 1);
                self.roms[index] = offset;
                self.count = self.count.max(index as u8 + 1);
                index
            }
        };
        self.current_rom = index as u8;
    }
}

/// The chip size rBoot v1.4.2 (built with `BOOT_BIG_FLASH`) takes from the size code in
/// its own image header (byte 3's high nibble): the `-c1` codes count as their plain size,
/// unknown codes as 512 KB ("assume at least 4 Mbit").
pub const fn rboot_flash_size(size_code: u8) -> u32 {
    match size_code {
        1 => 0x4_0000,
        2 => 0x10_0000,
        3 | 5 => 0x20_0000,
        4 | 6 => 0x40_0000,
        8 => 0x80_0000,
        9 => 0x100_0000,
        _ => 0x8_0000,
    }
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(CHECKSUM_SEED, |acc, b| acc ^ b)
}

irom_text! {
    BOOT_CONFIG_READ = "boot config read failed";
    BOOT_CONFIG_ERASE = "boot config erase failed";
    BOOT_CONFIG_WRITE = "boot config write failed";
    BOOT_CONFIG_MISMATCH = "boot config reads back wrong after writing";
}

/// The boot config could not be rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootConfigError {
    Read,
    Erase,
    Write,
    /// Read back after writing, the config is not what was written.
    Mismatch,
}

impl Message for BootConfigError {
    fn write_message<S: Sink + ?Sized>(&self, out: &mut S) {
        out.push_text(match self {
            BootConfigError::Read => BOOT_CONFIG_READ,
            BootConfigError::Erase => BOOT_CONFIG_ERASE,
            BootConfigError::Write => BOOT_CONFIG_WRITE,
            BootConfigError::Mismatch => BOOT_CONFIG_MISMATCH,
        });
    }
}

impl fmt::Display for BootConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        text::display(self, f)
    }
}

/// The slot the boot config says runs. A config rBoot cannot read makes rBoot write its
/// default and boot ROM 0, so that means user1. `None` when the config names a ROM that is
/// not one of the layout's slots.
pub fn running_slot<F: ReadNorFlash>(flash: &mut F, layout: &FlashLayout) -> Option<SlotId> {
    let mut bytes = [0u8; CONFIG_STRUCT_LEN];
    if flash.read(BOOT_CONFIG_OFFSET, &mut bytes).is_err() {
        return Some(SlotId::User1);
    }
    let head: &[u8; CONFIG_LEN] = bytes[..CONFIG_LEN].try_into().ok()?;
    match BootConfig::parse(head) {
        Ok(config) => config.current_slot(layout),
        Err(_) => Some(SlotId::User1),
    }
}

/// The config's first word, written last.
const MAGIC_WORD: usize = 4;

/// Points the boot config at `target` the way rBoot rewrites it (every other field
/// preserved), with [`point_config`].
pub fn switch_boot_config<F: NorFlash>(
    flash: &mut F,
    layout: &FlashLayout,
    target: SlotId,
    sector: &mut SectorBuffer,
) -> Result<(), BootConfigError> {
    point_config(flash, layout, None, target, sector).map(|_| ())
}

/// Makes the boot config list `listed` (when given) and name `current`, starting from the
/// config in flash (rBoot's default for the flash size when it is not valid). Nothing is
/// written when it already does; else the sector is rewritten the way rBoot does it: the
/// whole sector read, the config put at its start (every other byte preserved), erased,
/// written back with its first word last, and the config read back to be sure. Returns the
/// config as it now is.
#[inline(never)]
pub fn point_config<F: NorFlash>(
    flash: &mut F,
    layout: &FlashLayout,
    listed: Option<SlotId>,
    current: SlotId,
    sector: &mut SectorBuffer,
) -> Result<BootConfig, BootConfigError> {
    flash.read(BOOT_CONFIG_OFFSET, sector).map_err(|_| BootConfigError::Read)?;
    let head: &[u8; CONFIG_LEN] = sector[..CONFIG_LEN].try_into().expect("sector holds a config");
    let stored = BootConfig::parse(head).ok();
    let mut config = stored.unwrap_or_else(|| BootConfig::rboot_default(layout.flash_size));
    if let Some(listed) = listed {
        config.select(layout, listed);
    }
    config.select(layout, current);
    if stored != Some(config) {
        write_config_sector(flash, &config, sector)?;
    }
    Ok(config)
}

/// Writes `config` over the config sector that `sector` holds as it is in flash.
fn write_config_sector<F: NorFlash>(
    flash: &mut F,
    config: &BootConfig,
    sector: &mut SectorBuffer,
) -> Result<(), BootConfigError> {
    let bytes = config.to_bytes();
    sector[..CONFIG_STRUCT_LEN].copy_from_slice(&bytes);
    flash.erase(BOOT_CONFIG_OFFSET, BOOT_CONFIG_OFFSET + SECTOR_SIZE).map_err(|_| BootConfigError::Erase)?;
    // The first word (magic, version, mode, current_rom) goes last: until it is whole, rBoot
    // sees no magic and falls back to its default config, which boots a verified image
    // either way. Written first, a torn tail could pass rBoot's 8-bit checksum by chance.
    let (head, tail) = sector.split_at(MAGIC_WORD);
    flash.write(BOOT_CONFIG_OFFSET + MAGIC_WORD as u32, tail).map_err(|_| BootConfigError::Write)?;
    flash.write(BOOT_CONFIG_OFFSET, head).map_err(|_| BootConfigError::Write)?;
    let mut check = [0u8; CONFIG_STRUCT_LEN];
    flash.read(BOOT_CONFIG_OFFSET, &mut check).map_err(|_| BootConfigError::Read)?;
    if check != bytes {
        return Err(BootConfigError::Mismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{DEFAULT_LAYOUT, LAYOUTS};

    #[test]
    fn encodes_rboot_layout_byte_for_byte() {
        let bytes = BootConfig::for_layout(DEFAULT_LAYOUT, SlotId::User2).to_bytes();
        let mut expected = vec![0xE1, 0x01, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00];
        expected.extend_from_slice(&0x2000u32.to_le_bytes());
        expected.extend_from_slice(&0x82000u32.to_le_bytes());
        expected.extend_from_slice(&[0; 8]);
        let sum = expected.iter().fold(0xEFu8, |a, b| a ^ b);
        expected.push(sum);
        expected.extend_from_slice(&[0; 3]);
        assert_eq!(bytes.to_vec(), expected);
    }

    #[test]
    fn parse_checks_magic_version_and_checksum() {
        let good = BootConfig::for_layout(DEFAULT_LAYOUT, SlotId::User1).to_bytes();
        let head: &[u8; CONFIG_LEN] = good[..CONFIG_LEN].try_into().unwrap();
        assert_eq!(BootConfig::parse(head).unwrap().current_slot(DEFAULT_LAYOUT), Some(SlotId::User1));
        for (at, expected) in [(0, "magic"), (1, "version"), (3, "checksum"), (24, "checksum")] {
            let mut bad = *head;
            bad[at] ^= 0x40;
            let err = BootConfig::parse(&bad).unwrap_err();
            assert!(err.to_string().contains(expected), "byte {at}: {err}");
        }
        assert_eq!(BootConfig::parse(&[0xFF; CONFIG_LEN]), Err(ConfigError::BadMagic(0xFF)));
    }

    #[test]
    fn rboot_default_equals_every_layout_booting_user1() {
        for layout in &LAYOUTS {
            assert_eq!(
                BootConfig::rboot_default(layout.flash_size),
                BootConfig::for_layout(layout, SlotId::User1)
            );
        }
    }

    #[test]
    fn flash_size_codes_read_like_rboot_big_flash() {
        let sizes: Vec<u32> = (0..=10).map(rboot_flash_size).collect();
        let (k, m) = (0x400, 0x10_0000);
        assert_eq!(sizes, [512 * k, 256 * k, m, 2 * m, 4 * m, 2 * m, 4 * m, 512 * k, 8 * m, 16 * m, 512 * k]);
    }

    #[test]
    fn select_preserves_other_fields() {
        let mut config = BootConfig::for_layout(DEFAULT_LAYOUT, SlotId::User1);
        config.mode = BootMode::GpioRom;
        config.gpio_rom = 1;
        config.unused = [7, 9];
        config.select(DEFAULT_LAYOUT, SlotId::User2);
        assert_eq!(config.current_rom, 1);
        assert_eq!(
            (config.mode, config.gpio_rom, config.unused, config.count),
            (BootMode::GpioRom, 1, [7, 9], 2)
        );

        // A config that lists the slots the other way round keeps its own order.
        let mut swapped = config;
        swapped.roms.swap(0, 1);
        swapped.select(DEFAULT_LAYOUT, SlotId::User2);
        assert_eq!(swapped.current_rom, 0);

        // A config with one ROM gains the missing slot.
        let mut single = BootConfig::for_layout(DEFAULT_LAYOUT, SlotId::User1);
        single.count = 1;
        single.roms[1] = 0;
        single.select(DEFAULT_LAYOUT, SlotId::User2);
        assert_eq!((single.count, single.current_rom, single.roms[1]), (2, 1, 0x82000));
    }

    #[test]
    fn point_config_writes_only_a_change_and_lists_both_slots() {
        use crate::flash::{FlashOp, RamNor, Recording};
        let mut flash = Recording::new(RamNor::new(DEFAULT_LAYOUT.flash_size));
        let mut sector = [0u8; crate::writer::SECTOR];
        // A blank sector: rBoot's default, pointed at user1, is written once.
        let config =
            point_config(&mut flash, DEFAULT_LAYOUT, Some(SlotId::User2), SlotId::User1, &mut sector)
                .unwrap();
        assert_eq!(config, BootConfig::for_layout(DEFAULT_LAYOUT, SlotId::User1));
        let log = flash.take_log();
        assert!(log.contains(&FlashOp::EraseSector(BOOT_CONFIG_OFFSET)), "{log:?}");
        // The same again: read, nothing written.
        point_config(&mut flash, DEFAULT_LAYOUT, Some(SlotId::User2), SlotId::User1, &mut sector).unwrap();
        assert_eq!(flash.take_log(), [], "nothing erased or programmed");
        // A switch writes, and the bytes after the config survive it.
        flash.inner.write(BOOT_CONFIG_OFFSET + 0x100, &[0xA5; 4]).unwrap();
        switch_boot_config(&mut flash, DEFAULT_LAYOUT, SlotId::User2, &mut sector).unwrap();
        let bytes = &flash.inner.bytes()[BOOT_CONFIG_OFFSET as usize..];
        assert_eq!(
            bytes[..CONFIG_STRUCT_LEN],
            BootConfig::for_layout(DEFAULT_LAYOUT, SlotId::User2).to_bytes()
        );
        assert_eq!(bytes[0x100..0x104], [0xA5; 4]);
    }
}
