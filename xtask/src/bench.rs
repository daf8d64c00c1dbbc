//! `cargo xtask bench`: how long a push takes, on a deterministic model of a board (the
//! seed's strategy, ours, ours into a pre-erased slot, and the flash floor), the whole cycle
//! from the host's connect to the new firmware's answer, and how fast our client pushes over
//! loopback against the seed's Python client. A benchmark, never a pass/fail test: it prints
//! numbers.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cargo_tcpflash::push::{self, Timeouts};
use clap::Args;
use miette::Diagnostic;
use ota_agent::flash::NorFlash;
use ota_agent::layout::{DEFAULT_LAYOUT, FlashLayout, LAYOUTS, SlotId};
use ota_agent::net::DEFAULT_RX;
use ota_agent::writer::SECTOR;
use tcpflash_sim::timed::{FlashTimings, FlashWork, flash_floor, image_of_len};
use tcpflash_sim::timed_push::{
    self, Agent, Cycle, DeviceModel, HostCheck, LinkModel, ModelError, Outcome, PushModel,
};
use tcpflash_sim::{DeviceEvent, VirtualDevice};
use thiserror::Error;

/// The seed's receive window: lwIP's usual TCP_WND of four 1460-byte segments, as the
/// ESP8266 SDK's espconn runs it.
pub const SEED_WINDOW: usize = 4 * 1460;
/// The seed's lwIP hands each received segment to its callback, which writes the flash
/// inline; the stack acknowledges after the callback returns.
const SEED_FEED: usize = 1460;
/// Our driver (`ota_agent::net`) hands the session at most a sector per poll.
const OUR_FEED: usize = SECTOR;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Image size on the model, in KiB (the image is the largest valid one up to that size).
    #[arg(long, default_value_t = 400, value_name = "KIB")]
    pub image_kib: usize,
    /// Link bandwidth in bytes per second, each way.
    #[arg(long, default_value_t = 1_000_000, value_name = "BYTES")]
    pub bandwidth: u64,
    /// Link round-trip time in milliseconds.
    #[arg(long, default_value_t = 5.0, value_name = "MS")]
    pub rtt_ms: f64,
    /// 4 KB sector erase time in milliseconds.
    #[arg(long, default_value_t = 45.0, value_name = "MS")]
    pub sector_erase_ms: f64,
    /// 64 KB block erase time in milliseconds.
    #[arg(long, default_value_t = 150.0, value_name = "MS")]
    pub block_erase_ms: f64,
    /// 256-byte page program time in milliseconds.
    #[arg(long, default_value_t = 0.7, value_name = "MS")]
    pub page_program_ms: f64,
    /// Our agent's receive window in bytes (default: the agent's DEFAULT_RX).
    #[arg(long, default_value_t = DEFAULT_RX, value_name = "BYTES")]
    pub window: usize,
    /// The seed agent's receive window in bytes.
    #[arg(long, default_value_t = SEED_WINDOW, value_name = "BYTES")]
    pub seed_window: usize,
    /// Bytes of each loopback push of the host measurement.
    #[arg(long, default_value_t = 1_000_000, value_name = "BYTES")]
    pub host_bytes: usize,
    /// Pushes per client in the host measurement, the two clients taking turns (the median
    /// counts; the spread is printed).
    #[arg(long, default_value_t = 21, value_name = "N")]
    pub host_rounds: usize,
}

#[derive(Debug, Error, Diagnostic)]
pub enum BenchError {
    #[error("{what} must be a positive number, not {value}")]
    #[diagnostic(help("for example the default, {default}"))]
    BadNumber { what: &'static str, value: f64, default: &'static str },
    #[error("no slot of the {layout} layout holds a {len}-byte image")]
    #[diagnostic(help("use a smaller --image-kib or --host-bytes (at most {max} bytes)"))]
    TooLarge { layout: &'static str, len: usize, max: u32 },
    #[error("the modelled push ({what}) did not complete")]
    #[diagnostic(help("this is a bug in the model or the agent: please report it with the command line"))]
    Model {
        what: &'static str,
        #[source]
        source: ModelError,
    },
    #[error("cannot run the virtual ESP8266 for the host measurement")]
    #[diagnostic(help("it listens on a free port of 127.0.0.1: check that loopback works"))]
    Device(#[source] std::io::Error),
    #[error("the virtual ESP8266 did not come back after a push")]
    #[diagnostic(help("its log so far: {log}"))]
    NotBack { log: String },
    #[error("`cargo tcpflash`'s push to the virtual ESP8266 failed")]
    #[diagnostic(transparent)]
    Push(#[from] push::PushError),
    #[error("cannot run {}", script.display())]
    #[diagnostic(help("the seed client needs python3 on PATH"))]
    Python {
        script: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the seed client failed ({status}): {output}")]
    #[diagnostic(help("run it by hand against `cargo xtask sim` to see why"))]
    SeedClient { status: std::process::ExitStatus, output: String },
    #[error("cannot write the images for the seed client")]
    Files(#[source] std::io::Error),
}

/// One modelled push, for the table.
pub struct Row {
    pub name: String,
    pub window: Option<usize>,
    pub time: Duration,
    pub work: FlashWork,
}

/// The model's results.
pub struct ModelReport {
    pub model: PushModel,
    pub image_len: usize,
    pub layout: &'static FlashLayout,
    pub seed: Row,
    pub ours: Row,
    /// Ours into an idle slot the agent pre-erased (its default once the firmware is
    /// confirmed).
    pub pre_erased: Row,
    pub floor: Row,
    /// Ours or the seed with one lever changed.
    pub levers: Vec<Row>,
    /// From the host's connect to the new firmware's answer: the seed's, ours without
    /// pre-erase, ours into a pre-erased slot.
    pub seed_cycle: Cycle,
    pub cycle_erasing: Cycle,
    pub cycle: Cycle,
}

/// The loopback results.
pub struct HostReport {
    pub bytes: usize,
    /// Each push by our client's code, from connect to the success line.
    pub ours: Vec<Duration>,
    pub seed_client: Vec<SeedClientRun>,
}

/// Runs `cargo xtask bench`: prints the tables and ends with the `bench:` line.
pub fn run(args: &BenchArgs) -> Result<(), BenchError> {
    let model = push_model(args)?;
    let report = model_pushes(&model, args)?;
    print!("{}", report.table());
    let host = host_pushes(args.host_bytes, args.host_rounds)?;
    print!("{}", host.table());
    println!(
        "bench: ours_s={:.3} seed_s={:.3} floor_s={:.3} ratio_vs_seed={:.3} ratio_vs_floor={:.3} preerased_s={:.3} \
         preerased_ratio_vs_floor={:.3} cycle_s={:.3} seed_cycle_s={:.3} cycle_ratio_vs_seed={:.3} \
         host_ratio_vs_seed_client={:.3}",
        report.ours.time.as_secs_f64(),
        report.seed.time.as_secs_f64(),
        report.floor.time.as_secs_f64(),
        report.ours_vs_seed(),
        report.ours_vs_floor(),
        report.pre_erased.time.as_secs_f64(),
        report.pre_erased_vs_floor(),
        report.cycle.total().as_secs_f64(),
        report.seed_cycle.total().as_secs_f64(),
        report.cycle_vs_seed(),
        host.ratio(),
    );
    Ok(())
}

fn push_model(args: &BenchArgs) -> Result<PushModel, BenchError> {
    let ms = |what: &'static str, value: f64, default: &'static str| {
        if value > 0.0 && value.is_finite() && value < 1e6 {
            Ok(Duration::from_secs_f64(value / 1000.0))
        } else {
            Err(BenchError::BadNumber { what, value, default })
        }
    };
    let positive = |what: &'static str, value: usize, default: &'static str| {
        if value > 0 { Ok(value) } else { Err(BenchError::BadNumber { what, value: value as f64, default }) }
    };
    if args.bandwidth == 0 {
        return Err(BenchError::BadNumber { what: "--bandwidth", value: 0.0, default: "1000000" });
    }
    Ok(PushModel {
        flash: FlashTimings {
            sector_erase: ms("--sector-erase-ms", args.sector_erase_ms, "45")?,
            block_erase: ms("--block-erase-ms", args.block_erase_ms, "150")?,
            page_program: ms("--page-program-ms", args.page_program_ms, "0.7")?,
            ..FlashTimings::default()
        },
        link: LinkModel {
            bandwidth: args.bandwidth,
            rtt: ms("--rtt-ms", args.rtt_ms, "5")?,
            ..LinkModel::default()
        },
        device: DeviceModel {
            rx_window: positive("--window", args.window, "12288")?,
            feed_per_poll: OUR_FEED,
        },
    })
}

/// The seed's strategy, ours, the floor, and ours with one lever changed at a time.
pub fn model_pushes(model: &PushModel, args: &BenchArgs) -> Result<ModelReport, BenchError> {
    let layout = DEFAULT_LAYOUT;
    let target = layout.slot(SlotId::User2);
    let len = args.image_kib * 1024;
    if len > target.capacity as usize || len < 1024 {
        return Err(BenchError::TooLarge { layout: layout.name, len, max: target.capacity });
    }
    let new = [0, 1].map(|i| image_of_len(layout, &layout.slots[i], len, 2));
    // The slot to be written holds an older, smaller image; user1 runs.
    let old = image_of_len(layout, target, len * 3 / 4, 1);
    let device = || timed_push::device_flash(layout, SlotId::User1, [&new[0], &old]);
    let run = |what: &'static str, agent: Agent, device_model: DeviceModel| -> Result<Outcome, BenchError> {
        let model = PushModel { device: device_model, ..*model };
        timed_push::push(&model, agent, layout, device(), [&new[0], &new[1]])
            .map_err(|source| BenchError::Model { what, source })
    };
    let row = |name: &str, window: usize, outcome: Outcome| Row {
        name: name.to_owned(),
        window: Some(window),
        time: outcome.time,
        work: outcome.flash_work,
    };
    let seed_model = DeviceModel { rx_window: args.seed_window, feed_per_poll: SEED_FEED };
    let seed =
        row("seed: C agent, sector by sector", seed_model.rx_window, run("seed", Agent::Seed, seed_model)?);
    let ours = row("ours", model.device.rx_window, run("ours", Agent::Ours, model.device)?);
    let pre_erased = row(
        "ours, into a pre-erased slot",
        model.device.rx_window,
        run("ours, pre-erased", Agent::OursPreErased, model.device)?,
    );
    let floor_work = flash_floor(target, new[1].len() as u32, &model.flash);
    let floor =
        Row { name: "flash floor".to_owned(), window: None, time: floor_work.total(), work: floor_work };

    let mut levers = Vec::new();
    let old_window = 2 * 1460;
    let lever = DeviceModel { rx_window: old_window, ..model.device };
    levers.push(row(
        "ours, 2920-byte window (before)",
        old_window,
        run("ours, small window", Agent::Ours, lever)?,
    ));
    let lever = DeviceModel { feed_per_poll: usize::MAX, ..model.device };
    levers.push(row(
        "ours, all received bytes fed per poll",
        lever.rx_window,
        run("ours, unpaced", Agent::Ours, lever)?,
    ));
    let lever = DeviceModel { rx_window: model.device.rx_window, ..seed_model };
    levers.push(row("seed with our window", lever.rx_window, run("seed, our window", Agent::Seed, lever)?));

    // The cycle: the seed's host has no check of its own; it is given one that connects the
    // moment the device listens. Ours looks as `cargo tcpflash` does.
    let ours_check = HostCheck { first_look: push::RETRY_PAUSE, retry: push::RETRY_PAUSE };
    let cycle = |what: &'static str, agent: Agent, device_model: DeviceModel, host: HostCheck| {
        let model = PushModel { device: device_model, ..*model };
        timed_push::cycle(&model, &host, agent, layout, device(), [&new[0], &new[1]])
            .map_err(|source| BenchError::Model { what, source })
    };
    let seed_cycle = cycle("seed cycle", Agent::Seed, seed_model, HostCheck::IDEAL)?;
    let cycle_erasing = cycle("cycle", Agent::Ours, model.device, ours_check)?;
    let pre_erased_cycle = cycle("pre-erased cycle", Agent::OursPreErased, model.device, ours_check)?;
    Ok(ModelReport {
        model: *model,
        image_len: new[1].len(),
        layout,
        seed,
        ours,
        pre_erased,
        floor,
        levers,
        seed_cycle,
        cycle_erasing,
        cycle: pre_erased_cycle,
    })
}

impl ModelReport {
    pub fn ours_vs_seed(&self) -> f64 {
        self.ours.time.as_secs_f64() / self.seed.time.as_secs_f64()
    }

    pub fn ours_vs_floor(&self) -> f64 {
        self.ours.time.as_secs_f64() / self.floor.time.as_secs_f64()
    }

    pub fn pre_erased_vs_floor(&self) -> f64 {
        self.pre_erased.time.as_secs_f64() / self.floor.time.as_secs_f64()
    }

    pub fn cycle_vs_seed(&self) -> f64 {
        self.cycle.total().as_secs_f64() / self.seed_cycle.total().as_secs_f64()
    }

    pub fn table(&self) -> String {
        let f = &self.model.flash;
        let l = &self.model.link;
        let target = self.layout.slot(SlotId::User2);
        let mut out = format!(
            "Timed model (deterministic, virtual time): flash {} ms sector erase, {} ms 64 KB block erase, \
             {} ms page program, {} us per 64 bytes read; link {} B/s, {} ms RTT, {}-byte segments; \
             one core that serves no packets while the flash works.\n\
             A {}-byte image to {} of the {} layout (at {:#x}), where an older one lies; user1 runs.\n\n\
             | push | window | time | flash busy | waiting | sector / block erases | pages | read |\n\
             |---|---|---|---|---|---|---|---|\n",
            millis(f.sector_erase),
            millis(f.block_erase),
            millis(f.page_program),
            f.read_64_bytes.as_micros(),
            l.bandwidth,
            millis(l.rtt),
            l.mss,
            self.image_len,
            target.id,
            self.layout.name,
            target.offset,
        );
        for row in [&self.seed, &self.ours, &self.pre_erased, &self.floor] {
            out += &row.line();
        }
        out += &format!(
            "\nours / seed = {:.3} (goal <= 0.5), ours / floor = {:.3} (goal <= 1.07), pre-erased / floor = {:.3} \
             (goal <= 0.55)\n\nOne lever changed:\n\n\
             | push | window | time | flash busy | waiting | sector / block erases | pages | read |\n\
             |---|---|---|---|---|---|---|---|\n",
            self.ours_vs_seed(),
            self.ours_vs_floor(),
            self.pre_erased_vs_floor(),
        );
        for row in &self.levers {
            out += &row.line();
        }
        out += &format!(
            "\nThe cycle, from the host's connect to the new firmware's answer to `GetNextFlash` (the \
             host's check on a new connection). The seed reboots 2 s after its success line, writes the \
             SDK's boot flag, and its bootloader reads only the headers and RAM segments; its host connects \
             the moment the device listens. Ours reboots once the client has closed after the success \
             line, tcpflash-boot checks the whole image, and `cargo tcpflash` looks {} ms after the line, \
             then every {} ms; the check-in confirms the trial on the flash before it answers. The \
             firmware's own start-up is left out for both.\n\n\
             | cycle | push | to the reboot | boot | waiting for the host | check | total |\n\
             |---|---|---|---|---|---|---|\n",
            push::RETRY_PAUSE.as_millis(),
            push::RETRY_PAUSE.as_millis(),
        );
        for (name, cycle) in [
            ("seed", &self.seed_cycle),
            ("ours, erasing as it writes", &self.cycle_erasing),
            ("ours, into the pre-erased slot (default)", &self.cycle),
        ] {
            out += &cycle_line(name, cycle);
        }
        out + &format!("\ncycle / seed's cycle = {:.3} (goal <= 0.25)\n\n", self.cycle_vs_seed())
    }
}

fn cycle_line(name: &str, cycle: &Cycle) -> String {
    let s = |duration: Duration| format!("{:.3} s", duration.as_secs_f64());
    format!(
        "| {name} | {} | {} | {} | {} | {} | **{}** |\n",
        s(cycle.push),
        s(cycle.to_reboot),
        s(cycle.boot),
        s(cycle.wait),
        s(cycle.check),
        s(cycle.total())
    )
}

impl Row {
    fn line(&self) -> String {
        let window = self.window.map_or("-".to_owned(), |w| w.to_string());
        let waiting = self.time.saturating_sub(self.work.total());
        format!(
            "| {} | {window} | {:.3} s | {:.3} s | {:.3} s | {} / {} | {} | {} KB |\n",
            self.name,
            self.time.as_secs_f64(),
            self.work.total().as_secs_f64(),
            waiting.as_secs_f64(),
            self.work.sector_erases,
            self.work.block_erases,
            self.work.page_programs,
            self.work.bytes_read / 1024,
        )
    }
}

fn millis(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1000.0;
    let text = format!("{ms:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The layout the host measurement uses: the first whose slots hold `bytes`.
fn host_layout(bytes: usize) -> Result<&'static FlashLayout, BenchError> {
    LAYOUTS.iter().find(|layout| layout.slots.iter().all(|slot| slot.capacity as usize >= bytes)).ok_or(
        BenchError::TooLarge { layout: LAYOUTS[3].name, len: bytes, max: LAYOUTS[3].slots[1].capacity },
    )
}

/// Pushes `bytes`-byte images to one virtual ESP8266 (RAM flash) on loopback, alternating
/// `cargo tcpflash`'s push code and the seed's `tcp_flash.py`, `rounds` times each.
pub fn host_pushes(bytes: usize, rounds: usize) -> Result<HostReport, BenchError> {
    let layout = host_layout(bytes)?;
    let images = [0, 1].map(|i| image_of_len(layout, &layout.slots[i], bytes, 5));
    let mut flash = timed_push::device_flash(layout, SlotId::User1, [&images[0], &[]]);
    let mut bootloader = crate::sim::stand_in_bootloader(layout);
    bootloader.resize(bootloader.len().next_multiple_of(4), 0xFF);
    // In place of the bare header the model's chip carries.
    flash.erase(0, ota_agent::layout::SECTOR_SIZE).expect("sector 0 exists");
    flash.write(0, &bootloader).expect("the bootloader fits sector 0");
    let files = tempfile::tempdir().map_err(BenchError::Files)?;
    let paths = [0, 1].map(|i| files.path().join(format!("user{}.bin", i + 1)));
    for (path, image) in paths.iter().zip(&images) {
        std::fs::write(path, image).map_err(BenchError::Files)?;
    }

    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(BenchError::Device)?;
    let port = listener.local_addr().map_err(BenchError::Device)?.port();
    let stop = Arc::new(AtomicBool::new(false));
    let boots = Arc::new(Mutex::new(Vec::<String>::new()));
    let device = {
        let (stop, boots) = (Arc::clone(&stop), Arc::clone(&boots));
        std::thread::spawn(move || {
            let mut device = VirtualDevice::new(flash, layout).expect("the flash has the layout's size");
            device.serve(&listener, &stop, &mut |event: &DeviceEvent| {
                if matches!(event, DeviceEvent::Booted { .. }) {
                    boots.lock().expect("not poisoned").push(event.to_string());
                }
            })
        })
    };
    let measured = measure_clients(port, &images, &paths, rounds, &boots);
    stop.store(true, Ordering::SeqCst);
    let _ = device.join();
    let (ours, seed_client) = measured?;
    Ok(HostReport { bytes: images[0].len(), ours, seed_client })
}

fn measure_clients(
    port: u16,
    images: &[Vec<u8>; 2],
    paths: &[PathBuf; 2],
    rounds: usize,
    boots: &Mutex<Vec<String>>,
) -> Result<(Vec<Duration>, Vec<SeedClientRun>), BenchError> {
    let target = push::resolve("127.0.0.1", port)?;
    let timeouts = Timeouts {
        connect: Duration::from_secs(5),
        reply: Duration::from_secs(30),
        reboot: Duration::from_secs(30),
    };
    let script = seed_client_script();
    let (mut ours, mut seed) = (Vec::new(), Vec::new());
    let mut booted = 1;
    for _ in 0..rounds {
        wait_for_boot(boots, booted)?;
        let start = Instant::now();
        push::push(&target, [&images[0], &images[1]], None, &timeouts, &Default::default(), &mut |_| {})?;
        ours.push(start.elapsed());
        booted += 1;

        wait_for_boot(boots, booted)?;
        seed.push(run_seed_client(&script, port, paths)?);
        booted += 1;
    }
    Ok((ours, seed))
}

/// Runs the seed client unchanged inside a small wrapper that times it from its first line
/// to its exit, as our push is timed (the interpreter's start-up is left out, reported
/// apart). Returns (script time, whole process time).
fn run_seed_client(script: &Path, port: u16, paths: &[PathBuf; 2]) -> Result<SeedClientRun, BenchError> {
    const WRAPPER: &str = "import runpy, sys, time\n\
        sys.argv = sys.argv[1:]\n\
        start = time.perf_counter()\n\
        code = 0\n\
        try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n\
        except SystemExit as exit:\n    code = exit.code\n\
        sys.stderr.write('seed_client_seconds=%.6f\\n' % (time.perf_counter() - start))\n\
        sys.exit(code)\n";
    let start = Instant::now();
    let output = Command::new("python3")
        .args(["-c", WRAPPER])
        .arg(script)
        .arg("127.0.0.1")
        .args(paths)
        .env("TCP_FLASH_PORT", port.to_string())
        .output()
        .map_err(|source| BenchError::Python { script: script.into(), source })?;
    let process = start.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let script_time = stderr
        .lines()
        .find_map(|line| line.strip_prefix("seed_client_seconds="))
        .and_then(|seconds| seconds.trim().parse::<f64>().ok());
    match script_time {
        Some(seconds) if output.status.success() && stdout.contains("Flashing") => {
            Ok(SeedClientRun { script: Duration::from_secs_f64(seconds), process })
        }
        _ => Err(BenchError::SeedClient { status: output.status, output: format!("{stdout}{stderr}") }),
    }
}

/// One run of the seed client.
#[derive(Clone, Copy, Debug)]
pub struct SeedClientRun {
    /// From the script's first line to its exit.
    pub script: Duration,
    /// The whole `python3` process.
    pub process: Duration,
}

/// The device reboots after each push; the next push waits for it.
fn wait_for_boot(boots: &Mutex<Vec<String>>, count: usize) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while boots.lock().expect("not poisoned").len() < count {
        if Instant::now() > deadline {
            return Err(BenchError::NotBack { log: boots.lock().expect("not poisoned").join("; ") });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn seed_client_script() -> PathBuf {
    crate::demo::workspace_root().join("tools/tcp_flash.py")
}

fn median(times: &[Duration]) -> Duration {
    quantile(times, 1, 2)
}

/// The `num / den` quantile of `times` (nearest rank).
fn quantile(times: &[Duration], num: usize, den: usize) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[((sorted.len() - 1) * num).div_ceil(den).min(sorted.len() - 1)]
}

impl HostReport {
    fn seed_scripts(&self) -> Vec<Duration> {
        self.seed_client.iter().map(|run| run.script).collect()
    }

    fn seed_process(&self) -> Duration {
        median(&self.seed_client.iter().map(|run| run.process).collect::<Vec<_>>())
    }

    /// Our client's push time over the seed client's (medians of the interleaved runs; below
    /// 1: ours is faster).
    pub fn ratio(&self) -> f64 {
        median(&self.ours).as_secs_f64() / median(&self.seed_scripts()).as_secs_f64()
    }

    /// The ratio of each round's two pushes (ours, then the seed's, one after the other):
    /// its quartiles show how much the machine's load moved the figure.
    fn round_ratios(&self) -> (f64, f64) {
        let ratios: Vec<Duration> = self
            .ours
            .iter()
            .zip(self.seed_scripts())
            .map(|(ours, seed)| Duration::from_secs_f64(ours.as_secs_f64() / seed.as_secs_f64()))
            .collect();
        (quantile(&ratios, 1, 4).as_secs_f64(), quantile(&ratios, 3, 4).as_secs_f64())
    }

    pub fn table(&self) -> String {
        let ours = median(&self.ours);
        let seeds = self.seed_scripts();
        let seed = median(&seeds);
        let rate = |time: Duration| self.bytes as f64 / time.as_secs_f64() / 1e6;
        let ms = |time: Duration| time.as_secs_f64() * 1e3;
        let spread = |times: &[Duration]| {
            format!("{:.1} to {:.1} ms", ms(quantile(times, 1, 4)), ms(quantile(times, 3, 4)))
        };
        let (low, high) = self.round_ratios();
        let build = if cfg!(debug_assertions) {
            "\nThis xtask is a debug build: the Rust side (client and virtual device) runs unoptimized. \
             `cargo run --release -p xtask -- bench` measures optimized code.\n"
        } else {
            ""
        };
        format!(
            "Host side on loopback (wall clock, no model): {}-byte pushes to one virtual ESP8266 \
             (RAM flash), the two clients taking turns, {} rounds. Each client is timed from its \
             connect (the script's first line) to its last reply.\n\n\
             | client | push (median) | middle half of the runs | fastest | throughput (median) |\n\
             |---|---|---|---|---|\n\
             | cargo tcpflash (its push code; sends Sha256, so the device also hashes) | {:.1} ms | {} | {:.1} ms | {:.1} MB/s |\n\
             | tools/tcp_flash.py (the whole python3 process: {:.1} ms) | {:.1} ms | {} | {:.1} ms | {:.1} MB/s |\n\n\
             cargo tcpflash / tcp_flash.py = {:.3} (medians; round by round the middle half of the ratios \
             lies from {low:.3} to {high:.3})\n{build}\n",
            self.bytes,
            self.ours.len(),
            ms(ours),
            spread(&self.ours),
            ms(quantile(&self.ours, 0, 1)),
            rate(ours),
            ms(self.seed_process()),
            ms(seed),
            spread(&seeds),
            ms(quantile(&seeds, 0, 1)),
            rate(seed),
            self.ratio(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_layout_is_the_smallest_that_holds_the_image() {
        assert_eq!(host_layout(400_000).unwrap().name, "1MB");
        assert_eq!(host_layout(1_000_000).unwrap().name, "2MB");
        assert!(matches!(host_layout(2_000_000), Err(BenchError::TooLarge { .. })));
    }

    fn args(image_kib: usize) -> BenchArgs {
        BenchArgs {
            image_kib,
            bandwidth: 1_000_000,
            rtt_ms: 5.0,
            sector_erase_ms: 45.0,
            block_erase_ms: 150.0,
            page_program_ms: 0.7,
            window: DEFAULT_RX,
            seed_window: SEED_WINDOW,
            host_bytes: 1_000_000,
            host_rounds: 1,
        }
    }

    #[test]
    fn the_model_compares_the_same_image_three_ways() {
        let args = args(100);
        let model = push_model(&args).unwrap();
        let report = model_pushes(&model, &args).unwrap();
        let sectors = report.image_len.div_ceil(SECTOR) as u32;
        assert_eq!((report.seed.work.sector_erases, report.seed.work.block_erases), (sectors, 0));
        // 100 KB from 0x82000: 14 sectors, then 11 sectors of the next block, which one
        // block erase covers.
        assert_eq!((report.floor.work.sector_erases, report.floor.work.block_erases), (14, 1));
        assert_eq!(report.ours.work.block_erases, report.floor.work.block_erases);
        assert_eq!(report.ours.work.sector_erases, 14 + 1, "and the trial record's sector");
        assert!(report.ours.time > report.floor.time);
        // Into the pre-erased slot only the trial record's sector is erased.
        let pre_erased = &report.pre_erased.work;
        assert_eq!((pre_erased.sector_erases, pre_erased.block_erases), (1, 0));
        assert!(report.pre_erased.time < report.ours.time);
        // The cycles: each is its push and what follows it.
        assert_eq!(report.cycle.push, report.pre_erased.time);
        assert_eq!(report.cycle_erasing.push, report.ours.time);
        assert_eq!(report.seed_cycle.push, report.seed.time);
        assert!(report.seed_cycle.to_reboot > timed_push::SEED_REBOOT_DELAY - Duration::from_millis(5));
        assert!(report.cycle.total() < report.cycle_erasing.total());
        let table = report.table();
        assert!(table.contains("| ours | 12288 |"), "{table}");
        assert!(table.contains("| seed with our window | 12288 |"), "{table}");
        assert!(table.contains("| ours, into the pre-erased slot (default) | "), "{table}");
        assert!(table.contains("cycle / seed's cycle = "), "{table}");
        assert_eq!(report.levers.len(), 3);
    }

    #[test]
    fn bad_model_numbers_are_refused_with_the_default() {
        let mut bad = args(400);
        bad.rtt_ms = -1.0;
        let error = push_model(&bad).err().unwrap();
        assert_eq!(error.to_string(), "--rtt-ms must be a positive number, not -1");
        let mut bad = args(1000);
        assert!(matches!(model_pushes(&push_model(&bad).unwrap(), &bad), Err(BenchError::TooLarge { .. })));
        bad.window = 0;
        assert!(matches!(push_model(&bad), Err(BenchError::BadNumber { what: "--window", .. })));
    }

    #[test]
    fn both_clients_push_to_the_same_virtual_device() {
        let report = host_pushes(64 * 1024, 1).unwrap();
        assert_eq!((report.ours.len(), report.seed_client.len()), (1, 1));
        assert!(report.bytes > 64 * 1024 - 16 && report.bytes <= 64 * 1024);
        assert!(report.table().contains("tools/tcp_flash.py"));
    }

    #[test]
    fn quantiles_are_nearest_ranks() {
        let ms = |list: &[u64]| list.iter().map(|&ms| Duration::from_millis(ms)).collect::<Vec<_>>();
        let times = ms(&[5, 1, 4, 2, 3]);
        assert_eq!(quantile(&times, 0, 1), Duration::from_millis(1));
        assert_eq!(quantile(&times, 1, 4), Duration::from_millis(2));
        assert_eq!(quantile(&times, 3, 4), Duration::from_millis(4));
        assert_eq!(quantile(&times, 1, 1), Duration::from_millis(5));
        assert_eq!(median(&ms(&[7])), Duration::from_millis(7));
    }

    #[test]
    fn durations_print_without_trailing_zeros() {
        assert_eq!(millis(Duration::from_micros(700)), "0.7");
        assert_eq!(millis(Duration::from_millis(45)), "45");
        assert_eq!(
            median(&[Duration::from_secs(3), Duration::from_secs(1), Duration::from_secs(2)]),
            Duration::from_secs(2)
        );
    }
}
