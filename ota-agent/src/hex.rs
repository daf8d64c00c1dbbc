//! Hex digits, as the protocol, key files and tools write bytes: lowercase out, either case
//! in. A thin layer over the `hex` crate that keeps the device's error small (the position
//! of the first bad character).

/// Decodes `2 * out.len()` hex digits (either case) into `out`; the error is the position
/// of the first character that is not a digit, or the length that does not fit.
pub fn decode(text: &[u8], out: &mut [u8]) -> Result<(), usize> {
    if text.len() != 2 * out.len() {
        return Err(text.len().min(2 * out.len()));
    }
    hex::decode_to_slice(text, out).map_err(|error| match error {
        hex::FromHexError::InvalidHexCharacter { index, .. } => index,
        hex::FromHexError::OddLength | hex::FromHexError::InvalidStringLength => text.len(),
    })
}

/// `bytes` as lowercase digits into `out`, which holds exactly two per byte.
pub fn encode(bytes: &[u8], out: &mut [u8]) {
    // The lengths are the caller's contract; a mismatch is a bug, not an input error.
    hex::encode_to_slice(bytes, out).expect("two hex digits per byte");
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
    }
}
