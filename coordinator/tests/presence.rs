//! Whether a host's agent is there, through the real apply path (issue 17, point 2:
//! heartbeats that change nothing write nothing): a session recorded on a node, the node seen
//! by the leader's clock ask, a restarted node's sessions found through their index.

mod common;

use common::{CallerRole, Sim};
use strongbox_coordinator::policy::presence::{Presence, ALIVE_MS};
use strongbox_proto::catalog::{command::Op, HostSession, RegisterHost, Tick};

const T0: u64 = 1_800_000_000_000;

fn applied(sim: &mut Sim, at: u64, op: Op) {
    let e = sim.apply_as(CallerRole::Node, None, at, op);
    assert!(e.is_empty(), "{e}");
}

fn session(host: &str, id: &str, open: bool, node: u64) -> Op {
    Op::HostSession(HostSession {
        host: host.into(),
        session_id: id.into(),
        open,
        node: format!("node-{node}"),
        grace_ms: 1000,
        node_id: node,
        grace_begins: false,
    })
}

fn tick(at: u64, answered: &[u64]) -> Op {
    Op::Tick(Tick {
        clocks: vec![at],
        voters: 1,
        answered: answered.to_vec(),
    })
}

fn presence(sim: &Sim, host: &str, at: u64) -> Presence {
    let h = sim.catalog.host(host).expect("read").expect("host");
    let mut p = sim.catalog.presences().expect("presences");
    p.slack_ms = 0;
    p.of(&h, at)
}

#[test]
fn a_session_on_a_node_the_leader_sees_keeps_its_host_connected_without_writes() {
    let mut sim = Sim::new();
    for id in [1, 2] {
        sim.node(T0, id);
    }
    for host in ["db-1", "db-2"] {
        applied(
            &mut sim,
            T0,
            Op::RegisterHost(RegisterHost {
                host: host.into(),
                region: "test-1".into(),
                ..Default::default()
            }),
        );
    }
    applied(&mut sim, T0, session("db-1", "s-1", true, 1));
    applied(&mut sim, T0, session("db-2", "s-2", true, 2));

    // An hour on, with no write of either host: only the leader's ticks, which saw node 1
    // (and a node 9 that is not in the region, which is not recorded).
    let mut at = T0;
    for _ in 0..60 {
        at += 60_000;
        applied(&mut sim, at, tick(at, &[1, 9]));
    }
    assert_eq!(presence(&sim, "db-1", at), Presence::Connected { node: 1 });
    // Node 2 was never seen: its session does not count once the opening is old.
    assert_eq!(
        presence(&sim, "db-2", at),
        Presence::Silent { since_unix_ms: T0 }
    );
    let seen = sim.catalog.nodes_seen().expect("nodes seen");
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), [1], "{seen:?}");

    // Node 1 stops answering: three minutes later its hosts are silent since it was last seen.
    let last_seen = at;
    at += ALIVE_MS;
    assert_eq!(
        presence(&sim, "db-1", at),
        Presence::Silent {
            since_unix_ms: last_seen
        }
    );

    // A restarted node finds the sessions it recorded through their index, and only those.
    let on_1: Vec<String> = sim
        .catalog
        .hosts_of_session_node(1)
        .expect("index")
        .into_iter()
        .map(|h| h.name)
        .collect();
    assert_eq!(on_1, ["db-1"]);
    // The agent reconnects to node 2: the index follows, and the host is connected again.
    applied(&mut sim, at, session("db-1", "s-3", true, 2));
    assert!(sim.catalog.hosts_of_session_node(1).unwrap().is_empty());
    assert_eq!(sim.catalog.hosts_of_session_node(2).unwrap().len(), 2);
    assert_eq!(presence(&sim, "db-1", at), Presence::Connected { node: 2 });

    // The end of the old session is refused (a newer one opened); the end of the newest makes
    // the host away and drops it from the index.
    let e = sim.apply_as(CallerRole::Node, None, at, session("db-1", "s-1", false, 1));
    assert!(e.contains("newer session"), "{e}");
    applied(&mut sim, at + 1000, session("db-1", "s-3", false, 2));
    assert!(matches!(
        presence(&sim, "db-1", at + 1000),
        Presence::Away { .. }
    ));
    let on_2: Vec<String> = sim
        .catalog
        .hosts_of_session_node(2)
        .unwrap()
        .into_iter()
        .map(|h| h.name)
        .collect();
    assert_eq!(on_2, ["db-2"]);
}

/// The moment a session ends the host is away (no new work goes to it) while its agent has the
/// grace period to come back: a newer session makes it connected again, and the grace's end
/// for the old session then changes nothing.
#[test]
fn a_host_is_away_as_soon_as_its_session_ends_and_back_with_a_newer_one() {
    let mut sim = Sim::new();
    sim.node(T0, 1);
    applied(
        &mut sim,
        T0,
        Op::RegisterHost(RegisterHost {
            host: "db-1".into(),
            region: "test-1".into(),
            ..Default::default()
        }),
    );
    applied(&mut sim, T0, session("db-1", "s-1", true, 1));
    applied(&mut sim, T0, tick(T0, &[1]));
    assert_eq!(presence(&sim, "db-1", T0), Presence::Connected { node: 1 });

    let mut ended = session("db-1", "s-1", false, 1);
    if let Op::HostSession(s) = &mut ended {
        s.grace_begins = true;
    }
    applied(&mut sim, T0 + 1000, ended.clone());
    assert_eq!(
        presence(&sim, "db-1", T0 + 1000),
        Presence::Away {
            since_unix_ms: T0 + 1000
        }
    );
    // Still the host's session: the grace's end would apply to it.
    let h = sim.catalog.host("db-1").unwrap().unwrap();
    assert_eq!(h.session_id, "s-1");

    // The agent comes back: connected again, and the old session's end is refused.
    applied(&mut sim, T0 + 5000, session("db-1", "s-2", true, 1));
    assert_eq!(
        presence(&sim, "db-1", T0 + 5000),
        Presence::Connected { node: 1 }
    );
    let e = sim.apply_as(
        CallerRole::Node,
        None,
        T0 + 31_000,
        session("db-1", "s-1", false, 1),
    );
    assert!(e.contains("newer session"), "{e}");
    let e = sim.apply_as(CallerRole::Node, None, T0 + 31_000, ended);
    assert!(e.contains("newer session"), "{e}");
    assert_eq!(
        presence(&sim, "db-1", T0 + 31_000),
        Presence::Connected { node: 1 }
    );
}
