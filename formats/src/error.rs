//! Error kinds of the format layer. Each kind says whose fault it is.

use std::fmt;

/// Result alias used across the format crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong, classified by who is to blame.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The host failed us: a read, write or open returned an OS error.
    #[error("I/O error: {context}")]
    Io {
        /// What we were doing, e.g. "reading L2 table of base.qcow2".
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The image is damaged or malformed: a field at `offset` holds an impossible value.
    #[error("corrupt image: {what} (at byte offset {offset:#x})")]
    Corrupt {
        /// What is wrong, in domain words.
        what: String,
        /// Byte offset in the image file of the offending structure.
        offset: u64,
    },
    /// A valid image that uses a feature v2x does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A size or count read from disk exceeds one of our `MAX_*` caps.
    #[error("limit exceeded: {what} is {value}, the maximum is {max}")]
    LimitExceeded {
        /// The capped quantity.
        what: &'static str,
        /// The value found.
        value: u64,
        /// The cap.
        max: u64,
    },
    /// The image asks for something the user has not allowed (a backing file
    /// outside the permitted directories, an external data file).
    #[error("denied: {0}")]
    Denied(String),
    /// The caller passed an impossible request (bad option, read past the end).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A named object (a path inside a guest filesystem, a logical volume)
    /// does not exist.
    #[error("not found: {0}")]
    NotFound(String),
}

impl Error {
    /// Builds an [`Error::Io`] with context.
    pub fn io(context: impl fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            context: context.to_string(),
            source,
        }
    }

    /// Builds an [`Error::Corrupt`].
    pub fn corrupt(what: impl fmt::Display, offset: u64) -> Self {
        Error::Corrupt {
            what: what.to_string(),
            offset,
        }
    }

    /// Builds an [`Error::Unsupported`].
    pub fn unsupported(what: impl fmt::Display) -> Self {
        Error::Unsupported(what.to_string())
    }

    /// Builds an [`Error::Invalid`].
    pub fn invalid(what: impl fmt::Display) -> Self {
        Error::Invalid(what.to_string())
    }

    /// Builds an [`Error::NotFound`].
    pub fn not_found(what: impl fmt::Display) -> Self {
        Error::NotFound(what.to_string())
    }

    /// Prefixes `ctx` ("/boot on sda1: ") to the message, keeping the kind
    /// (a capped quantity keeps its fixed name).
    pub fn context_msg(self, ctx: &str) -> Self {
        match self {
            Error::Io { context, source } => Error::Io {
                context: format!("{ctx}: {context}"),
                source,
            },
            Error::Corrupt { what, offset } => Error::Corrupt {
                what: format!("{ctx}: {what}"),
                offset,
            },
            Error::Unsupported(m) => Error::Unsupported(format!("{ctx}: {m}")),
            Error::Denied(m) => Error::Denied(format!("{ctx}: {m}")),
            Error::Invalid(m) => Error::Invalid(format!("{ctx}: {m}")),
            Error::NotFound(m) => Error::NotFound(format!("{ctx}: {m}")),
            e @ Error::LimitExceeded { .. } => e,
        }
    }

    /// Short stable name of the kind, used in JSON events and exit-code mapping.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Error::Io { .. } => "io",
            Error::Corrupt { .. } => "corrupt",
            Error::Unsupported(_) => "unsupported",
            Error::LimitExceeded { .. } => "limit-exceeded",
            Error::Denied(_) => "denied",
            Error::Invalid(_) => "invalid",
            Error::NotFound(_) => "not-found",
        }
    }
}

/// Checks `value <= max`, naming the quantity when it is not.
pub fn check_limit(what: &'static str, value: u64, max: u64) -> Result<()> {
    if value > max {
        Err(Error::LimitExceeded { what, value, max })
    } else {
        Ok(())
    }
}

/// Adds two on-disk quantities, reporting overflow as corruption at `offset`.
pub fn add(a: u64, b: u64, what: &str, offset: u64) -> Result<u64> {
    a.checked_add(b)
        .ok_or_else(|| Error::corrupt(format!("{what} overflows"), offset))
}

/// Multiplies two on-disk quantities, reporting overflow as corruption at `offset`.
pub fn mul(a: u64, b: u64, what: &str, offset: u64) -> Result<u64> {
    a.checked_mul(b)
        .ok_or_else(|| Error::corrupt(format!("{what} overflows"), offset))
}
