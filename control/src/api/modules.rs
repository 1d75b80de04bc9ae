//! Module endpoints. A module is uploaded to a namespace, which its size is charged to:
//! `PUT /api/v1/namespaces/{ns}/modules/{sha256}` (verified, refused unless it is a valid wasm
//! module or component, refused with 403 past `spec.quota.moduleBytes`, and charged once however
//! often it is uploaded); `GET`/`HEAD` on the same path reads it back, `DELETE` removes it from
//! the namespace (refused while a Workload there uses it), and `GET .../modules` lists them. Nodes
//! (and the admin) download by digest alone: `GET /api/v1/modules/{sha256}`. The bytes are stored
//! beside raft, not in it ([`crate::blobs`]).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shoal_api::Reason;
use shoal_api::digest::{is_sha256_hex, wasm_kind};
use shoal_api::module::{MAX_MODULES_PER_NAMESPACE, MODULES, ModuleRecord};
use shoal_api::quantity::Memory;

use super::MAX_MODULE_BYTES;
use super::auth::Principal;
use super::error::ApiError;
use super::per_principal::PerPrincipal;
use crate::blobs::{BlobError, Blobs, hashes_to};
use crate::store::{Command, CommandResult, ObjectKey, Store};

/// What the module endpoints need.
#[derive(Clone)]
pub struct ModuleState {
    /// The store (records).
    pub store: Arc<Store>,
    /// The bytes.
    pub blobs: Arc<Blobs>,
    /// Uploads in progress per tenant: one tenant's slow uploads cannot hold every member's
    /// upload slots.
    pub uploads: Arc<PerPrincipal>,
}

/// Uploads one tenant (or node) may have in progress on a member at once.
pub const UPLOADS_PER_PRINCIPAL: usize = 2;

fn check_digest(digest: &str) -> Result<(), ApiError> {
    if is_sha256_hex(digest) {
        Ok(())
    } else {
        Err(ApiError::new(Reason::BadRequest, format!("{digest:?} is not a sha256 digest (64 lower-case hex digits)")))
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::NoQuorum { .. } => ApiError::new(Reason::Unavailable, e.to_string()),
            BlobError::Io(_) => {
                tracing::error!("{e}");
                ApiError::new(Reason::Internal, e.to_string())
            }
        }
    }
}

/// The module records of namespace `ns`, as this member has applied them.
fn records(store: &Store, ns: &str) -> Result<Vec<ModuleRecord>, ApiError> {
    let (_, entries) = store.reader().entries(&ObjectKey::prefix(MODULES, Some(ns)))?;
    Ok(entries.iter().filter_map(|(_, bytes)| serde_json::from_slice(bytes).ok()).collect())
}

fn quota_exceeded(used: u64, size: u64, limit: u64) -> ApiError {
    ApiError::new(
        Reason::Forbidden,
        format!(
            "quota exceeded: module storage {} used + {} > {} (spec.quota.moduleBytes)",
            Memory(used),
            Memory(size),
            Memory(limit)
        ),
    )
}

fn too_many_modules(ns: &str) -> ApiError {
    ApiError::new(
        Reason::Forbidden,
        format!("namespace {ns} holds {MAX_MODULES_PER_NAMESPACE} modules, the most it may; delete unused ones first"),
    )
}

/// `PUT /api/v1/namespaces/{ns}/modules/{sha256}`.
pub async fn put(
    State(s): State<ModuleState>,
    Extension(principal): Extension<Principal>,
    Path((ns, digest)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    check_digest(&digest)?;
    shoal_api::Name::new(&ns).map_err(|e| ApiError::new(Reason::BadRequest, format!("namespace {ns:?}: {e}")))?;
    let namespace = super::objects::require_open_namespace(&s.store, &ns)?;
    if s.blobs.recorded(&ns, &digest)?.is_some() {
        return Ok(StatusCode::OK.into_response());
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| ApiError::new(Reason::BadRequest, "a module upload needs a Content-Length"))?;
    if declared > MAX_MODULE_BYTES as u64 {
        return Err(ApiError::new(
            Reason::BadRequest,
            format!("a module is at most {} ({declared} bytes declared)", Memory(MAX_MODULE_BYTES as u64)),
        ));
    }
    check_room(&s.store, &ns, namespace.as_ref(), declared)?;
    s.store.room_for_writes_of(declared)?;
    let _uploading = s.uploads.take(&principal)?;
    let _memory = s.blobs.upload_memory().await;
    // The bytes must come at 1 MiB/s at least: a trickle does not hold an upload slot for long.
    let deadline = std::time::Duration::from_secs(10 + (declared >> 20));
    let read = tokio::time::timeout(deadline, axum::body::to_bytes(request.into_body(), declared as usize));
    let body = read
        .await
        .map_err(|_| ApiError::new(Reason::BadRequest, format!("the module did not arrive within {deadline:?}")))?
        .map_err(|e| {
            ApiError::new(Reason::BadRequest, format!("reading the module ({declared} bytes declared): {e}"))
        })?;
    store_module(&s.store, &s.blobs, ns, digest, body).await?;
    Ok(StatusCode::CREATED.into_response())
}

/// Refuses a module of `size` bytes for `ns` before any byte of it is read or stored when it
/// cannot fit: the namespace's module count, and its `spec.quota.moduleBytes` (the record's
/// write checks again, in the same step as it charges).
pub(super) fn check_room(
    store: &Store,
    ns: &str,
    namespace: Option<&shoal_api::resources::namespace::Namespace>,
    size: u64,
) -> Result<(), ApiError> {
    let quota = namespace.and_then(|n| n.spec.quota.as_ref()).and_then(|q| q.module_bytes);
    let recorded = records(store, ns)?;
    if recorded.len() >= MAX_MODULES_PER_NAMESPACE {
        return Err(too_many_modules(ns));
    }
    if let Some(limit) = quota.map(|m| m.0) {
        let used = recorded.iter().fold(0u64, |sum, r| sum.saturating_add(r.size));
        if used.saturating_add(size) > limit {
            return Err(quota_exceeded(used, size, limit));
        }
    }
    Ok(())
}

/// Stores `body` as module `digest` of `ns`, once it hashes to the digest and is a valid wasm
/// module or component: its bytes on a quorum of members, then its record (which charges it).
pub(super) async fn store_module(
    store: &Store,
    blobs: &Blobs,
    ns: String,
    digest: String,
    body: bytes::Bytes,
) -> Result<(), ApiError> {
    if !hashes_to(&body, &digest).await {
        return Err(ApiError::new(Reason::Invalid, format!("body does not hash to sha256:{digest}")));
    }
    if wasm_kind(&body).is_none() {
        return Err(ApiError::new(Reason::Invalid, "body is not a wasm module or component (bad preamble)"));
    }
    let checked = body.clone();
    let valid = tokio::task::spawn_blocking(move || {
        let mut validator = wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all());
        validator.validate_all(&checked).map(|_| ()).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| ApiError::new(Reason::Internal, e.to_string()))?;
    if let Err(e) = valid {
        return Err(ApiError::new(Reason::Invalid, format!("body is not a valid wasm module or component: {e}")));
    }
    let size = body.len() as u64;
    blobs.replicate(&digest, body).await?;
    let command = Command::PutModule { namespace: ns, digest, size, uploaded: crate::stamp::now_rfc3339() };
    match store.write(command).await? {
        CommandResult::Ok { .. } => Ok(()),
        CommandResult::QuotaExceeded { used, limit } => Err(quota_exceeded(used, size, limit)),
        CommandResult::Invalid { message } => Err(ApiError::new(Reason::Forbidden, message)),
        other => Err(ApiError::new(Reason::Internal, format!("unexpected result storing a module: {other:?}"))),
    }
}

/// Streams the bytes of `hex`, fetching them from another member first if this one lacks them.
async fn bytes_response(blobs: &Blobs, hex: &str, method: &Method) -> Result<Response, ApiError> {
    if !blobs.files().has(hex) && !blobs.fetch(hex).await? {
        return Err(ApiError::new(Reason::Unavailable, format!("no member holds the bytes of sha256:{hex} yet")));
    }
    file_response(blobs, hex, method)
        .await
        .map_err(BlobError::Io)?
        .ok_or_else(|| ApiError::new(Reason::NotFound, format!("module sha256:{hex} not found")))
}

/// The bytes of `hex` from this member's disk, streamed, or `None` if they are not here.
pub async fn file_response(blobs: &Blobs, hex: &str, method: &Method) -> std::io::Result<Option<Response>> {
    let file = match tokio::fs::File::open(blobs.files().path(hex)).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let length = file.metadata().await?.len();
    let body =
        if method == Method::HEAD { Body::empty() } else { Body::from_stream(tokio_util::io::ReaderStream::new(file)) };
    let headers = [(header::CONTENT_TYPE, "application/wasm".to_owned()), (header::CONTENT_LENGTH, length.to_string())];
    Ok(Some((headers, body).into_response()))
}

/// The record of `hex` in `ns`, reading again once this member has applied everything
/// committed when it is not here yet (it may have been written through another member).
async fn record(s: &ModuleState, ns: &str, hex: &str) -> Result<ModuleRecord, ApiError> {
    if let Some(record) = s.blobs.recorded(ns, hex)? {
        return Ok(record);
    }
    s.store.linearize().await?;
    s.blobs
        .recorded(ns, hex)?
        .ok_or_else(|| ApiError::new(Reason::NotFound, format!("module sha256:{hex} not found in namespace {ns}")))
}

/// `GET` (and `HEAD`) `/api/v1/namespaces/{ns}/modules/{sha256}`.
pub async fn get(
    State(s): State<ModuleState>,
    Path((ns, digest)): Path<(String, String)>,
    method: Method,
) -> Result<Response, ApiError> {
    check_digest(&digest)?;
    record(&s, &ns, &digest).await?;
    bytes_response(&s.blobs, &digest, &method).await
}

/// `GET` (and `HEAD`) `/api/v1/modules/{sha256}`: for nodes and the admin, whichever
/// namespace holds it.
pub async fn get_any(
    State(s): State<ModuleState>,
    Path(digest): Path<String>,
    method: Method,
) -> Result<Response, ApiError> {
    check_digest(&digest)?;
    bytes_response(&s.blobs, &digest, &method).await
}

/// `GET /api/v1/namespaces/{ns}/modules`.
pub async fn list(State(s): State<ModuleState>, Path(ns): Path<String>) -> Result<Json<Vec<ModuleRecord>>, ApiError> {
    s.store.linearize().await?;
    Ok(Json(records(&s.store, &ns)?))
}

/// `DELETE /api/v1/namespaces/{ns}/modules/{sha256}`: refused while a Workload of `ns` uses it.
pub async fn delete(
    State(s): State<ModuleState>,
    Path((ns, digest)): Path<(String, String)>,
) -> Result<Json<ModuleRecord>, ApiError> {
    check_digest(&digest)?;
    let found = record(&s, &ns, &digest).await?;
    let key = ObjectKey::new(MODULES, Some(&ns), &digest);
    match s.store.write(Command::Delete { key, expected: None }).await? {
        CommandResult::Ok { .. } => Ok(Json(found)),
        CommandResult::NotFound => {
            Err(ApiError::new(Reason::NotFound, format!("module sha256:{digest} not found in namespace {ns}")))
        }
        // Still used: the state machine checks, in the same step as the delete.
        CommandResult::Invalid { message } => {
            Err(ApiError::new(Reason::Conflict, format!("module sha256:{digest}: {message}")))
        }
        other => Err(ApiError::new(Reason::Internal, format!("unexpected result deleting a module: {other:?}"))),
    }
}
