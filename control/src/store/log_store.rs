//! Raft's log and vote in redb, written by one writer thread that commits in groups.
//!
//! openraft hands appends to storage one client write at a time and waits for `append` to
//! return before it processes the next message; were each append its own fsync'd transaction,
//! throughput would be one write per fsync. Instead `append` queues the entries and returns at
//! once, and the writer thread commits everything queued since its last commit in one redb
//! transaction (one fsync), then tells openraft which entries are flushed. openraft counts an
//! entry toward a quorum only once told, so nothing is acknowledged before it is durable.
//!
//! Entries queued but not yet committed are kept in memory (`pending`) so that readers (e.g.
//! replication to followers) see them at once.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, mpsc};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogReader, Vote};
use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use tokio::sync::oneshot;

use super::db::{LOG, RAFT_META, decode, encode, io_err};
use super::types::{Entry, LogId, MemberId, StorageError, TypeConfig};

/// Most jobs one group commit takes.
const MAX_GROUP: usize = 4096;

enum Job {
    Append { entries: Vec<(LogId, Vec<u8>)>, callback: LogFlushed<TypeConfig> },
    Meta { key: &'static str, value: Vec<u8>, durable: bool, done: Option<oneshot::Sender<Result<(), String>>> },
    Truncate { from: u64, done: oneshot::Sender<Result<(), String>> },
    Purge { upto: LogId, done: oneshot::Sender<Result<(), String>> },
}

impl Job {
    fn needs_fsync(&self) -> bool {
        !matches!(self, Job::Meta { durable: false, .. })
    }
}

/// The log store; cheap to clone (the log reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    pending: Arc<Mutex<BTreeMap<u64, Entry>>>,
    writer: mpsc::Sender<Job>,
}

impl LogStore {
    /// A log store over the shared database; starts its writer thread.
    pub fn new(db: Arc<Database>) -> Self {
        let pending = Arc::new(Mutex::new(BTreeMap::new()));
        let (writer, jobs) = mpsc::channel();
        let (thread_db, thread_pending) = (db.clone(), pending.clone());
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || write_loop(&thread_db, &thread_pending, jobs))
            .expect("spawn the raft log writer thread");
        LogStore { db, pending, writer }
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        let tx = self.db.begin_read().map_err(io_err)?;
        let table = tx.open_table(RAFT_META).map_err(io_err)?;
        match table.get(key).map_err(io_err)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// Queues `job` and waits until the writer has committed it.
    async fn submit(&self, job: Job, done: oneshot::Receiver<Result<(), String>>) -> Result<(), StorageError> {
        let stopped = || io_err(std::io::Error::other("the raft log writer has stopped"));
        self.writer.send(job).map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?.map_err(|e| io_err(std::io::Error::other(e)))
    }

    async fn write_meta<T: serde::Serialize>(&self, key: &'static str, value: &T) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Meta { key, value: encode(value), durable: true, done: Some(tx) }, rx).await
    }
}

/// The writer thread: takes every queued job, commits them in one transaction, reports.
fn write_loop(db: &Database, pending: &Mutex<BTreeMap<u64, Entry>>, jobs: mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let result = commit_group(db, &group).map_err(|e| e.to_string());
        if result.is_ok() {
            let mut pending = pending.lock().expect("pending log lock");
            for job in &group {
                if let Job::Append { entries, .. } = job {
                    for (log_id, _) in entries {
                        if pending.get(&log_id.index).is_some_and(|e| e.log_id == *log_id) {
                            pending.remove(&log_id.index);
                        }
                    }
                }
            }
        }
        for job in group {
            match job {
                Job::Append { callback, .. } => {
                    callback.log_io_completed(result.clone().map_err(std::io::Error::other));
                }
                Job::Meta { done, .. } => {
                    if let Some(done) = done {
                        let _ = done.send(result.clone());
                    }
                }
                Job::Truncate { done, .. } | Job::Purge { done, .. } => {
                    let _ = done.send(result.clone());
                }
            }
        }
    }
}

fn commit_group(db: &Database, group: &[Job]) -> Result<(), redb::Error> {
    let mut tx = db.begin_write()?;
    if !group.iter().any(Job::needs_fsync) {
        tx.set_durability(Durability::None)?;
    }
    {
        let mut log = tx.open_table(LOG)?;
        let mut meta = tx.open_table(RAFT_META)?;
        for job in group {
            match job {
                Job::Append { entries, .. } => {
                    for (log_id, bytes) in entries {
                        log.insert(log_id.index, bytes.as_slice())?;
                    }
                }
                Job::Meta { key, value, .. } => {
                    meta.insert(*key, value.as_slice())?;
                }
                Job::Truncate { from, .. } => {
                    log.retain_in(*from.., |_, _| false)?;
                }
                Job::Purge { upto, .. } => {
                    meta.insert("last_purged", encode(upto).as_slice())?;
                    log.retain_in(..=upto.index, |_, _| false)?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(())
}

fn to_range(range: impl RangeBounds<u64>) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let mut entries = BTreeMap::new();
        {
            let tx = self.db.begin_read().map_err(io_err)?;
            let table = tx.open_table(LOG).map_err(io_err)?;
            for item in table.range::<u64>(to_range(range.clone())).map_err(io_err)? {
                let (index, v) = item.map_err(io_err)?;
                entries.insert(index.value(), decode::<Entry>(v.value())?);
            }
        }
        let pending = self.pending.lock().expect("pending log lock");
        for (index, entry) in pending.range(to_range(range)) {
            entries.insert(*index, entry.clone());
        }
        Ok(entries.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.read_meta("last_purged")?;
        if let Some((_, entry)) = self.pending.lock().expect("pending log lock").last_key_value() {
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
        let job = Job::Meta { key: "committed", value: encode(&committed), durable: false, done: None };
        self.writer.send(job).map_err(|_| io_err(std::io::Error::other("the raft log writer has stopped")))
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
            let mut pending = self.pending.lock().expect("pending log lock");
            for entry in entries {
                encoded.push((entry.log_id, encode(&entry)));
                pending.insert(entry.log_id.index, entry);
            }
        }
        self.writer
            .send(Job::Append { entries: encoded, callback })
            .map_err(|_| io_err(std::io::Error::other("the raft log writer has stopped")))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.pending.lock().expect("pending log lock").retain(|index, _| *index < log_id.index);
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Truncate { from: log_id.index, done: tx }, rx).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Purge { upto: log_id, done: tx }, rx).await
    }
}
