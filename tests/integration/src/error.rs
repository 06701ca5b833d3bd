//! The one error type of the harness.
//!
//! Job: tell a test author what went wrong *and what to do about it*. Every variant's message
//! names the failing step (which binary, which command, which file) and, where there is a
//! usual fix (install a package, create a system user, read a log), says so. Errors that come
//! from a server carry the tail of its log so that a failing test's output is enough to
//! diagnose the failure without digging through temporary folders (which are removed on drop).

use std::path::PathBuf;
use std::time::Duration;

/// Result alias used throughout the harness.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

/// Everything that can go wrong while starting, using or stopping a test server.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A required executable could not be found.
    #[error("{name} not found (looked in: {searched}): {hint}")]
    BinaryNotFound {
        /// Executable name, e.g. `mariadbd`.
        name: String,
        /// Where the harness looked.
        searched: String,
        /// What to do, e.g. "install mariadb-server (apt-get install -y mariadb-server)".
        hint: String,
    },

    /// We run as root, the server refuses to, and the unprivileged system user to run it as
    /// does not exist. The harness never creates users itself.
    #[error(
        "running as root but system user `{user}` does not exist, and {server} refuses to run as \
         root: {hint}"
    )]
    SystemUserMissing {
        /// The missing user, e.g. `postgres`.
        user: String,
        /// The server that needs it.
        server: String,
        /// What to do.
        hint: String,
    },

    /// A file-system or process-spawning operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A set-up step (mount, copy) failed or is not possible here; the message says why.
    #[error("{0}")]
    Setup(String),

    /// A system call made through `nix` failed.
    #[error("{what}: {source}")]
    Sys {
        /// What the harness was doing.
        what: String,
        /// The underlying errno.
        #[source]
        source: nix::Error,
    },

    /// A command ran but exited unsuccessfully.
    #[error(
        "{what} failed ({status}): {command}\n--- stderr ---\n{stderr}\n--- stdout ---\n{stdout}"
    )]
    CommandFailed {
        /// What the command was for.
        what: String,
        /// The command line, for copy-pasting into a shell.
        command: String,
        /// How it exited.
        status: String,
        /// Its standard error.
        stderr: String,
        /// Its standard output.
        stdout: String,
    },

    /// A server did not become ready before the deadline.
    #[error(
        "{server} did not accept connections within {waited:?} (last probe said: {last_probe}); \
         log {log}:\n{log_tail}"
    )]
    StartTimeout {
        /// Which server.
        server: String,
        /// How long we waited.
        waited: Duration,
        /// Output of the last readiness probe.
        last_probe: String,
        /// Path of the server's log (removed when the server is dropped).
        log: PathBuf,
        /// Last lines of that log.
        log_tail: String,
    },

    /// A server process exited while the harness expected it to be running.
    #[error("{server} exited unexpectedly ({status}); log {log}:\n{log_tail}")]
    ServerExited {
        /// Which server.
        server: String,
        /// How it exited.
        status: String,
        /// Path of the server's log (removed when the server is dropped).
        log: PathBuf,
        /// Last lines of that log.
        log_tail: String,
    },

    /// The operation needs a running server but it has been stopped.
    #[error("{server} is not running (it was stopped); call restart() first")]
    NotRunning {
        /// Which server.
        server: String,
    },

    /// An SQLite operation failed.
    #[error("sqlite: {what}: {source}")]
    Sqlite {
        /// What the harness was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },

    /// No free TCP port could be found.
    #[error("no free TCP port on {addr} after {attempts} attempts: is the loopback interface up?")]
    NoFreePort {
        /// The address we tried to bind.
        addr: std::net::IpAddr,
        /// How many ports we tried.
        attempts: u32,
    },
}

impl HarnessError {
    /// Wraps an [`std::io::Error`] with a description of what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        HarnessError::Io {
            what: what.into(),
            source,
        }
    }

    /// Wraps a [`nix::Error`] with a description of what was being done.
    pub fn sys(what: impl Into<String>, source: nix::Error) -> Self {
        HarnessError::Sys {
            what: what.into(),
            source,
        }
    }

    /// Wraps a [`rusqlite::Error`] with a description of what was being done.
    pub fn sqlite(what: impl Into<String>, source: rusqlite::Error) -> Self {
        HarnessError::Sqlite {
            what: what.into(),
            source,
        }
    }
}
