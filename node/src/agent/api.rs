//! The node agent's own API, HTTPS with the certificate the node CA issued this node: the logs
//! of the instances running here, for `shoal logs` (called by the control plane, which presents
//! its own certificate of the node CA, naming the control plane), and Service traffic forwarded
//! by other nodes (which present their own certificates; [`crate::proxy::forwarded`] serves it).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Extension;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rustls::pki_types::CertificateDer;
use shoal_api::agent::LogOptions;
use shoal_api::serve::TlsPeer;

use super::Shared;
use crate::runtime::log::Piece;

/// `pieces` as they are sent: with `timestamps`, each line begun with when it began.
fn render(pieces: &[Piece], timestamps: bool) -> bytes::Bytes {
    let mut out = Vec::new();
    for piece in pieces {
        if timestamps && piece.starts_line {
            let at = piece.time.map_or("-".to_owned(), |t| humantime::format_rfc3339_nanos(t).to_string());
            out.extend_from_slice(at.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&piece.bytes);
    }
    out.into()
}

/// What of `pieces` `options` keeps: lines begun in the last `sinceSeconds`, then the last
/// `tail` lines.
fn chosen(mut pieces: Vec<Piece>, options: &LogOptions) -> Vec<Piece> {
    if let Some(since) = options.since_seconds {
        let from = SystemTime::now().checked_sub(Duration::from_secs(since)).unwrap_or(SystemTime::UNIX_EPOCH);
        pieces.retain(|p| p.time.is_some_and(|t| t >= from));
    }
    if let Some(tail) = options.tail {
        let lines = usize::try_from(tail).unwrap_or(usize::MAX);
        let starts: Vec<usize> = pieces.iter().enumerate().filter(|(_, p)| p.starts_line).map(|(i, _)| i).collect();
        if let Some(first) = starts.len().checked_sub(lines).map(|i| starts.get(i).copied().unwrap_or(pieces.len())) {
            pieces.drain(..first);
        }
    }
    pieces
}

fn text(status: StatusCode, message: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
}

/// Whether the peer is the control plane (a node's certificate comes from the same CA, and
/// names a node).
fn is_control_plane(peer: &Option<rustls::pki_types::CertificateDer<'static>>) -> bool {
    let identity = peer.as_deref().and_then(|der| shoal_api::identity::of_certificate(der).ok());
    identity == Some(shoal_api::identity::Identity::ControlPlane)
}

/// The node's metrics: per workload, or (`resource`) per instance.
async fn exposition(shared: &Shared, peer: &Option<CertificateDer<'static>>, resource: bool) -> Response {
    if !is_control_plane(peer) {
        return text(StatusCode::UNAUTHORIZED, "this API is for the control plane only\n".into());
    }
    let hosted: Vec<_> = shared.hosted.lock().expect("hosted lock").values().cloned().collect();
    let body = match resource {
        true => super::metrics::render_resource(hosted),
        false => super::metrics::render(&shared.proxy, &hosted),
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, shoal_api::exposition::CONTENT_TYPE)], body).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>, Extension(TlsPeer(peer)): Extension<TlsPeer>) -> Response {
    exposition(&shared, &peer, false).await
}

async fn resource_metrics(State(shared): State<Arc<Shared>>, Extension(TlsPeer(peer)): Extension<TlsPeer>) -> Response {
    exposition(&shared, &peer, true).await
}

async fn logs(
    State(shared): State<Arc<Shared>>,
    Extension(TlsPeer(peer)): Extension<TlsPeer>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<LogOptions>,
) -> Response {
    if !is_control_plane(&peer) {
        return text(StatusCode::UNAUTHORIZED, "this API is for the control plane only\n".into());
    }
    let key = format!("{namespace}/{name}");
    let Some(buffer) = shared.hosted.lock().expect("hosted lock").get(&key).map(|h| h.logs.clone()) else {
        return text(StatusCode::NOT_FOUND, format!("instance {key} does not run on node {}\n", shared.name));
    };
    if query.previous {
        let Some(previous) = buffer.previous() else {
            return text(StatusCode::NOT_FOUND, format!("instance {key} has not restarted: it has no previous run\n"));
        };
        let body = render(&chosen(previous, &query), query.timestamps);
        return (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response();
    }
    let (pieces, offset) = buffer.pieces_since(0);
    let kept = render(&chosen(pieces, &query), query.timestamps);
    if !query.follow {
        return (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], kept).into_response();
    }
    let timestamps = query.timestamps;
    // Follow: what is kept, then whatever is written next, until the instance leaves this node.
    let changes = buffer.subscribe();
    let first = futures::stream::once(async move { Ok::<_, std::io::Error>(kept) });
    let rest = futures::stream::unfold(
        (buffer, changes, offset, shared, key),
        move |(buffer, mut changes, offset, shared, key)| async move {
            loop {
                let gone = !shared.hosted.lock().expect("hosted lock").contains_key(&key);
                if gone {
                    return None;
                }
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return None },
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
                let (pieces, next) = buffer.pieces_since(offset);
                if !pieces.is_empty() {
                    return Some((Ok(render(&pieces, timestamps)), (buffer, changes, next, shared, key)));
                }
            }
        },
    );
    use futures::StreamExt;
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::from_stream(first.chain(rest)))
        .into_response()
}

/// Sends Service traffic to the proxy, told by its header and never by its path (a guest's own
/// `/logs/...` must reach the guest); everything else goes on to the agent's routes.
async fn service_traffic_by_header(
    State(proxy): State<Arc<crate::proxy::Proxy>>,
    Extension(peer): Extension<TlsPeer>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.headers().contains_key(crate::proxy::peers::SERVICE_HEADER) {
        return crate::proxy::forwarded::handle(proxy, peer, request).await;
    }
    next.run(request).await
}

/// The agent API router.
pub fn router(shared: Arc<Shared>) -> Router {
    let proxy = shared.proxy.clone();
    Router::new()
        .route("/logs/{namespace}/{name}", get(logs))
        .route("/metrics", get(metrics))
        .route("/metrics/resource", get(resource_metrics))
        .with_state(shared)
        .layer(axum::middleware::from_fn_with_state(proxy, service_traffic_by_header))
}
