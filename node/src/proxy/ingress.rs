//! The node's ingress: an HTTP listener that routes by `Host`:
//! - a Service's own ingress hosts, and, for a Service with `public: true`,
//!   `<svc>.<ns>.svc.<cluster domain>`, to that Service (through [`super::serve`]: here or on another
//!   node);
//! - `<name>.<ns>.<domain>` (the domain is `localhost` unless configured) to the Service of
//!   that name, or else to a ready instance of the HTTP workload of that name on this node.
//!
//! An unknown host is a 404 and a workload with nothing ready a 503, each with a body that
//! says so.

use std::sync::Arc;

use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Proxy;
use super::peers::Caller;
use super::routes::Lookup;
use super::scalable::Look;
use super::services::ServiceRoute;
use crate::runtime::http::{Body, text_response};

/// Splits a `Host` header into `(workload, namespace)` if it is `<wl>.<ns>.<domain>` for one of
/// `domains`.
pub fn route_of<'h>(host: &'h str, domains: &[String]) -> Option<(&'h str, &'h str)> {
    let host = host.rsplit_once(':').filter(|(_, port)| port.parse::<u16>().is_ok()).map_or(host, |(h, _)| h);
    let host = host.trim_end_matches('.');
    domains.iter().find_map(|domain| {
        let rest = host.strip_suffix(domain.as_str())?.strip_suffix('.')?;
        let (workload, namespace) = rest.split_once('.')?;
        (!workload.is_empty() && !namespace.is_empty() && !namespace.contains('.')).then_some((workload, namespace))
    })
}

/// What a `Host` names.
#[derive(Debug, PartialEq, Eq)]
pub enum Target<'h> {
    /// A Service, by `(namespace, name)`.
    Service(&'h str, &'h str),
    /// A Service if there is one by that name, else a workload: `(namespace, name)`.
    ServiceOrWorkload(&'h str, &'h str),
}

/// Strips a port and a trailing dot, and lowers the case.
pub fn bare_host(host: &str) -> String {
    let host = host.rsplit_once(':').filter(|(_, port)| port.parse::<u16>().is_ok()).map_or(host, |(h, _)| h);
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// `<svc>.<ns>.svc.<cluster domain>` as `(ns, svc)`; `host` is bare (see [`bare_host`]).
pub fn cluster_service<'h>(host: &'h str, cluster_domain: &str) -> Option<(&'h str, &'h str)> {
    let rest = host.strip_suffix(cluster_domain)?.strip_suffix(".svc.")?;
    let (name, namespace) = rest.split_once('.')?;
    (!name.is_empty() && !namespace.is_empty() && !namespace.contains('.')).then_some((namespace, name))
}

/// Where a bare `host` goes.
pub fn target<'h>(host: &'h str, shared_domains: &[String], cluster_domain: &str) -> Option<Target<'h>> {
    if let Some((ns, name)) = cluster_service(host, cluster_domain) {
        return Some(Target::Service(ns, name));
    }
    route_of(host, shared_domains).map(|(name, ns)| Target::ServiceOrWorkload(ns, name))
}

async fn handle(request: hyper::Request<Incoming>, proxy: &Proxy) -> hyper::Response<Body> {
    let host = bare_host(
        request
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().host())
            .unwrap_or(""),
    );
    if let Some(service) = proxy.services.by_host(&host) {
        return to_service(proxy, &service, request).await;
    }
    let (namespace, name) = match target(&host, &proxy.ingress_domains, &proxy.cluster_domain) {
        Some(Target::Service(ns, name)) => match proxy.services.get(ns, name) {
            Some(service) if service.public => return to_service(proxy, &service, request).await,
            // Cluster-internal names are for guests; from outside only a public Service's.
            Some(_) => {
                return text_response(
                    404,
                    format!(
                        "service {ns}/{name} is not public: its cluster-internal name is not routed from outside\n"
                    ),
                );
            }
            None => return text_response(404, format!("no service {name:?} in namespace {ns:?}\n")),
        },
        Some(Target::ServiceOrWorkload(ns, name)) => match proxy.services.get(ns, name) {
            Some(service) => return to_service(proxy, &service, request).await,
            None => (ns, name),
        },
        None => {
            let expected = proxy.ingress_domains.first().map_or("localhost", String::as_str);
            return text_response(
                404,
                format!("no route for host {host:?}: expected <service or workload>.<namespace>.{expected}\n"),
            );
        }
    };
    let mut lookup = proxy.routes.lookup(namespace, name);
    if !matches!(lookup, Lookup::Ready(_)) && proxy.scalable.at_zero(namespace, name) {
        // An autoscaled workload with no instance ready anywhere: held while one starts (here:
        // this host routes to this node's instances only).
        let key = (namespace.to_owned(), name.to_owned());
        let look = || match proxy.routes.lookup(namespace, name) {
            Lookup::Ready(endpoint) => Look::Ready(endpoint),
            _ if proxy.scalable.at_zero(namespace, name) => Look::Waiting,
            _ => Look::Gone,
        };
        match super::scalable::hold(proxy, std::slice::from_ref(&key), look).await {
            Ok(endpoint) => lookup = Lookup::Ready(endpoint),
            Err(e) => return e.response(),
        }
    }
    match lookup {
        Lookup::Unknown => text_response(
            404,
            format!("no service or workload {name:?} in namespace {namespace:?} serves on this node\n"),
        ),
        Lookup::NotReady => {
            text_response(503, format!("workload {namespace}/{name} has no ready instance on this node\n"))
        }
        Lookup::Ready(endpoint) => match endpoint.handle(without_own_headers(routed(request, namespace))).await {
            Ok(response) => response,
            Err(e) => {
                tracing::info!("{namespace}/{}: request failed: {e}", endpoint.instance);
                crate::runtime::http::error_response(&e, format!("{namespace}/{}: {e}\n", endpoint.instance))
            }
        },
    }
}

/// `request` without the headers of ours a client may have set (a guest must not read a caller
/// header the client chose).
fn without_own_headers(mut request: hyper::Request<Incoming>) -> hyper::Request<Incoming> {
    super::peers::strip_own(request.headers_mut());
    request
}

/// `request`, routed to an instance of `namespace`: its connection takes that namespace's turns
/// on the node's threads until its next request (only a request that reaches something of the
/// namespace is charged to it, never one for a host that routes nowhere).
fn routed(request: hyper::Request<Incoming>, namespace: &str) -> hyper::Request<Incoming> {
    if let Some(owner) = request.extensions().get::<crate::runtime::fair::Owner>() {
        owner.set(namespace);
    }
    request
}

async fn to_service(proxy: &Proxy, service: &ServiceRoute, request: hyper::Request<Incoming>) -> hyper::Response<Body> {
    let request = routed(request, &service.namespace);
    match super::serve(proxy, service, &Caller::Outside, request).await {
        Ok(response) => response,
        Err(super::ProxyError::Held(e)) => e.response(),
        Err(e) => {
            tracing::info!("{}/{}: {e}", service.namespace, service.name);
            text_response(e.status(), format!("{e}\n"))
        }
    }
}

/// Serves the ingress on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    limits: crate::serve::ConnectionLimits,
    shutdown: CancellationToken,
) {
    let gate = proxy.guest_slots.clone();
    let handler = move |request| {
        let proxy = proxy.clone();
        async move { handle(request, &proxy).await }
    };
    crate::serve::serve_http(listener, handler, limits, Some(gate), shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::route_of;

    #[test]
    fn hosts_map_to_workload_and_namespace() {
        let domains = vec!["localhost".to_owned(), "apps.example.com".to_owned()];
        assert_eq!(route_of("hello.default.localhost:8080", &domains), Some(("hello", "default")));
        assert_eq!(route_of("hello.default.localhost", &domains), Some(("hello", "default")));
        assert_eq!(route_of("api.shop.apps.example.com.", &domains), Some(("api", "shop")));
        assert_eq!(route_of("localhost:8080", &domains), None);
        assert_eq!(route_of("default.localhost", &domains), None);
        assert_eq!(route_of("a.b.c.localhost", &domains), None);
        assert_eq!(route_of("hello.default.example.org", &domains), None);
    }

    #[test]
    fn cluster_names_map_to_services() {
        use super::{Target, bare_host, cluster_service, target};
        let host = bare_host("API.Shop.svc.cluster.local.:80");
        assert_eq!(cluster_service(&host, "cluster.local"), Some(("shop", "api")));
        assert_eq!(cluster_service("api.shop.svc.other.local", "cluster.local"), None);
        assert_eq!(cluster_service("shop.svc.cluster.local", "cluster.local"), None);
        let domains = vec!["localhost".to_owned()];
        assert_eq!(
            target("api.shop.localhost", &domains, "cluster.local"),
            Some(Target::ServiceOrWorkload("shop", "api"))
        );
    }
}
