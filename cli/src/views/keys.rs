//! What `strongbox keygen` and `strongbox pki init-ca|issue` wrote, as scripts see it: flat
//! records of paths and identities (never a key's bytes).

use serde::Serialize;

/// `keygen`: the keyring file and its key ids.
#[derive(Serialize)]
pub struct KeyringView {
    pub path: String,
    pub new_key_id: u32,
    pub key_ids: Vec<u32>,
    /// The file's permissions, octal.
    pub mode: &'static str,
}

/// `pki init-ca`: the CA's certificate and key files.
#[derive(Serialize)]
pub struct CaView {
    pub ca_cert: String,
    pub ca_key: String,
    pub valid_days: u32,
}

/// `pki issue`: the certificate issued and the identity it carries.
#[derive(Serialize)]
pub struct IssuedView<'a> {
    /// `strongbox://ROLE/NAME`, the URI SAN the coordinators read the role from.
    pub identity: String,
    pub role: &'a str,
    pub name: &'a str,
    pub cert: String,
    pub key: String,
    /// The CA certificate copied beside it (`null` when none was).
    pub ca_cert: Option<String>,
    pub sans: &'a [String],
    pub valid_days: u32,
}
