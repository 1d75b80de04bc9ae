//! The raft listener: raft's RPCs and the control nodes' own (forwarded writes, read indexes,
//! joins), postcard over HTTPS, for holders of the cluster token only.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::liveness::Liveness;
use crate::pki::constant_time_eq;
use crate::store::network::paths;
use crate::store::{JoinRequest, Store};

#[derive(Clone)]
struct RaftState {
    store: Arc<Store>,
    liveness: Arc<Liveness>,
    token: Arc<str>,
}

/// The router of the raft listener.
pub fn router(store: Arc<Store>, liveness: Arc<Liveness>, cluster_token: &str) -> Router {
    let state = RaftState { store, liveness, token: cluster_token.into() };
    Router::new()
        .route(paths::APPEND, post(append))
        .route(paths::VOTE, post(vote))
        .route(paths::SNAPSHOT, post(snapshot))
        .route(paths::WRITE, post(write))
        .route(paths::READ_INDEX, post(read_index))
        .route(paths::JOIN, post(join))
        .route(paths::HEARTBEAT, post(heartbeat))
        .layer(middleware::from_fn_with_state(state.clone(), require_cluster_token))
        .layer(DefaultBodyLimit::max(256 << 20))
        .with_state(state)
}

async fn require_cluster_token(State(state): State<RaftState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(presented.as_bytes(), state.token.as_bytes()) {
        return (StatusCode::UNAUTHORIZED, "cluster token required").into_response();
    }
    next.run(request).await
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    postcard::from_bytes(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("undecodable request: {e}")).into_response())
}

fn encode<T: Serialize>(value: &T) -> Response {
    match postcard::to_allocvec(value) {
        Ok(bytes) => bytes.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn append(State(s): State<RaftState>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(rpc) => encode(&s.store.raft().append_entries(rpc).await),
        Err(r) => r,
    }
}

async fn vote(State(s): State<RaftState>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(rpc) => encode(&s.store.raft().vote(rpc).await),
        Err(r) => r,
    }
}

async fn snapshot(State(s): State<RaftState>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(rpc) => encode(&s.store.raft().install_snapshot(rpc).await),
        Err(r) => r,
    }
}

async fn write(State(s): State<RaftState>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(command) => encode(&s.store.forwarded_write(command).await),
        Err(r) => r,
    }
}

async fn read_index(State(s): State<RaftState>) -> Response {
    encode(&s.store.read_index().await)
}

async fn join(State(s): State<RaftState>, body: Bytes) -> Response {
    match decode::<JoinRequest>(&body) {
        Ok(request) => encode(&s.store.add_member(request).await),
        Err(r) => r,
    }
}

async fn heartbeat(State(s): State<RaftState>, body: Bytes) -> Response {
    match decode::<String>(&body) {
        Ok(node) => encode(&crate::api::heartbeat::forwarded(&s.store, &s.liveness, &node)),
        Err(r) => r,
    }
}
