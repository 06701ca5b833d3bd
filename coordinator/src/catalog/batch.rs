//! The writes of one apply step, as sled's batch with the keys it writes: a snapshot being
//! exported meanwhile keeps the values those keys had before ([`super::snapshot`]).
//!
//! Invariant: the catalog's tree is written only through [`Batch`] and
//! [`super::Catalog::write`], so an export sees every write.

use sled::IVec;

/// Writes applied together, later ones winning (as `sled::Batch`).
#[derive(Default, Debug)]
pub struct Batch {
    writes: Vec<(IVec, Option<IVec>)>,
}

impl Batch {
    pub fn insert(&mut self, key: impl Into<IVec>, value: impl Into<IVec>) {
        self.writes.push((key.into(), Some(value.into())));
    }

    pub fn remove(&mut self, key: impl Into<IVec>) {
        self.writes.push((key.into(), None));
    }

    /// The keys written (a key written twice comes twice).
    pub fn keys(&self) -> impl Iterator<Item = &IVec> {
        self.writes.iter().map(|(k, _)| k)
    }

    pub(super) fn into_sled(self) -> sled::Batch {
        let mut b = sled::Batch::default();
        for (k, v) in self.writes {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        b
    }
}
