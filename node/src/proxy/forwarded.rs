//! Service traffic another node forwards here, to the agent API: the sender must have presented
//! a certificate of the node CA that names a node whose credentials are not revoked, and must
//! say who the caller is; the Service's fence is checked
//! again here (the sending node checked too), and the request is served by an instance on this
//! node or not at all (one hop).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use shoal_api::serve::TlsPeer;

use super::Proxy;
use super::peers::{CALLER_HEADER, Caller, HOPS_HEADER, SERVICE_HEADER};
use crate::runtime::host::Hops;

fn text(status: StatusCode, message: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
}

/// Serves one forwarded request.
pub async fn handle(proxy: Arc<Proxy>, TlsPeer(peer): TlsPeer, request: axum::extract::Request) -> Response {
    let Some(peer) = peer else {
        return text(StatusCode::UNAUTHORIZED, "service traffic needs a node certificate of this cluster\n".into());
    };
    // Checked on every request, not once per connection: a revocation ends a kept-alive one too.
    if let Err(why) = proxy.revocations.node_of(&peer) {
        return text(StatusCode::UNAUTHORIZED, format!("service traffic refused: {why}\n"));
    }
    let named = request.headers().get(SERVICE_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.split_once('/'));
    let Some(service) = named.and_then(|(ns, name)| proxy.services.get(ns, name)) else {
        return text(StatusCode::NOT_FOUND, format!("no such service on node {}\n", proxy.node));
    };
    let caller = request.headers().get(CALLER_HEADER).and_then(|v| v.to_str().ok()).and_then(Caller::parse);
    let Some(caller) = caller else {
        return text(StatusCode::BAD_REQUEST, format!("forwarded service traffic needs {CALLER_HEADER}\n"));
    };
    if !service.admits_caller(&caller) {
        let message = format!(
            "service {}/{} does not admit {} (see its allowFromNamespaces, ingressHosts, public)\n",
            service.namespace,
            service.name,
            caller.header()
        );
        return text(StatusCode::FORBIDDEN, message);
    }
    let hops = request.headers().get(HOPS_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let mut request = request.map(super::axum_body);
    request.extensions_mut().insert(Hops(hops.unwrap_or(0)));
    match super::serve_here(&proxy, &service, request).await {
        Ok(Ok(response)) => response.map(Body::new),
        Ok(Err(e)) => text(StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY), format!("{e}\n")),
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("service {}/{} has no ready instance on node {}\n", service.namespace, service.name, proxy.node),
        ),
    }
}
