//! The one error type of `strongbox-coordinator`.
//!
//! Invariant: each message says what failed and, where there is one, what to do; none carries
//! chunk bytes or secrets.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage: {0}")]
    Storage(#[from] crate::store::StoreError),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("raft: {0}")]
    Raft(#[from] raft::Error),

    #[error("corrupt {what} in the node's storage: {detail}")]
    Corrupt { what: &'static str, detail: String },

    #[error("no leader is known right now (election in progress, or a majority of nodes is down); retry shortly")]
    NoLeader,

    #[error("timed out waiting for {0}; the cluster may have lost its majority")]
    Timeout(&'static str),

    #[error("the node is shutting down")]
    ShuttingDown,

    #[error("{0}")]
    Refused(String),

    /// The catalog refused the command (its kind decides the gRPC code).
    #[error("{message}")]
    Catalog {
        code: strongbox_proto::v1::RefusalCode,
        message: String,
    },

    #[error("{what} reached only {acks} of {total} nodes; a majority is needed, so nothing was acknowledged ({failures})")]
    NoMajority {
        what: String,
        acks: usize,
        total: usize,
        failures: String,
    },

    /// From the shared core (certificates, TLS files, formats): its message says what failed.
    #[error(transparent)]
    Core(#[from] strongbox_core::Error),

    #[error("node {node}: its disk has {free} bytes free, and uploads stop at {reserve} to keep room for the catalog; free space or grow the disk on that node")]
    DiskFull {
        node: String,
        free: u64,
        reserve: u64,
    },

    #[error("transport: {0}")]
    Transport(String),

    /// A record the caller named does not exist (or is not in the state the call needs).
    #[error("{0}")]
    NotFound(String),

    /// No node of the region holds a good copy of data a committed backup needs.
    #[error("{0}")]
    DataLoss(String),
}

impl Error {
    pub fn corrupt(what: &'static str, detail: impl ToString) -> Self {
        Error::Corrupt {
            what,
            detail: detail.to_string(),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        if let Error::Io { source, .. } = &e {
            if source.raw_os_error() == Some(28) {
                return tonic::Status::resource_exhausted(format!(
                    "{msg}: the node's disk is full"
                ));
            }
        }
        match e {
            Error::NoMajority { .. } => tonic::Status::unavailable(msg),
            Error::NoLeader | Error::Timeout(_) | Error::ShuttingDown | Error::Transport(_) => {
                tonic::Status::unavailable(msg)
            }
            Error::Refused(_) => tonic::Status::failed_precondition(msg),
            Error::Catalog { code, message } => crate::catalog::refusal::status(code, message),
            Error::DiskFull { .. } => tonic::Status::resource_exhausted(msg),
            Error::NotFound(_) => tonic::Status::not_found(msg),
            Error::DataLoss(_) => tonic::Status::data_loss(msg),
            _ => tonic::Status::internal(msg),
        }
    }
}
