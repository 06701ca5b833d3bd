//! Reaching the coordinators: which nodes to dial, and the operator's certificate for mTLS.
//!
//! [`Api`] wraps `strongbox_core::connect::Coordinators`: every operator RPC goes to one node
//! and moves on to the next when that node is down (Unavailable), until a 30 s deadline.
//!
//! Invariants: every connection is mutual TLS with the fleet CA; errors say which flag or
//! environment variable to set; responses may be as large as a manifest (the limit is
//! explicit, see [`MAX_MESSAGE`]).

use std::path::PathBuf;
use std::time::Duration;

use std::future::Future;

use anyhow::{bail, Context};
use strongbox_core::connect::Coordinators;
use strongbox_core::tls::TlsFiles;

use crate::grammar::ConnectArgs;
use strongbox_proto::v1::operator_service_client::OperatorServiceClient;
use tonic::transport::{Channel, Endpoint};

/// The largest response the CLI accepts: a sealed manifest may be up to 128 MiB.
pub const MAX_MESSAGE: usize = strongbox_core::manifest::MAX_MANIFEST_LEN + 1024 * 1024;

/// How long a call keeps trying other nodes while they are unavailable.
pub const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// The operator API of a region, over every coordinator given.
pub struct Api {
    coordinators: Coordinators,
}

impl Api {
    pub fn new(args: &ConnectArgs) -> anyhow::Result<Self> {
        let tls = args.tls()?;
        Self::with(&tls, args.addresses()?)
    }

    pub fn with(tls: &TlsFiles, addresses: &[String]) -> anyhow::Result<Self> {
        Ok(Api {
            coordinators: Coordinators::new(tls, addresses, CALL_DEADLINE)?
                .give_up_when_unreached(),
        })
    }

    /// Runs one operator RPC (`what` names it in messages) on a node that answers.
    pub async fn call<T, F, Fut>(&self, what: &str, call: F) -> anyhow::Result<T>
    where
        F: Fn(OperatorServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_status(what, call)
            .await
            .map_err(|s| status_error(s).context(doing(what)))
    }

    /// Like [`Api::call`], but the gRPC status is returned as it came, for a caller that
    /// handles some codes itself.
    pub async fn call_status<T, F, Fut>(&self, what: &str, call: F) -> Result<T, tonic::Status>
    where
        F: Fn(OperatorServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.coordinators
            .call(what, |ch| {
                call(
                    OperatorServiceClient::new(ch)
                        .max_decoding_message_size(MAX_MESSAGE)
                        .max_encoding_message_size(MAX_MESSAGE),
                )
            })
            .await
            .map(tonic::Response::into_inner)
    }
}

impl ConnectArgs {
    pub fn tls(&self) -> anyhow::Result<TlsFiles> {
        // Each file named with the option it came from, and what is wrong with it.
        let need = |v: &Option<PathBuf>, flag: &str, env: &str, what: &str| {
            let path = v
                .clone()
                .with_context(|| format!("no {what} given: pass --{flag} (or set {env})"))?;
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => {}
                Ok(_) => bail!(
                    "--{flag} {}: not a file (give the {what} file)",
                    path.display()
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    bail!("--{flag} {}: no such file (the {what})", path.display())
                }
                Err(e) => bail!("--{flag} {}: cannot be read: {e}", path.display()),
            }
            if let Err(e) = std::fs::File::open(&path) {
                bail!("--{flag} {}: cannot be read: {e}", path.display());
            }
            Ok::<_, anyhow::Error>(path)
        };
        Ok(TlsFiles {
            ca: need(
                &self.tls_ca,
                "tls-ca",
                "STRONGBOX_TLS_CA",
                "fleet CA certificate",
            )?,
            cert: need(
                &self.tls_cert,
                "tls-cert",
                "STRONGBOX_TLS_CERT",
                "certificate",
            )?,
            key: need(&self.tls_key, "tls-key", "STRONGBOX_TLS_KEY", "private key")?,
        })
    }

    pub fn addresses(&self) -> anyhow::Result<&[String]> {
        if self.coordinators.is_empty() {
            bail!("no coordinator given: pass --coordinator HOST:PORT (or set STRONGBOX_COORDINATORS)");
        }
        Ok(&self.coordinators)
    }
}

/// A channel to `address`, connected now so that an unreachable node is known at once.
pub async fn connect(tls: &TlsFiles, address: &str) -> anyhow::Result<Channel> {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let endpoint = Endpoint::from_shared(format!("https://{address}"))
        .with_context(|| format!("{address:?} is not HOST:PORT"))?
        .tls_config(tls.client_config(host)?)?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30));
    let connecting =
        tokio::time::timeout(strongbox_core::connect::CONNECT_WITHIN, endpoint.connect()).await;
    let Ok(connected) = connecting else {
        bail!(
            "{address}: {}",
            strongbox_core::connect::Unreached::TimedOut
        );
    };
    connected.map_err(|e| {
        match strongbox_core::connect::unreached_in(&e) {
            Some(why) => anyhow::anyhow!("{address}: {why}"),
            None => anyhow::Error::new(e).context(format!(
                "cannot reach the coordinator at {address} (is it running, and is its certificate from your CA?)"
            )),
        }
    })
}

/// A channel to the first coordinator that answers.
pub async fn any(args: &ConnectArgs) -> anyhow::Result<Channel> {
    let tls = args.tls()?;
    let mut failed = Vec::new();
    for a in args.addresses()? {
        match connect(&tls, a).await {
            Ok(c) => return Ok(c),
            Err(e) => failed.push(format!("{e:#}")),
        }
    }
    bail!("no coordinator could be reached; {}", failed.join("; "))
}

/// Turns a gRPC error into a message for people.
/// What an operator RPC does, in the words of an error message (`starting the backup: …`),
/// rather than its name in the API.
pub fn doing(rpc: &str) -> String {
    match rpc {
        "BindHost" => "changing what the host serves",
        "ClusterStatus" => "reading the cluster's status",
        "CreateBackup" => "starting the backup",
        "DownloadChunk" => "downloading the backup",
        "GetJob" => "reading the job",
        "GetPolicy" => "reading the policy",
        "HoldBackup" => "changing the backup's hold",
        "ListAudit" => "reading the audit log",
        "ListBackups" => "listing the backups",
        "ListHosts" => "listing the hosts",
        "ListJobs" => "listing the jobs",
        "ListServices" => "listing the services",
        "PurgeBackup" => "purging the backup",
        "RestoreBackup" => "starting the restore",
        "SetPolicy" => "changing the policy",
        "SetServiceState" => "changing the service's state",
        "ShowBackup" => "reading the backup",
        "ShowService" => "reading the service",
        "StopRestore" => "stopping the restored server",
        other => return format!("{other} failed"),
    }
    .to_string()
}

pub fn status_error(s: tonic::Status) -> anyhow::Error {
    if let Some(why) = strongbox_core::connect::tls_failure(&s) {
        return anyhow::anyhow!("the TLS handshake failed: {why}");
    }
    match s.code() {
        tonic::Code::PermissionDenied => anyhow::anyhow!(
            "permission denied: {} (use a certificate with the operator role for changes)",
            s.message()
        ),
        tonic::Code::Unauthenticated => anyhow::anyhow!(
            "not authenticated: {} (check --tls-cert/--tls-key and that they come from the fleet CA)",
            s.message()
        ),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => anyhow::anyhow!(
            "the cluster is unavailable: {} (is a coordinator running at the addresses given? retry, or check `strongbox cluster status`)",
            s.message()
        ),
        tonic::Code::NotFound => anyhow::anyhow!("not found: {}", s.message()),
        // The coordinators' refusals (a hold, a lock, a bad schedule, a full spare) are
        // sentences that say what to do next: printed as they are, without gRPC's words.
        tonic::Code::FailedPrecondition
        | tonic::Code::InvalidArgument
        | tonic::Code::ResourceExhausted
        | tonic::Code::AlreadyExists
        | tonic::Code::Aborted
        | tonic::Code::OutOfRange => anyhow::anyhow!("{}", s.message()),
        tonic::Code::DataLoss => anyhow::anyhow!("data lost: {}", s.message()),
        tonic::Code::Internal | tonic::Code::Unknown => anyhow::anyhow!(
            "the coordinator failed: {} (its log says more; this is a bug to report)",
            s.message()
        ),
        _ => anyhow::anyhow!("{}: {}", s.code(), s.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_as_the_coordinators_sentences_without_grpc_words() {
        let full = status_error(tonic::Status::resource_exhausted(
            "spare \"s1\" runs 3 restored servers already",
        ))
        .context(doing("RestoreBackup"));
        assert_eq!(
            format!("{full:#}"),
            "starting the restore: spare \"s1\" runs 3 restored servers already"
        );
        let bug = status_error(tonic::Status::internal("decoding a record"));
        assert!(bug
            .to_string()
            .starts_with("the coordinator failed: decoding a record"));
    }
}
