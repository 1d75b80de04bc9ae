//! Snapshots: building one from a consistent read of the file (after the overlay is written
//! out), and installing one received from the leader. A snapshot is a file in the snapshot
//! directory ([`super::snapshot_file`]), streamed record by record both ways, so neither
//! building nor installing holds the whole state in memory; the `snapshot` table names the
//! current one (`file`) and its `meta`.
//!
//! Whoever replaces the current snapshot (a build, an install) removes the file it replaced;
//! files left by an interrupted build, receive or install are removed when the store opens.
//!
//! A snapshot carries the objects (module records among them, never module bytes), not the
//! history: installing one resets history, so that watches from before it get 410 Gone and
//! re-list.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::Snapshot;
use openraft::{RaftSnapshotBuilder, SnapshotMeta};
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};

use super::db::{HISTORY, OBJECTS, SM_META, SNAPSHOT, blocking, decode, encode, io_err};
use super::sm_meta::{put_meta, read_meta};
use super::snapshot_file::{SnapshotFile, WriteError, read_records, write_records};
use super::types::{LogId, MemberId, StorageError, StoredMembership, TypeConfig};
use super::writer::{Job, Writer};

type Meta = SnapshotMeta<MemberId, openraft::BasicNode>;

/// Where a member's snapshots live.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    dir: PathBuf,
}

impl SnapshotDir {
    /// Opens (or makes) `dir`, and removes every file in it but the current snapshot's.
    pub fn open(dir: &Path, db: &Database) -> Result<SnapshotDir, StorageError> {
        shoal_api::config::private_dir(dir).map_err(io_err)?;
        let current = current_file(db)?;
        for entry in std::fs::read_dir(dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            if Some(entry.file_name().to_string_lossy().as_ref()) != current.as_deref() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(SnapshotDir { dir: dir.to_owned() })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A new file to receive a snapshot into (one stream at a time: any earlier one that was
    /// given up is removed). A stream the leader gives up on without starting another (it
    /// learnt the member caught up) leaves its file until the next receive or a restart: at
    /// most one, openraft holding the stream open meanwhile, so it cannot be removed under it.
    pub async fn receiving(&self) -> Result<SnapshotFile, StorageError> {
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with("receiving-") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let name = format!("receiving-{}.partial", uuid::Uuid::new_v4().simple());
        SnapshotFile::create(self.path(&name)).map_err(io_err)
    }

    /// The current snapshot, if there is one.
    pub fn current(&self, db: &Database) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        // A build or install may replace (and remove) the file between the read of its name
        // and its opening: then the name read again is the new one.
        for _ in 0..3 {
            let tx = db.begin_read().map_err(io_err)?;
            let table = tx.open_table(SNAPSHOT).map_err(io_err)?;
            let (Some(meta), Some(file)) = (table.get("meta").map_err(io_err)?, table.get("file").map_err(io_err)?)
            else {
                return Ok(None);
            };
            let name: String = decode(file.value())?;
            match SnapshotFile::open(self.path(&name)) {
                Ok(file) => return Ok(Some(Snapshot { meta: decode(meta.value())?, snapshot: Box::new(file) })),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(e)),
            }
        }
        Err(io_err(std::io::Error::other("the current snapshot's file keeps disappearing")))
    }
}

fn current_file(db: &Database) -> Result<Option<String>, StorageError> {
    let tx = db.begin_read().map_err(io_err)?;
    let table = tx.open_table(SNAPSHOT).map_err(io_err)?;
    table.get("file").map_err(io_err)?.map(|v| decode(v.value())).transpose()
}

/// The file name of the snapshot taken at `meta`.
fn file_name(meta: &Meta) -> String {
    let (term, index) = meta.last_log_id.map_or((0, 0), |l| (l.leader_id.term, l.index));
    format!("snapshot-{term}-{index}-{}.snap", uuid::Uuid::new_v4().simple())
}

/// Records `meta` and `name` as the current snapshot in `tx` unless the stored one is newer;
/// returns the name of the file that is no longer current (the replaced one, or, when the
/// stored one is newer, `name` itself).
fn make_current(tx: &WriteTransaction, meta: &Meta, name: &str) -> Result<Option<String>, StorageError> {
    let mut snap = tx.open_table(SNAPSHOT).map_err(io_err)?;
    let stored: Option<Meta> = snap.get("meta").map_err(io_err)?.map(|v| decode(v.value())).transpose()?;
    let previous: Option<String> = snap.get("file").map_err(io_err)?.map(|v| decode(v.value())).transpose()?;
    if stored.as_ref().is_some_and(|s| s.last_log_id > meta.last_log_id) {
        return Ok(Some(name.to_owned()));
    }
    snap.insert("meta", encode(meta).as_slice()).map_err(io_err)?;
    snap.insert("file", encode(&name.to_owned()).as_slice()).map_err(io_err)?;
    snap.remove("data").map_err(io_err)?;
    Ok(previous.filter(|p| p != name))
}

/// Builds snapshots from a consistent read of the state machine's file, after writing the
/// overlay out.
pub struct SnapshotBuilder {
    pub(super) db: Arc<Database>,
    pub(super) writer: Writer,
    pub(super) dir: SnapshotDir,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        self.writer.run(|done| Job::Flush { done }).await?;
        let (db, dir) = (self.db.clone(), self.dir.clone());
        blocking(move || {
            let (meta, name) = {
                let tx = db.begin_read().map_err(io_err)?;
                let sm = tx.open_table(SM_META).map_err(io_err)?;
                let last_applied: Option<LogId> = read_meta::<Option<LogId>>(&sm, "last_applied")?.flatten();
                let membership: StoredMembership = read_meta(&sm, "membership")?.unwrap_or_default();
                let snapshot_id = match last_applied {
                    Some(l) => format!("{}-{}-{}", l.leader_id, l.index, std::process::id()),
                    None => format!("empty-{}", std::process::id()),
                };
                let meta = Meta { last_log_id: last_applied, last_membership: membership, snapshot_id };
                let name = file_name(&meta);
                let partial = dir.path(&format!("building-{name}.partial"));
                let objects = tx.open_table(OBJECTS).map_err(io_err)?;
                let records = objects
                    .iter()
                    .map_err(io_err)?
                    .map(|item| item.map(|(k, v)| (k.value().to_owned(), v.value().to_vec())));
                if let Err(e) = write_records(&partial, records) {
                    let _ = std::fs::remove_file(&partial);
                    return Err(match e {
                        WriteError::Io(e) => io_err(e),
                        WriteError::Source(e) => io_err(e),
                    });
                }
                std::fs::rename(&partial, dir.path(&name)).map_err(io_err)?;
                std::fs::File::open(&dir.dir).and_then(|d| d.sync_all()).map_err(io_err)?;
                (meta, name)
            };
            let file = SnapshotFile::open(dir.path(&name)).map_err(io_err)?;
            let tx = db.begin_write().map_err(io_err)?;
            // A snapshot installed while this one was being built is newer: keep it (the log
            // before it may be purged already).
            let stale = make_current(&tx, &meta, &name)?;
            tx.commit().map_err(io_err)?;
            if let Some(stale) = stale {
                // Open handles (this one's, a sender's) read on after the name is gone.
                let _ = std::fs::remove_file(dir.path(&stale));
            }
            Ok(Snapshot { meta, snapshot: Box::new(file) })
        })
        .await
    }
}

/// Replaces the state machine in `tx` with the snapshot received into `received`, taken at
/// `meta`, keeping it in `dir`; returns the snapshot file no longer current, to remove once
/// `tx` is committed.
pub(super) fn install_in(
    tx: &WriteTransaction,
    meta: &Meta,
    received: &Path,
    dir: &Path,
) -> Result<Option<PathBuf>, StorageError> {
    let name = file_name(meta);
    if received.parent() == Some(dir) {
        std::fs::File::open(received).and_then(|f| f.sync_all()).map_err(io_err)?;
        std::fs::rename(received, dir.join(&name)).map_err(io_err)?;
    } else {
        // Not received here (openraft's storage suite hands over another store's file).
        std::fs::copy(received, dir.join(&name)).map_err(io_err)?;
        std::fs::File::open(dir.join(&name)).and_then(|f| f.sync_all()).map_err(io_err)?;
    }
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
    {
        let mut objects = tx.open_table(OBJECTS).map_err(io_err)?;
        objects.retain(|_, _| false).map_err(io_err)?;
        for record in read_records(&dir.join(&name)).map_err(io_err)? {
            let (key, value) = record.map_err(io_err)?;
            objects.insert(key.as_str(), value.as_slice()).map_err(io_err)?;
        }
        tx.open_table(HISTORY).map_err(io_err)?.retain(|_, _| false).map_err(io_err)?;
    }
    let stale = make_current(tx, meta, &name)?;
    put_meta(tx, "last_applied", &meta.last_log_id)?;
    put_meta(tx, "membership", &meta.last_membership)?;
    put_meta(tx, "compacted", &meta.last_log_id.map_or(0, |l| l.index))?;
    Ok(stale.map(|s| dir.join(s)))
}
