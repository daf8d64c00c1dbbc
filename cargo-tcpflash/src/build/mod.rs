//! The firmware build: nightly rustc to assembly, literal pools fixed, GNU as, GNU ld once
//! per slot, and each ELF turned into its slot's image. A bootloader (`kind =
//! "bootloader"`) goes the same way up to the link, which happens once, into a v1 image.
//!
//! Why assembly: LLVM's integrated assembler misplaces Xtensa literal pools, so its objects
//! do not link with GNU ld. See `asm` for the fix and ARCHITECTURE.md for the recipe.

pub mod asm;
pub mod board;
pub mod c_lib;
pub mod cargo;
pub mod link;
mod options;
pub mod sdk;
pub mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use miette::Diagnostic;
use ota_agent::descriptor::BUILD_ID_LEN;
use ota_agent::image::{FlashFreq, FlashMode, FlashParams, FlashSize};
use ota_agent::layout::{DEFAULT_LAYOUT, FlashLayout, Slot, SlotId};
use sha2::{Digest, Sha256};
use thiserror::Error;

pub use self::board::Board;
pub use self::cargo::{FirmwarePackage, PackageKind, TcpflashMetadata};
pub use self::options::BuildOptions;
pub use self::sdk::{Platform, Sdk};
use crate::elf2image;

const AS: &str = "xtensa-lx106-elf-as";
const LD: &str = "xtensa-lx106-elf-ld";
const OBJCOPY: &str = "xtensa-lx106-elf-objcopy";
const BINUTILS_INSTALL: &str = "sudo apt-get install binutils-xtensa-lx106";

/// A finished build: both slots linked and converted.
#[derive(Debug, Clone)]
pub struct Firmware {
    pub package: FirmwarePackage,
    pub board: Board,
    pub platform: Platform,
    /// The NONOS SDK the firmware was linked with (the `nonos-sdk` platform).
    pub sdk: Option<Sdk>,
    pub layout: &'static FlashLayout,
    pub params: FlashParams,
    pub build_id: [u8; BUILD_ID_LEN],
    pub out_dir: PathBuf,
    pub slots: [SlotBuild; 2],
    pub timings: BuildTimings,
}

/// Where a build's time went: cargo's compile, then everything tcpflash adds (assembly
/// passes, GNU as, two links, two image conversions).
#[derive(Debug, Clone, Copy)]
pub struct BuildTimings {
    pub compile: Duration,
    pub after_compile: Duration,
}

impl Firmware {
    pub fn slot(&self, id: SlotId) -> &SlotBuild {
        &self.slots[id.index()]
    }

    pub fn build_id_hex(&self) -> String {
        hex::encode(self.build_id)
    }
}

/// A finished bootloader build: one link, one v1 image.
#[derive(Debug, Clone)]
pub struct Bootloader {
    pub package: FirmwarePackage,
    pub board: Board,
    pub params: FlashParams,
    pub elf: PathBuf,
    pub bin: PathBuf,
    pub map: PathBuf,
    /// Bytes of the image, header included (at most `BOOTLOADER_MAX_LEN` on an ESP8266).
    pub image_len: u32,
    pub timings: BuildTimings,
}

/// What `cargo tcpflash build` made, by the package's kind.
#[derive(Debug, Clone)]
pub enum Built {
    Firmware(Firmware),
    Bootloader(Bootloader),
}

/// One slot's output files.
#[derive(Debug, Clone)]
pub struct SlotBuild {
    pub slot: Slot,
    pub elf: PathBuf,
    pub bin: PathBuf,
    pub map: PathBuf,
    pub image_len: u32,
}

impl SlotBuild {
    /// Percentage of the slot the image fills.
    pub fn percent_used(&self) -> f64 {
        100.0 * f64::from(self.image_len) / f64::from(self.slot.capacity)
    }
}

#[derive(Debug, Error, Diagnostic)]
pub enum BuildError {
    #[error("no Cargo.toml at {path}")]
    #[diagnostic(
        code(tcpflash::build::no_manifest),
        help("pass the firmware's Cargo.toml with --manifest-path")
    )]
    NoManifest { path: PathBuf },

    #[error("could not read the firmware's cargo metadata")]
    #[diagnostic(
        code(tcpflash::build::metadata),
        help("run this inside the firmware's folder or pass --manifest-path path/to/Cargo.toml")
    )]
    Metadata {
        #[source]
        source: cargo_metadata::Error,
    },

    #[error("[package.metadata.tcpflash] in {manifest} is invalid")]
    #[diagnostic(
        code(tcpflash::build::bad_metadata),
        help("known keys: board, layout, flash-mode, flash-size, flash-freq, host, port, asm, kind")
    )]
    BadMetadata {
        manifest: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("no package `{spec}` in this workspace")]
    #[diagnostic(code(tcpflash::build::no_such_package), help("packages here: {available}"))]
    NoSuchPackage { spec: String, available: String },

    #[error("this manifest is a workspace: which package is the firmware?")]
    #[diagnostic(code(tcpflash::build::which_package), help("pass -p/--package with one of: {available}"))]
    WhichPackage { available: String },

    #[error("package `{package}` has no binary target")]
    #[diagnostic(
        code(tcpflash::build::no_binary),
        help(
            "a firmware is a `#![no_main]` binary crate (src/main.rs) defining `extern \"C\" fn main() -> !`"
        )
    )]
    NoBinary { package: String },

    #[error("package `{package}` has several binaries ({bins})")]
    #[diagnostic(
        code(tcpflash::build::several_binaries),
        help("keep one binary target per firmware package")
    )]
    SeveralBinaries { package: String, bins: String },

    #[error("unknown flash layout `{name}`")]
    #[diagnostic(
        code(tcpflash::build::layout),
        help(
            "use one of: 512KB, 1MB, 2MB, 4MB (rBoot), sdk-1MB, sdk-2MB, sdk-4MB, sdk-2MB-c1, sdk-4MB-c1 (the SDK's maps)"
        )
    )]
    UnknownLayout { name: String },

    #[error("unknown platform `{name}`")]
    #[diagnostic(code(tcpflash::build::platform), help("use one of: {}", Platform::names()))]
    UnknownPlatform { name: String },

    #[error("unknown board `{name}`")]
    #[diagnostic(code(tcpflash::build::board), help("use one of: {}", Board::names()))]
    UnknownBoard { name: String },

    #[error("unknown flash {what} `{value}`")]
    #[diagnostic(code(tcpflash::build::flash_param), help("use one of: {choices}"))]
    BadFlashParam { what: &'static str, value: String, choices: &'static str },

    #[error("the assembly file {path} listed in [package.metadata.tcpflash] asm does not exist")]
    #[diagnostic(
        code(tcpflash::build::no_asm_file),
        help("paths in `asm` are relative to the firmware's Cargo.toml")
    )]
    NoAsmFile { path: PathBuf },

    #[error("`{tool}` was not found on PATH")]
    #[diagnostic(code(tcpflash::build::missing_tool), help("install it with: {install}"))]
    MissingTool { tool: &'static str, install: &'static str },

    #[error("the firmware toolchain `{toolchain}` cannot be used: {detail}")]
    #[diagnostic(
        code(tcpflash::build::toolchain),
        help("install it with: rustup toolchain install {toolchain} --component rust-src")
    )]
    ToolchainUnusable { toolchain: String, detail: String },

    #[error("firmware builds need a nightly toolchain, found `{found}` in {dir}")]
    #[diagnostic(
        code(tcpflash::build::not_nightly),
        help(
            "add a rust-toolchain.toml next to the firmware's Cargo.toml:\n[toolchain]\nchannel = \"nightly-2026-05-20\"\ncomponents = [\"rust-src\"]"
        )
    )]
    NotNightly { found: String, dir: PathBuf },

    #[error("the toolchain `{toolchain}` has no `rust-src` component (needed to build `core` for lx106)")]
    #[diagnostic(
        code(tcpflash::build::rust_src),
        help("install it with: rustup component add rust-src --toolchain {toolchain}")
    )]
    NoRustSrc { toolchain: String },

    #[error("the firmware `{package}` did not compile")]
    #[diagnostic(code(tcpflash::build::compile), help("cargo's errors are printed above"))]
    CompileFailed { package: String },

    #[error("cargo reported no {what}")]
    #[diagnostic(code(tcpflash::build::no_artifact), help("this is a cargo-tcpflash bug: please report it"))]
    NoArtifact { what: &'static str },

    #[error("the slot descriptor does not fit: {reason}")]
    #[diagnostic(
        code(tcpflash::build::descriptor),
        help("the package name may have at most 32 bytes and the version at most 16")
    )]
    Descriptor { reason: ota_agent::descriptor::DescriptorError },

    #[error("{tool} failed on {file}:\n{stderr}")]
    #[diagnostic(
        code(tcpflash::build::binutils),
        help("this is likely a cargo-tcpflash bug: please report it with the message above")
    )]
    Binutils { tool: &'static str, file: PathBuf, stderr: String },

    #[error(transparent)]
    #[diagnostic(transparent)]
    Sdk(#[from] sdk::SdkError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    TooLarge(#[from] elf2image::TooLargeForSlot),

    #[error(
        "`{package}` is a bootloader ([package.metadata.tcpflash] kind = \"bootloader\"): it has no slots"
    )]
    #[diagnostic(
        code(tcpflash::build::is_bootloader),
        help(
            "`cargo tcpflash build` writes its v1 image to <target>/tcpflash/bootloader/; it goes to flash 0x0 over serial (`cargo xtask serial-flash --bootloader`), never over the network"
        )
    )]
    IsBootloader { package: String },

    #[error("`{package}` is not a bootloader")]
    #[diagnostic(
        code(tcpflash::build::not_bootloader),
        help(
            "a bootloader crate says so in its Cargo.toml: [package.metadata.tcpflash] kind = \"bootloader\""
        )
    )]
    NotBootloader { package: String },

    #[error(transparent)]
    #[diagnostic(transparent)]
    BootloaderTooLarge(#[from] elf2image::BootloaderTooLarge),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Image(#[from] elf2image::ElfError),

    #[error("cannot access {path}")]
    #[diagnostic(code(tcpflash::build::io))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One setting, resolved as every setting is: the option's value, else the firmware's
/// `[package.metadata.tcpflash]`, else `default`. A name given but unknown is the error
/// `unknown` makes of it.
fn setting<T>(
    option: Option<&String>,
    metadata: Option<&String>,
    default: T,
    parse: impl FnOnce(&str) -> Option<T>,
    unknown: impl FnOnce(String) -> BuildError,
) -> Result<T, BuildError> {
    match option.or(metadata) {
        None => Ok(default),
        Some(name) => parse(name).ok_or_else(|| unknown(name.clone())),
    }
}

pub fn resolve_layout(
    args: &BuildOptions,
    metadata: &TcpflashMetadata,
) -> Result<&'static FlashLayout, BuildError> {
    setting(args.layout.as_ref(), metadata.layout.as_ref(), DEFAULT_LAYOUT, FlashLayout::by_name, |name| {
        BuildError::UnknownLayout { name }
    })
}

pub fn resolve_platform(args: &BuildOptions, metadata: &TcpflashMetadata) -> Result<Platform, BuildError> {
    setting(
        args.platform.as_ref(),
        metadata.platform.as_ref(),
        Platform::default(),
        Platform::from_name,
        |name| BuildError::UnknownPlatform { name },
    )
}

pub fn resolve_board(args: &BuildOptions, metadata: &TcpflashMetadata) -> Result<Board, BuildError> {
    setting(args.board.as_ref(), metadata.board.as_ref(), Board::default(), Board::from_name, |name| {
        BuildError::UnknownBoard { name }
    })
}

pub fn resolve_params(
    args: &BuildOptions,
    metadata: &TcpflashMetadata,
    layout: &FlashLayout,
) -> Result<FlashParams, BuildError> {
    let bad = |what, choices| move |value| BuildError::BadFlashParam { what, value, choices };
    let mode = setting(
        args.flash_mode.as_ref(),
        metadata.flash_mode.as_ref(),
        FlashMode::Qio,
        FlashMode::from_name,
        bad("mode", "qio, qout, dio, dout"),
    )?;
    let freq = setting(
        args.flash_freq.as_ref(),
        metadata.flash_freq.as_ref(),
        FlashFreq::Freq40M,
        FlashFreq::from_name,
        bad("frequency", "40m, 26m, 20m, 80m"),
    )?;
    // An SDK map's size code is its map number (`sdk-2MB-c1` is `2MB-c1`).
    let default_size = layout.sdk_map().map_or(layout.name, |map| map.flash_size().name());
    let sizes = "256KB, 512KB, 1MB, 2MB, 4MB, 2MB-c1, 4MB-c1, 8MB, 16MB";
    let default =
        FlashSize::from_name(default_size).ok_or_else(|| bad("size", sizes)(default_size.to_owned()))?;
    let size = setting(
        args.flash_size.as_ref(),
        metadata.flash_size.as_ref(),
        default,
        FlashSize::from_name,
        bad("size", sizes),
    )?;
    Ok(FlashParams { mode, size, freq })
}

/// Builds the firmware the options describe, for both slots of its layout.
pub fn build(args: &BuildOptions) -> Result<Firmware, BuildError> {
    let package = FirmwarePackage::locate(args)?;
    if package.metadata.kind == PackageKind::Bootloader {
        return Err(BuildError::IsBootloader { package: package.name });
    }
    build_firmware(args, package)
}

/// tcpflash-boot's Cargo.toml, in the source tree cargo-tcpflash was built from (the
/// bootloader is built for the user's flash layout, like the firmware).
pub fn tcpflash_boot_manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ota-agent/boot/Cargo.toml")
}

/// Builds the bootloader the options describe into its v1 image.
pub fn build_bootloader(args: &BuildOptions) -> Result<Bootloader, BuildError> {
    let package = FirmwarePackage::locate(args)?;
    if package.metadata.kind != PackageKind::Bootloader {
        return Err(BuildError::NotBootloader { package: package.name });
    }
    link_bootloader(args, package)
}

/// Builds whatever the package is, as its `kind` says.
pub fn build_package(args: &BuildOptions) -> Result<Built, BuildError> {
    let package = FirmwarePackage::locate(args)?;
    match package.metadata.kind {
        PackageKind::Firmware => build_firmware(args, package).map(Built::Firmware),
        PackageKind::Bootloader => link_bootloader(args, package).map(Built::Bootloader),
    }
}

/// A package compiled and assembled: all but its start-up code and the link.
struct Compiled {
    board: Board,
    /// Where this board's (or platform's) objects and images go.
    board_dir: PathBuf,
    obj_dir: PathBuf,
    assembler: PathBuf,
    linker: PathBuf,
    /// rustc's two objects: the package and compiler_builtins.
    rust: [PathBuf; 2],
    /// The package's own assembly, in link order (after the Rust objects).
    asm: Vec<PathBuf>,
    build_id: [u8; BUILD_ID_LEN],
    passes: Passes,
    started: Instant,
    compiled_at: Instant,
}

fn compile_package(
    args: &BuildOptions,
    package: &FirmwarePackage,
    platform: Platform,
) -> Result<Compiled, BuildError> {
    let profile = args.profile.clone().unwrap_or_else(|| "release".into());
    let assembler = find_tool(AS)?;
    let linker = find_tool(LD)?;
    let toolchain = cargo::Toolchain::detect(package.dir())?;

    let board = resolve_board(args, &package.metadata)?;
    let work_dir = package.target_dir.join("tcpflash");
    // Another board's (or platform's) objects and images go to a folder of their own.
    let board_dir = match platform {
        Platform::NonosSdk => work_dir.join(platform.name()),
        Platform::BareMetal if board == Board::default() => work_dir.clone(),
        Platform::BareMetal => work_dir.join(board.name()),
    };
    let obj_dir = board_dir.join("obj").join(cargo::profile_dir(&profile));
    std::fs::create_dir_all(&obj_dir).map_err(|source| BuildError::Io { path: obj_dir.clone(), source })?;
    let target_name = match platform {
        Platform::NonosSdk => sdk::TARGET_NAME,
        Platform::BareMetal => board.target_name(),
    };
    let target_spec = work_dir.join(format!("{target_name}.json"));
    write_if_changed(&target_spec, support::target_spec_json())?;
    let shim = work_dir.join("rustc-linker.sh");
    write_if_changed(&shim, support::rustc_linker_shim())?;
    make_executable(&shim)?;

    let started = Instant::now();
    let compiled =
        cargo::compile(package, &toolchain, args, (board, platform), &profile, &target_spec, &shim)?;

    let compiled_at = Instant::now();
    status("Assembling", &format!("{} for lx106", package.name));
    let tool_stamp = tool_stamp();
    // A bootloader's code all lies in 8 KB (every call reaches its target directly) and has
    // 4 KB in all.
    let passes = Passes { compact: package.metadata.kind == PackageKind::Bootloader };
    let firmware =
        assemble_rustc_output(&assembler, &compiled.firmware, &obj_dir, "firmware", &tool_stamp, passes)?;
    let builtins = assemble_rustc_output(
        &assembler,
        &compiled.compiler_builtins,
        &obj_dir,
        "compiler_builtins",
        &tool_stamp,
        passes,
    )?;
    let mut extra_asm = read_extra_asm(package)?;
    if let Some(text) = board.asm() {
        let source = obj_dir.join(format!("board-{board}.s"));
        write_if_changed(&source, text)?;
        extra_asm.push((source, text.to_string()));
    }
    let build_id = build_id(package, &[firmware.digest, builtins.digest], &extra_asm);
    // The firmware's own assembly, as written (its literal pools are its author's business).
    let mut asm = Vec::new();
    for (index, (source, _)) in extra_asm.iter().enumerate() {
        let stem = source.file_stem().unwrap_or_default().to_string_lossy();
        let object = obj_dir.join(format!("asm{index}-{stem}.o"));
        assemble(&assembler, source, &object, passes)?;
        asm.push(object);
    }
    Ok(Compiled {
        board,
        board_dir,
        obj_dir,
        assembler,
        linker,
        rust: [firmware.object, builtins.object],
        asm,
        build_id,
        passes,
        started,
        compiled_at,
    })
}

impl Compiled {
    /// Writes and assembles the start-up code in `dir`; returns every object in link order:
    /// the start-up code, `rust` (the Rust objects as the platform links them), the assembly.
    fn objects(&self, startup: &str, dir: &Path, rust: &[PathBuf]) -> Result<Vec<PathBuf>, BuildError> {
        let startup_source = dir.join("startup.s");
        let startup_object = dir.join("startup.o");
        write_if_changed(&startup_source, startup)?;
        assemble(&self.assembler, &startup_source, &startup_object, self.passes)?;
        Ok([startup_object].into_iter().chain(rust.iter().cloned()).chain(self.asm.iter().cloned()).collect())
    }

    fn timings(&self) -> BuildTimings {
        BuildTimings { compile: self.compiled_at - self.started, after_compile: self.compiled_at.elapsed() }
    }
}

/// Links `objects` with the script at `script` into `elf`, writing the map to `map`, against
/// the SDK's libraries when there is one. A failed link leaves no staged files behind.
fn link(
    linker: &Path,
    script: &Path,
    objects: &[PathBuf],
    elf: &Path,
    map: &Path,
    sdk: Option<&Sdk>,
) -> Result<(), BuildError> {
    let mut command = Command::new(linker);
    command.arg("-T").arg(script).arg("--gc-sections").arg("-Map").arg(map).arg("-o").arg(elf).args(objects);
    let linked = match sdk {
        None => run_binutil(&mut command, LD, script),
        Some(sdk) => link_with_sdk(&mut command, sdk, script),
    };
    if linked.is_err() {
        for staged in [elf, map] {
            let _ = std::fs::remove_file(staged);
        }
    }
    linked
}

fn build_firmware(args: &BuildOptions, package: FirmwarePackage) -> Result<Firmware, BuildError> {
    let board = resolve_board(args, &package.metadata)?;
    let layout = resolve_layout(args, &package.metadata)?;
    let platform = resolve_platform(args, &package.metadata)?;
    sdk::check_combination(platform, layout, board.name())?;
    let sdk = match platform {
        Platform::BareMetal => None,
        Platform::NonosSdk => {
            Some(Sdk::locate(args.sdk.as_deref(), package.metadata.sdk.as_deref(), package.dir())?)
        }
    };
    let params = resolve_params(args, &package.metadata, layout)?;
    let compiled = compile_package(args, &package, platform)?;
    let out_dir = compiled.board_dir.join(layout.name);
    std::fs::create_dir_all(&out_dir).map_err(|source| BuildError::Io { path: out_dir.clone(), source })?;
    let build_id = compiled.build_id;
    let board = compiled.board;
    let startup = match &sdk {
        None => support::startup_asm(board, &package.name, &package.version, build_id),
        Some(_) => support::descriptor_asm(&package.name, &package.version, build_id).map(|descriptor| {
            let map = layout.sdk_map().expect("checked: an SDK map");
            let (abort_literals, abort_code) = board.abort();
            descriptor + &sdk::shim_asm(map, &abort_literals, abort_code)
        }),
    }
    .map_err(|reason| BuildError::Descriptor { reason })?;
    let objects = match &sdk {
        None => compiled.objects(&startup, &compiled.obj_dir, &compiled.rust)?,
        // An SDK build's start-up holds the map's partition table: one per layout.
        Some(sdk) => {
            let [firmware, builtins] = &compiled.rust;
            let merged = sdk_rust_object(&compiled.linker, firmware, builtins, &compiled.obj_dir, sdk)?;
            compiled.objects(&startup, &out_dir, &[merged])?
        }
    };

    let slots = layout.slots.map(|slot| -> Result<SlotBuild, BuildError> {
        status(
            "Linking",
            &format!(
                "{} for {} at {:#x} (IROM {:#010x})",
                package.name,
                slot.id,
                slot.offset,
                slot.irom_link_addr()
            ),
        );
        let script = out_dir.join(format!("{}.ld", slot.id));
        let elf = out_dir.join(format!("{}.elf", slot.id));
        let map = out_dir.join(format!("{}.map", slot.id));
        let bin = out_dir.join(format!("{}.bin", slot.id));
        let script_text = match &sdk {
            None => link::linker_script(&slot),
            Some(sdk) => {
                sdk::linker_script(&slot, layout.sdk_map().expect("checked: an SDK map"), &sdk.rom_table())
            }
        };
        write_if_changed(&script, &script_text)?;
        let (elf_staged, map_staged) = (staged(&elf), staged(&map));
        link(&compiled.linker, &script, &objects, &elf_staged, &map_staged, sdk.as_ref())?;
        let elf_bytes = std::fs::read(&elf_staged)
            .map_err(|source| BuildError::Io { path: elf_staged.clone(), source })?;
        let image = elf2image::elf_to_image(&elf_bytes, params)?;
        elf2image::check_fits(image.len() as u64, &slot)?;
        let image_len = image.len() as u32;
        let bin_staged = staged(&bin);
        std::fs::write(&bin_staged, &image).map_err(|source| BuildError::Io { path: bin.clone(), source })?;
        for (from, to) in [(&elf_staged, &elf), (&map_staged, &map), (&bin_staged, &bin)] {
            publish(from, to)?;
        }
        Ok(SlotBuild { slot, elf, bin, map, image_len })
    });
    let [user1, user2] = slots;
    let slots = [user1?, user2?];
    let timings = compiled.timings();
    Ok(Firmware { package, board, platform, sdk, layout, params, build_id, out_dir, slots, timings })
}

/// The firmware and compiler_builtins as one object in the SDK's section names, with every
/// compiler_builtins symbol made local: the SDK's libraries must get the ROM's and their
/// libgcc's routines, never ours from flash (its IRAM code calls them while the flash is busy).
fn sdk_rust_object(
    linker: &Path,
    firmware: &Path,
    builtins: &Path,
    obj_dir: &Path,
    sdk: &Sdk,
) -> Result<PathBuf, BuildError> {
    let script = obj_dir.join("sdk-merge.ld");
    write_if_changed(&script, sdk::merge_script())?;
    let merged = obj_dir.join("rust-sdk.o");
    let merged_staged = staged(&merged);
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| BuildError::Io { path: path.to_path_buf(), source })
    };
    let objcopy = find_tool(OBJCOPY)?;
    // What the ROM provides, compiler_builtins must not: local before the merge, its copies
    // satisfy no reference, so the firmware calls the ROM's and the unused copies go.
    let rom = sdk.rom_symbols().map_err(|source| BuildError::Io { path: sdk.rom_table(), source })?;
    let rom_list = obj_dir.join("sdk-rom-symbols.txt");
    write_if_changed(&rom_list, &(rom.join("\n") + "\n"))?;
    let builtins_sdk = obj_dir.join("compiler_builtins-sdk.o");
    let builtins_staged = staged(&builtins_sdk);
    run_binutil(
        Command::new(&objcopy)
            .arg(format!("--localize-symbols={}", rom_list.display()))
            .arg(builtins)
            .arg(&builtins_staged),
        OBJCOPY,
        builtins,
    )?;
    publish(&builtins_staged, &builtins_sdk)?;
    let builtins = builtins_sdk.as_path();
    // The firmware's own exports (`user_init`, ...) are the roots: whatever of
    // compiler_builtins they do not reach is dropped here, before the sections merge.
    let roots = elf2image::defined_globals(&read(firmware)?)?;
    run_binutil(
        Command::new(linker)
            .args(["-r", "--gc-sections"])
            .args(roots.iter().flat_map(|root| ["-u", root.as_str()]))
            .arg("-T")
            .arg(&script)
            .arg("-o")
            .arg(&merged_staged)
            .arg(firmware)
            .arg(builtins),
        LD,
        &script,
    )?;
    let globals = elf2image::defined_globals(&read(builtins)?)?;
    let list = obj_dir.join("sdk-localize.txt");
    write_if_changed(&list, &(globals.join("\n") + "\n"))?;
    run_binutil(
        Command::new(&objcopy).arg(format!("--localize-symbols={}", list.display())).arg(&merged_staged),
        OBJCOPY,
        &merged_staged,
    )?;
    publish(&merged_staged, &merged)?;
    Ok(merged)
}

/// Links against the SDK's libraries; symbols the SDK lacks are named as such.
fn link_with_sdk(command: &mut Command, sdk: &Sdk, script: &Path) -> Result<(), BuildError> {
    command
        .arg("--no-check-sections")
        .arg("-u")
        .arg(sdk::ENTRY)
        .arg("-L")
        .arg(sdk.lib_dir())
        .arg("--start-group")
        .args(sdk::LIBS.iter().map(|lib| format!("-l{lib}")))
        .arg("--end-group");
    let output = command.output().map_err(|source| BuildError::Io { path: PathBuf::from(LD), source })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let missing = sdk::undefined_symbols(&stderr);
    if !missing.is_empty() {
        let symbols = missing.iter().map(|symbol| format!("`{symbol}`")).collect::<Vec<_>>().join(", ");
        return Err(sdk::SdkError::MissingSymbols { path: sdk.path.clone(), symbols }.into());
    }
    Err(BuildError::Binutils { tool: LD, file: script.to_path_buf(), stderr: first_lines(&stderr, 20) })
}

/// Links a bootloader once (no slots, no IROM) and writes its v1 image to
/// `<target>/tcpflash/bootloader/<name>.{elf,bin,map}`. The layout only gives the header's
/// default flash size.
fn link_bootloader(args: &BuildOptions, package: FirmwarePackage) -> Result<Bootloader, BuildError> {
    let layout = resolve_layout(args, &package.metadata)?;
    let params = resolve_params(args, &package.metadata, layout)?;
    let compiled = compile_package(args, &package, Platform::BareMetal)?;
    let out_dir = compiled.board_dir.join("bootloader");
    std::fs::create_dir_all(&out_dir).map_err(|source| BuildError::Io { path: out_dir.clone(), source })?;
    let startup = support::bootloader_startup_asm(compiled.board, &package.name, &package.version);
    let objects = compiled.objects(&startup, &compiled.obj_dir, &compiled.rust)?;

    status("Linking", &format!("{} as a bootloader (v1 image for flash 0x0)", package.name));
    let script = out_dir.join(format!("{}.ld", package.name));
    let elf = out_dir.join(format!("{}.elf", package.name));
    let map = out_dir.join(format!("{}.map", package.name));
    let bin = out_dir.join(format!("{}.bin", package.name));
    write_if_changed(&script, &link::bootloader_linker_script())?;
    let (elf_staged, map_staged) = (staged(&elf), staged(&map));
    link(&compiled.linker, &script, &objects, &elf_staged, &map_staged, None)?;
    let elf_bytes =
        std::fs::read(&elf_staged).map_err(|source| BuildError::Io { path: elf_staged.clone(), source })?;
    let image = elf2image::elf_to_bootloader_image(&elf_bytes, params)?;
    // The ELF and map stay for a look at what is big, even when the image is refused; an
    // older image does not (it would be flashed by mistake).
    for (from, to) in [(&elf_staged, &elf), (&map_staged, &map)] {
        publish(from, to)?;
    }
    // Sector 0 bounds a bootloader only where a mask ROM loads it from there.
    if compiled.board.bootloader_in_sector_0()
        && let Err(too_large) = elf2image::check_bootloader_fits(image.len() as u64)
    {
        let _ = std::fs::remove_file(&bin);
        return Err(too_large.into());
    }
    let bin_staged = staged(&bin);
    std::fs::write(&bin_staged, &image).map_err(|source| BuildError::Io { path: bin.clone(), source })?;
    publish(&bin_staged, &bin)?;
    let timings = compiled.timings();
    let board = compiled.board;
    Ok(Bootloader { package, board, params, elf, bin, map, image_len: image.len() as u32, timings })
}

/// The files of `[package.metadata.tcpflash] asm`, resolved against the package and read.
fn read_extra_asm(package: &FirmwarePackage) -> Result<Vec<(PathBuf, String)>, BuildError> {
    package
        .metadata
        .asm
        .iter()
        .map(|relative| {
            let path = package.dir().join(relative);
            if !path.is_file() {
                return Err(BuildError::NoAsmFile { path });
            }
            let text = read_text(&path)?;
            Ok((path, text))
        })
        .collect()
}

/// The optional assembly passes a build runs (literal placement and jump tables always).
#[derive(Debug, Clone, Copy, Default)]
struct Passes {
    /// `asm::direct_calls` and unpadded branch targets: for a bootloader, whose 4 KB
    /// sector counts every byte.
    compact: bool,
}

/// An object assembled from rustc's assembly, and what identifies that assembly.
struct Assembled {
    object: PathBuf,
    digest: [u8; 32],
}

/// Fixes and assembles one of rustc's `.s` files, unless the same text was already turned
/// into an object by this very cargo-tcpflash: compiler_builtins' 2.5 MB rarely change,
/// and redoing them on every build would cost more than compiling the firmware.
fn assemble_rustc_output(
    assembler: &Path,
    compiled: &Path,
    obj_dir: &Path,
    name: &str,
    tool_stamp: &str,
    passes: Passes,
) -> Result<Assembled, BuildError> {
    let text = read_text(compiled)?;
    let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
    let stamp = format!("{} {tool_stamp} {passes:?}", hex::encode(digest));
    let object = obj_dir.join(format!("{name}.o"));
    let stamp_path = obj_dir.join(format!("{name}.stamp"));
    if object.is_file() && std::fs::read_to_string(&stamp_path).is_ok_and(|old| old == stamp) {
        return Ok(Assembled { object, digest });
    }
    let source = obj_dir.join(format!("{name}.s"));
    let mut fixed = asm::jump_tables_to_irom(&asm::place_literals(&text));
    if passes.compact {
        fixed = asm::direct_calls(&fixed);
    }
    write_if_changed(&source, &fixed)?;
    assemble(assembler, &source, &object, passes)?;
    // Written after the object: an interrupted build assembles again.
    write_if_changed(&stamp_path, &stamp)?;
    Ok(Assembled { object, digest })
}

/// Identifies the cargo-tcpflash doing the build (its version and executable), so a
/// changed assembly pass never reuses objects made by an older one.
fn tool_stamp() -> String {
    let modified = std::env::current_exe()
        .and_then(std::fs::metadata)
        .and_then(|meta| meta.modified())
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |since| since.as_nanos());
    format!("{} {modified}", env!("CARGO_PKG_VERSION"))
}

fn assemble(assembler: &Path, source: &Path, object: &Path, passes: Passes) -> Result<(), BuildError> {
    let object_staged = staged(object);
    let mut command = Command::new(assembler);
    command.arg("--text-section-literals");
    if passes.compact {
        // GNU as pads branch targets after jumps to fetch boundaries (`--target-align`, on
        // by default): speed a bootloader has no use for, at a byte or two per target.
        command.arg("--no-target-align");
    }
    run_binutil(command.arg(source).arg("-o").arg(&object_staged), AS, source)?;
    publish(&object_staged, object)
}

/// Where an output is written before it is moved into place. Outputs appear whole, so a
/// build running at the same time (another test, another terminal) never reads a torn file.
fn staged(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

fn publish(staged: &Path, path: &Path) -> Result<(), BuildError> {
    std::fs::rename(staged, path).map_err(|source| BuildError::Io { path: path.to_path_buf(), source })
}

/// Identifies the code, not the slot: both slot builds of one source share it.
fn build_id(
    package: &FirmwarePackage,
    compiled: &[[u8; 32]],
    extra_asm: &[(PathBuf, String)],
) -> [u8; BUILD_ID_LEN] {
    let mut hasher = Sha256::new();
    let compiled = compiled.iter().map(|digest| digest.as_slice());
    let extra = extra_asm.iter().map(|(_, text)| text.as_bytes());
    for part in [package.name.as_bytes(), package.version.as_bytes()].into_iter().chain(compiled).chain(extra)
    {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut id = [0u8; BUILD_ID_LEN];
    id.copy_from_slice(&digest[..BUILD_ID_LEN]);
    id
}

pub use crate::report::status;

fn find_tool(tool: &'static str) -> Result<PathBuf, BuildError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
        .ok_or(BuildError::MissingTool { tool, install: BINUTILS_INSTALL })
}

fn run_binutil(command: &mut Command, tool: &'static str, file: &Path) -> Result<(), BuildError> {
    let output = command.output().map_err(|source| BuildError::Io { path: PathBuf::from(tool), source })?;
    if output.status.success() {
        return Ok(());
    }
    Err(BuildError::Binutils {
        tool,
        file: file.to_path_buf(),
        stderr: first_lines(&String::from_utf8_lossy(&output.stderr), 20),
    })
}

/// The head of a long tool output, saying how much was left out.
fn first_lines(text: &str, keep: usize) -> String {
    let lines: Vec<&str> = text.trim().lines().collect();
    if lines.len() <= keep {
        return lines.join("\n");
    }
    format!("{}\n... ({} more lines)", lines[..keep].join("\n"), lines.len() - keep)
}

fn read_text(path: &Path) -> Result<String, BuildError> {
    std::fs::read_to_string(path).map_err(|source| BuildError::Io { path: path.to_path_buf(), source })
}

/// Rewrites generated files only when their content changes, so cargo's fingerprints stay.
fn write_if_changed(path: &Path, text: &str) -> Result<(), BuildError> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    let staged = staged(path);
    std::fs::write(&staged, text).map_err(|source| BuildError::Io { path: path.to_path_buf(), source })?;
    publish(&staged, path)
}

fn make_executable(path: &Path) -> Result<(), BuildError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|source| BuildError::Io { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustc_assembly_is_reassembled_only_when_its_text_or_the_tool_changes() {
        let assembler = find_tool(AS).expect("binutils-xtensa-lx106 is installed");
        let dir = tempfile::tempdir().unwrap();
        let compiled = dir.path().join("compiler_builtins-abc.s");
        let object = dir.path().join("builtins.o");
        let assemble_now = |stamp: &str| {
            let done = assemble_rustc_output(
                &assembler,
                &compiled,
                dir.path(),
                "builtins",
                stamp,
                Passes::default(),
            )
            .unwrap();
            assert_eq!(done.object, object);
            (std::fs::metadata(&object).unwrap().modified().unwrap(), done.digest)
        };
        std::fs::write(&compiled, "\t.text\nf:\n\tret\n").unwrap();
        let (first, digest) = assemble_now("v1");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(assemble_now("v1"), (first, digest), "same text, same tool: the object is reused");
        let (by_new_tool, same_digest) = assemble_now("v2");
        assert!(by_new_tool > first, "another cargo-tcpflash assembles again");
        assert_eq!(same_digest, digest);
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&compiled, "\t.text\ng:\n\tret\n").unwrap();
        let (changed, new_digest) = assemble_now("v2");
        assert!(changed > by_new_tool, "new text: assembled again");
        assert_ne!(new_digest, digest);
    }

    fn package_with_asm(dir: &Path, asm: &[&str]) -> FirmwarePackage {
        FirmwarePackage {
            name: "fw".into(),
            version: "1.0.0".into(),
            manifest_path: dir.join("Cargo.toml"),
            bin: "fw".into(),
            target_dir: dir.join("target"),
            metadata: TcpflashMetadata { asm: asm.iter().map(PathBuf::from).collect(), ..Default::default() },
        }
    }

    #[test]
    fn extra_assembly_is_read_relative_to_the_manifest_and_counts_in_the_build_id() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/start.s"), "    nop\n").unwrap();
        let package = package_with_asm(dir.path(), &["src/start.s"]);
        let extra = read_extra_asm(&package).unwrap();
        assert_eq!(extra, [(dir.path().join("src/start.s"), "    nop\n".to_string())]);
        let without = build_id(&package, &[[1; 32], [2; 32]], &[]);
        assert_ne!(build_id(&package, &[[1; 32], [2; 32]], &extra), without);

        let missing = package_with_asm(dir.path(), &["src/missing.s"]);
        let error = read_extra_asm(&missing).unwrap_err();
        assert!(
            matches!(&error, BuildError::NoAsmFile { path } if *path == dir.path().join("src/missing.s"))
        );
        assert_eq!(
            error.help().unwrap().to_string(),
            "paths in `asm` are relative to the firmware's Cargo.toml"
        );
    }
}
