//! One instance on this node, from start to stop: fetch and compile its module, then
//! - `http`: prepare the component once, register it with the ingress, and serve until stopped
//!   (every request in a fresh store, so there is nothing to restart);
//! - `command`: run it, and when it exits, restart it as its `restartPolicy` says, after an
//!   exponential back-off (the phase shows `CrashLoopBackOff` meanwhile).
//!
//! Status goes to the control plane through [`report::push_status`]; stdout and stderr into
//! the instance's bounded log buffer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_api::resources::event::EventType;
use shoal_api::resources::instance::{ExitInfo, Instance, InstanceStatus, Phase};
use shoal_api::resources::workload::{RestartPolicy, WorkloadType};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::modules::{Code, Compiled};
use super::report::{self, now};
use super::values::{self, Values};
use crate::proxy::calls::InstanceCluster;
use crate::proxy::routes::{Endpoint, Gate};
use crate::runtime::command::{self, Exit};
use crate::runtime::fair::Turns;
use crate::runtime::host::{Output, Sandbox};
use crate::runtime::limits::Limits;
use crate::runtime::log::LogBuffer;

/// The reason a Pending instance shows, and its Event's, while its values cannot be had.
pub const VALUES_UNAVAILABLE: &str = "ValuesUnavailable";

/// First restart delay of a command that exited.
pub const BACKOFF_START: Duration = Duration::from_millis(250);
/// Longest restart delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A run this long resets the back-off: the instance was healthy for a while.
pub const BACKOFF_RESET: Duration = Duration::from_secs(10);

/// A command instance counts as ready once it has run this long without exiting, so that one
/// that dies at once never counts as available (a rollout of it does not succeed by accident).
pub const COMMAND_READY_AFTER: Duration = Duration::from_secs(1);

/// The routing key of an instance: `(namespace, workload)`, the instance's own name standing in
/// for a workload when it has none.
pub fn route_key(instance: &Instance) -> (String, String) {
    let ns = instance.metadata.namespace.as_ref().map_or("default", |n| n.as_str()).to_owned();
    let workload = instance.spec.workload.as_ref().unwrap_or(&instance.metadata.name).to_string();
    (ns, workload)
}

struct Run {
    shared: Arc<Shared>,
    instance: Instance,
    status: watch::Sender<InstanceStatus>,
    logs: LogBuffer,
    cancel: CancellationToken,
}

impl Run {
    fn update(&self, change: impl FnOnce(&mut InstanceStatus)) {
        self.status.send_modify(change);
    }

    fn event(&self, reason: &'static str, message: String, type_: EventType) {
        self.shared.events.record(&self.instance, reason, message, type_);
    }

    /// Waits `delay`, or returns false if stopped meanwhile.
    async fn pause(&self, delay: Duration) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }

    /// The cluster as this instance's guest calls it; refused calls become Events on it.
    fn cluster(&self) -> Arc<InstanceCluster> {
        let (events, instance) = (self.shared.events.clone(), self.instance.clone());
        let refusals: crate::proxy::calls::Refusals =
            Arc::new(move |message| events.record(&instance, "OutboundDenied", message, EventType::Warning));
        let namespace = self.instance.metadata.namespace.as_ref().map_or("default", |n| n.as_str());
        InstanceCluster::new(&self.shared.proxy, namespace, self.instance.metadata.name.as_str(), refusals)
    }

    fn sandbox(&self, values: &Values) -> Sandbox {
        let spec = &self.instance.spec;
        let mut sandbox = Sandbox::new(&route_key(&self.instance).1);
        sandbox.args.extend(spec.args.iter().cloned());
        sandbox.env.clone_from(&values.env);
        sandbox.dirs.clone_from(&values.dirs);
        sandbox.wasi_config = Arc::new(values.wasi_config.iter().cloned().collect());
        sandbox.stdout = Output::Buffer(self.logs.clone());
        sandbox.stderr = Output::Buffer(self.logs.clone());
        sandbox.allowed_hosts = spec.allowed_outbound_hosts.clone();
        sandbox.allow_private_egress = spec.allow_private_egress;
        sandbox.cluster = Some(self.cluster());
        sandbox.limits = Limits {
            memory: spec.resources.memory.map(|m| m.0),
            cpu_millis: spec.resources.cpu.map(|c| c.0),
            timeout: None,
        };
        // Its turns on the node's threads, as a guest of its namespace.
        let namespace = self.instance.metadata.namespace.as_ref().map_or("default", |n| n.as_str());
        sandbox.turns = Some(Turns { gate: self.shared.proxy.guest_slots.clone(), namespace: namespace.into() });
        // One limit for all its requests in flight, not one each.
        sandbox.memory_pool = spec.resources.memory.map(|m| crate::runtime::limits::MemoryPool::new(m.0));
        sandbox
    }

    /// The module, compiled; retried while fetching fails; `None` if it cannot ever run (the
    /// instance is then Failed) or the instance was stopped.
    async fn program(&self) -> Option<Compiled> {
        let mut delay = BACKOFF_START;
        loop {
            match self.shared.modules.get(&self.instance.spec.module).await {
                Ok(compiled) => return Some(compiled),
                Err(e) if e.is_transient() => {
                    tracing::info!("{}: {e}; retrying in {delay:?}", self.instance.metadata.name);
                    self.event("FailedFetch", e.to_string(), EventType::Warning);
                    if !self.pause(delay).await {
                        return None;
                    }
                    delay = (delay * 2).min(BACKOFF_CAP);
                }
                Err(e) => {
                    self.fail("InvalidModule", e.to_string());
                    return None;
                }
            }
        }
    }

    /// Its values from Secrets and Configs (asked of the control plane when it names any),
    /// asked again after a back-off while they cannot be had; `None` if stopped meanwhile. While
    /// it waits, it is Pending with the reason `ValuesUnavailable` and a message that names
    /// what is missing, and an Event says the same.
    async fn values(&self) -> Option<Values> {
        let (ns, name) = (route_key(&self.instance).0, self.instance.metadata.name.to_string());
        let mut delay = BACKOFF_START;
        loop {
            let fetched = if self.instance.spec.takes_values() {
                self.shared.client.instance_values(&ns, &name).await.map_err(|e| e.to_string())
            } else {
                Ok(values::literal(&self.instance))
            };
            let made = fetched.and_then(|v| {
                values::materialize(&self.shared.values_dir, &ns, &name, v)
                    .map_err(|e| format!("writing its files: {e}"))
            });
            match made {
                Ok(values) => {
                    self.update(|s| {
                        s.reason.clear();
                        s.message.clear();
                    });
                    return Some(values);
                }
                Err(message) => {
                    tracing::info!("{name}: its values: {message}; asking again in {delay:?}");
                    self.update(|s| {
                        s.phase = Phase::Pending;
                        s.reason = VALUES_UNAVAILABLE.into();
                        s.message.clone_from(&message);
                    });
                    self.event(VALUES_UNAVAILABLE, message, EventType::Warning);
                    if !self.pause(delay).await {
                        return None;
                    }
                    delay = (delay * 2).min(BACKOFF_CAP);
                }
            }
        }
    }

    fn fail(&self, reason: &str, message: String) {
        tracing::warn!("{}: {reason}: {message}", self.instance.metadata.name);
        self.update(|s| {
            s.phase = Phase::Failed;
            s.ready = false;
            s.last_exit = Some(ExitInfo {
                code: None,
                reason: reason.into(),
                message: message.clone(),
                finished_at: Some(now()),
            });
        });
        self.event("Failed", message, EventType::Warning);
    }

    /// The routing endpoint for `code`, or why it cannot serve HTTP; one that replaces
    /// `before` (better code for the module) keeps its gate and its memory, so requests still
    /// in flight on the old code count against the same limits.
    fn endpoint(&self, code: &Code, before: Option<&Endpoint>, values: &Values) -> Result<Arc<Endpoint>, String> {
        let app = code.http_app(&self.shared.runtime)?;
        let mut sandbox = self.sandbox(values);
        if let Some(before) = before {
            sandbox.memory_pool.clone_from(&before.sandbox.memory_pool);
        }
        let timeout = self.instance.spec.request_timeout_ms.map_or(self.shared.request_timeout, Duration::from_millis);
        sandbox.limits.timeout = Some(timeout);
        let in_flight = self.instance.spec.concurrency.unwrap_or(self.shared.instance_concurrency);
        let gate = match before {
            Some(before) => before.gate.clone(),
            None => Arc::new(Gate::new(in_flight, self.shared.instance_queue)),
        };
        Ok(Arc::new(Endpoint { instance: self.instance.metadata.name.to_string(), app, sandbox, gate }))
    }

    async fn serve_http(&self, mut compiled: Compiled, values: &Values) {
        let first = compiled.borrow_and_update().clone();
        let mut endpoint = match self.endpoint(&first, None, values) {
            Ok(endpoint) => endpoint,
            Err(message) => return self.fail("InvalidModule", message),
        };
        let key = route_key(&self.instance);
        let name = self.instance.metadata.name.to_string();
        self.update(|s| {
            s.phase = Phase::Running;
            s.started_at = Some(now());
        });
        // Ready at once, or, with a readiness probe, while it answers 2xx (out of the routing
        // table while it does not). Better code for the module replaces the endpoint in place.
        let probe = self.instance.spec.probes.readiness.clone();
        let period = Duration::from_millis(probe.as_ref().map_or(1000, |p| p.period_ms).max(10));
        let (mut ready, mut upgrades) = (false, true);
        loop {
            let passed = match &probe {
                None => true,
                Some(probe) => match endpoint.app.probe(&probe.path, &probe_sandbox(&endpoint.sandbox)).await {
                    Ok(status) => (200..300).contains(&status),
                    Err(e) => {
                        tracing::info!("{name}: readiness probe {}: {e}", probe.path);
                        false
                    }
                },
            };
            if passed != ready {
                ready = passed;
                if ready {
                    self.shared.proxy.routes.ready(&key, endpoint.clone());
                } else {
                    self.shared.proxy.routes.unready(&key, &name);
                    let path = probe.as_ref().map_or("", |p| p.path.as_str());
                    self.event("Unhealthy", format!("readiness probe GET {path} failed"), EventType::Warning);
                }
                self.update(|s| s.ready = ready);
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(period), if probe.is_some() => {}
                changed = compiled.changed(), if upgrades => match changed {
                    Err(_) => upgrades = false,
                    Ok(()) => {
                        let better = compiled.borrow_and_update().clone();
                        match self.endpoint(&better, Some(&endpoint), values) {
                            Ok(upgraded) => {
                                endpoint = upgraded;
                                if ready {
                                    self.shared.proxy.routes.ready(&key, endpoint.clone());
                                }
                            }
                            Err(e) => tracing::warn!("{name}: the optimized code cannot serve: {e}"),
                        }
                    }
                },
            }
        }
    }

    async fn run_command(&self, compiled: Compiled, values: &Values) {
        let sandbox = self.sandbox(values);
        let mut delay = BACKOFF_START;
        loop {
            self.update(|s| {
                s.phase = Phase::Running;
                s.ready = false;
                s.started_at = Some(now());
            });
            let started = Instant::now();
            // Each start takes the best code there is by then.
            let program = compiled.borrow().program.clone();
            let running = command::run(&self.shared.runtime, &program, &sandbox);
            tokio::pin!(running);
            let exit = tokio::select! {
                _ = self.cancel.cancelled() => return,
                exit = &mut running => exit,
                _ = tokio::time::sleep(COMMAND_READY_AFTER) => {
                    self.update(|s| s.ready = true);
                    tokio::select! {
                        _ = self.cancel.cancelled() => return,
                        exit = &mut running => exit,
                    }
                }
            };
            let info = match &exit {
                Ok(Exit::Code(0)) => ExitInfo { code: Some(0), reason: "Completed".into(), ..Default::default() },
                Ok(Exit::Code(code)) => ExitInfo { code: Some(*code), reason: "Error".into(), ..Default::default() },
                Ok(Exit::Stopped { reason, message }) => {
                    ExitInfo { code: None, reason: reason.to_string(), message: message.clone(), ..Default::default() }
                }
                Err(e) => {
                    ExitInfo { code: None, reason: "StartError".into(), message: e.to_string(), ..Default::default() }
                }
            };
            let info = ExitInfo { finished_at: Some(now()), ..info };
            let failed = info.code != Some(0);
            let restart = match self.instance.spec.restart_policy {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => failed,
                RestartPolicy::Never => false,
            };
            if !restart {
                let phase = if failed { Phase::Failed } else { Phase::Succeeded };
                self.update(|s| {
                    s.phase = phase;
                    s.ready = false;
                    s.last_exit = Some(info);
                });
                return self.cancel.cancelled().await;
            }
            if started.elapsed() >= BACKOFF_RESET {
                delay = BACKOFF_START;
            }
            let summary = match info.code {
                Some(code) => format!("exited with code {code}"),
                None => format!("stopped ({}): {}", info.reason, info.message),
            };
            self.update(|s| {
                s.phase = Phase::CrashLoopBackOff;
                s.ready = false;
                s.last_exit = Some(info);
            });
            self.event(
                "BackOff",
                format!("{summary}; restarting in {}", humantime::format_duration(delay)),
                if failed { EventType::Warning } else { EventType::Normal },
            );
            if !self.pause(delay).await {
                return;
            }
            delay = (delay * 2).min(BACKOFF_CAP);
            self.update(|s| s.restarts += 1);
        }
    }
}

/// The sandbox a readiness probe runs in: the instance's, but with memory of its own, so that
/// requests filling the instance's memory make the probe no less ready (an instance taken out
/// of routing for being busy would turn a flood into an outage).
fn probe_sandbox(sandbox: &Sandbox) -> Sandbox {
    Sandbox { memory_pool: None, ..sandbox.clone() }
}

/// Runs `instance` until `cancel`.
pub async fn run(shared: Arc<Shared>, instance: Instance, logs: LogBuffer, cancel: CancellationToken) {
    let initial = instance.status.clone().unwrap_or_default();
    let (status, receiver) = watch::channel(InstanceStatus { phase: Phase::Pending, ready: false, ..initial });
    let reporter = tokio::spawn(report::push_status(shared.client.clone(), instance.clone(), receiver, cancel.clone()));
    let key = route_key(&instance);
    let is_http = instance.spec.type_ == WorkloadType::Http;
    if is_http {
        shared.proxy.routes.join(&key, &instance.metadata.labels);
    }
    let run = Run { shared: shared.clone(), instance, status, logs, cancel };
    if let Some(program) = run.program().await
        && let Some(values) = run.values().await
    {
        match run.instance.spec.type_ {
            WorkloadType::Http => run.serve_http(program, &values).await,
            WorkloadType::Command => run.run_command(program, &values).await,
        }
    }
    if is_http {
        shared.proxy.routes.leave(&key, run.instance.metadata.name.as_str());
    }
    run.cancel.cancelled().await;
    let _ = reporter.await;
}
