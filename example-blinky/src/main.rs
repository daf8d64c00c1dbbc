//! Blinks the LED on GPIO2 and, with the `ota` feature (default), accepts new firmware over
//! TCP port 65056 through `ota-agent`. The network is SLIP on UART0 (see `slip_uart`), which
//! works on any board without a WiFi driver; a WiFi driver's smoltcp `Device` plugs into the
//! same `Interface` in its place.
#![no_std]
#![no_main]

use core::panic::PanicInfo;

use ota_agent::boards::esp8266;
use smoltcp::iface::{Config, Interface, SocketSet, SocketStorage};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Address};

mod led;
mod slip_uart;

/// This board on the SLIP link, and the PC at the other end.
const DEVICE_IP: Ipv4Address = Ipv4Address::new(192, 168, 190, 2);
const HOST_IP: Ipv4Address = Ipv4Address::new(192, 168, 190, 1);
const BAUD: u32 = 115_200;
const BLINK: Duration = Duration::from_millis(500);

static mut SOCKETS: [SocketStorage<'static>; 2] = [SocketStorage::EMPTY; 2];
#[cfg(feature = "ota")]
static mut OTA: ota_agent::net::OtaBuffers = ota_agent::net::OtaBuffers::new();
/// The agent's key, from `TCPFLASH_KEY_FILE` at build time (see build.rs): with it, only a
/// push that proves it holds the key is accepted.
#[cfg(all(feature = "ota", ota_key))]
static OTA_KEY: ota_agent::auth::Key = *include_bytes!(concat!(env!("OUT_DIR"), "/ota_key.bin"));

#[unsafe(no_mangle)]
pub extern "C" fn main() -> ! {
    esp8266::disable_watchdog();
    esp8266::init_80mhz();
    let mut clock = esp8266::Clock::new();
    let mut led = led::Led::gpio2();
    let mut device = slip_uart::SlipUart::new(BAUD);

    let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut device, clock.now());
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(DEVICE_IP), 24));
    });
    let _ = iface.routes_mut().add_default_ipv4_route(HOST_IP);
    // SAFETY: `main` runs once and is the only user of these statics.
    let mut sockets = SocketSet::new(unsafe { &mut *(&raw mut SOCKETS) }.as_mut_slice());

    #[cfg(feature = "ota")]
    let (mut agent, mut flash, mut platform) = {
        let layout = ota_agent::layout::DEFAULT_LAYOUT;
        #[allow(unused_mut)]
        let mut config = ota_agent::net::AgentConfig::new(layout);
        #[cfg(ota_key)]
        {
            config.key = Some(&OTA_KEY);
        }
        // SAFETY: as above.
        let agent = ota_agent::net::ota_init(config, &mut sockets, unsafe { &mut *(&raw mut OTA) });
        (agent, esp8266::RomFlash::new(layout.flash_size), esp8266::Esp8266)
    };

    let mut next_blink = Instant::ZERO;
    loop {
        let now = clock.now();
        #[cfg(feature = "ota")]
        agent.poll_interface(now, &mut iface, &mut device, &mut sockets, &mut flash, &mut platform);
        #[cfg(not(feature = "ota"))]
        iface.poll(now, &mut device, &mut sockets);
        if now >= next_blink {
            led.toggle();
            next_blink = now + BLINK;
        }
    }
}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    loop {}
}
