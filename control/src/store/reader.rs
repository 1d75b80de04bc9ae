//! Reads of the applied state, for the API server: objects, lists and history (for watches),
//! each the overlay over the file, and the applied revision to follow.

use std::collections::BTreeMap;
use std::sync::Arc;

use redb::{Database, ReadTransaction, ReadableDatabase};
use tokio::sync::watch;

use super::db::{HISTORY, OBJECTS, SM_META, decode, io_err};
use super::history::{Change, HistoryError, HistoryScan, history_after};
use super::sm_meta::{applied_in, read_meta};
use super::types::{ObjectKey, StorageError};
use super::unflushed::Unflushed;
use super::writer::SharedUnflushed;

/// An object's store key and its JSON.
pub type KeyedObject = (String, Vec<u8>);

/// Read access to the applied state, shared with the API server.
#[derive(Clone)]
pub struct StoreReader {
    pub(super) db: Arc<Database>,
    pub(super) unflushed: SharedUnflushed,
    pub(super) applied: watch::Receiver<u64>,
}

impl StoreReader {
    /// The last applied revision.
    pub fn revision(&self) -> u64 {
        *self.applied.borrow()
    }

    /// A receiver that changes whenever a revision is applied.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    /// Copies what `copy` needs from the overlay, and opens a read transaction of the file while
    /// the overlay is locked: so the file is never older than the overlay's base (see
    /// [`Unflushed`]). The file is then read without holding up the writer.
    fn read<T>(&self, copy: impl FnOnce(&Unflushed) -> T) -> Result<(T, ReadTransaction), StorageError> {
        let unflushed = self.unflushed.read().expect("overlay lock");
        let tx = self.db.begin_read().map_err(io_err)?;
        Ok((copy(&unflushed), tx))
    }

    /// One object (JSON), if it exists.
    pub fn get(&self, key: &ObjectKey) -> Result<Option<Vec<u8>>, StorageError> {
        let (unflushed, tx) = self.read(|u| u.object(&key.0).map(|o| o.map(<[u8]>::to_vec)))?;
        if let Some(object) = unflushed {
            return Ok(object);
        }
        let table = tx.open_table(OBJECTS).map_err(io_err)?;
        Ok(table.get(key.0.as_str()).map_err(io_err)?.map(|v| v.value().to_vec()))
    }

    /// Every object whose key starts with `prefix`, and the revision they were read at.
    pub fn list(&self, prefix: &str) -> Result<(u64, Vec<Vec<u8>>), StorageError> {
        let (revision, entries) = self.entries(prefix)?;
        Ok((revision, entries.into_iter().map(|(_, v)| v).collect()))
    }

    /// Like [`StoreReader::list`], with each object's key.
    pub fn entries(&self, prefix: &str) -> Result<(u64, Vec<KeyedObject>), StorageError> {
        let (revision, items, _) = self.entries_page(prefix, None, usize::MAX)?;
        Ok((revision, items))
    }

    /// At most `limit` of the objects whose keys start with `prefix` and come after `after`, in
    /// key order, with the revision they were read at and whether more follow. Reads no more
    /// of the file than the page needs.
    pub fn entries_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(u64, Vec<KeyedObject>, bool), StorageError> {
        let past = |key: &str| after.is_none_or(|a| key > a);
        let ((last_applied, unflushed), tx) = self.read(|u| {
            let objects: Vec<(String, Option<Vec<u8>>)> =
                u.objects_with_prefix(prefix).filter(|(k, _)| past(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
            (u.last_applied, objects)
        })?;
        let revision = match last_applied {
            Some(last) => last.index,
            None => applied_in(&tx)?,
        };
        // The overlay's deletions remove at most as many of the file's objects as it holds, so
        // this many from the file fill the page (and tell whether more follow).
        let wanted = limit.saturating_add(unflushed.len()).saturating_add(1);
        let start = after.filter(|a| *a > prefix).unwrap_or(prefix);
        let table = tx.open_table(OBJECTS).map_err(io_err)?;
        let mut file = Vec::new();
        for item in table.range(start..).map_err(io_err)? {
            let (k, v) = item.map_err(io_err)?;
            let key = k.value();
            if !key.starts_with(prefix) || file.len() == wanted {
                break;
            }
            if past(key) {
                file.push((key.to_owned(), v.value().to_vec()));
            }
        }
        let mut items = if unflushed.is_empty() {
            file
        } else {
            let mut items: BTreeMap<String, Vec<u8>> = file.into_iter().collect();
            for (key, object) in unflushed {
                match object {
                    Some(bytes) => items.insert(key, bytes),
                    None => items.remove(&key),
                };
            }
            items.into_iter().collect()
        };
        let more = items.len() > limit;
        items.truncate(limit);
        Ok((revision, items, more))
    }

    /// The revision up to which the change history has been dropped: a list continued from an
    /// older revision could not be followed by a watch from it.
    pub fn compacted(&self) -> Result<u64, StorageError> {
        let tx = self.db.begin_read().map_err(io_err)?;
        let meta = tx.open_table(SM_META).map_err(io_err)?;
        Ok(read_meta(&meta, "compacted")?.unwrap_or(0))
    }

    /// Changes after revision `after` to keys starting with `prefix`, at most `limit` of them
    /// (the last one returned tells where to continue). Also returns the revision read up to.
    pub fn changes_after(&self, after: u64, prefix: &str, limit: usize) -> Result<(Vec<Change>, u64), HistoryError> {
        let storage = |e: StorageError| HistoryError::Storage(Box::new(e));
        let ((last_applied, overlay), tx) = self
            .read(|u| {
                let changes: Vec<(u64, Change)> =
                    u.history.range(history_after(after)..).map(|(k, c)| (*k, c.clone())).collect();
                (u.last_applied, changes)
            })
            .map_err(storage)?;
        let meta = tx.open_table(SM_META).map_err(io_err).map_err(storage)?;
        let compacted: u64 = read_meta(&meta, "compacted").map_err(storage)?.unwrap_or(0);
        if after < compacted {
            return Err(HistoryError::Compacted { requested: after, compacted });
        }
        let applied = match last_applied {
            Some(last) => last.index,
            None => applied_in(&tx).map_err(storage)?,
        };
        let mut scan = HistoryScan { prefix, limit, changes: Vec::new(), full_at: None, scanned_to: None };
        // The overlay's changes are newer than the file's; the file may hold some of them too
        // (flushed, not yet cleared), and those are read from the overlay only.
        let file_end = overlay.first().map_or(u64::MAX, |(k, _)| *k);
        let table = tx.open_table(HISTORY).map_err(io_err).map_err(storage)?;
        for item in table.range(history_after(after)..file_end).map_err(io_err).map_err(storage)? {
            let (key, v) = item.map_err(io_err).map_err(storage)?;
            if !scan.visit(key.value(), || decode::<Change>(v.value())).map_err(storage)? {
                break;
            }
        }
        if scan.scanned_to.is_none() {
            for (key, change) in overlay {
                if !scan.visit(key, || Ok(change)).map_err(storage)? {
                    break;
                }
            }
        }
        Ok((scan.changes, scan.scanned_to.unwrap_or(applied)))
    }
}
