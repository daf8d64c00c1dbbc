//! The boot-time image check: what tcpflash-boot runs on each candidate slot, written for
//! the 4 KB sector it lives in. It accepts exactly the images [`verify_bootable`] accepts
//! (a property test holds the two together) and fills in the segment table, but says only
//! bootable or not: a bootloader needs no more, and every error value a check carries costs
//! code. [`verify_bootable`] says why an image is refused.
//!
//! One routine reads the image front to back ([`BootReader::take`]): every byte goes
//! through the CRC, segment data through the XOR checksum too, and the last four bytes come
//! back as a word, which is how headers are read. The format's rules are `format`'s
//! constants and functions, shared with the validator and the writer.
//!
//! [`verify_bootable`]: super::verify_bootable

use crate::crc::Crc32;
use crate::descriptor;
use crate::flash::ReadNorFlash;
use crate::layout::irom_link_addr_for;

use super::{
    CHECKSUM_SEED, FlashParams, IROM_ALIGN, MAGIC_SEGMENTS, MAGIC_V2, MAX_RAM_SEGMENTS, SEGMENT_ALIGN,
    SegmentTable, V2_MARKER, checksum_position, crc_trailer, loadable_at_boot,
};

/// The scratch buffer the check reads flash through: 128 reads for a 64 KB block.
pub const BOOT_SCRATCH: usize = 512;
/// Reads start on this boundary and are whole multiples of it (the ESP8266 ROM's `SPIRead`
/// moves words), so the flash's `READ_SIZE` must divide it and its size be a multiple.
const READ_ALIGN: u32 = 4;

// The check reads the descriptor's head as words: magic, link address, build id.
const _: () =
    assert!(descriptor::LINK_ADDR_AT == 4 && descriptor::BUILD_ID_AT == 8 && descriptor::BUILD_ID_LEN == 8);

/// Reads an image at most up to `end`, through `buf`.
struct BootReader<'a, F> {
    flash: &'a mut F,
    buf: &'a mut [u8; BOOT_SCRATCH],
    /// Flash offsets of `buf[0]` and of the end of the bytes `buf` holds.
    buf_at: u32,
    buf_end: u32,
    pos: u32,
    end: u32,
    crc: Crc32,
    /// The XOR checksum of the bytes taken with `sum`.
    sum: u8,
    /// The image ran past `end` or the flash failed: nothing more is read, and the image
    /// cannot boot.
    failed: bool,
}

impl<F: ReadNorFlash> BootReader<'_, F> {
    /// Takes the next `n` bytes: all into the CRC, into the checksum too when `sum`. Returns
    /// the last four as a little-endian word (a byte taken alone is its top byte). When the
    /// image would run past `end` or the flash fails, the reader fails for good and returns
    /// 0 from then on: the caller checks `failed` once, at the end, instead of after every
    /// read (each check cost the bootloader's sector bytes). One copy for every read.
    #[inline(never)]
    fn take(&mut self, n: u32, sum: bool) -> u32 {
        if self.failed || n > self.end - self.pos {
            self.failed = true;
            return 0;
        }
        let stop = self.pos + n;
        let mut word = 0;
        while self.pos != stop {
            if self.pos >= self.buf_end {
                // `end` is at most the flash's size, a multiple of READ_ALIGN: so is `len`.
                let at = self.pos - self.pos % READ_ALIGN;
                let len = (self.end - at).min(BOOT_SCRATCH as u32).next_multiple_of(READ_ALIGN);
                if self.flash.read(at, &mut self.buf[..len as usize]).is_err() {
                    self.failed = true;
                    return 0;
                }
                self.buf_at = at;
                self.buf_end = at + len;
            }
            let byte = self.buf[(self.pos - self.buf_at) as usize];
            self.crc.update(core::slice::from_ref(&byte));
            if sum {
                self.sum ^= byte;
            }
            word = word >> 8 | u32::from(byte) << 24;
            self.pos += 1;
        }
        word
    }

    fn word(&mut self) -> u32 {
        self.take(4, false)
    }
}

/// Whether the image at flash `offset`, which may take up to `capacity` bytes, can boot:
/// every check of [`verify_bootable`](super::verify_bootable). When it can, `table` holds
/// its entry, IROM length, RAM segments and build id; else some of it may have changed.
#[inline(never)]
pub fn check_bootable<F: ReadNorFlash>(
    flash: &mut F,
    offset: u32,
    capacity: u32,
    scratch: &mut [u8; BOOT_SCRATCH],
    table: &mut SegmentTable,
) -> bool {
    const { assert!((READ_ALIGN as usize).is_multiple_of(F::READ_SIZE), "reads are word-aligned words") };
    let flash_size = u32::try_from(flash.capacity()).unwrap_or(u32::MAX);
    // Offset 0 is rBoot's "no rom here" (its other marker, u32::MAX, lies past any flash).
    let Some(end) = offset.checked_add(capacity).filter(|&end| end <= flash_size && offset != 0) else {
        return false;
    };
    let mut reader = BootReader {
        flash,
        buf: scratch,
        buf_at: 0,
        buf_end: 0,
        pos: offset,
        end,
        crc: Crc32::new(),
        sum: CHECKSUM_SEED,
        failed: false,
    };
    check(&mut reader, offset, table) && !reader.failed
}

/// The checks, in the image's order. Values read after the reader failed are 0: whatever
/// is decided from them, the caller refuses the image.
fn check<F: ReadNorFlash>(reader: &mut BootReader<'_, F>, offset: u32, table: &mut SegmentTable) -> bool {
    let head = reader.word();
    let entry = reader.word();
    let [magic, marker, mode, size_freq] = head.to_le_bytes();
    if magic != MAGIC_V2 || marker != V2_MARKER || FlashParams::from_header_bytes(mode, size_freq).is_err() {
        return false;
    }

    // The IROM segment: load address (meaningless), length, then the descriptor if any.
    reader.word();
    let irom_len = reader.word();
    if !irom_len.is_multiple_of(IROM_ALIGN) {
        return false;
    }
    let mut irom_left = irom_len;
    let mut build_id = None;
    if irom_len >= descriptor::SIZE as u32 {
        let magic = reader.word();
        let link_addr = reader.word();
        irom_left -= 8;
        if magic == descriptor::MAGIC {
            if link_addr != irom_link_addr_for(offset) {
                return false;
            }
            build_id = Some([reader.word(), reader.word()]);
            irom_left -= descriptor::BUILD_ID_LEN as u32;
        }
    }
    reader.take(irom_left, false);

    // The second header repeats the first's mode, size, frequency and entry.
    let second = reader.word();
    let [second_magic, count, ..] = second.to_le_bytes();
    if second_magic != MAGIC_SEGMENTS
        || usize::from(count) > MAX_RAM_SEGMENTS
        || second >> 16 != head >> 16
        || reader.word() != entry
    {
        return false;
    }
    for segment in &mut table.segments[..usize::from(count)] {
        let addr = reader.word();
        let len = reader.word();
        if !len.is_multiple_of(SEGMENT_ALIGN) || !loadable_at_boot(addr, len) {
            return false;
        }
        reader.take(len, true);
        *segment = (addr, len);
    }

    let here = reader.pos - offset;
    reader.take(checksum_position(here) - here, false);
    let checksum = reader.take(1, false) >> 24;
    let crc = crc_trailer(reader.crc.finish());
    if checksum != u32::from(reader.sum) || reader.word() != crc {
        return false;
    }
    table.entry = entry;
    table.irom_len = irom_len;
    table.segment_count = u32::from(count);
    table.build_id = build_id;
    true
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec;
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;
    use crate::image::test_support::*;
    use crate::image::{ImageInfo, Segment, verify_bootable};
    use crate::layout::{DEFAULT_LAYOUT, SlotId, rom_capacity};

    /// Both checks on the same flash: the compact one's verdict and table, the validator's.
    fn both(flash: &[u8], offset: u32, capacity: u32) -> (Option<SegmentTable>, Option<ImageInfo>) {
        let mut compact = SegmentTable::default();
        let ok = check_bootable(
            &mut flash_with::<4>(flash, 0, flash.len()),
            offset,
            capacity,
            &mut [0; BOOT_SCRATCH],
            &mut compact,
        );
        let mut full = ImageInfo::default();
        let verified = verify_bootable(
            &mut flash_with::<4>(flash, 0, flash.len()),
            offset,
            capacity,
            &mut [0; BOOT_SCRATCH],
            &mut full,
        );
        (ok.then_some(compact), verified.ok().map(|()| full))
    }

    type Table = (u32, u32, Vec<(u32, u32)>, Option<[u8; 8]>);

    /// What the loader uses, as the compact check found it.
    fn table(table: &SegmentTable) -> Table {
        (table.entry, table.irom_len, table.segments().to_vec(), table.build_id_bytes())
    }

    /// The same, from the validator's findings on the image at `offset` of `flash` (it reads
    /// only the descriptor's link address for a boot: the build id comes from the bytes).
    fn info_table(info: &ImageInfo, flash: &[u8], offset: u32) -> Table {
        let build_id = info.descriptor.map(|_| {
            let at = offset as usize + 16 + descriptor::BUILD_ID_AT;
            flash[at..at + 8].try_into().unwrap()
        });
        (info.entry, info.irom_len, info.segments().to_vec(), build_id)
    }

    fn placed(image: &[u8], offset: u32, size: usize) -> Vec<u8> {
        let mut flash = vec![0xFF; size];
        flash[offset as usize..][..image.len()].copy_from_slice(image);
        flash
    }

    #[test]
    fn accepts_a_slot_image_and_fills_the_table() {
        let user2 = DEFAULT_LAYOUT.slot(SlotId::User2);
        let image = sample_image(user2.irom_link_addr());
        let flash = placed(&image, user2.offset, DEFAULT_LAYOUT.flash_size as usize);
        let (compact, full) =
            both(&flash, user2.offset, rom_capacity(DEFAULT_LAYOUT.flash_size, user2.offset));
        let (compact, full) = (compact.expect("bootable"), full.expect("verify_bootable agrees"));
        let segments = vec![(0x4010_0000, 32), (0x3FFE_8000, 8), (0x3FFE_8008, 4)];
        assert_eq!(table(&compact), (0x4010_0004, 112, segments, Some(*b"buildid!")));
        assert_eq!(table(&compact), info_table(&full, &flash, user2.offset));
    }

    #[test]
    fn refuses_what_verify_bootable_refuses() {
        let user1 = DEFAULT_LAYOUT.slot(SlotId::User1);
        let size = DEFAULT_LAYOUT.flash_size as usize;
        let capacity = rom_capacity(DEFAULT_LAYOUT.flash_size, user1.offset);
        let good = sample_image(user1.irom_link_addr());
        let cases: [(&str, Vec<u8>, u32); 8] = [
            ("erased", vec![], user1.offset),
            ("another slot's link address", sample_image(0x4028_2010), user1.offset),
            (
                "a flipped IROM bit",
                {
                    let mut i = good.clone();
                    i[100] ^= 4;
                    i
                },
                user1.offset,
            ),
            (
                "a flipped segment bit",
                {
                    let mut i = good.clone();
                    i[150] ^= 1;
                    reseal(&mut i);
                    i
                },
                user1.offset,
            ),
            (
                "the CRC",
                {
                    let mut i = good.clone();
                    let n = i.len();
                    i[n - 1] ^= 0x80;
                    i
                },
                user1.offset,
            ),
            ("cut short", good[..good.len() - 1].to_vec(), user1.offset),
            ("offset 0", good.clone(), 0),
            ("offset u32::MAX", good.clone(), u32::MAX),
        ];
        for (what, image, offset) in cases {
            let flash = placed(&image, offset.min(user1.offset), size);
            assert_eq!(both(&flash, offset, capacity), (None, None), "{what}");
        }
        // A capacity one byte short of the image: truncated for both.
        let flash = placed(&good, user1.offset, size);
        assert_eq!(both(&flash, user1.offset, good.len() as u32 - 1), (None, None));
        assert!(both(&flash, user1.offset, good.len() as u32).0.is_some());
        // Past the flash's end.
        assert_eq!(both(&flash, user1.offset, size as u32), (None, None));
    }

    /// A header word of an image, found through its own headers (as written, before edits).
    #[derive(Clone, Copy, Debug)]
    enum Field {
        Head,
        Entry,
        IromLoad,
        IromLen,
        DescriptorMagic,
        DescriptorLink,
        Second,
        SecondEntry,
        SegmentAddr(usize),
        SegmentLen(usize),
        /// The word holding the checksum byte (its top byte).
        Checksum,
        Crc,
    }

    fn word_at(image: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(image[at..at + 4].try_into().unwrap())
    }

    /// Where `field` starts in a well-formed `image`, if it has it.
    fn position(image: &[u8], field: Field) -> Option<usize> {
        let second = 16 + word_at(image, 12) as usize;
        let mut segment = second + 8;
        let count = usize::from(image[second + 1]);
        let mut segments = Vec::new();
        for _ in 0..count {
            segments.push(segment);
            segment += 8 + word_at(image, segment + 4) as usize;
        }
        let n = image.len();
        Some(match field {
            Field::Head => 0,
            Field::Entry => 4,
            Field::IromLoad => 8,
            Field::IromLen => 12,
            Field::DescriptorMagic => 16,
            Field::DescriptorLink => 20,
            Field::Second => second,
            Field::SecondEntry => second + 4,
            Field::SegmentAddr(i) => *segments.get(i)?,
            Field::SegmentLen(i) => *segments.get(i)? + 4,
            Field::Checksum => n - 8,
            Field::Crc => n - 4,
        })
    }

    #[derive(Clone, Debug)]
    enum Edit {
        /// Flip a bit anywhere.
        Flip {
            at: usize,
            bit: u8,
        },
        /// XOR a header word with `mask`.
        Field {
            field: Field,
            mask: u32,
        },
        /// Set a header word.
        Set {
            field: Field,
            value: u32,
        },
        Cut(usize),
        Extend(usize),
    }

    fn field() -> impl Strategy<Value = Field> {
        prop_oneof![
            Just(Field::Head),
            Just(Field::Entry),
            Just(Field::IromLoad),
            Just(Field::IromLen),
            Just(Field::DescriptorMagic),
            Just(Field::DescriptorLink),
            Just(Field::Second),
            Just(Field::SecondEntry),
            (0usize..4).prop_map(Field::SegmentAddr),
            (0usize..4).prop_map(Field::SegmentLen),
            Just(Field::Checksum),
            Just(Field::Crc),
        ]
    }

    fn edit() -> impl Strategy<Value = Edit> {
        // Masks that change one header byte, or a bit of one, or a small length.
        let mask = prop_oneof![
            (0u32..4, 0u32..8).prop_map(|(byte, bit)| 1 << (8 * byte + bit)),
            (0u32..4, 1u32..256).prop_map(|(byte, value)| value << (8 * byte)),
            (1u32..64).prop_map(|n| n * 4),
        ];
        let value = prop_oneof![
            Just(0u32),
            Just(u32::MAX),
            Just(descriptor::MAGIC),
            Just(0x4020_2010),
            Just(0x4028_2010),
            Just(0x3FFF_C000),
            Just(0x3FFF_BFFC),
            Just(0x4010_7FFC),
            Just(0x4010_8000),
            Just(0x400F_FFFC),
            Just(0x3FFE_7FFC),
            Just(0x0010_04E9),
            Just(0x0F00_00E9),
            any::<u32>(),
        ];
        prop_oneof![
            2 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Edit::Flip { at, bit }),
            5 => (field(), mask).prop_map(|(field, mask)| Edit::Field { field, mask }),
            3 => (field(), value).prop_map(|(field, value)| Edit::Set { field, value }),
            1 => (1usize..40).prop_map(Edit::Cut),
            1 => (1usize..40).prop_map(Edit::Extend),
        ]
    }

    fn apply(image: &mut Vec<u8>, edit: &Edit, original: &[u8]) {
        let set_word = |image: &mut Vec<u8>, field: Field, f: &dyn Fn(u32) -> u32| {
            if let Some(at) = position(original, field).filter(|&at| at + 4 <= image.len()) {
                let value = f(word_at(image, at));
                image[at..at + 4].copy_from_slice(&value.to_le_bytes());
            }
        };
        match *edit {
            Edit::Flip { at, bit } => {
                let at = at % image.len();
                image[at] ^= 1 << bit;
            }
            Edit::Field { field, mask } => set_word(image, field, &|word| word ^ mask),
            Edit::Set { field, value } => set_word(image, field, &|_| value),
            Edit::Cut(n) => image.truncate(image.len().saturating_sub(n).max(1)),
            Edit::Extend(n) => image.extend(std::iter::repeat_n(0xA5, n)),
        }
    }

    fn segment_addr() -> impl Strategy<Value = u32> {
        prop_oneof![
            (0x3FFE_8000u32..0x3FFF_C000).prop_map(|a| a & !3),
            (0x4010_0000u32..0x4010_8000).prop_map(|a| a & !3),
            Just(0x3FFF_BFE8),
            Just(0x4010_7FE8),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The property the bootloader rests on: the compact check boots exactly what the
        /// validator would, with the same segment table.
        #[test]
        fn agrees_with_verify_bootable(
            irom in proptest::collection::vec(any::<u8>(), 0..200),
            link in prop_oneof![
                Just(None),
                Just(Some(0x4020_2010u32)),
                Just(Some(0x4022_2010)),
                Just(Some(0x4020_2012)),
                any::<u32>().prop_map(Some),
            ],
            segments in proptest::collection::vec((segment_addr(), 0usize..24), 0..6),
            entry in any::<u32>(),
            edits in proptest::collection::vec(edit(), 0..3),
            reseal_after in proptest::bool::weighted(0.7),
            offset in prop_oneof![
                Just(0x2000u32),
                Just(0x22000),
                Just(0x2002),
                Just(0x3F000),
                Just(0),
                Just(u32::MAX),
            ],
            capacity_cut in prop_oneof![3 => Just(None), 1 => (0u32..16).prop_map(Some)],
        ) {
            let mut irom_bytes = match link {
                Some(link) => irom_for(link, 0),
                None => Vec::new(),
            };
            irom_bytes.extend_from_slice(&irom);
            let data: Vec<Vec<u8>> =
                segments.iter().map(|&(_, n)| (0..n).map(|i| (i * 7 + n) as u8).collect()).collect();
            let segments: Vec<Segment<'_>> =
                segments.iter().zip(&data).map(|(&(addr, _), data)| Segment { addr, data }).collect();
            let mut image = Vec::new();
            let written = crate::image::write_v2(DIO_4M_80, entry, &irom_bytes, &segments, &mut |b| {
                image.extend_from_slice(b)
            });
            prop_assume!(written.is_ok());
            let original = image.clone();
            for edit in &edits {
                apply(&mut image, edit, &original);
            }
            if reseal_after {
                reseal(&mut image);
            }

            // A small chip: each case copies it.
            let size = 0x4_0000u32;
            let at = offset.min(size - image.len() as u32);
            let flash = placed(&image, at, size as usize);
            let capacity = match capacity_cut {
                None => rom_capacity(size, offset),
                // Around the image's own length: short by a little, or just enough.
                Some(cut) => (image.len() as u32 + 8).saturating_sub(cut),
            };
            let (compact, full) = both(&flash, offset, capacity);
            prop_assert_eq!(compact.is_some(), full.is_some(), "edits {:?}", edits);
            if let (Some(compact), Some(full)) = (compact, full) {
                prop_assert_eq!(table(&compact), info_table(&full, &flash, offset));
            }
        }

        /// Images whose checksum and CRC hold whatever their headers say (any header byte,
        /// segment lengths that are not words, counts that do not match), so every
        /// structural rule is what decides.
        #[test]
        fn agrees_on_sealed_images_with_any_headers(raw in raw_image(), offset in prop_oneof![Just(0x2000u32), Just(0x2001)]) {
            let image = raw.encode();
            let size = 0x4_0000u32;
            let flash = placed(&image, offset, size as usize);
            let (compact, full) = both(&flash, offset, rom_capacity(size, offset));
            prop_assert_eq!(compact.is_some(), full.is_some(), "{:?}", raw);
            if let (Some(compact), Some(full)) = (compact, full) {
                prop_assert_eq!(table(&compact), info_table(&full, &flash, offset));
            }
        }
    }

    #[test]
    fn fifteen_segments_boot_sixteen_do_not() {
        for (count, bootable) in [(15, true), (16, false)] {
            let raw = RawImage {
                head: [MAGIC_V2, V2_MARKER, 0, 0x20],
                entry: 0x4010_0000,
                irom_len: 16,
                irom: vec![0; 16],
                second: [MAGIC_SEGMENTS, count as u8, 0, 0x20],
                second_entry: 0x4010_0000,
                segments: (0..count).map(|i| (0x3FFE_8000 + 4 * i, 4, vec![i as u8; 4])).collect(),
            };
            let flash = placed(&raw.encode(), 0x2000, 0x4_0000);
            let (compact, full) = both(&flash, 0x2000, 0x1000);
            assert_eq!((compact.is_some(), full.is_some()), (bootable, bootable), "{count} segments");
        }
    }

    /// An image's fields, written as given: no rule enforced, integrity values computed.
    #[derive(Clone, Debug)]
    struct RawImage {
        head: [u8; 4],
        entry: u32,
        irom_len: u32,
        irom: Vec<u8>,
        second: [u8; 4],
        second_entry: u32,
        /// Address, declared length, data.
        segments: Vec<(u32, u32, Vec<u8>)>,
    }

    impl RawImage {
        fn encode(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&self.head);
            out.extend_from_slice(&self.entry.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&self.irom_len.to_le_bytes());
            out.extend_from_slice(&self.irom);
            out.extend_from_slice(&self.second);
            out.extend_from_slice(&self.second_entry.to_le_bytes());
            let mut sum = CHECKSUM_SEED;
            for (addr, len, data) in &self.segments {
                out.extend_from_slice(&addr.to_le_bytes());
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(data);
                sum = data.iter().fold(sum, |s, b| s ^ b);
            }
            out.resize(checksum_position(out.len() as u32) as usize, 0);
            out.push(sum);
            let crc = crc_trailer(crc32fast::hash(&out));
            out.extend_from_slice(&crc.to_le_bytes());
            out
        }
    }

    fn raw_image() -> impl Strategy<Value = RawImage> {
        // Mostly right, now and then off: each field on its own.
        let byte = |right: u8| prop_oneof![6 => Just(right), 1 => any::<u8>()];
        let head = (
            byte(MAGIC_V2),
            byte(V2_MARKER),
            prop_oneof![4 => 0u8..4, 1 => any::<u8>()],
            prop_oneof![4 => Just(0x20u8), 1 => any::<u8>()],
        );
        let irom = (
            prop_oneof![
                Just(None),
                Just(Some(0x4020_2010u32)),
                Just(Some(0x4020_2011)),
                any::<u32>().prop_map(Some),
            ],
            // Bytes after the descriptor; or, when negative, the descriptor cut that short
            // (below its 64 bytes its magic means nothing).
            -48i32..40,
            prop_oneof![6 => Just(16usize), 1 => Just(4)],
            prop_oneof![4 => Just(0i32), 1 => -20i32..20],
        );
        let segment = (
            segment_addr(),
            0u32..20,
            prop_oneof![4 => Just(true), 1 => any::<bool>()],
            prop_oneof![6 => Just(0i32), 1 => -6i32..6],
        );
        (
            head,
            any::<u32>(),
            irom,
            proptest::collection::vec(segment, 0..4),
            prop_oneof![6 => Just(None), 1 => any::<[u8; 4]>().prop_map(Some)],
            prop_oneof![6 => Just(0i32), 1 => -2i32..3],
            prop_oneof![6 => Just(false), 1 => Just(true)],
        )
            .prop_map(
                |(
                    (magic, marker, mode, size_freq),
                    entry,
                    (link, extra, align, irom_skew),
                    segments,
                    second,
                    count_skew,
                    other_entry,
                )| {
                    let mut irom = match link {
                        Some(link) if extra < 0 => irom_for(link, 0)[..(64 + extra) as usize].to_vec(),
                        Some(link) => irom_for(link, extra as usize),
                        None => (0..extra.max(0)).map(|i| i as u8).collect(),
                    };
                    irom.resize(irom.len().next_multiple_of(align), 0);
                    let irom_len = (irom.len() as i32 + irom_skew).max(0) as u32;
                    let segments: Vec<(u32, u32, Vec<u8>)> = segments
                        .into_iter()
                        .map(|(addr, len, padded, skew)| {
                            let data_len = if padded { len.next_multiple_of(4) } else { len };
                            let data = (0..data_len).map(|i| (i * 13 + len) as u8).collect();
                            (addr, (data_len as i32 + skew).max(0) as u32, data)
                        })
                        .collect();
                    let count = (segments.len() as i32 + count_skew).max(0) as u8;
                    let head = [magic, marker, mode, size_freq];
                    RawImage {
                        head,
                        entry,
                        irom_len,
                        irom,
                        second: second.unwrap_or([MAGIC_SEGMENTS, count, mode, size_freq]),
                        second_entry: if other_entry { entry ^ 0x10 } else { entry },
                        segments,
                    }
                },
            )
    }
}
