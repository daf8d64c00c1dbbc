//! CRC-32 as zlib computes it (reflected, polynomial 0xEDB88320), for the image trailer.
//!
//! Table-driven crates keep 1 KB to 16 KB of tables in `.rodata`, which is DRAM on the
//! ESP8266 (80 KB in all). Processing a nibble at a time needs 16 entries: 64 bytes, and
//! verifying a 500 KB image still costs only a fraction of the time reading it takes. The
//! table itself lives in IROM, so the agent's CRC costs no RAM at all.
#![allow(unsafe_code)] // registers, ROM routines and data placement: each use says why it is sound

const POLYNOMIAL: u32 = 0xEDB8_8320;

/// The CRC of each 4-bit value: what four bitwise steps do to the low nibble. In IROM on
/// the ESP8266, where only aligned 32-bit loads work: read it with [`nibble_entry`].
#[cfg_attr(target_arch = "xtensa", unsafe(link_section = ".irom0.text.ota_crc_nibbles"))]
static NIBBLE_TABLE: [u32; 16] = nibble_table();

/// The table entry for the low nibble of `crc`, by one volatile 32-bit load (the compiler
/// may not narrow it into a byte load, which IROM would refuse).
fn nibble_entry(crc: u32) -> u32 {
    // SAFETY: an aligned, initialised u32 of a static.
    unsafe { core::ptr::read_volatile(&NIBBLE_TABLE[(crc & 0xF) as usize]) }
}

const fn nibble_table() -> [u32; 16] {
    let mut table = [0u32; 16];
    let mut nibble = 0;
    while nibble < 16 {
        let mut crc = nibble as u32;
        let mut bit = 0;
        while bit < 4 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ POLYNOMIAL } else { crc >> 1 };
            bit += 1;
        }
        table[nibble] = crc;
        nibble += 1;
    }
    table
}

/// A running CRC-32, fed in pieces as the bytes stream past.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crc32 {
    state: u32,
}

impl Default for Crc32 {
    fn default() -> Crc32 {
        Crc32::new()
    }
}

impl Crc32 {
    pub const fn new() -> Crc32 {
        Crc32 { state: u32::MAX }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        let mut crc = self.state;
        for &byte in bytes {
            crc ^= u32::from(byte);
            crc = (crc >> 4) ^ nibble_entry(crc);
            crc = (crc >> 4) ^ nibble_entry(crc);
        }
        self.state = crc;
    }

    /// The CRC of everything fed so far; feeding may continue afterwards.
    pub const fn finish(&self) -> u32 {
        !self.state
    }
}

/// The CRC-32 of `bytes` in one go.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = Crc32::new();
    crc.update(bytes);
    crc.finish()
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn known_check_values() {
        // The standard check value of CRC-32/ISO-HDLC, and the empty input.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(&[0xFF; 4]), 0xFFFF_FFFF);
    }

    #[test]
    fn table_is_the_bitwise_definition() {
        assert_eq!(NIBBLE_TABLE[0], 0);
        assert_eq!(NIBBLE_TABLE[1], 0x1DB7_1064);
        assert_eq!(NIBBLE_TABLE[8], 0xEDB8_8320);
        assert_eq!(core::mem::size_of_val(&NIBBLE_TABLE), 64);
    }

    proptest! {
        #[test]
        fn equals_crc32fast_however_the_input_is_split(
            data in proptest::collection::vec(any::<u8>(), 0..2048),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|cut| cut % (data.len() + 1)).collect();
            cuts.sort_unstable();
            let mut crc = Crc32::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([data.len()]) {
                crc.update(&data[from..cut]);
                from = cut;
            }
            prop_assert_eq!(crc.finish(), crc32fast::hash(&data));
            prop_assert_eq!(crc32(&data), crc32fast::hash(&data));
        }
    }
}
