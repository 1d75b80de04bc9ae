//! Snapshots: building one from a consistent read of the file (after the overlay is written
//! out), and installing one received from the leader.
//!
//! A snapshot carries the objects (module records among them, not module bytes), not the history: installing one resets history,
//! so that watches from before it get 410 Gone and re-list.

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::Snapshot;
use openraft::{RaftSnapshotBuilder, SnapshotMeta};
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::db::{HISTORY, OBJECTS, SM_META, SNAPSHOT, blocking, decode, encode, io_err};
use super::sm_meta::{put_meta, read_meta};
use super::types::{LogId, MemberId, StorageError, StoredMembership, TypeConfig};
use super::writer::{Job, Writer};

#[derive(Serialize, Deserialize)]
struct SnapshotPayload {
    objects: Vec<(String, Vec<u8>)>,
}

/// Builds snapshots from a consistent read of the state machine's file, after writing the
/// overlay out.
pub struct SnapshotBuilder {
    pub(super) db: Arc<Database>,
    pub(super) writer: Writer,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        self.writer.run(|done| Job::Flush { done }).await?;
        let db = self.db.clone();
        blocking(move || {
            let (meta, data) = {
                let tx = db.begin_read().map_err(io_err)?;
                let sm = tx.open_table(SM_META).map_err(io_err)?;
                let last_applied: Option<LogId> = read_meta::<Option<LogId>>(&sm, "last_applied")?.flatten();
                let membership: StoredMembership = read_meta(&sm, "membership")?.unwrap_or_default();
                let collect = |t: redb::ReadOnlyTable<&'static str, &'static [u8]>| -> Result<Vec<(String, Vec<u8>)>, StorageError> {
                    let mut out = Vec::new();
                    for item in t.iter().map_err(io_err)? {
                        let (k, v) = item.map_err(io_err)?;
                        out.push((k.value().to_owned(), v.value().to_vec()));
                    }
                    Ok(out)
                };
                let payload = SnapshotPayload {
                    objects: collect(tx.open_table(OBJECTS).map_err(io_err)?)?,
                };
                let snapshot_id = match last_applied {
                    Some(l) => format!("{}-{}-{}", l.leader_id, l.index, std::process::id()),
                    None => format!("empty-{}", std::process::id()),
                };
                let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
                (meta, encode(&payload))
            };
            let tx = db.begin_write().map_err(io_err)?;
            {
                let mut snap = tx.open_table(SNAPSHOT).map_err(io_err)?;
                // A snapshot installed while this one was being built is newer: keep it (the log
                // before it may be purged already).
                let stored: Option<SnapshotMeta<MemberId, openraft::BasicNode>> =
                    snap.get("meta").map_err(io_err)?.map(|v| decode(v.value())).transpose()?;
                if stored.is_none_or(|s| s.last_log_id < meta.last_log_id) {
                    snap.insert("meta", encode(&meta).as_slice()).map_err(io_err)?;
                    snap.insert("data", data.as_slice()).map_err(io_err)?;
                }
            }
            tx.commit().map_err(io_err)?;
            Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
        })
        .await
    }
}

/// Replaces the state machine in `tx` with the snapshot `data` taken at `meta`.
pub(super) fn install_in(
    tx: &WriteTransaction,
    meta: &SnapshotMeta<MemberId, openraft::BasicNode>,
    data: &[u8],
) -> Result<(), StorageError> {
    let payload: SnapshotPayload = decode(data)?;
    {
        let mut objects = tx.open_table(OBJECTS).map_err(io_err)?;
        objects.retain(|_, _| false).map_err(io_err)?;
        for (k, v) in &payload.objects {
            objects.insert(k.as_str(), v.as_slice()).map_err(io_err)?;
        }
        tx.open_table(HISTORY).map_err(io_err)?.retain(|_, _| false).map_err(io_err)?;
        let mut snap = tx.open_table(SNAPSHOT).map_err(io_err)?;
        snap.insert("meta", encode(meta).as_slice()).map_err(io_err)?;
        snap.insert("data", data).map_err(io_err)?;
    }
    put_meta(tx, "last_applied", &meta.last_log_id)?;
    put_meta(tx, "membership", &meta.last_membership)?;
    put_meta(tx, "compacted", &meta.last_log_id.map_or(0, |l| l.index))?;
    Ok(())
}
