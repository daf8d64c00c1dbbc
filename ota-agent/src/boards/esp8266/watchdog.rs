//! The ESP8266's hardware watchdog (registers at 0x6000_0900): a firmware that stops feeding
//! it, because it hangs or loops in a panic, is reset, so tcpflash-boot runs again and counts
//! a trial's attempt. Register meanings as the open ESP8266 SDKs document them (not
//! Espressif's own headers); not verified on a board.

const BASE: usize = 0x6000_0900;
/// Bit 0 enables; bit 1 would keep stage 1 from resetting, bit 2 would skip stage 1; the
/// ROM sets bits 3 to 5, which are kept.
const CTL: *mut u32 = BASE as *mut u32;
/// Stage 0 (an interrupt the firmware does not enable) and stage 1 (the reset): each lasts
/// 2^n ticks of 0.8 ms.
const STAGE0: *mut u32 = (BASE + 0x04) as *mut u32;
const STAGE1: *mut u32 = (BASE + 0x08) as *mut u32;
const FEED: *mut u32 = (BASE + 0x14) as *mut u32;
const FEED_VALUE: u32 = 0x73;
const ENABLE: u32 = 1 << 0;
const STAGE1_NO_RESET: u32 = 1 << 1;
const STAGE1_OFF: u32 = 1 << 2;
/// 2^12 ticks of 0.8 ms: 3.3 s per stage, so a firmware silent for about 6.6 s is reset.
/// The agent's longest single step (a 64 KB block erase, or reading a slot back) takes well
/// under a second.
const STAGE_EXPONENT: u32 = 12;

/// The running watchdog; [`Watchdog::feed`] it from the main loop.
pub struct Watchdog(());

impl Watchdog {
    /// Starts the watchdog (or restarts it with this period, if the ROM left it running).
    pub fn start() -> Watchdog {
        // SAFETY: the watchdog's registers, always mapped; nothing else writes them.
        unsafe {
            let ctl = CTL.read_volatile() & !(ENABLE | STAGE1_NO_RESET | STAGE1_OFF);
            CTL.write_volatile(ctl);
            STAGE0.write_volatile(STAGE_EXPONENT);
            STAGE1.write_volatile(STAGE_EXPONENT);
            CTL.write_volatile(ctl | ENABLE);
        }
        let mut watchdog = Watchdog(());
        watchdog.feed();
        watchdog
    }

    /// Restarts the period.
    pub fn feed(&mut self) {
        // SAFETY: as in `start`.
        unsafe { FEED.write_volatile(FEED_VALUE) };
    }
}
