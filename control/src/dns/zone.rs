//! The cluster zone: every DNS record Shoal serves, built in one go from the Services in the
//! store and then only read. A rebuild replaces the whole zone, so a query never sees half of
//! a change, and answering is a hash lookup with no lock held across it.

use std::collections::HashMap;
use std::net::IpAddr;

use hickory_server::proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use shoal_api::resources::service::{Protocol, Service};

/// Names under the cluster domain that hold the Services (`<svc>.<ns>.svc.<domain>`).
const SERVICES_LABEL: &str = "svc";
/// Names under the cluster domain that hold the nodes SRV records point at.
const NODES_LABEL: &str = "node";

/// What a query gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer<'z> {
    /// The name has records of the asked type; `additionals` are the addresses of SRV targets.
    Records {
        /// Records of the asked type at the name.
        answers: Vec<&'z Record>,
        /// Addresses of the targets of SRV answers.
        additionals: Vec<&'z Record>,
    },
    /// The name exists but has no records of that type (NODATA: NOERROR, empty answer).
    NoData,
    /// The name does not exist in the zone.
    NxDomain,
    /// The name is outside the cluster domain; this server is not authoritative for it.
    Refused,
}

/// One immutable snapshot of the cluster zone.
#[derive(Debug)]
pub struct Zone {
    origin: LowerName,
    soa: Record,
    /// Records by owner name. A name with an empty list exists without records of its own (the
    /// parents of real names: `ns.svc.<domain>`, `svc.<domain>`), so it answers NODATA, not
    /// NXDOMAIN (RFC 8020).
    names: HashMap<LowerName, Vec<Record>>,
}

impl Zone {
    /// The zone for `domain` with these services; every record gets `ttl` seconds.
    /// `serial` numbers the version (the store revision it reflects).
    pub fn build<'s>(domain: &Name, ttl: u32, serial: u32, services: impl IntoIterator<Item = &'s Service>) -> Zone {
        let origin = domain.to_lowercase();
        let soa = Record::from_rdata(
            origin.clone(),
            ttl,
            RData::SOA(SOA::new(
                prepend(&origin, &["ns", "dns"]),
                prepend(&origin, &["hostmaster"]),
                serial,
                // refresh, retry, expire: meaningless without secondaries; minimum = negative TTL.
                60,
                10,
                3600,
                ttl,
            )),
        );
        let mut zone = Zone { origin: LowerName::new(&origin), soa, names: HashMap::new() };
        zone.insert(origin.clone(), zone.soa.clone());
        for service in services {
            zone.add_service(&origin, ttl, service);
        }
        zone
    }

    fn add_service(&mut self, origin: &Name, ttl: u32, service: &Service) {
        let Some(namespace) = service.metadata.namespace.as_ref() else { return };
        let name = prepend(origin, &[service.metadata.name.as_str(), namespace.as_str(), SERVICES_LABEL]);
        self.exist(&name);
        let endpoints = service.status.as_ref().map(|s| s.endpoints.as_slice()).unwrap_or_default();
        for endpoint in endpoints {
            let Ok(address) = endpoint.address.parse::<IpAddr>() else { continue };
            let record = address_record(name.clone(), ttl, address);
            self.insert(name.clone(), record);
            let node = prepend(origin, &[endpoint.node.as_str(), NODES_LABEL]);
            if self.names.get(&LowerName::new(&node)).is_none_or(|r| r.is_empty()) {
                self.insert(node.clone(), address_record(node.clone(), ttl, address));
            }
        }
        for port in &service.spec.ports {
            let proto = match port.protocol {
                Protocol::Tcp => "_tcp",
                Protocol::Udp => "_udp",
            };
            let srv_name = prepend(&name, &[&format!("_{}", port.name.as_str()), proto]);
            self.exist(&srv_name);
            for endpoint in endpoints {
                let target = prepend(origin, &[endpoint.node.as_str(), NODES_LABEL]);
                let srv = SRV::new(0, 1, endpoint.port, target);
                self.insert(srv_name.clone(), Record::from_rdata(srv_name.clone(), ttl, RData::SRV(srv)));
            }
        }
    }

    /// Makes `name` and every name between it and the origin exist.
    fn exist(&mut self, name: &Name) {
        let mut name = name.clone();
        while name.num_labels() > self.origin.num_labels() {
            self.names.entry(LowerName::new(&name)).or_default();
            name = name.base_name();
        }
    }

    fn insert(&mut self, name: Name, record: Record) {
        self.exist(&name);
        self.names.entry(LowerName::new(&name)).or_default().push(record);
    }

    /// The answer to a query for `name` and `kind`.
    pub fn lookup(&self, name: &LowerName, kind: RecordType) -> Answer<'_> {
        if !self.origin.zone_of(name) {
            return Answer::Refused;
        }
        let Some(records) = self.names.get(name) else { return Answer::NxDomain };
        let answers: Vec<&Record> =
            records.iter().filter(|r| kind == RecordType::ANY || r.record_type() == kind).collect();
        if answers.is_empty() {
            return Answer::NoData;
        }
        let additionals = answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => self.names.get(&LowerName::new(&srv.target)),
                _ => None,
            })
            .flatten()
            .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
            .collect();
        Answer::Records { answers, additionals }
    }

    /// The zone's SOA record, sent in the authority section of negative answers so that
    /// resolvers cache them for no longer than the TTL.
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// How many names the zone holds.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the zone holds no names (never true: the apex always exists).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

fn address_record(name: Name, ttl: u32, address: IpAddr) -> Record {
    let data = match address {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name, ttl, data)
}

/// `labels` (most specific first) followed by `base`.
fn prepend(base: &Name, labels: &[&str]) -> Name {
    // Labels come from validated DNS-1123 names and fixed strings, so they are always valid.
    labels.iter().rev().fold(base.clone(), |name, label| name.prepend_label(*label).expect("valid DNS label"))
}

#[cfg(test)]
mod tests {
    use shoal_api::resources::service::{Endpoint, ServicePort, ServiceSpec, ServiceStatus};

    use super::*;

    fn service(ns: &str, name: &str, nodes: &[(&str, &str)]) -> Service {
        let json = serde_json::json!({
            "apiVersion": "shoal.dev/v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"workload": name}},
        });
        let mut service: Service = serde_json::from_value(json).unwrap();
        service.spec = ServiceSpec {
            ports: vec![ServicePort { name: "http".parse().unwrap(), port: 80, protocol: Protocol::Tcp }],
            ..service.spec
        };
        service.status = Some(ServiceStatus {
            endpoints: nodes
                .iter()
                .map(|(node, addr)| Endpoint {
                    node: node.parse().unwrap(),
                    address: (*addr).into(),
                    port: 8080,
                    peer: None,
                })
                .collect(),
        });
        service
    }

    fn lower(name: &str) -> LowerName {
        LowerName::new(&Name::from_ascii(name).unwrap())
    }

    #[test]
    fn answers_records_nodata_nxdomain_and_refused() {
        let domain = Name::from_ascii("cluster.local.").unwrap();
        let services = [service("shop", "api", &[("n1", "127.0.0.2"), ("n2", "::1")]), service("shop", "idle", &[])];
        let zone = Zone::build(&domain, 5, 1, &services);

        let Answer::Records { answers, .. } = zone.lookup(&lower("API.shop.svc.cluster.local."), RecordType::A) else {
            panic!("expected A records")
        };
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].ttl, 5);
        assert!(matches!(zone.lookup(&lower("api.shop.svc.cluster.local."), RecordType::AAAA), Answer::Records { .. }));
        assert_eq!(zone.lookup(&lower("idle.shop.svc.cluster.local."), RecordType::A), Answer::NoData);
        assert_eq!(zone.lookup(&lower("api.shop.svc.cluster.local."), RecordType::MX), Answer::NoData);
        assert_eq!(zone.lookup(&lower("shop.svc.cluster.local."), RecordType::A), Answer::NoData);
        assert_eq!(zone.lookup(&lower("nope.shop.svc.cluster.local."), RecordType::A), Answer::NxDomain);
        assert_eq!(zone.lookup(&lower("example.com."), RecordType::A), Answer::Refused);

        let Answer::Records { answers, additionals } =
            zone.lookup(&lower("_http._tcp.api.shop.svc.cluster.local."), RecordType::SRV)
        else {
            panic!("expected SRV records")
        };
        assert_eq!(answers.len(), 2);
        assert_eq!(additionals.len(), 2, "the A/AAAA of both SRV targets ride along");
        assert_eq!(zone.lookup(&lower("_dns._udp.api.shop.svc.cluster.local."), RecordType::SRV), Answer::NxDomain);
    }
}
