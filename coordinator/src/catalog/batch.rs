//! The writes of one apply step, applied to the catalog's active tree in one atomic
//! [`crate::store::Batch`] by [`super::Catalog::write`].
//!
//! Invariant: the catalog's tree is written only through [`Batch`] and
//! [`super::Catalog::write`] (and replaced whole by a snapshot install), so an apply step's
//! writes and its applied index land together or not at all.

use crate::store;

/// Writes applied together, later ones winning.
#[derive(Default, Debug)]
pub struct Batch {
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.writes
            .push((key.as_ref().to_vec(), Some(value.as_ref().to_vec())));
    }

    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.writes.push((key.as_ref().to_vec(), None));
    }

    /// The same writes as a store batch on `tree`.
    pub(super) fn into_store(self, store: &store::Store, tree: &store::Tree) -> store::Batch {
        let mut b = store.batch();
        for (k, v) in self.writes {
            match v {
                Some(v) => b.insert(tree, k, v),
                None => b.remove(tree, k),
            }
        }
        b
    }
}
