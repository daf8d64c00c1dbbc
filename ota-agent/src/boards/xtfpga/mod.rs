//! QEMU's XTFPGA board with an lx106 core (`qemu-system-xtensa -M lx60-nommu -cpu lx106`):
//! the same machine code as an ESP8266, with a 16550 UART, an OpenCores Ethernet MAC and a
//! CFI parallel flash instead of the ESP8266's peripherals. It lets the whole agent
//! (smoltcp, session, writer, boot config) run as one firmware, pushed to over real TCP.
//!
//! There is no ROM here: nothing may call the ESP8266 ROM addresses (0x4000xxxx is plain
//! RAM on this board). The addresses below are the uncached I/O window (0x9xxxxxxx; the
//! same devices also appear at 0x7xxxxxxx).
//!
//! The constants compile everywhere (cargo-tcpflash's start-up code for this board needs
//! them); the drivers only for lx106.

/// The board's assembly (reading CCOUNT), which cargo-tcpflash links into every firmware
/// built with `--board qemu`.
pub const ASM: &str = include_str!("board.s");

/// Initial stack pointer: the top of dataram0 (0x3FFC0000..0x40000000), 16-byte aligned,
/// above the ESP8266 DRAM range a firmware's data is linked into.
pub const STACK_TOP: u32 = 0x4000_0000 - 16;
/// The FPGA register block: date, clock frequency, LEDs, switches, reset.
pub const FPGA: u32 = 0x9D02_0000;
/// Writing [`RESET_MAGIC`] here resets the whole board (QEMU re-runs its `-kernel`).
pub const RESET_REGISTER: u32 = FPGA + 0x10;
pub const RESET_MAGIC: u32 = 0xdead;

/// The CFI flash: 4 MB (QEMU wants a `-drive if=pflash` file of exactly this size).
pub const FLASH_SIZE: u32 = 0x40_0000;
/// Where the flash's array reads (uncached window): flash offset 0.
pub const FLASH_BASE: u32 = 0x9800_0000;
/// The 16550 UART's transmit register (register shift 2: the others follow 4 bytes apart).
pub const UART_BASE: u32 = 0x9D05_0020;
/// Where the core starts after power-on and after the FPGA reset (sysrom0): QEMU runs a
/// `-kernel` whose entry is here as it is, with nothing in between.
pub const RESET_VECTOR: u32 = 0x5000_0000;

/// Board RAM outside the ESP8266 DRAM range (0x3FFE8000..): dataram0's lower 160 KB, which
/// no firmware section is linked into. The Ethernet MAC's DMA reaches it.
pub mod ram {
    /// Ethernet frame buffers (see `eth`): 0x3FFC0000..0x3FFC6C00.
    pub const ETH_BUFFERS: u32 = 0x3FFC_0000;
    /// The flash driver's 64 KB block buffer (see `flash`): 0x3FFD8000..0x3FFE8000.
    pub const BLOCK_BUFFER: u32 = 0x3FFD_8000;
}

#[cfg(target_arch = "xtensa")]
pub mod clock;
#[cfg(target_arch = "xtensa")]
pub mod eth;
#[cfg(target_arch = "xtensa")]
pub mod flash;
#[cfg(target_arch = "xtensa")]
pub mod uart;

#[cfg(target_arch = "xtensa")]
pub use clock::Clock;
#[cfg(target_arch = "xtensa")]
pub use eth::OpenEth;
#[cfg(target_arch = "xtensa")]
pub use flash::CfiFlash;
#[cfg(target_arch = "xtensa")]
pub use uart::Uart;

/// The LEDs register (bit n lights LED n).
#[cfg(target_arch = "xtensa")]
const LEDS: *mut u32 = (FPGA + 0x8) as *mut u32;

/// Lights the board's LEDs given by `bits` (and turns the others off).
#[cfg(target_arch = "xtensa")]
pub fn set_leds(bits: u32) {
    // SAFETY: the FPGA's LED register, always mapped, only ever written by this call.
    unsafe { LEDS.write_volatile(bits) };
}

/// Resets the board: everything starts again from the reset vector.
#[cfg(target_arch = "xtensa")]
pub fn reset() -> ! {
    // SAFETY: the FPGA's reset register; writing the magic value is its documented use.
    unsafe { (RESET_REGISTER as *mut u32).write_volatile(RESET_MAGIC) };
    // QEMU acts on the reset request once the current instruction block ends.
    loop {}
}

/// Reboot through the FPGA reset; random bytes from CCOUNT jitter.
///
/// The board has no random number generator. `fill_random` hashes CCOUNT samples taken
/// around I/O register reads, whose timing under QEMU follows the host's scheduling, into a
/// pool that carries over between calls. That makes nonces differ between sessions (enough
/// for tests of authenticated pushes), but it is NOT a secure RNG: an observer of the host's
/// timing can narrow the outputs down. Do not use this board's keys for anything real.
#[cfg(target_arch = "xtensa")]
pub struct Xtfpga {
    pool: [u8; 32],
}

#[cfg(target_arch = "xtensa")]
impl Xtfpga {
    pub const fn new() -> Xtfpga {
        Xtfpga { pool: [0; 32] }
    }
}

#[cfg(target_arch = "xtensa")]
impl Default for Xtfpga {
    fn default() -> Self {
        Xtfpga::new()
    }
}

#[cfg(target_arch = "xtensa")]
impl crate::net::Platform for Xtfpga {
    fn reboot(&mut self) {
        reset();
    }

    fn fill_random(&mut self, buf: &mut [u8]) {
        use sha2::{Digest, Sha256};
        /// Samples per 32 output bytes; each adds a few bits of jitter at best.
        const SAMPLES: usize = 64;
        for chunk in buf.chunks_mut(32) {
            let mut hasher = Sha256::new();
            hasher.update(self.pool);
            for _ in 0..SAMPLES {
                // SAFETY: a read-only FPGA register; the read only costs time (the point).
                let _ = unsafe { (FPGA as *const u32).read_volatile() };
                hasher.update(clock::ccount().to_le_bytes());
            }
            self.pool = hasher.finalize().into();
            // The output is a hash of the pool, never the pool itself.
            let out: [u8; 32] = Sha256::digest(self.pool).into();
            chunk.copy_from_slice(&out[..chunk.len()]);
        }
    }

    fn boot_handoff(&mut self) -> Option<crate::boot::handoff::HandOff> {
        crate::boot::handoff::read_handoff()
    }
}
