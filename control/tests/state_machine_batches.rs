//! Batched writes in the state machine: one raft entry with several commands applies them in
//! order, gives every object the entry's revision, records every change, and a reader of the
//! history never gets half a batch. And applied changes read the same whether they are still in
//! memory or already in the file.

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
    let (mut sm, reader) =
        StateMachine::new(db.clone(), Writer::start(db), 1000, &dir.path().join("snapshots")).unwrap();
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

fn delete(name: &str) -> Command {
    Command::Delete { key: ObjectKey::new("namespaces", None, name), expected: None }
}

/// Applied changes wait in memory before they are written to the file; reads see the same
/// state either way, and the file catches up on its own.
#[tokio::test]
async fn reads_see_applied_changes_before_and_after_they_reach_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = db::open(&dir.path().join("store.redb")).unwrap();
    let (mut sm, reader) =
        StateMachine::new(db.clone(), Writer::start(db.clone()), 1000, &dir.path().join("snapshots")).unwrap();
    sm.apply([entry(1, create("a")), entry(2, create("b")), entry(3, create("c"))]).await.unwrap();

    // The file alone (a state machine with nothing in memory) gets there without further writes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (mut file_only, _) =
            StateMachine::new(db.clone(), Writer::start(db.clone()), 1000, &dir.path().join("snapshots")).unwrap();
        if file_only.applied_state().await.unwrap().0.map(|l| l.index) == Some(3) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "entries 1-3 never reached the file");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    // More changes, most likely still in memory only: the reader merges them over the file.
    let results = sm.apply([entry(4, delete("b")), entry(5, create("d"))]).await.unwrap();
    assert!(results.iter().all(|r| matches!(r, CommandResult::Ok { .. })), "{results:?}");
    let (revision, objects) = reader.entries("namespaces/").unwrap();
    assert_eq!(revision, 5);
    let keys: Vec<&str> = objects.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["namespaces//a", "namespaces//c", "namespaces//d"]);
    assert!(reader.get(&ObjectKey::new("namespaces", None, "b")).unwrap().is_none(), "b is deleted");
    let (changes, scanned_to) = reader.changes_after(0, "", 100).unwrap();
    let seen: Vec<(u64, &str)> = changes.iter().map(|c| (c.revision, c.key.as_str())).collect();
    assert_eq!(
        seen,
        [(1, "namespaces//a"), (2, "namespaces//b"), (3, "namespaces//c"), (4, "namespaces//b"), (5, "namespaces//d")],
        "every change once, in order"
    );
    assert_eq!(scanned_to, 5);
    // A create of a key that exists only in memory is refused as for one in the file.
    let again = sm.apply([entry(6, create("d"))]).await.unwrap();
    assert_eq!(again, [CommandResult::AlreadyExists]);
}
