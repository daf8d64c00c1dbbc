//! Helpers shared by the integration tests: external tools and output clean-up.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub const GCC: &str = "xtensa-lx106-elf-gcc";
pub const GCC_INSTALL: &str = "apt-get install gcc-xtensa-lx106 binutils-xtensa-lx106";
pub const ESPTOOL: &str = "esptool";
pub const ESPTOOL_INSTALL: &str = "pip install esptool";

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
pub fn esptool_image(elf: &Path, (mode, size, freq): (&str, &str, &str)) -> Result<Vec<u8>, String> {
    require(ESPTOOL, ESPTOOL_INSTALL);
    let out = elf.with_extension(format!("{mode}-{size}-{freq}.esptool.bin"));
    let output = Command::new(ESPTOOL)
        .args(["--chip", "esp8266", "elf2image", "--version", "2"])
        .args(["--flash-mode", mode, "--flash-size", size, "--flash-freq", freq])
        .arg("-o")
        .arg(&out)
        .arg(elf)
        .output()
        .unwrap();
    if !output.status.success() {
        return Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(std::fs::read(out).unwrap())
}

/// esptool's v1 image (`elf2image --version 1`, what the mask ROM boots from 0x0), or its
/// error output. esptool writes it to `<prefix>0x00000.bin`.
pub fn esptool_v1_image(elf: &Path, (mode, size, freq): (&str, &str, &str)) -> Result<Vec<u8>, String> {
    require(ESPTOOL, ESPTOOL_INSTALL);
    let prefix = elf.with_extension(format!("{mode}-{size}-{freq}.esptool-v1-"));
    let output = Command::new(ESPTOOL)
        .args(["--chip", "esp8266", "elf2image", "--version", "1"])
        .args(["--flash-mode", mode, "--flash-size", size, "--flash-freq", freq])
        .arg("-o")
        .arg(&prefix)
        .arg(elf)
        .output()
        .unwrap();
    if !output.status.success() {
        return Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let mut name = prefix.into_os_string();
    name.push("0x00000.bin");
    Ok(std::fs::read(name).unwrap())
}

/// stderr with miette's frame characters and line wrapping taken out.
pub fn flat_stderr(output: &Output) -> String {
    let text = String::from_utf8_lossy(&output.stderr).replace(['│', '×', '╰', '─', '▶'], " ");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
