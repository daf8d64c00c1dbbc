//! QEMU's XTFPGA board (`-M lx60-nommu -cpu lx106`): the FPGA's LED register, the OpenCores
//! Ethernet MAC on QEMU's user-mode network, the CFI flash, messages on the 16550 UART.

use core::fmt::{self, Write};

use ota_agent::boards::xtfpga::{self, OpenEth, Uart};
use smoltcp::iface::Config;
use smoltcp::wire::{EthernetAddress, HardwareAddress, Ipv4Address};

pub use xtfpga::OpenEth as Net;
pub use xtfpga::{Clock, reset};

pub const NAME: &str = "qemu";
/// QEMU's user-mode network: the guest and the gateway (the host).
pub const DEVICE_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
pub const GATEWAY: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
/// A locally administered address (the MAC has none until it is given one).
const MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x12, 0x34, 0x56];

/// What tells this board from others on mDNS: the MAC's last three bytes.
#[cfg(feature = "mdns")]
pub fn mdns_id() -> [u8; 3] {
    [MAC[3], MAC[4], MAC[5]]
}

pub fn init() -> (Clock, Led, Net, Watchdog) {
    (Clock::new(), Led { on: false }, OpenEth::new(MAC), Watchdog)
}

/// The XTFPGA board has no watchdog.
pub struct Watchdog;

impl Watchdog {
    pub fn feed(&mut self) {}
}

pub fn interface_config() -> Config {
    Config::new(HardwareAddress::Ethernet(EthernetAddress(MAC)))
}

#[cfg(feature = "ota")]
pub fn flash(_: &ota_agent::layout::FlashLayout) -> xtfpga::CfiFlash {
    xtfpga::CfiFlash::new()
}

#[cfg(feature = "ota")]
pub fn platform() -> Platform {
    Platform(xtfpga::Xtfpga::new())
}

/// The board's platform, saying so on the UART before it resets.
#[cfg(feature = "ota")]
pub struct Platform(xtfpga::Xtfpga);

#[cfg(feature = "ota")]
impl ota_agent::net::Platform for Platform {
    fn reboot(&mut self) {
        log(format_args!("resetting"));
        self.0.reboot();
    }

    fn fill_random(&mut self, buf: &mut [u8]) {
        self.0.fill_random(buf);
    }

    /// tcpflash-boot's record: without it the agent would take the board for rBoot's and
    /// switch for good, with no trial to go back from.
    fn boot_handoff(&mut self) -> Option<ota_agent::boot::handoff::HandOff> {
        self.0.boot_handoff()
    }
}

/// LED 0 of the FPGA's LED register.
pub struct Led {
    on: bool,
}

impl Led {
    pub fn toggle(&mut self) {
        self.on = !self.on;
        xtfpga::set_leds(u32::from(self.on));
    }
}

/// One line on the UART.
pub fn log(args: fmt::Arguments<'_>) {
    let _ = writeln!(Uart, "{args}");
}
