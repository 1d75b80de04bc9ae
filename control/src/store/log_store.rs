//! Raft's log and vote in redb. Writes go through the [`Writer`] thread, which commits them in
//! groups together with the state machine's applies; entries queued but not yet committed are
//! read from its `pending` map.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogReader, Vote};
use redb::{Database, ReadableDatabase, ReadableTable};

use super::db::{LOG, RAFT_META, decode, encode, io_err};
use super::types::{Entry, LogId, MemberId, StorageError, TypeConfig};
use super::writer::{Job, Writer};

/// The log store; cheap to clone (the log reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    writer: Writer,
}

impl LogStore {
    /// A log store over the shared database, written through `writer`.
    pub fn new(db: Arc<Database>, writer: Writer) -> Self {
        LogStore { db, writer }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.writer.pending().lock().expect("pending log lock")
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        let tx = self.db.begin_read().map_err(io_err)?;
        let table = tx.open_table(RAFT_META).map_err(io_err)?;
        match table.get(key).map_err(io_err)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    async fn write_meta<T: serde::Serialize>(&self, key: &'static str, value: &T) -> Result<(), StorageError> {
        let value = encode(value);
        self.writer.run(|done| Job::Meta { key, value, durable: true, done: Some(done) }).await
    }
}

fn to_range(range: impl RangeBounds<u64>) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        // The queued tail first, then the file: an entry committed in between has left the tail
        // but is in the file by then (read the other way round, it could be in neither).
        let queued: Vec<(u64, Entry)> =
            self.pending().range(to_range(range.clone())).map(|(index, entry)| (*index, entry.clone())).collect();
        let mut entries = BTreeMap::new();
        {
            let tx = self.db.begin_read().map_err(io_err)?;
            let table = tx.open_table(LOG).map_err(io_err)?;
            for item in table.range::<u64>(to_range(range)).map_err(io_err)? {
                let (index, v) = item.map_err(io_err)?;
                entries.insert(index.value(), decode::<Entry>(v.value())?);
            }
        }
        // A queued entry wins over the file's (after a truncation the file may still hold the
        // entry it replaces).
        entries.extend(queued);
        Ok(entries.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.read_meta("last_purged")?;
        if let Some((_, entry)) = self.pending().last_key_value() {
            return Ok(LogState { last_purged_log_id: last_purged, last_log_id: Some(entry.log_id) });
        }
        let tx = self.db.begin_read().map_err(io_err)?;
        let table = tx.open_table(LOG).map_err(io_err)?;
        let last = match table.last().map_err(io_err)? {
            Some((_, v)) => Some(decode::<Entry>(v.value())?.log_id),
            None => last_purged,
        };
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<MemberId>) -> Result<(), StorageError> {
        self.write_meta("vote", vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<MemberId>>, StorageError> {
        self.read_meta("vote")
    }

    /// The committed id is a hint (it lets a restart re-apply sooner), so it rides along with
    /// the next durable commit instead of costing an fsync of its own.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.writer.send(Job::Meta { key: "committed", value: encode(&committed), durable: false, done: None })
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_meta::<Option<LogId>>("committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut encoded = Vec::new();
        {
            let mut pending = self.pending();
            for entry in entries {
                encoded.push((entry.log_id, encode(&entry)));
                pending.insert(entry.log_id.index, entry);
            }
        }
        self.writer.send(Job::Append { entries: encoded, callback })
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.pending().retain(|index, _| *index < log_id.index);
        self.writer.run(|done| Job::Truncate { from: log_id.index, done }).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.writer.run(|done| Job::Purge { upto: log_id, done }).await
    }
}
