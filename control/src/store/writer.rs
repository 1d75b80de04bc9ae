//! The one writer of the redb file: a thread that commits raft's log appends and the state
//! machine's changes together, in groups.
//!
//! redb has one write transaction at a time, and every commit copies the changed B-tree pages.
//! Were the log (fsync'd commits) and the state machine to write in transactions of their own,
//! each would wait for the other's lock, and every write would pay for two commits' page
//! copies. Instead every writer queues a job here; the thread takes everything queued since its
//! last commit and commits it in one transaction, with an fsync when any job in the group needs
//! one, then reports to each job.
//!
//! The state machine applies into the [`Unflushed`] overlay without a commit of its own; the
//! overlay rides along with a later commit once it is [`FLUSH_AFTER`](super::unflushed::FLUSH_AFTER)
//! old (or in a commit of its own if none comes), and always before the log is purged or a
//! snapshot is built. Raft's `committed` hint waits for the next commit the same way.
//!
//! openraft hands appends to storage one at a time and waits for `append` to return before it
//! processes the next message, so `append` only queues; openraft counts an entry toward a
//! quorum once told it is flushed, so nothing is acknowledged before it is durable. Entries
//! queued but not yet committed are kept in memory (`pending`) so that readers (replication to
//! followers) see them at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::time::Instant;

use openraft::SnapshotMeta;
use openraft::storage::LogFlushed;
use redb::{Database, Durability};
use tokio::sync::oneshot;

use super::apply::{self, Applied};
use super::db::{LOG, RAFT_META, encode, io_err};
use super::snapshot;
use super::types::{Entry, LogId, MemberId, StorageError, TypeConfig};
use super::unflushed::{self, Unflushed};

/// Most jobs one group commit takes.
const MAX_GROUP: usize = 4096;

/// Raft log entries queued but not yet committed, by index.
pub type Pending = Arc<Mutex<BTreeMap<u64, Entry>>>;
/// The state machine's applied but unflushed changes, shared with its readers.
pub type SharedUnflushed = Arc<RwLock<Unflushed>>;

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
    /// Committed entries to apply to the state machine (into the overlay: the entries are
    /// already durable in a quorum's log).
    Apply { entries: Vec<Entry>, history_revisions: u64, done: oneshot::Sender<Result<Applied, String>> },
    /// Write the overlay out now (before a snapshot is built from the file).
    Flush { done: oneshot::Sender<Result<(), String>> },
    /// Replace the state machine with the snapshot received into `file`.
    Install {
        meta: SnapshotMeta<MemberId, openraft::BasicNode>,
        file: std::path::PathBuf,
        /// The snapshot directory it is kept in.
        dir: std::path::PathBuf,
        done: oneshot::Sender<Result<(), String>>,
    },
}

impl Job {
    fn needs_fsync(&self) -> bool {
        !matches!(self, Job::Meta { durable: false, .. } | Job::Apply { .. } | Job::Flush { .. })
    }

    /// Whether the overlay must be written out in this job's commit.
    fn forces_flush(&self) -> bool {
        matches!(self, Job::Flush { .. } | Job::Purge { .. })
    }
}

/// A handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    pending: Pending,
    unflushed: SharedUnflushed,
}

impl Writer {
    /// Starts the writer thread over `db`.
    pub fn start(db: Arc<Database>) -> Writer {
        let pending: Pending = Arc::default();
        let unflushed: SharedUnflushed = Arc::default();
        let (jobs, queue) = mpsc::channel();
        let thread = WriterThread {
            db,
            pending: pending.clone(),
            unflushed: unflushed.clone(),
            hints: Vec::new(),
            failing: false,
        };
        std::thread::Builder::new()
            .name("redb-writer".into())
            .spawn(move || thread.run(&queue))
            .expect("spawn the redb writer thread");
        Writer { jobs, pending, unflushed }
    }

    /// Log entries queued but not yet committed.
    pub fn pending(&self) -> &Pending {
        &self.pending
    }

    /// The state machine's changes not yet in the file.
    pub fn unflushed(&self) -> &SharedUnflushed {
        &self.unflushed
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

/// The writer thread's state.
struct WriterThread {
    db: Arc<Database>,
    pending: Pending,
    unflushed: SharedUnflushed,
    /// Values of non-durable `Meta` jobs, written with the next commit.
    hints: Vec<(&'static str, Vec<u8>)>,
    /// Whether the last commit failed: then the overlay waits for the next job rather than
    /// being retried on a timer against a failing disk (the job's owner hears of the failure).
    failing: bool,
}

impl WriterThread {
    /// Takes every queued job, does them (in one transaction, if any needs one), reports; when
    /// idle, flushes the overlay once it is due.
    fn run(mut self, jobs: &mpsc::Receiver<Job>) {
        loop {
            let due = if self.failing { None } else { self.unflushed.read().expect("overlay lock").due_at() };
            let first = match due {
                None => jobs.recv().ok(),
                Some(at) => match jobs.recv_timeout(at.saturating_duration_since(Instant::now())) {
                    Ok(job) => Some(job),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                },
            };
            if due.is_none() && first.is_none() {
                return;
            }
            let mut group: Vec<Job> = first.into_iter().collect();
            while group.len() < MAX_GROUP {
                match jobs.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            self.run_group(group);
        }
    }

    fn run_group(&mut self, group: Vec<Job>) {
        // Applies first, reported at once: they change only the overlay. (openraft awaits each
        // apply and install, so a group never holds an apply queued after an install.)
        let mut rest = Vec::with_capacity(group.len());
        for job in group {
            match job {
                Job::Apply { entries, history_revisions, done } => {
                    let outcome = apply::apply_to_overlay(&self.db, &self.unflushed, entries, history_revisions);
                    let _ = done.send(outcome.map_err(|e| e.to_string()));
                }
                Job::Meta { key, value, durable: false, done } => {
                    self.hints.push((key, value));
                    if let Some(done) = done {
                        let _ = done.send(Ok(()));
                    }
                }
                job => rest.push(job),
            }
        }
        let flush_due = self.unflushed.read().expect("overlay lock").due_at().is_some_and(|at| at <= Instant::now());
        let flush = flush_due || rest.iter().any(Job::forces_flush);
        if rest.is_empty() && !flush {
            return;
        }
        let result = self.commit(&mut rest, flush).map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!("store commit failed: {e}");
        }
        self.failing = result.is_err();
        if result.is_ok() {
            let mut pending = self.pending.lock().expect("pending log lock");
            for job in &rest {
                if let Job::Append { entries, .. } = job {
                    for (log_id, _) in entries {
                        if pending.get(&log_id.index).is_some_and(|e| e.log_id == *log_id) {
                            pending.remove(&log_id.index);
                        }
                    }
                }
            }
        }
        for job in rest {
            match job {
                Job::Append { callback, .. } => {
                    callback.log_io_completed(result.clone().map_err(std::io::Error::other));
                }
                Job::Meta { done: Some(done), .. }
                | Job::Truncate { done, .. }
                | Job::Purge { done, .. }
                | Job::Flush { done }
                | Job::Install { done, .. } => {
                    let _ = done.send(result.clone());
                }
                Job::Meta { done: None, .. } | Job::Apply { .. } => {}
            }
        }
    }

    /// Does every job of `group` in one transaction, with the overlay written out too if
    /// `flush` (unless a snapshot install replaces it).
    fn commit(&mut self, group: &mut [Job], flush: bool) -> Result<(), StorageError> {
        let mut tx = self.db.begin_write().map_err(io_err)?;
        if !group.iter().any(Job::needs_fsync) {
            tx.set_durability(Durability::None).map_err(io_err)?;
        }
        if !self.hints.is_empty() {
            let mut meta = tx.open_table(RAFT_META).map_err(io_err)?;
            for (key, value) in self.hints.drain(..) {
                meta.insert(key, value.as_slice()).map_err(io_err)?;
            }
        }
        let mut installs = false;
        let mut stale_snapshots = Vec::new();
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
                Job::Install { meta, file, dir, .. } => {
                    stale_snapshots.extend(snapshot::install_in(&tx, meta, file, dir)?);
                    installs = true;
                }
                Job::Flush { .. } | Job::Apply { .. } => {}
            }
        }
        if installs {
            // The snapshot replaces what the overlay holds. Readers wait (on the overlay's lock)
            // until the file has the snapshot, so that none sees the old overlay over it.
            let mut unflushed = self.unflushed.write().expect("overlay lock");
            tx.commit().map_err(io_err)?;
            unflushed.clear();
            for stale in stale_snapshots {
                let _ = std::fs::remove_file(stale);
            }
            return Ok(());
        }
        if flush {
            unflushed::flush_in(&tx, &self.unflushed.read().expect("overlay lock"))?;
        }
        tx.commit().map_err(io_err)?;
        if flush {
            self.unflushed.write().expect("overlay lock").clear();
        }
        Ok(())
    }
}
