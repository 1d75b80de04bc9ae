//! `POST /api/v1/namespaces/{ns}/workloads/{name}/activate`: a node holds a request for an
//! autoscaled workload that has no ready instance, and asks for one. The leader's autoscaler
//! takes it as one instance needed now ([`crate::load::Load::activate`]) and the workload is
//! reconciled at once; a follower forwards the ask to the leader. No raft write is made here:
//! the workload controller makes the instance.
//!
//! Only a workload that is stored and autoscaled is activated, so the leader's memory grows
//! with the workloads, not with what callers name.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use shoal_api::Reason;

use super::error::ApiError;
use crate::load::Load;
use crate::store::network::paths;
use crate::store::{ObjectKey, PeerRefusal, Store};

/// What the handler needs.
#[derive(Clone)]
pub struct ActivateState {
    /// The store (to read the Workload, and to reach the leader).
    pub store: Arc<Store>,
    /// The leader's load, when this member leads.
    pub load: Arc<Load>,
}

/// Asks the leader for an instance of the workload.
pub async fn activate(
    State(state): State<ActivateState>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let key = ObjectKey::new("workloads", Some(&ns), &name);
    let bytes = state
        .store
        .reader()
        .get(&key)?
        .ok_or_else(|| ApiError::new(Reason::NotFound, format!("workload \"{ns}/{name}\" not found")))?;
    // Only whether it is autoscaled, not the whole spec.
    #[derive(serde::Deserialize)]
    struct Stored {
        spec: StoredSpec,
    }
    #[derive(serde::Deserialize)]
    struct StoredSpec {
        #[serde(default)]
        autoscale: Option<serde::de::IgnoredAny>,
    }
    let workload: Stored = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(Reason::Internal, format!("stored workload \"{ns}/{name}\" is damaged: {e}")))?;
    if workload.spec.autoscale.is_none() {
        return Err(ApiError::new(Reason::Conflict, format!("workload \"{ns}/{name}\" is not autoscaled")));
    }
    let key = format!("workloads/{ns}/{name}");
    if state.store.is_leader() {
        state.load.activate(&key, std::time::Instant::now());
    } else {
        state.store.call_leader::<_, ()>(paths::ACTIVATE, &key).await?;
    }
    Ok(StatusCode::ACCEPTED)
}

/// Answers an activation forwarded by a follower (on the raft listener), which checked the
/// workload.
pub fn forwarded(store: &Store, load: &Load, key: &str) -> Result<(), PeerRefusal> {
    if !store.is_leader() {
        return Err(PeerRefusal::NotLeader { leader: None });
    }
    load.activate(key, std::time::Instant::now());
    Ok(())
}
