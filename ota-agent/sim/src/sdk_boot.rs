//! The NONOS SDK's boot on an SDK map, as the virtual device models it: which user bin the
//! SDK's bootloader starts, what `system_upgrade_flag_set(UPGRADE_FLAG_FINISH)` followed by
//! `system_upgrade_reboot()` changes, and the fall-back to the other image when the chosen
//! one is bad.
//!
//! The SDK keeps its boot parameters in the system-parameter sectors in a format of its own
//! that Espressif does not document (`boot_v1.7`, disassembled, reads a select byte and
//! 8 bytes of parameters there). The model keeps the behaviour, not those bytes: its own
//! 8-byte record ([`RECORD_MAGIC`], the bin to boot, the upgrade flag) at the start of the
//! system-parameter area. Erased (as `blank.bin` leaves it after a first install) it boots
//! user1, as the SDK does after a first install. The check of an image is the bootloader's:
//! its first byte must be a header magic (0xEA for a v2 image, 0xE9 for v1); a bad one makes
//! it start the other image ("first boot failed" in the SDK's log).

use std::fmt;

use ota_agent::flash::{NorFlash, NorFlashErrorKind};
use ota_agent::image::{MAGIC_SEGMENTS, MAGIC_V2};
use ota_agent::layout::sdk::SdkMap;
use ota_agent::layout::{SECTOR_SIZE, SlotId};

/// The model's record (not the SDK's bytes): `TFSB`, bin (0 user1, 1 user2), upgrade flag.
pub const RECORD_MAGIC: [u8; 4] = *b"TFSB";
/// `UPGRADE_FLAG_FINISH`.
pub const UPGRADE_FINISHED: u8 = 2;

/// What the SDK's bootloader did on the way to its choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SdkBootEvent {
    /// The chosen image's first byte is no header magic: the other one starts.
    FirstBootFailed { slot: SlotId, found: u8 },
}

impl fmt::Display for SdkBootEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SdkBootEvent::FirstBootFailed { slot, found } => {
                write!(f, "SDK boot: {slot} is bad (first byte {found:#04x}), starting the other image")
            }
        }
    }
}

/// The image the SDK's bootloader starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdkBoot {
    pub slot: SlotId,
    pub offset: u32,
    pub events: Vec<SdkBootEvent>,
}

/// Neither image starts (or the flash failed): a serial install is needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SdkBricked {
    NoGoodImage { first: u8, backup: u8 },
    Flash(NorFlashErrorKind),
}

impl fmt::Display for SdkBricked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SdkBricked::NoGoodImage { first, backup } => write!(
                f,
                "neither image starts (first bytes {first:#04x} and {backup:#04x}: \"backup boot failed\")"
            ),
            SdkBricked::Flash(kind) => write!(f, "flash failed while booting: {kind}"),
        }
    }
}

impl std::error::Error for SdkBricked {}

fn flash_error<E: ota_agent::flash::NorFlashError>(error: E) -> SdkBricked {
    SdkBricked::Flash(error.kind())
}

/// The bin the record selects; erased or unreadable, user1.
pub fn selected<F: NorFlash>(flash: &mut F, map: &SdkMap) -> Result<SlotId, SdkBricked> {
    let mut record = [0u8; 8];
    flash.read(map.system_parameter(), &mut record).map_err(flash_error)?;
    Ok(match (record[..4] == RECORD_MAGIC, record[4]) {
        (true, 1) => SlotId::User2,
        _ => SlotId::User1,
    })
}

/// Power-on: the selected image, or the other when the selected one's magic is bad.
pub fn boot<F: NorFlash>(flash: &mut F, map: &SdkMap) -> Result<SdkBoot, SdkBricked> {
    let chosen = selected(flash, map)?;
    let first = first_byte(flash, map, chosen)?;
    if matches!(first, MAGIC_V2 | MAGIC_SEGMENTS) {
        return Ok(SdkBoot { slot: chosen, offset: map.layout.slot(chosen).offset, events: Vec::new() });
    }
    let backup = chosen.other();
    let second = first_byte(flash, map, backup)?;
    if !matches!(second, MAGIC_V2 | MAGIC_SEGMENTS) {
        return Err(SdkBricked::NoGoodImage { first, backup: second });
    }
    Ok(SdkBoot {
        slot: backup,
        offset: map.layout.slot(backup).offset,
        events: vec![SdkBootEvent::FirstBootFailed { slot: chosen, found: first }],
    })
}

fn first_byte<F: NorFlash>(flash: &mut F, map: &SdkMap, slot: SlotId) -> Result<u8, SdkBricked> {
    let mut byte = [0u8; 4];
    flash.read(map.layout.slot(slot).offset, &mut byte).map_err(flash_error)?;
    Ok(byte[0])
}

/// `system_upgrade_flag_set(UPGRADE_FLAG_FINISH)` and `system_upgrade_reboot()` on a device
/// running `running`: the other bin is selected for the next boot.
pub fn upgrade_reboot<F: NorFlash>(flash: &mut F, map: &SdkMap, running: SlotId) -> Result<(), SdkBricked> {
    let target = running.other();
    let mut record = [0xFFu8; 8];
    record[..4].copy_from_slice(&RECORD_MAGIC);
    record[4] = target.index() as u8;
    record[5] = UPGRADE_FINISHED;
    let at = map.system_parameter();
    flash.erase(at, at + SECTOR_SIZE).map_err(flash_error)?;
    flash.write(at, &record).map_err(flash_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ota_agent::flash::RamNor;

    fn map() -> &'static SdkMap {
        SdkMap::by_name("sdk-1MB").unwrap()
    }

    fn installed() -> RamNor<Vec<u8>> {
        let mut flash = RamNor::new(map().layout.flash_size);
        for slot in map().layout.slots {
            flash.write(slot.offset, &[MAGIC_V2, 4, 0, 0x20]).unwrap();
        }
        flash
    }

    #[test]
    fn a_first_install_boots_user1_and_the_upgrade_switches_to_user2_and_back() {
        let mut flash = installed();
        assert_eq!(
            boot(&mut flash, map()).unwrap(),
            SdkBoot { slot: SlotId::User1, offset: 0x1000, events: vec![] }
        );
        upgrade_reboot(&mut flash, map(), SlotId::User1).unwrap();
        assert_eq!(boot(&mut flash, map()).unwrap().slot, SlotId::User2);
        assert_eq!(flash.bytes()[0xF_D000 + 5], UPGRADE_FINISHED);
        upgrade_reboot(&mut flash, map(), SlotId::User2).unwrap();
        assert_eq!(boot(&mut flash, map()).unwrap().offset, 0x1000);
    }

    #[test]
    fn a_bad_chosen_image_falls_back_to_the_other_and_two_bad_ones_brick() {
        let mut flash = installed();
        upgrade_reboot(&mut flash, map(), SlotId::User1).unwrap();
        flash.erase(0x8_1000, 0x8_2000).unwrap();
        let booted = boot(&mut flash, map()).unwrap();
        assert_eq!(booted.slot, SlotId::User1);
        assert_eq!(booted.events, [SdkBootEvent::FirstBootFailed { slot: SlotId::User2, found: 0xFF }]);
        flash.erase(0x1000, 0x2000).unwrap();
        assert_eq!(boot(&mut flash, map()), Err(SdkBricked::NoGoodImage { first: 0xFF, backup: 0xFF }));
    }
}
