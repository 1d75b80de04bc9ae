//! The control plane's side of node agents: issuing a node its credentials when it joins, and
//! reaching its agent API on a user's behalf (`shoal logs`), so that users talk to the API
//! server only, whichever node an instance runs on.
//!
//! The node CA issues a node a certificate for the one host it joined with (kept in the
//! replicated store under a key the object API cannot reach, `nodehosts//<node>`, and fixed
//! from then on) and for its name, for a bounded time (the agent renews it). The control plane
//! calls agents with a client certificate of its own from the same CA, which names the control
//! plane and nothing else, and takes an agent's answer only from the certificate of the node it
//! meant to reach. No secret is shared: a stolen store or backup reaches no agent.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use shoal_api::agent::{CredentialsRequest, NodeCredentials, logs_path};
use shoal_api::resources::instance::Instance;
use shoal_api::resources::node::Node;
use shoal_api::{Kind, Reason};

use super::auth::Principal;
use super::error::ApiError;
use crate::pki::Pki;
use crate::store::{Command, CommandResult, ObjectKey, Store};

/// Key prefix ("kind") of the host each node joined with.
pub const NODE_HOSTS: &str = "nodehosts";

/// Key prefix ("kind") of revoked nodes (records of [`shoal_api::agent::RevokedNode`]).
pub const NODE_REVOCATIONS: &str = "noderevocations";

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

#[derive(serde::Serialize, Deserialize)]
struct StoredHost {
    /// The host the node's certificate names, fixed at its first join.
    host: String,
}

/// When node `name` was last revoked (seconds since the epoch), if its record is kept.
fn revoked_at(store: &Store, name: &str) -> Result<Option<i64>, ApiError> {
    let Some(bytes) = store.reader().get(&ObjectKey::new(NODE_REVOCATIONS, None, name))? else { return Ok(None) };
    Ok(serde_json::from_slice::<shoal_api::agent::RevokedNode>(&bytes).ok().map(|r| r.before))
}

/// `POST /api/v1/nodes/{name}/credentials`: a fresh certificate for the node (its own token
/// only, or the admin). A renewal for the host the node joined with writes nothing.
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
    let key_of = ObjectKey::new(NODE_HOSTS, None, &name);
    access.store.linearize().await?;
    let fixed = match access.store.reader().get(&key_of)? {
        Some(bytes) => serde_json::from_slice::<StoredHost>(&bytes).ok().map(|h| h.host),
        None => None,
    };
    if let Some(fixed) = &fixed
        && *fixed != host
        && !matches!(principal, Principal::Admin)
    {
        return Err(ApiError::new(
            Reason::Forbidden,
            format!("node {name} joined as {fixed}, not {host}; an admin deletes the Node to let it join anew"),
        ));
    }
    let revoked = revoked_at(&access.store, &name)?;
    if let Some(before) = revoked {
        // Certificates tell time in whole seconds: one issued in the second of a revocation
        // would be refused with the revoked ones, so it waits for the next.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let next = std::time::Duration::from_secs((before + 1).max(0) as u64);
        tokio::time::sleep(next.saturating_sub(now)).await;
    }
    let (cert, key) = access
        .pki
        .issue_node_pem(&host, &name, access.node_cert_validity, revoked)
        .map_err(|e| ApiError::new(Reason::Invalid, format!("hosts: {e}")))?;
    if fixed.as_deref() != Some(host.as_str()) {
        // The first join, or an admin moving the node: the host is written before the
        // certificate is handed out. Replaced whole in one entry (an update of an object
        // without a spec would be a no-op): no reader ever sees it gone, which would let a
        // request for another host through.
        let stored = serde_json::to_vec(&StoredHost { host }).expect("serializes");
        let replace = Command::Batch(vec![
            Command::Delete { key: key_of.clone(), expected: None },
            Command::Create { key: key_of, object: stored },
        ]);
        let result = match access.store.write(replace).await? {
            CommandResult::Batch(mut results) if results.len() == 2 => results.pop().expect("two results"),
            other => other,
        };
        if !matches!(result, CommandResult::Ok { .. }) {
            return Err(ApiError::new(Reason::Internal, format!("storing the node's host failed: {result:?}")));
        }
    }
    let renew_after_secs = (access.node_cert_validity.as_secs() / 3).max(1);
    Ok(Json(NodeCredentials { cert, key, renew_after_secs }))
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
    let url = format!("https://{}{}?follow={}", node.spec.agent_address, logs_path(&ns, &name), query.follow);
    let unreachable = |e: String| ApiError::new(Reason::Unavailable, format!("node {node_name} ({url}): {e}"));
    let response = access.client()?.get(&url).send().await.map_err(|e| unreachable(e.to_string()))?;
    // Another node's agent (or anything else the node CA signed) at that address is not it.
    let presented = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|tls| tls.peer_certificate())
        .map(shoal_api::identity::of_certificate);
    match presented {
        Some(Ok(cert)) if cert.identity == shoal_api::identity::Identity::Node(node_name.to_string()) => {}
        Some(Ok(cert)) => return Err(unreachable(format!("the agent there is {:?}, not this node", cert.identity))),
        Some(Err(e)) => return Err(unreachable(e.to_string())),
        None => return Err(unreachable("the agent presented no certificate".into())),
    }
    if !response.status().is_success() {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let reason = if status.as_u16() == 404 { Reason::NotFound } else { Reason::Unavailable };
        return Err(ApiError::new(reason, format!("node {node_name}: {status}: {}", text.trim())));
    }
    let body = Body::from_stream(response.bytes_stream().map(|chunk| chunk.map_err(std::io::Error::other)));
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}
