//! The node's metrics, for the control plane to serve (`GET /api/v1/nodes/{name}/metrics`,
//! with the admin's token). Per workload with instances or held requests here:
//! - from the proxy's meters: the requests its instances answered by status class, the
//!   request-seconds they spent (the sum of the requests' times: with the count, the mean
//!   latency), and the requests in flight;
//! - from its instances' usage: how many run here, the memory their stores hold, the CPU time
//!   their guests took, and (commands only: an HTTP instance never restarts) their restarts.
//!
//! Per instance (`/metrics/resource`, like the kubelet's): its CPU time, memory, requests
//! answered (HTTP) or restarts (commands), for `shoal top instances`.
//!
//! A workload's CPU time and restarts are the sums over the instances here now, so they fall when one
//! leaves, which Prometheus reads as a counter reset. All is read at scrape time by a
//! prometheus-client collector, so a request costs two atomic adds, not a map lookup. A
//! workload has about six series (a series per status class it answered with), about 0.5 KiB
//! of text, so 10,000 workloads scrape in about 5 MiB.

use std::collections::BTreeMap;
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::hosted::Hosted;
use crate::proxy::Proxy;
use crate::proxy::load::{Figures, STATUS_CLASSES};

/// What one workload's instances here use, added up.
#[derive(Debug, Default)]
struct Used {
    instances: i64,
    memory: i64,
    cpu_seconds: f64,
    /// Restarts, for a command.
    restarts: Option<u64>,
}

/// The figures at one scrape.
#[derive(Debug)]
struct Workloads {
    served: Vec<((String, String), Figures)>,
    used: BTreeMap<(String, String), Used>,
}

impl Workloads {
    fn read(proxy: &Proxy, hosted: &[Hosted]) -> Workloads {
        let mut used = BTreeMap::<_, Used>::new();
        for instance in hosted {
            let u = used.entry(instance.route.clone()).or_default();
            u.instances += 1;
            u.memory += instance.usage.memory.used() as i64;
            u.cpu_seconds += instance.usage.cpu.seconds();
            if instance.command {
                *u.restarts.get_or_insert(0) += u64::from(instance.usage.restarts());
            }
        }
        Workloads { served: proxy.loads.figures(Instant::now()), used }
    }
}

fn labels((namespace, workload): &(String, String)) -> [(&'static str, &str); 2] {
    [("namespace", namespace.as_str()), ("workload", workload.as_str())]
}

impl Collector for Workloads {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            let help = "Requests this node's instances of the workload answered, by status class";
            let mut family = encoder.encode_descriptor("workload_requests", help, None, MetricType::Counter)?;
            for (key, f) in &self.served {
                for (class, count) in STATUS_CLASSES.iter().zip(f.answered) {
                    if count > 0 {
                        let [namespace, workload] = labels(key);
                        let labels = [namespace, workload, ("code", *class)];
                        ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
                    }
                }
            }
        }
        {
            let help =
                "Seconds requests to the workload spent in flight here, queued ones included (the sum of their times)";
            let mut family = encoder.encode_descriptor("workload_request_seconds", help, None, MetricType::Counter)?;
            for (key, f) in &self.served {
                ConstCounter::new(f.seconds).encode(family.encode_family(&labels(key))?)?;
            }
        }
        {
            let help = "Requests to the workload in flight here now, queued and held ones included";
            let mut family = encoder.encode_descriptor("workload_in_flight", help, None, MetricType::Gauge)?;
            for (key, f) in &self.served {
                ConstGauge::new(i64::from(f.in_flight)).encode(family.encode_family(&labels(key))?)?;
            }
        }
        {
            let help = "Instances of the workload on this node";
            let mut family = encoder.encode_descriptor("workload_instances", help, None, MetricType::Gauge)?;
            for (key, u) in &self.used {
                ConstGauge::new(u.instances).encode(family.encode_family(&labels(key))?)?;
            }
        }
        {
            let help = "Bytes of memory the workload's instances here hold (linear memories and tables)";
            let mut family = encoder.encode_descriptor("workload_memory_bytes", help, None, MetricType::Gauge)?;
            for (key, u) in &self.used {
                ConstGauge::new(u.memory).encode(family.encode_family(&labels(key))?)?;
            }
        }
        {
            let help = "Seconds the workload's instances here ran on the node's threads";
            let mut family = encoder.encode_descriptor("workload_cpu_seconds", help, None, MetricType::Counter)?;
            for (key, u) in &self.used {
                ConstCounter::new(u.cpu_seconds).encode(family.encode_family(&labels(key))?)?;
            }
        }
        let help = "Restarts of the command workload's instances here";
        let mut family = encoder.encode_descriptor("workload_restarts", help, None, MetricType::Counter)?;
        for (key, u) in &self.used {
            if let Some(restarts) = u.restarts {
                ConstCounter::new(restarts).encode(family.encode_family(&labels(key))?)?;
            }
        }
        Ok(())
    }
}

/// Each instance's usage at one scrape.
struct Instances(Vec<Hosted>);

impl std::fmt::Debug for Instances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Instances({})", self.0.len())
    }
}

impl Collector for Instances {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        type Figure = fn(&Hosted) -> Option<f64>;
        let families: [(&str, &str, MetricType, Figure); 4] = [
            ("instance_cpu_seconds", "Seconds the instance ran on the node's threads", MetricType::Counter, |h| {
                Some(h.usage.cpu.seconds())
            }),
            ("instance_memory_bytes", "Bytes of memory the instance holds now", MetricType::Gauge, |h| {
                Some(h.usage.memory.used() as f64)
            }),
            ("instance_requests", "Requests the HTTP instance answered", MetricType::Counter, |h| {
                (!h.command).then(|| h.usage.answered.load(std::sync::atomic::Ordering::Relaxed) as f64)
            }),
            ("instance_restarts", "Restarts of the command instance", MetricType::Counter, |h| {
                h.command.then(|| f64::from(h.usage.restarts()))
            }),
        ];
        for (name, help, kind, figure) in families {
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for hosted in &self.0 {
                let Some(value) = figure(hosted) else { continue };
                let (namespace, workload) = &hosted.route;
                let labels = [("namespace", namespace.as_str()), ("instance", &hosted.name), ("workload", workload)];
                let encoder = family.encode_family(&labels)?;
                match kind {
                    MetricType::Counter => ConstCounter::new(value).encode(encoder)?,
                    _ => ConstGauge::new(value).encode(encoder)?,
                }
            }
        }
        Ok(())
    }
}

/// The per-instance exposition.
pub fn render_resource(hosted: Vec<Hosted>) -> String {
    let mut registry = Registry::with_prefix("shoal_node");
    registry.register_collector(Box::new(Instances(hosted)));
    encode(&registry)
}

fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("writing to a String");
    shoal_api::exposition::to_prometheus_text(&text)
}

/// The exposition: the workloads' figures, and the node's instances and workloads serving.
pub fn render(proxy: &Proxy, hosted: &[Hosted]) -> String {
    let mut registry = Registry::with_prefix("shoal_node");
    let instances = prometheus_client::metrics::gauge::Gauge::<i64>::default();
    instances.set(hosted.len() as i64);
    registry.register("instances", "Instances on this node", instances);
    let serving = prometheus_client::metrics::gauge::Gauge::<i64>::default();
    serving.set(proxy.routes.serving() as i64);
    registry.register("serving_workloads", "HTTP workloads with a ready instance on this node", serving);
    registry.register_collector(Box::new(Workloads::read(proxy, hosted)));
    encode(&registry)
}
