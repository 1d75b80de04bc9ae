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
use shoal_api::resources::instance::{ExitInfo, Instance, InstanceStatus, LIVENESS_FAILED, Phase, STARTUP_FAILED};
use shoal_api::resources::workload::{HttpProbe, RestartPolicy, WorkloadType};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::hosted::{Hosted, Usage};
use super::modules::{Code, Compiled};
use super::probes::Streak;
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

/// The exit reason of a command run stopped for writing nothing for its liveness timeout.
pub const LIVENESS_TIMEOUT: &str = "LivenessTimeout";

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
    usage: Arc<Usage>,
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
        let (gate, cpu) = (self.shared.proxy.guest_slots.clone(), self.usage.cpu.clone());
        sandbox.turns = Some(Turns { gate, namespace: namespace.into(), cpu });
        // One limit for all its requests in flight, not one each, and what they hold counted.
        sandbox.memory_pool = Some(self.usage.memory.clone());
        sandbox
    }

    /// The module, compiled; retried while fetching fails; `None` if it cannot ever run (the
    /// instance is then Failed) or the instance was stopped.
    async fn program(&self) -> Option<Compiled> {
        let mut delay = BACKOFF_START;
        loop {
            match self.shared.modules.get(&self.instance.spec.module).await {
                Ok(compiled) => {
                    self.update(|s| {
                        s.reason.clear();
                        s.message.clear();
                    });
                    return Some(compiled);
                }
                Err(e) if e.is_transient() => {
                    tracing::info!("{}: {e}; retrying in {delay:?}", self.instance.metadata.name);
                    // Pending, and saying why, until the module is had.
                    self.update(|s| {
                        s.phase = Phase::Pending;
                        s.reason = e.reason().into();
                        s.message = e.to_string();
                    });
                    self.event(e.reason(), e.to_string(), EventType::Warning);
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
        // The instance's memory pool is its own (its usage's), whichever code serves it.
        let mut sandbox = self.sandbox(values);
        let timeout = self.instance.spec.request_timeout_ms.map_or(self.shared.request_timeout, Duration::from_millis);
        sandbox.limits.timeout = Some(timeout);
        let in_flight = self.instance.spec.concurrency.unwrap_or(self.shared.instance_concurrency);
        let gate = match before {
            Some(before) => before.gate.clone(),
            None => Arc::new(Gate::new(in_flight, self.shared.instance_queue)),
        };
        let meter = self.shared.proxy.loads.meter(&route_key(&self.instance));
        let (instance, answered) = (self.instance.metadata.name.to_string(), self.usage.answered.clone());
        Ok(Arc::new(Endpoint { instance, app, sandbox, gate, meter, answered }))
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
        let probes = &self.instance.spec.probes;
        if let Some(startup) = &probes.startup
            && !self.start_up(&endpoint, startup).await
        {
            return;
        }
        // Ready at once, or, with a readiness probe, while it answers 2xx (out of the routing
        // table once it failed `failureThreshold` times in a row); replaced once the liveness
        // probe failed that often. Better code for the module replaces the endpoint in place.
        let readiness = probes.readiness.clone().map(|p| (Streak::new(p.failure_threshold), p));
        let liveness = probes.liveness.clone().map(|p| (Streak::new(p.failure_threshold), p));
        let (mut readiness, mut liveness) = (readiness, liveness);
        let started = tokio::time::Instant::now();
        let (mut next_readiness, mut next_liveness) = (started, started);
        let (mut ready, mut upgrades) = (false, true);
        loop {
            let now = tokio::time::Instant::now();
            if now >= next_readiness {
                let passed = match &mut readiness {
                    None => true,
                    Some((streak, probe)) => {
                        next_readiness = now + probe.period.0;
                        let passed = self.check(&endpoint, probe, "readiness").await;
                        let tripped = streak.record(passed);
                        // In at the first pass; out only once it failed the threshold in a row.
                        passed || (!tripped && ready)
                    }
                };
                if passed != ready {
                    ready = passed;
                    if ready {
                        self.shared.proxy.routes.ready(&key, endpoint.clone());
                    } else {
                        self.shared.proxy.routes.unready(&key, &name);
                        let (streak, probe) = readiness.as_ref().expect("only a probe makes it unready");
                        let message =
                            format!("readiness probe GET {} failed {} times in a row", probe.path, streak.failures());
                        self.event("Unhealthy", message, EventType::Warning);
                    }
                    self.update(|s| s.ready = ready);
                }
            }
            if let Some((streak, probe)) = &mut liveness
                && now >= next_liveness
            {
                next_liveness = now + probe.period.0;
                let passed = self.check(&endpoint, probe, "liveness").await;
                if streak.record(passed) {
                    let message = format!(
                        "liveness probe GET {} failed {} times in a row; the instance is replaced",
                        probe.path,
                        streak.failures()
                    );
                    return self.give_up(LIVENESS_FAILED, message);
                }
            }
            let wake = match (&readiness, &liveness) {
                (None, None) => None,
                (Some(_), None) => Some(next_readiness),
                (None, Some(_)) => Some(next_liveness),
                (Some(_), Some(_)) => Some(next_readiness.min(next_liveness)),
            };
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep_until(wake.unwrap_or(now)), if wake.is_some() => {}
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

    /// Runs the startup probe until it passes (true), or until it failed `failureThreshold`
    /// times in a row (false: the instance has been given up on) or the instance is stopped.
    async fn start_up(&self, endpoint: &Endpoint, probe: &HttpProbe) -> bool {
        let mut streak = Streak::new(probe.failure_threshold);
        loop {
            let passed = self.check(endpoint, probe, "startup").await;
            if passed {
                return true;
            }
            if streak.record(false) {
                let message = format!(
                    "startup probe GET {} failed {} times in a row; the instance is replaced",
                    probe.path,
                    streak.failures()
                );
                self.give_up(STARTUP_FAILED, message);
                return false;
            }
            if !self.pause(probe.period.0).await {
                return false;
            }
        }
    }

    /// Whether `probe` passes now (a 2xx).
    async fn check(&self, endpoint: &Endpoint, probe: &HttpProbe, which: &str) -> bool {
        match endpoint.app.probe(&probe.path, &probe_sandbox(&endpoint.sandbox)).await {
            Ok(status) => (200..300).contains(&status),
            Err(e) => {
                tracing::info!("{}: {which} probe {}: {e}", self.instance.metadata.name, probe.path);
                false
            }
        }
    }

    /// Ends the instance for failing a probe: Failed with `reason`, which its workload
    /// replaces; an `Unhealthy` Event says why.
    fn give_up(&self, reason: &str, message: String) {
        tracing::info!("{}: {message}", self.instance.metadata.name);
        self.event("Unhealthy", message.clone(), EventType::Warning);
        self.update(|s| {
            s.phase = Phase::Failed;
            s.ready = false;
            s.reason = reason.into();
            s.message.clone_from(&message);
            s.last_exit = Some(ExitInfo { code: None, reason: reason.into(), message, finished_at: Some(now()) });
        });
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
            // With a liveness timeout, a run that writes nothing for that long is stopped
            // (dropping its future stops the guest at its next epoch).
            let quiet = silence(self.logs.subscribe(), self.instance.spec.probes.liveness_timeout.map(|d| d.0));
            tokio::pin!(quiet);
            let exit = tokio::select! {
                _ = self.cancel.cancelled() => return,
                exit = &mut running => Some(exit),
                () = &mut quiet => None,
                _ = tokio::time::sleep(COMMAND_READY_AFTER) => {
                    self.update(|s| s.ready = true);
                    tokio::select! {
                        _ = self.cancel.cancelled() => return,
                        exit = &mut running => Some(exit),
                        () = &mut quiet => None,
                    }
                }
            };
            let info = match &exit {
                None => {
                    let limit = self.instance.spec.probes.liveness_timeout.map_or(Duration::ZERO, |d| d.0);
                    let message = format!(
                        "wrote no output for {} (probes.livenessTimeout); stopped",
                        humantime::format_duration(limit)
                    );
                    self.event("Unhealthy", message.clone(), EventType::Warning);
                    ExitInfo { code: None, reason: LIVENESS_TIMEOUT.into(), message, ..Default::default() }
                }
                Some(Ok(Exit::Code(0))) => ExitInfo { code: Some(0), reason: "Completed".into(), ..Default::default() },
                Some(Ok(Exit::Code(code))) => {
                    ExitInfo { code: Some(*code), reason: "Error".into(), ..Default::default() }
                }
                Some(Ok(Exit::Stopped { reason, message })) => {
                    ExitInfo { code: None, reason: reason.to_string(), message: message.clone(), ..Default::default() }
                }
                Some(Err(e)) => {
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
            self.usage.restarted();
            // What the run that ended wrote is the previous run's now (`logs --previous`).
            self.logs.rotate();
        }
    }
}

/// Completes once `output` has not changed for `limit` (never without a limit, or once the
/// output can no longer change).
async fn silence(mut output: watch::Receiver<u64>, limit: Option<Duration>) {
    let Some(limit) = limit else { return std::future::pending().await };
    loop {
        match tokio::time::timeout(limit, output.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => return,
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
pub async fn run(shared: Arc<Shared>, instance: Instance, hosted: Hosted, cancel: CancellationToken) {
    let initial = instance.status.clone().unwrap_or_default();
    let (status, receiver) = watch::channel(InstanceStatus { phase: Phase::Pending, ready: false, ..initial });
    let reporter =
        tokio::spawn(report::push_status(shared.reports.clone(), instance.clone(), receiver, cancel.clone()));
    let key = route_key(&instance);
    let is_http = instance.spec.type_ == WorkloadType::Http;
    if is_http {
        shared.proxy.routes.join(&key, &instance.metadata.labels);
    }
    let run = Run { shared: shared.clone(), instance, status, logs: hosted.logs, usage: hosted.usage, cancel };
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
