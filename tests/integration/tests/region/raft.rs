//! The coordinator cluster with real processes on 127.0.0.x: elections, replication of catalog
//! writes, linearizable reads through every node, kill -9 of the leader, catch-up by log and by
//! snapshot, and membership changes.

use std::future::Future;
use std::time::{Duration, Instant};

use strongbox_core::pki::Role;
use strongbox_core::tls::{install_crypto_provider, TlsFiles};
use strongbox_integration::cluster::{http_get, Cluster, ClusterOptions};
use strongbox_proto::v1::agent_service_client::AgentServiceClient;
use strongbox_proto::v1::operator_service_client::OperatorServiceClient;
use strongbox_proto::v1::{
    AddNodeRequest, ClusterStatusRequest, ClusterStatusResponse, ListHostsRequest, Member,
    PageRequest, RegisterRequest, RemoveNodeRequest,
};
use strongbox_proto::v1::{Engine, MemberRole};

const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `f` until it gives `Some`, or fails the test at the deadline with `what`.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status(c: &Cluster, id: u64, tls: &TlsFiles) -> Option<ClusterStatusResponse> {
    let mut client = OperatorServiceClient::new(c.channel(id, tls).ok()?);
    client
        .cluster_status(ClusterStatusRequest {})
        .await
        .ok()
        .map(|r| r.into_inner())
}

/// The leader that every node in `ids` agrees on.
async fn agreed_leader(c: &Cluster, ids: &[u64], tls: &TlsFiles) -> u64 {
    eventually("a leader all nodes agree on", || async {
        let mut leader = None;
        for id in ids {
            let st = status(c, *id, tls).await?;
            if st.leader_id == 0 || leader.is_some_and(|l| l != st.leader_id) {
                return None;
            }
            leader = Some(st.leader_id);
        }
        leader.filter(|l| ids.contains(l))
    })
    .await
}

async fn register(c: &Cluster, via: u64, host: &str) -> Result<(), tonic::Status> {
    let tls = c.pki.issue(Role::Agent, host, &[]).expect("agent cert");
    let mut client = AgentServiceClient::new(c.channel(via, &tls).expect("channel"));
    client
        .register(RegisterRequest {
            host: host.into(),
            region: c.options.region.clone(),
            spare: false,
            agent_version: "test".into(),
            members: vec![Member {
                service: format!("{host}-pg"),
                engine: Engine::Postgres.into(),
                role: MemberRole::Primary.into(),
                healthy: true,
                engine_version: "15".into(),
            }],
        })
        .await
        .map(|_| ())
}

/// Every host's name, through node `via`, page by page.
async fn hosts(c: &Cluster, via: u64, tls: &TlsFiles) -> Result<Vec<String>, tonic::Status> {
    let mut client = OperatorServiceClient::new(c.channel(via, tls).expect("channel"));
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let r = client
            .list_hosts(ListHostsRequest {
                page: Some(PageRequest {
                    limit: 1000,
                    token: token.clone(),
                }),
            })
            .await?
            .into_inner();
        names.extend(r.hosts.into_iter().map(|h| h.name));
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    names.sort();
    Ok(names)
}

fn expected(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_and_every_node_reads_every_write() {
    install_crypto_provider();
    let c = Cluster::start(3, ClusterOptions::default()).expect("cluster");
    let viewer = c.pki.issue(Role::Viewer, "grafana", &[]).unwrap();
    let leader = agreed_leader(&c, &[1, 2, 3], &viewer).await;

    // A write through each node (followers forward to the leader) is read back, linearizably,
    // through every node right after it is acknowledged.
    let mut written = Vec::new();
    for via in [1, 2, 3] {
        let host = format!("db-{via}");
        register(&c, via, &host).await.expect("register");
        written.push(host);
        for reader in [1, 2, 3] {
            let want: Vec<&str> = written.iter().map(String::as_str).collect();
            assert_eq!(
                hosts(&c, reader, &viewer).await.unwrap(),
                expected(&want),
                "read through node {reader}"
            );
        }
    }
    let st = status(&c, leader, &viewer).await.unwrap();
    assert_eq!(st.nodes.iter().filter(|n| n.voter).count(), 3, "{st:?}");

    // The HTTP listener tells a load balancer and Prometheus the same story.
    let (code, body) = http_get(c.node(leader).http_addr, "/healthz").unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, metrics) = http_get(c.node(leader).http_addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    for line in [
        "strongbox_raft_is_leader 1",
        &format!("strongbox_raft_leader_id {leader}"),
        "strongbox_raft_voters 3",
        "strongbox_catalog_hosts 3",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in:\n{metrics}"
        );
    }
    let follower = [1, 2, 3].into_iter().find(|i| *i != leader).unwrap();
    let (_, metrics) = http_get(c.node(follower).http_addr, "/metrics").unwrap();
    assert!(
        metrics.lines().any(|l| l == "strongbox_raft_is_leader 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_another_and_loses_nothing() {
    install_crypto_provider();
    let mut c = Cluster::start(3, ClusterOptions::default()).expect("cluster");
    let viewer = c.pki.issue(Role::Viewer, "grafana", &[]).unwrap();
    let leader = agreed_leader(&c, &[1, 2, 3], &viewer).await;
    // Every node a voter before the fault (the cluster formed fully).
    eventually("three voters", || async {
        status(&c, leader, &viewer)
            .await
            .filter(|s| s.nodes.iter().filter(|n| n.voter).count() == 3)
    })
    .await;
    register(&c, leader, "before-1").await.unwrap();
    register(&c, leader, "before-2").await.unwrap();

    c.kill(leader).unwrap();
    let killed_at = Instant::now();
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
    let new_leader = agreed_leader(&c, &rest, &viewer).await;
    eprintln!("new leader {new_leader} after {:?}", killed_at.elapsed());
    assert_ne!(new_leader, leader);
    assert_eq!(
        hosts(&c, rest[0], &viewer).await.unwrap(),
        expected(&["before-1", "before-2"])
    );
    register(&c, rest[1], "after")
        .await
        .expect("writes go on with one node down");

    c.start_node(leader).unwrap();
    let want = expected(&["after", "before-1", "before-2"]);
    eventually("the restarted node to catch up", || async {
        hosts(&c, leader, &viewer).await.ok().filter(|h| *h == want)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_a_compacted_log_catches_up_by_snapshot() {
    install_crypto_provider();
    let options = ClusterOptions {
        compact_after: 20,
        ..ClusterOptions::default()
    };
    let mut c = Cluster::start(3, options).expect("cluster");
    let viewer = c.pki.issue(Role::Viewer, "grafana", &[]).unwrap();
    let leader = agreed_leader(&c, &[1, 2, 3], &viewer).await;
    eventually("three voters", || async {
        status(&c, leader, &viewer)
            .await
            .filter(|s| s.nodes.iter().filter(|n| n.voter).count() == 3)
    })
    .await;
    let follower = [1, 2, 3].into_iter().find(|i| *i != leader).unwrap();
    c.kill(follower).unwrap();
    let mut want = Vec::new();
    for i in 0..60 {
        let host = format!("host-{i:03}");
        register(&c, leader, &host).await.unwrap();
        want.push(host);
    }
    want.sort();
    c.start_node(follower).unwrap();
    eventually("the lagging node to catch up", || async {
        hosts(&c, follower, &viewer)
            .await
            .ok()
            .filter(|h| *h == want)
    })
    .await;
    assert!(
        c.node(follower)
            .log_text()
            .contains("installing a snapshot"),
        "the follower should have caught up by snapshot; its log:\n{}",
        c.node(follower).log_text()
    );
    assert!(c.node(leader).log_text().contains("compacted the Raft log"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_and_leave_a_running_cluster() {
    install_crypto_provider();
    let mut c = Cluster::start(3, ClusterOptions::default()).expect("cluster");
    let viewer = c.pki.issue(Role::Viewer, "grafana", &[]).unwrap();
    let operator = c.pki.issue(Role::Operator, "alice", &[]).unwrap();
    agreed_leader(&c, &[1, 2, 3], &viewer).await;
    register(&c, 1, "early").await.unwrap();

    for id in [4, 5] {
        let addr = c.spawn_new_node(id).unwrap();
        let mut op = OperatorServiceClient::new(c.channel(2, &operator).unwrap());
        op.add_node(AddNodeRequest {
            id,
            address: addr.to_string(),
            name: format!("node-{id}"),
        })
        .await
        .expect("add node");
    }
    let voters = |s: &ClusterStatusResponse| {
        let mut v: Vec<u64> = s.nodes.iter().filter(|n| n.voter).map(|n| n.id).collect();
        v.sort();
        v
    };
    eventually("five voters", || async {
        let leader = agreed_leader(&c, &[1, 2, 3, 4, 5], &viewer).await;
        status(&c, leader, &viewer)
            .await
            .filter(|s| voters(s) == vec![1, 2, 3, 4, 5])
    })
    .await;
    assert_eq!(
        hosts(&c, 5, &viewer).await.unwrap(),
        expected(&["early"]),
        "the new node has the catalog"
    );

    let leader = agreed_leader(&c, &[1, 2, 3, 4, 5], &viewer).await;
    let victim = [2, 3, 4, 5].into_iter().find(|i| *i != leader).unwrap();
    let mut op = OperatorServiceClient::new(c.channel(leader, &operator).unwrap());
    op.remove_node(RemoveNodeRequest { id: victim })
        .await
        .expect("remove node");
    let remaining: Vec<u64> = [1, 2, 3, 4, 5]
        .into_iter()
        .filter(|i| *i != victim)
        .collect();
    eventually("four voters", || async {
        let leader = agreed_leader(&c, &remaining, &viewer).await;
        status(&c, leader, &viewer)
            .await
            .filter(|s| voters(s) == remaining)
    })
    .await;
    c.stop_node(victim).unwrap();
    register(&c, remaining[0], "late")
        .await
        .expect("the cluster keeps serving");
    assert_eq!(
        hosts(&c, remaining[3], &viewer).await.unwrap(),
        expected(&["early", "late"])
    );
}

/// Issue 14, fault 2: SIGTERM stops a node within a few seconds even with agent sessions
/// open (they are told to go to another node), and a restart right after finds its files
/// free and rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_node_with_agent_sessions_at_once_and_it_restarts() {
    use std::os::unix::process::ExitStatusExt;
    install_crypto_provider();
    let mut c = Cluster::start(3, ClusterOptions::default()).expect("cluster");
    let viewer = c.pki.issue(Role::Viewer, "grafana", &[]).unwrap();
    agreed_leader(&c, &[1, 2, 3], &viewer).await;
    eventually("three voters", || async {
        status(&c, 1, &viewer)
            .await
            .filter(|s| s.nodes.iter().filter(|n| n.voter).count() == 3)
    })
    .await;
    // Two agents hold sessions on node 1.
    let mut sessions = Vec::new();
    for host in ["db-1", "db-2"] {
        register(&c, 1, host).await.unwrap();
        let tls = c.pki.issue(Role::Agent, host, &[]).unwrap();
        let mut ag = AgentServiceClient::new(c.channel(1, &tls).unwrap());
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let inbound = ag
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("a session")
            .into_inner();
        sessions.push((tx, inbound));
    }

    let asked = Instant::now();
    let exit = c.stop_node(1).unwrap().expect("node 1 was running");
    let took = asked.elapsed();
    eprintln!("node 1 stopped {took:?} after SIGTERM: {exit:?}");
    assert_eq!(exit.signal(), None, "node 1 had to be killed: {exit:?}");
    assert!(exit.success(), "{exit:?}");
    assert!(
        took < Duration::from_secs(15),
        "node 1 took {took:?} to stop"
    );
    // The agents were told to go elsewhere.
    for (_tx, inbound) in &mut sessions {
        let end = inbound.message().await;
        assert!(
            matches!(&end, Err(s) if s.message().contains("stopping")) || matches!(end, Ok(None)),
            "{end:?}"
        );
    }

    c.start_node(1).unwrap();
    eventually("node 1 back, with the region's hosts", || async {
        hosts(&c, 1, &viewer)
            .await
            .ok()
            .filter(|h| *h == expected(&["db-1", "db-2"]))
    })
    .await;
}

/// The size of the snapshot file being received in `dir`'s `snapshots/`, if one is.
fn incoming_bytes(data_dir: &std::path::Path) -> Option<u64> {
    std::fs::read_dir(data_dir.join("snapshots"))
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("incoming-"))
        .and_then(|e| e.metadata().ok())
        .map(|m| m.len())
}

/// Issue 17, point 3: a new node joins by a snapshot streamed in pieces while the others keep
/// committing; `kill -9` of the joining node in the middle of the transfer leaves it able to
/// start again and catch up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_snapshot_install_restarts_clean_and_catches_up() {
    install_crypto_provider();
    let options = ClusterOptions {
        compact_after: 20,
        // Slow enough that the test sees the transfer under way.
        snapshot_send_rate: 8 * 1024,
        ..ClusterOptions::default()
    };
    let mut c = Cluster::start(3, options).expect("cluster");
    let viewer = c.pki.issue(Role::Viewer, "grafana", &[]).unwrap();
    let operator = c.pki.issue(Role::Operator, "alice", &[]).unwrap();
    let leader = agreed_leader(&c, &[1, 2, 3], &viewer).await;
    let mut want = Vec::new();
    for i in 0..300 {
        let host = format!("host-{i:03}");
        register(&c, leader, &host).await.unwrap();
        want.push(host);
    }

    let addr = c.spawn_new_node(4).unwrap();
    let mut op = OperatorServiceClient::new(c.channel(leader, &operator).unwrap());
    op.add_node(AddNodeRequest {
        id: 4,
        address: addr.to_string(),
        name: "node-4".into(),
    })
    .await
    .expect("add node 4");
    // The transfer is under way: part of the file is here.
    let data = c.data_dir(4);
    let partial = eventually("part of the snapshot on node 4", || async {
        incoming_bytes(&data).filter(|n| *n > 0)
    })
    .await;
    // The region keeps committing meanwhile.
    for i in 300..320 {
        let host = format!("host-{i:03}");
        register(&c, leader, &host)
            .await
            .expect("a commit during the transfer");
        want.push(host);
    }
    c.kill(4).unwrap();
    assert!(
        incoming_bytes(&data).is_some(),
        "killed mid-transfer ({partial} bytes in): the partial file stays"
    );

    c.start_node(4).unwrap();
    want.sort();
    let caught_up = strongbox_integration::wait::try_poll(Duration::from_secs(120), || async {
        match hosts(&c, 4, &viewer).await {
            Ok(h) if h == want => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        caught_up.is_ok(),
        "node 4 did not catch up; its log:\n{}",
        c.node(4).log_text()
    );
    let log = c.node(4).log_text();
    assert!(log.contains("snapshot fetched and prepared"), "{log}");
    assert!(log.contains("installing a snapshot"), "{log}");
    assert!(
        incoming_bytes(&data).is_none(),
        "the received file is removed once installed"
    );
}
