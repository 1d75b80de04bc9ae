//! Serving an axum router over TLS (the control plane's API and raft listeners, a node agent's
//! API) on an already-bound listener, until a shutdown signal;
//! every connection task is tracked so that shutdown ends them all.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// The certificate a client presented in the TLS handshake, verified by the server's client
/// verifier (see [`server_config_with_clients`]); every request of the connection carries it
/// as an extension, `None` when the client presented none.
#[derive(Debug, Clone)]
pub struct TlsPeer(pub Option<rustls::pki_types::CertificateDer<'static>>);

/// Serves `router` on `listener` with TLS `config` until `shutdown` is cancelled; then stops
/// accepting, gives open connections a moment to finish, and ends the rest (watch streams never
/// finish on their own).
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    router: axum::Router,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(config);
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!("TLS handshake with {peer} failed: {e}"),
                Err(_) => return tracing::debug!("TLS handshake with {peer} timed out"),
            };
            let peer_cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.clone().into_owned());
            let service = TowerToHyperService::new(router.layer(axum::Extension(TlsPeer(peer_cert))));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            tokio::select! {
                result = connection => if let Err(e) = result {
                    tracing::debug!("connection from {peer} ended: {e}");
                },
                _ = shutdown.cancelled() => {}
            }
        });
    }
    let _ =
        tokio::time::timeout(Duration::from_millis(500), async { while connections.join_next().await.is_some() {} })
            .await;
    connections.shutdown().await;
}

/// A rustls server configuration for `chain` and `key` (ring, safe defaults, HTTP/2 and
/// HTTP/1.1 offered).
pub fn server_config(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    server_config_with_clients(chain, key, None)
}

/// Like [`server_config`]; with `client_ca`, clients may also present a certificate, which must
/// be signed by that CA (handlers see it as [`TlsPeer`]). Clients without one are still
/// served, so the same listener can take bearer-token callers too.
pub fn server_config_with_clients(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    client_ca: Option<rustls::pki_types::CertificateDer<'static>>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let key = rustls::sign::CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())?;
    server_config_resolving(Arc::new(rustls::sign::SingleCertAndKey::from(key)), client_ca)
}

/// Like [`server_config_with_clients`], with the certificate chosen by `resolver` at each
/// handshake (a certificate that is renewed while the listener runs).
pub fn server_config_resolving(
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
    client_ca: Option<rustls::pki_types::CertificateDer<'static>>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca)?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| rustls::Error::General(format!("client verifier: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
