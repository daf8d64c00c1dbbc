//! The ESP8266 "v2" application image, as `esptool elf2image --version 2` writes it and
//! rBoot boots it; esptool's `ESP8266V2FirmwareImage` is the reference. The byte layout is
//! in ARCHITECTURE.md.
//!
//! - [`format`]: the header fields, the memories segments may target, the layout rules;
//! - [`error`]: why an image is refused, in the words the agent sends;
//! - [`writer`]: an image from IROM bytes and RAM segments, streamed into a sink;
//! - [`boot`]: the bootloader's compact check, which boots exactly what the validator's
//!   [`verify_bootable`] accepts;
//! - [`reader`]: the validator, streaming an image from flash through a caller's scratch
//!   buffer (the agent uses its 4 KB sector buffer), with the SHA-256 in the same pass.
//!
//! Neither side allocates.

pub mod boot;
pub mod error;
pub mod format;
pub mod reader;
pub mod writer;

pub use boot::{BOOT_SCRATCH, check_bootable};
pub use error::ImageError;
pub use format::*;
pub use reader::{Reader, Stop, inspect, scan, verify_bootable, verify_for_slot};
pub use writer::{write_v1, write_v2};

#[cfg(any(test, feature = "std"))]
pub mod samples;
#[cfg(test)]
pub(crate) mod test_support;
