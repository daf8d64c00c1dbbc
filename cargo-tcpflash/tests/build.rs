//! `cargo tcpflash build` through the real binary and the real toolchain: example-blinky for
//! both slots (checked against esptool and against each other), and the errors a user meets.
//!
//! Needs the pinned nightly with rust-src, binutils-xtensa-lx106 and esptool (`.ci/run`
//! installs them); without them the tests fail with the install command.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ota_agent::descriptor::{self, Descriptor};
use ota_agent::layout::{DEFAULT_LAYOUT, FlashLayout, IMAGE_IROM_OFFSET, SlotId};
use xmas_elf::ElfFile;
use xmas_elf::sections::ShType;

mod common;
use common::{ESPTOOL, ESPTOOL_INSTALL, esptool_image, esptool_v1_image, flat_stderr, repo, require};

fn tcpflash(dir: &Path, args: &[&str]) -> Command {
    let mut command = common::tcpflash(args);
    command.current_dir(dir);
    command
}

fn run(mut command: impl std::borrow::BorrowMut<Command>) -> Output {
    command.borrow_mut().output().expect("cargo-tcpflash runs")
}

fn assert_ok(output: &Output) {
    assert!(
        output.status.success(),
        "cargo tcpflash failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn out_dir(layout: &FlashLayout) -> PathBuf {
    repo().join("example-blinky/target/tcpflash").join(layout.name)
}

fn descriptor_of(image: &[u8]) -> Descriptor {
    let at = IMAGE_IROM_OFFSET as usize;
    Descriptor::parse(image[at..at + descriptor::SIZE].try_into().unwrap())
        .expect("image carries a descriptor")
}

#[test]
fn builds_example_blinky_for_both_slots_like_esptool() {
    let output = run(tcpflash(&repo(), &["build", "--manifest-path", "example-blinky/Cargo.toml"]));
    assert_ok(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = out_dir(DEFAULT_LAYOUT);

    let mut build_ids = Vec::new();
    for slot in DEFAULT_LAYOUT.slots {
        let elf = dir.join(format!("{}.elf", slot.id));
        let bin = dir.join(format!("{}.bin", slot.id));
        assert!(dir.join(format!("{}.map", slot.id)).is_file(), "a map file for {}", slot.id);
        let ours = std::fs::read(&bin).unwrap();
        require(ESPTOOL, ESPTOOL_INSTALL);
        let theirs = esptool_image(&elf, ("qio", "1MB", "40m")).unwrap();
        assert!(ours == theirs, "{} differs from esptool's conversion of the same ELF", slot.id);

        let descriptor = descriptor_of(&ours);
        assert_eq!(
            descriptor.link_addr,
            slot.irom_link_addr(),
            "{} descriptor holds its own address",
            slot.id
        );
        assert_eq!((descriptor.name(), descriptor.version()), ("example-blinky", "0.1.0"));
        build_ids.push(descriptor.build_id);

        let summary = format!("{}: {} ({} bytes, ", slot.id, bin.display(), ours.len());
        assert!(stdout.contains(&summary), "summary names {summary}:\n{stdout}");
    }
    assert_eq!(build_ids[0], build_ids[1], "both slots are one build");
    let hex: String = build_ids[0].iter().map(|b| format!("{b:02x}")).collect();
    assert!(stdout.starts_with(&format!("example-blinky 0.1.0 (build {hex}), layout 1MB")), "{stdout}");

    // Inside the firmware's folder, without --manifest-path: same result.
    let again = run(tcpflash(&repo().join("example-blinky"), &["build"]));
    assert_ok(&again);
    assert_eq!(String::from_utf8_lossy(&again.stdout), stdout, "rebuilding changes nothing");
}

/// `--board qemu`: the same layout, link addresses and esptool-identical images, in a folder
/// of their own; the start-up code sets the stack and resets through the FPGA, and the
/// board's CCOUNT routine is linked in.
#[test]
fn builds_example_blinky_for_the_qemu_board_like_esptool() {
    let args = ["build", "--manifest-path", "example-blinky/Cargo.toml", "--board", "qemu"];
    let output = run(tcpflash(&repo(), &args));
    assert_ok(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.lines().next().unwrap().ends_with(", layout 1MB, flash qio 1MB 40m, board qemu"),
        "{stdout}"
    );
    let dir = repo().join("example-blinky/target/tcpflash/qemu").join(DEFAULT_LAYOUT.name);
    for slot in DEFAULT_LAYOUT.slots {
        let elf_path = dir.join(format!("{}.elf", slot.id));
        let ours = std::fs::read(dir.join(format!("{}.bin", slot.id))).unwrap();
        let theirs = esptool_image(&elf_path, ("qio", "1MB", "40m")).unwrap();
        assert!(ours == theirs, "{} differs from esptool's conversion of the same ELF", slot.id);
        assert_eq!(descriptor_of(&ours).link_addr, slot.irom_link_addr());

        let bytes = std::fs::read(&elf_path).unwrap();
        let elf = ElfFile::new(&bytes).unwrap();
        let text = elf.find_section_by_name(".iram0.text").unwrap();
        let at = (elf.header.pt2.entry_point() - text.address()) as usize;
        // `l32r a1, .Lstack_top` (op0 1, t 1) first: no code runs before the stack is set.
        let first = &text.raw_data(&elf)[at..at + 3];
        assert_eq!(first[0], 0x11, "{}: l32r a1 at the entry, found {first:02x?}", slot.id);
        let symbols = symbol_names(&elf);
        assert!(symbols.contains(&"tcpflash_xtfpga_ccount".to_string()), "the board's assembly is linked");
    }
}

fn symbol_names(elf: &ElfFile<'_>) -> Vec<String> {
    use xmas_elf::sections::SectionData;
    use xmas_elf::symbol_table::Entry;
    let section = elf.find_section_by_name(".symtab").unwrap();
    let Ok(SectionData::SymbolTable32(symbols)) = section.get_data(elf) else {
        panic!("a 32-bit symbol table")
    };
    symbols.iter().filter_map(|symbol| symbol.get_name(elf).ok().map(str::to_owned)).collect()
}

/// The two ELFs hold the same code: every differing aligned word is an IROM address that
/// moved by exactly the distance between the slots.
#[test]
fn slot_elfs_differ_only_in_absolute_irom_addresses() {
    let layout = FlashLayout::by_name("512KB").unwrap();
    // Also: --target-dir puts everything (cargo's output and ours) in the given directory.
    let target = repo().join("target/firmware-fixtures");
    let args = ["build", "--manifest-path", "example-blinky/Cargo.toml", "--layout", "512KB", "--target-dir"];
    assert_ok(&run(tcpflash(&repo(), &args).arg(&target)));
    let dir = target.join("tcpflash/512KB");
    let read = |slot: SlotId| std::fs::read(dir.join(format!("{slot}.elf"))).unwrap();
    let (one, two) = (read(SlotId::User1), read(SlotId::User2));
    let (one, two) = (ElfFile::new(&one).unwrap(), ElfFile::new(&two).unwrap());
    let shift = layout.slots[1].irom_link_addr() - layout.slots[0].irom_link_addr();
    assert_eq!(shift, 0x4_0000);

    let loadable = |elf: &ElfFile<'_>| -> Vec<(String, u64, Vec<u8>)> {
        elf.section_iter()
            .filter(|s| s.get_type() == Ok(ShType::ProgBits) && s.address() != 0)
            .map(|s| (s.get_name(elf).unwrap().to_string(), s.address(), s.raw_data(elf).to_vec()))
            .collect()
    };
    let (sections_one, sections_two) = (loadable(&one), loadable(&two));
    assert_eq!(sections_one.len(), sections_two.len());
    let mut moved_words = 0;
    for ((name, addr_one, data_one), (name_two, addr_two, data_two)) in sections_one.iter().zip(&sections_two)
    {
        assert_eq!(name, name_two);
        assert_eq!(data_one.len(), data_two.len(), "{name}: sizes differ");
        let expected_shift = if name.starts_with(".irom") { u64::from(shift) } else { 0 };
        assert_eq!(addr_two - addr_one, expected_shift, "{name} moved by the slot distance");
        for (at, (a, b)) in data_one.chunks(4).zip(data_two.chunks(4)).enumerate() {
            if a != b {
                let (a, b) =
                    (u32::from_le_bytes(a.try_into().unwrap()), u32::from_le_bytes(b.try_into().unwrap()));
                assert_eq!(b.wrapping_sub(a), shift, "{name}+{:#x}: {a:#x} vs {b:#x}", at * 4);
                moved_words += 1;
            }
        }
    }
    assert!(moved_words >= 2, "at least the descriptor and the entry's call to main moved");
}

// ---- errors -------------------------------------------------------------------------------

/// A firmware crate in a temporary folder, built with the pinned nightly into a shared
/// target dir (so `core` is compiled once for all of these tests).
fn fixture(name: &str, main_rs: &str, toolchain: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(
        dir.path().join("Cargo.toml"),
        format!("[package]\nname = \"{name}\"\nversion = \"0.3.0\"\nedition = \"2024\"\n\n[profile.release]\nopt-level = \"s\"\n\n[workspace]\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("src/main.rs"), main_rs).unwrap();
    let pinned = std::fs::read_to_string(repo().join("example-blinky/rust-toolchain.toml")).unwrap();
    std::fs::write(dir.path().join("rust-toolchain.toml"), toolchain.unwrap_or(&pinned)).unwrap();
    dir
}

const MINIMAL_MAIN: &str =
    "#![no_std]\n#![no_main]\n#[panic_handler]\nfn panic(_: &core::panic::PanicInfo) -> ! { loop {} }\n";

fn build_fixture(dir: &Path, extra: &[&str]) -> Output {
    let target = repo().join("target/firmware-fixtures");
    run(tcpflash(dir, &[&["build"], extra].concat()).env("CARGO_TARGET_DIR", target))
}

#[test]
fn a_firmware_that_does_not_compile_shows_cargos_error() {
    let main = format!(
        "{MINIMAL_MAIN}#[unsafe(no_mangle)]\npub extern \"C\" fn main() -> ! {{ let x: u32 = \"text\"; loop {{}} }}\n"
    );
    let dir = fixture("broken-firmware", &main, None);
    let output = build_fixture(dir.path(), &[]);
    assert!(!output.status.success());
    let stderr = flat_stderr(&output);
    assert!(stderr.contains("error[E0308]: mismatched types"), "cargo's own error is shown: {stderr}");
    assert!(stderr.contains("the firmware `broken-firmware` did not compile"), "{stderr}");
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn an_image_larger_than_its_slot_says_by_how_much() {
    // 300 KB of constant bytes in IROM: more than a 512 KB chip's slots hold.
    let main = format!(
        "{MINIMAL_MAIN}#[unsafe(link_section = \".irom0.text\")]\n#[used]\nstatic BALLAST: [u32; 76800] = [0x5A5A_5A5A; 76800];\n\
         #[unsafe(no_mangle)]\npub extern \"C\" fn main() -> ! {{\n    \
         // SAFETY: an aligned word of a static.\n    \
         let _ = unsafe {{ core::ptr::read_volatile((&raw const BALLAST).cast::<u32>()) }}; loop {{}} }}\n"
    );
    let dir = fixture("heavy-firmware", &main, None);
    let output = build_fixture(dir.path(), &["--layout", "512KB"]);
    assert!(!output.status.success());
    let stderr = flat_stderr(&output);
    let slot = FlashLayout::by_name("512KB").unwrap().slots[0];
    let needle = "too large for user1 by ";
    let at = stderr.find(needle).unwrap_or_else(|| panic!("{stderr}"));
    let excess: u64 = stderr[at + needle.len()..].split(' ').next().unwrap().parse().unwrap();
    let len_at = stderr.find("image is ").unwrap() + "image is ".len();
    let len: u64 = stderr[len_at..].split(' ').next().unwrap().parse().unwrap();
    assert_eq!(len - excess, u64::from(slot.capacity), "excess is measured against the slot: {stderr}");
    assert!(len > 300 * 1024, "{stderr}");
    assert!(stderr.contains("--layout"), "help names the fix: {stderr}");
}

#[test]
fn a_stable_toolchain_is_refused_with_the_fix() {
    let dir = fixture("stable-firmware", MINIMAL_MAIN, Some("[toolchain]\nchannel = \"stable\"\n"));
    let output = build_fixture(dir.path(), &[]);
    assert!(!output.status.success());
    let stderr = flat_stderr(&output);
    assert!(stderr.contains("firmware builds need a nightly toolchain, found `rustc 1."), "{stderr}");
    assert!(stderr.contains("channel = \"nightly-2026-05-20\""), "help shows the toolchain file: {stderr}");
}

#[test]
fn a_toolchain_that_is_not_installed_names_the_install_command() {
    let dir = fixture("old-firmware", MINIMAL_MAIN, Some("[toolchain]\nchannel = \"nightly-2019-01-01\"\n"));
    let output = build_fixture(dir.path(), &[]);
    assert!(!output.status.success());
    let stderr = flat_stderr(&output);
    assert!(stderr.contains("the firmware toolchain `nightly-2019-01-01` cannot be used"), "{stderr}");
    assert!(stderr.contains("rustup toolchain install nightly-2019-01-01 --component rust-src"), "{stderr}");
}

/// A toolchain without rust-src: a `rustc` on PATH that says it is nightly and points at a
/// sysroot with no library sources (no toolchain file, so PATH's rustc is the one used).
#[test]
fn a_toolchain_without_rust_src_names_the_component() {
    let dir = fixture("nosrc-firmware", MINIMAL_MAIN, None);
    std::fs::remove_file(dir.path().join("rust-toolchain.toml")).unwrap();
    let bin = dir.path().join("fake-bin");
    std::fs::create_dir(&bin).unwrap();
    let rustc = bin.join("rustc");
    std::fs::write(
        &rustc,
        format!(
            "#!/bin/sh\nif [ \"$1\" = \"--print\" ]; then echo {}; else echo 'rustc 1.97.0-nightly (e50aa6fba 2026-05-19)'; fi\n",
            dir.path().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&rustc, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let output = run(tcpflash(dir.path(), &["build"]).env("PATH", path));
    assert!(!output.status.success());
    let stderr = flat_stderr(&output);
    assert!(stderr.contains("has no `rust-src` component"), "{stderr}");
    assert!(stderr.contains("rustup component add rust-src --toolchain nightly"), "{stderr}");
}

#[test]
fn a_missing_cross_assembler_names_the_package() {
    // Only rustup's proxies on PATH: cargo works, the lx106 binutils are gone.
    let cargo_bin = home_cargo_bin();
    let output =
        run(tcpflash(&repo(), &["build", "--manifest-path", "example-blinky/Cargo.toml"])
            .env("PATH", cargo_bin));
    assert!(!output.status.success());
    let stderr = flat_stderr(&output);
    assert!(stderr.contains("`xtensa-lx106-elf-as` was not found on PATH"), "{stderr}");
    assert!(stderr.contains("apt-get install binutils-xtensa-lx106"), "{stderr}");
}

fn home_cargo_bin() -> PathBuf {
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").expect("HOME is set")).join(".cargo"));
    home.join("bin")
}

#[test]
fn bad_options_are_refused_before_building() {
    let output =
        run(tcpflash(&repo(), &["build", "--manifest-path", "example-blinky/Cargo.toml", "--layout", "3MB"]));
    let stderr = flat_stderr(&output);
    assert!(
        stderr.contains("unknown flash layout `3MB`") && stderr.contains("512KB, 1MB, 2MB, 4MB"),
        "{stderr}"
    );

    let output = run(tcpflash(
        &repo(),
        &["build", "--manifest-path", "example-blinky/Cargo.toml", "--flash-mode", "fast"],
    ));
    let stderr = flat_stderr(&output);
    assert!(
        stderr.contains("unknown flash mode `fast`") && stderr.contains("qio, qout, dio, dout"),
        "{stderr}"
    );

    let output = run(tcpflash(&repo(), &["build", "--manifest-path", "no/such/Cargo.toml"]));
    assert!(flat_stderr(&output).contains("no Cargo.toml at no/such/Cargo.toml"));
}

// ---- bootloaders ----------------------------------------------------------------------------

/// A bootloader crate (`kind = "bootloader"`) whose `main` reads `ballast` bytes of constants.
fn bootloader_fixture(name: &str, ballast: usize) -> tempfile::TempDir {
    let main = format!(
        "{MINIMAL_MAIN}#[used]\nstatic BALLAST: [u8; {ballast}] = [0x5A; {ballast}];\n\
         #[unsafe(no_mangle)]\npub extern \"C\" fn main() -> ! {{\n    \
         // SAFETY: a byte of a static.\n    \
         let _ = unsafe {{ core::ptr::read_volatile((&raw const BALLAST).cast::<u8>()) }}; loop {{}} }}\n"
    );
    let dir = fixture(name, &main, None);
    let manifest = dir.path().join("Cargo.toml");
    let mut toml = std::fs::read_to_string(&manifest).unwrap();
    toml += "\n[package.metadata.tcpflash]\nkind = \"bootloader\"\nflash-size = \"4MB\"\n";
    std::fs::write(manifest, toml).unwrap();
    dir
}

/// Bootloader fixtures build into their own target dir, one after the other: builds that
/// share a target dir share its object files, so two at once (the firmware fixtures' tests
/// run in parallel) would link each other's code.
fn build_bootloader_fixture(dir: &Path) -> Output {
    run(tcpflash(dir, &["build"]).env("CARGO_TARGET_DIR", repo().join("target/bootloader-fixtures")))
}

#[test]
fn a_bootloader_is_linked_once_into_esptools_v1_image_or_refused_saying_by_how_much() {
    let out = repo().join("target/bootloader-fixtures/tcpflash/bootloader");
    let dir = bootloader_fixture("tiny-boot", 16);
    let output = build_bootloader_fixture(dir.path());
    assert_ok(&output);
    let (elf, bin) = (out.join("tiny-boot.elf"), out.join("tiny-boot.bin"));
    assert!(out.join("tiny-boot.map").is_file());
    let ours = std::fs::read(&bin).unwrap();
    require(ESPTOOL, ESPTOOL_INSTALL);
    assert!(
        ours == esptool_v1_image(&elf, ("qio", "4MB", "40m")).unwrap(),
        "differs from esptool's v1 image"
    );
    assert_eq!((ours[0], ours[3] >> 4), (0xE9, 4), "v1 magic, the 4MB size code of the metadata");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = format!(
        "tiny-boot 0.3.0 (bootloader), flash qio 4MB 40m\n  image: {} ({} of 4096 bytes",
        bin.display(),
        ours.len()
    );
    assert!(stdout.starts_with(&summary), "{stdout}");

    // 6000 bytes of constants: more than sector 0 holds.
    let dir = bootloader_fixture("heavy-boot", 6000);
    std::fs::write(out.join("heavy-boot.bin"), b"an older build").unwrap();
    let output = build_bootloader_fixture(dir.path());
    assert!(!output.status.success());
    let stderr = flat_stderr(&output);
    let needle = "bootloader image is ";
    let at = stderr.find(needle).unwrap_or_else(|| panic!("{stderr}"));
    let words: Vec<&str> = stderr[at + needle.len()..].split(' ').collect();
    let (len, excess): (u64, u64) = (words[0].parse().unwrap(), words[2].parse().unwrap());
    assert_eq!(len - excess, 4096, "{stderr}");
    assert!(len > 6000, "{stderr}");
    assert!(stderr.contains("over the 4096 bytes of sector 0"), "{stderr}");
    assert!(stderr.contains("look for what is big in the .map"), "help names the way: {stderr}");
    // The ELF and the map stay for that look; no image, not even an older one.
    assert!(out.join("heavy-boot.map").is_file() && out.join("heavy-boot.elf").is_file());
    assert!(!out.join("heavy-boot.bin").exists(), "a refused build leaves no image to flash by mistake");
}

#[test]
fn a_bootloader_has_no_slots_to_push() {
    let dir = bootloader_fixture("pushed-boot", 16);
    let target = repo().join("target/firmware-fixtures");
    let output = run(tcpflash(dir.path(), &["--host", "127.0.0.1"]).env("CARGO_TARGET_DIR", target));
    assert!(!output.status.success());
    let stderr = flat_stderr(&output);
    assert!(stderr.contains("`pushed-boot` is a bootloader"), "{stderr}");
    assert!(stderr.contains("serial-flash --bootloader"), "{stderr}");
}

// ---- the NONOS SDK platform, against the stub SDK --------------------------------------

/// `cargo tcpflash` with the SDK platform's environment under the test's control.
fn sdk_build(dir: &Path, args: &[&str]) -> Command {
    let mut command = tcpflash(dir, args);
    command
        .env_remove("ESP8266_NONOS_SDK")
        .env("TCPFLASH_WIFI_SSID", "ci-network")
        .env("TCPFLASH_WIFI_PASSWORD", "not-printed-8a3f");
    command
}

fn symbols(elf: &ElfFile<'_>) -> Vec<(String, u64, u16, bool)> {
    use xmas_elf::sections::SectionData;
    use xmas_elf::symbol_table::{Binding, Entry};
    let section = elf.find_section_by_name(".symtab").unwrap();
    let Ok(SectionData::SymbolTable32(entries)) = section.get_data(elf) else {
        panic!("a 32-bit symbol table")
    };
    entries
        .iter()
        .filter_map(|symbol| {
            let name = symbol.get_name(elf).ok()?.to_string();
            let global = matches!(symbol.get_binding(), Ok(Binding::Global | Binding::Weak));
            Some((name, symbol.value(), symbol.shndx(), global))
        })
        .collect()
}

/// Both slots of every SDK map link against the stub SDK, esptool-identical, with the
/// descriptor first in IROM at the map's address, IRAM within 32 KB, `call_user_start1`
/// as the entry, Rust code in IROM, and every ROM routine taken from the ROM: no symbol the
/// ROM table provides is defined in flash (the SDK's IRAM code would call it with the flash
/// busy). Then the errors
/// that need example-blinky: an SDK lacking symbols, and missing WiFi credentials.
#[test]
fn every_sdk_map_links_both_slots_against_the_stub_sdk() {
    let stub = tempfile::tempdir().unwrap();
    let sdk = cargo_tcpflash::stub_sdk::build(stub.path()).unwrap();
    let rom: std::collections::HashMap<String, u64> = cargo_tcpflash::build::sdk::rom_symbols(
        &std::fs::read_to_string(sdk.join("ld/eagle.rom.addr.v6.ld")).unwrap(),
    )
    .into_iter()
    .zip(std::fs::read_to_string(sdk.join("ld/eagle.rom.addr.v6.ld")).unwrap().lines().skip(1).map(|line| {
        u64::from_str_radix(line.split("0x").nth(1).unwrap().trim_end_matches(" );"), 16).unwrap()
    }))
    .collect();
    for map in &ota_agent::layout::sdk::SDK_MAPS {
        let layout = &map.layout;
        let args = [
            "build",
            "--manifest-path",
            "example-blinky/Cargo.toml",
            "--platform",
            "nonos-sdk",
            "--layout",
            layout.name,
            "--sdk",
        ];
        let output = run(sdk_build(&repo(), &args).arg(&sdk));
        assert_ok(&output);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let size = map.flash_size().name();
        assert!(
            stdout.contains(&format!(
                ", layout {}, flash qio {size} 40m, board esp8266, platform nonos-sdk",
                layout.name
            )),
            "{stdout}"
        );
        assert!(
            !String::from_utf8_lossy(&output.stderr).contains("not-printed-8a3f"),
            "the WiFi password is never printed"
        );
        let dir = repo().join("example-blinky/target/tcpflash/nonos-sdk").join(layout.name);
        for slot in layout.slots {
            let what = format!("{} of {}", slot.id, layout.name);
            let elf_path = dir.join(format!("{}.elf", slot.id));
            let ours = std::fs::read(dir.join(format!("{}.bin", slot.id))).unwrap();
            let theirs = esptool_image(&elf_path, ("qio", size, "40m")).unwrap();
            assert!(ours == theirs, "{what}: differs from esptool's conversion");
            assert_eq!(descriptor_of(&ours).link_addr, slot.irom_link_addr(), "{what}");

            let bytes = std::fs::read(&elf_path).unwrap();
            let elf = ElfFile::new(&bytes).unwrap();
            let irom = elf.find_section_by_name(".irom0.text").unwrap();
            assert_eq!(
                irom.address(),
                u64::from(slot.irom_link_addr()),
                "{what}: IROM starts at the map's address"
            );
            let table = symbols(&elf);
            let address =
                |name: &str| table.iter().find(|(n, _, _, global)| n == name && *global).map(|s| s.1);
            assert_eq!(
                address("TCPFLASH_DESCRIPTOR"),
                Some(irom.address()),
                "{what}: the descriptor comes first"
            );
            assert_eq!(
                Some(elf.header.pt2.entry_point()),
                address("call_user_start1"),
                "{what}: the SDK's entry"
            );
            let user_init = address("user_init").unwrap();
            assert!(
                (irom.address()..irom.address() + irom.size()).contains(&user_init),
                "{what}: Rust code in IROM"
            );
            let iram: u64 = elf
                .section_iter()
                .filter(|s| (0x4010_0000..0x4010_8000).contains(&s.address()) && s.size() > 0)
                .map(|s| {
                    assert!(
                        s.address() + s.size() <= 0x4010_8000,
                        "{what}: {} leaves IRAM",
                        s.get_name(&elf).unwrap()
                    );
                    s.size()
                })
                .sum();
            assert!(iram <= 32 * 1024, "{what}: {iram} bytes of IRAM");
            for (name, value, shndx, _) in &table {
                if let Some(&rom_addr) = rom.get(name) {
                    assert_eq!(
                        (*value, *shndx),
                        (rom_addr, 0xFFF1),
                        "{what}: `{name}` must be the ROM's ({rom_addr:#x}), not defined in the image"
                    );
                }
            }
            assert!(table.iter().any(|(name, _, _, _)| name == "__udivsi3"), "the stub's IRAM code divides");
        }
    }

    // An SDK whose espconn library lacks the functions the agent calls.
    let old = tempfile::tempdir().unwrap();
    let copy = cargo_tcpflash::stub_sdk::build(old.path()).unwrap();
    std::fs::copy(copy.join("lib/libphy.a"), copy.join("lib/liblwip.a")).unwrap();
    let args = [
        "build",
        "--manifest-path",
        "example-blinky/Cargo.toml",
        "--platform",
        "nonos-sdk",
        "--layout",
        "sdk-1MB",
        "--sdk",
    ];
    let output = run(sdk_build(&repo(), &args).arg(&copy));
    assert!(!output.status.success());
    let stderr = flat_stderr(&output);
    assert!(
        stderr.contains(&format!("the SDK at {} lacks `espconn_abort`, `espconn_accept`", copy.display())),
        "{stderr}"
    );
    assert!(stderr.contains("use NONOS SDK 3.0.x"), "{stderr}");

    // No WiFi network named: the build says which variables to set, and prints no secret.
    let output = run(sdk_build(&repo(), &args).arg(&sdk).env_remove("TCPFLASH_WIFI_SSID"));
    assert!(!output.status.success());
    let stderr = flat_stderr(&output);
    assert!(stderr.contains("set TCPFLASH_WIFI_SSID and TCPFLASH_WIFI_PASSWORD"), "{stderr}");
    assert!(!stderr.contains("not-printed-8a3f"), "{stderr}");
}

#[test]
fn sdk_platform_errors_name_the_fix() {
    let main = format!("{MINIMAL_MAIN}#[unsafe(no_mangle)]\npub extern \"C\" fn user_init() {{}}\n");
    let dir = fixture("sdk-firmware", &main, None);

    // No SDK given: where to get one.
    let output = run(sdk_build(dir.path(), &["build", "--platform", "nonos-sdk", "--layout", "sdk-1MB"]));
    let stderr = flat_stderr(&output);
    assert!(
        stderr.contains("the nonos-sdk platform needs Espressif's ESP8266 NONOS SDK, and none was given"),
        "{stderr}"
    );
    assert!(stderr.contains("https://github.com/espressif/ESP8266_NONOS_SDK"), "{stderr}");

    // A folder that is not an SDK: which file is missing (given through the variable).
    let output = run(sdk_build(dir.path(), &["build", "--platform", "nonos-sdk", "--layout", "sdk-1MB"])
        .env("ESP8266_NONOS_SDK", dir.path()));
    let stderr = flat_stderr(&output);
    // (miette may break the line after a slash)
    assert!(
        stderr.replace("/ ", "/").contains("is not an ESP8266 NONOS SDK: it has no ld/eagle.rom.addr.v6.ld"),
        "{stderr}"
    );

    // Layout and platform that do not belong together, both ways.
    let stub = tempfile::tempdir().unwrap();
    let sdk = cargo_tcpflash::stub_sdk::build(stub.path()).unwrap();
    let sdk = sdk.to_str().unwrap();
    let output =
        run(sdk_build(dir.path(), &["build", "--platform", "nonos-sdk", "--layout", "1MB", "--sdk", sdk]));
    let stderr = flat_stderr(&output);
    assert!(stderr.contains("the 1MB layout is not one of the SDK's flash maps"), "{stderr}");
    let output = run(sdk_build(dir.path(), &["build", "--layout", "sdk-4MB"]));
    let stderr = flat_stderr(&output);
    assert!(
        stderr.contains("the sdk-4MB layout is an SDK flash map") && stderr.contains("--platform nonos-sdk"),
        "{stderr}"
    );

    // An image too big for the map's slot: measured against it.
    let heavy = format!(
        "{MINIMAL_MAIN}#[unsafe(link_section = \".irom0.text\")]\n#[used]\nstatic BALLAST: [u32; 131072] = [0x5A5A_5A5A; 131072];\n\
         #[unsafe(no_mangle)]\npub extern \"C\" fn user_init() {{\n    \
         // SAFETY: an aligned word of a static.\n    \
         let _ = unsafe {{ core::ptr::read_volatile((&raw const BALLAST).cast::<u32>()) }}; }}\n"
    );
    let dir = fixture("heavy-sdk-firmware", &heavy, None);
    let output = build_fixture(dir.path(), &["--platform", "nonos-sdk", "--layout", "sdk-1MB", "--sdk", sdk]);
    assert!(!output.status.success());
    let stderr = flat_stderr(&output);
    let slot = FlashLayout::by_name("sdk-1MB").unwrap().slots[0];
    assert!(stderr.contains("too large for user1 by "), "{stderr}");
    let len_at = stderr.find("image is ").unwrap() + "image is ".len();
    let len: u64 = stderr[len_at..].split(' ').next().unwrap().parse().unwrap();
    assert!(len > u64::from(slot.capacity) && len > 512 * 1024, "{stderr}");
}

/// `cargo tcpflash c-lib`: the library exports only the API (and a weak `abort`), needs
/// nothing but SDK and ROM functions, and links into a C SDK project (its objects, the
/// SDK's libraries and libc, and a script with the SDK's placement rules: only
/// `.irom0.text` in flash) with the agent's code in IROM and no ROM routine redefined.
#[test]
fn the_c_library_links_into_a_c_sdk_project_against_the_stub_sdk() {
    let stub = tempfile::tempdir().unwrap();
    let sdk = cargo_tcpflash::stub_sdk::build(stub.path()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let target = repo().join("target");
    let output = run(sdk_build(&repo(), &["c-lib", "-o"])
        .arg(out.path())
        .arg("--sdk")
        .arg(&sdk)
        .arg("--target-dir")
        .arg(&target));
    assert_ok(&output);
    let header = std::fs::read_to_string(out.path().join("ota_agent.h")).unwrap();
    assert!(header.contains("\nvoid ota_init(void);\n"), "{header}");
    assert!(header.contains("\nvoid ota_init_with_key(const unsigned char key[32]);\n"), "{header}");

    let nm = Command::new("xtensa-lx106-elf-nm")
        .arg("-g")
        .arg(out.path().join("libota_agent.a"))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&nm.stdout);
    let defined: Vec<&str> =
        listing.lines().filter(|line| !line.trim_start().starts_with('U') && line.contains(' ')).collect();
    assert_eq!(defined.len(), 3, "only the API and a weak abort: {defined:?}");
    assert!(
        defined.iter().any(|line| line.ends_with(" T ota_init"))
            && defined.iter().any(|line| line.ends_with(" W abort"))
    );

    let project = tempfile::tempdir().unwrap();
    let object = project.path().join("user_main.o");
    let compiled = Command::new("xtensa-lx106-elf-gcc")
        .args(["-Os", "-mlongcalls", "-mtext-section-literals", "-c", "-I"])
        .arg(out.path())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/c_ota_project.c"))
        .arg("-o")
        .arg(&object)
        .output()
        .unwrap();
    assert!(compiled.status.success(), "{}", String::from_utf8_lossy(&compiled.stderr));
    let map = ota_agent::layout::sdk::SdkMap::by_name("sdk-1MB").unwrap();
    let script = project.path().join("app.ld");
    let rom_table = sdk.join("ld/eagle.rom.addr.v6.ld");
    std::fs::write(&script, cargo_tcpflash::build::sdk::linker_script(&map.layout.slots[0], map, &rom_table))
        .unwrap();
    let elf_path = project.path().join("app.elf");
    let linked = Command::new("xtensa-lx106-elf-ld")
        .arg("-T")
        .arg(&script)
        .args(["--gc-sections", "--no-check-sections", "-u", "call_user_start1", "-o"])
        .arg(&elf_path)
        .arg(&object)
        .arg("-L")
        .arg(out.path())
        .arg("-L")
        .arg(sdk.join("lib"))
        .args([
            "--start-group",
            "-lota_agent",
            "-lc",
            "-lgcc",
            "-lhal",
            "-lphy",
            "-lpp",
            "-lnet80211",
            "-llwip",
        ])
        .args(["-lwpa", "-lcrypto", "-lmain", "-ldriver", "--end-group"])
        .output()
        .unwrap();
    assert!(
        linked.status.success(),
        "unresolved in the C project: {}",
        String::from_utf8_lossy(&linked.stderr)
    );
    let bytes = std::fs::read(&elf_path).unwrap();
    let elf = ElfFile::new(&bytes).unwrap();
    let irom = elf.find_section_by_name(".irom0.text").unwrap();
    let table = symbols(&elf);
    let ota_init = table.iter().find(|(name, ..)| name == "ota_init").unwrap().1;
    assert!((irom.address()..irom.address() + irom.size()).contains(&ota_init), "the agent runs from flash");
    assert!(elf.find_section_by_name(".text").unwrap().size() < 2048, "nothing of the agent in IRAM");
    let rom: Vec<String> =
        cargo_tcpflash::build::sdk::rom_symbols(&std::fs::read_to_string(&rom_table).unwrap());
    for (name, _, shndx, _) in &table {
        assert!(!rom.contains(name) || *shndx == 0xFFF1, "`{name}` is the ROM's, not defined in the image");
    }
}
