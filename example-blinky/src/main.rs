//! Blinks an LED and, with the `ota` feature (default), accepts new firmware over TCP port
//! 65056 through `ota-agent`. One program for every board `cargo tcpflash build --board`
//! knows; what differs lives in `board/` (chosen by `cfg(tcpflash_board)`):
//! - `esp8266` (default): GPIO2's LED, IP over SLIP on UART0 (works on any board without a
//!   WiFi driver; a WiFi driver's smoltcp `Device` plugs into the same `Interface`);
//! - `qemu`: QEMU's XTFPGA board, its Ethernet MAC on QEMU's user-mode network, its CFI
//!   flash, and messages on its UART.
//!
//! With `--platform nonos-sdk` (`cfg(tcpflash_platform = "nonos-sdk")`) the firmware runs on
//! Espressif's SDK instead: it joins the WiFi named at build time and the agent listens
//! there through espconn (`board/nonos_sdk.rs`; the SDK calls its `user_init`).
#![no_std]
#![no_main]

use core::panic::PanicInfo;

#[cfg(not(tcpflash_platform = "nonos-sdk"))]
use ota_agent::static_cell::StaticCell;
#[cfg(not(tcpflash_platform = "nonos-sdk"))]
use smoltcp::iface::{Interface, SocketSet, SocketStorage};
#[cfg(not(tcpflash_platform = "nonos-sdk"))]
use smoltcp::time::{Duration, Instant};
#[cfg(not(tcpflash_platform = "nonos-sdk"))]
use smoltcp::wire::{IpAddress, IpCidr};

#[cfg_attr(tcpflash_platform = "nonos-sdk", path = "board/nonos_sdk.rs")]
#[cfg_attr(all(not(tcpflash_platform = "nonos-sdk"), tcpflash_board = "qemu"), path = "board/qemu.rs")]
#[cfg_attr(
    all(not(tcpflash_platform = "nonos-sdk"), not(tcpflash_board = "qemu")),
    path = "board/esp8266/mod.rs"
)]
mod board;

#[cfg(not(tcpflash_platform = "nonos-sdk"))]
const BLINK: Duration = Duration::from_millis(500);

/// A line on the board's console, if it has one.
macro_rules! say {
    ($($arg:tt)*) => { board::log(format_args!($($arg)*)) };
}

/// The agent's two TCP sockets, and its mDNS socket with the `mdns` feature.
#[cfg(not(tcpflash_platform = "nonos-sdk"))]
const SOCKET_COUNT: usize = if cfg!(feature = "mdns") { 3 } else { 2 };
#[cfg(not(tcpflash_platform = "nonos-sdk"))]
static SOCKETS: StaticCell<[SocketStorage<'static>; SOCKET_COUNT]> =
    StaticCell::new([SocketStorage::EMPTY; SOCKET_COUNT]);
#[cfg(all(feature = "ota", not(tcpflash_platform = "nonos-sdk")))]
static OTA: StaticCell<ota_agent::net::OtaBuffers> = StaticCell::new(ota_agent::net::OtaBuffers::new());
/// The agent's key, from `TCPFLASH_KEY_FILE` at build time (see build.rs): with it, only a
/// push that proves it holds the key is accepted.
#[cfg(all(feature = "ota", ota_key))]
static OTA_KEY: ota_agent::auth::Key = *include_bytes!(concat!(env!("OUT_DIR"), "/ota_key.bin"));

/// The key the agent requires, if the firmware was built with one.
#[cfg(feature = "ota")]
#[allow(dead_code)] // the bare-metal main sets the key in its own config
fn ota_key() -> Option<&'static ota_agent::auth::Key> {
    #[cfg(ota_key)]
    return Some(&OTA_KEY);
    #[cfg(not(ota_key))]
    None
}

#[cfg(not(tcpflash_platform = "nonos-sdk"))]
#[allow(unsafe_code)] // a symbol of the start-up code, read for its address only
unsafe extern "C" {
    /// The slot descriptor cargo-tcpflash puts at the head of IROM: its address is where
    /// this image was linked.
    static TCPFLASH_DESCRIPTOR: u8;
}

#[cfg(not(tcpflash_platform = "nonos-sdk"))]
#[allow(unsafe_code)] // the entry the start-up code calls by name
#[unsafe(no_mangle)]
pub extern "C" fn main() -> ! {
    let (mut clock, mut led, mut device, mut watchdog) = board::init();
    say!(
        "{} {} on {}: booted, IROM linked at {:#010x}",
        env!("CARGO_PKG_NAME"),
        env!("CARGO_PKG_VERSION"),
        board::NAME,
        &raw const TCPFLASH_DESCRIPTOR as usize
    );
    // A firmware that fails before it confirms, for tests of trial boots: tcpflash-boot
    // boots it its attempts, then goes back to the firmware it replaced.
    #[cfg(feature = "panic-at-boot")]
    panic!("panic-at-boot: this build fails on purpose before it confirms");

    let mut iface = Interface::new(board::interface_config(), &mut device, clock.now());
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(board::DEVICE_IP), 24));
    });
    let _ = iface.routes_mut().add_default_ipv4_route(board::GATEWAY);
    let mut sockets = SocketSet::new(SOCKETS.take().as_mut_slice());

    #[cfg(feature = "ota")]
    let (mut agent, mut flash, mut platform) = {
        let layout = ota_agent::layout::DEFAULT_LAYOUT;
        #[allow(unused_mut)]
        let mut config = ota_agent::net::AgentConfig::new(layout);
        #[cfg(ota_key)]
        {
            config.key = Some(&OTA_KEY);
        }
        // QEMU's CFI flash erases 64 KB blocks only, so each 4 KB erase rewrites its whole
        // block (boot sector and config included, not power-cut safe): no background
        // pre-erase there, which would do that a hundred times after every update.
        #[cfg(tcpflash_board = "qemu")]
        {
            config.pre_erase = false;
        }
        #[cfg(feature = "mdns")]
        {
            config.mdns = Some(ota_agent::mdns::MdnsConfig::new(board::mdns_id()));
        }
        let agent = ota_agent::net::ota_init(config, &mut sockets, OTA.take());
        (agent, board::flash(layout), board::platform())
    };
    #[cfg(feature = "ota")]
    let mut watch = Watch::default();

    let mut next_blink = Instant::ZERO;
    loop {
        // Each pass is short (the agent's longest step is well under a second): a firmware
        // stuck anywhere is reset by the watchdog.
        watchdog.feed();
        let now = clock.now();
        #[cfg(feature = "ota")]
        {
            agent.poll_interface(now, &mut iface, &mut device, &mut sockets, &mut flash, &mut platform);
            watch.report(&agent);
        }
        #[cfg(not(feature = "ota"))]
        iface.poll(now, &mut device, &mut sockets);
        if now >= next_blink {
            led.toggle();
            next_blink = now + BLINK;
        }
    }
}

/// What the agent was doing at the last look, to say what changed.
#[cfg(all(feature = "ota", not(tcpflash_platform = "nonos-sdk")))]
#[derive(Default)]
struct Watch {
    started: bool,
    open: bool,
    done: bool,
}

#[cfg(all(feature = "ota", not(tcpflash_platform = "nonos-sdk")))]
impl Watch {
    fn report(&mut self, agent: &ota_agent::net::OtaAgent<'_>) {
        use ota_agent::session::Phase;
        if !self.started {
            self.started = true;
            use ota_agent::boot::BootStatus;
            match agent.running().map(|running| (running.slot, running.status)) {
                Some((Some(slot), BootStatus::Untracked)) => {
                    say!("boot config selects {slot}; listening on port 65056")
                }
                Some((Some(slot), status)) => say!("tcpflash-boot started {slot} ({status:?}); listening on port 65056"),
                _ => say!("no valid boot config; listening on port 65056"),
            }
        }
        let session = agent.listener().session();
        let open = session.phase() != Phase::Idle;
        if open && !self.open {
            say!("client connected");
        }
        if session.reboot_at().is_some() && !self.done {
            self.done = true;
            let slot = session.target().map_or("?", |slot| slot.name());
            say!("update done: {slot} verified and selected; resetting once the client has the answer");
        }
        if !open && self.open {
            match session.last_failure() {
                Some(failure) => say!("client left: {failure}"),
                None => say!("client left"),
            }
        }
        self.open = open;
    }
}

/// Says why and resets: the bootloader runs again (and counts a trial's attempt), instead
/// of a board that hangs until someone power-cycles it.
#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    say!("panic: {info}; resetting");
    board::reset()
}
