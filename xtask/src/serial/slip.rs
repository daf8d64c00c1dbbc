//! SLIP framing (RFC 1055) as the ESP ROM loader uses it: every packet starts and ends with
//! 0xC0, and 0xC0 / 0xDB inside a packet are escaped as DB DC / DB DD.

pub const END: u8 = 0xC0;
pub const ESC: u8 = 0xDB;
pub const ESC_END: u8 = 0xDC;
pub const ESC_ESC: u8 = 0xDD;

/// Frames `payload`: END, escaped bytes, END.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + payload.len() / 16 + 2);
    frame.push(END);
    for &byte in payload {
        match byte {
            END => frame.extend_from_slice(&[ESC, ESC_END]),
            ESC => frame.extend_from_slice(&[ESC, ESC_ESC]),
            other => frame.push(other),
        }
    }
    frame.push(END);
    frame
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlipError {
    #[error("invalid SLIP escape 0xdb {0:#04x}")]
    InvalidEscape(u8),
}

/// Streaming decoder: feed it bytes as they arrive, it hands back whole packets.
///
/// Bytes outside a frame (the ROM's boot messages, line noise) are ignored. A frame with a
/// bad escape is dropped whole, so one corrupt byte costs one packet, not the stream.
#[derive(Debug, Default)]
pub struct Decoder {
    packet: Vec<u8>,
    in_frame: bool,
    escaped: bool,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Consumes one byte; returns a packet when `byte` closes one.
    pub fn feed(&mut self, byte: u8) -> Option<Result<Vec<u8>, SlipError>> {
        if !self.in_frame {
            if byte == END {
                self.in_frame = true;
            }
            return None;
        }
        if self.escaped {
            self.escaped = false;
            let unescaped = match byte {
                ESC_END => END,
                ESC_ESC => ESC,
                other => {
                    self.reset();
                    return Some(Err(SlipError::InvalidEscape(other)));
                }
            };
            self.packet.push(unescaped);
            return None;
        }
        match byte {
            // Back-to-back ENDs: the second one opens the next frame.
            END if self.packet.is_empty() => None,
            END => {
                self.in_frame = false;
                Some(Ok(std::mem::take(&mut self.packet)))
            }
            ESC => {
                self.escaped = true;
                None
            }
            other => {
                self.packet.push(other);
                None
            }
        }
    }

    /// Forgets any partial packet (after flushing the port, say).
    pub fn reset(&mut self) {
        self.packet.clear();
        self.in_frame = false;
        self.escaped = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Vec<Result<Vec<u8>, SlipError>> {
        let mut decoder = Decoder::new();
        bytes.iter().filter_map(|&b| decoder.feed(b)).collect()
    }

    #[test]
    fn escapes_both_special_bytes() {
        assert_eq!(encode(&[1, 0xC0, 2, 0xDB, 3]), [0xC0, 1, 0xDB, 0xDC, 2, 0xDB, 0xDD, 3, 0xC0]);
        assert_eq!(encode(&[]), [0xC0, 0xC0]);
    }

    #[test]
    fn round_trips_every_byte_value() {
        let payload: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        assert_eq!(decode_all(&encode(&payload)), [Ok(payload)]);
    }

    #[test]
    fn ignores_noise_between_frames_and_empty_frames() {
        let mut stream = b"ets Jan  8 2013,rst cause:2".to_vec();
        stream.extend(encode(&[1, 2]));
        stream.extend(b"junk");
        // Empty frames (doubled ENDs) yield nothing.
        stream.extend([0xC0, 0xC0, 0xC0]);
        stream.extend(encode(&[3]));
        assert_eq!(decode_all(&stream), [Ok(vec![1, 2]), Ok(vec![3])]);
    }

    #[test]
    fn bad_escape_drops_that_frame_only() {
        let mut stream = vec![0xC0, 1, 0xDB, 0x00, 2, 0xC0];
        stream.extend(encode(&[9]));
        let decoded = decode_all(&stream);
        assert_eq!(decoded[0], Err(SlipError::InvalidEscape(0x00)));
        // The stray END after the bad frame opens a frame; the next frame still decodes.
        assert!(decoded.contains(&Ok(vec![9])), "{decoded:?}");
    }
}
