//! The replicated state machine: objects, their change history (for watches), and module
//! blobs, in redb tables beside the raft log.
//!
//! Entries are applied into an in-memory overlay ([`Unflushed`]) that the writer thread writes
//! to redb once in a while, without an fsync of its own: what a client is told is applied is
//! already durable in a quorum's raft log, and a restart re-applies from the log whatever a
//! crash took from the state machine. Readers see the overlay over the file.
//! Every change is recorded in `history` under its revision (the raft log index), which is what
//! watches read; history older than a retention window is dropped, and a watch from before it is
//! answered with 410 Gone.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, SnapshotMeta};
use redb::{Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use super::db::{BLOBS, HISTORY, OBJECTS, SM_META, SNAPSHOT, blocking, decode, encode, io_err};
use super::types::{
    Command, CommandResult, Entry, LogId, MemberId, ObjectKey, StorageError, StoredMembership, TypeConfig, UpdateScope,
};
use super::unflushed::Unflushed;
use super::writer::{Job, SharedUnflushed, Writer};

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

#[derive(Serialize, Deserialize)]
struct SnapshotPayload {
    objects: Vec<(String, Vec<u8>)>,
    blobs: Vec<(String, Vec<u8>)>,
}

/// The state machine: written by raft, read by the API server through [`StoreReader`].
pub struct StateMachine {
    db: Arc<Database>,
    /// Applies go through the writer, in the same transactions as the log's appends.
    writer: Writer,
    applied: watch::Sender<u64>,
    /// How many revisions of history to keep.
    history_revisions: u64,
}

/// An object's store key and its JSON.
pub type KeyedObject = (String, Vec<u8>);

/// Read access to the applied state, shared with the API server.
#[derive(Clone)]
pub struct StoreReader {
    db: Arc<Database>,
    unflushed: SharedUnflushed,
    applied: watch::Receiver<u64>,
}

fn read_meta<T: serde::de::DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>, StorageError> {
    match table.get(key).map_err(io_err)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

fn put_meta<T: Serialize>(tx: &WriteTransaction, key: &str, value: &T) -> Result<(), StorageError> {
    tx.open_table(SM_META).map_err(io_err)?.insert(key, encode(value).as_slice()).map_err(io_err)?;
    Ok(())
}

fn last_applied_index(db: &Database) -> Result<u64, StorageError> {
    applied_in(&db.begin_read().map_err(io_err)?)
}

impl StateMachine {
    /// The state machine over the shared database (written through `writer`), and a reader of it.
    pub fn new(db: Arc<Database>, writer: Writer, history_revisions: u64) -> Result<(Self, StoreReader), StorageError> {
        let (applied, rx) = watch::channel(last_applied_index(&db)?);
        let reader = StoreReader { db: db.clone(), unflushed: writer.unflushed().clone(), applied: rx };
        Ok((StateMachine { db, writer, applied, history_revisions: history_revisions.max(1) }, reader))
    }
}

/// What one apply job writes to (the overlay) and reads from (the overlay, then the file).
struct Tables<'t> {
    unflushed: &'t mut Unflushed,
    objects: ReadOnlyTable<&'static str, &'static [u8]>,
    blobs: ReadOnlyTable<&'static str, &'static [u8]>,
    /// Changes recorded so far at the current revision (a batch entry records several).
    seq: u64,
}

/// Bits of a history key below the revision: a batch entry's changes share its revision and
/// are told apart (and kept in order) by a sequence number.
const SEQ_BITS: u32 = 16;

/// The history key of the `seq`-th change at `revision`.
fn history_key(revision: u64, seq: u64) -> u64 {
    (revision << SEQ_BITS) | seq
}

/// The first history key after every change at `revision`.
fn history_after(revision: u64) -> u64 {
    (revision + 1) << SEQ_BITS
}

/// The most changes one entry may record.
pub const MAX_CHANGES_PER_ENTRY: usize = 1 << SEQ_BITS;

fn parse_object(bytes: &[u8]) -> Result<Value, String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err("object is not a JSON object".into()),
        Err(e) => Err(format!("object is not JSON: {e}")),
    }
}

fn meta_u64(object: &Value, field: &str) -> Option<u64> {
    object.get("metadata")?.get(field)?.as_u64()
}

fn set_meta(object: &mut Value, field: &str, value: Value) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if value.is_null() {
            meta.remove(field);
        } else {
            meta.insert(field.to_owned(), value);
        }
    }
}

/// The fields of an object a spec update may change; if none changed, the update is a no-op.
fn user_fields(object: &Value) -> (Option<&Value>, Option<&Value>, Option<&Value>) {
    let meta = object.get("metadata");
    (object.get("spec"), meta.and_then(|m| m.get("labels")), meta.and_then(|m| m.get("annotations")))
}

impl Tables<'_> {
    fn record(&mut self, revision: u64, kind: ChangeKind, key: &str, object: &Value) -> Result<Vec<u8>, StorageError> {
        let bytes = serde_json::to_vec(object).map_err(io_err)?;
        let change = Change { revision, kind, key: key.to_owned(), object: bytes.clone() };
        self.unflushed.history.insert(history_key(revision, self.seq), change);
        self.seq += 1;
        let stored = (kind != ChangeKind::Deleted).then(|| bytes.clone());
        self.unflushed.objects.insert(key.to_owned(), stored);
        Ok(bytes)
    }

    fn current(&self, key: &ObjectKey) -> Result<Option<Value>, StorageError> {
        let parse = |bytes: &[u8]| parse_object(bytes).map_err(|e| io_err(std::io::Error::other(e)));
        match self.unflushed.object(&key.0) {
            Some(Some(bytes)) => Ok(Some(parse(bytes)?)),
            Some(None) => Ok(None),
            None => match self.objects.get(key.0.as_str()).map_err(io_err)? {
                Some(v) => Ok(Some(parse(v.value())?)),
                None => Ok(None),
            },
        }
    }

    fn apply(&mut self, revision: u64, command: Command) -> Result<CommandResult, StorageError> {
        let invalid = |message: String| Ok(CommandResult::Invalid { message });
        let stale = |current: &Value, expected: Option<u64>| {
            let rv = meta_u64(current, "resourceVersion").unwrap_or(0);
            expected.filter(|e| *e != rv).map(|_| CommandResult::Conflict { current: rv })
        };
        let done = |bytes: Vec<u8>| Ok(CommandResult::Ok { object: Some(bytes) });
        match command {
            Command::Create { key, object } => {
                let mut object = match parse_object(&object) {
                    Ok(o) => o,
                    Err(e) => return invalid(e),
                };
                if self.current(&key)?.is_some() {
                    return Ok(CommandResult::AlreadyExists);
                }
                set_meta(&mut object, "resourceVersion", revision.into());
                set_meta(&mut object, "generation", 1.into());
                done(self.record(revision, ChangeKind::Added, &key.0, &object)?)
            }
            Command::Update { key, object, expected, scope } => {
                let mut new = match parse_object(&object) {
                    Ok(o) => o,
                    Err(e) => return invalid(e),
                };
                let Some(old) = self.current(&key)? else {
                    if expected.is_some() || scope == UpdateScope::Status {
                        return Ok(CommandResult::NotFound);
                    }
                    set_meta(&mut new, "resourceVersion", revision.into());
                    set_meta(&mut new, "generation", 1.into());
                    return done(self.record(revision, ChangeKind::Added, &key.0, &new)?);
                };
                if let Some(conflict) = stale(&old, expected) {
                    return Ok(conflict);
                }
                let next = match scope {
                    UpdateScope::Status => {
                        let mut next = old.clone();
                        next["status"] = new.get("status").cloned().unwrap_or(Value::Null);
                        if next["status"].is_null() {
                            next.as_object_mut().map(|o| o.remove("status"));
                        }
                        next
                    }
                    UpdateScope::Spec => {
                        if user_fields(&old) == user_fields(&new) {
                            return done(serde_json::to_vec(&old).map_err(io_err)?);
                        }
                        let spec_changed = old.get("spec") != new.get("spec");
                        let generation = meta_u64(&old, "generation").unwrap_or(1) + u64::from(spec_changed);
                        for field in ["uid", "creationTimestamp", "ownerReferences"] {
                            let kept = old["metadata"].get(field).cloned().unwrap_or(Value::Null);
                            set_meta(&mut new, field, kept);
                        }
                        set_meta(&mut new, "generation", generation.into());
                        match old.get("status") {
                            Some(status) => new["status"] = status.clone(),
                            None => {
                                new.as_object_mut().map(|o| o.remove("status"));
                            }
                        }
                        new
                    }
                };
                if next == old {
                    return done(serde_json::to_vec(&old).map_err(io_err)?);
                }
                let mut next = next;
                set_meta(&mut next, "resourceVersion", revision.into());
                done(self.record(revision, ChangeKind::Modified, &key.0, &next)?)
            }
            Command::Delete { key, expected } => {
                let Some(mut old) = self.current(&key)? else {
                    return Ok(CommandResult::NotFound);
                };
                if let Some(conflict) = stale(&old, expected) {
                    return Ok(conflict);
                }
                set_meta(&mut old, "resourceVersion", revision.into());
                done(self.record(revision, ChangeKind::Deleted, &key.0, &old)?)
            }
            Command::Batch(commands) => {
                let results = commands.into_iter().map(|c| self.apply(revision, c)).collect::<Result<_, _>>()?;
                Ok(CommandResult::Batch(results))
            }
            Command::PutBlob { digest, data } => {
                if !self.unflushed.blobs.contains_key(&digest)
                    && self.blobs.get(digest.as_str()).map_err(io_err)?.is_none()
                {
                    self.unflushed.blobs.insert(digest, data);
                }
                Ok(CommandResult::Ok { object: None })
            }
        }
    }
}

/// What applying a batch of entries did: a result per entry, and the last index applied (0 for
/// none).
pub struct Applied {
    /// A result per entry, in order.
    pub results: Vec<CommandResult>,
    /// The index of the last entry.
    pub last: u64,
}

/// Applies `entries` to the overlay (on the writer thread, the overlay's only writer), reading
/// what the overlay lacks from the file. It needs no commit: every applied entry is already
/// durable in the raft log, and a restart re-applies whatever a crash lost from here (the log
/// is purged only by a durable commit that also writes the overlay out).
pub(super) fn apply_to_overlay(
    db: &Database,
    unflushed: &RwLock<Unflushed>,
    entries: Vec<Entry>,
    history_revisions: u64,
) -> Result<Applied, StorageError> {
    let file = db.begin_read().map_err(io_err)?;
    let mut unflushed = unflushed.write().expect("overlay lock");
    let mut results = Vec::with_capacity(entries.len());
    let mut last = None;
    let mut tables = Tables {
        unflushed: &mut unflushed,
        objects: file.open_table(OBJECTS).map_err(io_err)?,
        blobs: file.open_table(BLOBS).map_err(io_err)?,
        seq: 0,
    };
    for entry in entries {
        last = Some(entry.log_id);
        let result = match entry.payload {
            EntryPayload::Blank => Ok(CommandResult::Ok { object: None }),
            EntryPayload::Normal(command) => {
                tables.seq = 0;
                tables.apply(entry.log_id.index, command)
            }
            EntryPayload::Membership(m) => {
                tables.unflushed.membership = Some(StoredMembership::new(Some(entry.log_id), m));
                Ok(CommandResult::Ok { object: None })
            }
        };
        match result {
            Ok(result) => results.push(result),
            Err(e) => {
                // Half an entry must never be seen or written out: drop everything unflushed
                // (readers fall back to the file's consistent state; openraft stops on the
                // error, and a restart re-applies from the log).
                tables.unflushed.clear();
                return Err(e);
            }
        }
    }
    if last.is_some() {
        unflushed.last_applied = last;
        unflushed.history_revisions = history_revisions;
        unflushed.touch();
    }
    Ok(Applied { results, last: last.map_or(0, |l| l.index) })
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
        let mut blobs = tx.open_table(BLOBS).map_err(io_err)?;
        for (digest, data) in &unflushed.blobs {
            blobs.insert(digest.as_str(), data.as_slice()).map_err(io_err)?;
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
        let mut blobs = tx.open_table(BLOBS).map_err(io_err)?;
        for (k, v) in &payload.blobs {
            blobs.insert(k.as_str(), v.as_slice()).map_err(io_err)?;
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

/// Drops history older than the retention window, in steps of a tenth of it so that the cost is
/// paid once in a while rather than on every write.
fn compact_history(tx: &WriteTransaction, applied: u64, keep: u64) -> Result<(), StorageError> {
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
        SnapshotBuilder { db: self.db.clone(), writer: self.writer.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let meta = meta.clone();
        let applied = meta.last_log_id.map_or(0, |l| l.index);
        self.writer.run(|done| Job::Install { meta, data, done }).await?;
        self.applied.send_replace(applied);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let tx = self.db.begin_read().map_err(io_err)?;
        let table = tx.open_table(SNAPSHOT).map_err(io_err)?;
        let (Some(meta), Some(data)) = (table.get("meta").map_err(io_err)?, table.get("data").map_err(io_err)?) else {
            return Ok(None);
        };
        Ok(Some(Snapshot { meta: decode(meta.value())?, snapshot: Box::new(Cursor::new(data.value().to_vec())) }))
    }
}

/// Builds snapshots from a consistent read of the state machine's file, after writing the
/// overlay out.
pub struct SnapshotBuilder {
    db: Arc<Database>,
    writer: Writer,
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
                    blobs: collect(tx.open_table(BLOBS).map_err(io_err)?)?,
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

impl StoreReader {
    /// The last applied revision.
    pub fn revision(&self) -> u64 {
        *self.applied.borrow()
    }

    /// A receiver that changes whenever a revision is applied.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    /// Copies what `copy` needs from the overlay, and opens a read transaction of the file while
    /// the overlay is locked: so the file is never older than the overlay's base (see
    /// [`Unflushed`]). The file is then read without holding up the writer.
    fn read<T>(&self, copy: impl FnOnce(&Unflushed) -> T) -> Result<(T, ReadTransaction), StorageError> {
        let unflushed = self.unflushed.read().expect("overlay lock");
        let tx = self.db.begin_read().map_err(io_err)?;
        Ok((copy(&unflushed), tx))
    }

    /// One object (JSON), if it exists.
    pub fn get(&self, key: &ObjectKey) -> Result<Option<Vec<u8>>, StorageError> {
        let (unflushed, tx) = self.read(|u| u.object(&key.0).map(|o| o.map(<[u8]>::to_vec)))?;
        if let Some(object) = unflushed {
            return Ok(object);
        }
        let table = tx.open_table(OBJECTS).map_err(io_err)?;
        Ok(table.get(key.0.as_str()).map_err(io_err)?.map(|v| v.value().to_vec()))
    }

    /// Every object whose key starts with `prefix`, and the revision they were read at.
    pub fn list(&self, prefix: &str) -> Result<(u64, Vec<Vec<u8>>), StorageError> {
        let (revision, entries) = self.entries(prefix)?;
        Ok((revision, entries.into_iter().map(|(_, v)| v).collect()))
    }

    /// Like [`StoreReader::list`], with each object's key.
    pub fn entries(&self, prefix: &str) -> Result<(u64, Vec<KeyedObject>), StorageError> {
        let ((last_applied, unflushed), tx) = self.read(|u| {
            let objects: Vec<(String, Option<Vec<u8>>)> =
                u.objects_with_prefix(prefix).map(|(k, v)| (k.clone(), v.clone())).collect();
            (u.last_applied, objects)
        })?;
        let revision = match last_applied {
            Some(last) => last.index,
            None => applied_in(&tx)?,
        };
        let table = tx.open_table(OBJECTS).map_err(io_err)?;
        let mut file = Vec::new();
        for item in table.range(prefix..).map_err(io_err)? {
            let (k, v) = item.map_err(io_err)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            file.push((k.value().to_owned(), v.value().to_vec()));
        }
        if unflushed.is_empty() {
            return Ok((revision, file));
        }
        let mut items: BTreeMap<String, Vec<u8>> = file.into_iter().collect();
        for (key, object) in unflushed {
            match object {
                Some(bytes) => items.insert(key, bytes),
                None => items.remove(&key),
            };
        }
        Ok((revision, items.into_iter().collect()))
    }

    /// Changes after revision `after` to keys starting with `prefix`, at most `limit` of them
    /// (the last one returned tells where to continue). Also returns the revision read up to.
    pub fn changes_after(&self, after: u64, prefix: &str, limit: usize) -> Result<(Vec<Change>, u64), HistoryError> {
        let storage = |e: StorageError| HistoryError::Storage(Box::new(e));
        let ((last_applied, overlay), tx) = self
            .read(|u| {
                let changes: Vec<(u64, Change)> =
                    u.history.range(history_after(after)..).map(|(k, c)| (*k, c.clone())).collect();
                (u.last_applied, changes)
            })
            .map_err(storage)?;
        let meta = tx.open_table(SM_META).map_err(io_err).map_err(storage)?;
        let compacted: u64 = read_meta(&meta, "compacted").map_err(storage)?.unwrap_or(0);
        if after < compacted {
            return Err(HistoryError::Compacted { requested: after, compacted });
        }
        let applied = match last_applied {
            Some(last) => last.index,
            None => applied_in(&tx).map_err(storage)?,
        };
        let mut scan = HistoryScan { prefix, limit, changes: Vec::new(), full_at: None, scanned_to: None };
        // The overlay's changes are newer than the file's; the file may hold some of them too
        // (flushed, not yet cleared), and those are read from the overlay only.
        let file_end = overlay.first().map_or(u64::MAX, |(k, _)| *k);
        let table = tx.open_table(HISTORY).map_err(io_err).map_err(storage)?;
        for item in table.range(history_after(after)..file_end).map_err(io_err).map_err(storage)? {
            let (key, v) = item.map_err(io_err).map_err(storage)?;
            if !scan.visit(key.value(), || decode::<Change>(v.value())).map_err(storage)? {
                break;
            }
        }
        if scan.scanned_to.is_none() {
            for (key, change) in overlay {
                if !scan.visit(key, || Ok(change)).map_err(storage)? {
                    break;
                }
            }
        }
        Ok((scan.changes, scan.scanned_to.unwrap_or(applied)))
    }

    /// A module blob, if stored.
    pub fn blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let (unflushed, tx) = self.read(|u| u.blobs.get(digest).cloned())?;
        if unflushed.is_some() {
            return Ok(unflushed);
        }
        let table = tx.open_table(BLOBS).map_err(io_err)?;
        Ok(table.get(digest).map_err(io_err)?.map(|v| v.value().to_vec()))
    }
}

/// Collects history changes in key order up to a limit, never stopping inside a revision (a
/// reader resumes after whole revisions).
struct HistoryScan<'a> {
    prefix: &'a str,
    limit: usize,
    changes: Vec<Change>,
    /// The revision at which the limit was reached.
    full_at: Option<u64>,
    /// Where the scan stopped early: the last revision it read whole.
    scanned_to: Option<u64>,
}

impl HistoryScan<'_> {
    /// Takes the change at history key `key` (decoded only if needed); false once the scan is
    /// done.
    fn visit(&mut self, key: u64, change: impl FnOnce() -> Result<Change, StorageError>) -> Result<bool, StorageError> {
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

/// The last applied index recorded in the file.
fn applied_in(tx: &ReadTransaction) -> Result<u64, StorageError> {
    let meta = tx.open_table(SM_META).map_err(io_err)?;
    Ok(read_meta::<Option<LogId>>(&meta, "last_applied")?.flatten().map_or(0, |l| l.index))
}
