//! Starting a node: storage, the Raft loop, the transport and the gRPC services, and stopping
//! it cleanly on SIGINT/SIGTERM.
//!
//! Invariants: every gRPC port requires mutual TLS; message sizes are limited explicitly; if
//! the Raft loop stops (e.g. storage fails), the process exits with an error rather than serve
//! stale state.

use std::sync::Arc;

use strongbox_proto::catalog::NodeRecord;
use strongbox_proto::v1::agent_service_server::AgentServiceServer;
use strongbox_proto::v1::cluster_service_server::ClusterServiceServer;
use strongbox_proto::v1::operator_service_server::OperatorServiceServer;
use strongbox_proto::{MAX_CLUSTER_MESSAGE_BYTES, MAX_MESSAGE_BYTES};
use tonic::transport::Server;

use crate::api::agent::AgentApi;
use crate::api::cluster::ClusterApi;
use crate::api::operator::OperatorApi;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::node::NodeContext;
use crate::raft::node::{self, RaftOptions};
use crate::raft::storage::RaftStore;
use crate::raft::transport::Transport;
use crate::store::Store;

/// Runs a node until a shutdown signal, or until its Raft loop fails.
pub async fn run(config: Config) -> Result<()> {
    let me = config.tls.identity()?;
    std::fs::create_dir_all(&config.data_dir).map_err(|e| Error::Io {
        path: config.data_dir.clone(),
        source: e,
    })?;
    let old = config.data_dir.join("catalog.sled");
    if old.exists() {
        return Err(Error::Refused(format!(
            "{} holds the catalog of an earlier strongbox, stored with sled; this build stores \
             it with fjall in {}. Move {} away and start this node again: it copies the \
             catalog from the region's other nodes (or run the earlier build on this node)",
            old.display(),
            config.data_dir.join("catalog").display(),
            old.display()
        )));
    }
    let db = Store::open(&config.data_dir.join("catalog"), config.catalog_cache_bytes)?;
    let catalog = Catalog::open(&db)?;
    let snapshots = crate::raft::snapshots::Snapshots::open(
        config.data_dir.join("snapshots"),
        config.node_id,
        config.snapshot_send_rate,
    )?;
    let store = RaftStore::open(db, catalog.clone(), snapshots.clone())?;
    if store.is_empty() && config.node_id == 1 {
        tracing::info!(
            node_id = config.node_id,
            "bootstrapping a new cluster with this node as its first voter"
        );
        store.bootstrap(config.node_id)?;
    }
    let advertise = config.advertise.clone();
    let mut initial: Vec<(u64, String)> = config.peers.clone();
    initial.push((config.node_id, advertise.clone()));
    let transport = Arc::new(Transport::new(
        config.node_id,
        config.tls.clone(),
        tokio::runtime::Handle::current(),
        &initial,
    ));
    transport.refresh_addresses(&catalog);
    let initial_peers = if config.node_id == 1 {
        initial
            .iter()
            .map(|(id, address)| NodeRecord {
                id: *id,
                address: address.clone(),
                name: if *id == config.node_id {
                    me.name.clone()
                } else {
                    String::new()
                },
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut opts = RaftOptions::new(config.node_id);
    opts.tick = config.tick;
    opts.compact_after = config.compact_after;
    let (raft, raft_thread) = node::start(
        opts,
        store,
        catalog.clone(),
        transport.clone(),
        initial_peers,
    )?;
    // A job written for a host wakes that host's sessions on this node at once.
    let sessions = Arc::new(crate::node::Sessions::default());
    {
        let sessions = sessions.clone();
        catalog.on_jobs_changed(move |host| sessions.wake(host));
    }
    let ctx = Arc::new(NodeContext {
        id: config.node_id,
        name: me.name.clone(),
        region: config.region.clone(),
        raft,
        catalog,
        chunks: Arc::new(crate::chunks::store::ChunkStore::open(
            &config.data_dir,
            &me.name,
            config.min_free_bytes,
        )?),
        transport,
        metrics: Arc::default(),
        scopes: Default::default(),
        sessions: sessions.clone(),
        workers: Default::default(),
        stopping: tokio::sync::watch::Sender::new(false),
        agent_grace: config.agent_grace,
        max_restored_servers: config.max_restored_servers,
        snapshots,
    });

    let mut workers =
        crate::controllers::workers(config.controller_interval, config.schedule_backups);
    workers.push(Box::new(crate::chunks::maintain::Maintenance::new(
        config.maintenance_interval,
        config.gc_grace,
    )));
    workers.push(Box::new(OwnName::default()));
    for worker in workers {
        crate::worker::spawn(ctx.clone(), worker);
    }
    tokio::spawn(crate::api::session::end_stale_sessions(ctx.clone()));

    if let Some(addr) = config.http_listen {
        let node = ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::http::serve(addr, node).await {
                tracing::error!(error = %e, "the HTTP listener stopped");
            }
        });
    }

    let (raft_failed_tx, raft_failed) = tokio::sync::oneshot::channel::<String>();
    std::thread::spawn(move || {
        let why = match raft_thread.join() {
            Ok(Ok(())) => "the Raft loop ended".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "the Raft loop panicked".to_string(),
        };
        let _ = raft_failed_tx.send(why);
    });

    tracing::info!(
        node_id = config.node_id,
        region = %config.region,
        listen = %config.listen,
        identity = %me,
        "serving"
    );
    let server = Server::builder()
        .tls_config(config.tls.server_config()?)
        .map_err(|e| Error::Transport(e.to_string()))?
        .layer(crate::metrics::RpcLayer(ctx.metrics.clone()))
        .add_service(
            ClusterServiceServer::new(ClusterApi { node: ctx.clone() })
                .max_decoding_message_size(MAX_CLUSTER_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_CLUSTER_MESSAGE_BYTES),
        )
        .add_service(
            OperatorServiceServer::new(OperatorApi { node: ctx.clone() })
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            AgentServiceServer::new(AgentApi::new(ctx.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Io {
            path: format!("listen address {}", config.listen).into(),
            source: e,
        })?;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    // On SIGTERM: stop taking calls, end agent sessions (their agents go to another node),
    // and stop within STOP_GRACE whatever calls are still open, so a restart right after
    // finds the catalog's files free.
    let stopping = ctx.stopping.clone();
    let signal = async move {
        shutdown_signal().await;
        tracing::info!("stopping: ending agent sessions and open calls");
        stopping.send_replace(true);
    };
    let mut stopped = ctx.stopping.subscribe();
    let grace_over = async move {
        let _ = stopped.wait_for(|s| *s).await;
        tokio::time::sleep(STOP_GRACE).await;
    };
    tokio::select! {
        r = server.serve_with_incoming_shutdown(incoming, signal) => {
            r.map_err(|e| Error::Transport(e.to_string()))?;
            tracing::info!("stopped");
            Ok(())
        }
        _ = grace_over => {
            tracing::warn!(grace = ?STOP_GRACE, "stopped with calls still open after the grace period");
            Ok(())
        }
        why = raft_failed => {
            let why = why.unwrap_or_else(|_| "the Raft loop vanished".into());
            Err(Error::Refused(format!("stopping: {why}")))
        }
    }
}

/// How long a stopping node waits for open calls before it stops anyway.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Records this node's name (from its certificate) in its catalog record once the region has a
/// leader: the first node records its peers from its config with addresses only, so without
/// this `cluster status` shows them nameless. A worker on every node; once the name is
/// recorded it only checks, once a minute.
#[derive(Default)]
struct OwnName {
    recorded: bool,
}

#[async_trait::async_trait]
impl crate::worker::Worker for OwnName {
    fn name(&self) -> &'static str {
        "node-name"
    }
    fn leader_only(&self) -> bool {
        false
    }
    fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(if self.recorded { 60 } else { 2 })
    }
    async fn pass(&mut self, node: &Arc<NodeContext>) -> Result<crate::worker::Done> {
        let Some(me) = node.catalog.nodes()?.into_iter().find(|n| n.id == node.id) else {
            return Ok(Default::default()); // not a member yet
        };
        self.recorded = me.name == node.name;
        if self.recorded {
            return Ok(Default::default());
        }
        let actor = strongbox_core::pki::Identity {
            role: strongbox_core::pki::Role::Node,
            name: node.name.clone(),
        };
        let mut cmd = node.command(
            &actor,
            strongbox_proto::catalog::command::Op::SetNode(strongbox_proto::catalog::SetNode {
                id: node.id,
                address: me.address,
                name: node.name.clone(),
            }),
        );
        cmd.request_id = format!("node-name-{}-{}", node.id, node.name);
        let outcome = node.submit(cmd).await?;
        if !outcome.error.is_empty() {
            tracing::debug!(error = %outcome.error, "recording this node's name refused");
        }
        Ok(crate::worker::Done::items(1))
    }
}
