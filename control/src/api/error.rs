//! Typed API errors and their HTTP mapping. Handlers return `Result<_, ApiError>`; the store,
//! which knows nothing of HTTP, returns its own errors, mapped here.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use shoal_api::meta::FieldError;
use shoal_api::{Reason, Status};

use crate::store::StoreError;

/// An error response.
#[derive(Debug)]
pub struct ApiError(pub Status);

impl ApiError {
    /// An error of `reason` with `message`.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        ApiError(Status::new(reason, message))
    }

    /// 422 about a field.
    pub fn invalid(error: FieldError) -> Self {
        let mut status = Status::new(Reason::Invalid, error.to_string());
        status.field = Some(error.path).filter(|p| !p.is_empty());
        ApiError(status)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Storage(_) => {
                tracing::error!("storage failure: {e}");
                ApiError::new(Reason::Internal, e.to_string())
            }
            StoreError::NoLeader(_) | StoreError::Unknown(_) | StoreError::Stopped(_) => {
                ApiError::new(Reason::Unavailable, e.to_string())
            }
            StoreError::DiskFull(_) => ApiError::new(Reason::InsufficientStorage, e.to_string()),
        }
    }
}

/// A stored Secret that does not open with this cluster's key is the cluster's fault, not the
/// caller's.
impl From<crate::sealing::OpenError> for ApiError {
    fn from(e: crate::sealing::OpenError) -> Self {
        ApiError::new(Reason::Internal, e.to_string())
    }
}

impl From<crate::store::types::StorageError> for ApiError {
    fn from(e: crate::store::types::StorageError) -> Self {
        StoreError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.0.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, Json(self.0)).into_response()
    }
}
