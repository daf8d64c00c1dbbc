//! The validator: reads an image front to back from flash and checks everything the agent
//! relies on before it switches slots, and what a bootloader checks before it boots one.

use sha2::{Digest, Sha256};

use crate::auth::Digest256;
use crate::crc::Crc32;
use crate::descriptor::{self, Descriptor};
use crate::flash::{NorFlashError, NorFlashErrorKind, ReadNorFlash};
use crate::layout::sdk::gen_appbin_link_addr;
use crate::layout::{Slot, irom_link_addr_for};

use super::{
    CHECKSUM_SEED, FlashParams, IROM_ALIGN, ImageError, ImageInfo, MAGIC_SEGMENTS, MAGIC_V2,
    MAX_RAM_SEGMENTS, MIN_SCRATCH, MemoryKind, SEGMENT_ALIGN, V2_MARKER, checksum_position, crc_trailer,
    loadable_at_boot, sdk_app_number,
};

/// Whether this build reads images in `gen_appbin.py`'s form: everywhere but in a bare-metal
/// firmware (`cargo tcpflash build`'s `cfg(tcpflash_platform = "bare-metal")`), whose agent
/// writes rBoot slots only, which no such image is linked for (about 450 bytes of IROM).
const READS_SDK_IMAGES: bool = !cfg!(tcpflash_platform = "bare-metal");

/// error keeps every `?` of a scan a register test: with the 20-byte [`ImageError`] on
/// each return, scanning cost the bootloader (a 4 KB sector in all) 2 KB more.
pub struct Stop;

/// Reads an image front to back through the caller's scratch buffer, feeding every byte
/// it hands out to a CRC. All positions are checked against the image's end first, so no
/// arithmetic can overflow.
pub struct Reader<'a, F: ReadNorFlash> {
    flash: &'a mut F,
    buf: &'a mut [u8],
    /// Flash offset of `buf[0]` and how many bytes of `buf` hold flash data.
    buf_at: u32,
    buf_len: u32,
    start: u32,
    pos: u32,
    end: u32,
    capacity: u32,
    crc: Crc32,
    /// Why the last [`Stop`] happened.
    error: Option<ImageError>,
    /// Fed every byte handed out, when the caller wants the image's SHA-256 too (the agent:
    /// one pass over the slot serves both checks).
    sha256: Option<&'a mut Sha256>,
}

impl<'a, F: ReadNorFlash> Reader<'a, F> {
    pub fn new(flash: &'a mut F, scratch: &'a mut [u8], start: u32, len: u32) -> Result<Self, ImageError> {
        let read_size = F::READ_SIZE.max(1);
        let min = MIN_SCRATCH.max(read_size);
        if scratch.len() < min {
            return Err(ImageError::ScratchTooSmall { len: scratch.len(), min });
        }
        // Whole read units only, and never more than a u32 can count.
        let usable = (scratch.len() - scratch.len() % read_size).min(1 << 30);
        let capacity = u32::try_from(flash.capacity()).unwrap_or(u32::MAX);
        let end = start.checked_add(len).filter(|&end| end <= capacity).ok_or(ImageError::OutOfFlash {
            offset: start,
            len,
            capacity,
        })?;
        Ok(Reader {
            flash,
            buf: &mut scratch[..usable],
            buf_at: 0,
            buf_len: 0,
            start,
            pos: start,
            end,
            capacity,
            crc: Crc32::new(),
            error: None,
            sha256: None,
        })
    }

    /// Runs `read` and turns a [`Stop`] back into its reason.
    pub fn run<T>(&mut self, read: impl FnOnce(&mut Self) -> Result<T, Stop>) -> Result<T, ImageError> {
        read(self).map_err(|Stop| self.take_error())
    }

    /// Records why reading stops.
    #[inline(never)]
    fn fail(&mut self, error: ImageError) -> Stop {
        self.error = Some(error);
        Stop
    }

    fn take_error(&mut self) -> ImageError {
        // Every `Stop` comes from `fail`.
        self.error.take().unwrap_or(ImageError::Flash(NorFlashErrorKind::Other))
    }

    /// Flash offset of the next byte.
    pub fn position(&self) -> u32 {
        self.pos
    }

    /// Position inside the image.
    pub fn offset(&self) -> u32 {
        self.pos - self.start
    }

    pub fn remaining(&self) -> u32 {
        self.end - self.pos
    }

    /// The length the reader was set up for.
    pub fn image_len(&self) -> u32 {
        self.end - self.start
    }

    /// Fails unless `n` more bytes are left.
    fn need(&mut self, n: u32) -> Result<(), Stop> {
        if n > self.remaining() {
            let error =
                ImageError::Truncated { needed: self.offset().saturating_add(n), len: self.image_len() };
            return Err(self.fail(error));
        }
        Ok(())
    }

    /// Hands the next `n` bytes to `f`, in pieces of at most the scratch size. One copy
    /// serves every caller (a `dyn` callback, never inlined): the bootloader that runs this
    /// must fit a 4 KB sector.
    #[inline(never)]
    pub fn consume(&mut self, n: u32, f: &mut dyn FnMut(&[u8])) -> Result<(), Stop> {
        self.need(n)?;
        let mut left = n;
        while left > 0 {
            let buffered = self.pos >= self.buf_at && self.pos - self.buf_at < self.buf_len;
            if !buffered {
                self.fill()?;
            }
            let in_buf = self.pos - self.buf_at;
            let take = (self.buf_len - in_buf).min(left);
            let bytes = &self.buf[in_buf as usize..(in_buf + take) as usize];
            self.crc.update(bytes);
            if let Some(hasher) = &mut self.sha256 {
                hasher.update(bytes);
            }
            f(bytes);
            self.pos += take;
            left -= take;
        }
        Ok(())
    }

    /// Skips `n` bytes (they still go into the CRC).
    pub fn skip(&mut self, n: u32) -> Result<(), Stop> {
        self.consume(n, &mut |_| {})
    }

    /// Reads the aligned flash window that starts at or just before `pos`. In u32
    /// arithmetic (no 64-bit code for a 32-bit core): `at <= pos <= end <= capacity`, and
    /// the buffer, a whole number of read units, is at most 1 GB.
    fn fill(&mut self) -> Result<(), Stop> {
        let read_size = F::READ_SIZE.max(1) as u32;
        let at = self.pos - self.pos % read_size;
        let wanted = (self.end - at).min(self.buf.len() as u32).div_ceil(read_size) * read_size;
        let len = wanted.min(self.capacity - at);
        if let Err(error) = self.flash.read(at, &mut self.buf[..len as usize]) {
            return Err(self.fail(ImageError::Flash(error.kind())));
        }
        self.buf_at = at;
        self.buf_len = len;
        if self.buf_len <= self.pos - self.buf_at {
            // Only when the flash is not a whole number of read units.
            return Err(self.fail(ImageError::Flash(NorFlashErrorKind::OutOfBounds)));
        }
        Ok(())
    }

    #[inline(never)]
    fn read_into(&mut self, out: &mut [u8]) -> Result<(), Stop> {
        let mut filled = 0;
        self.consume(out.len() as u32, &mut |bytes| {
            out[filled..filled + bytes.len()].copy_from_slice(bytes);
            filled += bytes.len();
        })
    }

    #[inline(never)]
    pub fn read_u32(&mut self) -> Result<u32, Stop> {
        let mut bytes = [0u8; 4];
        self.read_into(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    pub fn read_array<const N: usize>(&mut self) -> Result<[u8; N], Stop> {
        let mut out = [0u8; N];
        self.read_into(&mut out)?;
        Ok(out)
    }
}

/// Reads the image of `len` bytes at flash `offset` and checks its structure: both headers,
/// the IROM length, segment count and ranges, that `len` is exactly the image, and the
/// descriptor when IROM starts with one. The checksum and CRC are read and computed but
/// not compared: [`inspect`] does that; tools that describe a damaged image use this.
pub fn scan<F: ReadNorFlash>(
    flash: &mut F,
    offset: u32,
    len: u32,
    scratch: &mut [u8],
) -> Result<ImageInfo, ImageError> {
    let mut info = ImageInfo::default();
    scan_image(flash, offset, len, scratch, Scan::Exact, &mut info)?;
    Ok(info)
}

/// How [`scan_image`] reads an image.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// `len` is the image's length; the descriptor is checked whole (texts included).
    Exact,
    /// `len` only bounds the image (its headers say where it ends); of the descriptor only
    /// the link address is read (what a bootloader checks; the rest reads as empty).
    Boot,
}

/// [`scan`] into `info`, as `mode` says. Filling the caller's `ImageInfo` in place spares
/// the bootloader the copies of a 180-byte return value.
#[inline(never)]
fn scan_image<F: ReadNorFlash>(
    flash: &mut F,
    offset: u32,
    len: u32,
    scratch: &mut [u8],
    mode: Scan,
    info: &mut ImageInfo,
) -> Result<(), ImageError> {
    Reader::new(flash, scratch, offset, len)?.run(|reader| scan_headers(reader, len, mode, info))
}

/// The body of [`scan_image`].
fn scan_headers<F: ReadNorFlash>(
    reader: &mut Reader<'_, F>,
    len: u32,
    scan: Scan,
    info: &mut ImageInfo,
) -> Result<(), Stop> {
    // Headers are read a word at a time: whole u32 loads, no byte shuffling (the
    // bootloader that runs this must fit a 4 KB sector).
    let head = reader.read_u32()?;
    let entry = reader.read_u32()?;
    let [magic, marker, mode, size_freq] = head.to_le_bytes();
    if magic != MAGIC_V2 {
        return Err(reader.fail(ImageError::BadMagic(magic)));
    }
    if marker != V2_MARKER {
        return Err(reader.fail(ImageError::BadV2Marker(marker)));
    }
    // `gen_appbin.py` writes `00` and the app number here (its flash parameters are in the
    // second header only); esptool writes the flash parameters in both. tcpflash-boot never
    // boots an SDK image (Espressif's bootloader does): a boot scan takes esptool's form only.
    let sdk_app =
        if READS_SDK_IMAGES && scan == Scan::Exact { sdk_app_number(mode, size_freq) } else { None };
    let first = match sdk_app {
        None => Some(FlashParams::from_header_bytes(mode, size_freq).map_err(|error| reader.fail(error))?),
        Some(_) => None,
    };

    // The IROM segment: its load address is written as 0 and means nothing.
    reader.read_u32()?;
    let irom_len = reader.read_u32()?;
    if !irom_len.is_multiple_of(IROM_ALIGN) {
        return Err(reader.fail(ImageError::IromLength(irom_len)));
    }
    reader.need(irom_len)?;
    let mut descriptor = None;
    let mut irom_left = irom_len;
    if irom_len >= descriptor::SIZE as u32 {
        let magic = reader.read_u32()?;
        let link_addr = reader.read_u32()?;
        irom_left -= 8;
        if magic == descriptor::MAGIC {
            descriptor = Some(if scan == Scan::Boot {
                Descriptor::linked_at(link_addr)
            } else {
                let mut bytes = [0u8; descriptor::SIZE];
                bytes[..4].copy_from_slice(&magic.to_le_bytes());
                bytes[4..8].copy_from_slice(&link_addr.to_le_bytes());
                reader.read_into(&mut bytes[8..])?;
                irom_left -= descriptor::SIZE as u32 - 8;
                Descriptor::parse(&bytes).map_err(|error| reader.fail(ImageError::BadDescriptor(error)))?
            });
        }
    }
    reader.skip(irom_left)?;

    let second = reader.read_u32()?;
    let second_entry = reader.read_u32()?;
    let [second_magic, count, second_mode, second_size_freq] = second.to_le_bytes();
    if second_magic != MAGIC_SEGMENTS {
        return Err(reader.fail(ImageError::BadSegmentMagic(second_magic)));
    }
    let segment_count = usize::from(count);
    if segment_count > MAX_RAM_SEGMENTS {
        return Err(reader.fail(ImageError::TooManySegments(segment_count)));
    }
    let same = (second_mode, second_size_freq) == (mode, size_freq);
    let sdk_app = if same { None } else { sdk_app };
    if (sdk_app.is_none() && !same) || second_entry != entry {
        return Err(reader.fail(ImageError::HeaderMismatch));
    }
    // Parsed once where both headers hold them (always, in a build without SDK images).
    let params = match first {
        Some(params) => params,
        None => FlashParams::from_header_bytes(second_mode, second_size_freq)
            .map_err(|error| reader.fail(error))?,
    };

    let mut computed_checksum = CHECKSUM_SEED;
    for index in 0..segment_count {
        let addr = reader.read_u32()?;
        let len = reader.read_u32()?;
        if !len.is_multiple_of(SEGMENT_ALIGN) {
            return Err(reader.fail(ImageError::SegmentLength { index, len }));
        }
        // Any RAM for an image at rest; to boot, only what a firmware may load: copying it
        // then overwrites neither the bootloader (cache RAM) nor its stack (DRAM's top).
        let loadable = match scan {
            Scan::Exact => MemoryKind::ram_holding(addr, len).is_some(),
            Scan::Boot => loadable_at_boot(addr, len),
        };
        if !loadable {
            return Err(reader.fail(ImageError::SegmentOutsideRam { index, addr, len }));
        }
        reader.consume(len, &mut |bytes| {
            computed_checksum = bytes.iter().fold(computed_checksum, |s, b| s ^ b)
        })?;
        info.segments[index] = (addr, len);
    }

    let here = reader.offset();
    reader.skip(checksum_position(here) - here)?;
    let [checksum] = reader.read_array()?;
    let computed_crc = crc_trailer(reader.crc.finish());
    let crc = reader.read_u32()?;
    if scan == Scan::Exact && reader.remaining() != 0 {
        return Err(reader.fail(ImageError::TrailingBytes { expected: reader.offset(), len }));
    }
    info.params = params;
    info.sdk_app = sdk_app;
    info.entry = entry;
    info.irom_len = irom_len;
    info.segment_count = segment_count;
    info.len = reader.offset();
    info.checksum = checksum;
    info.computed_checksum = computed_checksum;
    info.crc = crc;
    info.computed_crc = computed_crc;
    info.descriptor = descriptor;
    Ok(())
}

/// Reads and fully checks the image of `len` bytes at flash `offset`: everything [`scan`]
/// checks, then the XOR checksum and the CRC trailer. `scratch` (at least
/// [`MIN_SCRATCH`] bytes; the agent passes its 4 KB sector buffer) sets the read size.
pub fn inspect<F: ReadNorFlash>(
    flash: &mut F,
    offset: u32,
    len: u32,
    scratch: &mut [u8],
) -> Result<ImageInfo, ImageError> {
    let info = scan(flash, offset, len, scratch)?;
    check_integrity(&info)?;
    Ok(info)
}

fn check_integrity(info: &ImageInfo) -> Result<(), ImageError> {
    if !info.checksum_valid() {
        return Err(ImageError::ChecksumMismatch { stored: info.checksum, computed: info.computed_checksum });
    }
    if !info.crc_valid() {
        return Err(ImageError::CrcMismatch { stored: info.crc, computed: info.computed_crc });
    }
    Ok(())
}

/// [`inspect`] plus the checks that make an image safe to boot from `slot`: it fits, its
/// descriptor was linked for this very slot, and, when the client sent one, its SHA-256 is
/// `sha256` (computed in the same pass: the slot is read once).
pub fn verify_for_slot<F: ReadNorFlash>(
    flash: &mut F,
    slot: &Slot,
    len: u32,
    scratch: &mut [u8],
    sha256: Option<&Digest256>,
) -> Result<ImageInfo, ImageError> {
    if len > slot.capacity {
        return Err(ImageError::TooLarge { len, capacity: slot.capacity });
    }
    let mut info = ImageInfo::default();
    let mut hasher = Sha256::new();
    let mut reader = Reader::new(flash, scratch, slot.offset, len)?;
    if sha256.is_some() {
        reader.sha256 = Some(&mut hasher);
    }
    let read = reader.run(|reader| scan_headers(reader, len, Scan::Exact, &mut info));
    if let Some(expected) = sha256 {
        // Bytes that are not the ones the client sent explain any other fault best (a
        // transfer or flash error), so the rest is hashed even when the structure failed.
        if read.is_err() {
            let rest = reader.remaining();
            reader.run(|reader| reader.skip(rest))?;
        }
        if crate::auth::finish_sha256(&mut hasher) != *expected {
            return Err(ImageError::Sha256Mismatch);
        }
    }
    read?;
    check_integrity(&info)?;
    let expected = slot.irom_link_addr();
    let linked = match (info.descriptor, info.sdk_app) {
        (Some(descriptor), _) => descriptor.link_addr,
        // An SDK image without our descriptor: its app number and flash map say where the
        // SDK's linker script put its IROM.
        (None, Some(app)) if READS_SDK_IMAGES => {
            gen_appbin_link_addr(info.params.size, app).ok_or(ImageError::NoDescriptor)?
        }
        (None, _) => return Err(ImageError::NoDescriptor),
    };
    if linked != expected {
        return Err(ImageError::WrongSlot { linked, expected });
    }
    Ok(info)
}

/// What a bootloader checks before it starts the image at flash `offset`, which may take
/// up to `capacity` bytes (`FlashLayout::rom_capacity`); nobody says how long the image
/// is, so its headers do. Everything [`inspect`] checks; the descriptor, when the image
/// carries one, linked for this offset (an image without one, otherwise valid, boots like
/// rBoot boots it); and every RAM segment inside the memory a firmware may load
/// (`DRAM_USABLE` and `IRAM`), so copying it overwrites neither the bootloader nor its stack.
#[inline(never)]
pub fn verify_bootable<F: ReadNorFlash>(
    flash: &mut F,
    offset: u32,
    capacity: u32,
    scratch: &mut [u8],
    info: &mut ImageInfo,
) -> Result<(), ImageError> {
    if offset == 0 || offset == u32::MAX {
        return Err(ImageError::NoRom(offset));
    }
    scan_image(flash, offset, capacity, scratch, Scan::Boot, info)?;
    check_integrity(info)?;
    if let Some(descriptor) = info.descriptor {
        let expected = irom_link_addr_for(offset);
        if descriptor.link_addr != expected {
            return Err(ImageError::WrongSlot { linked: descriptor.link_addr, expected });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;
    use std::vec;
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;
    use crate::descriptor::DescriptorError;
    use crate::flash::RamNor;
    use crate::image::test_support::*;
    use crate::image::{FlashFreq, FlashMode, FlashSize, Segment};
    use crate::layout::{DEFAULT_LAYOUT, SlotId};
    #[test]
    fn inspect_reads_back_what_was_written() {
        let image = sample_image(0x4020_2010);
        for scratch_len in [64, 65, 100, 4096] {
            let mut flash = flash_with::<4>(&image, 0x2000, 0x10000);
            let mut scratch = vec![0u8; scratch_len];
            let info = inspect(&mut flash, 0x2000, image.len() as u32, &mut scratch).unwrap();
            assert_eq!(info.params, DIO_4M_80);
            assert_eq!(info.entry, 0x4010_0004);
            assert_eq!(info.irom_len, 112);
            assert_eq!(info.segments(), &[(0x4010_0000, 32), (0x3FFE_8000, 8), (0x3FFE_8008, 4)]);
            assert_eq!(info.len, image.len() as u32);
            assert_eq!(info.checksum, image[207]);
            assert_eq!(info.crc, u32::from_le_bytes(image[208..].try_into().unwrap()));
            let descriptor = info.descriptor.unwrap();
            assert_eq!(
                (descriptor.link_addr, descriptor.name(), descriptor.version()),
                (0x4020_2010, "blinky", "1.2.3")
            );
        }
        // A 64-byte scratch reads the 212-byte image in four windows, not byte by byte.
        let mut flash = flash_with::<4>(&image, 0x2000, 0x10000);
        inspect(&mut flash, 0x2000, image.len() as u32, &mut [0u8; 64]).unwrap();
        assert_eq!(flash.reads, 4);
    }

    #[test]
    fn unaligned_offsets_work_with_an_aligned_driver() {
        let image = sample_image(0x4020_2010);
        let mut flash = flash_with::<4>(&image, 0x1003, 0x2000);
        assert!(inspect(&mut flash, 0x1003, image.len() as u32, &mut [0u8; 64]).is_ok());
        // An image ending at the very end of the flash.
        let size = 0x1000 + image.len().next_multiple_of(4);
        let mut flash = flash_with::<4>(&image, size - image.len(), size);
        assert!(inspect(&mut flash, (size - image.len()) as u32, image.len() as u32, &mut [0u8; 64]).is_ok());
    }

    #[test]
    fn images_without_descriptor_or_with_tiny_irom_are_fine_for_inspect() {
        let image = write(FlashParams::default(), 0x4010_0000, &[0x55; 48], &[]);
        let info =
            inspect(&mut RamNor::from_storage(image.clone()), 0, image.len() as u32, &mut [0; 64]).unwrap();
        assert_eq!(info.descriptor, None);
        let image = write(FlashParams::default(), 0x4010_0000, &[], &[]);
        let info =
            inspect(&mut RamNor::from_storage(image.clone()), 0, image.len() as u32, &mut [0; 64]).unwrap();
        assert_eq!((info.irom_len, info.descriptor), (0, None));
    }

    fn inspect_bytes(image: &[u8]) -> Result<ImageInfo, ImageError> {
        inspect(&mut RamNor::from_storage(image.to_vec()), 0, image.len() as u32, &mut [0; 64])
    }

    /// Recomputes checksum and CRC after a structural edit, so only the edit is tested.
    fn reseal(image: &mut [u8]) {
        let n = image.len();
        let crc = crc_trailer(crc32fast::hash(&image[..n - 4]));
        image[n - 4..].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn each_corruption_has_its_error() {
        let good = sample_image(0x4020_2010);
        let len = good.len() as u32;
        let edit = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut image = good.clone();
            f(&mut image);
            inspect_bytes(&image)
        };
        let sealed = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut image = good.clone();
            f(&mut image);
            reseal(&mut image);
            inspect_bytes(&image)
        };

        assert_eq!(edit(&|i| i[0] = 0xE9), Err(ImageError::BadMagic(0xE9)));
        assert_eq!(edit(&|i| i[1] = 3), Err(ImageError::BadV2Marker(3)));
        assert_eq!(edit(&|i| i[2] = 9), Err(ImageError::UnknownFlashMode(9)));
        assert_eq!(edit(&|i| i[3] = 0xA0), Err(ImageError::UnknownFlashSize(0xA)));
        assert_eq!(edit(&|i| i[12] = 113), Err(ImageError::IromLength(113)));
        assert_eq!(edit(&|i| i[15] = 0x10), Err(ImageError::Truncated { needed: 16 + 0x1000_0070, len }));
        assert_eq!(edit(&|i| i[128] = 0xEA), Err(ImageError::BadSegmentMagic(0xEA)));
        assert_eq!(edit(&|i| i[129] = 16), Err(ImageError::TooManySegments(16)));
        assert_eq!(edit(&|i| i[131] = 0x20), Err(ImageError::HeaderMismatch));
        assert_eq!(edit(&|i| i[132] = 0x08), Err(ImageError::HeaderMismatch));
        assert_eq!(edit(&|i| i[140] = 30), Err(ImageError::SegmentLength { index: 0, len: 30 }));
        assert_eq!(
            edit(&|i| i[179] = 0x40),
            Err(ImageError::SegmentOutsideRam { index: 1, addr: 0x40FE_8000, len: 8 })
        );
        // A segment that starts in DRAM but runs past its end.
        assert_eq!(
            edit(&|i| i[192..196].copy_from_slice(&[0xFE, 0xFF, 0xFF, 0x3F])),
            Err(ImageError::SegmentOutsideRam { index: 2, addr: 0x3FFF_FFFE, len: 4 })
        );
        assert_eq!(
            edit(&|i| i[150] ^= 1),
            Err(ImageError::ChecksumMismatch { stored: good[207], computed: good[207] ^ 1 })
        );
        let computed = crc_trailer(crc32fast::hash(&{
            let mut image = good[..208].to_vec();
            image[100] ^= 0x80;
            image
        }));
        let stored = u32::from_le_bytes(good[208..].try_into().unwrap());
        assert_eq!(edit(&|i| i[100] ^= 0x80), Err(ImageError::CrcMismatch { stored, computed }));
        assert!(matches!(edit(&|i| i[210] ^= 1), Err(ImageError::CrcMismatch { .. })));
        // A padding byte is covered by the CRC, not by the checksum.
        assert!(matches!(edit(&|i| i[205] = 1), Err(ImageError::CrcMismatch { .. })));
        // The descriptor's text is checked when its magic is there.
        assert_eq!(sealed(&|i| i[16 + 16] = 0xFF), Err(ImageError::BadDescriptor(DescriptorError::BadText)));
        // Without its magic there is simply no descriptor.
        assert_eq!(sealed(&|i| i[16] = b'X').map(|info| info.descriptor), Ok(None));
    }

    #[test]
    fn length_must_match_exactly() {
        let image = sample_image(0x4020_2010);
        let len = image.len() as u32;
        for cut in [0, 1, 7, 8, 20, 127, 128, 200, 207, 208, 211] {
            let result = inspect_bytes(&image[..cut]);
            assert!(
                matches!(result, Err(ImageError::Truncated { len, .. }) if len == cut as u32),
                "{cut}: {result:?}"
            );
        }
        let mut longer = image.clone();
        longer.extend_from_slice(&[0xFF; 4]);
        assert_eq!(inspect_bytes(&longer), Err(ImageError::TrailingBytes { expected: len, len: len + 4 }));
        // Within a larger flash, the declared length decides.
        let mut flash = flash_with::<1>(&image, 0, 0x1000);
        assert_eq!(
            inspect(&mut flash, 0, len + 16, &mut [0; 64]).unwrap_err(),
            ImageError::TrailingBytes { expected: len, len: len + 16 }
        );
        assert_eq!(
            inspect(&mut flash, 0xF00, 0x200, &mut [0; 64]).unwrap_err(),
            ImageError::OutOfFlash { offset: 0xF00, len: 0x200, capacity: 0x1000 }
        );
        assert_eq!(
            inspect(&mut flash, 0, len, &mut [0; 63]).unwrap_err(),
            ImageError::ScratchTooSmall { len: 63, min: 64 }
        );
    }

    #[test]
    fn flash_errors_are_reported() {
        // A flash that is not a whole number of 4-byte read units: the last read cannot be
        // aligned, and the driver's error comes through.
        let mut image = sample_image(0x4020_2010);
        image.pop();
        let len = image.len() as u32;
        let mut flash = AlignedFlash::<4> { data: image, reads: 0 };
        assert_eq!(
            inspect(&mut flash, 0, len, &mut [0; 64]),
            Err(ImageError::Flash(NorFlashErrorKind::NotAligned))
        );
    }

    fn bootable<F: ReadNorFlash>(
        flash: &mut F,
        offset: u32,
        capacity: u32,
        scratch: &mut [u8],
    ) -> Result<ImageInfo, ImageError> {
        let mut info = ImageInfo::default();
        verify_bootable(flash, offset, capacity, scratch, &mut info).map(|()| info)
    }

    #[test]
    fn verify_bootable_finds_the_length_from_the_headers() {
        let layout = DEFAULT_LAYOUT;
        let user2 = layout.slot(SlotId::User2);
        let image = sample_image(user2.irom_link_addr());
        let mut flash = flash_with::<4>(&image, user2.offset as usize, layout.flash_size as usize);
        let mut scratch = [0u8; 256];
        let info = bootable(&mut flash, user2.offset, user2.capacity, &mut scratch).unwrap();
        assert_eq!(info.len, image.len() as u32);
        let inspected = inspect(&mut flash, user2.offset, image.len() as u32, &mut scratch).unwrap();
        // Of the descriptor only the link address is read.
        let read = info.descriptor.unwrap();
        assert_eq!((read.link_addr, read.name()), (0x4028_2010, ""));
        assert_eq!(inspected.descriptor.unwrap().name(), "blinky");
        assert_eq!(ImageInfo { descriptor: None, ..info }, ImageInfo { descriptor: None, ..inspected });
        // Each RAM segment's data is where ram_segments_at says.
        let segments: Vec<_> = info.ram_segments_at(user2.offset).collect();
        assert_eq!(segments.iter().map(|&(_, addr, len)| (addr, len)).collect::<Vec<_>>(), info.segments());
        let expected: [&[u8]; 3] =
            [&(0..29u8).chain([0; 3]).collect::<Vec<_>>(), &[0xAA; 6], &[0x11, 0x22, 0x33, 0x44]];
        for ((at, _, len), data) in segments.into_iter().zip(expected) {
            let at = (at - user2.offset) as usize;
            assert_eq!(&image[at..at + data.len()], data);
            assert_eq!(len as usize, data.len().next_multiple_of(4));
        }

        // Bounded by the capacity, checked like inspect, descriptor for this offset.
        let short = image.len() as u32 - 1;
        assert!(matches!(
            bootable(&mut flash, user2.offset, short, &mut scratch),
            Err(ImageError::Truncated { len, .. }) if len == short
        ));
        let user1 = layout.slot(SlotId::User1);
        let mut elsewhere = flash_with::<4>(&image, user1.offset as usize, layout.flash_size as usize);
        assert_eq!(
            bootable(&mut elsewhere, user1.offset, user1.capacity, &mut scratch),
            Err(ImageError::WrongSlot { linked: 0x4028_2010, expected: 0x4020_2010 })
        );
        let mut broken = image.clone();
        broken[100] ^= 1;
        let mut flash = flash_with::<4>(&broken, user2.offset as usize, layout.flash_size as usize);
        assert!(matches!(
            bootable(&mut flash, user2.offset, user2.capacity, &mut scratch),
            Err(ImageError::CrcMismatch { .. })
        ));
        let mut erased = flash_with::<4>(&[], 0, layout.flash_size as usize);
        assert_eq!(
            bootable(&mut erased, user2.offset, user2.capacity, &mut scratch),
            Err(ImageError::BadMagic(0xFF))
        );
        assert_eq!(bootable(&mut erased, 0, 0x1000, &mut scratch), Err(ImageError::NoRom(0)));
    }

    #[test]
    fn verify_bootable_takes_foreign_images_but_not_segments_over_the_bootloader() {
        let layout = DEFAULT_LAYOUT;
        let user1 = layout.slot(SlotId::User1);
        let mut scratch = [0u8; 64];
        // No descriptor (an SDK or C build): bootable like rBoot boots it.
        let foreign =
            write(DIO_4M_80, 0x4010_0004, &[0x5A; 48], &[Segment { addr: 0x4010_0000, data: &[1; 8] }]);
        let mut flash = flash_with::<4>(&foreign, user1.offset as usize, layout.flash_size as usize);
        let info = bootable(&mut flash, user1.offset, user1.capacity, &mut scratch).unwrap();
        assert_eq!(info.descriptor, None);
        // A DRAM segment in the ROM's top 16 KB (the stack the copy runs on) is refused.
        let over_stack = write(
            DIO_4M_80,
            0x4010_0004,
            &irom_for(user1.irom_link_addr(), 0),
            &[Segment { addr: 0x3FFF_FF00, data: &[1; 16] }],
        );
        let mut flash = flash_with::<4>(&over_stack, user1.offset as usize, layout.flash_size as usize);
        assert_eq!(
            bootable(&mut flash, user1.offset, user1.capacity, &mut scratch),
            Err(ImageError::SegmentOutsideRam { index: 0, addr: 0x3FFF_FF00, len: 16 })
        );
        let mut flash = flash_with::<4>(&over_stack, user1.offset as usize, layout.flash_size as usize);
        assert!(
            inspect(&mut flash, user1.offset, over_stack.len() as u32, &mut scratch).is_ok(),
            "inspect allows it"
        );
    }

    #[test]
    fn images_in_the_form_gen_appbin_writes_are_read_with_their_app_number() {
        let esptool = sample_image(0x4020_2010);
        for app in [1, 2] {
            let sdk = gen_appbin_form(&esptool, app);
            assert_eq!(&sdk[..4], &[0xEA, 0x04, 0x00, app]);
            let info = inspect_bytes(&sdk).unwrap();
            assert_eq!(info.sdk_app, Some(app));
            assert_eq!(info.params, DIO_4M_80, "the flash parameters come from the second header");
            assert_eq!(info.segments(), inspect_bytes(&esptool).unwrap().segments());
        }
        assert_eq!(inspect_bytes(&esptool).unwrap().sdk_app, None);
        // Other values are esptool's flash parameters, which must then agree.
        assert_eq!(inspect_bytes(&gen_appbin_form(&esptool, 3)), Err(ImageError::UnknownFlashFreq(3)));
        assert_eq!(inspect_bytes(&gen_appbin_form(&esptool, 0)), Err(ImageError::HeaderMismatch));
        // gen_appbin's form with a different entry in the second header is still refused.
        let mut entry = gen_appbin_form(&esptool, 1);
        entry[128 + 4] ^= 4;
        reseal(&mut entry);
        assert_eq!(inspect_bytes(&entry), Err(ImageError::HeaderMismatch));
        // esptool's qio / 512KB / 26m header is `00 01` too: both headers agree, so it is
        // esptool's form.
        let params =
            FlashParams { mode: FlashMode::Qio, size: FlashSize::Size512K, freq: FlashFreq::Freq26M };
        let ambiguous = write(params, 0x4010_0004, &irom_for(0x4020_2010, 12), &[]);
        assert_eq!(&ambiguous[2..4], &[0, 1]);
        let info = inspect_bytes(&ambiguous).unwrap();
        assert_eq!((info.sdk_app, info.params), (None, params));
    }

    /// A C firmware built by the SDK's Makefile has no tcpflash descriptor: its app number and
    /// flash map say which slot it was linked for.
    #[test]
    fn an_sdk_image_without_descriptor_is_checked_by_its_app_number_and_map() {
        use crate::layout::sdk::SdkMap;
        let params = FlashParams { size: FlashSize::Size1M, ..DIO_4M_80 };
        let segments = [Segment { addr: 0x4010_0000, data: &[1, 2, 3, 4] }];
        let esptool = write(params, 0x4010_0000, &[0x55; 64], &segments);
        let map = SdkMap::by_name("sdk-1MB").unwrap();
        let [user1, user2] = map.layout.slots;
        let mut scratch = [0u8; 256];
        for (app, slot, other) in [(1, user1, user2), (2, user2, user1)] {
            let image = gen_appbin_form(&esptool, app);
            let len = image.len() as u32;
            let mut flash = flash_with::<4>(&image, slot.offset as usize, map.layout.flash_size as usize);
            assert_eq!(
                verify_for_slot(&mut flash, &slot, len, &mut scratch, None).unwrap().sdk_app,
                Some(app)
            );
            let mut flash = flash_with::<4>(&image, other.offset as usize, map.layout.flash_size as usize);
            assert_eq!(
                verify_for_slot(&mut flash, &other, len, &mut scratch, None),
                Err(ImageError::WrongSlot {
                    linked: slot.irom_link_addr(),
                    expected: other.irom_link_addr()
                })
            );
        }
        // The same image in an rBoot slot: linked elsewhere.
        let rboot = DEFAULT_LAYOUT.slot(SlotId::User1);
        let image = gen_appbin_form(&esptool, 1);
        let mut flash = flash_with::<4>(&image, rboot.offset as usize, 0x10_0000);
        assert_eq!(
            verify_for_slot(&mut flash, rboot, image.len() as u32, &mut scratch, None),
            Err(ImageError::WrongSlot { linked: 0x4020_1010, expected: 0x4020_2010 })
        );
        // esptool's form without a descriptor says nothing about its slot.
        let mut flash = flash_with::<4>(&esptool, user1.offset as usize, 0x10_0000);
        assert_eq!(
            verify_for_slot(&mut flash, &user1, esptool.len() as u32, &mut scratch, None),
            Err(ImageError::NoDescriptor)
        );
        // A map the SDK layouts leave out (512 KB) gives no link address either.
        let small =
            write(FlashParams { size: FlashSize::Size512K, ..params }, 0x4010_0000, &[0x55; 64], &segments);
        let image = gen_appbin_form(&small, 1);
        let mut flash = flash_with::<4>(&image, user1.offset as usize, 0x10_0000);
        assert_eq!(
            verify_for_slot(&mut flash, &user1, image.len() as u32, &mut scratch, None),
            Err(ImageError::NoDescriptor)
        );
    }

    #[test]
    fn verify_for_slot_checks_size_descriptor_and_link_address() {
        let layout = DEFAULT_LAYOUT;
        let user1 = layout.slot(SlotId::User1);
        let user2 = layout.slot(SlotId::User2);
        let image = sample_image(user2.irom_link_addr());
        let len = image.len() as u32;
        let mut flash = flash_with::<4>(&image, user2.offset as usize, layout.flash_size as usize);
        let mut scratch = [0u8; 4096];
        let info = verify_for_slot(&mut flash, user2, len, &mut scratch, None).unwrap();
        assert_eq!(info.descriptor.unwrap().link_addr, 0x4028_2010);

        // The same bytes in user1's place: linked for the other slot.
        let mut flash = flash_with::<4>(&image, user1.offset as usize, layout.flash_size as usize);
        assert_eq!(
            verify_for_slot(&mut flash, user1, len, &mut scratch, None),
            Err(ImageError::WrongSlot { linked: 0x4028_2010, expected: 0x4020_2010 })
        );
        assert_eq!(
            verify_for_slot(&mut flash, user1, user1.capacity + 1, &mut scratch, None),
            Err(ImageError::TooLarge { len: user1.capacity + 1, capacity: user1.capacity })
        );

        let bare = write(DIO_4M_80, 0x4010_0000, &[0; 64], &[]);
        let mut flash = flash_with::<4>(&bare, user1.offset as usize, layout.flash_size as usize);
        assert_eq!(
            verify_for_slot(&mut flash, user1, bare.len() as u32, &mut scratch, None),
            Err(ImageError::NoDescriptor)
        );
        // inspect errors pass through.
        let mut broken = sample_image(user1.irom_link_addr());
        broken[88] ^= 1;
        let mut flash = flash_with::<4>(&broken, user1.offset as usize, layout.flash_size as usize);
        assert!(matches!(
            verify_for_slot(&mut flash, user1, broken.len() as u32, &mut scratch, None),
            Err(ImageError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn the_sha256_comes_from_the_same_single_pass() {
        let user2 = DEFAULT_LAYOUT.slot(SlotId::User2);
        let image = sample_image(user2.irom_link_addr());
        let (len, size) = (image.len() as u32, DEFAULT_LAYOUT.flash_size as usize);
        let digest = crate::auth::sha256(&image);
        let mut scratch = [0u8; 64];

        let mut plain = flash_with::<4>(&image, user2.offset as usize, size);
        verify_for_slot(&mut plain, user2, len, &mut scratch, None).unwrap();
        let mut hashed = flash_with::<4>(&image, user2.offset as usize, size);
        verify_for_slot(&mut hashed, user2, len, &mut scratch, Some(&digest)).unwrap();
        assert_eq!(hashed.reads, plain.reads, "hashing reads nothing more");
        assert_eq!(plain.reads, (image.len().div_ceil(64)), "each byte read once, 64 at a time");

        let mut other = digest;
        other[31] ^= 1;
        assert_eq!(
            verify_for_slot(&mut hashed, user2, len, &mut scratch, Some(&other)),
            Err(ImageError::Sha256Mismatch)
        );
        assert_eq!(ImageError::Sha256Mismatch.to_string(), "Image SHA-256 mismatch");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            scratch_len in 64usize..300,
            claimed_extra in 0u32..8,
        ) {
            let mut flash = RamNor::from_storage(bytes.clone());
            let mut scratch = vec![0u8; scratch_len];
            let len = (bytes.len() as u32).saturating_sub(claimed_extra);
            let _ = scan(&mut flash, 0, len, &mut scratch);
            let _ = inspect(&mut flash, claimed_extra.min(len), len - claimed_extra.min(len), &mut scratch);
        }

        #[test]
        fn mutated_images_never_panic_and_bit_flips_are_caught(
            at in 0usize..212,
            bit in 0u8..8,
            noise in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let mut image = sample_image(0x4020_2010);
            image[at] ^= 1 << bit;
            prop_assert!(inspect_bytes(&image).is_err(), "flip at {} bit {} passed", at, bit);
            image.extend_from_slice(&noise);
            let _ = inspect(&mut RamNor::from_storage(image.clone()), 0, image.len() as u32, &mut [0; 64]);
        }

        #[test]
        fn written_images_round_trip(
            irom in proptest::collection::vec(any::<u8>(), 0..300),
            sizes in proptest::collection::vec(0usize..40, 0..=MAX_RAM_SEGMENTS),
            entry in any::<u32>(),
            mode in 0u8..4,
        ) {
            let data: Vec<Vec<u8>> = sizes.iter().map(|&n| (0..n).map(|i| (i * 31 + n) as u8).collect()).collect();
            let segments: Vec<Segment<'_>> = data
                .iter()
                .enumerate()
                .map(|(i, d)| Segment { addr: 0x3FFE_8000 + 64 * i as u32, data: d })
                .collect();
            let params = FlashParams { mode: FlashMode::from_code(mode).unwrap(), ..FlashParams::default() };
            let image = write(params, entry, &irom, &segments);
            prop_assert_eq!(image.len() % 16, 4);
            let info = inspect_bytes(&image).unwrap();
            prop_assert_eq!(info.params, params);
            prop_assert_eq!(info.entry, entry);
            prop_assert_eq!(info.irom_len as usize, irom.len().next_multiple_of(16));
            let expected: Vec<(u32, u32)> =
                segments.iter().map(|s| (s.addr, s.data.len().next_multiple_of(4) as u32)).collect();
            prop_assert_eq!(info.segments(), &expected[..]);
        }
    }
}
