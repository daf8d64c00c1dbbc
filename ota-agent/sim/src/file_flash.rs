//! A NOR flash chip kept in a file: the virtual ESP8266's flash survives restarts.
//!
//! The chip's semantics are [`RamNor`]'s (erase sets 0xFF, programming only clears bits,
//! programming bytes that are not erased is refused, operations are counted); every
//! operation is then written through to the file at once, so the file always holds exactly
//! what the chip holds after its last completed operation. A process killed between two
//! operations therefore leaves the same state as a power cut there; one killed inside the
//! write-through may tear that one operation, as a real power cut would.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ota_agent::flash::{
    ErrorType, NorError, NorFlash, NorFlashError, NorFlashErrorKind, RamNor, ReadNorFlash,
};
use ota_agent::layout::SECTOR_SIZE;

/// A flash operation on a file-backed chip failed.
#[derive(Debug)]
pub enum FileFlashError {
    /// The chip refused the operation (alignment, bounds, bytes not erased).
    Nor(NorError),
    /// The chip did it, but the file could not be updated.
    Io(io::Error),
}

impl std::fmt::Display for FileFlashError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileFlashError::Nor(error) => write!(f, "flash refused the operation: {error:?}"),
            FileFlashError::Io(error) => write!(f, "flash file write failed: {error}"),
        }
    }
}

impl std::error::Error for FileFlashError {}

impl NorFlashError for FileFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FileFlashError::Nor(error) => error.kind(),
            FileFlashError::Io(_) => NorFlashErrorKind::Other,
        }
    }
}

/// Why a flash file cannot be opened or created.
#[derive(Debug)]
pub enum OpenError {
    Io {
        path: PathBuf,
        source: io::Error,
    },
    /// The file's length is not a whole number of sectors.
    NotSectors {
        path: PathBuf,
        len: u64,
    },
    /// `create` was asked for a file that is already there.
    Exists {
        path: PathBuf,
    },
    /// A region to install does not fit (it overlaps another, is unaligned or out of bounds).
    Region {
        name: String,
        offset: u32,
        error: NorError,
    },
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            OpenError::NotSectors { path, len } => write!(
                f,
                "{} is {len} bytes, not a whole number of {SECTOR_SIZE}-byte sectors: not a flash file",
                path.display()
            ),
            OpenError::Exists { path } => write!(f, "{} already exists", path.display()),
            OpenError::Region { name, offset, error } => {
                write!(f, "cannot install {name} at {offset:#x}: {error:?}")
            }
        }
    }
}

impl std::error::Error for OpenError {}

/// A NOR chip whose content lives in a file.
#[derive(Debug)]
pub struct FileFlash {
    chip: RamNor<Vec<u8>>,
    file: File,
    path: PathBuf,
}

impl FileFlash {
    /// Opens an existing flash file; its length is the chip size.
    pub fn open(path: &Path) -> Result<FileFlash, OpenError> {
        let io = |source| OpenError::Io { path: path.to_path_buf(), source };
        let mut file = OpenOptions::new().read(true).write(true).open(path).map_err(io)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io)?;
        if data.is_empty() || data.len() % SECTOR_SIZE as usize != 0 {
            return Err(OpenError::NotSectors { path: path.to_path_buf(), len: data.len() as u64 });
        }
        let mut chip = RamNor::from_storage(data);
        // A real chip: tcpflash-boot counts attempts by clearing more bits of one word.
        chip.allow_bit_clearing();
        Ok(FileFlash { chip, file, path: path.to_path_buf() })
    }

    /// Creates a flash file of `size` bytes: an erased chip with `regions` (name, offset,
    /// bytes) programmed, as a serial install leaves it. The file appears complete or not
    /// at all: it is written under a temporary name and renamed.
    pub fn create(path: &Path, size: u32, regions: &[(&str, u32, &[u8])]) -> Result<FileFlash, OpenError> {
        if path.exists() {
            return Err(OpenError::Exists { path: path.to_path_buf() });
        }
        let mut chip = RamNor::new(size);
        for &(name, offset, bytes) in regions {
            let region = |error| OpenError::Region { name: name.to_owned(), offset, error };
            // The ROM loader writes words: the tail is padded with 0xFF, the erased state.
            let mut padded = bytes.to_vec();
            padded.resize(bytes.len().next_multiple_of(ota_agent::flash::WRITE_SIZE), 0xFF);
            chip.write(offset, &padded).map_err(region)?;
        }
        let temp = temp_path(path);
        let io = |source| OpenError::Io { path: path.to_path_buf(), source };
        let written = (|| {
            let mut file = File::create(&temp)?;
            file.write_all(chip.bytes())?;
            file.sync_all()?;
            std::fs::rename(&temp, path)
        })();
        if let Err(error) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(io(error));
        }
        FileFlash::open(path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The chip's content (equal to the file's).
    pub fn bytes(&self) -> &[u8] {
        self.chip.bytes()
    }

    /// Erase and program operations performed since the file was opened.
    pub fn ops(&self) -> u64 {
        self.chip.ops()
    }

    /// Flushes the file to disk.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Writes `range` of the chip to the file, whatever the chip did: a refused write may
    /// still have programmed the pages before the refused one.
    fn persist(&self, offset: u32, len: usize) -> Result<(), FileFlashError> {
        let start = (offset as usize).min(self.chip.bytes().len());
        let end = start.saturating_add(len).min(self.chip.bytes().len());
        self.file.write_all_at(&self.chip.bytes()[start..end], start as u64).map_err(FileFlashError::Io)
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".{}.partial", std::process::id()));
    path.with_file_name(name)
}

impl ErrorType for FileFlash {
    type Error = FileFlashError;
}

impl ReadNorFlash for FileFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FileFlashError> {
        self.chip.read(offset, bytes).map_err(FileFlashError::Nor)
    }

    fn capacity(&self) -> usize {
        self.chip.capacity()
    }
}

impl NorFlash for FileFlash {
    const WRITE_SIZE: usize = <RamNor<Vec<u8>> as NorFlash>::WRITE_SIZE;
    const ERASE_SIZE: usize = <RamNor<Vec<u8>> as NorFlash>::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FileFlashError> {
        let result = self.chip.erase(from, to).map_err(FileFlashError::Nor);
        if to > from {
            self.persist(from, (to - from) as usize)?;
        }
        result
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FileFlashError> {
        let result = self.chip.write(offset, bytes).map_err(FileFlashError::Nor);
        self.persist(offset, bytes.len())?;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_bytes(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    #[test]
    fn create_installs_regions_padded_with_ff_and_erases_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flash.bin");
        let flash =
            FileFlash::create(&path, 0x4000, &[("a", 0x1000, &[1, 2, 3, 4, 5]), ("b", 0x3000, &[9; 8])])
                .unwrap();
        let bytes = file_bytes(&path);
        assert_eq!(bytes.len(), 0x4000);
        assert_eq!(&bytes[0x1000..0x1008], &[1, 2, 3, 4, 5, 0xFF, 0xFF, 0xFF]);
        assert_eq!(&bytes[0x3000..0x3008], &[9; 8]);
        assert_eq!(bytes.iter().filter(|&&b| b != 0xFF).count(), 5 + 8);
        assert_eq!(flash.bytes(), &bytes[..]);
        let leftovers: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, ["flash.bin"], "no temporary file left behind");
    }

    #[test]
    fn create_refuses_an_existing_file_and_overlapping_regions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flash.bin");
        std::fs::write(&path, b"keep me").unwrap();
        assert!(matches!(FileFlash::create(&path, 0x2000, &[]), Err(OpenError::Exists { .. })));
        assert_eq!(file_bytes(&path), b"keep me");

        let other = dir.path().join("other.bin");
        let error = FileFlash::create(&other, 0x2000, &[("a", 0, &[0; 8]), ("b", 4, &[0; 4])]).unwrap_err();
        assert!(matches!(
            error,
            OpenError::Region { offset: 4, error: NorError::NotErased { offset: 4 }, .. }
        ));
        assert!(!other.exists(), "a failed install leaves no file");
    }

    #[test]
    fn every_operation_reaches_the_file_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flash.bin");
        let mut flash = FileFlash::create(&path, 0x3000, &[("old", 0x1000, &[0u8; 0x1000])]).unwrap();
        flash.erase(0x1000, 0x2000).unwrap();
        assert!(file_bytes(&path)[0x1000..0x2000].iter().all(|&b| b == 0xFF), "erase is in the file");
        flash.write(0x1100, &[0x12, 0x34, 0x56, 0x78]).unwrap();
        assert_eq!(&file_bytes(&path)[0x1100..0x1104], &[0x12, 0x34, 0x56, 0x78]);
        assert_eq!(flash.ops(), 2);
        drop(flash);

        let mut again = FileFlash::open(&path).unwrap();
        let mut word = [0u8; 4];
        again.read(0x1100, &mut word).unwrap();
        assert_eq!(word, [0x12, 0x34, 0x56, 0x78]);
        assert_eq!(again.capacity(), 0x3000);
    }

    #[test]
    fn nor_rules_hold_and_a_refused_write_keeps_file_and_chip_equal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flash.bin");
        let mut flash = FileFlash::create(&path, 0x2000, &[("x", 0x200, &[0xAB; 4])]).unwrap();
        // Page 0x100..0x200 is erased and gets programmed; page 0x200 is not erased.
        let error = flash.write(0x100, &[0x11; 0x104]).unwrap_err();
        assert!(matches!(error, FileFlashError::Nor(NorError::NotErased { offset: 0x200 })));
        assert_eq!(file_bytes(&path), flash.bytes(), "file mirrors the chip after a refused write");
        assert!(flash.bytes()[0x100..0x200].iter().all(|&b| b == 0x11));
        assert!(matches!(flash.write(2, &[0; 4]), Err(FileFlashError::Nor(NorError::NotAligned { .. }))));
        assert!(matches!(
            flash.erase(0x1000, 0x3000),
            Err(FileFlashError::Nor(NorError::OutOfBounds { .. }))
        ));
        assert_eq!(file_bytes(&path), flash.bytes());
    }

    #[test]
    fn open_refuses_files_that_are_not_whole_sectors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.bin");
        std::fs::write(&path, vec![0xFF; 100]).unwrap();
        let error = FileFlash::open(&path).unwrap_err();
        assert!(error.to_string().contains("not a whole number of 4096-byte sectors"), "{error}");
        assert!(matches!(FileFlash::open(&dir.path().join("missing")), Err(OpenError::Io { .. })));
    }
}
