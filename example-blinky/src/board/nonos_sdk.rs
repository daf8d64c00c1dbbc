//! example-blinky on Espressif's NONOS SDK (`cargo tcpflash build --platform nonos-sdk`):
//! the SDK gives the board WiFi, so the agent listens on the network the firmware joins
//! (`TCPFLASH_WIFI_SSID` / `TCPFLASH_WIFI_PASSWORD` at build time, see build.rs), over
//! espconn. The SDK owns the main loop: `user_init` sets things up and returns, the LED
//! blinks from an `os_timer`. Not yet verified on a board (see the README).
#![allow(unsafe_code)] // the SDK's C functions and the timer static they share

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::fmt::{self, Write};

use ota_agent::espconn::ffi::{EtsTimer, ets_timer_arm_new, ets_timer_setfn};

use ota_agent::boards::esp8266::Led;

/// A panic resets through the ROM; the SDK feeds the watchdogs itself.
pub use ota_agent::boards::esp8266::reset;

pub const NAME: &str = "esp8266 (NONOS SDK)";
const BLINK_MS: u32 = 500;
/// `STATION_MODE` of `wifi_set_opmode`.
const STATION_MODE: u8 = 1;

/// The SDK's `struct station_config` (116 bytes).
#[repr(C)]
struct StationConfig {
    ssid: [u8; 32],
    password: [u8; 64],
    channel: u8,
    bssid_set: u8,
    bssid: [u8; 6],
    /// `wifi_fast_scan_threshold_t`: `rssi` (int8) and `authmode` (an enum, 4 bytes).
    threshold_rssi: i8,
    threshold_authmode: u32,
    open_and_wep_mode_disable: bool,
    all_channel_scan: bool,
}

unsafe extern "C" {
    fn wifi_set_opmode(mode: u8) -> bool;
    fn wifi_station_set_config(config: *const StationConfig) -> bool;
    fn wifi_station_connect() -> bool;
    #[cfg(feature = "mdns")]
    fn wifi_get_macaddr(if_index: u8, mac: *mut u8) -> bool;
    fn os_printf_plus(format: *const u8, ...) -> i32;
}

/// The network named at build time (never printed; in the image, as any WiFi firmware's).
const SSID: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/wifi_ssid"));
const PASSWORD: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/wifi_password"));

/// State the SDK's task alone touches.
struct SdkTask<T>(UnsafeCell<T>);

// SAFETY: the SDK runs `user_init` and every timer callback on its single task, one at a
// time, so the LED and timer are never reached from two places at once.
unsafe impl<T> Sync for SdkTask<T> {}

static BLINK_TIMER: SdkTask<EtsTimer> = SdkTask(UnsafeCell::new(EtsTimer::new()));
static LED: SdkTask<Option<Led>> = SdkTask(UnsafeCell::new(None));

/// Called by the SDK once it is up.
#[unsafe(no_mangle)]
pub extern "C" fn user_init() {
    log(format_args!("{} {} on {}: booted", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"), NAME));
    join_wifi();
    // SAFETY: the SDK's task; the statics are only touched from here and the timer callback.
    unsafe {
        *LED.0.get() = Some(Led::gpio2());
        ets_timer_setfn(BLINK_TIMER.0.get(), blink, core::ptr::null_mut());
        ets_timer_arm_new(BLINK_TIMER.0.get(), BLINK_MS, true, true);
    }
    #[cfg(feature = "mdns")]
    let started = {
        let mut mac = [0u8; 6];
        // SAFETY: `mac` holds the six bytes the SDK writes.
        unsafe { wifi_get_macaddr(ota_agent::espconn::ffi::STATION_IF, mac.as_mut_ptr()) };
        ota_agent::espconn::ota_init_for_chip_with_mdns(
            crate::ota_key(),
            ota_agent::mdns::MdnsConfig::from_mac(mac),
        )
    };
    #[cfg(all(feature = "ota", not(feature = "mdns")))]
    let started = ota_agent::espconn::ota_init_for_chip(crate::ota_key());
    #[cfg(feature = "ota")]
    match started {
        Ok(()) => log(format_args!("listening on port 65056")),
        Err(error) => log(format_args!("no OTA: {error}")),
    }
}

fn join_wifi() {
    let mut config = StationConfig {
        ssid: [0; 32],
        password: [0; 64],
        channel: 0,
        bssid_set: 0,
        bssid: [0; 6],
        threshold_rssi: 0,
        threshold_authmode: 0,
        open_and_wep_mode_disable: false,
        all_channel_scan: false,
    };
    config.ssid[..SSID.len()].copy_from_slice(SSID);
    config.password[..PASSWORD.len()].copy_from_slice(PASSWORD);
    // SAFETY: SDK calls from `user_init`; `config` outlives the call (the SDK copies it).
    unsafe {
        wifi_set_opmode(STATION_MODE);
        wifi_station_set_config(&config);
        wifi_station_connect();
    }
}

unsafe extern "C" fn blink(_: *mut c_void) {
    // SAFETY: the SDK's task (see `SdkTask`).
    if let Some(led) = unsafe { (*LED.0.get()).as_mut() } {
        led.toggle();
    }
}

/// A line on UART0 through the SDK's printf.
pub fn log(args: fmt::Arguments<'_>) {
    let mut line = Line { bytes: [0; 128], len: 0 };
    let _ = line.write_fmt(args);
    let end = line.len.min(line.bytes.len() - 1);
    line.bytes[end] = 0;
    // SAFETY: a NUL-terminated format ("%s\n") and string, both alive for the call.
    unsafe { os_printf_plus(c"%s\n".as_ptr().cast(), line.bytes.as_ptr()) };
}

struct Line {
    bytes: [u8; 128],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let room = self.bytes.len() - 1 - self.len.min(self.bytes.len() - 1);
        let take = text.len().min(room);
        self.bytes[self.len..self.len + take].copy_from_slice(&text.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}
