//! Paged reads (issue 17, point 4): one page of a list at a time, hosts and services by name,
//! backups, jobs and the audit log newest first, each resuming after the last key the page
//! before it returned.
//!
//! Invariants: a page reads at most `limit + 1` keys and decodes at most `limit` records (an
//! index entry whose record is gone is skipped, never replaced by a further read), so a page
//! costs its size, never the list's; a page token is the last key a page returned, so pages
//! never repeat or skip a record that stays; a token of another list is refused.

use crate::store;
use std::ops::Bound;

use prost::Message;
use strongbox_proto::catalog::{AuditRecord, BackupRecord, HostRecord, JobRecord, ServiceRecord};
use strongbox_proto::v1::{JobKind, RefusalCode};

use super::index;
use super::Catalog;
use crate::error::{Error, Result};

/// The records of one page, and the key to resume after (`None`: this was the last page).
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Vec<u8>>,
}

/// Which way a list runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// In key order: names.
    Ascending,
    /// Against key order: the newest first, for keys that sort by time.
    NewestFirst,
}

/// The first key after every key that starts with `prefix` (prefixes end with `/` or NUL, so
/// the last byte never overflows).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

impl Catalog {
    /// Up to `limit` keys and values under `prefix`, after `after` in `order`, and whether
    /// more follow. `after` must be a key under `prefix` (a token of this list).
    fn page_entries(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        order: Order,
        limit: usize,
    ) -> Result<(Vec<(store::Bytes, store::Bytes)>, bool)> {
        if let Some(a) = after {
            if !a.starts_with(prefix) || a.len() == prefix.len() {
                return Err(Error::Catalog {
                    code: RefusalCode::Invalid,
                    message: "the page token is not one of this list (a token works only with \
                              the same command and filters that returned it)"
                        .to_string(),
                });
            }
        }
        let end = prefix_end(prefix);
        let range = match (order, after) {
            (_, None) => (Bound::Included(prefix.to_vec()), Bound::Excluded(end)),
            (Order::Ascending, Some(a)) => (Bound::Excluded(a.to_vec()), Bound::Excluded(end)),
            (Order::NewestFirst, Some(a)) => (
                Bound::Included(prefix.to_vec()),
                Bound::Excluded(a.to_vec()),
            ),
        };
        let iter = self.tree().range::<Vec<u8>, _>(range);
        let iter: Box<dyn Iterator<Item = store::Entry>> = match order {
            Order::Ascending => Box::new(iter),
            Order::NewestFirst => Box::new(iter.rev()),
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        for kv in iter {
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(kv?);
        }
        Ok((out, false))
    }

    /// A page of records stored under `prefix` itself (`host/`, `service/`, `audit/`).
    fn page_of_records<M: Message + Default>(
        &self,
        prefix: &[u8],
        what: &'static str,
        after: Option<&[u8]>,
        order: Order,
        limit: usize,
    ) -> Result<Page<M>> {
        let (entries, more) = self.page_entries(prefix, after, order, limit)?;
        let next = more
            .then(|| entries.last().map(|(k, _)| k.to_vec()))
            .flatten();
        let items = entries
            .iter()
            .map(|(_, v)| self.decode(what, v))
            .collect::<Result<_>>()?;
        Ok(Page { items, next })
    }

    /// A page of the records an index under `prefix` names, read with `get` (records gone
    /// since are skipped).
    fn page_of_index<T>(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        get: impl Fn(&str) -> Result<Option<T>>,
    ) -> Result<Page<T>> {
        let (entries, more) = self.page_entries(prefix, after, Order::NewestFirst, limit)?;
        let next = more
            .then(|| entries.last().map(|(k, _)| k.to_vec()))
            .flatten();
        let mut items = Vec::with_capacity(entries.len());
        for (k, _) in &entries {
            if let Some(record) = get(&index::id_of(k))? {
                items.push(record);
            }
        }
        Ok(Page { items, next })
    }

    /// Hosts by name.
    pub fn hosts_page(&self, after: Option<&[u8]>, limit: usize) -> Result<Page<HostRecord>> {
        self.page_of_records(b"host/", "host record", after, Order::Ascending, limit)
    }

    /// Services by name.
    pub fn services_page(&self, after: Option<&[u8]>, limit: usize) -> Result<Page<ServiceRecord>> {
        self.page_of_records(
            b"service/",
            "service record",
            after,
            Order::Ascending,
            limit,
        )
    }

    /// The audit log, newest entry first.
    pub fn audit_page(&self, after: Option<&[u8]>, limit: usize) -> Result<Page<AuditRecord>> {
        self.page_of_records(b"audit/", "audit record", after, Order::NewestFirst, limit)
    }

    /// Backups, newest first: of `service`, or of every service when it is empty.
    pub fn backups_page(
        &self,
        service: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<BackupRecord>> {
        let prefix = if service.is_empty() {
            index::prefix(index::BACKUPS_BY_TIME, "")
        } else {
            index::prefix(index::BACKUPS_BY_SERVICE, service)
        };
        self.page_of_index(&prefix, after, limit, |id| self.backup(id))
    }

    /// Jobs of `kind`, newest first: of `service` (every service when empty).
    pub fn jobs_page(
        &self,
        kind: JobKind,
        service: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<JobRecord>> {
        let prefix = index::prefix(
            index::JOBS_BY_CREATED,
            &index::jobs_created_by(kind, service),
        );
        self.page_of_index(&prefix, after, limit, |id| self.job(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_before_the_next_one() {
        assert_eq!(prefix_end(b"host/"), b"host0".to_vec());
        assert_eq!(
            prefix_end(b"jobs-created/*\0"),
            b"jobs-created/*\x01".to_vec()
        );
    }
}
