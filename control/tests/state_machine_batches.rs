//! Batched writes in the state machine: one raft entry with several commands applies them in
//! order, gives every object the entry's revision, records every change, and a reader of the
//! history never gets half a batch.

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, LogId};
use shoal_control::store::db;
use shoal_control::store::state_machine::StateMachine;
use shoal_control::store::types::{Command, CommandResult, Entry, ObjectKey};
use shoal_control::store::writer::Writer;

fn create(name: &str) -> Command {
    let object = serde_json::json!({"metadata": {"name": name}});
    Command::Create { key: ObjectKey::new("namespaces", None, name), object: serde_json::to_vec(&object).unwrap() }
}

fn entry(index: u64, command: Command) -> Entry {
    Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Normal(command) }
}

#[tokio::test]
async fn a_batch_applies_in_order_at_one_revision_and_is_never_split() {
    let dir = tempfile::tempdir().unwrap();
    let db = db::open(&dir.path().join("store.redb")).unwrap();
    let (mut sm, reader) = StateMachine::new(db.clone(), Writer::start(db), 1000).unwrap();
    let batch = Command::Batch(vec![create("a"), create("b"), create("a"), create("c")]);
    let results = sm.apply([entry(1, batch), entry(2, create("d"))]).await.unwrap();

    let CommandResult::Batch(inner) = &results[0] else { panic!("{results:?}") };
    assert_eq!(inner.len(), 4);
    assert!(matches!(inner[0], CommandResult::Ok { .. }));
    assert_eq!(inner[2], CommandResult::AlreadyExists, "the second create of a sees the first");
    for name in ["a", "b", "c"] {
        let stored: serde_json::Value =
            serde_json::from_slice(&reader.get(&ObjectKey::new("namespaces", None, name)).unwrap().unwrap()).unwrap();
        assert_eq!(stored["metadata"]["resourceVersion"], 1, "{name}");
    }

    // A limit of 2 falls inside the batch: the reader gets all of it, and resumes after it.
    let (changes, scanned_to) = reader.changes_after(0, "", 2).unwrap();
    let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys, ["namespaces//a", "namespaces//b", "namespaces//c"]);
    assert!(changes.iter().all(|c| c.revision == 1));
    assert_eq!(scanned_to, 1);
    let (rest, scanned_to) = reader.changes_after(scanned_to, "", 2).unwrap();
    assert_eq!(rest.iter().map(|c| (c.key.as_str(), c.revision)).collect::<Vec<_>>(), [("namespaces//d", 2)]);
    assert_eq!(scanned_to, 2);
}
