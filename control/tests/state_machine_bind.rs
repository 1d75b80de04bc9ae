//! Binds in the state machine: `Command::Bind` sets an unbound instance's node at the
//! resourceVersion the scheduler read, bumps its generation, and never moves a bound one.

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, LogId};
use shoal_control::store::db;
use shoal_control::store::state_machine::StateMachine;
use shoal_control::store::types::{Command, CommandResult, Entry, ObjectKey};
use shoal_control::store::writer::Writer;

fn entry(index: u64, command: Command) -> Entry {
    Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Normal(command) }
}

fn bind(node: &str, expected: u64) -> Command {
    Command::Bind { key: ObjectKey::new("instances", Some("default"), "i"), node: node.into(), expected }
}

#[tokio::test]
async fn a_bind_sets_the_node_once_at_the_version_read() {
    let dir = tempfile::tempdir().unwrap();
    let db = db::open(&dir.path().join("store.redb")).unwrap();
    let (mut sm, reader) =
        StateMachine::new(db.clone(), Writer::start(db), 1000, &dir.path().join("snapshots")).unwrap();
    let key = ObjectKey::new("instances", Some("default"), "i");
    let object = serde_json::json!({"metadata": {"name": "i", "namespace": "default"}, "spec": {"module": "m"}});
    let create = Command::Create { key: key.clone(), object: serde_json::to_vec(&object).unwrap() };
    let results = sm.apply([entry(1, create), entry(2, bind("n1", 7)), entry(3, bind("n1", 1))]).await.unwrap();
    assert_eq!(results[1], CommandResult::Conflict { current: 1 }, "a stale bind is refused");
    assert!(matches!(results[2], CommandResult::Ok { .. }), "{results:?}");
    let stored: serde_json::Value = serde_json::from_slice(&reader.get(&key).unwrap().unwrap()).unwrap();
    assert_eq!(stored["spec"]["node"], "n1");
    assert_eq!(stored["spec"]["module"], "m");
    assert_eq!(stored["metadata"]["resourceVersion"], 3);
    assert_eq!(stored["metadata"]["generation"], 2);

    let results = sm.apply([entry(4, bind("n2", 3))]).await.unwrap();
    assert!(matches!(results[0], CommandResult::Conflict { .. }), "a bound instance is not moved: {results:?}");
    let stored: serde_json::Value = serde_json::from_slice(&reader.get(&key).unwrap().unwrap()).unwrap();
    assert_eq!(stored["spec"]["node"], "n1");
    let missing =
        Command::Bind { key: ObjectKey::new("instances", Some("default"), "gone"), node: "n1".into(), expected: 1 };
    assert_eq!(sm.apply([entry(5, missing)]).await.unwrap()[0], CommandResult::NotFound);
}
