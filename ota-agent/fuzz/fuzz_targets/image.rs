//! The image inspector on arbitrary bytes: never panics, and whatever it accepts is
//! consistent with the bytes (length, checksum and CRC recomputed by esptool's rules).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_agent::flash::RamNor;
use ota_agent::image;

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    bytes.resize(bytes.len().next_multiple_of(4096).max(4096), 0xFF);
    let mut flash = RamNor::from_storage(bytes);
    let mut scratch = [0u8; 64];
    if let Ok(info) = image::inspect(&mut flash, 0, data.len() as u32, &mut scratch) {
        assert_eq!(info.len as usize, data.len());
        assert!(info.checksum_valid() && info.crc_valid());
        let crc = ota_agent::crc::crc32(&data[..data.len() - 4]);
        assert_eq!(image::crc_trailer(crc).to_le_bytes(), data[data.len() - 4..]);
    }
});
