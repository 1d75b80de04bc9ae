//! The API server: REST over HTTPS, as design.md lays out the paths.
//!
//! Handlers are thin: parse into typed objects, call the store, map its typed errors to
//! statuses ([`error`]). Authentication is one middleware ([`auth`]).

pub mod activate;
pub mod admission;
pub mod agents;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod health;
pub mod heartbeat;
pub mod members;
pub mod modules;
pub mod objects;
pub mod oci;
pub mod per_principal;
pub mod registration;
pub mod tokens;
pub mod values;
pub mod watch;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};

use crate::pki::Pki;
use crate::store::Store;

/// `GET /metrics` (the admin's token): the exposition, with raft's figures as of now.
async fn metrics_page(
    State(store): State<Arc<Store>>,
    axum::Extension(metrics): axum::Extension<Arc<crate::metrics::Metrics>>,
) -> axum::response::Response {
    metrics.raft(store.raft_figures());
    ([(axum::http::header::CONTENT_TYPE, shoal_api::exposition::CONTENT_TYPE)], metrics.render()).into_response()
}

/// Counts and times every API request, whoever made it and however it was answered.
async fn count_request(
    State(metrics): State<Arc<crate::metrics::Metrics>>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    let (verb, kind) = crate::metrics::classify(request.method(), request.uri().path(), request.uri().query());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    metrics.request(verb, kind, response.status().as_u16(), started.elapsed());
    response
}

/// Gives every error a JSON Status, as the API's own errors have: axum's rejections (a query
/// string, a path or a body that does not parse, a body too large, a method not allowed)
/// answer in plain text, which no client of the API should have to tell apart.
async fn errors_as_status(request: axum::extract::Request, next: middleware::Next) -> axum::response::Response {
    let response = next.run(request).await;
    let code = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if !(code.is_client_error() || code.is_server_error()) || is_json {
        return response;
    }
    // Rejections are a line or two; anything longer is cut, not read whole.
    let text = match axum::body::to_bytes(response.into_body(), 4096).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    };
    let reason = match code.as_u16() {
        401 => shoal_api::Reason::Unauthorized,
        403 => shoal_api::Reason::Forbidden,
        404 => shoal_api::Reason::NotFound,
        409 => shoal_api::Reason::Conflict,
        410 => shoal_api::Reason::Gone,
        422 => shoal_api::Reason::Invalid,
        429 => shoal_api::Reason::TooManyRequests,
        503 => shoal_api::Reason::Unavailable,
        c if c >= 500 => shoal_api::Reason::Internal,
        _ => shoal_api::Reason::BadRequest,
    };
    let message = if text.trim().is_empty() { code.to_string() } else { text };
    let mut status = shoal_api::Status::new(reason, message);
    status.code = code.as_u16();
    error::ApiError(status).into_response()
}

/// Refuses `dryRun` wherever a dry run is not done (deletes, status writes, uploads, node
/// calls), so that no client takes a real write for a rehearsal.
async fn refuse_unsupported_dry_run(
    request: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    use axum::http::Method;
    let asks = request.uri().query().is_some_and(|q| q.split('&').any(|p| p.split('=').next() == Some("dryRun")));
    if asks {
        let path = request.uri().path();
        let segments: Vec<&str> = path.trim_start_matches("/api/v1/").split('/').collect();
        let object_path = matches!(segments.as_slice(), [_] | [_, _] | ["namespaces", _, _] | ["namespaces", _, _, _]);
        let spec_write = matches!(*request.method(), Method::POST | Method::PUT)
            && path.starts_with("/api/v1/")
            && object_path
            && !segments.contains(&"modules")
            && !segments.contains(&"tokens")
            && !matches!(segments.first(), Some(&"members" | &"snapshot"))
            && !matches!(segments.as_slice(), ["namespaces", _, "status"]);
        if !spec_write {
            let message = "dryRun is done on writes of an object's spec only (POST, PUT); not here";
            return error::ApiError::new(shoal_api::Reason::BadRequest, message).into_response();
        }
    }
    next.run(request).await
}

/// Largest module upload accepted.
pub const MAX_MODULE_BYTES: usize = 128 << 20;

/// Largest request body anywhere else: an object (Kubernetes bounds objects at 1.5 MiB too), a
/// token request, a heartbeat.
pub const MAX_OBJECT_BYTES: usize = 3 << 19;

/// What the API server's handlers bound, beyond request sizes.
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    /// How long a node certificate is valid (nodes renew at a third of it).
    pub node_cert_validity: std::time::Duration,
    /// How many connections one tenant or node may hold open at once.
    pub max_connections_per_principal: usize,
}

/// What the API server's handlers are served from.
pub struct ApiParts {
    /// The replicated store.
    pub store: Arc<Store>,
    /// The cluster's keys and tokens.
    pub pki: Arc<Pki>,
    /// What the raft leader holds in memory (liveness, load).
    pub memory: crate::raft_service::LeaderMemory,
    /// What `/metrics` shows.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The watches.
    pub hub: Arc<watch::WatchHub>,
    /// The module store.
    pub blobs: Arc<crate::blobs::Blobs>,
    /// Admission defaults and limits.
    pub admission: Arc<admission::Admission>,
}

/// The API router.
pub fn router(parts: ApiParts, limits: ApiLimits) -> anyhow::Result<Router> {
    let ApiParts { store, pki, memory, metrics, hub, blobs, admission } = parts;
    let ApiLimits { node_cert_validity, max_connections_per_principal } = limits;
    let tokens = Arc::new(auth::TokenCache::default());
    let sealer = Arc::new(crate::sealing::Sealer::new(&pki.secrets_key));
    let uploads = Arc::new(per_principal::PerPrincipal::new("uploads", modules::UPLOADS_PER_PRINCIPAL));
    let puller = oci::Puller {
        registries: admission.registries.clone(),
        store: store.clone(),
        blobs: blobs.clone(),
        sealer: sealer.clone(),
        uploads: uploads.clone(),
    };
    let admission = Arc::new(admission::Admission { puller: Some(Arc::new(puller)), ..(*admission).clone() });
    let auth = auth::AuthState {
        admin: pki.admin_token.as_str().into(),
        store: store.clone(),
        cache: tokens.clone(),
        connections: Arc::new(per_principal::PerPrincipal::new("connections", max_connections_per_principal)),
    };
    let activations = Router::new()
        .route("/api/v1/namespaces/{ns}/workloads/{name}/activate", post(activate::activate))
        .with_state(activate::ActivateState { store: store.clone(), load: memory.load.clone() });
    let heartbeats = Router::new()
        .route("/api/v1/nodes/{name}/heartbeat", post(heartbeat::beat))
        .with_state(heartbeat::HeartbeatState::new(store.clone(), memory));
    let members = Router::new()
        .route("/api/v1/members", get(members::list).post(members::add))
        .route("/api/v1/members/{id}", axum::routing::delete(members::remove))
        .route("/api/v1/members/{id}/replace", post(members::replace))
        .route("/api/v1/snapshot", get(members::snapshot))
        .with_state(members::MembersState { store: store.clone(), blobs: blobs.clone() });
    let modules = Router::new()
        .route("/api/v1/modules/{digest}", get(modules::get_any))
        .route("/api/v1/namespaces/{ns}/modules", get(modules::list))
        .route("/api/v1/namespaces/{ns}/modules/{digest}", put(modules::put).get(modules::get).delete(modules::delete))
        .with_state(modules::ModuleState { store: store.clone(), blobs, uploads });
    let agents = Router::new()
        .route("/api/v1/nodes/{name}/credentials", post(agents::credentials))
        .route("/api/v1/namespaces/{ns}/instances/{name}/log", get(agents::logs))
        .route("/api/v1/nodes/{name}/metrics", get(agents::node_metrics))
        .route("/api/v1/nodes/{name}/metrics/resource", get(agents::node_resource_metrics))
        .with_state(agents::AgentAccess::new(store.clone(), pki, node_cert_validity)?);
    use objects::*;
    let api = Router::new()
        .route("/api/v1/cluster", get(health::cluster))
        .route("/api/v1/whoami", get(tokens::whoami))
        .route("/api/v1/tokens", get(tokens::list).post(tokens::issue))
        .route("/api/v1/tokens/{name}", axum::routing::delete(tokens::revoke))
        .route("/api/v1/{plural}", get(list_all).post(create_any))
        .route("/api/v1/{plural}/{name}", get(get_cluster).put(put_cluster).delete(delete_cluster))
        .route("/api/v1/{plural}/{name}/status", put(put_cluster_status))
        .route(
            "/api/v1/namespaces/{ns}/{plural}",
            get(list_namespaced).post(create_namespaced).put(put_namespace_status),
        )
        .route(
            "/api/v1/namespaces/{ns}/{plural}/{name}",
            get(get_namespaced).put(put_namespaced).delete(delete_namespaced),
        )
        .route("/api/v1/namespaces/{ns}/{plural}/{name}/status", put(put_namespaced_status))
        .route("/api/v1/namespaces/{ns}/instances/{name}/values", get(values::instance_values))
        .route("/api/v1/nodes/{name}/reports", post(node_reports))
        .route("/metrics", get(metrics_page))
        .with_state(store.clone())
        .merge(agents)
        .merge(heartbeats)
        .merge(activations)
        .merge(modules)
        .merge(members)
        .fallback(|| async { error::ApiError::new(shoal_api::Reason::NotFound, "no such endpoint") });
    // Middleware wraps the routers whole, not each route (as `Router::layer` does): a `from_fn`
    // layer clones what it wraps for every request, and a per-route stack is a chain of boxed
    // services, so a beat paid for some thirty allocations before it reached its handler.
    let api = tower::ServiceBuilder::new()
        .layer(axum::Extension(metrics.clone()))
        .layer(middleware::from_fn_with_state(auth, auth::require_token))
        .layer(axum::Extension(tokens::NodeCertValidity(node_cert_validity)))
        .layer(axum::Extension(tokens))
        .layer(axum::Extension(sealer))
        .layer(axum::Extension(admission))
        .layer(axum::Extension(hub))
        .service(api);
    let site = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/version", get(health::version))
        .merge(dashboard::router())
        .with_state(store)
        .fallback_service(api);
    let site = tower::ServiceBuilder::new()
        .layer(middleware::from_fn_with_state(metrics, count_request))
        .layer(middleware::from_fn(errors_as_status))
        .layer(middleware::from_fn(refuse_unsupported_dry_run))
        .layer(DefaultBodyLimit::max(MAX_OBJECT_BYTES))
        .service(site);
    Ok(Router::new().fallback_service(site))
}
