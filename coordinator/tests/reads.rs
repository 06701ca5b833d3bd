//! No apply step and no question a request handler asks reads a whole record kind
//! (ARCHITECTURE.md, "The catalog"; issue 17, point 1): on a catalog of a few thousand hosts,
//! services, backups and jobs, each command and each indexed question is measured in records
//! decoded (`Catalog::records_read`), and must cost what it names, not what the region holds.

mod common;
use common::{CallerRole, Sim};

use strongbox_proto::catalog::{
    command::Op, BackupRecord, BindHost, CommitBackup, CreateJob, ExpireBackups, HostSession,
    JobRecord, MemberRecord, PruneHistory, RegisterHost, Tick, UpdateJob,
};
use strongbox_proto::v1::{BackupKind, Engine, JobKind, JobState, MemberRole};

const T0: u64 = 1_800_000_000_000;
const DAY: u64 = 86_400_000;
/// Hosts with databases, services a host, backups a service, spares.
const HOSTS: usize = 600;
const SERVICES_A_HOST: usize = 3;
const BACKUPS_A_SERVICE: usize = 2;
const SPARES: usize = 20;
/// The most records one command or question may read here: a handful a record it names.
/// Every kind holds at least [`HOSTS`] records, so a scan of one is far above it.
const BOUND: u64 = 40;

fn applied(sim: &mut Sim, role: CallerRole, at: u64, op: Op) {
    let e = sim.apply_as(role, None, at, op);
    assert!(e.is_empty(), "{e}");
}

fn member(service: &str, role: MemberRole) -> MemberRecord {
    MemberRecord {
        service: service.into(),
        engine: Engine::Postgres.into(),
        role: role.into(),
        healthy: true,
        engine_version: "15".into(),
    }
}

fn register(host: &str, spare: bool, members: Vec<MemberRecord>) -> Op {
    Op::RegisterHost(RegisterHost {
        host: host.into(),
        region: "test-1".into(),
        spare,
        members,
    })
}

fn backup_job(id: &str, service: &str, host: &str, backup: &str) -> Op {
    Op::CreateJob(CreateJob {
        job: Some(JobRecord {
            id: id.into(),
            kind: JobKind::Backup.into(),
            service: service.into(),
            host: host.into(),
            backup_id: backup.into(),
            backup_kind: BackupKind::Manual.into(),
            engine: Engine::Postgres.into(),
            ..Default::default()
        }),
    })
}

fn commit(service: &str, host: &str, backup: &str, job: &str, n: usize) -> Op {
    let mut manifest = [0u8; 32];
    manifest[..8].copy_from_slice(&(n as u64).to_be_bytes());
    Op::CommitBackup(CommitBackup {
        backup: Some(BackupRecord {
            id: backup.into(),
            service: service.into(),
            host: host.into(),
            manifest_id: manifest.to_vec().into(),
            plain_bytes: 1000,
            ..Default::default()
        }),
        job_id: job.into(),
    })
}

fn services_of(h: usize) -> Vec<String> {
    (0..SERVICES_A_HOST)
        .map(|k| format!("svc-{h}-{k}"))
        .collect()
}

/// A region of [`HOSTS`] hosts with their services' backups (each by a finished job), and
/// [`SPARES`] approved spares.
fn big_region() -> Sim {
    let mut sim = Sim::new();
    let mut n = 0;
    for h in 0..HOSTS {
        let host = format!("db-{h}");
        let members = services_of(h)
            .iter()
            .map(|s| member(s, MemberRole::Primary))
            .collect();
        applied(
            &mut sim,
            CallerRole::Agent,
            T0,
            register(&host, false, members),
        );
        for s in services_of(h) {
            for b in 0..BACKUPS_A_SERVICE {
                let (job, backup) = (format!("j-{s}-{b}"), format!("b-{s}-{b}"));
                let at = T0 + (b as u64 + 1) * DAY;
                applied(
                    &mut sim,
                    CallerRole::Operator,
                    at,
                    backup_job(&job, &s, &host, &backup),
                );
                applied(
                    &mut sim,
                    CallerRole::Agent,
                    at + 1000,
                    commit(&s, &host, &backup, &job, n),
                );
                n += 1;
            }
        }
    }
    let at = T0 + 10 * DAY;
    for i in 0..SPARES {
        let host = format!("spare-{i}");
        applied(
            &mut sim,
            CallerRole::Agent,
            at,
            register(&host, true, vec![]),
        );
        applied(
            &mut sim,
            CallerRole::Operator,
            at,
            Op::BindHost(BindHost {
                host: host.clone(),
                spare: Some(true),
                ..Default::default()
            }),
        );
    }
    sim
}

/// Records read by `f`.
fn reads<T>(sim: &Sim, f: impl FnOnce() -> T) -> (u64, T) {
    let before = sim.catalog.records_read();
    let out = f();
    (sim.catalog.records_read() - before, out)
}

/// Applies `op` and returns the records it read, and its refusal (empty when applied).
fn apply_reads_any(sim: &mut Sim, role: CallerRole, at: u64, op: Op) -> (u64, String) {
    // The tick a later time needs goes first, outside the measure.
    let tick = Op::Tick(Tick {
        clocks: vec![at],
        voters: 1,
        ..Default::default()
    });
    sim.apply_as(CallerRole::Node, None, at, tick);
    let before = sim.catalog.records_read();
    let refusal = sim.apply_as(role, None, at, op);
    (sim.catalog.records_read() - before, refusal)
}

/// Applies `op` and returns the records it read (failing on a refusal).
fn apply_reads(sim: &mut Sim, role: CallerRole, at: u64, op: Op) -> u64 {
    let (r, refusal) = apply_reads_any(sim, role, at, op);
    assert!(refusal.is_empty(), "{refusal}");
    r
}

#[test]
fn commands_and_questions_read_what_they_name_not_whole_kinds() {
    let mut sim = big_region();
    let jobs = HOSTS * SERVICES_A_HOST * BACKUPS_A_SERVICE;
    let mut measured: Vec<(&str, u64)> = Vec::new();
    let at = T0 + 20 * DAY;

    // Questions the handlers ask.
    let (r, hosts) = reads(&sim, || {
        sim.catalog.hosts_of_service("svc-7-1").expect("read")
    });
    assert_eq!(hosts.len(), 1);
    measured.push(("hosts of a service (a backup's host)", r));
    let (r, spares) = reads(&sim, || sim.catalog.spares().expect("read"));
    assert_eq!(spares.len(), SPARES);
    measured.push(("spares (a restore's host)", r - SPARES as u64));
    let (r, backups) = reads(&sim, || {
        sim.catalog.service_backups("svc-9-2").expect("read")
    });
    assert_eq!(backups.len(), BACKUPS_A_SERVICE);
    measured.push(("backups of a service (retention, holds)", r));
    let (r, _) = reads(&sim, || {
        sim.catalog.open_jobs_of_host("db-3").expect("read")
    });
    measured.push(("open jobs of a host (a session)", r));

    // Commands, each applied as the log would.
    let r = apply_reads(
        &mut sim,
        CallerRole::Operator,
        at,
        backup_job("j-new", "svc-5-0", "db-5", "b-new"),
    );
    measured.push(("CreateJob", r));
    let running = Op::UpdateJob(UpdateJob {
        job_id: "j-new".into(),
        host: "db-5".into(),
        state: JobState::Running.into(),
        ..Default::default()
    });
    measured.push((
        "UpdateJob",
        apply_reads(&mut sim, CallerRole::Agent, at, running),
    ));
    measured.push((
        "CommitBackup",
        apply_reads(
            &mut sim,
            CallerRole::Agent,
            at + 1000,
            commit("svc-5-0", "db-5", "b-new", "j-new", usize::MAX),
        ),
    ));
    // A failover on one host: its members' roles change; the services' other hosts are read.
    let members = services_of(11)
        .iter()
        .map(|s| member(s, MemberRole::Replica))
        .collect();
    measured.push((
        "RegisterHost (a role change)",
        apply_reads(
            &mut sim,
            CallerRole::Agent,
            at,
            register("db-11", false, members),
        ),
    ));
    let session = |open: bool| {
        Op::HostSession(HostSession {
            host: "db-12".into(),
            session_id: "s-1".into(),
            open,
            node: "node-1".into(),
            grace_ms: 1000,
            node_id: 1,
            grace_begins: false,
        })
    };
    measured.push((
        "HostSession (opened)",
        apply_reads(&mut sim, CallerRole::Node, at, session(true)),
    ));
    measured.push((
        "HostSession (ended)",
        apply_reads(&mut sim, CallerRole::Node, at, session(false)),
    ));
    let expire = Op::ExpireBackups(ExpireBackups {
        service: "svc-13-0".into(),
        backup_ids: vec!["b-svc-13-0-0".into()],
    });
    // Manual backups are kept until purged: refused, after reading the service's backups.
    let (r, refusal) = apply_reads_any(&mut sim, CallerRole::Node, at, expire);
    assert!(refusal.contains("nothing to expire"), "{refusal}");
    measured.push(("ExpireBackups", r));
    // Pruning reads the jobs it forgets: here the first day's (half of them), and no other.
    let prune_at = T0 + 100 * DAY;
    let before = sim.catalog.records_read();
    applied(
        &mut sim,
        CallerRole::Node,
        prune_at,
        Op::PruneHistory(PruneHistory {
            jobs_before_unix_ms: T0 + DAY + DAY / 2,
            ..Default::default()
        }),
    );
    let pruned = (jobs / BACKUPS_A_SERVICE) as u64;
    measured.push((
        "PruneHistory (beyond what it forgets)",
        (sim.catalog.records_read() - before).saturating_sub(pruned),
    ));
    assert!(
        sim.catalog.job("j-svc-0-0-0").expect("read").is_none(),
        "a first-day job is pruned"
    );
    assert!(
        sim.catalog.job("j-svc-0-0-1").expect("read").is_some(),
        "a second-day job is kept"
    );

    for (what, r) in &measured {
        eprintln!("{what:<40} {r:>5} records");
    }
    let over: Vec<&(&str, u64)> = measured.iter().filter(|(_, r)| *r > BOUND).collect();
    assert!(
        over.is_empty(),
        "read more than {BOUND} records (a whole kind is {HOSTS} or more): {over:?}"
    );
}

/// Walks a paged list to its end with pages of `limit`, checking each page's cost; every
/// item's key, in order.
fn walk_pages<T>(
    sim: &Sim,
    limit: usize,
    page: impl Fn(Option<&[u8]>, usize) -> strongbox_coordinator::catalog::Page<T>,
    key: impl Fn(&T) -> String,
) -> Vec<String> {
    let mut after: Option<Vec<u8>> = None;
    let mut out = Vec::new();
    loop {
        let (r, p) = reads(sim, || page(after.as_deref(), limit));
        assert!(p.items.len() <= limit);
        assert!(
            r <= limit as u64,
            "a page of {limit} read {r} records: a page costs its size"
        );
        out.extend(p.items.iter().map(&key));
        match p.next {
            Some(next) => {
                assert_eq!(p.items.len(), limit, "only a full page has a next");
                after = Some(next);
            }
            None => return out,
        }
    }
}

/// Issue 17, point 4: every list pages, by name or newest first; a page reads its size, the
/// pages together give every record once, in order; a token of another list is refused.
#[test]
fn every_list_pages_in_order_each_page_costing_its_size() {
    let sim = big_region();
    let c = &sim.catalog;

    let hosts = walk_pages(
        &sim,
        70,
        |a, l| c.hosts_page(a, l).unwrap(),
        |h| h.name.clone(),
    );
    assert_eq!(hosts.len(), HOSTS + SPARES);
    assert!(hosts.windows(2).all(|w| w[0] < w[1]), "by name");

    let services = walk_pages(
        &sim,
        100,
        |a, l| c.services_page(a, l).unwrap(),
        |s| s.name.clone(),
    );
    assert_eq!(services.len(), HOSTS * SERVICES_A_HOST);
    assert!(services.windows(2).all(|w| w[0] < w[1]), "by name");

    // Backups newest first, of the region and of one service.
    let all = walk_pages(
        &sim,
        333,
        |a, l| c.backups_page("", a, l).unwrap(),
        |b| format!("{:020}/{}", b.created_unix_ms, b.id),
    );
    assert_eq!(all.len(), HOSTS * SERVICES_A_HOST * BACKUPS_A_SERVICE);
    assert!(all.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let mine = walk_pages(
        &sim,
        1,
        |a, l| c.backups_page("svc-4-2", a, l).unwrap(),
        |b| b.id.clone(),
    );
    assert_eq!(mine, ["b-svc-4-2-1", "b-svc-4-2-0"]);

    // Jobs newest first: of a kind, of a kind and a service.
    let jobs = walk_pages(
        &sim,
        500,
        |a, l| c.jobs_page(JobKind::Backup, "", a, l).unwrap(),
        |j| format!("{:020}/{}", j.created_unix_ms, j.id),
    );
    assert_eq!(jobs.len(), HOSTS * SERVICES_A_HOST * BACKUPS_A_SERVICE);
    assert!(jobs.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let restores = walk_pages(
        &sim,
        10,
        |a, l| c.jobs_page(JobKind::Restore, "", a, l).unwrap(),
        |j| j.id.clone(),
    );
    assert!(restores.is_empty());
    let of_one = walk_pages(
        &sim,
        10,
        |a, l| c.jobs_page(JobKind::Backup, "svc-8-1", a, l).unwrap(),
        |j| j.id.clone(),
    );
    assert_eq!(of_one, ["j-svc-8-1-1", "j-svc-8-1-0"]);

    // The audit log, newest first.
    let audit = walk_pages(
        &sim,
        250,
        |a, l| c.audit_page(a, l).unwrap(),
        |e| format!("{:020}", e.index),
    );
    assert!(!audit.is_empty());
    assert!(audit.windows(2).all(|w| w[0] > w[1]), "newest first");

    // A token of another list, or of another filter, is refused.
    let hosts_token = c.hosts_page(None, 5).unwrap().next.expect("more hosts");
    let e = c.services_page(Some(&hosts_token), 5).unwrap_err();
    assert!(e.to_string().contains("page token"), "{e}");
    let token = c
        .backups_page("svc-4-2", None, 1)
        .unwrap()
        .next
        .expect("more");
    assert!(c.backups_page("svc-4-1", Some(&token), 1).is_err());
}
