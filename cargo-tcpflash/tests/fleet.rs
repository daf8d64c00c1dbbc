//! Discovery and fleet pushes through the real binary, each test in a network namespace of
//! its own (`unshare --net --pid`: loopback only, with multicast on), so no mDNS packet can
//! reach a real interface, and every process the test starts dies with the namespace.
//! Virtual devices (`cargo tcpflash sim --name`) announce themselves there; `cargo tcpflash
//! list` must show exactly them, and `--all` pushes example-blinky to all of them at once.
//!
//! Every wait is bounded, and no outcome is judged by how long anything took.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::{blinky, tcpflash};

use ota_agent::boot::Running;
use ota_agent::descriptor::Descriptor;
use ota_agent::image::{self, FlashParams, Segment};
use ota_agent::layout::{DEFAULT_LAYOUT, SlotId};
use tcpflash_sim::mdns::Announcer;

const NETNS_ENV: &str = "TCPFLASH_TEST_NETNS";
/// Upper bound for one CLI run or one wait, so a bug fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(180);
/// The build the virtual devices start with (example-blinky's name, another build).
const OLD_BUILD: &str = "1111111111111111";

/// Outside a private namespace: runs test `name` again inside one (network and PID: when the
/// test ends, every process it started ends too) and fails unless it passed there; false
/// tells the caller to return. Inside: checks loopback is the only interface; true.
fn in_private_netns(name: &str) -> bool {
    if std::env::var_os(NETNS_ENV).is_some() {
        let devices = std::fs::read_to_string("/proc/self/net/dev").unwrap();
        let names: Vec<&str> =
            devices.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
        assert_eq!(names, ["lo"], "not in a private network namespace");
        return true;
    }
    let output = Command::new("unshare")
        .args(["--net", "--pid", "--fork", "--kill-child", "--"])
        .args(["sh", "-c", "ip link set lo up && ip link set lo multicast on && exec \"$@\"", "sh"])
        .arg(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(NETNS_ENV, "1")
        .output()
        .expect("run unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{name} in a private network namespace (needs root for `unshare`, and iproute2's `ip`): {}\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    false
}

fn run(command: &mut Command) -> Output {
    let child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait(child)
}

fn wait(mut child: Child) -> Output {
    let deadline = Instant::now() + PATIENCE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("cargo tcpflash still runs after {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A user1 image of "example-blinky" with another build than the one the test pushes.
fn old_image(dir: &Path) -> PathBuf {
    let link = DEFAULT_LAYOUT.slot(SlotId::User1).irom_link_addr();
    let mut irom = Descriptor::new(link, [0x11; 8], "example-blinky", "0.0.1").unwrap().to_bytes().to_vec();
    irom.extend([0x5A; 300]);
    let mut out = Vec::new();
    image::write_v2(
        FlashParams::default(),
        0x4010_0004,
        &irom,
        &[Segment { addr: 0x4010_0000, data: &[0xA5; 64] }],
        &mut |bytes| out.extend_from_slice(bytes),
    )
    .unwrap();
    let path = dir.join("old-user1.bin");
    std::fs::write(&path, out).unwrap();
    path
}

/// A virtual device running in the namespace, its output lines collected.
struct Sim {
    child: Child,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Sim {
    fn start(dir: &Path, name: &str, image: &Path) -> Sim {
        let flash = dir.join(format!("{name}.flash"));
        let mut child = tcpflash(&["sim", "--port", "0", "--timed", "--name", name, "--flash"])
            .arg(&flash)
            .arg("--image")
            .arg(image)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let mut sim = Sim { child, port: 0, log };
        let listening = sim.wait_for(|line| line.starts_with("listening on 127.0.0.1:"), 1);
        sim.port = listening["listening on 127.0.0.1:".len()..].split(' ').next().unwrap().parse().unwrap();
        sim.wait_for(|line| line.starts_with("mdns: "), 1);
        sim
    }

    /// Waits until `count` lines match; the last of them.
    fn wait_for(&self, matches: impl Fn(&str) -> bool, count: usize) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            {
                let log = self.log.lock().unwrap();
                let found: Vec<&String> = log.iter().filter(|line| matches(line)).collect();
                if found.len() >= count {
                    return found[count - 1].clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "waited {PATIENCE:?}; the device said: {:?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn count(&self, matches: impl Fn(&str) -> bool) -> usize {
        self.log.lock().unwrap().iter().filter(|line| matches(line)).count()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rows of a table: cells split at two or more spaces.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .skip(1)
        .filter(|line| !line.is_empty() && !line.starts_with("note:") && !line.contains(" boards updated"))
        .map(|line| {
            line.split("  ").map(str::trim).filter(|cell| !cell.is_empty()).map(String::from).collect()
        })
        .collect()
}

/// The build the push announced on stderr (`Pushing example-blinky 0.1.0 (build ...)`).
fn pushed_build(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let at = stderr.find("(build ").unwrap_or_else(|| panic!("no build in {stderr}")) + "(build ".len();
    stderr[at..at + 16].to_owned()
}

fn text(output: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn three_virtual_devices_are_listed_pushed_at_once_and_one_killed_mid_push_fails_alone() {
    if !in_private_netns(
        "three_virtual_devices_are_listed_pushed_at_once_and_one_killed_mid_push_fails_alone",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = old_image(dir.path());
    let mut sims: Vec<Sim> =
        ["alpha", "beta", "gamma"].iter().map(|name| Sim::start(dir.path(), name, &image)).collect();

    // `list`: exactly these three, each with its port and the build it runs.
    let listed = run(&mut tcpflash(&["list", "--timeout", "2"]));
    assert!(listed.status.success(), "{}", text(&listed));
    let table = String::from_utf8_lossy(&listed.stdout);
    let found = rows(&table);
    assert_eq!(found.len(), 3, "{table}");
    for (row, (name, sim)) in found.iter().zip(["alpha", "beta", "gamma"].iter().zip(&sims)) {
        assert_eq!(row[0], format!("{name}.local"), "{table}");
        assert_eq!(row[1], format!("127.0.0.1:{}", sim.port), "{table}");
        assert_eq!(row[2..7], ["example-blinky", "0.0.1", OLD_BUILD, "user1", "no"], "{table}");
    }
    assert!(!table.contains("note:"), "{table}");

    // `--all`: all three in parallel, each back on the new build.
    let pushed = run(tcpflash(&["--all", "--discover-timeout", "2", "--manifest-path"]).arg(blinky()));
    assert!(pushed.status.success(), "{}", text(&pushed));
    let new_build = pushed_build(&pushed);
    assert_ne!(new_build, OLD_BUILD);
    let table = String::from_utf8_lossy(&pushed.stdout);
    let results = rows(&table);
    assert_eq!(results.len(), 3, "{table}");
    for (row, (name, sim)) in results.iter().zip(["alpha", "beta", "gamma"].iter().zip(&sims)) {
        assert_eq!(row[0], format!("{name}.local (127.0.0.1:{})", sim.port), "{table}");
        assert_eq!(row[1..3], [OLD_BUILD, new_build.as_str()], "{table}");
        assert_eq!(row[4], "ok, runs user2", "{table}");
        sim.wait_for(|line| line == format!("booted user2 (example-blinky 0.1.0, build {new_build})"), 1);
    }
    assert!(table.contains("3 of 3 boards updated, 0 failed"), "{table}");
    // The devices were pushed at once: each had its client before any other's was done.
    for sim in &sims {
        assert_eq!(sim.count(|line| line.starts_with("reply: Flash upgrade success")), 1);
    }

    // Again, and beta is killed once its transfer began: its row says so, the others land.
    // A device faster than the kill (the image is all in before the signal lands) finished
    // its push: then the round is run again, a bounded number of times.
    let mut failed_alone = None;
    for round in 0..3 {
        let successes_before = sims[1].count(|line| line.starts_with("reply: Flash upgrade success"));
        let readies_before = sims[1].count(|line| line == "reply: Ready");
        let child = tcpflash(&["--all", "--discover-timeout", "2", "--manifest-path"])
            .arg(blinky())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        sims[1].wait_for(|line| line == "reply: Ready", readies_before + 1);
        let _ = sims[1].child.kill();
        let output = wait(child);
        let finished =
            sims[1].count(|line| line.starts_with("reply: Flash upgrade success")) > successes_before;
        if finished {
            eprintln!("round {round}: beta finished its push before the kill; again");
            sims[1] = Sim::start(dir.path(), "beta", &image);
            continue;
        }
        failed_alone = Some(output);
        break;
    }
    let output = failed_alone.expect("in three rounds beta was never killed before its push ended");
    eprintln!("{}", text(&output));
    assert_eq!(output.status.code(), Some(4), "a network failure: {}", text(&output));
    let table = String::from_utf8_lossy(&output.stdout);
    let results = rows(&table);
    assert_eq!(results.len(), 3, "{table}");
    assert!(results[0][4].starts_with("ok, runs user1"), "{table}");
    assert!(results[1][0].starts_with("beta.local"), "{table}");
    assert!(results[1][4].starts_with("FAILED: "), "{table}");
    assert!(results[2][4].starts_with("ok, runs user1"), "{table}");
    assert!(table.contains("2 of 3 boards updated, 1 failed"), "{table}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("beta.local"), "the report names the board");
    drop(sims);
}

#[test]
fn a_shared_name_is_reported_and_refused_and_a_board_that_refuses_connections_fails_its_row() {
    if !in_private_netns(
        "a_shared_name_is_reported_and_refused_and_a_board_that_refuses_connections_fails_its_row",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = old_image(dir.path());
    let twins = [Sim::start(dir.path(), "twin", &image), Sim::start(dir.path(), "twin", &image)];
    // A board that announces itself but whose agent does not listen.
    let closed_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = Arc::clone(&stop);
    let announcer = std::thread::spawn(move || {
        let mut announcer = Announcer::open_loopback("deaf", closed_port).unwrap();
        let firmware = Descriptor::new(0, [0x22; 8], "example-blinky", "0.0.2").unwrap();
        announcer.boot(Some(&firmware), &Running::untracked(Some(SlotId::User1)), false);
        while !stopper.load(Ordering::SeqCst) {
            announcer.poll();
            std::thread::sleep(Duration::from_millis(2));
        }
    });

    let listed = run(&mut tcpflash(&["list", "--timeout", "2"]));
    let table = String::from_utf8_lossy(&listed.stdout);
    let found = rows(&table);
    let hosts: Vec<&str> = found.iter().map(|row| row[0].as_str()).collect();
    assert_eq!(hosts, ["deaf.local", "twin.local", "twin.local"], "{table}");
    assert!(table.contains("note: 2 boards announce twin.local"), "{table}");

    // By the shared name: no guess, and nothing is pushed.
    let refused =
        run(tcpflash(&["--host", "twin.local", "--discover-timeout", "2", "--manifest-path"]).arg(blinky()));
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    let flat = text(&refused);
    assert!(flat.contains("2 boards answer as twin.local"), "{flat}");
    assert!(flat.contains("will not guess"), "{flat}");
    assert!(twins.iter().all(|twin| twin.count(|line| line.starts_with("client ")) == 0));

    // `--all`: both twins (two boards, one name) land; the deaf one fails its row.
    let pushed = run(tcpflash(&["--all", "--discover-timeout", "2", "--manifest-path"]).arg(blinky()));
    eprintln!("{}", text(&pushed));
    assert_eq!(pushed.status.code(), Some(4), "{}", text(&pushed));
    let table = String::from_utf8_lossy(&pushed.stdout);
    let results = rows(&table);
    assert_eq!(results.len(), 3, "{table}");
    assert_eq!(results[0][0], format!("deaf.local (127.0.0.1:{closed_port})"), "{table}");
    assert_eq!(results[0][1], "2222222222222222", "{table}");
    assert!(results[0][4].contains("refused the connection"), "{table}");
    assert!(
        results[1][4].starts_with("ok, runs user2") && results[2][4].starts_with("ok, runs user2"),
        "{table}"
    );
    for twin in &twins {
        assert_eq!(twin.count(|line| line.starts_with("reply: Flash upgrade success")), 1);
    }
    stop.store(true, Ordering::SeqCst);
    announcer.join().unwrap();
}
