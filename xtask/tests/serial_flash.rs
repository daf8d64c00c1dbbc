//! `serial-flash` against the fake ESP8266 ROM loader on pseudo-terminals, and the fake ROM
//! against esptool, the reference client.
//!
//! Needs `xtensa-lx106-elf-gcc` and `esptool` on PATH (to build a real v1 bootloader image
//! and to cross-check the fake ROM).

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use miette::Diagnostic;
use ota_agent::boot::BootConfig;
use ota_agent::layout::{DEFAULT_LAYOUT, SlotId};
use serialport::{SerialPort, TTYPort};
use xtask::serial::cli::{self, SerialFlashArgs};
use xtask::serial::fake_rom::{Event, Exit, FakeRom};
use xtask::serial::flasher::{self, ConnectOptions, FlashError, NoReset, Region, WriteProgress};
use xtask::serial::rom;

const MB: u32 = 0x10_0000;
const SECTOR: usize = 0x1000;

#[derive(Parser)]
struct TestCli {
    #[command(flatten)]
    args: SerialFlashArgs,
}

fn parse(args: &[&str]) -> SerialFlashArgs {
    let argv = std::iter::once("serial-flash").chain(args.iter().copied());
    TestCli::try_parse_from(argv).expect("arguments parse").args
}

/// A real v1 bootloader image: a tiny ELF built by the lx106 GCC, turned into an image by
/// `esptool elf2image --version 1` (what rBoot's build produces, in miniature).
fn v1_bootloader(dir: &Path) -> PathBuf {
    let source = dir.join("boot.c");
    std::fs::write(
        &source,
        "volatile unsigned int counter = 0x12345678;\n\
         __attribute__((section(\".iram1.text\"))) void call_user_start(void) { for (;;) counter++; }\n",
    )
    .unwrap();
    let elf = dir.join("boot.elf");
    let status = Command::new("xtensa-lx106-elf-gcc")
        .args([
            "-Os",
            "-nostdlib",
            "-Wl,-e,call_user_start",
            "-Wl,-Ttext=0x40100000",
            "-Wl,-Tdata=0x3FFE8000",
        ])
        .arg("-Wl,--section-start=.iram1.text=0x40100100")
        .arg("-o")
        .arg(&elf)
        .arg(&source)
        .status()
        .expect("xtensa-lx106-elf-gcc runs");
    assert!(status.success());
    let prefix = dir.join("boot-");
    let output = Command::new("esptool")
        .args(["--chip", "esp8266", "elf2image", "--version", "1", "-o"])
        .arg(&prefix)
        .arg(&elf)
        .output()
        .expect("esptool runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let image = dir.join("boot-0x00000.bin");
    let info =
        xtask::serial::bootloader::check(&std::fs::read(&image).unwrap()).expect("esptool's image passes");
    assert_eq!(info.segments.len(), 3, "literal, data and code segments");
    // Our own v1 writer (used for the small fixtures below) agrees with esptool's bytes.
    let bytes = std::fs::read(&image).unwrap();
    let mut at = 8;
    let mut segments = Vec::new();
    for &(addr, len) in &info.segments {
        segments.push((addr, &bytes[at + 8..at + 8 + len as usize]));
        at += 8 + len as usize;
    }
    assert_eq!(xtask::serial::bootloader::build_v1(info.entry, &segments), bytes);
    image
}

/// A stand-in user1.bin: the v2 magic, then bytes that differ everywhere.
fn user1_image(len: usize) -> Vec<u8> {
    let mut image: Vec<u8> = (0..len).map(|i| (i * 31 + i / 251) as u8).collect();
    image[0] = 0xEA;
    image
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

/// Compares flash ranges and names the first differing offset (not megabytes of bytes).
#[track_caller]
fn assert_same(actual: &[u8], expected: &[u8], base: usize, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    if let Some(at) = actual.iter().zip(expected).position(|(a, e)| a != e) {
        panic!("{what}: flash {:#x} holds {:#04x}, expected {:#04x}", base + at, actual[at], expected[at]);
    }
}

/// The tests that build example-blinky write the same files: one at a time.
fn build_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn all_ff(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0xFF)
}

#[test]
fn installs_bootloader_config_and_user1_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let bootloader_path = v1_bootloader(dir.path());
    let bootloader = std::fs::read(&bootloader_path).unwrap();
    // Five sectors and a bit less: the last block is partial and padded.
    let user1 = user1_image(0x4800 - 0x123);
    let image_path = write(dir.path(), "user1.bin", &user1);

    let fake = FakeRom::esp8266(MB).spawn().unwrap();
    let args = parse(&[
        "--port",
        fake.path(),
        "--bootloader",
        bootloader_path.to_str().unwrap(),
        "--image",
        &image_path,
        "--no-reset",
        "--layout",
        "1MB",
    ]);
    let installed = cli::run(&args).expect("serial-flash succeeds");
    let fake = fake.finish();
    assert_eq!(installed.chip.name, "ESP8266EX");
    assert_eq!(fake.exit(), Some(Exit::Reboot), "FLASH_END asked for a reboot");

    // In order: bootloader, config, user1; FLASH_END last.
    let begins: Vec<u32> = fake
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::FlashBegin { offset, .. } => Some(*offset),
            _ => None,
        })
        .collect();
    assert_eq!(begins, [0x0, 0x1000, 0x2000]);
    assert_eq!(fake.events().last(), Some(&Event::FlashEnd(Exit::Reboot)));

    let flash = fake.flash();
    let pattern = FakeRom::pattern(MB);
    let config = BootConfig::for_layout(DEFAULT_LAYOUT, SlotId::User1).to_bytes();
    assert_same(&flash[..bootloader.len()], &bootloader, 0, "bootloader");
    assert!(all_ff(&flash[bootloader.len()..0x1000]), "rest of the bootloader sector is erased");
    assert_same(&flash[0x1000..0x1000 + config.len()], &config, 0x1000, "boot config");
    assert!(all_ff(&flash[0x1000 + config.len()..0x2000]));
    assert_same(&flash[0x2000..0x2000 + user1.len()], &user1, 0x2000, "user1");
    assert!(all_ff(&flash[0x2000 + user1.len()..0x7000]), "user1's last sector is erased past the image");
    // Five sectors from sector 2 stop short of the 64 KB boundary and are an odd count: the
    // ROM's erase can only do an even count there, so it (and esptool) erases sector 7 too.
    // That sector is free space inside the user1 slot.
    assert!(all_ff(&flash[0x7000..0x8000]));
    assert!(DEFAULT_LAYOUT.slot(SlotId::User1).contains(0x7000, 0x1000));
    assert_same(&flash[0x8000..], &pattern[0x8000..], 0x8000, "nothing past the erased sectors changed");

    // The flash can be handed to the virtual ESP8266 as a file.
    let dump = dir.path().join("flash.bin");
    fake.dump(&dump).unwrap();
    assert!(std::fs::read(&dump).unwrap() == flash, "the dump holds the flash");
}

/// Without --image, serial-flash builds the firmware with `cargo tcpflash build`'s code and
/// installs exactly the user1.bin that build writes.
#[test]
fn installs_tcpflash_boot_by_default_and_the_virtual_device_boots_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../example-blinky/Cargo.toml");
    let fake = FakeRom::esp8266(MB).spawn().unwrap();
    let args = parse(&["--port", fake.path(), "--manifest-path", manifest.to_str().unwrap(), "--no-reset"]);
    let installed = {
        let _build = build_lock();
        cli::run(&args).expect("serial-flash builds both and installs")
    };
    let fake = fake.finish();
    let flash = fake.flash();
    // Sector 0 holds tcpflash-boot's image as its build wrote it.
    let boot = xtask::serial::cli::tcpflash_boot(DEFAULT_LAYOUT, &Default::default()).unwrap();
    assert_eq!(installed.regions[0], ("bootloader".to_owned(), 0, boot.len()), "{installed}");
    assert!(boot.len() <= 4096);
    assert_same(&flash[..boot.len()], &boot, 0, "tcpflash-boot");
    assert!(all_ff(&flash[boot.len()..0x1000]), "rest of sector 0 erased");

    let status = sim_status(&fake, dir.path());
    assert_eq!(status["boot"]["by"], "tcpflash-boot", "{status}");
    assert_eq!(status["booted_slot"], "user1", "{status}");
    assert_eq!(status["boot_status"]["state"], "confirmed", "{status}");
}

/// `xtask sim status` on the flash the fake ROM holds: how the virtual ESP8266 boots it.
fn sim_status(fake: &FakeRom, dir: &Path) -> serde_json::Value {
    let dump = dir.join("installed.flash");
    fake.dump(&dump).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["sim", "status", "--flash"])
        .arg(&dump)
        .output()
        .expect("xtask runs");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    serde_json::from_slice(&status.stdout).expect("one JSON line")
}

#[test]
fn builds_the_firmware_and_installs_its_user1() {
    let dir = tempfile::tempdir().unwrap();
    let bootloader_path = v1_bootloader(dir.path());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../example-blinky/Cargo.toml");
    let fake = FakeRom::esp8266(MB).spawn().unwrap();
    let args = parse(&[
        "--port",
        fake.path(),
        "--bootloader",
        bootloader_path.to_str().unwrap(),
        "--manifest-path",
        manifest.to_str().unwrap(),
        "--no-reset",
    ]);
    let installed = {
        let _build = build_lock();
        cli::run(&args).expect("serial-flash builds and installs")
    };
    let fake = fake.finish();
    assert_eq!(installed.layout.name, "1MB", "the layout of example-blinky's metadata");
    let built = std::fs::read(manifest.parent().unwrap().join("target/tcpflash/1MB/user1.bin")).unwrap();
    let flash = fake.flash();
    assert_same(&flash[0x2000..0x2000 + built.len()], &built, 0x2000, "user1 as built");
    let descriptor = &built[0x10..0x14];
    assert_eq!(descriptor, b"TCF1", "the built image carries its slot descriptor");

    // The virtual ESP8266 boots that flash: `xtask sim status` on the dumped flash.
    let status = sim_status(&fake, dir.path());
    assert_eq!(status["booted_slot"], "user1", "{status}");
    assert_eq!(status["boot"]["by"], "rBoot", "a bootloader that is not tcpflash-boot: {status}");
    assert_eq!(status["boot_status"]["state"], "untracked", "{status}");
    assert_eq!(status["next_slot"], "user2", "{status}");
    assert_eq!(status["slots"]["user1"]["valid"], true, "{status}");
    assert_eq!(status["slots"]["user1"]["name"], "example-blinky", "{status}");
    assert_eq!(status["slots"]["user1"]["len"], built.len(), "{status}");
}

#[test]
fn resets_on_a_port_without_control_lines_and_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let bootloader = write(
        dir.path(),
        "boot.bin",
        &xtask::serial::bootloader::build_v1(0x4010_0000, &[(0x4010_0000, &[7; 40])]),
    );
    let image = write(dir.path(), "user1.bin", &user1_image(100));
    let fake = FakeRom::esp8266(MB).spawn().unwrap();
    // No --no-reset: DTR/RTS toggling is tried on the pseudo-terminal.
    let args = parse(&["--port", fake.path(), "--bootloader", &bootloader, "--image", &image]);
    cli::run(&args).expect("serial-flash succeeds without reset lines");
    let fake = fake.finish();
    assert_same(&fake.flash()[0x2000..0x2000 + 100], &user1_image(100), 0x2000, "user1");
}

/// Runs esptool's `write-flash` against a fake ROM and returns the fake afterwards.
fn esptool_write(file: &Path, offset: u32) -> FakeRom {
    let fake = FakeRom::esp8266(MB).spawn().unwrap();
    let output = Command::new("esptool")
        .args(["--chip", "esp8266", "--port", fake.path(), "--before", "no-reset", "--after", "no-reset"])
        .args(["--no-stub", "write-flash", &format!("{offset:#x}")])
        .arg(file)
        .output()
        .expect("esptool runs");
    let fake = fake.finish();
    assert!(
        output.status.success(),
        "esptool failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    fake
}

/// Writes the same bytes with our flasher (no FLASH_END: esptool sends none to the ROM).
fn our_write(data: &[u8], offset: u32) -> FakeRom {
    let fake = FakeRom::esp8266(MB).spawn().unwrap();
    let port = flasher::open_port(fake.path(), 115_200).unwrap();
    let mut client =
        flasher::connect(port, fake.path(), ConnectOptions { reset: &NoReset, attempts: 1 }).unwrap();
    let regions = [Region::new("file", offset, data.to_vec())];
    let mut progress = Told::default();
    flasher::write_regions(&mut client, &regions, &mut progress).unwrap();
    assert_eq!(progress.bytes, data.len() as u64, "the progress counts every byte once");
    assert_eq!(
        progress.steps,
        [format!("erasing for file at {offset:#x}"), format!("writing file at {offset:#x}")]
    );
    drop(client);
    fake.finish()
}

/// What the flasher told its progress.
#[derive(Default)]
struct Told {
    steps: Vec<String>,
    bytes: u64,
}

impl WriteProgress for Told {
    fn step(&mut self, what: &str) {
        self.steps.push(what.to_owned());
    }

    fn written(&mut self, bytes: u64) {
        self.bytes += bytes;
    }
}

/// The FLASH_BEGINs that write something (esptool first sends an empty one, its way of
/// attaching the SPI flash on the ESP8266 ROM).
fn flash_begins(fake: &FakeRom) -> Vec<Event> {
    fake.events()
        .iter()
        .filter(|e| matches!(e, Event::FlashBegin { blocks, .. } if *blocks > 0))
        .cloned()
        .collect()
}

#[test]
fn fake_rom_and_our_flasher_agree_with_esptool() {
    let dir = tempfile::tempdir().unwrap();
    // Below a 64 KB boundary with an odd sector count, and across one with a ragged length.
    for (offset, len) in [(0x2000u32, 0x4123usize), (0xE000, 0x6001)] {
        let data: Vec<u8> = (0..len).map(|i| (i * 13 + i / 97) as u8).collect();
        let file = dir.path().join(format!("blob-{offset:x}.bin"));
        std::fs::write(&file, &data).unwrap();

        let by_esptool = esptool_write(&file, offset);
        let by_us = our_write(&data, offset);
        let written = offset as usize..offset as usize + len;
        assert_same(&by_esptool.flash()[written], &data, offset as usize, "esptool's write");
        assert_eq!(flash_begins(&by_us), flash_begins(&by_esptool), "same FLASH_BEGIN parameters");
        assert_same(by_us.flash(), by_esptool.flash(), 0, "our flash vs esptool's");
        // With the erase-size correction the buggy ROM erases the sectors the data covers,
        // plus one when an odd count stays below a 64 KB boundary (it can only do even).
        let Event::FlashBegin { erased: (first, count), .. } = flash_begins(&by_us)[0] else {
            unreachable!()
        };
        assert_eq!(first, offset / 0x1000);
        let covered = len.div_ceil(SECTOR) as u32;
        assert!(count == covered || count == covered + 1, "erased {count} sectors for {covered}");
    }
}

fn error_of(args: &SerialFlashArgs) -> FlashError {
    cli::run(args).expect_err("serial-flash must fail")
}

fn help_of(error: &FlashError) -> String {
    error.help().map(|h| h.to_string()).unwrap_or_default()
}

struct Fixture {
    dir: tempfile::TempDir,
    bootloader: String,
    image: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let bootloader = write(
        dir.path(),
        "boot.bin",
        &xtask::serial::bootloader::build_v1(0x4010_0000, &[(0x4010_0000, &[7; 40])]),
    );
    let image = write(dir.path(), "user1.bin", &user1_image(0x800));
    Fixture { dir, bootloader, image }
}

#[test]
fn silent_port_times_out_with_bootloader_mode_advice() {
    let f = fixture();
    let (_master, slave) = TTYPort::pair().unwrap();
    let path = slave.name().unwrap();
    let args = parse(&[
        "--port",
        &path,
        "--bootloader",
        &f.bootloader,
        "--image",
        &f.image,
        "--no-reset",
        "--connect-attempts",
        "2",
    ]);
    let error = error_of(&args);
    assert_eq!(
        error.to_string(),
        format!("no answer to SYNC from the ROM loader on {path} after 2 attempts")
    );
    let help = help_of(&error);
    assert!(help.contains("hold GPIO0 low (press FLASH) while resetting"), "{help}");
}

#[test]
fn refuses_an_esp32_by_name() {
    let f = fixture();
    let fake = FakeRom::other_chip("ESP32", MB).spawn().unwrap();
    let args =
        parse(&["--port", fake.path(), "--bootloader", &f.bootloader, "--image", &f.image, "--no-reset"]);
    let error = error_of(&args);
    assert_eq!(error.to_string(), format!("the chip on {} is an ESP32, not an ESP8266", fake.path()));
    let fake = fake.finish();
    assert!(!fake.events().iter().any(|e| matches!(e, Event::FlashBegin { .. })), "nothing was written");
}

#[test]
fn refuses_an_esp8285_whose_flash_is_smaller_than_the_layout() {
    let f = fixture();
    // eFuse bit 4 set, no size bits beyond: an ESP8285 with 1 MB inside.
    let fake = FakeRom::esp8266(MB).with_efuses([1 << 4, 0x3C2B, 0, 0]).spawn().unwrap();
    let args = parse(&[
        "--port",
        fake.path(),
        "--bootloader",
        &f.bootloader,
        "--image",
        &f.image,
        "--no-reset",
        "--layout",
        "2MB",
    ]);
    let error = error_of(&args);
    assert_eq!(
        error.to_string(),
        "the ESP8285N08 has 0x100000 bytes of flash, but the 2MB layout needs 0x200000"
    );
    drop(fake);
}

#[test]
fn reports_a_rom_status_error_with_its_code() {
    let f = fixture();
    let fake = FakeRom::esp8266(MB).with_write_fault(0x2400).spawn().unwrap();
    let args =
        parse(&["--port", fake.path(), "--bootloader", &f.bootloader, "--image", &f.image, "--no-reset"]);
    let error = error_of(&args);
    assert_eq!(
        error.to_string(),
        "the ROM loader refused block 1 of user1.bin (flash 0x2400): FLASH_DATA failed: error code 0x08: flash write error"
    );
    assert!(flasher::is_rom_status(&error, rom::RomStatus::FLASH_WRITE_ERROR));
}

/// Problems with the files are found before the port is opened: the port here does not exist.
#[test]
fn bad_files_are_refused_before_the_port_is_touched() {
    let f = fixture();
    let missing_port = "/dev/tcpflash-no-such-port";

    let not_an_image = write(f.dir.path(), "readme.txt", b"hello, I am not a bootloader");
    let error =
        error_of(&parse(&["--port", missing_port, "--bootloader", &not_an_image, "--image", &f.image]));
    assert_eq!(
        error.to_string(),
        format!(
            "the bootloader file {not_an_image} is not an ESP8266 bootloader image: it starts with 0x68, not 0xe9, \
             so it is not an ESP8266 v1 image"
        )
    );
    assert!(help_of(&error).contains("rBoot's rboot.bin"));

    // user1.bin passed as the bootloader.
    let error = error_of(&parse(&["--port", missing_port, "--bootloader", &f.image, "--image", &f.image]));
    assert!(
        error.to_string().ends_with(
            "it starts with 0xea: that is a v2 application image (like user1.bin), not a bootloader"
        )
    );

    let capacity = DEFAULT_LAYOUT.slot(SlotId::User1).capacity as usize;
    let huge = write(f.dir.path(), "huge.bin", &user1_image(capacity + 16));
    let error = error_of(&parse(&["--port", missing_port, "--bootloader", &f.bootloader, "--image", &huge]));
    assert_eq!(
        error.to_string(),
        "user1.bin is 516112 bytes but the user1 slot of the 1MB layout holds 516096 bytes (flash 0x2000..0x80000)"
    );

    // Without --image the firmware must be built: the port is looked at first, so a missing
    // adapter is reported before a slow build (here the build could not even start).
    let error = error_of(&parse(&[
        "--port",
        missing_port,
        "--bootloader",
        &f.bootloader,
        "--manifest-path",
        "/no/firmware/Cargo.toml",
    ]));
    assert_eq!(error.to_string(), format!("no serial port {missing_port}"));
    // With a port, the build's own error.
    let fake = FakeRom::esp8266(MB).spawn().unwrap();
    let error = error_of(&parse(&[
        "--port",
        fake.path(),
        "--no-reset",
        "--bootloader",
        &f.bootloader,
        "--manifest-path",
        "/no/firmware/Cargo.toml",
    ]));
    assert!(matches!(error, FlashError::Build(_)), "{error}");
    assert_eq!(error.to_string(), "no Cargo.toml at /no/firmware/Cargo.toml");
    assert_eq!(flash_begins(&fake.finish()), [], "nothing written");

    let error = error_of(&parse(&[
        "--port",
        missing_port,
        "--bootloader",
        &f.bootloader,
        "--image",
        &f.image,
        "--layout",
        "3MB",
    ]));
    assert_eq!(error.to_string(), "unknown flash layout \"3MB\"");
    assert_eq!(help_of(&error), "use one of: 512KB, 1MB, 2MB, 4MB");

    // With good files, the missing port is what fails.
    let error =
        error_of(&parse(&["--port", missing_port, "--bootloader", &f.bootloader, "--image", &f.image]));
    assert_eq!(error.to_string(), format!("no serial port {missing_port}"));
    assert!(help_of(&error).contains("--port /dev/ttyUSB0"));
}

/// The binary end to end: exit status and the diagnostic on stderr.
#[test]
fn the_command_reports_errors_and_success() {
    let f = fixture();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["serial-flash", "--port", "/dev/tcpflash-no-such-port", "--bootloader", &f.bootloader])
        .args(["--image", &f.image])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no serial port /dev/tcpflash-no-such-port"), "{stderr}");
    assert!(stderr.contains("help:"), "{stderr}");

    let fake = FakeRom::esp8266(MB).spawn().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["serial-flash", "--port", fake.path(), "--bootloader", &f.bootloader, "--image", &f.image])
        .arg("--no-reset")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("Installed on an ESP8266EX (1MB layout): bootloader at 0x0"), "{stderr}");
    let fake = fake.finish();
    assert_same(&fake.flash()[0x2000..0x2800], &user1_image(0x800), 0x2000, "user1");
}

/// On an SDK map, serial-flash writes the SDK's files from the SDK folder (here the stub
/// SDK's stand-ins): boot_v1.7.bin at 0x0 with user1's flash parameters in its header (the
/// SDK checks the map there), user1 at 0x1000, blank.bin over the RF calibration and the
/// three system-parameter sectors, the PHY init data last (the ROM's erase workaround would
/// take it with the blank sector before it); no rBoot config, and nothing else.
#[test]
fn installs_the_sdk_files_at_the_maps_addresses() {
    use ota_agent::image::samples::{irom_for, write as image};
    use ota_agent::image::{FlashFreq, FlashMode, FlashParams, FlashSize, Segment};
    let dir = tempfile::tempdir().unwrap();
    let sdk = cargo_tcpflash::stub_sdk::build(&dir.path().join("sdk")).unwrap();
    let map = ota_agent::layout::sdk::SdkMap::by_name("sdk-2MB-c1").unwrap();
    let params = FlashParams { mode: FlashMode::Dio, size: FlashSize::Size2MC1, freq: FlashFreq::Freq80M };
    let irom = irom_for(map.layout.slots[0].irom_link_addr(), 6000);
    let user1 = image(params, 0x4010_0000, &irom, &[Segment { addr: 0x4010_0000, data: &[3; 64] }]);
    let image_path = write(dir.path(), "user1.bin", &user1);

    let size = map.layout.flash_size;
    let fake = FakeRom::esp8266(size).spawn().unwrap();
    let args = parse(&[
        "--port",
        fake.path(),
        "--image",
        &image_path,
        "--no-reset",
        "--layout",
        "sdk-2MB-c1",
        "--sdk",
        sdk.to_str().unwrap(),
    ]);
    let installed = cli::run(&args).expect("serial-flash succeeds");
    let regions: Vec<(String, u32)> =
        installed.regions.iter().map(|(name, at, _)| (name.clone(), *at)).collect();
    assert_eq!(
        regions,
        [
            ("boot_v1.7.bin".to_string(), 0x0),
            ("user1.bin".into(), 0x1000),
            ("blank.bin (RF calibration)".into(), 0x1F_B000),
            ("blank.bin (system parameters)".into(), 0x1F_D000),
            ("blank.bin (system parameters)".into(), 0x1F_E000),
            ("blank.bin (system parameters)".into(), 0x1F_F000),
            ("esp_init_data_default_v08.bin".into(), 0x1F_C000),
        ]
    );
    let fake = fake.finish();
    let flash = fake.flash();
    let mut boot = std::fs::read(sdk.join("bin/boot_v1.7.bin")).unwrap();
    boot[2..4].copy_from_slice(&[0x02, 0x5F]);
    assert_same(&flash[..boot.len()], &boot, 0, "boot_v1.7.bin with user1's mode, map and frequency");
    assert_same(&flash[0x1000..0x1000 + user1.len()], &user1, 0x1000, "user1");
    let init = std::fs::read(sdk.join("bin/esp_init_data_default_v08.bin")).unwrap();
    assert_same(&flash[0x1F_C000..0x1F_C000 + init.len()], &init, 0x1F_C000, "PHY init data");
    assert!(
        all_ff(&flash[0x1F_B000..0x1F_C000]) && all_ff(&flash[0x1F_D000..]),
        "RF_CAL and system parameters blank"
    );
    let pattern = FakeRom::pattern(size);
    let user1_end = (0x1000 + user1.len()).next_multiple_of(SECTOR);
    assert_same(
        &flash[user1_end + SECTOR..0x1F_B000],
        &pattern[user1_end + SECTOR..0x1F_B000],
        user1_end + SECTOR,
        "nothing else changed",
    );

    // An image built for another map is refused before any port is opened.
    let other = image(FlashParams { size: FlashSize::Size4MC1, ..params }, 0x4010_0000, &irom, &[]);
    let other_path = write(dir.path(), "other.bin", &other);
    let args = parse(&[
        "--port",
        "/dev/null/none",
        "--image",
        &other_path,
        "--layout",
        "sdk-2MB-c1",
        "--sdk",
        sdk.to_str().unwrap(),
    ]);
    let error = cli::run(&args).unwrap_err();
    assert_eq!(
        error.to_string(),
        "user1.bin was built for the 4MB-c1 flash map, but the sdk-2MB-c1 layout is the SDK's 2MB-c1 map"
    );
    // The SDK's own bootloader goes at 0x0: another one is refused.
    let args = parse(&[
        "--port",
        "/dev/null/none",
        "--image",
        &image_path,
        "--layout",
        "sdk-2MB-c1",
        "--sdk",
        sdk.to_str().unwrap(),
        "--bootloader",
        &image_path,
    ]);
    assert!(matches!(cli::run(&args).unwrap_err(), FlashError::BootloaderOnSdkMap { layout: "sdk-2MB-c1" }));
}
