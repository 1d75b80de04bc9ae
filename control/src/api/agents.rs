//! The control plane's side of node agents: issuing a node its credentials when it joins, and
//! reaching its agent API on a user's behalf (`shoal logs`), so that users talk to the API
//! server only, whichever node an instance runs on.
//!
//! The node CA issues a node a certificate for the one host it joined with (kept in its
//! [`registration`] and fixed from then on) and for its name and generation, for a bounded
//! time (the agent renews it). The control plane
//! calls agents with a client certificate of its own from the same CA, which names the control
//! plane and nothing else, and takes an agent's answer only from the certificate of the node it
//! meant to reach. No secret is shared: a stolen store or backup reaches no agent.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use shoal_api::agent::{CredentialsRequest, LogOptions, NodeCredentials, logs_path};
use shoal_api::resources::instance::Instance;
use shoal_api::resources::node::Node;
use shoal_api::{Kind, Reason};

use super::auth::Principal;
use super::error::ApiError;
use super::registration;
use crate::pki::Pki;
use crate::store::{Command, CommandResult, ObjectKey, Store};
use shoal_api::identity::Identity;

/// What the handlers need.
#[derive(Clone)]
pub struct AgentAccess {
    /// The store.
    pub store: Arc<Store>,
    /// The cluster CA, which issues node certificates.
    pub pki: Arc<Pki>,
    /// A client of agents that trusts only the node CA and presents the control plane's
    /// certificate, with when it was made (it is made again well before that expires).
    client: Arc<std::sync::Mutex<(std::time::Instant, reqwest::Client)>>,
    /// How long a node certificate (and the control plane's client certificate) is valid.
    pub node_cert_validity: std::time::Duration,
}

impl AgentAccess {
    /// Access for `store`, with a client of the agents made from `pki`.
    pub fn new(store: Arc<Store>, pki: Arc<Pki>, node_cert_validity: std::time::Duration) -> anyhow::Result<Self> {
        let client = agent_client(&pki, node_cert_validity)?;
        let client = Arc::new(std::sync::Mutex::new((std::time::Instant::now(), client)));
        Ok(AgentAccess { store, pki, client, node_cert_validity })
    }

    /// The client of agents, made again once a third of its certificate's validity is past.
    fn client(&self) -> Result<reqwest::Client, ApiError> {
        let mut current = self.client.lock().expect("agent client lock");
        if current.0.elapsed() >= self.node_cert_validity / 3 {
            let fresh = agent_client(&self.pki, self.node_cert_validity)
                .map_err(|e| ApiError::new(Reason::Internal, format!("the control plane's client certificate: {e}")))?;
            *current = (std::time::Instant::now(), fresh);
        }
        Ok(current.1.clone())
    }
}

/// A client of node agents: it trusts only the node CA (agents' certificates come from it),
/// presents a fresh control-plane certificate, and keeps the agent's certificate for the
/// caller to check whose it is.
fn agent_client(pki: &Pki, validity: std::time::Duration) -> anyhow::Result<reqwest::Client> {
    let ca = reqwest::Certificate::from_pem(pki.node_ca_pem.as_bytes())?;
    let (cert, key) = pki.issue_control_plane_client_pem(validity)?;
    let identity = reqwest::Identity::from_pem(format!("{key}{cert}").as_bytes())?;
    Ok(reqwest::Client::builder()
        .tls_certs_only([ca])
        .identity(identity)
        .tls_info(true)
        .connect_timeout(std::time::Duration::from_secs(3))
        .build()?)
}

/// `POST /api/v1/nodes/{name}/credentials`: a fresh certificate for the node (its own token
/// only, or the admin), in the node's current generation. A renewal for the host the node
/// joined with writes nothing.
pub async fn credentials(
    State(access): State<AgentAccess>,
    Extension(principal): Extension<Principal>,
    Extension(token): Extension<super::auth::TokenDigest>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<NodeCredentials>, ApiError> {
    if !matches!(principal, Principal::Admin) && principal.node() != Some(name.as_str()) {
        return Err(ApiError::new(Reason::Forbidden, format!("{principal} may not get credentials for node {name:?}")));
    }
    let request: CredentialsRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::new(Reason::Invalid, format!("request body: {e}")))?;
    let [host] = request.hosts.as_slice() else {
        return Err(ApiError::new(Reason::Invalid, "hosts: exactly one host, the one others reach the node by"));
    };
    let host = host.to_ascii_lowercase();
    if host.parse::<std::net::IpAddr>().is_err() && !shoal_api::resources::service::is_host_name(&host) {
        return Err(ApiError::new(Reason::Invalid, format!("hosts: {host:?} is not a host name or address")));
    }
    access.store.linearize().await?;
    // The generation first, then the token (taken from a cache by the middleware), which must
    // still be stored now that this member has applied everything committed: a revocation
    // deletes the token and raises the generation in one entry, so a certificate is issued
    // either in the generation the revocation makes old, or not at all.
    let generation = registration::generation(&access.store, &name)?;
    if !matches!(principal, Principal::Admin) && !super::auth::is_stored(&access.store, &token)? {
        return Err(ApiError::new(Reason::Unauthorized, "the token was revoked"));
    }
    let registration = registration::read(&access.store, &name)?.unwrap_or_default();
    if let Some(fixed) = &registration.host
        && *fixed != host
        && !matches!(principal, Principal::Admin)
    {
        return Err(ApiError::new(
            Reason::Forbidden,
            format!("node {name} joined as {fixed}, not {host}; an admin deletes the Node to let it join anew"),
        ));
    }
    let (cert, key) = access
        .pki
        .issue_node_pem(&host, &name, generation, access.node_cert_validity)
        .map_err(|e| ApiError::new(Reason::Invalid, format!("hosts: {e}")))?;
    if registration.host.as_deref() != Some(host.as_str()) {
        // The first join, or an admin moving the node: the host is written before the
        // certificate is handed out.
        let registration = registration::Registration { host: Some(host), ..registration };
        let results = match access.store.write(Command::Batch(registration::write(&name, &registration))).await? {
            CommandResult::Batch(results) => results,
            other => vec![other],
        };
        // The deletes before it find nothing on a first join; the create is what counts.
        if let Some(failed) = results.last().filter(|r| !matches!(r, CommandResult::Ok { .. })) {
            return Err(ApiError::new(Reason::Internal, format!("storing the node's host failed: {failed:?}")));
        }
    }
    let renew_after_secs = (access.node_cert_validity.as_secs() / 3).max(1);
    Ok(Json(NodeCredentials { cert, key, renew_after_secs }))
}

fn read<T: serde::de::DeserializeOwned>(store: &Store, key: &ObjectKey, what: &str) -> Result<T, ApiError> {
    let bytes = store.reader().get(key)?.ok_or_else(|| ApiError::new(Reason::NotFound, format!("{what} not found")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(Reason::Internal, format!("stored {what} is damaged: {e}")))
}

/// `GET /api/v1/namespaces/{ns}/instances/{name}/log[?follow=true]`: the instance's stdout and
/// stderr, streamed from the node it runs on.
pub async fn logs(
    State(access): State<AgentAccess>,
    Path((ns, name)): Path<(String, String)>,
    Query(query): Query<LogOptions>,
) -> Result<Response, ApiError> {
    let store = &access.store;
    store.linearize().await?;
    let what = format!("instance \"{ns}/{name}\"");
    let instance: Instance = read(store, &ObjectKey::new(Kind::Instance.plural(), Some(&ns), &name), &what)?;
    let Some(node_name) = instance.spec.node else {
        return Err(ApiError::new(Reason::BadRequest, format!("{what} is not on a node yet (Pending)")));
    };
    if query.previous && query.follow {
        return Err(ApiError::new(Reason::BadRequest, "a previous run has ended: follow only the current one"));
    }
    let path = format!("{}?{}", logs_path(&ns, &name), query.to_query());
    let response = agent_get(&access, node_name.as_str(), &path).await?;
    let body = Body::from_stream(response.bytes_stream().map(|chunk| chunk.map_err(std::io::Error::other)));
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

/// The most bytes of a node's metrics passed on (a node with 10,000 workloads has a few MiB).
pub const MAX_NODE_METRICS_BYTES: usize = 32 << 20;

/// `GET /api/v1/nodes/{name}/metrics` (the admin's token): the node's own metrics, fetched from
/// its agent, for a Prometheus that scrapes the API server only.
pub async fn node_metrics(State(access): State<AgentAccess>, Path(name): Path<String>) -> Result<Response, ApiError> {
    relay_metrics(&access, &name, "/metrics").await
}

/// `GET /api/v1/nodes/{name}/metrics/resource` (the admin's token): the node's instances' usage.
pub async fn node_resource_metrics(
    State(access): State<AgentAccess>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    relay_metrics(&access, &name, "/metrics/resource").await
}

/// Passes on the exposition at `path` of node `name`'s agent, at most
/// [`MAX_NODE_METRICS_BYTES`] of it.
async fn relay_metrics(access: &AgentAccess, name: &str, path: &str) -> Result<Response, ApiError> {
    let response = agent_get(access, name, path).await?;
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain; version=0.0.4")
        .to_owned();
    let unreachable = |e: String| ApiError::new(Reason::Unavailable, format!("node {name}: {e}"));
    let mut body = Vec::new();
    let mut chunks = std::pin::pin!(response.bytes_stream());
    while let Some(chunk) = chunks.next().await {
        body.extend_from_slice(&chunk.map_err(|e| unreachable(e.to_string()))?);
        if body.len() > MAX_NODE_METRICS_BYTES {
            return Err(unreachable(format!("its metrics are more than {MAX_NODE_METRICS_BYTES} bytes")));
        }
    }
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], body).into_response())
}

/// GETs `path` from node `node_name`'s agent, taking the answer only from that node's
/// certificate in its current generation, and only a success.
async fn agent_get(access: &AgentAccess, node_name: &str, path: &str) -> Result<reqwest::Response, ApiError> {
    let store = &access.store;
    let node: Node =
        read(store, &ObjectKey::new(Kind::Node.plural(), None, node_name), &format!("node {node_name:?}"))?;
    if node.spec.agent_address.is_empty() {
        return Err(ApiError::new(Reason::Unavailable, format!("node {node_name} has no agent address")));
    }
    let url = format!("https://{}{path}", node.spec.agent_address);
    let unreachable = |e: String| ApiError::new(Reason::Unavailable, format!("node {node_name} ({url}): {e}"));
    let response = access.client()?.get(&url).send().await.map_err(|e| unreachable(e.to_string()))?;
    // Another node's agent (or anything else the node CA signed) at that address is not it.
    let presented = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|tls| tls.peer_certificate())
        .map(shoal_api::identity::of_certificate);
    let generation = registration::generation(store, node_name)?;
    match presented {
        Some(Ok(Identity::Node { name, generation: presented })) if name == node_name && presented >= generation => {}
        Some(Ok(identity)) => {
            return Err(unreachable(format!(
                "the agent there is {identity:?}, not this node in generation {generation}"
            )));
        }
        Some(Err(e)) => return Err(unreachable(e.to_string())),
        None => return Err(unreachable("the agent presented no certificate".into())),
    }
    if !response.status().is_success() {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let reason = if status.as_u16() == 404 { Reason::NotFound } else { Reason::Unavailable };
        return Err(ApiError::new(reason, format!("node {node_name}: {status}: {}", text.trim())));
    }
    Ok(response)
}
