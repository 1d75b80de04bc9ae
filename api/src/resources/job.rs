//! Job: a command run to completion (like Kubernetes' Job): `completions` successful runs,
//! `parallelism` at a time, at most `backoffLimit` failed runs (each retried after a back-off),
//! within `activeDeadline`, and deleted `ttlAfterFinished` after it ends.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::meta::{FieldError, Kind, Object, Resource};
use crate::resources::Condition;
use crate::resources::workload::{EnvVar, FilesFrom, MAX_REPLICAS, Resources, validate_files, validate_values};

/// Marker for the Job kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobKind;

/// A Job object.
pub type Job = Object<JobKind>;

/// Label on every instance a Job made: the Job's name.
pub const JOB_LABEL: &str = "shoal.dev/job";

/// The most runs one Job may run at once.
pub const MAX_PARALLELISM: u32 = 1000;

/// The most failed runs one Job may allow.
pub const MAX_BACKOFF_LIMIT: u32 = 1000;

/// The condition a finished Job carries: `Complete` or `Failed`, status `True`.
pub const COMPLETE: &str = "Complete";
/// See [`COMPLETE`].
pub const FAILED: &str = "Failed";

impl Resource for JobKind {
    const KIND: Kind = Kind::Job;
    type Spec = JobSpec;
    type Status = JobStatus;

    fn validate(object: &Job) -> Result<(), FieldError> {
        validate_job_spec(&object.spec, "spec.")
    }
}

/// Checks a Job's spec, whose fields are named under `prefix` (`spec.` in a Job,
/// `spec.jobTemplate.` in a CronJob).
pub fn validate_job_spec(spec: &JobSpec, prefix: &str) -> Result<(), FieldError> {
    for (field, value, max) in
        [("completions", spec.completions, MAX_REPLICAS), ("parallelism", spec.parallelism, MAX_PARALLELISM)]
    {
        if value == 0 || value > max {
            return Err(FieldError::new(format!("{prefix}{field}"), format!("{value}: from 1 to {max}")));
        }
    }
    if spec.backoff_limit > MAX_BACKOFF_LIMIT {
        return Err(FieldError::new(format!("{prefix}backoffLimit"), format!("at most {MAX_BACKOFF_LIMIT}")));
    }
    let year = std::time::Duration::from_secs(365 * 24 * 3600);
    for (field, value) in [("activeDeadline", spec.active_deadline), ("ttlAfterFinished", spec.ttl_after_finished)] {
        if let Some(value) = value {
            value
                .within(std::time::Duration::ZERO, year)
                .map_err(|why| FieldError::new(format!("{prefix}{field}"), why))?;
        }
    }
    let template = &spec.template;
    crate::module::check_module(
        &format!("{prefix}template.module"),
        &template.module,
        template.module_pull_secret.as_ref(),
    )?;
    if template.resources.memory.is_some_and(|m| m.0 < 64 * 1024) {
        return Err(FieldError::new(
            format!("{prefix}template.resources.memory"),
            "must be at least 64Ki (one wasm page)",
        ));
    }
    let nested = |e: FieldError| FieldError::new(e.path.replacen("spec.", &format!("{prefix}template."), 1), e.message);
    validate_values("spec.env", &template.env).map_err(nested)?;
    validate_values("spec.wasiConfig", &template.wasi_config).map_err(nested)?;
    validate_files(&template.files).map_err(nested)
}

fn one() -> u32 {
    1
}

fn six() -> u32 {
    6
}

/// What a Job runs: a command module and what it is given (a Workload's fields that a run to
/// completion has use for).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JobTemplate {
    /// The module: a local path at apply time, rewritten to `sha256:<hex>` once uploaded. A
    /// `wasi:cli/run` component or a preview-1 command.
    #[serde(default)]
    pub module: String,
    /// The Secret (keys `username` and `password`) to pull an `oci://` module with (see the
    /// Workload's field of that name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_pull_secret: Option<crate::Name>,
    /// Per-run limits.
    #[serde(default, skip_serializing_if = "crate::resources::workload::is_default")]
    pub resources: Resources,
    /// Environment of the guest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Directories of files from Secrets and Configs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FilesFrom>,
    /// What the guest reads through `wasi:config/store`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wasi_config: Vec<EnvVar>,
    /// Arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Hosts outside the cluster the guest may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_outbound_hosts: Vec<String>,
    /// Labels a node must have to run it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
}

/// What a user declares about a Job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JobSpec {
    /// What each run runs.
    pub template: JobTemplate,
    /// How many runs must succeed (default 1).
    #[serde(default = "one")]
    pub completions: u32,
    /// How many run at once (default 1).
    #[serde(default = "one")]
    pub parallelism: u32,
    /// How many runs may fail before the Job fails (default 6); each failure waits a back-off
    /// (doubling) before the next run.
    #[serde(default = "six")]
    pub backoff_limit: u32,
    /// How long the Job may run, from its start, before it fails and its runs are stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline: Option<Duration>,
    /// How long a finished Job (and its instances, with their logs) is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_after_finished: Option<Duration>,
}

impl Default for JobSpec {
    fn default() -> Self {
        JobSpec {
            template: JobTemplate::default(),
            completions: 1,
            parallelism: 1,
            backoff_limit: 6,
            active_deadline: None,
            ttl_after_finished: None,
        }
    }
}

/// What the Job controller observed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JobStatus {
    /// Runs in progress (or waiting for a node).
    #[serde(default)]
    pub active: u32,
    /// Runs that exited 0.
    #[serde(default)]
    pub succeeded: u32,
    /// Runs that failed.
    #[serde(default)]
    pub failed: u32,
    /// When the Job was first looked at (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When it finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// `Complete` or `Failed` once it finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl Object<JobKind> {
    /// `Complete` or `Failed` once it finished; `None` while it runs.
    pub fn finished(&self) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| (c.type_ == COMPLETE || c.type_ == FAILED) && c.status == "True")
    }
}
