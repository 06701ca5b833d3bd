//! A catalog driven directly, with a clock the test controls: every command carries its time.
//! Shared by the in-process policy tests (`retention.rs`, `scheduler.rs`).

use prost::Message;
use strongbox_coordinator::catalog::Catalog;
use strongbox_proto::catalog::{command::Op, Actor, Command};
pub use strongbox_proto::v1::CallerRole;

pub struct Sim {
    pub catalog: Catalog,
    pub index: u64,
    #[allow(dead_code)] // not every test binary that includes this module opens it again
    pub db: strongbox_coordinator::store::Store,
    #[allow(dead_code)]
    pub dir: tempfile::TempDir,
}

impl Sim {
    pub fn new() -> Sim {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = strongbox_coordinator::store::Store::open(dir.path(), 16 << 20).expect("store");
        Sim {
            catalog: Catalog::open(&db).expect("catalog"),
            index: 0,
            db,
            dir,
        }
    }

    /// Applies `op` at `at` for an actor of `role`, with `request_id` or a fresh one, as the
    /// next log entry; returns the catalog's refusal (empty when applied). The region's clocks
    /// are right here: when `at` is past the agreed time, a tick at `at` goes first.
    pub fn apply_as(
        &mut self,
        role: CallerRole,
        request_id: Option<&str>,
        at: u64,
        op: Op,
    ) -> String {
        if at > self.catalog.clock_ms().expect("clock") {
            let tick = Op::Tick(strongbox_proto::catalog::Tick {
                clocks: vec![at],
                voters: 1,
                ..Default::default()
            });
            let e = self.apply_on_wrong_clock(role, None, at, tick);
            assert!(e.is_empty(), "tick: {e}");
        }
        self.apply_on_wrong_clock(role, request_id, at, op)
    }

    /// Records coordinator node `id` (`node-<id>`, on 127.0.0.1<id>) at `at`.
    #[allow(dead_code)] // not every test binary that includes this module names nodes
    pub fn node(&mut self, at: u64, id: u64) {
        let op = Op::SetNode(strongbox_proto::catalog::SetNode {
            id,
            address: format!("127.0.0.1{id}:7443"),
            name: format!("node-{id}"),
        });
        let e = self.apply_as(CallerRole::Node, None, at, op);
        assert!(e.is_empty(), "{e}");
    }

    /// The completed backups of `service` the effective policy expires at `now`: what a
    /// retention pass proposes.
    #[allow(dead_code)] // not every test binary that includes this module runs retention
    pub fn expired_by_policy(&self, service: &str, now: u64) -> Vec<String> {
        let policy = self.catalog.effective_policy(service).expect("policy");
        let backups = self.catalog.service_backups(service).expect("backups");
        strongbox_coordinator::policy::retention::evaluate(&policy, &backups, now)
            .into_iter()
            .filter(|(_, v)| v.expired())
            .map(|(id, _)| id)
            .collect()
    }

    /// As [`Sim::apply_as`], without the tick: `at` is one node's clock, which may be wrong.
    pub fn apply_on_wrong_clock(
        &mut self,
        role: CallerRole,
        request_id: Option<&str>,
        at: u64,
        op: Op,
    ) -> String {
        self.index += 1;
        let cmd = Command {
            request_id: request_id.map_or_else(|| format!("r{}", self.index), str::to_string),
            actor: Some(Actor {
                role: role.into(),
                name: "sim".into(),
            }),
            unix_ms: at,
            op: Some(op),
        };
        self.catalog
            .apply(self.index, &cmd.encode_to_vec())
            .expect("apply")
            .error
    }
}
