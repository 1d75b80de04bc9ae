//! The state machine's bookkeeping in the `sm_meta` table: `last_applied`, `membership` and
//! `compacted` (the compaction point of history). Applying, compaction, snapshots and reads all
//! read or write these values, so their accessors live here rather than in any one of them.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::Serialize;

use super::db::{SM_META, decode, encode, io_err};
use super::types::{LogId, StorageError};

/// The value at `key` of a metadata table, if set.
pub(super) fn read_meta<T: serde::de::DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>, StorageError> {
    match table.get(key).map_err(io_err)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

/// Writes `value` at `key` of `sm_meta` in `tx`.
pub(super) fn put_meta<T: Serialize>(tx: &WriteTransaction, key: &str, value: &T) -> Result<(), StorageError> {
    tx.open_table(SM_META).map_err(io_err)?.insert(key, encode(value).as_slice()).map_err(io_err)?;
    Ok(())
}

/// The last applied index recorded in the file.
pub(super) fn applied_in(tx: &ReadTransaction) -> Result<u64, StorageError> {
    let meta = tx.open_table(SM_META).map_err(io_err)?;
    Ok(read_meta::<Option<LogId>>(&meta, "last_applied")?.flatten().map_or(0, |l| l.index))
}
