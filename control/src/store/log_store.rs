//! Raft's log and vote in redb. An append is committed with fsync (redb's default durability)
//! before openraft is told it is flushed, so an acknowledged entry survives a crash.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogReader, Vote};
use redb::{Database, ReadableDatabase, ReadableTable};

use super::db::{LOG, RAFT_META, blocking, decode, encode, io_err};
use super::types::{Entry, LogId, MemberId, StorageError, TypeConfig};

/// The log store; cheap to clone (the log reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    /// A log store over the shared database.
    pub fn new(db: Arc<Database>) -> Self {
        LogStore { db }
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
        let db = self.db.clone();
        let bytes = encode(value);
        blocking(move || {
            let tx = db.begin_write().map_err(io_err)?;
            tx.open_table(RAFT_META).map_err(io_err)?.insert(key, bytes.as_slice()).map_err(io_err)?;
            tx.commit().map_err(io_err)
        })
        .await
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
        let tx = self.db.begin_read().map_err(io_err)?;
        let table = tx.open_table(LOG).map_err(io_err)?;
        let mut entries = Vec::new();
        for item in table.range::<u64>(to_range(range)).map_err(io_err)? {
            let (_, v) = item.map_err(io_err)?;
            entries.push(decode(v.value())?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.read_meta("last_purged")?;
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

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.write_meta("committed", &committed).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_meta::<Option<LogId>>("committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let encoded: Vec<(u64, Vec<u8>)> = entries.into_iter().map(|e| (e.log_id.index, encode(&e))).collect();
        let db = self.db.clone();
        let result = blocking(move || {
            let tx = db.begin_write().map_err(io_err)?;
            {
                let mut table = tx.open_table(LOG).map_err(io_err)?;
                for (index, bytes) in &encoded {
                    table.insert(index, bytes.as_slice()).map_err(io_err)?;
                }
            }
            tx.commit().map_err(io_err)
        })
        .await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let db = self.db.clone();
        blocking(move || {
            let tx = db.begin_write().map_err(io_err)?;
            tx.open_table(LOG).map_err(io_err)?.retain_in(log_id.index.., |_, _| false).map_err(io_err)?;
            tx.commit().map_err(io_err)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let db = self.db.clone();
        let bytes = encode(&log_id);
        blocking(move || {
            let tx = db.begin_write().map_err(io_err)?;
            tx.open_table(RAFT_META).map_err(io_err)?.insert("last_purged", bytes.as_slice()).map_err(io_err)?;
            tx.open_table(LOG).map_err(io_err)?.retain_in(..=log_id.index, |_, _| false).map_err(io_err)?;
            tx.commit().map_err(io_err)
        })
        .await
    }
}
