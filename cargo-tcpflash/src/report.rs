//! How the library says what it is doing. It never prints: a front end installs a
//! [`Reporter`] once (the CLI's writes cargo-style status lines to stderr, see
//! `cli::StderrReporter`); without one the library is silent, as tests and other tools
//! that call it want.

use std::sync::OnceLock;

/// Receives the library's status lines and warnings.
pub trait Reporter: Send + Sync {
    /// A step starts or ends: `verb` is one word ("Linking"), `what` the rest.
    fn status(&self, verb: &str, what: &str);
    /// Something the user should act on or know, though the work goes on.
    fn warn(&self, what: &str) {
        self.status("Warning", what);
    }
}

static REPORTER: OnceLock<Box<dyn Reporter>> = OnceLock::new();

/// Installs the process's reporter; the first one stays (returns whether this one did).
pub fn install(reporter: Box<dyn Reporter>) -> bool {
    REPORTER.set(reporter).is_ok()
}

/// Reports a status line to the installed reporter, if any.
pub fn status(verb: &str, what: &str) {
    if let Some(reporter) = REPORTER.get() {
        reporter.status(verb, what);
    }
}

/// Reports a warning to the installed reporter, if any.
pub fn warn(what: &str) {
    if let Some(reporter) = REPORTER.get() {
        reporter.warn(what);
    }
}
