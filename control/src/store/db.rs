//! The one redb file per control node: raft's log and vote, and the state machine, as tables.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, TableDefinition};

use super::types::StorageError;

/// Raft log entries by index (postcard-encoded `Entry`).
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Raft's own small values: `vote`, `committed`, `last_purged`.
pub(crate) const RAFT_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
/// State machine bookkeeping: `last_applied`, `membership`, `compacted`.
pub(crate) const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");
/// Objects by key (JSON).
pub(crate) const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
/// Change history by revision (postcard-encoded `Change`), for watches.
pub(crate) const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");
/// The current snapshot: `meta` and `data`.
pub(crate) const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

/// The most of the file redb keeps cached in memory (its default is 1 GiB). The state the API
/// and the controllers read is in memory elsewhere (the overlay, the controllers' cache, the
/// watch hub), and the change history is read once per revision, so a large page cache would
/// mostly hold a second copy of what is already held.
const CACHE_BYTES: usize = 64 << 20;

/// Opens (or creates) the store file and makes sure every table exists, so that readers never
/// meet a missing table.
pub fn open(path: &Path) -> Result<Arc<Database>, redb::Error> {
    let db = Database::builder().set_cache_size(CACHE_BYTES).create(path)?;
    // What the cluster keeps of its tenants and nodes lives in it (token digests, node
    // registrations): its owner's only.
    shoal_api::config::private_file(path).map_err(redb::StorageError::from)?;
    let tx = db.begin_write()?;
    tx.open_table(LOG)?;
    tx.open_table(RAFT_META)?;
    tx.open_table(SM_META)?;
    tx.open_table(OBJECTS)?;
    tx.open_table(HISTORY)?;
    tx.open_table(SNAPSHOT)?;
    tx.commit()?;
    Ok(Arc::new(db))
}

/// Wraps any storage failure for openraft (which stops the raft node on it: a disk that fails
/// a write must not be trusted with the next one).
pub(crate) fn io_err(e: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    StorageError::from(openraft::StorageIOError::write(&e))
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("postcard encoding of in-memory values does not fail")
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    postcard::from_bytes(bytes).map_err(io_err)
}

/// Runs blocking redb work off the async runtime (commits fsync).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f).await.map_err(io_err)?
}
