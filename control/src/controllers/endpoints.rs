//! The endpoints controller: every Service's `status.endpoints` lists the nodes that have a
//! ready instance it selects (by workload, or by labels), with the address and port of each
//! node's proxy. It runs in the same pass loop as the others, so a change shows up within one
//! pass of the instance or node change that caused it.

use futures::future::BoxFuture;
use shoal_api::Name;
use shoal_api::resources::instance::Instance;
use shoal_api::resources::service::{Endpoint, Service, ServiceStatus};

use super::cache::Cache;
use super::writer;
use crate::store::{Store, UpdateScope};

/// Whether `service` selects `instance`.
pub fn selects(service: &Service, instance: &Instance) -> bool {
    if instance.metadata.namespace != service.metadata.namespace {
        return false;
    }
    let selector = &service.spec.selector;
    let by_workload = selector.workload.as_ref().is_none_or(|w| instance.spec.workload.as_ref() == Some(w));
    let by_labels = selector.labels.iter().all(|(k, v)| instance.metadata.labels.get(k) == Some(v));
    by_workload && by_labels
}

/// The endpoints `service` has now.
pub fn endpoints(cache: &Cache, service: &Service) -> Vec<Endpoint> {
    let mut nodes: Vec<&Name> = cache
        .instances
        .values()
        .filter(|i| selects(service, i) && cache.serving(i))
        .filter_map(|i| i.spec.node.as_ref())
        .collect();
    nodes.sort();
    nodes.dedup();
    nodes
        .into_iter()
        .filter_map(|name| {
            let node = cache.node(name.as_str())?;
            let (address, port) = node.spec.address.rsplit_once(':')?;
            Some(Endpoint {
                node: name.clone(),
                address: address.trim_matches(['[', ']']).to_owned(),
                port: port.parse().ok()?,
                peer: Some(node.spec.agent_address.clone()).filter(|a| !a.is_empty()),
            })
        })
        .collect()
}

/// One pass over every service; returns the writes to make.
pub fn reconcile<'a>(cache: &'a Cache, store: &'a Store) -> Vec<BoxFuture<'a, bool>> {
    let mut writes: Vec<BoxFuture<'a, bool>> = Vec::new();
    for service in cache.services.values() {
        let status = ServiceStatus { endpoints: endpoints(cache, service) };
        if service.status.as_ref().unwrap_or(&ServiceStatus::default()) != &status {
            let mut updated = service.clone();
            updated.status = Some(status);
            writes.push(Box::pin(async move { writer::update(store, &updated, UpdateScope::Status).await }));
        }
    }
    writes
}
