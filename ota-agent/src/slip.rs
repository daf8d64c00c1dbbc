//! SLIP framing (RFC 1055): IP over a serial line for boards without WiFi driver, and the
//! framing of the ESP ROM loader protocol. Every frame starts and ends with 0xC0; 0xC0 and
//! 0xDB inside a frame are escaped as DB DC and DB DD. No allocation: the decoder fills a
//! fixed buffer.

pub const END: u8 = 0xC0;
pub const ESC: u8 = 0xDB;
pub const ESC_END: u8 = 0xDC;
pub const ESC_ESC: u8 = 0xDD;

/// Frames `payload` into `out`, one byte at a time: END, escaped bytes, END.
pub fn encode(payload: &[u8], mut out: impl FnMut(u8)) {
    out(END);
    for &byte in payload {
        match byte {
            END => {
                out(ESC);
                out(ESC_END);
            }
            ESC => {
                out(ESC);
                out(ESC_ESC);
            }
            other => out(other),
        }
    }
    out(END);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlipError {
    /// 0xDB followed by something else than DC or DD.
    InvalidEscape(u8),
    /// The frame did not fit the decoder's buffer.
    TooLong,
}

impl core::fmt::Display for SlipError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SlipError::InvalidEscape(byte) => write!(f, "invalid SLIP escape 0xdb {byte:#04x}"),
            SlipError::TooLong => f.write_str("SLIP frame longer than the buffer"),
        }
    }
}

impl core::error::Error for SlipError {}

/// Streaming decoder: feed it bytes as they arrive; it reports each whole frame, which
/// [`Decoder::frame`] then shows until the next byte is fed.
///
/// Bytes outside a frame (boot messages, line noise) are ignored. A frame with a bad escape
/// or that overflows the buffer is dropped whole: one corrupt byte costs one frame.
#[derive(Debug)]
pub struct Decoder<const N: usize> {
    buffer: [u8; N],
    len: usize,
    in_frame: bool,
    escaped: bool,
    overflow: bool,
    done: bool,
}

impl<const N: usize> Decoder<N> {
    pub const fn new() -> Self {
        Decoder { buffer: [0; N], len: 0, in_frame: false, escaped: false, overflow: false, done: false }
    }

    /// Consumes one byte; returns the frame's length when `byte` closes a frame.
    pub fn feed(&mut self, byte: u8) -> Option<Result<usize, SlipError>> {
        if self.done {
            self.done = false;
            self.len = 0;
        }
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
                    self.drop_frame();
                    return Some(Err(SlipError::InvalidEscape(other)));
                }
            };
            self.push(unescaped);
            return None;
        }
        match byte {
            // Back-to-back ENDs: the second one opens the next frame.
            END if self.len == 0 && !self.overflow => None,
            END if self.overflow => {
                self.drop_frame();
                Some(Err(SlipError::TooLong))
            }
            END => {
                self.in_frame = false;
                self.done = true;
                Some(Ok(self.len))
            }
            ESC => {
                self.escaped = true;
                None
            }
            other => {
                self.push(other);
                None
            }
        }
    }

    /// The frame [`Decoder::feed`] just completed.
    pub fn frame(&self) -> &[u8] {
        if self.done { &self.buffer[..self.len] } else { &[] }
    }

    fn push(&mut self, byte: u8) {
        match self.buffer.get_mut(self.len) {
            Some(slot) => {
                *slot = byte;
                self.len += 1;
            }
            None => self.overflow = true,
        }
    }

    /// Forgets any partial frame.
    pub fn reset(&mut self) {
        self.drop_frame();
        self.done = false;
    }

    fn drop_frame(&mut self) {
        self.len = 0;
        self.in_frame = false;
        self.escaped = false;
        self.overflow = false;
    }
}

impl<const N: usize> Default for Decoder<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(payload, |b| out.push(b));
        out
    }

    fn decode_all<const N: usize>(decoder: &mut Decoder<N>, bytes: &[u8]) -> Vec<Result<Vec<u8>, SlipError>> {
        let mut frames = Vec::new();
        for &b in bytes {
            if let Some(result) = decoder.feed(b) {
                frames.push(result.map(|_| decoder.frame().to_vec()));
            }
        }
        frames
    }

    #[test]
    fn escapes_both_special_bytes() {
        assert_eq!(encoded(&[1, END, 2, ESC, 3]), [END, 1, ESC, ESC_END, 2, ESC, ESC_ESC, 3, END]);
        assert_eq!(encoded(&[]), [END, END]);
    }

    #[test]
    fn round_trips_frames_and_skips_noise_between_them() {
        let mut stream = b"boot noise".to_vec();
        stream.extend(encoded(&[END, ESC, 0, 0xFF]));
        stream.extend(encoded(b"second"));
        let mut decoder = Decoder::<16>::new();
        assert_eq!(decode_all(&mut decoder, &stream), [Ok(vec![END, ESC, 0, 0xFF]), Ok(b"second".to_vec())]);
    }

    #[test]
    fn drops_bad_and_oversized_frames_but_keeps_the_stream() {
        let mut stream = vec![END, 1, ESC, 0x42, 2, END];
        stream.extend(encoded(&[9; 5]));
        stream.extend(encoded(b"ok"));
        let mut decoder = Decoder::<4>::new();
        assert_eq!(
            decode_all(&mut decoder, &stream),
            [Err(SlipError::InvalidEscape(0x42)), Err(SlipError::TooLong), Ok(b"ok".to_vec())]
        );
    }
}
