//! Project tasks behind `cargo xtask`. The binary (`main.rs`) parses the command line and
//! dispatches here; the modules are a library so integration tests can drive them.

pub mod bench;
pub mod build_bench;
pub mod demo;
pub mod footprint;
pub mod proof;
pub mod qemu;
pub mod qemu_board;
pub mod serial;
pub mod sim;
