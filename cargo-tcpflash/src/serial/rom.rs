//! The ESP8266 ROM serial loader protocol: packet layout, commands, chip detection and the
//! erase-size workaround (sans-IO), plus [`RomClient`], a thin driver over a serial port.
//!
//! Facts from esptool's `loader.py` / `targets/esp8266.py` and its serial-protocol docs.
//! A request is `00 op len:u16 checksum:u32 data`; a response is `01 op len:u16 value:u32
//! data`, where the ESP8266 ROM ends `data` with two status bytes (status, error code); the
//! ESP32 family's ROMs send four.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use super::slip;

/// Command opcodes the ESP8266 ROM understands (and the one we only ever see refused).
pub mod op {
    pub const FLASH_BEGIN: u8 = 0x02;
    pub const FLASH_DATA: u8 = 0x03;
    pub const FLASH_END: u8 = 0x04;
    pub const SYNC: u8 = 0x08;
    pub const WRITE_REG: u8 = 0x09;
    pub const READ_REG: u8 = 0x0A;
    /// ESP32-S2 and later; the ESP8266 ROM answers it with an error (esptool asks anyway).
    pub const GET_SECURITY_INFO: u8 = 0x14;
}

pub const DIRECTION_REQUEST: u8 = 0x00;
pub const DIRECTION_RESPONSE: u8 = 0x01;
const HEADER_LEN: usize = 8;

/// FLASH_DATA carries this many bytes per block (esptool's FLASH_WRITE_SIZE for the ROM).
pub const FLASH_BLOCK_SIZE: u32 = 0x400;
pub const FLASH_SECTOR_SIZE: u32 = 0x1000;
/// The ESP8266 ROM erases 64 KB blocks in one go: its erase bug is tied to them.
pub const SECTORS_PER_BLOCK: u32 = 16;
/// Seed of the XOR checksum over FLASH_DATA payloads (and of the image checksums).
pub const CHECKSUM_SEED: u8 = 0xEF;

/// SYNC's payload: 07 07 12 20, then 32 times 0x55 so the ROM can measure the baud rate.
pub const SYNC_PAYLOAD: [u8; 36] = {
    let mut payload = [0x55u8; 36];
    payload[0] = 0x07;
    payload[1] = 0x07;
    payload[2] = 0x12;
    payload[3] = 0x20;
    payload
};
/// The ROM answers one SYNC with eight responses; esptool reads the extra seven.
pub const SYNC_RESPONSES: usize = 8;

/// Each chip's ROM holds a different word here (esptool's CHIP_DETECT_MAGIC_REG_ADDR).
pub const CHIP_DETECT_MAGIC_REG: u32 = 0x4000_1000;
pub const ESP8266_MAGIC: u32 = 0xFFF0_C101;
/// The four eFuse words esptool reads to tell an ESP8266EX from an ESP8285.
pub const EFUSE_REGS: [u32; 4] = [0x3FF0_0050, 0x3FF0_0054, 0x3FF0_0058, 0x3FF0_005C];

/// Other chips' chip-detect words, from esptool (older releases for the RISC-V parts, which
/// newer releases identify by chip id instead). Only used to name what we refuse.
const OTHER_CHIPS: [(u32, &str); 11] = [
    (0x00F0_1D83, "ESP32"),
    (0x0000_07C6, "ESP32-S2"),
    (0x0000_0009, "ESP32-S3"),
    (0x6921_506F, "ESP32-C3"),
    (0x1B31_506F, "ESP32-C3"),
    (0x4881_606F, "ESP32-C3"),
    (0x4361_606F, "ESP32-C3"),
    (0x6F51_306F, "ESP32-C2"),
    (0x7C41_A06F, "ESP32-C2"),
    (0x2CE0_806F, "ESP32-C6"),
    (0xD7B7_3E80, "ESP32-H2"),
];

/// What the chip-detect word says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChipKind {
    Esp8266,
    /// Another Espressif chip, by name.
    Other(&'static str),
    Unknown(u32),
}

impl ChipKind {
    pub fn from_magic(magic: u32) -> ChipKind {
        if magic == ESP8266_MAGIC {
            return ChipKind::Esp8266;
        }
        match OTHER_CHIPS.iter().find(|(value, _)| *value == magic) {
            Some((_, name)) => ChipKind::Other(name),
            None => ChipKind::Unknown(magic),
        }
    }

    /// The chip-detect word a chip of this name answers with (for the fake ROM).
    pub fn magic_of(name: &str) -> Option<u32> {
        if name == "ESP8266" {
            return Some(ESP8266_MAGIC);
        }
        OTHER_CHIPS.iter().find(|(_, n)| *n == name).map(|(value, _)| *value)
    }
}

/// ESP8266EX or one of the ESP8285 variants (an ESP8266 with flash inside), as esptool's
/// `get_chip_description` tells them apart from the eFuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChipDescription {
    pub name: &'static str,
    /// Size of the flash built into an ESP8285, when the eFuses say.
    pub embedded_flash: Option<u32>,
}

impl ChipDescription {
    pub fn from_efuses(words: [u32; 4]) -> ChipDescription {
        let efuses = u128::from(words[0])
            | u128::from(words[1]) << 32
            | u128::from(words[2]) << 64
            | u128::from(words[3]) << 96;
        let bit = |n: u32| efuses & (1u128 << n) != 0;
        if !(bit(4) || bit(80)) {
            return ChipDescription { name: "ESP8266EX", embedded_flash: None };
        }
        let megabytes = match (bit(4), bit(121), bit(122), bit(123)) {
            (true, false, false, false) => Some(1),
            (true, false, true, false) => Some(2),
            (false, true, false, false) => Some(2),
            (false, true, true, false) => Some(4),
            _ => None,
        };
        let high_temperature = bit(5);
        let name = match (megabytes, high_temperature) {
            (Some(1), false) => "ESP8285N08",
            (Some(1), true) => "ESP8285H08",
            (Some(2), false) => "ESP8285N16",
            (Some(2), true) => "ESP8285H16",
            _ => "ESP8285",
        };
        ChipDescription { name, embedded_flash: megabytes.map(|mb| mb * 0x10_0000) }
    }
}

/// XOR checksum the ROM checks FLASH_DATA payloads against.
pub fn checksum(data: &[u8]) -> u8 {
    data.iter().fold(CHECKSUM_SEED, |acc, byte| acc ^ byte)
}

/// The erase size to put in FLASH_BEGIN so the ESP8266 ROM erases exactly the sectors that
/// `size` bytes at `offset` cover.
///
/// The ROM's erase routine (see [`rom_erased_sectors`]) erases the requested sectors plus
/// as many again as lie before the next 64 KB boundary. esptool's `get_erase_size` asks
/// for less to compensate; this is the same computation.
pub fn erase_size(offset: u32, size: u32) -> u32 {
    let sectors = size.div_ceil(FLASH_SECTOR_SIZE);
    let start_sector = offset / FLASH_SECTOR_SIZE;
    let head = (SECTORS_PER_BLOCK - start_sector % SECTORS_PER_BLOCK).min(sectors);
    if sectors < 2 * head {
        sectors.div_ceil(2) * FLASH_SECTOR_SIZE
    } else {
        (sectors - head) * FLASH_SECTOR_SIZE
    }
}

/// What the ESP8266 ROM erases for FLASH_BEGIN(`erase_size`, `offset`): a range of sectors
/// starting at `offset`'s sector, returned as (first sector, count).
///
/// The ROM's SPIEraseArea erases the "head" sectors up to the next 64 KB block boundary and
/// then, wrongly, the full requested count again from there (esptool issue #33, PR #53).
/// When the range does not cross a boundary the head is the whole range, so it erases twice
/// the request.
pub fn rom_erased_sectors(offset: u32, erase_size: u32) -> (u32, u32) {
    let sectors = erase_size.div_ceil(FLASH_SECTOR_SIZE);
    let start_sector = offset / FLASH_SECTOR_SIZE;
    let head = (SECTORS_PER_BLOCK - start_sector % SECTORS_PER_BLOCK).min(sectors);
    (start_sector, sectors + head)
}

/// The commands tcpflash sends to the ROM loader, typed: each knows its request and how long
/// the ROM may take to answer it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    Sync,
    ReadReg {
        addr: u32,
    },
    /// Erases what the blocks will cover (`erase_size`, see [`erase_size`]) and starts a write.
    FlashBegin {
        erase_size: u32,
        blocks: u32,
        block_size: u32,
        offset: u32,
    },
    FlashData {
        seq: u32,
        block: &'a [u8],
    },
    /// Ends the write; `reboot` restarts the chip (else the ROM runs the user code).
    FlashEnd {
        reboot: bool,
    },
}

impl Command<'_> {
    pub fn request(&self) -> Request {
        match *self {
            Command::Sync => Request::sync(),
            Command::ReadReg { addr } => Request::read_reg(addr),
            Command::FlashBegin { erase_size, blocks, block_size, offset } => {
                Request::flash_begin(erase_size, blocks, block_size, offset)
            }
            Command::FlashData { seq, block } => Request::flash_data(seq, block),
            Command::FlashEnd { reboot } => Request::flash_end(reboot),
        }
    }

    /// How long the ROM may take: a SYNC is answered at once or not at all; FLASH_BEGIN
    /// erases first, which takes time in proportion to the size.
    pub fn timeout(&self) -> Duration {
        match *self {
            Command::Sync => SYNC_TIMEOUT,
            Command::FlashBegin { blocks, block_size, .. } => erase_timeout(blocks * block_size),
            Command::ReadReg { .. } | Command::FlashData { .. } | Command::FlashEnd { .. } => DEFAULT_TIMEOUT,
        }
    }
}

/// One request packet (before SLIP framing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub op: u8,
    pub data: Vec<u8>,
    /// Only FLASH_DATA (and MEM_DATA) use it: the XOR checksum of the payload.
    pub checksum: u32,
}

impl Request {
    pub fn new(op: u8, data: Vec<u8>) -> Request {
        Request { op, data, checksum: 0 }
    }

    pub fn sync() -> Request {
        Request::new(op::SYNC, SYNC_PAYLOAD.to_vec())
    }

    pub fn read_reg(addr: u32) -> Request {
        Request::new(op::READ_REG, addr.to_le_bytes().to_vec())
    }

    /// FLASH_BEGIN as the ESP8266 ROM wants it: four words, no encryption flag.
    pub fn flash_begin(erase_size: u32, blocks: u32, block_size: u32, offset: u32) -> Request {
        Request::new(op::FLASH_BEGIN, words(&[erase_size, blocks, block_size, offset]))
    }

    /// One FLASH_DATA block: length, sequence number, two zero words, payload.
    pub fn flash_data(seq: u32, block: &[u8]) -> Request {
        let mut data = words(&[block.len() as u32, seq, 0, 0]);
        data.extend_from_slice(block);
        Request { op: op::FLASH_DATA, data, checksum: u32::from(checksum(block)) }
    }

    /// FLASH_END: the word is 0 to reboot, 1 to run the user code (sic).
    pub fn flash_end(reboot: bool) -> Request {
        Request::new(op::FLASH_END, u32::from(!reboot).to_le_bytes().to_vec())
    }

    pub fn encode(&self) -> Vec<u8> {
        packet(DIRECTION_REQUEST, self.op, self.checksum, &self.data)
    }

    /// Parses a request (the fake ROM's side). `None` when it is not a well-formed request.
    pub fn decode(packet: &[u8]) -> Option<Request> {
        let (direction, op, len, checksum) = header(packet)?;
        let data = &packet[HEADER_LEN..];
        (direction == DIRECTION_REQUEST && usize::from(len) == data.len()).then(|| Request {
            op,
            data: data.to_vec(),
            checksum,
        })
    }
}

/// A packet: direction, op, data length, the word (a request's checksum, a response's
/// value), the data.
fn packet(direction: u8, op: u8, word: u32, data: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(HEADER_LEN + data.len());
    packet.extend_from_slice(&[direction, op]);
    packet.extend_from_slice(&(data.len() as u16).to_le_bytes());
    packet.extend_from_slice(&word.to_le_bytes());
    packet.extend_from_slice(data);
    packet
}

/// One response packet. `data` ends with the status bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub op: u8,
    pub value: u32,
    pub data: Vec<u8>,
}

impl Response {
    pub fn encode(&self) -> Vec<u8> {
        packet(DIRECTION_RESPONSE, self.op, self.value, &self.data)
    }

    /// `None` for anything that is not a response (our own echo, garbage).
    pub fn decode(packet: &[u8]) -> Option<Response> {
        let (direction, op, _len, value) = header(packet)?;
        (direction == DIRECTION_RESPONSE).then(|| Response { op, value, data: packet[HEADER_LEN..].to_vec() })
    }

    /// The status bytes come first in `data` for the commands we send (none returns data
    /// before them); status 0 is success, otherwise the second byte says why.
    pub fn status(&self) -> Result<(), RomStatus> {
        match self.data.as_slice() {
            [0, _, ..] => Ok(()),
            [_, code, ..] => Err(RomStatus(*code)),
            _ => Err(RomStatus::MISSING),
        }
    }
}

/// The error code a ROM reports with a failed status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RomStatus(pub u8);

impl RomStatus {
    pub const INVALID_MESSAGE: RomStatus = RomStatus(0x05);
    pub const FAILED_TO_ACT: RomStatus = RomStatus(0x06);
    pub const BAD_CHECKSUM: RomStatus = RomStatus(0x07);
    pub const FLASH_WRITE_ERROR: RomStatus = RomStatus(0x08);
    /// Our own code for a response too short to hold status bytes.
    pub const MISSING: RomStatus = RomStatus(0xFF);

    /// What the code means, per esptool's serial-protocol documentation.
    pub fn meaning(self) -> &'static str {
        match self.0 {
            0x05 => "the ROM found the message invalid (parameters or length)",
            0x06 => "the ROM failed to act on the message",
            0x07 => "the data checksum did not match",
            0x08 => "flash write error",
            0x09 => "flash read error",
            0x0A => "flash read length error",
            0x0B => "deflate error",
            0xFF => "the response carried no status bytes",
            _ => "unknown error code",
        }
    }
}

impl std::fmt::Display for RomStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "error code {:#04x}: {}", self.0, self.meaning())
    }
}

fn header(packet: &[u8]) -> Option<(u8, u8, u16, u32)> {
    let head: &[u8; HEADER_LEN] = packet.get(..HEADER_LEN)?.try_into().ok()?;
    let len = u16::from_le_bytes([head[2], head[3]]);
    let word = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    Some((head[0], head[1], len, word))
}

fn words(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|value| value.to_le_bytes()).collect()
}

/// Human name of an opcode, for error messages.
pub fn op_name(opcode: u8) -> &'static str {
    match opcode {
        op::FLASH_BEGIN => "FLASH_BEGIN",
        op::FLASH_DATA => "FLASH_DATA",
        op::FLASH_END => "FLASH_END",
        op::SYNC => "SYNC",
        op::WRITE_REG => "WRITE_REG",
        op::READ_REG => "READ_REG",
        op::GET_SECURITY_INFO => "GET_SECURITY_INFO",
        _ => "unknown command",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RomError {
    #[error("no response to {} within {timeout:?}", op_name(*op))]
    Timeout { op: u8, timeout: Duration },
    #[error("{} failed: {status}", op_name(*op))]
    Status { op: u8, status: RomStatus },
    #[error("serial port I/O failed during {}", op_name(*op))]
    Io {
        op: u8,
        #[source]
        source: io::Error,
    },
}

/// How long to wait for the answer to a plain command (esptool's DEFAULT_TIMEOUT).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// One SYNC attempt waits this long (esptool's SYNC_TIMEOUT).
pub const SYNC_TIMEOUT: Duration = Duration::from_millis(100);

/// FLASH_BEGIN erases before it answers: allow 40 s per MB, as esptool does, at least 3 s.
pub fn erase_timeout(size: u32) -> Duration {
    let scaled = Duration::from_secs(40).mul_f64(f64::from(size) / f64::from(0x10_0000u32));
    scaled.max(DEFAULT_TIMEOUT)
}

/// Talks to a ROM loader over anything that reads and writes bytes with a short read
/// timeout (a serial port: reads return `TimedOut` or `WouldBlock` when idle).
pub struct RomClient<P> {
    port: P,
    decoder: slip::Decoder,
}

impl<P: Read + Write> RomClient<P> {
    pub fn new(port: P) -> RomClient<P> {
        RomClient { port, decoder: slip::Decoder::new() }
    }

    pub fn port_mut(&mut self) -> &mut P {
        &mut self.port
    }

    pub fn into_port(self) -> P {
        self.port
    }

    /// Sends `command` and waits (up to its timeout) for the response to the same command,
    /// skipping stale responses (the extra SYNC answers). Checks the status bytes.
    pub fn command(&mut self, command: Command<'_>) -> Result<Response, RomError> {
        let (request, timeout) = (command.request(), command.timeout());
        let op = request.op;
        self.port
            .write_all(&slip::encode(&request.encode()))
            .map_err(|source| RomError::Io { op, source })?;
        self.port.flush().map_err(|source| RomError::Io { op, source })?;
        let deadline = Instant::now() + timeout;
        loop {
            let Some(response) =
                self.read_response(deadline).map_err(|source| RomError::Io { op, source })?
            else {
                return Err(RomError::Timeout { op, timeout });
            };
            if response.op != op {
                continue;
            }
            response.status().map_err(|status| RomError::Status { op, status })?;
            return Ok(response);
        }
    }

    /// One SYNC attempt: true when the ROM answered. The extra answers are drained.
    pub fn sync_once(&mut self) -> Result<bool, RomError> {
        self.decoder.reset();
        match self.command(Command::Sync) {
            Ok(_) => {}
            Err(RomError::Timeout { .. }) => return Ok(false),
            Err(other) => return Err(other),
        }
        // The other seven answers follow at once; stop at the first quiet gap.
        for _ in 1..SYNC_RESPONSES {
            let deadline = Instant::now() + SYNC_TIMEOUT;
            let answer =
                self.read_response(deadline).map_err(|source| RomError::Io { op: op::SYNC, source })?;
            if answer.is_none() {
                break;
            }
        }
        Ok(true)
    }

    pub fn read_reg(&mut self, addr: u32) -> Result<u32, RomError> {
        Ok(self.command(Command::ReadReg { addr })?.value)
    }

    /// Reads until a response packet arrives or `deadline` passes (`Ok(None)`).
    fn read_response(&mut self, deadline: Instant) -> io::Result<Option<Response>> {
        let mut buf = [0u8; 256];
        loop {
            if Instant::now() >= deadline {
                return Ok(None);
            }
            let n = match self.port.read(&mut buf) {
                Ok(0) => continue,
                Ok(n) => n,
                Err(e) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let mut found = None;
            for &byte in &buf[..n] {
                if let Some(Ok(packet)) = self.decoder.feed(byte)
                    && found.is_none()
                {
                    found = Response::decode(&packet);
                }
            }
            if found.is_some() {
                return Ok(found);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erase_size_matches_esptool_examples() {
        // Values from esptool's get_erase_size, worked by hand.
        // One sector at 0: head 16 clamped to 1, 1 < 2 -> (1+1)/2 = 1 sector.
        assert_eq!(erase_size(0, 100), 0x1000);
        // Five sectors at 0x2000 (sector 2): head 14 -> 5, 5 < 10 -> 3 sectors.
        assert_eq!(erase_size(0x2000, 5 * 0x1000), 3 * 0x1000);
        // 48 sectors at 0x2000: head 14, 48 >= 28 -> 34 sectors.
        assert_eq!(erase_size(0x2000, 48 * 0x1000), 34 * 0x1000);
        // Block aligned, 32 sectors: head 16, 32 >= 32 -> 16 sectors.
        assert_eq!(erase_size(0x10000, 32 * 0x1000), 16 * 0x1000);
        assert_eq!(erase_size(0x1000, 0), 0);
    }

    #[test]
    fn workaround_makes_the_buggy_rom_erase_exactly_the_covered_sectors() {
        for start_sector in 0..40u32 {
            for sectors in 0..80u32 {
                let offset = start_sector * FLASH_SECTOR_SIZE;
                // Sizes that end anywhere inside the last sector.
                for size in [sectors * FLASH_SECTOR_SIZE, (sectors * FLASH_SECTOR_SIZE).saturating_sub(5)] {
                    let wanted = size.div_ceil(FLASH_SECTOR_SIZE);
                    let (first, count) = rom_erased_sectors(offset, erase_size(offset, size));
                    assert_eq!(first, start_sector);
                    // An odd count below the boundary costs one extra sector, as in esptool.
                    let extra = count - wanted;
                    assert!(extra <= 1, "offset {offset:#x} size {size:#x}: erased {count}, wanted {wanted}");
                    if extra == 1 {
                        let head = (SECTORS_PER_BLOCK - start_sector % SECTORS_PER_BLOCK).min(wanted);
                        assert!(wanted % 2 == 1 && wanted < 2 * head, "offset {offset:#x} size {size:#x}");
                    }
                }
            }
        }
        // Without the workaround the ROM over-erases.
        assert_eq!(rom_erased_sectors(0x2000, 5 * 0x1000), (2, 10));
        assert_eq!(rom_erased_sectors(0x2000, 48 * 0x1000), (2, 62));
    }

    #[test]
    fn packets_round_trip() {
        let request = Request::flash_data(7, &[1, 2, 3]);
        let encoded = request.encode();
        assert_eq!(&encoded[..8], &[0x00, 0x03, 19, 0, 0xEF ^ 1 ^ 2 ^ 3, 0, 0, 0]);
        assert_eq!(Request::decode(&encoded), Some(request));
        assert_eq!(Request::decode(&encoded[..10]), None, "length field must match");

        let response = Response { op: op::READ_REG, value: ESP8266_MAGIC, data: vec![0, 0] };
        let encoded = response.encode();
        assert_eq!(encoded, [0x01, 0x0A, 2, 0, 0x01, 0xC1, 0xF0, 0xFF, 0, 0]);
        assert_eq!(Response::decode(&encoded), Some(response));
        assert_eq!(Response::decode(&Request::sync().encode()), None, "a request is not a response");
    }

    #[test]
    fn status_bytes() {
        let ok = Response { op: op::FLASH_DATA, value: 0, data: vec![0, 0] };
        assert_eq!(ok.status(), Ok(()));
        let esp32_style = Response { op: op::FLASH_DATA, value: 0, data: vec![0, 0, 0, 0] };
        assert_eq!(esp32_style.status(), Ok(()));
        let bad = Response { op: op::FLASH_DATA, value: 0, data: vec![1, 7] };
        assert_eq!(bad.status(), Err(RomStatus::BAD_CHECKSUM));
        assert!(bad.status().unwrap_err().to_string().contains("0x07: the data checksum did not match"));
        let empty = Response { op: op::FLASH_DATA, value: 0, data: vec![] };
        assert_eq!(empty.status(), Err(RomStatus::MISSING));
    }

    #[test]
    fn flash_end_word_is_inverted() {
        assert_eq!(Request::flash_end(true).data, [0, 0, 0, 0]);
        assert_eq!(Request::flash_end(false).data, [1, 0, 0, 0]);
    }

    #[test]
    fn names_chips_by_magic() {
        assert_eq!(ChipKind::from_magic(0xFFF0_C101), ChipKind::Esp8266);
        assert_eq!(ChipKind::from_magic(0x00F0_1D83), ChipKind::Other("ESP32"));
        assert_eq!(ChipKind::from_magic(0x1B31_506F), ChipKind::Other("ESP32-C3"));
        assert_eq!(ChipKind::from_magic(0x1234_5678), ChipKind::Unknown(0x1234_5678));
        assert_eq!(ChipKind::magic_of("ESP32-S2"), Some(0x7C6));
    }

    #[test]
    fn describes_esp8266ex_and_esp8285() {
        assert_eq!(ChipDescription::from_efuses([0, 0, 0, 0]).name, "ESP8266EX");
        // bit 4 set, r3_26 (bit 122) set: ESP8285 with 2 MB.
        let esp8285 = ChipDescription::from_efuses([1 << 4, 0, 0, 1 << 26]);
        assert_eq!(esp8285, ChipDescription { name: "ESP8285N16", embedded_flash: Some(0x20_0000) });
        let hot = ChipDescription::from_efuses([1 << 4 | 1 << 5, 0, 0, 0]);
        assert_eq!(hot, ChipDescription { name: "ESP8285H08", embedded_flash: Some(0x10_0000) });
    }
}
