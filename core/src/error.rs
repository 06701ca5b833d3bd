//! The one error type of `strongbox-core`.
//!
//! Invariant: no message carries secret material (key bytes, plaintext); each says what is wrong
//! and, where there is one, what the operator should do.

use std::path::PathBuf;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The message carries the cause, so it is not also a `source` (printed twice otherwise,
    /// as "…: No such file or directory: No such file or directory").
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    #[error("reading the input stream: {0}")]
    Stream(#[source] std::io::Error),

    #[error("{path} already exists; pass --force to replace it")]
    AlreadyExists { path: PathBuf },

    #[error("key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },

    #[error("key id {id} is not in the keyring (it holds {have}); add the fleet key with that id to the key file")]
    UnknownKeyId { id: u32, have: String },

    #[error("chunk is malformed: {0}")]
    ChunkFormat(String),

    #[error("chunk does not open: it was altered, or it belongs to another service, id or key")]
    ChunkAuth,

    #[error("chunk decrypted but its content does not hash to its id {id}: corrupt or misnamed")]
    ChunkIdMismatch { id: String },

    #[error("chunk compression: {0}")]
    Compression(String),

    #[error("manifest is malformed: {0}")]
    ManifestFormat(String),

    #[error(
        "manifest authentication failed: it was altered, or it belongs to another service or key"
    )]
    ManifestAuth,

    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },

    #[error("certificate: {0}")]
    Certificate(String),

    #[error("TLS: {0}")]
    Tls(String),

    #[error("{0}")]
    Config(String),

    #[error("the system random generator failed")]
    Random,

    /// A chunk of a backup could not be fetched (the caller's fetch said why).
    #[error("fetching chunk {id}: {message}")]
    Fetch { id: String, message: String },

    /// A chunk opened, but its size is not the one its manifest records.
    #[error("chunk {id} holds {found} bytes, its manifest says {expected}: the backup's catalog and chunks disagree")]
    ChunkSize {
        id: String,
        found: u64,
        expected: u64,
    },

    /// A blocking-pool task ended without an answer (the runtime is shutting down).
    #[error("a worker thread stopped: {0}")]
    Worker(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }

    pub(crate) fn invalid(
        what: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Invalid {
            what,
            value: value.into(),
            reason: reason.into(),
        }
    }
}
