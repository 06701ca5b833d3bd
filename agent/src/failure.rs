//! Where a job failed: the class an agent reports with a failed job (`FailureClass` in
//! `types.proto`), so metrics and drills count failures by where they happened, never by the
//! words of a reason.
//!
//! Invariant: every failed job report carries a class; `Other` only for what fits no stage.

use strongbox_proto::v1::FailureClass;

use crate::error::Error;

/// A job that failed, and where.
#[derive(Debug)]
pub struct Failed {
    pub class: FailureClass,
    pub error: Error,
}

impl Failed {
    pub fn new(class: FailureClass, error: Error) -> Failed {
        Failed { class, error }
    }
}

/// A backup's failure: the engine's side (its configuration, tools, database, dump stream,
/// files) is `dump`; the coordinators' side (chunk calls, the commit) and sealing is `upload`.
pub fn of_backup(e: &Error) -> FailureClass {
    match e {
        Error::Rpc { .. } | Error::Core(_) => FailureClass::Upload,
        Error::Config { .. }
        | Error::Spawn { .. }
        | Error::Tool { .. }
        | Error::Database { .. }
        | Error::Stream { .. }
        | Error::Io { .. } => FailureClass::Dump,
        Error::Verify(_) => FailureClass::Verify,
        Error::Other(_) => FailureClass::Other,
    }
}

/// A restore's failure in `stage` (what it was doing): while loading, a failed call to the
/// coordinators is a `fetch` failure, anything else a `load` one.
pub fn of_restore(stage: FailureClass, e: &Error) -> FailureClass {
    match (stage, e) {
        (_, Error::Verify(_)) => FailureClass::Verify,
        (FailureClass::Load, Error::Rpc { .. } | Error::Core(_)) => FailureClass::Fetch,
        (stage, _) => stage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backups_fail_in_the_dump_or_the_upload_and_restores_where_they_were() {
        let rpc = Error::Rpc {
            what: "uploading chunks".into(),
            code: tonic::Code::Unavailable,
            message: "no majority".into(),
        };
        let tool = Error::Tool {
            tool: "pg_dump".into(),
            status: "exit 1".into(),
            stderr: "permission denied".into(),
        };
        assert_eq!(of_backup(&rpc), FailureClass::Upload);
        assert_eq!(of_backup(&tool), FailureClass::Dump);
        assert_eq!(of_restore(FailureClass::Load, &rpc), FailureClass::Fetch);
        assert_eq!(of_restore(FailureClass::Load, &tool), FailureClass::Load);
        assert_eq!(
            of_restore(FailureClass::Provision, &tool),
            FailureClass::Provision
        );
        assert_eq!(
            of_restore(FailureClass::Load, &Error::Verify("rows differ".into())),
            FailureClass::Verify
        );
    }
}
