//! Idle agent sessions on a real 3-node region (issue 17): thousands of simulated agents in
//! this one process, each with its own certificate and TLS connection, registered with a
//! service and holding a session that sends a heartbeat every 10 s as the agent does. What a
//! node's CPU costs while they idle is read from `/proc/<pid>/stat`.

use std::time::{Duration, Instant};

use strongbox_core::pki::Role;
use strongbox_integration::cluster::Cluster;
use strongbox_integration::raw_agent::{member, register};
use strongbox_proto::v1::agent_service_client::AgentServiceClient;
use strongbox_proto::v1::{agent_message, AgentMessage, Heartbeat, MemberRole};
use tokio::sync::mpsc;

/// How often a simulated agent sends its heartbeat (as `agent/src/session.rs` does).
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// CPU time (user and system) process `pid` used so far.
pub fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: fields count from after its closing parenthesis.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // After ")": state(0) ppid(1) ... utime(11) stime(12).
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// The share of one core each node used over `window`: (node id, share).
pub async fn idle_share(c: &Cluster, ids: &[u64], window: Duration) -> Vec<(u64, f64)> {
    let pids: Vec<(u64, u32)> = ids
        .iter()
        .filter_map(|id| c.node(*id).pid().map(|p| (*id, p)))
        .collect();
    let before: Vec<Duration> = pids.iter().map(|(_, p)| cpu_of(*p)).collect();
    let t = Instant::now();
    tokio::time::sleep(window).await;
    let wall = t.elapsed().as_secs_f64();
    pids.iter()
        .zip(before)
        .map(|((id, pid), b)| (*id, (cpu_of(*pid) - b).as_secs_f64() / wall))
        .collect()
}

/// Opens `n` agent sessions, spread over the nodes `ids`, each host registered with one
/// service; each sends a heartbeat every [`HEARTBEAT`] for as long as this process runs (or
/// its node ends it). Returns once every session is open (its first heartbeat sent).
pub async fn open_sessions(c: &Cluster, ids: &[u64], n: usize) {
    for i in 0..n {
        let host = format!("sim-{i:05}");
        let tls = c
            .pki
            .issue(Role::Agent, &host, &[])
            .expect("agent certificate");
        let node = ids[i % ids.len()];
        let channel = c.channel(node, &tls).expect("channel");
        let mut client = AgentServiceClient::new(channel);
        let members = vec![member(&format!("svc-{i:05}"), MemberRole::Primary)];
        client
            .register(register(&host, &c.options.region, false, members.clone()))
            .await
            .expect("register");
        let (tx, rx) = mpsc::channel::<AgentMessage>(4);
        let heartbeat = move || AgentMessage {
            body: Some(agent_message::Body::Heartbeat(Heartbeat {
                members: members.clone(),
                unix_ms: strongbox_core::clock::now_ms(),
            })),
        };
        tx.send(heartbeat()).await.expect("first heartbeat");
        let mut inbound = client
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("session")
            .into_inner();
        let beat = tx;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            tick.tick().await;
            loop {
                tokio::select! {
                    m = inbound.message() => if !matches!(m, Ok(Some(_))) { return },
                    _ = tick.tick() => if beat.send(heartbeat()).await.is_err() { return },
                }
            }
        });
    }
}

/// How many hosts node `via` shows connected (`host list`, page by page).
pub async fn connected(c: &Cluster, via: u64, viewer: &strongbox_core::tls::TlsFiles) -> usize {
    use strongbox_proto::v1::operator_service_client::OperatorServiceClient;
    use strongbox_proto::v1::{HostLiveness, ListHostsRequest, PageRequest};
    let mut client = OperatorServiceClient::new(c.channel(via, viewer).expect("channel"));
    let (mut n, mut token) = (0, String::new());
    loop {
        let Ok(r) = client
            .list_hosts(ListHostsRequest {
                page: Some(PageRequest {
                    limit: 1000,
                    token: token.clone(),
                }),
            })
            .await
        else {
            return n;
        };
        let r = r.into_inner();
        n += r
            .hosts
            .iter()
            .filter(|h| h.liveness() == HostLiveness::Connected && h.session_node != 0)
            .count();
        if r.next_page_token.is_empty() {
            return n;
        }
        token = r.next_page_token;
    }
}
