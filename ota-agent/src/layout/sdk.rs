//! The flash maps of Espressif's NONOS SDK (its `SPI_FLASH_SIZE_MAP`), for firmware that
//! boots through the SDK's own bootloader (`boot_v1.7.bin` at 0x0) and switches slots with
//! the SDK's upgrade API rather than rBoot's config.
//!
//! The SDK puts user1 at 0x1000 and user2 at 0x81000 (maps 2, 3, 4: 512 + 512 KB) or
//! 0x101000 (maps 5, 6: 1024 + 1024 KB, each slot run from its own mapped megabyte, so both
//! link at 0x40201010). The last five sectors are the SDK's: RF calibration, PHY init data
//! and three sectors of system parameters (which hold the SDK bootloader's slot choice).

use crate::image::FlashSize;

use super::{FlashLayout, IMAGE_IROM_OFFSET, IROM_MAP_BASE, IROM_WINDOW, SECTOR_SIZE, Slot, SlotId};

/// Where user1 starts in every SDK map: right after the bootloader's sector.
pub const USER1_OFFSET: u32 = SECTOR_SIZE;
/// The SDK's sectors at the end of the chip: RF_CAL, PHY_DATA, then SYSTEM_PARAMETER.
pub const SYSTEM_SECTORS: u32 = 5 * SECTOR_SIZE;
/// Length of the system-parameter partition (the SDK's `SYSTEM_PARTITION_SYSTEM_PARAMETER`).
pub const SYSTEM_PARAMETER_LEN: u32 = 3 * SECTOR_SIZE;

/// One of the SDK's OTA maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SdkMap {
    pub layout: FlashLayout,
    /// The SDK's `SPI_FLASH_SIZE_MAP` number (also the size code in the image header).
    pub size_map: u8,
}

impl SdkMap {
    const fn new(name: &'static str, flash_size: u32, size_map: u8, user2: u32) -> SdkMap {
        let system = flash_size - SYSTEM_SECTORS;
        SdkMap {
            layout: FlashLayout {
                name,
                flash_size,
                slots: [
                    Slot {
                        id: SlotId::User1,
                        offset: USER1_OFFSET,
                        capacity: super::slot_capacity(USER1_OFFSET, user2 - SECTOR_SIZE, system),
                    },
                    Slot {
                        id: SlotId::User2,
                        offset: user2,
                        capacity: super::slot_capacity(user2, flash_size, system),
                    },
                ],
            },
            size_map,
        }
    }

    /// The header's flash size code for this map (`--flash-size 2MB-c1` and so on).
    pub fn flash_size(&self) -> FlashSize {
        FlashSize::from_code(self.size_map).expect("every SDK map is a header size code")
    }

    /// The RF calibration sector (`SYSTEM_PARTITION_RF_CAL`): `blank.bin` at first install.
    pub const fn rf_cal(&self) -> u32 {
        self.layout.flash_size - SYSTEM_SECTORS
    }

    /// The PHY init data sector (`SYSTEM_PARTITION_PHY_DATA`): `esp_init_data_default`.
    pub const fn phy_data(&self) -> u32 {
        self.rf_cal() + SECTOR_SIZE
    }

    /// The system parameters (`SYSTEM_PARTITION_SYSTEM_PARAMETER`, three sectors): erased
    /// with `blank.bin` at first install; the SDK keeps its WiFi settings and the boot
    /// loader's slot choice there.
    pub const fn system_parameter(&self) -> u32 {
        self.phy_data() + SECTOR_SIZE
    }

    /// Looks an SDK map up by name, ignoring ASCII case (`sdk-1MB`, `SDK-2mb-c1`).
    pub fn by_name(name: &str) -> Option<&'static SdkMap> {
        SDK_MAPS.iter().find(|map| map.layout.name.eq_ignore_ascii_case(name.trim()))
    }

    /// The names, for help texts.
    pub fn names() -> impl Iterator<Item = &'static str> {
        SDK_MAPS.iter().map(|map| map.layout.name)
    }

    /// The map the SDK uses for header size code `size`, if it is an OTA map.
    pub fn for_flash_size(size: FlashSize) -> Option<&'static SdkMap> {
        SDK_MAPS.iter().find(|map| map.size_map == size.code())
    }
}

/// The SDK's OTA maps: 1, 2 and 4 MB chips with 512 + 512 KB slots, 2 and 4 MB chips with
/// 1024 + 1024 KB slots. Maps 0 and 1 (512 KB and 256 KB chips) are left out: the SDK 3.0
/// examples refuse them too.
pub const SDK_MAPS: [SdkMap; 5] = [
    SdkMap::new("sdk-1MB", 0x10_0000, 2, 0x8_1000),
    SdkMap::new("sdk-2MB", 0x20_0000, 3, 0x8_1000),
    SdkMap::new("sdk-4MB", 0x40_0000, 4, 0x8_1000),
    SdkMap::new("sdk-2MB-c1", 0x20_0000, 5, 0x10_1000),
    SdkMap::new("sdk-4MB-c1", 0x40_0000, 6, 0x10_1000),
];

impl FlashLayout {
    /// The SDK map this layout is, when it is one: such a layout boots through the SDK's
    /// bootloader, not rBoot.
    pub fn sdk_map(&self) -> Option<&'static SdkMap> {
        SDK_MAPS.iter().find(|map| map.layout == *self)
    }
}

/// Where an image the SDK's `gen_appbin.py` wrote for app `app` (1 or 2) of a chip with
/// header size code `size` has its IROM linked: such images carry no tcpflash descriptor,
/// so this is what says which slot they belong to.
pub fn gen_appbin_link_addr(size: FlashSize, app: u8) -> Option<u32> {
    let map = SdkMap::for_flash_size(size)?;
    let slot = map.layout.slots.get(usize::from(app).checked_sub(1)?)?;
    Some(IROM_MAP_BASE + slot.offset % IROM_WINDOW + IMAGE_IROM_OFFSET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdk_maps_match_the_sdk_examples_partition_tables() {
        let one = SdkMap::by_name("sdk-1MB").unwrap();
        let [user1, user2] = one.layout.slots;
        assert_eq!((user1.offset, user2.offset), (0x1000, 0x8_1000));
        assert_eq!((user1.irom_link_addr(), user2.irom_link_addr()), (0x4020_1010, 0x4028_1010));
        assert_eq!(user1.capacity, 0x7_F000, "user1 runs up to user2's half");
        assert_eq!(user2.end(), 0xF_B000, "user2 stops at RF_CAL");
        assert_eq!((one.rf_cal(), one.phy_data(), one.system_parameter()), (0xF_B000, 0xF_C000, 0xF_D000));
        assert_eq!(one.flash_size(), FlashSize::Size1M);

        let four = SdkMap::by_name("SDK-4mb").unwrap();
        assert_eq!(four.layout.slots[1].irom_link_addr(), 0x4028_1010);
        assert_eq!(
            four.layout.slots[1].capacity, 0x7_F000,
            "512 + 512 on a 4 MB chip: the slot ends at 1 MB"
        );
        assert_eq!(four.system_parameter(), 0x3F_D000);

        for name in ["sdk-2MB-c1", "sdk-4MB-c1"] {
            let map = SdkMap::by_name(name).unwrap();
            let [user1, user2] = map.layout.slots;
            assert_eq!((user1.offset, user2.offset), (0x1000, 0x10_1000), "{name}");
            assert_eq!((user1.irom_link_addr(), user2.irom_link_addr()), (0x4020_1010, 0x4020_1010));
            assert_eq!(user1.capacity, 0xF_F000);
            assert_eq!(user2.mapped_megabyte(), 1);
        }
        assert_eq!(SdkMap::by_name("sdk-2MB-c1").unwrap().layout.slots[1].end(), 0x1F_B000);
        assert_eq!(SdkMap::by_name("sdk-4MB-c1").unwrap().layout.slots[1].capacity, 0xF_F000);
        assert_eq!(SdkMap::by_name("sdk-4MB-c1").unwrap().flash_size(), FlashSize::Size4MC1);
        assert!(SdkMap::by_name("sdk-512KB").is_none());
    }

    #[test]
    fn every_sdk_map_is_consistent_and_known_as_a_layout() {
        for map in &SDK_MAPS {
            let layout = &map.layout;
            let [user1, user2] = layout.slots;
            assert!(user1.end() < user2.offset, "{}: slots overlap", layout.name);
            assert!(user2.end() <= map.rf_cal());
            assert_eq!(map.system_parameter() + SYSTEM_PARAMETER_LEN, layout.flash_size);
            for slot in layout.slots {
                assert_eq!(slot.offset % SECTOR_SIZE, 0);
                assert_eq!(slot.capacity % SECTOR_SIZE, 0);
                assert!(slot.irom_capacity() >= slot.capacity - IMAGE_IROM_OFFSET);
                assert_eq!(
                    gen_appbin_link_addr(map.flash_size(), slot.id.index() as u8 + 1),
                    Some(slot.irom_link_addr())
                );
            }
            assert_eq!(FlashLayout::by_name(layout.name), Some(layout));
            assert_eq!(layout.sdk_map(), Some(map));
            assert!(!layout.has_boot_config(), "{}", layout.name);
        }
        assert!(super::super::LAYOUTS.iter().all(|layout| layout.sdk_map().is_none()));
        assert!(super::super::LAYOUTS.iter().all(|layout| layout.has_boot_config()));
        assert_eq!(gen_appbin_link_addr(FlashSize::Size512K, 1), None, "map 0 is not supported");
        assert_eq!(gen_appbin_link_addr(FlashSize::Size1M, 3), None);
        assert_eq!(gen_appbin_link_addr(FlashSize::Size1M, 0), None);
    }
}
