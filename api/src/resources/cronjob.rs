//! CronJob: makes a Job on a cron schedule (like Kubernetes' CronJob). The schedule has five
//! fields, or six with seconds first (so a test need not wait minutes), read in `timeZone`
//! (IANA, default UTC). A run missed while the control plane was away is started when it is
//! back, unless it is more than `startingDeadline` late; of several missed, only the latest.

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::meta::{FieldError, Kind, Object, Resource};
use crate::name::Name;
use crate::resources::job::{JobSpec, validate_job_spec};

/// Marker for the CronJob kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CronJobKind;

/// A CronJob object.
pub type CronJob = Object<CronJobKind>;

/// The longest CronJob name: its Jobs are named `<name>-<unix seconds>`.
pub const MAX_NAME_LEN: usize = 52;

/// The most finished Jobs of each outcome a CronJob may keep.
pub const MAX_HISTORY: u32 = 100;

impl Resource for CronJobKind {
    const KIND: Kind = Kind::CronJob;
    type Spec = CronJobSpec;
    type Status = CronJobStatus;

    fn validate(object: &CronJob) -> Result<(), FieldError> {
        let spec = &object.spec;
        if object.metadata.name.as_str().len() > MAX_NAME_LEN {
            return Err(FieldError::new("metadata.name", format!("at most {MAX_NAME_LEN} characters for a CronJob")));
        }
        Schedule::parse(&spec.schedule, spec.time_zone.as_deref())
            .map_err(|(field, why)| FieldError::new(format!("spec.{field}"), why))?;
        for (field, value) in [
            ("successfulJobsHistoryLimit", spec.successful_jobs_history_limit),
            ("failedJobsHistoryLimit", spec.failed_jobs_history_limit),
        ] {
            if value > MAX_HISTORY {
                return Err(FieldError::new(format!("spec.{field}"), format!("at most {MAX_HISTORY}")));
            }
        }
        if let Some(deadline) = spec.starting_deadline {
            deadline
                .within(std::time::Duration::from_secs(1), std::time::Duration::from_secs(365 * 24 * 3600))
                .map_err(|why| FieldError::new("spec.startingDeadline", why))?;
        }
        validate_job_spec(&spec.job_template, "spec.jobTemplate.")
    }
}

/// What to do when a run is due while the last one still runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConcurrencyPolicy {
    /// Start it anyway.
    #[default]
    Allow,
    /// Skip it (it starts late, when the running one ends, if still within `startingDeadline`).
    Forbid,
    /// Stop the running one and start the new.
    Replace,
}

fn three() -> u32 {
    3
}

fn one() -> u32 {
    1
}

/// What a user declares about a CronJob.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CronJobSpec {
    /// When: `m h dom mon dow`, or `s m h dom mon dow`.
    pub schedule: String,
    /// The IANA time zone the schedule is read in, e.g. `Europe/Paris` (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// `Allow` (default), `Forbid` or `Replace`.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// How late a run may start (after an outage, or held back by `Forbid`); later ones are
    /// skipped. Default: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline: Option<Duration>,
    /// Completed Jobs kept (default 3).
    #[serde(default = "three")]
    pub successful_jobs_history_limit: u32,
    /// Failed Jobs kept (default 1).
    #[serde(default = "one")]
    pub failed_jobs_history_limit: u32,
    /// Makes no Jobs while true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// The Job each run makes.
    pub job_template: JobSpec,
}

/// What the CronJob controller observed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CronJobStatus {
    /// The scheduled time of the last Job made (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,
    /// Its Jobs that have not finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<Name>,
}

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    zone: chrono_tz::Tz,
}

impl Schedule {
    /// Parses `schedule` in `zone` (UTC when `None`); an error names the field and says why.
    pub fn parse(schedule: &str, zone: Option<&str>) -> Result<Schedule, (&'static str, String)> {
        let fields = schedule.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err((
                "schedule",
                format!("{schedule:?}: five fields (m h dom mon dow), or six with seconds first"),
            ));
        }
        let cron = schedule
            .parse::<croner::Cron>()
            .map_err(|e| ("schedule", format!("{schedule:?} is not a cron schedule: {e}")))?;
        let zone = match zone {
            None => chrono_tz::UTC,
            Some(z) => {
                z.parse().map_err(|_| ("timeZone", format!("{z:?} is not an IANA time zone such as Europe/Paris")))?
            }
        };
        Ok(Schedule { cron, zone })
    }

    /// The latest scheduled time at or before `now`.
    pub fn latest(&self, now: std::time::SystemTime) -> Option<std::time::SystemTime> {
        let at = chrono::DateTime::<chrono::Utc>::from(now).with_timezone(&self.zone);
        self.cron.find_previous_occurrence(&at, true).ok().map(|t| t.with_timezone(&chrono::Utc).into())
    }

    /// The first scheduled time after `now`.
    pub fn next(&self, now: std::time::SystemTime) -> Option<std::time::SystemTime> {
        let at = chrono::DateTime::<chrono::Utc>::from(now).with_timezone(&self.zone);
        self.cron.find_next_occurrence(&at, false).ok().map(|t| t.with_timezone(&chrono::Utc).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn schedules_read_five_or_six_fields_in_their_time_zone() {
        let every_second = Schedule::parse("* * * * * *", None).unwrap();
        let now = at("2026-12-01T10:00:05Z") + Duration::from_millis(300);
        assert_eq!(every_second.latest(now), Some(at("2026-12-01T10:00:05Z")));
        assert_eq!(every_second.next(now), Some(at("2026-12-01T10:00:06Z")));
        // Nine in the morning in Paris is eight in UTC in winter.
        let paris = Schedule::parse("0 9 * * *", Some("Europe/Paris")).unwrap();
        assert_eq!(paris.next(at("2026-12-01T00:00:00Z")), Some(at("2026-12-01T08:00:00Z")));
        assert_eq!(Schedule::parse("* * *", None).unwrap_err().0, "schedule");
        assert_eq!(Schedule::parse("61 * * * *", None).unwrap_err().0, "schedule");
        assert_eq!(Schedule::parse("* * * * *", Some("Mars/Olympus")).unwrap_err().0, "timeZone");
    }
}
