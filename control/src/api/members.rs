//! `/api/v1/members` and `/api/v1/snapshot` (the admin's token only): the control plane's
//! membership, listed and changed through the leader, and a backup of the cluster streamed as
//! it is written.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use shoal_api::Reason;
use shoal_api::members::{MemberList, NewMember};

use super::auth::Principal;
use super::error::ApiError;
use crate::backup::{BackupMeta, BackupWriter};
use crate::blobs::Blobs;
use crate::store::members::{MemberError, MemberRefusal, MembersCall};
use crate::store::{JoinRequest, Store};

/// What the handlers here are served from.
#[derive(Clone)]
pub struct MembersState {
    /// The store.
    pub store: Arc<Store>,
    /// The module bytes a backup holds.
    pub blobs: Arc<Blobs>,
}

fn admin_only(principal: &Principal, what: &str) -> Result<(), ApiError> {
    match principal {
        Principal::Admin => Ok(()),
        other => Err(ApiError::new(Reason::Forbidden, format!("{other} may not {what}"))),
    }
}

impl From<MemberError> for ApiError {
    fn from(e: MemberError) -> Self {
        match e {
            MemberError::Refused(MemberRefusal::NoSuchMember(id)) => {
                ApiError::new(Reason::NotFound, format!("no control-plane member {id}"))
            }
            MemberError::Refused(MemberRefusal::Refused(message)) => ApiError::new(Reason::Conflict, message),
            MemberError::Store(e) => e.into(),
        }
    }
}

fn parse_new(body: &[u8]) -> Result<JoinRequest, ApiError> {
    let new: NewMember = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(Reason::BadRequest, format!("a new member is {{id, address}}: {e}")))?;
    let port_ok =
        new.address.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok {
        return Err(ApiError::new(Reason::Invalid, format!("address {:?} is not HOST:PORT", new.address)));
    }
    if new.id == 0 {
        return Err(ApiError::new(Reason::Invalid, "member id 0 is not allowed"));
    }
    Ok(JoinRequest { id: new.id, addr: new.address })
}

/// `GET /api/v1/members`.
pub async fn list(
    State(s): State<MembersState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<MemberList>, ApiError> {
    admin_only(&principal, "list control-plane members")?;
    Ok(Json(s.store.members_call(MembersCall::List).await?))
}

/// `POST /api/v1/members`: adds a member started with `--standby`, once it has caught up.
pub async fn add(
    State(s): State<MembersState>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Result<(StatusCode, Json<MemberList>), ApiError> {
    admin_only(&principal, "add control-plane members")?;
    let new = parse_new(&body)?;
    Ok((StatusCode::CREATED, Json(s.store.members_call(MembersCall::Add(new)).await?)))
}

/// `DELETE /api/v1/members/{id}`.
pub async fn remove(
    State(s): State<MembersState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<u64>,
) -> Result<Json<MemberList>, ApiError> {
    admin_only(&principal, "remove control-plane members")?;
    Ok(Json(s.store.members_call(MembersCall::Remove(id)).await?))
}

/// `POST /api/v1/members/{id}/replace`: puts a member started with `--standby` in place of
/// voter `id`, once it has caught up.
pub async fn replace(
    State(s): State<MembersState>,
    Extension(principal): Extension<Principal>,
    Path(old): Path<u64>,
    body: Bytes,
) -> Result<Json<MemberList>, ApiError> {
    admin_only(&principal, "replace control-plane members")?;
    let new = parse_new(&body)?;
    Ok(Json(s.store.members_call(MembersCall::Replace { old, new }).await?))
}

/// Sends what is written to it down a channel in pieces of about a MiB: the body of a backup
/// being written on a blocking thread. A client that goes away stops the writing.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    const PIECE: usize = 1 << 20;

    fn send(&mut self) -> std::io::Result<()> {
        let piece = Bytes::from(std::mem::take(&mut self.buffer));
        self.tx.blocking_send(Ok(piece)).map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= Self::PIECE {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() { Ok(()) } else { self.send() }
    }
}

/// `GET /api/v1/snapshot`: a backup of every object (Secrets sealed) and of the bytes of every
/// module, read at one revision after a linearizable read, so it holds every write
/// acknowledged before the request. Modules this member lacks are fetched from the others
/// first. A failure part way cuts the body short, which `shoal snapshot save` finds (the end
/// record and checksum are missing) and reports.
pub async fn snapshot(
    State(s): State<MembersState>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, ApiError> {
    admin_only(&principal, "take backups")?;
    s.store.linearize().await?;
    let (revision, objects) = s.store.reader().entries("")?;
    let mut modules: Vec<String> = objects
        .iter()
        .filter_map(|(key, _)| key.strip_prefix("modules/").and_then(|rest| rest.split_once('/')).map(|(_, hex)| hex))
        .filter(|hex| shoal_api::digest::is_sha256_hex(hex))
        .map(str::to_owned)
        .collect();
    modules.sort();
    modules.dedup();
    for hex in &modules {
        let here = s.blobs.fetch(hex).await.map_err(|e| ApiError::new(Reason::Internal, e.to_string()))?;
        if !here {
            return Err(ApiError::new(
                Reason::Unavailable,
                format!("no member holds the bytes of module sha256:{hex}"),
            ));
        }
    }
    let taken_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let meta = BackupMeta {
        revision,
        term: s.store.raft_figures().term,
        taken_unix,
        objects: objects.len() as u64,
        modules: modules.len() as u64,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let files = s.blobs.files().clone();
    tokio::task::spawn_blocking(move || {
        let out = ChannelWriter { tx: tx.clone(), buffer: Vec::with_capacity(ChannelWriter::PIECE) };
        let written = (|| {
            let mut writer = BackupWriter::new(out, &meta)?;
            for (key, value) in &objects {
                writer.object(key, value)?;
            }
            for hex in &modules {
                writer.module(hex, &files.path(hex))?;
            }
            writer.finish().map(drop)
        })();
        if let Err(e) = written {
            tracing::warn!("backup at revision {revision} cut short: {e}");
            let _ = tx.blocking_send(Err(e));
        }
    });
    let body = Body::from_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    let name = format!("attachment; filename=\"shoal-{revision}.backup\"");
    Ok(([(header::CONTENT_TYPE, "application/octet-stream"), (header::CONTENT_DISPOSITION, name.as_str())], body)
        .into_response())
}
