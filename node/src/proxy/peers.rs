//! Node-to-node traffic: a request for a Service with no ready instance here goes to the agent
//! API of a node that has one, over TLS where both sides present the certificate the node CA
//! issued them (the cluster CA's certificates, the API server's and raft's, are not accepted
//! there, nor node certificates by the API server's clients). The receiving node serves it from its own instances only, so a request
//! crosses at most one hop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::BodyExt;
use shoal_api::agent::NodeCredentials;

use crate::runtime::host::Hops;
use crate::runtime::http::Body;

/// Names the Service (`<namespace>/<name>`) a forwarded request is for.
pub const SERVICE_HEADER: &str = "x-shoal-service";

/// A node that serves a Service: its name (its certificate must say it) and where its agent
/// API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The node's name.
    pub node: String,
    /// `host:port` of its agent API.
    pub address: String,
}

/// Says who a forwarded request comes from: `namespace/<ns>` for a guest of that namespace,
/// `outside` for the ingress. The receiving node checks the Service admits it.
pub const CALLER_HEADER: &str = "x-shoal-caller";

/// Says how many calls between guests led to a forwarded request (see
/// [`crate::runtime::host::Hops`]).
pub const HOPS_HEADER: &str = "x-shoal-hops";

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

/// Nodes whose older certificates are no longer taken: a node's certificate of a generation
/// before the one kept for it (raised by each revocation, told by the control plane in the
/// heartbeat answers) is refused.
#[derive(Default)]
pub struct Revocations(std::sync::RwLock<std::collections::HashMap<String, u64>>);

impl Revocations {
    /// Replaces what is known with `revoked` (the whole current list).
    pub fn replace(&self, revoked: &[shoal_api::agent::RevokedNode]) {
        let known = revoked.iter().map(|r| (r.node.clone(), r.generation)).collect();
        *self.0.write().expect("revocations lock") = known;
    }

    /// Which node the (verified) certificate `der` is, if it is a node's and still good.
    pub fn node_of(&self, der: &[u8]) -> Result<String, String> {
        use shoal_api::identity::{Identity, of_certificate};
        let Identity::Node { name, generation } = of_certificate(der).map_err(|e| e.to_string())? else {
            return Err("the certificate is not a node's".into());
        };
        match self.0.read().expect("revocations lock").get(&name) {
            Some(current) if generation < *current => Err(format!("node {name}'s credentials were revoked")),
            _ => Ok(name),
        }
    }
}

/// A client of other nodes' agent APIs, authenticated with this node's certificate: one
/// connection pool per peer node, each taking only that node's certificate
/// ([`super::peer_tls`]).
#[derive(Clone)]
pub struct PeerClient {
    identity: Arc<super::peer_tls::Identity>,
    revocations: Arc<Revocations>,
    by_node: Arc<Mutex<HashMap<String, reqwest::Client>>>,
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

/// The most peer nodes a node keeps clients of; past it they are all made again as needed.
const MAX_PEER_CLIENTS: usize = 4096;

/// The node CA: the last certificate of the chain issued at join.
pub fn node_ca(credentials: &NodeCredentials) -> anyhow::Result<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let chain = CertificateDer::pem_slice_iter(credentials.cert.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    chain.into_iter().last().ok_or_else(|| anyhow::anyhow!("the issued certificate chain is empty"))
}

impl PeerClient {
    /// A client that presents `credentials` and trusts only the node CA and the nodes it means
    /// to reach, in generations `revocations` does not refuse.
    pub fn new(credentials: &NodeCredentials, revocations: Arc<Revocations>) -> anyhow::Result<PeerClient> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        shoal_api::client::install_crypto_provider();
        let identity = super::peer_tls::Identity {
            ca: node_ca(credentials)?,
            chain: CertificateDer::pem_slice_iter(credentials.cert.as_bytes()).collect::<Result<Vec<_>, _>>()?,
            key: PrivateKeyDer::from_pem_slice(credentials.key.as_bytes())?,
        };
        Ok(PeerClient { identity: Arc::new(identity), revocations, by_node: Arc::default() })
    }

    fn client_of(&self, node: &str) -> anyhow::Result<reqwest::Client> {
        let mut by_node = self.by_node.lock().expect("peer clients lock");
        if let Some(client) = by_node.get(node) {
            return Ok(client.clone());
        }
        if by_node.len() >= MAX_PEER_CLIENTS {
            by_node.clear();
        }
        let client = super::peer_tls::client_of(&self.identity, node, self.revocations.clone())?;
        by_node.insert(node.to_owned(), client.clone());
        Ok(client)
    }

    /// Sends a request of `caller` for Service `namespace/name` to `peer`.
    pub async fn send(
        &self,
        peer: &Peer,
        service: (&str, &str),
        caller: &Caller,
        head: &http::request::Parts,
        body: Bytes,
    ) -> anyhow::Result<hyper::Response<Body>> {
        let path = head.uri.path_and_query().map_or("/", |p| p.as_str());
        let http = self.client_of(&peer.node)?;
        let mut request = http.request(head.method.clone(), format!("https://{}{path}", peer.address));
        for (name, value) in head.headers.iter().filter(|(name, _)| forwarded(name.as_str())) {
            request = request.header(name, value);
        }
        let response = request
            .header(SERVICE_HEADER, format!("{}/{}", service.0, service.1))
            .header(CALLER_HEADER, caller.header())
            .header(HOPS_HEADER, head.extensions.get::<Hops>().copied().unwrap_or_default().0)
            .body(body)
            .send()
            .await
            // The chain holds why (a handshake refused for the wrong node says so).
            .map_err(|e| anyhow::anyhow!("{:#}", anyhow::Error::from(e)))?;
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
