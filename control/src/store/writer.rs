//! The one writer of the redb file: a thread that commits raft's log appends and the state
//! machine's applies together, in groups.
//!
//! redb has one write transaction at a time, and every commit copies the changed B-tree pages.
//! Were the log (fsync'd commits) and the state machine (commits without fsync) to write in
//! transactions of their own, each would wait for the other's lock, and every write would pay
//! for two commits' page copies. Instead every writer queues a job here; the thread takes
//! everything queued since its last commit and commits it in one transaction, with an fsync
//! when any job in the group needs one (a lone apply does not), then reports to each job.
//!
//! openraft hands appends to storage one at a time and waits for `append` to return before it
//! processes the next message, so `append` only queues; openraft counts an entry toward a
//! quorum once told it is flushed, so nothing is acknowledged before it is durable. Entries
//! queued but not yet committed are kept in memory (`pending`) so that readers (replication to
//! followers) see them at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, mpsc};

use openraft::storage::LogFlushed;
use redb::{Database, Durability};
use tokio::sync::oneshot;

use super::db::{LOG, RAFT_META, encode, io_err};
use super::state_machine::{self, Applied};
use super::types::{Entry, LogId, StorageError, TypeConfig};

/// Most jobs one group commit takes.
const MAX_GROUP: usize = 4096;

/// Raft log entries queued but not yet committed, by index.
pub type Pending = Arc<Mutex<BTreeMap<u64, Entry>>>;

/// One piece of work for the writer thread.
pub(crate) enum Job {
    /// Log entries to append (durably); `callback` tells openraft when they are flushed.
    Append { entries: Vec<(LogId, Vec<u8>)>, callback: LogFlushed<TypeConfig> },
    /// A raft metadata value; `durable: false` for hints that may ride along with the next fsync.
    Meta { key: &'static str, value: Vec<u8>, durable: bool, done: Option<oneshot::Sender<Result<(), String>>> },
    /// Drop log entries from `from` on.
    Truncate { from: u64, done: oneshot::Sender<Result<(), String>> },
    /// Drop log entries up to `upto`, and remember it.
    Purge { upto: LogId, done: oneshot::Sender<Result<(), String>> },
    /// Committed entries to apply to the state machine (no fsync of its own: the entries are
    /// already durable in a quorum's log).
    Apply { entries: Vec<Entry>, history_revisions: u64, done: oneshot::Sender<Result<Applied, String>> },
}

impl Job {
    fn needs_fsync(&self) -> bool {
        !matches!(self, Job::Meta { durable: false, .. } | Job::Apply { .. })
    }
}

/// A handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    pending: Pending,
}

impl Writer {
    /// Starts the writer thread over `db`.
    pub fn start(db: Arc<Database>) -> Writer {
        let pending: Pending = Arc::default();
        let (jobs, queue) = mpsc::channel();
        let thread_pending = pending.clone();
        std::thread::Builder::new()
            .name("redb-writer".into())
            .spawn(move || write_loop(&db, &thread_pending, queue))
            .expect("spawn the redb writer thread");
        Writer { jobs, pending }
    }

    /// Log entries queued but not yet committed.
    pub fn pending(&self) -> &Pending {
        &self.pending
    }

    /// Queues `job` without waiting for it.
    pub(crate) fn send(&self, job: Job) -> Result<(), StorageError> {
        self.jobs.send(job).map_err(|_| stopped())
    }

    /// Queues the job `make` builds around a reply channel, and waits for its outcome.
    pub(crate) async fn run<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Job,
    ) -> Result<T, StorageError> {
        let (done, outcome) = oneshot::channel();
        self.send(make(done))?;
        outcome.await.map_err(|_| stopped())?.map_err(|e| io_err(std::io::Error::other(e)))
    }
}

fn stopped() -> StorageError {
    io_err(std::io::Error::other("the redb writer has stopped"))
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
        let mut applied = Vec::new();
        let result = commit_group(db, &mut group, &mut applied).map_err(|e| e.to_string());
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
        let mut applied = applied.into_iter();
        for job in group {
            match job {
                Job::Append { callback, .. } => {
                    callback.log_io_completed(result.clone().map_err(std::io::Error::other));
                }
                Job::Meta { done: Some(done), .. } => {
                    let _ = done.send(result.clone());
                }
                Job::Meta { done: None, .. } => {}
                Job::Truncate { done, .. } | Job::Purge { done, .. } => {
                    let _ = done.send(result.clone());
                }
                Job::Apply { done, .. } => {
                    let outcome = result.clone().and_then(|()| applied.next().ok_or_else(|| "not applied".to_owned()));
                    let _ = done.send(outcome);
                }
            }
        }
    }
}

/// Does every job of `group` in one transaction; what each apply did goes to `applied`, in
/// order (and counts only if the commit succeeds).
fn commit_group(db: &Database, group: &mut [Job], applied: &mut Vec<Applied>) -> Result<(), StorageError> {
    let mut tx = db.begin_write().map_err(io_err)?;
    if !group.iter().any(Job::needs_fsync) {
        tx.set_durability(Durability::None).map_err(io_err)?;
    }
    for job in group.iter_mut() {
        match job {
            Job::Append { entries, .. } => {
                let mut log = tx.open_table(LOG).map_err(io_err)?;
                for (log_id, bytes) in entries.iter() {
                    log.insert(log_id.index, bytes.as_slice()).map_err(io_err)?;
                }
            }
            Job::Meta { key, value, .. } => {
                tx.open_table(RAFT_META).map_err(io_err)?.insert(*key, value.as_slice()).map_err(io_err)?;
            }
            Job::Truncate { from, .. } => {
                tx.open_table(LOG).map_err(io_err)?.retain_in(*from.., |_, _| false).map_err(io_err)?;
            }
            Job::Purge { upto, .. } => {
                tx.open_table(RAFT_META)
                    .map_err(io_err)?
                    .insert("last_purged", encode(upto).as_slice())
                    .map_err(io_err)?;
                tx.open_table(LOG).map_err(io_err)?.retain_in(..=upto.index, |_, _| false).map_err(io_err)?;
            }
            Job::Apply { entries, history_revisions, .. } => {
                applied.push(state_machine::apply_in(&tx, std::mem::take(entries), *history_revisions)?);
            }
        }
    }
    tx.commit().map_err(io_err)?;
    Ok(())
}
