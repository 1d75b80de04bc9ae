//! Guests' own HTTP calls to the cluster: `http://<svc>.<ns>.svc.<cluster domain>/...` goes
//! through the service proxy (in process when the Service has a ready instance on this node),
//! provided the Service admits the caller's namespace. Refusals are told to the guest as
//! `HttpRequestDenied` and reported through the instance's own [`Refusals`] (the agent records
//! them as Events on the calling instance).

use std::sync::{Arc, Weak};

use futures::future::BoxFuture;
use wasmtime_wasi_http::{Error, WasiBody};

use super::Proxy;
use super::ingress::{bare_host, cluster_service};
use super::peers::Caller;
use crate::runtime::host::{Cluster, ClusterCall, Hops};

/// The longest chain of calls between guests one request from outside may set off: a guest
/// that calls its own Service (or two that call each other) is refused at this depth instead of
/// filling the node with requests that wait on each other.
pub const MAX_CALL_HOPS: u32 = 8;

/// Where an instance's refused calls are reported, with a message that says why.
pub type Refusals = Arc<dyn Fn(String) + Send + Sync>;

/// The cluster as one instance's guest sees it.
pub struct InstanceCluster {
    /// Weak, so that a sandbox kept by a request in flight does not keep the node's proxy alive.
    proxy: Weak<Proxy>,
    /// The calling instance's namespace.
    namespace: String,
    /// `namespace/name` of the calling instance, for the log.
    instance: String,
    refusals: Refusals,
}

impl InstanceCluster {
    /// The cluster for calls made by the guest of instance `name` in `namespace`.
    pub fn new(proxy: &Arc<Proxy>, namespace: &str, name: &str, refusals: Refusals) -> Arc<Self> {
        Arc::new(InstanceCluster {
            proxy: Arc::downgrade(proxy),
            namespace: namespace.to_owned(),
            instance: format!("{namespace}/{name}"),
            refusals,
        })
    }

    fn refuse(&self, message: String) -> ClusterCall {
        tracing::info!("{}: {message}", self.instance);
        (self.refusals)(message);
        ClusterCall::Refused
    }
}

impl Cluster for InstanceCluster {
    fn call(&self, host: &str, request: http::Request<WasiBody>) -> ClusterCall {
        let Some(proxy) = self.proxy.upgrade() else { return ClusterCall::Refused };
        let host = bare_host(host);
        let Some((namespace, name)) = cluster_service(&host, &proxy.cluster_domain) else {
            return ClusterCall::NotCluster(Box::new(request));
        };
        let Some(service) = proxy.services.get(namespace, name) else {
            return self.refuse(format!("outbound request to {host}: no service {namespace}/{name}"));
        };
        let hops = request.extensions().get::<Hops>().copied().unwrap_or_default();
        if hops.0 > MAX_CALL_HOPS {
            return self.refuse(format!(
                "outbound request to {host}: it would be call {} of a chain between guests, past the limit of \
                 {MAX_CALL_HOPS} (does a guest call itself?)",
                hops.0
            ));
        }
        if !service.admits(&self.namespace) {
            return self.refuse(format!(
                "outbound request to {host}: service {namespace}/{name} does not admit callers from namespace {:?} \
                 (see its allowFromNamespaces)",
                self.namespace
            ));
        }
        let caller = Caller::Namespace(self.namespace.clone());
        let future: BoxFuture<'static, Result<http::Response<WasiBody>, Error>> = Box::pin(async move {
            super::serve(&proxy, &service, &caller, request).await.map_err(|e| match e {
                super::ProxyError::NoneReady(_) | super::ProxyError::Peers { .. } => Error::DestinationUnavailable,
                other => Error::InternalError(Some(other.to_string())),
            })
        });
        ClusterCall::Routed(future)
    }

    fn refused(&self, host: &str, why: &str) {
        self.refuse(format!("outbound request to {host:?} refused: {why}"));
    }
}
