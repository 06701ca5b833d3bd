//! Why the catalog refused a command: a closed set, each kind with its fields and one gRPC
//! code, so callers and tests decide on the kind and people read the message.
//!
//! Invariants: a refusal writes nothing but the command's outcome (and its audit line); the
//! outcome records the kind ([`RefusalCode`]) and the message, so a forwarded proposal answers
//! with the same code on every node.

use strongbox_proto::v1::RefusalCode;

/// A refused catalog command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The command is malformed (a field missing or out of range).
    #[error("{0}")]
    Invalid(String),
    /// A record the command names does not exist.
    #[error("no {what} {id}")]
    NotFound { what: &'static str, id: String },
    /// The record the command would create exists already.
    #[error("{what} {id} exists already")]
    Exists { what: &'static str, id: String },
    /// The records' state forbids it (a job already finished, a backup under way, a hold, a
    /// lock): the message says which and what to do.
    #[error("{0}")]
    Conflict(String),
    /// A host reporting on another host's job.
    #[error("job {job} belongs to host {owner}")]
    NotYours { job: String, owner: String },
    /// A configured limit is reached (restored servers on a spare).
    #[error("{0}")]
    Limit(String),
    /// A deletion by time whose clock the catalog does not trust (`Catalog::implausible_time`).
    #[error("{0}")]
    Time(String),
    /// This node could not read its own catalog while applying.
    #[error("the catalog could not be read: {0}")]
    Storage(String),
}

impl Refusal {
    /// The kind, as recorded in the outcome.
    pub fn code(&self) -> RefusalCode {
        match self {
            Refusal::Invalid(_) => RefusalCode::Invalid,
            Refusal::NotFound { .. } => RefusalCode::NotFound,
            Refusal::Exists { .. } => RefusalCode::Exists,
            Refusal::Conflict(_) => RefusalCode::Conflict,
            Refusal::NotYours { .. } => RefusalCode::NotYours,
            Refusal::Limit(_) => RefusalCode::Limit,
            Refusal::Time(_) => RefusalCode::Time,
            Refusal::Storage(_) => RefusalCode::Storage,
        }
    }

    pub fn conflict(why: impl Into<String>) -> Refusal {
        Refusal::Conflict(why.into())
    }

    pub fn invalid(why: impl Into<String>) -> Refusal {
        Refusal::Invalid(why.into())
    }
}

impl From<crate::store::StoreError> for Refusal {
    fn from(e: crate::store::StoreError) -> Self {
        Refusal::Storage(e.to_string())
    }
}

impl From<crate::error::Error> for Refusal {
    fn from(e: crate::error::Error) -> Self {
        Refusal::Storage(e.to_string())
    }
}

/// The gRPC status of a refusal recorded as `code` with `message`.
pub fn status(code: RefusalCode, message: String) -> tonic::Status {
    match code {
        RefusalCode::Invalid => tonic::Status::invalid_argument(message),
        RefusalCode::NotFound => tonic::Status::not_found(message),
        RefusalCode::Exists => tonic::Status::already_exists(message),
        RefusalCode::NotYours => tonic::Status::permission_denied(message),
        RefusalCode::Limit => tonic::Status::resource_exhausted(message),
        RefusalCode::Storage => tonic::Status::internal(message),
        RefusalCode::Conflict | RefusalCode::Time | RefusalCode::Unspecified => {
            tonic::Status::failed_precondition(message)
        }
    }
}

/// The result of one command's handler: what it did (for the audit log), or why not.
pub type Applied = std::result::Result<String, Refusal>;
