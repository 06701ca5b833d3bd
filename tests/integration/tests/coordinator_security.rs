//! Who may call what on a coordinator: every RPC checks the caller's role from its certificate,
//! foreign or missing certificates fail the handshake, and malformed or oversized messages are
//! refused without harming the node.

use std::time::{Duration, Instant};

use strongbox_core::pki::Role;
use strongbox_core::tls::{install_crypto_provider, TlsFiles};
use strongbox_integration::cluster::{channel, http_get, Cluster, ClusterOptions, TestPki};
use strongbox_proto::v1::agent_service_client::AgentServiceClient;
use strongbox_proto::v1::cluster_service_client::ClusterServiceClient;
use strongbox_proto::v1::operator_service_client::OperatorServiceClient;
use strongbox_proto::v1::{
    AddNodeRequest, ClusterStatusRequest, ForwardProposalRequest, RaftMessage, RegisterRequest,
    RemoveNodeRequest,
};
use tonic::Code;

async fn serving(c: &Cluster, id: u64, viewer: &TlsFiles) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let mut op = OperatorServiceClient::new(c.channel(id, viewer).unwrap());
        if let Ok(r) = op.cluster_status(ClusterStatusRequest {}).await {
            if r.into_inner().leader_id != 0 {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn register(host: &str, region: &str) -> RegisterRequest {
    RegisterRequest {
        host: host.into(),
        region: region.into(),
        spare: true,
        agent_version: "test".into(),
        members: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_checks_the_role_in_the_certificate() {
    install_crypto_provider();
    let c = Cluster::start(1, ClusterOptions::default()).expect("cluster");
    let viewer = c.pki.issue(Role::Viewer, "grafana", &[]).unwrap();
    let operator = c.pki.issue(Role::Operator, "alice", &[]).unwrap();
    let agent = c.pki.issue(Role::Agent, "db-1", &[]).unwrap();
    assert!(serving(&c, 1, &viewer).await);

    let denied = |r: Result<(), tonic::Status>, what: &str| {
        let s = r.expect_err(what);
        assert_eq!(s.code(), Code::PermissionDenied, "{what}: {s:?}");
    };

    // Agents, operators and viewers may not speak the node protocol.
    for (tls, who) in [
        (&agent, "agent"),
        (&operator, "operator"),
        (&viewer, "viewer"),
    ] {
        let mut cl = ClusterServiceClient::new(c.channel(1, tls).unwrap());
        denied(
            cl.raft(RaftMessage {
                messages: vec![],
                from: 9,
            })
            .await
            .map(|_| ()),
            &format!("{who} → Raft"),
        );
        denied(
            cl.forward_proposal(ForwardProposalRequest {
                command: Default::default(),
            })
            .await
            .map(|_| ()),
            &format!("{who} → ForwardProposal"),
        );
    }
    // Viewers read but do not change; agents do neither.
    let mut op = OperatorServiceClient::new(c.channel(1, &viewer).unwrap());
    op.cluster_status(ClusterStatusRequest {})
        .await
        .expect("viewers read");
    denied(
        op.add_node(AddNodeRequest {
            id: 7,
            address: "127.0.0.1:1".into(),
            name: "n".into(),
        })
        .await
        .map(|_| ()),
        "viewer → AddNode",
    );
    denied(
        op.remove_node(RemoveNodeRequest { id: 1 })
            .await
            .map(|_| ()),
        "viewer → RemoveNode",
    );
    let mut op = OperatorServiceClient::new(c.channel(1, &agent).unwrap());
    denied(
        op.cluster_status(ClusterStatusRequest {}).await.map(|_| ()),
        "agent → ClusterStatus",
    );
    // Operators may not act as agents, and an agent registers only its own host.
    let mut ag = AgentServiceClient::new(c.channel(1, &operator).unwrap());
    denied(
        ag.register(register("alice", "test-1")).await.map(|_| ()),
        "operator → Register",
    );
    let mut ag = AgentServiceClient::new(c.channel(1, &agent).unwrap());
    denied(
        ag.register(register("db-2", "test-1")).await.map(|_| ()),
        "agent db-1 registering db-2",
    );
    ag.register(register("db-1", "test-1"))
        .await
        .expect("an agent registers its own host");
    let wrong_region = ag
        .register(register("db-1", "elsewhere"))
        .await
        .unwrap_err();
    assert_eq!(wrong_region.code(), Code::InvalidArgument);
    assert!(
        wrong_region.message().contains("region"),
        "{}",
        wrong_region.message()
    );

    // /metrics counts every call by method and code: the 3 refused Raft calls above, the one
    // accepted registration.
    let (_, metrics) = http_get(c.node(1).http_addr, "/metrics").unwrap();
    for line in [
        r#"strongbox_rpcs_total{method="ClusterService/Raft",code="PermissionDenied"} 3"#,
        r#"strongbox_rpcs_total{method="AgentService/Register",code="Ok"} 1"#,
        r#"strongbox_rpcs_total{method="AgentService/Register",code="InvalidArgument"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_or_missing_certificates_fail_and_the_node_stays_up() {
    install_crypto_provider();
    let c = Cluster::start(1, ClusterOptions::default()).expect("cluster");
    let viewer = c.pki.issue(Role::Viewer, "grafana", &[]).unwrap();
    assert!(serving(&c, 1, &viewer).await);

    let foreign = TestPki::new().unwrap();
    let mallory = foreign.issue(Role::Node, "node-9", &[]).unwrap();
    // Mallory trusts our CA for the server, so it is the server that refuses her.
    let mallory = TlsFiles {
        ca: viewer.ca.clone(),
        ..mallory
    };
    let mut cl = ClusterServiceClient::new(channel(c.addr(1), &mallory).unwrap());
    let s = cl
        .raft(RaftMessage {
            messages: vec![],
            from: 9,
        })
        .await
        .unwrap_err();
    assert_ne!(s.code(), Code::Ok);
    assert_ne!(
        s.code(),
        Code::PermissionDenied,
        "a foreign certificate must not get past the handshake: {s:?}"
    );

    let no_cert = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(&viewer.ca).unwrap(),
        ))
        .domain_name(c.addr(1).ip().to_string());
    let ch = tonic::transport::Endpoint::from_shared(format!("https://{}", c.addr(1)))
        .unwrap()
        .tls_config(no_cert)
        .unwrap()
        .connect_lazy();
    let s = OperatorServiceClient::new(ch)
        .cluster_status(ClusterStatusRequest {})
        .await
        .unwrap_err();
    assert_ne!(
        s.code(),
        Code::PermissionDenied,
        "no certificate must not get past the handshake: {s:?}"
    );

    assert!(
        serving(&c, 1, &viewer).await,
        "the node serves after refusing them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_messages_are_refused_harmlessly() {
    install_crypto_provider();
    let c = Cluster::start(1, ClusterOptions::default()).expect("cluster");
    let viewer = c.pki.issue(Role::Viewer, "grafana", &[]).unwrap();
    let agent = c.pki.issue(Role::Agent, "db-1", &[]).unwrap();
    assert!(serving(&c, 1, &viewer).await);

    // Another node's certificate, sending garbage where Raft messages go.
    let peer = c.pki.issue(Role::Node, "node-2", &[]).unwrap();
    let mut cl = ClusterServiceClient::new(c.channel(1, &peer).unwrap());
    let s = cl
        .raft(RaftMessage {
            messages: vec![
                vec![0xff; 64].into(),
                b"\x08\x96\x01garbage".to_vec().into(),
            ],
            from: 2,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    let s = cl
        .forward_proposal(ForwardProposalRequest {
            command: vec![0xff; 10].into(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");

    // An agent message over the size limit is refused before it is decoded.
    let mut ag =
        AgentServiceClient::new(c.channel(1, &agent).unwrap()).max_encoding_message_size(64 << 20);
    let mut big = register("db-1", "test-1");
    big.agent_version = "x".repeat(strongbox_proto::MAX_MESSAGE_BYTES + 1);
    let s = ag.register(big).await.unwrap_err();
    assert!(
        matches!(s.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{s:?}"
    );
    // Names are validated.
    let mut bad = register("db-1", "test-1");
    bad.members.push(strongbox_proto::v1::Member {
        service: "../etc".into(),
        engine: "postgres".into(),
        role: "primary".into(),
        healthy: true,
        engine_version: "15".into(),
    });
    assert_eq!(
        ag.register(bad).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    assert!(
        serving(&c, 1, &viewer).await,
        "the node serves after refusing them"
    );
    ag.register(register("db-1", "test-1"))
        .await
        .expect("and still accepts good requests");
}
