//! Where a job failed: the class an agent reports with a failed job (`FailureClass` in
//! `types.proto`), so metrics and drills count failures by where they happened, never by the
//! words of a reason.
//!
//! Invariant: every failed job report carries a class; `Other` only for what fits no stage.

use strongbox_engines::Error as EngineError;
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
/// files) and the agent's own files are `dump`, an error an engine gives in words only
/// (`Other`) is `other`; the coordinators' side (chunk calls, the commit) and sealing is
/// `upload`.
pub fn of_backup(e: &Error) -> FailureClass {
    match e {
        Error::Rpc { .. } | Error::Core(_) => FailureClass::Upload,
        Error::Engine(e) => match e {
            EngineError::Config { .. }
            | EngineError::Spawn { .. }
            | EngineError::Tool { .. }
            | EngineError::Database { .. }
            | EngineError::Stream { .. }
            | EngineError::Io { .. } => FailureClass::Dump,
            EngineError::Verify(_) => FailureClass::Verify,
            EngineError::Other(_) => FailureClass::Other,
        },
        Error::Io { .. } => FailureClass::Dump,
        Error::Other(_) => FailureClass::Other,
    }
}

/// A restore's failure in `stage` (what it was doing): while loading, a failed call to the
/// coordinators is a `fetch` failure, anything else a `load` one.
pub fn of_restore(stage: FailureClass, e: &Error) -> FailureClass {
    match (stage, e) {
        (_, Error::Engine(EngineError::Verify(_))) => FailureClass::Verify,
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
        let tool = Error::Engine(EngineError::Tool {
            tool: "pg_dump".into(),
            status: "exit 1".into(),
            stderr: "permission denied".into(),
        });
        assert_eq!(of_backup(&rpc), FailureClass::Upload);
        assert_eq!(of_backup(&tool), FailureClass::Dump);
        assert_eq!(of_restore(FailureClass::Load, &rpc), FailureClass::Fetch);
        assert_eq!(of_restore(FailureClass::Load, &tool), FailureClass::Load);
        assert_eq!(
            of_restore(FailureClass::Provision, &tool),
            FailureClass::Provision
        );
        assert_eq!(
            of_restore(
                FailureClass::Load,
                &Error::Engine(EngineError::Verify("rows differ".into()))
            ),
            FailureClass::Verify
        );
    }

    /// Every kind of engine error keeps the class it had while the engines were part of the
    /// agent: the engine's side is `dump`, its words alone `other`.
    #[test]
    fn engine_errors_are_classed_by_kind() {
        let io = || std::io::Error::other("boom");
        let dump = [
            EngineError::Config {
                service: "s".into(),
                message: "m".into(),
            },
            EngineError::Spawn {
                tool: "pg_dump".into(),
                source: io(),
            },
            EngineError::Database {
                engine: "PostgreSQL",
                target: "t".into(),
                message: "m".into(),
            },
            EngineError::Stream {
                what: "w".into(),
                source: io(),
            },
            EngineError::Io {
                what: "reading",
                path: "/x".into(),
                source: io(),
            },
        ];
        for e in dump {
            let e = Error::from(e);
            assert_eq!(of_backup(&e), FailureClass::Dump, "{e}");
            assert_eq!(
                of_restore(FailureClass::Load, &e),
                FailureClass::Load,
                "{e}"
            );
        }
        let other = Error::from(EngineError::Other("m".into()));
        assert_eq!(of_backup(&other), FailureClass::Other);
        assert_eq!(
            of_restore(FailureClass::Provision, &other),
            FailureClass::Provision
        );
        let verify = Error::from(EngineError::Verify("rows differ".into()));
        assert_eq!(of_backup(&verify), FailureClass::Verify);
        let own = Error::Io {
            what: "removing",
            path: "/x".into(),
            source: io(),
        };
        assert_eq!(of_backup(&own), FailureClass::Dump);
        assert_eq!(of_backup(&Error::Other("m".into())), FailureClass::Other);
    }
}
