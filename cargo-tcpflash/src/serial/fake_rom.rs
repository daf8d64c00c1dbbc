//! A fake ESP8266 ROM serial loader, for tests and for trying the flasher without a board.
//!
//! [`FakeRom::handle`] is the sans-IO core: one request in, the ROM's responses out.
//! [`FakeRom::spawn`] serves it on the master side of a pseudo-terminal pair in a thread;
//! clients (our flasher, esptool) open the slave's path like any serial port.
//!
//! What it models of the real ROM: SLIP packets; every response echoes the command with a
//! value and status bytes (two on the ESP8266, four on the ESP32 family); SYNC answered
//! eight times; registers for the chip-detect word and the eFuses; FLASH_BEGIN erasing with
//! the ROM's over-erase bug ([`rom::rom_erased_sectors`]); FLASH_DATA checking the payload
//! checksum, the length and the sequence number, and programming NOR-style (bits can only
//! go from 1 to 0); FLASH_END ending the session. Commands it does not know get status 1,
//! code 0x05 (how esptool sees the ESP8266 refuse GET_SECURITY_INFO).
//! Modelling choices where the real ROM's behaviour is not documented: out-of-order
//! sequence numbers and ranges past the end of the flash are refused with code 0x05/0x06.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serialport::{SerialPort, TTYPort};

use super::rom::{self, Request, Response, RomStatus, op};
use super::slip;

/// The ESP8266 ROM's SYNC answer value (esptool only checks that a ROM sends nonzero).
pub const SYNC_VALUE: u32 = 0x2012_0707;
/// UART_CLKDIV as the ROM leaves it at 115200 baud with a 26 MHz crystal (esptool reads it to
/// guess the crystal).
const UART_CLKDIV_REG: u32 = 0x6000_0014;
const UART_CLKDIV_115200: u32 = 451;
/// The SPI0 flash controller's user-command registers: esptool drives them through
/// WRITE_REG/READ_REG to read the flash's SFDP signature and JEDEC id before writing.
const SPI_CMD_REG: u32 = 0x6000_0200;
const SPI_CMD_USR: u32 = 1 << 18;
const SPI_USR2_REG: u32 = 0x6000_0224;
const SPI_W0_REG: u32 = 0x6000_0240;
const SPIFLASH_RDID: u32 = 0x9F;
const SPIFLASH_RDSFDP: u32 = 0x5A;
const SFDP_SIGNATURE: u32 = u32::from_le_bytes(*b"SFDP");
/// JEDEC manufacturer id of Winbond, whose chips sit on most ESP8266 modules.
const WINBOND: u32 = 0xEF;
/// eFuse words of an ESP8266EX whose MAC esptool can decode (OUI 18:FE:34).
const ESP8266EX_EFUSES: [u32; 4] = [0x4A00_0000, 0x0000_3C2B, 0, 0];

/// What ended the loader session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// FLASH_END asked for a reboot.
    Reboot,
    /// FLASH_END asked to run the user code.
    RunUserCode,
}

/// One thing the fake ROM was asked to do, for tests to check order and parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Sync,
    ReadReg(u32),
    WriteReg(u32),
    FlashBegin { erase_size: u32, blocks: u32, block_size: u32, offset: u32, erased: (u32, u32) },
    FlashData { seq: u32, len: u32 },
    FlashEnd(Exit),
    Refused { op: u8, status: RomStatus },
}

#[derive(Clone, Copy, Debug)]
struct Download {
    offset: u32,
    block_size: u32,
    next_seq: u32,
}

/// The fake ROM's whole state: flash, registers, session and an event log.
#[derive(Clone, Debug)]
pub struct FakeRom {
    flash: Vec<u8>,
    registers: HashMap<u32, u32>,
    status_len: usize,
    download: Option<Download>,
    write_fault: Option<u32>,
    events: Vec<Event>,
    exit: Option<Exit>,
}

impl FakeRom {
    /// An ESP8266EX with `flash_size` bytes of flash holding [`FakeRom::pattern`].
    pub fn esp8266(flash_size: u32) -> FakeRom {
        let mut registers = HashMap::new();
        registers.insert(rom::CHIP_DETECT_MAGIC_REG, rom::ESP8266_MAGIC);
        registers.insert(UART_CLKDIV_REG, UART_CLKDIV_115200);
        for (reg, value) in rom::EFUSE_REGS.iter().zip(ESP8266EX_EFUSES) {
            registers.insert(*reg, value);
        }
        FakeRom {
            flash: FakeRom::pattern(flash_size),
            registers,
            status_len: 2,
            download: None,
            write_fault: None,
            events: Vec::new(),
            exit: None,
        }
    }

    /// Another chip's ROM, e.g. "ESP32": its chip-detect word and its four status bytes.
    pub fn other_chip(name: &str, flash_size: u32) -> FakeRom {
        let magic =
            rom::ChipKind::magic_of(name).unwrap_or_else(|| panic!("no chip-detect word known for {name}"));
        let mut fake = FakeRom::esp8266(flash_size);
        fake.registers.insert(rom::CHIP_DETECT_MAGIC_REG, magic);
        fake.status_len = 4;
        fake
    }

    /// Sets the eFuse words (to pose as an ESP8285, say).
    pub fn with_efuses(mut self, words: [u32; 4]) -> FakeRom {
        for (reg, value) in rom::EFUSE_REGS.iter().zip(words) {
            self.registers.insert(*reg, value);
        }
        self
    }

    /// Makes every FLASH_DATA block that covers flash offset `at` fail with code 0x08.
    pub fn with_write_fault(mut self, at: u32) -> FakeRom {
        self.write_fault = Some(at);
        self
    }

    /// What the flash holds before anything is written: never 0xFF, so erased bytes show,
    /// and different in every sector, so misplaced data shows.
    pub fn pattern(flash_size: u32) -> Vec<u8> {
        (0..flash_size as usize).map(|i| ((i * 7 + (i >> 12) * 13) % 251) as u8).collect()
    }

    pub fn flash(&self) -> &[u8] {
        &self.flash
    }

    pub fn into_flash(self) -> Vec<u8> {
        self.flash
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    pub fn exit(&self) -> Option<Exit> {
        self.exit
    }

    /// Writes the flash to a file (a flash image the virtual ESP8266 can boot).
    pub fn dump(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, &self.flash)
    }

    /// Answers one request as the ROM would. Most commands get one response; SYNC gets
    /// eight; a finished session gets none.
    pub fn handle(&mut self, request: &Request) -> Vec<Response> {
        if self.exit.is_some() {
            return Vec::new();
        }
        let result = match request.op {
            op::SYNC => return self.sync(request),
            op::READ_REG => self.read_reg(request),
            op::WRITE_REG => self.write_reg(request),
            op::FLASH_BEGIN => self.flash_begin(request),
            op::FLASH_DATA => self.flash_data(request),
            op::FLASH_END => self.flash_end(request),
            _ => Err(RomStatus::INVALID_MESSAGE),
        };
        let (value, status) = match result {
            Ok(value) => (value, None),
            Err(status) => {
                self.events.push(Event::Refused { op: request.op, status });
                (0, Some(status))
            }
        };
        vec![self.response(request.op, value, status)]
    }

    fn response(&self, op: u8, value: u32, status: Option<RomStatus>) -> Response {
        let mut data = vec![0u8; self.status_len];
        if let Some(RomStatus(code)) = status {
            data[0] = 1;
            data[1] = code;
        }
        Response { op, value, data }
    }

    fn sync(&mut self, request: &Request) -> Vec<Response> {
        if request.data != rom::SYNC_PAYLOAD {
            return vec![self.response(op::SYNC, 0, Some(RomStatus::INVALID_MESSAGE))];
        }
        self.events.push(Event::Sync);
        (0..rom::SYNC_RESPONSES).map(|_| self.response(op::SYNC, SYNC_VALUE, None)).collect()
    }

    fn read_reg(&mut self, request: &Request) -> Result<u32, RomStatus> {
        let [addr] = words::<1>(&request.data)?;
        self.events.push(Event::ReadReg(addr));
        Ok(self.registers.get(&addr).copied().unwrap_or(0))
    }

    /// Groups of (address, value, mask, delay_us).
    fn write_reg(&mut self, request: &Request) -> Result<u32, RomStatus> {
        if request.data.is_empty() || !request.data.len().is_multiple_of(16) {
            return Err(RomStatus::INVALID_MESSAGE);
        }
        for group in request.data.chunks(16) {
            let [addr, value, mask, _delay] = words::<4>(group)?;
            let old = self.registers.get(&addr).copied().unwrap_or(0);
            self.registers.insert(addr, (old & !mask) | (value & mask));
            self.events.push(Event::WriteReg(addr));
            if addr == SPI_CMD_REG && value & mask & SPI_CMD_USR != 0 {
                self.run_spi_user_command();
            }
        }
        Ok(0)
    }

    /// Completes a SPI user command at once: the command byte is in USR2's low bits, the
    /// answer goes to W0. Only what esptool asks the ROM-mode flash for is modelled.
    fn run_spi_user_command(&mut self) {
        let command = self.registers.get(&SPI_USR2_REG).copied().unwrap_or(0) & 0xFF;
        let answer = match command {
            SPIFLASH_RDSFDP => Some(SFDP_SIGNATURE),
            // Manufacturer, memory type 0x40, capacity as log2 of the size in bytes.
            SPIFLASH_RDID => Some(WINBOND | 0x40 << 8 | self.flash.len().trailing_zeros() << 16),
            _ => None,
        };
        if let Some(answer) = answer {
            self.registers.insert(SPI_W0_REG, answer);
        }
        let cmd = self.registers.entry(SPI_CMD_REG).or_insert(0);
        *cmd &= !SPI_CMD_USR;
    }

    fn flash_begin(&mut self, request: &Request) -> Result<u32, RomStatus> {
        // The ESP8266 ROM takes exactly four words (later chips add an encryption flag).
        let [erase_size, blocks, block_size, offset] = words::<4>(&request.data)?;
        let flash_size = self.flash.len() as u32;
        let end = u64::from(blocks) * u64::from(block_size) + u64::from(offset);
        if block_size == 0 || end > u64::from(flash_size) {
            return Err(RomStatus::FAILED_TO_ACT);
        }
        let (first, count) = rom::rom_erased_sectors(offset, erase_size);
        let start = (first * rom::FLASH_SECTOR_SIZE).min(flash_size) as usize;
        let stop = ((first + count) * rom::FLASH_SECTOR_SIZE).min(flash_size) as usize;
        self.flash[start..stop].fill(0xFF);
        self.events.push(Event::FlashBegin {
            erase_size,
            blocks,
            block_size,
            offset,
            erased: (first, count),
        });
        self.download = Some(Download { offset, block_size, next_seq: 0 });
        Ok(0)
    }

    fn flash_data(&mut self, request: &Request) -> Result<u32, RomStatus> {
        let download = self.download.as_mut().ok_or(RomStatus::FAILED_TO_ACT)?;
        let header = request.data.get(..16).ok_or(RomStatus::INVALID_MESSAGE)?;
        let [len, seq, _, _] = words::<4>(header)?;
        let payload = &request.data[16..];
        if payload.len() != len as usize || seq != download.next_seq {
            return Err(RomStatus::INVALID_MESSAGE);
        }
        if u32::from(rom::checksum(payload)) != request.checksum {
            return Err(RomStatus::BAD_CHECKSUM);
        }
        let at = download.offset as usize + seq as usize * download.block_size as usize;
        let end = at + payload.len();
        if end > self.flash.len()
            || self.write_fault.is_some_and(|fault| (at..end).contains(&(fault as usize)))
        {
            return Err(RomStatus::FLASH_WRITE_ERROR);
        }
        // NOR programming clears bits; it never sets them.
        for (cell, byte) in self.flash[at..end].iter_mut().zip(payload) {
            *cell &= byte;
        }
        download.next_seq += 1;
        self.events.push(Event::FlashData { seq, len });
        Ok(0)
    }

    fn flash_end(&mut self, request: &Request) -> Result<u32, RomStatus> {
        let [run_user_code] = words::<1>(&request.data)?;
        let exit = if run_user_code == 0 { Exit::Reboot } else { Exit::RunUserCode };
        self.download = None;
        self.exit = Some(exit);
        self.events.push(Event::FlashEnd(exit));
        Ok(0)
    }

    /// Serves requests from `port` until `stop` is set. After FLASH_END the chip runs its
    /// firmware: the port stays open but loader packets go unanswered.
    pub fn serve<P: Read + Write>(&mut self, port: &mut P, stop: &AtomicBool) -> io::Result<()> {
        let mut decoder = slip::Decoder::new();
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            let n = match port.read(&mut buf) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for &byte in &buf[..n] {
                let Some(Ok(packet)) = decoder.feed(byte) else { continue };
                let Some(request) = Request::decode(&packet) else { continue };
                for response in self.handle(&request) {
                    port.write_all(&slip::encode(&response.encode()))?;
                }
                port.flush()?;
            }
        }
        Ok(())
    }

    /// Serves this ROM on a new pseudo-terminal in a background thread.
    pub fn spawn(mut self) -> io::Result<RunningFakeRom> {
        let (mut master, slave) = TTYPort::pair().map_err(io::Error::from)?;
        master.set_timeout(Duration::from_millis(20)).map_err(io::Error::from)?;
        let path = slave.name().ok_or_else(|| io::Error::other("the pseudo-terminal has no name"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let served = self.serve(&mut master, &thread_stop);
            (self, served)
        });
        Ok(RunningFakeRom { path, stop, thread: Some(thread), _slave: slave })
    }
}

/// A fake ROM serving on a pseudo-terminal. Dropping it without [`RunningFakeRom::finish`]
/// leaves the thread to end at the next stop check.
pub struct RunningFakeRom {
    path: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(FakeRom, io::Result<()>)>>,
    /// Held open so the master side never sees a hang-up between two clients.
    _slave: TTYPort,
}

impl RunningFakeRom {
    /// The serial port path clients open (`/dev/pts/N`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Stops serving and returns the ROM's final state.
    pub fn finish(mut self) -> FakeRom {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("finished once");
        let (fake, served) = thread.join().expect("fake ROM thread panicked");
        served.expect("fake ROM serial I/O failed");
        fake
    }
}

impl Drop for RunningFakeRom {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn words<const N: usize>(data: &[u8]) -> Result<[u32; N], RomStatus> {
    if data.len() != N * 4 {
        return Err(RomStatus::INVALID_MESSAGE);
    }
    let mut out = [0u32; N];
    for (word, chunk) in out.iter_mut().zip(data.chunks_exact(4)) {
        *word = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u32 = 0x10_0000;

    #[test]
    fn sync_is_answered_eight_times_with_two_status_bytes() {
        let mut fake = FakeRom::esp8266(MB);
        let responses = fake.handle(&Request::sync());
        assert_eq!(responses.len(), 8);
        for response in responses {
            assert_eq!(response.encode(), [1, 8, 2, 0, 0x07, 0x07, 0x12, 0x20, 0, 0]);
        }
    }

    #[test]
    fn reads_chip_detect_word_and_refuses_unknown_commands() {
        let mut fake = FakeRom::esp8266(MB);
        let [magic] = fake.handle(&Request::read_reg(rom::CHIP_DETECT_MAGIC_REG)).try_into().unwrap();
        assert_eq!((magic.value, magic.data), (0xFFF0_C101, vec![0, 0]));
        let [refused] = fake.handle(&Request::new(op::GET_SECURITY_INFO, vec![])).try_into().unwrap();
        assert_eq!((refused.op, refused.data), (op::GET_SECURITY_INFO, vec![1, 5]));

        let mut esp32 = FakeRom::other_chip("ESP32", MB);
        let [magic] = esp32.handle(&Request::read_reg(rom::CHIP_DETECT_MAGIC_REG)).try_into().unwrap();
        assert_eq!((magic.value, magic.data), (0x00F0_1D83, vec![0, 0, 0, 0]));
    }

    #[test]
    fn flash_begin_over_erases_like_the_rom() {
        let mut fake = FakeRom::esp8266(MB);
        let before = fake.flash().to_vec();
        // Ask for 5 sectors at sector 2: the ROM erases 5 + 5 = 10 sectors.
        fake.handle(&Request::flash_begin(5 * 0x1000, 20, 0x400, 0x2000));
        let erased: Vec<usize> =
            (0..256).filter(|s| fake.flash()[s * 0x1000..(s + 1) * 0x1000] == [0xFF; 0x1000]).collect();
        assert_eq!(erased, (2..12).collect::<Vec<_>>());
        assert_eq!(fake.flash()[..0x2000], before[..0x2000]);
        assert_eq!(fake.flash()[12 * 0x1000..], before[12 * 0x1000..]);
    }

    #[test]
    fn flash_data_checks_checksum_sequence_and_programs_nor_style() {
        let mut fake = FakeRom::esp8266(MB);
        // Without FLASH_BEGIN: refused.
        let [r] = fake.handle(&Request::flash_data(0, &[0; 4])).try_into().unwrap();
        assert_eq!(r.status(), Err(RomStatus::FAILED_TO_ACT));

        fake.handle(&Request::flash_begin(0x1000, 2, 0x400, 0x3000));
        let mut corrupt = Request::flash_data(0, &[1, 2, 3, 4]);
        corrupt.checksum ^= 1;
        let [r] = fake.handle(&corrupt).try_into().unwrap();
        assert_eq!(r.status(), Err(RomStatus::BAD_CHECKSUM));
        let [r] = fake.handle(&Request::flash_data(1, &[1, 2, 3, 4])).try_into().unwrap();
        assert_eq!(r.status(), Err(RomStatus::INVALID_MESSAGE), "sequence 1 before 0");

        let [r] = fake.handle(&Request::flash_data(0, &[0xF0, 0x0F, 0x55, 0xFF])).try_into().unwrap();
        assert_eq!(r.status(), Ok(()));
        assert_eq!(fake.flash()[0x3000..0x3004], [0xF0, 0x0F, 0x55, 0xFF]);
        // A second FLASH_BEGIN at 0x5000 (sector 5) erases sectors 5 and 6 only: 0x3000 keeps
        // its data; programming over it without an erase ANDs.
        fake.handle(&Request::flash_begin(0x1000, 1, 0x400, 0x3000 + 0x2000));
        fake.handle(&Request::flash_begin(0, 1, 4, 0x3000));
        fake.handle(&Request::flash_data(0, &[0x0F, 0xFF, 0xFF, 0x00]));
        assert_eq!(fake.flash()[0x3000..0x3004], [0x00, 0x0F, 0x55, 0x00]);
    }

    #[test]
    fn flash_end_ends_the_session() {
        let mut fake = FakeRom::esp8266(MB);
        let [r] = fake.handle(&Request::flash_end(true)).try_into().unwrap();
        assert_eq!(r.status(), Ok(()));
        assert_eq!(fake.exit(), Some(Exit::Reboot));
        assert!(fake.handle(&Request::sync()).is_empty(), "a rebooted ROM is silent");
        let mut fake = FakeRom::esp8266(MB);
        fake.handle(&Request::flash_end(false));
        assert_eq!(fake.exit(), Some(Exit::RunUserCode));
    }

    #[test]
    fn spi_user_commands_answer_rdid_and_complete() {
        let mut fake = FakeRom::esp8266(MB);
        let write = |addr: u32, value: u32| {
            let data = [addr, value, 0xFFFF_FFFF, 0].iter().flat_map(|w| w.to_le_bytes()).collect();
            Request::new(op::WRITE_REG, data)
        };
        fake.handle(&write(SPI_USR2_REG, 7 << 28 | SPIFLASH_RDID));
        fake.handle(&write(SPI_CMD_REG, SPI_CMD_USR));
        let [cmd] = fake.handle(&Request::read_reg(SPI_CMD_REG)).try_into().unwrap();
        assert_eq!(cmd.value & SPI_CMD_USR, 0, "the command completed");
        let [id] = fake.handle(&Request::read_reg(SPI_W0_REG)).try_into().unwrap();
        assert_eq!(id.value, 0x14_40EF, "Winbond, 1 MB");
    }

    #[test]
    fn write_fault_reports_code_8() {
        let mut fake = FakeRom::esp8266(MB).with_write_fault(0x2400);
        fake.handle(&Request::flash_begin(0x1000, 4, 0x400, 0x2000));
        let [ok] = fake.handle(&Request::flash_data(0, &[0; 0x400])).try_into().unwrap();
        assert_eq!(ok.status(), Ok(()));
        let [r] = fake.handle(&Request::flash_data(1, &[0; 0x400])).try_into().unwrap();
        assert_eq!(r.status(), Err(RomStatus::FLASH_WRITE_ERROR));
    }
}
