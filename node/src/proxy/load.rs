//! Requests in flight per workload on this node, averaged over time, for the autoscaler: every
//! request an instance here takes (queued ones included) and every request held for a
//! workload with no instance counts while it lasts. The heartbeat reports the average since
//! the last beat for each autoscaled workload ([`Loads::report`]), so a burst between two beats
//! is not missed, as a sample would miss it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use shoal_api::agent::{MAX_LOAD_ENTRIES, WorkloadLoad};

/// One workload's requests in flight.
pub struct Meter {
    state: Mutex<MeterState>,
}

struct MeterState {
    /// In flight now.
    current: u32,
    /// Since when `current` holds.
    since: Instant,
    /// Request-seconds since the last report.
    integral: f64,
    /// When the last report was taken.
    reported: Instant,
}

impl MeterState {
    fn advance(&mut self, now: Instant) {
        if now > self.since {
            self.integral += f64::from(self.current) * (now - self.since).as_secs_f64();
            self.since = now;
        }
    }
}

/// A request in flight, counted until dropped.
pub struct Busy(Arc<Meter>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().expect("meter lock");
        state.advance(Instant::now());
        state.current = state.current.saturating_sub(1);
    }
}

impl Meter {
    fn new(now: Instant) -> Self {
        Meter { state: Mutex::new(MeterState { current: 0, since: now, integral: 0.0, reported: now }) }
    }

    /// Counts a request until the guard is dropped.
    pub fn busy(self: &Arc<Self>) -> Busy {
        let mut state = self.state.lock().expect("meter lock");
        state.advance(Instant::now());
        state.current += 1;
        drop(state);
        Busy(self.clone())
    }

    /// The average in flight since the last call (or since the meter was made), and whether
    /// any request is in flight now.
    fn take(&self, now: Instant) -> (f64, bool) {
        let mut state = self.state.lock().expect("meter lock");
        state.advance(now);
        let span = now.saturating_duration_since(state.reported).as_secs_f64();
        let average = if span > 0.0 { state.integral / span } else { f64::from(state.current) };
        state.integral = 0.0;
        state.reported = now;
        (average, state.current > 0)
    }
}

type Key = (String, String);

/// Every workload's meter on this node, by `(namespace, workload)`.
#[derive(Default)]
pub struct Loads {
    meters: Mutex<HashMap<Key, Arc<Meter>>>,
}

impl Loads {
    /// The meter of the workload at `key` (made if it has none).
    pub fn meter(&self, key: &Key) -> Arc<Meter> {
        let mut meters = self.meters.lock().expect("loads lock");
        meters.entry(key.clone()).or_insert_with(|| Arc::new(Meter::new(Instant::now()))).clone()
    }

    /// The load of each workload `wanted` names since the last report, at most
    /// [`MAX_LOAD_ENTRIES`]. A meter that is idle, had nothing to say, and that nothing holds
    /// (no instance, no held request) is dropped, after one last report of zero.
    pub fn report(&self, wanted: impl Fn(&str, &str) -> bool, now: Instant) -> Vec<WorkloadLoad> {
        let mut meters = self.meters.lock().expect("loads lock");
        let mut load = Vec::new();
        meters.retain(|(namespace, workload), meter| {
            let (concurrency, busy) = meter.take(now);
            if wanted(namespace, workload) && load.len() < MAX_LOAD_ENTRIES {
                load.push(WorkloadLoad { namespace: namespace.clone(), workload: workload.clone(), concurrency });
            }
            busy || concurrency > 0.0 || Arc::strong_count(meter) > 1
        });
        load
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_meter_averages_requests_in_flight_over_the_time_since_the_last_report() {
        let t0 = Instant::now();
        let meter = Arc::new(Meter::new(t0));
        {
            let mut state = meter.state.lock().unwrap();
            // Two requests in flight for the first half second, none for the second.
            state.current = 2;
            state.advance(t0 + Duration::from_millis(500));
            state.current = 0;
        }
        let (average, busy) = meter.take(t0 + Duration::from_secs(1));
        assert!((average - 1.0).abs() < 1e-9, "{average}");
        assert!(!busy);
        let held = meter.busy();
        assert!(meter.take(Instant::now() + Duration::from_millis(10)).1, "a request in flight is busy");
        drop(held);
    }

    #[test]
    fn reports_name_wanted_workloads_and_idle_unheld_meters_go() {
        let loads = Loads::default();
        let web = ("default".to_owned(), "web".to_owned());
        let other = ("default".to_owned(), "other".to_owned());
        let held = loads.meter(&web);
        let busy = held.busy();
        drop(loads.meter(&other));
        let now = Instant::now() + Duration::from_millis(100);
        let report = loads.report(|_, w| w == "web", now);
        assert_eq!(report.len(), 1);
        assert!(report[0].concurrency > 0.5, "{report:?}");
        drop(busy);
        assert_eq!(loads.meters.lock().unwrap().len(), 1, "the idle meter nothing holds went");
        drop(held);
        // Idle and unheld: one last report of zero, then it goes.
        let report = loads.report(|_, _| true, now + Duration::from_millis(100));
        assert_eq!(
            report,
            vec![WorkloadLoad { namespace: "default".into(), workload: "web".into(), concurrency: 0.0 }]
        );
        assert!(loads.meters.lock().unwrap().is_empty());
    }
}
