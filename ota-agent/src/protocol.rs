//! The TCP-OTA wire protocol: the one definition of every line both sides exchange.
//!
//! | step | direction | message |
//! |---|---|---|
//! | 1 | host -> device | `OTA` |
//! | 2 | host -> device | `GetNextFlash` |
//! | 3 | device -> host | `user1.bin` or `user2.bin` (the slot NOT running now) |
//! | 4 | host -> device | `FirmwareLength: <len>` |
//! | 5 | device -> host | `Ready` |
//! | 6 | host -> device | the image, exactly len bytes |
//! | 7 | device -> host | `Flashing` or `Invalid` |
//! | 8 | device -> host | `Flash upgrade success. Rebooting in 2s.` |
//!
//! Every line ends with CR LF. Errors are `ERR: <reason>`.

/// The seed's port: a palindrome near the top of the range.
pub const DEFAULT_PORT: u16 = 65056;
pub const LINE_END: &str = "\r\n";

pub const OTA: &str = "OTA";
pub const GET_NEXT_FLASH: &str = "GetNextFlash";
pub const FIRMWARE_LENGTH: &str = "FirmwareLength: ";
pub const READY: &str = "Ready";
pub const FLASHING: &str = "Flashing";
pub const INVALID: &str = "Invalid";
pub const SUCCESS: &str = "Flash upgrade success. Rebooting in 2s.";
pub const ERR_PREFIX: &str = "ERR: ";
