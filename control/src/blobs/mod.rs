//! Module bytes, kept out of raft's log and snapshots. A module of tens of megabytes inside one
//! log entry held up every write behind it, and inside the one snapshot value it made every
//! snapshot as large as every module ever uploaded. So the bytes travel beside raft:
//!
//! 1. the member that takes an upload writes the bytes to its own disk ([`files`]) and pushes
//!    them to the other members over the raft listener, and waits until a quorum of voters
//!    holds them durably, as a raft write would;
//! 2. only then is a small record (`modules/<namespace>/<sha256>`: size, time) proposed through
//!    raft, charged to the namespace's quota in the same step;
//! 3. every member follows the records it applies and fetches from a peer the bytes of any
//!    record it lacks (a member that was down, a member that installed a snapshot, a new one);
//! 4. a file no record names is removed once it is older than the grace period (the records
//!    themselves are collected by the controllers when no Workload or Instance uses them).
//!
//! Any majority overlaps the quorum that held the bytes when the record was written, so an
//! acknowledged module survives whatever raft survives.

pub mod files;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use shoal_api::module::{MODULES, ModuleRecord};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;

use self::files::BlobDir;
use crate::store::peer::PeerClient;
use crate::store::{HistoryError, ObjectKey, Store};

/// How many modules' bytes one member holds in memory at once (uploads taken, pushes received,
/// fetches), each at most the largest upload: beyond it, the next waits.
pub const MODULES_IN_MEMORY: usize = 4;

/// How long a push or fetch of one module between members may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);

/// How soon a member tries again to fetch bytes that no peer could give it.
const FETCH_RETRY: Duration = Duration::from_secs(1);

/// Paths of module transfers on the raft listener.
pub mod paths {
    /// `GET` the bytes of a module, `PUT` them (a push).
    pub const MODULE: &str = "/raft/modules/{digest}";
    /// `GET`: 200 when the member holds the bytes, 404 when it does not.
    pub const PRESENT: &str = "/raft/modules/{digest}/present";
}

fn module_url(addr: &str, hex: &str, suffix: &str) -> String {
    format!("https://{addr}/raft/modules/{hex}{suffix}")
}

/// Why module bytes could not be stored or found.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// Fewer voters than a quorum hold the bytes durably.
    #[error("module bytes are durable on {stored} of {voters} voting members; {needed} are needed")]
    NoQuorum {
        /// Voters holding the bytes.
        stored: usize,
        /// Voters needed.
        needed: usize,
        /// Voters in all.
        voters: usize,
    },
    /// This member's disk failed.
    #[error("module storage: {0}")]
    Io(#[from] std::io::Error),
}

/// This member's module bytes, and their transfers to and from the other members.
pub struct Blobs {
    files: BlobDir,
    store: Arc<Store>,
    peers: PeerClient,
    /// Transfers between members (pushes received, fetches).
    memory: Semaphore,
    /// Uploads from clients: apart, so that slow uploads never hold up replication.
    uploads: Semaphore,
}

impl Blobs {
    /// Module bytes in `files`, for the members `store` knows of, reached with `peers`.
    pub fn new(files: BlobDir, store: Arc<Store>, peers: PeerClient) -> Arc<Blobs> {
        Arc::new(Blobs {
            files,
            store,
            peers,
            memory: Semaphore::new(MODULES_IN_MEMORY),
            uploads: Semaphore::new(MODULES_IN_MEMORY),
        })
    }

    /// The files.
    pub fn files(&self) -> &BlobDir {
        &self.files
    }

    /// Waits for room to hold one module's bytes in memory for a transfer between members; the
    /// room is given back when the permit is dropped.
    pub async fn memory(&self) -> SemaphorePermit<'_> {
        self.memory.acquire().await.expect("the module memory semaphore is never closed")
    }

    /// Like [`Blobs::memory`], for an upload from a client.
    pub async fn upload_memory(&self) -> SemaphorePermit<'_> {
        self.uploads.acquire().await.expect("the upload semaphore is never closed")
    }

    /// Makes `bytes` (checked to hash to `hex`) durable here and on the other members, and
    /// returns once a quorum of voters holds them. Pushes still under way go on meanwhile.
    pub async fn replicate(&self, hex: &str, bytes: Bytes) -> Result<(), BlobError> {
        self.files.write(hex, bytes.clone()).await?;
        let mut members = self.store.members();
        if members.is_empty() {
            // Just after a start the first membership may not be applied yet: catch up with
            // the leader first (if that fails too, the count below says so).
            let _ = self.store.linearize().await;
            members = self.store.members();
        }
        let own = self.store.id();
        let voters = members.values().filter(|(_, voter)| *voter).count();
        let needed = voters / 2 + 1;
        let mut stored = usize::from(members.get(&own).is_some_and(|(_, voter)| *voter));
        let mut pushes: FuturesUnordered<_> = members
            .into_iter()
            .filter(|(id, _)| *id != own)
            .map(|(_, (addr, voter))| {
                let (peers, hex, bytes) = (self.peers.clone(), hex.to_owned(), bytes.clone());
                async move { (voter, push(&peers, &addr, &hex, bytes).await.map_err(|e| format!("{addr}: {e}"))) }
            })
            .collect();
        while stored < needed {
            match pushes.next().await {
                Some((voter, Ok(()))) => stored += usize::from(voter),
                Some((_, Err(e))) => tracing::warn!("module sha256:{hex}: push failed: {e}"),
                None => return Err(BlobError::NoQuorum { stored, needed, voters }),
            }
        }
        if !pushes.is_empty() {
            tokio::spawn(async move {
                while let Some((_, outcome)) = pushes.next().await {
                    if let Err(e) = outcome {
                        tracing::info!("module push failed (the member fetches it later): {e}");
                    }
                }
            });
        }
        Ok(())
    }

    /// Fetches the bytes of `hex` from a member that has them, checks them and keeps them
    /// here; returns whether one had them.
    pub async fn fetch(&self, hex: &str) -> Result<bool, BlobError> {
        let _memory = self.memory().await;
        if self.files.has(hex) {
            return Ok(true);
        }
        let own = self.store.id();
        for (_, (addr, _)) in self.store.members().into_iter().filter(|(id, _)| *id != own) {
            let url = module_url(&addr, hex, "");
            let bytes = match self.peers.send(reqwest::Method::GET, &url, None, TRANSFER_TIMEOUT).await {
                Ok((status, bytes)) if status.is_success() => bytes,
                Ok((status, _)) => {
                    tracing::debug!("module sha256:{hex}: {addr} answered {status}");
                    continue;
                }
                Err(e) => {
                    tracing::debug!("module sha256:{hex}: fetching from {addr}: {e}");
                    continue;
                }
            };
            if !hashes_to(&bytes, hex).await {
                tracing::warn!("module sha256:{hex}: {addr} sent bytes that do not hash to it");
                continue;
            }
            self.files.write(hex, bytes).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Keeps this member's files in step with the records it applies, until `shutdown`:
    /// fetches what a record names and this member lacks, and removes files that no record
    /// has named for `grace`.
    pub async fn run(self: Arc<Self>, grace: Duration, shutdown: CancellationToken) {
        let reader = self.store.reader().clone();
        let mut applied = reader.subscribe();
        let mut after: Option<u64> = None;
        let mut missing = BTreeSet::new();
        let mut retry_at = Instant::now();
        let sweep_every = (grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
        let mut next_sweep = Instant::now() + sweep_every;
        loop {
            applied.borrow_and_update();
            match self.follow(after, &mut missing) {
                Ok(revision) => after = Some(revision),
                Err(FollowError::Reread) => after = None,
                Err(FollowError::Failed(e)) => tracing::warn!("modules: reading records: {e}"),
            }
            let now = Instant::now();
            if !missing.is_empty() && now >= retry_at {
                for hex in missing.clone() {
                    match self.fetch(&hex).await {
                        Ok(true) => {
                            missing.remove(&hex);
                        }
                        Ok(false) => tracing::info!("modules: no member has sha256:{hex} yet"),
                        Err(e) => tracing::warn!("modules: keeping sha256:{hex}: {e}"),
                    }
                }
                retry_at = Instant::now() + FETCH_RETRY;
            }
            if now >= next_sweep {
                if let Err(e) = self.sweep(grace) {
                    tracing::warn!("modules: sweeping unrecorded files: {e}");
                }
                next_sweep = now + sweep_every;
            }
            let wake = if missing.is_empty() { next_sweep } else { next_sweep.min(retry_at) };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = applied.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// Notes in `missing` the digests of records applied after `after` (every record, with
    /// `None`) whose bytes are not here; returns the revision read up to.
    fn follow(&self, after: Option<u64>, missing: &mut BTreeSet<String>) -> Result<u64, FollowError> {
        let reader = self.store.reader();
        let prefix = format!("{MODULES}/");
        let Some(mut after) = after else {
            let (revision, entries) = reader.entries(&prefix).map_err(|e| FollowError::Failed(e.to_string()))?;
            missing.clear();
            for (_, bytes) in entries {
                if let Ok(record) = serde_json::from_slice::<ModuleRecord>(&bytes)
                    && !self.files.has(&record.digest)
                {
                    missing.insert(record.digest);
                }
            }
            return Ok(revision);
        };
        loop {
            let (changes, upto) = match reader.changes_after(after, &prefix, 4096) {
                Ok(read) => read,
                Err(HistoryError::Compacted { .. }) => return Err(FollowError::Reread),
                Err(HistoryError::Storage(e)) => return Err(FollowError::Failed(e.to_string())),
            };
            for change in &changes {
                let digest = change.key.rsplit('/').next().unwrap_or_default();
                if change.kind != crate::store::ChangeKind::Deleted && !self.files.has(digest) {
                    missing.insert(digest.to_owned());
                }
            }
            after = after.max(upto);
            if changes.len() < 4096 {
                return Ok(after);
            }
        }
    }

    /// Removes the files that no record names and that were written (or renewed) more than
    /// `grace` ago.
    fn sweep(&self, grace: Duration) -> Result<(), BlobError> {
        let (_, entries) = self
            .store
            .reader()
            .entries(&format!("{MODULES}/"))
            .map_err(|e| BlobError::Io(std::io::Error::other(e.to_string())))?;
        let recorded: BTreeSet<String> =
            entries.iter().filter_map(|(key, _)| key.rsplit('/').next().map(str::to_owned)).collect();
        let cutoff = SystemTime::now().checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
        for (hex, written) in self.files.list()? {
            if !recorded.contains(&hex) && written < cutoff {
                tracing::info!("modules: removing sha256:{hex}: no namespace holds it");
                self.files.remove(&hex)?;
            }
        }
        Ok(())
    }

    /// Whether namespace `ns` holds a record of `hex`.
    pub fn recorded(&self, ns: &str, hex: &str) -> Result<Option<ModuleRecord>, crate::store::StoreError> {
        let key = ObjectKey::new(MODULES, Some(ns), hex);
        Ok(self.store.reader().get(&key)?.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }
}

enum FollowError {
    /// The history no longer reaches back far enough (or a snapshot replaced it).
    Reread,
    Failed(String),
}

/// Pushes `bytes` to the member at `addr`, unless it holds them already.
async fn push(peers: &PeerClient, addr: &str, hex: &str, bytes: Bytes) -> Result<(), String> {
    let present = module_url(addr, hex, "/present");
    match peers.send(reqwest::Method::GET, &present, None, Duration::from_secs(5)).await {
        Ok((status, _)) if status.is_success() => return Ok(()),
        Ok(_) => {}
        Err(e) => return Err(e.to_string()),
    }
    let url = module_url(addr, hex, "");
    match peers.send(reqwest::Method::PUT, &url, Some(bytes.into()), TRANSFER_TIMEOUT).await {
        Ok((status, _)) if status.is_success() => Ok(()),
        Ok((status, body)) => Err(format!("{status}: {}", String::from_utf8_lossy(&body))),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether `bytes` hash to `hex` (hashed off the async threads: a module may be 100 MiB).
pub async fn hashes_to(bytes: &Bytes, hex: &str) -> bool {
    let (bytes, hex) = (bytes.clone(), hex.to_owned());
    tokio::task::spawn_blocking(move || shoal_api::digest::sha256_hex(&bytes) == hex).await.unwrap_or(false)
}
