//! Watch streams: every change after a revision, as newline-delimited JSON, read from the
//! store's change history and then followed live. A revision older than the retained history is
//! a 410 Gone, and the client lists again.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::response::Response;
use futures::stream;
use shoal_api::Reason;

use super::error::ApiError;
use super::objects::{Filter, ndjson};
use crate::store::{Change, ChangeKind, HistoryError, Store};

/// How many changes one read of the history returns at most.
const BATCH: usize = 512;

fn history_error(e: HistoryError) -> ApiError {
    match e {
        HistoryError::Compacted { .. } => {
            ApiError::new(Reason::Gone, format!("{e}: list again and watch from the list's resourceVersion"))
        }
        HistoryError::Storage(e) => (*e).into(),
    }
}

fn encode_line(change: &Change) -> Bytes {
    let kind = match change.kind {
        ChangeKind::Added => "ADDED",
        ChangeKind::Modified => "MODIFIED",
        ChangeKind::Deleted => "DELETED",
    };
    let mut line = format!("{{\"type\":\"{kind}\",\"revision\":{},\"object\":", change.revision).into_bytes();
    line.extend_from_slice(&change.object);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

struct Cursor {
    store: Arc<Store>,
    prefix: String,
    filter: Filter,
    after: u64,
    pending: VecDeque<Bytes>,
    applied: tokio::sync::watch::Receiver<u64>,
}

impl Cursor {
    /// Reads the next batch of history into `pending`; an error ends the watch.
    fn read(&mut self) -> Result<(), HistoryError> {
        // Mark the current revision seen *before* reading, so that anything applied after the
        // read wakes the stream.
        self.applied.borrow_and_update();
        let (changes, scanned_to) = self.store.reader().changes_after(self.after, &self.prefix, BATCH)?;
        self.after = self.after.max(scanned_to);
        for change in changes.iter().filter(|c| self.filter.matches(&c.object)) {
            self.pending.push_back(encode_line(change));
        }
        Ok(())
    }
}

/// Starts a watch of keys under `prefix` after revision `from` (default: now).
pub(super) async fn stream(
    store: Arc<Store>,
    prefix: String,
    filter: Filter,
    from: Option<u64>,
) -> Result<Response, ApiError> {
    let after = match from {
        Some(rev) => rev,
        None => {
            store.linearize().await?;
            store.reader().revision()
        }
    };
    let applied = store.reader().subscribe();
    let mut cursor = Cursor { store, prefix, filter, after, pending: VecDeque::new(), applied };
    cursor.read().map_err(history_error)?;
    let lines = stream::unfold(cursor, |mut cursor| async move {
        loop {
            if let Some(line) = cursor.pending.pop_front() {
                return Some((Ok::<_, std::convert::Infallible>(line), cursor));
            }
            if cursor.applied.changed().await.is_err() {
                return None;
            }
            if let Err(e) = cursor.read() {
                tracing::info!("ending watch of {}: {e}", cursor.prefix);
                return None;
            }
        }
    });
    Ok(ndjson(Body::from_stream(lines)))
}
