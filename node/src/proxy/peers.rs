//! Node-to-node traffic: a request for a Service with no ready instance here goes to the agent
//! API of a node that has one, over TLS where both sides present the certificate the node CA
//! issued them (the cluster CA's certificates, the API server's and raft's, are not accepted
//! there, nor node certificates by the API server's clients). The receiving node serves it from its own instances only, so a request
//! crosses at most one hop.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use shoal_api::agent::NodeCredentials;

use crate::runtime::http::Body;

/// Names the Service (`<namespace>/<name>`) a forwarded request is for.
pub const SERVICE_HEADER: &str = "x-shoal-service";

/// Says who a forwarded request comes from: `namespace/<ns>` for a guest of that namespace,
/// `outside` for the ingress. The receiving node checks the Service admits it.
pub const CALLER_HEADER: &str = "x-shoal-caller";

/// Headers of ours: never taken from a caller (a guest setting `x-shoal-service` must not pick
/// the Service the next node serves it).
const OWN_PREFIX: &str = "x-shoal-";

/// Who calls a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A guest of this namespace.
    Namespace(String),
    /// A client of a node's ingress.
    Outside,
}

impl Caller {
    /// As the caller header says it.
    pub fn header(&self) -> String {
        match self {
            Caller::Namespace(ns) => format!("namespace/{ns}"),
            Caller::Outside => "outside".into(),
        }
    }

    /// From the caller header.
    pub fn parse(value: &str) -> Option<Caller> {
        match value {
            "outside" => Some(Caller::Outside),
            other => {
                other.strip_prefix("namespace/").filter(|ns| !ns.is_empty()).map(|ns| Caller::Namespace(ns.into()))
            }
        }
    }
}

/// Headers that belong to one connection and are not forwarded (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [&str; 8] =
    ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "content-length"];

/// Whether a caller's header goes on to the next node: not one of a single connection's, and
/// not one of ours.
fn forwarded(name: &str) -> bool {
    !HOP_BY_HOP.contains(&name) && !name.starts_with(OWN_PREFIX)
}

/// Removes every header of ours from `headers` (what a caller sent; a guest must not read a
/// caller header the caller chose).
pub fn strip_own(headers: &mut http::HeaderMap) {
    let own: Vec<http::HeaderName> = headers.keys().filter(|k| k.as_str().starts_with(OWN_PREFIX)).cloned().collect();
    for name in own {
        headers.remove(name);
    }
}

/// Nodes whose certificates are no longer taken: those that begin at or before the time kept
/// for the node (its revocation, told by the control plane in every heartbeat answer).
#[derive(Default)]
pub struct Revocations(std::sync::RwLock<std::collections::HashMap<String, i64>>);

impl Revocations {
    /// Replaces what is known with `revoked` (the whole current list).
    pub fn replace(&self, revoked: &[shoal_api::agent::RevokedNode]) {
        let known = revoked.iter().map(|r| (r.node.clone(), r.before)).collect();
        *self.0.write().expect("revocations lock") = known;
    }

    /// Which node the (verified) certificate `der` is, if it is a node's and still good.
    pub fn node_of(&self, der: &[u8]) -> Result<String, String> {
        use shoal_api::identity::{Identity, of_certificate};
        let cert = of_certificate(der).map_err(|e| e.to_string())?;
        let Identity::Node(node) = cert.identity else {
            return Err("the certificate is not a node's".into());
        };
        match self.0.read().expect("revocations lock").get(&node) {
            Some(before) if cert.not_before <= *before => Err(format!("node {node}'s credentials were revoked")),
            _ => Ok(node),
        }
    }
}

/// A client of other nodes' agent APIs, authenticated with this node's certificate.
#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
}

/// The peer client of the node's current certificate, replaced at each renewal.
pub struct PeerClients(std::sync::RwLock<PeerClient>);

impl PeerClients {
    /// Starting with `client`.
    pub fn new(client: PeerClient) -> PeerClients {
        PeerClients(std::sync::RwLock::new(client))
    }

    /// The client to use now.
    pub fn current(&self) -> PeerClient {
        self.0.read().expect("peer client lock").clone()
    }

    /// Uses `client` from now on (a renewed certificate).
    pub fn replace(&self, client: PeerClient) {
        *self.0.write().expect("peer client lock") = client;
    }
}

/// The node CA: the last certificate of the chain issued at join.
pub fn node_ca(credentials: &NodeCredentials) -> anyhow::Result<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let chain = CertificateDer::pem_slice_iter(credentials.cert.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    chain.into_iter().last().ok_or_else(|| anyhow::anyhow!("the issued certificate chain is empty"))
}

impl PeerClient {
    /// A client that presents `credentials` and trusts only the node CA.
    pub fn new(credentials: &NodeCredentials) -> anyhow::Result<PeerClient> {
        shoal_api::client::install_crypto_provider();
        let ca = reqwest::Certificate::from_der(node_ca(credentials)?.as_ref())?;
        let identity = reqwest::Identity::from_pem(format!("{}{}", credentials.key, credentials.cert).as_bytes())?;
        let http = reqwest::Client::builder()
            .tls_certs_only([ca])
            .identity(identity)
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(PeerClient { http })
    }

    /// Sends a request of `caller` for Service `namespace/name` to the node whose agent API is
    /// at `peer`.
    pub async fn send(
        &self,
        peer: &str,
        service: (&str, &str),
        caller: &Caller,
        head: &http::request::Parts,
        body: Bytes,
    ) -> Result<hyper::Response<Body>, reqwest::Error> {
        let path = head.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = self.http.request(head.method.clone(), format!("https://{peer}{path}"));
        for (name, value) in head.headers.iter().filter(|(name, _)| forwarded(name.as_str())) {
            request = request.header(name, value);
        }
        let response = request
            .header(SERVICE_HEADER, format!("{}/{}", service.0, service.1))
            .header(CALLER_HEADER, caller.header())
            .body(body)
            .send()
            .await?;
        let response: http::Response<reqwest::Body> = response.into();
        Ok(response.map(|body| {
            body.map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(format!("peer response body: {e}"))))
                .boxed_unsync()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_cannot_name_the_service_or_itself_to_the_next_node() {
        assert!(!forwarded("x-shoal-service"));
        assert!(!forwarded("x-shoal-caller"));
        assert!(!forwarded("connection"));
        assert!(forwarded("accept"));
        assert_eq!(Caller::parse(&Caller::Namespace("shop".into()).header()), Some(Caller::Namespace("shop".into())));
        assert_eq!(Caller::parse("outside"), Some(Caller::Outside));
        assert_eq!(Caller::parse("namespace/"), None);
        assert_eq!(Caller::parse("anything"), None);
    }
}
