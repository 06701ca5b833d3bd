//! The words of strongbox's vocabulary: each enum of `types.proto` as people and scripts see
//! it (`completed`, `pre-restore`, `no-primary`), and back.
//!
//! Invariants: one table per enum, read both ways, so a word and its value never drift; the
//! `UNSPECIFIED` value's word is `-` and no word parses to it; parsing ignores case.

use crate::v1::{
    BackupKind, BackupState, CallerRole, Engine, FailureClass, HostLiveness, JobKind, JobState,
    MemberRole, NodeRole, RefusalCode, RestoreOutcome, ServiceAction, ServiceState,
};

/// The word of an unset value.
pub const UNSPECIFIED: &str = "-";

/// What every enum of the vocabulary offers, for code generic over them (input validation).
pub trait Vocabulary: Copy + Sized + 'static {
    /// The word for this value (`-` when unspecified).
    fn word(self) -> &'static str;
    /// The accepted words, `a, b, c`.
    fn words() -> String;
    /// The value of a wire field when it is a known value other than `UNSPECIFIED`.
    fn known(value: i32) -> Option<Self>;
}

/// Serializes a wire enum field (an `i32`) as its word, for serde's `serialize_with`.
pub fn as_word<E: Vocabulary, S: serde::Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
    match E::known(*value) {
        Some(v) => s.serialize_str(v.word()),
        None => s.serialize_none(),
    }
}

macro_rules! words {
    ($ty:ident { $($variant:ident => $word:literal $(| $alias:literal)*),* $(,)? }) => {
        impl $ty {
            /// Every value but `Unspecified`, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];

            /// The word for this value (`-` when unspecified).
            pub fn word(self) -> &'static str {
                match self {
                    $ty::Unspecified => UNSPECIFIED,
                    $($ty::$variant => $word,)*
                }
            }

            /// The value a word names, ignoring case (aliases too); `None` for any other
            /// text, and for `-`.
            pub fn from_word(text: &str) -> Option<$ty> {
                let text = text.trim();
                $(
                    if text.eq_ignore_ascii_case($word) $(|| text.eq_ignore_ascii_case($alias))* {
                        return Some($ty::$variant);
                    }
                )*
                None
            }

            /// The words, for messages that list what is accepted: `a, b, c`.
            pub fn words() -> String {
                [$($word),*].join(", ")
            }
        }

        impl Vocabulary for $ty {
            fn word(self) -> &'static str {
                $ty::word(self)
            }
            fn words() -> String {
                $ty::words()
            }
            fn known(value: i32) -> Option<$ty> {
                $ty::try_from(value).ok().filter(|v| *v != $ty::Unspecified)
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.word())
            }
        }

        /// A word for scripts; unspecified (unset) is `null`, not `-`.
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self {
                    $ty::Unspecified => s.serialize_none(),
                    _ => s.serialize_str(self.word()),
                }
            }
        }
    };
}

words!(Engine {
    Postgres => "postgres" | "postgresql" | "pg",
    Mysql => "mysql" | "mariadb",
    Sqlite => "sqlite" | "sqlite3",
});

words!(MemberRole {
    Primary => "primary",
    Replica => "replica",
    Standalone => "standalone",
});

words!(JobKind {
    Backup => "backup",
    Restore => "restore",
    Stop => "stop",
});

words!(JobState {
    Waiting => "waiting",
    Pending => "pending",
    Running => "running",
    Completed => "completed",
    Failed => "failed",
});

words!(BackupKind {
    Scheduled => "scheduled",
    Manual => "manual",
    Final => "final",
    PreRestore => "pre-restore",
    Copy => "copy",
});

words!(BackupState {
    Pending => "pending",
    Running => "running",
    Completed => "completed",
    Failed => "failed",
});

words!(FailureClass {
    Dump => "dump",
    Upload => "upload",
    Fetch => "fetch",
    Provision => "provision",
    Load => "load",
    Verify => "verify",
    Abandoned => "abandoned",
    Interrupted => "interrupted",
    Refused => "refused",
    Other => "other",
});

words!(CallerRole {
    Node => "node",
    Agent => "agent",
    Operator => "operator",
    Viewer => "viewer",
    Region => "region",
});

words!(NodeRole {
    Leader => "leader",
    Follower => "follower",
    Candidate => "candidate",
    Learner => "learner",
    Unreachable => "unreachable",
    Joining => "joining",
});

words!(ServiceState {
    Ok => "ok",
    Excluded => "excluded",
    Deprovisioned => "deprovisioned",
    NoPrimary => "no-primary",
    Overdue => "overdue",
    Failing => "failing",
});

words!(ServiceAction {
    Exclude => "exclude",
    Include => "include",
    Deprovision => "deprovision",
});

words!(RefusalCode {
    Invalid => "invalid",
    NotFound => "not-found",
    Exists => "exists",
    Conflict => "conflict",
    NotYours => "not-yours",
    Limit => "limit",
    Time => "time",
    Storage => "storage",
});

words!(HostLiveness {
    Connected => "connected",
    Away => "away",
    Silent => "silent",
});

words!(RestoreOutcome {
    Verified => "verified",
    RestoredWithErrors => "restored_with_errors",
    Failed => "failed",
});

impl RestoreOutcome {
    /// What a finished restore job came to, from its state and its agent's result: `None`
    /// while it runs. A completed job without a result (an agent that reported none) counts
    /// as verified; a failed one that delivered a server with errors, as restored with errors.
    pub fn of_job(
        state: JobState,
        result: Option<&crate::v1::RestoreResult>,
    ) -> Option<RestoreOutcome> {
        // The agent's outcome; from an older agent without one, its verification's verdict.
        let reported = result.and_then(|r| match r.outcome() {
            RestoreOutcome::Unspecified => r.verification.as_ref().map(|v| {
                if v.ok {
                    RestoreOutcome::Verified
                } else {
                    RestoreOutcome::RestoredWithErrors
                }
            }),
            outcome => Some(outcome),
        });
        match state {
            JobState::Completed => Some(reported.unwrap_or(RestoreOutcome::Verified)),
            JobState::Failed => Some(
                reported
                    .filter(|o| *o != RestoreOutcome::Verified)
                    .unwrap_or(RestoreOutcome::Failed),
            ),
            _ => None,
        }
    }
}

impl JobState {
    /// Completed or failed: nothing changes it any more.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Completed | JobState::Failed)
    }
}

impl BackupState {
    /// Completed or failed: nothing changes it any more.
    pub fn is_final(self) -> bool {
        matches!(self, BackupState::Completed | BackupState::Failed)
    }
}

impl MemberRole {
    /// Takes writes: the member backups come from (a primary, or a standalone server).
    pub fn takes_writes(self) -> bool {
        matches!(self, MemberRole::Primary | MemberRole::Standalone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back_as_its_value_and_unspecified_has_none() {
        fn check<T: Copy + PartialEq + std::fmt::Debug>(
            all: &[T],
            word: fn(T) -> &'static str,
            from: fn(&str) -> Option<T>,
        ) {
            for &v in all {
                assert_eq!(from(word(v)), Some(v), "{v:?}");
                assert_eq!(from(&word(v).to_uppercase()), Some(v), "{v:?}");
            }
            assert_eq!(from(UNSPECIFIED), None);
            assert_eq!(from(""), None);
        }
        check(Engine::ALL, Engine::word, Engine::from_word);
        check(
            HostLiveness::ALL,
            HostLiveness::word,
            HostLiveness::from_word,
        );
        check(MemberRole::ALL, MemberRole::word, MemberRole::from_word);
        check(JobKind::ALL, JobKind::word, JobKind::from_word);
        check(JobState::ALL, JobState::word, JobState::from_word);
        check(BackupKind::ALL, BackupKind::word, BackupKind::from_word);
        check(BackupState::ALL, BackupState::word, BackupState::from_word);
        check(
            FailureClass::ALL,
            FailureClass::word,
            FailureClass::from_word,
        );
        check(CallerRole::ALL, CallerRole::word, CallerRole::from_word);
        check(NodeRole::ALL, NodeRole::word, NodeRole::from_word);
        check(
            ServiceState::ALL,
            ServiceState::word,
            ServiceState::from_word,
        );
        check(
            ServiceAction::ALL,
            ServiceAction::word,
            ServiceAction::from_word,
        );
        check(RefusalCode::ALL, RefusalCode::word, RefusalCode::from_word);
        check(
            RestoreOutcome::ALL,
            RestoreOutcome::word,
            RestoreOutcome::from_word,
        );
        assert_eq!(Engine::from_word("MariaDB"), Some(Engine::Mysql));
        assert_eq!(<Engine as Vocabulary>::known(99), None);
    }

    #[test]
    fn restore_outcomes_come_from_the_state_and_the_result() {
        use crate::v1::{RestoreResult, Verification};
        let said = |outcome: RestoreOutcome| RestoreResult {
            outcome: outcome.into(),
            ..Default::default()
        };
        let of = RestoreOutcome::of_job;
        let verified = said(RestoreOutcome::Verified);
        let with_errors = said(RestoreOutcome::RestoredWithErrors);
        assert_eq!(
            of(JobState::Completed, Some(&verified)),
            Some(RestoreOutcome::Verified)
        );
        assert_eq!(
            of(JobState::Failed, Some(&with_errors)),
            Some(RestoreOutcome::RestoredWithErrors)
        );
        assert_eq!(of(JobState::Failed, None), Some(RestoreOutcome::Failed));
        // A failed job that claims verified delivered nothing usable.
        assert_eq!(
            of(JobState::Failed, Some(&verified)),
            Some(RestoreOutcome::Failed)
        );
        assert_eq!(of(JobState::Running, None), None);
        // No outcome (an older agent): its verification decides.
        let unverified = RestoreResult {
            verification: Some(Verification::default()),
            ..Default::default()
        };
        assert_eq!(
            of(JobState::Failed, Some(&unverified)),
            Some(RestoreOutcome::RestoredWithErrors)
        );
    }
}
