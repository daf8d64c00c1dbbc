//! Hex digits, as the protocol, key files and tools write bytes: lowercase out, either case
//! in. Written out rather than taken from the `hex` crate: its encoder's digit table lands in
//! the device's DRAM, and the two cost some 150 bytes more IROM than these loops.

/// Decodes `2 * out.len()` hex digits (either case) into `out`; the error is the position
/// of the first character that is not a digit, or the length that does not fit.
pub fn decode(text: &[u8], out: &mut [u8]) -> Result<(), usize> {
    if text.len() != 2 * out.len() {
        return Err(text.len().min(2 * out.len()));
    }
    for (at, &c) in text.iter().enumerate() {
        let nibble = value(c).ok_or(at)?;
        // Two nibbles shifted in per byte: whatever it held is gone by the second.
        let byte = &mut out[at / 2];
        *byte = *byte << 4 | nibble;
    }
    Ok(())
}

/// The value of hex digit `c`, either case.
const fn value(c: u8) -> Option<u8> {
    let digit = c.wrapping_sub(b'0');
    let letter = (c | 0x20).wrapping_sub(b'a');
    if digit < 10 {
        Some(digit)
    } else if letter < 6 {
        Some(letter + 10)
    } else {
        None
    }
}

/// `bytes` as lowercase digits into `out`, which holds two per byte (the lengths are the
/// caller's contract).
pub fn encode(bytes: &[u8], out: &mut [u8]) {
    debug_assert_eq!(out.len(), 2 * bytes.len());
    for (&byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = digit(byte >> 4);
        pair[1] = digit(byte & 0xF);
    }
}

/// The lowercase hex digit of `nibble` (below 16), without a table.
const fn digit(nibble: u8) -> u8 {
    if nibble < 10 { b'0' + nibble } else { b'a' - 10 + nibble }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_round_trip_and_errors_name_the_position() {
        let bytes: std::vec::Vec<u8> = (0..=255u8).collect();
        let mut text = [0u8; 512];
        encode(&bytes, &mut text);
        assert_eq!(text[..8], *b"00010203");
        assert_eq!(text[510..], *b"ff");
        let mut back = [0u8; 256];
        decode(&text, &mut back).unwrap();
        assert_eq!(back.to_vec(), bytes);
        decode(b"AbCd", &mut back[..2]).unwrap();
        assert_eq!(back[..2], [0xAB, 0xCD]);
        assert_eq!(decode(b"0g", &mut [0u8; 1]), Err(1));
        assert_eq!(decode(b"000", &mut [0u8; 1]), Err(2));
        assert_eq!(decode(b"0", &mut [0u8; 1]), Err(1));
        assert_eq!(decode(b"a0G1", &mut [0u8; 2]), Err(2));
        assert_eq!(decode(b"/:@`", &mut [0u8; 2]), Err(0), "the characters around the digit ranges");
        for c in [b'/', b':', b'@', b'G', b'`', b'g'] {
            assert_eq!(decode(&[b'0', c], &mut [0u8; 1]), Err(1), "{}", c as char);
        }
        // The crate the tools use agrees on every byte.
        let mut theirs = [0u8; 512];
        ::hex::encode_to_slice(&bytes, &mut theirs).unwrap();
        assert_eq!(text, theirs);
    }
}
