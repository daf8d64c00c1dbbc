//! The ESP8266: GPIO2's LED, IP over SLIP on UART0, the ROM's flash routines (all in
//! `ota_agent::boards::esp8266`). UART0 carries the network, so the firmware's own messages
//! go nowhere.

use core::fmt;

use ota_agent::boards::esp8266;
use smoltcp::iface::Config;
use smoltcp::wire::{HardwareAddress, Ipv4Address};

pub use esp8266::SlipUart as Net;
pub use esp8266::{Clock, Led, Watchdog, reset};

pub const NAME: &str = "esp8266";
/// This board on the SLIP link, and the PC at the other end.
pub const DEVICE_IP: Ipv4Address = Ipv4Address::new(192, 168, 190, 2);
pub const GATEWAY: Ipv4Address = Ipv4Address::new(192, 168, 190, 1);
const BAUD: u32 = 115_200;

/// Watchdog, clocks, LED and network up.
/// What tells this board from others on mDNS: the last three bytes of the chip's MAC.
#[cfg(feature = "mdns")]
pub fn mdns_id() -> [u8; 3] {
    ota_agent::boards::esp8266::mac_tail()
}

pub fn init() -> (Clock, Led, Net, Watchdog) {
    let watchdog = Watchdog::start();
    esp8266::init_80mhz();
    (Clock::new(), Led::gpio2(), Net::new(BAUD), watchdog)
}

/// SLIP carries bare IP packets.
pub fn interface_config() -> Config {
    Config::new(HardwareAddress::Ip)
}

#[cfg(feature = "ota")]
pub fn flash(layout: &ota_agent::layout::FlashLayout) -> esp8266::RomFlash {
    esp8266::RomFlash::new(layout.flash_size)
}

#[cfg(feature = "ota")]
pub fn platform() -> esp8266::Esp8266 {
    esp8266::Esp8266
}

/// No console: UART0 is the network.
pub fn log(_: fmt::Arguments<'_>) {}
