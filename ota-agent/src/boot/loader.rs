//! tcpflash-boot's flow, over a small board trait so the same code runs on an ESP8266 (ROM
//! routines), on another board (a memory-mapped flash) and in host tests (a RAM flash).
//!
//! [`load`] reads rBoot's config and the trial record, runs [`decide`] with each candidate
//! checked by [`image::check_bootable`] (which boots exactly what the validator's
//! `verify_bootable` accepts), programs the attempt bit of a trial boot, prints a console
//! line for each rom it refuses and one for the rom it boots (with the build id of an image
//! that carries a slot descriptor), and copies the chosen image's RAM segments (and, on a
//! board without the ESP8266's flash cache, its IROM); the caller then hands over with
//! [`BootBoard::jump`]. It writes nothing but the attempt bit.
//!
//! Once copying starts, the firmware's DRAM segments may overwrite the bootloader's own
//! `.rodata`, `.data` and `.bss`: from there on only the stack (which no firmware segment
//! may cover, see `image::loadable_at_boot`) and registers are used, and nothing is printed.
#![allow(unsafe_code)] // copying segments over RAM and jumping into them is what a loader does

use crate::boot::config::{CONFIG_STRUCT_LEN, rboot_flash_size};
use crate::boot::decision::{Boot, BootKind, TrialStatus, decide};
#[cfg(target_arch = "xtensa")]
use crate::boot::handoff::HANDOFF_ADDR;
use crate::boot::handoff::HandOff;
use crate::boot::trial::{ATTEMPTS_AT, TRIAL_LEN, next_attempts_word};
use crate::flash::{ErrorType, NorFlashError, NorFlashErrorKind, ReadNorFlash};
use crate::image::{self, BOOT_SCRATCH, SegmentTable};
use crate::layout::{BOOT_CONFIG_OFFSET, FlashLayout, IMAGE_IROM_OFFSET, irom_link_addr_for, rom_capacity};

/// A board operation failed (the ROM returned an error, or the flash is out of reach).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoardError;

/// What the bootloader needs from a board.
pub trait BootBoard {
    /// Reads `buf.len()` bytes of flash at `offset`. [`load`] asks only for 4-byte aligned
    /// offsets and lengths into 4-byte aligned buffers (what the ESP8266 ROM's `SPIRead`
    /// needs).
    fn read_flash(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), BoardError>;

    /// Programs the 4-byte aligned flash word at `offset` without erasing (bits only go
    /// from 1 to 0).
    fn program_word(&mut self, offset: u32, word: u32) -> Result<(), BoardError>;

    /// Sends a byte to the console (UART0 on the ESP8266).
    fn print_byte(&mut self, byte: u8);

    /// Copies `len` bytes (a multiple of 4) of flash at `offset` (4-byte aligned) to RAM at
    /// `addr`.
    ///
    /// # Safety
    /// `addr..addr + len` must be memory nothing running still needs: not the
    /// bootloader's code or stack.
    unsafe fn copy_segment(&mut self, offset: u32, addr: u32, len: u32) -> Result<(), BoardError>;

    /// Makes the booted image's IROM (`len` bytes at flash `offset`) readable at `addr`,
    /// where the ESP8266's flash cache would show it ([`irom_link_addr_for`]). On an
    /// ESP8266 there is nothing to do: the firmware's start-up code maps its megabyte. A
    /// board without that cache copies the bytes.
    ///
    /// # Safety
    /// As [`BootBoard::copy_segment`].
    unsafe fn place_irom(&mut self, offset: u32, addr: u32, len: u32) -> Result<(), BoardError> {
        let _ = (offset, addr, len);
        Ok(())
    }

    /// Leaves the hand-off record for the firmware and starts it at `entry` (both boards:
    /// [`hand_over`]).
    ///
    /// # Safety
    /// The firmware's RAM segments must be in place ([`load`] returned).
    unsafe fn jump(&mut self, handoff: &HandOff, entry: u32) -> !;

    /// The chip size. By default what rBoot does: the size code in the bootloader's own
    /// image header (flash 0x0, byte 3); 512 KB when it cannot be read.
    fn flash_size(&mut self) -> u32 {
        let mut header = WordAligned([0xFF; 4]);
        let _ = self.read_flash(0, &mut header.0);
        rboot_flash_size(header.0[3] >> 4)
    }
}

/// A byte buffer on a word boundary, as `SPIRead` writes whole words.
#[repr(C, align(4))]
pub struct WordAligned<const N: usize>(pub [u8; N]);

/// The loader's buffers, which the caller keeps off the stack (`.bss` on a board: no image
/// bytes, short stack offsets). Not used once copying starts, so the firmware's DRAM
/// segments may overwrite them.
pub struct LoaderBuffers {
    scratch: WordAligned<BOOT_SCRATCH>,
    config: WordAligned<CONFIG_STRUCT_LEN>,
    trial: WordAligned<TRIAL_LEN>,
    table: SegmentTable,
}

impl LoaderBuffers {
    /// All zero, so a `static` of it lands in `.bss`.
    pub const fn new() -> LoaderBuffers {
        LoaderBuffers {
            scratch: WordAligned([0; BOOT_SCRATCH]),
            config: WordAligned([0; CONFIG_STRUCT_LEN]),
            trial: WordAligned([0; TRIAL_LEN]),
            table: SegmentTable::EMPTY,
        }
    }
}

impl Default for LoaderBuffers {
    fn default() -> Self {
        LoaderBuffers::new()
    }
}

/// What to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub entry: u32,
    pub handoff: HandOff,
}

/// Why nothing starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Halt {
    /// No rom is bootable: the console says why, rom by rom.
    NoBootableSlot,
    /// A segment could not be copied (RAM may be half overwritten: nothing more is printed).
    CopyFailed,
}

/// The board's flash as the image reader sees it.
struct BoardFlash<'b, B> {
    board: &'b mut B,
    size: u32,
}

#[derive(Debug)]
struct ReadFailed;

impl NorFlashError for ReadFailed {
    fn kind(&self) -> NorFlashErrorKind {
        NorFlashErrorKind::Other
    }
}

impl<B: BootBoard> ErrorType for BoardFlash<'_, B> {
    type Error = ReadFailed;
}

impl<B: BootBoard> ReadNorFlash for BoardFlash<'_, B> {
    const READ_SIZE: usize = 4;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), ReadFailed> {
        self.board.read_flash(offset, bytes).map_err(|_| ReadFailed)
    }

    fn capacity(&self) -> usize {
        self.size as usize
    }
}

/// Decides, counts the attempt, prints the line and copies the segments.
pub fn load<B: BootBoard>(board: &mut B, buffers: &mut LoaderBuffers) -> Result<Launch, Halt> {
    let boot = choose(board, buffers)?;
    // From here on only the stack: the firmware's DRAM segments may overwrite `buffers`.
    // The image `choose` checked last, the one that boots, filled the table.
    let table = buffers.table;
    for (from, addr, len) in table.ram_segments_at(boot.offset) {
        // SAFETY: `check_bootable` keeps every segment inside the firmware's IRAM and DRAM,
        // away from this code (cache RAM) and its stack (the ROM's, DRAM's top).
        unsafe { board.copy_segment(from, addr, len) }.map_err(|BoardError| Halt::CopyFailed)?;
    }
    let irom = boot.offset + IMAGE_IROM_OFFSET;
    // SAFETY: the image's IROM lies inside the megabyte its offset selects (the check bounds
    // the image by `rom_capacity`), so it lands inside the IROM window, away from this code.
    unsafe { board.place_irom(irom, irom_link_addr_for(boot.offset), table.irom_len) }
        .map_err(|BoardError| Halt::CopyFailed)?;
    Ok(Launch { entry: table.entry, handoff: boot.handoff() })
}

/// Writes `handoff` to [`HANDOFF_ADDR`] word by word (RTC user memory on an ESP8266 takes
/// only 32-bit accesses; system RAM on the QEMU board) and calls `entry`, never to return.
///
/// # Safety
/// Only on the board: `HANDOFF_ADDR` must be writable memory, and `entry` the entry of a
/// firmware whose segments [`load`] copied.
#[cfg(target_arch = "xtensa")]
pub unsafe fn hand_over(handoff: &HandOff, entry: u32) -> ! {
    let record = HANDOFF_ADDR as *mut u32;
    for (i, word) in handoff.to_words().into_iter().enumerate() {
        // SAFETY: the caller vouches for the record's memory.
        unsafe { record.add(i).write_volatile(word) };
    }
    // SAFETY: the caller vouches for the entry; a firmware's entry never returns.
    let start: extern "C" fn() -> ! = unsafe { core::mem::transmute(entry as usize) };
    start()
}

/// Everything before the copy: reads, decides, counts the attempt, prints the line. The
/// chosen image's segment table is left in `buffers.table`.
#[inline(never)]
fn choose<B: BootBoard>(board: &mut B, buffers: &mut LoaderBuffers) -> Result<Boot, Halt> {
    let LoaderBuffers { scratch, config, trial, table } = buffers;
    let flash_size = board.flash_size();
    let state = FlashLayout::rboot("", flash_size).boot_state_offset();
    // Unreadable reads as erased: no config (rBoot's default), no trial.
    if board.read_flash(BOOT_CONFIG_OFFSET, &mut config.0).is_err() {
        config.0 = [0xFF; CONFIG_STRUCT_LEN];
    }
    if board.read_flash(state, &mut trial.0).is_err() {
        trial.0 = [0xFF; TRIAL_LEN];
    }

    // The decision stops at the first bootable rom: the last image checked is the one that
    // boots. A rom that cannot boot gets its line right away.
    loop {
        let decision = decide(&config.0, &trial.0, flash_size, &mut |rom: u8, offset: u32| {
            let mut flash = BoardFlash { board: &mut *board, size: flash_size };
            let capacity = rom_capacity(flash_size, offset);
            let bootable = image::check_bootable(&mut flash, offset, capacity, &mut scratch.0, table);
            if !bootable {
                say(board, rom, offset, b"not bootable").end();
            }
            bootable
        });
        let Some(boot) = decision.boot else {
            if let TrialStatus::Exhausted { trial_rom, .. } = decision.events.trial {
                let offset = decision.config.roms[usize::from(trial_rom)];
                say(board, trial_rom, offset, NOT_CONFIRMED).end();
            }
            Console(board).text(PREFIX).text(b"no bootable rom, halted").end();
            return Err(Halt::NoBootableSlot);
        };
        if boot.count_attempt {
            let at = state + ATTEMPTS_AT;
            let old = word(&trial.0, ATTEMPTS_AT as usize);
            if !program_and_check(board, at, next_attempts_word(old)) {
                // An attempt that cannot be counted is not granted: decide again as if
                // the trial had used them all (that decision counts nothing).
                trial.0[ATTEMPTS_AT as usize..][..4].fill(0);
                continue;
            }
        }
        let mut out = say(board, boot.rom, boot.offset, kind_word(boot.kind));
        if let BootKind::Trial { attempt, max } = boot.kind {
            out.dec(attempt).text(b"/").dec(max);
        }
        if let Some(id) = &table.build_id {
            out.text(b", build ").hex_bytes(id);
        }
        out.end();
        return Ok(boot);
    }
}

fn program_and_check<B: BootBoard>(board: &mut B, at: u32, value: u32) -> bool {
    let mut check = WordAligned([0u8; 4]);
    board.program_word(at, value).is_ok()
        && board.read_flash(at, &mut check.0).is_ok()
        && u32::from_le_bytes(check.0) == value
}

fn word(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// The console line's writer: bytes, hex words and small decimals, no `core::fmt`.
struct Console<'b, B>(&'b mut B);

impl<B: BootBoard> Console<'_, B> {
    fn text(&mut self, text: &[u8]) -> &mut Self {
        for &byte in text {
            self.0.print_byte(byte);
        }
        self
    }

    fn hex(&mut self, value: u32) -> &mut Self {
        self.text(b"0x").digits(value)
    }

    /// The bytes of little-endian words as hex, in their order (a build id, as `cargo
    /// tcpflash build` prints it).
    fn hex_bytes(&mut self, words: &[u32]) -> &mut Self {
        for &word in words {
            self.digits(word.swap_bytes());
        }
        self
    }

    /// Eight hex digits, most significant first. One copy for every hex number.
    #[inline(never)]
    fn digits(&mut self, value: u32) -> &mut Self {
        for shift in (0..8).rev() {
            let digit = (value >> (4 * shift) & 0xF) as u8;
            self.0.print_byte(if digit < 10 { b'0' + digit } else { b'a' + digit - 10 });
        }
        self
    }

    /// A value below 100, by a fixed number of conditional subtractions: the lx106 has no
    /// divider, and LLVM turns a plain subtraction loop back into `__udivsi3` (300 bytes).
    fn dec(&mut self, value: u8) -> &mut Self {
        let (mut tens, mut ones) = (0, value);
        for _ in 0..9 {
            if ones >= 10 {
                ones -= 10;
                tens += 1;
            }
        }
        if tens > 0 {
            self.0.print_byte(b'0' + tens);
        }
        self.0.print_byte(b'0' + ones);
        self
    }

    fn end(&mut self) {
        self.text(b"\r\n");
    }
}

const PREFIX: &[u8] = b"tcpflash-boot: ";

/// Starts a console line about a rom: `tcpflash-boot: rom 1 @ 0x00082000: <what>`.
#[inline(never)]
fn say<'b, B: BootBoard>(board: &'b mut B, rom: u8, offset: u32, what: &[u8]) -> Console<'b, B> {
    let mut out = Console(board);
    out.text(PREFIX).text(b"rom ").dec(rom).text(b" @ ").hex(offset).text(b": ").text(what);
    out
}

/// What a reverted boot says; its start also says why an exhausted trial's rom is skipped
/// (one text: the sector counts every byte).
const REVERTED: &[u8] = b"trial not confirmed, reverted";
const NOT_CONFIRMED: &[u8] = REVERTED.split_at(b"trial not confirmed".len()).0;

fn kind_word(kind: BootKind) -> &'static [u8] {
    match kind {
        BootKind::Confirmed => b"confirmed",
        BootKind::Trial { .. } => b"trial ",
        BootKind::Reverted => REVERTED,
        BootKind::Fallback => b"fallback",
    }
}

/// A board over a flash image in memory: the bootloader's flow on the host, recording what
/// it prints, copies and programs (there is no CPU to jump with). The tests and the QEMU
/// board's checks run `load` on it to know what tcpflash-boot must do with a flash.
#[cfg(any(test, feature = "std"))]
pub struct HostBoard {
    pub flash: crate::flash::RamNor<std::vec::Vec<u8>>,
    pub console: std::vec::Vec<u8>,
    /// RAM segments copied: load address and bytes.
    pub copies: std::vec::Vec<(u32, std::vec::Vec<u8>)>,
    /// The IROM placed: address and bytes.
    pub irom: Option<(u32, std::vec::Vec<u8>)>,
    /// Words programmed: flash offset and value.
    pub programs: std::vec::Vec<(u32, u32)>,
    /// Makes every program fail (a flash that refuses writes).
    pub fail_programs: bool,
}

#[cfg(any(test, feature = "std"))]
impl HostBoard {
    /// A board whose flash holds `bytes` (NOR rules: programs only clear bits).
    pub fn new(bytes: std::vec::Vec<u8>) -> HostBoard {
        let mut flash = crate::flash::RamNor::from_storage(bytes);
        flash.allow_bit_clearing();
        HostBoard {
            flash,
            console: std::vec::Vec::new(),
            copies: std::vec::Vec::new(),
            irom: None,
            programs: std::vec::Vec::new(),
            fail_programs: false,
        }
    }

    /// The console output as text.
    pub fn console_text(&self) -> std::string::String {
        std::string::String::from_utf8_lossy(&self.console).into_owned()
    }

    fn read_to_vec(&mut self, offset: u32, len: u32) -> Result<std::vec::Vec<u8>, BoardError> {
        let mut data = std::vec![0u8; len as usize];
        self.flash.read(offset, &mut data).map_err(|_| BoardError)?;
        Ok(data)
    }
}

#[cfg(any(test, feature = "std"))]
impl BootBoard for HostBoard {
    fn read_flash(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), BoardError> {
        // What the ESP8266 ROM's SPIRead takes: `load` must never ask for more.
        assert!(
            offset.is_multiple_of(4)
                && buf.len().is_multiple_of(4)
                && buf.as_ptr().cast::<u32>().is_aligned(),
            "SPIRead's rules: {offset:#x}, {} bytes",
            buf.len()
        );
        self.flash.read(offset, buf).map_err(|_| BoardError)
    }

    fn program_word(&mut self, offset: u32, word: u32) -> Result<(), BoardError> {
        use crate::flash::NorFlash;
        self.programs.push((offset, word));
        if self.fail_programs {
            return Err(BoardError);
        }
        self.flash.write(offset, &word.to_le_bytes()).map_err(|_| BoardError)
    }

    fn print_byte(&mut self, byte: u8) {
        self.console.push(byte);
    }

    unsafe fn copy_segment(&mut self, offset: u32, addr: u32, len: u32) -> Result<(), BoardError> {
        let data = self.read_to_vec(offset, len)?;
        self.copies.push((addr, data));
        Ok(())
    }

    unsafe fn place_irom(&mut self, offset: u32, addr: u32, len: u32) -> Result<(), BoardError> {
        self.irom = Some((addr, self.read_to_vec(offset, len)?));
        Ok(())
    }

    unsafe fn jump(&mut self, _: &HandOff, _: u32) -> ! {
        panic!("a host board cannot start a firmware: stop at `load`")
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::boot::config::BootConfig;
    use crate::boot::handoff::HandOffKind;
    use crate::boot::trial::{Trial, TrialRecord, begin_trial};
    use crate::descriptor::Descriptor;
    use crate::flash::{NorFlash, RamNor};
    use crate::image::{FlashParams, Segment, write_v2};
    use crate::layout::{DEFAULT_LAYOUT, SlotId};

    const IRAM_CODE: [u8; 12] = [0x36, 0x41, 0x00, 0x0c, 0x02, 0x1d, 0xf0, 1, 2, 3, 4, 5];
    const DATA: [u8; 8] = *b"rodata!!";

    fn image_for(offset: u32, entry: u32) -> Vec<u8> {
        let descriptor =
            Descriptor::new(crate::layout::irom_link_addr_for(offset), *b"12345678", "fw", "1.0.0");
        let mut irom = descriptor.unwrap().to_bytes().to_vec();
        irom.extend_from_slice(&[0x5A; 100]);
        let mut out = Vec::new();
        let segments =
            [Segment { addr: 0x4010_0000, data: &IRAM_CODE }, Segment { addr: 0x3FFE_8000, data: &DATA }];
        write_v2(FlashParams::default(), entry, &irom, &segments, &mut |b| out.extend_from_slice(b)).unwrap();
        out
    }

    /// A 1 MB chip with a bootloader header at 0 (size code 1MB), the config and both slots.
    fn board(current: SlotId, user2_ok: bool) -> HostBoard {
        let layout = DEFAULT_LAYOUT;
        let mut flash = RamNor::new(layout.flash_size);
        flash.allow_bit_clearing();
        flash.write(0, &[0xE9, 2, 0, 0x20]).unwrap();
        flash.write(0x1000, &BootConfig::for_layout(layout, current).to_bytes()).unwrap();
        flash.write(0x2000, &padded(image_for(0x2000, 0x4010_0001))).unwrap();
        let mut user2 = image_for(0x82000, 0x4010_0002);
        if !user2_ok {
            user2[90] ^= 0xFF; // in the IROM code: only the CRC notices
        }
        flash.write(0x82000, &padded(user2)).unwrap();
        HostBoard::new(flash.into_storage())
    }

    fn padded(mut bytes: Vec<u8>) -> Vec<u8> {
        bytes.resize(bytes.len().next_multiple_of(4), 0xFF);
        bytes
    }

    fn start_trial(board: &mut HostBoard, max: u8) {
        let record = TrialRecord {
            trial_rom: 1,
            fallback_rom: 0,
            max_attempts: max,
            trial_offset: 0x82000,
            fallback_offset: 0x2000,
        };
        begin_trial(&mut board.flash, DEFAULT_LAYOUT, &record).unwrap();
    }

    fn trial_state(board: &HostBoard) -> Trial {
        let at = DEFAULT_LAYOUT.boot_state_offset() as usize;
        Trial::parse(board.flash.bytes()[at..at + TRIAL_LEN].try_into().unwrap()).unwrap()
    }

    #[test]
    fn boots_the_configured_slot_and_copies_its_segments() {
        let mut board = board(SlotId::User2, true);
        let launch = load(&mut board, &mut LoaderBuffers::new()).unwrap();
        assert_eq!(
            launch,
            Launch {
                entry: 0x4010_0002,
                handoff: HandOff { rom: 1, kind: HandOffKind::Confirmed, attempt: 0, offset: 0x82000 }
            }
        );
        assert_eq!(board.copies, [(0x4010_0000, IRAM_CODE.to_vec()), (0x3FFE_8000, DATA.to_vec())]);
        // Its IROM (padded to 16) where the cache would map user2's megabyte.
        let image = image_for(0x82000, 0x4010_0002);
        let irom_len = u32::from_le_bytes(image[12..16].try_into().unwrap()) as usize;
        assert_eq!(board.irom, Some((0x4028_2010, image[16..16 + irom_len].to_vec())));
        assert_eq!(
            board.console_text(),
            "tcpflash-boot: rom 1 @ 0x00082000: confirmed, build 3132333435363738\r\n"
        );
        assert!(board.programs.is_empty(), "nothing is written without a trial");
    }

    #[test]
    fn trial_boots_count_one_attempt_each_then_revert() {
        let mut board = board(SlotId::User1, true);
        start_trial(&mut board, 2);
        for attempt in 1..=2 {
            board.console.clear();
            let launch = load(&mut board, &mut LoaderBuffers::new()).unwrap();
            assert_eq!(
                launch.handoff,
                HandOff { rom: 1, kind: HandOffKind::Trial, attempt, offset: 0x82000 }
            );
            assert_eq!(launch.entry, 0x4010_0002);
            assert_eq!(
                board.console_text(),
                std::format!(
                    "tcpflash-boot: rom 1 @ 0x00082000: trial {attempt}/2, build 3132333435363738\r\n"
                )
            );
            assert_eq!(trial_state(&board).attempts_used, attempt);
        }
        let at = DEFAULT_LAYOUT.boot_state_offset() + ATTEMPTS_AT;
        assert_eq!(board.programs, [(at, 0xFFFF_FFFE), (at, 0xFFFF_FFFC)]);
        board.console.clear();
        board.copies.clear();
        let launch = load(&mut board, &mut LoaderBuffers::new()).unwrap();
        assert_eq!(
            launch.handoff,
            HandOff { rom: 0, kind: HandOffKind::Reverted, attempt: 0, offset: 0x2000 }
        );
        assert_eq!(board.copies[0].0, 0x4010_0000);
        assert_eq!(
            board.console_text(),
            "tcpflash-boot: rom 0 @ 0x00002000: trial not confirmed, reverted, build 3132333435363738\r\n"
        );
        assert_eq!(board.programs.len(), 2, "a reverted boot counts nothing");
    }

    #[test]
    fn a_confirmed_trial_keeps_booting_without_writes() {
        let mut board = board(SlotId::User1, true);
        start_trial(&mut board, 1);
        crate::boot::trial::confirm(&mut board.flash, DEFAULT_LAYOUT).unwrap();
        for _ in 0..3 {
            let launch = load(&mut board, &mut LoaderBuffers::new()).unwrap();
            assert_eq!(launch.handoff.kind, HandOffKind::Confirmed);
            assert_eq!(launch.handoff.rom, 1);
        }
        assert!(board.programs.is_empty());
    }

    #[test]
    fn an_attempt_that_cannot_be_counted_is_not_granted() {
        let mut board = board(SlotId::User1, true);
        start_trial(&mut board, 3);
        board.fail_programs = true;
        let launch = load(&mut board, &mut LoaderBuffers::new()).unwrap();
        assert_eq!(launch.handoff.kind, HandOffKind::Reverted);
        assert_eq!(launch.handoff.offset, 0x2000);
        assert_eq!(board.programs.len(), 1);
    }

    #[test]
    fn a_broken_trial_image_falls_back() {
        let mut board = board(SlotId::User1, false);
        start_trial(&mut board, 3);
        let launch = load(&mut board, &mut LoaderBuffers::new()).unwrap();
        assert_eq!(
            launch.handoff,
            HandOff { rom: 0, kind: HandOffKind::Fallback, attempt: 0, offset: 0x2000 }
        );
        assert!(board.programs.is_empty(), "no attempt counted for a slot that does not boot");
        assert_eq!(
            board.console_text(),
            "tcpflash-boot: rom 1 @ 0x00082000: not bootable\r\ntcpflash-boot: rom 0 @ 0x00002000: fallback, build 3132333435363738\r\n",
            "the line of the rom that cannot boot comes first"
        );
    }

    #[test]
    fn no_bootable_slot_says_why_rom_by_rom() {
        let mut board = board(SlotId::User1, false);
        board.flash.erase(0x2000, 0x3000).unwrap();
        assert_eq!(load(&mut board, &mut LoaderBuffers::new()), Err(Halt::NoBootableSlot));
        assert_eq!(
            board.console_text(),
            "tcpflash-boot: rom 0 @ 0x00002000: not bootable\r\n\
             tcpflash-boot: rom 1 @ 0x00082000: not bootable\r\n\
             tcpflash-boot: no bootable rom, halted\r\n"
        );
        assert!(board.copies.is_empty());

        // An exhausted trial whose fallback is gone: the trial image is never started.
        let mut board = board_with_exhausted_trial();
        board.flash.erase(0x2000, 0x3000).unwrap();
        assert_eq!(load(&mut board, &mut LoaderBuffers::new()), Err(Halt::NoBootableSlot));
        assert!(
            board.console_text().contains("rom 1 @ 0x00082000: trial not confirmed\r\n"),
            "{}",
            board.console_text()
        );
    }

    fn board_with_exhausted_trial() -> HostBoard {
        let mut board = board(SlotId::User1, true);
        start_trial(&mut board, 1);
        crate::boot::trial::count_attempt(&mut board.flash, DEFAULT_LAYOUT).unwrap();
        board
    }

    #[test]
    fn no_config_means_rboots_default_for_the_header_size() {
        let mut board = board(SlotId::User2, true);
        board.flash.erase(0x1000, 0x2000).unwrap();
        let launch = load(&mut board, &mut LoaderBuffers::new()).unwrap();
        assert_eq!(launch.handoff.offset, 0x2000);
        assert_eq!(
            board.console_text(),
            "tcpflash-boot: rom 0 @ 0x00002000: confirmed, build 3132333435363738\r\n"
        );
        assert_eq!(board.flash_size(), 0x10_0000);
    }

    #[test]
    fn an_image_without_descriptor_boots_without_a_build_id() {
        let mut board = board(SlotId::User1, true);
        let mut foreign = Vec::new();
        let segments = [Segment { addr: 0x4010_0000, data: &IRAM_CODE }];
        write_v2(FlashParams::default(), 0x4010_0000, &[0x5A; 80], &segments, &mut |b| {
            foreign.extend_from_slice(b)
        })
        .unwrap();
        board.flash.erase(0x2000, 0x3000).unwrap();
        board.flash.write(0x2000, &padded(foreign)).unwrap();
        let launch = load(&mut board, &mut LoaderBuffers::new()).unwrap();
        assert_eq!(launch.handoff.offset, 0x2000);
        assert_eq!(board.console_text(), "tcpflash-boot: rom 0 @ 0x00002000: confirmed\r\n");
    }

    #[test]
    fn decimals_and_hex_print_exactly() {
        let mut board = HostBoard::new(std::vec![0xFF; 0x1000]);
        Console(&mut board)
            .dec(0)
            .text(b" ")
            .dec(7)
            .text(b" ")
            .dec(31)
            .text(b" ")
            .dec(99)
            .text(b" ")
            .hex(0xDEAD_BEEF)
            .text(b" ")
            .hex_bytes(&[0xFF00_2A3F, 0x0102_0304]);
        assert_eq!(board.console_text(), "0 7 31 99 0xdeadbeef 3f2a00ff04030201");
    }
}
