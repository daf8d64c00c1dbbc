//! `cargo tcpflash image` against esptool: C fixtures compiled here with xtensa-lx106-elf-gcc,
//! converted by both, compared byte for byte; the error cases; `--info` on good and damaged
//! images through the real binary.
//!
//! Needs `xtensa-lx106-elf-gcc` and `esptool` on PATH; without them the tests fail, naming
//! the install command.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{GCC, GCC_INSTALL, esptool_image, esptool_v1_image, flat_stderr, require};

use cargo_tcpflash::elf2image::{self, ElfError};
use cargo_tcpflash::image_cmd::flash_params;
use ota_agent::image::{self, MemoryKind};

/// Flash parameter combinations every fixture is converted with.
const PARAMS: [(&str, &str, &str); 4] =
    [("qio", "1MB", "40m"), ("dio", "4MB-c1", "80m"), ("dout", "512KB", "26m"), ("qout", "16MB", "20m")];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Compiles `source` (a path, or C text written to a file first) with `script`.
fn compile(dir: &Path, source: &Path, script: &Path, name: &str) -> PathBuf {
    require(GCC, GCC_INSTALL);
    let elf = dir.join(format!("{name}.elf"));
    let output = Command::new(GCC)
        .args(["-Os", "-nostdlib", "-mtext-section-literals", "-T"])
        .arg(script)
        .arg("-o")
        .arg(&elf)
        .arg(source)
        .output()
        .unwrap();
    assert!(output.status.success(), "{GCC} failed on {name}:\n{}", String::from_utf8_lossy(&output.stderr));
    elf
}

fn compile_fixture(dir: &Path, c: &str, ld: &str) -> PathBuf {
    compile(dir, &fixtures().join(format!("{c}.c")), &fixtures().join(format!("{ld}.ld")), ld)
}

fn our_image(elf: &Path, (mode, size, freq): (&str, &str, &str)) -> Result<Vec<u8>, ElfError> {
    elf2image::elf_to_image(&std::fs::read(elf).unwrap(), flash_params(mode, size, freq).unwrap())
}

/// Both converters on every parameter set: equal bytes. Returns the first image.
fn assert_same_as_esptool(elf: &Path) -> Vec<u8> {
    let mut first = None;
    for params in PARAMS {
        let theirs =
            esptool_image(elf, params).unwrap_or_else(|error| panic!("esptool failed on {elf:?}: {error}"));
        let ours =
            our_image(elf, params).unwrap_or_else(|error| panic!("elf2image failed on {elf:?}: {error}"));
        assert_eq!(ours.len(), theirs.len(), "{elf:?} {params:?}: lengths differ");
        if let Some(at) = ours.iter().zip(&theirs).position(|(a, b)| a != b) {
            panic!(
                "{elf:?} {params:?}: first difference at byte {at:#x}: ours {:#04x}, esptool {:#04x}",
                ours[at], theirs[at]
            );
        }
        first.get_or_insert(ours);
    }
    first.unwrap()
}

/// The memory kind of each RAM segment, as our inspector reads the image.
fn segment_kinds(image: &[u8]) -> Vec<MemoryKind> {
    let mut flash = ota_agent::flash::RamNor::from_storage(image.to_vec());
    let info = image::inspect(&mut flash, 0, image.len() as u32, &mut [0; 64]).unwrap();
    info.segments().iter().map(|&(addr, _)| MemoryKind::of(addr).unwrap()).collect()
}

#[test]
fn merged_sections_match_esptool() {
    let dir = tempfile::tempdir().unwrap();
    let elf = compile_fixture(dir.path(), "merge", "merge");
    let image = assert_same_as_esptool(&elf);
    // .text + .iram1.text and .data + .rodata each became one segment; .bss is not there.
    assert_eq!(segment_kinds(&image), [MemoryKind::Iram, MemoryKind::Dram]);
}

#[test]
fn scattered_sections_match_esptool() {
    let dir = tempfile::tempdir().unwrap();
    let elf = compile_fixture(dir.path(), "scattered", "scattered");
    let image = assert_same_as_esptool(&elf);
    // odd1 and odd2 stay apart (padding overlaps), .rodata + .init_array merge; three IRAM
    // pieces with gaps; IROM (descriptor, code, table) is one segment.
    use MemoryKind::{Dram, Iram};
    assert_eq!(segment_kinds(&image), [Dram, Dram, Dram, Iram, Iram, Iram]);
    let mut flash = ota_agent::flash::RamNor::from_storage(image.clone());
    let info = image::inspect(&mut flash, 0, image.len() as u32, &mut [0; 64]).unwrap();
    assert_eq!(&info.segments()[..3], &[(0x3FFE_8000, 4), (0x3FFE_8003, 8), (0x3FFE_8010, 12)]);
    assert_eq!(info.descriptor.unwrap().link_addr, 0x4028_2010);
}

/// C with `ram_sections` functions, each in its own IRAM section, 32 bytes apart (so none
/// merge), plus one IROM function.
fn many_segments(dir: &Path, ram_sections: usize) -> PathBuf {
    let mut c =
        String::from("__attribute__((section(\".irom0.text\"))) int irom_fn(int x) { return x + 1; }\n");
    let mut ld = String::from(
        "MEMORY { iram : org = 0x40100000, len = 0x8000\n irom : org = 0x40202010, len = 0x7E000 }\n\
         ENTRY(f0)\nSECTIONS {\n .irom0.text : { *(.irom0.literal .irom0.text) } > irom\n",
    );
    for i in 0..ram_sections {
        c += &format!("__attribute__((section(\".iram.f{i}\"))) int f{i}(int x) {{ return x * {i} + 3; }}\n");
        ld += &format!(" .iram.f{i} {:#x} : {{ *(.iram.f{i}) }} > iram\n", 0x4010_0000 + 32 * i);
    }
    ld += "}\n";
    let name = format!("many{ram_sections}");
    let (source, script) = (dir.join(format!("{name}.c")), dir.join(format!("{name}.ld")));
    std::fs::write(&source, c).unwrap();
    std::fs::write(&script, ld).unwrap();
    compile(dir, &source, &script, &name)
}

#[test]
fn sixteen_segments_are_the_limit_irom_included() {
    let dir = tempfile::tempdir().unwrap();
    let fifteen = many_segments(dir.path(), 15);
    let image = assert_same_as_esptool(&fifteen);
    assert_eq!(segment_kinds(&image).len(), 15);

    let sixteen = many_segments(dir.path(), 16);
    let theirs = esptool_image(&sixteen, PARAMS[0]).unwrap_err();
    assert!(theirs.contains("Invalid segment count 17 (max 16)"), "esptool said: {theirs}");
    let error = our_image(&sixteen, PARAMS[0]).unwrap_err();
    assert!(matches!(error, ElfError::TooManySegments { count: 17, .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.starts_with("17 segments after merging adjacent sections (`.irom0.text` at 0x40202010, `.iram.f0` at 0x40100000,"),
        "{message}"
    );
    assert!(message.ends_with("`.iram.f15` at 0x401001e0); at most 16 allowed, IROM included"), "{message}");
}

#[test]
fn elf_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let params = flash_params("qio", "1MB", "40m").unwrap();

    // This test program: a 64-bit x86-64 ELF.
    let host = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let error = elf2image::elf_to_image(&host, params).unwrap_err();
    assert_eq!(error.to_string(), "this is a 64-bit ELF for x86-64; the ESP8266 runs 32-bit Xtensa code");

    // A 32-bit ELF for another machine: the fixture with e_machine changed.
    let mut foreign = std::fs::read(compile_fixture(dir.path(), "merge", "merge")).unwrap();
    foreign[18..20].copy_from_slice(&0x28u16.to_le_bytes());
    let error = elf2image::elf_to_image(&foreign, params).unwrap_err();
    assert_eq!(error.to_string(), "this ELF is for ARM (e_machine 0x0028), not Xtensa");
    foreign[18..20].copy_from_slice(&0x1234u16.to_le_bytes());
    let error = elf2image::elf_to_image(&foreign, params).unwrap_err();
    assert_eq!(error.to_string(), "this ELF is for machine 0x1234 (e_machine 0x1234), not Xtensa");

    let error = elf2image::elf_to_image(b"\xEA\x04\x00\x20not an elf at all", params).unwrap_err();
    assert_eq!(error.to_string(), "not an ELF file: Did not find ELF magic number");
    let error = elf2image::elf_to_image(b"\x7fELF", params).unwrap_err();
    assert!(matches!(error, ElfError::NotElf { .. }), "{error:?}");

    let no_irom = compile_fixture(dir.path(), "merge", "no_irom");
    let error = our_image(&no_irom, PARAMS[0]).unwrap_err();
    assert_eq!(error.to_string(), "no IROM section: nothing is linked in 0x40200000..0x40300000");

    let two_irom = compile_fixture(dir.path(), "scattered", "two_irom");
    assert!(
        esptool_image(&two_irom, PARAMS[0]).unwrap_err().contains("Found 2 segments that could be irom0")
    );
    let error = our_image(&two_irom, PARAMS[0]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "2 IROM segments (`.irom0.text` at 0x40282010, `.irom0.table` at 0x40283000); an image holds exactly one"
    );

    let rtc = compile_fixture(dir.path(), "merge", "rtc");
    let error = our_image(&rtc, PARAMS[0]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "section `.rodata` at 0x60001200 lies in no ESP8266 memory (DRAM, IRAM or IROM)"
    );
}

#[test]
fn damaged_elfs_give_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let elf = std::fs::read(compile_fixture(dir.path(), "scattered", "scattered")).unwrap();
    let params = flash_params("qio", "1MB", "40m").unwrap();
    let good = elf2image::elf_to_image(&elf, params).unwrap();
    let mut changed = 0;
    for at in 0..elf.len() {
        for value in [0x00, 0x01, 0x7F, 0x80, 0xFF] {
            let mut damaged = elf.clone();
            damaged[at] = value;
            // Also at an odd address, where xmas-elf would assert on alignment.
            let mut shifted = vec![0u8];
            shifted.extend_from_slice(&damaged);
            for bytes in [&damaged[..], &shifted[1..]] {
                if elf2image::elf_to_image(bytes, params).map_or(true, |image| image != good) {
                    changed += 1;
                }
            }
        }
        let _ = elf2image::elf_to_image(&elf[..at], params);
    }
    // The damage was noticed often enough to show it reached the parser.
    assert!(changed > 1000, "{changed}");
}

fn run_cli(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cargo-tcpflash"))
        .arg("tcpflash")
        .arg("image")
        .args(args)
        .env("NO_COLOR", "1")
        .env("COLUMNS", "400")
        .output()
        .unwrap()
}

#[test]
fn cli_converts_and_explains_errors() {
    let dir = tempfile::tempdir().unwrap();
    let elf = compile_fixture(dir.path(), "scattered", "scattered");
    let out = dir.path().join("user2.bin");
    let output = run_cli(&[
        elf.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--flash-mode".as_ref(),
        "dio".as_ref(),
        "--flash-size".as_ref(),
        "4MB-c1".as_ref(),
        "--flash-freq".as_ref(),
        "80m".as_ref(),
    ]);
    assert!(output.status.success(), "{}", flat_stderr(&output));
    assert_eq!(std::fs::read(&out).unwrap(), esptool_image(&elf, ("dio", "4MB-c1", "80m")).unwrap());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with(&format!("wrote {} (", out.display())), "{stdout}");

    let host = std::env::current_exe().unwrap();
    let output = run_cli(&[host.as_os_str(), "-o".as_ref(), dir.path().join("x.bin").as_os_str()]);
    assert!(!output.status.success());
    let stderr = flat_stderr(&output);
    assert!(stderr.contains("this is a 64-bit ELF for x86-64"), "{stderr}");
    assert!(
        stderr.contains("pass the firmware linked by xtensa-lx106-elf-ld, not a host program"),
        "{stderr}"
    );
    assert!(!dir.path().join("x.bin").exists());

    let output =
        run_cli(&[elf.as_os_str(), "-o".as_ref(), out.as_os_str(), "--flash-size".as_ref(), "3MB".as_ref()]);
    assert!(!output.status.success());
    let stderr = flat_stderr(&output);
    assert!(stderr.contains("unknown --flash-size `3MB`"), "{stderr}");
    assert!(
        stderr.contains("use one of: 256KB, 512KB, 1MB, 2MB, 4MB, 2MB-c1, 4MB-c1, 8MB, 16MB"),
        "{stderr}"
    );
}

fn info(path: &Path) -> Output {
    run_cli(&["--info".as_ref(), path.as_os_str()])
}

#[test]
fn info_describes_a_valid_image() {
    let dir = tempfile::tempdir().unwrap();
    let elf = compile_fixture(dir.path(), "scattered", "scattered");
    let image = esptool_image(&elf, ("dio", "4MB-c1", "80m")).unwrap();
    let path = dir.path().join("user2.bin");
    std::fs::write(&path, &image).unwrap();
    let output = info(&path);
    assert!(output.status.success(), "{}", flat_stderr(&output));
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();

    let n = image.len();
    let checksum = image[n - 5];
    let crc = u32::from_le_bytes(image[n - 4..].try_into().unwrap());
    let entry = u32::from_le_bytes(image[4..8].try_into().unwrap());
    assert_eq!(lines[0], format!("v2 image, {n} bytes"));
    assert_eq!(lines[1], "flash mode:  dio (0x02)");
    assert_eq!(lines[2], "flash size:  4MB-c1 (0x6)");
    assert_eq!(lines[3], "flash freq:  80m (0xf)");
    assert_eq!(lines[4], format!("entry:       {entry:#010x}"));
    assert_eq!(lines[5], "segments:    7 (IROM + 6 RAM)");
    assert_eq!(lines[6], "  IROM       96 bytes at image offset 0x10");
    assert_eq!(lines[7], "  DRAM        4 bytes at 0x3ffe8000");
    assert_eq!(lines[8], "  DRAM        8 bytes at 0x3ffe8003");
    assert_eq!(lines[9], "  DRAM       12 bytes at 0x3ffe8010");
    assert!(lines[10].starts_with("  IRAM ") && lines[10].ends_with(" bytes at 0x40100000"), "{}", lines[10]);
    assert!(lines[11].starts_with("  IRAM ") && lines[12].starts_with("  IRAM "));
    assert_eq!(lines[13], format!("checksum:    {checksum:#04x} valid"));
    assert_eq!(lines[14], format!("CRC:         {crc:#010x} valid"));
    assert_eq!(
        &lines[15..],
        [
            "descriptor:",
            "  name:      fixture-blinky",
            "  version:   0.3.1",
            "  build id:  01020304050607ab",
            "  linked at: 0x40282010 (user2 of 1MB)",
        ]
    );

    let plain = dir.path().join("merge.bin");
    std::fs::write(&plain, esptool_image(&compile_fixture(dir.path(), "merge", "merge"), PARAMS[0]).unwrap())
        .unwrap();
    let stdout = String::from_utf8(info(&plain).stdout).unwrap();
    assert!(
        stdout.ends_with("descriptor:  none (not built by tcpflash: no slot check possible)\n"),
        "{stdout}"
    );
}

/// An image in the form the SDK's `gen_appbin.py` writes (first header `00`, app number):
/// read with its flash parameters from the second header, and without a descriptor the
/// SDK map and app number say where its IROM was linked.
#[test]
fn info_describes_an_image_written_by_gen_appbin() {
    let dir = tempfile::tempdir().unwrap();
    let elf = compile_fixture(dir.path(), "merge", "merge");
    let esptool = esptool_image(&elf, ("dio", "1MB", "40m")).unwrap();
    let path = dir.path().join("user2.bin");
    std::fs::write(&path, ota_agent::image::samples::gen_appbin_form(&esptool, 2)).unwrap();
    let output = info(&path);
    assert!(output.status.success(), "{}", flat_stderr(&output));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[1], "written by:  the SDK's gen_appbin.py, app 2 (first header bytes 2..3: 00 02)");
    assert_eq!(lines[2], "flash mode:  dio (0x02)");
    assert_eq!(lines[3], "flash size:  1MB (0x2)");
    assert!(lines.iter().any(|line| line.starts_with("CRC:") && line.ends_with(" valid")), "{stdout}");
    assert_eq!(
        *lines.last().unwrap(),
        "descriptor:  none (an SDK image: its map and app number put IROM at 0x40281010, user2 of sdk-1MB)"
    );
}

#[test]
fn info_reports_damage() {
    let dir = tempfile::tempdir().unwrap();
    let elf = compile_fixture(dir.path(), "scattered", "scattered");
    let image = esptool_image(&elf, PARAMS[0]).unwrap();
    let n = image.len();
    let (stored_checksum, stored_crc) =
        (image[n - 5], u32::from_le_bytes(image[n - 4..].try_into().unwrap()));
    let computed_crc = |bytes: &[u8]| image::crc_trailer(ota_agent::crc::crc32(&bytes[..n - 4]));

    // A RAM byte: both checks fail. The first DRAM segment's data starts at 16 + 96 + 8 + 8.
    let mut ram_hit = image.clone();
    ram_hit[128] ^= 0x10;
    let path = dir.path().join("ram.bin");
    std::fs::write(&path, &ram_hit).unwrap();
    let output = info(&path);
    assert!(!output.status.success());
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    let expected_checksum = format!(
        "checksum:    {stored_checksum:#04x} INVALID (stored {stored_checksum:#04x}, computed {:#04x})",
        stored_checksum ^ 0x10
    );
    assert!(stdout.contains(&expected_checksum), "{stdout}");
    let expected_crc = format!(
        "CRC:         {stored_crc:#010x} INVALID (stored {stored_crc:#010x}, computed {:#010x})",
        computed_crc(&ram_hit)
    );
    assert!(stdout.contains(&expected_crc), "{stdout}");
    assert!(stdout.contains("  name:      fixture-blinky"), "{stdout}");
    let stderr = flat_stderr(&output);
    assert!(
        stderr.contains(&format!("ram.bin is corrupt: checksum mismatch (stored {stored_checksum:#04x}")),
        "{stderr}"
    );

    // An IROM byte (code after the descriptor): rBoot would not notice, the CRC does.
    let mut irom_hit = image.clone();
    irom_hit[16 + 70] ^= 0x01;
    std::fs::write(&path, &irom_hit).unwrap();
    let output = info(&path);
    assert!(!output.status.success());
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    assert!(stdout.contains(&format!("checksum:    {stored_checksum:#04x} valid")), "{stdout}");
    assert!(stdout.contains(&format!("computed {:#010x})", computed_crc(&irom_hit))), "{stdout}");
    assert!(flat_stderr(&output).contains("is corrupt: CRC mismatch"));

    // Cut short: the structure itself is broken.
    std::fs::write(&path, &image[..n - 10]).unwrap();
    let output = info(&path);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = flat_stderr(&output);
    assert!(
        stderr.contains("is not a valid v2 image: image truncated: its headers need at least"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("bytes, it has {}", n - 10)), "{stderr}");
}

// ---- bootloaders: v1 images ---------------------------------------------------------------

/// A bootloader-shaped program in C, linked with the script `cargo tcpflash build` generates
/// for `kind = "bootloader"`: code in the cache RAM, constants and variables at DRAM's top.
fn bootloader_fixture(dir: &Path, extra_c: &str) -> PathBuf {
    let source = dir.join("boot.c");
    std::fs::write(
        &source,
        format!(
            "int counter = 5;\nchar odd[3] = {{1, 2, 3}};\nconst char banner[] = \"boot!\";\nint zeroed[8];\n\
             {extra_c}\nvoid _start(void) {{ counter += banner[1] + odd[2] + zeroed[3]; }}\n"
        ),
    )
    .unwrap();
    let script = dir.join("bootloader.ld");
    std::fs::write(&script, cargo_tcpflash::build::link::bootloader_linker_script()).unwrap();
    compile(dir, &source, &script, "boot")
}

#[test]
fn bootloader_images_match_esptool_version_1() {
    let dir = tempfile::tempdir().unwrap();
    let elf = bootloader_fixture(dir.path(), "");
    for params in PARAMS {
        let theirs = esptool_v1_image(&elf, params).unwrap_or_else(|error| panic!("esptool: {error}"));
        let ours = elf2image::elf_to_bootloader_image(&std::fs::read(&elf).unwrap(), {
            let (mode, size, freq) = params;
            flash_params(mode, size, freq).unwrap()
        })
        .unwrap();
        assert!(ours == theirs, "{params:?}: ours {ours:02x?}\nesptool {theirs:02x?}");
        assert_eq!(ours[0], 0xE9);
        assert_eq!(ours.len() % 16, 0, "checksum at 15 mod 16 ends the image");
    }
    // What the image holds: code in the cache RAM, data at the top of DRAM, no IROM.
    let loaded = elf2image::load_bootloader(&std::fs::read(&elf).unwrap()).unwrap();
    let addrs: Vec<u32> = loaded.segments.iter().map(|s| s.addr).collect();
    assert!(addrs.iter().any(|&a| (0x4010_E000..0x4011_0000).contains(&a)), "{addrs:x?}");
    assert!(addrs.iter().any(|&a| (0x3FFF_B000..0x3FFF_C000).contains(&a)), "{addrs:x?}");
    let image = our_v1(&elf);
    let checksum = loaded.segments.iter().flat_map(|s| s.data.iter()).fold(0xEF, |a, b| a ^ b);
    assert_eq!(*image.last().unwrap(), checksum);
}

fn our_v1(elf: &Path) -> Vec<u8> {
    elf2image::elf_to_bootloader_image(
        &std::fs::read(elf).unwrap(),
        flash_params("qio", "1MB", "40m").unwrap(),
    )
    .unwrap()
}

#[test]
fn a_bootloader_cannot_use_irom() {
    let dir = tempfile::tempdir().unwrap();
    // The generated script has no IROM region: an IROM section lands in the cache RAM with the
    // code. A hand-written script that keeps one in IROM is refused.
    let source = dir.path().join("irom.c");
    std::fs::write(&source, "__attribute__((section(\".irom0.text\"))) int f(int x) { return x + 1; }\nvoid _start(void) { f(1); }\n").unwrap();
    let script = dir.path().join("irom.ld");
    std::fs::write(
        &script,
        "MEMORY { iram : org = 0x4010E000, len = 0x2000\n irom : org = 0x40202010, len = 0x1000 }\nENTRY(_start)\n\
         SECTIONS { .text : { *(.literal .text) } > iram\n .irom0.text : { *(.irom0.literal .irom0.text) } > irom }\n",
    )
    .unwrap();
    let elf = compile(dir.path(), &source, &script, "irom");
    let error =
        elf2image::elf_to_bootloader_image(&std::fs::read(&elf).unwrap(), Default::default()).unwrap_err();
    assert!(matches!(&error, ElfError::OutsideBootloaderMemory { addr: 0x4020_2010, .. }), "{error}");
    assert!(error.to_string().contains("not in RAM the mask ROM loads a bootloader into"), "{error}");
}
