//! `cargo tcpflash new PATH`: a firmware crate that builds and pushes as it is (ota-agent,
//! the pinned nightly with rust-src, `[package.metadata.tcpflash]`, a `main.rs` with the
//! agent, the watchdog fed and a panic that resets, a README with the two commands).

use std::path::{Path, PathBuf};

use clap::Args;
use miette::Diagnostic;
use thiserror::Error;

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The folder to create (it may exist if it is empty).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// The crate's name (default: the folder's name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

#[derive(Debug, Error, Diagnostic)]
pub enum NewError {
    #[error("{} is not empty", path.display())]
    #[diagnostic(
        code(tcpflash::new::not_empty),
        help("nothing was written: give a new folder (or an empty one)")
    )]
    NotEmpty { path: PathBuf },

    #[error("`{name}` is not a crate name")]
    #[diagnostic(
        code(tcpflash::new::name),
        help("a crate name is letters, digits, `-` and `_`, starting with a letter: pass one with --name")
    )]
    BadName { name: String },

    #[error("cannot write {}", path.display())]
    #[diagnostic(code(tcpflash::new::io))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The crate's files, as `{name}` and the dependency lines are filled in.
const TEMPLATES: [(&str, &str); 4] = [
    ("Cargo.toml", include_str!("../templates/firmware/Cargo.toml.in")),
    ("build.rs", include_str!("../templates/firmware/build.rs.in")),
    ("README.md", include_str!("../templates/firmware/README.md.in")),
    ("src/main.rs", include_str!("../templates/firmware/src/main.rs.in")),
];

/// The toolchain firmware builds need, as this repository pins it for example-blinky.
const RUST_TOOLCHAIN: &str = include_str!("../../example-blinky/rust-toolchain.toml");

/// Writes the crate; returns its folder.
pub fn run(args: &NewArgs) -> Result<PathBuf, NewError> {
    let path = &args.path;
    let name = match &args.name {
        Some(name) => name.clone(),
        None => path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    if !is_crate_name(&name) {
        return Err(NewError::BadName { name });
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| NewError::Io { path, source }
    };
    if path.exists() {
        let mut entries = std::fs::read_dir(path).map_err(io(path))?;
        if entries.next().is_some() {
            return Err(NewError::NotEmpty { path: path.clone() });
        }
    }
    let (ota_agent, ota_agent_build) = ota_agent_lines();
    let fill = |text: &str| {
        text.replace("{name}", &name)
            .replace("{ota_agent_build}", &ota_agent_build)
            .replace("{ota_agent}", &ota_agent)
    };
    let mut files: Vec<(&str, String)> = TEMPLATES.iter().map(|(file, text)| (*file, fill(text))).collect();
    files.push(("rust-toolchain.toml", RUST_TOOLCHAIN.to_owned()));
    files.push((".gitignore", "/target\n".to_owned()));
    for (file, text) in files {
        let target = path.join(file);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&target, text).map_err(io(&target))?;
    }
    Ok(path.clone())
}

/// The `ota-agent` lines: the source cargo-tcpflash was built from when it is there (a
/// path), else the published crate.
fn ota_agent_lines() -> (String, String) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ota-agent");
    match std::fs::canonicalize(&source).ok().filter(|dir| dir.join("Cargo.toml").is_file()) {
        Some(dir) => {
            let path = dir.display().to_string().replace('\\', "/");
            (
                format!("ota-agent = {{ path = \"{path}\" }}"),
                format!("ota-agent = {{ path = \"{path}\", features = [\"build-script\"] }}"),
            )
        }
        None => {
            let version = env!("CARGO_PKG_VERSION");
            (
                format!("ota-agent = \"{version}\""),
                format!("ota-agent = {{ version = \"{version}\", features = [\"build-script\"] }}"),
            )
        }
    }
}

/// What cargo takes as a package name (the common subset: ASCII, starting with a letter).
fn is_crate_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_names_are_checked() {
        assert!(is_crate_name("my-board_2"));
        assert!(!is_crate_name("2board"));
        assert!(!is_crate_name("my board"));
        assert!(!is_crate_name(""));
    }

    #[test]
    fn the_template_is_filled_and_a_non_empty_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("porch-light");
        run(&NewArgs { path: path.clone(), name: None }).unwrap();
        let manifest = std::fs::read_to_string(path.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"porch-light\""), "{manifest}");
        assert!(manifest.contains("ota-agent = { path = \""), "{manifest}");
        assert!(!manifest.contains("{name}") && !manifest.contains("{ota_agent"), "{manifest}");
        let toolchain = std::fs::read_to_string(path.join("rust-toolchain.toml")).unwrap();
        assert!(toolchain.contains("rust-src") && toolchain.contains("nightly-"), "{toolchain}");
        let main = std::fs::read_to_string(path.join("src/main.rs")).unwrap();
        assert!(main.contains("watchdog.feed()") && main.contains("esp8266::reset()"), "{main}");

        let readme_before = std::fs::read(path.join("README.md")).unwrap();
        let error = run(&NewArgs { path: path.clone(), name: None }).unwrap_err();
        assert!(matches!(error, NewError::NotEmpty { .. }), "{error}");
        assert_eq!(std::fs::read(path.join("README.md")).unwrap(), readme_before, "nothing overwritten");
    }
}
