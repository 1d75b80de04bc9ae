//! Instance: one copy of a workload, bound to a node (like a Pod).

use serde::{Deserialize, Serialize};

use crate::meta::{Kind, Object, Resource};
use crate::name::Name;
use crate::resources::workload::{EnvVar, FilesFrom, Probes, Resources, RestartPolicy, Source, WorkloadType, sources};

/// Label on every instance a workload made: the workload's name.
pub const WORKLOAD_LABEL: &str = "shoal.dev/workload";
/// Label on every instance a workload made: a hash of the workload spec it was made from, so
/// that a rollout can tell old instances from new ones.
pub const TEMPLATE_LABEL: &str = "shoal.dev/template";

/// Marker for the Instance kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceKind;

/// An Instance object.
pub type Instance = Object<InstanceKind>;

impl Resource for InstanceKind {
    const KIND: Kind = Kind::Instance;
    type Spec = InstanceSpec;
    type Status = InstanceStatus;
}

/// The resolved spec one instance runs: a copy of its workload's, frozen when it was created, so
/// that a rollout is a set of new instances rather than a mutation of running ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InstanceSpec {
    /// The owning workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Name>,
    /// The node it is bound to; empty while Pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Name>,
    /// `sha256:<hex>` of the module.
    #[serde(default)]
    pub module: String,
    /// `http` or `command`.
    #[serde(default, rename = "type")]
    pub type_: WorkloadType,
    /// Per-instance limits.
    #[serde(default)]
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
    /// Arguments of a command guest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Health checks.
    #[serde(default)]
    pub probes: Probes,
    /// When it is restarted.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Hosts outside the cluster it may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_outbound_hosts: Vec<String>,
    /// Whether those hosts may resolve to private addresses: copied from its Namespace's
    /// admin-set `spec.allowPrivateEgress` when the instance is made (tenants make no
    /// Instances).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_private_egress: bool,
    /// For `http`: requests served at once (the node's default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// For `http`: the per-request deadline, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout_ms: Option<u64>,
    /// Labels its node must have.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub node_selector: std::collections::BTreeMap<String, String>,
    /// Its workload's `singleton`: its node runs it only while it holds a fencing lease.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub singleton: bool,
}

impl InstanceSpec {
    /// Every Secret and Config its values name, each once.
    pub fn sources(&self) -> Vec<Source<'_>> {
        sources(&self.env, &self.files, &self.wasi_config)
    }

    /// Whether it takes any value from a Secret or Config (its node must fetch them to start
    /// it).
    pub fn takes_values(&self) -> bool {
        !self.sources().is_empty()
    }
}

/// The reason of a Failed instance that failed its liveness probe: its workload replaces it.
pub const LIVENESS_FAILED: &str = "LivenessFailed";
/// The reason of a Failed instance that never passed its startup probe: replaced likewise.
pub const STARTUP_FAILED: &str = "StartupFailed";

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Not yet bound to a node, or not yet started there.
    #[default]
    Pending,
    /// Started on its node.
    Running,
    /// Ran to completion with exit code 0 and will not restart.
    Succeeded,
    /// Exited with a failure and will not restart.
    Failed,
    /// Keeps failing; waiting out a back-off before the next start.
    CrashLoopBackOff,
}

impl Phase {
    /// Whether the instance has ended for good (it will not run again).
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

impl Object<InstanceKind> {
    /// Its phase (Pending until a node reports).
    pub fn phase(&self) -> Phase {
        self.status.as_ref().map_or(Phase::Pending, |s| s.phase)
    }

    /// Whether its node gave up on it for failing a probe: it has ended, and its workload
    /// replaces it with a new instance.
    pub fn failed_probe(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.phase == Phase::Failed && matches!(s.reason.as_str(), LIVENESS_FAILED | STARTUP_FAILED))
    }

    /// Whether its node reports it ready for traffic.
    pub fn is_ready(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.ready && s.phase == Phase::Running)
    }
}

/// How the last run ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExitInfo {
    /// Exit code, when the guest exited rather than trapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// Why it ended, e.g. `Completed`, `Trap`, `OutOfMemory`.
    #[serde(default)]
    pub reason: String,
    /// Details, e.g. the trap message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// What the node reports about an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InstanceStatus {
    /// Where it is in its life.
    #[serde(default)]
    pub phase: Phase,
    /// Whether it receives traffic.
    #[serde(default)]
    pub ready: bool,
    /// How many times it was restarted.
    #[serde(default)]
    pub restarts: u32,
    /// How the last run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<ExitInfo>,
    /// When the current run started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Why it is held in its phase, when that needs saying: e.g. `ValuesUnavailable` for one
    /// that cannot start because a Secret or Config it names is missing.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// What is wrong, for people (says which Secret, Config or key).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}
