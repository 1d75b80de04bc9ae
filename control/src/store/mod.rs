//! The store: openraft over redb, and the one door the rest of the control plane uses to
//! write (a raft proposal, forwarded to the leader when this member is not it) and to read
//! (linearizable by default: the leader confirms it still leads before the read is served).
//!
//! # Layout
//! - [`types`]: the raft type configuration, commands and results.
//! - [`db`]: the redb file and its tables.
//! - [`log_store`]: raft's log and vote.
//! - [`state_machine`]: the state machine openraft drives (objects and history).
//! - [`apply`]: applying commands to objects (resourceVersion, generation, conflicts).
//! - [`history`]: the change history watches read, and its compaction.
//! - [`snapshot`]: building and installing snapshots; [`snapshot_file`]: their file format.
//! - [`reader`]: [`StoreReader`], reads of the applied state.
//! - [`unflushed`]: applied changes not yet in the file, and writing them out.
//! - [`sm_meta`]: the state machine's bookkeeping values.
//! - [`writer`]: the one thread that writes the file, log appends and applies in one commit.
//! - [`peer`], [`network`]: calls between control nodes.
//! - [`proposer`]: packs concurrent writes into one raft entry.
//! - [`forward`]: a follower's writes on their way to the leader, a batch at a time.
//! - [`read_index`]: one leadership round shared by the linearizable reads waiting for it.
//! - [`members`]: adding, removing and replacing members.

pub mod apply;
pub mod db;
pub mod disk;
pub mod forward;
pub mod history;
pub mod log_store;
pub mod members;
pub mod network;
pub mod peer;
pub mod proposer;
pub mod read_index;
pub mod reader;
pub mod sm_meta;
pub mod snapshot;
pub mod snapshot_file;
pub mod state_machine;
pub mod types;
pub mod unflushed;
pub mod writer;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, SnapshotPolicy};
use serde::{Deserialize, Serialize};

pub use self::history::{Change, ChangeKind, HistoryError};
use self::network::paths;
use self::peer::{PeerClient, PeerError};
pub use self::reader::StoreReader;
pub use self::types::{Command, CommandResult, MemberId, ObjectKey, Raft, UpdateScope};
pub use shoal_api::status::ClusterStatus;

/// How many log entries one AppendEntries carries at most. openraft gives up on an append after
/// one heartbeat interval and then sends the same entries again, so a payload too large to be
/// received, written and applied within it never gets through, and its follower never catches
/// up: each entry may be a batch of hundreds of writes, and at 512 entries a follower that fell
/// behind on a saturated machine (3 members, 5,000 hollow nodes, 150,000 instances) timed out
/// every append until elections followed. Writing steadily, the leader sends one or two entries
/// at a time, so this only paces catching up.
const MAX_PAYLOAD_ENTRIES: u64 = 16;

/// The leader as `raft` knows it: its id and raft address.
fn known_leader(raft: &Raft) -> Option<(MemberId, String)> {
    let m = raft.metrics();
    let m = m.borrow();
    let leader = m.current_leader?;
    m.membership_config.membership().get_node(&leader).map(|n| (leader, n.addr.clone()))
}

/// How long a write or a linearizable read waits for a leader before giving up with 503.
const LEADER_WAIT: Duration = Duration::from_secs(5);

/// How long a restarted member of a multi-member cluster at most holds back from campaigning.
const RESTART_QUIET: Duration = Duration::from_millis(1200);

/// A restarted member does not campaign until it has heard from a leader and applied all of
/// its log, or for [`RESTART_QUIET`]. With a stale log it cannot win an election, but its
/// campaigns (openraft 0.9 has no pre-vote) replace the vote of the member that can win and so
/// reset that member's election timer: measured, failover took 1.1–1.8 s instead of ~0.5 s when
/// the leader died right after another member restarted. A whole cluster restarting elects
/// [`RESTART_QUIET`] later.
async fn quiet_after_restart(raft: Raft) {
    let mut metrics = raft.metrics();
    // The first metrics carry the membership from storage (well before the first election tick,
    // which waits at least the election timeout); a lone voter elects itself at once.
    let voters = |m: &openraft::RaftMetrics<MemberId, BasicNode>| m.membership_config.membership().voter_ids().count();
    let loaded = tokio::time::timeout(Duration::from_millis(100), metrics.wait_for(|m| voters(m) > 0));
    if !matches!(loaded.await, Ok(Ok(m)) if voters(&m) > 1) {
        return;
    }
    raft.runtime_config().elect(false);
    let caught_up = async {
        loop {
            {
                let m = metrics.borrow_and_update();
                let heard_from_leader = m.current_leader.is_some_and(|leader| leader != m.id);
                if heard_from_leader && m.last_applied.map(|l| l.index) == m.last_log_index {
                    return;
                }
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(RESTART_QUIET, caught_up).await;
    raft.runtime_config().elect(true);
}

/// Why the store could not serve a request.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No leader could be reached in time (an election is under way, or there is no quorum).
    #[error("no raft leader available: {0}")]
    NoLeader(String),
    /// The write was sent to the leader but its outcome is unknown (the leader went away).
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// Reading or writing the disk failed.
    #[error("storage failure: {0}")]
    Storage(#[from] types::StorageError),
    /// Raft stopped (shutting down, or after a storage failure).
    #[error("raft stopped: {0}")]
    Stopped(String),
    /// A voting member's disk is too full for writes (see [`disk`]).
    #[error("insufficient storage: {0}")]
    DiskFull(String),
}

/// Errors a member answers a forwarded request with.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum PeerRefusal {
    /// This member is not the leader; try the one named, if known.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader's raft address, if known.
        leader: Option<String>,
    },
    /// Something else went wrong.
    #[error("{0}")]
    Failed(String),
    /// A voting member's disk is too full for writes.
    #[error("insufficient storage: {0}")]
    DiskFull(String),
}

impl From<PeerRefusal> for StoreError {
    fn from(refusal: PeerRefusal) -> Self {
        match refusal {
            PeerRefusal::DiskFull(why) => StoreError::DiskFull(why),
            PeerRefusal::Failed(why) => StoreError::NoLeader(why),
            not_leader @ PeerRefusal::NotLeader { .. } => StoreError::NoLeader(not_leader.to_string()),
        }
    }
}

/// A new member asking to be added.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    /// Its raft member id.
    pub id: MemberId,
    /// Its raft listener, `host:port`.
    pub addr: String,
}

/// Tunables of the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// This member's id.
    pub id: MemberId,
    /// How many revisions of history watches can resume from.
    pub history_revisions: u64,
    /// How many log entries since the last snapshot make the next one (a fifth of them, at
    /// most 1000, stay in the log after it, for followers a little behind).
    pub snapshot_every: u64,
    /// Bytes kept free on the data directory's file system: below it, writes are refused.
    pub disk_reserve: u64,
    /// Raft's heartbeat interval; elections time out after 3 to 6 of them. openraft gives up
    /// on an append after one interval, so it must exceed the round trip between members.
    pub raft_heartbeat: Duration,
}

/// One member's store.
pub struct Store {
    id: MemberId,
    /// Its redb file.
    path: std::path::PathBuf,
    raft: Raft,
    proposer: proposer::Proposer,
    /// Writes on their way to the leader, when this member follows.
    forwarder: forward::Forwarder,
    /// Leadership confirmed for the reads waiting, a round at a time.
    read_index: read_index::ReadIndex,
    /// The same, asked of the leader, for the reads waiting while this member follows.
    leader_read_index: read_index::ReadIndex,
    reader: StoreReader,
    peers: PeerClient,
    /// Fires once this member is removed from the cluster.
    removed: tokio_util::sync::CancellationToken,
    /// Held by the membership change under way on this member (as leader).
    membership_turn: tokio::sync::Mutex<()>,
    /// Its disk's reserve, and (as leader) what the others report of theirs.
    disk: disk::DiskGuard,
}

impl Store {
    /// Opens the redb file at `path` and starts raft on it.
    pub async fn open(path: &Path, options: &StoreOptions, peers: PeerClient) -> Result<Arc<Store>, anyhow::Error> {
        let db = db::open(path)?;
        let writer = writer::Writer::start(db.clone());
        let log = log_store::LogStore::new(db.clone(), writer.clone());
        let snapshots = path.parent().unwrap_or(Path::new(".")).join("snapshots");
        let (sm, reader) = state_machine::StateMachine::new(db, writer, options.history_revisions, &snapshots)?;
        let config = openraft::Config {
            cluster_name: "shoal".into(),
            heartbeat_interval: options.raft_heartbeat.as_millis().max(1) as u64,
            election_timeout_min: 3 * options.raft_heartbeat.as_millis().max(1) as u64,
            election_timeout_max: 6 * options.raft_heartbeat.as_millis().max(1) as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(options.snapshot_every.max(1)),
            max_in_snapshot_log_to_keep: (options.snapshot_every / 5).min(1000),
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            ..Default::default()
        };
        let config = Arc::new(config.validate()?);
        let raft = Raft::new(options.id, config, network::Network::new(peers.clone()), log, sm).await?;
        tokio::spawn(quiet_after_restart(raft.clone()));
        let removed = tokio_util::sync::CancellationToken::new();
        tokio::spawn(members::notice_removal(raft.clone(), options.id, removed.clone()));
        let proposer = proposer::Proposer::start(raft.clone());
        let read_index = read_index::ReadIndex::start(raft.clone());
        let leader_read_index = read_index::ReadIndex::start_following(raft.clone(), peers.clone());
        let forwarder = forward::Forwarder::start(peers.clone(), LEADER_WAIT);
        Ok(Arc::new(Store {
            id: options.id,
            path: path.to_owned(),
            raft,
            proposer,
            forwarder,
            read_index,
            leader_read_index,
            reader,
            peers,
            removed,
            membership_turn: tokio::sync::Mutex::new(()),
            disk: disk::DiskGuard::new(path.parent().unwrap_or(Path::new(".")).to_owned(), options.disk_reserve),
        }))
    }

    /// Makes this member part of a cluster of `members` (id → raft address) if it is not in one
    /// yet. Every founding member may call this with the same set; only the first write counts.
    pub async fn bootstrap(&self, members: BTreeMap<MemberId, String>) -> Result<(), StoreError> {
        if self.raft.is_initialized().await.map_err(|e| StoreError::Stopped(e.to_string()))? {
            return Ok(());
        }
        let nodes: BTreeMap<MemberId, BasicNode> = members.into_iter().map(|(id, a)| (id, BasicNode::new(a))).collect();
        match self.raft.initialize(nodes).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(StoreError::Stopped(e.to_string())),
        }
    }

    /// Asks the cluster reachable at raft address `via` to add this member (retrying until a
    /// leader accepts), unless it already belongs to a cluster.
    pub async fn join(&self, via: &str, own_addr: &str) -> Result<(), StoreError> {
        if self.raft.is_initialized().await.map_err(|e| StoreError::Stopped(e.to_string()))? {
            return Ok(());
        }
        let request = JoinRequest { id: self.id, addr: own_addr.to_owned() };
        let mut target = via.to_owned();
        loop {
            let answer: Result<Result<(), PeerRefusal>, PeerError> =
                self.peers.call(&target, paths::JOIN, &request, members::CATCH_UP + LEADER_WAIT).await;
            match answer {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(PeerRefusal::NotLeader { leader: Some(leader) })) => target = leader,
                Ok(Err(e)) => tracing::warn!("join via {target} refused: {e}"),
                Err(e) => tracing::warn!("join via {target} failed: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The raft handle (for the raft RPC endpoints).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Read access to applied state. Reads through it are local; call [`Store::linearize`] first
    /// for a linearizable read.
    pub fn reader(&self) -> &StoreReader {
        &self.reader
    }

    /// This member's id.
    pub fn id(&self) -> MemberId {
        self.id
    }

    /// Raft's view of the cluster.
    pub fn status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow().clone();
        let members = m
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| m.membership_config.membership().voter_ids().any(|v| v == **id))
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect();
        ClusterStatus {
            id: self.id,
            leader: m.current_leader,
            term: m.current_term,
            revision: self.reader.revision(),
            members,
        }
    }

    /// Every member raft knows of (voters and learners), id → (raft address, whether it votes).
    pub fn members(&self) -> BTreeMap<MemberId, (String, bool)> {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<MemberId> = membership.voter_ids().collect();
        membership.nodes().map(|(id, n)| (*id, (n.addr.clone(), voters.contains(id)))).collect()
    }

    /// The term this member leads in, if it leads.
    pub fn leader_term(&self) -> Option<u64> {
        let m = self.raft.metrics().borrow().clone();
        (m.current_leader == Some(self.id)).then_some(m.current_term)
    }

    /// Proposes `command` here, as the leader: never forwarded, so that what a deposed leader
    /// decided is not applied on its successor's watch (the controllers write this way).
    pub async fn write_as_leader(&self, command: Command) -> Result<CommandResult, StoreError> {
        self.room_for_writes_of(0)?;
        match self.proposer.propose(command).await {
            Ok(result) => Ok(result),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(StoreError::NoLeader("this member no longer leads".into()))
            }
            Err(RaftError::APIError(e)) => Err(StoreError::NoLeader(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(StoreError::Stopped(e.to_string())),
        }
    }

    /// What raft says of this member now, for the metrics.
    pub fn raft_figures(&self) -> crate::metrics::RaftFigures {
        let m = self.raft.metrics().borrow().clone();
        crate::metrics::RaftFigures {
            term: m.current_term,
            leader: m.current_leader,
            is_leader: m.current_leader == Some(self.id),
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |id| id.index),
            log_entries: match (m.last_log_index, m.purged) {
                (Some(last), Some(purged)) => last.saturating_sub(purged.index),
                (Some(last), None) => last + 1,
                (None, _) => 0,
            },
            snapshot_index: m.snapshot.map_or(0, |id| id.index),
            store_bytes: std::fs::metadata(&self.path).map_or(0, |m| m.len()),
        }
    }

    /// How long raft entries take from proposal to commit, for the metrics.
    pub fn commit_latency(&self) -> prometheus_client::metrics::histogram::Histogram {
        self.proposer.commit_latency()
    }

    /// Refuses writes while this member's disk, or (on the leader) a voter's, is below its
    /// reserve, or this member's would be after `bytes` more (a module's, stored beside the
    /// log).
    pub fn room_for_writes_of(&self, bytes: u64) -> Result<(), StoreError> {
        let voters = || self.raft.metrics().borrow().membership_config.membership().voter_ids().collect();
        match self.disk.refusal(voters, bytes, Instant::now()) {
            Some(why) => Err(StoreError::DiskFull(why)),
            None => Ok(()),
        }
    }

    /// Records a member's report of its disk (answers `DISK`, on the leader).
    pub fn record_disk(&self, report: disk::DiskReport) {
        if report.low.is_some() {
            tracing::warn!("member {} reports a low disk: writes are refused", report.id);
        }
        self.disk.record(report, Instant::now());
    }

    /// While this member follows, tells the leader every [`disk::REPORT_EVERY`] that its disk is
    /// below its reserve, and once that it has room again, until `shutdown`.
    pub async fn report_disk(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut told_low = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(disk::REPORT_EVERY) => {}
            }
            let low = self.disk.own_refusal(Instant::now());
            if let Some(why) = &low {
                tracing::warn!("{why}");
            }
            if self.is_leader() || (low.is_none() && !told_low) {
                told_low = false;
                continue;
            }
            let report = disk::DiskReport { id: self.id, low: low.clone() };
            match self.call_leader::<_, ()>(paths::DISK, &report).await {
                Ok(()) => told_low = low.is_some(),
                Err(e) => tracing::warn!("telling the leader of this member's disk failed: {e}"),
            }
        }
    }

    /// Whether this member leads now.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    fn leader_addr(&self) -> Option<String> {
        self.leader().map(|(_, addr)| addr)
    }

    /// The leader as this member knows it: its id and raft address.
    fn leader(&self) -> Option<(MemberId, String)> {
        known_leader(&self.raft)
    }

    /// Waits until some leader other than `not` is known, or the deadline passes.
    async fn wait_for_leader(&self, not: Option<MemberId>, deadline: Instant) -> Result<(), StoreError> {
        let mut metrics = self.raft.metrics();
        loop {
            let leader = metrics.borrow_and_update().current_leader;
            if leader.is_some() && leader != not {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::NoLeader("timed out waiting for an election".into()));
            }
            match tokio::time::timeout(left, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(StoreError::Stopped("raft metrics closed".into())),
                Err(_) => return Err(StoreError::NoLeader("timed out waiting for an election".into())),
            }
        }
    }

    /// Proposes `command` and returns what applying it did, once it is committed and applied.
    /// On a follower the command is forwarded to the leader. A command is retried only when it
    /// certainly did not reach a leader, so it is never applied twice.
    pub async fn write(&self, command: Command) -> Result<CommandResult, StoreError> {
        self.room_for_writes_of(0)?;
        let deadline = Instant::now() + LEADER_WAIT;
        let mut encoded = None;
        loop {
            // A follower that knows the leader forwards at once; otherwise raft decides (and
            // names the leader when it is another member).
            let leader = match self.leader().filter(|(id, _)| *id != self.id) {
                Some((id, addr)) => (Some(id), Some(addr)),
                None => match self.proposer.propose(command.clone()).await {
                    Ok(result) => return Ok(result),
                    Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                        (f.leader_id, f.leader_node.map(|n| n.addr))
                    }
                    Err(RaftError::APIError(e)) => return Err(StoreError::NoLeader(e.to_string())),
                    Err(RaftError::Fatal(e)) => return Err(StoreError::Stopped(e.to_string())),
                },
            };
            match leader {
                (Some(id), Some(addr)) if id != self.id => {
                    let command = match &encoded {
                        Some(bytes) => bytes,
                        None => encoded
                            .insert(postcard::to_allocvec(&command).map_err(|e| StoreError::Stopped(e.to_string()))?),
                    };
                    match self.forwarder.forward(&addr, command.clone()).await {
                        Ok(Ok(result)) => return Ok(result),
                        Ok(Err(PeerRefusal::NotLeader { .. })) => self.wait_for_leader(Some(id), deadline).await?,
                        Ok(Err(refusal @ (PeerRefusal::Failed(_) | PeerRefusal::DiskFull(_)))) => {
                            return Err(refusal.into());
                        }
                        // The leader may be there still, too busy to take a connection in
                        // time: ask again soon, or sooner if another is elected meanwhile.
                        Err(forward::Failure::NeverArrived(_)) => {
                            let pause = tokio::time::timeout(
                                Duration::from_millis(100),
                                self.wait_for_leader(Some(id), deadline),
                            );
                            let _ = pause.await;
                        }
                        Err(forward::Failure::Unknown(why)) => return Err(StoreError::Unknown(why)),
                    }
                }
                _ => self.wait_for_leader(None, deadline).await?,
            }
            if Instant::now() >= deadline {
                return Err(StoreError::NoLeader("no leader accepted the write in time".into()));
            }
        }
    }

    /// Returns once this member has applied everything committed before the call: the leader
    /// confirms its leadership with a quorum (raft's read index), and a follower asks the leader
    /// for that index and waits until it has applied it.
    pub async fn linearize(&self) -> Result<(), StoreError> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            // A round that failed (a follower too slow to answer in time, on a loaded machine)
            // is tried again until the deadline: one late heartbeat is no reason to fail a read.
            let retry = |refusal: PeerRefusal| match Instant::now() < deadline {
                true => Ok(None),
                false => Err(StoreError::from(refusal)),
            };
            let index = if self.is_leader() {
                match self.read_index().await {
                    Ok(index) => Some(index),
                    Err(PeerRefusal::NotLeader { .. }) => None,
                    Err(refusal @ PeerRefusal::Failed(_)) => retry(refusal)?,
                    Err(refusal @ PeerRefusal::DiskFull(_)) => return Err(refusal.into()),
                }
            } else {
                match self.leader_read_index.get().await {
                    Ok(index) => Some(index),
                    Err(refusal @ PeerRefusal::Failed(_)) => retry(refusal)?,
                    Err(refusal @ PeerRefusal::DiskFull(_)) => return Err(refusal.into()),
                    Err(PeerRefusal::NotLeader { .. }) => None,
                }
            };
            if let Some(index) = index {
                let left = deadline.saturating_duration_since(Instant::now());
                return self
                    .raft
                    .wait(Some(left))
                    .applied_index_at_least(Some(index), "linearizable read")
                    .await
                    .map(|_| ())
                    .map_err(|e| StoreError::NoLeader(e.to_string()));
            }
            let current = self.raft.metrics().borrow().current_leader;
            if Instant::now() >= deadline {
                return Err(StoreError::NoLeader("no leader confirmed the read in time".into()));
            }
            // Either no leader is known, or the one we asked is gone: wait for a change.
            let _ = tokio::time::timeout(Duration::from_millis(100), self.wait_for_leader(current, deadline)).await;
        }
    }

    /// Sends `request` to the leader's raft listener at `path` (for what only the leader holds,
    /// such as node liveness); `NotLeader` answers are followed until `LEADER_WAIT` passes.
    pub async fn call_leader<T, R>(&self, path: &str, request: &T) -> Result<R, StoreError>
    where
        T: Serialize + Sync,
        R: serde::de::DeserializeOwned,
    {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let leader = self.raft.metrics().borrow().current_leader;
            if let Some(addr) = self.leader_addr().filter(|_| leader != Some(self.id)) {
                let answer: Result<Result<R, PeerRefusal>, PeerError> =
                    self.peers.call(&addr, path, request, LEADER_WAIT).await;
                match answer {
                    Ok(Ok(result)) => return Ok(result),
                    Ok(Err(refusal @ (PeerRefusal::Failed(_) | PeerRefusal::DiskFull(_)))) => {
                        return Err(refusal.into());
                    }
                    Ok(Err(PeerRefusal::NotLeader { .. })) | Err(_) => {}
                }
            } else if leader == Some(self.id) {
                return Err(StoreError::NoLeader("this member leads; nothing to forward".into()));
            }
            if Instant::now() >= deadline {
                return Err(StoreError::NoLeader("no leader answered in time".into()));
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), self.wait_for_leader(leader, deadline)).await;
        }
    }

    /// The leader's read index (answers a follower's `READ_INDEX`).
    pub async fn read_index(&self) -> Result<u64, PeerRefusal> {
        self.read_index.get().await
    }

    /// Applies the writes a follower forwarded together (answers `WRITE`), each answered on
    /// its own, in order. Proposed at once, they share entries.
    pub async fn forwarded_writes(&self, commands: Vec<Command>) -> Vec<Result<CommandResult, PeerRefusal>> {
        if commands.len() > forward::MAX_WRITES {
            let why = format!("{} writes in one batch, at most {}", commands.len(), forward::MAX_WRITES);
            return vec![Err(PeerRefusal::Failed(why)); commands.len()];
        }
        if let Err(StoreError::DiskFull(why)) = self.room_for_writes_of(0) {
            return vec![Err(PeerRefusal::DiskFull(why)); commands.len()];
        }
        futures::future::join_all(commands.into_iter().map(|c| self.forwarded_write(c))).await
    }

    async fn forwarded_write(&self, command: Command) -> Result<CommandResult, PeerRefusal> {
        match self.proposer.propose(command).await {
            Ok(result) => Ok(result),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(PeerRefusal::NotLeader { leader: f.leader_node.map(|n| n.addr) })
            }
            Err(e) => Err(PeerRefusal::Failed(e.to_string())),
        }
    }

    /// Adds a member: first as a learner that catches up, then as a voter (answers `JOIN`).
    pub async fn add_member(&self, request: JoinRequest) -> Result<(), PeerRefusal> {
        match self.members_here(members::MembersCall::Add(request)).await? {
            Ok(_) => Ok(()),
            Err(refusal) => Err(PeerRefusal::Failed(refusal.to_string())),
        }
    }

    /// Stops raft.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}
