//! Requests in flight per workload on this node, averaged over time, for the autoscaler: every
//! request an instance here takes (queued ones included) and every request held for a
//! workload with no instance counts while it lasts. The heartbeat reports the average since
//! the last beat for each autoscaled workload ([`Loads::report`]), so a burst between two beats
//! is not missed, as a sample would miss it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use shoal_api::agent::{MAX_LOAD_ENTRIES, WorkloadLoad};

/// One workload's requests in flight, and the counts `/metrics` shows.
pub struct Meter {
    state: Mutex<MeterState>,
    /// Requests answered, by status class (`2xx` for anything below 300, `3xx`, `4xx`, `5xx`).
    answered: [AtomicU64; 4],
}

/// The status classes a meter counts by.
pub const STATUS_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

/// What a meter shows `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// Requests in flight now.
    pub in_flight: u32,
    /// Request-seconds in flight since the meter was made (the sum of requests' times).
    pub seconds: f64,
    /// Requests answered, by [`STATUS_CLASSES`].
    pub answered: [u64; 4],
}

struct MeterState {
    /// In flight now.
    current: u32,
    /// Since when `current` holds.
    since: Instant,
    /// Request-seconds since the last report.
    integral: f64,
    /// Request-seconds since the meter was made.
    total: f64,
    /// When the last report was taken.
    reported: Instant,
    /// When the last request ended (or the meter was made), while none is in flight.
    idle_since: Instant,
}

impl MeterState {
    fn advance(&mut self, now: Instant) {
        if now > self.since {
            let added = f64::from(self.current) * (now - self.since).as_secs_f64();
            self.integral += added;
            self.total += added;
            self.since = now;
        }
    }
}

/// A request in flight, counted until dropped.
pub struct Busy(Arc<Meter>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().expect("meter lock");
        let now = Instant::now();
        state.advance(now);
        state.current = state.current.saturating_sub(1);
        if state.current == 0 {
            state.idle_since = now;
        }
    }
}

impl Meter {
    fn new(now: Instant) -> Self {
        let state = MeterState { current: 0, since: now, integral: 0.0, total: 0.0, reported: now, idle_since: now };
        Meter { state: Mutex::new(state), answered: Default::default() }
    }

    /// Counts a request until the guard is dropped.
    pub fn busy(self: &Arc<Self>) -> Busy {
        let mut state = self.state.lock().expect("meter lock");
        state.advance(Instant::now());
        state.current += 1;
        drop(state);
        Busy(self.clone())
    }

    /// Counts a request answered with `status`.
    pub fn answered(&self, status: u16) {
        let class = usize::from(status / 100).saturating_sub(2).min(3);
        self.answered[class].fetch_add(1, Ordering::Relaxed);
    }

    /// What it shows `/metrics` at `now`.
    pub fn figures(&self, now: Instant) -> Figures {
        let mut state = self.state.lock().expect("meter lock");
        state.advance(now);
        Figures {
            in_flight: state.current,
            seconds: state.total,
            answered: std::array::from_fn(|i| self.answered[i].load(Ordering::Relaxed)),
        }
    }

    /// The average in flight since the last call (or since the meter was made), and, with
    /// none in flight now, how long since the last one ended.
    fn take(&self, now: Instant) -> (f64, Option<std::time::Duration>) {
        let mut state = self.state.lock().expect("meter lock");
        state.advance(now);
        let span = now.saturating_duration_since(state.reported).as_secs_f64();
        let average = if span > 0.0 { state.integral / span } else { f64::from(state.current) };
        state.integral = 0.0;
        state.reported = now;
        let idle = (state.current == 0).then(|| now.saturating_duration_since(state.idle_since));
        (average, idle)
    }
}

type Key = (String, String);

/// The most bytes of load one heartbeat carries (its body may have 1.5 MiB): a node with more
/// autoscaled workloads than fit reports the busiest.
pub const MAX_LOAD_BYTES: usize = 512 << 10;

/// What an entry takes in JSON besides its names.
const ENTRY_OVERHEAD: usize = 80;

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

    /// Every workload's figures at `now`, in key order.
    pub fn figures(&self, now: Instant) -> Vec<(Key, Figures)> {
        let meters: Vec<(Key, Arc<Meter>)> =
            self.meters.lock().expect("loads lock").iter().map(|(k, m)| (k.clone(), m.clone())).collect();
        let mut figures: Vec<(Key, Figures)> = meters.into_iter().map(|(k, m)| (k, m.figures(now))).collect();
        figures.sort_by(|a, b| a.0.cmp(&b.0));
        figures
    }

    /// The load of each workload `wanted` names since the last report, at most
    /// [`MAX_LOAD_ENTRIES`]. A meter that is idle, had nothing to say, and that nothing holds
    /// (no instance, no held request) is dropped, after one last report of zero.
    pub fn report(&self, wanted: impl Fn(&str, &str) -> bool, now: Instant) -> Vec<WorkloadLoad> {
        let mut meters = self.meters.lock().expect("loads lock");
        let mut load = Vec::new();
        meters.retain(|(namespace, workload), meter| {
            let (concurrency, idle) = meter.take(now);
            if wanted(namespace, workload) {
                let idle_ms = idle.map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64);
                load.push(WorkloadLoad {
                    namespace: namespace.clone(),
                    workload: workload.clone(),
                    concurrency,
                    idle_ms,
                });
            }
            idle.is_none() || concurrency > 0.0 || Arc::strong_count(meter) > 1
        });
        drop(meters);
        // The busiest first, as many as fit a heartbeat well within its body limit.
        load.sort_by(|a, b| b.concurrency.total_cmp(&a.concurrency));
        let mut bytes = 0;
        load.truncate(MAX_LOAD_ENTRIES);
        load.retain(|entry| {
            bytes += entry.namespace.len() + entry.workload.len() + ENTRY_OVERHEAD;
            bytes <= MAX_LOAD_BYTES
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
        let (average, idle) = meter.take(t0 + Duration::from_secs(1));
        assert!((average - 1.0).abs() < 1e-9, "{average}");
        assert_eq!(idle, Some(Duration::from_secs(1)), "idle since it was made, as far as it knows");
        let held = meter.busy();
        assert_eq!(meter.take(Instant::now() + Duration::from_millis(10)).1, None, "a request in flight");
        drop(held);
        let idle = meter.take(Instant::now() + Duration::from_millis(30)).1.expect("idle");
        assert!(idle >= Duration::from_millis(30) && idle < Duration::from_secs(1), "{idle:?}");
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
        assert_eq!(report.len(), 1);
        assert_eq!((report[0].workload.as_str(), report[0].concurrency), ("web", 0.0));
        assert!(report[0].idle_ms.is_some());
        assert!(loads.meters.lock().unwrap().is_empty());
    }

    #[test]
    fn a_report_fits_a_heartbeat_busiest_first() {
        let loads = Loads::default();
        let long = "x".repeat(63);
        let meters: Vec<Arc<Meter>> =
            (0..10_000).map(|i| loads.meter(&(long.clone(), format!("{long:.55}{i:08}")))).collect();
        let busy = meters[7_777].busy();
        let report = loads.report(|_, _| true, Instant::now() + Duration::from_millis(10));
        let json = serde_json::to_vec(&shoal_api::agent::Heartbeat { load: report.clone() }).unwrap();
        assert!(json.len() <= MAX_LOAD_BYTES, "{} bytes", json.len());
        assert!(report.len() > 1000 && report.len() < 10_000, "{}", report.len());
        assert!(report[0].workload.ends_with("00007777"), "the busy one first: {}", report[0].workload);
        drop(busy);
    }
}
