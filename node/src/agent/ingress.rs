//! The node's ingress: an HTTP listener that routes `Host: <workload>.<namespace>.<domain>`
//! (the domain is `localhost` unless configured) to a ready instance of that HTTP workload on
//! this node. An unknown host is a 404 and a workload with nothing ready a 503, each with a
//! body that says so.

use std::sync::Arc;

use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::routes::{Lookup, Routes};
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

async fn handle(request: hyper::Request<Incoming>, routes: &Routes, domains: &[String]) -> hyper::Response<Body> {
    let host = request
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host())
        .unwrap_or("")
        .to_ascii_lowercase();
    let Some((workload, namespace)) = route_of(&host, domains) else {
        let expected = domains.first().map_or("localhost", String::as_str);
        return text_response(404, format!("no route for host {host:?}: expected <workload>.<namespace>.{expected}\n"));
    };
    match routes.lookup(namespace, workload) {
        Lookup::Unknown => {
            text_response(404, format!("no workload {workload:?} in namespace {namespace:?} runs on this node\n"))
        }
        Lookup::NotReady => {
            text_response(503, format!("workload {namespace}/{workload} has no ready instance on this node\n"))
        }
        Lookup::Ready(endpoint) => match endpoint.app.handle(request, &endpoint.sandbox).await {
            Ok(response) => response,
            Err(e) => {
                tracing::info!("{namespace}/{}: request failed: {e}", endpoint.instance);
                text_response(e.status(), format!("{namespace}/{}: {e}\n", endpoint.instance))
            }
        },
    }
}

/// Serves the ingress on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, routes: Arc<Routes>, domains: Arc<Vec<String>>, shutdown: CancellationToken) {
    let handler = move |request| {
        let (routes, domains) = (routes.clone(), domains.clone());
        async move { handle(request, &routes, &domains).await }
    };
    crate::serve::serve_http(listener, handler, shutdown).await;
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
}
