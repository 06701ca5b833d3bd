//! Mutual TLS for every gRPC port: tonic server and client configs from PEM files, and the
//! caller's identity and role check on the server side.
//!
//! Invariants: rustls runs with the `ring` provider only, installed by [`install_crypto_provider`]
//! at the start of every binary; a server built here requires a client certificate signed by
//! the fleet CA (no certificate, another CA or an expired one fail at the handshake); a handler
//! learns who called only from the verified peer certificate.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity as TlsIdentity, ServerTlsConfig};
use tonic::{Request, Status};

use crate::error::{Error, Result};
use crate::files;
use crate::pki::{self, Identity, Role};

/// Installs rustls's `ring` provider as the process default. Call first in every `main`.
/// Calling it again is harmless.
pub fn install_crypto_provider() {
    // Err means a provider is installed already (ours, by an earlier call).
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The three PEM files a process needs for mTLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The fleet CA certificate.
    pub ca: PathBuf,
    /// This process's certificate.
    pub cert: PathBuf,
    /// This process's private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// `dir/ca.crt`, `dir/<name>.crt`, `dir/<name>.key`: the layout `strongbox pki issue` writes.
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        TlsFiles {
            ca: dir.join(pki::CA_CERT_FILE),
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        }
    }

    fn load(&self) -> Result<(Certificate, TlsIdentity, Identity)> {
        let read = |p: &Path| -> Result<Vec<u8>> {
            let b = files::read(p)?;
            if !b.starts_with(b"-----BEGIN") && !String::from_utf8_lossy(&b).contains("-----BEGIN")
            {
                return Err(Error::Tls(format!("{} is not a PEM file", p.display())));
            }
            Ok(b)
        };
        let ca = read(&self.ca)?;
        let cert = read(&self.cert)?;
        let key = read(&self.key)?;
        let cert_text = String::from_utf8_lossy(&cert);
        let me = pki::identity_from_pem(&cert_text)
            .map_err(|e| Error::Tls(format!("{}: {e}", self.cert.display())))?;
        Ok((
            Certificate::from_pem(ca),
            TlsIdentity::from_pem(cert, key),
            me,
        ))
    }

    /// The identity in this process's own certificate.
    pub fn identity(&self) -> Result<Identity> {
        Ok(self.load()?.2)
    }

    /// A server config that requires client certificates signed by the CA.
    pub fn server_config(&self) -> Result<ServerTlsConfig> {
        let (ca, id, _) = self.load()?;
        Ok(ServerTlsConfig::new()
            .identity(id)
            .client_ca_root(ca)
            .client_auth_optional(false))
    }

    /// A client config presenting this process's certificate and trusting only the CA.
    /// `server_name` must be one of the server certificate's DNS names or IP addresses.
    pub fn client_config(&self, server_name: &str) -> Result<ClientTlsConfig> {
        let (ca, id, _) = self.load()?;
        Ok(ClientTlsConfig::new()
            .ca_certificate(ca)
            .identity(id)
            .domain_name(server_name.to_string()))
    }
}

/// Who is calling, from the verified peer certificate of the request's connection.
pub fn peer_identity<T>(request: &Request<T>) -> Result<Identity, Status> {
    let certs = request
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("no client certificate: connect with mutual TLS"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("no client certificate: connect with mutual TLS"))?;
    pki::identity_from_der(leaf.as_ref())
        .map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))
}

/// The caller's identity if its role is one of `allowed`; `PERMISSION_DENIED` otherwise.
pub fn require_role<T>(request: &Request<T>, allowed: &[Role]) -> Result<Identity, Status> {
    let who = peer_identity(request)?;
    if allowed.contains(&who.role) {
        Ok(who)
    } else {
        let roles: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        Err(Status::permission_denied(format!(
            "{who} may not call this; it needs the role {}",
            roles.join(" or ")
        )))
    }
}
