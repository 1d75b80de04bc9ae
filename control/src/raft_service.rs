//! The raft listener: raft's RPCs and the control nodes' own (forwarded writes, read indexes,
//! joins), postcard over HTTPS, for holders of the cluster token only.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::Method;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::blobs::{Blobs, hashes_to, paths as blob_paths};
use crate::liveness::Liveness;
use crate::load::Load;
use crate::pki::constant_time_eq;
use crate::store::network::paths;
use crate::store::{JoinRequest, Store};

/// What the raft leader holds in memory only, and followers forward to it: node liveness and
/// autoscaled workloads' load.
#[derive(Clone)]
pub struct LeaderMemory {
    /// Node heartbeats.
    pub liveness: Arc<Liveness>,
    /// Load reports and activations.
    pub load: Arc<Load>,
}

#[derive(Clone)]
struct RaftState {
    store: Arc<Store>,
    blobs: Arc<Blobs>,
    memory: LeaderMemory,
    token: Arc<str>,
}

/// The router of the raft listener.
pub fn router(store: Arc<Store>, blobs: Arc<Blobs>, memory: LeaderMemory, cluster_token: &str) -> Router {
    let state = RaftState { store, blobs, memory, token: cluster_token.into() };
    Router::new()
        .route(paths::APPEND, post(append))
        .route(paths::VOTE, post(vote))
        .route(paths::SNAPSHOT, post(snapshot))
        .route(paths::WRITE, post(write))
        .route(paths::READ_INDEX, post(read_index))
        .route(paths::JOIN, post(join))
        .route(paths::MEMBERS, post(members))
        .route(paths::LEAVE, post(leave))
        .route(paths::HEARTBEAT, post(heartbeat))
        .route(paths::ACTIVATE, post(activate))
        .route(paths::DISK, post(disk))
        .route(blob_paths::MODULE, get(module_get).put(module_put))
        .route(blob_paths::PRESENT, get(module_present))
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

/// A snapshot chunk is received in a task of its own, so that a peer giving up on the request
/// (its timeout, a reset) does not cut the receive or the install short half way.
async fn snapshot(State(s): State<RaftState>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(rpc) => {
            let raft = s.store.raft().clone();
            match tokio::spawn(async move { raft.install_snapshot(rpc).await }).await {
                Ok(answer) => encode(&answer),
                Err(e) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, format!("receiving the snapshot chunk: {e}")).into_response()
                }
            }
        }
        Err(r) => r,
    }
}

async fn write(State(s): State<RaftState>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(commands) => encode(&s.store.forwarded_writes(commands).await),
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

async fn members(State(s): State<RaftState>, body: Bytes) -> Response {
    match decode::<crate::store::members::MembersCall>(&body) {
        Ok(call) => encode(&s.store.members_here(call).await),
        Err(r) => r,
    }
}

async fn disk(State(s): State<RaftState>, body: Bytes) -> Response {
    match decode::<crate::store::disk::DiskReport>(&body) {
        Ok(report) => encode(&s.store.record_disk(report)),
        Err(r) => r,
    }
}

async fn leave(State(s): State<RaftState>, body: Bytes) -> Response {
    match decode::<crate::store::MemberId>(&body) {
        Ok(id) => {
            s.store.told_removed(id);
            encode(&())
        }
        Err(r) => r,
    }
}

async fn heartbeat(State(s): State<RaftState>, body: Bytes) -> Response {
    match decode::<Vec<crate::api::heartbeat::Forwarded>>(&body) {
        Ok(beat) => encode(&crate::api::heartbeat::forwarded(&s.store, &s.memory, beat)),
        Err(r) => r,
    }
}

async fn activate(State(s): State<RaftState>, body: Bytes) -> Response {
    match decode::<String>(&body) {
        Ok(key) => encode(&crate::api::activate::forwarded(&s.store, &s.memory.load, &key)),
        Err(r) => r,
    }
}

/// `GET /raft/modules/{digest}`: this member's copy of a module's bytes, for a member that
/// lacks them.
async fn module_get(State(s): State<RaftState>, Path(digest): Path<String>) -> Response {
    if !shoal_api::digest::is_sha256_hex(&digest) {
        return (StatusCode::BAD_REQUEST, "not a sha256 digest").into_response();
    }
    match crate::api::modules::file_response(&s.blobs, &digest, &Method::GET).await {
        Ok(Some(response)) => response,
        Ok(None) => (StatusCode::NOT_FOUND, "not here").into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `GET /raft/modules/{digest}/present`: 200 if this member holds the bytes (renewed, as a push
/// counts on them), else 404.
async fn module_present(State(s): State<RaftState>, Path(digest): Path<String>) -> StatusCode {
    if shoal_api::digest::is_sha256_hex(&digest) && s.blobs.files().renew(&digest) {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

/// `PUT /raft/modules/{digest}`: a module's bytes pushed by the member that took the upload;
/// answered once they are durable here.
async fn module_put(State(s): State<RaftState>, Path(digest): Path<String>, request: Request) -> Response {
    if !shoal_api::digest::is_sha256_hex(&digest) {
        return (StatusCode::BAD_REQUEST, "not a sha256 digest").into_response();
    }
    let _memory = s.blobs.memory().await;
    let bytes = match axum::body::to_bytes(request.into_body(), crate::api::MAX_MODULE_BYTES).await {
        Ok(bytes) => bytes,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    if !hashes_to(&bytes, &digest).await {
        return (StatusCode::UNPROCESSABLE_ENTITY, "bytes do not hash to the digest").into_response();
    }
    match s.blobs.files().write(&digest, bytes).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    //! Decoding what a peer sends, fed garbage: random bytes and valid encodings with bytes
    //! flipped, inserted, removed and cut off, for every RPC the raft listener takes. Each must
    //! decode or be refused (a 400), never panic, and never allocate what a length prefix
    //! claims before the bytes are there.

    use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
    use openraft::{EntryPayload, LeaderId, Membership, SnapshotMeta, Vote};
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::store::members::MembersCall;
    use crate::store::types::{Command, Entry, LogId, MemberId, ObjectKey, TypeConfig};

    fn log_id(index: u64) -> LogId {
        LogId::new(LeaderId::new(3, 1), index)
    }

    fn entries() -> Vec<Entry> {
        let membership = Membership::new(vec![[1, 2, 3].into()], None);
        let create = Command::Create { key: ObjectKey("configs/default/a".into()), object: br#"{"a":1}"#.to_vec() };
        vec![
            Entry { log_id: log_id(7), payload: EntryPayload::Blank },
            Entry { log_id: log_id(8), payload: EntryPayload::Normal(create) },
            Entry { log_id: log_id(9), payload: EntryPayload::Membership(membership) },
        ]
    }

    /// Valid encodings of every request the raft listener decodes.
    fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let vote = Vote::new(3, 1);
        let append: AppendEntriesRequest<TypeConfig> = AppendEntriesRequest {
            vote,
            prev_log_id: Some(log_id(6)),
            leader_commit: Some(log_id(6)),
            entries: entries(),
        };
        let ask: VoteRequest<MemberId> = VoteRequest { vote, last_log_id: Some(log_id(9)) };
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(9)),
            last_membership: Default::default(),
            snapshot_id: "3-1-9".into(),
        };
        let snapshot: InstallSnapshotRequest<TypeConfig> =
            InstallSnapshotRequest { vote, meta, offset: 0, data: vec![1, 2, 3, 4], done: true };
        let join = JoinRequest { id: 4, addr: "10.0.0.4:7000".into() };
        let replace = MembersCall::Replace { old: 2, new: join.clone() };
        let forwarded = vec![crate::api::heartbeat::Forwarded { node: "n1".into(), load: vec![] }];
        let disk = crate::store::disk::DiskReport { id: 2, low: Some("full".into()) };
        let create = Command::Create { key: ObjectKey("configs/default/a".into()), object: b"{}".to_vec() };
        vec![
            ("append", enc(&append)),
            ("vote", enc(&ask)),
            ("snapshot", enc(&snapshot)),
            ("write", enc(&create)),
            ("join", enc(&join)),
            ("members", enc(&replace)),
            ("members-add", enc(&MembersCall::Add(join))),
            ("leave", enc(&4u64)),
            ("heartbeat", enc(&forwarded)),
            ("activate", enc(&"workloads/default/web".to_owned())),
            ("disk", enc(&disk)),
        ]
    }

    #[test]
    fn forwarded_beats_are_answered_with_leases_that_decode_with_or_without_singletons() {
        use shoal_api::agent::Lease;
        let leases = vec![
            Some(Lease { millis: 2500, singletons: vec![] }),
            None,
            Some(Lease { millis: 2500, singletons: vec!["u1".into()] }),
        ];
        let answer: Result<Vec<Option<Lease>>, crate::store::PeerRefusal> = Ok(leases.clone());
        let back: Result<Vec<Option<Lease>>, crate::store::PeerRefusal> = postcard::from_bytes(&enc(&answer)).unwrap();
        assert_eq!(back.unwrap(), leases);
    }

    fn enc<T: Serialize>(value: &T) -> Vec<u8> {
        postcard::to_allocvec(value).expect("encodes")
    }

    /// Decodes `bytes` as the request of route `name`; whether it decoded.
    fn decodes(name: &str, bytes: &[u8]) -> bool {
        match name {
            "append" => decode::<AppendEntriesRequest<TypeConfig>>(bytes).is_ok(),
            "vote" => decode::<VoteRequest<MemberId>>(bytes).is_ok(),
            "snapshot" => decode::<InstallSnapshotRequest<TypeConfig>>(bytes).is_ok(),
            "write" => decode::<Command>(bytes).is_ok(),
            "join" => decode::<JoinRequest>(bytes).is_ok(),
            "members" | "members-add" => decode::<MembersCall>(bytes).is_ok(),
            "leave" => decode::<MemberId>(bytes).is_ok(),
            "heartbeat" => decode::<Vec<crate::api::heartbeat::Forwarded>>(bytes).is_ok(),
            "activate" => decode::<String>(bytes).is_ok(),
            "disk" => decode::<crate::store::disk::DiskReport>(bytes).is_ok(),
            other => panic!("no route {other}"),
        }
    }

    fn mutate(rng: &mut rand::rngs::StdRng, seed: &[u8]) -> Vec<u8> {
        let mut bytes = seed.to_vec();
        for _ in 0..rng.random_range(1..=4) {
            match rng.random_range(0..5) {
                0 if !bytes.is_empty() => {
                    let i = rng.random_range(0..bytes.len());
                    bytes[i] ^= 1 << rng.random_range(0..8);
                }
                1 => {
                    // A length prefix claiming far more than follows.
                    let i = rng.random_range(0..=bytes.len());
                    bytes.splice(i..i, [0xff, 0xff, 0xff, 0xff, 0x0f]);
                }
                2 if !bytes.is_empty() => {
                    let i = rng.random_range(0..bytes.len());
                    bytes.remove(i);
                }
                3 => bytes.truncate(rng.random_range(0..=bytes.len())),
                _ => {
                    let i = rng.random_range(0..=bytes.len());
                    bytes.insert(i, rng.random());
                }
            }
        }
        bytes
    }

    #[test]
    fn every_raft_request_decoded_from_garbage_is_refused_or_read_never_a_panic() {
        let cases: usize = std::env::var("SHOAL_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
        let seed: u64 = std::env::var("SHOAL_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(17);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for (name, valid) in seeds() {
            assert!(decodes(name, &valid), "{name}: its own encoding decodes");
            let mut refused = 0;
            for _ in 0..cases {
                let bytes = match rng.random_bool(0.2) {
                    true => (0..rng.random_range(0..64)).map(|_| rng.random()).collect(),
                    false => mutate(&mut rng, &valid),
                };
                refused += usize::from(!decodes(name, &bytes));
            }
            assert!(refused > 0, "{name}: no garbage was refused in {cases} cases (the mutations do nothing?)");
        }
    }
}
