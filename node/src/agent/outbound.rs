//! Guests' own HTTP calls to the cluster: `http://<svc>.<ns>.svc.<cluster domain>/...` goes
//! through the service proxy (in process when the Service has a ready instance on this node),
//! provided the Service admits the caller's namespace. Refusals are told to the guest as
//! `HttpRequestDenied` and recorded as Events on the calling instance.

use std::sync::{Arc, Weak};

use futures::future::BoxFuture;
use shoal_api::resources::event::EventType;
use shoal_api::resources::instance::Instance;
use wasmtime_wasi_http::{Error, WasiBody};

use super::Shared;
use super::ingress::{bare_host, cluster_service};
use super::proxy;
use crate::runtime::host::{Cluster, ClusterCall};

/// The cluster as one instance's guest sees it.
pub struct InstanceCluster {
    /// Weak, so that a sandbox kept by a request in flight does not keep the agent alive.
    shared: Weak<Shared>,
    instance: Instance,
    namespace: String,
}

impl InstanceCluster {
    /// The cluster for calls made by `instance`'s guest.
    pub fn new(shared: &Arc<Shared>, instance: &Instance) -> Arc<Self> {
        let namespace = instance.metadata.namespace.as_ref().map_or("default", |n| n.as_str()).to_owned();
        Arc::new(InstanceCluster { shared: Arc::downgrade(shared), instance: instance.clone(), namespace })
    }

    fn refuse(&self, shared: &Shared, message: String) -> ClusterCall {
        tracing::info!("{}/{}: {message}", self.namespace, self.instance.metadata.name);
        shared.events.record(&self.instance, "OutboundDenied", message, EventType::Warning);
        ClusterCall::Refused
    }
}

impl Cluster for InstanceCluster {
    fn call(&self, host: &str, request: http::Request<WasiBody>) -> ClusterCall {
        let Some(shared) = self.shared.upgrade() else { return ClusterCall::Refused };
        let host = bare_host(host);
        let Some((namespace, name)) = cluster_service(&host, &shared.cluster_domain) else {
            return ClusterCall::NotCluster(Box::new(request));
        };
        let Some(service) = shared.services.get(namespace, name) else {
            return self.refuse(&shared, format!("outbound request to {host}: no service {namespace}/{name}"));
        };
        if !service.admits(&self.namespace) {
            let message = format!(
                "outbound request to {host}: service {namespace}/{name} does not admit callers from namespace {:?} \
                 (see its allowFromNamespaces)",
                self.namespace
            );
            return self.refuse(&shared, message);
        }
        let caller = super::peers::Caller::Namespace(self.namespace.clone());
        let future: BoxFuture<'static, Result<http::Response<WasiBody>, Error>> = Box::pin(async move {
            proxy::serve(&shared, &service, &caller, request).await.map_err(|e| match e {
                proxy::ProxyError::NoneReady(_) | proxy::ProxyError::Peers { .. } => Error::DestinationUnavailable,
                other => Error::InternalError(Some(other.to_string())),
            })
        });
        ClusterCall::Routed(future)
    }

    fn refused(&self, host: &str, why: &str) {
        if let Some(shared) = self.shared.upgrade() {
            self.refuse(&shared, format!("outbound request to {host:?} refused: {why}"));
        }
    }
}
