//! Authentication and authorization. Every API request but the health checks needs a bearer
//! token: the admin token may do everything; a tenant token (issued by the admin, stored as its
//! sha256 in the replicated store) may use only its namespaces:
//!
//! - anything under `/api/v1/namespaces/{ns}/...` for its namespaces;
//! - `GET /api/v1/namespaces` (filtered to its namespaces) and `GET /api/v1/namespaces/{ns}`;
//! - nothing else: 403.
//!
//! A node token (issued with `node: true`) acts as one Node: it may read and write that Node
//! (and its status), list and watch the Instances bound to it (the list is filtered to them),
//! read and report the status of those Instances and read the values they take from Secrets
//! and Configs (the handlers check the binding), list and
//! watch Services (it routes them) and Workloads (to hold requests for autoscaled ones that
//! have no instance, and ask for one: `activate`), record Events, and download modules.
//! Nothing else.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shoal_api::Reason;
use shoal_api::token::{Identity, TokenInfo};

use super::error::ApiError;
use crate::pki::constant_time_eq;
use crate::store::{ObjectKey, Store};

/// Key prefix ("kind") of stored tenant tokens: `tokens//<sha256 of the token>`.
pub const TOKENS: &str = "tokens";

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Principal {
    /// The cluster administrator.
    Admin,
    /// A tenant, limited to some namespaces.
    Tenant {
        /// The token's name.
        name: String,
        /// Its namespaces.
        namespaces: Arc<BTreeSet<String>>,
    },
    /// A node agent, acting as the Node `name`.
    Node {
        /// The Node it acts as.
        name: Arc<str>,
    },
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Admin => f.write_str("the admin token"),
            Principal::Tenant { name, .. } => write!(f, "token {name:?}"),
            Principal::Node { name } => write!(f, "the token of node {name:?}"),
        }
    }
}

impl Principal {
    /// Whether this principal may see namespace `ns` (and what is in it).
    pub fn may_use(&self, ns: &str) -> bool {
        match self {
            Principal::Admin => true,
            Principal::Tenant { namespaces, .. } => namespaces.contains(ns),
            Principal::Node { .. } => false,
        }
    }

    /// The node a node token acts as.
    pub fn node(&self) -> Option<&str> {
        match self {
            Principal::Node { name } => Some(name),
            _ => None,
        }
    }

    /// Who this is, on the wire.
    pub fn identity(&self) -> Identity {
        match self {
            Principal::Admin => Identity::Admin,
            Principal::Tenant { name, namespaces } => {
                Identity::Tenant { name: name.clone(), namespaces: namespaces.iter().cloned().collect() }
            }
            Principal::Node { name } => Identity::Node { name: name.to_string() },
        }
    }
}

/// How long a token looked up in the store is trusted without looking again: a token revoked
/// through another member keeps working here for at most this long (the member that revoked it
/// forgets at once). Every node beats every second and reports each instance it runs, so a
/// memory shorter than a beat would read the store for nearly every beat: at 1 s, the token
/// lookup was a tenth of what 1,000 nodes' liveness cost.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(10);

/// The most tokens remembered; past it the memory is dropped whole (it refills within a beat).
const TOKEN_CACHE_MAX: usize = 100_000;

/// Tokens recently found in the store, by digest.
#[derive(Default)]
pub struct TokenCache {
    known: Mutex<HashMap<String, (Principal, Instant)>>,
}

impl TokenCache {
    fn get(&self, digest: &str, now: Instant) -> Option<Principal> {
        let known = self.known.lock().expect("token cache lock");
        known.get(digest).filter(|(_, at)| now.duration_since(*at) < TOKEN_CACHE_TTL).map(|(p, _)| p.clone())
    }

    /// Forgets every token (one was revoked).
    pub fn forget_all(&self) {
        self.known.lock().expect("token cache lock").clear();
    }

    fn put(&self, digest: String, principal: Principal, now: Instant) {
        let mut known = self.known.lock().expect("token cache lock");
        if known.len() >= TOKEN_CACHE_MAX {
            known.clear();
        }
        known.insert(digest, (principal, now));
    }
}

/// What the middleware needs.
#[derive(Clone)]
pub struct AuthState {
    /// The cluster administrator's token.
    pub admin: Arc<str>,
    /// Where tenant tokens are looked up.
    pub store: Arc<Store>,
    /// Tokens found there in the last [`TOKEN_CACHE_TTL`].
    pub cache: Arc<TokenCache>,
    /// Connections each tenant or node holds: a connection counts against the principal of
    /// its first request until it closes.
    pub connections: Arc<super::per_principal::PerPrincipal>,
}

async fn principal(state: &AuthState, token: &str, digest: &TokenDigest) -> Result<Principal, ApiError> {
    if constant_time_eq(token.as_bytes(), state.admin.as_bytes()) {
        return Ok(Principal::Admin);
    }
    let digest = digest.0.to_string();
    let now = Instant::now();
    if let Some(principal) = state.cache.get(&digest, now) {
        return Ok(principal);
    }
    let principal = match stored_principal(state, &digest)? {
        Some(principal) => principal,
        None => {
            // Perhaps issued a moment ago through another member: look again once this member
            // has applied everything committed (a token works as soon as its issuer was told).
            state.store.linearize().await?;
            stored_principal(state, &digest)?
                .ok_or_else(|| ApiError::new(Reason::Unauthorized, "invalid bearer token"))?
        }
    };
    state.cache.put(digest, principal.clone(), now);
    Ok(principal)
}

fn stored_principal(state: &AuthState, digest: &str) -> Result<Option<Principal>, ApiError> {
    let stored = state.store.reader().get(&ObjectKey::new(TOKENS, None, digest))?;
    let info: TokenInfo = match stored.map(|bytes| serde_json::from_slice(&bytes)) {
        Some(Ok(info)) => info,
        Some(Err(e)) => return Err(ApiError::new(Reason::Internal, format!("stored token is damaged: {e}"))),
        None => return Ok(None),
    };
    if info.node {
        return Ok(Some(Principal::Node { name: info.name.as_str().into() }));
    }
    Ok(Some(Principal::Tenant {
        name: info.name.to_string(),
        namespaces: Arc::new(info.namespaces.iter().map(|n| n.to_string()).collect()),
    }))
}

/// Whether `principal` may make this request; path segments after `/api/v1/`.
fn authorize(principal: &Principal, method: &Method, path: &str) -> Result<(), ApiError> {
    // The router decodes percent-escapes in path parameters, these rules look at the raw path:
    // `%69nstances` would pass here as something else and reach the handler as `instances`.
    // No name, kind or digest needs an escape, so none is accepted.
    if path.contains('%') {
        return Err(ApiError::new(Reason::BadRequest, format!("percent-escapes are not accepted in paths: {path}")));
    }
    let segments: Vec<&str> = path.trim_start_matches("/api/v1/").split('/').filter(|s| !s.is_empty()).collect();
    let reads = method == Method::GET || method == Method::HEAD;
    let allowed = match (principal, segments.as_slice()) {
        (Principal::Admin, _) | (_, ["whoami"]) => true,
        (Principal::Tenant { .. }, segments) => match segments {
            ["namespaces"] => reads,
            ["namespaces", ns] => reads && principal.may_use(ns),
            // Status is what the control plane and the nodes observe; Instances are made by
            // Workloads (a tenant creating or editing one could pick its node, or dodge the
            // quota): a tenant reads them, and may delete one to have it replaced.
            ["namespaces", _, "status"] | ["namespaces", _, _, _, "status"] => false,
            ["namespaces", ns, "instances", ..] => {
                principal.may_use(ns) && (reads || (method == Method::DELETE && segments.len() == 4))
            }
            ["namespaces", ns, _, ..] => principal.may_use(ns),
            _ => false,
        },
        (Principal::Node { name }, segments) => match segments {
            ["modules", _] => reads,
            ["nodes"] => reads,
            ["nodes", node] => (reads || method == Method::PUT) && *node == &**name,
            ["nodes", node, "status"] => method == Method::PUT && *node == &**name,
            ["nodes", node, "credentials"] => method == Method::POST && *node == &**name,
            ["nodes", node, "heartbeat"] => method == Method::POST && *node == &**name,
            ["nodes", node, "reports"] => method == Method::POST && *node == &**name,
            ["instances"] => reads,
            ["services"] => reads,
            // Which workloads are autoscaled (a request for one with no instance is held). A
            // node may be given any tenant's instances, whose specs are their workloads'; no
            // Secret's value is in a Workload.
            ["workloads"] => reads,
            ["namespaces", _, "workloads", _, "activate"] => method == Method::POST,
            ["namespaces", _, "instances", _] => reads,
            ["namespaces", _, "instances", _, "status"] => method == Method::PUT,
            ["namespaces", _, "instances", _, "values"] => reads,
            ["namespaces", _, "events"] => method == Method::POST,
            ["namespaces", _, "events", _] => reads || method == Method::PUT,
            _ => false,
        },
    };
    if allowed { Ok(()) } else { Err(ApiError::new(Reason::Forbidden, format!("{principal} may not {method} {path}"))) }
}

/// Whether `principal` may read or report on the stored instance `bytes` (a node only on those
/// bound to it).
pub fn may_touch_instance(principal: &Principal, bytes: &[u8]) -> bool {
    principal.node().is_none_or(|node| bound_node(bytes).as_deref() == Some(node))
}

/// The node an instance (JSON) is bound to.
pub fn bound_node(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Bound {
        spec: BoundSpec,
    }
    #[derive(serde::Deserialize)]
    struct BoundSpec {
        node: Option<String>,
    }
    serde_json::from_slice::<Bound>(bytes).ok().and_then(|b| b.spec.node)
}

/// Resolves the bearer token (401 without a valid one), checks what it may do (403), and passes
/// the [`Principal`] on to handlers as a request extension.
pub async fn require_token(State(state): State<AuthState>, mut request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = presented else {
        return ApiError::new(Reason::Unauthorized, "missing bearer token (Authorization: Bearer <token>)")
            .into_response();
    };
    let digest = TokenDigest(shoal_api::digest::sha256_hex(token.as_bytes()).into());
    let principal = match principal(&state, token, &digest).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = authorize(&principal, request.method(), request.uri().path()) {
        return e.into_response();
    }
    if let Some(scope) = request.extensions().get::<shoal_api::serve::ConnectionScope>()
        && !scope.keeps()
    {
        match state.connections.take(&principal) {
            Ok(held) => {
                scope.keep(Box::new(held));
            }
            Err(e) => return e.into_response(),
        }
    }
    request.extensions_mut().insert(principal);
    request.extensions_mut().insert(digest);
    next.run(request).await
}

/// The sha256 of the caller's bearer token (as the store keys it), for handlers that must see
/// whether it is still stored: the middleware may have taken it from [`TokenCache`].
#[derive(Debug, Clone)]
pub struct TokenDigest(pub Arc<str>);

/// Whether the token of `digest` is stored now (as far as this member has applied).
pub fn is_stored(store: &Store, digest: &TokenDigest) -> Result<bool, ApiError> {
    Ok(store.reader().get(&ObjectKey::new(TOKENS, None, &digest.0))?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_reach_only_their_namespaces() {
        let tenant = Principal::Tenant { name: "t".into(), namespaces: Arc::new(["shop".to_owned()].into()) };
        let ok = |m: Method, p: &str| authorize(&tenant, &m, p).is_ok();
        assert!(ok(Method::GET, "/api/v1/namespaces/shop/workloads"));
        assert!(ok(Method::POST, "/api/v1/namespaces/shop/workloads"));
        assert!(ok(Method::DELETE, "/api/v1/namespaces/shop/workloads/w"));
        assert!(ok(Method::GET, "/api/v1/namespaces"));
        assert!(ok(Method::GET, "/api/v1/namespaces/shop"));
        assert!(ok(Method::PUT, "/api/v1/namespaces/shop/modules/abc"));
        assert!(!ok(Method::PUT, "/api/v1/namespaces/other/modules/abc"));
        assert!(!ok(Method::GET, "/api/v1/modules/abc"), "by digest alone, across namespaces: nodes only");
        assert!(!ok(Method::GET, "/api/v1/namespaces/other/workloads"));
        assert!(!ok(Method::DELETE, "/api/v1/namespaces/shop"));
        assert!(!ok(Method::GET, "/api/v1/namespaces/other"));
        assert!(!ok(Method::GET, "/api/v1/workloads"));
        assert!(!ok(Method::GET, "/api/v1/nodes"));
        assert!(!ok(Method::POST, "/api/v1/tokens"));
        assert!(!ok(Method::GET, "/api/v1/cluster"));
        assert!(authorize(&Principal::Admin, &Method::DELETE, "/api/v1/nodes/n").is_ok());
    }

    #[test]
    fn tenants_read_and_delete_instances_but_never_make_them_or_write_status() {
        let tenant = Principal::Tenant { name: "t".into(), namespaces: Arc::new(["shop".to_owned()].into()) };
        let ok = |m: Method, p: &str| authorize(&tenant, &m, p).is_ok();
        assert!(ok(Method::GET, "/api/v1/namespaces/shop/instances"));
        assert!(ok(Method::GET, "/api/v1/namespaces/shop/instances/i"));
        assert!(ok(Method::GET, "/api/v1/namespaces/shop/instances/i/log"));
        assert!(ok(Method::DELETE, "/api/v1/namespaces/shop/instances/i"));
        assert!(!ok(Method::POST, "/api/v1/namespaces/shop/instances"));
        assert!(!ok(Method::PUT, "/api/v1/namespaces/shop/instances/i"));
        assert!(!ok(Method::PUT, "/api/v1/namespaces/shop/instances/i/status"));
        assert!(!ok(Method::PUT, "/api/v1/namespaces/shop/workloads/w/status"));
        assert!(!ok(Method::PUT, "/api/v1/namespaces/shop/services/s/status"));
        assert!(!ok(Method::PUT, "/api/v1/namespaces/shop/status"), "its own Namespace's status (quota usage)");
        assert!(!ok(Method::DELETE, "/api/v1/namespaces/other/instances/i"));
        // An escaped kind is not a way around the rules.
        assert!(!ok(Method::POST, "/api/v1/namespaces/shop/%69nstances"));
        assert!(!ok(Method::PUT, "/api/v1/namespaces/shop/%73tatus"));
        assert!(authorize(&Principal::Admin, &Method::GET, "/api/v1/namespaces/shop/%69nstances").is_err());
    }

    #[test]
    fn nodes_reach_only_their_own_node_and_instances() {
        let node = Principal::Node { name: "n1".into() };
        let ok = |m: Method, p: &str| authorize(&node, &m, p).is_ok();
        assert!(ok(Method::PUT, "/api/v1/nodes/n1"));
        assert!(ok(Method::PUT, "/api/v1/nodes/n1/status"));
        assert!(ok(Method::GET, "/api/v1/instances"));
        assert!(ok(Method::PUT, "/api/v1/namespaces/a/instances/i/status"));
        assert!(ok(Method::POST, "/api/v1/namespaces/a/events"));
        assert!(ok(Method::GET, "/api/v1/modules/abc"));
        assert!(ok(Method::GET, "/api/v1/whoami"));
        assert!(!ok(Method::PUT, "/api/v1/nodes/n2"));
        assert!(!ok(Method::PUT, "/api/v1/nodes/n2/status"));
        assert!(ok(Method::POST, "/api/v1/nodes/n1/credentials"));
        assert!(!ok(Method::POST, "/api/v1/nodes/n2/credentials"));
        assert!(ok(Method::POST, "/api/v1/nodes/n1/heartbeat"));
        assert!(!ok(Method::POST, "/api/v1/nodes/n2/heartbeat"));
        assert!(ok(Method::POST, "/api/v1/nodes/n1/reports"));
        assert!(!ok(Method::POST, "/api/v1/nodes/n2/reports"));
        assert!(!ok(Method::GET, "/api/v1/namespaces/a/instances/i/log"));
        assert!(!ok(Method::DELETE, "/api/v1/nodes/n1"));
        assert!(!ok(Method::PUT, "/api/v1/namespaces/a/instances/i"));
        assert!(!ok(Method::DELETE, "/api/v1/namespaces/a/instances/i"));
        // Workloads, to hold requests for autoscaled ones at zero: read them all, write none.
        assert!(ok(Method::GET, "/api/v1/workloads"));
        assert!(ok(Method::POST, "/api/v1/namespaces/a/workloads/w/activate"));
        assert!(!ok(Method::POST, "/api/v1/workloads"));
        assert!(!ok(Method::GET, "/api/v1/namespaces/a/workloads"));
        assert!(!ok(Method::PUT, "/api/v1/namespaces/a/workloads/w"));
        assert!(!ok(Method::GET, "/api/v1/namespaces/a/workloads/w/activate"));
        assert!(!ok(Method::PUT, "/api/v1/modules/abc"));
        assert!(!ok(Method::PUT, "/api/v1/namespaces/a/modules/abc"));
        assert!(!ok(Method::POST, "/api/v1/tokens"));
        let bound = br#"{"spec":{"node":"n1"}}"#;
        assert!(may_touch_instance(&node, bound));
        assert!(!may_touch_instance(&node, br#"{"spec":{"node":"n2"}}"#));
        assert!(!may_touch_instance(&node, br#"{"spec":{}}"#));
        assert!(may_touch_instance(&Principal::Admin, br#"{"spec":{}}"#));
    }
}
