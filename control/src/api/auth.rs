//! Authentication and authorization. Every API request but the health checks needs a bearer
//! token: the admin token may do everything; a tenant token (issued by the admin, stored as its
//! sha256 in the replicated store) may use only its namespaces:
//!
//! - anything under `/api/v1/namespaces/{ns}/...` for its namespaces;
//! - `GET /api/v1/namespaces` (filtered to its namespaces) and `GET /api/v1/namespaces/{ns}`;
//! - module blobs (`/api/v1/modules/...`), which are content-addressed;
//! - nothing else: 403.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shoal_api::Reason;
use shoal_api::token::TokenInfo;

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
}

impl Principal {
    /// Whether this principal may see namespace `ns` (and what is in it).
    pub fn may_use(&self, ns: &str) -> bool {
        match self {
            Principal::Admin => true,
            Principal::Tenant { namespaces, .. } => namespaces.contains(ns),
        }
    }
}

/// What the middleware needs.
#[derive(Clone)]
pub struct AuthState {
    /// The cluster administrator's token.
    pub admin: Arc<str>,
    /// Where tenant tokens are looked up.
    pub store: Arc<Store>,
}

fn principal(state: &AuthState, token: &str) -> Result<Principal, ApiError> {
    if constant_time_eq(token.as_bytes(), state.admin.as_bytes()) {
        return Ok(Principal::Admin);
    }
    let digest = shoal_api::digest::sha256_hex(token.as_bytes());
    let stored = state.store.reader().get(&ObjectKey::new(TOKENS, None, &digest))?;
    let info: TokenInfo = match stored.map(|bytes| serde_json::from_slice(&bytes)) {
        Some(Ok(info)) => info,
        Some(Err(e)) => return Err(ApiError::new(Reason::Internal, format!("stored token is damaged: {e}"))),
        None => return Err(ApiError::new(Reason::Unauthorized, "invalid bearer token")),
    };
    Ok(Principal::Tenant {
        name: info.name.to_string(),
        namespaces: Arc::new(info.namespaces.iter().map(|n| n.to_string()).collect()),
    })
}

/// Whether `principal` may make this request; path segments after `/api/v1/`.
fn authorize(principal: &Principal, method: &Method, path: &str) -> Result<(), ApiError> {
    let Principal::Tenant { name, .. } = principal else { return Ok(()) };
    let segments: Vec<&str> = path.trim_start_matches("/api/v1/").split('/').filter(|s| !s.is_empty()).collect();
    let allowed = match segments.as_slice() {
        ["modules", ..] => true,
        ["namespaces"] => method == Method::GET,
        ["namespaces", ns] => method == Method::GET && principal.may_use(ns),
        ["namespaces", ns, _, ..] => principal.may_use(ns),
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(ApiError::new(Reason::Forbidden, format!("token {name:?} may not {method} {path}")))
    }
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
    let principal = match principal(&state, token) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = authorize(&principal, request.method(), request.uri().path()) {
        return e.into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
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
        assert!(ok(Method::PUT, "/api/v1/modules/abc"));
        assert!(!ok(Method::GET, "/api/v1/namespaces/other/workloads"));
        assert!(!ok(Method::DELETE, "/api/v1/namespaces/shop"));
        assert!(!ok(Method::GET, "/api/v1/namespaces/other"));
        assert!(!ok(Method::GET, "/api/v1/workloads"));
        assert!(!ok(Method::GET, "/api/v1/nodes"));
        assert!(!ok(Method::POST, "/api/v1/tokens"));
        assert!(!ok(Method::GET, "/api/v1/cluster"));
        assert!(authorize(&Principal::Admin, &Method::DELETE, "/api/v1/nodes/n").is_ok());
    }
}
