//! A user's own firmware repository, outside this workspace: `cargo tcpflash new`, then
//! `cargo tcpflash build`, a push to `cargo tcpflash sim` and `cargo tcpflash serial-flash`
//! against the fake ROM, all run from the new crate's folder with the installed-style binary.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cargo_tcpflash::serial::fake_rom::FakeRom;

mod common;
use common::flat_stderr;

const PATIENCE: Duration = Duration::from_secs(300);

/// The binary as `cargo tcpflash` runs it, in `dir`, with a target dir kept between runs
/// (the new crate's dependencies are built once).
fn tcpflash(dir: &Path, args: &[&str]) -> Command {
    let mut command = common::tcpflash(args);
    command
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("new-firmware-target"));
    command
}

fn ok(output: Output) -> Output {
    assert!(output.status.success(), "failed ({}): {}", output.status, flat_stderr(&output));
    output
}

#[test]
fn a_new_crate_builds_pushes_to_the_virtual_device_and_installs_over_serial() {
    let dir = tempfile::tempdir().unwrap();
    ok(tcpflash(dir.path(), &["new", "porch-light"]).output().unwrap());
    let crate_dir = dir.path().join("porch-light");

    // Into a folder that is not empty: refused, nothing overwritten.
    let again = tcpflash(dir.path(), &["new", "porch-light"]).output().unwrap();
    assert!(!again.status.success());
    assert!(flat_stderr(&again).contains("porch-light is not empty"), "{}", flat_stderr(&again));

    let built = ok(tcpflash(&crate_dir, &["build"]).output().unwrap());
    let stderr = flat_stderr(&built);
    assert!(stderr.contains("Linking porch-light for user2"), "{stderr}");
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("new-firmware-target/tcpflash/1MB");
    let user2 = std::fs::read(target.join("user2.bin")).unwrap();
    assert_eq!(user2[0], 0xEA, "a v2 image");

    // The virtual ESP8266 started from the crate's folder serves this firmware.
    let flash = dir.path().join("board.flash");
    let mut sim = tcpflash(&crate_dir, &["sim", "--port", "0", "--flash"])
        .arg(&flash)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines, rx) = (BufReader::new(sim.stdout.take().unwrap()), mpsc::channel());
    let tx = rx.0;
    std::thread::spawn(move || {
        for line in lines.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let port = loop {
        let line = rx.1.recv_timeout(PATIENCE).expect("the virtual device starts");
        if let Some(rest) = line.strip_prefix("listening on 127.0.0.1:") {
            break rest.split(' ').next().unwrap().to_owned();
        }
    };
    let pushed = tcpflash(&crate_dir, &["--host", "127.0.0.1", "--port", &port]).output().unwrap();
    let _ = sim.kill();
    let _ = sim.wait();
    let pushed = ok(pushed);
    let stdout = String::from_utf8_lossy(&pushed.stdout);
    assert!(stdout.contains("pushed user2.bin (porch-light 0.1.0, build "), "{stdout}");
    assert!(stdout.contains("the device now runs user2"), "{stdout}");

    // The first install over serial, from the same folder: tcpflash-boot, config, user1.
    let fake = FakeRom::esp8266(0x10_0000).spawn().unwrap();
    let installed =
        ok(tcpflash(&crate_dir, &["serial-flash", "--no-reset", "--port", fake.path()]).output().unwrap());
    let stderr = flat_stderr(&installed);
    assert!(stderr.contains("Installed on an ESP8266EX (1MB layout): bootloader at 0x0"), "{stderr}");
    let fake = fake.finish();
    let user1 = std::fs::read(target.join("user1.bin")).unwrap();
    assert!(fake.flash()[0x2000..0x2000 + user1.len()] == user1[..], "user1 as built");
}
