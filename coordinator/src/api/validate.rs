//! Bounds on what callers send, checked before anything is proposed.
//!
//! Job: one place that says how large and how many every field of an agent's or operator's
//! request may be, so that no request can make a Raft entry, an apply step or a catalog record
//! larger than these bounds allow (issue 12, kind 4: "nothing is proposed before it is
//! validated and bounded").
//!
//! Invariants: a function here never reads the catalog and never proposes; it refuses with
//! `INVALID_ARGUMENT` naming the field, the value's size and the bound; text that is only
//! shown to people (failure reasons) is cut to its bound, never refused, so a long error of a
//! dump tool still fails its job.

use std::collections::HashSet;

use prost::Message as _;
use strongbox_proto::names::Vocabulary;
use strongbox_proto::v1::{
    Engine, FailureClass, JobReport, JobState, Member, MemberRole, PageRequest,
};
use tonic::Status;

/// Members (services) one host may report: far above any real host, low enough that one
/// registration stays a small entry.
pub const MAX_MEMBERS_PER_HOST: usize = 1_000;
/// Free-text version strings (`engine_version`, `agent_version`).
pub const MAX_VERSION_LEN: usize = 200;
/// A failure reason or hold reason kept in the catalog (longer ones are cut).
pub const MAX_REASON_LEN: usize = 4_096;
/// A restore's or stop's result (connection and verification), encoded.
pub const MAX_RESULT_LEN: usize = 1024 * 1024;
/// Largest byte count a report may carry: 1 PiB, far above any dump this tool takes.
pub const MAX_REPORTED_BYTES: u64 = 1 << 50;
fn invalid(what: String) -> Status {
    Status::invalid_argument(what)
}

/// A required enum field: a value the vocabulary knows, not `UNSPECIFIED` (an unset field).
pub fn required<E: Vocabulary>(field: &str, value: i32) -> Result<E, Status> {
    E::known(value).ok_or_else(|| {
        invalid(format!(
            "{field}: {} is not one of {}",
            if value == 0 {
                "unset".to_string()
            } else {
                format!("value {value}")
            },
            E::words()
        ))
    })
}

/// A name of a service, host, backup or job: the names certificates use (1–63 of
/// `[A-Za-z0-9._-]`, starting alphanumeric).
pub fn name(field: &str, value: &str) -> Result<(), Status> {
    strongbox_core::pki::validate_name(value).map_err(|e| invalid(format!("{field}: {e}")))
}

/// A free-text field shown to people, at most `max` bytes.
pub fn text(field: &str, value: &str, max: usize) -> Result<(), Status> {
    if value.len() > max {
        return Err(invalid(format!(
            "{field} is {} bytes, more than the {max} allowed",
            value.len()
        )));
    }
    Ok(())
}

/// One line of text an operator gives (a hold's reason, an address): at most `max` bytes,
/// and no control characters (a line break or a terminal escape would forge lines in the
/// tables and the audit log that show it).
pub fn line(field: &str, value: &str, max: usize) -> Result<(), Status> {
    text(field, value, max)?;
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(invalid(format!(
            "{field} holds the control character {:?}: give it on one line, without control \
             characters",
            c
        )));
    }
    Ok(())
}

/// Longest job id: `job-sched-<service>-<slot>-<attempt>` with a 63-character service name.
/// Items a page holds when its request names no limit, and the most it may ask for.
pub const PAGE_DEFAULT: usize = 100;
pub const PAGE_MAX: usize = 1_000;

/// A list request's page: its limit ([`PAGE_DEFAULT`] for 0; `INVALID_ARGUMENT` above
/// [`PAGE_MAX`]) and the key its token names (`None`: the first page). A token is the hex of
/// the last key the page before returned; the catalog checks that it belongs to the list.
pub fn page(page: Option<&PageRequest>) -> Result<(usize, Option<Vec<u8>>), Status> {
    let Some(p) = page else {
        return Ok((PAGE_DEFAULT, None));
    };
    let limit = match p.limit as usize {
        0 => PAGE_DEFAULT,
        n if n > PAGE_MAX => {
            return Err(Status::invalid_argument(format!(
                "a page holds at most {PAGE_MAX} items, not {n}; ask for the next pages with \
                 the token each page returns"
            )))
        }
        n => n,
    };
    if p.token.is_empty() {
        return Ok((limit, None));
    }
    if p.token.len() > 4 * MAX_JOB_ID_LEN + 256 {
        return Err(Status::invalid_argument(
            "the page token is too long to be one",
        ));
    }
    let key = hex::decode(&p.token)
        .map_err(|_| Status::invalid_argument("the page token is not one strongbox returned"))?;
    Ok((limit, Some(key)))
}

/// The token of the page after `next` (the last key a page returned): empty for none.
pub fn page_token(next: Option<Vec<u8>>) -> String {
    next.map(hex::encode).unwrap_or_default()
}

pub const MAX_JOB_ID_LEN: usize = 128;

/// A job id: 1 to [`MAX_JOB_ID_LEN`] of `[A-Za-z0-9._-]`.
pub fn job_id(value: &str) -> Result<(), Status> {
    let ok = !value.is_empty()
        && value.len() <= MAX_JOB_ID_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "job id {:?} is not 1 to {MAX_JOB_ID_LEN} of [A-Za-z0-9._-]",
            cut(value, 80)
        )))
    }
}

/// `value` cut to at most `max` bytes at a character boundary, marked when cut.
pub fn cut(value: &str, max: usize) -> String {
    if value.len() <= max {
        return value.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

/// The members a host reports (`Register`, every heartbeat): at most
/// [`MAX_MEMBERS_PER_HOST`], each service once, with known engines and roles.
pub fn members(members: &[Member]) -> Result<(), Status> {
    if members.len() > MAX_MEMBERS_PER_HOST {
        return Err(invalid(format!(
            "{} members reported; a host may carry at most {MAX_MEMBERS_PER_HOST} services",
            members.len()
        )));
    }
    let mut seen = HashSet::with_capacity(members.len());
    for m in members {
        name("service name", &m.service)?;
        if !seen.insert(m.service.as_str()) {
            return Err(invalid(format!(
                "service {:?} is reported twice; a host carries one member of a service",
                m.service
            )));
        }
        required::<Engine>(&format!("service {}: engine", m.service), m.engine)?;
        required::<MemberRole>(&format!("service {}: member role", m.service), m.role)?;
        text("engine_version", &m.engine_version, MAX_VERSION_LEN)?;
    }
    Ok(())
}

/// What a job report's fields may be, before the job itself is looked at: a state an agent
/// reports (running, completed, failed), a known failure class (none unless failed), byte
/// counts within [`MAX_REPORTED_BYTES`] with `done ≤ total` once a total is known, results
/// within [`MAX_RESULT_LEN`]. The reason is cut to [`MAX_REASON_LEN`].
pub fn report(r: &mut JobReport) -> Result<(), Status> {
    job_id(&r.job_id)?;
    let state = required::<JobState>(&format!("job {}: state", r.job_id), r.state)?;
    if !matches!(
        state,
        JobState::Running | JobState::Completed | JobState::Failed
    ) {
        return Err(invalid(format!(
            "job {}: an agent reports a job running, completed or failed, not {state}",
            r.job_id
        )));
    }
    if r.failure != 0 {
        required::<FailureClass>(&format!("job {}: failure class", r.job_id), r.failure)?;
    }
    if r.bytes_total > MAX_REPORTED_BYTES || r.bytes_done > MAX_REPORTED_BYTES {
        return Err(invalid(format!(
            "job {}: reported byte counts {}/{} exceed {MAX_REPORTED_BYTES} (1 PiB)",
            r.job_id, r.bytes_done, r.bytes_total
        )));
    }
    if r.bytes_total > 0 && r.bytes_done > r.bytes_total {
        return Err(invalid(format!(
            "job {}: {} bytes done of {} in all",
            r.job_id, r.bytes_done, r.bytes_total
        )));
    }
    let result_len = r.restore.as_ref().map_or(0, |x| x.encoded_len())
        + r.stop.as_ref().map_or(0, |x| x.encoded_len());
    if result_len > MAX_RESULT_LEN {
        return Err(invalid(format!(
            "job {}: its result is {result_len} bytes, more than the {MAX_RESULT_LEN} allowed",
            r.job_id
        )));
    }
    r.reason = cut(&r.reason, MAX_REASON_LEN);
    // A phase is a word or two ("loading shop"): cut, like a reason.
    r.phase = cut(&r.phase, 200);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(service: &str) -> Member {
        Member {
            service: service.into(),
            engine: Engine::Postgres.into(),
            role: MemberRole::Primary.into(),
            healthy: true,
            engine_version: "15".into(),
        }
    }

    #[test]
    fn members_are_bounded_unique_and_known() {
        let many: Vec<Member> = (0..=MAX_MEMBERS_PER_HOST)
            .map(|i| member(&format!("s{i}")))
            .collect();
        assert!(members(&many[..MAX_MEMBERS_PER_HOST]).is_ok());
        assert!(members(&many).is_err());
        assert!(members(&[member("a"), member("a")]).is_err());
        let mut odd = member("a");
        odd.engine = 99;
        assert!(members(&[odd]).is_err());
        let mut unset = member("a");
        unset.role = MemberRole::Unspecified.into();
        assert!(members(&[unset]).is_err());
        let mut odd = member("a");
        odd.engine_version = "x".repeat(MAX_VERSION_LEN + 1);
        assert!(members(&[odd]).is_err());
        assert!(members(&[member("-Ah2130706434")]).is_err());
    }

    #[test]
    fn an_operators_line_has_no_control_characters() {
        assert!(line("reason", "INC-42: keep for the audit", 100).is_ok());
        for bad in ["a\nb", "evil\u{1b}[2J", "x\ry", "tab\there"] {
            let e = line("reason", bad, 100).expect_err(bad);
            assert!(e.message().contains("one line"), "{}", e.message());
        }
        assert!(line("reason", &"x".repeat(101), 100).is_err());
    }

    #[test]
    fn reports_are_bounded() {
        let ok = JobReport {
            job_id: "job-1".into(),
            state: JobState::Running.into(),
            reason: String::new(),
            bytes_done: 5,
            bytes_total: 10,
            phase: "loading shop".into(),
            ..Default::default()
        };
        assert!(report(&mut ok.clone()).is_ok());
        for bad in [
            JobReport {
                bytes_done: u64::MAX,
                bytes_total: u64::MAX,
                ..ok.clone()
            },
            JobReport {
                bytes_done: 11,
                ..ok.clone()
            },
            JobReport {
                state: JobState::Waiting.into(),
                ..ok.clone()
            },
            JobReport {
                state: JobState::Unspecified.into(),
                ..ok.clone()
            },
            JobReport {
                state: 77,
                ..ok.clone()
            },
            JobReport {
                failure: 77,
                ..ok.clone()
            },
            JobReport {
                job_id: String::new(),
                ..ok.clone()
            },
            JobReport {
                restore: Some(strongbox_proto::v1::RestoreResult {
                    verification: Some(strongbox_proto::v1::Verification {
                        engine_check: "x".repeat(MAX_RESULT_LEN + 1),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..ok.clone()
            },
        ] {
            assert!(report(&mut bad.clone()).is_err(), "{bad:?}");
        }
        let mut long = JobReport {
            state: JobState::Failed.into(),
            failure: FailureClass::Dump.into(),
            reason: "é".repeat(MAX_REASON_LEN),
            ..ok
        };
        report(&mut long).unwrap();
        assert!(long.reason.len() <= MAX_REASON_LEN && long.reason.ends_with('…'));
    }
}
