//! Progress bars for long transfers, shared by the push and the serial first install.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `total` bytes on stderr, drawn only when stderr is a terminal (quiet in logs,
/// pipes and tests). `template` is indicatif's, e.g. `"{msg} [{bar:30}] {bytes}/{total_bytes}"`.
pub fn byte_bar(total: u64, template: &str) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    bar.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
    bar
}
