//! Workload: the desired state of a set of replicas of one wasm module (like a Deployment).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::meta::{FieldError, Kind, Object, Resource};
use crate::name::Name;
use crate::quantity::{Cpu, Memory};
use crate::resources::Condition;

/// Marker for the Workload kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkloadKind;

/// A Workload object.
pub type Workload = Object<WorkloadKind>;

/// The most replicas one Workload may ask for (quotas bound a namespace's total further).
pub const MAX_REPLICAS: u32 = 10_000;

impl Resource for WorkloadKind {
    const KIND: Kind = Kind::Workload;
    type Spec = WorkloadSpec;
    type Status = WorkloadStatus;

    fn validate(object: &Workload) -> Result<(), FieldError> {
        let spec = &object.spec;
        if let Some(c) = spec.concurrency.filter(|c| *c == 0 || *c > MAX_CONCURRENCY) {
            return Err(FieldError::new("spec.concurrency", format!("{c}: from 1 to {MAX_CONCURRENCY}")));
        }
        if spec.replicas > MAX_REPLICAS {
            return Err(FieldError::new(
                "spec.replicas",
                format!("{} is more than the most, {MAX_REPLICAS}", spec.replicas),
            ));
        }
        for (field, value) in [("maxSurge", spec.rollout.max_surge), ("maxUnavailable", spec.rollout.max_unavailable)] {
            if value > MAX_REPLICAS {
                return Err(FieldError::new(
                    format!("spec.rollout.{field}"),
                    format!("{value} is more than the most, {MAX_REPLICAS}"),
                ));
            }
        }
        crate::module::check_module("spec.module", &spec.module, spec.module_pull_secret.as_ref())?;
        if spec.rollout.max_surge == 0 && spec.rollout.max_unavailable == 0 {
            return Err(FieldError::new(
                "spec.rollout",
                "maxSurge and maxUnavailable must not both be 0, or a rollout could never progress",
            ));
        }
        if spec.resources.memory.is_some_and(|m| m.0 < 64 * 1024) {
            return Err(FieldError::new("spec.resources.memory", "must be at least 64Ki (one wasm page)"));
        }
        validate_probes(spec.type_, &spec.probes)?;
        if let Some(at) = &spec.restarted_at
            && humantime::parse_rfc3339(at).is_err()
        {
            return Err(FieldError::new("spec.restartedAt", format!("{at:?} is not an RFC 3339 time")));
        }
        if let Some(autoscale) = &spec.autoscale {
            validate_autoscale(spec, autoscale)?;
        }
        if spec.singleton {
            validate_singleton(spec)?;
        }
        validate_values("spec.env", &spec.env)?;
        validate_values("spec.wasiConfig", &spec.wasi_config)?;
        validate_files(&spec.files)
    }
}

/// A singleton runs at most one instance, and never two at once.
fn validate_singleton(spec: &WorkloadSpec) -> Result<(), FieldError> {
    if spec.replicas > 1 {
        return Err(FieldError::new("spec.replicas", format!("{}: a singleton has at most 1", spec.replicas)));
    }
    if spec.autoscale.is_some() {
        return Err(FieldError::new("spec.autoscale", "a singleton is not autoscaled"));
    }
    if spec.rollout.max_surge != 0 {
        return Err(FieldError::new(
            "spec.rollout.maxSurge",
            "a singleton's new instance starts only after the old one stopped: \
             set rollout: {maxSurge: 0, maxUnavailable: 1}",
        ));
    }
    Ok(())
}

/// How the workload is driven.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadType {
    /// A `wasi:http/proxy` component; a fresh instance serves each request.
    #[default]
    Http,
    /// A `wasi:cli/run` component or preview-1 command module.
    Command,
}

/// When an instance that exited is started again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Whenever it exits.
    #[default]
    Always,
    /// Only when it exits with a failure.
    OnFailure,
    /// Never.
    Never,
}

/// What one instance may use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    /// Hard limit on linear memory and tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// Share of a core, in millicores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
}

/// One named value given to the guest (an environment variable, or a `wasi:config` entry),
/// written in the spec or taken from a Secret or Config; nothing comes from the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Variable value.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// Where the value comes from instead: a key of a Secret or Config in the workload's
    /// namespace, read when an instance starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ValueFrom>,
}

impl EnvVar {
    /// A variable with a literal value.
    pub fn literal(name: impl Into<String>, value: impl Into<String>) -> Self {
        EnvVar { name: name.into(), value: value.into(), value_from: None }
    }
}

/// A key of a Secret or of a Config (exactly one of the two names is given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ValueFrom {
    /// The Secret's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Name>,
    /// The Config's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Name>,
    /// The key within it.
    pub key: String,
}

/// A Secret or Config given to the guest as a read-only directory: one file per key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FilesFrom {
    /// Where the guest sees the directory, e.g. `/etc/db`.
    pub path: String,
    /// The Secret's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Name>,
    /// The Config's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Name>,
}

/// A Secret or a Config, by name: what a reference to values names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source<'a> {
    /// A Secret.
    Secret(&'a Name),
    /// A Config.
    Config(&'a Name),
}

impl<'a> Source<'a> {
    /// The kind it names.
    pub fn kind(self) -> Kind {
        match self {
            Source::Secret(_) => Kind::Secret,
            Source::Config(_) => Kind::Config,
        }
    }

    /// The name it names.
    pub fn name(self) -> &'a Name {
        match self {
            Source::Secret(n) | Source::Config(n) => n,
        }
    }
}

impl std::fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Secret(n) => write!(f, "secret {:?}", n.as_str()),
            Source::Config(n) => write!(f, "config {:?}", n.as_str()),
        }
    }
}

/// The one source named by a pair of optional names, or what is wrong with them.
fn one_source<'a>(secret: &'a Option<Name>, config: &'a Option<Name>) -> Result<Source<'a>, &'static str> {
    match (secret, config) {
        (Some(s), None) => Ok(Source::Secret(s)),
        (None, Some(c)) => Ok(Source::Config(c)),
        (Some(_), Some(_)) => Err("names both a secret and a config: name one"),
        (None, None) => Err("names neither a secret nor a config: name one"),
    }
}

impl ValueFrom {
    /// The Secret or Config it names.
    pub fn source(&self) -> Result<Source<'_>, &'static str> {
        one_source(&self.secret, &self.config)
    }
}

impl FilesFrom {
    /// The Secret or Config it names.
    pub fn source(&self) -> Result<Source<'_>, &'static str> {
        one_source(&self.secret, &self.config)
    }
}

/// Every Secret and Config the values of a spec name (a name once per place that names it).
pub fn sources<'a>(env: &'a [EnvVar], files: &'a [FilesFrom], wasi_config: &'a [EnvVar]) -> Vec<Source<'a>> {
    let named = env.iter().chain(wasi_config).filter_map(|v| v.value_from.as_ref()).filter_map(|f| f.source().ok());
    let mut all: Vec<Source<'a>> = named.chain(files.iter().filter_map(|f| f.source().ok())).collect();
    all.sort();
    all.dedup();
    all
}

impl WorkloadSpec {
    /// Every Secret and Config its values name, each once.
    pub fn sources(&self) -> Vec<Source<'_>> {
        sources(&self.env, &self.files, &self.wasi_config)
    }
}

/// The most environment variables, or `wasi:config` entries, one workload sets.
pub const MAX_VALUES: usize = 1000;

/// The most directories of files one workload takes from Secrets and Configs.
pub const MAX_FILES_FROM: usize = 16;

pub(crate) fn validate_values(field: &str, values: &[EnvVar]) -> Result<(), FieldError> {
    if values.len() > MAX_VALUES {
        return Err(FieldError::new(field, format!("{} entries: at most {MAX_VALUES}", values.len())));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, var) in values.iter().enumerate() {
        if var.name.is_empty() || var.name.contains('=') || var.name.contains('\0') {
            return Err(FieldError::new(format!("{field}[{i}].name"), "must be non-empty, without '=' or NUL"));
        }
        if !seen.insert(var.name.as_str()) {
            return Err(FieldError::new(format!("{field}[{i}].name"), format!("{:?} is set twice", var.name)));
        }
        if let Some(from) = &var.value_from {
            if !var.value.is_empty() {
                return Err(FieldError::new(format!("{field}[{i}]"), "sets both value and valueFrom: set one"));
            }
            from.source().map_err(|why| FieldError::new(format!("{field}[{i}].valueFrom"), why))?;
            if !crate::resources::secret::is_valid_key(&from.key) {
                return Err(FieldError::new(
                    format!("{field}[{i}].valueFrom.key"),
                    format!("{:?} is not a key a Secret or Config can hold", from.key),
                ));
            }
        }
    }
    Ok(())
}

/// Whether `path` is an absolute guest path of plain components (letters, digits, `-`, `_`,
/// `.`; no `.` or `..`), not `/` itself.
fn is_guest_dir(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else { return false };
    !rest.is_empty() && path.len() <= 256 && rest.split('/').all(crate::resources::secret::is_valid_key)
}

pub(crate) fn validate_files(files: &[FilesFrom]) -> Result<(), FieldError> {
    if files.len() > MAX_FILES_FROM {
        return Err(FieldError::new("spec.files", format!("{} entries: at most {MAX_FILES_FROM}", files.len())));
    }
    for (i, from) in files.iter().enumerate() {
        if !is_guest_dir(&from.path) {
            return Err(FieldError::new(
                format!("spec.files[{i}].path"),
                format!("{:?}: an absolute directory such as /etc/db, of plain names, not /", from.path),
            ));
        }
        if let Some(j) = files[..i].iter().position(|f| {
            f.path == from.path
                || f.path.starts_with(&format!("{}/", from.path))
                || from.path.starts_with(&format!("{}/", f.path))
        }) {
            return Err(FieldError::new(
                format!("spec.files[{i}].path"),
                format!("{:?} overlaps spec.files[{j}].path {:?}", from.path, files[j].path),
            ));
        }
        from.source().map_err(|why| FieldError::new(format!("spec.files[{i}]"), why))?;
    }
    Ok(())
}

/// Health checks of an instance: HTTP GETs the workload answers (for `http`), or a timeout on
/// its output (for `command`, which has no socket to probe).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Probes {
    /// For `http`: must answer 2xx before the instance receives traffic, and keeps it in or out
    /// of routing after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<HttpProbe>,
    /// For `http`: when it fails `failureThreshold` times in a row, the instance is replaced by
    /// a new one (with an Event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<HttpProbe>,
    /// For `http`: runs first, until it passes once; readiness and liveness wait for it. When it
    /// fails `failureThreshold` times in a row, the instance is replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<HttpProbe>,
    /// For `command`: a run that writes nothing to stdout or stderr for this long is stopped
    /// and restarted as its `restartPolicy` says (with an Event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_timeout: Option<Duration>,
}

/// An HTTP GET probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpProbe {
    /// Path to request, e.g. `/healthz`.
    pub path: String,
    /// How often to probe (default `1s`).
    #[serde(default = "default_probe_period")]
    pub period: Duration,
    /// How many failures in a row count (default 3); one pass resets the count.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
}

fn default_probe_period() -> Duration {
    Duration::from_secs(1)
}

fn default_failure_threshold() -> u32 {
    3
}

/// The longest probe period, and the longest output silence a command may be allowed.
const MAX_PROBE_PERIOD: std::time::Duration = std::time::Duration::from_secs(3600);
const MAX_LIVENESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn validate_probes(type_: WorkloadType, probes: &Probes) -> Result<(), FieldError> {
    let http = [("readiness", &probes.readiness), ("liveness", &probes.liveness), ("startup", &probes.startup)];
    for (name, probe) in http {
        let Some(probe) = probe else { continue };
        let field = format!("spec.probes.{name}");
        if type_ != WorkloadType::Http {
            return Err(FieldError::new(field, "HTTP probes are for http workloads (a command has livenessTimeout)"));
        }
        if !probe.path.starts_with('/') || probe.path.len() > 1024 {
            return Err(FieldError::new(format!("{field}.path"), "a path starting with /, at most 1024 bytes"));
        }
        probe
            .period
            .within(std::time::Duration::from_millis(10), MAX_PROBE_PERIOD)
            .map_err(|why| FieldError::new(format!("{field}.period"), why))?;
        if !(1..=100).contains(&probe.failure_threshold) {
            return Err(FieldError::new(format!("{field}.failureThreshold"), "from 1 to 100"));
        }
    }
    if let Some(timeout) = probes.liveness_timeout {
        if type_ != WorkloadType::Command {
            return Err(FieldError::new(
                "spec.probes.livenessTimeout",
                "is for command workloads (an http workload has a liveness probe)",
            ));
        }
        timeout
            .within(std::time::Duration::from_millis(100), MAX_LIVENESS_TIMEOUT)
            .map_err(|why| FieldError::new("spec.probes.livenessTimeout", why))?;
    }
    Ok(())
}

/// Replicas that follow the requests in flight, Knative-style: as many instances as keep each
/// at `targetConcurrency` requests in flight (counted by the nodes, queued ones included), at
/// once when load rises, and fewer only after load has stayed lower for `stableWindow`. With
/// `min: 0` an idle workload has no instance; its first request waits at the node while one
/// starts. For `http` workloads only: a command has no requests to count, so it does not
/// autoscale (it keeps `replicas`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Autoscale {
    /// Fewest replicas (0 allowed: scale to zero).
    #[serde(default)]
    pub min: u32,
    /// Most replicas.
    pub max: u32,
    /// Requests in flight per instance to aim for.
    pub target_concurrency: u32,
    /// How long load must stay lower before replicas are taken away (default `60s`).
    #[serde(default = "default_stable_window")]
    pub stable_window: Duration,
}

fn default_stable_window() -> Duration {
    Duration::from_secs(60)
}

impl Autoscale {
    /// `replicas` brought within `min` and `max`.
    pub fn clamp(&self, replicas: u32) -> u32 {
        replicas.clamp(self.min, self.max)
    }
}

/// The shortest stable window: a node's load arrives with its heartbeat (every second by
/// default), so a shorter one would let a starting instance go before its first request counts.
const MIN_STABLE_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// The longest stable window.
const MAX_STABLE_WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);

fn validate_autoscale(spec: &WorkloadSpec, autoscale: &Autoscale) -> Result<(), FieldError> {
    if spec.type_ != WorkloadType::Http {
        return Err(FieldError::new(
            "spec.autoscale",
            "is for http workloads: a command has no requests in flight to scale on (set replicas)",
        ));
    }
    if autoscale.max == 0 || autoscale.max > MAX_REPLICAS {
        return Err(FieldError::new("spec.autoscale.max", format!("{}: from 1 to {MAX_REPLICAS}", autoscale.max)));
    }
    if autoscale.min > autoscale.max {
        return Err(FieldError::new(
            "spec.autoscale.min",
            format!("{} is more than max, {}", autoscale.min, autoscale.max),
        ));
    }
    let target = autoscale.target_concurrency;
    if target == 0 || target > MAX_CONCURRENCY {
        return Err(FieldError::new(
            "spec.autoscale.targetConcurrency",
            format!("{target}: from 1 to {MAX_CONCURRENCY}"),
        ));
    }
    if let Some(limit) = spec.concurrency.filter(|limit| target > *limit) {
        return Err(FieldError::new(
            "spec.autoscale.targetConcurrency",
            format!("{target} is more than spec.concurrency, {limit}: instances would turn requests away first"),
        ));
    }
    autoscale
        .stable_window
        .within(MIN_STABLE_WINDOW, MAX_STABLE_WINDOW)
        .map_err(|why| FieldError::new("spec.autoscale.stableWindow", why))
}

/// Where instances may run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Placement {
    /// Labels a node must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Spread replicas across nodes (on by default).
    #[serde(default = "default_true")]
    pub spread: bool,
}

fn default_true() -> bool {
    true
}

/// How a changed spec replaces old instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rollout {
    /// How many instances above `replicas` may exist during a rollout.
    #[serde(default = "default_one")]
    pub max_surge: u32,
    /// How many of `replicas` may be unavailable during a rollout.
    #[serde(default)]
    pub max_unavailable: u32,
}

fn default_one() -> u32 {
    1
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout { max_surge: 1, max_unavailable: 0 }
    }
}

fn default_replicas() -> u32 {
    1
}

pub(crate) fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// What a user declares about a workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadSpec {
    /// The module: a local path at apply time, rewritten to `sha256:<hex>` once uploaded; or
    /// `oci://REGISTRY/REPOSITORY:TAG`, which the API server pulls and rewrites likewise.
    #[serde(default)]
    pub module: String,
    /// The Secret (keys `username` and `password`) to pull an `oci://` module with. Used when
    /// the module is pulled and not stored after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_pull_secret: Option<crate::Name>,
    /// `http` (default) or `command`.
    #[serde(default, rename = "type")]
    pub type_: WorkloadType,
    /// How many instances to keep; for an autoscaled workload, how many it starts with
    /// (brought within `autoscale.min` and `max`).
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Replicas that follow the load (`http` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<Autoscale>,
    /// Per-instance limits.
    #[serde(default, skip_serializing_if = "is_default")]
    pub resources: Resources,
    /// Environment of the guest; nothing else is passed through.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Directories of files from Secrets and Configs, read-only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FilesFrom>,
    /// What the guest reads through `wasi:config/store` (components only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wasi_config: Vec<EnvVar>,
    /// Arguments of a command guest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Health checks.
    #[serde(default, skip_serializing_if = "is_default")]
    pub probes: Probes,
    /// `Always` (default), `OnFailure` or `Never`.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Where instances may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// How changes roll out.
    #[serde(default, skip_serializing_if = "is_default")]
    pub rollout: Rollout,
    /// Hosts outside the cluster the guest may call over `wasi:http`; none by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_outbound_hosts: Vec<String>,
    /// For `http`: how long one request may run before it is stopped and answered with 504
    /// (default: the node's, 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout_ms: Option<u64>,
    /// For `http`: how many requests one instance serves at once (like Knative's
    /// containerConcurrency); more wait in a bounded queue, and past it the caller gets a 503
    /// with `Retry-After`. More replicas add capacity. Default: the node's
    /// (`shoal node --instance-concurrency`, 8); at most [`MAX_CONCURRENCY`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// When set (RFC 3339, by `shoal rollout restart`), a change of it replaces every instance
    /// as a rollout does, with nothing else changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_at: Option<String>,
    /// At most one instance may run at any moment, even across a network partition: its node
    /// runs it only while it holds a fencing lease from the control plane, and a replacement is
    /// made only once the old instance is gone and any lease its node held has run out. Needs
    /// `replicas` of at most 1, no `autoscale`, and `rollout: {maxSurge: 0, maxUnavailable: 1}`
    /// (a rollout stops the old instance before it starts the new one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub singleton: bool,
}

/// The most requests one instance may be allowed to serve at once.
pub const MAX_CONCURRENCY: u32 = 1000;

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            module: String::new(),
            module_pull_secret: None,
            type_: WorkloadType::default(),
            replicas: default_replicas(),
            autoscale: None,
            resources: Resources::default(),
            env: Vec::new(),
            files: Vec::new(),
            wasi_config: Vec::new(),
            args: Vec::new(),
            probes: Probes::default(),
            restart_policy: RestartPolicy::default(),
            placement: None,
            rollout: Rollout::default(),
            allowed_outbound_hosts: Vec::new(),
            request_timeout_ms: None,
            concurrency: None,
            restarted_at: None,
            singleton: false,
        }
    }
}

/// How many revisions of its spec a workload's status keeps (Kubernetes' default
/// `revisionHistoryLimit`).
pub const REVISION_HISTORY: usize = 10;

/// The most bytes a workload's revisions take in its status together; past it the oldest go
/// (a large spec keeps fewer).
pub const REVISION_HISTORY_BYTES: usize = 256 * 1024;

/// One spec a workload has run, for `shoal rollout history` and `undo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Revision {
    /// Its number: 1 for the first spec, one more for each new one (an undo makes an old spec
    /// the newest, with a new number).
    pub revision: u64,
    /// The hash of its instances' template.
    pub template_hash: String,
    /// When it was first seen (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// The spec.
    pub spec: WorkloadSpec,
}

/// What the workload controller observed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default)]
    pub observed_generation: u64,
    /// Instances that exist.
    #[serde(default)]
    pub replicas: u32,
    /// Instances that are ready.
    #[serde(default)]
    pub ready_replicas: u32,
    /// Instances running the current spec.
    #[serde(default)]
    pub updated_replicas: u32,
    /// Ready instances running the current spec.
    #[serde(default)]
    pub available_replicas: u32,
    /// For an autoscaled workload: the replicas the autoscaler chose last (a new leader starts
    /// from it, so a change of leader takes no replicas away).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<u32>,
    /// Progressing, Available, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The specs it ran, oldest first, at most [`REVISION_HISTORY`]; the last is the current.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revisions: Vec<Revision>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: serde_json::Value) -> Result<(), FieldError> {
        let object = serde_json::json!({"apiVersion": "shoal.dev/v1", "kind": "Workload",
            "metadata": {"name": "w"}, "spec": spec});
        let workload: Workload = serde_json::from_value(object).map_err(|e| FieldError::new("", e.to_string()))?;
        WorkloadKind::validate(&workload)
    }

    #[test]
    fn probes_fit_the_workload_type_and_are_bounded() {
        let module = "sha256:".to_owned() + &"0".repeat(64);
        let http = |probes| serde_json::json!({"module": module, "probes": probes});
        let command = |probes| serde_json::json!({"module": module, "type": "command", "probes": probes});
        assert!(check(http(serde_json::json!({"liveness": {"path": "/healthz", "period": "5s"}}))).is_ok());
        assert!(check(command(serde_json::json!({"livenessTimeout": "30s"}))).is_ok());
        let refused = [
            (command(serde_json::json!({"readiness": {"path": "/"}})), "spec.probes.readiness"),
            (http(serde_json::json!({"livenessTimeout": "30s"})), "spec.probes.livenessTimeout"),
            (http(serde_json::json!({"startup": {"path": "/", "period": "2h"}})), "spec.probes.startup.period"),
            (http(serde_json::json!({"liveness": {"path": "/", "failureThreshold": 0}})), "failureThreshold"),
            (http(serde_json::json!({"liveness": {"path": "healthz"}})), "spec.probes.liveness.path"),
            (command(serde_json::json!({"livenessTimeout": "1ms"})), "spec.probes.livenessTimeout"),
        ];
        for (spec, field) in refused {
            let error = check(spec.clone()).unwrap_err();
            assert!(error.path.contains(field), "{spec}: {error}");
        }
        let not_a_duration = check(http(serde_json::json!({"liveness": {"path": "/", "period": 5}}))).unwrap_err();
        assert!(not_a_duration.message.contains("duration"), "{not_a_duration}");
    }

    /// Checks a spec of a module and `extra`.
    fn with_module(extra: serde_json::Value) -> Result<(), FieldError> {
        let mut spec = serde_json::json!({"module": "sha256:".to_owned() + &"0".repeat(64)});
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        check(spec)
    }

    #[test]
    fn a_singleton_runs_one_replica_replaced_in_place_and_is_not_autoscaled() {
        let rollout = serde_json::json!({"maxSurge": 0, "maxUnavailable": 1});
        assert!(with_module(serde_json::json!({"singleton": true, "rollout": rollout})).is_ok());
        assert!(with_module(serde_json::json!({"singleton": true, "replicas": 0, "rollout": rollout})).is_ok());
        let refused = [
            (serde_json::json!({"singleton": true}), "spec.rollout.maxSurge"),
            (serde_json::json!({"singleton": true, "replicas": 2, "rollout": rollout}), "spec.replicas"),
            (
                serde_json::json!({"singleton": true, "rollout": rollout,
                    "autoscale": {"max": 1, "targetConcurrency": 2}}),
                "spec.autoscale",
            ),
        ];
        for (extra, field) in refused {
            let error = with_module(extra.clone()).unwrap_err();
            assert_eq!(error.path, field, "{extra}: {error}");
        }
    }

    #[test]
    fn autoscaling_is_for_http_within_its_bounds() {
        let scale = |a| serde_json::json!({"autoscale": a});
        assert!(with_module(scale(serde_json::json!({"min": 0, "max": 5, "targetConcurrency": 2}))).is_ok());
        let refused = [
            (serde_json::json!({"type": "command", "autoscale": {"max": 5, "targetConcurrency": 2}}), "spec.autoscale"),
            (scale(serde_json::json!({"min": 6, "max": 5, "targetConcurrency": 2})), "spec.autoscale.min"),
            (scale(serde_json::json!({"max": 0, "targetConcurrency": 2})), "spec.autoscale.max"),
            (scale(serde_json::json!({"max": 20000, "targetConcurrency": 2})), "spec.autoscale.max"),
            (scale(serde_json::json!({"max": 5, "targetConcurrency": 0})), "targetConcurrency"),
            (
                serde_json::json!({"concurrency": 4, "autoscale": {"max": 5, "targetConcurrency": 8}}),
                "targetConcurrency",
            ),
            (scale(serde_json::json!({"max": 5, "targetConcurrency": 1, "stableWindow": "1ms"})), "stableWindow"),
        ];
        for (extra, field) in refused {
            let error = with_module(extra.clone()).unwrap_err();
            assert!(error.path.contains(field), "{extra}: {error}");
        }
        let missing = with_module(scale(serde_json::json!({"max": 5}))).unwrap_err();
        assert!(missing.message.contains("targetConcurrency"), "{missing}");
    }

    #[test]
    fn values_name_one_source_and_are_not_set_twice() {
        let env = |v| serde_json::json!({"env": v});
        assert!(with_module(env(serde_json::json!([{"name": "A", "valueFrom": {"secret": "s", "key": "k"}}]))).is_ok());
        let refused = [
            (
                env(serde_json::json!([{"name": "A", "valueFrom": {"secret": "s", "config": "c", "key": "k"}}])),
                "valueFrom",
            ),
            (env(serde_json::json!([{"name": "A", "value": "x", "valueFrom": {"secret": "s", "key": "k"}}])), "env[0]"),
            (env(serde_json::json!([{"name": "A"}, {"name": "A"}])), "env[1].name"),
            (env(serde_json::json!([{"name": "A", "valueFrom": {"config": "c", "key": "a/b"}}])), "valueFrom.key"),
            (serde_json::json!({"files": [{"path": "/etc/../x", "secret": "s"}]}), "files[0].path"),
            (
                serde_json::json!({"files": [{"path": "/etc", "secret": "s"}, {"path": "/etc/db", "config": "c"}]}),
                "files[1].path",
            ),
            (serde_json::json!({"files": [{"path": "/etc/db"}]}), "files[0]"),
        ];
        for (extra, field) in refused {
            let error = with_module(extra.clone()).unwrap_err();
            assert!(error.path.contains(field), "{extra}: {error}");
        }
    }
}
