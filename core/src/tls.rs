//! Mutual TLS for every gRPC port: tonic server and client configs from PEM files, and the
//! caller's identity and role check on the server side.
//!
//! Invariants: rustls runs with the `ring` provider only, installed by [`install_crypto_provider`]
//! at the start of every binary; a server built here requires a client certificate signed by
//! the fleet CA (no certificate, another CA or an expired one fail at the handshake); a handler
//! learns who called only from the verified peer certificate; a process never presents a
//! certificate outside its validity window (loading refuses it, saying when it expired).

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
        // Peers refuse a certificate outside its validity with a bare handshake failure:
        // say it here, with the date and what to do.
        let now = time::OffsetDateTime::now_utc();
        let ca_text = String::from_utf8_lossy(&ca);
        for (path, text, whose, remedy) in [
            (
                &self.cert,
                cert_text.as_ref(),
                format!("the certificate of {me}"),
                "issue a new one (`strongbox pki issue`, or the deployment's certificate role) and point the configuration at it",
            ),
            (
                &self.ca,
                ca_text.as_ref(),
                "the fleet CA certificate".to_string(),
                "make a new CA (`strongbox pki init-ca`) and issue every certificate of the fleet again from it",
            ),
        ] {
            let validity = pki::validity_from_pem(text)
                .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
            if let Some(why) = pki::outside_validity(&validity, now) {
                return Err(Error::Tls(format!(
                    "{whose} ({}) {why}: no peer will accept it; {remedy}",
                    path.display()
                )));
            }
        }
        if let Err(why) = verify_key_pair(&cert, &key) {
            return Err(Error::Tls(format!(
                "the key {} does not go with the certificate {}: {why}; give the key issued with that certificate",
                self.key.display(),
                self.cert.display()
            )));
        }
        // A certificate of another CA is refused by the peer after the handshake, seen here
        // as a broken pipe: check the chain as a peer will, with rustls's own verifier.
        if let Err(why) = verify_chain(&ca, &cert) {
            return Err(Error::Tls(format!(
                "the certificate of {me} ({}) is not accepted by the fleet CA {}: {why}; use a certificate issued by this fleet's CA, or the CA file it came with",
                self.cert.display(),
                self.ca.display()
            )));
        }
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

/// Checks that the private key in `key_pem` is the one the first certificate of `cert_pem`
/// was issued for (rustls's `CertifiedKey::keys_match`): a mismatch otherwise fails the
/// handshake with a bare transport error.
fn verify_key_pair(cert_pem: &[u8], key_pem: &[u8]) -> std::result::Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let leaf = CertificateDer::pem_slice_iter(cert_pem)
        .next()
        .ok_or("the certificate file holds no certificate")?
        .map_err(|e| format!("the certificate file: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("the key file holds no private key ({e})"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("the key file: {e}"))?;
    rustls::sign::CertifiedKey::new(vec![leaf], signing)
        .keys_match()
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                "they are not a pair".to_string()
            }
            other => other.to_string(),
        })
}

/// Checks `cert_pem` (a leaf and any intermediates) against the CA in `ca_pem` as a server
/// checks a client certificate (rustls's WebPKI verifier, RFC 5280 path validation).
fn verify_chain(ca_pem: &[u8], cert_pem: &[u8]) -> std::result::Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, UnixTime};
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem) {
        let ca = ca.map_err(|e| format!("the CA file: {e}"))?;
        roots.add(ca).map_err(|e| format!("the CA file: {e}"))?;
    }
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate file: {e}"))?;
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or("the certificate file holds no certificate")?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        std::sync::Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .map_err(|e| e.to_string())?;
    verifier
        .verify_client_cert(leaf, intermediates, UnixTime::now())
        .map(|_| ())
        .map_err(|e| match e {
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature,
            ) => "it was issued by another CA".to_string(),
            other => other.to_string(),
        })
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
