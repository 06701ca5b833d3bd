//! A synthetic fleet driven through the real apply path (issue 17): hosts whose agents hold
//! sessions, services with hourly backups under the default retention, the leader's clock
//! ticking, and every day of a simulated span applied as the region would apply it: the
//! scheduler's own read and plan (`Catalog::schedule_snapshot`, `policy::plan::plan`) make the
//! jobs, each backup commits, retention's verdicts (`policy::retention::evaluate`, a slice of
//! services at a time) expire, and history is pruned when `history_due` says so. The catalog's
//! clock is the simulation's; nothing runs on the wall clock.
//!
//! Used by the `fleet_scale` bench (10,000 services on 3,334 hosts, 90 days) and by a test at a
//! small scale (`benches/tests/fleet.rs`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use prost::Message;
use strongbox_coordinator::catalog::Catalog;
use strongbox_coordinator::policy::plan::plan;
use strongbox_coordinator::policy::retention::evaluate;
use strongbox_coordinator::store::Store;
use strongbox_proto::catalog::{
    command::Op, Actor, BackupRecord, Command, CommitBackup, CreateJob, ExpireBackups, HostSession,
    MemberRecord, Policy, RegisterHost, SetNode, SetPolicy, SetRegion, Tick,
};
use strongbox_proto::v1::{CallerRole, Engine, MemberRole};

pub const HOUR: u64 = 3_600_000;
pub const DAY: u64 = 24 * HOUR;
/// The simulation's first instant (2027-01-15T08:00:00Z).
pub const T0: u64 = 1_800_000_000_000;

/// The fleet's size and how it is run.
#[derive(Debug, Clone)]
pub struct Shape {
    pub hosts: usize,
    pub services_per_host: usize,
    /// The backup schedule of every service (the region default).
    pub schedule: String,
    /// Retention judges every service once in this many simulated hours.
    pub retention_every_hours: u64,
    /// Services retention judges in one pass (the worker's `SLICE`).
    pub retention_slice: usize,
}

impl Shape {
    /// The fleet: 10,002 services on 3,334 hosts, hourly backups.
    pub fn fleet_scale() -> Shape {
        Shape {
            hosts: 3_334,
            services_per_host: 3,
            schedule: "every 1h".into(),
            retention_every_hours: 6,
            retention_slice: 500,
        }
    }

    pub fn services(&self) -> usize {
        self.hosts * self.services_per_host
    }
}

/// Time spent in each part of the simulation, and what was done.
#[derive(Debug, Default, Clone)]
pub struct Spent {
    pub scheduler_passes: u64,
    pub scheduler: Duration,
    pub scheduler_max: Duration,
    pub jobs_created: u64,
    pub create: Duration,
    pub commits: u64,
    pub commit: Duration,
    pub retention_passes: u64,
    pub retention: Duration,
    pub retention_max: Duration,
    pub expired: u64,
    pub prunes: u64,
    pub prune: Duration,
}

pub struct FleetSim {
    pub catalog: Catalog,
    pub shape: Shape,
    pub now: u64,
    pub spent: Spent,
    index: u64,
    manifests: u64,
    db: Store,
}

fn member(service: String) -> MemberRecord {
    MemberRecord {
        service,
        engine: Engine::Postgres.into(),
        role: MemberRole::Primary.into(),
        healthy: true,
        engine_version: "16".into(),
    }
}

impl FleetSim {
    /// A region in `dir` whose hosts registered and hold sessions on node 1, with the region
    /// policy's schedule and no limit on concurrent backups (every service's slot is taken in
    /// its hour).
    pub fn new(dir: &Path, shape: Shape) -> FleetSim {
        let db = Store::open(dir, 64 << 20).expect("store");
        let catalog = Catalog::open(&db).expect("catalog");
        let mut sim = FleetSim {
            catalog,
            shape,
            now: T0,
            spent: Spent::default(),
            index: 0,
            manifests: 0,
            db,
        };
        sim.node(Op::SetRegion(SetRegion {
            name: "sim-1".into(),
            copies_to: vec![],
        }));
        sim.node(Op::SetNode(SetNode {
            id: 1,
            address: "127.0.0.1:7443".into(),
            name: "node-1".into(),
        }));
        sim.tick();
        let services = sim.shape.services();
        sim.apply(
            CallerRole::Operator,
            Op::SetPolicy(SetPolicy {
                service: String::new(),
                policy: Some(Policy {
                    schedule: Some(sim.shape.schedule.clone()),
                    jitter_ms: Some(0),
                    max_concurrent: Some(services as u32),
                    ..Default::default()
                }),
                reset: false,
            }),
        );
        for h in 0..sim.shape.hosts {
            let host = format!("db-{h:05}");
            let members = (0..sim.shape.services_per_host)
                .map(|k| member(format!("svc-{h:05}-{k}")))
                .collect();
            sim.apply(
                CallerRole::Agent,
                Op::RegisterHost(RegisterHost {
                    host: host.clone(),
                    region: "sim-1".into(),
                    spare: false,
                    members,
                }),
            );
            sim.node(Op::HostSession(HostSession {
                host: host.clone(),
                session_id: format!("s-{host}"),
                open: true,
                node: "node-1".into(),
                grace_ms: 30_000,
                node_id: 1,
                grace_begins: false,
            }));
        }
        sim
    }

    /// Applies `op` as an actor of `role` at the simulation's time; the refusal, if any.
    pub fn apply(&mut self, role: CallerRole, op: Op) -> String {
        self.index += 1;
        let cmd = Command {
            request_id: format!("sim-{}", self.index),
            actor: Some(Actor {
                role: role.into(),
                name: "sim".into(),
            }),
            unix_ms: self.now,
            op: Some(op),
        };
        self.catalog
            .apply(self.index, &cmd.encode_to_vec())
            .expect("apply")
            .error
    }

    fn node(&mut self, op: Op) {
        let e = self.apply(CallerRole::Node, op);
        assert!(e.is_empty(), "{e}");
    }

    /// The leader's clock ask: the agreed time moves to now, node 1 is seen.
    fn tick(&mut self) {
        let now = self.now;
        self.node(Op::Tick(Tick {
            clocks: vec![now],
            voters: 1,
            answered: vec![1],
        }));
    }

    /// One simulated hour: the clock ticks, the scheduler's pass creates the jobs due, each
    /// backup commits a minute later, retention judges its slice when due, history is pruned
    /// when due.
    pub fn hour(&mut self) {
        self.now += HOUR;
        self.tick();
        let t = Instant::now();
        let snap = self.catalog.schedule_snapshot().expect("snapshot");
        let jobs = plan(&snap, self.now);
        let took = t.elapsed();
        self.spent.scheduler_passes += 1;
        self.spent.scheduler += took;
        self.spent.scheduler_max = self.spent.scheduler_max.max(took);
        let mut created = Vec::with_capacity(jobs.len());
        let t = Instant::now();
        for mut job in jobs {
            job.backup_id = format!("bk-{}-{}", job.service, job.slot_unix_ms);
            let e = self.apply(
                CallerRole::Node,
                Op::CreateJob(CreateJob {
                    job: Some(job.clone()),
                }),
            );
            if e.is_empty() {
                created.push(job);
            }
        }
        self.spent.create += t.elapsed();
        self.spent.jobs_created += created.len() as u64;
        self.now += 60_000;
        let t = Instant::now();
        for job in created {
            self.manifests += 1;
            let mut manifest = [0u8; 32];
            manifest[..8].copy_from_slice(&self.manifests.to_be_bytes());
            let e = self.apply(
                CallerRole::Agent,
                Op::CommitBackup(CommitBackup {
                    backup: Some(BackupRecord {
                        id: job.backup_id.clone(),
                        service: job.service.clone(),
                        host: job.host.clone(),
                        manifest_id: manifest.to_vec().into(),
                        plain_bytes: 50 << 20,
                        stored_bytes: 5 << 20,
                        ..Default::default()
                    }),
                    job_id: job.id.clone(),
                }),
            );
            assert!(e.is_empty(), "commit of {}: {e}", job.id);
            self.spent.commits += 1;
        }
        self.spent.commit += t.elapsed();
        let hours = (self.now - T0) / HOUR;
        if hours.is_multiple_of(self.shape.retention_every_hours) {
            self.retention();
        }
        let t = Instant::now();
        if let Some(prune) = self
            .catalog
            .history_due(self.now, self.catalog.max_lock_days().expect("locks"))
            .expect("history")
        {
            self.node(Op::PruneHistory(prune));
            self.spent.prunes += 1;
        }
        self.spent.prune += t.elapsed();
    }

    /// Retention over every service, a slice a pass.
    fn retention(&mut self) {
        let mut after: Option<String> = None;
        loop {
            let t = Instant::now();
            let (slice, next) = self
                .catalog
                .retention_slice(after.as_deref(), self.shape.retention_slice)
                .expect("slice");
            let mut expire = Vec::new();
            for (service, backups) in slice {
                let policy = self.catalog.effective_policy(&service).expect("policy");
                let ids: Vec<String> = evaluate(&policy, &backups, self.now)
                    .into_iter()
                    .filter(|(_, v)| v.expired())
                    .map(|(id, _)| id)
                    .collect();
                if !ids.is_empty() {
                    expire.push((service, ids));
                }
            }
            let took = t.elapsed();
            self.spent.retention_passes += 1;
            self.spent.retention += took;
            self.spent.retention_max = self.spent.retention_max.max(took);
            for (service, backup_ids) in expire {
                let n = backup_ids.len() as u64;
                let e = self.apply(
                    CallerRole::Node,
                    Op::ExpireBackups(ExpireBackups {
                        service,
                        backup_ids,
                    }),
                );
                if e.is_empty() {
                    self.spent.expired += n;
                }
            }
            match next {
                Some(n) => after = Some(n),
                None => return,
            }
        }
    }

    /// Records and bytes of each kind (`Catalog::kinds`).
    pub fn counts(&self) -> BTreeMap<String, (u64, u64)> {
        self.catalog.kinds().expect("kinds")
    }

    /// Bytes the catalog's files hold on disk, after a flush.
    pub fn disk_bytes(&self, dir: &Path) -> u64 {
        self.db.flush().expect("flush");
        fn walk(p: &Path) -> u64 {
            std::fs::read_dir(p)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| match e.metadata() {
                            Ok(m) if m.is_dir() => walk(&e.path()),
                            Ok(m) => m.len(),
                            Err(_) => 0,
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        walk(dir)
    }
}
