//! Health and cluster status.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use crate::store::{ClusterStatus, Store};

/// `GET /healthz`: the process is up.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /version`: the server's release (to anyone, as Kubernetes' is).
pub async fn version() -> Json<shoal_api::status::Version> {
    Json(shoal_api::status::Version { version: env!("CARGO_PKG_VERSION").to_owned() })
}

/// `GET /readyz`: this member knows a leader and so can serve requests.
pub async fn readyz(State(store): State<Arc<Store>>) -> (StatusCode, &'static str) {
    match store.status().leader {
        Some(_) => (StatusCode::OK, "ok"),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no raft leader"),
    }
}

/// `GET /api/v1/cluster`: raft's view of the control plane.
pub async fn cluster(State(store): State<Arc<Store>>) -> Json<ClusterStatus> {
    Json(store.status())
}
