//! Mutual TLS with certificates from `pki`: the right client gets in and is known by role and
//! name; a foreign CA, an expired certificate or none is refused at the handshake.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use strongbox_core::files::Overwrite;
use strongbox_core::pki::{self, Identity, Role, Validity};
use strongbox_core::tls::{self, TlsFiles};
use strongbox_proto::v1::operator_service_client::OperatorServiceClient;
use strongbox_proto::v1::operator_service_server::{OperatorService, OperatorServiceServer};
use strongbox_proto::v1::{self as pb, WhoAmIRequest};
use time::{Duration, OffsetDateTime};
use tonic::transport::{Channel, ClientTlsConfig, Server};
use tonic::{Request, Response, Status};

#[derive(Clone, Default)]
struct Probe {
    calls: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl OperatorService for Probe {
    async fn who_am_i(
        &self,
        req: Request<WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let who = tls::peer_identity(&req)?;
        Ok(Response::new(pb::WhoAmIResponse {
            identity: Some(pb::Identity {
                role: pb::CallerRole::from_word(who.role.as_str())
                    .unwrap_or_default()
                    .into(),
                name: who.name,
            }),
            node: "node-1".into(),
            region: "test".into(),
        }))
    }

    async fn cluster_status(
        &self,
        req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tls::require_role(&req, &[Role::Viewer, Role::Operator])?;
        Ok(Response::new(pb::ClusterStatusResponse::default()))
    }

    async fn list_hosts(
        &self,
        _: Request<pb::ListHostsRequest>,
    ) -> Result<Response<pb::ListHostsResponse>, Status> {
        Err(Status::unimplemented("probe"))
    }

    async fn list_backups(
        &self,
        _: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<pb::ListBackupsResponse>, Status> {
        Err(Status::unimplemented("probe"))
    }

    async fn show_service(
        &self,
        _: Request<pb::ShowServiceRequest>,
    ) -> Result<Response<pb::ServiceInfo>, Status> {
        Err(Status::unimplemented("probe"))
    }

    async fn get_policy(
        &self,
        _: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::GetPolicyResponse>, Status> {
        Err(Status::unimplemented("probe"))
    }

    async fn set_policy(
        &self,
        _: Request<pb::SetPolicyRequest>,
    ) -> Result<Response<pb::SetPolicyResponse>, Status> {
        Err(Status::unimplemented("probe"))
    }

    async fn hold_backup(
        &self,
        _: Request<pb::HoldBackupRequest>,
    ) -> Result<Response<pb::BackupInfo>, Status> {
        Err(Status::unimplemented("probe"))
    }

    async fn set_service_state(
        &self,
        _: Request<pb::SetServiceStateRequest>,
    ) -> Result<Response<pb::SetServiceStateResponse>, Status> {
        Err(Status::unimplemented("probe"))
    }

    async fn bind_host(
        &self,
        _: Request<pb::BindHostRequest>,
    ) -> Result<Response<pb::HostInfo>, Status> {
        Err(Status::unimplemented("probe"))
    }

    async fn purge_backup(
        &self,
        _: Request<pb::PurgeBackupRequest>,
    ) -> Result<Response<pb::PurgeBackupResponse>, Status> {
        Err(Status::unimplemented("probe"))
    }

    async fn add_node(
        &self,
        _: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::AddNodeResponse>, Status> {
        Err(Status::unimplemented("probe"))
    }

    async fn remove_node(
        &self,
        _: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        Err(Status::unimplemented("probe"))
    }

    async fn show_backup(
        &self,
        _: Request<pb::ShowBackupRequest>,
    ) -> Result<Response<pb::BackupInfo>, Status> {
        Err(Status::unimplemented("probe"))
    }

    async fn get_job(
        &self,
        _: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        Err(Status::unimplemented("probe"))
    }

    async fn list_jobs(
        &self,
        _: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        Err(Status::unimplemented("probe"))
    }

    async fn list_services(
        &self,
        _: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        Err(Status::unimplemented("probe"))
    }

    async fn list_audit(
        &self,
        _: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        Err(Status::unimplemented("probe"))
    }

    async fn create_backup(
        &self,
        _: Request<pb::CreateBackupRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        Err(Status::unimplemented("probe"))
    }

    async fn restore_backup(
        &self,
        _: Request<pb::RestoreBackupRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        Err(Status::unimplemented("probe"))
    }

    async fn stop_restore(
        &self,
        _: Request<pb::StopRestoreRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        Err(Status::unimplemented("probe"))
    }

    async fn download_chunk(
        &self,
        _: Request<pb::DownloadChunkRequest>,
    ) -> Result<Response<pb::FetchChunkResponse>, Status> {
        Err(Status::unimplemented("probe"))
    }
}

fn id(role: Role, name: &str) -> Identity {
    Identity {
        role,
        name: name.into(),
    }
}

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        pki::init_ca_dir(
            &dir.path().join("ca"),
            "test CA",
            Validity::days_from_now(30),
        )
        .unwrap();
        pki::init_ca_dir(
            &dir.path().join("foreign-ca"),
            "foreign CA",
            Validity::days_from_now(30),
        )
        .unwrap();
        Pki { dir }
    }

    fn issue(&self, ca: &str, who: Identity, validity: Validity) -> TlsFiles {
        let out = self.dir.path().join(format!("{ca}-certs"));
        pki::issue_to_dir(
            &self.dir.path().join(ca),
            &who,
            &["127.0.0.1".to_string(), "localhost".to_string()],
            validity,
            &out,
            Overwrite::Refuse,
        )
        .unwrap();
        TlsFiles::in_dir(&out, &who.name)
    }
}

async fn serve(files: &TlsFiles) -> (std::net::SocketAddr, Probe) {
    let probe = Probe::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Server::builder()
        .tls_config(files.server_config().unwrap())
        .unwrap()
        .add_service(OperatorServiceServer::new(probe.clone()));
    tokio::spawn(
        router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, probe)
}

async fn call(
    addr: std::net::SocketAddr,
    tls: ClientTlsConfig,
) -> Result<pb::WhoAmIResponse, String> {
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    OperatorServiceClient::new(channel)
        .who_am_i(WhoAmIRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|s| format!("rpc: {s:?}"))
}

#[tokio::test]
async fn ca_signed_client_is_accepted_and_known_by_role_and_name() {
    tls::install_crypto_provider();
    let pki = Pki::new();
    let server = pki.issue("ca", id(Role::Node, "node-1"), Validity::days_from_now(30));
    let (addr, probe) = serve(&server).await;

    for (role, name) in [
        (Role::Operator, "alice"),
        (Role::Agent, "db-7"),
        (Role::Viewer, "grafana"),
    ] {
        let client = pki.issue("ca", id(role, name), Validity::days_from_now(30));
        assert_eq!(client.identity().unwrap(), id(role, name));
        let reply = call(addr, client.client_config("127.0.0.1").unwrap())
            .await
            .unwrap();
        let seen = reply.identity.unwrap();
        assert_eq!(
            (seen.role().word(), seen.name.as_str()),
            (role.as_str(), name)
        );
    }
    assert_eq!(probe.calls.load(Ordering::SeqCst), 3);

    // The role check refuses an agent on a viewer/operator call.
    let agent = pki.issue("ca", id(Role::Agent, "db-8"), Validity::days_from_now(30));
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(agent.client_config("localhost").unwrap())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = OperatorServiceClient::new(channel)
        .cluster_status(pb::ClusterStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(
        status.message().contains("agent:db-8"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn foreign_expired_or_missing_client_certificates_fail_the_handshake() {
    tls::install_crypto_provider();
    let pki = Pki::new();
    let server = pki.issue("ca", id(Role::Node, "node-1"), Validity::days_from_now(30));
    let (addr, probe) = serve(&server).await;

    let foreign = pki.issue(
        "foreign-ca",
        id(Role::Operator, "mallory"),
        Validity::days_from_now(30),
    );
    let now = OffsetDateTime::now_utc();
    let expired = pki.issue(
        "ca",
        id(Role::Operator, "old-timer"),
        Validity {
            not_before: now - Duration::days(10),
            not_after: now - Duration::days(1),
        },
    );
    let ca_pem = std::fs::read(&server.ca).unwrap();
    let no_cert = ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
        .domain_name("127.0.0.1");

    // The foreign client trusts our CA for the server (so the server side is what refuses it).
    let foreign_tls = foreign.client_config("127.0.0.1").unwrap().ca_certificate(
        tonic::transport::Certificate::from_pem(std::fs::read(&server.ca).unwrap()),
    );
    // Our own clients refuse to present an expired certificate, saying when it expired...
    let refused = expired.client_config("127.0.0.1").unwrap_err().to_string();
    assert!(refused.contains("expired at"), "{refused}");
    // ... and the server refuses one presented anyway, as an attacker's client would.
    let expired_raw = ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(&expired.ca).unwrap(),
        ))
        .identity(tonic::transport::Identity::from_pem(
            std::fs::read(&expired.cert).unwrap(),
            std::fs::read(&expired.key).unwrap(),
        ))
        .domain_name("127.0.0.1");
    for (what, tls) in [
        ("foreign CA", foreign_tls),
        ("expired", expired_raw),
        ("no certificate", no_cert),
    ] {
        let err = call(addr, tls).await.expect_err(what);
        assert!(
            !err.contains("PermissionDenied"),
            "{what} got past the handshake: {err}"
        );
    }
    assert_eq!(
        probe.calls.load(Ordering::SeqCst),
        0,
        "no refused client reached a handler"
    );

    // And the client refuses a server whose certificate a foreign CA signed.
    let rogue = pki.issue(
        "foreign-ca",
        id(Role::Node, "rogue"),
        Validity::days_from_now(30),
    );
    let (rogue_addr, rogue_probe) = serve(&rogue).await;
    let honest = pki.issue("ca", id(Role::Operator, "bob"), Validity::days_from_now(30));
    assert!(call(rogue_addr, honest.client_config("127.0.0.1").unwrap())
        .await
        .is_err());
    assert_eq!(rogue_probe.calls.load(Ordering::SeqCst), 0);
}

#[test]
fn identity_is_read_back_and_bad_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    pki::init_ca_dir(dir.path(), "CA", Validity::days_from_now(1)).unwrap();
    let err = pki::init_ca_dir(dir.path(), "CA", Validity::days_from_now(1)).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    let ca = pki::load_ca_dir(dir.path()).unwrap();
    let issued = pki::issue(
        &ca,
        &id(Role::Region, "us-west-2"),
        &["10.1.2.3".into()],
        Validity::days_from_now(1),
    )
    .unwrap();
    assert_eq!(
        pki::identity_from_pem(&issued.cert_pem).unwrap(),
        id(Role::Region, "us-west-2")
    );
    for bad in ["", "-x", "a/b", "a b", &"x".repeat(64)] {
        assert!(
            pki::issue(&ca, &id(Role::Agent, bad), &[], Validity::days_from_now(1)).is_err(),
            "{bad:?}"
        );
    }
    assert!("admin".parse::<Role>().is_err());
    // A CA certificate carries no identity.
    assert!(pki::identity_from_pem(&ca.cert_pem).is_err());
}
