//! The CronJob controller: makes a Job at each scheduled time (read in the CronJob's time
//! zone), as its `concurrencyPolicy` says when the last one still runs; starts a run missed
//! while no leader was there once one is back (only the latest missed, and not one later than
//! `startingDeadline`); keeps `successfulJobsHistoryLimit` completed and
//! `failedJobsHistoryLimit` failed Jobs and deletes older ones; and asks to be looked at again
//! just after the next scheduled time.
//!
//! A Job is named `<cronjob>-<scheduled unix seconds>`, so a time is run at most once even if
//! two leaders in a row both decide it (the second create is a conflict that changes nothing).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_api::meta::OwnerReference;
use shoal_api::resources::cronjob::{ConcurrencyPolicy, CronJob, Schedule};
use shoal_api::resources::event::{EventType, ObjectReference, new_event};
use shoal_api::resources::job::{COMPLETE, Job};
use shoal_api::{AnyObject, Kind, Name, Object};

use super::cache::Cache;
use super::writes::{Action, Write};
use crate::store::UpdateScope;

/// How long after a scheduled time the controller wakes: the store's clock and the queue's
/// differ by rounding, and waking a hair early would find nothing due.
const WAKE_AFTER: Duration = Duration::from_millis(5);

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

fn parse_time(text: Option<&str>) -> Option<SystemTime> {
    text.and_then(|t| humantime::parse_rfc3339(t).ok())
}

fn new_job(cron: &CronJob, scheduled: SystemTime) -> Job {
    let secs = scheduled.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let name = Name::new(format!("{}-{secs}", cron.metadata.name)).expect("a CronJob name is short enough");
    let mut job = Object::new(name, cron.metadata.namespace.clone(), cron.spec.job_template.clone());
    job.metadata.labels = cron.metadata.labels.clone();
    job.metadata.owner_references = vec![OwnerReference {
        kind: Kind::CronJob,
        name: cron.metadata.name.clone(),
        uid: cron.metadata.uid.clone().unwrap_or_default(),
    }];
    job
}

/// Reconciles the CronJob at `key` at `now`.
pub fn reconcile(cache: &Cache, key: &str, now: SystemTime) -> Action {
    let Some(cron) = cache.cronjobs.get(key) else { return Action::none() };
    let spec = &cron.spec;
    let Ok(schedule) = Schedule::parse(&spec.schedule, spec.time_zone.as_deref()) else { return Action::none() };
    let uid = cron.metadata.uid.as_deref();
    let mut jobs: Vec<&Job> = cache
        .jobs_of(key)
        .map(|(_, j)| j)
        .filter(|j| j.metadata.owner_references.first().is_some_and(|o| uid.is_none_or(|u| u == o.uid)))
        .collect();
    jobs.sort_by_key(|j| j.metadata.name.to_string());
    let (finished, active): (Vec<&Job>, Vec<&Job>) = jobs.into_iter().partition(|j| j.finished().is_some());
    let mut active_names: Vec<Name> = active.iter().map(|j| j.metadata.name.clone()).collect();
    let mut writes = Vec::new();

    // History: the newest of each outcome are kept (names sort by scheduled time).
    let (complete, failed): (Vec<&Job>, Vec<&Job>) =
        finished.into_iter().partition(|j| j.finished().is_some_and(|c| c.type_ == COMPLETE));
    for (list, keep) in [(complete, spec.successful_jobs_history_limit), (failed, spec.failed_jobs_history_limit)] {
        let excess = list.len().saturating_sub(keep as usize);
        writes.extend(list[..excess].iter().map(|j| Write::delete(*j)));
    }

    let before = cron.status.clone().unwrap_or_default();
    let mut status = before.clone();
    let since = parse_time(before.last_schedule_time.as_deref())
        .or_else(|| parse_time(cron.metadata.creation_timestamp.as_deref()))
        .unwrap_or(now);
    let earliest = match spec.starting_deadline {
        Some(deadline) => since.max(now.checked_sub(deadline.0).unwrap_or(UNIX_EPOCH)),
        None => since,
    };
    let due = schedule.latest(now).filter(|t| *t > earliest);
    if let Some(scheduled) = due.filter(|_| !spec.suspend) {
        let start = match spec.concurrency_policy {
            ConcurrencyPolicy::Forbid if !active.is_empty() => false,
            ConcurrencyPolicy::Replace => {
                writes.extend(active.iter().map(|j| Write::delete(*j)));
                active_names.clear();
                true
            }
            _ => true,
        };
        if start {
            let job = new_job(cron, scheduled);
            let involved = ObjectReference {
                kind: Kind::CronJob,
                namespace: cron.metadata.namespace.clone(),
                name: cron.metadata.name.clone(),
            };
            let message = format!("made job {} for {}", job.metadata.name, rfc3339(scheduled));
            writes.push(Write::Upsert(AnyObject::Event(new_event(
                involved,
                "SuccessfulCreate",
                message,
                EventType::Normal,
                rfc3339(now),
            ))));
            status.last_schedule_time = Some(rfc3339(scheduled));
            active_names.push(job.metadata.name.clone());
            writes.push(Write::Create(AnyObject::Job(job)));
        }
    }
    active_names.sort();
    status.active = active_names;
    if status != before {
        let mut updated = cron.clone();
        updated.status = Some(status);
        writes.push(Write::Update(AnyObject::CronJob(updated), UpdateScope::Status));
    }
    let requeue_after = schedule.next(now).and_then(|t| t.duration_since(now).ok()).map(|d| d + WAKE_AFTER);
    Action { writes, requeue_after }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::Fixture;
    use super::*;
    use shoal_api::resources::Condition;
    use shoal_api::resources::cronjob::CronJobStatus;

    const KEY: &str = "cronjobs/default/tick";

    fn cron(extra: serde_json::Value) -> CronJob {
        let mut spec =
            serde_json::json!({"schedule": "*/10 * * * * *", "jobTemplate": {"template": {"module": "sha256:00"}}});
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(serde_json::json!({
            "apiVersion": "shoal.dev/v1", "kind": "CronJob",
            "metadata": {"name": "tick", "namespace": "default", "uid": "uid-tick", "resourceVersion": 1,
                "creationTimestamp": "2026-12-01T10:00:00Z"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn at(secs: u64) -> SystemTime {
        humantime::parse_rfc3339("2026-12-01T10:00:00Z").unwrap()
            + Duration::from_secs(secs)
            + Duration::from_millis(300)
    }

    fn made(action: &Action) -> Vec<String> {
        action
            .writes
            .iter()
            .filter_map(|w| match w {
                Write::Create(AnyObject::Job(j)) => Some(j.metadata.name.to_string()),
                _ => None,
            })
            .collect()
    }

    fn deleted(action: &Action) -> Vec<String> {
        action
            .writes
            .iter()
            .filter_map(|w| if let Write::Delete(k, _) = w { Some(k.0.clone()) } else { None })
            .collect()
    }

    fn status_of(action: &Action) -> Option<CronJobStatus> {
        action.writes.iter().find_map(|w| match w {
            Write::Update(AnyObject::CronJob(c), _) => c.status.clone(),
            _ => None,
        })
    }

    /// `f` after `action`'s writes of Jobs and of the CronJob's status landed.
    fn land(f: &mut Fixture, cron: &mut CronJob, action: &Action) {
        for write in &action.writes {
            match write {
                Write::Create(AnyObject::Job(j)) => {
                    let mut j = j.clone();
                    j.metadata.resource_version = Some(5);
                    f.cache.put_job(&format!("jobs/default/{}", j.metadata.name), Some(j), &mut f.tasks);
                }
                Write::Delete(key, _) if key.0.starts_with("jobs/") => f.cache.put_job(&key.0, None, &mut f.tasks),
                _ => {}
            }
        }
        if let Some(status) = status_of(action) {
            cron.status = Some(status);
            f.cache.put_cronjob(KEY, Some(cron.clone()), &mut f.tasks);
        }
    }

    fn finish(f: &mut Fixture, name: &str, type_: &str) {
        let key = format!("jobs/default/{name}");
        let mut job = f.cache.jobs.get(&key).unwrap().clone();
        let condition = Condition {
            type_: type_.into(),
            status: "True".into(),
            reason: String::new(),
            message: String::new(),
            last_transition_time: None,
        };
        job.status = Some(shoal_api::resources::job::JobStatus { conditions: vec![condition], ..Default::default() });
        f.cache.put_job(&key, Some(job), &mut f.tasks);
    }

    #[test]
    fn a_job_is_made_at_each_scheduled_time_and_the_next_one_is_waited_for() {
        let mut c = cron(serde_json::json!({}));
        let mut f = Fixture::default();
        f.cache.put_cronjob(KEY, Some(c.clone()), &mut f.tasks);
        let early = reconcile(&f.cache, KEY, at(5));
        assert!(made(&early).is_empty(), "nothing is due before the first time after its creation");
        assert_eq!(early.requeue_after, Some(Duration::from_millis(4700) + WAKE_AFTER));
        let first = reconcile(&f.cache, KEY, at(10));
        assert_eq!(made(&first), ["tick-1796119210"]);
        land(&mut f, &mut c, &first);
        assert_eq!(c.status.as_ref().unwrap().active.len(), 1);
        assert!(made(&reconcile(&f.cache, KEY, at(12))).is_empty(), "a time runs once");
    }

    #[test]
    fn forbid_skips_while_one_runs_and_replace_stops_it() {
        for (policy, expect_made, expect_deleted) in [("Forbid", 0, 0), ("Replace", 1, 1), ("Allow", 1, 0)] {
            let mut c = cron(serde_json::json!({"concurrencyPolicy": policy}));
            let mut f = Fixture::default();
            f.cache.put_cronjob(KEY, Some(c.clone()), &mut f.tasks);
            let first = reconcile(&f.cache, KEY, at(10));
            land(&mut f, &mut c, &first);
            let second = reconcile(&f.cache, KEY, at(20));
            assert_eq!(made(&second).len(), expect_made, "{policy}");
            assert_eq!(deleted(&second).len(), expect_deleted, "{policy}");
        }
    }

    #[test]
    fn after_an_outage_only_the_latest_missed_run_starts_and_not_past_the_deadline() {
        let c = cron(serde_json::json!({}));
        let mut f = Fixture::default();
        f.cache.put_cronjob(KEY, Some(c.clone()), &mut f.tasks);
        assert_eq!(made(&reconcile(&f.cache, KEY, at(3605))), ["tick-1796122800"], "one run, the latest");
        let strict = cron(serde_json::json!({"startingDeadline": "3s"}));
        f.cache.put_cronjob(KEY, Some(strict), &mut f.tasks);
        assert!(made(&reconcile(&f.cache, KEY, at(3605))).is_empty(), "5 s late is past a 3 s deadline");
        assert_eq!(made(&reconcile(&f.cache, KEY, at(3602))).len(), 1, "2 s late is within it");
    }

    #[test]
    fn finished_jobs_beyond_the_history_limits_are_deleted_and_an_orphan_goes() {
        let mut c = cron(serde_json::json!({"successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 0}));
        let mut f = Fixture::default();
        f.cache.put_cronjob(KEY, Some(c.clone()), &mut f.tasks);
        for t in [10, 20, 30] {
            let action = reconcile(&f.cache, KEY, at(t));
            land(&mut f, &mut c, &action);
        }
        finish(&mut f, "tick-1796119210", COMPLETE);
        finish(&mut f, "tick-1796119220", COMPLETE);
        finish(&mut f, "tick-1796119230", "Failed");
        let action = reconcile(&f.cache, KEY, at(35));
        let mut gone = deleted(&action);
        gone.sort();
        assert_eq!(gone, ["jobs/default/tick-1796119210", "jobs/default/tick-1796119230"]);
        // Its Jobs go with a deleted CronJob.
        f.cache.put_cronjob(KEY, None, &mut f.tasks);
        let job = super::super::job::reconcile(
            &f.cache,
            "jobs/default/tick-1796119220",
            Duration::from_secs(10),
            Default::default(),
            at(40),
        );
        assert_eq!(deleted(&job), ["jobs/default/tick-1796119220"]);
    }
}
