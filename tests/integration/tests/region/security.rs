//! Who may call what on a coordinator: every RPC checks the caller's role from its certificate,
//! foreign or missing certificates fail the handshake, and malformed or oversized messages are
//! refused without harming the node.

use std::time::{Duration, Instant};

use strongbox_core::keys::FleetKey;
use strongbox_core::pki::Role;
use strongbox_core::tls::{install_crypto_provider, TlsFiles};
use strongbox_integration::cluster::{channel, http_get, Cluster, ClusterOptions, TestPki};
use strongbox_integration::raw_agent as raw;
use strongbox_proto::v1::agent_service_client::AgentServiceClient;
use strongbox_proto::v1::cluster_service_client::ClusterServiceClient;
use strongbox_proto::v1::operator_service_client::OperatorServiceClient;
use strongbox_proto::v1::Engine;
use strongbox_proto::v1::{
    agent_message, AddNodeRequest, AgentMessage, BindHostRequest, ClusterStatusRequest,
    CommitBackupRequest, CreateBackupRequest, FetchChunkRequest, ForwardProposalRequest,
    HaveChunksRequest, Heartbeat, HoldBackupRequest, JobReport, ListAuditRequest, ListHostsRequest,
    Member, PolicyInfo, RaftMessage, RegisterRequest, RemoveNodeRequest, RestoreBackupRequest,
    SetPolicyRequest, ShowBackupRequest,
};
use strongbox_proto::v1::{BackupState, JobState, MemberRole};
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
    denied(
        op.stop_restore(strongbox_proto::v1::StopRestoreRequest {
            job_id: "job-x".into(),
            keep_files: false,
        })
        .await
        .map(|_| ()),
        "viewer → StopRestore",
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
        engine: Engine::Postgres.into(),
        role: MemberRole::Primary.into(),
        healthy: true,
        engine_version: "15".into(),
    });
    assert_eq!(
        ag.register(bad).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    // Enums are validated: an unset (UNSPECIFIED) or unknown engine or role is refused.
    for (engine, role) in [
        (Engine::Unspecified as i32, MemberRole::Primary as i32),
        (Engine::Postgres as i32, MemberRole::Unspecified as i32),
        (Engine::Postgres as i32, 42),
    ] {
        let mut bad = register("db-1", "test-1");
        bad.members.push(strongbox_proto::v1::Member {
            service: "orders".into(),
            engine,
            role,
            healthy: true,
            engine_version: "15".into(),
        });
        let s = ag.register(bad).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        assert!(s.message().contains("is not one of"), "{s:?}");
    }

    assert!(
        serving(&c, 1, &viewer).await,
        "the node serves after refusing them"
    );
    ag.register(register("db-1", "test-1"))
        .await
        .expect("and still accepts good requests");
}

/// Issue 12, kind 2: what a host may do comes from an operator's binding, never from its
/// agent's word. A host that claims to be a spare gets no restore until approved; a host that
/// claims a member of another host's service gets none of its backups; a commit that offers an
/// old manifest as a new backup is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_claims_wait_for_an_operators_approval() {
    install_crypto_provider();
    let c = Cluster::start(1, ClusterOptions::default()).expect("cluster");
    let region = c.options.region.clone();
    let viewer = c.pki.issue(Role::Viewer, "grafana", &[]).unwrap();
    let operator = c.pki.issue(Role::Operator, "alice", &[]).unwrap();
    assert!(serving(&c, 1, &viewer).await);
    let agent = |name: &str| {
        let tls = c.pki.issue(Role::Agent, name, &[]).unwrap();
        AgentServiceClient::new(c.channel(1, &tls).unwrap())
    };
    let mut db1 = agent("db-1");
    let mut rogue_spare = agent("rogue-spare");
    let mut rogue_db = agent("rogue-db");
    let mut op = OperatorServiceClient::new(c.channel(1, &operator).unwrap());

    // db-1 is the first to report `orders`: bound on first use.
    db1.register(raw::register(
        "db-1",
        &region,
        false,
        vec![raw::member("orders", MemberRole::Primary)],
    ))
    .await
    .unwrap();
    // Two agents claim what they were never given.
    rogue_spare
        .register(raw::register("rogue-spare", &region, true, vec![]))
        .await
        .unwrap();
    rogue_db
        .register(raw::register(
            "rogue-db",
            &region,
            false,
            vec![raw::member("orders", MemberRole::Primary)],
        ))
        .await
        .unwrap();
    let hosts = op
        .list_hosts(ListHostsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .hosts;
    let host = |n: &str| hosts.iter().find(|h| h.name == n).unwrap().clone();
    assert!(!host("rogue-spare").spare && host("rogue-spare").spare_requested);
    assert!(host("rogue-db").members.is_empty());
    assert_eq!(host("rogue-db").pending_members.len(), 1);

    // A backup of orders goes to db-1 only; rogue-db cannot be named for it.
    let s = op
        .create_backup(CreateBackupRequest {
            service: "orders".into(),
            host: "rogue-db".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    let keys = FleetKey::from_bytes(1, [42; 32]).service_keys("orders");
    let chunks = raw::chunks(&keys, 2, 10_000);
    let j1 = c.create_backup_job(&operator, "orders").await.unwrap();
    assert_eq!(j1.host, "db-1");
    for (id, bytes, _) in &chunks {
        db1.upload_chunk(raw::upload(&j1, id, bytes)).await.unwrap();
    }
    let first = raw::commit_request(&keys, &j1, &[&chunks[0], &chunks[1]]);
    db1.commit_backup(first.clone()).await.expect("commit b1");

    // The old manifest offered as the next backup: refused, and the backup is not completed.
    let j2 = c.create_backup_job(&operator, "orders").await.unwrap();
    let replay = CommitBackupRequest {
        job_id: j2.id.clone(),
        backup_id: j2.backup_id.clone(),
        ..first.clone()
    };
    let s = db1.commit_backup(replay).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(s.message().contains("made for backup"), "{s:?}");
    let b2 = op
        .show_backup(ShowBackupRequest {
            id: j2.backup_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(b2.state(), BackupState::Completed);

    // No restore goes to the unapproved spare, by choice or by name.
    let restore = |to_host: &str| RestoreBackupRequest {
        backup_id: j1.backup_id.clone(),
        to_host: to_host.into(),
        to_region: if to_host.is_empty() {
            region.clone()
        } else {
            String::new()
        },
        ..Default::default()
    };
    let s = op.restore_backup(restore("")).await.unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    let s = op.restore_backup(restore("rogue-spare")).await.unwrap_err();
    assert!(s.message().contains("host approve rogue-spare"), "{s:?}");

    // Approved, the spare takes restores; the approval is in the audit log.
    let h = op
        .bind_host(BindHostRequest {
            host: "rogue-spare".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(h.spare && h.spare_approved, "{h:?}");
    let job = op.restore_backup(restore("")).await.unwrap().into_inner();
    assert_eq!(job.host, "rogue-spare");
    // Withdrawn, it keeps none of the restores it was given.
    op.bind_host(BindHostRequest {
        host: "rogue-spare".into(),
        revoke: true,
        spare: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let failed = c
        .wait_job(&operator, &job.id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(failed.state(), JobState::Failed);
    assert!(failed.reason.contains("no longer a spare"), "{failed:?}");
    let audit = op
        .list_audit(ListAuditRequest {
            page: Some(strongbox_proto::v1::PageRequest {
                limit: 20,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(
        audit
            .iter()
            .any(|a| a.actor == "operator:alice" && a.what.contains("bind host rogue-spare")),
        "{audit:?}"
    );
}

/// Sends `messages` on one session of `agent`, then ends it; `Err` is the status with which
/// the coordinator ended the session first.
/// A backup job of `service` for host db-1, once its agent is back: a session that ended makes
/// the host away, and an agent comes back by registering again (re-sent until the end, which
/// may be recorded after a first registration, is behind it).
async fn job_when_back(
    c: &Cluster,
    ag: &AgentServiceClient<tonic::transport::Channel>,
    members: &[Member],
    operator: &TlsFiles,
    service: &str,
) -> strongbox_proto::v1::JobInfo {
    strongbox_integration::wait::poll(
        "a backup job for the host once it is back",
        Duration::from_secs(30),
        || {
            let mut ag = ag.clone();
            let members = members.to_vec();
            async move {
                ag.register(raw::register("db-1", &c.options.region, false, members))
                    .await
                    .map_err(|e| e.to_string())?;
                c.create_backup_job(operator, service)
                    .await
                    .map_err(|e| e.to_string())
            }
        },
    )
    .await
}

async fn session_flood(
    agent: &mut AgentServiceClient<tonic::transport::Channel>,
    messages: Vec<AgentMessage>,
) -> Result<(), tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    // The sender drops its end when done, which ends the session from the agent's side.
    let sending = tokio::spawn(async move {
        for m in messages {
            if tx.send(m).await.is_err() {
                break;
            }
        }
    });
    let mut inbound = agent
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut ended = Ok(());
    while let Some(m) = inbound.message().await.transpose() {
        if let Err(s) = m {
            ended = Err(s);
            break;
        }
    }
    sending.abort();
    ended
}

fn report(job: &str, state: JobState, done: u64, total: u64) -> AgentMessage {
    AgentMessage {
        body: Some(agent_message::Body::Report(JobReport {
            job_id: job.into(),
            state: state.into(),
            bytes_done: done,
            bytes_total: total,
            ..Default::default()
        })),
    }
}

async fn commit_index(op: &mut OperatorServiceClient<tonic::transport::Channel>) -> u64 {
    let st = op
        .cluster_status(ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    st.nodes
        .iter()
        .find(|n| n.id == st.leader_id)
        .map(|n| n.commit_index)
        .unwrap_or(0)
}

/// Issue 12, kind 4: nothing is proposed before it is checked and bounded. The largest
/// registration the limits accept applies at once and a larger one is refused; a flood of
/// reports for jobs that do not exist proposes nothing and ends the session; a flood of
/// progress reports is merged; a host gets at most two sessions a node; and through all of it
/// operator commands keep committing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_and_the_largest_requests_leave_commits_flowing() {
    install_crypto_provider();
    let c = Cluster::start(3, ClusterOptions::default()).expect("cluster");
    let region = c.options.region.clone();
    let viewer = c.pki.issue(Role::Viewer, "grafana", &[]).unwrap();
    let operator = c.pki.issue(Role::Operator, "alice", &[]).unwrap();
    let agent_tls = c.pki.issue(Role::Agent, "db-1", &[]).unwrap();
    c.wait_for_leader(&viewer, 3).await.expect("a leader");
    let mut op = OperatorServiceClient::new(c.channel(1, &operator).unwrap());
    let mut ag = AgentServiceClient::new(c.channel(1, &agent_tls).unwrap());

    // The largest registration accepted: 1,000 services with 63-character names.
    let long = |i: usize| format!("s{i:04}-{}", "x".repeat(57));
    let members: Vec<Member> = (0..1_000)
        .map(|i| raw::member(&long(i), MemberRole::Primary))
        .collect();
    let started = Instant::now();
    ag.register(raw::register("db-1", &region, false, members.clone()))
        .await
        .expect("the largest registration");
    eprintln!(
        "registration of 1,000 services took {:?}",
        started.elapsed()
    );
    let mut over = members.clone();
    over.push(raw::member("one-too-many", MemberRole::Primary));
    let s = ag
        .register(raw::register("db-1", &region, false, over))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    let mut twice = members.clone();
    twice[1] = twice[0].clone();
    let s = ag
        .register(raw::register("db-1", &region, false, twice))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");

    // 20,000 reports of jobs that do not exist, and impossible byte counts: nothing is
    // proposed, and the coordinator ends the session.
    let before = commit_index(&mut op).await;
    let mut flood: Vec<AgentMessage> = (0..20_000)
        .map(|i| report(&format!("job-nosuch-{i}"), JobState::Failed, 0, 0))
        .collect();
    flood.insert(0, report("job-x", JobState::Running, u64::MAX, u64::MAX));
    let ended = session_flood(&mut ag, flood).await.unwrap_err();
    assert_eq!(ended.code(), Code::PermissionDenied, "{ended:?}");
    let after = commit_index(&mut op).await;
    assert!(
        after - before < 20,
        "a flood of refused reports grew the log from {before} to {after}"
    );

    // 5,000 progress reports of a real job, then its failure: merged into a few proposals,
    // and the last report wins.
    // The session it ended made the host away: the agent comes back as a real one does, by
    // registering again (the end may be recorded after a first registration), and is given
    // work once that is recorded.
    let job = job_when_back(&c, &ag, &members, &operator, &long(0)).await;
    let before = commit_index(&mut op).await;
    let mut progress: Vec<AgentMessage> = (1..=5_000)
        .map(|i| report(&job.id, JobState::Running, i, 5_000))
        .collect();
    progress.push(report(&job.id, JobState::Failed, 5_000, 5_000));
    // A large heartbeat (every member again) rides along; it changes nothing.
    progress.push(AgentMessage {
        body: Some(agent_message::Body::Heartbeat(Heartbeat {
            members: members.clone(),
            unix_ms: 0,
        })),
    });
    session_flood(&mut ag, progress)
        .await
        .expect("a working session");
    let failed = c
        .wait_job(&operator, &job.id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(failed.state(), JobState::Failed);
    assert_eq!(failed.bytes_done, 5_000);
    let after = commit_index(&mut op).await;
    eprintln!("5,001 reports became {} log entries", after - before);
    assert!(
        after - before < 1_000,
        "5,001 reports of one job grew the log from {before} to {after}"
    );

    // The largest chunk-presence question (65,536 ids), a flood of them, and a flood of
    // chunk reads outside any job: answered or refused, nothing proposed.
    let job = job_when_back(&c, &ag, &members, &operator, &long(1)).await;
    let before = commit_index(&mut op).await;
    let ids: Vec<bytes::Bytes> = (0..65_536u32)
        .map(|i| bytes::Bytes::copy_from_slice(blake3::hash(&i.to_le_bytes()).as_bytes()))
        .collect();
    let ask = HaveChunksRequest {
        job_id: job.id.clone(),
        ids: ids.clone(),
    };
    let missing = ag
        .have_chunks(ask.clone())
        .await
        .expect("the largest question");
    assert_eq!(missing.into_inner().missing.len(), 65_536);
    let mut over = ask.clone();
    over.ids.push(ids[0].clone());
    let s = ag.have_chunks(over).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    for _ in 0..20 {
        ag.have_chunks(ask.clone()).await.expect("asked again");
    }
    for i in 0..500 {
        let s = ag
            .fetch_chunk(FetchChunkRequest {
                job_id: format!("job-nosuch-{i}"),
                id: ids[0].clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::NotFound, "{s:?}");
    }
    // The largest binding an operator may make: 1,000 services.
    op.bind_host(BindHostRequest {
        host: "db-9".into(),
        services: (0..1_000).map(long).collect(),
        ..Default::default()
    })
    .await
    .expect("the largest binding");
    let after = commit_index(&mut op).await;
    assert!(
        after - before < 10,
        "chunk questions and refused reads grew the log from {before} to {after}"
    );

    // At most two sessions of one host on one node.
    let (_keep1, rx1) = tokio::sync::mpsc::channel::<AgentMessage>(1);
    let (_keep2, rx2) = tokio::sync::mpsc::channel::<AgentMessage>(1);
    let (_keep3, rx3) = tokio::sync::mpsc::channel::<AgentMessage>(1);
    let _s1 = ag
        .session(tokio_stream::wrappers::ReceiverStream::new(rx1))
        .await
        .expect("first session");
    let _s2 = ag
        .session(tokio_stream::wrappers::ReceiverStream::new(rx2))
        .await
        .expect("second session");
    let s = ag
        .session(tokio_stream::wrappers::ReceiverStream::new(rx3))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");

    // Operator changes still commit at once, with the largest reason a hold accepts.
    let started = Instant::now();
    let s = op
        .hold_backup(HoldBackupRequest {
            backup_id: "bk-nosuch".into(),
            held: true,
            reason: "x".repeat(4_097),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    op.set_policy(SetPolicyRequest {
        service: String::new(),
        policy: Some(PolicyInfo {
            daily: Some(9),
            ..Default::default()
        }),
        reset: false,
        yes: true,
    })
    .await
    .expect("a policy change commits");
    eprintln!(
        "a policy change after the floods took {:?}",
        started.elapsed()
    );
    assert!(serving(&c, 2, &viewer).await && serving(&c, 3, &viewer).await);
}
