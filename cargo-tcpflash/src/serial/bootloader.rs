//! Checks that a file is a plausible second-stage bootloader before it goes to flash
//! offset 0: an ESP8266 "v1" image (what rBoot's build and `esptool elf2image --version 1`
//! write), which the ROM loads into RAM and boots.
//!
//! v1 layout, little-endian: E9, segment count, flash mode, size/freq, entry (u32); per
//! segment a load address (u32), a length (u32) and the bytes; zeros up to a file position
//! that is 15 mod 16; one checksum byte, 0xEF XOR every segment byte.

use ota_agent::layout::{BOOT_CONFIG_OFFSET, CACHE_RAM, DRAM, IRAM};

use ota_agent::image::{CHECKSUM_SEED, MAGIC_SEGMENTS as V1_MAGIC, MAGIC_V2 as V2_MAGIC};

/// esptool refuses more segments than this.
const MAX_SEGMENTS: u8 = ota_agent::image::MAX_SEGMENTS as u8;
const HEADER_LEN: usize = 8;
const SEGMENT_HEADER_LEN: usize = 8;

/// What a valid bootloader image holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootloaderInfo {
    pub entry: u32,
    /// (load address, length) of each segment.
    pub segments: Vec<(u32, u32)>,
    pub checksum: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BootloaderError {
    #[error("the file is empty")]
    Empty,
    #[error("it is {len} bytes, shorter than the 8-byte image header")]
    TooShort { len: usize },
    #[error("it starts with 0xea: that is a v2 application image (like user1.bin), not a bootloader")]
    ApplicationImage,
    #[error("it starts with {found:#04x}, not 0xe9, so it is not an ESP8266 v1 image")]
    BadMagic { found: u8 },
    #[error("its header claims {count} segments; a v1 image has 1 to {MAX_SEGMENTS}")]
    SegmentCount { count: u8 },
    #[error("segment {index} ({len} bytes at {addr:#010x}) runs past the end of the {file_len}-byte file")]
    Truncated { index: usize, addr: u32, len: u32, file_len: usize },
    #[error(
        "segment {index} loads {len} bytes at {addr:#010x}, outside the ESP8266's IRAM (cache RAM included) and DRAM"
    )]
    OutsideRam { index: usize, addr: u32, len: u32 },
    #[error("the file ends before the checksum byte at offset {at:#x}")]
    MissingChecksum { at: usize },
    #[error("its checksum byte is {stored:#04x} but the segments sum to {computed:#04x}")]
    BadChecksum { stored: u8, computed: u8 },
    #[error("it is {len} bytes and must end before the boot config at {BOOT_CONFIG_OFFSET:#x}")]
    TooBig { len: usize },
}

/// Walks the whole image: header, every segment, padding and checksum.
pub fn check(image: &[u8]) -> Result<BootloaderInfo, BootloaderError> {
    match image.first() {
        None => return Err(BootloaderError::Empty),
        Some(&V2_MAGIC) => return Err(BootloaderError::ApplicationImage),
        Some(&V1_MAGIC) => {}
        Some(&found) => return Err(BootloaderError::BadMagic { found }),
    }
    if image.len() < HEADER_LEN {
        return Err(BootloaderError::TooShort { len: image.len() });
    }
    if image.len() > BOOT_CONFIG_OFFSET as usize {
        return Err(BootloaderError::TooBig { len: image.len() });
    }
    let count = image[1];
    if count == 0 || count > MAX_SEGMENTS {
        return Err(BootloaderError::SegmentCount { count });
    }
    let entry = read_u32(image, 4);
    let mut at = HEADER_LEN;
    let mut checksum = CHECKSUM_SEED;
    let mut segments = Vec::with_capacity(usize::from(count));
    for index in 0..usize::from(count) {
        let truncated = |addr, len| BootloaderError::Truncated { index, addr, len, file_len: image.len() };
        if at + SEGMENT_HEADER_LEN > image.len() {
            return Err(truncated(0, 0));
        }
        let addr = read_u32(image, at);
        let len = read_u32(image, at + 4);
        at += SEGMENT_HEADER_LEN;
        let data = image.get(at..at.saturating_add(len as usize)).ok_or(truncated(addr, len))?;
        if !in_ram(addr, len) {
            return Err(BootloaderError::OutsideRam { index, addr, len });
        }
        checksum = data.iter().fold(checksum, |acc, byte| acc ^ byte);
        segments.push((addr, len));
        at += data.len();
    }
    // Padding runs to the next position that is 15 mod 16; the checksum sits there.
    let checksum_at = at | 0xF;
    let stored = *image.get(checksum_at).ok_or(BootloaderError::MissingChecksum { at: checksum_at })?;
    if stored != checksum {
        return Err(BootloaderError::BadChecksum { stored, computed: checksum });
    }
    Ok(BootloaderInfo { entry, segments, checksum })
}

/// Where the mask ROM loads a bootloader: DRAM, IRAM, and the flash cache's RAM right after
/// IRAM (off at boot), where tcpflash-boot and Arduino's eboot run.
fn in_ram(addr: u32, len: u32) -> bool {
    let Some(end) = addr.checked_add(len) else { return false };
    [DRAM, IRAM.start..CACHE_RAM.end].iter().any(|range| range.start <= addr && end <= range.end)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Writes a v1 image (for tests and fixtures: the format is small enough to state here).
pub fn build_v1(entry: u32, segments: &[(u32, &[u8])]) -> Vec<u8> {
    let mut image = vec![V1_MAGIC, segments.len() as u8, 0x00, 0x20];
    image.extend_from_slice(&entry.to_le_bytes());
    let mut checksum = CHECKSUM_SEED;
    for (addr, data) in segments {
        image.extend_from_slice(&addr.to_le_bytes());
        image.extend_from_slice(&(data.len() as u32).to_le_bytes());
        image.extend_from_slice(data);
        checksum = data.iter().fold(checksum, |acc, byte| acc ^ byte);
    }
    image.resize(image.len() | 0xF, 0);
    image.push(checksum);
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        build_v1(0x4010_0004, &[(0x4010_0000, &[1, 2, 3, 4, 5, 6, 7, 8]), (0x3FFE_8000, &[9, 9, 9, 9])])
    }

    #[test]
    fn accepts_a_well_formed_image() {
        let image = sample();
        assert_eq!(image.len() % 16, 0);
        let info = check(&image).unwrap();
        assert_eq!(info.entry, 0x4010_0004);
        assert_eq!(info.segments, [(0x4010_0000, 8), (0x3FFE_8000, 4)]);
        assert_eq!(info.checksum, 0xEF ^ 1 ^ 2 ^ 3 ^ 4 ^ 5 ^ 6 ^ 7 ^ 8);
    }

    #[test]
    fn a_bootloader_in_the_cache_ram_is_accepted() {
        // tcpflash-boot's code runs at 0x4010E000 (the cache's RAM), its data at DRAM's top.
        let image = build_v1(0x4010_E004, &[(0x4010_E000, &[1; 64]), (0x3FFF_B000, &[2; 8])]);
        assert_eq!(check(&image).unwrap().segments, [(0x4010_E000, 64), (0x3FFF_B000, 8)]);
        let past = build_v1(0x4010_FFF0, &[(0x4010_FFF0, &[1; 32])]);
        assert!(matches!(check(&past), Err(BootloaderError::OutsideRam { .. })));
    }

    #[test]
    fn says_why_an_image_is_refused() {
        let good = sample();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "empty"),
            (vec![0xE9, 1, 0, 0], "shorter than the 8-byte image header"),
            (
                {
                    let mut v = good.clone();
                    v[0] = 0xEA;
                    v
                },
                "v2 application image",
            ),
            (
                {
                    let mut v = good.clone();
                    v[0] = 0x7F;
                    v
                },
                "starts with 0x7f, not 0xe9",
            ),
            (
                {
                    let mut v = good.clone();
                    v[1] = 0;
                    v
                },
                "claims 0 segments",
            ),
            (
                {
                    let mut v = good.clone();
                    v[1] = 200;
                    v
                },
                "claims 200 segments",
            ),
            (
                {
                    let mut v = good.clone();
                    v[1] = 3;
                    v
                },
                "segment 2",
            ),
            (
                {
                    let mut v = good.clone();
                    v[12] = 0xFF;
                    v
                },
                "runs past the end",
            ),
            (
                {
                    let mut v = good.clone();
                    v[11] = 0x60;
                    v
                },
                "outside the ESP8266's IRAM (cache RAM included) and DRAM",
            ),
            (good[..good.len() - 1].to_vec(), "ends before the checksum byte at offset 0x2f"),
            (
                {
                    let mut v = good.clone();
                    v[16] ^= 1;
                    v
                },
                "checksum byte is",
            ),
            (
                {
                    let mut v = good.clone();
                    v.resize(0x1001, 0);
                    v
                },
                "must end before the boot config at 0x1000",
            ),
        ];
        for (image, expected) in cases {
            let message = check(&image).unwrap_err().to_string();
            assert!(message.contains(expected), "expected {expected:?} in {message:?}");
        }
    }
}
