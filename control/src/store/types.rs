//! The raft type configuration, and the commands the replicated state machine applies.
//!
//! Commands carry everything that is not deterministic (uids, timestamps) already decided by the
//! API server, so that every member applies a command to the very same result.

use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// Shoal's raft types: commands in, results out, `u64` member ids, members addressed by
    /// the `host:port` of their raft listener.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = super::snapshot_file::SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A raft member id.
pub type MemberId = u64;
/// The raft instance.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// Storage errors, as openraft wants them.
pub type StorageError = openraft::StorageError<MemberId>;
/// A log id.
pub type LogId = openraft::LogId<MemberId>;
/// Membership as stored with the state machine.
pub type StoredMembership = openraft::StoredMembership<MemberId, openraft::BasicNode>;

/// Key of an object in the store: `<plural>/<namespace>/<name>`, with an empty namespace for
/// cluster-scoped kinds, so that a prefix scan lists one kind in one namespace or in all.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey(pub String);

impl ObjectKey {
    /// The key of object `name` of kind `plural` in `namespace`.
    pub fn new(plural: &str, namespace: Option<&str>, name: &str) -> Self {
        ObjectKey(format!("{plural}/{}/{name}", namespace.unwrap_or("")))
    }

    /// The prefix that every key of kind `plural` (in `namespace`, when given) starts with.
    pub fn prefix(plural: &str, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) => format!("{plural}/{ns}/"),
            None => format!("{plural}/"),
        }
    }
}

/// What part of an object an update replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateScope {
    /// Spec, labels and annotations; uid, creation time and status are kept.
    Spec,
    /// Only the status.
    Status,
}

/// One write to the store. Objects travel as JSON (the API's own representation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Creates an object; fails with `AlreadyExists` if the key is taken.
    Create {
        /// Where.
        key: ObjectKey,
        /// The object, with uid and creation time set.
        object: Vec<u8>,
    },
    /// Updates an object. With `expected` set, only if that is its current resourceVersion.
    /// Without `expected`, a missing object is created (this is what `apply` does).
    Update {
        /// Where.
        key: ObjectKey,
        /// The new object (for `Status`, only its status is used).
        object: Vec<u8>,
        /// The resourceVersion the writer read.
        expected: Option<u64>,
        /// What is replaced.
        scope: UpdateScope,
    },
    /// Deletes an object (with `expected`, only at that resourceVersion).
    Delete {
        /// Where.
        key: ObjectKey,
        /// The resourceVersion the writer read.
        expected: Option<u64>,
    },
    /// Several commands proposed as one raft entry (concurrent writes, packed by the store's
    /// proposer): applied in order, atomically, all at the entry's revision.
    Batch(Vec<Command>),
    /// Binds an instance to a node (like Kubernetes' `pods/binding`): sets its `spec.node`, only
    /// if it is at `expected` and bound to no node yet. The entry carries the node's name, not
    /// the whole object, and a bound instance is never moved by it.
    Bind {
        /// The instance.
        key: ObjectKey,
        /// The node.
        node: String,
        /// The resourceVersion the scheduler read.
        expected: u64,
    },
    /// Records that `namespace` holds the module `digest`, charging `size` bytes to its
    /// `spec.quota.moduleBytes` (checked here, in the same step as the write, so that two
    /// uploads at once never both fit in the last room). The bytes themselves never travel in
    /// the log: they are durable on a quorum of members before this is proposed.
    PutModule {
        /// The namespace charged.
        namespace: String,
        /// sha256 hex of the bytes, already verified.
        digest: String,
        /// Length of the bytes.
        size: u64,
        /// When (RFC 3339), decided by the API server.
        uploaded: String,
    },
    /// A node's report on an instance (its status JSON only, not the whole object): replaces
    /// the instance's status only if it is bound to `node`, checked in the same step as the
    /// write, so that a node never writes the status of an instance that moved away meanwhile.
    Report {
        /// Which instance.
        key: ObjectKey,
        /// The node reporting.
        node: String,
        /// The new status (JSON; `null` removes it).
        status: Vec<u8>,
        /// The resourceVersion the node read, when it sent one.
        expected: Option<u64>,
    },
}

impl Command {
    /// Calls `f` with the key of every object the command writes.
    pub fn keys(&self, f: &mut impl FnMut(&str)) {
        match self {
            Command::Create { key, .. }
            | Command::Update { key, .. }
            | Command::Delete { key, .. }
            | Command::Bind { key, .. }
            | Command::Report { key, .. } => f(&key.0),
            Command::Batch(commands) => commands.iter().for_each(|c| c.keys(f)),
            Command::PutModule { namespace, digest, .. } => {
                f(&ObjectKey::new(shoal_api::module::MODULES, Some(namespace), digest).0)
            }
        }
    }
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Done; the object as written (or, for a delete, as it was), when there is one.
    Ok {
        /// The object JSON after the write.
        object: Option<Vec<u8>>,
    },
    /// Create of a key that exists.
    AlreadyExists,
    /// Update or delete of a key that does not exist.
    NotFound,
    /// `expected` did not match.
    Conflict {
        /// The object's current resourceVersion.
        current: u64,
    },
    /// The command could not be applied (e.g. a stored object that is not JSON).
    Invalid {
        /// Why.
        message: String,
    },
    /// The results of a `Batch`, in order.
    Batch(Vec<CommandResult>),
    /// A `Report` on an instance that is bound to another node (or to none).
    NotBound,
    /// A `PutModule` past the namespace's module storage quota.
    QuotaExceeded {
        /// Bytes the namespace's modules take already.
        used: u64,
        /// Its `spec.quota.moduleBytes`.
        limit: u64,
    },
}
