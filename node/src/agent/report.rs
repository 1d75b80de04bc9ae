//! Reporting to the control plane: instance status (the node is its only writer, so the latest
//! status simply replaces the stored one, retried until the control plane takes it). Events go
//! through [`super::events`].

use std::time::Duration;

use shoal_api::resources::instance::{Instance, InstanceStatus};
use shoal_api::{Client, Reason};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The current time, as objects record it.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Pushes every change of `status` into `instance`'s stored status until `cancel`, or until
/// the instance is gone. While the control plane is unreachable it retries, and only the latest
/// status is ever sent.
pub async fn push_status(
    client: Client,
    mut instance: Instance,
    mut status: watch::Receiver<InstanceStatus>,
    cancel: CancellationToken,
) {
    instance.metadata.resource_version = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = status.changed() => if changed.is_err() { return },
        }
        instance.status = Some(status.borrow_and_update().clone());
        loop {
            match client.put_status_of(&instance).await {
                Ok(_) => break,
                Err(e) if e.reason() == Some(Reason::NotFound) => return,
                Err(e) => {
                    tracing::info!("status of {}: {e}; retrying", instance.metadata.name);
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    if status.has_changed().unwrap_or(false) {
                        instance.status = Some(status.borrow_and_update().clone());
                    }
                }
            }
        }
    }
}
