//! The driver wired to the SDK: a listening `struct espconn`, its callbacks, one `os_timer`
//! for everything deferred, the flash through [`SdkFlash`], and the reboot through the
//! upgrade API. [`ota_init`] is the one call a firmware makes, in `user_init`.
//!
//! The SDK runs every callback and timer on its one task, one at a time, so the agent's
//! state lives in statics reached only from there.
#![allow(unsafe_code)] // the SDK's C callbacks and the statics they share: each use says why

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::fmt;

use smoltcp::time::Instant;

use super::driver::{Driver, DriverBuffers, Espconn as EspconnApi, Peer};
use super::ffi::{self, EspTcp, Espconn, EtsTimer};
use super::flash::SdkFlash;
use crate::image::FlashSize;
use crate::layout::SlotId;
use crate::layout::sdk::SdkMap;
use crate::listener::Platform;
use crate::net::AgentConfig;
use crate::writer::{SECTOR, SectorBuffer};

/// Connections the listener takes at once: the session and one client to refuse with the
/// `ERR:` line (the SDK refuses any more at accept, without a word).
const MAX_CONNECTIONS: u8 = 2;
/// The SDK's own idle timeout is set this much past the session's, so the session's
/// `ERR: Idle timeout` goes out first.
const SDK_IDLE_MARGIN_SECS: u32 = 5;

/// Why the agent did not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    /// The chip's flash map (`system_get_flash_size_map`) has no OTA slots the agent knows.
    UnsupportedMap(u32),
    /// The firmware was built for another layout than the map the bootloader runs.
    LayoutMismatch { built: &'static str, map: u32 },
    /// `espconn_accept` failed with this status.
    Accept(i8),
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitError::UnsupportedMap(map) => write!(f, "flash map {map} has no OTA slots (use maps 2 to 6)"),
            InitError::LayoutMismatch { built, map } => {
                write!(f, "built for the {built} layout but the chip runs flash map {map}")
            }
            InitError::Accept(status) => write!(f, "espconn_accept failed ({status})"),
        }
    }
}

/// A static the SDK's task alone reaches.
struct SdkCell<T>(UnsafeCell<T>);

// SAFETY: the SDK calls every callback and timer function from its single task, one at a
// time and never nested (the driver makes no SDK call that calls back synchronously); the
// host fake keeps that rule (one thread runs its event loop). So no two accesses overlap.
unsafe impl<T> Sync for SdkCell<T> {}

impl<T> SdkCell<T> {
    const fn new(value: T) -> SdkCell<T> {
        SdkCell(UnsafeCell::new(value))
    }

    fn get(&self) -> *mut T {
        self.0.get()
    }
}

/// Everything the callbacks share.
struct State {
    driver: Option<Driver<'static, *mut Espconn>>,
    flash: SdkFlash,
    clock: Clock,
}

static STATE: SdkCell<State> =
    SdkCell::new(State { driver: None, flash: SdkFlash::new(0), clock: Clock { last: 0, high: 0 } });
static SECTOR_BUF: SdkCell<SectorBuffer> = SdkCell::new([0; SECTOR]);
static BUFFERS: SdkCell<DriverBuffers> = SdkCell::new(DriverBuffers::new());
static SERVER: SdkCell<Espconn> = SdkCell::new(Espconn {
    kind: ffi::ESPCONN_TCP,
    state: 0,
    tcp: core::ptr::null_mut(),
    recv_callback: None,
    sent_callback: None,
    link_cnt: 0,
    reverse: core::ptr::null_mut(),
});
static SERVER_TCP: SdkCell<EspTcp> = SdkCell::new(EspTcp::new(0));
static TIMER: SdkCell<EtsTimer> = SdkCell::new(EtsTimer::new());

/// Milliseconds since boot from the SDK's 32-bit microsecond counter, which wraps every
/// 71 minutes: the driver reads it at least every half hour (an idle timer), so each wrap
/// is seen.
struct Clock {
    last: u32,
    high: u64,
}

impl Clock {
    fn now(&mut self) -> Instant {
        // SAFETY: no preconditions.
        let us = unsafe { ffi::system_get_time() };
        if us < self.last {
            self.high += 1 << 32;
        }
        self.last = us;
        Instant::from_micros((self.high + u64::from(us)) as i64)
    }
}

/// The SDK as the driver needs it.
struct Sdk;

/// The driver arms its timer at least this often, so the clock sees every wrap.
const MAX_TIMER_MS: u32 = 30 * 60 * 1000;
/// The shortest `os_timer_arm` delay the SDK documents (5 ms, without
/// `system_timer_reinit`): "at once" is this soon.
const MIN_TIMER_MS: u32 = 5;

impl EspconnApi for Sdk {
    type Handle = *mut Espconn;

    fn send(&mut self, conn: *mut Espconn, data: &[u8]) -> i8 {
        let Ok(len) = u16::try_from(data.len()) else { return -12 };
        // SAFETY: `conn` is a live connection (the driver forgets it at its disconnect
        // callback); `data` is in the driver's static, untouched until the sent callback.
        unsafe { ffi::espconn_send(conn, data.as_ptr().cast_mut(), len) }
    }

    fn disconnect(&mut self, conn: *mut Espconn) {
        // SAFETY: a live connection; called from the timer task, never a callback.
        unsafe { ffi::espconn_disconnect(conn) };
    }

    fn abort(&mut self, conn: *mut Espconn) {
        // SAFETY: as for `disconnect`.
        unsafe { ffi::espconn_abort(conn) };
    }

    fn hold(&mut self, conn: *mut Espconn) -> i8 {
        // SAFETY: a live connection.
        unsafe { ffi::espconn_recv_hold(conn) }
    }

    fn unhold(&mut self, conn: *mut Espconn) -> i8 {
        // SAFETY: a live connection.
        unsafe { ffi::espconn_recv_unhold(conn) }
    }

    fn window(&self) -> usize {
        // SAFETY: no preconditions.
        usize::from(unsafe { ffi::espconn_tcp_get_wnd() }).max(1) * ffi::TCP_MSS
    }

    fn arm(&mut self, delay_ms: u32) {
        let timer = TIMER.get();
        // SAFETY: the static timer, set up by `ota_init`; disarmed before it is re-armed.
        unsafe {
            ffi::ets_timer_disarm(timer);
            ffi::ets_timer_arm_new(timer, delay_ms.clamp(MIN_TIMER_MS, MAX_TIMER_MS), false, true);
        }
    }
}

/// The board as the listener needs it: the SDK's random source, and its upgrade reboot.
struct SdkPlatform;

impl Platform for SdkPlatform {
    /// Called only once an image is verified in flash: mark it finished and let the SDK's
    /// bootloader start it.
    fn reboot(&mut self) {
        // SAFETY: no preconditions; called from the timer task.
        unsafe {
            ffi::system_upgrade_flag_set(ffi::UPGRADE_FLAG_FINISH);
            ffi::system_upgrade_reboot();
        }
    }

    fn fill_random(&mut self, buf: &mut [u8]) {
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        unsafe { ffi::os_get_random(buf.as_mut_ptr(), buf.len()) };
    }
}

/// Starts the agent: listens on `config.port` (65056) through espconn. Call it once, in
/// `user_init`, after setting up WiFi (as the seed's `ota_init()`).
///
/// The layout must be an SDK map ([`crate::layout::sdk`]) and match the map the
/// bootloader's header names; the running slot comes from `system_upgrade_userbin_check`
/// unless `config.running_slot` says.
pub fn ota_init(config: AgentConfig) -> Result<(), InitError> {
    let map = chip_map()?;
    if config.layout.sdk_map() != Some(map) {
        return Err(InitError::LayoutMismatch {
            built: config.layout.name,
            map: u32::from(map.flash_size().code()),
        });
    }
    start(config)
}

/// [`ota_init`] for the map the chip runs: what C firmware gets, built without a layout.
pub fn ota_init_for_chip(key: Option<&'static crate::auth::Key>) -> Result<(), InitError> {
    let map = chip_map()?;
    start(AgentConfig { key, ..AgentConfig::new(&map.layout) })
}

/// [`ota_init_for_chip`] that also answers mDNS as `mdns` says (through the SDK's own
/// responder, once the station has an address).
#[cfg(feature = "mdns")]
pub fn ota_init_for_chip_with_mdns(
    key: Option<&'static crate::auth::Key>,
    mdns: crate::mdns::MdnsConfig,
) -> Result<(), InitError> {
    let map = chip_map()?;
    start(AgentConfig { key, mdns: Some(mdns), ..AgentConfig::new(&map.layout) })
}

/// The SDK map of the chip's flash size map (what the SDK booted with).
fn chip_map() -> Result<&'static SdkMap, InitError> {
    // SAFETY: no preconditions.
    let map_number = unsafe { ffi::system_get_flash_size_map() };
    u8::try_from(map_number)
        .ok()
        .and_then(FlashSize::from_code)
        .and_then(SdkMap::for_flash_size)
        .ok_or(InitError::UnsupportedMap(map_number))
}

fn start(config: AgentConfig) -> Result<(), InitError> {
    let running = config.running_slot.or_else(|| {
        // SAFETY: no preconditions.
        match unsafe { ffi::system_upgrade_userbin_check() } {
            ffi::UPGRADE_FW_BIN1 => Some(SlotId::User1),
            ffi::UPGRADE_FW_BIN2 => Some(SlotId::User2),
            _ => None,
        }
    });
    // SAFETY: called from `user_init` (the SDK's task) before any callback of ours can run,
    // or again from there after the SDK dropped the old listener; the old driver (and its
    // borrows of the buffers) is dropped before the new borrows are made.
    unsafe {
        ffi::ets_timer_disarm(TIMER.get());
        let state = &mut *STATE.get();
        state.driver = None;
        state.flash = SdkFlash::new(config.layout.flash_size);
        let sector: &'static mut SectorBuffer = &mut *SECTOR_BUF.get();
        let buffers: &'static mut DriverBuffers = &mut *BUFFERS.get();
        state.driver = Some(Driver::new(config.session(), sector, buffers, running));

        ffi::ets_timer_setfn(TIMER.get(), on_timer, core::ptr::null_mut());
        let tcp = SERVER_TCP.get();
        tcp.write(EspTcp::new(config.port));
        let server = SERVER.get();
        (*server).tcp = tcp;
        (*server).kind = ffi::ESPCONN_TCP;
        (*server).state = 0;
        ffi::espconn_regist_connectcb(server, on_connect);
        ffi::espconn_regist_reconcb(server, on_reconnect);
        ffi::espconn_regist_disconcb(server, on_disconnect);
        ffi::espconn_regist_recvcb(server, on_receive);
        ffi::espconn_regist_sentcb(server, on_sent);
        let status = ffi::espconn_accept(server);
        if status != 0 {
            state.driver = None;
            return Err(InitError::Accept(status));
        }
        // Both work only after `espconn_accept`.
        let idle = u32::try_from(config.idle_timeout.secs()).unwrap_or(u32::MAX);
        ffi::espconn_regist_time(
            server,
            idle.saturating_add(SDK_IDLE_MARGIN_SECS),
            ffi::TIMEOUT_ALL_CONNECTIONS,
        );
        ffi::espconn_tcp_set_max_con_allow(server, MAX_CONNECTIONS);
        Sdk.arm(MAX_TIMER_MS);
    }
    #[cfg(feature = "mdns")]
    if let Some(mdns) = config.mdns {
        start_mdns(Mdns {
            config: mdns,
            layout: config.layout,
            port: config.port,
            key_required: config.key.is_some(),
            running,
        });
    }
    Ok(())
}

/// What the SDK's mDNS responder is started with, once the station has an address.
#[cfg(feature = "mdns")]
struct Mdns {
    config: crate::mdns::MdnsConfig,
    layout: &'static crate::layout::FlashLayout,
    port: u16,
    key_required: bool,
    running: Option<SlotId>,
}

#[cfg(feature = "mdns")]
struct MdnsState {
    pending: Option<Mdns>,
    records: super::mdns::SdkRecords,
    info: Option<ffi::MdnsInfo>,
}

#[cfg(feature = "mdns")]
static MDNS: SdkCell<MdnsState> =
    SdkCell::new(MdnsState { pending: None, records: super::mdns::SdkRecords::empty(), info: None });
#[cfg(feature = "mdns")]
static MDNS_TIMER: SdkCell<EtsTimer> = SdkCell::new(EtsTimer::new());
/// How often the mDNS start looks for the station's address.
#[cfg(feature = "mdns")]
const MDNS_ADDRESS_POLL_MS: u32 = 500;

/// Looks for the station's address now, and every half second until it has one.
#[cfg(feature = "mdns")]
fn start_mdns(mdns: Mdns) {
    // SAFETY: the SDK's task (see `SdkCell`); the timer is disarmed before it is set up. A
    // responder the SDK already runs keeps its first records (the SDK's mDNS is started once).
    unsafe {
        let state = &mut *MDNS.get();
        if state.info.is_some() {
            return;
        }
        state.pending = Some(mdns);
        ffi::ets_timer_disarm(MDNS_TIMER.get());
        ffi::ets_timer_setfn(MDNS_TIMER.get(), on_mdns_timer, core::ptr::null_mut());
        ffi::ets_timer_arm_new(MDNS_TIMER.get(), MIN_TIMER_MS, false, true);
    }
}

#[cfg(feature = "mdns")]
unsafe extern "C" fn on_mdns_timer(_arg: *mut c_void) {
    use crate::flash::ReadNorFlash;
    // SAFETY: the SDK's task (see `SdkCell`).
    let state = unsafe { &mut *MDNS.get() };
    let Some(mdns) = state.pending.as_ref() else { return };
    let mut ip = ffi::IpInfo::default();
    // SAFETY: `ip` is a valid `struct ip_info` for the call.
    let known = unsafe { ffi::wifi_get_ip_info(ffi::STATION_IF, &mut ip) } && ip.ip != 0;
    if !known {
        // SAFETY: the timer fired (it is not armed), so it may be armed again.
        unsafe { ffi::ets_timer_arm_new(MDNS_TIMER.get(), MDNS_ADDRESS_POLL_MS, false, true) };
        return;
    }
    let firmware = mdns.running.and_then(|slot| {
        let mut bytes = [0u8; crate::descriptor::SIZE];
        let at = mdns.layout.slot(slot).offset + crate::layout::IMAGE_IROM_OFFSET;
        SdkFlash::new(mdns.layout.flash_size).read(at, &mut bytes).ok()?;
        crate::descriptor::Descriptor::parse(&bytes).ok()
    });
    let records = crate::mdns::Records::new(
        &mdns.config,
        firmware.as_ref(),
        mdns.running,
        mdns.key_required,
        mdns.port,
    );
    state.records = super::mdns::SdkRecords::new(&records);
    let info = state.info.insert(state.records.info(ip.ip.to_ne_bytes()));
    state.pending = None;
    // SAFETY: `info` and the strings it points at live in a static for good, as the SDK
    // keeps the strings' pointers.
    unsafe { ffi::espconn_mdns_init(info) };
}

/// The peer an espconn callback is about.
///
/// # Safety
/// `arg` is the `struct espconn` the SDK passed to the callback, with its TCP part.
unsafe fn peer_of(arg: *mut c_void) -> Option<Peer> {
    let conn = arg.cast::<Espconn>();
    // SAFETY: the caller passes the SDK's callback argument, valid during the callback.
    let tcp = unsafe { conn.as_ref()?.tcp.as_ref()? };
    Some(Peer { ip: tcp.remote_ip, port: tcp.remote_port as u16 })
}

/// Runs `f` on the agent's state, from a callback of the SDK's task.
fn with_driver(f: impl FnOnce(&mut Driver<'static, *mut Espconn>, &mut SdkFlash, Instant)) {
    // SAFETY: only the SDK's task gets here, one callback at a time (see `SdkCell`).
    let state = unsafe { &mut *STATE.get() };
    let now = state.clock.now();
    if let Some(driver) = state.driver.as_mut() {
        f(driver, &mut state.flash, now);
    }
}

unsafe extern "C" fn on_connect(arg: *mut c_void) {
    // SAFETY: the SDK's argument: this connection's own `struct espconn`.
    let Some(peer) = (unsafe { peer_of(arg) }) else { return };
    with_driver(|driver, _, now| driver.connected(now, peer, arg.cast(), &mut Sdk, &mut SdkPlatform));
}

unsafe extern "C" fn on_receive(arg: *mut c_void, data: *mut u8, len: u16) {
    // SAFETY: the SDK's argument; `data` holds `len` bytes until this callback returns.
    let (Some(peer), false) = ((unsafe { peer_of(arg) }), data.is_null()) else { return };
    let data = unsafe { core::slice::from_raw_parts(data, usize::from(len)) };
    with_driver(|driver, flash, now| {
        driver.received(now, peer, data, &mut Sdk, flash);
    });
}

unsafe extern "C" fn on_sent(arg: *mut c_void) {
    // SAFETY: the SDK's argument.
    let Some(peer) = (unsafe { peer_of(arg) }) else { return };
    with_driver(|driver, _, _| driver.sent(peer, &mut Sdk));
}

/// The SDK passes the listener's struct here, with the gone connection's peer copied in.
unsafe extern "C" fn on_disconnect(arg: *mut c_void) {
    // SAFETY: the SDK's argument.
    let Some(peer) = (unsafe { peer_of(arg) }) else { return };
    with_driver(|driver, _, _| driver.disconnected(peer, &mut Sdk));
}

/// A connection ended in an error (reset, abort): as a disconnect.
unsafe extern "C" fn on_reconnect(arg: *mut c_void, _err: i8) {
    // SAFETY: the SDK's argument.
    let Some(peer) = (unsafe { peer_of(arg) }) else { return };
    with_driver(|driver, _, _| driver.disconnected(peer, &mut Sdk));
}

unsafe extern "C" fn on_timer(_arg: *mut c_void) {
    with_driver(|driver, flash, now| {
        Sdk.arm(MAX_TIMER_MS);
        driver.run(now, &mut Sdk, flash, &mut SdkPlatform);
    });
}

/// A key copied in from C, kept for the agent's lifetime.
pub struct KeyCell(SdkCell<crate::auth::Key>);

impl KeyCell {
    pub const fn new() -> KeyCell {
        KeyCell(SdkCell::new([0; crate::auth::KEY_LEN]))
    }

    /// Stores `key` and lends it to the agent about to start. Any running agent is stopped
    /// first: it may hold the old key.
    pub fn store(&'static self, key: crate::auth::Key) -> &'static crate::auth::Key {
        // SAFETY: the SDK's task (see `SdkCell`); the running driver, the only other holder
        // of a reference to the key, is dropped before the key is written.
        unsafe {
            (*STATE.get()).driver = None;
            self.0.get().write(key);
            &*self.0.get()
        }
    }
}

impl Default for KeyCell {
    fn default() -> Self {
        Self::new()
    }
}
