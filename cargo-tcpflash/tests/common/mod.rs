//! Helpers shared by the integration tests: external tools and output clean-up.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const GCC: &str = "xtensa-lx106-elf-gcc";
pub const GCC_INSTALL: &str = "apt-get install gcc-xtensa-lx106 binutils-xtensa-lx106";
pub const ESPTOOL: &str = "esptool";
pub const ESPTOOL_INSTALL: &str = "pip install esptool";

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// example-blinky's manifest.
pub fn blinky() -> PathBuf {
    repo().join("example-blinky/Cargo.toml")
}

/// The real binary, as `cargo tcpflash` runs it: no TCPFLASH_HOST from outside, no colour,
/// lines wide enough that messages are not wrapped.
pub fn tcpflash(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cargo-tcpflash"));
    command.arg("tcpflash").args(args).env_remove("TCPFLASH_HOST").env("NO_COLOR", "1").env("COLUMNS", "400");
    command
}

/// Fails the test, naming the install command, when `tool` cannot be run.
pub fn require(tool: &str, install: &str) {
    // esptool 5 has a `version` command and no `--version` flag.
    let version_arg = if tool == ESPTOOL { "version" } else { "--version" };
    let ran = Command::new(tool).arg(version_arg).output();
    match ran {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "`{tool} {version_arg}` failed ({}): {}\ninstall it with `{install}`",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => {
            panic!("`{tool}` is needed by this test but cannot be run ({error}); install it with `{install}`")
        }
    }
}

/// esptool's image, or its error output.
pub fn esptool_image(elf: &Path, params: (&str, &str, &str)) -> Result<Vec<u8>, String> {
    let (mode, size, freq) = params;
    let out = elf.with_extension(format!("{mode}-{size}-{freq}.esptool.bin"));
    elf2image(elf, "2", params, &out)?;
    Ok(std::fs::read(out).unwrap())
}

/// esptool's v1 image (`elf2image --version 1`, what the mask ROM boots from 0x0), or its
/// error output. esptool writes it to `<prefix>0x00000.bin`.
pub fn esptool_v1_image(elf: &Path, params: (&str, &str, &str)) -> Result<Vec<u8>, String> {
    let (mode, size, freq) = params;
    let prefix = elf.with_extension(format!("{mode}-{size}-{freq}.esptool-v1-"));
    elf2image(elf, "1", params, &prefix)?;
    let mut name = prefix.into_os_string();
    name.push("0x00000.bin");
    Ok(std::fs::read(name).unwrap())
}

/// Runs `esptool elf2image --version VERSION` with the flash parameters, writing to `out`.
fn elf2image(
    elf: &Path,
    version: &str,
    (mode, size, freq): (&str, &str, &str),
    out: &Path,
) -> Result<(), String> {
    require(ESPTOOL, ESPTOOL_INSTALL);
    let output = Command::new(ESPTOOL)
        .args(["--chip", "esp8266", "elf2image", "--version", version])
        .args(["--flash-mode", mode, "--flash-size", size, "--flash-freq", freq])
        .arg("-o")
        .arg(out)
        .arg(elf)
        .output()
        .unwrap();
    if output.status.success() {
        return Ok(());
    }
    Err(format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}

/// stderr with miette's frame characters and line wrapping taken out.
pub fn flat_stderr(output: &Output) -> String {
    let text = String::from_utf8_lossy(&output.stderr).replace(['│', '×', '╰', '─', '▶'], " ");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
