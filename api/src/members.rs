//! The control plane's membership as the API shows and changes it (`/api/v1/members`): raft's
//! voters and learners, as the leader sees them.

use serde::{Deserialize, Serialize};

/// One control-plane member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// Its raft member id.
    pub id: u64,
    /// Its raft listener, `host:port`.
    pub address: String,
    /// Whether it votes (a learner only receives the log).
    pub voter: bool,
    /// Whether it leads.
    pub leader: bool,
    /// The last log index the leader knows it to hold.
    pub matched: Option<u64>,
}

/// What `GET /api/v1/members` answers: every member, and the leader's log position to compare
/// their `matched` with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberList {
    /// The leader's id (none just after the leader removed itself).
    pub leader: Option<u64>,
    /// The leader's term.
    pub term: u64,
    /// The leader's last log index.
    pub last_log_index: u64,
    /// Every member, by id.
    pub members: Vec<Member>,
}

/// A member to add (`POST /api/v1/members`), or the one replacing another
/// (`POST /api/v1/members/{id}/replace`). It must be running already, started with
/// `shoal control --standby` and the cluster's PKI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewMember {
    /// Its raft member id, unused in the cluster.
    pub id: u64,
    /// Its raft listener, `host:port`.
    pub address: String,
}
