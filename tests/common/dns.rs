//! Asking the cluster DNS with a real resolver (hickory-resolver, UDP with TCP fallback, no
//! cache, so every question reaches the server).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};

/// What a question got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Records of the asked type.
    Records(Vec<RData>),
    /// The name exists without that type.
    NoData,
    /// The name does not exist.
    NxDomain,
    /// Anything else (refused, timeout, ...).
    Error(String),
}

impl Answer {
    /// The addresses in an A/AAAA answer, sorted.
    pub fn addresses(&self) -> Vec<String> {
        let mut found: Vec<String> = match self {
            Answer::Records(records) => records
                .iter()
                .filter_map(|r| match r {
                    RData::A(a) => Some(a.0.to_string()),
                    RData::AAAA(a) => Some(a.0.to_string()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        found.sort();
        found
    }
}

/// A resolver that asks only the server at `addr`, over UDP (TCP when an answer is truncated).
pub fn resolver(addr: SocketAddr) -> TokioResolver {
    build(NameServerConfig::udp_and_tcp(addr.ip()), addr.port())
}

/// A resolver that asks the server at `addr` over TCP only.
pub fn tcp_resolver(addr: SocketAddr) -> TokioResolver {
    build(NameServerConfig::tcp(addr.ip()), addr.port())
}

fn build(mut server: NameServerConfig, port: u16) -> TokioResolver {
    for connection in &mut server.connections {
        connection.port = port;
    }
    let mut builder =
        Resolver::builder_with_config(ResolverConfig::from_name_servers(vec![server]), TokioRuntimeProvider::default());
    let options = builder.options_mut();
    options.cache_size = 0;
    options.timeout = Duration::from_secs(2);
    options.attempts = 2;
    builder.build().expect("a resolver")
}

/// Asks `resolver` for `name` (fully qualified) and `kind`.
pub async fn ask(resolver: &TokioResolver, name: &str, kind: RecordType) -> Answer {
    match resolver.lookup(name, kind).await {
        Ok(lookup) => Answer::Records(lookup.answers().iter().map(|r| r.data.clone()).collect()),
        Err(e) if e.is_nx_domain() => Answer::NxDomain,
        Err(e) if e.is_no_records_found() => Answer::NoData,
        Err(e) => Answer::Error(e.to_string()),
    }
}
