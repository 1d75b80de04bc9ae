//! Bearer-token authentication: every API request but the health checks needs a token.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shoal_api::Reason;

use super::error::ApiError;
use crate::pki::constant_time_eq;

/// The tokens the API server accepts.
#[derive(Clone)]
pub struct Tokens {
    /// The cluster administrator's token: may do everything.
    pub admin: Arc<str>,
}

/// Rejects requests without a valid bearer token with 401.
pub async fn require_token(State(tokens): State<Tokens>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        None => {
            ApiError::new(Reason::Unauthorized, "missing bearer token (Authorization: Bearer <token>)").into_response()
        }
        Some(token) if constant_time_eq(token.as_bytes(), tokens.admin.as_bytes()) => next.run(request).await,
        Some(_) => ApiError::new(Reason::Unauthorized, "invalid bearer token").into_response(),
    }
}
