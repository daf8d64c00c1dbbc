//! `ota_init()` from C: a C program (tests/c/user_main.c, compiled with the host's `cc`)
//! calls the agent's C API from the host staticlib, with `ota_agent.h` as `cargo tcpflash
//! c-lib` writes it, on the fake SDK. `cargo tcpflash`'s push code pushes to it, with and
//! without a key; the flash file and the upgrade flag are checked.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use cargo_tcpflash::push::{self, Target, Timeouts};
use ota_agent::image::samples::{irom_for, write};
use ota_agent::image::{FlashParams, Segment};
use ota_agent::layout::SlotId;
use ota_agent::layout::sdk::SdkMap;
use tcpflash_sim::FileFlash;

/// The staticlib cargo built with this test: `cargo test` leaves it beside the test's
/// executable in `deps/`, named with its hash (only `cargo build` copies it up a folder);
/// the newest is this build's.
fn staticlib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let newest = std::fs::read_dir(deps)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.starts_with("libtcpflash_sdk_fake-") && name.ends_with(".a")
        })
        .max_by_key(|entry| entry.metadata().and_then(|meta| meta.modified()).ok());
    let lib = newest.map(|entry| entry.path());
    lib.unwrap_or_else(|| {
        panic!("no libtcpflash_sdk_fake-*.a in {} (cargo builds it with these tests)", deps.display())
    })
}

fn compile(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("ota_agent.h"), ota_agent::espconn::C_HEADER).unwrap();
    let program = dir.join("user_main");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/user_main.c");
    let output = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Werror", "-I"])
        .arg(dir)
        .arg(&source)
        .arg(staticlib())
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&program)
        .output()
        .expect("a host C compiler (cc)");
    assert!(output.status.success(), "cc failed:\n{}", String::from_utf8_lossy(&output.stderr));
    program
}

fn push_to(map: &SdkMap, key: Option<[u8; 32]>) {
    let dir = tempfile::tempdir().unwrap();
    let program = compile(dir.path());
    let flash = dir.path().join("board.flash");
    FileFlash::create(&flash, map.layout.flash_size, &[]).unwrap();
    let images = SlotId::ALL.map(|slot| {
        let irom = irom_for(map.layout.slot(slot).irom_link_addr(), 50_000);
        write(FlashParams::default(), 0x4010_0000, &irom, &[Segment { addr: 0x4010_0000, data: &[9; 32] }])
    });

    let mut command = Command::new(&program);
    command.arg(&flash).arg(map.size_map.to_string()).stdout(Stdio::piped());
    if let Some(key) = key {
        command.arg(hex::encode(key));
    }
    let mut child = command.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let port: u16 = line.trim().strip_prefix("port ").and_then(|p| p.parse().ok()).expect(&line);
    assert_ne!(port, 0, "ota_init() listens");

    let target = Target {
        host: "127.0.0.1".into(),
        port,
        addrs: vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))],
    };
    let timeouts = Timeouts {
        connect: Duration::from_secs(5),
        reply: Duration::from_secs(20),
        reboot: Duration::from_secs(5),
    };
    if key.is_some() {
        // The key reached the agent: a push without it is refused.
        let refused =
            push::push(&target, [&images[0], &images[1]], None, &timeouts, &Default::default(), &mut |_| {})
                .unwrap_err();
        assert!(refused.to_string().contains("Authentication required"), "{refused}");
    }
    // The refused connection is dropped from the agent's timer, a moment after its ERR line:
    // a client that comes back at once may find it still there.
    let mut attempts = 0;
    let pushed = loop {
        attempts += 1;
        match push::push(
            &target,
            [&images[0], &images[1]],
            key.as_ref(),
            &timeouts,
            &Default::default(),
            &mut |_| {},
        ) {
            Err(push::PushError::Device { line, .. })
                if line.ends_with("Connection Already Exists") && attempts < 20 =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            other => break other.unwrap(),
        }
    };
    assert_eq!(pushed.slot, SlotId::User2);

    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(line.trim(), "upgrade flag 2, rules broken 0");
    let bytes = std::fs::read(&flash).unwrap();
    let at = map.layout.slot(SlotId::User2).offset as usize;
    assert!(bytes[at..at + images[1].len()] == images[1][..], "user2 holds the image");
}

#[test]
fn a_c_program_calls_ota_init_and_takes_a_push() {
    push_to(SdkMap::by_name("sdk-1MB").unwrap(), None);
}

#[test]
fn a_c_program_calls_ota_init_with_key_and_takes_a_proven_push() {
    push_to(SdkMap::by_name("sdk-4MB-c1").unwrap(), Some([0x5A; 32]));
}
