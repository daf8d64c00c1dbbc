//! Flash access. The agent is written against `embedded-storage`'s `NorFlash`, so any
//! driver works: the ESP8266 ROM routines on the device (`crate::boards::esp8266`), and on the host
//! [`RamNor`], a NOR model strict enough to catch what real flash would silently corrupt.

pub use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash};

pub use crate::layout::{BLOCK_SIZE, SECTOR_SIZE};

/// The ESP8266 ROM's SPIWrite wants 4-byte aligned addresses and lengths.
pub const WRITE_SIZE: usize = 4;
/// A page program never crosses a 256-byte page: the unit a power cut can tear.
pub const PAGE_SIZE: u32 = 256;

#[cfg(feature = "std")]
pub use model::{FlashOp, NorError, RamNor};

#[cfg(feature = "std")]
mod model {
    use super::*;

    /// One operation the chip performs; a power cut stops the device between two of them,
    /// or in the middle of one.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum FlashOp {
        EraseSector(u32),
        EraseBlock(u32),
        /// Programs bytes inside one 256-byte page.
        Program {
            offset: u32,
            len: u32,
        },
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum NorError {
        NotAligned {
            offset: u32,
            len: u32,
        },
        OutOfBounds {
            offset: u32,
            len: u32,
        },
        /// A program over bytes that are not erased: real NOR would AND them silently.
        NotErased {
            offset: u32,
        },
        /// The model's power was cut: nothing more happens until it is restored.
        PowerLost,
    }

    impl NorFlashError for NorError {
        fn kind(&self) -> NorFlashErrorKind {
            match self {
                NorError::NotAligned { .. } => NorFlashErrorKind::NotAligned,
                NorError::OutOfBounds { .. } => NorFlashErrorKind::OutOfBounds,
                NorError::NotErased { .. } | NorError::PowerLost => NorFlashErrorKind::Other,
            }
        }
    }

    /// A NOR flash chip in RAM: erase sets 0xFF, programming can only clear bits, and
    /// programming bytes that are not erased is an error. It counts operations and can lose
    /// power at any of them, leaving the interrupted one half done.
    #[derive(Clone, Debug)]
    pub struct RamNor {
        data: Vec<u8>,
        ops: u64,
        cut_at: Option<u64>,
        powered: bool,
        log: Option<Vec<FlashOp>>,
        bit_clearing: bool,
    }

    impl RamNor {
        /// An erased chip of `size` bytes (a multiple of the sector size).
        pub fn new(size: u32) -> RamNor {
            assert_eq!(size % SECTOR_SIZE, 0, "flash size must be whole sectors");
            RamNor::from_bytes(vec![0xFF; size as usize])
        }

        /// A chip holding `data`, e.g. loaded from a flash file.
        pub fn from_bytes(data: Vec<u8>) -> RamNor {
            RamNor { data, ops: 0, cut_at: None, powered: true, log: None, bit_clearing: false }
        }

        pub fn bytes(&self) -> &[u8] {
            &self.data
        }

        pub fn into_bytes(self) -> Vec<u8> {
            self.data
        }

        /// Operations performed so far (each sector erase, block erase and page program).
        pub fn ops(&self) -> u64 {
            self.ops
        }

        /// Lose power during operation number `op` (0-based): that operation is left half
        /// done and every later call fails with [`NorError::PowerLost`].
        pub fn cut_power_at(&mut self, op: u64) {
            self.cut_at = Some(op);
        }

        pub fn power_lost(&self) -> bool {
            !self.powered
        }

        /// Power comes back: the chip keeps whatever state the cut left.
        pub fn restore_power(&mut self) {
            self.powered = true;
            self.cut_at = None;
        }

        /// Lets a program clear more bits of bytes already programmed, as real NOR does; the
        /// trial record's attempts and confirmed words rely on it. A program that would have
        /// to set a bit is still refused. Off by default: there, any program over bytes
        /// that are not erased is refused as the bug it usually is.
        pub fn allow_bit_clearing(&mut self) {
            self.bit_clearing = true;
        }

        /// Start recording operations (for timing models and tests).
        pub fn record(&mut self) {
            self.log = Some(Vec::new());
        }

        /// The operations recorded since [`RamNor::record`], oldest first.
        pub fn take_log(&mut self) -> Vec<FlashOp> {
            self.log.as_mut().map(core::mem::take).unwrap_or_default()
        }

        fn check(&self, offset: u32, len: usize, align: u32) -> Result<(), NorError> {
            let len32 = u32::try_from(len).map_err(|_| NorError::OutOfBounds { offset, len: u32::MAX })?;
            if !offset.is_multiple_of(align) || !len32.is_multiple_of(align) {
                return Err(NorError::NotAligned { offset, len: len32 });
            }
            if offset as usize + len > self.data.len() {
                return Err(NorError::OutOfBounds { offset, len: len32 });
            }
            Ok(())
        }

        /// Runs one chip operation, or tears it when the power is cut right there.
        fn perform(&mut self, op: FlashOp) -> Result<(), NorError> {
            if !self.powered {
                return Err(NorError::PowerLost);
            }
            let torn = self.cut_at == Some(self.ops);
            self.ops += 1;
            if let Some(log) = &mut self.log {
                log.push(op);
            }
            let (start, len, erase) = match op {
                FlashOp::EraseSector(at) => (at, SECTOR_SIZE, true),
                FlashOp::EraseBlock(at) => (at, BLOCK_SIZE, true),
                FlashOp::Program { offset, len } => (offset, len, false),
            };
            // A torn operation reaches only its first half.
            let done = if torn { len / 2 } else { len };
            let range = start as usize..(start + done) as usize;
            if erase {
                self.data[range].fill(0xFF);
            }
            if torn {
                self.powered = false;
                return Err(NorError::PowerLost);
            }
            Ok(())
        }
    }

    impl ErrorType for RamNor {
        type Error = NorError;
    }

    impl ReadNorFlash for RamNor {
        const READ_SIZE: usize = 1;

        fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), NorError> {
            if !self.powered {
                return Err(NorError::PowerLost);
            }
            self.check(offset, bytes.len(), 1)?;
            bytes.copy_from_slice(&self.data[offset as usize..offset as usize + bytes.len()]);
            Ok(())
        }

        fn capacity(&self) -> usize {
            self.data.len()
        }
    }

    impl NorFlash for RamNor {
        const WRITE_SIZE: usize = WRITE_SIZE;
        const ERASE_SIZE: usize = SECTOR_SIZE as usize;

        /// Erases with 64 KB block commands where a whole aligned block is covered, and
        /// sector commands elsewhere, as a driver that cares about speed does.
        fn erase(&mut self, from: u32, to: u32) -> Result<(), NorError> {
            if to < from {
                return Err(NorError::OutOfBounds { offset: from, len: 0 });
            }
            self.check(from, (to - from) as usize, SECTOR_SIZE)?;
            let mut at = from;
            while at < to {
                if at.is_multiple_of(BLOCK_SIZE) && to - at >= BLOCK_SIZE {
                    self.perform(FlashOp::EraseBlock(at))?;
                    at += BLOCK_SIZE;
                } else {
                    self.perform(FlashOp::EraseSector(at))?;
                    at += SECTOR_SIZE;
                }
            }
            Ok(())
        }

        fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), NorError> {
            self.check(offset, bytes.len(), WRITE_SIZE as u32)?;
            if !self.powered {
                return Err(NorError::PowerLost);
            }
            let mut done = 0usize;
            while done < bytes.len() {
                let at = offset + done as u32;
                let in_page = ((PAGE_SIZE - at % PAGE_SIZE) as usize).min(bytes.len() - done);
                let chunk = &bytes[done..done + in_page];
                let target = &self.data[at as usize..at as usize + in_page];
                let refused = |(&cell, &new): (&u8, &u8)| {
                    if self.bit_clearing { cell & new != new } else { cell != 0xFF }
                };
                if let Some(dirty) = target.iter().zip(chunk).position(refused) {
                    return Err(NorError::NotErased { offset: at + dirty as u32 });
                }
                let torn = self.cut_at == Some(self.ops);
                let reached = if torn { in_page / 2 } else { in_page };
                for (cell, new) in self.data[at as usize..at as usize + reached].iter_mut().zip(chunk) {
                    *cell &= *new;
                }
                self.perform(FlashOp::Program { offset: at, len: in_page as u32 })?;
                done += in_page;
            }
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn erase_sets_ones_and_program_clears_bits_once() {
            let mut flash = RamNor::new(0x2_0000);
            flash.write(0x1000, &[0x12, 0x34, 0x56, 0x78]).unwrap();
            let mut buf = [0u8; 6];
            flash.read(0xFFE, &mut buf).unwrap();
            assert_eq!(buf, [0xFF, 0xFF, 0x12, 0x34, 0x56, 0x78]);
            assert_eq!(flash.write(0x1000, &[0; 4]), Err(NorError::NotErased { offset: 0x1000 }));
            flash.erase(0x1000, 0x2000).unwrap();
            flash.read(0x1000, &mut buf[..4]).unwrap();
            assert_eq!(buf[..4], [0xFF; 4]);
        }

        #[test]
        fn bit_clearing_programs_only_when_allowed() {
            let mut flash = RamNor::new(0x2000);
            flash.write(0x100, &[0xF0, 0xFF, 0xFF, 0xFF]).unwrap();
            assert_eq!(
                flash.write(0x100, &[0xE0, 0xFF, 0xFF, 0xFF]),
                Err(NorError::NotErased { offset: 0x100 })
            );
            flash.allow_bit_clearing();
            flash.write(0x100, &[0xE0, 0xFF, 0xFF, 0xFF]).unwrap();
            assert_eq!(flash.bytes()[0x100..0x104], [0xE0, 0xFF, 0xFF, 0xFF]);
            // Setting a bit back is what no NOR chip can do.
            assert_eq!(
                flash.write(0x100, &[0xF0, 0xFF, 0xFF, 0xFF]),
                Err(NorError::NotErased { offset: 0x100 })
            );
            assert_eq!(flash.bytes()[0x100], 0xE0);
        }

        #[test]
        fn alignment_and_bounds_are_enforced() {
            let mut flash = RamNor::new(0x2000);
            assert!(matches!(flash.write(2, &[0; 4]), Err(NorError::NotAligned { .. })));
            assert!(matches!(flash.write(0, &[0; 3]), Err(NorError::NotAligned { .. })));
            assert!(matches!(flash.write(0x1FFC, &[0; 8]), Err(NorError::OutOfBounds { .. })));
            assert!(matches!(flash.erase(0x800, 0x1000), Err(NorError::NotAligned { .. })));
            assert!(matches!(flash.erase(0x1000, 0x3000), Err(NorError::OutOfBounds { .. })));
            assert_eq!(flash.ops(), 0, "refused calls do nothing");
        }

        #[test]
        fn erase_uses_blocks_where_aligned_and_writes_split_into_pages() {
            let mut flash = RamNor::new(0x4_0000);
            flash.record();
            flash.erase(0xE000, 0x2_1000).unwrap();
            flash.write(0x1_00F0, &[0xAA; 0x120]).unwrap();
            assert_eq!(
                flash.take_log(),
                vec![
                    FlashOp::EraseSector(0xE000),
                    FlashOp::EraseSector(0xF000),
                    FlashOp::EraseBlock(0x1_0000),
                    FlashOp::EraseSector(0x2_0000),
                    FlashOp::Program { offset: 0x1_00F0, len: 0x10 },
                    FlashOp::Program { offset: 0x1_0100, len: 0x100 },
                    FlashOp::Program { offset: 0x1_0200, len: 0x10 },
                ]
            );
            assert_eq!(flash.ops(), 7);
        }

        #[test]
        fn a_power_cut_tears_the_operation_and_stops_the_chip() {
            let mut flash = RamNor::new(0x2000);
            flash.cut_power_at(1);
            assert_eq!(flash.write(0, &[0u8; 512]), Err(NorError::PowerLost));
            assert!(flash.power_lost());
            let bytes = flash.bytes();
            assert!(bytes[..256].iter().all(|&b| b == 0), "first page programmed");
            assert!(bytes[256..384].iter().all(|&b| b == 0), "half of the torn page programmed");
            assert!(bytes[384..512].iter().all(|&b| b == 0xFF), "rest untouched");
            assert_eq!(flash.erase(0, 0x1000), Err(NorError::PowerLost));
            flash.restore_power();
            flash.erase(0, 0x1000).unwrap();
            assert!(flash.bytes()[..512].iter().all(|&b| b == 0xFF));
        }

        #[test]
        fn a_cut_erase_leaves_the_sector_half_erased() {
            let mut flash = RamNor::from_bytes(vec![0u8; 0x2000]);
            flash.cut_power_at(0);
            assert_eq!(flash.erase(0x1000, 0x2000), Err(NorError::PowerLost));
            assert!(flash.bytes()[0x1000..0x1800].iter().all(|&b| b == 0xFF));
            assert!(flash.bytes()[0x1800..0x2000].iter().all(|&b| b == 0));
        }
    }
}
