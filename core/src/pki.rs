//! The fleet's certificate authority: make a CA, issue certificates whose identity encodes a
//! role and a name, and read that identity back from a peer's certificate.
//!
//! The identity is a URI subject alternative name `spiffe://strongbox/<role>/<name>` (the
//! subject also says `CN=<name>, OU=<role>` for people reading the certificate, but only the URI
//! counts). Keys are ECDSA P-256.
//!
//! Invariants: a certificate names exactly one identity, with a known role and a valid name;
//! the CA key is written only by `init_ca` (mode 0600) and read only to issue.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::error::{Error, Result};
use crate::files::{self, Overwrite};

/// The prefix of the identity URI in every strongbox certificate.
pub const IDENTITY_URI_PREFIX: &str = "spiffe://strongbox/";
/// File names of the CA in its folder.
pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";

/// What a certificate's holder may do (checked on every RPC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A coordinator node: Raft and chunk replication.
    Node,
    /// An agent beside database servers.
    Agent,
    /// A person or tool that changes things.
    Operator,
    /// A person or tool that only reads.
    Viewer,
    /// Another region's coordinators, sending copies.
    Region,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Node,
        Role::Agent,
        Role::Operator,
        Role::Viewer,
        Role::Region,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Agent => "agent",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
            Role::Region => "region",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "role",
                    s,
                    "expected node, agent, operator, viewer or region",
                )
            })
    }
}

/// Who holds a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub role: Role,
    pub name: String,
}

impl Identity {
    pub fn uri(&self) -> String {
        format!("{IDENTITY_URI_PREFIX}{}/{}", self.role, self.name)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.role, self.name)
    }
}

/// Checks a host, node or person name: 1 to 63 of `a-z A-Z 0-9 . _ -`, starting with a letter
/// or digit.
pub fn validate_name(name: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 63 {
        return Err(Error::invalid("name", name, "use 1 to 63 characters"));
    }
    if !name.chars().all(ok_char) {
        return Err(Error::invalid(
            "name",
            name,
            "use only letters, digits, '.', '_' and '-'",
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(Error::invalid(
            "name",
            name,
            "start with a letter or a digit",
        ));
    }
    Ok(())
}

/// A certificate and its private key, both PEM.
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertAndKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (clock skew) for `days` days.
    pub fn days_from_now(days: u32) -> Self {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::hours(1),
            not_after: now.saturating_add(Duration::days(i64::from(days))),
        }
    }
}

fn cert_err(e: rcgen::Error) -> Error {
    Error::Certificate(e.to_string())
}

/// A new self-signed CA.
pub fn new_ca(common_name: &str, validity: Validity) -> Result<CertAndKey> {
    let key = KeyPair::generate().map_err(cert_err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "strongbox");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    let cert = params.self_signed(&key).map_err(cert_err)?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Issues a certificate for `identity`, signed by the CA. `sans` are extra DNS names or IP
/// addresses the holder serves under (nodes); the name itself is added as a DNS name when it is
/// one.
pub fn issue(
    ca: &CertAndKey,
    identity: &Identity,
    sans: &[String],
    validity: Validity,
) -> Result<CertAndKey> {
    validate_name(&identity.name)?;
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(cert_err)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(cert_err)?;

    let key = KeyPair::generate().map_err(cert_err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, identity.name.as_str());
    dn.push(DnType::OrganizationalUnitName, identity.role.as_str());
    dn.push(DnType::OrganizationName, "strongbox");
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    let mut names = vec![SanType::URI(identity.uri().try_into().map_err(cert_err)?)];
    let mut add = |s: &str| -> Result<()> {
        let san = match IpAddr::from_str(s) {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                s.to_string()
                    .try_into()
                    .map_err(|_| Error::invalid("SAN", s, "not a DNS name or IP address"))?,
            ),
        };
        if !names.contains(&san) {
            names.push(san);
        }
        Ok(())
    };
    if identity.name.contains(|c: char| c.is_ascii_alphabetic()) && !identity.name.contains('_') {
        add(&identity.name)?;
    }
    for s in sans {
        add(s.trim())?;
    }
    params.subject_alt_names = names;
    let cert = params.signed_by(&key, &issuer).map_err(cert_err)?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Reads the identity from a DER certificate.
pub fn identity_from_der(der: &[u8]) -> Result<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| Error::Certificate(format!("does not parse: {e}")))?;
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| Error::Certificate(format!("bad subject alternative names: {e}")))?
        .ok_or_else(|| {
            Error::Certificate("no strongbox identity (no subject alternative names)".into())
        })?;
    let mut found = None;
    for gn in &sans.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(uri) = gn {
            if let Some(rest) = uri.strip_prefix(IDENTITY_URI_PREFIX) {
                if found.is_some() {
                    return Err(Error::Certificate(
                        "names more than one strongbox identity".into(),
                    ));
                }
                found = Some(rest.to_string());
            }
        }
    }
    let rest = found.ok_or_else(|| Error::Certificate("no strongbox identity URI".into()))?;
    let (role, name) = rest
        .split_once('/')
        .ok_or_else(|| Error::Certificate(format!("malformed identity {rest:?}")))?;
    let role = Role::from_str(role)?;
    validate_name(name)?;
    Ok(Identity {
        role,
        name: name.to_string(),
    })
}

/// When the first certificate of a PEM text is valid.
pub fn validity_from_pem(pem: &str) -> Result<Validity> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| Error::Certificate(format!("not PEM: {e}")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&p.contents)
        .map_err(|e| Error::Certificate(format!("does not parse: {e}")))?;
    let v = cert.validity();
    Ok(Validity {
        not_before: v.not_before.to_datetime(),
        not_after: v.not_after.to_datetime(),
    })
}

/// Why a certificate valid over `validity` is not valid at `now`, if it is not: it expired
/// (and when, and how long ago), or is not valid yet. A peer checks the same window (RFC 5280,
/// 4.1.2.5) and refuses the handshake without saying why, so processes check their own
/// certificates before they connect.
pub fn outside_validity(validity: &Validity, now: OffsetDateTime) -> Option<String> {
    let ago = |d: Duration| crate::durations::format(d.whole_seconds().unsigned_abs() * 1000);
    let at = |t: OffsetDateTime| {
        t.to_offset(time::UtcOffset::UTC)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| t.to_string())
    };
    if now > validity.not_after {
        Some(format!(
            "expired at {} ({} ago)",
            at(validity.not_after),
            ago(now - validity.not_after)
        ))
    } else if now < validity.not_before {
        Some(format!(
            "is not valid until {} (in {}; is this machine's clock right?)",
            at(validity.not_before),
            ago(validity.not_before - now)
        ))
    } else {
        None
    }
}

/// Reads the identity from a PEM certificate (the first in the text).
pub fn identity_from_pem(pem: &str) -> Result<Identity> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| Error::Certificate(format!("not PEM: {e}")))?;
    identity_from_der(&p.contents)
}

/// Creates `dir/ca.crt` and `dir/ca.key` (0600). Refuses to replace an existing CA.
pub fn init_ca_dir(
    dir: &Path,
    common_name: &str,
    validity: Validity,
) -> Result<(PathBuf, PathBuf)> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    for p in [&cert_path, &key_path] {
        if p.exists() {
            return Err(Error::AlreadyExists { path: p.clone() });
        }
    }
    let ca = new_ca(common_name, validity)?;
    files::write_atomic(&key_path, ca.key_pem.as_bytes(), 0o600, Overwrite::Refuse)?;
    files::write_atomic(&cert_path, ca.cert_pem.as_bytes(), 0o644, Overwrite::Refuse)?;
    Ok((cert_path, key_path))
}

/// Loads the CA of `dir` for issuing.
pub fn load_ca_dir(dir: &Path) -> Result<CertAndKey> {
    let read = |name: &str| -> Result<String> {
        let path = dir.join(name);
        String::from_utf8(files::read(&path)?)
            .map_err(|_| Error::Certificate(format!("{} is not PEM text", path.display())))
    };
    Ok(CertAndKey {
        cert_pem: read(CA_CERT_FILE)?,
        key_pem: read(CA_KEY_FILE)?,
    })
}

/// The files `issue_to_dir` wrote.
#[derive(Debug, Clone)]
pub struct IssuedFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `ca.crt` copied next to them (absent when it was there already).
    pub ca_cert: Option<PathBuf>,
}

/// Issues a certificate with the CA of `ca_dir` and writes `out/<name>.crt` and
/// `out/<name>.key` (0600), plus `out/ca.crt` when it is missing, since every holder needs it.
pub fn issue_to_dir(
    ca_dir: &Path,
    identity: &Identity,
    sans: &[String],
    validity: Validity,
    out: &Path,
    overwrite: Overwrite,
) -> Result<IssuedFiles> {
    validate_name(&identity.name)?;
    let ca = load_ca_dir(ca_dir)?;
    let cert_path = out.join(format!("{}.crt", identity.name));
    let key_path = out.join(format!("{}.key", identity.name));
    if overwrite == Overwrite::Refuse {
        for p in [&cert_path, &key_path] {
            if p.exists() {
                return Err(Error::AlreadyExists { path: p.clone() });
            }
        }
    }
    let issued = issue(&ca, identity, sans, validity)?;
    files::write_atomic(&key_path, issued.key_pem.as_bytes(), 0o600, overwrite)?;
    files::write_atomic(&cert_path, issued.cert_pem.as_bytes(), 0o644, overwrite)?;
    let ca_copy = out.join(CA_CERT_FILE);
    let ca_cert = if ca_copy.exists() {
        None
    } else {
        files::write_atomic(&ca_copy, ca.cert_pem.as_bytes(), 0o644, Overwrite::Refuse)?;
        Some(ca_copy)
    };
    Ok(IssuedFiles {
        cert: cert_path,
        key: key_path,
        ca_cert,
    })
}
