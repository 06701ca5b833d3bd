//! The agent's one error type.
//!
//! Invariant: a message never holds a password, a key or a connection string with a password.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The service's configuration is wrong (what to fix is in the message).
    #[error("service `{service}`: {message}")]
    Config { service: String, message: String },
    /// A tool (pg_dump, mariadb-dump, initdb, ...) could not start.
    #[error("could not run `{tool}`: {source} (is it installed and on PATH or under the configured bin_dir?)")]
    Spawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    /// A tool ran and failed: its exit status and the end of its stderr.
    #[error("`{tool}` failed ({status}): {stderr}")]
    Tool {
        tool: String,
        status: String,
        stderr: String,
    },
    /// The database answered with an error, or could not be reached.
    #[error("{engine} at {target}: {message}")]
    Database {
        engine: &'static str,
        target: String,
        message: String,
    },
    /// Verification after a restore found a difference.
    #[error("verification failed: {0}")]
    Verify(String),
    /// A byte stream (a part being loaded, a tool's output) failed.
    #[error("{what}: {source}")]
    Stream {
        what: String,
        #[source]
        source: std::io::Error,
    },
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
