//! Watch streams: every change after a revision, as newline-delimited JSON, read from the
//! store's change history and then followed live. A revision older than the retained history is
//! a 410 Gone, and the client lists again.
//!
//! Followed live, changes come from one [`WatchHub`] per API server: it reads the history once
//! per applied revision, encodes each change once (and notes the node an instance is bound to),
//! and hands the batch to every watch, which only filters. A thousand node agents watching their
//! instances would otherwise read and parse every change a thousand times. A watch that falls
//! behind the hub (or starts behind it) reads the gap from the history itself, so the hub is
//! only a shortcut: every watch still gets each (key, revision) once, in order, with no gap.
//!
//! A watch with nothing to send for the bookmark interval sends `{"type":"BOOKMARK",
//! "revision":N}`: idle timeouts never cut a healthy watch, and a client that hears nothing
//! for a few intervals knows its connection is dead and resumes elsewhere.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::response::Response;
use futures::stream;
use shoal_api::Reason;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::auth::{Principal, bound_node};
use super::error::ApiError;
use super::objects::{Filter, ndjson};
use super::per_principal::PerPrincipal;
use crate::store::{Change, ChangeKind, HistoryError, Store, StoreReader};

/// How many changes one read of the history returns at most.
const BATCH: usize = 512;
/// How many changes the hub reads at once.
const HUB_BATCH: usize = 4096;
/// The most bytes of changes sent in one piece.
const CHUNK: usize = 64 << 10;
/// How many batches a watch may be behind the hub before it reads the gap from the history.
const HUB_QUEUE: usize = 256;

fn history_error(e: HistoryError) -> ApiError {
    match e {
        HistoryError::Compacted { .. } => {
            ApiError::new(Reason::Gone, format!("{e}: list again and watch from the list's resourceVersion"))
        }
        HistoryError::Storage(e) => (*e).into(),
    }
}

fn encode_line(change: &Change) -> Bytes {
    encode_line_at(change).0
}

/// The watch line of `change`, and where in it the object starts.
fn encode_line_at(change: &Change) -> (Bytes, usize) {
    let kind = match change.kind {
        ChangeKind::Added => "ADDED",
        ChangeKind::Modified => "MODIFIED",
        ChangeKind::Deleted => "DELETED",
    };
    let mut line = format!("{{\"type\":\"{kind}\",\"revision\":{},\"object\":", change.revision).into_bytes();
    let object_at = line.len();
    if change.key.starts_with(SECRETS_PREFIX) {
        // A watch never shows a Secret's values, not even sealed.
        line.extend_from_slice(&crate::sealing::redact_stored(&change.object));
    } else {
        line.extend_from_slice(&change.object);
    }
    line.extend_from_slice(b"}\n");
    (Bytes::from(line), object_at)
}

/// Where stored Secrets' keys start.
const SECRETS_PREFIX: &str = "secrets/";

/// A line that says only that the watch is alive and has read up to `revision`.
fn bookmark_line(revision: u64) -> Bytes {
    Bytes::from(format!("{{\"type\":\"BOOKMARK\",\"revision\":{revision}}}\n"))
}

/// One change as the hub hands it out: read, encoded and looked at once.
struct SharedChange {
    revision: u64,
    key: String,
    /// For an instance: the node it is bound to.
    node: Option<String>,
    /// The watch line; the object is `line[object_at..line.len() - 2]` (before `}\n`).
    line: Bytes,
    object_at: usize,
}

/// Encodes `change` once for every watch.
fn share(change: Change) -> SharedChange {
    let (line, object_at) = encode_line_at(&change);
    SharedChange {
        revision: change.revision,
        node: if change.key.starts_with("instances/") { bound_node(&change.object) } else { None },
        object_at,
        line,
        key: change.key,
    }
}

impl SharedChange {
    fn object(&self) -> &[u8] {
        &self.line[self.object_at..self.line.len() - 2]
    }
}

/// Every change after revision `after`, up to and including `upto`.
struct HubBatch {
    after: u64,
    upto: u64,
    changes: Vec<SharedChange>,
    /// Indexes into `changes` of the instances bound to each node: a node's watch looks at its
    /// own, not at every change of the batch.
    by_node: HashMap<String, Vec<usize>>,
}

/// Reads the change history once for all watches of this API server.
pub struct WatchHub {
    batches: broadcast::Sender<Arc<HubBatch>>,
    /// Watches open per principal (tenants and nodes; the admin is not counted).
    open: PerPrincipal,
    /// How long a watch may go without a line before it gets a bookmark.
    bookmark_every: std::time::Duration,
}

impl WatchHub {
    /// Starts the hub's reader on `reader` until `shutdown`; a tenant or node may hold
    /// `max_per_principal` watches at once, and a watch with nothing to say for
    /// `bookmark_every` gets a bookmark line.
    pub fn start(
        reader: StoreReader,
        max_per_principal: usize,
        bookmark_every: std::time::Duration,
        shutdown: CancellationToken,
    ) -> Arc<WatchHub> {
        let (batches, _) = broadcast::channel(HUB_QUEUE);
        let open = PerPrincipal::new("watches", max_per_principal);
        let hub = Arc::new(WatchHub { batches: batches.clone(), open, bookmark_every });
        tokio::spawn(async move {
            let mut applied = reader.subscribe();
            let mut after = reader.revision();
            loop {
                applied.borrow_and_update();
                after = publish(&reader, &batches, after);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = applied.changed() => if changed.is_err() { return },
                }
            }
        });
        hub
    }
}

/// Publishes what was applied after `after`; returns the revision published up to.
fn publish(reader: &StoreReader, batches: &broadcast::Sender<Arc<HubBatch>>, mut after: u64) -> u64 {
    loop {
        if batches.receiver_count() == 0 {
            // Nobody listens: a watch that starts later reads its gap from the history.
            return reader.revision();
        }
        let (changes, upto) = match reader.changes_after(after, "", HUB_BATCH) {
            Ok(read) => read,
            Err(e) => {
                // Behind the retained history (or a disk error): skip ahead, and say so with an
                // empty batch that starts after the gap, which every watch then reads (or gets
                // its 410 for) from the history itself.
                tracing::warn!("watch hub: reading history after {after}: {e}");
                let now = reader.revision();
                let marker = HubBatch { after: now, upto: now, changes: Vec::new(), by_node: HashMap::new() };
                let _ = batches.send(Arc::new(marker));
                return now;
            }
        };
        let full = changes.len() >= HUB_BATCH;
        if upto > after {
            let changes: Vec<SharedChange> = changes.into_iter().map(share).collect();
            let mut by_node: HashMap<String, Vec<usize>> = HashMap::new();
            for (i, change) in changes.iter().enumerate() {
                if let Some(node) = &change.node {
                    by_node.entry(node.clone()).or_default().push(i);
                }
            }
            let _ = batches.send(Arc::new(HubBatch { after, upto, changes, by_node }));
            after = upto;
        }
        if !full {
            return after;
        }
    }
}

struct Cursor {
    store: Arc<Store>,
    prefix: String,
    filter: Filter,
    after: u64,
    /// Whether the last read of the history stopped at its limit (more is there to read).
    behind: bool,
    pending: VecDeque<Bytes>,
    hub: broadcast::Receiver<Arc<HubBatch>>,
}

impl Cursor {
    /// Reads the next batch of history into `pending`.
    fn read(&mut self) -> Result<(), HistoryError> {
        let (changes, scanned_to) = self.store.reader().changes_after(self.after, &self.prefix, BATCH)?;
        self.behind = changes.len() >= BATCH;
        self.after = self.after.max(scanned_to);
        for change in changes.iter().filter(|c| self.filter.matches(&c.object)) {
            self.pending.push_back(encode_line(change));
        }
        Ok(())
    }

    /// Reads the history until everything up to `revision` is in `pending`.
    fn read_to(&mut self, revision: u64) -> Result<(), HistoryError> {
        while self.after < revision {
            let before = self.after;
            self.read()?;
            if self.after == before {
                break;
            }
        }
        Ok(())
    }

    /// Takes what `batch` has for this watch that it has not seen.
    fn take(&mut self, batch: &HubBatch) -> Result<(), HistoryError> {
        if batch.upto <= self.after {
            return Ok(());
        }
        self.read_to(batch.after)?;
        let mut offer = |change: &SharedChange| {
            if change.revision > self.after
                && change.key.starts_with(&self.prefix)
                && self.filter.matches_bound(change.node.as_deref(), change.object())
            {
                self.pending.push_back(change.line.clone());
            }
        };
        match self.filter.node() {
            Some(node) => batch.by_node.get(node).into_iter().flatten().for_each(|i| offer(&batch.changes[*i])),
            None => batch.changes.iter().for_each(offer),
        }
        self.after = self.after.max(batch.upto);
        Ok(())
    }

    /// The lines waiting to be sent, joined into one chunk of up to [`CHUNK`] bytes (a line
    /// per HTTP/2 frame would cost a frame, and a wake-up, per change).
    fn take_chunk(&mut self) -> Option<Bytes> {
        let first = self.pending.pop_front()?;
        if self.pending.is_empty() || first.len() >= CHUNK {
            return Some(first);
        }
        let mut chunk = Vec::with_capacity(CHUNK.min(first.len() * (self.pending.len() + 1)));
        chunk.extend_from_slice(&first);
        while let Some(line) = self.pending.front() {
            if chunk.len() + line.len() > CHUNK {
                break;
            }
            chunk.extend_from_slice(line);
            self.pending.pop_front();
        }
        Some(Bytes::from(chunk))
    }

    /// Waits for the next changes; false when the watch must end. A watch that started (or
    /// fell) behind reads on, a batch at a time, before it waits for the hub.
    async fn next(&mut self) -> bool {
        let result = if self.behind {
            self.read()
        } else {
            match self.hub.recv().await {
                Ok(batch) => self.take(&batch),
                // Fell behind the hub: the next batch starts after a gap, which `take` reads.
                Err(broadcast::error::RecvError::Lagged(_)) => Ok(()),
                Err(broadcast::error::RecvError::Closed) => return false,
            }
        };
        match result {
            Ok(()) => true,
            Err(e) => {
                tracing::info!("ending watch of {}: {e}", self.prefix);
                false
            }
        }
    }
}

/// Starts a watch of keys under `prefix` after revision `from` (default: now).
/// Refuses a resourceVersion this store has not reached even after applying everything
/// committed: a watch from there would silently skip every change until then.
pub(super) async fn refuse_future(store: &Store, rev: u64) -> Result<(), ApiError> {
    if rev <= store.reader().revision() {
        return Ok(());
    }
    store.linearize().await?;
    let current = store.reader().revision();
    if rev > current {
        return Err(ApiError::new(
            Reason::BadRequest,
            format!("resourceVersion {rev} is beyond the store's current revision {current}"),
        ));
    }
    Ok(())
}

pub(super) async fn stream(
    store: Arc<Store>,
    hub: &WatchHub,
    (principal, token): (&Principal, super::auth::TokenDigest),
    prefix: String,
    filter: Filter,
    from: Option<u64>,
) -> Result<Response, ApiError> {
    let slot = hub.open.take(principal)?;
    let after = match from {
        Some(rev) => {
            refuse_future(&store, rev).await?;
            rev
        }
        None => {
            store.linearize().await?;
            store.reader().revision()
        }
    };
    // Subscribed before the first read, so that nothing applied after it is missed.
    let hub_bookmarks = hub.bookmark_every;
    let hub = hub.batches.subscribe();
    let mut cursor = Cursor { store, prefix, filter, after, behind: false, pending: VecDeque::new(), hub };
    cursor.read().map_err(history_error)?;
    // The slot lives as long as the stream: a client that goes away frees it.
    let bookmark_every = hub_bookmarks;
    // A token revoked while its watch is open ends the watch within a bookmark interval.
    let revocable =
        Revocable { token: (!matches!(principal, Principal::Admin)).then_some(token), checked: Instant::now() };
    let lines = stream::unfold((cursor, slot, revocable), move |(mut cursor, slot, mut revocable)| async move {
        // A quiet watch still says it is alive (and how far it has read), so that idle timeouts
        // never cut it and its client can tell it from a dead connection. The deadline runs
        // from the last line sent: batches with nothing for this watch do not put it off.
        let deadline = tokio::time::Instant::now() + bookmark_every;
        loop {
            if !revocable.still_valid(&cursor.store, bookmark_every) {
                return None;
            }
            if let Some(chunk) = cursor.take_chunk() {
                return Some((Ok::<_, std::convert::Infallible>(chunk), (cursor, slot, revocable)));
            }
            match tokio::time::timeout_at(deadline, cursor.next()).await {
                Ok(true) => {}
                Ok(false) => return None,
                Err(_) => return Some((Ok(bookmark_line(cursor.after)), (cursor, slot, revocable))),
            }
        }
    });
    Ok(ndjson(Body::from_stream(lines)))
}

/// The token a watch was opened with, looked up again now and then.
struct Revocable {
    /// `None` for the admin's (which is not stored, and cannot be revoked).
    token: Option<super::auth::TokenDigest>,
    checked: Instant,
}

impl Revocable {
    /// Whether the token is still stored, looked up at most once per `every`.
    fn still_valid(&mut self, store: &Store, every: std::time::Duration) -> bool {
        let Some(token) = &self.token else { return true };
        if self.checked.elapsed() < every {
            return true;
        }
        self.checked = Instant::now();
        // A store that cannot be read says nothing of the token; the next look decides.
        super::auth::is_stored(store, token).unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_change_is_its_watch_line_with_the_object_and_node_found_in_it() {
        let object = br#"{"metadata":{"name":"i"},"spec":{"node":"n1"}}"#.to_vec();
        let change = Change { revision: 7, kind: ChangeKind::Modified, key: "instances/a/i".into(), object };
        let shared = share(change.clone());
        assert_eq!(shared.object(), change.object.as_slice());
        assert_eq!(shared.node.as_deref(), Some("n1"));
        let line: serde_json::Value = serde_json::from_slice(&shared.line).unwrap();
        assert_eq!(line["type"], "MODIFIED");
        assert_eq!(line["revision"], 7);
        assert_eq!(line["object"]["spec"]["node"], "n1");
        assert!(shared.line.ends_with(b"}\n"));
    }
}
