//! `/api/v1/tokens`: the admin issues, lists and revokes tenant tokens. The secret is returned
//! once, at issue; the store keeps its sha256 as the key, so a token is found in one lookup and
//! a stolen disk yields no usable token.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, body::Bytes};
use rand::Rng;
use shoal_api::Reason;
use shoal_api::token::{IssuedToken, TokenInfo, TokenRequest};

use super::auth::{Principal, TOKENS};
use super::error::ApiError;
use super::registration;
use crate::store::{Command, CommandResult, ObjectKey, Store};

fn admin_only(principal: &Principal) -> Result<(), ApiError> {
    match principal {
        Principal::Admin => Ok(()),
        other => Err(ApiError::new(Reason::Forbidden, format!("{other} may not manage tokens"))),
    }
}

/// Every stored token, with its store key.
fn stored(store: &Store) -> Result<Vec<(ObjectKey, TokenInfo)>, ApiError> {
    let (_, entries) = store.reader().entries(&ObjectKey::prefix(TOKENS, None))?;
    entries
        .into_iter()
        .map(|(key, bytes)| {
            let info = serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::new(Reason::Internal, format!("stored token is damaged: {e}")))?;
            Ok((ObjectKey(key), info))
        })
        .collect()
}

/// `POST /api/v1/tokens`.
pub async fn issue(
    State(store): State<Arc<Store>>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin_only(&principal)?;
    let request: TokenRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::new(Reason::Invalid, e.to_string()))?;
    match (request.node, request.namespaces.is_empty()) {
        (true, false) => return Err(ApiError::new(Reason::Invalid, "namespaces: a node token has none")),
        (false, true) => {
            return Err(ApiError::new(Reason::Invalid, "namespaces: a tenant token needs at least one"));
        }
        _ => {}
    }
    store.linearize().await?;
    if stored(&store)?.iter().any(|(_, t)| t.name == request.name) {
        return Err(ApiError::new(Reason::Conflict, format!("token {:?} already exists", request.name.as_str())));
    }
    let secret = hex::encode(rand::rng().random::<[u8; 32]>());
    let info = TokenInfo {
        name: request.name,
        namespaces: request.namespaces,
        node: request.node,
        created_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    };
    let key = ObjectKey::new(TOKENS, None, &shoal_api::digest::sha256_hex(secret.as_bytes()));
    let object = serde_json::to_vec(&info).expect("serializes");
    match store.write(Command::Create { key, object }).await? {
        CommandResult::Ok { .. } => {
            Ok((StatusCode::CREATED, Json(IssuedToken { info, token: secret })).into_response())
        }
        other => Err(ApiError::new(Reason::Internal, format!("storing the token failed: {other:?}"))),
    }
}

/// `GET /api/v1/tokens`.
pub async fn list(
    State(store): State<Arc<Store>>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    admin_only(&principal)?;
    store.linearize().await?;
    Ok(Json(stored(&store)?.into_iter().map(|(_, t)| t).collect()))
}

/// How long a node certificate is valid: a revocation is sent to the nodes that long, while
/// certificates issued to the node before may still be presented to its peers.
#[derive(Debug, Clone, Copy)]
pub struct NodeCertValidity(pub std::time::Duration);

/// `DELETE /api/v1/tokens/{name}`. A node token's node is revoked too: the API server stops
/// taking the token at once on this member and within a second on the others, and the node's
/// peers stop taking its certificates at their next heartbeat.
pub async fn revoke(
    State(store): State<Arc<Store>>,
    Extension(principal): Extension<Principal>,
    Extension(cache): Extension<Arc<super::auth::TokenCache>>,
    Extension(validity): Extension<NodeCertValidity>,
    Path(name): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    admin_only(&principal)?;
    store.linearize().await?;
    let Some((key, info)) = stored(&store)?.into_iter().find(|(_, t)| t.name.as_str() == name) else {
        return Err(ApiError::new(Reason::NotFound, format!("token {name:?} not found")));
    };
    let mut commands = vec![Command::Delete { key, expected: None }];
    if info.node {
        // Its next generation makes its peers refuse the certificates it holds (the heartbeat
        // answer carries it to every node), for as long as they may be valid.
        let until = registration::unix_now() + validity.0.as_secs() as i64 + 300;
        commands.extend(registration::revoke(&store, info.name.as_str(), until)?);
    }
    let result = match store.write(Command::Batch(commands)).await? {
        CommandResult::Batch(mut results) if !results.is_empty() => results.swap_remove(0),
        other => other,
    };
    // Gone here at once; other members stop trusting it within their cache's TTL.
    cache.forget_all();
    match result {
        CommandResult::Ok { .. } => Ok(Json(info)),
        CommandResult::NotFound => Err(ApiError::new(Reason::NotFound, format!("token {name:?} not found"))),
        other => Err(ApiError::new(Reason::Internal, format!("revoking the token failed: {other:?}"))),
    }
}

/// `GET /api/v1/whoami`: who the server takes the caller to be (a node learns its name here).
pub async fn whoami(Extension(principal): Extension<Principal>) -> Json<shoal_api::token::Identity> {
    Json(principal.identity())
}
