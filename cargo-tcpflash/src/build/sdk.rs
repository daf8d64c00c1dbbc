//! The NONOS SDK platform (`--platform nonos-sdk`): Rust firmware linked with Espressif's
//! SDK libraries, which give the ESP8266 WiFi. What this adds to the bare-metal build:
//!
//! - finding the user's SDK (`--sdk`, `ESP8266_NONOS_SDK`, `[package.metadata.tcpflash]
//!   sdk`) and checking it has what the link needs, naming what is missing;
//! - one relocatable object of the firmware and compiler_builtins in which every
//!   compiler_builtins symbol is local: its weak `__udivsi3` and friends would otherwise
//!   override the ROM's and libgcc's, and the SDK's IRAM code would call into flash while
//!   the flash is busy;
//! - a shim for what the SDK's libraries expect of an application besides `user_init`:
//!   `user_pre_init` with the map's partition table, `memchr`, `__ctype_ptr__`, `abort`;
//! - a linker script per slot with the SDK's regions, vectors and symbols, its ROM address
//!   table included from the user's SDK, the slot descriptor first in IROM at the map's
//!   address, the Rust code in IROM and `.iram0.text` (flash-writing code) in IRAM.
//!
//! Nothing of the SDK is part of this program: its files are read from the user's copy at
//! build time.

use std::path::{Path, PathBuf};

use miette::Diagnostic;
use ota_agent::descriptor;
use ota_agent::layout::sdk::{SYSTEM_PARAMETER_LEN, SdkMap};
use ota_agent::layout::{FlashLayout, SECTOR_SIZE, Slot};
use thiserror::Error;

/// Where to get the SDK, for the errors that need one.
pub const SDK_SOURCE: &str = "https://github.com/espressif/ESP8266_NONOS_SDK (v3.0.x)";
/// The environment variable naming the SDK folder.
pub const SDK_ENV: &str = "ESP8266_NONOS_SDK";
/// The SDK's table of ROM function addresses, included by the generated scripts.
pub const ROM_TABLE: &str = "ld/eagle.rom.addr.v6.ld";
/// The SDK libraries a firmware links, in the SDK's own order (libdriver holds the entry).
pub const LIBS: [&str; 10] =
    ["gcc", "hal", "phy", "pp", "net80211", "lwip", "wpa", "crypto", "main", "driver"];
/// The SDK's entry point (in libdriver from 3.0 on).
pub const ENTRY: &str = "call_user_start1";
/// The firmware's entry, called by the SDK once it is up.
pub const USER_INIT: &str = "user_init";
/// The rustc target spec's name for SDK builds: its own, so cargo keeps this build's
/// output apart from the bare-metal one (the cfg differs).
pub const TARGET_NAME: &str = "xtensa-esp8266-nonos-sdk";

/// Where the firmware code runs from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Platform {
    /// The firmware owns the chip: its `main` runs from the bootloader (rBoot).
    #[default]
    BareMetal,
    /// Espressif's NONOS SDK owns the chip (WiFi, espconn): the firmware's `user_init` runs
    /// from the SDK, which boots through the SDK's bootloader.
    NonosSdk,
}

impl Platform {
    pub const ALL: [Platform; 2] = [Platform::BareMetal, Platform::NonosSdk];

    /// The name on the command line, in `[package.metadata.tcpflash] platform`, and in
    /// `cfg(tcpflash_platform)`.
    pub fn name(self) -> &'static str {
        match self {
            Platform::BareMetal => "bare-metal",
            Platform::NonosSdk => "nonos-sdk",
        }
    }

    pub fn from_name(name: &str) -> Option<Platform> {
        Platform::ALL.into_iter().find(|platform| platform.name() == name)
    }

    pub fn names() -> String {
        Platform::ALL.map(Platform::name).join(", ")
    }

    /// rustc flags that announce the platform: `cfg(tcpflash_platform = "...")`, declared.
    pub fn rustc_flags(self) -> [String; 2] {
        let values = Platform::ALL.map(|platform| format!("\"{}\"", platform.name())).join(", ");
        [
            format!("--cfg=tcpflash_platform=\"{}\"", self.name()),
            format!("--check-cfg=cfg(tcpflash_platform, values({values}))"),
        ]
    }

    /// Whether `layout` is one this platform boots: SDK maps for the SDK, rBoot's otherwise.
    pub fn fits(self, layout: &FlashLayout) -> bool {
        (self == Platform::NonosSdk) == layout.sdk_map().is_some()
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What goes wrong with the SDK.
#[derive(Debug, Error, Diagnostic)]
pub enum SdkError {
    #[error("the nonos-sdk platform needs Espressif's ESP8266 NONOS SDK, and none was given")]
    #[diagnostic(
        code(tcpflash::sdk::none),
        help(
            "download it from {SDK_SOURCE}, then pass --sdk PATH, set {SDK_ENV}=PATH, or add `sdk = \"PATH\"` to [package.metadata.tcpflash]"
        )
    )]
    NotGiven,

    #[error("{path} is not an ESP8266 NONOS SDK: it has no {missing}")]
    #[diagnostic(
        code(tcpflash::sdk::not_an_sdk),
        help("give the SDK's top folder (the one holding lib/, ld/ and bin/), from {SDK_SOURCE}")
    )]
    NotAnSdk { path: PathBuf, missing: String },

    #[error("the SDK at {path} lacks {symbols}, which this firmware needs")]
    #[diagnostic(
        code(tcpflash::sdk::missing_symbol),
        help("use NONOS SDK 3.0.x ({SDK_SOURCE}); older SDKs lack the partition table API, for one")
    )]
    MissingSymbols { path: PathBuf, symbols: String },

    #[error(
        "the {layout} layout is not one of the SDK's flash maps, so the nonos-sdk platform cannot boot it"
    )]
    #[diagnostic(code(tcpflash::sdk::layout), help("use one of: {maps}"))]
    NotAnSdkLayout { layout: &'static str, maps: String },

    #[error("the {layout} layout is an SDK flash map: it boots through the SDK's bootloader, not rBoot")]
    #[diagnostic(
        code(tcpflash::sdk::platform),
        help("build it with --platform nonos-sdk, or pick an rBoot layout: 512KB, 1MB, 2MB, 4MB")
    )]
    SdkLayoutWithoutSdk { layout: &'static str },

    #[error("the nonos-sdk platform runs only on an ESP8266, not on the {board} board")]
    #[diagnostic(code(tcpflash::sdk::board), help("drop --board (or use --board esp8266)"))]
    Board { board: String },
}

/// The user's SDK folder, checked.
#[derive(Clone, Debug)]
pub struct Sdk {
    pub path: PathBuf,
}

impl Sdk {
    /// The folder from `--sdk` (or `ESP8266_NONOS_SDK`, which the command line reads), else
    /// `[package.metadata.tcpflash] sdk` (relative to the firmware's folder), checked.
    pub fn locate(
        given: Option<&Path>,
        metadata: Option<&Path>,
        package_dir: &Path,
    ) -> Result<Sdk, SdkError> {
        let path = match (given, metadata) {
            (Some(path), _) => path.to_path_buf(),
            (None, Some(path)) => package_dir.join(path),
            (None, None) => return Err(SdkError::NotGiven),
        };
        let sdk = Sdk { path: std::path::absolute(&path).unwrap_or(path) };
        sdk.check()?;
        Ok(sdk)
    }

    /// Every file the link reads must be there; the first missing one is named.
    pub fn check(&self) -> Result<(), SdkError> {
        let wanted =
            std::iter::once(ROM_TABLE.to_string()).chain(LIBS.iter().map(|lib| format!("lib/lib{lib}.a")));
        for file in wanted {
            if !self.path.join(&file).is_file() {
                let missing = if self.path.is_dir() { file } else { "folder there at all".to_string() };
                return Err(SdkError::NotAnSdk { path: self.path.clone(), missing });
            }
        }
        Ok(())
    }

    pub fn lib_dir(&self) -> PathBuf {
        self.path.join("lib")
    }

    pub fn rom_table(&self) -> PathBuf {
        self.path.join(ROM_TABLE)
    }

    /// The names the ROM table provides (`PROVIDE ( name = address );`).
    pub fn rom_symbols(&self) -> std::io::Result<Vec<String>> {
        Ok(rom_symbols(&std::fs::read_to_string(self.rom_table())?))
    }
}

/// The symbol names of a ROM address table's `PROVIDE` lines.
pub fn rom_symbols(table: &str) -> Vec<String> {
    table
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("PROVIDE")?.trim_start().strip_prefix('(')?;
            let name = rest.split('=').next()?.trim();
            (!name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

/// The symbols `ld` reported undefined, from its error output.
pub fn undefined_symbols(ld_stderr: &str) -> Vec<String> {
    let mut symbols: Vec<String> = ld_stderr
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once("undefined reference to `")?;
            Some(rest.split('\'').next()?.to_string())
        })
        .collect();
    symbols.sort();
    symbols.dedup();
    symbols
}

/// Checks that the platform and the layout belong together, and the board.
pub fn check_combination(
    platform: Platform,
    layout: &'static FlashLayout,
    board: &str,
) -> Result<(), SdkError> {
    if platform == Platform::NonosSdk && board != "esp8266" {
        return Err(SdkError::Board { board: board.to_string() });
    }
    match (platform, layout.sdk_map()) {
        (Platform::NonosSdk, None) => Err(SdkError::NotAnSdkLayout {
            layout: layout.name,
            maps: SdkMap::names().collect::<Vec<_>>().join(", "),
        }),
        (Platform::BareMetal, Some(_)) => Err(SdkError::SdkLayoutWithoutSdk { layout: layout.name }),
        _ => Ok(()),
    }
}

/// The script for `ld -r` that makes the firmware and compiler_builtins one object with the
/// SDK's section names: code in `.irom0.text` (flash), `.iram0.text` in `.text` (IRAM).
pub fn merge_script() -> &'static str {
    r#"/* Generated by cargo-tcpflash: the Rust objects as one, in the SDK's section names. */
SECTIONS
{
  .irom0.text : { *(.irom0.literal .irom0.text .irom0.text.* .irom.text .irom.text.* .literal .literal.* .text .text.*) }
  .text : { *(.iram0.literal .iram0.text .iram0.text.* .iram1.text .iram1.text.*) }
  .rodata : { *(.rodata .rodata.* .srodata .srodata.*) }
  .data : { *(.data .data.* .sdata .sdata.*) }
  .bss : { *(.bss .bss.* .sbss .sbss.* COMMON) }
  /DISCARD/ : { *(.llvmcmd .llvmbc .comment .note.GNU-stack) }
}
"#
}

/// The linker script for `slot` of an SDK map: the SDK's memory regions, exception vectors
/// and the symbols its libraries read, with the descriptor first in IROM.
pub fn linker_script(slot: &Slot, map: &SdkMap, rom_table: &Path) -> String {
    format!(
        r#"/* Generated by cargo-tcpflash for {slot_name} of {map_name} at flash offset {offset:#x}. */
MEMORY
{{
  dport0_0_seg : org = 0x3FF00000, len = 0x10
  dram0_0_seg : org = 0x3FFE8000, len = 0x14000
  iram1_0_seg : org = 0x40100000, len = 0x8000
  irom0_0_seg : org = {irom:#010x}, len = {irom_len:#x}
}}

ENTRY({entry})
EXTERN({entry})
EXTERN({user_init})
EXTERN(_DebugExceptionVector)
EXTERN(_DoubleExceptionVector)
EXTERN(_KernelExceptionVector)
EXTERN(_NMIExceptionVector)
EXTERN(_UserExceptionVector)
PROVIDE(_memmap_vecbase_reset = 0x40000000);

SECTIONS
{{
  .dport0.rodata : ALIGN(4) {{ *(.dport0.rodata) *(.dport.rodata) }} > dport0_0_seg
  .dport0.literal : ALIGN(4) {{ *(.dport0.literal) *(.dport.literal) }} > dport0_0_seg
  .dport0.data : ALIGN(4) {{ *(.dport0.data) *(.dport.data) }} > dport0_0_seg

  .data : ALIGN(4)
  {{
    _data_start = ABSOLUTE(.);
    *(.data .data.* .gnu.linkonce.d.* .data1 .sdata .sdata.* .gnu.linkonce.s.* .sdata2 .sdata2.* .gnu.linkonce.s2.* .jcr)
    _data_end = ABSOLUTE(.);
  }} > dram0_0_seg

  .rodata : ALIGN(4)
  {{
    _rodata_start = ABSOLUTE(.);
    *(.sdk.version)
    *(.rodata .rodata.* .gnu.linkonce.r.* .rodata1)
    *(.xt_except_table .gcc_except_table .gnu.linkonce.e.* .gnu.version_r .eh_frame)
    . = ALIGN(4);
    _bss_table_start = ABSOLUTE(.);
    LONG(_bss_start)
    LONG(_bss_end)
    _bss_table_end = ABSOLUTE(.);
    _rodata_end = ABSOLUTE(.);
  }} > dram0_0_seg

  .bss ALIGN(8) (NOLOAD) : ALIGN(4)
  {{
    . = ALIGN(8);
    _bss_start = ABSOLUTE(.);
    *(.dynsbss .sbss .sbss.* .gnu.linkonce.sb.* .scommon .sbss2 .sbss2.* .gnu.linkonce.sb2.* .dynbss .bss .bss.* .gnu.linkonce.b.* COMMON)
    . = ALIGN(8);
    _bss_end = ABSOLUTE(.);
    _heap_start = ABSOLUTE(.);
  }} > dram0_0_seg

  /* Flash: the slot descriptor first (the agent checks it there), the SDK libraries the
     SDK runs from flash, then everything marked for flash, the Rust code included. */
  .irom0.text : ALIGN(4)
  {{
    _irom0_text_start = ABSOLUTE(.);
    KEEP(*({descriptor}))
    *libat.a:(.literal.* .text.*)
    *libcrypto.a:(.literal.* .text.*)
    *libespnow.a:(.literal.* .text.*)
    *libjson.a:(.literal.* .text.*)
    *liblwip.a:(.literal.* .text.*)
    *libnet80211.a:(.literal.* .text.*)
    *libsmartconfig.a:(.literal.* .text.*)
    *libssl.a:(.literal.* .text.*)
    *libupgrade.a:(.literal.* .text.*)
    *libwpa.a:(.literal.* .text.*)
    *libwpa2.a:(.literal.* .text.*)
    *libwps.a:(.literal.* .text.*)
    *libmbedtls.a:(.literal.* .text.*)
    *libm.a:(.literal .text .literal.* .text.*)
    *(.irom0.literal .irom.literal .irom.text.literal .irom0.text .irom0.text.* .irom.text .irom.text.*)
    _irom0_text_end = ABSOLUTE(.);
  }} > irom0_0_seg

  /* IRAM: the exception vectors at their fixed offsets from VECBASE (0x40100000), then
     the code that must run with the flash cache off (the SDK's, and `.iram0.text`). */
  .text : ALIGN(4)
  {{
    _stext = .;
    _text_start = ABSOLUTE(.);
    *(.UserEnter.text)
    . = ALIGN(16);
    *(.DebugExceptionVector.text)
    . = ALIGN(16);
    *(.NMIExceptionVector.text)
    . = ALIGN(16);
    *(.KernelExceptionVector.text)
    LONG(0) LONG(0) LONG(0) LONG(0)
    . = ALIGN(16);
    *(.UserExceptionVector.text)
    LONG(0) LONG(0) LONG(0) LONG(0)
    . = ALIGN(16);
    *(.DoubleExceptionVector.text)
    LONG(0) LONG(0) LONG(0) LONG(0)
    . = ALIGN(16);
    *(.entry.text)
    *(.init.literal)
    *(.init)
    *(.iram0.literal .iram0.text .iram0.text.* .iram1.text .iram1.text.*)
    *(.literal .text .literal.* .text.* .stub .gnu.warning .gnu.linkonce.literal.* .gnu.linkonce.t.*.literal .gnu.linkonce.t.*)
    *(.fini.literal)
    *(.fini)
    *(.gnu.version)
    _text_end = ABSOLUTE(.);
    _etext = .;
  }} > iram1_0_seg

  .lit4 : ALIGN(4)
  {{
    _lit4_start = ABSOLUTE(.);
    *(*.lit4)
    *(.lit4.* .gnu.linkonce.lit4.*)
    _lit4_end = ABSOLUTE(.);
  }} > iram1_0_seg

  /DISCARD/ : {{ *(.llvmcmd .llvmbc .comment .note.GNU-stack) }}
}}

/* The ROM's functions, from the SDK this firmware is built with. */
INCLUDE "{rom_table}"
"#,
        slot_name = slot.id,
        map_name = map.layout.name,
        offset = slot.offset,
        irom = slot.irom_link_addr(),
        irom_len = slot.irom_capacity(),
        entry = ENTRY,
        user_init = USER_INIT,
        descriptor = descriptor::SECTION,
        rom_table = rom_table.display(),
    )
}

/// `SYSTEM_PARTITION_*` numbers of the SDK's `partition_type_t`.
mod partition {
    pub const BOOTLOADER: u32 = 1;
    pub const OTA_1: u32 = 2;
    pub const OTA_2: u32 = 3;
    pub const RF_CAL: u32 = 4;
    pub const PHY_DATA: u32 = 5;
    pub const SYSTEM_PARAMETER: u32 = 6;
}

/// The partition table `user_pre_init` registers for `map`: (type, address, size).
pub fn partition_table(map: &SdkMap) -> [(u32, u32, u32); 6] {
    let [user1, user2] = map.layout.slots;
    [
        (partition::BOOTLOADER, 0, SECTOR_SIZE),
        (partition::OTA_1, user1.offset, user1.capacity),
        (partition::OTA_2, user2.offset, user2.capacity),
        (partition::RF_CAL, map.rf_cal(), SECTOR_SIZE),
        (partition::PHY_DATA, map.phy_data(), SECTOR_SIZE),
        (partition::SYSTEM_PARAMETER, map.system_parameter(), SYSTEM_PARAMETER_LEN),
    ]
}

/// newlib's ctype classes (`_U`, `_L`, `_N`, `_S`, `_P`, `_C`, `_X`, `_B`).
const fn ctype(c: u8) -> u8 {
    const U: u8 = 0o1;
    const L: u8 = 0o2;
    const N: u8 = 0o4;
    const S: u8 = 0o10;
    const P: u8 = 0o20;
    const C: u8 = 0o40;
    const X: u8 = 0o100;
    const B: u8 = 0o200;
    match c {
        b'\t'..=b'\r' => C | S,
        0..=31 | 127 => C,
        b' ' => S | B,
        b'0'..=b'9' => N,
        b'A'..=b'F' => U | X,
        b'G'..=b'Z' => U,
        b'a'..=b'f' => L | X,
        b'g'..=b'z' => L,
        33..=126 => P,
        _ => 0,
    }
}

/// What the SDK libraries expect of an application besides `user_init`, in assembly:
/// `user_pre_init` (registers the map's partition table; resets if the SDK refuses it),
/// `memchr` and newlib's `__ctype_ptr__` (the libraries' only libc needs beyond the ROM's),
/// and `abort` (LLVM's trap: reset through the ROM, so the board comes back and still takes
/// the next push).
pub fn shim_asm(map: &SdkMap, abort_literals: &str, abort_code: &str) -> String {
    let table = partition_table(map);
    let entries: String =
        table.iter().map(|(kind, addr, size)| format!("    .word {kind}, {addr:#x}, {size:#x}\n")).collect();
    // Index 0 is EOF, then the 256 byte values (newlib indexes `__ctype_ptr__[1 + c]`).
    let classes: Vec<String> =
        std::iter::once(0).chain((0..=255u8).map(ctype)).map(|c| format!("{c:#04x}")).collect();
    let ctype_rows: String =
        classes.chunks(16).map(|row| format!("    .byte {}\n", row.join(", "))).collect();
    format!(
        r#"/* Generated by cargo-tcpflash: what the NONOS SDK's libraries need of the application. */
    .section .rodata.tcpflash_partitions, "a"
    .p2align 2
tcpflash_partition_table:
{entries}
    .section .irom0.text, "ax"
    .literal_position
    .literal .Lpartitions, tcpflash_partition_table
    .literal .Lregister, system_partition_table_regist
    .literal .Labort, abort
    .global user_pre_init
    .type user_pre_init, @function
    .p2align 2
user_pre_init:
    addi a1, a1, -16
    s32i a0, a1, 0
    l32r a2, .Lpartitions
    movi a3, {count}
    movi a4, {size_map}
    l32r a0, .Lregister
    callx0 a0
    bnez a2, 1f
    l32r a0, .Labort
    callx0 a0
1:  l32i a0, a1, 0
    addi a1, a1, 16
    ret
    .size user_pre_init, . - user_pre_init

    /* In IRAM: the SDK may search memory with the flash cache off. */
    .section .iram0.text, "ax"
    .global memchr
    .type memchr, @function
    .p2align 2
memchr:
    extui a3, a3, 0, 8
1:  beqz a4, 3f
    l8ui a5, a2, 0
    beq a5, a3, 2f
    addi a2, a2, 1
    addi a4, a4, -1
    j 1b
3:  movi a2, 0
2:  ret
    .size memchr, . - memchr

    .literal_position
{abort_literals}    .weak abort
    .type abort, @function
    .p2align 2
abort:
{abort_code}4:  j 4b
    .size abort, . - abort

    .section .rodata.tcpflash_ctype, "a"
tcpflash_ctype:
{ctype_rows}
    .section .data.tcpflash_ctype_ptr, "aw"
    .global __ctype_ptr__
    .type __ctype_ptr__, @object
    .p2align 2
__ctype_ptr__:
    .word tcpflash_ctype
    .size __ctype_ptr__, 4

    .section .note.GNU-stack, "", @progbits
"#,
        count = table.len(),
        size_map = map.size_map,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(name: &str) -> &'static SdkMap {
        SdkMap::by_name(name).unwrap()
    }

    #[test]
    fn platform_names_flags_and_layouts() {
        assert_eq!(Platform::from_name("nonos-sdk"), Some(Platform::NonosSdk));
        assert_eq!(Platform::from_name("sdk"), None);
        assert_eq!(Platform::names(), "bare-metal, nonos-sdk");
        assert_eq!(Platform::NonosSdk.rustc_flags()[0], "--cfg=tcpflash_platform=\"nonos-sdk\"");
        assert!(Platform::NonosSdk.fits(&map("sdk-1MB").layout));
        assert!(!Platform::NonosSdk.fits(ota_agent::layout::DEFAULT_LAYOUT));
        assert!(Platform::BareMetal.fits(ota_agent::layout::DEFAULT_LAYOUT));
    }

    #[test]
    fn layouts_and_platforms_that_do_not_belong_together_are_refused_both_ways() {
        let error =
            check_combination(Platform::NonosSdk, ota_agent::layout::DEFAULT_LAYOUT, "esp8266").unwrap_err();
        assert_eq!(
            error.to_string(),
            "the 1MB layout is not one of the SDK's flash maps, so the nonos-sdk platform cannot boot it"
        );
        assert_eq!(
            error.help().unwrap().to_string(),
            "use one of: sdk-1MB, sdk-2MB, sdk-4MB, sdk-2MB-c1, sdk-4MB-c1"
        );
        let error = check_combination(Platform::BareMetal, &map("sdk-2MB").layout, "esp8266").unwrap_err();
        assert!(error.to_string().starts_with("the sdk-2MB layout is an SDK flash map"), "{error}");
        assert!(error.help().unwrap().to_string().contains("--platform nonos-sdk"));
        let error = check_combination(Platform::NonosSdk, &map("sdk-2MB").layout, "qemu").unwrap_err();
        assert_eq!(
            error.to_string(),
            "the nonos-sdk platform runs only on an ESP8266, not on the qemu board"
        );
        check_combination(Platform::NonosSdk, &map("sdk-4MB-c1").layout, "esp8266").unwrap();
    }

    #[test]
    fn no_sdk_names_where_to_get_one_and_a_wrong_folder_names_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let error = Sdk::locate(None, None, dir.path()).unwrap_err();
        assert!(error.help().unwrap().to_string().contains("https://github.com/espressif/ESP8266_NONOS_SDK"));
        assert!(error.help().unwrap().to_string().contains("ESP8266_NONOS_SDK=PATH"));
        let error = Sdk::locate(Some(dir.path()), None, dir.path()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{} is not an ESP8266 NONOS SDK: it has no ld/eagle.rom.addr.v6.ld",
                dir.path().display()
            )
        );
        std::fs::create_dir_all(dir.path().join("ld")).unwrap();
        std::fs::write(dir.path().join(ROM_TABLE), "PROVIDE ( memcpy = 0x4000df48 );\n").unwrap();
        std::fs::create_dir_all(dir.path().join("lib")).unwrap();
        std::fs::write(dir.path().join("lib/libgcc.a"), "!<arch>\n").unwrap();
        let error = Sdk::locate(None, Some(Path::new(".")), dir.path()).unwrap_err();
        assert!(error.to_string().ends_with("it has no lib/libhal.a"), "{error}");
        let error = Sdk::locate(Some(&dir.path().join("nowhere")), None, dir.path()).unwrap_err();
        assert!(error.to_string().ends_with("it has no folder there at all"), "{error}");
    }

    #[test]
    fn rom_symbols_and_undefined_references_are_read() {
        let table = "/* ROM */\nPROVIDE ( Cache_Read_Enable = 0x40004678 );\nPROVIDE(memcpy = 0x4000df48);\n  PROVIDE ( __udivsi3 = 0x4000e56c );\n";
        assert_eq!(rom_symbols(table), ["Cache_Read_Enable", "memcpy", "__udivsi3"]);
        let stderr = "ld: user.o: in function `x':\n(.irom0.text+0x1c): undefined reference to `espconn_recv_hold'\n(.irom0.text+0x30): undefined reference to `system_get_flash_size_map'\n(.irom0.text+0x40): undefined reference to `espconn_recv_hold'\n";
        assert_eq!(undefined_symbols(stderr), ["espconn_recv_hold", "system_get_flash_size_map"]);
    }

    #[test]
    fn scripts_put_irom_at_the_maps_address_and_the_descriptor_first() {
        let map = map("sdk-1MB");
        let script = linker_script(&map.layout.slots[1], map, Path::new("/sdk/ld/eagle.rom.addr.v6.ld"));
        assert!(script.contains("irom0_0_seg : org = 0x40281010, len = 0x7eff0"), "{script}");
        let irom = &script[script.find(".irom0.text : ALIGN(4)").unwrap()..];
        let first = irom.lines().nth(3).unwrap().trim();
        assert_eq!(first, "KEEP(*(.irom0.descriptor))");
        assert!(script.contains("INCLUDE \"/sdk/ld/eagle.rom.addr.v6.ld\""));
        let c1 = self::map("sdk-4MB-c1");
        let script = linker_script(&c1.layout.slots[1], c1, Path::new("rom.ld"));
        assert!(script.contains("irom0_0_seg : org = 0x40201010"), "{script}");
    }

    #[test]
    fn the_partition_table_matches_the_map() {
        assert_eq!(
            partition_table(map("sdk-1MB")),
            [
                (1, 0, 0x1000),
                (2, 0x1000, 0x7F000),
                (3, 0x81000, 0x7A000),
                (4, 0xFB000, 0x1000),
                (5, 0xFC000, 0x1000),
                (6, 0xFD000, 0x3000)
            ]
        );
        let asm = shim_asm(map("sdk-2MB-c1"), "", "");
        assert!(asm.contains("    .word 3, 0x101000, 0xfa000\n"), "{asm}");
        assert!(asm.contains("movi a4, 5\n"));
    }

    #[test]
    fn ctype_classes_are_newlibs() {
        assert_eq!(ctype(b'a'), 0o102);
        assert_eq!(ctype(b'Z'), 0o1);
        assert_eq!(ctype(b'7'), 0o4);
        assert_eq!(ctype(b' '), 0o210);
        assert_eq!(ctype(b'\n'), 0o50);
        assert_eq!(ctype(b'~'), 0o20);
        assert_eq!(ctype(0x80), 0);
    }
}
