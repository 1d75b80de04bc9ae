//! How controllers write: the same raft commands the API server proposes, with the same
//! stamping of what is not deterministic (uid, creation time), straight to the local store.

use shoal_api::{Object, Resource};

use crate::api::objects::stamp_typed;
use crate::store::{Command, CommandResult, ObjectKey, Store, StoreError, UpdateScope};

/// The store key of a typed object.
pub fn key_of<R: Resource>(object: &Object<R>) -> ObjectKey {
    let meta = &object.metadata;
    ObjectKey::new(R::KIND.plural(), meta.namespace.as_ref().map(|n| n.as_str()), meta.name.as_str())
}

fn bytes<R: Resource>(object: &Object<R>) -> Vec<u8> {
    serde_json::to_vec(object).expect("objects serialize")
}

fn outcome(what: &str, result: Result<CommandResult, StoreError>) -> bool {
    match result {
        Ok(CommandResult::Ok { .. }) => true,
        // Someone else changed it first; the next pass sees their change and decides again.
        Ok(CommandResult::Conflict { .. } | CommandResult::NotFound | CommandResult::AlreadyExists) => false,
        Ok(other) => {
            tracing::warn!("controllers: {what} refused: {other:?}");
            false
        }
        Err(e) => {
            tracing::info!("controllers: {what} failed: {e}");
            false
        }
    }
}

/// Creates `object` (uid and creation time stamped here).
pub async fn create<R: Resource>(store: &Store, mut object: Object<R>) -> bool {
    stamp_typed(&mut object.metadata);
    let key = key_of(&object);
    let result = store.write(Command::Create { key: key.clone(), object: bytes(&object) }).await;
    outcome(&format!("creating {}", key.0), result)
}

/// Replaces the spec (or, with `UpdateScope::Status`, the status) of `object`, if it is still at
/// the resourceVersion it carries.
pub async fn update<R: Resource>(store: &Store, object: &Object<R>, scope: UpdateScope) -> bool {
    let key = key_of(object);
    let expected = object.metadata.resource_version;
    let result = store.write(Command::Update { key: key.clone(), object: bytes(object), expected, scope }).await;
    outcome(&format!("updating {}", key.0), result)
}

/// Creates or replaces `object` regardless of its resourceVersion (for Events).
pub async fn upsert<R: Resource>(store: &Store, mut object: Object<R>) -> bool {
    stamp_typed(&mut object.metadata);
    object.metadata.resource_version = None;
    let key = key_of(&object);
    let command =
        Command::Update { key: key.clone(), object: bytes(&object), expected: None, scope: UpdateScope::Spec };
    outcome(&format!("writing {}", key.0), store.write(command).await)
}

/// Deletes `object` if it is still at the resourceVersion it carries.
pub async fn delete<R: Resource>(store: &Store, object: &Object<R>) -> bool {
    let key = key_of(object);
    let result = store.write(Command::Delete { key: key.clone(), expected: object.metadata.resource_version }).await;
    outcome(&format!("deleting {}", key.0), result)
}
