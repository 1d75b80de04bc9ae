//! The change history: every change to an object, kept in the `history` table under its
//! revision (the raft log index), which is what watches read.
//!
//! A batch entry records several changes at one revision, so a history key is the revision with
//! a sequence number below it. History older than a retention window is dropped at flushes (in
//! steps, so that the cost is paid once in a while), and a watch from before it is answered with
//! 410 Gone ([`HistoryError::Compacted`]).

use redb::WriteTransaction;
use serde::{Deserialize, Serialize};

use super::db::{HISTORY, SM_META, io_err};
use super::sm_meta::{put_meta, read_meta};
use super::types::StorageError;

/// What a change did to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Deleted.
    Deleted,
}

/// One entry of the change history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The revision (raft log index) of the change.
    pub revision: u64,
    /// What happened.
    pub kind: ChangeKind,
    /// Which object.
    pub key: String,
    /// The object after the change (before it, for a delete, with the delete's revision).
    pub object: Vec<u8>,
}

/// Why changes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The revision asked for is older than the retained history.
    #[error("revision {requested} has been compacted (history starts after {compacted})")]
    Compacted {
        /// What was asked for.
        requested: u64,
        /// Everything at or before this revision is gone.
        compacted: u64,
    },
    /// The disk failed.
    #[error(transparent)]
    Storage(#[from] Box<StorageError>),
}

/// Bits of a history key below the revision: a batch entry's changes share its revision and
/// are told apart (and kept in order) by a sequence number.
const SEQ_BITS: u32 = 16;

/// The history key of the `seq`-th change at `revision`.
pub(super) fn history_key(revision: u64, seq: u64) -> u64 {
    (revision << SEQ_BITS) | seq
}

/// The first history key after every change at `revision`.
pub(super) fn history_after(revision: u64) -> u64 {
    (revision + 1) << SEQ_BITS
}

/// The most changes one entry may record.
pub const MAX_CHANGES_PER_ENTRY: usize = 1 << SEQ_BITS;

/// Collects history changes in key order up to a limit, never stopping inside a revision (a
/// reader resumes after whole revisions).
pub(super) struct HistoryScan<'a> {
    pub(super) prefix: &'a str,
    pub(super) limit: usize,
    pub(super) changes: Vec<Change>,
    /// The revision at which the limit was reached.
    pub(super) full_at: Option<u64>,
    /// Where the scan stopped early: the last revision it read whole.
    pub(super) scanned_to: Option<u64>,
}

impl HistoryScan<'_> {
    /// Takes the change at history key `key` (decoded only if needed); false once the scan is
    /// done.
    pub(super) fn visit(
        &mut self,
        key: u64,
        change: impl FnOnce() -> Result<Change, StorageError>,
    ) -> Result<bool, StorageError> {
        let revision = key >> SEQ_BITS;
        if let Some(full) = self.full_at
            && revision != full
        {
            self.scanned_to = Some(full);
            return Ok(false);
        }
        let change = change()?;
        if change.key.starts_with(self.prefix) {
            self.changes.push(change);
            if self.changes.len() >= self.limit && self.full_at.is_none() {
                self.full_at = Some(revision);
            }
        }
        Ok(true)
    }
}

/// Drops history older than the retention window, in steps of a tenth of it so that the cost is
/// paid once in a while rather than on every write.
pub(super) fn compact_history(tx: &WriteTransaction, applied: u64, keep: u64) -> Result<(), StorageError> {
    let meta = tx.open_table(SM_META).map_err(io_err)?;
    let compacted: u64 = read_meta(&meta, "compacted")?.unwrap_or(0);
    drop(meta);
    let cutoff = applied.saturating_sub(keep);
    if cutoff >= compacted + (keep / 10).max(1) {
        tx.open_table(HISTORY).map_err(io_err)?.retain_in(..history_after(cutoff), |_, _| false).map_err(io_err)?;
        put_meta(tx, "compacted", &cutoff)?;
    }
    Ok(())
}
