//! Flash layouts: where the boot config and the two firmware slots live.
//!
//! The slots are the ones rBoot writes in its default config (ROM 0 at 0x2000, ROM 1 at
//! half the flash + 0x2000). Keeping exactly those matters: when the config sector is lost
//! (a power cut while it is rewritten), rBoot recreates that default and still finds both
//! images. The SDK's own maps (boot through Espressif's bootloader) are in [`sdk`].

pub mod sdk;

/// Erase unit of the SPI NOR flash.
pub const SECTOR_SIZE: u32 = 0x1000;
/// Large erase unit (one command, much faster than 16 sector erases).
pub const BLOCK_SIZE: u32 = 0x1_0000;
/// rBoot's config lives at the start of sector 1.
pub const BOOT_CONFIG_OFFSET: u32 = 0x1000;
/// Where the flash cache maps the selected 1 MB window of flash.
pub const IROM_MAP_BASE: u32 = 0x4020_0000;
/// Size of the window the flash cache maps at once.
pub const IROM_WINDOW: u32 = 0x10_0000;
/// The IROM bytes start 16 bytes into a v2 image (8-byte image header + 8-byte segment header).
pub const IMAGE_IROM_OFFSET: u32 = 0x10;
/// The last four sectors hold the SDK's RF calibration and init data: never ours.
pub const SYSTEM_RESERVED: u32 = 0x4000;

/// Data RAM the bootloader can load segments into (esptool's DRAM range; the ROM keeps its
/// own data and the stack in the top 16 KB).
pub const DRAM: core::ops::Range<u32> = 0x3FFE_8000..0x4000_0000;
/// The part of DRAM a firmware's `.data`, `.rodata` and `.bss` may use.
pub const DRAM_USABLE: core::ops::Range<u32> = 0x3FFE_8000..0x3FFF_C000;
/// Instruction RAM: code that must run while the flash cache is off.
pub const IRAM: core::ops::Range<u32> = 0x4010_0000..0x4010_8000;
/// Flash-mapped code: the 1 MB window the cache shows.
pub const IROM: core::ops::Range<u32> = IROM_MAP_BASE..IROM_MAP_BASE + IROM_WINDOW;

/// The RAM the flash cache uses when it is on, right after [`IRAM`]. While it is off (at
/// boot) it is instruction RAM the mask ROM loads a bootloader into.
pub const CACHE_RAM: core::ops::Range<u32> = IRAM.end..0x4011_0000;
/// Where tcpflash-boot's code runs: the top 8 KB of the flash cache's RAM
/// ([`CACHE_RAM`]). The mask ROM loads it there while the cache is off (Arduino's
/// eboot runs at 0x4010F000), and no firmware segment may target it (firmware IRAM ends at
/// [`IRAM`]'s end), so copying a firmware never overwrites the code doing the copying.
pub const BOOTLOADER_IRAM: core::ops::Range<u32> = 0x4010_E000..0x4011_0000;
/// tcpflash-boot's constants and variables: the top 4 KB of the DRAM a firmware may use. A
/// firmware's DRAM segments may overwrite them, so the copy phase uses only its stack (the
/// ROM's, above [`DRAM_USABLE`]).
pub const BOOTLOADER_DRAM: core::ops::Range<u32> = 0x3FFF_B000..DRAM_USABLE.end;
/// The bootloader lives in sector 0: its whole v1 image, header included, is at most this.
pub const BOOTLOADER_MAX_LEN: u32 = SECTOR_SIZE;
/// RTC user memory (survives a reset, not a power cut): 0x60001100..0x60001300. rBoot keeps
/// its own data at its start; the hand-off record from tcpflash-boot to the firmware takes
/// its last 16 bytes.
pub const RTC_USER_MEMORY: core::ops::Range<u32> = 0x6000_1100..0x6000_1300;

// Copying a firmware (IRAM up to `IRAM.end`, DRAM up to `DRAM_USABLE.end`) never reaches the
// bootloader's code, which has room for a whole sector's image.
const _: () = assert!(BOOTLOADER_IRAM.start >= IRAM.end && BOOTLOADER_IRAM.end <= CACHE_RAM.end);
const _: () = assert!(BOOTLOADER_IRAM.end - BOOTLOADER_IRAM.start >= BOOTLOADER_MAX_LEN);
const _: () = assert!(BOOTLOADER_DRAM.start >= DRAM_USABLE.start && BOOTLOADER_DRAM.end <= DRAM_USABLE.end);

/// Bytes an image at flash `offset` (one of rBoot's `roms[]`) may take to still run: up to
/// the end of the megabyte the cache maps for it, or of the chip (0 past the chip). What a
/// bootloader bounds an image by; the agent bounds what it writes by the slot.
pub const fn rom_capacity(flash_size: u32, offset: u32) -> u32 {
    let window_end = (offset / IROM_WINDOW + 1).saturating_mul(IROM_WINDOW);
    let end = if window_end < flash_size { window_end } else { flash_size };
    end.saturating_sub(offset)
}

/// The IROM address code must be linked at to run from an image at flash `offset`: the
/// cache maps the megabyte holding the image, whose IROM bytes start 16 bytes in.
pub const fn irom_link_addr_for(offset: u32) -> u32 {
    IROM_MAP_BASE + offset % IROM_WINDOW + IMAGE_IROM_OFFSET
}

/// One of the two firmware slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlotId {
    User1,
    User2,
}

impl SlotId {
    pub const ALL: [SlotId; 2] = [SlotId::User1, SlotId::User2];

    /// Index in the layout and in rBoot's `roms[]`.
    pub const fn index(self) -> usize {
        match self {
            SlotId::User1 => 0,
            SlotId::User2 => 1,
        }
    }

    pub const fn from_index(index: usize) -> Option<SlotId> {
        match index {
            0 => Some(SlotId::User1),
            1 => Some(SlotId::User2),
            _ => None,
        }
    }

    /// The slot an update goes to while this one runs.
    pub const fn other(self) -> SlotId {
        match self {
            SlotId::User1 => SlotId::User2,
            SlotId::User2 => SlotId::User1,
        }
    }

    /// `user1` or `user2`: the stem of the image file names.
    pub const fn name(self) -> &'static str {
        match self {
            SlotId::User1 => "user1",
            SlotId::User2 => "user2",
        }
    }

    /// `user1.bin` or `user2.bin`, as the protocol names the slots.
    pub const fn file_name(self) -> &'static str {
        match self {
            SlotId::User1 => "user1.bin",
            SlotId::User2 => "user2.bin",
        }
    }
}

impl core::fmt::Display for SlotId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// A firmware slot: a sector-aligned flash range that holds one v2 image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub id: SlotId,
    /// Flash offset of the image's first byte.
    pub offset: u32,
    /// Bytes an image may occupy.
    pub capacity: u32,
}

impl Slot {
    /// Address the IROM code of an image for this slot must be linked at. The cache maps
    /// the 1 MB window that holds the slot (rBoot's big-flash mode for 2 MB and 4 MB chips).
    pub const fn irom_link_addr(&self) -> u32 {
        irom_link_addr_for(self.offset)
    }

    /// Flash offset just past the slot.
    pub const fn end(&self) -> u32 {
        self.offset + self.capacity
    }

    /// Which 1 MB window of flash the cache must map to run from this slot.
    pub const fn mapped_megabyte(&self) -> u32 {
        self.offset / IROM_WINDOW
    }

    /// Bytes the IROM segment may have: it must stay inside the mapped window.
    pub const fn irom_capacity(&self) -> u32 {
        let window_end = (self.mapped_megabyte() + 1) * IROM_WINDOW;
        window_end - (self.offset + IMAGE_IROM_OFFSET)
    }

    /// Whether `offset..offset + len` lies inside the slot.
    pub const fn contains(&self, offset: u32, len: u32) -> bool {
        offset >= self.offset && len <= self.capacity && offset - self.offset <= self.capacity - len
    }
}

/// A flash chip size with its two slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlashLayout {
    /// Name used on the command line and in `[package.metadata.tcpflash]`.
    pub name: &'static str,
    pub flash_size: u32,
    pub slots: [Slot; 2],
}

impl FlashLayout {
    /// The rBoot default layout for a chip of `flash_size` bytes.
    pub const fn rboot(name: &'static str, flash_size: u32) -> FlashLayout {
        let half = flash_size / 2;
        let first = BOOT_CONFIG_OFFSET + SECTOR_SIZE;
        let second = half + first;
        let system = flash_size - SYSTEM_RESERVED;
        FlashLayout {
            name,
            flash_size,
            slots: [
                Slot { id: SlotId::User1, offset: first, capacity: slot_capacity(first, half, system) },
                Slot {
                    id: SlotId::User2,
                    offset: second,
                    capacity: slot_capacity(second, flash_size, system),
                },
            ],
        }
    }

    pub const fn slot(&self, id: SlotId) -> &Slot {
        &self.slots[id.index()]
    }

    /// The slot whose image starts at `offset`, as rBoot's `roms[]` records it.
    pub fn slot_at(&self, offset: u32) -> Option<SlotId> {
        self.slots.iter().find(|slot| slot.offset == offset).map(|slot| slot.id)
    }

    /// Whether rBoot's config sector ([`BOOT_CONFIG_OFFSET`]) is this layout's: not on an
    /// SDK map ([`sdk`]), whose user1 starts there and whose slot switch is the SDK's flag.
    /// (The device's check: [`FlashLayout::sdk_map`] compares whole layouts.)
    pub const fn has_boot_config(&self) -> bool {
        self.slots[0].offset > BOOT_CONFIG_OFFSET
    }

    /// The boot-state sector (trial record): half the flash, free in every rBoot layout
    /// (user1 ends there, user2 starts one sector later), and never the config sector, so
    /// one erase never tears both.
    pub const fn boot_state_offset(&self) -> u32 {
        self.flash_size / 2
    }

    /// Looks a layout up by name, case-insensitively (`1MB`, `1mb`, `1M`, `1024KB`, and the
    /// SDK's maps: `sdk-1MB`, `sdk-2MB-c1`).
    pub fn by_name(name: &str) -> Option<&'static FlashLayout> {
        if let Some(map) = sdk::SdkMap::by_name(name) {
            return Some(&map.layout);
        }
        let wanted = normalize_size_name(name)?;
        LAYOUTS.iter().find(|layout| layout.flash_size == wanted)
    }

    /// The names `by_name` accepts, for help texts.
    pub fn names() -> impl Iterator<Item = &'static str> {
        LAYOUTS.iter().map(|layout| layout.name)
    }
}

/// The slot ends at the next boundary: the other slot, the end of the 1 MB window the cache
/// maps, or the reserved system sectors at the end of the chip (from `system` on), whichever
/// comes first.
const fn slot_capacity(offset: u32, next_boundary: u32, system: u32) -> u32 {
    let window_end = (offset / IROM_WINDOW + 1) * IROM_WINDOW;
    let mut end = next_boundary;
    if window_end < end {
        end = window_end;
    }
    if system < end {
        end = system;
    }
    end - offset
}

/// The layouts tcpflash supports, smallest first.
pub const LAYOUTS: [FlashLayout; 4] = [
    FlashLayout::rboot("512KB", 0x8_0000),
    FlashLayout::rboot("1MB", 0x10_0000),
    FlashLayout::rboot("2MB", 0x20_0000),
    FlashLayout::rboot("4MB", 0x40_0000),
];

/// The layout of the ESP-01S and most 1 MB modules.
pub const DEFAULT_LAYOUT: &FlashLayout = &LAYOUTS[1];

fn normalize_size_name(name: &str) -> Option<u32> {
    let name = name.trim();
    let split = name.find(|c: char| !c.is_ascii_digit()).unwrap_or(name.len());
    let (digits, unit) = name.split_at(split);
    let number: u32 = digits.parse().ok()?;
    let unit = unit.trim();
    let multiplier = if unit.eq_ignore_ascii_case("MB") || unit.eq_ignore_ascii_case("M") {
        0x10_0000
    } else if unit.eq_ignore_ascii_case("KB") || unit.eq_ignore_ascii_case("K") {
        0x400
    } else {
        return None;
    };
    number.checked_mul(multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_megabyte_matches_rboot_defaults() {
        let layout = FlashLayout::by_name("1MB").unwrap();
        assert_eq!(layout, DEFAULT_LAYOUT);
        let [user1, user2] = layout.slots;
        assert_eq!((user1.offset, user2.offset), (0x2000, 0x82000));
        assert_eq!((user1.irom_link_addr(), user2.irom_link_addr()), (0x4020_2010, 0x4028_2010));
        assert_eq!(user1.capacity, 0x7_E000, "user1 runs up to user2's half");
        assert_eq!(user2.capacity, 0x7_A000, "user2 stops before the 16 KB system area");
        assert_eq!(user2.end(), 0x10_0000 - SYSTEM_RESERVED);
    }

    #[test]
    fn half_megabyte_layout() {
        let layout = FlashLayout::by_name("512kb").unwrap();
        let [user1, user2] = layout.slots;
        assert_eq!((user1.offset, user2.offset), (0x2000, 0x4_2000));
        assert_eq!(user2.irom_link_addr(), 0x4024_2010);
        assert_eq!((user1.capacity, user2.capacity), (0x3_E000, 0x3_A000));
    }

    #[test]
    fn big_flash_layouts_stay_inside_their_mapped_megabyte() {
        let two = FlashLayout::by_name("2M").unwrap();
        assert_eq!(two.slots[1].offset, 0x10_2000);
        assert_eq!(two.slots[1].mapped_megabyte(), 1);
        // Both slots sit 0x2000 into their window, so both link at the same address.
        assert_eq!(two.slots[0].irom_link_addr(), 0x4020_2010);
        assert_eq!(two.slots[1].irom_link_addr(), 0x4020_2010);
        assert_eq!(two.slots[0].capacity, 0xF_E000);
        assert_eq!(two.slots[1].capacity, 0xF_A000, "the system area ends the chip");

        let four = FlashLayout::by_name("4096KB").unwrap();
        assert_eq!(four.slots[1].offset, 0x20_2000);
        assert_eq!(four.slots[1].mapped_megabyte(), 2);
        assert_eq!(four.slots[1].capacity, 0xF_E000, "the 1 MB window ends the slot");
    }

    #[test]
    fn every_layout_is_consistent() {
        for layout in &LAYOUTS {
            let [user1, user2] = layout.slots;
            assert!(user1.offset > BOOT_CONFIG_OFFSET);
            assert!(user1.end() <= user2.offset, "{}: slots overlap", layout.name);
            assert!(user2.end() <= layout.flash_size - SYSTEM_RESERVED);
            for slot in layout.slots {
                assert_eq!(slot.offset % SECTOR_SIZE, 0);
                assert_eq!(slot.capacity % SECTOR_SIZE, 0);
                assert!(slot.irom_capacity() >= slot.capacity - IMAGE_IROM_OFFSET);
                assert_eq!(layout.slot_at(slot.offset), Some(slot.id));
            }
        }
    }

    #[test]
    fn boot_state_sector_is_free_in_every_layout() {
        let expected = [0x4_0000, 0x8_0000, 0x10_0000, 0x20_0000];
        for (layout, expected) in LAYOUTS.iter().zip(expected) {
            let state = layout.boot_state_offset();
            assert_eq!(state, expected, "{}", layout.name);
            assert_eq!(state % SECTOR_SIZE, 0);
            let sector = state..state + SECTOR_SIZE;
            let config = BOOT_CONFIG_OFFSET..BOOT_CONFIG_OFFSET + SECTOR_SIZE;
            assert!(sector.end <= config.start || sector.start >= config.end, "{}", layout.name);
            for slot in layout.slots {
                let overlaps = sector.start < slot.end() && slot.offset < sector.end;
                assert!(!overlaps, "{}: boot state {state:#x} overlaps {}", layout.name, slot.id);
            }
            assert!(sector.end <= layout.flash_size - SYSTEM_RESERVED);
        }
    }

    #[test]
    fn rom_capacity_ends_with_the_mapped_megabyte_or_the_chip() {
        let one = DEFAULT_LAYOUT.flash_size;
        assert_eq!(rom_capacity(one, 0x2000), 0xF_E000);
        assert_eq!(rom_capacity(one, 0x82000), 0x7_E000, "the chip ends first");
        assert_eq!(rom_capacity(0x40_0000, 0x30_1000), 0xF_F000, "the megabyte ends first");
        assert_eq!(rom_capacity(one, 0x20_0000), 0, "past the chip");
        assert_eq!(rom_capacity(one, u32::MAX), 0);
        for layout in &LAYOUTS {
            for slot in layout.slots {
                assert!(rom_capacity(layout.flash_size, slot.offset) >= slot.capacity, "{}", layout.name);
            }
        }
        assert_eq!(irom_link_addr_for(0x10_2000), 0x4020_2010);
    }

    #[test]
    fn bootloader_memory_is_outside_what_a_firmware_loads() {
        // The compile-time checks next to the constants hold these; the values are the spec's.
        assert_eq!((BOOTLOADER_IRAM.start, BOOTLOADER_DRAM.start), (0x4010_E000, 0x3FFF_B000));
        assert_eq!(RTC_USER_MEMORY.end - RTC_USER_MEMORY.start, 512);
    }

    #[test]
    fn contains_checks_both_ends_without_overflow() {
        let slot = DEFAULT_LAYOUT.slots[0];
        assert!(slot.contains(0x2000, slot.capacity));
        assert!(!slot.contains(0x2000, slot.capacity + 1));
        assert!(!slot.contains(0x1FFC, 4));
        assert!(!slot.contains(0x3000, u32::MAX));
    }

    #[test]
    fn names_are_parsed_strictly() {
        assert!(FlashLayout::by_name("3MB").is_none());
        assert!(FlashLayout::by_name("1GB").is_none());
        assert!(FlashLayout::by_name("MB").is_none());
        assert!(FlashLayout::by_name("99999999999MB").is_none());
        assert_eq!(FlashLayout::names().collect::<Vec<_>>(), ["512KB", "1MB", "2MB", "4MB"]);
        assert_eq!(SlotId::User2.other(), SlotId::User1);
        assert_eq!(SlotId::User1.file_name(), "user1.bin");
    }
}
