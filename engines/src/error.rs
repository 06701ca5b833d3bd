//! The engines' one error type: what went wrong on the database's side of a backup or a
//! restore (its configuration, its tools, the server, a stream, a file).
//!
//! Invariants:
//! - A message never holds a password, a key or a connection string with a password.
//! - Each variant says where the failure happened, so a caller can classify it without
//!   reading the words (the agent's `failure.rs`: a backup's engine error is a dump failure).

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
    /// A file or folder could not be read, written or made.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Anything else, said in words: the messages of the code as it came from the agent, which
    /// callers classify as "other" (no stage). New code uses (or adds) a variant that says
    /// where the failure happened.
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
