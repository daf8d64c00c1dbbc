//! The first install: bootloader at 0x0, rBoot config at 0x1000, user1 at the first slot,
//! written through the ROM loader; on an SDK map ([`plan_sdk_install`]) the SDK's own
//! bootloader, user1 at 0x1000, the PHY init data and blank system sectors.
//!
//! [`plan_install`] checks everything that can be checked without a board; [`open_port`],
//! [`connect`], [`check_chip`], [`write_regions`] and [`finish`] do the talking.

use std::io::Write;
use std::thread::sleep;
use std::time::Duration;

use ota_agent::boot::BootConfig;
use ota_agent::flash::RamNor;
use ota_agent::layout::sdk::{SYSTEM_PARAMETER_LEN, SdkMap};
use ota_agent::layout::{BOOT_CONFIG_OFFSET, FlashLayout, SECTOR_SIZE, SlotId};
use serialport::SerialPort;

use ota_agent::image::MAGIC_V2 as V2_MAGIC;

use super::bootloader::{self, BootloaderError};
use super::rom::{self, ChipDescription, ChipKind, Command, RomClient, RomError, RomStatus};

/// Bytes to write at a flash offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// What it is, for messages ("bootloader", "boot config", "user1.bin").
    pub name: String,
    pub offset: u32,
    pub data: Vec<u8>,
}

impl Region {
    pub fn new(name: impl Into<String>, offset: u32, data: Vec<u8>) -> Region {
        Region { name: name.into(), offset, data }
    }

    /// The bytes as they go out: padded with 0xFF to a multiple of four (the ROM writes
    /// words; esptool pads the same way) and to whole blocks.
    fn blocks(&self) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.data.chunks(rom::FLASH_BLOCK_SIZE as usize).map(|chunk| {
            let mut block = chunk.to_vec();
            block.resize(rom::FLASH_BLOCK_SIZE as usize, 0xFF);
            block
        })
    }

    fn end(&self) -> u64 {
        u64::from(self.offset) + self.data.len() as u64
    }
}

/// Everything `serial-flash` can get wrong, each with the fix in its help text.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum FlashError {
    #[error("the bootloader file {path} is not an ESP8266 bootloader image: {reason}")]
    #[diagnostic(help(
        "pass a second-stage bootloader built as an ESP8266 v1 image, such as rBoot's rboot.bin \
         (or `esptool elf2image --version 1` output); it is written at flash offset 0x0"
    ))]
    BadBootloader { path: String, reason: BootloaderError },
    #[error("unknown flash layout {name:?}")]
    #[diagnostic(help("use one of: {known}"))]
    UnknownLayout { name: String, known: String },
    #[error("cannot read {what} {path}")]
    #[diagnostic(help("check the path"))]
    ReadFile {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Build(#[from] crate::build::BuildError),
    #[error("{name} is empty")]
    #[diagnostic(help("rebuild it with `cargo tcpflash build`"))]
    EmptyImage { name: String },
    #[error("{name} is not a v2 application image: its first byte is {found:#04x}, not 0xea")]
    #[diagnostic(help(
        "--image takes the user1.bin that `cargo tcpflash build` writes; the bootloader goes to --bootloader"
    ))]
    NotApplicationImage { name: String, found: u8 },
    #[error(
        "{name} is {len} bytes but the {slot} slot of the {layout} layout holds {capacity} bytes \
         (flash {offset:#x}..{end:#x})"
    )]
    #[diagnostic(help(
        "make the firmware smaller, or pick a bigger --layout if the board's flash is bigger"
    ))]
    ImageTooBig {
        name: String,
        len: usize,
        slot: SlotId,
        layout: &'static str,
        capacity: u32,
        offset: u32,
        end: u32,
    },
    #[error(
        "--bootloader is not for the {layout} layout: an SDK map boots through the SDK's own boot_v1.7.bin"
    )]
    #[diagnostic(help("leave out --bootloader: serial-flash takes boot_v1.7.bin from the SDK (--sdk)"))]
    BootloaderOnSdkMap { layout: &'static str },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Sdk(#[from] crate::build::sdk::SdkError),
    #[error("{name} was built for the {built} flash map, but the {layout} layout is the SDK's {wanted} map")]
    #[diagnostic(help(
        "build for --layout {layout} (the image header's flash size must name the map the SDK checks at boot)"
    ))]
    WrongSdkMap { name: String, built: String, layout: &'static str, wanted: String },
    #[error("{name} is not a v2 image the SDK can boot: {reason}")]
    #[diagnostic(help("install the user1.bin that `cargo tcpflash build --platform nonos-sdk` writes"))]
    UnreadableImage { name: String, reason: String },
    #[error("{name} would end at {end:#x}, past the end of the {flash_size:#x}-byte flash")]
    #[diagnostic(help("check --layout: it must match the flash chip on the board"))]
    PastFlashEnd { name: String, end: u64, flash_size: u32 },
    #[error("no serial port {path}")]
    #[diagnostic(help(
        "check the board is plugged in and pass its port, e.g. --port /dev/ttyUSB0 (see `ls /dev/ttyUSB* /dev/ttyACM*`)"
    ))]
    NoSuchPort { path: String },
    #[error("permission denied opening {path}")]
    #[diagnostic(help(
        "join the group that owns the port (usually `dialout`): `sudo usermod -aG dialout $USER`, then log out and in"
    ))]
    PermissionDenied { path: String },
    #[error("serial port {path} is busy")]
    #[diagnostic(help("close the program that holds it (a serial monitor, another flasher) and retry"))]
    PortBusy { path: String },
    #[error("cannot open serial port {path}: {message}")]
    OpenFailed { path: String, message: String },
    #[error("no answer to SYNC from the ROM loader on {path} after {attempts} attempts")]
    #[diagnostic(help(
        "put the ESP8266 in its serial bootloader: hold GPIO0 low (press FLASH) while resetting it \
         (press RESET or power-cycle), then retry; with an adapter that wires DTR/RTS, leave out --no-reset. \
         Also check TX/RX are crossed and the baud rate (--baud) suits the adapter"
    ))]
    NoSync { path: String, attempts: u32 },
    #[error("the chip on {path} is an {name}, not an ESP8266")]
    #[diagnostic(help("serial-flash installs ESP8266 firmware only; use esptool or espflash for that chip"))]
    WrongChip { path: String, name: &'static str },
    #[error("the chip on {path} is not an ESP8266: its chip-detect register reads {magic:#010x}")]
    #[diagnostic(help("serial-flash installs ESP8266 firmware only"))]
    UnknownChip { path: String, magic: u32 },
    #[error("the {chip} has {embedded:#x} bytes of flash, but the {layout} layout needs {needed:#x}")]
    #[diagnostic(help("pick the layout that matches the chip's flash with --layout"))]
    FlashTooSmall { chip: &'static str, embedded: u32, layout: &'static str, needed: u32 },
    #[error("the ROM loader refused {what}: {reason}")]
    #[diagnostic(help(
        "retry; if it persists, try a lower --baud, a shorter cable, or check the board's power supply"
    ))]
    Rom { what: String, reason: RomError },
}

/// Checks the pieces and lays them out: bootloader at 0x0, the boot config (booting user1)
/// at 0x1000, user1 at the layout's first slot. Nothing here touches a port.
pub fn plan_install(
    layout: &'static FlashLayout,
    bootloader_path: &str,
    bootloader: Vec<u8>,
    user1: Vec<u8>,
) -> Result<Vec<Region>, FlashError> {
    bootloader::check(&bootloader)
        .map_err(|source| FlashError::BadBootloader { path: bootloader_path.to_owned(), reason: source })?;
    check_user1(layout, &user1)?;
    let slot = layout.slot(SlotId::User1);
    let name = SlotId::User1.file_name().to_owned();
    let config = BootConfig::for_layout(layout, SlotId::User1).to_bytes().to_vec();
    let regions = vec![
        Region::new("bootloader", 0, bootloader),
        Region::new("boot config", BOOT_CONFIG_OFFSET, config),
        Region::new(name, slot.offset, user1),
    ];
    check_fits(&regions, layout.flash_size)?;
    Ok(regions)
}

/// The SDK's files a first install writes, read from the user's SDK (`bin/`).
pub struct SdkFiles {
    pub bootloader: Vec<u8>,
    pub init_data: Vec<u8>,
    pub blank: Vec<u8>,
}

impl SdkFiles {
    /// Their names under the SDK's `bin/`.
    pub const BOOTLOADER: &'static str = "boot_v1.7.bin";
    pub const INIT_DATA: &'static str = "esp_init_data_default_v08.bin";
    pub const BLANK: &'static str = "blank.bin";
}

/// The first install on an SDK map: the SDK's `boot_v1.7.bin` at 0x0 (its header bytes 2..3
/// set to user1's flash mode, size and frequency, as esptool does to the image at 0x0: the
/// SDK checks the map there), user1 at 0x1000, the PHY init data, and `blank.bin` over the
/// RF calibration sector and the three system-parameter sectors (so the SDK starts from
/// nothing and boots user1).
pub fn plan_sdk_install(
    map: &'static SdkMap,
    bootloader_path: &str,
    files: SdkFiles,
    user1: Vec<u8>,
) -> Result<Vec<Region>, FlashError> {
    let layout = &map.layout;
    let SdkFiles { mut bootloader, init_data, blank } = files;
    bootloader::check(&bootloader)
        .map_err(|source| FlashError::BadBootloader { path: bootloader_path.to_owned(), reason: source })?;
    check_user1(layout, &user1)?;
    let name = SlotId::User1.file_name().to_owned();
    let len = u32::try_from(user1.len()).unwrap_or(u32::MAX);
    let info = ota_agent::image::scan(&mut RamNor::from_storage(user1.clone()), 0, len, &mut [0u8; 256])
        .map_err(|error| FlashError::UnreadableImage { name: name.clone(), reason: error.to_string() })?;
    if info.params.size != map.flash_size() {
        return Err(FlashError::WrongSdkMap {
            name,
            built: info.params.size.name().to_owned(),
            layout: layout.name,
            wanted: map.flash_size().name().to_owned(),
        });
    }
    bootloader[2..4].copy_from_slice(&info.params.to_header_bytes());
    let mut regions = vec![
        Region::new(SdkFiles::BOOTLOADER, 0, bootloader),
        Region::new(name, layout.slot(SlotId::User1).offset, user1),
        Region::new("blank.bin (RF calibration)", map.rf_cal(), blank.clone()),
    ];
    for sector in 0..SYSTEM_PARAMETER_LEN / SECTOR_SIZE {
        regions.push(Region::new(
            "blank.bin (system parameters)",
            map.system_parameter() + sector * SECTOR_SIZE,
            blank.clone(),
        ));
    }
    // Last: the ROM erases an odd count of sectors as an even one, so the blank sector just
    // before it would take the init data with it.
    regions.push(Region::new(SdkFiles::INIT_DATA, map.phy_data(), init_data));
    check_fits(&regions, layout.flash_size)?;
    Ok(regions)
}

/// user1 must be a v2 application image that fits the first slot.
fn check_user1(layout: &'static FlashLayout, user1: &[u8]) -> Result<(), FlashError> {
    let slot = layout.slot(SlotId::User1);
    let name = SlotId::User1.file_name().to_owned();
    match user1.first() {
        None => return Err(FlashError::EmptyImage { name }),
        Some(&V2_MAGIC) => {}
        Some(&found) => return Err(FlashError::NotApplicationImage { name, found }),
    }
    if !slot.contains(slot.offset, u32::try_from(user1.len()).unwrap_or(u32::MAX)) {
        return Err(FlashError::ImageTooBig {
            name,
            len: user1.len(),
            slot: SlotId::User1,
            layout: layout.name,
            capacity: slot.capacity,
            offset: slot.offset,
            end: slot.end(),
        });
    }
    Ok(())
}

/// Every region must end inside the flash.
pub fn check_fits(regions: &[Region], flash_size: u32) -> Result<(), FlashError> {
    for region in regions {
        if region.end() > u64::from(flash_size) {
            return Err(FlashError::PastFlashEnd {
                name: region.name.clone(),
                end: region.end(),
                flash_size,
            });
        }
    }
    Ok(())
}

/// Opens the port, turning the usual failures into errors that say what to do.
pub fn open_port(path: &str, baud: u32) -> Result<Box<dyn SerialPort>, FlashError> {
    serialport::new(path, baud)
        .timeout(Duration::from_millis(20))
        .open()
        .map_err(|error| open_error(path, error))
}

pub fn open_error(path: &str, error: serialport::Error) -> FlashError {
    let path = path.to_owned();
    match error.kind() {
        serialport::ErrorKind::Io(std::io::ErrorKind::NotFound) => FlashError::NoSuchPort { path },
        serialport::ErrorKind::Io(std::io::ErrorKind::PermissionDenied) => {
            FlashError::PermissionDenied { path }
        }
        serialport::ErrorKind::NoDevice => FlashError::PortBusy { path },
        _ => FlashError::OpenFailed { path, message: error.to_string() },
    }
}

/// How to get the ROM loader's attention.
#[derive(Clone, Copy)]
pub struct ConnectOptions<'a> {
    /// How the chip is reset into the loader before each attempt, and restarted after.
    pub reset: &'a dyn ResetStrategy,
    pub attempts: u32,
}

/// How a board is reset through its serial adapter. Returns false when the port refuses
/// the control lines it needs (pseudo-terminals, some adapters).
pub trait ResetStrategy {
    /// Resets the chip into the ROM's serial loader.
    fn enter_loader(&self, port: &mut dyn SerialPort) -> bool;
    /// Restarts the chip into what was just flashed.
    fn restart(&self, port: &mut dyn SerialPort) -> bool;
}

/// The classic auto-reset circuit of NodeMCU-style boards: DTR drives GPIO0 and RTS drives
/// EN/RESET, both inverted.
pub struct ClassicReset;

impl ResetStrategy for ClassicReset {
    fn enter_loader(&self, port: &mut dyn SerialPort) -> bool {
        enter_bootloader(port)
    }

    fn restart(&self, port: &mut dyn SerialPort) -> bool {
        hard_reset(port)
    }
}

/// No reset at all (`--no-reset`): the user holds the board in its loader by hand.
pub struct NoReset;

impl ResetStrategy for NoReset {
    fn enter_loader(&self, _: &mut dyn SerialPort) -> bool {
        true
    }

    fn restart(&self, _: &mut dyn SerialPort) -> bool {
        true
    }
}

/// What a serial write tells the one who waits for it.
pub trait WriteProgress {
    /// The current step: erasing or writing a region.
    fn step(&mut self, what: &str);
    /// This many more bytes of the regions are written.
    fn written(&mut self, bytes: u64);
}

/// SYNC tries per connection attempt (as esptool).
const SYNCS_PER_ATTEMPT: u32 = 5;

/// Resets into the loader (unless told not to) and SYNCs, retrying.
pub fn connect(
    port: Box<dyn SerialPort>,
    path: &str,
    options: ConnectOptions<'_>,
) -> Result<RomClient<Box<dyn SerialPort>>, FlashError> {
    let mut client = RomClient::new(port);
    let mut warned = false;
    for _ in 0..options.attempts {
        if !options.reset.enter_loader(client.port_mut().as_mut()) && !warned {
            warned = true;
            crate::report::warn(&format!(
                "{path} does not accept DTR/RTS control; reset the board into its bootloader by hand"
            ));
        }
        for _ in 0..SYNCS_PER_ATTEMPT {
            let _ = client.port_mut().clear(serialport::ClearBuffer::Input);
            match client.sync_once() {
                Ok(true) => return Ok(client),
                Ok(false) => {}
                Err(source) => return Err(FlashError::Rom { what: "SYNC".into(), reason: source }),
            }
        }
    }
    Err(FlashError::NoSync { path: path.to_owned(), attempts: options.attempts })
}

/// The classic reset into the ROM loader, through the adapter's auto-reset circuit:
/// DTR drives GPIO0 and RTS drives EN/RESET, both inverted. Returns false when the port
/// refuses control lines (pseudo-terminals, some adapters).
pub fn enter_bootloader(port: &mut dyn SerialPort) -> bool {
    // GPIO0 high, EN low: held in reset.
    if port.write_data_terminal_ready(false).is_err() || port.write_request_to_send(true).is_err() {
        return false;
    }
    sleep(Duration::from_millis(100));
    // GPIO0 low, EN high: boots into the loader.
    let _ = port.write_data_terminal_ready(true);
    let _ = port.write_request_to_send(false);
    sleep(Duration::from_millis(50));
    // Release GPIO0.
    let _ = port.write_data_terminal_ready(false);
    true
}

/// Pulses EN so the chip boots what was just flashed. False when control lines are refused.
pub fn hard_reset(port: &mut dyn SerialPort) -> bool {
    if port.write_request_to_send(true).is_err() {
        return false;
    }
    sleep(Duration::from_millis(100));
    let _ = port.write_request_to_send(false);
    true
}

/// Reads the chip-detect word and the eFuses as esptool does, and refuses anything but an
/// ESP8266 (an ESP8285 is one, with its flash inside; its size must fit the layout).
pub fn check_chip<P: std::io::Read + Write>(
    client: &mut RomClient<P>,
    path: &str,
    layout: &'static FlashLayout,
) -> Result<ChipDescription, FlashError> {
    let rom_error = |source| FlashError::Rom { what: "a register read".into(), reason: source };
    let magic = client.read_reg(rom::CHIP_DETECT_MAGIC_REG).map_err(rom_error)?;
    match ChipKind::from_magic(magic) {
        ChipKind::Esp8266 => {}
        ChipKind::Other(name) => return Err(FlashError::WrongChip { path: path.to_owned(), name }),
        ChipKind::Unknown(magic) => return Err(FlashError::UnknownChip { path: path.to_owned(), magic }),
    }
    let mut efuses = [0u32; 4];
    for (word, reg) in efuses.iter_mut().zip(rom::EFUSE_REGS) {
        *word = client.read_reg(reg).map_err(rom_error)?;
    }
    let chip = ChipDescription::from_efuses(efuses);
    if let Some(embedded) = chip.embedded_flash
        && embedded < layout.flash_size
    {
        return Err(FlashError::FlashTooSmall {
            chip: chip.name,
            embedded,
            layout: layout.name,
            needed: layout.flash_size,
        });
    }
    Ok(chip)
}

/// Writes each region in order: FLASH_BEGIN (with the erase-size workaround), then its
/// blocks, checking every status. Tells `progress` the region bytes written.
pub fn write_regions<P: std::io::Read + Write>(
    client: &mut RomClient<P>,
    regions: &[Region],
    progress: &mut dyn WriteProgress,
) -> Result<(), FlashError> {
    for region in regions {
        let mut data_len = region.data.len() as u32;
        data_len = data_len.next_multiple_of(4);
        let blocks = data_len.div_ceil(rom::FLASH_BLOCK_SIZE);
        let erase_size = rom::erase_size(region.offset, data_len);
        let block_size = rom::FLASH_BLOCK_SIZE;
        let begin = Command::FlashBegin { erase_size, blocks, block_size, offset: region.offset };
        progress.step(&format!("erasing for {} at {:#x}", region.name, region.offset));
        client.command(begin).map_err(|source| FlashError::Rom {
            what: format!("the erase for {}", region.name),
            reason: source,
        })?;
        progress.step(&format!("writing {} at {:#x}", region.name, region.offset));
        let mut remaining = region.data.len();
        for (seq, block) in region.blocks().enumerate() {
            let seq = seq as u32;
            let at = region.offset + seq * rom::FLASH_BLOCK_SIZE;
            client.command(Command::FlashData { seq, block: &block }).map_err(|source| FlashError::Rom {
                what: format!("block {seq} of {} (flash {at:#x})", region.name),
                reason: source,
            })?;
            let written = remaining.min(rom::FLASH_BLOCK_SIZE as usize);
            remaining -= written;
            progress.written(written as u64);
        }
    }
    Ok(())
}

/// FLASH_END with reboot: the loader leaves download mode and the chip restarts.
pub fn finish<P: std::io::Read + Write>(client: &mut RomClient<P>) -> Result<(), FlashError> {
    match client.command(Command::FlashEnd { reboot: true }) {
        Ok(_) => Ok(()),
        // Every block was acknowledged: a chip that reboots before its answer gets out is fine.
        Err(RomError::Timeout { .. }) => Ok(()),
        Err(source) => Err(FlashError::Rom { what: "FLASH_END".into(), reason: source }),
    }
}

/// True when a ROM status error is the given code (for tests and callers that care).
pub fn is_rom_status(error: &FlashError, status: RomStatus) -> bool {
    matches!(error, FlashError::Rom { reason: RomError::Status { status: s, .. }, .. } if *s == status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ota_agent::layout::DEFAULT_LAYOUT;

    fn bootloader() -> Vec<u8> {
        bootloader::build_v1(0x4010_0000, &[(0x4010_0000, &[0x11; 64])])
    }

    fn user1(len: usize) -> Vec<u8> {
        let mut image = vec![0x5A; len];
        image[0] = V2_MAGIC;
        image
    }

    #[test]
    fn plan_puts_bootloader_config_and_user1_in_order() {
        let regions = plan_install(DEFAULT_LAYOUT, "boot.bin", bootloader(), user1(5000)).unwrap();
        let offsets: Vec<_> = regions.iter().map(|r| (r.name.as_str(), r.offset, r.data.len())).collect();
        assert_eq!(
            offsets,
            [("bootloader", 0, 96), ("boot config", 0x1000, 28), ("user1.bin", 0x2000, 5000)]
        );
        assert_eq!(regions[1].data, BootConfig::for_layout(DEFAULT_LAYOUT, SlotId::User1).to_bytes());
    }

    #[test]
    fn plan_refuses_what_cannot_work() {
        let err = plan_install(DEFAULT_LAYOUT, "boot.bin", vec![0xEA; 32], user1(16)).unwrap_err();
        assert!(err.to_string().contains("boot.bin is not an ESP8266 bootloader image"), "{err}");
        assert!(err.to_string().contains("v2 application image"), "{err}");

        let err = plan_install(DEFAULT_LAYOUT, "b", bootloader(), bootloader()).unwrap_err();
        assert!(err.to_string().contains("first byte is 0xe9, not 0xea"), "{err}");

        let capacity = DEFAULT_LAYOUT.slots[0].capacity as usize;
        assert!(plan_install(DEFAULT_LAYOUT, "b", bootloader(), user1(capacity)).is_ok());
        let err = plan_install(DEFAULT_LAYOUT, "b", bootloader(), user1(capacity + 1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "user1.bin is 516097 bytes but the user1 slot of the 1MB layout holds 516096 bytes \
             (flash 0x2000..0x80000)"
        );
    }

    #[test]
    fn regions_past_the_flash_end_are_refused() {
        let regions = [Region::new("x", 0xFF000, vec![0; 0x1001])];
        let err = check_fits(&regions, 0x10_0000).unwrap_err();
        assert_eq!(err.to_string(), "x would end at 0x100001, past the end of the 0x100000-byte flash");
        assert!(check_fits(&[Region::new("x", 0xFF000, vec![0; 0x1000])], 0x10_0000).is_ok());
    }

    #[test]
    fn blocks_are_padded_with_ff() {
        let region = Region::new("x", 0, vec![1; 0x401]);
        let blocks: Vec<_> = region.blocks().collect();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[1][0], 1);
        assert!(blocks[1][1..].iter().all(|&b| b == 0xFF));
    }

    #[test]
    fn open_errors_name_the_fix() {
        use miette::Diagnostic;
        let denied = open_error(
            "/dev/ttyUSB0",
            serialport::Error::new(serialport::ErrorKind::Io(std::io::ErrorKind::PermissionDenied), "EACCES"),
        );
        assert_eq!(denied.to_string(), "permission denied opening /dev/ttyUSB0");
        assert!(denied.help().unwrap().to_string().contains("dialout"));
        let busy =
            open_error("/dev/ttyUSB0", serialport::Error::new(serialport::ErrorKind::NoDevice, "EBUSY"));
        assert_eq!(busy.to_string(), "serial port /dev/ttyUSB0 is busy");
    }
}
