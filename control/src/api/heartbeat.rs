//! `POST /api/v1/nodes/{name}/heartbeat`: a node saying it is alive. The beat goes to the raft
//! leader's memory ([`Liveness`]), forwarded there by a follower: no raft write, no store read,
//! no controller pass. A beat of a node that is not registered is held like any other and
//! ignored by the lifecycle controller (a node token beats only for its own node).

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, State};

use super::error::ApiError;
use crate::liveness::Liveness;
use crate::store::network::paths;
use crate::store::{PeerRefusal, Store};

/// What the heartbeat handler needs.
#[derive(Clone)]
pub struct HeartbeatState {
    /// The store (to know whether this member leads, and to reach the leader if not).
    pub store: Arc<Store>,
    /// The leader's record of beats.
    pub liveness: Arc<Liveness>,
}

/// Records a beat of node `name`, here when this member leads, else at the leader.
pub async fn beat(State(state): State<HeartbeatState>, Path(name): Path<String>) -> Result<Json<()>, ApiError> {
    if state.store.is_leader() {
        state.liveness.beat(&name, Instant::now());
        return Ok(Json(()));
    }
    state.store.call_leader::<_, ()>(paths::HEARTBEAT, &name).await?;
    Ok(Json(()))
}

/// Answers a heartbeat forwarded by a follower (on the raft listener).
pub fn forwarded(store: &Store, liveness: &Liveness, name: &str) -> Result<(), PeerRefusal> {
    if !store.is_leader() {
        return Err(PeerRefusal::NotLeader { leader: None });
    }
    liveness.beat(name, Instant::now());
    Ok(())
}
