//! ELF to v2 image, byte for byte what `esptool --chip esp8266 elf2image --version 2` writes.
//!
//! esptool's rules (esptool 5.6.0, `bin_image.py` and `cmds.py`), followed here:
//! - sections, not program headers, in section-header order (never sorted);
//! - a section counts when its address and size are nonzero and its type is PROGBITS,
//!   INIT_ARRAY, FINI_ARRAY or PREINIT_ARRAY; NOBITS (`.bss`) and other types are dropped;
//! - each section's data is zero-padded to a multiple of 4;
//! - a section merges into the one before it when both start in the same region of
//!   esptool's memory map and it starts exactly where the padded previous one ends;
//! - the one segment in 0x40200000..0x40300000 is IROM, the others are RAM segments;
//! - at most 16 segments, IROM included.
//!
//! Where esptool would write an image no ESP8266 can boot (no IROM, a section outside every
//! memory), this refuses with an error instead.

use std::fmt;

use miette::Diagnostic;
use ota_agent::image::{self, FlashParams, ImageError, MAX_SEGMENTS, MemoryKind, Segment};
use ota_agent::layout::{BOOTLOADER_MAX_LEN, CACHE_RAM, IRAM, Slot};
use thiserror::Error;
use xmas_elf::ElfFile;
use xmas_elf::header::{Class, Data, Machine};
use xmas_elf::sections::{SectionHeader, ShType};

/// `e_machine` of Xtensa.
const EM_XTENSA: u16 = 0x5E;
/// Size of an ELF32 section header.
const SECTION_HEADER_LEN: u16 = 40;

/// Why an ELF cannot become an image.
#[derive(Debug, Error, Diagnostic)]
pub enum ElfError {
    #[error("not an ELF file: {reason}")]
    #[diagnostic(
        code(tcpflash::elf::not_elf),
        help(
            "pass the linked firmware ELF (what `cargo tcpflash build` writes as user1.elf), not an image or a source file"
        )
    )]
    NotElf { reason: String },

    #[error("this is a 64-bit ELF for {machine}; the ESP8266 runs 32-bit Xtensa code")]
    #[diagnostic(
        code(tcpflash::elf::elf64),
        help("pass the firmware linked by xtensa-lx106-elf-ld, not a host program")
    )]
    Elf64 { machine: String },

    #[error("this ELF is for {machine} (e_machine {code:#06x}), not Xtensa")]
    #[diagnostic(
        code(tcpflash::elf::not_xtensa),
        help(
            "build the firmware for the ESP8266 (`cargo tcpflash build`, or xtensa-lx106-elf-gcc for C) and pass that ELF"
        )
    )]
    NotXtensa { machine: String, code: u16 },

    #[error("malformed ELF: {reason}")]
    #[diagnostic(
        code(tcpflash::elf::malformed),
        help("the file is damaged or was not written by a linker; link it again")
    )]
    Malformed { reason: String },

    #[error("section `{name}` at {addr:#010x} lies in no ESP8266 memory (DRAM, IRAM or IROM)")]
    #[diagnostic(
        code(tcpflash::elf::unknown_memory),
        help(
            "place it in DRAM (0x3FFE8000..0x40000000), IRAM (0x40100000..0x40108000) or IROM (0x40200000..0x40300000), or make it NOLOAD in the linker script"
        )
    )]
    UnknownMemory { name: String, addr: u32 },

    #[error("no IROM section: nothing is linked in 0x40200000..0x40300000")]
    #[diagnostic(
        code(tcpflash::elf::no_irom),
        help(
            "link the code that runs from flash into `.irom0.text` at the slot's IROM address (0x40202010 for user1): rBoot boots v2 images with exactly one IROM segment"
        )
    )]
    NoIrom,

    #[error("{} IROM segments ({}); an image holds exactly one", segments.len(), join(segments))]
    #[diagnostic(
        code(tcpflash::elf::several_irom),
        help(
            "place the IROM sections back to back in the linker script: a section merges into the previous one when it starts where that one ends (rounded up to 4 bytes)"
        )
    )]
    SeveralIrom { segments: Vec<SegmentName> },

    #[error(
        "{count} segments after merging adjacent sections ({}); at most {MAX_SEGMENTS} allowed, IROM included",
        join(segments)
    )]
    #[diagnostic(
        code(tcpflash::elf::too_many_segments),
        help(
            "group RAM sections in the linker script so that each memory's sections follow each other without gaps (4-byte aligned); esptool refuses more than 16 segments too"
        )
    )]
    TooManySegments { count: usize, segments: Vec<SegmentName> },

    #[error("{segment} ({len} bytes) runs past the end of {memory}")]
    #[diagnostic(
        code(tcpflash::elf::segment_overflow),
        help(
            "the linker script's memory regions are larger than the chip's: DRAM ends at 0x40000000, IRAM at 0x40108000"
        )
    )]
    SegmentOverflow { segment: SegmentName, len: u32, memory: &'static str },

    #[error("cannot write the image: {0}")]
    #[diagnostic(code(tcpflash::elf::image))]
    Image(ImageError),

    #[error("section `{name}` at {addr:#010x} is not in RAM the mask ROM loads a bootloader into")]
    #[diagnostic(
        code(tcpflash::elf::bootloader_memory),
        help(
            "a bootloader runs from RAM with the flash cache off: DRAM (0x3FFE8000..0x40000000) or IRAM and the cache's RAM (0x40100000..0x40110000); nothing in IROM"
        )
    )]
    OutsideBootloaderMemory { name: String, addr: u32 },
}

/// A merged segment, named after the sections it holds, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentName {
    pub addr: u32,
    pub sections: Vec<String>,
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` at {:#010x}", self.sections.join(" + "), self.addr)
    }
}

fn join(segments: &[SegmentName]) -> String {
    segments.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Section data after esptool's padding and merging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadSegment {
    pub addr: u32,
    pub data: Vec<u8>,
    /// The ELF sections merged into this segment, in order.
    pub sections: Vec<String>,
}

impl LoadSegment {
    fn name(&self) -> SegmentName {
        SegmentName { addr: self.addr, sections: self.sections.clone() }
    }

    fn end(&self) -> u64 {
        u64::from(self.addr) + self.data.len() as u64
    }
}

/// What goes into the image: the entry point, the IROM segment and the RAM segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfImage {
    pub entry: u32,
    pub irom: LoadSegment,
    pub ram: Vec<LoadSegment>,
}

impl ElfImage {
    /// Writes the v2 image.
    pub fn to_image(&self, params: FlashParams) -> Result<Vec<u8>, ElfError> {
        let segments: Vec<Segment<'_>> =
            self.ram.iter().map(|segment| Segment { addr: segment.addr, data: &segment.data }).collect();
        let mut out = Vec::new();
        image::write_v2(params, self.entry, &self.irom.data, &segments, &mut |bytes| {
            out.extend_from_slice(bytes)
        })
        .map_err(|error| match error {
            ImageError::SegmentOutsideRam { index, addr, len } => {
                let memory = MemoryKind::of(addr).map_or("its memory", MemoryKind::name);
                ElfError::SegmentOverflow { segment: self.ram[index].name(), len, memory }
            }
            other => ElfError::Image(other),
        })?;
        Ok(out)
    }
}

/// Converts an ESP8266 ELF into a v2 image with the given header flash parameters.
pub fn elf_to_image(elf: &[u8], params: FlashParams) -> Result<Vec<u8>, ElfError> {
    load(elf)?.to_image(params)
}

/// What goes into a bootloader's v1 image: the entry point and the RAM segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootloaderImage {
    pub entry: u32,
    pub segments: Vec<LoadSegment>,
}

impl BootloaderImage {
    /// Writes the v1 image (byte for byte what `esptool elf2image --version 1` writes).
    pub fn to_image(&self, params: FlashParams) -> Result<Vec<u8>, ElfError> {
        let segments: Vec<Segment<'_>> =
            self.segments.iter().map(|segment| Segment { addr: segment.addr, data: &segment.data }).collect();
        let mut out = Vec::new();
        image::write_v1(params, self.entry, &segments, &mut |bytes| out.extend_from_slice(bytes))
            .map_err(ElfError::Image)?;
        Ok(out)
    }
}

/// Converts a bootloader's ELF into the v1 image the mask ROM boots from flash 0x0.
pub fn elf_to_bootloader_image(elf: &[u8], params: FlashParams) -> Result<Vec<u8>, ElfError> {
    load_bootloader(elf)?.to_image(params)
}

/// Reads the sections esptool would put into a v1 image: RAM only (DRAM, IRAM and the
/// cache's RAM, where a bootloader runs), merged like esptool merges them.
pub fn load_bootloader(elf: &[u8]) -> Result<BootloaderImage, ElfError> {
    with_elf(elf, |file, entry| {
        let segments = merge_adjacent(program_sections(file, Memory::Bootloader)?);
        if segments.len() > MAX_SEGMENTS {
            return Err(ElfError::TooManySegments {
                count: segments.len(),
                segments: segments.iter().map(LoadSegment::name).collect(),
            });
        }
        Ok(BootloaderImage { entry, segments })
    })
}

/// The global and weak symbols `elf` (an object or an executable) defines: what the SDK
/// build makes local in compiler_builtins' object.
pub fn defined_globals(elf: &[u8]) -> Result<Vec<String>, ElfError> {
    use xmas_elf::sections::SectionData;
    use xmas_elf::symbol_table::{Binding, Entry};
    let copy = elf.to_vec();
    let file = ElfFile::new(&copy).map_err(|reason| ElfError::NotElf { reason: reason.to_string() })?;
    let mut names = Vec::new();
    for section in file.section_iter() {
        let Ok(SectionData::SymbolTable32(symbols)) = section.get_data(&file) else { continue };
        for symbol in symbols {
            let global = matches!(symbol.get_binding(), Ok(Binding::Global | Binding::Weak));
            if global && symbol.shndx() != 0 {
                names.push(
                    symbol.get_name(&file).map_err(|reason| malformed(reason.to_string()))?.to_string(),
                );
            }
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// Each section's name and size, for size reports.
pub fn section_sizes(elf: &[u8]) -> Result<Vec<(String, u64)>, ElfError> {
    let copy = elf.to_vec();
    let file = ElfFile::new(&copy).map_err(|reason| ElfError::NotElf { reason: reason.to_string() })?;
    Ok(file
        .section_iter()
        .filter_map(|section| Some((section.get_name(&file).ok()?.to_string(), section.size())))
        .collect())
}

/// Reads the sections esptool would put into the image, and sorts out IROM.
pub fn load(elf: &[u8]) -> Result<ElfImage, ElfError> {
    with_elf(elf, |file, entry| {
        let sections = program_sections(file, Memory::Application)?;
        let segments = merge_adjacent(sections);
        if segments.len() > MAX_SEGMENTS {
            return Err(ElfError::TooManySegments {
                count: segments.len(),
                segments: segments.iter().map(LoadSegment::name).collect(),
            });
        }
        let (mut irom, ram): (Vec<_>, Vec<_>) =
            segments.into_iter().partition(|segment| MemoryKind::of(segment.addr) == Some(MemoryKind::Irom));
        match irom.len() {
            0 => Err(ElfError::NoIrom),
            1 => Ok(ElfImage { entry, irom: irom.remove(0), ram }),
            _ => Err(ElfError::SeveralIrom { segments: irom.iter().map(LoadSegment::name).collect() }),
        }
    })
}

/// Checks an ELF's headers (32-bit little-endian Xtensa) and hands it to `f` with its entry
/// point.
fn with_elf<T>(elf: &[u8], f: impl FnOnce(&ElfFile<'_>, u32) -> Result<T, ElfError>) -> Result<T, ElfError> {
    // xmas-elf asserts (panics) on headers that are not 4-aligned in memory: a fresh heap
    // copy is aligned.
    let copy;
    let elf = if elf.as_ptr().align_offset(8) == 0 {
        elf
    } else {
        copy = elf.to_vec();
        copy.as_slice()
    };
    if elf.as_ptr().align_offset(4) != 0 {
        return Err(malformed("cannot align the ELF in memory".into()));
    }
    let file = ElfFile::new(elf).map_err(|reason| ElfError::NotElf { reason: reason.to_string() })?;
    let machine_code = raw_machine(elf);
    match file.header.pt1.class() {
        Class::ThirtyTwo => {}
        Class::SixtyFour => return Err(ElfError::Elf64 { machine: machine_name(&file, machine_code) }),
        other => return Err(malformed(format!("unknown ELF class {other:?}"))),
    }
    if machine_code != EM_XTENSA {
        return Err(ElfError::NotXtensa { machine: machine_name(&file, machine_code), code: machine_code });
    }
    if file.header.pt1.data() != Data::LittleEndian {
        return Err(malformed("big-endian ELF; the ESP8266 is little-endian".into()));
    }
    let entry = u32::try_from(file.header.pt2.entry_point()).map_err(|_| malformed("entry point".into()))?;
    f(&file, entry)
}

/// Where an image's sections may load.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Memory {
    /// A v2 application: DRAM, IRAM, IROM.
    Application,
    /// A v1 bootloader: DRAM, IRAM and the cache's RAM.
    Bootloader,
}

impl Memory {
    fn check(self, name: &str, addr: u32) -> Result<(), ElfError> {
        let ok = match self {
            Memory::Application => MemoryKind::of(addr).is_some(),
            Memory::Bootloader => {
                MemoryKind::of(addr) == Some(MemoryKind::Dram) || (IRAM.start..CACHE_RAM.end).contains(&addr)
            }
        };
        match (ok, self) {
            (true, _) => Ok(()),
            (false, Memory::Application) => Err(ElfError::UnknownMemory { name: name.into(), addr }),
            (false, Memory::Bootloader) => Err(ElfError::OutsideBootloaderMemory { name: name.into(), addr }),
        }
    }
}

fn malformed(reason: String) -> ElfError {
    ElfError::Malformed { reason }
}

/// `e_machine`, read directly: xmas-elf keeps the raw value private.
fn raw_machine(elf: &[u8]) -> u16 {
    u16::from_le_bytes([elf[18], elf[19]])
}

fn machine_name(file: &ElfFile<'_>, code: u16) -> String {
    match file.header.pt2.machine().as_machine() {
        Machine::X86 => "x86".into(),
        Machine::X86_64 => "x86-64".into(),
        Machine::Arm => "ARM".into(),
        Machine::AArch64 => "AArch64".into(),
        Machine::RISC_V => "RISC-V".into(),
        Machine::Other(EM_XTENSA) => "Xtensa".into(),
        Machine::Other(_) => format!("machine {code:#06x}"),
        known => format!("{known:?}"),
    }
}

/// The sections esptool keeps, data padded to 4, in section-header order. Every offset is
/// checked before xmas-elf (which panics on bad input) touches it.
fn program_sections(file: &ElfFile<'_>, memory: Memory) -> Result<Vec<LoadSegment>, ElfError> {
    let header = &file.header.pt2;
    let input = file.input;
    if header.sh_count() == 0 {
        return Err(malformed("no section headers".into()));
    }
    if header.sh_entry_size() != SECTION_HEADER_LEN {
        return Err(malformed(format!("section header size {} (not 40)", header.sh_entry_size())));
    }
    let table_end = header.sh_offset() + u64::from(header.sh_count()) * u64::from(SECTION_HEADER_LEN);
    if table_end > input.len() as u64 || !header.sh_offset().is_multiple_of(4) {
        return Err(malformed("section header table out of the file or misaligned".into()));
    }
    if header.sh_count() >= xmas_elf::sections::SHN_LORESERVE {
        return Err(malformed("too many sections".into()));
    }
    let names = section_bytes(file, header.sh_str_index())?;

    let mut sections = Vec::new();
    for index in 0..header.sh_count() {
        let section = file.section_header(index).map_err(|reason| malformed(reason.into()))?;
        let (addr, size) = (section.address(), section.size());
        if addr == 0 || size == 0 {
            continue;
        }
        let keep = matches!(
            section.get_type(),
            Ok(ShType::ProgBits | ShType::InitArray | ShType::FiniArray | ShType::PreInitArray)
        );
        if !keep {
            continue;
        }
        let name = section_name(names, section.name());
        let addr = u32::try_from(addr).map_err(|_| malformed(format!("section `{name}` address")))?;
        memory.check(&name, addr)?;
        let mut data = data_of(input, &section)
            .ok_or_else(|| malformed(format!("section `{name}` lies past the end of the file")))?
            .to_vec();
        data.resize(data.len().next_multiple_of(4), 0);
        sections.push(LoadSegment { addr, data, sections: vec![name] });
    }
    Ok(sections)
}

fn section_bytes<'a>(file: &ElfFile<'a>, index: u16) -> Result<&'a [u8], ElfError> {
    if index >= file.header.pt2.sh_count() {
        return Err(malformed(format!("section name table index {index} out of range")));
    }
    let section = file.section_header(index).map_err(|reason| malformed(reason.into()))?;
    data_of(file.input, &section)
        .ok_or_else(|| malformed("section name table past the end of the file".into()))
}

fn data_of<'a>(input: &'a [u8], section: &SectionHeader<'a>) -> Option<&'a [u8]> {
    let start = usize::try_from(section.offset()).ok()?;
    let end = start.checked_add(usize::try_from(section.size()).ok()?)?;
    input.get(start..end)
}

fn section_name(names: &[u8], at: u32) -> String {
    let tail = names.get(at as usize..).unwrap_or_default();
    let len = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
    String::from_utf8_lossy(&tail[..len]).into_owned()
}

/// The memory-map region esptool merges within. Its ESP8266 map calls only
/// 0x40201010..0x402E1010 "IROM", so two IROM sections on either side of those bounds stay
/// apart there, and here.
fn esptool_region(addr: u32) -> Option<u8> {
    const MAP: [(u32, u32); 4] = [
        (0x3FF0_0000, 0x3FF0_0010), // DPORT
        (0x3FFE_8000, 0x4000_0000), // DRAM
        (0x4010_0000, 0x4010_8000), // IRAM
        (0x4020_1010, 0x402E_1010), // IROM
    ];
    MAP.iter().position(|&(start, end)| (start..end).contains(&addr)).map(|i| i as u8)
}

/// Merges each section into the previous one when it starts in the same region exactly
/// where that one's (padded) data ends.
fn merge_adjacent(sections: Vec<LoadSegment>) -> Vec<LoadSegment> {
    let mut merged: Vec<LoadSegment> = Vec::with_capacity(sections.len());
    let mut last_region = None;
    for section in sections {
        let region = esptool_region(section.addr);
        match merged.last_mut() {
            Some(previous) if last_region == Some(region) && previous.end() == u64::from(section.addr) => {
                previous.data.extend_from_slice(&section.data);
                previous.sections.extend(section.sections);
            }
            _ => merged.push(section),
        }
        last_region = Some(region);
    }
    merged
}

/// An image that does not fit its slot.
#[derive(Debug, Error, Diagnostic)]
#[error(
    "image is {len} bytes, too large for {slot} by {excess} bytes ({percent:.1}% of capacity: {capacity} bytes at {offset:#x})"
)]
#[diagnostic(
    code(tcpflash::image::too_large),
    help(
        "make the firmware smaller (opt-level = \"s\" or \"z\", fewer features), or pick a layout with larger slots (--layout)"
    )
)]
pub struct TooLargeForSlot {
    pub slot: ota_agent::layout::SlotId,
    pub len: u64,
    pub excess: u64,
    pub percent: f64,
    pub capacity: u32,
    pub offset: u32,
}

/// Checks that an image of `len` bytes fits `slot`.
pub fn check_fits(len: u64, slot: &Slot) -> Result<(), TooLargeForSlot> {
    if len <= u64::from(slot.capacity) {
        return Ok(());
    }
    Err(TooLargeForSlot {
        slot: slot.id,
        len,
        excess: len - u64::from(slot.capacity),
        percent: len as f64 * 100.0 / f64::from(slot.capacity),
        capacity: slot.capacity,
        offset: slot.offset,
    })
}

/// A bootloader image that does not fit sector 0.
#[derive(Debug, Error, Diagnostic)]
#[error("bootloader image is {len} bytes, {excess} bytes over the {BOOTLOADER_MAX_LEN} bytes of sector 0")]
#[diagnostic(
    code(tcpflash::image::bootloader_too_large),
    help(
        "the mask ROM loads it from sector 0, header included: build with opt-level = \"z\" and panic = \"abort\", keep core::fmt out (a panic handler that ignores its message), and look for what is big in the .map next to the image"
    )
)]
pub struct BootloaderTooLarge {
    pub len: u64,
    pub excess: u64,
}

/// Checks that a bootloader image of `len` bytes fits sector 0.
pub fn check_bootloader_fits(len: u64) -> Result<(), BootloaderTooLarge> {
    match len.checked_sub(u64::from(BOOTLOADER_MAX_LEN)) {
        Some(excess) if excess > 0 => Err(BootloaderTooLarge { len, excess }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(addr: u32, len: usize, name: &str) -> LoadSegment {
        LoadSegment { addr, data: vec![name.len() as u8; len], sections: vec![name.into()] }
    }

    #[test]
    fn merges_only_adjacent_sections_of_one_region() {
        let merged = merge_adjacent(vec![
            section(0x4010_0000, 8, ".text"),
            section(0x4010_0008, 4, ".iram1"),
            section(0x4010_0010, 4, ".gap"), // 4 bytes after the previous end
            section(0x3FFE_8000, 4, ".data"),
            section(0x3FFE_8004, 4, ".rodata"),
            section(0x4020_1000, 16, ".low"), // outside esptool's IROM window
            section(0x4020_1010, 4, ".irom"), // adjacent, but another region there
        ]);
        let names: Vec<Vec<String>> = merged.iter().map(|s| s.sections.clone()).collect();
        assert_eq!(
            names,
            vec![
                vec![".text".to_string(), ".iram1".into()],
                vec![".gap".into()],
                vec![".data".into(), ".rodata".into()],
                vec![".low".into()],
                vec![".irom".into()],
            ]
        );
        assert_eq!(merged[0].data.len(), 12);
    }

    #[test]
    fn merging_is_order_sensitive_like_esptool() {
        // esptool never sorts: .rodata listed before .data does not merge into it.
        let merged =
            merge_adjacent(vec![section(0x3FFE_8004, 4, ".rodata"), section(0x3FFE_8000, 4, ".data")]);
        assert_eq!(merged.len(), 2);
    }

    #[test]
    fn bootloader_memory_is_ram_the_rom_loads() {
        for addr in [0x3FFE_8000, 0x3FFF_FFFC, 0x4010_0000, 0x4010_E000, 0x4010_FFFC] {
            assert!(Memory::Bootloader.check(".x", addr).is_ok(), "{addr:#x}");
        }
        for addr in [0x3FFE_7FFC, 0x4000_0000, 0x4011_0000, 0x4020_2010] {
            let error = Memory::Bootloader.check(".x", addr).unwrap_err();
            assert!(matches!(error, ElfError::OutsideBootloaderMemory { .. }), "{addr:#x}");
        }
        assert!(matches!(Memory::Application.check(".x", 0x4010_E000), Err(ElfError::UnknownMemory { .. })));
    }

    #[test]
    fn a_bootloader_over_a_sector_says_by_how_much() {
        assert!(check_bootloader_fits(4096).is_ok());
        let error = check_bootloader_fits(4112).unwrap_err();
        assert_eq!(
            error.to_string(),
            "bootloader image is 4112 bytes, 16 bytes over the 4096 bytes of sector 0"
        );
    }

    #[test]
    fn too_large_names_slot_excess_and_share() {
        let slot = ota_agent::layout::DEFAULT_LAYOUT.slots[1];
        assert!(check_fits(u64::from(slot.capacity), &slot).is_ok());
        let error = check_fits(u64::from(slot.capacity) + 5000, &slot).unwrap_err();
        assert_eq!(
            error.to_string(),
            "image is 504712 bytes, too large for user2 by 5000 bytes (101.0% of capacity: 499712 bytes at 0x82000)"
        );
    }
}
