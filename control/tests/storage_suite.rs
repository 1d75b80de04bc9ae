//! The redb storage passes openraft's own storage conformance suite.

use openraft::testing::{StoreBuilder, Suite};
use shoal_control::store::db;
use shoal_control::store::log_store::LogStore;
use shoal_control::store::state_machine::StateMachine;
use shoal_control::store::types::{StorageError, TypeConfig};

struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RedbBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = db::open(&dir.path().join("store.redb")).expect("open redb");
        let (sm, _reader) = StateMachine::new(db.clone(), 1000)?;
        Ok((dir, LogStore::new(db), sm))
    }
}

#[test]
fn redb_storage_passes_openraft_suite() {
    Suite::test_all(RedbBuilder).expect("openraft storage suite");
}
