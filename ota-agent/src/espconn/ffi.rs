//! The NONOS SDK functions and structs the agent uses, declared from the SDK's documented
//! API (ESP8266 Non-OS SDK API Reference; struct layouts as include/espconn.h of SDK 3.0.x has them).
//! On a board they resolve to the SDK's libraries (`libmain`, `liblwip`, `libwpa`); on the
//! host, to `tcpflash-sdk-fake`.
#![allow(unsafe_code)] // declarations of C functions: every call site says why it is sound

use core::ffi::c_void;

/// `ESPCONN_TCP` in `enum espconn_type`.
pub const ESPCONN_TCP: u32 = 0x10;
/// `espconn_regist_time` type flag: the timeout applies to every connection of a server.
pub const TIMEOUT_ALL_CONNECTIONS: u8 = 0;
/// The SDK's TCP maximum segment size (`espconn_tcp_get_wnd` counts windows in these).
pub const TCP_MSS: usize = 1460;
/// `UPGRADE_FLAG_FINISH`: the new image is in place; `system_upgrade_reboot` boots it.
pub const UPGRADE_FLAG_FINISH: u8 = 0x02;
/// `UPGRADE_FW_BIN1`, `UPGRADE_FW_BIN2`: what `system_upgrade_userbin_check` returns.
pub const UPGRADE_FW_BIN1: u8 = 0x00;
pub const UPGRADE_FW_BIN2: u8 = 0x01;
/// `SPI_FLASH_RESULT_OK`.
pub const SPI_FLASH_RESULT_OK: u32 = 0;

/// `STATION_IF`: the station interface of `wifi_get_ip_info`.
pub const STATION_IF: u8 = 0;
/// `txt_data` entries `struct mdns_info` has.
pub const MDNS_TXT_ENTRIES: usize = 10;

pub type ConnectCallback = unsafe extern "C" fn(arg: *mut c_void);
pub type ReconnectCallback = unsafe extern "C" fn(arg: *mut c_void, err: i8);
pub type RecvCallback = unsafe extern "C" fn(arg: *mut c_void, data: *mut u8, len: u16);
pub type SentCallback = unsafe extern "C" fn(arg: *mut c_void);
pub type TimerFunc = unsafe extern "C" fn(arg: *mut c_void);

/// `esp_tcp` (32 bytes).
#[repr(C)]
pub struct EspTcp {
    pub remote_port: i32,
    pub local_port: i32,
    pub local_ip: [u8; 4],
    pub remote_ip: [u8; 4],
    pub connect_callback: Option<ConnectCallback>,
    pub reconnect_callback: Option<ReconnectCallback>,
    pub disconnect_callback: Option<ConnectCallback>,
    pub write_finish_fn: Option<ConnectCallback>,
}

impl EspTcp {
    pub const fn new(local_port: u16) -> EspTcp {
        EspTcp {
            remote_port: 0,
            local_port: local_port as i32,
            local_ip: [0; 4],
            remote_ip: [0; 4],
            connect_callback: None,
            reconnect_callback: None,
            disconnect_callback: None,
            write_finish_fn: None,
        }
    }
}

/// `struct espconn` (28 bytes): the protocol union holds only the TCP pointer here.
#[repr(C)]
pub struct Espconn {
    pub kind: u32,
    pub state: u32,
    pub tcp: *mut EspTcp,
    pub recv_callback: Option<RecvCallback>,
    pub sent_callback: Option<SentCallback>,
    pub link_cnt: u8,
    pub reverse: *mut c_void,
}

/// `ETSTimer` / `os_timer_t` (20 bytes), owned by the SDK's timer list while armed.
#[repr(C)]
pub struct EtsTimer {
    pub next: *mut EtsTimer,
    pub expire: u32,
    pub period: u32,
    pub func: Option<TimerFunc>,
    pub arg: *mut c_void,
}

impl EtsTimer {
    pub const fn new() -> EtsTimer {
        EtsTimer { next: core::ptr::null_mut(), expire: 0, period: 0, func: None, arg: core::ptr::null_mut() }
    }
}

impl Default for EtsTimer {
    fn default() -> Self {
        Self::new()
    }
}

/// `struct mdns_info`: what `espconn_mdns_init` announces. The SDK copies the struct but
/// keeps the strings' pointers: they must live for good. `server_name` is the service
/// without its underscore and protocol (`tcpflash` for `_tcpflash._tcp.local`); the SDK
/// names the instance after `host_name`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MdnsInfo {
    pub host_name: *const core::ffi::c_char,
    pub server_name: *const core::ffi::c_char,
    pub server_port: u16,
    /// The station's IPv4 address as lwIP stores it (the bytes in network order).
    pub ip_addr: core::ffi::c_ulong,
    pub txt_data: [*const core::ffi::c_char; MDNS_TXT_ENTRIES],
}

/// `struct ip_info`: address, netmask, gateway, each as lwIP stores it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpInfo {
    pub ip: u32,
    pub netmask: u32,
    pub gw: u32,
}

unsafe extern "C" {
    /// Starts the SDK's mDNS responder with `info` (needs the station's address).
    pub fn espconn_mdns_init(info: *mut MdnsInfo);
    /// The interface's address; `ip` is 0 until DHCP (or a static address) gave one.
    pub fn wifi_get_ip_info(if_index: u8, info: *mut IpInfo) -> bool;

    pub fn espconn_accept(conn: *mut Espconn) -> i8;
    pub fn espconn_regist_connectcb(conn: *mut Espconn, cb: ConnectCallback) -> i8;
    pub fn espconn_regist_reconcb(conn: *mut Espconn, cb: ReconnectCallback) -> i8;
    pub fn espconn_regist_disconcb(conn: *mut Espconn, cb: ConnectCallback) -> i8;
    pub fn espconn_regist_recvcb(conn: *mut Espconn, cb: RecvCallback) -> i8;
    pub fn espconn_regist_sentcb(conn: *mut Espconn, cb: SentCallback) -> i8;
    /// The idle timeout in seconds (`type_flag` 0: every connection of this server). Works
    /// only after `espconn_accept`.
    pub fn espconn_regist_time(conn: *mut Espconn, interval: u32, type_flag: u8) -> i8;
    /// Connections this server takes at once; more are refused at accept. After accept.
    pub fn espconn_tcp_set_max_con_allow(conn: *mut Espconn, num: u8) -> i8;
    /// The TCP window in multiples of [`TCP_MSS`].
    pub fn espconn_tcp_get_wnd() -> u8;
    pub fn espconn_send(conn: *mut Espconn, data: *mut u8, len: u16) -> i8;
    pub fn espconn_disconnect(conn: *mut Espconn) -> i8;
    pub fn espconn_abort(conn: *mut Espconn) -> i8;
    pub fn espconn_recv_hold(conn: *mut Espconn) -> i8;
    pub fn espconn_recv_unhold(conn: *mut Espconn) -> i8;

    pub fn ets_timer_setfn(timer: *mut EtsTimer, func: TimerFunc, arg: *mut c_void);
    /// `os_timer_arm`: `ms_flag` 1 counts `time` in milliseconds.
    pub fn ets_timer_arm_new(timer: *mut EtsTimer, time: u32, repeat: bool, ms_flag: bool);
    pub fn ets_timer_disarm(timer: *mut EtsTimer);

    /// Microseconds since boot (wraps after about 71 minutes).
    pub fn system_get_time() -> u32;
    /// Fills `buf` from the hardware random number generator; 0 on success.
    pub fn os_get_random(buf: *mut u8, len: usize) -> i32;
    /// The flash map the bootloader's header names (`SPI_FLASH_SIZE_MAP`).
    pub fn system_get_flash_size_map() -> u32;
    /// [`UPGRADE_FW_BIN1`] or [`UPGRADE_FW_BIN2`]: the slot running now.
    pub fn system_upgrade_userbin_check() -> u8;
    pub fn system_upgrade_flag_set(flag: u8);
    /// Boots the other slot when the flag is [`UPGRADE_FLAG_FINISH`].
    pub fn system_upgrade_reboot();

    /// Erases 4 KB sector `sector`. The SDK turns the flash cache off itself.
    pub fn spi_flash_erase_sector(sector: u16) -> u32;
    /// `src` and `size` 4-byte aligned.
    pub fn spi_flash_write(dest: u32, src: *const u32, size: u32) -> u32;
    /// `dest` and `size` 4-byte aligned.
    pub fn spi_flash_read(src: u32, dest: *mut u32, size: u32) -> u32;
}
