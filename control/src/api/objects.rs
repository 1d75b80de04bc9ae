//! Object endpoints: create, read, update (spec or status), delete and list, for every kind.
//! Handlers parse the request into a typed object (so a bad field is a 422 naming it), decide
//! what is not deterministic (uid, timestamps), and hand one [`Command`] to the store.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use shoal_api::agent::{InstanceReport, InstanceReports, MAX_INSTANCE_REPORTS, ReportAnswers, ReportOutcome};
use shoal_api::resources::namespace::{Namespace, NamespaceKind, NamespacePhase};
use shoal_api::selector::LabelSelector;
use shoal_api::{AnyObject, Kind, Reason};

use super::admission::Admission;
use super::auth::{Principal, TokenDigest, bound_node, may_touch_instance};
use super::error::ApiError;
use super::watch::{self, WatchHub};
use crate::sealing::{self, Sealer};
use crate::store::{Command, CommandResult, ObjectKey, Store, UpdateScope};

/// Query parameters of list and watch requests.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    /// Stream changes instead of listing.
    #[serde(default)]
    pub watch: bool,
    /// For a watch: stream changes after this revision (default: from now).
    pub resource_version: Option<u64>,
    /// Only objects whose labels match, e.g. `app=hello,tier!=db`.
    pub label_selector: Option<String>,
    /// For Secrets: show the values (only to a token for their namespace).
    #[serde(default)]
    pub show_secrets: bool,
    /// For a list: at most this many objects (at most [`MAX_LIMIT`]), with a `continue` that
    /// names the next page when more follow.
    pub limit: Option<usize>,
    /// For a list: the page after the one whose `continue` this is.
    #[serde(rename = "continue")]
    pub continue_: Option<String>,
}

/// The longest page of a list.
pub const MAX_LIMIT: usize = 10_000;

/// Where a paged list goes on: the revision of its first page and the last key read so far.
/// Pages after the first read the objects as they are then, in key order from that key, so
/// an object that exists throughout comes exactly once, and one made or deleted meanwhile at
/// most once; every page says the first page's revision, so that a watch from it sees every
/// change since (Shoal keeps a history of changes, not old versions of objects, so it cannot
/// serve the later pages as of the first one).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Continue {
    revision: u64,
    after: String,
}

impl Continue {
    fn encode(&self) -> String {
        format!("{}:{}", self.revision, self.after)
    }

    /// Reads a token of the list of `prefix`.
    fn decode(token: &str, prefix: &str) -> Result<Continue, ApiError> {
        let bad = || ApiError::new(Reason::BadRequest, format!("continue {token:?} is not a token of this list"));
        let (revision, after) = token.split_once(':').ok_or_else(bad)?;
        let revision = revision.parse().map_err(|_| bad())?;
        if !after.starts_with(prefix) {
            return Err(bad());
        }
        Ok(Continue { revision, after: after.to_owned() })
    }
}

/// Query parameters of reads of one object.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetQuery {
    /// For a Secret: show its values (only to a token for its namespace).
    #[serde(default)]
    pub show_secrets: bool,
}

/// Query parameters of writes of an object's spec.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WriteQuery {
    /// `All`: check and admit the write and answer with what would be stored, writing nothing
    /// (Kubernetes' server-side dry run).
    #[serde(default)]
    pub dry_run: Option<String>,
}

impl WriteQuery {
    fn dry_run(&self) -> Result<bool, ApiError> {
        match self.dry_run.as_deref() {
            None => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::new(Reason::BadRequest, format!("dryRun={other:?}: the one value is All"))),
        }
    }
}

/// Query parameters of deletes.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteQuery {
    /// Delete only if this is still the object's resourceVersion.
    pub resource_version: Option<u64>,
}

/// Which objects a request is about, from its path.
struct Target {
    kind: Kind,
    namespace: Option<String>,
}

impl Target {
    fn new(plural: &str, namespace: Option<String>) -> Result<Self, ApiError> {
        let kind = Kind::ALL
            .into_iter()
            .find(|k| k.plural() == plural)
            .ok_or_else(|| ApiError::new(Reason::NotFound, format!("unknown resource type {plural:?}")))?;
        if namespace.is_some() && !kind.namespaced() {
            return Err(ApiError::new(Reason::NotFound, format!("{plural} are not namespaced: use /api/v1/{plural}")));
        }
        Ok(Target { kind, namespace })
    }

    /// For paths that name one object: namespaced kinds need a namespace.
    fn for_object(plural: &str, namespace: Option<String>) -> Result<Self, ApiError> {
        let target = Target::new(plural, namespace)?;
        if target.kind.namespaced() && target.namespace.is_none() {
            return Err(ApiError::new(
                Reason::NotFound,
                format!("{plural} are namespaced: use /api/v1/namespaces/{{namespace}}/{plural}/{{name}}"),
            ));
        }
        Ok(target)
    }

    fn key(&self, name: &str) -> ObjectKey {
        ObjectKey::new(self.kind.plural(), self.namespace.as_deref(), name)
    }

    fn display(&self, name: &str) -> String {
        match &self.namespace {
            Some(ns) => format!("{} \"{ns}/{name}\"", self.kind.plural()),
            None => format!("{} \"{name}\"", self.kind.plural()),
        }
    }
}

fn json_response(status: StatusCode, bytes: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// Parses and checks a request body as an object of the target's kind, in the target's
/// namespace.
fn parse_body(target: &Target, body: &[u8], name: Option<&str>) -> Result<AnyObject, ApiError> {
    let mut object = AnyObject::from_json_slice(target.kind, body).map_err(|e| match e {
        Some(field) => ApiError::invalid(field),
        None => {
            let why = serde_json::from_slice::<serde::de::IgnoredAny>(body).err().map(|e| e.to_string());
            ApiError::new(Reason::BadRequest, format!("request body is not JSON: {}", why.unwrap_or_default()))
        }
    })?;
    let meta = object.meta_mut();
    if let Some(name) = name
        && meta.name.as_str() != name
    {
        return Err(ApiError::new(
            Reason::BadRequest,
            format!("metadata.name {:?} does not match the name in the path {name:?}", meta.name.as_str()),
        ));
    }
    if target.kind.namespaced() {
        match (&meta.namespace, target.namespace.as_deref()) {
            (Some(ns), Some(path_ns)) if ns.as_str() != path_ns => {
                return Err(ApiError::new(
                    Reason::BadRequest,
                    format!(
                        "metadata.namespace {:?} does not match the namespace in the path {path_ns:?}",
                        ns.as_str()
                    ),
                ));
            }
            (Some(_), _) => {}
            (None, path_ns) => {
                let ns = shoal_api::Name::new(path_ns.unwrap_or("default"));
                meta.namespace = Some(ns.map_err(|e| ApiError::new(Reason::BadRequest, e.to_string()))?);
            }
        }
    }
    object.validate().map_err(ApiError::invalid)?;
    Ok(object)
}

/// Fills in what the control plane decides for a new object.
fn stamp_new(object: &mut AnyObject) {
    crate::stamp::stamp_new(object.meta_mut());
}

async fn require_namespace(store: &Store, target: &Target) -> Result<(), ApiError> {
    match target.namespace.as_deref().filter(|_| target.kind.namespaced()) {
        Some(ns) => require_open_namespace(store, ns).map(|_| ()),
        None => Ok(()),
    }
}

/// Refuses new content for namespace `ns` unless it exists (`default` always does) and is not
/// being deleted; returns its Namespace object, if it has one.
pub(super) fn require_open_namespace(store: &Store, ns: &str) -> Result<Option<Namespace>, ApiError> {
    let Some(namespace) = super::admission::namespace(store, ns)? else {
        if ns == "default" {
            return Ok(None);
        }
        return Err(ApiError::new(Reason::NotFound, format!("namespace {ns:?} not found: create it first")));
    };
    if NamespaceKind::is_terminating(&namespace) {
        return Err(ApiError::new(
            Reason::Forbidden,
            format!("namespace {ns:?} is being deleted (Terminating): nothing new may be made in it"),
        ));
    }
    Ok(Some(namespace))
}

/// A Namespace is not deleted at once: it is marked Terminating, and the namespace controller
/// deletes what it holds, then it. `default` may not be deleted.
async fn terminate_namespace(store: &Store, name: &str, expected: Option<u64>) -> Result<Response, ApiError> {
    let target = Target { kind: Kind::Namespace, namespace: None };
    if name == "default" {
        return Err(ApiError::new(Reason::Forbidden, "namespace \"default\" may not be deleted"));
    }
    store.linearize().await?;
    // The namespace controller may write the status meanwhile: read again and retry then.
    for _ in 0..5 {
        let Some(bytes) = store.reader().get(&target.key(name))? else {
            return Err(ApiError::new(Reason::NotFound, format!("{} not found", target.display(name))));
        };
        let mut namespace: Namespace = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::new(Reason::Internal, format!("stored namespace {name} is damaged: {e}")))?;
        let current = namespace.metadata.resource_version;
        if let Some(expected) = expected.filter(|e| Some(*e) != current) {
            return Err(ApiError::new(
                Reason::Conflict,
                format!("{} is at resourceVersion {current:?}, not {expected}", target.display(name)),
            ));
        }
        if NamespaceKind::is_terminating(&namespace) {
            return Ok(json_response(StatusCode::OK, bytes));
        }
        namespace.status.get_or_insert_default().phase = Some(NamespacePhase::Terminating);
        let object = to_bytes(&AnyObject::Namespace(namespace));
        let command = Command::Update { key: target.key(name), object, expected: current, scope: UpdateScope::Status };
        match store.write(command).await? {
            CommandResult::Conflict { .. } if expected.is_none() => continue,
            result => return write_result(result, &target, name, StatusCode::OK),
        }
    }
    Err(ApiError::new(Reason::Conflict, format!("{} keeps changing; try again", target.display(name))))
}

fn to_bytes(object: &AnyObject) -> Vec<u8> {
    serde_json::to_vec(object).expect("objects serialize")
}

fn write_result(result: CommandResult, target: &Target, name: &str, success: StatusCode) -> Result<Response, ApiError> {
    let what = target.display(name);
    match result {
        // What a write answers with is what it stored: a Secret's values sealed, never shown.
        CommandResult::Ok { object: Some(bytes) } if target.kind == Kind::Secret => {
            Ok(json_response(success, sealing::redact_stored(&bytes)))
        }
        CommandResult::Ok { object: Some(bytes) } => Ok(json_response(success, bytes)),
        CommandResult::Ok { object: None } => Ok(success.into_response()),
        CommandResult::AlreadyExists => Err(ApiError::new(Reason::Conflict, format!("{what} already exists"))),
        CommandResult::NotFound => Err(ApiError::new(Reason::NotFound, format!("{what} not found"))),
        CommandResult::Conflict { current } => Err(ApiError::new(
            Reason::Conflict,
            format!("{what} has been modified: its resourceVersion is now {current}; read it again and retry"),
        )),
        CommandResult::Invalid { message } => Err(ApiError::new(Reason::Invalid, message)),
        CommandResult::Batch(_) => Err(ApiError::new(Reason::Internal, "one write was answered as a batch")),
        CommandResult::NotBound => Err(ApiError::new(Reason::Forbidden, format!("{what} is bound elsewhere"))),
        CommandResult::QuotaExceeded { used, limit } => {
            Err(ApiError::new(Reason::Forbidden, format!("{what}: quota exceeded: {used}/{limit}")))
        }
    }
}

/// What a write needs beyond the store: the checks of admission, and the key Secrets are
/// sealed with.
#[derive(Clone, Copy)]
struct Writer<'a> {
    store: &'a Store,
    admission: &'a Admission,
    sealer: &'a Sealer,
    /// Check and admit only: answer with what would be written.
    dry_run: bool,
}

/// Seals a Secret's values before they travel to the store (see [`crate::sealing`]), keeping
/// the sealed form of each value the stored Secret at `key` already holds.
fn seal(store: &Store, sealer: &Sealer, object: &mut AnyObject, key: Option<&ObjectKey>) -> Result<(), ApiError> {
    let AnyObject::Secret(secret) = object else { return Ok(()) };
    let old = match key {
        Some(key) => store.reader().get(key)?.and_then(|bytes| serde_json::from_slice(&bytes).ok()),
        None => None,
    };
    sealer.seal_secret(secret, old.as_ref());
    Ok(())
}

async fn create(writer: Writer<'_>, principal: &Principal, target: Target, body: &[u8]) -> Result<Response, ApiError> {
    let Writer { store, admission, sealer, dry_run } = writer;
    let mut object = parse_body(&target, body, None)?;
    if !matches!(principal, Principal::Admin) {
        object.clear_status();
    }
    let target = Target { namespace: object.namespace().map(str::to_owned), ..target };
    require_namespace(store, &target).await?;
    admission.admit(store, principal, &mut object, dry_run).await?;
    seal(store, sealer, &mut object, None)?;
    stamp_new(&mut object);
    object.meta_mut().resource_version = None;
    let name = object.meta().name.to_string();
    if dry_run {
        let result = match store.reader().get(&target.key(&name))? {
            Some(_) => CommandResult::AlreadyExists,
            None => CommandResult::Ok { object: Some(to_bytes(&object)) },
        };
        return write_result(result, &target, &name, StatusCode::CREATED);
    }
    let result = store.write(Command::Create { key: target.key(&name), object: to_bytes(&object) }).await?;
    write_result(result, &target, &name, StatusCode::CREATED)
}

async fn update(
    writer: Writer<'_>,
    principal: &Principal,
    target: Target,
    name: &str,
    body: &[u8],
    scope: UpdateScope,
) -> Result<Response, ApiError> {
    let Writer { store, admission, sealer, dry_run } = writer;
    if scope == UpdateScope::Status && matches!(target.kind, Kind::Secret | Kind::Config) {
        // Nothing observes them; and a status write would carry a Secret's values, unsealed,
        // into the raft log.
        return Err(ApiError::new(Reason::NotFound, format!("{} have no status", target.kind.plural())));
    }
    let mut object = parse_body(&target, body, Some(name))?;
    let expected = object.meta().resource_version;
    if scope == UpdateScope::Spec {
        // Only a spec update may create the object (a status update of a missing one is a 404),
        // so only it needs the namespace to exist and a uid of its own.
        require_namespace(store, &target).await?;
        if !matches!(principal, Principal::Admin) {
            // A spec write that makes the object keeps what the body says of its status:
            // only the admin may say anything.
            object.clear_status();
        }
        admission.admit(store, principal, &mut object, dry_run).await?;
        seal(store, sealer, &mut object, Some(&target.key(name)))?;
        stamp_new(&mut object);
        if dry_run {
            return write_result(would_update(store, &target, name, object, expected)?, &target, name, StatusCode::OK);
        }
        let command = Command::Update { key: target.key(name), object: to_bytes(&object), expected, scope };
        return write_result(store.write(command).await?, &target, name, StatusCode::OK);
    }
    let mut commands = admission.admit_status(store, principal, &object)?;
    let update = Command::Update { key: target.key(name), object: to_bytes(&object), expected, scope };
    if commands.is_empty() {
        return write_result(store.write(update).await?, &target, name, StatusCode::OK);
    }
    // With what the status changes of the node's registration, in one entry; the update's
    // result is the answer.
    commands.push(update);
    let result = match store.write(Command::Batch(commands)).await? {
        CommandResult::Batch(mut results) => results.pop().unwrap_or(CommandResult::NotFound),
        other => other,
    };
    write_result(result, &target, name, StatusCode::OK)
}

/// What an update of the object at `name` to `object` would store, as a dry run answers: the
/// stored object's identity and status kept, or the conflict it would meet.
fn would_update(
    store: &Store,
    target: &Target,
    name: &str,
    mut object: AnyObject,
    expected: Option<u64>,
) -> Result<CommandResult, ApiError> {
    let Some(bytes) = store.reader().get(&target.key(name))? else {
        return Ok(match expected {
            Some(_) => CommandResult::NotFound,
            None => CommandResult::Ok { object: Some(to_bytes(&object)) },
        });
    };
    let stored: AnyObject = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| AnyObject::from_json(target.kind, &v).ok())
        .ok_or_else(|| ApiError::new(Reason::Internal, format!("stored {} is damaged", target.display(name))))?;
    let current = stored.meta().resource_version.unwrap_or(0);
    if expected.is_some_and(|e| e != current) {
        return Ok(CommandResult::Conflict { current });
    }
    let (meta, old) = (object.meta_mut(), stored.meta());
    meta.uid.clone_from(&old.uid);
    meta.creation_timestamp.clone_from(&old.creation_timestamp);
    meta.owner_references.clone_from(&old.owner_references);
    meta.resource_version = Some(current);
    let spec_changed = object.to_json().get("spec") != stored.to_json().get("spec");
    object.meta_mut().generation = Some(stored.meta().generation.unwrap_or(1) + u64::from(spec_changed));
    // A spec write keeps the status the store holds.
    let mut value = object.to_json();
    match stored.to_json().get("status") {
        Some(status) => value["status"] = status.clone(),
        None => drop(value.as_object_mut().map(|o| o.remove("status"))),
    }
    Ok(CommandResult::Ok { object: Some(serde_json::to_vec(&value).expect("objects serialize")) })
}

/// How a stored Secret is shown: redacted, or (asked for, by a token for its namespace) opened.
fn present_secret(bytes: Vec<u8>, shown: Option<&Sealer>) -> Result<Vec<u8>, ApiError> {
    let Some(sealer) = shown else { return Ok(sealing::redact_stored(&bytes)) };
    let mut secret: shoal_api::resources::secret::Secret = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(Reason::Internal, format!("a stored secret is damaged: {e}")))?;
    sealer.open_secret(&mut secret)?;
    Ok(serde_json::to_vec(&secret).expect("secrets serialize"))
}

/// The sealer to open Secrets with, when `principal` asked to see the values of Secrets in `ns`
/// and may: a token for that namespace (a tenant's, or the admin's), never a node's.
fn shows_secrets<'a>(
    sealer: &'a Sealer,
    asked: bool,
    principal: &Principal,
    ns: Option<&str>,
) -> Result<Option<&'a Sealer>, ApiError> {
    if !asked {
        return Ok(None);
    }
    match ns {
        Some(ns) if principal.may_use(ns) => Ok(Some(sealer)),
        _ => Err(ApiError::new(
            Reason::Forbidden,
            format!("{principal} may not see secret values here: ask for one namespace, with a token for it"),
        )),
    }
}

async fn get(
    store: &Store,
    target: Target,
    name: &str,
    principal: &Principal,
    shown: Option<&Sealer>,
) -> Result<Response, ApiError> {
    store.linearize().await?;
    match store.reader().get(&target.key(name))? {
        Some(bytes) if target.kind == Kind::Secret => Ok(json_response(StatusCode::OK, present_secret(bytes, shown)?)),
        Some(bytes) if target.kind != Kind::Instance || may_touch_instance(principal, &bytes) => {
            Ok(json_response(StatusCode::OK, bytes))
        }
        Some(_) => Err(not_bound(principal, &target, name)),
        None => Err(ApiError::new(Reason::NotFound, format!("{} not found", target.display(name)))),
    }
}

fn not_bound(principal: &Principal, target: &Target, name: &str) -> ApiError {
    ApiError::new(
        Reason::Forbidden,
        format!("{principal} may not touch {}: it is bound elsewhere", target.display(name)),
    )
}

/// A node's status report on an instance: only its status travels to the store, which takes
/// it only if the instance is bound to that node (checked when the write is applied, so an
/// instance moved meanwhile is not written).
async fn report(
    store: &Store,
    principal: &Principal,
    target: Target,
    name: &str,
    body: &[u8],
    node: &str,
) -> Result<Response, ApiError> {
    let AnyObject::Instance(instance) = parse_body(&target, body, Some(name))? else {
        return Err(ApiError::new(Reason::Internal, "an instance body parsed as another kind"));
    };
    let status = serde_json::to_vec(&instance.status).expect("statuses serialize");
    let expected = instance.metadata.resource_version;
    let command = Command::Report { key: target.key(name), node: node.to_owned(), status, expected };
    match store.write(command).await? {
        CommandResult::NotBound => Err(not_bound(principal, &target, name)),
        result => write_result(result, &target, name, StatusCode::OK),
    }
}

/// `POST /api/v1/nodes/{name}/reports`: a node's reports on instances bound to it, each taken
/// only if the instance is bound to that node (as [`report`] does one), proposed together (so
/// they share raft entries), and each answered on its own.
pub async fn node_reports(
    State(store): S,
    Extension(principal): Extension<Principal>,
    Path(node): Path<String>,
    body: Bytes,
) -> Result<axum::Json<ReportAnswers>, ApiError> {
    if principal.node() != Some(node.as_str()) {
        return Err(ApiError::new(Reason::Forbidden, format!("{principal} may not report for node {node:?}")));
    }
    let InstanceReports { reports } = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(Reason::BadRequest, format!("reports of node {node:?}: {e}")))?;
    if reports.len() > MAX_INSTANCE_REPORTS {
        let why = format!("reports: {} in one request, at most {MAX_INSTANCE_REPORTS}", reports.len());
        return Err(ApiError::new(Reason::Invalid, why));
    }
    let target = |report: &InstanceReport| Target::for_object(Kind::Instance.plural(), Some(report.namespace.clone()));
    let one = async |report: InstanceReport| -> ReportOutcome {
        let named = shoal_api::Name::new(&report.namespace).and_then(|_| shoal_api::Name::new(&report.name));
        let target =
            match named.map_err(|e| ApiError::new(Reason::Invalid, e.to_string())).and_then(|_| target(&report)) {
                Ok(target) => target,
                Err(e) => return ReportOutcome::Refused(e.0),
            };
        let status = serde_json::to_vec(&report.status).expect("statuses serialize");
        let command = Command::Report { key: target.key(&report.name), node: node.clone(), status, expected: None };
        match store.write(command).await {
            Ok(CommandResult::Ok { .. }) => ReportOutcome::Written,
            Ok(CommandResult::NotFound) => ReportOutcome::Gone,
            Ok(CommandResult::NotBound) => ReportOutcome::Refused(not_bound(&principal, &target, &report.name).0),
            Ok(other) => match write_result(other, &target, &report.name, StatusCode::OK) {
                Err(e) => ReportOutcome::Refused(e.0),
                Ok(_) => ReportOutcome::Written,
            },
            Err(e) => ReportOutcome::Refused(ApiError::from(e).0),
        }
    };
    let outcomes = futures::future::join_all(reports.into_iter().map(one)).await;
    Ok(axum::Json(ReportAnswers { outcomes }))
}

async fn delete(store: &Store, target: Target, name: &str, query: DeleteQuery) -> Result<Response, ApiError> {
    if target.kind == Kind::Namespace {
        return terminate_namespace(store, name, query.resource_version).await;
    }
    let command = Command::Delete { key: target.key(name), expected: query.resource_version };
    let result = store.write(command).await?;
    if target.kind == Kind::Node && matches!(result, CommandResult::Ok { .. }) {
        // The host it joined with goes too: a node of that name may join anew, from anywhere.
        store.write(Command::Batch(super::registration::delete(name))).await?;
    }
    write_result(result, &target, name, StatusCode::OK)
}

/// Which objects of a list or watch the caller gets: those matching the label selector and, for
/// a tenant listing namespaces, only its own.
pub(super) struct Filter {
    selector: LabelSelector,
    names: Option<Arc<BTreeSet<String>>>,
    /// For a node listing instances: only those bound to it.
    node: Option<Arc<str>>,
}

impl Filter {
    fn new(query: &ListQuery, kind: Kind, principal: &Principal) -> Result<Self, ApiError> {
        let selector = query
            .label_selector
            .as_deref()
            .unwrap_or("")
            .parse()
            .map_err(|e: shoal_api::selector::SelectorError| ApiError::new(Reason::BadRequest, e.to_string()))?;
        let names = match principal {
            Principal::Tenant { namespaces, .. } if kind == Kind::Namespace => Some(namespaces.clone()),
            _ => None,
        };
        let node = match principal {
            Principal::Node { name } if kind == Kind::Instance => Some(name.clone()),
            _ => None,
        };
        Ok(Filter { selector, names, node })
    }

    /// Whether the object (JSON) passes.
    pub(super) fn matches(&self, object: &[u8]) -> bool {
        if let Some(node) = &self.node
            && bound_node(object).as_deref() != Some(&**node)
        {
            return false;
        }
        self.matches_rest(object)
    }

    /// The node whose instances alone pass, for a node's own lists and watches.
    pub(super) fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// Like [`Filter::matches`], for an object whose node (if an instance) is known already.
    pub(super) fn matches_bound(&self, bound: Option<&str>, object: &[u8]) -> bool {
        if let Some(node) = &self.node
            && bound != Some(&**node)
        {
            return false;
        }
        self.matches_rest(object)
    }

    /// The label selector and the names a tenant may see.
    fn matches_rest(&self, object: &[u8]) -> bool {
        if self.selector.0.is_empty() && self.names.is_none() {
            return true;
        }
        #[derive(Deserialize)]
        struct Meta {
            metadata: NameAndLabels,
        }
        #[derive(Deserialize)]
        struct NameAndLabels {
            name: String,
            #[serde(default)]
            labels: std::collections::BTreeMap<String, String>,
        }
        serde_json::from_slice::<Meta>(object).is_ok_and(|o| {
            self.selector.matches(&o.metadata.labels)
                && self.names.as_ref().is_none_or(|n| n.contains(&o.metadata.name))
        })
    }
}

async fn list(
    (store, sealer): (Arc<Store>, &Sealer),
    hub: &WatchHub,
    target: Target,
    query: ListQuery,
    (principal, token): (&Principal, TokenDigest),
) -> Result<Response, ApiError> {
    let filter = Filter::new(&query, target.kind, principal)?;
    let shown = shows_secrets(sealer, query.show_secrets, principal, target.namespace.as_deref())?;
    if query.watch && shown.is_some() {
        return Err(ApiError::new(Reason::BadRequest, "watches never show secret values: get or list them"));
    }
    let prefix = ObjectKey::prefix(target.kind.plural(), target.namespace.as_deref());
    if query.watch {
        if query.limit.is_some() || query.continue_.is_some() {
            return Err(ApiError::new(Reason::BadRequest, "limit and continue are for lists, not watches"));
        }
        return watch::stream(store, hub, (principal, token), prefix, filter, query.resource_version).await;
    }
    let limit = match query.limit {
        Some(0) | None => usize::MAX,
        Some(n) if n > MAX_LIMIT => {
            return Err(ApiError::new(Reason::BadRequest, format!("limit {n} is more than the most, {MAX_LIMIT}")));
        }
        Some(n) => n,
    };
    let from = query.continue_.as_deref().map(|t| Continue::decode(t, &prefix)).transpose()?;
    store.linearize().await?;
    if let Some(rev) = query.resource_version {
        watch::refuse_future(&store, rev).await?;
    }
    let reader = store.reader();
    let (revision, items, more) = reader.entries_page(&prefix, from.as_ref().map(|c| c.after.as_str()), limit)?;
    let revision = match &from {
        Some(from) if from.revision > revision => {
            return Err(ApiError::new(
                Reason::BadRequest,
                format!("continue names revision {}, not yet here", from.revision),
            ));
        }
        Some(from) if from.revision < reader.compacted()? => {
            return Err(ApiError::new(
                Reason::Gone,
                format!("the list began at revision {}, which is compacted: list again from the start", from.revision),
            ));
        }
        Some(from) => from.revision,
        None => revision,
    };
    let next = match items.last() {
        Some((key, _)) if more => Some(Continue { revision, after: key.clone() }.encode()),
        _ => None,
    };
    let next = next.map_or_else(String::new, |n| format!(",\"continue\":{}", serde_json::Value::String(n)));
    let mut body = format!("{{\"resourceVersion\":{revision}{next},\"items\":[").into_bytes();
    let mut first = true;
    for (_, item) in items.into_iter().filter(|(_, i)| filter.matches(i)) {
        if !first {
            body.push(b',');
        }
        first = false;
        if target.kind == Kind::Secret {
            body.extend_from_slice(&present_secret(item, shown)?);
        } else {
            body.extend_from_slice(&item);
        }
    }
    body.extend_from_slice(b"]}");
    Ok(json_response(StatusCode::OK, body))
}

type S = State<Arc<Store>>;

/// `GET /api/v1/{plural}`: list (or watch) a kind across all namespaces.
pub async fn list_all(
    State(store): S,
    Extension(principal): Extension<Principal>,
    Extension(token): Extension<TokenDigest>,
    Extension(hub): Extension<Arc<WatchHub>>,
    Extension(sealer): Extension<Arc<Sealer>>,
    Path(plural): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    list((store, &sealer), &hub, Target::new(&plural, None)?, q, (&principal, token)).await
}

/// `POST /api/v1/{plural}`: create a cluster-scoped object (or a namespaced one, in the
/// namespace its metadata names).
pub async fn create_any(
    State(store): S,
    Extension(admission): Extension<Arc<Admission>>,
    Extension(sealer): Extension<Arc<Sealer>>,
    Extension(principal): Extension<Principal>,
    Path(plural): Path<String>,
    Query(write): Query<WriteQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    create(
        Writer { store: &store, admission: &admission, sealer: &sealer, dry_run: write.dry_run()? },
        &principal,
        Target::new(&plural, None)?,
        &body,
    )
    .await
}

/// `GET /api/v1/namespaces/{ns}/{plural}`.
pub async fn list_namespaced(
    State(store): S,
    Extension(principal): Extension<Principal>,
    Extension(token): Extension<TokenDigest>,
    Extension(hub): Extension<Arc<WatchHub>>,
    Extension(sealer): Extension<Arc<Sealer>>,
    Path((ns, plural)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    list((store, &sealer), &hub, Target::new(&plural, Some(ns))?, q, (&principal, token)).await
}

/// `POST /api/v1/namespaces/{ns}/{plural}`.
pub async fn create_namespaced(
    State(store): S,
    Extension(admission): Extension<Arc<Admission>>,
    Extension(sealer): Extension<Arc<Sealer>>,
    Extension(principal): Extension<Principal>,
    Path((ns, plural)): Path<(String, String)>,
    Query(write): Query<WriteQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    create(
        Writer { store: &store, admission: &admission, sealer: &sealer, dry_run: write.dry_run()? },
        &principal,
        Target::new(&plural, Some(ns))?,
        &body,
    )
    .await
}

/// `PUT /api/v1/namespaces/{name}/status`: a namespace's status. (The path has the shape of a
/// namespaced collection; this is the one `PUT` on that shape.)
pub async fn put_namespace_status(
    State(store): S,
    Extension(admission): Extension<Arc<Admission>>,
    Extension(sealer): Extension<Arc<Sealer>>,
    Extension(principal): Extension<Principal>,
    Path((ns, sub)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if sub != "status" {
        return Err(ApiError::new(Reason::NotFound, format!("cannot PUT a collection: /api/v1/namespaces/{ns}/{sub}")));
    }
    update(
        Writer { store: &store, admission: &admission, sealer: &sealer, dry_run: false },
        &principal,
        Target::new("namespaces", None)?,
        &ns,
        &body,
        UpdateScope::Status,
    )
    .await
}

/// `GET /api/v1/{plural}/{name}`.
pub async fn get_cluster(
    State(store): S,
    Extension(principal): Extension<Principal>,
    Extension(sealer): Extension<Arc<Sealer>>,
    Path((plural, name)): Path<(String, String)>,
    Query(q): Query<GetQuery>,
) -> Result<Response, ApiError> {
    let shown = shows_secrets(&sealer, q.show_secrets, &principal, None)?;
    get(&store, Target::for_object(&plural, None)?, &name, &principal, shown).await
}

/// `PUT /api/v1/{plural}/{name}`.
pub async fn put_cluster(
    State(store): S,
    Extension(admission): Extension<Arc<Admission>>,
    Extension(sealer): Extension<Arc<Sealer>>,
    Extension(principal): Extension<Principal>,
    Path((plural, name)): Path<(String, String)>,
    Query(write): Query<WriteQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    update(
        Writer { store: &store, admission: &admission, sealer: &sealer, dry_run: write.dry_run()? },
        &principal,
        Target::for_object(&plural, None)?,
        &name,
        &body,
        UpdateScope::Spec,
    )
    .await
}

/// `PUT /api/v1/{plural}/{name}/status`.
pub async fn put_cluster_status(
    State(store): S,
    Extension(admission): Extension<Arc<Admission>>,
    Extension(sealer): Extension<Arc<Sealer>>,
    Extension(principal): Extension<Principal>,
    Path((plural, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    update(
        Writer { store: &store, admission: &admission, sealer: &sealer, dry_run: false },
        &principal,
        Target::for_object(&plural, None)?,
        &name,
        &body,
        UpdateScope::Status,
    )
    .await
}

/// `DELETE /api/v1/{plural}/{name}`.
pub async fn delete_cluster(
    State(store): S,
    Path((plural, name)): Path<(String, String)>,
    Query(q): Query<DeleteQuery>,
) -> Result<Response, ApiError> {
    delete(&store, Target::for_object(&plural, None)?, &name, q).await
}

/// `GET /api/v1/namespaces/{ns}/{plural}/{name}`.
pub async fn get_namespaced(
    State(store): S,
    Extension(principal): Extension<Principal>,
    Extension(sealer): Extension<Arc<Sealer>>,
    Path((ns, plural, name)): Path<(String, String, String)>,
    Query(q): Query<GetQuery>,
) -> Result<Response, ApiError> {
    let shown = shows_secrets(&sealer, q.show_secrets, &principal, Some(&ns))?;
    get(&store, Target::for_object(&plural, Some(ns))?, &name, &principal, shown).await
}

/// `PUT /api/v1/namespaces/{ns}/{plural}/{name}`.
pub async fn put_namespaced(
    State(store): S,
    Extension(admission): Extension<Arc<Admission>>,
    Extension(sealer): Extension<Arc<Sealer>>,
    Extension(principal): Extension<Principal>,
    Path((ns, plural, name)): Path<(String, String, String)>,
    Query(write): Query<WriteQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    update(
        Writer { store: &store, admission: &admission, sealer: &sealer, dry_run: write.dry_run()? },
        &principal,
        Target::for_object(&plural, Some(ns))?,
        &name,
        &body,
        UpdateScope::Spec,
    )
    .await
}

/// `PUT /api/v1/namespaces/{ns}/{plural}/{name}/status`.
pub async fn put_namespaced_status(
    State(store): S,
    Extension(admission): Extension<Arc<Admission>>,
    Extension(sealer): Extension<Arc<Sealer>>,
    Extension(principal): Extension<Principal>,
    Path((ns, plural, name)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let target = Target::for_object(&plural, Some(ns))?;
    match principal.node() {
        Some(node) if target.kind == Kind::Instance => report(&store, &principal, target, &name, &body, node).await,
        _ => {
            update(
                Writer { store: &store, admission: &admission, sealer: &sealer, dry_run: false },
                &principal,
                target,
                &name,
                &body,
                UpdateScope::Status,
            )
            .await
        }
    }
}

/// `DELETE /api/v1/namespaces/{ns}/{plural}/{name}`.
pub async fn delete_namespaced(
    State(store): S,
    Path((ns, plural, name)): Path<(String, String, String)>,
    Query(q): Query<DeleteQuery>,
) -> Result<Response, ApiError> {
    delete(&store, Target::for_object(&plural, Some(ns))?, &name, q).await
}

/// A body for streaming responses.
pub(super) fn ndjson(body: Body) -> Response {
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_continue_token_is_read_back_only_for_its_own_list() {
        let token = Continue { revision: 42, after: "configs/alpha/x".into() }.encode();
        assert_eq!(Continue::decode(&token, "configs/alpha/").unwrap().revision, 42);
        assert!(Continue::decode(&token, "configs/beta/").is_err(), "another namespace's list");
        assert!(Continue::decode("nonsense", "configs/alpha/").is_err());
        assert!(Continue::decode("x:configs/alpha/a", "configs/alpha/").is_err());
    }
}
