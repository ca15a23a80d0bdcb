//! The crate's one error type. The Python binding maps each variant to one Python exception in a
//! single place (`python.rs`), so Rust code never decides how an error looks to Python.

use std::io;

/// Everything the native core can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A serialised hash state that cannot be restored: wrong magic, wrong size, or a state no
    /// hasher could have produced. Restoring it would give a wrong digest, so it is refused.
    #[error("invalid hash state: {0}")]
    HashState(String),
    /// An operating-system error from the upload file, with the path it concerns.
    #[error("{path}: {source}")]
    Io {
        /// The file the failing call was made on.
        path: String,
        /// The error the operating system returned.
        #[source]
        source: io::Error,
    },
    /// A call that does not fit the object's state (for example a write to a closed file).
    #[error("{0}")]
    State(String),
}

/// The crate's result alias.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an `io::Error` with the path of the file it concerns.
    pub fn io(path: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
