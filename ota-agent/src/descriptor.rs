//! The slot descriptor: 64 bytes at the very start of a firmware's IROM.
//!
//! A v2 image does not say where its IROM was linked, and an image linked for the other
//! slot boots into garbage. The descriptor carries its own link address (the linker fills
//! it in), so the agent can refuse such an image before switching, and the host can report
//! which firmware a slot holds. `cargo tcpflash build` generates it; firmware crates do not
//! write it themselves.

use crate::irom_text;
use crate::text::{self, Arg, Message, Sink};

/// `TCF1` in little-endian byte order.
pub const MAGIC: u32 = u32::from_le_bytes(*b"TCF1");
pub const SIZE: usize = 64;
pub const BUILD_ID_LEN: usize = 8;
pub const VERSION_LEN: usize = 16;
pub const NAME_LEN: usize = 32;

const MAGIC_AT: usize = 0;
/// Offset of the link address: the start-up code fills it with a relocation to itself.
pub const LINK_ADDR_AT: usize = 4;
/// Offset of the build id, right after the link address.
pub const BUILD_ID_AT: usize = 8;
const VERSION_AT: usize = BUILD_ID_AT + BUILD_ID_LEN;
const NAME_AT: usize = VERSION_AT + VERSION_LEN;

/// Symbol of the descriptor in the firmware, as the generated start-up code names it.
pub const SYMBOL: &str = "TCPFLASH_DESCRIPTOR";
/// Input section the linker scripts place first in IROM.
pub const SECTION: &str = ".irom0.descriptor";

/// A decoded descriptor. Text fields are NUL-padded UTF-8 in flash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// The address this descriptor was linked at: `Slot::irom_link_addr()` of its slot.
    pub link_addr: u32,
    /// Identifies the code: equal for the two slot builds of the same source.
    pub build_id: [u8; BUILD_ID_LEN],
    version: [u8; VERSION_LEN],
    name: [u8; NAME_LEN],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescriptorError {
    /// The first word is not `TCF1`: the image was not built by tcpflash.
    BadMagic(u32),
    /// A text field is not NUL-padded UTF-8.
    BadText,
    /// A name or version does not fit its field.
    TooLong,
}

irom_text! {
    BAD_MAGIC = "no tcpflash descriptor (found {} where `TCF1` belongs)";
    BAD_TEXT = "descriptor text is not UTF-8";
    TOO_LONG = "descriptor name or version is too long";
}

impl Message for DescriptorError {
    fn write_message<S: Sink + ?Sized>(&self, out: &mut S) {
        match *self {
            DescriptorError::BadMagic(found) => out.push_template(BAD_MAGIC, &[Arg::hex_word(found)]),
            DescriptorError::BadText => out.push_text(BAD_TEXT),
            DescriptorError::TooLong => out.push_text(TOO_LONG),
        }
    }
}

impl core::fmt::Display for DescriptorError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        text::display(self, f)
    }
}

impl Descriptor {
    /// A descriptor for `name` `version`; fails when a field does not fit.
    pub fn new(
        link_addr: u32,
        build_id: [u8; BUILD_ID_LEN],
        name: &str,
        version: &str,
    ) -> Result<Descriptor, DescriptorError> {
        Ok(Descriptor { link_addr, build_id, version: pad(version)?, name: pad(name)? })
    }

    pub fn parse(bytes: &[u8; SIZE]) -> Result<Descriptor, DescriptorError> {
        let word = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let magic = word(MAGIC_AT);
        if magic != MAGIC {
            return Err(DescriptorError::BadMagic(magic));
        }
        let descriptor = Descriptor {
            link_addr: word(LINK_ADDR_AT),
            build_id: field(bytes, BUILD_ID_AT),
            version: field(bytes, VERSION_AT),
            name: field(bytes, NAME_AT),
        };
        check_text(&descriptor.version)?;
        check_text(&descriptor.name)?;
        Ok(descriptor)
    }

    /// A descriptor of which only the link address is known (its other fields read as
    /// empty): what a bootloader reads of one.
    pub(crate) const fn linked_at(link_addr: u32) -> Descriptor {
        Descriptor { link_addr, build_id: [0; BUILD_ID_LEN], version: [0; VERSION_LEN], name: [0; NAME_LEN] }
    }

    pub fn to_bytes(&self) -> [u8; SIZE] {
        let mut bytes = [0u8; SIZE];
        bytes[MAGIC_AT..LINK_ADDR_AT].copy_from_slice(&MAGIC.to_le_bytes());
        bytes[LINK_ADDR_AT..BUILD_ID_AT].copy_from_slice(&self.link_addr.to_le_bytes());
        bytes[BUILD_ID_AT..VERSION_AT].copy_from_slice(&self.build_id);
        bytes[VERSION_AT..NAME_AT].copy_from_slice(&self.version);
        bytes[NAME_AT..SIZE].copy_from_slice(&self.name);
        bytes
    }

    /// The firmware crate's version.
    pub fn version(&self) -> &str {
        text(&self.version).unwrap_or("?")
    }

    /// The firmware crate's name.
    pub fn name(&self) -> &str {
        text(&self.name).unwrap_or("?")
    }

    /// The name's bytes (UTF-8, checked by [`Descriptor::parse`]), without a second check:
    /// what the device's mDNS records copy.
    pub fn name_bytes(&self) -> &[u8] {
        until_nul(&self.name)
    }

    /// The version's bytes, as [`Descriptor::name_bytes`].
    pub fn version_bytes(&self) -> &[u8] {
        until_nul(&self.version)
    }

    /// The build id as 16 lowercase hex digits.
    pub fn build_id_hex(&self) -> [u8; BUILD_ID_LEN * 2] {
        let mut hex = [0u8; BUILD_ID_LEN * 2];
        crate::hex::encode(&self.build_id, &mut hex);
        hex
    }
}

fn field<const N: usize>(bytes: &[u8; SIZE], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

fn pad<const N: usize>(value: &str) -> Result<[u8; N], DescriptorError> {
    if value.len() > N || value.as_bytes().contains(&0) {
        return Err(DescriptorError::TooLong);
    }
    let mut out = [0u8; N];
    out[..value.len()].copy_from_slice(value.as_bytes());
    Ok(out)
}

fn until_nul(field: &[u8]) -> &[u8] {
    &field[..field.iter().position(|&b| b == 0).unwrap_or(field.len())]
}

fn text(field: &[u8]) -> Result<&str, DescriptorError> {
    let len = check_text(field)?;
    core::str::from_utf8(&field[..len]).map_err(|_| DescriptorError::BadText)
}

/// The length of a NUL-padded UTF-8 field, or why it is not one.
fn check_text(field: &[u8]) -> Result<usize, DescriptorError> {
    let len = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    if field[len..].iter().any(|&b| b != 0) || !is_utf8(&field[..len]) {
        return Err(DescriptorError::BadText);
    }
    Ok(len)
}

/// What `core::str::from_utf8(bytes).is_ok()` says, without the 256-byte table core's
/// version keeps in `.rodata` (DRAM on the ESP8266). Speed does not matter for 48 bytes.
fn is_utf8(bytes: &[u8]) -> bool {
    let mut at = 0;
    while at < bytes.len() {
        let lead = bytes[at];
        // The sequence's length and the smallest code point it may carry (less is overlong).
        let (len, min) = if lead < 0x80 {
            at += 1;
            continue;
        } else if lead & 0xE0 == 0xC0 {
            (2, 0x80)
        } else if lead & 0xF0 == 0xE0 {
            (3, 0x800)
        } else if lead & 0xF8 == 0xF0 {
            (4, 0x1_0000)
        } else {
            return false;
        };
        let Some(tail) = bytes.get(at + 1..at + len) else { return false };
        let mut code = u32::from(lead) & (0x7F >> len);
        for &byte in tail {
            if byte & 0xC0 != 0x80 {
                return false;
            }
            code = code << 6 | u32::from(byte & 0x3F);
        }
        if code < min || code > 0x10_FFFF || (0xD800..=0xDFFF).contains(&code) {
            return false;
        }
        at += len;
    }
    true
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn utf8_check_agrees_with_core_on_the_edges() {
        let cases: [&[u8]; 22] = [
            b"",
            b"plain",
            "é€𝄞".as_bytes(),
            b"\x7f",
            b"\xc2\x80",
            b"\xdf\xbf",
            b"\xef\xbf\xbf",
            b"\xf4\x8f\xbf\xbf",
            b"\xc0\x80",         // overlong NUL
            b"\xc1\xbf",         // overlong
            b"\xe0\x9f\xbf",     // overlong 3-byte
            b"\xf0\x8f\xbf\xbf", // overlong 4-byte
            b"\xed\xa0\x80",     // surrogate
            b"\xed\x9f\xbf",     // last before the surrogates
            b"\xf4\x90\x80\x80", // past U+10FFFF
            b"\xf8\x88\x80\x80\x80",
            b"\xff",
            b"\x80",
            b"\xc2", // cut short
            b"\xe2\x82",
            b"\xc2A",
            b"a\xf0\x9d\x84\x9eb",
        ];
        for bytes in cases {
            assert_eq!(is_utf8(bytes), core::str::from_utf8(bytes).is_ok(), "{bytes:?}");
        }
    }

    proptest! {
        #[test]
        fn utf8_check_agrees_with_core(
            bytes in proptest::collection::vec(any::<u8>(), 0..12),
            text in ".{0,8}",
            flip in any::<(usize, u8)>(),
        ) {
            prop_assert_eq!(is_utf8(&bytes), core::str::from_utf8(&bytes).is_ok());
            let mut text = text.into_bytes();
            prop_assert!(is_utf8(&text));
            if !text.is_empty() {
                let at = flip.0 % text.len();
                text[at] ^= flip.1;
                prop_assert_eq!(is_utf8(&text), core::str::from_utf8(&text).is_ok());
            }
        }
    }

    #[test]
    fn messages_read_as_before() {
        assert_eq!(
            DescriptorError::BadMagic(0x3146_4354).to_string(),
            "no tcpflash descriptor (found 0x31464354 where `TCF1` belongs)"
        );
        assert_eq!(DescriptorError::BadText.to_string(), "descriptor text is not UTF-8");
        assert_eq!(DescriptorError::TooLong.to_string(), "descriptor name or version is too long");
    }

    #[test]
    fn round_trips_and_keeps_fields_in_place() {
        let descriptor =
            Descriptor::new(0x4028_2010, *b"\x3f\x2a\0\x01\x02\x03\x04\xff", "example-blinky", "0.1.0")
                .unwrap();
        let bytes = descriptor.to_bytes();
        assert_eq!(&bytes[0..4], b"TCF1");
        assert_eq!(&bytes[4..8], &[0x10, 0x20, 0x28, 0x40]);
        assert_eq!(&bytes[16..21], b"0.1.0");
        assert_eq!(&bytes[32..46], b"example-blinky");
        let parsed = Descriptor::parse(&bytes).unwrap();
        assert_eq!(parsed, descriptor);
        assert_eq!((parsed.name(), parsed.version()), ("example-blinky", "0.1.0"));
        assert_eq!(&parsed.build_id_hex(), b"3f2a0001020304ff");
    }

    #[test]
    fn rejects_foreign_bytes() {
        let mut bytes = Descriptor::new(1, [0; 8], "a", "1").unwrap().to_bytes();
        bytes[0] = b'X';
        assert!(matches!(Descriptor::parse(&bytes), Err(DescriptorError::BadMagic(_))));
        let mut bytes = Descriptor::new(1, [0; 8], "a", "1").unwrap().to_bytes();
        bytes[18] = b'z'; // text after the NUL terminator
        assert_eq!(Descriptor::parse(&bytes), Err(DescriptorError::BadText));
        bytes = [0xFF; SIZE];
        assert_eq!(Descriptor::parse(&bytes), Err(DescriptorError::BadMagic(u32::MAX)));
    }

    #[test]
    fn refuses_fields_that_do_not_fit() {
        assert_eq!(Descriptor::new(0, [0; 8], &"n".repeat(33), "1"), Err(DescriptorError::TooLong));
        assert_eq!(Descriptor::new(0, [0; 8], "n", "1.0.0-alpha.123456"), Err(DescriptorError::TooLong));
        assert!(Descriptor::new(0, [0; 8], &"n".repeat(32), &"v".repeat(16)).is_ok());
    }
}
