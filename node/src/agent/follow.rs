//! List + watch of one kind, kept up for as long as the agent runs (a small informer): list,
//! hand the whole set over, then hand over each change; when the watch breaks (the control
//! plane went away, or the history the watch needs was compacted), list again once it is back.
//! Whoever follows keeps what it has meanwhile: an unreachable control plane is no reason to
//! stop serving.

use std::time::Duration;

use futures::StreamExt;
use shoal_api::{Client, ClientError, EventType, Object, Reason, Resource};
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

/// Lists, replaces, and follows the watch until it breaks or `shutdown`.
async fn once<R: Resource, F: Follower<R>>(
    client: &Client,
    follower: &mut F,
    shutdown: &CancellationToken,
) -> Result<(), ClientError> {
    let list = client.list_of::<R>(None).await?;
    follower.replace(list.items);
    let mut changes = Box::pin(client.watch_of::<R>(None, list.resource_version).await?);
    loop {
        let change = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            change = changes.next() => change,
        };
        let Some(change) = change else { return Ok(()) };
        let change = change?;
        follower.change(change.type_, change.object);
    }
}

/// Follows kind `R` (every namespace the client may see) into `follower` until `shutdown`.
pub async fn follow<R: Resource, F: Follower<R>>(client: &Client, follower: &mut F, shutdown: &CancellationToken) {
    let mut delay = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        match once(client, follower, shutdown).await {
            Ok(()) => delay = Duration::from_millis(200),
            Err(e) if e.reason() == Some(Reason::Gone) => {}
            Err(e) => {
                follower.lost(&e);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
