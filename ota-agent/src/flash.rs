//! Flash access. The agent is written against `embedded-storage`'s `NorFlash`, so any
//! driver works: the boards' drivers on the device (`crate::boards`), and [`RamNor`], a NOR
//! model strict enough to catch what real flash would silently corrupt, everywhere else (host
//! tests, the virtual device, lx106 programs under QEMU).
//!
//! How an erase or a write breaks into chip commands is defined once here
//! ([`erase_ops`], [`program_ops`]): the drivers, the model, its power cuts and the timed
//! model all follow it.

pub use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash};

pub use crate::layout::{BLOCK_SIZE, SECTOR_SIZE};

/// The ESP8266 ROM's SPIWrite wants 4-byte aligned addresses and lengths.
pub const WRITE_SIZE: usize = 4;
/// A page program never crosses a 256-byte page: the unit a power cut can tear.
pub const PAGE_SIZE: u32 = 256;

/// One operation the chip performs; a power cut stops the device between two of them, or in
/// the middle of one.
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

impl FlashOp {
    /// The flash range the operation changes.
    pub const fn range(self) -> (u32, u32) {
        match self {
            FlashOp::EraseSector(at) => (at, SECTOR_SIZE),
            FlashOp::EraseBlock(at) => (at, BLOCK_SIZE),
            FlashOp::Program { offset, len } => (offset, len),
        }
    }
}

/// The commands that erase the sector-aligned range `from..to`: a 64 KB block command where
/// a whole aligned block is covered (one command instead of 16), sector commands elsewhere.
pub fn erase_ops(from: u32, to: u32) -> impl Iterator<Item = FlashOp> {
    let mut at = from;
    core::iter::from_fn(move || {
        if at >= to {
            return None;
        }
        let op = if at.is_multiple_of(BLOCK_SIZE) && to - at >= BLOCK_SIZE {
            FlashOp::EraseBlock(at)
        } else {
            FlashOp::EraseSector(at)
        };
        at += op.range().1;
        Some(op)
    })
}

/// The page programs that write `len` bytes at `offset`.
pub fn program_ops(offset: u32, len: u32) -> impl Iterator<Item = FlashOp> {
    let (mut at, end) = (offset, offset + len);
    core::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let in_page = (PAGE_SIZE - at % PAGE_SIZE).min(end - at);
        let op = FlashOp::Program { offset: at, len: in_page };
        at += in_page;
        Some(op)
    })
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

/// A NOR flash chip in memory: erase sets 0xFF, programming can only clear bits, and
/// programming bytes that are not erased is an error. It counts operations and can lose
/// power at any of them, leaving the interrupted one half done.
///
/// The bytes live in any `S`: a `Vec<u8>` on the host, an array in a `static` on a target
/// without an allocator.
#[derive(Clone, Debug)]
pub struct RamNor<S> {
    data: S,
    ops: u64,
    cut_at: Option<u64>,
    powered: bool,
    bit_clearing: bool,
}

impl<S: AsRef<[u8]> + AsMut<[u8]>> RamNor<S> {
    /// A chip holding `data` as it is (erase it, or load a flash file into it, first).
    pub const fn from_storage(data: S) -> RamNor<S> {
        RamNor { data, ops: 0, cut_at: None, powered: true, bit_clearing: false }
    }

    pub fn bytes(&self) -> &[u8] {
        self.data.as_ref()
    }

    pub fn into_storage(self) -> S {
        self.data
    }

    /// Operations performed so far (each sector erase, block erase and page program).
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// Lose power during operation number `op` (0-based): that operation is left half done
    /// and every later call fails with [`NorError::PowerLost`].
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
    /// trial record's attempts and confirmed words rely on it. A program that would have to
    /// set a bit is still refused. Off by default: there, any program over bytes that are
    /// not erased is refused as the bug it usually is.
    pub fn allow_bit_clearing(&mut self) {
        self.bit_clearing = true;
    }

    fn check(&self, offset: u32, len: usize, align: u32) -> Result<(), NorError> {
        let len32 = u32::try_from(len).map_err(|_| NorError::OutOfBounds { offset, len: u32::MAX })?;
        if !offset.is_multiple_of(align) || !len32.is_multiple_of(align) {
            return Err(NorError::NotAligned { offset, len: len32 });
        }
        if offset as usize + len > self.data.as_ref().len() {
            return Err(NorError::OutOfBounds { offset, len: len32 });
        }
        Ok(())
    }

    /// Runs one chip operation (`source` holds a program's bytes), or tears it when the
    /// power is cut right there: a torn operation reaches only its first half.
    fn perform(&mut self, op: FlashOp, source: &[u8]) -> Result<(), NorError> {
        if !self.powered {
            return Err(NorError::PowerLost);
        }
        let torn = self.cut_at == Some(self.ops);
        self.ops += 1;
        let (start, len) = op.range();
        let done = if torn { len / 2 } else { len };
        let cells = &mut self.data.as_mut()[start as usize..(start + done) as usize];
        match op {
            FlashOp::EraseSector(_) | FlashOp::EraseBlock(_) => cells.fill(0xFF),
            FlashOp::Program { .. } => cells.iter_mut().zip(source).for_each(|(cell, new)| *cell &= *new),
        }
        if torn {
            self.powered = false;
            return Err(NorError::PowerLost);
        }
        Ok(())
    }
}

#[cfg(any(test, feature = "std"))]
impl RamNor<std::vec::Vec<u8>> {
    /// An erased chip of `size` bytes (a multiple of the sector size).
    pub fn new(size: u32) -> Self {
        assert_eq!(size % SECTOR_SIZE, 0, "flash size must be whole sectors");
        RamNor::from_storage(std::vec![0xFF; size as usize])
    }
}

impl<S> ErrorType for RamNor<S> {
    type Error = NorError;
}

impl<S: AsRef<[u8]> + AsMut<[u8]>> ReadNorFlash for RamNor<S> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), NorError> {
        if !self.powered {
            return Err(NorError::PowerLost);
        }
        self.check(offset, bytes.len(), 1)?;
        bytes.copy_from_slice(&self.data.as_ref()[offset as usize..offset as usize + bytes.len()]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.data.as_ref().len()
    }
}

impl<S: AsRef<[u8]> + AsMut<[u8]>> NorFlash for RamNor<S> {
    const WRITE_SIZE: usize = WRITE_SIZE;
    const ERASE_SIZE: usize = SECTOR_SIZE as usize;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), NorError> {
        if to < from {
            return Err(NorError::OutOfBounds { offset: from, len: 0 });
        }
        self.check(from, (to - from) as usize, SECTOR_SIZE)?;
        erase_ops(from, to).try_for_each(|op| self.perform(op, &[]))
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), NorError> {
        self.check(offset, bytes.len(), WRITE_SIZE as u32)?;
        if !self.powered {
            return Err(NorError::PowerLost);
        }
        for op in program_ops(offset, bytes.len() as u32) {
            let (at, len) = op.range();
            let from = (at - offset) as usize;
            let target = &self.data.as_ref()[at as usize..(at + len) as usize];
            let chunk = &bytes[from..from + len as usize];
            let bit_clearing = self.bit_clearing;
            let refused =
                |(&cell, &new): (&u8, &u8)| if bit_clearing { cell & new != new } else { cell != 0xFF };
            if let Some(dirty) = target.iter().zip(chunk).position(refused) {
                return Err(NorError::NotErased { offset: at + dirty as u32 });
            }
            self.perform(op, &bytes[from..from + len as usize])?;
        }
        Ok(())
    }
}

/// Any `NorFlash`, with every chip command it performs recorded (for tests and for the
/// power-cut proof, which needs to know which command wrote what).
#[cfg(any(test, feature = "std"))]
#[derive(Clone, Debug)]
pub struct Recording<F> {
    pub inner: F,
    pub log: std::vec::Vec<FlashOp>,
}

#[cfg(any(test, feature = "std"))]
impl<F> Recording<F> {
    pub fn new(inner: F) -> Recording<F> {
        Recording { inner, log: std::vec::Vec::new() }
    }

    /// The commands recorded so far, oldest first; the log starts again empty.
    pub fn take_log(&mut self) -> std::vec::Vec<FlashOp> {
        core::mem::take(&mut self.log)
    }
}

#[cfg(any(test, feature = "std"))]
impl<F: ErrorType> ErrorType for Recording<F> {
    type Error = F::Error;
}

#[cfg(any(test, feature = "std"))]
impl<F: ReadNorFlash> ReadNorFlash for Recording<F> {
    const READ_SIZE: usize = F::READ_SIZE;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), F::Error> {
        self.inner.read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

#[cfg(any(test, feature = "std"))]
impl<F: NorFlash> NorFlash for Recording<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), F::Error> {
        self.inner.erase(from, to)?;
        self.log.extend(erase_ops(from, to));
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), F::Error> {
        self.inner.write(offset, bytes)?;
        self.log.extend(program_ops(offset, bytes.len() as u32));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::vec;

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
        assert_eq!(flash.write(0x100, &[0xE0, 0xFF, 0xFF, 0xFF]), Err(NorError::NotErased { offset: 0x100 }));
        flash.allow_bit_clearing();
        flash.write(0x100, &[0xE0, 0xFF, 0xFF, 0xFF]).unwrap();
        assert_eq!(flash.bytes()[0x100..0x104], [0xE0, 0xFF, 0xFF, 0xFF]);
        // Setting a bit back is what no NOR chip can do.
        assert_eq!(flash.write(0x100, &[0xF0, 0xFF, 0xFF, 0xFF]), Err(NorError::NotErased { offset: 0x100 }));
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
        let mut flash = Recording::new(RamNor::new(0x4_0000));
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
        assert_eq!(flash.inner.ops(), 7, "the model counts the same commands it performs");
        assert_eq!(flash.inner.bytes()[0x1_00F0..0x1_0210], [0xAA; 0x120]);
    }

    #[test]
    fn a_refused_call_is_not_recorded() {
        let mut flash = Recording::new(RamNor::new(0x2000));
        assert!(flash.write(2, &[0; 4]).is_err());
        assert!(flash.take_log().is_empty());
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
        let mut flash = RamNor::from_storage(vec![0u8; 0x2000]);
        flash.cut_power_at(0);
        assert_eq!(flash.erase(0x1000, 0x2000), Err(NorError::PowerLost));
        assert!(flash.bytes()[0x1000..0x1800].iter().all(|&b| b == 0xFF));
        assert!(flash.bytes()[0x1800..0x2000].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_fixed_array_works_without_an_allocator() {
        let mut flash = RamNor::from_storage([0xFFu8; 0x2000]);
        flash.write(0x1FFC, &[1, 2, 3, 4]).unwrap();
        let storage: [u8; 0x2000] = flash.into_storage();
        assert_eq!(storage[0x1FFC..], [1, 2, 3, 4]);
    }
}
