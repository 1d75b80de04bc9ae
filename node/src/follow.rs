//! List + watch of one kind, kept up for as long as the agent runs (a small informer): list,
//! hand the whole set over, then hand over each change; when the watch breaks (the control
//! plane went away, or the connection went silent) watch again from the last revision seen,
//! and when the history the watch needs was compacted, list again.
//! Whoever follows keeps what it has meanwhile: an unreachable control plane is no reason to
//! stop serving.

use std::time::Duration;

use futures::StreamExt;
use shoal_api::{Client, ClientError, EventType, Object, Reason, Resource, Watched};
use tokio_util::sync::CancellationToken;

/// What receives the objects.
pub trait Follower<R: Resource> {
    /// Every object there is now (after a list).
    fn replace(&mut self, objects: Vec<Object<R>>);
    /// One change seen by the watch.
    fn change(&mut self, kind: EventType, object: Object<R>);
    /// The watch broke with `error`; the follower keeps what it has.
    fn lost(&mut self, error: &ClientError) {
        tracing::warn!("watching {}: {error}; keeping what is known", R::KIND.plural());
    }
}

/// Lists and replaces (unless there is a revision to `resume` from), then follows the watch
/// until it breaks or `shutdown`, keeping `resume` at the last revision it has whole (a
/// bookmark's, or the one before the last change's).
async fn once<R: Resource, F: Follower<R>>(
    client: &Client,
    follower: &mut F,
    resume: &mut Option<u64>,
    shutdown: &CancellationToken,
) -> Result<(), ClientError> {
    let from = match *resume {
        Some(revision) => revision,
        None => {
            let list = client.list_of::<R>(None).await?;
            follower.replace(list.items);
            list.resource_version
        }
    };
    *resume = Some(from);
    let mut changes = Box::pin(client.watch_with_bookmarks_of::<R>(None, from).await?);
    loop {
        let change = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            change = changes.next() => change,
        };
        let Some(change) = change else { return Ok(()) };
        match change? {
            Watched::Change(change) => {
                // Other changes may share its revision and not have arrived yet: a break
                // resumes before it, and the follower takes again what it already had.
                *resume = Some(change.revision.saturating_sub(1).max(from));
                follower.change(change.type_, change.object);
            }
            // A quiet watch resumes from how far it has read, which the history still holds.
            Watched::Bookmark(revision) => *resume = Some(revision),
        }
    }
}

/// Follows kind `R` (every namespace the client may see) into `follower` until `shutdown`. A
/// watch that breaks (or goes silent: a half-open connection) is resumed from the last revision
/// seen; only when the history no longer reaches back that far (410) is everything listed again.
/// A watch that got somewhere (a list, a change, a bookmark) before it broke starts its back-off
/// over: a blip after hours of watching is retried at once, not after the back-off an earlier
/// outage had grown to.
pub async fn follow<R: Resource, F: Follower<R>>(client: &Client, follower: &mut F, shutdown: &CancellationToken) {
    const FIRST: Duration = Duration::from_millis(200);
    const MOST: Duration = Duration::from_secs(5);
    let mut delay = FIRST;
    let mut resume = None;
    while !shutdown.is_cancelled() {
        let before = resume;
        match once(client, follower, &mut resume, shutdown).await {
            Ok(()) => delay = FIRST,
            Err(e) if e.reason() == Some(Reason::Gone) => resume = None,
            Err(e) => {
                follower.lost(&e);
                delay = match resume != before {
                    true => FIRST,
                    false => (delay * 2).min(MOST),
                };
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
