//! The redb storage passes openraft's own storage conformance suite.

use openraft::testing::{StoreBuilder, Suite};
use shoal_control::store::db;
use shoal_control::store::log_store::LogStore;
use shoal_control::store::state_machine::StateMachine;
use shoal_control::store::types::{StorageError, TypeConfig};
use shoal_control::store::writer::Writer;

struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RedbBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = db::open(&dir.path().join("store.redb")).expect("open redb");
        let writer = Writer::start(db.clone());
        let (sm, _reader) = StateMachine::new(db.clone(), writer.clone(), 1000, &dir.path().join("snapshots"))?;
        Ok((dir, LogStore::new(db, writer), sm))
    }
}

#[test]
fn redb_storage_passes_openraft_suite() {
    Suite::test_all(RedbBuilder).expect("openraft storage suite");
}
