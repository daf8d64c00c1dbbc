//! Project tasks behind `cargo xtask`. The binary (`main.rs`) parses the command line and
//! dispatches here; the modules are a library so integration tests can drive them.

pub mod bench;
pub mod build_bench;
pub mod demo;
pub mod footprint;
pub mod proof;
pub mod qemu;
pub mod qemu_board;
/// `cargo xtask serial-flash` and `cargo xtask sim` are this repository's aliases of
/// `cargo tcpflash serial-flash` and `cargo tcpflash sim`.
pub use cargo_tcpflash::{serial, sim};
