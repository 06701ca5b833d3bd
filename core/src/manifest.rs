//! The manifest: what a backup is made of (parts, their chunks, sizes, engine, table and row
//! counts), sealed so that coordinators can find the chunks it uses but read nothing else.
//!
//! Layout of a sealed manifest (integers big-endian):
//!
//! ```text
//! 0..4     magic "SBXM"
//! 4        format version (2)
//! 5..9     fleet key id
//! 9..21    nonce
//! 21       b: length of the backup id (1 to 63)
//! 22..     b bytes: the backup id (public: a coordinator refuses to commit a manifest made
//!          for another backup, so an old manifest cannot pass for a new backup)
//! +4       n: number of distinct chunk ids referenced
//! +n*32    those ids, in order of first use (public: GC and repair read them)
//! +4       body length
//! body     the protobuf-encoded `Manifest`, AES-256-GCM under the data key; the associated
//!          data is every byte before the body
//! last 32  HMAC-SHA256 under the service's MAC key over every byte before it
//! ```
//!
//! Invariants: [`open`] returns a manifest only if the MAC and the GCM tag hold, the public id
//! list equals the ids the parts use, the public backup id equals the body's, and the totals equal the sums of the parts; malformed input
//! gives an error, never a panic or an allocation beyond the input's size.

use std::collections::HashSet;

use ring::aead::{Aad, Nonce, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{Error, Result};
use crate::ids::{ChunkId, CHUNK_ID_LEN};
use crate::keys::{Keyring, ServiceKeys};

pub const MAGIC: [u8; 4] = *b"SBXM";
pub const FORMAT_VERSION: u8 = 2;
const MAC_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// Magic, version, key id, nonce: the head before the backup id.
const FIXED_HEAD: usize = 4 + 1 + 4 + NONCE_LEN;
/// Longest backup id (the names certificates use: 63 characters).
const MAX_BACKUP_ID_LEN: usize = 63;
/// The largest manifest accepted (about a million chunks, far beyond a terabyte dump).
pub const MAX_MANIFEST_LEN: usize = 128 * 1024 * 1024;

/// What a part of a backup holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PartKind {
    Unspecified = 0,
    /// Roles, grants and other cluster-wide objects (`pg_dumpall --globals-only`, MariaDB grants).
    Globals = 1,
    /// One database's dump.
    Database = 2,
    /// A whole database file (SQLite).
    File = 3,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ChunkRef {
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub plain_size: u64,
    #[prost(uint64, tag = "3")]
    pub stored_size: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TableStat {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint64, tag = "2")]
    pub rows: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Part {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(enumeration = "PartKind", tag = "2")]
    pub kind: i32,
    #[prost(message, repeated, tag = "3")]
    pub chunks: Vec<ChunkRef>,
    #[prost(message, repeated, tag = "4")]
    pub tables: Vec<TableStat>,
}

impl Part {
    pub fn plain_size(&self) -> u64 {
        self.chunks.iter().map(|c| c.plain_size).sum()
    }

    pub fn stored_size(&self) -> u64 {
        self.chunks.iter().map(|c| c.stored_size).sum()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Totals {
    #[prost(uint64, tag = "1")]
    pub plain_size: u64,
    #[prost(uint64, tag = "2")]
    pub stored_size: u64,
    #[prost(uint64, tag = "3")]
    pub chunk_count: u64,
    #[prost(uint64, tag = "4")]
    pub table_count: u64,
    #[prost(uint64, tag = "5")]
    pub row_count: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Manifest {
    #[prost(string, tag = "1")]
    pub backup_id: String,
    #[prost(string, tag = "2")]
    pub service: String,
    #[prost(int64, tag = "3")]
    pub created_unix_ms: i64,
    #[prost(string, tag = "4")]
    pub engine: String,
    #[prost(string, tag = "5")]
    pub engine_version: String,
    #[prost(message, repeated, tag = "6")]
    pub parts: Vec<Part>,
    #[prost(message, optional, tag = "7")]
    pub totals: Option<Totals>,
    /// Databases of the server the backup does not hold, and why (a service configured with
    /// a subset of its databases): `backup show` says so, so no database is left out silently.
    #[prost(message, repeated, tag = "8")]
    pub left_out: Vec<LeftOut>,
}

/// A database a backup does not hold, and why.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeftOut {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub why: String,
}

impl Manifest {
    /// Totals summed from the parts (chunk_count counts references, not distinct chunks).
    pub fn compute_totals(&self) -> Totals {
        let mut t = Totals::default();
        for p in &self.parts {
            t.plain_size += p.plain_size();
            t.stored_size += p.stored_size();
            t.chunk_count += p.chunks.len() as u64;
            t.table_count += p.tables.len() as u64;
            t.row_count += p.tables.iter().map(|s| s.rows).sum::<u64>();
        }
        t
    }

    /// Distinct chunk ids the parts use, in order of first use.
    pub fn chunk_ids(&self) -> Result<Vec<ChunkId>> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for p in &self.parts {
            for c in &p.chunks {
                let id = ChunkId::from_slice(&c.id).map_err(|_| {
                    Error::ManifestFormat(format!("part {:?} has a malformed chunk id", p.name))
                })?;
                if seen.insert(id) {
                    out.push(id);
                }
            }
        }
        Ok(out)
    }

    /// Seals the manifest under `keys` (filling in its totals).
    pub fn seal(&self, keys: &ServiceKeys) -> Result<Vec<u8>> {
        let mut m = self.clone();
        m.totals = Some(m.compute_totals());
        let ids = m.chunk_ids()?;
        seal_body(keys, &m.backup_id, &ids, &prost::Message::encode_to_vec(&m))
    }
}

/// Seals an already encoded body with its public chunk list. [`Manifest::seal`] is the way to
/// make a manifest; this is public so the fuzzer can reach the body checks of [`open`].
#[doc(hidden)]
pub fn seal_body(
    keys: &ServiceKeys,
    backup_id: &str,
    ids: &[ChunkId],
    body: &[u8],
) -> Result<Vec<u8>> {
    if backup_id.is_empty() || backup_id.len() > MAX_BACKUP_ID_LEN {
        return Err(Error::ManifestFormat(format!(
            "a manifest needs a backup id of 1 to {MAX_BACKUP_ID_LEN} bytes, not {}",
            backup_id.len()
        )));
    }
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| Error::Random)?;
    let mut out = Vec::with_capacity(
        FIXED_HEAD
            + 1
            + backup_id.len()
            + 4
            + ids.len() * CHUNK_ID_LEN
            + 4
            + body.len()
            + TAG_LEN
            + MAC_LEN,
    );
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&keys.key_id().to_be_bytes());
    out.extend_from_slice(&nonce);
    out.push(backup_id.len() as u8);
    out.extend_from_slice(backup_id.as_bytes());
    out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
    for id in ids {
        out.extend_from_slice(id.as_bytes());
    }
    out.extend_from_slice(&((body.len() + TAG_LEN) as u32).to_be_bytes());
    let body_start = out.len();
    out.extend_from_slice(body);
    let (head, body) = out.split_at_mut(body_start);
    let tag = keys
        .data_key()
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&*head), body)
        .map_err(|_| Error::ManifestFormat("encryption failed".into()))?;
    out.extend_from_slice(tag.as_ref());
    let mac = hmac::sign(keys.mac_key(), &out);
    out.extend_from_slice(mac.as_ref());
    Ok(out)
}

/// The public parts of a sealed manifest, parsed without any key.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    pub key_id: u32,
    nonce: [u8; NONCE_LEN],
    /// The backup this manifest was made for (checked against the body by [`open`]).
    pub backup_id: &'a str,
    /// Distinct chunk ids the manifest references.
    pub chunk_ids: Vec<ChunkId>,
    /// Everything the AEAD's associated data covers.
    head: &'a [u8],
    body: &'a [u8],
    signed: &'a [u8],
    mac: &'a [u8],
}

/// Parses the structure of a sealed manifest (no authentication: coordinators, which hold no
/// key, use it to find the chunks a manifest uses).
pub fn parse(sealed: &[u8]) -> Result<Envelope<'_>> {
    let bad = |what: &str| Error::ManifestFormat(what.to_string());
    if sealed.len() > MAX_MANIFEST_LEN {
        return Err(bad("larger than the manifest limit"));
    }
    if sealed.len() < FIXED_HEAD + 1 + 4 + 4 + TAG_LEN + MAC_LEN {
        return Err(bad("too short: truncated"));
    }
    if sealed[0..4] != MAGIC {
        return Err(bad("not a strongbox manifest (bad magic)"));
    }
    if sealed[4] != FORMAT_VERSION {
        return Err(Error::ManifestFormat(format!(
            "format version {}; this build reads version {FORMAT_VERSION}: upgrade strongbox",
            sealed[4]
        )));
    }
    let u32_at = |at: usize| -> Result<u32> {
        sealed
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| bad("truncated"))
    };
    let key_id = u32_at(5)?;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&sealed[9..9 + NONCE_LEN]);
    let id_len = sealed[FIXED_HEAD] as usize;
    if id_len == 0 || id_len > MAX_BACKUP_ID_LEN {
        return Err(bad("backup id length out of range"));
    }
    let id_end = FIXED_HEAD + 1 + id_len;
    let backup_id = sealed
        .get(FIXED_HEAD + 1..id_end)
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or_else(|| bad("backup id truncated or not UTF-8"))?;
    let ids_start = id_end + 4;
    let n = u32_at(id_end)? as usize;
    let ids_end = n
        .checked_mul(CHUNK_ID_LEN)
        .and_then(|l| l.checked_add(ids_start))
        .filter(|end| *end + 4 <= sealed.len())
        .ok_or_else(|| bad("chunk list runs past the end: truncated"))?;
    let chunk_ids = sealed[ids_start..ids_end]
        .chunks_exact(CHUNK_ID_LEN)
        .map(ChunkId::from_slice)
        .collect::<Result<Vec<_>>>()?;
    let body_len = u32_at(ids_end)? as usize;
    let body_start = ids_end + 4;
    let body_end = body_start
        .checked_add(body_len)
        .filter(|end| *end + MAC_LEN == sealed.len())
        .ok_or_else(|| bad("body length disagrees with the size: truncated or padded"))?;
    if body_len < TAG_LEN {
        return Err(bad("body too short"));
    }
    Ok(Envelope {
        key_id,
        nonce,
        backup_id,
        chunk_ids,
        head: &sealed[..body_start],
        body: &sealed[body_start..body_end],
        signed: &sealed[..body_end],
        mac: &sealed[body_end..],
    })
}

/// Checks and opens a sealed manifest with the keys of `service` from `keyring`.
pub fn open(keyring: &Keyring, service: &str, sealed: &[u8]) -> Result<Manifest> {
    let env = parse(sealed)?;
    let keys = keyring.service_keys(env.key_id, service)?;
    open_envelope(&keys, &env)
}

/// Checks and opens a sealed manifest with one service's keys.
pub fn open_with(keys: &ServiceKeys, sealed: &[u8]) -> Result<Manifest> {
    open_envelope(keys, &parse(sealed)?)
}

fn open_envelope(keys: &ServiceKeys, env: &Envelope<'_>) -> Result<Manifest> {
    if env.key_id != keys.key_id() {
        return Err(Error::ManifestFormat(format!(
            "sealed under fleet key {}, but the keys given are of fleet key {}",
            env.key_id,
            keys.key_id()
        )));
    }
    hmac::verify(keys.mac_key(), env.signed, env.mac).map_err(|_| Error::ManifestAuth)?;
    let mut body = env.body.to_vec();
    let plain = keys
        .data_key()
        .open_in_place(
            Nonce::assume_unique_for_key(env.nonce),
            Aad::from(env.head),
            &mut body,
        )
        .map_err(|_| Error::ManifestAuth)?;
    let m: Manifest = prost::Message::decode(&*plain)
        .map_err(|e| Error::ManifestFormat(format!("body does not decode: {e}")))?;
    for p in &m.parts {
        if PartKind::try_from(p.kind).is_err() {
            return Err(Error::ManifestFormat(format!(
                "part {:?} has unknown kind {}",
                p.name, p.kind
            )));
        }
    }
    if m.backup_id != env.backup_id {
        return Err(Error::ManifestFormat(
            "the public backup id disagrees with the body".into(),
        ));
    }
    if m.chunk_ids()? != env.chunk_ids {
        return Err(Error::ManifestFormat(
            "the public chunk list disagrees with the parts".into(),
        ));
    }
    if m.totals != Some(m.compute_totals()) {
        return Err(Error::ManifestFormat(
            "totals disagree with the parts".into(),
        ));
    }
    Ok(m)
}
