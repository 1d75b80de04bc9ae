//! The Job controller: runs a Job's command to `completions` successes, `parallelism` at a
//! time; counts each failed run against `backoffLimit`, starting the next after a back-off that
//! doubles per failure (from `--job-backoff`, capped at six minutes, as Kubernetes does); fails
//! the Job past its `activeDeadline` (stopping its runs); and deletes it `ttlAfterFinished`
//! after it finished (its instances go with it, collected as any owner's).
//!
//! Each run is an Instance with `restartPolicy: Never`, owned by the Job, so that a run that
//! failed stays failed (and keeps its log) and the count of failures is what the store shows.
//! A reconcile reads the time it is given, so its rules are tested with any clock.

use std::time::{Duration, SystemTime};

use shoal_api::meta::OwnerReference;
use shoal_api::resources::Condition;
use shoal_api::resources::event::{EventType, ObjectReference, new_event};
use shoal_api::resources::instance::{Instance, InstanceSpec, Phase};
use shoal_api::resources::job::{COMPLETE, FAILED, JOB_LABEL, Job, JobStatus};
use shoal_api::resources::namespace::NamespaceKind;
use shoal_api::resources::workload::{RestartPolicy, WorkloadType};
use shoal_api::{AnyObject, Kind, Object};

use super::cache::{Allocated, Cache};
use super::quota;
use super::workload::{MAX_CREATES_PER_PASS, instance_name};
use super::writes::{Action, Write};
use crate::store::UpdateScope;

/// The longest back-off between failed runs.
pub const MAX_BACKOFF: Duration = Duration::from_secs(360);

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

fn parse_time(text: Option<&str>) -> Option<SystemTime> {
    text.and_then(|t| humantime::parse_rfc3339(t).ok())
}

/// The instance spec each run of `job` gets.
fn run_spec(job: &Job) -> InstanceSpec {
    let t = &job.spec.template;
    InstanceSpec {
        module: t.module.clone(),
        type_: WorkloadType::Command,
        resources: t.resources.clone(),
        env: t.env.clone(),
        files: t.files.clone(),
        wasi_config: t.wasi_config.clone(),
        args: t.args.clone(),
        restart_policy: RestartPolicy::Never,
        allowed_outbound_hosts: t.allowed_outbound_hosts.clone(),
        node_selector: t.node_selector.clone(),
        singleton: false,
        ..InstanceSpec::default()
    }
}

fn new_run(job: &Job, allow_private_egress: bool) -> Instance {
    let base = job.metadata.name.as_str();
    let mut spec = run_spec(job);
    spec.allow_private_egress = allow_private_egress;
    let mut run = Object::new(instance_name(&job.metadata.name), job.metadata.namespace.clone(), spec);
    run.metadata.labels = job.metadata.labels.clone();
    run.metadata.labels.insert(JOB_LABEL.into(), base.to_owned());
    run.metadata.owner_references = vec![OwnerReference {
        kind: Kind::Job,
        name: job.metadata.name.clone(),
        uid: job.metadata.uid.clone().unwrap_or_default(),
    }];
    run
}

/// Whether `instance` is a run of `job` (by its uid).
fn runs_of<'a>(cache: &'a Cache, key: &str, job: &'a Job) -> impl Iterator<Item = &'a Instance> + 'a {
    let uid = job.metadata.uid.clone();
    cache
        .instances_of(key)
        .filter(move |i| i.metadata.owner_references.first().is_some_and(|o| uid.as_deref().is_none_or(|u| u == o.uid)))
}

fn event(job: &Job, reason: &str, message: String, type_: EventType, now: SystemTime) -> Write {
    let involved =
        ObjectReference { kind: Kind::Job, namespace: job.metadata.namespace.clone(), name: job.metadata.name.clone() };
    Write::Upsert(AnyObject::Event(new_event(involved, reason, message, type_, rfc3339(now))))
}

/// Reconciles the Job at `key` at `now`; `backoff` is the first delay after a failed run, and
/// `in_flight` what creates decided earlier already take of its namespace's quota.
pub fn reconcile(cache: &Cache, key: &str, backoff: Duration, in_flight: Allocated, now: SystemTime) -> Action {
    let Some(job) = cache.jobs.get(key) else { return Action::none() };
    if let Some(owner) = job.metadata.owner_references.first().filter(|o| o.kind == Kind::CronJob) {
        // Made by a CronJob that is gone (or is another now): it goes too.
        let ns = job.metadata.namespace.as_ref().map_or("default", |n| n.as_str());
        let cron = cache.cronjobs.get(&format!("cronjobs/{ns}/{}", owner.name));
        if cron.is_none_or(|c| c.metadata.uid.as_deref().is_some_and(|u| u != owner.uid)) {
            return Action::writes(vec![Write::delete(job)]);
        }
    }
    let runs: Vec<&Instance> = runs_of(cache, key, job).collect();
    let succeeded = runs.iter().filter(|i| i.phase() == Phase::Succeeded).count() as u32;
    let failed: Vec<&Instance> = runs.iter().copied().filter(|i| i.phase() == Phase::Failed).collect();
    let active: Vec<&Instance> = runs.iter().copied().filter(|i| !i.phase().is_terminal()).collect();
    let before = job.status.clone().unwrap_or_default();
    let start = parse_time(before.start_time.as_deref()).unwrap_or(now);
    let mut status = JobStatus {
        active: active.len() as u32,
        succeeded,
        failed: failed.len() as u32,
        start_time: Some(rfc3339(start)),
        completion_time: before.completion_time.clone(),
        conditions: before.conditions.clone(),
    };
    let mut writes = Vec::new();
    let mut requeue_after: Option<Duration> = None;
    let mut look_again = |after: Duration| requeue_after = Some(requeue_after.map_or(after, |r| r.min(after)));

    if let Some(done) = job.finished() {
        // Finished: stop what still runs, and go when the time to live is up.
        writes.extend(active.iter().map(|i| Write::delete(*i)));
        if let Some(ttl) = job.spec.ttl_after_finished {
            let finished = parse_time(status.completion_time.as_deref().or(done.last_transition_time.as_deref()));
            let expires = finished.unwrap_or(now) + ttl.0;
            match expires.duration_since(now) {
                Ok(left) if !left.is_zero() => look_again(left),
                _ => return Action::writes(vec![Write::delete(job)]),
            }
        }
    } else {
        let deadline = job.spec.active_deadline.map(|d| start + d.0);
        let outcome = if succeeded >= job.spec.completions {
            Some((COMPLETE, "Completed", format!("{succeeded} of {} runs succeeded", job.spec.completions)))
        } else if status.failed > job.spec.backoff_limit {
            let message = format!("{} runs failed, more than backoffLimit {}", status.failed, job.spec.backoff_limit);
            Some((FAILED, "BackoffLimitExceeded", message))
        } else if deadline.is_some_and(|d| now >= d) {
            let limit = job.spec.active_deadline.expect("a deadline");
            Some((FAILED, "DeadlineExceeded", format!("still running after activeDeadline {limit}")))
        } else {
            None
        };
        match outcome {
            Some((type_, reason, message)) => {
                writes.extend(active.iter().map(|i| Write::delete(*i)));
                status.completion_time = Some(rfc3339(now));
                status.conditions.push(Condition {
                    type_: type_.into(),
                    status: "True".into(),
                    reason: reason.into(),
                    message: message.clone(),
                    last_transition_time: Some(rfc3339(now)),
                });
                let kind = if type_ == COMPLETE { EventType::Normal } else { EventType::Warning };
                writes.push(event(job, reason, message, kind, now));
                if let Some(ttl) = job.spec.ttl_after_finished {
                    look_again(ttl.0);
                }
            }
            None => {
                if let Some(left) = deadline.and_then(|d| d.duration_since(now).ok()) {
                    look_again(left);
                }
                let remaining = job.spec.completions - succeeded;
                let wanted = job.spec.parallelism.min(remaining) as usize;
                let mut create = wanted.saturating_sub(active.len()).min(MAX_CREATES_PER_PASS);
                // After a failure, the next run waits its back-off (doubling per failure).
                if create > 0 && !failed.is_empty() {
                    let exponent = (failed.len() as u32 - 1).min(16);
                    let delay = backoff.saturating_mul(1 << exponent).min(MAX_BACKOFF);
                    let last = failed
                        .iter()
                        .filter_map(|i| {
                            let exit = i.status.as_ref()?.last_exit.as_ref()?;
                            parse_time(exit.finished_at.as_deref())
                        })
                        .max()
                        .unwrap_or(start);
                    if let Ok(left) = (last + delay).duration_since(now)
                        && !left.is_zero()
                    {
                        look_again(left);
                        create = 0;
                    }
                }
                let ns = job.metadata.namespace.as_ref().map_or("default", |n| n.as_str());
                let namespace = cache.namespace(ns);
                let admitted = match namespace.and_then(|n| n.spec.quota.as_ref()) {
                    _ if namespace.is_some_and(NamespaceKind::is_terminating) => 0,
                    Some(q) => {
                        let admitted =
                            quota::admit(q, cache.usage(ns).plus(in_flight), &job.spec.template.resources, create);
                        if let Some(refused) = admitted.refused {
                            writes.push(event(job, "FailedCreate", refused, EventType::Warning, now));
                        }
                        admitted.count
                    }
                    None => create,
                };
                let private = namespace.is_some_and(|n| n.spec.allow_private_egress);
                writes.extend((0..admitted).map(|_| Write::Create(AnyObject::Instance(new_run(job, private)))));
            }
        }
    }
    if job.status.as_ref() != Some(&status) {
        let mut updated = job.clone();
        updated.status = Some(status);
        writes.push(Write::Update(AnyObject::Job(updated), UpdateScope::Status));
    }
    Action { writes, requeue_after }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::Fixture;
    use super::*;
    use shoal_api::Name;
    use shoal_api::resources::instance::{ExitInfo, InstanceStatus};

    const KEY: &str = "jobs/default/batch";

    fn job(spec: serde_json::Value) -> Job {
        let mut spec = spec;
        spec["template"] = serde_json::json!({"module": "sha256:00"});
        serde_json::from_value(serde_json::json!({
            "apiVersion": "shoal.dev/v1", "kind": "Job",
            "metadata": {"name": "batch", "namespace": "default", "uid": "uid-batch", "resourceVersion": 1},
            "spec": spec,
        }))
        .unwrap()
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    /// Adds a run of `job` that ended (or runs, with `None`) at `finished` seconds.
    fn run(f: &mut Fixture, job: &Job, name: &str, phase: Phase, finished: Option<u64>) {
        let mut i = new_run(job, false);
        i.metadata.name = Name::new(name).unwrap();
        i.metadata.resource_version = Some(2);
        let exit = finished.map(|s| ExitInfo { finished_at: Some(rfc3339(at(s))), ..Default::default() });
        i.status = Some(InstanceStatus { phase, last_exit: exit, ..Default::default() });
        f.instance(i);
    }

    fn created(action: &Action) -> usize {
        action.writes.iter().filter(|w| matches!(w, Write::Create(AnyObject::Instance(_)))).count()
    }

    fn status(action: &Action) -> Option<JobStatus> {
        action.writes.iter().find_map(|w| match w {
            Write::Update(AnyObject::Job(j), _) => j.status.clone(),
            _ => None,
        })
    }

    fn with_status(mut job: Job, action: &Action) -> Job {
        job.status = status(action);
        job
    }

    #[test]
    fn runs_go_parallelism_at_a_time_until_completions_succeed() {
        let j = job(serde_json::json!({"completions": 3, "parallelism": 2}));
        let mut f = Fixture::default();
        f.cache.put_job(KEY, Some(j.clone()), &mut f.tasks);
        let first = reconcile(&f.cache, KEY, Duration::from_secs(10), Allocated::default(), at(0));
        assert_eq!(created(&first), 2);
        let j = with_status(j, &first);
        f.cache.put_job(KEY, Some(j.clone()), &mut f.tasks);
        run(&mut f, &j, "batch-a", Phase::Succeeded, Some(1));
        run(&mut f, &j, "batch-b", Phase::Running, None);
        let second = reconcile(&f.cache, KEY, Duration::from_secs(10), Allocated::default(), at(2));
        assert_eq!(created(&second), 1, "two left to succeed: two run");
        run(&mut f, &j, "batch-c", Phase::Running, None);
        run(&mut f, &j, "batch-b", Phase::Succeeded, Some(3));
        let third = reconcile(&f.cache, KEY, Duration::from_secs(10), Allocated::default(), at(4));
        assert_eq!(created(&third), 0, "one left, and it runs");
        run(&mut f, &j, "batch-c", Phase::Succeeded, Some(5));
        let done = reconcile(&f.cache, KEY, Duration::from_secs(10), Allocated::default(), at(6));
        let s = status(&done).unwrap();
        assert_eq!((s.succeeded, s.active, s.failed), (3, 0, 0));
        assert_eq!(s.conditions[0].type_, COMPLETE);
        assert_eq!(s.start_time, Some(rfc3339(at(0))), "the start is kept");
    }

    #[test]
    fn a_failed_run_is_retried_after_a_doubling_back_off_until_the_limit() {
        let j = job(serde_json::json!({"backoffLimit": 1}));
        let mut f = Fixture::default();
        let j = with_status(j.clone(), &{
            f.cache.put_job(KEY, Some(j.clone()), &mut f.tasks);
            reconcile(&f.cache, KEY, Duration::from_secs(10), Allocated::default(), at(0))
        });
        f.cache.put_job(KEY, Some(j.clone()), &mut f.tasks);
        run(&mut f, &j, "batch-a", Phase::Failed, Some(100));
        let waiting = reconcile(&f.cache, KEY, Duration::from_secs(10), Allocated::default(), at(105));
        assert_eq!(created(&waiting), 0);
        assert_eq!(waiting.requeue_after, Some(Duration::from_secs(5)), "10 s after the failure");
        let retry = reconcile(&f.cache, KEY, Duration::from_secs(10), Allocated::default(), at(110));
        assert_eq!(created(&retry), 1);
        run(&mut f, &j, "batch-b", Phase::Failed, Some(120));
        let failed = reconcile(&f.cache, KEY, Duration::from_secs(10), Allocated::default(), at(121));
        let s = status(&failed).unwrap();
        assert_eq!((s.failed, s.conditions[0].type_.as_str()), (2, FAILED));
        assert_eq!(s.conditions[0].reason, "BackoffLimitExceeded");
        assert_eq!(created(&failed), 0);
    }

    #[test]
    fn the_active_deadline_stops_its_runs_and_a_finished_job_goes_after_its_ttl() {
        let j = job(
            serde_json::json!({"activeDeadline": "30s", "ttlAfterFinished": "60s", "parallelism": 2, "completions": 2}),
        );
        let mut f = Fixture::default();
        f.cache.put_job(KEY, Some(j.clone()), &mut f.tasks);
        let first = reconcile(&f.cache, KEY, Duration::from_secs(10), Allocated::default(), at(0));
        assert_eq!(first.requeue_after, Some(Duration::from_secs(30)), "looked at again at its deadline");
        let j = with_status(j, &first);
        f.cache.put_job(KEY, Some(j.clone()), &mut f.tasks);
        run(&mut f, &j, "batch-a", Phase::Running, None);
        run(&mut f, &j, "batch-b", Phase::Running, None);
        let late = reconcile(&f.cache, KEY, Duration::from_secs(10), Allocated::default(), at(30));
        let s = status(&late).unwrap();
        assert_eq!(s.conditions[0].reason, "DeadlineExceeded");
        let deletes = late.writes.iter().filter(|w| matches!(w, Write::Delete(..))).count();
        assert_eq!(deletes, 2, "its runs are stopped");
        let j = with_status(j, &late);
        f.cache.put_job(KEY, Some(j.clone()), &mut f.tasks);
        f.remove_instance("batch-a").remove_instance("batch-b");
        let kept = reconcile(&f.cache, KEY, Duration::from_secs(10), Allocated::default(), at(50));
        assert!(kept.writes.iter().all(|w| matches!(w, Write::Update(..))), "only its counts change");
        assert_eq!(kept.requeue_after, Some(Duration::from_secs(40)));
        let gone = reconcile(&f.cache, KEY, Duration::from_secs(10), Allocated::default(), at(90));
        assert!(matches!(gone.writes.as_slice(), [Write::Delete(key, _)] if key.0 == KEY));
    }
}
