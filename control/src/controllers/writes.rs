//! What reconcilers return instead of writing: each intended write as data ([`Write`]), so a
//! reconciler is a pure function of the cache that unit tests can check without a store, and
//! the runner ([`execute`]) makes them: the same raft commands the API server proposes, with the
//! same stamping of what is not deterministic (uid, creation time), proposed only while this
//! member leads (never forwarded: a deposed leader's decisions are dropped).

use std::time::Duration;

use shoal_api::{AnyObject, Object, Resource};

use crate::stamp::stamp_new;
use crate::store::{Command, CommandResult, ObjectKey, Store, StoreError, UpdateScope};

/// A write a reconciler intends.
#[derive(Debug, Clone)]
pub enum Write {
    /// Create this object (uid and creation time stamped when it is made).
    Create(AnyObject),
    /// Replace this object's spec or status, if it is still at the resourceVersion it carries.
    Update(AnyObject, UpdateScope),
    /// Create or replace this object whatever its resourceVersion (Events).
    Upsert(AnyObject),
    /// Delete the object at this key, if it is still at this resourceVersion.
    Delete(ObjectKey, Option<u64>),
    /// Bind the unbound instance at this key, at this resourceVersion, to this node.
    Bind(ObjectKey, u64, String),
}

/// What one reconcile decided: its writes, and when to look at the same key again even if
/// nothing changes (a deadline it is waiting for).
#[derive(Debug, Default)]
pub struct Action {
    /// The writes to make.
    pub writes: Vec<Write>,
    /// Look again after this long.
    pub requeue_after: Option<Duration>,
}

impl Action {
    /// Nothing to do.
    pub fn none() -> Self {
        Action::default()
    }

    /// These writes, and no requeue.
    pub fn writes(writes: Vec<Write>) -> Self {
        Action { writes, requeue_after: None }
    }

    /// Nothing to write now; look again after `after`.
    pub fn requeue(after: std::time::Duration) -> Self {
        Action { writes: Vec::new(), requeue_after: Some(after) }
    }
}

/// The store key of a typed object.
pub fn key_of<R: Resource>(object: &Object<R>) -> ObjectKey {
    let meta = &object.metadata;
    ObjectKey::new(R::KIND.plural(), meta.namespace.as_ref().map(|n| n.as_str()), meta.name.as_str())
}

fn any_key(object: &AnyObject) -> ObjectKey {
    let meta = object.meta();
    ObjectKey::new(object.kind().plural(), meta.namespace.as_ref().map(|n| n.as_str()), meta.name.as_str())
}

impl Write {
    /// Deletes `object` if it is still at the resourceVersion it carries.
    pub fn delete<R: Resource>(object: &Object<R>) -> Write {
        Write::Delete(key_of(object), object.metadata.resource_version)
    }

    /// The key of the object written.
    pub fn key(&self) -> ObjectKey {
        match self {
            Write::Create(o) | Write::Update(o, _) | Write::Upsert(o) => any_key(o),
            Write::Delete(key, _) | Write::Bind(key, _, _) => key.clone(),
        }
    }

    fn command(self) -> Command {
        let bytes = |o: &AnyObject| serde_json::to_vec(o).expect("objects serialize");
        match self {
            Write::Create(mut object) => {
                stamp_new(object.meta_mut());
                Command::Create { key: any_key(&object), object: bytes(&object) }
            }
            Write::Update(object, scope) => {
                let expected = object.meta().resource_version;
                Command::Update { key: any_key(&object), object: bytes(&object), expected, scope }
            }
            Write::Upsert(mut object) => {
                stamp_new(object.meta_mut());
                object.meta_mut().resource_version = None;
                Command::Update {
                    key: any_key(&object),
                    object: bytes(&object),
                    expected: None,
                    scope: UpdateScope::Spec,
                }
            }
            Write::Delete(key, expected) => Command::Delete { key, expected },
            Write::Bind(key, expected, node) => Command::Bind { key, node, expected },
        }
    }
}

/// Whether a write was made. A refusal because someone else changed the object first is a
/// failure like any other: the task comes back (after the queue's back-off) and decides anew.
fn outcome(key: &ObjectKey, deleting: bool, result: Result<CommandResult, StoreError>) -> bool {
    match result {
        Ok(CommandResult::Ok { .. }) => true,
        // Gone already is what a delete wanted.
        Ok(CommandResult::NotFound) if deleting => true,
        Ok(CommandResult::Conflict { .. } | CommandResult::NotFound | CommandResult::AlreadyExists) => false,
        Ok(other) => {
            tracing::warn!("controllers: writing {} refused: {other:?}", key.0);
            false
        }
        Err(e) => {
            tracing::info!("controllers: writing {} failed: {e}", key.0);
            false
        }
    }
}

/// Makes `write`; whether it was made.
pub async fn execute(store: &Store, write: Write) -> bool {
    let (key, deleting) = (write.key(), matches!(write, Write::Delete(..)));
    let result = store.write_as_leader(write.command()).await;
    outcome(&key, deleting, result)
}
