//! Module blobs, content-addressed by sha256: upload (verified, and refused unless it is a
//! wasm module or component) and download.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use shoal_api::Reason;
use shoal_api::digest::{is_sha256_hex, sha256_hex, wasm_kind};

use super::error::ApiError;
use crate::store::{Command, CommandResult, Store};

fn check_digest(digest: &str) -> Result<(), ApiError> {
    if is_sha256_hex(digest) {
        Ok(())
    } else {
        Err(ApiError::new(Reason::BadRequest, format!("{digest:?} is not a sha256 digest (64 lower-case hex digits)")))
    }
}

/// `PUT /api/v1/modules/{sha256}`.
pub async fn put(
    State(store): State<Arc<Store>>,
    Path(digest): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_digest(&digest)?;
    let actual = sha256_hex(&body);
    if actual != digest {
        return Err(ApiError::new(Reason::Invalid, format!("body has sha256 {actual}, not {digest}")));
    }
    if wasm_kind(&body).is_none() {
        return Err(ApiError::new(Reason::Invalid, "body is not a wasm module or component (bad preamble)"));
    }
    let mut validator = wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all());
    if let Err(e) = validator.validate_all(&body) {
        return Err(ApiError::new(Reason::Invalid, format!("body is not a valid wasm module or component: {e}")));
    }
    if store.reader().blob(&digest)?.is_some() {
        return Ok(StatusCode::OK.into_response());
    }
    match store.write(Command::PutBlob { digest, data: body.to_vec() }).await? {
        CommandResult::Ok { .. } => Ok(StatusCode::CREATED.into_response()),
        other => Err(ApiError::new(Reason::Internal, format!("unexpected result storing a blob: {other:?}"))),
    }
}

/// `GET` (and `HEAD`) `/api/v1/modules/{sha256}`.
pub async fn get(State(store): State<Arc<Store>>, Path(digest): Path<String>) -> Result<Response, ApiError> {
    check_digest(&digest)?;
    let mut blob = store.reader().blob(&digest)?;
    if blob.is_none() {
        // It may have been committed but not yet applied here.
        store.linearize().await?;
        blob = store.reader().blob(&digest)?;
    }
    match blob {
        Some(bytes) => Ok(([(header::CONTENT_TYPE, "application/wasm")], bytes).into_response()),
        None => Err(ApiError::new(Reason::NotFound, format!("module sha256:{digest} not found"))),
    }
}
