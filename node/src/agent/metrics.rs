//! The node's metrics, for the control plane to serve (`GET /api/v1/nodes/{name}/metrics`,
//! with the admin's token): per workload with instances or held requests here, the requests its
//! instances answered by status class, the request-seconds they spent (the sum of the
//! requests' times: with the count, the mean latency), and the requests in flight; and the
//! node's instances and serving workloads. Read from the proxy's meters at scrape time by a
//! prometheus-client collector, so a request costs two atomic adds, not a map lookup. A
//! workload's series are its name and namespace and a status class: at most five per workload,
//! about 0.6 KiB of text, so 10,000 workloads scrape in a few MiB.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::proxy::Proxy;
use crate::proxy::load::STATUS_CLASSES;

/// Reads the proxy's meters at each scrape.
struct Workloads(Arc<Proxy>);

impl std::fmt::Debug for Workloads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Workloads")
    }
}

impl Collector for Workloads {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let figures = self.0.loads.figures(Instant::now());
        {
            let help = "Requests this node's instances of the workload answered, by status class";
            let mut family = encoder.encode_descriptor("workload_requests", help, None, MetricType::Counter)?;
            for ((namespace, workload), f) in &figures {
                for (class, count) in STATUS_CLASSES.iter().zip(f.answered) {
                    if count > 0 {
                        let labels =
                            [("namespace", namespace.as_str()), ("workload", workload.as_str()), ("code", *class)];
                        ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
                    }
                }
            }
        }
        {
            let help =
                "Seconds requests to the workload spent in flight here, queued ones included (the sum of their times)";
            let mut family = encoder.encode_descriptor("workload_request_seconds", help, None, MetricType::Counter)?;
            for ((namespace, workload), f) in &figures {
                let labels = [("namespace", namespace.as_str()), ("workload", workload.as_str())];
                ConstCounter::new(f.seconds).encode(family.encode_family(&labels)?)?;
            }
        }
        let help = "Requests to the workload in flight here now, queued and held ones included";
        let mut family = encoder.encode_descriptor("workload_in_flight", help, None, MetricType::Gauge)?;
        for ((namespace, workload), f) in &figures {
            let labels = [("namespace", namespace.as_str()), ("workload", workload.as_str())];
            ConstGauge::new(i64::from(f.in_flight)).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The exposition: the workloads' figures, and the node's instances (`running`: the instances
/// whose output it keeps) and workloads serving.
pub fn render(proxy: &Arc<Proxy>, running: usize) -> String {
    let mut registry = Registry::with_prefix("shoal_node");
    let instances = prometheus_client::metrics::gauge::Gauge::<i64>::default();
    instances.set(running as i64);
    registry.register("instances", "Instances on this node", instances);
    let serving = prometheus_client::metrics::gauge::Gauge::<i64>::default();
    serving.set(proxy.routes.serving() as i64);
    registry.register("serving_workloads", "HTTP workloads with a ready instance on this node", serving);
    registry.register_collector(Box::new(Workloads(proxy.clone())));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("writing to a String");
    shoal_api::exposition::to_prometheus_text(&text)
}
