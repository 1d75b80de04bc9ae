//! What the control plane decides for an object before it is proposed, so that every raft
//! member applies the same bytes: its uid and creation time, and the time written into
//! conditions and Events. The API server and the controllers both stamp with these.

use std::time::SystemTime;

/// The current time, as objects record it.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Fills in what the control plane decides for a new object: uid and creation time (the
/// store sets resourceVersion and generation).
pub fn stamp_new(meta: &mut shoal_api::ObjectMeta) {
    meta.uid = Some(uuid::Uuid::new_v4().to_string());
    meta.creation_timestamp = Some(now_rfc3339());
    meta.generation = None;
}
