//! When a singleton workload may get a new instance: only once its last instance has been seen
//! gone for [`crate::liveness::Liveness::singleton_hold`], and, on a leader that just took over,
//! once the node grace period has passed since (a lease granted by the leader before it may
//! still be running out). Until then its creates are held back and it is looked at again when
//! the hold ends. The fencing leases (see [`crate::liveness`]) make sure the old instance's node
//! stopped it by then, even when it cannot be reached.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use shoal_api::AnyObject;

use super::writes::{Action, Write};

/// Since when each singleton workload has been seen without a live instance.
#[derive(Default)]
pub struct Holds {
    gone_since: HashMap<String, Instant>,
}

/// The rules' timings.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long after its instance was seen gone a singleton waits.
    pub hold: Duration,
    /// When this member took over as leader.
    pub leading_since: Instant,
    /// How long after that a new leader makes no singleton's replacement.
    pub takeover: Duration,
}

impl Holds {
    /// Holds back `action`'s instance creates for the singleton at `key` while it must wait,
    /// given whether it has a `live` instance (any that has not ended) at `now`.
    pub fn apply(&mut self, key: &str, live: bool, timing: Timing, now: Instant, action: &mut Action) {
        if live {
            self.gone_since.remove(key);
            return;
        }
        let since = *self.gone_since.entry(key.to_owned()).or_insert(now);
        let ready_at = (since + timing.hold).max(timing.leading_since + timing.takeover);
        let Some(wait) = ready_at.checked_duration_since(now).filter(|w| !w.is_zero()) else {
            return;
        };
        let before = action.writes.len();
        action.writes.retain(|w| !matches!(w, Write::Create(AnyObject::Instance(_))));
        if action.writes.len() < before {
            tracing::info!("controllers: {key} is a singleton; its new instance waits {wait:?} for any lease to end");
        }
        action.requeue_after = Some(action.requeue_after.map_or(wait, |after| after.min(wait)));
    }

    /// Forgets `key` (deleted, or no longer a singleton).
    pub fn forget(&mut self, key: &str) {
        self.gone_since.remove(key);
    }

    /// Forgets everything (a new term: its own hold covers what came before).
    pub fn clear(&mut self) {
        self.gone_since.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::workload;
    use super::super::workload::{instance_name, template};
    use super::*;

    const HOLD: Duration = Duration::from_secs(5);
    const TAKEOVER: Duration = Duration::from_secs(10);

    fn create() -> Action {
        let w = workload("db", 1);
        let instance = shoal_api::Object::new(instance_name(&w.metadata.name), None, template(&w));
        Action { writes: vec![Write::Create(AnyObject::Instance(instance))], requeue_after: None }
    }

    fn creates(action: &Action) -> usize {
        action.writes.iter().filter(|w| matches!(w, Write::Create(AnyObject::Instance(_)))).count()
    }

    #[test]
    fn a_replacement_waits_for_the_hold_after_the_old_instance_was_seen_gone() {
        let t0 = Instant::now();
        let timing = Timing { hold: HOLD, leading_since: t0 - TAKEOVER * 2, takeover: TAKEOVER };
        let mut holds = Holds::default();
        let mut live = create();
        holds.apply("workloads/default/db", true, timing, t0, &mut live);
        assert_eq!(creates(&live), 1, "a live instance holds nothing back (and none is made beside it)");

        let mut first = create();
        holds.apply("workloads/default/db", false, timing, t0 + Duration::from_secs(1), &mut first);
        assert_eq!(creates(&first), 0);
        assert_eq!(first.requeue_after, Some(HOLD));
        let mut later = create();
        holds.apply("workloads/default/db", false, timing, t0 + Duration::from_secs(4), &mut later);
        assert_eq!(
            (creates(&later), later.requeue_after),
            (0, Some(Duration::from_secs(2))),
            "counted from first seen"
        );
        let mut done = create();
        holds.apply("workloads/default/db", false, timing, t0 + Duration::from_secs(6), &mut done);
        assert_eq!((creates(&done), done.requeue_after), (1, None));
    }

    #[test]
    fn a_new_leader_makes_no_replacement_until_its_takeover_has_passed() {
        let t0 = Instant::now();
        let timing = Timing { hold: HOLD, leading_since: t0, takeover: TAKEOVER };
        let mut holds = Holds::default();
        holds.apply("workloads/default/db", false, timing, t0, &mut create());
        let mut at_hold = create();
        holds.apply("workloads/default/db", false, timing, t0 + HOLD + Duration::from_secs(1), &mut at_hold);
        assert_eq!(creates(&at_hold), 0, "the hold has passed, the takeover has not");
        assert_eq!(at_hold.requeue_after, Some(TAKEOVER - HOLD - Duration::from_secs(1)));
        let mut after = create();
        holds.apply("workloads/default/db", false, timing, t0 + TAKEOVER, &mut after);
        assert_eq!(creates(&after), 1);
    }

    #[test]
    fn other_writes_go_ahead_and_an_earlier_requeue_is_kept() {
        let t0 = Instant::now();
        let timing = Timing { hold: HOLD, leading_since: t0 - TAKEOVER, takeover: TAKEOVER };
        let mut action = create();
        let w = workload("db", 1);
        action.writes.push(Write::Update(AnyObject::Workload(w), crate::store::UpdateScope::Status));
        action.requeue_after = Some(Duration::from_secs(1));
        Holds::default().apply("workloads/default/db", false, timing, t0, &mut action);
        assert_eq!(action.writes.len(), 1, "the status is still written");
        assert_eq!(action.requeue_after, Some(Duration::from_secs(1)));
    }
}
