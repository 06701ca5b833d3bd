//! The fleet keyring and the per-service keys derived from it.
//!
//! A keyring file holds one or more fleet keys (32 random bytes each) by id, in TOML:
//!
//! ```toml
//! [[key]]
//! id = 1
//! created = "2026-11-23T10:00:00Z"
//! secret = "<64 hex digits>"
//! ```
//!
//! New data is sealed under the newest key (the highest id); older keys stay to open older data.
//! Per-service keys are derived with HKDF-SHA256: the *id key* (BLAKE3 key for chunk ids, so
//! dedup is scoped to one service), the *data key* (AES-256-GCM) and the *MAC key* (HMAC-SHA256
//! over manifests).
//!
//! Invariants: a key file is refused unless it is readable by its owner only (mode 0600 or
//! stricter); every key is exactly 32 bytes with a unique id; secrets never reach `Debug`,
//! `Display` or an error message, and are zeroed when dropped.

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ring::rand::{SecureRandom, SystemRandom};
use ring::{aead, hkdf, hmac};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::files::{self, Overwrite};

/// Length of a fleet key and of every derived key, in bytes.
pub const KEY_LEN: usize = 32;

const HKDF_SALT: &[u8] = b"strongbox fleet key v1";

/// One fleet key.
pub struct FleetKey {
    id: u32,
    created: String,
    secret: Zeroizing<[u8; KEY_LEN]>,
}

impl FleetKey {
    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn created(&self) -> &str {
        &self.created
    }

    /// A new random key.
    pub fn generate(id: u32) -> Result<Self> {
        let mut secret = Zeroizing::new([0u8; KEY_LEN]);
        SystemRandom::new()
            .fill(&mut secret[..])
            .map_err(|_| Error::Random)?;
        let created = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Ok(FleetKey {
            id,
            created,
            secret,
        })
    }

    /// A key with the given bytes (tests, and keys carried in other secret stores).
    pub fn from_bytes(id: u32, secret: [u8; KEY_LEN]) -> Self {
        FleetKey {
            id,
            created: String::new(),
            secret: Zeroizing::new(secret),
        }
    }

    /// The keys of one service under this fleet key.
    pub fn service_keys(&self, service: &str) -> ServiceKeys {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(&self.secret[..]);
        let derive = |label: &[u8]| -> Zeroizing<[u8; KEY_LEN]> {
            let mut out = Zeroizing::new([0u8; KEY_LEN]);
            let info = [label, b"\0", service.as_bytes()];
            // expand/fill only fail when the length exceeds 255 * 32 bytes; ours is 32.
            if let Ok(okm) = prk.expand(&info, KeyLen) {
                let _ = okm.fill(&mut out[..]);
            }
            out
        };
        let id_key = derive(b"id-key");
        let data = derive(b"data-key");
        let mac = derive(b"mac-key");
        // UnboundKey::new only fails on a wrong key length; AES_256_GCM takes 32 bytes.
        let data_key = aead::UnboundKey::new(&aead::AES_256_GCM, &data[..])
            .map(aead::LessSafeKey::new)
            .unwrap_or_else(|_| unreachable!("AES-256-GCM key is 32 bytes"));
        ServiceKeys {
            key_id: self.id,
            id_key,
            data_key,
            mac_key: hmac::Key::new(hmac::HMAC_SHA256, &mac[..]),
        }
    }
}

impl fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

struct KeyLen;
impl hkdf::KeyType for KeyLen {
    fn len(&self) -> usize {
        KEY_LEN
    }
}

/// The keys of one service under one fleet key.
pub struct ServiceKeys {
    key_id: u32,
    id_key: Zeroizing<[u8; KEY_LEN]>,
    data_key: aead::LessSafeKey,
    mac_key: hmac::Key,
}

impl ServiceKeys {
    /// The id of the fleet key these were derived from; it goes into every header.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The chunk id of `plaintext`: BLAKE3 keyed with the id key.
    pub fn chunk_id(&self, plaintext: &[u8]) -> crate::ids::ChunkId {
        crate::ids::ChunkId(*blake3::keyed_hash(&self.id_key, plaintext).as_bytes())
    }

    pub(crate) fn data_key(&self) -> &aead::LessSafeKey {
        &self.data_key
    }

    pub(crate) fn mac_key(&self) -> &hmac::Key {
        &self.mac_key
    }
}

impl fmt::Debug for ServiceKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceKeys")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Every fleet key an agent or operator holds, by id.
#[derive(Debug, Default)]
pub struct Keyring {
    keys: BTreeMap<u32, FleetKey>,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    #[serde(default)]
    key: Vec<KeyEntry>,
}

#[derive(Serialize, Deserialize)]
struct KeyEntry {
    id: Option<i64>,
    #[serde(default)]
    created: String,
    secret: Option<String>,
}

impl Keyring {
    pub fn new(keys: impl IntoIterator<Item = FleetKey>) -> Result<Self> {
        let mut ring = Keyring::default();
        for k in keys {
            ring.insert(k)?;
        }
        Ok(ring)
    }

    fn insert(&mut self, key: FleetKey) -> Result<()> {
        if self.keys.contains_key(&key.id) {
            return Err(Error::invalid(
                "key id",
                key.id.to_string(),
                "two keys have this id",
            ));
        }
        self.keys.insert(key.id, key);
        Ok(())
    }

    /// The key new data is sealed with: the one with the highest id.
    pub fn newest(&self) -> Option<&FleetKey> {
        self.keys.values().next_back()
    }

    pub fn get(&self, id: u32) -> Result<&FleetKey> {
        self.keys.get(&id).ok_or_else(|| Error::UnknownKeyId {
            id,
            have: self.describe_ids(),
        })
    }

    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.keys().copied()
    }

    fn describe_ids(&self) -> String {
        if self.keys.is_empty() {
            return "no keys".to_string();
        }
        let ids: Vec<String> = self.keys.keys().map(|i| i.to_string()).collect();
        format!("ids {}", ids.join(", "))
    }

    /// Keys of `service` under fleet key `id` (for opening data sealed under that key).
    pub fn service_keys(&self, id: u32, service: &str) -> Result<ServiceKeys> {
        Ok(self.get(id)?.service_keys(service))
    }

    /// Keys of `service` under the newest fleet key (for sealing new data).
    pub fn current_service_keys(&self, service: &str) -> Result<ServiceKeys> {
        self.newest()
            .map(|k| k.service_keys(service))
            .ok_or_else(|| Error::UnknownKeyId {
                id: 0,
                have: self.describe_ids(),
            })
    }

    /// Reads a key file, refusing one that others may read or whose keys are malformed.
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "mode is {mode:04o}; a key file must be readable by its owner only: chmod 600 {}",
                path.display()
            )));
        }
        let bytes = Zeroizing::new(files::read(path)?);
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            bad(
                "not a strongbox key file (not UTF-8 text); make one with `strongbox keygen`"
                    .into(),
            )
        })?;
        let file: KeyFile = toml::from_str(text).map_err(|e| {
            // toml's message quotes the offending line, which may hold a secret: keep only its
            // first line, which names the position.
            let first = e
                .message()
                .lines()
                .next()
                .unwrap_or("syntax error")
                .to_string();
            bad(format!("not a strongbox key file: {first}"))
        })?;
        if file.key.is_empty() {
            return Err(bad(
                "holds no [[key]] entry; make one with `strongbox keygen`".into(),
            ));
        }
        let mut ring = Keyring::default();
        for (n, entry) in file.key.iter().enumerate() {
            let n = n + 1;
            let id = entry
                .id
                .ok_or_else(|| bad(format!("key entry {n} has no id")))?;
            let id = u32::try_from(id).ok().filter(|i| *i > 0).ok_or_else(|| {
                bad(format!(
                    "key entry {n} has id {id}; ids are 1 to {}",
                    u32::MAX
                ))
            })?;
            let secret_hex = entry
                .secret
                .as_deref()
                .ok_or_else(|| bad(format!("key {id} has no secret")))?;
            let raw = Zeroizing::new(
                hex::decode(secret_hex.trim())
                    .map_err(|_| bad(format!("key {id}: the secret is not hex")))?,
            );
            if raw.len() != KEY_LEN {
                return Err(bad(format!(
                    "key {id} is {} bytes long; a fleet key is exactly {KEY_LEN} bytes (make one with `strongbox keygen`)",
                    raw.len()
                )));
            }
            let mut secret = Zeroizing::new([0u8; KEY_LEN]);
            secret.copy_from_slice(&raw);
            if ring.keys.contains_key(&id) {
                return Err(bad(format!("two keys have id {id}")));
            }
            ring.keys.insert(
                id,
                FleetKey {
                    id,
                    created: entry.created.clone(),
                    secret,
                },
            );
        }
        Ok(ring)
    }

    /// Writes the keyring to `path` with mode 0600, atomically.
    pub fn save(&self, path: &Path, overwrite: Overwrite) -> Result<()> {
        let file = KeyFile {
            key: self
                .keys
                .values()
                .map(|k| KeyEntry {
                    id: Some(i64::from(k.id)),
                    created: k.created.clone(),
                    secret: Some(hex::encode(&k.secret[..])),
                })
                .collect(),
        };
        let body = Zeroizing::new(toml::to_string(&file).map_err(|e| Error::KeyFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?);
        let text = Zeroizing::new(format!(
            "# strongbox fleet keyring. Keep it secret (e.g. in Ansible Vault): whoever holds it can\n\
             # read every backup. Keep every old key too: backups sealed under it need it to restore.\n{}",
            body.as_str()
        ));
        files::write_atomic(path, text.as_bytes(), 0o600, overwrite)
    }

    /// Adds a new random key with the next id and returns that id (key rotation).
    pub fn rotate(&mut self) -> Result<u32> {
        let id = self.keys.keys().next_back().map_or(1, |i| i + 1);
        self.insert(FleetKey::generate(id)?)?;
        Ok(id)
    }
}
