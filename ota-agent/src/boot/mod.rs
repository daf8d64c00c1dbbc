//! Which slot boots: rBoot's config (the confirmed slot, in rBoot's format), the trial
//! record (a new firmware on probation), the decision tcpflash-boot makes from both, the
//! hand-off record it leaves the firmware, and the bootloader's flow over a small board
//! trait.

pub mod config;
pub mod decision;
pub mod handoff;
pub mod loader;
pub mod status;
pub mod trial;

pub use config::*;
pub use status::{BootStatus, CommitError, DEFAULT_TRIAL_ATTEMPTS, Running, commit_update, confirm_running};
