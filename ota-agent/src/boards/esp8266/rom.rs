//! Functions of the ESP8266 mask ROM, at the addresses of the SDK's `eagle.rom.addr.v6.ld`.
//! Called through function pointers, so no linker script has to provide symbols.

/// Declares a ROM function as a safe-to-name `unsafe fn` calling its fixed address.
macro_rules! rom_fn {
    ($(#[$doc:meta])* $name:ident = $addr:expr, fn($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// Only on an ESP8266, whose mask ROM holds this routine; the caller upholds the
        /// routine's contract (valid pointers, cache state for the SPI routines).
        #[inline(always)]
        pub unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
            // SAFETY: the caller upholds the ROM routine's contract; the address is the
            // routine's entry in every ESP8266 mask ROM.
            let f: unsafe extern "C" fn($($ty),*) $(-> $ret)? = unsafe { core::mem::transmute($addr as usize) };
            unsafe { f($($arg),*) }
        }
    };
}

rom_fn!(
    /// Busy-waits `us` microseconds (calibrated by `ets_update_cpu_frequency`).
    ets_delay_us = 0x4000_2ecc, fn(us: u32)
);
rom_fn!(
    /// Tells the ROM's delay loop the CPU clock in MHz.
    ets_update_cpu_frequency = 0x4000_2f04, fn(mhz: u32)
);
rom_fn!(ets_wdt_disable = 0x4000_30f0, fn());
rom_fn!(ets_wdt_enable = 0x4000_2fa0, fn());
/// Address of `software_reset`, also used by the start-up code cargo-tcpflash generates.
pub const SOFTWARE_RESET: u32 = 0x4000_264c;
rom_fn!(
    /// Restarts the chip through the ROM: the bootloader runs again.
    software_reset = SOFTWARE_RESET, fn()
);
rom_fn!(uart_tx_one_char = 0x4000_3b30, fn(byte: u8) -> i32);
rom_fn!(
    /// Sets UART `uart`'s clock divider: APB clock / baud rate.
    uart_div_modify = 0x4000_39d8, fn(uart: u32, divider: u32)
);
rom_fn!(rom_i2c_read_reg = 0x4000_7268, fn(block: u32, host: u32, reg: u32) -> u32);
rom_fn!(rom_i2c_write_reg = 0x4000_72d8, fn(block: u32, host: u32, reg: u32, value: u32));

// Flash: the caller runs from IRAM with the cache disabled around these.
rom_fn!(spi_unlock = 0x4000_4878, fn() -> i32);
rom_fn!(spi_erase_sector = 0x4000_4a00, fn(sector: u32) -> i32);
rom_fn!(
    /// Writes `len` bytes (multiple of 4) from the 4-aligned `src` to flash `dest` (4-aligned).
    spi_write = 0x4000_4a4c, fn(dest: u32, src: *const u32, len: u32) -> i32
);
/// Address of `SPIRead`, also used by the start-up code cargo-tcpflash generates.
pub const SPI_READ: u32 = 0x4000_4b1c;
rom_fn!(spi_read = SPI_READ, fn(src: u32, dest: *mut u32, len: u32) -> i32);
/// Address of `Cache_Read_Enable`, also used by the start-up code cargo-tcpflash generates.
pub const CACHE_READ_ENABLE: u32 = 0x4000_4678;
rom_fn!(
    /// Maps 1 MB of flash at 0x40200000: megabyte `2 * two_mb + odd` (rBoot's big-flash
    /// `Cache_Read_Enable(mb % 2, mb / 2, 1)`).
    cache_read_enable = CACHE_READ_ENABLE, fn(odd: u32, two_mb: u32, enable: u32)
);
rom_fn!(
    /// Erases the 64 KB block number `block`.
    spi_erase_block = 0x4000_49b4, fn(block: u32) -> i32
);
rom_fn!(cache_read_disable = 0x4000_47f0, fn());
