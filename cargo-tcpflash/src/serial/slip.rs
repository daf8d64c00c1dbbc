//! SLIP framing for the ROM loader: `ota_agent::slip` with owned packets.

pub use ota_agent::slip::SlipError;

/// The largest packet either side sends: FLASH_DATA's 0x400 data bytes plus headers, with room.
const MAX_PACKET: usize = 0x1000;

/// Frames `payload`: END, escaped bytes, END.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + payload.len() / 16 + 2);
    ota_agent::slip::encode(payload, |byte| frame.push(byte));
    frame
}

/// Streaming decoder handing back whole packets. Bytes outside frames (the ROM's boot
/// messages) are ignored; a bad frame is dropped whole.
#[derive(Debug, Default)]
pub struct Decoder(Box<ota_agent::slip::Decoder<MAX_PACKET>>);

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Consumes one byte; returns a packet when `byte` closes one.
    pub fn feed(&mut self, byte: u8) -> Option<Result<Vec<u8>, SlipError>> {
        self.0.feed(byte).map(|done| done.map(|_| self.0.frame().to_vec()))
    }

    /// Forgets any partial packet (after flushing the port, say).
    pub fn reset(&mut self) {
        self.0.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_byte_value_amid_boot_noise() {
        let payload: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        let mut stream = b"ets Jan  8 2013,rst cause:2".to_vec();
        stream.extend(encode(&payload));
        stream.extend([0xC0, 0xC0, 0xC0]);
        stream.extend(encode(&[3]));
        let mut decoder = Decoder::new();
        let frames: Vec<_> = stream.iter().filter_map(|&b| decoder.feed(b)).collect();
        assert_eq!(frames, [Ok(payload), Ok(vec![3])]);
    }
}
