//! State-machine changes that are applied but not yet written to redb.
//!
//! Every redb commit copies each B-tree page it touches, so applying each raft entry in a commit
//! of its own made every member copy a leaf per object written, entry after entry: in the
//! control-plane benchmark the state machine's commits were the largest cost of a write. The
//! state machine therefore applies into this overlay, which readers consult before the file,
//! and the writer thread writes the overlay out once in a while ([`FLUSH_AFTER`]), in a
//! transaction it commits anyway. Nothing is lost by waiting: applied entries are durable in a
//! quorum's raft log, the overlay is written together with the `last_applied` it reflects, and
//! a restart re-applies from the log what the file does not have yet (the log is purged only
//! after a flush). `flush_in` writes it out, and compacts the history as it goes.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::{Duration, Instant};

use redb::WriteTransaction;

use super::db::{HISTORY, OBJECTS, encode, io_err};
use super::history::{Change, compact_history};
use super::sm_meta::put_meta;
use super::types::{LogId, StorageError, StoredMembership};

/// How long applied changes may wait for a flush. A flush holds up the log appends queued
/// behind it, so longer is not simply better: with 64 clients 20 ms gave 1.22x etcd's creates/s,
/// 40 ms 1.30-1.36x (p99 13-26 ms), 100 ms 1.28x with a p99 of 29 ms (BENCHMARKS.md).
pub const FLUSH_AFTER: Duration = Duration::from_millis(40);
/// How many changed keys the overlay holds before it is flushed regardless of age.
const FLUSH_KEYS: usize = 10_000;

/// The overlay. Readers take its lock and open their redb read transaction while holding it,
/// and the writer clears it only after the commit that wrote it out: a reader sees every change
/// either here or in the file (or both, where the overlay wins), never neither.
#[derive(Default)]
pub struct Unflushed {
    /// Objects by key; `None` for a deleted one.
    pub objects: BTreeMap<String, Option<Vec<u8>>>,
    /// History by history key (all newer than the file's).
    pub history: BTreeMap<u64, Change>,
    /// The last applied log id, once anything was applied since the last flush.
    pub last_applied: Option<LogId>,
    /// The membership, if an entry changed it since the last flush.
    pub membership: Option<StoredMembership>,
    /// How many revisions of history to keep (compaction runs at flush time).
    pub history_revisions: u64,
    /// When the oldest change still unflushed was applied.
    since: Option<Instant>,
}

impl Unflushed {
    /// Notes that a change was just applied.
    pub fn touch(&mut self) {
        self.since.get_or_insert_with(Instant::now);
    }

    /// Whether there is anything to flush.
    pub fn is_empty(&self) -> bool {
        self.since.is_none()
    }

    /// When a flush becomes due (`None` with nothing to flush).
    pub fn due_at(&self) -> Option<Instant> {
        let since = self.since?;
        if self.objects.len() + self.history.len() >= FLUSH_KEYS {
            return Some(since);
        }
        Some(since + FLUSH_AFTER)
    }

    /// Forgets everything (after it was written out, or replaced by a snapshot).
    pub fn clear(&mut self) {
        *self = Unflushed { history_revisions: self.history_revisions, ..Unflushed::default() };
    }

    /// An object's unflushed state: `Some(None)` if deleted, `None` if the file has the latest.
    pub fn object(&self, key: &str) -> Option<Option<&[u8]>> {
        self.objects.get(key).map(Option::as_deref)
    }

    /// The unflushed objects whose key starts with `prefix`.
    pub fn objects_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Option<Vec<u8>>)> + 'a {
        self.objects
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
    }
}

/// Writes the overlay into `tx` (the writer's group transaction), and drops history that has
/// left the retention window.
pub(super) fn flush_in(tx: &WriteTransaction, unflushed: &Unflushed) -> Result<(), StorageError> {
    {
        let mut objects = tx.open_table(OBJECTS).map_err(io_err)?;
        for (key, object) in &unflushed.objects {
            match object {
                Some(bytes) => objects.insert(key.as_str(), bytes.as_slice()).map_err(io_err)?,
                None => objects.remove(key.as_str()).map_err(io_err)?,
            };
        }
        let mut history = tx.open_table(HISTORY).map_err(io_err)?;
        for (key, change) in &unflushed.history {
            history.insert(key, encode(change).as_slice()).map_err(io_err)?;
        }
    }
    if let Some(membership) = &unflushed.membership {
        put_meta(tx, "membership", membership)?;
    }
    if let Some(last) = unflushed.last_applied {
        put_meta(tx, "last_applied", &Some(last))?;
        compact_history(tx, last.index, unflushed.history_revisions.max(1))?;
    }
    Ok(())
}
