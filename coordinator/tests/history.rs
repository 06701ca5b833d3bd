//! Bounded history (catalog/history.rs): request ids, finished jobs and the audit log are
//! forgotten past their windows by a `PruneHistory`, which deletes exactly what is older,
//! never cuts inside a window (nor inside the region's lock for the audit log), and reads what
//! it forgets. Driven through the real apply path with a clock the test controls.

mod common;
use common::{CallerRole, Sim};

use strongbox_coordinator::catalog::{AUDIT_KEEP_MS, JOB_KEEP_MS, MAX_PRUNED, REQUEST_KEEP_MS};
use strongbox_proto::catalog::{command::Op, Policy, PruneHistory, SetPolicy};

const T0: u64 = 1_800_000_000_000;
const DAY: u64 = 86_400_000;

/// An operator's policy change: one audit entry, one request id.
fn policy(daily: u32) -> Op {
    Op::SetPolicy(SetPolicy {
        service: String::new(),
        policy: Some(Policy {
            daily: Some(daily),
            ..Default::default()
        }),
        reset: false,
    })
}

fn lock(days: u32) -> Op {
    Op::SetPolicy(SetPolicy {
        service: String::new(),
        policy: Some(Policy {
            lock_days: Some(days),
            ..Default::default()
        }),
        reset: false,
    })
}

fn prune(p: PruneHistory) -> Op {
    Op::PruneHistory(p)
}

#[test]
fn request_ids_are_forgotten_after_their_window_and_not_before() {
    let mut sim = Sim::new();
    assert!(
        sim.catalog.history_due(T0, 0).expect("read").is_none(),
        "nothing is due in a new catalog"
    );
    // A command applied twice within the window answers its first outcome, once.
    assert!(sim
        .apply_as(CallerRole::Operator, Some("op-1"), T0, policy(5))
        .is_empty());
    assert!(sim
        .apply_as(CallerRole::Operator, Some("op-1"), T0 + DAY, policy(9))
        .is_empty());
    assert_eq!(sim.catalog.effective_policy("").expect("read").daily, 5);

    // Inside the window: refused, and nothing goes.
    let early = T0 + REQUEST_KEEP_MS - DAY;
    let e = sim.apply_as(
        CallerRole::Node,
        None,
        early,
        prune(PruneHistory {
            requests_before_unix_ms: T0 + 1,
            ..Default::default()
        }),
    );
    assert!(e.contains("7 days"), "{e}");

    // Past it: due, and pruned.
    let later = T0 + REQUEST_KEEP_MS + DAY;
    let due = sim
        .catalog
        .history_due(later, 0)
        .expect("read")
        .expect("request ids are due");
    assert!(due.requests_before_unix_ms > T0, "{due:?}");
    assert_eq!(due.jobs_before_unix_ms, 0, "no finished job: {due:?}");
    let e = sim.apply_as(CallerRole::Node, None, later, prune(due));
    assert!(e.is_empty(), "{e}");
    // The forgotten id is a new command now: it applies (the window is what idempotency
    // promises, and no client retries for a week).
    assert!(sim
        .apply_as(CallerRole::Operator, Some("op-1"), later, policy(9))
        .is_empty());
    assert_eq!(sim.catalog.effective_policy("").expect("read").daily, 9);
    // The ids recorded since are within the window: not due.
    assert!(sim
        .catalog
        .history_due(later, 0)
        .expect("read")
        .is_none_or(|p| p.requests_before_unix_ms == 0));
}

#[test]
fn the_audit_log_keeps_a_year_and_never_less_than_the_lock() {
    let mut sim = Sim::new();
    for i in 0..5u64 {
        assert!(sim
            .apply_as(
                CallerRole::Operator,
                None,
                T0 + i * DAY,
                policy(3 + i as u32)
            )
            .is_empty());
    }
    let times = |sim: &Sim| -> Vec<u64> {
        sim.catalog
            .audit()
            .expect("read")
            .iter()
            .map(|a| a.unix_ms)
            .collect()
    };
    let all = times(&sim);
    assert!(all.len() >= 5, "{all:?}");

    // A year and two days on: the first two days' entries go, the rest stay.
    let later = T0 + AUDIT_KEEP_MS + 2 * DAY;
    let due = sim
        .catalog
        .history_due(later, 0)
        .expect("read")
        .expect("the audit log is due");
    let cutoff = later - AUDIT_KEEP_MS;
    assert_eq!(due.audit_before_unix_ms, cutoff);
    let before_reads = sim.catalog.records_read();
    assert!(sim
        .apply_as(CallerRole::Node, None, later, prune(due))
        .is_empty());
    assert!(
        sim.catalog.records_read() - before_reads < 20,
        "a prune reads what it forgets, not the log"
    );
    let kept: Vec<u64> = all.iter().copied().filter(|t| *t >= cutoff).collect();
    assert_eq!(
        times(&sim),
        kept,
        "exactly the entries older than the cutoff went"
    );
    assert!(kept.len() < all.len() && !kept.is_empty());

    // A lock longer than a year keeps the audit log as long: a prune inside it is refused.
    let mut sim = Sim::new();
    assert!(sim
        .apply_as(CallerRole::Operator, None, T0, lock(500))
        .is_empty());
    let entries = sim.catalog.audit().expect("read").len();
    let later = T0 + AUDIT_KEEP_MS + 10 * DAY;
    assert!(
        sim.catalog
            .history_due(later, 500)
            .expect("read")
            .is_none_or(|p| p.audit_before_unix_ms == 0),
        "no audit entry is due inside the lock"
    );
    let e = sim.apply_as(
        CallerRole::Node,
        None,
        later,
        prune(PruneHistory {
            audit_before_unix_ms: T0 + 1,
            ..Default::default()
        }),
    );
    assert!(e.contains("lock_days"), "{e}");
    assert_eq!(
        sim.catalog.audit().expect("read").len(),
        entries,
        "nothing went"
    );
}

#[test]
fn no_prune_cuts_inside_a_window() {
    let mut sim = Sim::new();
    let now = T0 + 1000 * DAY;
    for (p, what) in [
        (
            PruneHistory {
                jobs_before_unix_ms: now - JOB_KEEP_MS + 1,
                ..Default::default()
            },
            "90 days",
        ),
        (
            PruneHistory {
                requests_before_unix_ms: now - REQUEST_KEEP_MS + 1,
                ..Default::default()
            },
            "7 days",
        ),
        (
            PruneHistory {
                audit_before_unix_ms: now - AUDIT_KEEP_MS + 1,
                ..Default::default()
            },
            "a year",
        ),
    ] {
        let e = sim.apply_as(CallerRole::Node, None, now, prune(p));
        assert!(e.contains(what), "{what}: {e}");
    }
}

#[test]
fn a_backlog_is_pruned_over_several_passes_each_bounded() {
    let mut sim = Sim::new();
    let n = MAX_PRUNED + 50;
    for i in 0..n {
        // Each command records its request id (`r<index>`).
        let e = sim.apply_as(CallerRole::Node, Some(&format!("req-{i}")), T0, policy(3));
        assert!(e.is_empty() || e.contains("nothing"), "{e}");
    }
    let later = T0 + REQUEST_KEEP_MS + DAY;
    let first = sim
        .catalog
        .history_due(later, 0)
        .expect("read")
        .expect("due");
    let out = sim.apply_as(CallerRole::Node, None, later, prune(first));
    assert!(out.is_empty(), "{out}");
    // The first pass took its bound; the rest is still due, and the next pass takes it.
    let again = sim
        .catalog
        .history_due(later, 0)
        .expect("read")
        .expect("the rest is due");
    assert!(again.requests_before_unix_ms != 0);
    assert!(sim
        .apply_as(CallerRole::Node, None, later, prune(again))
        .is_empty());
    assert!(sim
        .catalog
        .history_due(later, 0)
        .expect("read")
        .is_none_or(|p| p.requests_before_unix_ms == 0));
    // A pruned id is a new command again.
    assert!(sim
        .apply_as(CallerRole::Operator, Some("req-0"), later, policy(11))
        .is_empty());
    assert_eq!(sim.catalog.effective_policy("").expect("read").daily, 11);
}
