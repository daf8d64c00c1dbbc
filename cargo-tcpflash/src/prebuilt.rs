//! Images built elsewhere (`cargo tcpflash push USER1.BIN USER2.BIN`), checked before a push
//! connects: each is a whole ESP8266 v2 image that the agent would accept for its slot
//! (headers, checksum, CRC, linked for that slot where it says, fits), so a wrong file is
//! refused here, with its name, rather than by the device after the transfer.

use std::path::{Path, PathBuf};

use miette::Diagnostic;
use ota_agent::descriptor::{self, Descriptor};
use ota_agent::flash::RamNor;
use ota_agent::image::{self, FlashParams, ImageError};
use ota_agent::layout::{FlashLayout, IMAGE_IROM_OFFSET, SlotId};
use ota_agent::writer::SECTOR;
use thiserror::Error;

#[derive(Debug, Error, Diagnostic)]
pub enum PrebuiltError {
    #[error("cannot read the {slot} image {}", path.display())]
    #[diagnostic(
        code(tcpflash::push::image_file),
        help(
            "give the two files of one build, user1.bin then user2.bin: cargo tcpflash push --host HOST user1.bin user2.bin"
        )
    )]
    Read {
        slot: SlotId,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{} (the {slot} image) is not an ESP8266 application image: {reason}", path.display())]
    #[diagnostic(
        code(tcpflash::push::not_an_image),
        help(
            "give the user1.bin and user2.bin that esptool (elf2image --version 2), the SDK's gen_appbin.py or `cargo tcpflash build` wrote"
        )
    )]
    NotAnImage { slot: SlotId, path: PathBuf, reason: ImageError },

    #[error("{} says its flash is {size}, which is no flash layout", path.display())]
    #[diagnostic(
        code(tcpflash::push::layout),
        help(
            "pass the layout the images were built for: --layout 512KB, 1MB, 2MB, 4MB or an SDK map (sdk-1MB, sdk-2MB-c1...)"
        )
    )]
    NoLayout { path: PathBuf, size: String },

    #[error("unknown flash layout `{name}`")]
    #[diagnostic(code(tcpflash::push::layout), help("use one of: {known}"))]
    UnknownLayout { name: String, known: String },

    #[error("the files are swapped: {} is linked for user2 and {} for user1", user1.display(), user2.display())]
    #[diagnostic(
        code(tcpflash::push::swapped),
        help(
            "give user1.bin first, as the seed's tcp_flash.py takes them: cargo tcpflash push --host HOST user1.bin user2.bin"
        )
    )]
    Swapped { user1: PathBuf, user2: PathBuf },

    #[error("{} cannot go to {slot} of the {layout} layout: {reason}", path.display())]
    #[diagnostic(
        code(tcpflash::push::wrong_slot),
        help(
            "build both images for the device's flash layout (`cargo tcpflash build --layout ...`), or name it with --layout"
        )
    )]
    WrongSlot { slot: SlotId, path: PathBuf, layout: &'static str, reason: ImageError },
}

/// Two checked images and where they came from.
#[derive(Debug)]
pub struct Prebuilt {
    pub layout: &'static FlashLayout,
    images: [Vec<u8>; 2],
    paths: [PathBuf; 2],
    descriptor: Option<Descriptor>,
}

impl Prebuilt {
    pub fn refs(&self) -> [&[u8]; 2] {
        [&self.images[0], &self.images[1]]
    }

    /// `user1.bin and user2.bin (example-blinky 0.1.0, build 3f2a...)`: the files, and the
    /// firmware when its descriptor names it.
    pub fn describe(&self) -> String {
        let [user1, user2] = &self.paths;
        let files = format!("{} and {}", user1.display(), user2.display());
        match &self.descriptor {
            Some(d) => {
                let build = d.build_id_hex();
                let build = String::from_utf8_lossy(&build);
                format!(
                    "{files} ({} {}, build {build})",
                    crate::push::printable(d.name()),
                    crate::push::printable(d.version())
                )
            }
            None => files,
        }
    }
}

/// Reads and checks both images for their slots of `layout` (by default the layout the
/// first image's header names).
pub fn check(user1: &Path, user2: &Path, layout: Option<&str>) -> Result<Prebuilt, PrebuiltError> {
    let read = |slot: SlotId, path: &Path| {
        std::fs::read(path).map_err(|source| PrebuiltError::Read { slot, path: path.to_owned(), source })
    };
    let images = [read(SlotId::User1, user1)?, read(SlotId::User2, user2)?];
    let paths = [user1.to_owned(), user2.to_owned()];
    for slot in SlotId::ALL {
        let (bytes, path) = (&images[slot.index()], &paths[slot.index()]);
        image_info(bytes).map_err(|reason| PrebuiltError::NotAnImage { slot, path: path.clone(), reason })?;
    }
    let layout = match layout {
        Some(name) => FlashLayout::by_name(name).ok_or_else(|| PrebuiltError::UnknownLayout {
            name: name.to_owned(),
            known: FlashLayout::names().collect::<Vec<_>>().join(", "),
        })?,
        None => layout_of(&images[0], user1)?,
    };
    let fits = |slot: SlotId, index: usize| check_for_slot(layout, slot, &images[index]);
    if let (Err(_), Err(_), Ok(_), Ok(_)) =
        (fits(SlotId::User1, 0), fits(SlotId::User2, 1), fits(SlotId::User2, 0), fits(SlotId::User1, 1))
    {
        return Err(PrebuiltError::Swapped { user1: paths[0].clone(), user2: paths[1].clone() });
    }
    for slot in SlotId::ALL {
        fits(slot, slot.index()).map_err(|reason| PrebuiltError::WrongSlot {
            slot,
            path: paths[slot.index()].clone(),
            layout: layout.name,
            reason,
        })?;
    }
    let descriptor = descriptor_of(&images[0]);
    Ok(Prebuilt { layout, images, paths, descriptor })
}

/// The image's own checks, wherever it is: headers, checksum, CRC.
fn image_info(bytes: &[u8]) -> Result<image::ImageInfo, ImageError> {
    let len =
        u32::try_from(bytes.len()).map_err(|_| ImageError::TooLarge { len: u32::MAX, capacity: u32::MAX })?;
    let mut flash = RamNor::from_storage(padded(bytes, 0));
    image::inspect(&mut flash, 0, len, &mut vec![0u8; SECTOR])
}

/// The layout the image's header names (esptool's form; an SDK image needs --layout).
fn layout_of(bytes: &[u8], path: &Path) -> Result<&'static FlashLayout, PrebuiltError> {
    let size = FlashParams::from_header_bytes(bytes[2], bytes[3]).map(|params| params.size.name());
    let size = size.unwrap_or("(none: an SDK image)");
    FlashLayout::by_name(size)
        .ok_or_else(|| PrebuiltError::NoLayout { path: path.to_owned(), size: size.to_owned() })
}

/// What the agent checks before it switches: the image as it would lie in `slot`.
fn check_for_slot(layout: &FlashLayout, slot: SlotId, bytes: &[u8]) -> Result<(), ImageError> {
    let slot = layout.slot(slot);
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    if len > slot.capacity {
        return Err(ImageError::TooLarge { len, capacity: slot.capacity });
    }
    let mut flash = RamNor::from_storage(padded(bytes, slot.offset as usize));
    image::verify_for_slot(&mut flash, slot, len, &mut vec![0u8; SECTOR], None).map(drop)
}

/// `bytes` at `offset` of an erased flash, rounded up to whole sectors.
fn padded(bytes: &[u8], offset: usize) -> Vec<u8> {
    let mut flash = vec![0xFF; (offset + bytes.len()).next_multiple_of(SECTOR)];
    flash[offset..offset + bytes.len()].copy_from_slice(bytes);
    flash
}

fn descriptor_of(bytes: &[u8]) -> Option<Descriptor> {
    let at = IMAGE_IROM_OFFSET as usize;
    let bytes: &[u8; descriptor::SIZE] = bytes.get(at..at + descriptor::SIZE)?.try_into().ok()?;
    Descriptor::parse(bytes).ok()
}
