//! The texts the device sends, kept out of DRAM and written without `core::fmt`.
//!
//! On the ESP8266 `.rodata` is copied to DRAM at boot (80 KB shared with everything), so
//! every message string, and every table `core::fmt` uses to print numbers, costs RAM for
//! good. The agent's texts therefore live in IROM (flash read through the cache), declared
//! with [`irom_text!`]. The cache serves only aligned 32-bit loads, so a text is stored as
//! little-endian `u32` words and read a word at a time with volatile loads, which the
//! compiler may not narrow into the byte loads that would fault. On the host the same reads
//! see ordinary memory, so the tests run the device's code.
//!
//! Numbers go into templates (`{}` marks each argument, in order) through
//! [`Sink::push_template`]: a few lines of decimal and hex digits instead of `core::fmt`.
//! The error types' `Display` impls call the same code through [`display`], so host tools
//! print exactly the texts the device sends.
#![allow(unsafe_code)] // registers, ROM routines and data placement: each use says why it is sound

use core::fmt;

/// Declares `NAME = <&str constant expression>;` items as `const NAME: IromText` (ASCII
/// only). Each text gets its own `.irom0.text.*` section on the ESP8266, so the linker drops
/// the unused ones; elsewhere it is an ordinary static.
#[macro_export]
macro_rules! irom_text {
    ($($(#[$doc:meta])* $vis:vis $name:ident = $text:expr;)*) => {$(
        $(#[$doc])*
        $vis const $name: $crate::text::IromText = {
            const TEXT: &str = $text;
            // Placing data in a named section is all the `unsafe` here.
            #[allow(unsafe_code)]
            #[cfg_attr(
                target_arch = "xtensa",
                unsafe(link_section = concat!(".irom0.text.ota_text.", stringify!($name)))
            )]
            static WORDS: [u32; 1 + TEXT.len().div_ceil(4)] = $crate::text::pack(TEXT);
            $crate::text::IromText::from_packed(&WORDS)
        };
    )*};
}

/// Packs `text` for [`irom_text!`]: its length in the first word, then its bytes four to a
/// word, little-endian.
#[doc(hidden)]
pub const fn pack<const WORDS: usize>(text: &str) -> [u32; WORDS] {
    let bytes = text.as_bytes();
    assert!(1 + bytes.len().div_ceil(4) == WORDS);
    let mut words = [0u32; WORDS];
    words[0] = bytes.len() as u32;
    let mut at = 0;
    while at < bytes.len() {
        // ASCII, so any 4-byte piece is a whole `str` for `display`.
        assert!(bytes[at].is_ascii(), "IROM texts must be ASCII");
        words[1 + at / 4] |= (bytes[at] as u32) << (8 * (at % 4));
        at += 1;
    }
    words
}

/// A constant ASCII text in IROM. Never look at it through a byte reference: read it with
/// [`IromText::byte`] or [`IromText::for_each_chunk`]. One pointer (the length is stored
/// with the text), so it travels in a register and no copy of it lands in `.rodata`.
#[derive(Clone, Copy)]
pub struct IromText {
    /// [`pack`]ed words.
    words: *const u32,
}

// SAFETY: it only ever reads immutable statics.
unsafe impl Sync for IromText {}
unsafe impl Send for IromText {}

impl IromText {
    /// For [`irom_text!`]: words as [`pack`] makes them. Checks that the length word fits
    /// the array, so no read can leave it (at compile time when used in a `const`).
    #[doc(hidden)]
    pub const fn from_packed<const WORDS: usize>(words: &'static [u32; WORDS]) -> IromText {
        assert!(WORDS > 0 && 1 + (words[0] as usize).div_ceil(4) == WORDS, "not a packed text");
        IromText { words: words.as_ptr() }
    }

    pub fn len(&self) -> usize {
        self.word(0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One aligned 32-bit load, the only kind IROM allows.
    fn word(&self, index: usize) -> u32 {
        // SAFETY: `words` points at a whole `pack`ed array and every caller stays inside it
        // (index 0, or 1 + a byte position below the length).
        unsafe { core::ptr::read_volatile(self.words.add(index)) }
    }

    /// The byte at `at`; `at` must be below [`IromText::len`].
    pub fn byte(&self, at: usize) -> u8 {
        assert!(at < self.len());
        (self.word(1 + at / 4) >> (8 * (at % 4))) as u8
    }

    /// Whether `bytes` is exactly this text. Out of line: request parsing compares a line
    /// with several texts, and inlined, each comparison was a loop of its own.
    #[inline(never)]
    pub fn is(&self, bytes: &[u8]) -> bool {
        bytes.len() == self.len() && bytes.iter().enumerate().all(|(at, &byte)| self.byte(at) == byte)
    }

    /// `bytes` without this text in front, if it starts with it.
    pub fn strip_from<'b>(&self, bytes: &'b [u8]) -> Option<&'b [u8]> {
        let (head, rest) = bytes.split_at_checked(self.len())?;
        self.is(head).then_some(rest)
    }

    /// Hands the text to `f` a word at a time: pieces of 4 bytes, the last one shorter.
    pub fn for_each_chunk(&self, mut f: impl FnMut(&[u8])) {
        let mut left = self.len();
        let mut index = 1;
        while left > 0 {
            let bytes = self.word(index).to_le_bytes();
            let n = left.min(4);
            f(&bytes[..n]);
            left -= n;
            index += 1;
        }
    }
}

impl fmt::Display for IromText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        display(self, f)
    }
}

impl fmt::Debug for IromText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Compares the text, not where it is stored.
impl PartialEq for IromText {
    fn eq(&self, other: &IromText) -> bool {
        self.len() == other.len() && (0..self.len()).all(|at| self.byte(at) == other.byte(at))
    }
}

impl Eq for IromText {}

/// A number (or a name) to put where a template says `{}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    /// Decimal, like `{}`.
    Dec(u32),
    /// `0x` and at least `digits` lowercase hex digits: 1 is `{:#x}`, 2 is `{:#04x}`, 8 is
    /// `{:#010x}`.
    Hex {
        value: u32,
        digits: u8,
    },
    Text(IromText),
}

impl Arg {
    /// A `usize` count as decimal; beyond `u32` (never on the device) it reads 4294967295.
    pub fn count(value: usize) -> Arg {
        Arg::Dec(u32::try_from(value).unwrap_or(u32::MAX))
    }

    pub const fn hex(value: u32) -> Arg {
        Arg::Hex { value, digits: 1 }
    }

    pub const fn hex_byte(value: u8) -> Arg {
        Arg::Hex { value: value as u32, digits: 2 }
    }

    pub const fn hex_word(value: u32) -> Arg {
        Arg::Hex { value, digits: 8 }
    }
}

/// Where messages are written: a reply line on the device, a `fmt::Formatter` on the host.
pub trait Sink {
    fn push_bytes(&mut self, bytes: &[u8]);

    fn push_text(&mut self, text: IromText) {
        text.for_each_chunk(|piece| self.push_bytes(piece));
    }

    fn push_dec(&mut self, mut value: u32) {
        let mut digits = [0u8; 10];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        self.push_bytes(&digits[start..]);
    }

    /// `0x` and the hex digits of `value`, zero-padded to at least `min_digits` (at most 8).
    fn push_hex(&mut self, value: u32, min_digits: u8) {
        let mut digits = [0u8; 10];
        let mut start = digits.len();
        let mut rest = value;
        while rest != 0 || digits.len() - start < usize::from(min_digits.clamp(1, 8)) {
            start -= 1;
            let nibble = (rest & 0xF) as u8;
            digits[start] = if nibble < 10 { b'0' + nibble } else { b'a' + nibble - 10 };
            rest >>= 4;
        }
        // Written in place: a separate b"0x" would be a constant in `.rodata`.
        digits[start - 2] = b'0';
        digits[start - 1] = b'x';
        self.push_bytes(&digits[start - 2..]);
    }

    fn push_arg(&mut self, arg: Arg) {
        match arg {
            Arg::Dec(value) => self.push_dec(value),
            Arg::Hex { value, digits } => self.push_hex(value, digits),
            Arg::Text(text) => self.push_text(text),
        }
    }

    /// `template` with each `{}` replaced by the next of `args`. A `{}` without an argument
    /// is written as is (the tests of every message would show it).
    fn push_template(&mut self, template: IromText, args: &[Arg]) {
        let mut args = args.iter();
        let len = template.len();
        let mut at = 0;
        while at < len {
            let byte = template.byte(at);
            if byte == b'{'
                && at + 1 < len
                && template.byte(at + 1) == b'}'
                && let Some(&arg) = args.next()
            {
                self.push_arg(arg);
                at += 2;
                continue;
            }
            self.push_bytes(&[byte]);
            at += 1;
        }
    }
}

/// Something the device can say: a reply, or the reason after `ERR: `.
pub trait Message {
    fn write_message<S: Sink + ?Sized>(&self, out: &mut S);
}

impl Message for IromText {
    fn write_message<S: Sink + ?Sized>(&self, out: &mut S) {
        out.push_text(*self);
    }
}

impl Message for str {
    fn write_message<S: Sink + ?Sized>(&self, out: &mut S) {
        out.push_bytes(self.as_bytes());
    }
}

impl<M: Message + ?Sized> Message for &M {
    fn write_message<S: Sink + ?Sized>(&self, out: &mut S) {
        (**self).write_message(out);
    }
}

/// `Display` for a [`Message`]: the host prints what the device would send.
pub fn display<M: Message + ?Sized>(message: &M, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    struct Formatted<'a, 'b> {
        f: &'a mut fmt::Formatter<'b>,
        result: fmt::Result,
    }

    impl Sink for Formatted<'_, '_> {
        fn push_bytes(&mut self, bytes: &[u8]) {
            if self.result.is_ok() {
                // Messages are built from whole `str`s and ASCII pieces.
                self.result =
                    core::str::from_utf8(bytes).map_err(|_| fmt::Error).and_then(|s| self.f.write_str(s));
            }
        }
    }

    let mut out = Formatted { f, result: Ok(()) };
    message.write_message(&mut out);
    out.result
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::format;
    use std::string::{String, ToString};
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    irom_text! {
        EMPTY = "";
        ONE = "a";
        FOUR = "abcd";
        FIVE = "abcde";
        TEMPLATE = "{} bytes at {}, {} left; {}";
        NAME = "name";
    }

    impl Sink for Vec<u8> {
        fn push_bytes(&mut self, bytes: &[u8]) {
            self.extend_from_slice(bytes);
        }
    }

    fn written(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn irom_texts_read_back_byte_for_byte() {
        for (text, expected) in [(EMPTY, ""), (ONE, "a"), (FOUR, "abcd"), (FIVE, "abcde")] {
            assert_eq!(text.len(), expected.len());
            let bytes: Vec<u8> = (0..text.len()).map(|at| text.byte(at)).collect();
            assert_eq!(bytes, expected.as_bytes());
            let mut pieces = Vec::new();
            text.for_each_chunk(|piece| pieces.push(piece.to_vec()));
            assert_eq!(pieces.concat(), expected.as_bytes());
            assert!(pieces.iter().all(|piece| (1..=4).contains(&piece.len())), "{pieces:?}");
            assert_eq!(pieces.len(), expected.len().div_ceil(4));
            assert_eq!(text.to_string(), expected);
        }
        assert_eq!(format!("{FIVE:?}"), "\"abcde\"");
        assert!(FIVE.is(b"abcde") && EMPTY.is(b""));
        assert!(!FIVE.is(b"abcd") && !FIVE.is(b"abcdef") && !FIVE.is(b"abcdf"));
        assert_eq!(FOUR.strip_from(b"abcdefg"), Some(&b"efg"[..]));
        assert_eq!(FOUR.strip_from(b"abcd"), Some(&b""[..]));
        assert_eq!(FOUR.strip_from(b"abc"), None);
        assert_eq!(FOUR.strip_from(b"abce"), None);
        assert_eq!(FIVE, FIVE);
        assert_ne!(FOUR, FIVE);
    }

    #[test]
    fn texts_are_packed_after_their_length_little_endian_four_bytes_a_word() {
        assert_eq!(pack::<3>("abcde"), [5, u32::from_le_bytes(*b"abcd"), u32::from(b'e')]);
        assert_eq!(pack::<1>(""), [0]);
    }

    #[test]
    #[should_panic(expected = "not a packed text")]
    fn a_length_word_past_the_array_is_refused() {
        static TOO_SHORT: [u32; 2] = [5, 0];
        let _ = IromText::from_packed(&TOO_SHORT);
    }

    #[test]
    fn templates_fill_in_order() {
        let text = written(|out| {
            out.push_template(TEMPLATE, &[Arg::Dec(0), Arg::hex(0x82000), Arg::hex_word(5), Arg::Text(NAME)])
        });
        assert_eq!(text, "0 bytes at 0x82000, 0x00000005 left; name");
        // Missing arguments leave their braces.
        assert_eq!(written(|out| out.push_template(TEMPLATE, &[Arg::Dec(7)])), "7 bytes at {}, {} left; {}");
        assert_eq!(written(|out| out.push_hex(0, 1)), "0x0");
        assert_eq!(written(|out| out.push_hex(3, 2)), "0x03");
        assert_eq!(written(|out| out.push_hex(u32::MAX, 8)), "0xffffffff");
        assert_eq!(written(|out| out.push_arg(Arg::count(usize::MAX))), "4294967295");
    }

    proptest! {
        #[test]
        fn numbers_read_like_core_fmt(value in any::<u32>(), byte in any::<u8>()) {
            prop_assert_eq!(written(|out| out.push_dec(value)), format!("{value}"));
            prop_assert_eq!(written(|out| out.push_hex(value, 1)), format!("{value:#x}"));
            prop_assert_eq!(written(|out| out.push_hex(value, 8)), format!("{value:#010x}"));
            prop_assert_eq!(written(|out| out.push_arg(Arg::hex_byte(byte))), format!("{byte:#04x}"));
        }
    }
}
