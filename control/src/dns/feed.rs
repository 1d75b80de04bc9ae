//! Keeps the published [`Zone`] in step with the local state machine: after every applied
//! revision that touched a Service, the zone is rebuilt from all Services and swapped in. The
//! feed reads this control node's own replica, so followers answer as well as the leader, and a
//! change is served as soon as it is applied here.

use std::sync::Arc;

use hickory_server::proto::rr::Name;
use shoal_api::Kind;
use shoal_api::resources::service::Service;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::zone::Zone;
use crate::store::{HistoryError, StoreReader};

/// How many changes one history read looks at.
const BATCH: usize = 1024;

/// Builds the zone from every Service in the store as of now, and that revision.
pub fn read_zone(reader: &StoreReader, domain: &Name, ttl: u32) -> anyhow::Result<(Zone, u64)> {
    let (revision, entries) = reader.entries(&format!("{}/", Kind::Service.plural()))?;
    let services: Vec<Service> = entries
        .iter()
        .filter_map(|(key, bytes)| match serde_json::from_slice(bytes) {
            Ok(service) => Some(service),
            Err(e) => {
                tracing::warn!("dns: skipping {key}: stored object does not parse: {e}");
                None
            }
        })
        .collect();
    // The SOA serial is 32 bits and only has to grow; the low bits of the revision do.
    Ok((Zone::build(domain, ttl, revision as u32, &services), revision))
}

/// Whether any Service changed after `revision`; also the revision looked up to.
fn services_changed(reader: &StoreReader, revision: u64) -> (bool, u64) {
    let prefix = format!("{}/", Kind::Service.plural());
    match reader.changes_after(revision, &prefix, BATCH) {
        Ok((changes, scanned_to)) => (!changes.is_empty(), scanned_to),
        // History compacted or unreadable: rebuild, which reads the objects themselves.
        Err(HistoryError::Compacted { .. } | HistoryError::Storage(_)) => (true, reader.revision()),
    }
}

/// Republishes the zone on every change to Services until `shutdown`.
pub async fn run(
    reader: StoreReader,
    domain: Name,
    ttl: u32,
    mut revision: u64,
    zone: watch::Sender<Arc<Zone>>,
    shutdown: CancellationToken,
) {
    let mut applied = reader.subscribe();
    loop {
        applied.borrow_and_update();
        let (changed, scanned_to) = services_changed(&reader, revision);
        if changed {
            match read_zone(&reader, &domain, ttl) {
                Ok((fresh, read_at)) => {
                    zone.send_replace(Arc::new(fresh));
                    revision = read_at;
                }
                Err(e) => tracing::error!("dns: rebuilding the zone failed: {e:#}"),
            }
        } else {
            revision = revision.max(scanned_to);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = applied.changed() => if changed.is_err() { return },
        }
    }
}
