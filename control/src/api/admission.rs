//! Admission: what the API server checks and fills in before an object is written, beyond what
//! parsing and validation of the object alone can tell (that needs the cluster's settings or
//! other objects):
//! - a Workload that requests no memory or CPU gets its Namespace's `defaultRequests` (a quota
//!   cannot be dodged by leaving requests out), and runs only a module uploaded to its own
//!   namespace (which is charged for it: no namespace runs on another's storage);
//! - a node writing its own Node keeps the host it joined with, and the labels and cordon the
//!   operator set, and reports no more capacity than it registered with;
//! - a Service claims ingress hosts only within what its namespace owns
//!   (`*.<namespace>.<ingress domain>`) or its Namespace's `spec.ingressHosts` grants, never a
//!   cluster-internal name, and never one another Service claims (409 naming the owner).
//!
//! - a module named `oci://...` is pulled into the namespace and named by its digest
//!   ([`super::oci`]).
//!
//! Two Services that claim the same host at the same moment through different members could
//! both pass the last check; the node's ingress then routes the host to the older claim.

use shoal_api::resources::namespace::{Namespace, host_matches};
use shoal_api::resources::node::{Capacity, Node};
use shoal_api::resources::service::Service;
use std::sync::Arc;

use shoal_api::module::{MODULE_SOURCE_ANNOTATION, OCI_SCHEME};
use shoal_api::{AnyObject, Kind, Name, Reason};

use super::auth::Principal;
use super::error::ApiError;
use super::oci::{Puller, Registries};
use super::registration;
use crate::store::{Command, ObjectKey, Store};

/// The cluster's settings admission needs.
#[derive(Debug, Clone)]
pub struct Admission {
    /// The domains nodes' ingresses route `<workload>.<namespace>.<domain>` for.
    pub ingress_domains: Vec<String>,
    /// The cluster-internal domain (`<svc>.<ns>.svc.<domain>`).
    pub cluster_domain: String,
    /// The registries `oci://` modules may be pulled from.
    pub registries: Registries,
    /// What pulls them (the API server sets it when it starts; without it none is pulled).
    pub puller: Option<Arc<Puller>>,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            ingress_domains: vec!["localhost".into()],
            cluster_domain: "cluster.local".into(),
            registries: Registries::default(),
            puller: None,
        }
    }
}

/// Where an object names its module, for [`Admission::resolve_module`].
struct ModuleField<'a> {
    /// The object's kind, name and metadata.
    kind: Kind,
    meta: &'a mut shoal_api::meta::ObjectMeta,
    /// The module and its pull secret.
    module: &'a mut String,
    pull_secret: &'a mut Option<Name>,
    /// The module's path, for errors.
    field: &'static str,
}

/// The stored Namespace `name`, if there is one.
pub(super) fn namespace(store: &Store, name: &str) -> Result<Option<Namespace>, ApiError> {
    let Some(bytes) = store.reader().get(&ObjectKey::new(Kind::Namespace.plural(), None, name))? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ApiError::new(Reason::Internal, format!("stored namespace {name} is damaged: {e}")))
}

/// Refuses a Workload of `ns` whose module is not a digest recorded in `ns`.
async fn require_module(store: &Store, ns: &str, module: &str) -> Result<(), ApiError> {
    let missing = |message: String| ApiError::invalid(shoal_api::meta::FieldError::new("spec.module", message));
    let Some(hex) = module.strip_prefix("sha256:") else {
        return Err(missing(format!(
            "{module:?}: the API takes sha256:<digest> of a module uploaded to namespace {ns} (shoal apply uploads local files)"
        )));
    };
    let key = ObjectKey::new(shoal_api::module::MODULES, Some(ns), hex);
    if store.reader().get(&key)?.is_some() {
        return Ok(());
    }
    // Perhaps uploaded a moment ago through another member.
    store.linearize().await?;
    if store.reader().get(&key)?.is_some() {
        return Ok(());
    }
    Err(missing(format!(
        "module {module} is not uploaded to namespace {ns} (PUT /api/v1/namespaces/{ns}/modules/{hex}; shoal apply does)"
    )))
}

/// A Job's spec (or a CronJob's template of one) runs a module of its namespace, and takes the
/// namespace's default requests where it sets none.
async fn admit_job_spec(
    store: &Store,
    ns: &str,
    spec: &mut shoal_api::resources::job::JobSpec,
    field: &str,
    pulled_dry: bool,
) -> Result<(), ApiError> {
    let required = match pulled_dry {
        true => Ok(()),
        false => require_module(store, ns, &spec.template.module).await,
    };
    required.map_err(|e| {
        let mut status = e.0;
        status.field = status.field.map(|f| f.replace("spec.module", field));
        status.message = status.message.replace("spec.module", field);
        ApiError(status)
    })?;
    if let Some(defaults) = namespace(store, ns)?.and_then(|n| n.spec.default_requests) {
        let resources = &mut spec.template.resources;
        resources.memory = resources.memory.or(defaults.memory);
        resources.cpu = resources.cpu.or(defaults.cpu);
    }
    Ok(())
}

impl Admission {
    /// Checks and completes `object`, written by `principal`, before it is written; for a
    /// `dry_run`, storing nothing (an `oci://` module's manifest is read, its bytes are not).
    pub async fn admit(
        &self,
        store: &Store,
        principal: &Principal,
        object: &mut AnyObject,
        dry_run: bool,
    ) -> Result<(), ApiError> {
        match object {
            AnyObject::Node(node) if principal.node().is_some() => fence_node(store, node),
            AnyObject::Workload(workload) => {
                let ns = workload.metadata.namespace.as_ref().map_or("default", |n| n.as_str()).to_owned();
                let spec = &mut workload.spec;
                let field = ModuleField {
                    kind: Kind::Workload,
                    meta: &mut workload.metadata,
                    module: &mut spec.module,
                    pull_secret: &mut spec.module_pull_secret,
                    field: "spec.module",
                };
                let pulled_dry = self.resolve_module(store, principal, &ns, field, dry_run).await?;
                if !pulled_dry {
                    require_module(store, &ns, &workload.spec.module).await?;
                }
                if let Some(defaults) = namespace(store, &ns)?.and_then(|n| n.spec.default_requests) {
                    let resources = &mut workload.spec.resources;
                    resources.memory = resources.memory.or(defaults.memory);
                    resources.cpu = resources.cpu.or(defaults.cpu);
                }
                Ok(())
            }
            AnyObject::Job(job) => {
                let field = "spec.template.module";
                self.admit_job(store, principal, (Kind::Job, &mut job.metadata), &mut job.spec, field, dry_run).await
            }
            AnyObject::CronJob(cron) => {
                let (spec, field) = (&mut cron.spec.job_template, "spec.jobTemplate.template.module");
                self.admit_job(store, principal, (Kind::CronJob, &mut cron.metadata), spec, field, dry_run).await
            }
            AnyObject::Service(service) => self.fence_ingress_hosts(store, service),
            _ => Ok(()),
        }
    }

    /// A Job's spec (or a CronJob's template of one), of the object `meta` of `kind` says,
    /// with its module at `field`.
    async fn admit_job(
        &self,
        store: &Store,
        principal: &Principal,
        (kind, meta): (Kind, &mut shoal_api::meta::ObjectMeta),
        spec: &mut shoal_api::resources::job::JobSpec,
        field: &'static str,
        dry_run: bool,
    ) -> Result<(), ApiError> {
        let ns = meta.namespace.as_ref().map_or("default", |n| n.as_str()).to_owned();
        let template = &mut spec.template;
        let module = ModuleField {
            kind,
            meta,
            module: &mut template.module,
            pull_secret: &mut template.module_pull_secret,
            field,
        };
        let pulled_dry = self.resolve_module(store, principal, &ns, module, dry_run).await?;
        admit_job_spec(store, &ns, spec, field, pulled_dry).await
    }

    /// Pulls an `oci://` module into `ns` and names it by digest, with the reference (and the
    /// manifest's digest) in the `shoal.dev/module-source` annotation and its pull secret
    /// dropped (the pull is done). The annotation is the API server's: a write may carry it
    /// back unchanged with the module it was set beside (a read, edited, applied), and
    /// otherwise it is removed. Returns whether a dry run named a module it did not store.
    async fn resolve_module(
        &self,
        store: &Store,
        principal: &Principal,
        ns: &str,
        object: ModuleField<'_>,
        dry_run: bool,
    ) -> Result<bool, ApiError> {
        let ModuleField { kind, meta, module, pull_secret, field } = object;
        if module.starts_with(OCI_SCHEME) {
            let Some(puller) = &self.puller else {
                return Err(ApiError::new(Reason::Forbidden, format!("{field}: this API server pulls no modules")));
            };
            let pulled = puller.pull(principal, ns, module, pull_secret.as_ref(), field, dry_run).await?;
            *module = pulled.module;
            meta.annotations.insert(MODULE_SOURCE_ANNOTATION.to_owned(), pulled.source);
            *pull_secret = None;
            return Ok(dry_run);
        }
        let Some(claimed) = meta.annotations.get(MODULE_SOURCE_ANNOTATION) else { return Ok(false) };
        let stored = store.reader().get(&ObjectKey::new(kind.plural(), Some(ns), meta.name.as_str()))?;
        if !stored.is_some_and(|bytes| kept_source(&bytes, claimed, module, field)) {
            meta.annotations.remove(MODULE_SOURCE_ANNOTATION);
        }
        Ok(false)
    }

    /// Checks a status `object` written by `principal`: a node reporting its Node may not
    /// raise its capacity (or allocatable) above the ceiling in its registration, which its
    /// first report sets, so that a node's token cannot make it draw the cluster's instances;
    /// an admin's report sets the ceiling. Returns the registration's writes to make with the
    /// status.
    pub fn admit_status(
        &self,
        store: &Store,
        principal: &Principal,
        object: &AnyObject,
    ) -> Result<Vec<Command>, ApiError> {
        let AnyObject::Node(node) = object else { return Ok(Vec::new()) };
        let Some(reported) = node.status.as_ref() else { return Ok(Vec::new()) };
        let name = node.metadata.name.as_str();
        let registration = registration::read(store, name)?.unwrap_or_default();
        match (&registration.capacity, principal.node().is_some()) {
            (Some(ceiling), true) => {
                for (field, reported) in [("capacity", &reported.capacity), ("allocatable", &reported.allocatable)] {
                    if let Some(what) = raises(ceiling, reported) {
                        return Err(ApiError::new(
                            Reason::Forbidden,
                            format!(
                                "node {name} may not raise status.{field}.{what} above the {what} it registered \
                                 with (an admin may, or delete the Node to let it register anew)"
                            ),
                        ));
                    }
                }
                Ok(Vec::new())
            }
            // The first report, or an admin's: it sets the ceiling.
            _ if registration.capacity.as_ref() == Some(&reported.capacity) => Ok(Vec::new()),
            _ => Ok(registration::write(
                name,
                &registration::Registration { capacity: Some(reported.capacity.clone()), ..registration },
            )),
        }
    }

    /// Whether namespace `ns` owns `host` without a grant.
    fn owns(&self, ns: &str, host: &str) -> bool {
        self.ingress_domains.iter().any(|domain| {
            host.strip_suffix(domain.as_str())
                .and_then(|rest| rest.strip_suffix('.'))
                .and_then(|rest| rest.strip_suffix(ns))
                .and_then(|rest| rest.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.contains('.'))
        })
    }

    fn fence_ingress_hosts(&self, store: &Store, service: &Service) -> Result<(), ApiError> {
        if service.spec.ingress_hosts.is_empty() {
            return Ok(());
        }
        let ns = service.metadata.namespace.as_ref().map_or("default", |n| n.as_str());
        let name = service.metadata.name.as_str();
        let internal = format!(".svc.{}", self.cluster_domain);
        let granted = namespace(store, ns)?.map(|n| n.spec.ingress_hosts).unwrap_or_default();
        for host in &service.spec.ingress_hosts {
            if host.ends_with(&internal) || *host == internal[1..] {
                return Err(ApiError::new(
                    Reason::Invalid,
                    format!(
                        "spec.ingressHosts: {host} is a cluster-internal name; set spec.public to route it from outside"
                    ),
                ));
            }
            if !self.owns(ns, host) && !granted.iter().any(|pattern| host_matches(pattern, host)) {
                let domain = self.ingress_domains.first().map_or("localhost", String::as_str);
                return Err(ApiError::new(
                    Reason::Forbidden,
                    format!(
                        "spec.ingressHosts: namespace {ns} may not claim {host}: it owns *.{ns}.{domain} and what its Namespace's spec.ingressHosts grants"
                    ),
                ));
            }
        }
        let (_, others) = store.reader().list(&ObjectKey::prefix(Kind::Service.plural(), None))?;
        for bytes in others {
            let Ok(other) = serde_json::from_slice::<Service>(&bytes) else { continue };
            let other_ns = other.metadata.namespace.as_ref().map_or("default", |n| n.as_str());
            if other_ns == ns && other.metadata.name.as_str() == name {
                continue;
            }
            if let Some(host) = service.spec.ingress_hosts.iter().find(|h| other.spec.ingress_hosts.contains(h)) {
                return Err(ApiError::new(
                    Reason::Conflict,
                    format!("spec.ingressHosts: {host} is claimed by service {other_ns}/{}", other.metadata.name),
                ));
            }
        }
        Ok(())
    }
}

/// Whether the stored object `bytes` holds `source` as its module's source beside `module`
/// (at `field`, e.g. `spec.template.module`).
fn kept_source(bytes: &[u8], source: &str, module: &str, field: &str) -> bool {
    let Ok(stored) = serde_json::from_slice::<serde_json::Value>(bytes) else { return false };
    let pointer = format!("/{}", field.replace('.', "/"));
    stored
        .pointer(&format!("/metadata/annotations/{}", MODULE_SOURCE_ANNOTATION.replace('/', "~1")))
        .and_then(|v| v.as_str())
        == Some(source)
        && stored.pointer(&pointer).and_then(|v| v.as_str()) == Some(module)
}

/// The host of `host:port` (brackets of an IPv6 address dropped).
fn host_of(address: &str) -> &str {
    address.rsplit_once(':').map_or(address, |(host, _)| host).trim_matches(['[', ']'])
}

/// Which dimension of `reported` exceeds `ceiling`, if any.
fn raises(ceiling: &Capacity, reported: &Capacity) -> Option<&'static str> {
    if reported.instances > ceiling.instances {
        Some("instances")
    } else if reported.memory.0 > ceiling.memory.0 {
        Some("memory")
    } else if reported.cpu.0 > ceiling.cpu.0 {
        Some("cpu")
    } else {
        None
    }
}

/// A node writing its own Node: its addresses name the host its certificate was issued for
/// (fixed at its first join; the ports may change), and once the Node exists its labels and
/// cordon are the operator's (`shoal node --labels` sets them at the first registration).
fn fence_node(store: &Store, node: &Node) -> Result<(), ApiError> {
    let name = node.metadata.name.as_str();
    let refuse = |what: String| Err(ApiError::new(Reason::Forbidden, format!("node {name} may not {what}")));
    if let Some(fixed) = registration::read(store, name)?.and_then(|r| r.host) {
        for (field, address) in [("address", &node.spec.address), ("agentAddress", &node.spec.agent_address)] {
            if !address.is_empty() && host_of(address) != fixed {
                return refuse(format!("set spec.{field} to {address}: it joined as {fixed}"));
            }
        }
    }
    let Some(bytes) = store.reader().get(&ObjectKey::new(Kind::Node.plural(), None, name))? else { return Ok(()) };
    let stored: Node = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(Reason::Internal, format!("stored node {name} is damaged: {e}")))?;
    if stored.metadata.labels != node.metadata.labels {
        return refuse("change its labels (an admin may)".into());
    }
    if stored.spec.unschedulable != node.spec.unschedulable {
        return refuse("change spec.unschedulable (an operator's cordon)".into());
    }
    if stored.spec.draining != node.spec.draining {
        return refuse("change spec.draining (an operator's drain)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_owns_one_label_under_itself_in_each_ingress_domain() {
        let admission =
            Admission { ingress_domains: vec!["localhost".into(), "apps.example.com".into()], ..Default::default() };
        assert!(admission.owns("shop", "www.shop.localhost"));
        assert!(admission.owns("shop", "www.shop.apps.example.com"));
        assert!(!admission.owns("shop", "shop.localhost"));
        assert!(!admission.owns("shop", "a.b.shop.localhost"));
        assert!(!admission.owns("shop", "pay.alpha.localhost"));
        assert!(!admission.owns("shop", "www.xshop.localhost"));
        assert!(!admission.owns("shop", "www.shop.example.com"));
    }
}
