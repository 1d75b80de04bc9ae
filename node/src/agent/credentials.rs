//! The node's credentials: a certificate from the node CA for the one host it joined with and
//! for its name. Issued at join for a bounded time and renewed by [`renew`] well before it
//! expires, while the agent API keeps serving (the
//! listener picks the current certificate at each handshake) and calls to other nodes use the
//! current one.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use shoal_api::Client;
use shoal_api::agent::{CredentialsRequest, NodeCredentials};
use tokio_util::sync::CancellationToken;

use crate::proxy::peers::{PeerClient, PeerClients, Revocations, node_ca};

/// How long to wait before asking again when a renewal failed.
const RETRY: Duration = Duration::from_secs(30);

/// The certificate the agent API presents now.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().expect("certificate lock").clone())
    }
}

fn certified(credentials: &NodeCredentials) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_slice_iter(credentials.cert.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(credentials.key.as_bytes())?;
    Ok(CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())?)
}

/// What the agent holds of its credentials, swapped whole at each renewal.
pub struct Credentials {
    current: Arc<Current>,
    peers: Arc<PeerClients>,
    revocations: Arc<Revocations>,
    server: Arc<rustls::ServerConfig>,
}

impl Credentials {
    /// From the credentials issued at join; its peers are refused in generations
    /// `revocations` refuses.
    pub fn new(issued: &NodeCredentials, revocations: Arc<Revocations>) -> anyhow::Result<Credentials> {
        let peers = Arc::new(PeerClients::new(PeerClient::new(issued, revocations.clone())?));
        let current = Arc::new(Current(RwLock::new(Arc::new(certified(issued)?))));
        // Other nodes and the control plane present certificates of the node CA.
        let server = shoal_api::serve::server_config_resolving(current.clone(), Some(node_ca(issued)?))?;
        Ok(Credentials { current, peers, revocations, server })
    }

    /// The agent API's TLS configuration (it follows renewals).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }

    /// Clients of other nodes' agent APIs with the current certificate (the proxy's).
    pub fn peers(&self) -> Arc<PeerClients> {
        self.peers.clone()
    }

    fn install(&self, issued: &NodeCredentials) -> anyhow::Result<()> {
        let key = Arc::new(certified(issued)?);
        let peers = PeerClient::new(issued, self.revocations.clone())?;
        *self.current.0.write().expect("certificate lock") = key;
        self.peers.replace(peers);
        Ok(())
    }
}

/// Asks for fresh credentials for node `name` at `host` every time the last ones say to, until
/// `shutdown`; a failed request is retried after [`RETRY`], while the current ones still hold.
pub async fn renew(
    client: Client,
    name: String,
    host: String,
    credentials: Arc<Credentials>,
    mut renew_after: Duration,
    shutdown: CancellationToken,
) {
    let request = CredentialsRequest { hosts: vec![host] };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(renew_after) => {}
        }
        match client.node_credentials(&name, &request).await.map_err(anyhow::Error::from).and_then(|issued| {
            credentials.install(&issued)?;
            Ok(issued.renew_after_secs)
        }) {
            Ok(after) => {
                tracing::info!("node {name}: credentials renewed");
                renew_after = Duration::from_secs(after.max(1));
            }
            Err(e) => {
                tracing::warn!("node {name}: renewing credentials failed, trying again in {RETRY:?}: {e:#}");
                renew_after = RETRY;
            }
        }
    }
}
