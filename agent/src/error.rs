//! The agent's one error type: an engine's error (`strongbox_engines::Error`: configuration,
//! tools, the database, streams, files), or the agent's own (its folders, calls to the
//! coordinators, sealing and opening).
//!
//! Invariant: a message never holds a password, a key or a connection string with a password.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine's side of a job failed (what, and where, is in the engine's error).
    #[error(transparent)]
    Engine(#[from] strongbox_engines::Error),
    /// A file or folder of the agent's own (a restored server's folder) could not be handled.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A call to the coordinators failed (after the retries the call makes).
    #[error("{what}: {message} ({code:?})")]
    Rpc {
        what: String,
        code: tonic::Code,
        message: String,
    },
    #[error(transparent)]
    Core(#[from] strongbox_core::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
