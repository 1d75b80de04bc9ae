//! The endpoints controller: every Service's `status.endpoints` lists the nodes that have a
//! ready instance it selects (by workload, or by labels), with the address and port of each
//! node's proxy. A reconcile looks at one Service and the instances of its namespace (of its
//! workload, when it selects one); it is asked to whenever one of those, or their node, changes.

use shoal_api::resources::instance::Instance;
use shoal_api::resources::service::{Endpoint, Service, ServiceStatus};
use shoal_api::{AnyObject, Name};

use super::cache::Cache;
use super::writes::{Action, Write};
use crate::store::UpdateScope;

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
    let ns = service.metadata.namespace.as_ref().map_or("", |n| n.as_str());
    let candidates: Box<dyn Iterator<Item = &Instance>> = match &service.spec.selector.workload {
        Some(workload) => Box::new(cache.instances_of(&format!("workloads/{ns}/{workload}"))),
        None => Box::new(cache.instances_in(ns)),
    };
    let mut nodes: Vec<&Name> =
        candidates.filter(|i| selects(service, i) && cache.serving(i)).filter_map(|i| i.spec.node.as_ref()).collect();
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

/// Reconciles the Service at `key`.
pub fn reconcile(cache: &Cache, key: &str) -> Action {
    let Some(service) = cache.services.get(key) else { return Action::none() };
    let status = ServiceStatus { endpoints: endpoints(cache, service) };
    if service.status.as_ref().unwrap_or(&ServiceStatus::default()) == &status {
        return Action::none();
    }
    let mut updated = service.clone();
    updated.status = Some(status);
    Action::writes(vec![Write::Update(AnyObject::Service(updated), UpdateScope::Status)])
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{Fixture, instance, node, service, serving, with_ready, workload};
    use super::*;
    use shoal_api::resources::instance::Phase;

    fn endpoint_nodes(action: &Action) -> Option<Vec<String>> {
        action.writes.iter().find_map(|w| match w {
            Write::Update(AnyObject::Service(s), UpdateScope::Status) => {
                Some(s.status.as_ref()?.endpoints.iter().map(|e| e.node.to_string()).collect())
            }
            _ => None,
        })
    }

    #[test]
    fn endpoints_are_the_ready_nodes_with_a_serving_instance_once_each() {
        let w = workload("api", 4);
        let other = workload("other", 1);
        let mut f = Fixture::default();
        f.workload(w.clone()).workload(other.clone()).service(service("api", "api"));
        for n in ["a", "b", "c", "d"] {
            f.node(node(n, 1024, 1000, 10));
        }
        f.node(with_ready(node("d", 1024, 1000, 10), "Unknown"));
        f.instance(serving(&w, "api-1", "a")).instance(serving(&w, "api-2", "a"));
        f.instance(instance(&w, "api-3", Some("b"), Phase::Running, false));
        f.instance(serving(&w, "api-4", "d"));
        f.instance(serving(&other, "other-1", "c"));
        let action = reconcile(&f.cache, "services/default/api");
        assert_eq!(endpoint_nodes(&action), Some(vec!["a".to_owned()]));
        let address = match &action.writes[0] {
            Write::Update(AnyObject::Service(s), _) => s.status.as_ref().unwrap().endpoints[0].address.clone(),
            _ => unreachable!(),
        };
        assert_eq!(address, "10.0.0.1");
    }

    #[test]
    fn unchanged_endpoints_are_not_written() {
        let w = workload("api", 1);
        let mut f = Fixture::default();
        let mut s = service("api", "api");
        s.status = Some(ServiceStatus::default());
        f.workload(w).service(s);
        assert!(reconcile(&f.cache, "services/default/api").writes.is_empty());
    }
}
