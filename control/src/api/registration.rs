//! What the control plane keeps of each node beyond its Node object, under keys no object path
//! reaches, so that a node's own token cannot change them:
//! - its registration (`nodehosts//<node>`): the host its certificates name, fixed at its first
//!   join, and the capacity ceiling its first report set (an admin raises it);
//! - its revocations (`noderevocations//<node>`): the generation its certificates are issued
//!   in, raised each time its token is revoked, so that peers refuse the older ones.
//!
//! An admin deleting the Node deletes its registration: a node of that name may then join anew,
//! from another host and with other labels. To retire a node, revoke its token.

use serde::{Deserialize, Serialize};
use shoal_api::agent::RevokedNode;
use shoal_api::resources::node::Capacity;

use super::error::ApiError;
use crate::store::{Command, ObjectKey, Store};

/// Key prefix ("kind") of node registrations.
pub const NODE_HOSTS: &str = "nodehosts";

/// Where registrations were kept before certificates replaced agent secrets (read only, and
/// deleted when the registration is next written).
const LEGACY_NODE_SECRETS: &str = "nodesecrets";

/// Key prefix ("kind") of node revocations.
pub const NODE_REVOCATIONS: &str = "noderevocations";

/// A node's registration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The host the node's certificates name, fixed at its first join.
    #[serde(default)]
    pub host: Option<String>,
    /// The most the node may report of each resource (its first report, or an admin's).
    #[serde(default)]
    pub capacity: Option<Capacity>,
}

/// Node `name`'s registration, if it has one.
pub fn read(store: &Store, name: &str) -> Result<Option<Registration>, ApiError> {
    for prefix in [NODE_HOSTS, LEGACY_NODE_SECRETS] {
        if let Some(bytes) = store.reader().get(&ObjectKey::new(prefix, None, name))? {
            return Ok(serde_json::from_slice(&bytes).ok());
        }
    }
    Ok(None)
}

/// Commands that replace node `name`'s registration with `registration`, in one entry: no
/// reader ever sees it gone (an update of an object without a spec would be a no-op).
pub fn write(name: &str, registration: &Registration) -> Vec<Command> {
    let mut commands = vec![Command::Delete { key: ObjectKey::new(LEGACY_NODE_SECRETS, None, name), expected: None }];
    commands.extend(replace(ObjectKey::new(NODE_HOSTS, None, name), registration));
    commands
}

/// Commands that raise node `name`'s generation (see [`revocation`]) until `until` (seconds
/// since the epoch, when every certificate issued before has expired). The record is kept after
/// that (a few bytes for each node ever revoked), so that generations only grow.
pub fn revoke(store: &Store, name: &str, until: i64) -> Result<Vec<Command>, ApiError> {
    let record = RevokedNode { node: name.to_owned(), generation: generation(store, name)? + 1, until };
    Ok(replace(ObjectKey::new(NODE_REVOCATIONS, None, name), &record))
}

/// Commands that replace the record at `key` whole, in one entry: no reader sees it gone.
fn replace(key: ObjectKey, record: &impl Serialize) -> Vec<Command> {
    let object = serde_json::to_vec(record).expect("serializes");
    vec![Command::Delete { key: key.clone(), expected: None }, Command::Create { key, object }]
}

/// Commands that delete node `name`'s registration.
pub fn delete(name: &str) -> Vec<Command> {
    [NODE_HOSTS, LEGACY_NODE_SECRETS]
        .into_iter()
        .map(|prefix| Command::Delete { key: ObjectKey::new(prefix, None, name), expected: None })
        .collect()
}

/// Node `name`'s revocation record, if one is kept.
pub fn revocation(store: &Store, name: &str) -> Result<Option<RevokedNode>, ApiError> {
    let bytes = store.reader().get(&ObjectKey::new(NODE_REVOCATIONS, None, name))?;
    Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
}

/// The generation node `name`'s certificates are issued in now.
pub fn generation(store: &Store, name: &str) -> Result<u64, ApiError> {
    Ok(revocation(store, name)?.map_or(0, |r| r.generation))
}

/// Every kept revocation whose older certificates may still be valid at `now` (seconds since
/// the epoch).
pub fn live_revocations(store: &Store, now: i64) -> Result<Vec<RevokedNode>, ApiError> {
    let (_, entries) = store.reader().entries(&ObjectKey::prefix(NODE_REVOCATIONS, None))?;
    Ok(entries
        .into_iter()
        .filter_map(|(_, bytes)| serde_json::from_slice::<RevokedNode>(&bytes).ok())
        .filter(|r| r.until >= now)
        .collect())
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
