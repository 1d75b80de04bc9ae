//! `POST /api/v1/nodes/{name}/heartbeat`: a node saying it is alive, and how loaded its
//! autoscaled workloads are. The beat goes to the raft leader's memory ([`Liveness`], and
//! [`crate::load::Load`]), forwarded there by a follower: no raft write, no store read, no
//! controller pass. A beat of a node that is not registered is held like any other and
//! ignored by the lifecycle controller (a node token beats only for its own node).
//!
//! The answer carries a fencing lease when the leader may grant one (see [`crate::liveness`]):
//! a follower's answer carries the one the leader gave it for the forwarded beat.
//!
//! A follower forwards beats in batches ([`Forwarder`]): those that arrive while one batch is
//! on its way go together in the next, so two thirds of the beats on three members cost the
//! leader a share of one raft-listener request, not one each. A batch's lateness only
//! shortens a lease as the node counts it (from when it sent the beat), never lengthens it.
//!
//! The answer names the revoked nodes (see `tokens::revoke`), read by the member that took the
//! beat from its own store at most once a second: every node learns of a revocation within a
//! second or two of it, and refuses that node's certificates from then on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use shoal_api::agent::{Heartbeat, HeartbeatAnswer, Lease, MAX_LOAD_ENTRIES, RevokedNode, WorkloadLoad};

use super::error::ApiError;
use crate::raft_service::LeaderMemory;
use crate::store::network::paths;
use crate::store::{PeerRefusal, Store};
use shoal_api::{Reason, Status};

/// What the heartbeat handler needs.
#[derive(Clone)]
pub struct HeartbeatState {
    /// The store (to know whether this member leads, and to reach the leader if not).
    pub store: Arc<Store>,
    /// The leader's record of beats and load.
    pub memory: LeaderMemory,
    /// The answer, as last read.
    answer: Arc<Mutex<Option<KeptAnswer>>>,
    /// Beats on their way to the leader, when this member does not lead.
    forwarder: Forwarder,
}

/// The revocations, their tag, and when they were read.
type KeptAnswer = (Instant, u64, Arc<Vec<RevokedNode>>);

/// How long an answer read from the store is given out before it is read again.
const ANSWER_TTL: Duration = Duration::from_secs(1);

impl HeartbeatState {
    /// Heartbeats of `liveness`, answered from `store`.
    pub fn new(store: Arc<Store>, memory: LeaderMemory) -> Self {
        let forwarder = Forwarder::start(store.clone());
        HeartbeatState { store, memory, answer: Arc::default(), forwarder }
    }

    /// The answer to a node that knows the revocations tagged `known`, with `lease`: the
    /// revocations now (read at most once per [`ANSWER_TTL`]), tagged, and only the tag when
    /// the node knows them, however long the list.
    fn answer(&self, now: Instant, known: u64, lease: Option<Lease>) -> Result<HeartbeatAnswer, ApiError> {
        let (tag, revoked) = self.revocations(now)?;
        let revoked = (tag != known).then(|| revoked.as_ref().clone());
        Ok(HeartbeatAnswer { revocations_tag: tag, revoked, lease })
    }

    fn revocations(&self, now: Instant) -> Result<(u64, Arc<Vec<RevokedNode>>), ApiError> {
        let mut kept = self.answer.lock().expect("heartbeat answer lock");
        if let Some((at, tag, revoked)) = kept.as_ref()
            && now.duration_since(*at) < ANSWER_TTL
        {
            return Ok((*tag, revoked.clone()));
        }
        let mut revoked = super::registration::live_revocations(&self.store, super::registration::unix_now())?;
        revoked.sort_by(|a, b| a.node.cmp(&b.node));
        let tag = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            for r in &revoked {
                (&r.node, r.generation).hash(&mut hasher);
            }
            hasher.finish() | 1
        };
        let revoked = Arc::new(revoked);
        *kept = Some((now, tag, revoked.clone()));
        Ok((tag, revoked))
    }
}

/// Query of a heartbeat.
#[derive(Debug, Default, serde::Deserialize)]
pub struct BeatQuery {
    /// The tag of the revocations the node knows.
    #[serde(default)]
    revocations: u64,
}

/// A beat as a follower forwards it to the leader.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Forwarded {
    /// The node.
    pub node: String,
    /// Its report.
    pub load: Vec<WorkloadLoad>,
}

/// The beat's body: empty, or a [`Heartbeat`] of at most [`MAX_LOAD_ENTRIES`] entries.
fn parse(body: &[u8]) -> Result<Vec<WorkloadLoad>, String> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let beat: Heartbeat = serde_json::from_slice(body).map_err(|e| format!("heartbeat body: {e}"))?;
    if beat.load.len() > MAX_LOAD_ENTRIES {
        return Err(format!("load: {} entries, at most {MAX_LOAD_ENTRIES}", beat.load.len()));
    }
    Ok(beat.load)
}

/// Records a beat of node `name`, here when this member leads, else at the leader.
pub async fn beat(
    State(state): State<HeartbeatState>,
    Path(name): Path<String>,
    Query(query): Query<BeatQuery>,
    body: Bytes,
) -> Result<Json<HeartbeatAnswer>, ApiError> {
    let now = Instant::now();
    // A load report that does not parse is dropped, never the beat: a node must not go
    // NotReady for what its tenants' traffic looks like.
    let load = parse(&body).unwrap_or_else(|why| {
        tracing::warn!("node {name}: ignoring its load report: {why}");
        Vec::new()
    });
    let lease = match state.store.leader_term() {
        Some(term) => record(&state.memory, &name, &load, term, now),
        None => state.forwarder.forward(Forwarded { node: name, load }).await.map_err(ApiError)?,
    };
    Ok(Json(state.answer(now, query.revocations, lease)?))
}

/// Records a beat at the leader of `term`; returns the lease it grants.
fn record(memory: &LeaderMemory, node: &str, load: &[WorkloadLoad], term: u64, now: Instant) -> Option<Lease> {
    memory.liveness.beat(node, now);
    if !load.is_empty() {
        memory.load.report(node, load, now);
    }
    memory.liveness.lease(node, Some(term), now)
}

/// The most beats one forwarded batch carries.
pub const MAX_FORWARDED: usize = 1024;

/// Answers the heartbeats a follower forwarded together (on the raft listener), each with the
/// lease granted, in order. A batch past [`MAX_FORWARDED`] is refused, and load reports past
/// [`MAX_LOAD_ENTRIES`] entries in all are dropped (the beats are kept).
pub fn forwarded(
    store: &Store,
    memory: &LeaderMemory,
    beats: Vec<Forwarded>,
) -> Result<Vec<Option<Lease>>, PeerRefusal> {
    let Some(term) = store.leader_term() else {
        return Err(PeerRefusal::NotLeader { leader: None });
    };
    if beats.len() > MAX_FORWARDED {
        return Err(PeerRefusal::Failed(format!("{} beats in one batch, at most {MAX_FORWARDED}", beats.len())));
    }
    let now = Instant::now();
    let mut entries = 0;
    let leases = beats.iter().map(|beat| {
        entries += beat.load.len();
        let load = if entries > MAX_LOAD_ENTRIES { &[][..] } else { &beat.load[..] };
        record(memory, &beat.node, load, term, now)
    });
    Ok(leases.collect())
}

type Reply = oneshot::Sender<Result<Option<Lease>, Status>>;

/// How many of one node's beats may wait in a follower's queue at once. A node beats one at a
/// time (the next after the last is answered or has timed out, which drops its request and its
/// place here), so more than a few are a node misbehaving, and without a bound one node's
/// token could fill a member's memory with queued beats and delay every other node's.
pub const MAX_QUEUED_PER_NODE: usize = 4;

/// A follower's queue of beats for the leader, sent a batch at a time.
#[derive(Clone)]
pub struct Forwarder {
    queue: mpsc::UnboundedSender<(Forwarded, Reply)>,
    /// How many beats of each node are queued or on their way.
    queued: Arc<Mutex<HashMap<String, usize>>>,
}

/// A node's place in the queue, given back when its beat is answered or abandoned.
struct Place {
    queued: Arc<Mutex<HashMap<String, usize>>>,
    node: String,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut queued = self.queued.lock().expect("forwarder queue lock");
        if let Some(n) = queued.get_mut(&self.node) {
            *n -= 1;
            if *n == 0 {
                queued.remove(&self.node);
            }
        }
    }
}

impl Forwarder {
    /// Starts the task that forwards the queued beats through `store`.
    pub fn start(store: Arc<Store>) -> Forwarder {
        let (queue, beats) = mpsc::unbounded_channel();
        tokio::spawn(forward_batches(store, beats));
        Forwarder { queue, queued: Arc::default() }
    }

    /// Takes a place in the queue for a beat of `node`, unless it has [`MAX_QUEUED_PER_NODE`].
    fn place(&self, node: &str) -> Result<Place, Status> {
        let mut queued = self.queued.lock().expect("forwarder queue lock");
        let n = queued.entry(node.to_owned()).or_default();
        if *n >= MAX_QUEUED_PER_NODE {
            let message =
                format!("node {node} has {n} beats waiting for the leader already, at most {MAX_QUEUED_PER_NODE}");
            return Err(Status::new(Reason::TooManyRequests, message));
        }
        *n += 1;
        Ok(Place { queued: self.queued.clone(), node: node.to_owned() })
    }

    /// Forwards `beat` with those queued beside it; the lease the leader granted it.
    async fn forward(&self, beat: Forwarded) -> Result<Option<Lease>, Status> {
        let _place = self.place(&beat.node)?;
        let stopped = || Status::new(Reason::Unavailable, "the control plane is stopping");
        let (reply, answer) = oneshot::channel();
        self.queue.send((beat, reply)).map_err(|_| stopped())?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

/// Sends the queued beats to the leader, one batch at a time, each of what queued up while
/// the last was on its way (at most [`MAX_FORWARDED`] beats and [`MAX_LOAD_ENTRIES`] load
/// entries).
async fn forward_batches(store: Arc<Store>, mut queue: mpsc::UnboundedReceiver<(Forwarded, Reply)>) {
    let mut held = None;
    loop {
        let mut entries = 0;
        let admit = |(beat, _): &(Forwarded, Reply)| {
            entries += beat.load.len();
            entries <= MAX_LOAD_ENTRIES
        };
        let Some(batch) = shoal_api::batching::next_batch(&mut queue, &mut held, MAX_FORWARDED, admit).await else {
            return;
        };
        let (beats, replies): (Vec<Forwarded>, Vec<Reply>) = batch.into_iter().unzip();
        let answer: Result<Vec<Option<Lease>>, _> = store.call_leader(paths::HEARTBEAT, &beats).await;
        shoal_api::batching::answer_each(replies, answer.map_err(|e| ApiError::from(e).0), |beats, leases| {
            Status::new(Reason::Internal, format!("the leader answered {beats} beats with {leases} leases"))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A forwarder whose queue nobody takes from, as when the leader does not answer.
    fn stuck() -> (Forwarder, mpsc::UnboundedReceiver<(Forwarded, Reply)>) {
        let (queue, beats) = mpsc::unbounded_channel();
        (Forwarder { queue, queued: Arc::default() }, beats)
    }

    fn beat_of(node: &str) -> Forwarded {
        Forwarded { node: node.into(), load: Vec::new() }
    }

    #[tokio::test]
    async fn one_node_cannot_queue_more_than_its_share_of_beats_and_others_still_queue() {
        let (forwarder, mut beats) = stuck();
        let mut waiting: Vec<_> = (0..MAX_QUEUED_PER_NODE)
            .map(|_| {
                let forwarder = forwarder.clone();
                tokio::spawn(async move { forwarder.forward(beat_of("noisy")).await })
            })
            .collect();
        // Taken from the queue but not answered: on their way to a leader that does not answer.
        let mut on_their_way = Vec::new();
        for _ in 0..MAX_QUEUED_PER_NODE {
            on_their_way.push(beats.recv().await.expect("a queued beat"));
        }
        let refused = forwarder.forward(beat_of("noisy")).await.expect_err("one beat too many");
        assert_eq!(refused.reason, Reason::TooManyRequests, "{refused:?}");
        assert!(refused.message.contains("node noisy has 4 beats waiting"), "{}", refused.message);
        // Another node is not held back by it.
        let other = tokio::spawn({
            let forwarder = forwarder.clone();
            async move { forwarder.forward(beat_of("quiet")).await }
        });
        let (beat, reply) = beats.recv().await.expect("the quiet node's beat is queued");
        assert_eq!(beat.node, "quiet");
        reply.send(Ok(None)).unwrap();
        assert_eq!(other.await.unwrap().unwrap(), None);
        // An abandoned beat (its node timed out) gives its place back.
        let first = waiting.remove(0);
        first.abort();
        let _ = first.await;
        let again = tokio::spawn({
            let forwarder = forwarder.clone();
            async move { forwarder.forward(beat_of("noisy")).await }
        });
        let (beat, _reply) = beats.recv().await.expect("a place was given back");
        assert_eq!(beat.node, "noisy");
        again.abort();
        assert_eq!(forwarder.queued.lock().unwrap().get("quiet"), None, "an answered node leaves no entry");
    }
}
