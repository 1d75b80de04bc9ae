//! The replicated state machine as openraft sees it: [`StateMachine`] and its
//! [`RaftStateMachine`] impl, which hands each job to the part of the store that does it.
//!
//! The state machine is objects and their change history (for watches), in redb
//! tables beside the raft log. Entries are applied into an in-memory overlay ([`Unflushed`]) that
//! the writer thread writes to redb once in a while, without an fsync of its own: what a client
//! is told is applied is already durable in a quorum's raft log, and a restart re-applies from
//! the log whatever a crash took from the state machine. Readers see the overlay over the file.
//! The parts live beside this module: [`apply`](super::apply) (commands and their object
//! semantics), [`history`](super::history) (changes, for watches), [`snapshot`](super::snapshot)
//! (building and installing snapshots) and [`reader`](super::reader) (reads, [`StoreReader`]).
//! Every call that changes the state machine is a job for the [`Writer`] thread.
//!
//! [`Unflushed`]: super::unflushed::Unflushed

use std::path::Path;
use std::sync::Arc;

use openraft::SnapshotMeta;
use openraft::storage::{RaftStateMachine, Snapshot};
use redb::{Database, ReadableDatabase};
use tokio::sync::watch;

use super::db::{SM_META, io_err};
use super::reader::StoreReader;
use super::sm_meta::{applied_in, read_meta};
use super::snapshot::{SnapshotBuilder, SnapshotDir};
use super::snapshot_file::SnapshotFile;
use super::types::{CommandResult, Entry, LogId, StorageError, StoredMembership, TypeConfig};
use super::writer::{Job, Writer};
use tokio::io::AsyncWriteExt;

/// The state machine: written by raft, read by the API server through [`StoreReader`].
pub struct StateMachine {
    db: Arc<Database>,
    /// Applies go through the writer, in the same transactions as the log's appends.
    writer: Writer,
    applied: watch::Sender<u64>,
    /// How many revisions of history to keep.
    history_revisions: u64,
    /// Where snapshots are kept.
    snapshots: SnapshotDir,
}

fn last_applied_index(db: &Database) -> Result<u64, StorageError> {
    applied_in(&db.begin_read().map_err(io_err)?)
}

impl StateMachine {
    /// The state machine over the shared database (written through `writer`), with its
    /// snapshots in `snapshot_dir`, and a reader of it.
    pub fn new(
        db: Arc<Database>,
        writer: Writer,
        history_revisions: u64,
        snapshot_dir: &Path,
    ) -> Result<(Self, StoreReader), StorageError> {
        let (applied, rx) = watch::channel(last_applied_index(&db)?);
        let reader = StoreReader { db: db.clone(), unflushed: writer.unflushed().clone(), applied: rx };
        let snapshots = SnapshotDir::open(snapshot_dir, &db)?;
        Ok((StateMachine { db, writer, applied, history_revisions: history_revisions.max(1), snapshots }, reader))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let unflushed = self.writer.unflushed().read().expect("overlay lock");
        let tx = self.db.begin_read().map_err(io_err)?;
        let meta = tx.open_table(SM_META).map_err(io_err)?;
        let last = match unflushed.last_applied {
            Some(last) => Some(last),
            None => read_meta::<Option<LogId>>(&meta, "last_applied")?.flatten(),
        };
        let membership = match &unflushed.membership {
            Some(m) => m.clone(),
            None => read_meta(&meta, "membership")?.unwrap_or_default(),
        };
        Ok((last, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let history_revisions = self.history_revisions;
        let applied = self.writer.run(|done| Job::Apply { entries, history_revisions, done }).await?;
        if applied.last > 0 {
            self.applied.send_replace(applied.last);
        }
        Ok(applied.results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { db: self.db.clone(), writer: self.writer.clone(), dir: self.snapshots.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        Ok(Box::new(self.snapshots.receiving().await?))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        mut snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        snapshot.flush().await.map_err(io_err)?;
        let file = snapshot.path().to_owned();
        drop(snapshot);
        let meta = meta.clone();
        let applied = meta.last_log_id.map_or(0, |l| l.index);
        tracing::info!("store: installing snapshot {} (up to {:?})", meta.snapshot_id, meta.last_log_id);
        let dir = self.snapshots.dir().to_owned();
        self.writer.run(|done| Job::Install { meta, file, dir, done }).await?;
        self.applied.send_replace(applied);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        self.snapshots.current(&self.db)
    }
}
