//! Which slot boots: the boot config in rBoot's format, and how it is rewritten.

pub mod config;

pub use config::*;
