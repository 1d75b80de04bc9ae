//! The control plane's side of node agents: issuing a node its credentials when it joins, and
//! reaching its agent API on a user's behalf (`shoal logs`), so that users talk to the API
//! server only, whichever node an instance runs on.
//!
//! A node's agent secret is kept in the replicated store under a key the object API cannot
//! reach (`nodesecrets//<node>`); the control plane presents it to the node, and verifies the
//! node by the certificate the node CA issued it (for the one host it joined with, fixed from
//! then on, and for a bounded time: the agent renews it).

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use rand::Rng;
use serde::Deserialize;
use shoal_api::agent::{CredentialsRequest, NodeCredentials, logs_path};
use shoal_api::resources::instance::Instance;
use shoal_api::resources::node::Node;
use shoal_api::{Kind, Reason};

use super::auth::Principal;
use super::error::ApiError;
use crate::pki::Pki;
use crate::store::{Command, CommandResult, ObjectKey, Store};

/// Key prefix ("kind") of node agent secrets.
pub const NODE_SECRETS: &str = "nodesecrets";

/// What the handlers need.
#[derive(Clone)]
pub struct AgentAccess {
    /// The store.
    pub store: Arc<Store>,
    /// The cluster CA, which issues node certificates.
    pub pki: Arc<Pki>,
    /// A client that trusts only the node CA.
    pub http: reqwest::Client,
    /// How long a node certificate is valid.
    pub node_cert_validity: std::time::Duration,
}

impl AgentAccess {
    /// Access for `store`, with a client that trusts `pki`'s CA.
    pub fn new(store: Arc<Store>, pki: Arc<Pki>, node_cert_validity: std::time::Duration) -> anyhow::Result<Self> {
        // Node agents' certificates come from the node CA.
        let ca = reqwest::Certificate::from_pem(pki.node_ca_pem.as_bytes())?;
        let http = reqwest::Client::builder()
            .tls_certs_only([ca])
            .connect_timeout(std::time::Duration::from_secs(3))
            .build()?;
        Ok(AgentAccess { store, pki, http, node_cert_validity })
    }
}

#[derive(serde::Serialize, Deserialize)]
struct StoredSecret {
    secret: String,
    /// The host the node's certificate names, fixed at its first join.
    #[serde(default)]
    host: Option<String>,
}

/// `POST /api/v1/nodes/{name}/credentials`: a fresh certificate and agent secret for the node
/// (its own token only, or the admin).
pub async fn credentials(
    State(access): State<AgentAccess>,
    Extension(principal): Extension<Principal>,
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
    let key_of = ObjectKey::new(NODE_SECRETS, None, &name);
    access.store.linearize().await?;
    if let Some(bytes) = access.store.reader().get(&key_of)?
        && let Ok(StoredSecret { host: Some(fixed), .. }) = serde_json::from_slice(&bytes)
        && fixed != host
        && !matches!(principal, Principal::Admin)
    {
        return Err(ApiError::new(
            Reason::Forbidden,
            format!("node {name} joined as {fixed}, not {host}; an admin deletes the Node to let it join anew"),
        ));
    }
    let (cert, key) = access
        .pki
        .issue_node_pem(&host, &name, access.node_cert_validity)
        .map_err(|e| ApiError::new(Reason::Invalid, format!("hosts: {e}")))?;
    let secret = hex::encode(rand::rng().random::<[u8; 32]>());
    let stored = serde_json::to_vec(&StoredSecret { secret: secret.clone(), host: Some(host) }).expect("serializes");
    // Replaced whole (an update of an object without a spec would be a no-op), in one entry:
    // no reader ever sees the record gone, which would let a request for another host through.
    let replace = Command::Batch(vec![
        Command::Delete { key: key_of.clone(), expected: None },
        Command::Create { key: key_of, object: stored },
    ]);
    let result = match access.store.write(replace).await? {
        CommandResult::Batch(mut results) if results.len() == 2 => results.pop().expect("two results"),
        other => other,
    };
    match result {
        CommandResult::Ok { .. } => {
            let renew_after_secs = (access.node_cert_validity.as_secs() / 3).max(1);
            Ok(Json(NodeCredentials { cert, key, secret, renew_after_secs }))
        }
        other => Err(ApiError::new(Reason::Internal, format!("storing the node secret failed: {other:?}"))),
    }
}

/// Query of a logs request.
#[derive(Debug, Default, Deserialize)]
pub struct LogsQuery {
    /// Keep streaming what the instance writes.
    #[serde(default)]
    pub follow: bool,
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
    Query(query): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let store = &access.store;
    store.linearize().await?;
    let what = format!("instance \"{ns}/{name}\"");
    let instance: Instance = read(store, &ObjectKey::new(Kind::Instance.plural(), Some(&ns), &name), &what)?;
    let Some(node_name) = instance.spec.node else {
        return Err(ApiError::new(Reason::BadRequest, format!("{what} is not on a node yet (Pending)")));
    };
    let node: Node = read(store, &ObjectKey::new(Kind::Node.plural(), None, node_name.as_str()), "its node")?;
    if node.spec.agent_address.is_empty() {
        return Err(ApiError::new(Reason::Unavailable, format!("node {node_name} has no agent address")));
    }
    let secret: StoredSecret =
        read(store, &ObjectKey::new(NODE_SECRETS, None, node_name.as_str()), "the node's secret")?;
    let url = format!("https://{}{}?follow={}", node.spec.agent_address, logs_path(&ns, &name), query.follow);
    let unreachable = |e: String| ApiError::new(Reason::Unavailable, format!("node {node_name} ({url}): {e}"));
    let response =
        access.http.get(&url).bearer_auth(&secret.secret).send().await.map_err(|e| unreachable(e.to_string()))?;
    if !response.status().is_success() {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let reason = if status.as_u16() == 404 { Reason::NotFound } else { Reason::Unavailable };
        return Err(ApiError::new(reason, format!("node {node_name}: {status}: {}", text.trim())));
    }
    let body = Body::from_stream(response.bytes_stream().map(|chunk| chunk.map_err(std::io::Error::other)));
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}
