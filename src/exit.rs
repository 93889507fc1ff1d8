//! Exit codes: one place that maps error kinds to the numbers documented in
//! the man page (see `cli::EXIT_CODES_HELP`).

use v2x_formats::Error;

/// Success.
pub const OK: u8 = 0;
/// compare: the images differ.
pub const DIFFERENT: u8 = 1;
/// Command-line usage error (clap's own code).
pub const USAGE: u8 = 2;
/// Host I/O error.
pub const IO: u8 = 3;
/// Corrupt input image.
pub const CORRUPT: u8 = 4;
/// Unsupported format or feature.
pub const UNSUPPORTED: u8 = 5;
/// A safety limit was exceeded.
pub const LIMIT: u8 = 6;
/// Refused by policy.
pub const DENIED: u8 = 7;
/// Anything else.
pub const OTHER: u8 = 8;
/// Interrupted by SIGINT/SIGTERM (128 + SIGINT, as shells expect).
pub const INTERRUPTED: u8 = 130;

/// A flag set by SIGINT/SIGTERM, so a conversion stops between chunks and its
/// temporary output is removed. Installs the handler on first use.
pub fn interrupt_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, OnceLock};
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        // If a handler cannot be installed, signals keep their default action.
        let _ = ctrlc::set_handler(move || f.store(true, Ordering::Relaxed));
        flag
    })
    .clone()
}

/// A refusal decided by the CLI itself (not by a format reader).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The exit code for an error chain: the first classified cause wins.
pub fn code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<Error>() {
            return match e {
                Error::Io { source, .. } if source.kind() == std::io::ErrorKind::Interrupted => INTERRUPTED,
                Error::Io { .. } => IO,
                Error::Corrupt { .. } => CORRUPT,
                Error::Unsupported(_) => UNSUPPORTED,
                Error::LimitExceeded { .. } => LIMIT,
                Error::Denied(_) => DENIED,
                Error::Invalid(_) => USAGE,
                Error::NotFound(_) => OTHER,
            };
        }
        if cause.downcast_ref::<Refused>().is_some() {
            return DENIED;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return if io.kind() == std::io::ErrorKind::Interrupted {
                INTERRUPTED
            } else {
                IO
            };
        }
    }
    OTHER
}

/// The stable kind name for JSON error events.
pub fn kind_for(err: &anyhow::Error) -> &'static str {
    match code_for(err) {
        IO => "io",
        CORRUPT => "corrupt",
        UNSUPPORTED => "unsupported",
        LIMIT => "limit-exceeded",
        DENIED => "denied",
        USAGE => "invalid",
        INTERRUPTED => "interrupted",
        _ => "other",
    }
}
