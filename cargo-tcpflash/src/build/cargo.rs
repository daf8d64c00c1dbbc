//! Finding the firmware package and compiling it with its nightly toolchain to assembly.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cargo_metadata::{Message, Metadata, MetadataCommand, Package, TargetKind};
use serde::Deserialize;

use super::support::TARGET_NAME;
use super::{Board, BuildError, Platform};
use crate::build::BuildOptions;

/// Defaults a firmware crate can set in `[package.metadata.tcpflash]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TcpflashMetadata {
    /// `esp8266` (the default) or `qemu`.
    pub board: Option<String>,
    /// `bare-metal` (the default) or `nonos-sdk`.
    pub platform: Option<String>,
    /// The NONOS SDK folder, relative to the firmware's Cargo.toml (`--sdk` and
    /// `ESP8266_NONOS_SDK` come first).
    pub sdk: Option<PathBuf>,
    pub layout: Option<String>,
    pub flash_mode: Option<String>,
    pub flash_size: Option<String>,
    pub flash_freq: Option<String>,
    pub host: Option<String>,
    /// Never 0 (refused as the metadata is read).
    pub port: Option<std::num::NonZeroU16>,
    /// Hand-written assembly files to link in, relative to the firmware's Cargo.toml: rustc
    /// refuses `asm!` for lx106, so instructions it cannot emit (e.g. `simcall`) live there.
    #[serde(default)]
    pub asm: Vec<PathBuf>,
    /// What the crate is: a firmware (the default) or a second-stage bootloader.
    #[serde(default)]
    pub kind: PackageKind,
}

/// What a crate builds into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageKind {
    /// Linked once per slot into `user1.bin` and `user2.bin` (v2 images).
    #[default]
    Firmware,
    /// Linked once into the v1 image the mask ROM boots from flash 0x0.
    Bootloader,
}

/// The firmware package as cargo sees it.
#[derive(Debug, Clone)]
pub struct FirmwarePackage {
    pub name: String,
    pub version: String,
    pub manifest_path: PathBuf,
    pub bin: String,
    pub target_dir: PathBuf,
    pub metadata: TcpflashMetadata,
}

impl FirmwarePackage {
    /// Reads `cargo metadata` for the manifest the options name (or the one cargo finds
    /// from the current directory) and picks the package to build.
    pub fn locate(args: &BuildOptions) -> Result<FirmwarePackage, BuildError> {
        let mut command = MetadataCommand::new();
        command.no_deps();
        if let Some(path) = &args.manifest_path {
            if !path.is_file() {
                return Err(BuildError::NoManifest { path: path.clone() });
            }
            command.manifest_path(path);
        }
        command.env_remove("RUSTUP_TOOLCHAIN");
        let metadata = command.exec().map_err(|source| BuildError::Metadata { source })?;
        let package = pick_package(&metadata, args.package.as_deref())?;
        let bins: Vec<_> = package.targets.iter().filter(|t| t.kind.contains(&TargetKind::Bin)).collect();
        let bin = match bins.as_slice() {
            [bin] => bin.name.clone(),
            [] => return Err(BuildError::NoBinary { package: package.name.to_string() }),
            _ => {
                return Err(BuildError::SeveralBinaries {
                    package: package.name.to_string(),
                    bins: bins.iter().map(|b| b.name.clone()).collect::<Vec<_>>().join(", "),
                });
            }
        };
        let metadata_value = package.metadata.get("tcpflash").cloned().unwrap_or_default();
        let tcpflash = if metadata_value.is_null() {
            TcpflashMetadata::default()
        } else {
            serde_json::from_value(metadata_value).map_err(|source| BuildError::BadMetadata {
                manifest: package.manifest_path.clone().into(),
                source,
            })?
        };
        Ok(FirmwarePackage {
            name: package.name.to_string(),
            version: package.version.to_string(),
            manifest_path: package.manifest_path.clone().into(),
            bin,
            target_dir: match &args.target_dir {
                Some(dir) => {
                    std::path::absolute(dir).map_err(|source| BuildError::Io { path: dir.clone(), source })?
                }
                None => metadata.target_directory.clone().into(),
            },
            metadata: tcpflash,
        })
    }

    pub fn dir(&self) -> &Path {
        self.manifest_path.parent().unwrap_or(Path::new("."))
    }
}

fn pick_package<'m>(metadata: &'m Metadata, spec: Option<&str>) -> Result<&'m Package, BuildError> {
    let members = metadata.workspace_packages();
    match spec {
        Some(spec) => {
            members.into_iter().find(|p| p.name.as_str() == spec).ok_or_else(|| BuildError::NoSuchPackage {
                spec: spec.to_string(),
                available: metadata
                    .workspace_packages()
                    .iter()
                    .map(|p| p.name.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
        None => match metadata.root_package() {
            Some(package) => Ok(package),
            None if members.len() == 1 => Ok(members[0]),
            None => Err(BuildError::WhichPackage {
                available: members.iter().map(|p| p.name.to_string()).collect::<Vec<_>>().join(", "),
            }),
        },
    }
}

/// The toolchain the firmware builds with: the channel of the nearest `rust-toolchain.toml`
/// (or `rust-toolchain`), run through rustup so the host's default toolchain never leaks in.
#[derive(Debug, Clone)]
pub struct Toolchain {
    pub channel: Option<String>,
    pub sysroot: PathBuf,
}

impl Toolchain {
    pub fn detect(package_dir: &Path) -> Result<Toolchain, BuildError> {
        let channel = find_toolchain_channel(package_dir);
        let version = run_tool(&channel, package_dir, "rustc", &["-vV"])?;
        if !version.contains("-nightly") && !version.contains("-dev") {
            let found = version.lines().next().unwrap_or("").to_string();
            return Err(BuildError::NotNightly { found, dir: package_dir.to_path_buf() });
        }
        let sysroot =
            PathBuf::from(run_tool(&channel, package_dir, "rustc", &["--print", "sysroot"])?.trim());
        if !sysroot.join("lib/rustlib/src/rust/library/core/Cargo.toml").is_file() {
            return Err(BuildError::NoRustSrc {
                toolchain: channel.clone().unwrap_or_else(|| "nightly".into()),
            });
        }
        Ok(Toolchain { channel, sysroot })
    }

    /// `cargo` of this toolchain, with the caller's toolchain choices removed from the env.
    pub fn cargo(&self, dir: &Path) -> Command {
        let mut command = tool_command(&self.channel, "cargo");
        command.current_dir(dir);
        command
    }
}

fn tool_command(channel: &Option<String>, tool: &str) -> Command {
    let mut command = match channel {
        Some(channel) => {
            let mut rustup = Command::new("rustup");
            rustup.args(["run", channel, tool]);
            rustup
        }
        None => Command::new(tool),
    };
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTUP_TOOLCHAIN_SOURCE",
        "RUSTC",
        "RUSTDOC",
        "RUSTFLAGS",
        "RUST_RECURSION_COUNT",
    ] {
        command.env_remove(var);
    }
    command
}

fn run_tool(channel: &Option<String>, dir: &Path, tool: &str, args: &[&str]) -> Result<String, BuildError> {
    let output = tool_command(channel, tool).args(args).current_dir(dir).output().map_err(|source| {
        BuildError::ToolchainUnusable {
            toolchain: channel.clone().unwrap_or_else(|| "nightly".into()),
            detail: source.to_string(),
        }
    })?;
    if !output.status.success() {
        return Err(BuildError::ToolchainUnusable {
            toolchain: channel.clone().unwrap_or_else(|| "nightly".into()),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn find_toolchain_channel(start: &Path) -> Option<String> {
    let start = start.canonicalize().unwrap_or_else(|_| start.to_path_buf());
    start.ancestors().find_map(|dir| {
        ["rust-toolchain.toml", "rust-toolchain"]
            .iter()
            .find_map(|name| toolchain_file_channel(&dir.join(name)))
    })
}

/// The channel a toolchain file names: `[toolchain] channel = "..."` in TOML, or a legacy
/// one-line `rust-toolchain` that is the channel itself. `None` when there is no such file.
pub fn toolchain_file_channel(path: &Path) -> Option<String> {
    #[derive(Deserialize)]
    struct File {
        toolchain: Section,
    }
    #[derive(Deserialize)]
    struct Section {
        channel: Option<String>,
    }
    let text = std::fs::read_to_string(path).ok()?;
    match toml::from_str::<File>(&text) {
        Ok(file) => file.toolchain.channel,
        Err(_) => Some(text.trim().to_owned()).filter(|line| !line.is_empty() && !line.contains('\n')),
    }
}

/// The two assembly files a build yields: the firmware after fat LTO, and
/// `compiler_builtins` (never part of LTO, and needed: Debian's lx106 libgcc lacks
/// `__udivsi3` and friends).
#[derive(Debug, Clone)]
pub struct CompiledAsm {
    pub firmware: PathBuf,
    pub compiler_builtins: PathBuf,
}

/// Runs `cargo build` for the firmware. Cargo's own progress and errors go to the terminal.
pub fn compile(
    package: &FirmwarePackage,
    toolchain: &Toolchain,
    args: &BuildOptions,
    (board, platform): (Board, Platform),
    profile: &str,
    target_spec: &Path,
    linker_shim: &Path,
) -> Result<CompiledAsm, BuildError> {
    let mut cargo = toolchain.cargo(package.dir());
    cargo
        .arg("build")
        .arg("--manifest-path")
        .arg(&package.manifest_path)
        .args(["--package", &package.name, "--bin", &package.bin, "--profile", profile])
        .arg("--target-dir")
        .arg(&package.target_dir)
        .arg("--target")
        .arg(target_spec)
        .args(["-Zbuild-std=core", "-Zbuild-std-features=compiler-builtins-mem", "-Zjson-target-spec"])
        .args(["--message-format", "json-render-diagnostics"])
        // Whole-program assembly needs one codegen unit after fat LTO.
        .args(["--config", &format!("profile.{profile}.lto=\"fat\"")])
        .args(["--config", &format!("profile.{profile}.codegen-units=1")])
        .args(["--config", &format!("profile.{profile}.panic=\"{}\"", panic_strategy(package.metadata.kind))])
        // sha2's compact SHA-256 (ota-agent's image check): the unrolled one is 12 KB of IROM.
        // The board reaches the code as `cfg(tcpflash_board = "...")`.
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            [
                "--emit=asm".to_string(),
                format!("-Clinker={}", linker_shim.display()),
                "--cfg=sha2_backend_soft=\"compact\"".to_string(),
            ]
            .into_iter()
            .chain(board.rustc_flags())
            .chain(platform.rustc_flags())
            .collect::<Vec<_>>()
            .join("\x1f"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if package.metadata.kind == PackageKind::Bootloader {
        cargo.arg("-Zpanic-immediate-abort");
    }
    if let Some(key_file) = &args.key_file {
        cargo.env(ota_agent::auth::KEY_FILE_ENV, key_file);
    }
    if !args.features.is_empty() {
        cargo.arg("--features").arg(args.features.join(","));
    }
    if args.all_features {
        cargo.arg("--all-features");
    }
    if args.no_default_features {
        cargo.arg("--no-default-features");
    }

    let mut child = cargo.spawn().map_err(|source| BuildError::ToolchainUnusable {
        toolchain: toolchain.channel.clone().unwrap_or_else(|| "nightly".into()),
        detail: source.to_string(),
    })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut firmware = None;
    let mut compiler_builtins = None;
    for message in Message::parse_stream(BufReader::new(stdout)) {
        let Ok(Message::CompilerArtifact(artifact)) = message else { continue };
        if artifact.target.name == package.bin && artifact.target.kind.contains(&TargetKind::Bin) {
            firmware = artifact.executable.map(PathBuf::from);
        } else if artifact.target.name == "compiler_builtins" {
            compiler_builtins =
                artifact.filenames.iter().find(|f| f.extension() == Some("rlib")).map(|rlib| {
                    let stem = rlib.file_stem().unwrap_or_default().trim_start_matches("lib");
                    rlib.with_file_name(format!("{stem}.s")).into()
                });
        }
    }
    let status = child.wait().map_err(|source| BuildError::Io { path: "cargo".into(), source })?;
    if !status.success() {
        return Err(BuildError::CompileFailed { package: package.name.clone() });
    }
    let firmware = firmware.ok_or(BuildError::NoArtifact { what: "the firmware's assembly" })?;
    let compiler_builtins =
        compiler_builtins.ok_or(BuildError::NoArtifact { what: "compiler_builtins' assembly" })?;
    Ok(CompiledAsm { firmware, compiler_builtins })
}

/// How panics end: a firmware aborts through its panic handler (which may say why); a
/// bootloader traps at once (`immediate-abort`): no panic location data, no calls into
/// `core`'s panic machinery, every bounds check a single `ill`. Its sector counts every byte.
fn panic_strategy(kind: PackageKind) -> &'static str {
    match kind {
        PackageKind::Firmware => "abort",
        PackageKind::Bootloader => "immediate-abort",
    }
}

/// Where cargo puts a profile's output (`dev` builds into `debug`).
pub fn profile_dir(profile: &str) -> &str {
    match profile {
        "dev" | "test" => "debug",
        "bench" => "release",
        other => other,
    }
}

/// The directory for cargo's output of our custom target.
pub fn target_output_dir(target_dir: &Path, profile: &str) -> PathBuf {
    target_dir.join(TARGET_NAME).join(profile_dir(profile))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_channel_of_toolchain_files() {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("rust-toolchain.toml");
        std::fs::write(&toml, "[toolchain]\nchannel = \"nightly-2026-05-20\"\ncomponents = [\"rust-src\"]\n")
            .unwrap();
        assert_eq!(toolchain_file_channel(&toml), Some("nightly-2026-05-20".into()));
        std::fs::write(&toml, "[toolchain]\ncomponents = [\"rust-src\"]\n").unwrap();
        assert_eq!(toolchain_file_channel(&toml), None, "a toolchain file without a channel");
        std::fs::remove_file(&toml).unwrap();
        std::fs::write(dir.path().join("rust-toolchain"), "nightly-2026-01-01\n").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert_eq!(find_toolchain_channel(&dir.path().join("sub")), Some("nightly-2026-01-01".into()));
    }

    #[test]
    fn metadata_keys_are_kebab_case_and_checked() {
        let good: TcpflashMetadata =
            serde_json::from_str(r#"{"layout":"2MB","flash-mode":"dio","host":"10.0.1.4","port":1234}"#)
                .unwrap();
        assert_eq!(good.layout.as_deref(), Some("2MB"));
        assert_eq!(good.flash_mode.as_deref(), Some("dio"));
        assert_eq!(good.port.map(std::num::NonZeroU16::get), Some(1234));
        assert!(serde_json::from_str::<TcpflashMetadata>(r#"{"port":0}"#).is_err(), "port 0 is refused");
        assert!(good.asm.is_empty());
        let with_asm: TcpflashMetadata = serde_json::from_str(r#"{"asm":["src/start.s"]}"#).unwrap();
        assert_eq!(with_asm.asm, [PathBuf::from("src/start.s")]);
        assert_eq!(with_asm.kind, PackageKind::Firmware);
        let boot: TcpflashMetadata = serde_json::from_str(r#"{"kind":"bootloader"}"#).unwrap();
        assert_eq!(boot.kind, PackageKind::Bootloader);
        let bad = serde_json::from_str::<TcpflashMetadata>(r#"{"kind":"loader"}"#).unwrap_err();
        assert!(bad.to_string().contains("expected `firmware` or `bootloader`"), "{bad}");
        let bad = serde_json::from_str::<TcpflashMetadata>(r#"{"flash_mode":"dio"}"#).unwrap_err();
        assert!(bad.to_string().contains("unknown field `flash_mode`"), "{bad}");
    }
}
