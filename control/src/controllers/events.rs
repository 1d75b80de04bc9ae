//! Event expiry: an Event whose last occurrence is older than the TTL is deleted (Kubernetes
//! keeps events an hour too), so that the store does not grow with every hint ever recorded.
//! Events carry wall-clock times, so this reconciler takes the wall clock.

use std::time::{Duration, SystemTime};

use super::cache::Cache;
use super::writes::{Action, Write};
use crate::store::ObjectKey;

/// Reconciles the Event at `key` at wall-clock time `now`.
pub fn reconcile(cache: &Cache, key: &str, ttl: Duration, now: SystemTime) -> Action {
    let Some(last) = cache.event_time(key) else { return Action::none() };
    let age = now.duration_since(last).unwrap_or_default();
    if age < ttl {
        return Action::requeue(ttl - age);
    }
    Action::writes(vec![Write::Delete(ObjectKey(key.to_owned()), None)])
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::Fixture;
    use super::*;

    #[test]
    fn an_event_goes_once_its_last_occurrence_is_older_than_the_ttl() {
        let mut f = Fixture::default();
        let key = "events/default/web-1-abcd1234";
        let event =
            br#"{"metadata":{"name":"web-1-abcd1234","namespace":"default","creationTimestamp":"2026-12-01T10:00:00Z"},
            "spec":{"reason":"Failed","lastTimestamp":"2026-12-01T10:30:00Z"}}"#;
        f.cache.apply_bytes(key, Some(event), &mut f.tasks);
        assert!(f.take_tasks().contains(&super::super::queue::Task::Event(key.into())));
        let last = humantime::parse_rfc3339("2026-12-01T10:30:00Z").unwrap();
        let ttl = Duration::from_secs(3600);
        let young = reconcile(&f.cache, key, ttl, last + Duration::from_secs(600));
        assert!(young.writes.is_empty());
        assert_eq!(young.requeue_after, Some(Duration::from_secs(3000)), "looked at again when it expires");
        let old = reconcile(&f.cache, key, ttl, last + ttl);
        assert!(matches!(&old.writes[..], [Write::Delete(k, None)] if k.0 == key));
        f.cache.apply_bytes(key, None, &mut f.tasks);
        assert!(reconcile(&f.cache, key, ttl, last + ttl).writes.is_empty(), "a gone event");
    }
}
