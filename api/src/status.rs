//! What the API server says on the wire besides objects: error statuses, lists, watch events.

use serde::{Deserialize, Serialize};

/// Why a request failed; each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// 400: the request itself is malformed.
    BadRequest,
    /// 401: no token, or an unknown one.
    Unauthorized,
    /// 403: the token may not do this.
    Forbidden,
    /// 404: no such object.
    NotFound,
    /// 409: exists already, or the resourceVersion is stale.
    Conflict,
    /// 410: the revision asked for was compacted away; re-list.
    Gone,
    /// 422: the object is well-formed but invalid.
    Invalid,
    /// 429: the caller holds as many of something (watches) as it may; close one first.
    TooManyRequests,
    /// 503: no leader right now, or shutting down; try again.
    Unavailable,
    /// 507: a control member's disk is too full for writes; they are taken again once space
    /// is freed.
    InsufficientStorage,
    /// 500: a bug or a broken disk.
    Internal,
}

impl Reason {
    /// The HTTP status code.
    pub fn code(self) -> u16 {
        match self {
            Reason::BadRequest => 400,
            Reason::Unauthorized => 401,
            Reason::Forbidden => 403,
            Reason::NotFound => 404,
            Reason::Conflict => 409,
            Reason::Gone => 410,
            Reason::Invalid => 422,
            Reason::TooManyRequests => 429,
            Reason::Unavailable => 503,
            Reason::InsufficientStorage => 507,
            Reason::Internal => 500,
        }
    }
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
#[error("{message} ({reason:?}, {code})")]
pub struct Status {
    /// The HTTP status code.
    pub code: u16,
    /// Machine-readable reason.
    pub reason: Reason,
    /// For people.
    pub message: String,
    /// The field path the error is about, for 422s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Status {
    /// A status for `reason` with `message`.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Status { code: reason.code(), reason, message: message.into(), field: None }
    }
}

/// A list response: the items and the revision they were read at (watch from there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct List<T> {
    /// The store revision the list was read at (for every page of a paged list, the first
    /// page's: a watch from it sees every change since).
    pub resource_version: u64,
    /// The objects.
    pub items: Vec<T>,
    /// For a list asked for with `limit`: where the next page starts, if one follows.
    #[serde(default, rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_: Option<String>,
}

/// What `GET /version` says: the server's build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    /// The release, e.g. `0.1.0`.
    pub version: String,
}

/// What happened to an object, in a watch stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventType {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Deleted; the object is its last state.
    Deleted,
}

/// One line of a watch stream (newline-delimited JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchEvent<T> {
    /// What happened.
    #[serde(rename = "type")]
    pub type_: EventType,
    /// The revision it happened at.
    pub revision: u64,
    /// The object after (or, for a delete, before) the change.
    pub object: T,
}

/// What a watch stream says: a change, or a bookmark (the watch has delivered everything it
/// would up to that revision, so it may be resumed from there).
#[derive(Debug, Clone, PartialEq)]
pub enum Watched<T> {
    /// A change.
    Change(WatchEvent<T>),
    /// Everything up to this revision was delivered.
    Bookmark(u64),
}

/// What `GET /api/v1/cluster` reports: one control node's view of the raft cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The answering member's id.
    pub id: u64,
    /// The current leader, if known.
    pub leader: Option<u64>,
    /// The current term.
    pub term: u64,
    /// The last revision applied on the answering member.
    pub revision: u64,
    /// Voters and their raft addresses.
    pub members: std::collections::BTreeMap<u64, String>,
}
