//! Serving on an already-bound listener until a shutdown signal: the one accept loop behind
//! every listener (the control plane's API and raft listeners, a node agent's API over TLS, a
//! node's ingress in plain HTTP), with a connection limit, an idle timeout and back-off on
//! failed accepts; every connection task is tracked so that shutdown ends them all.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// The certificate a client presented in the TLS handshake, verified by the server's client
/// verifier (see [`server_config_with_clients`]); every request of the connection carries it
/// as an extension, `None` when the client presented none.
#[derive(Debug, Clone)]
pub struct TlsPeer(pub Option<rustls::pki_types::CertificateDer<'static>>);

/// One connection, as its requests see it (a request extension): a place for what must last as
/// long as the connection and no longer, such as its count against its principal's limit.
#[derive(Clone, Default)]
pub struct ConnectionScope(Arc<std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>>);

impl ConnectionScope {
    /// Keeps `held` until the connection ends, unless something is kept already; says whether
    /// it was kept.
    pub fn keep(&self, held: Box<dyn std::any::Any + Send + Sync>) -> bool {
        self.0.set(held).is_ok()
    }

    /// Whether something is kept for this connection.
    pub fn keeps(&self) -> bool {
        self.0.get().is_some()
    }
}

/// What one listener lets its clients hold: a client that opens connections and sends nothing
/// (or trickles its headers) costs a slot for at most the idle timeout, and never more slots
/// than the limit, so it cannot starve other clients or the process for long.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once; past it, new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// A connection on which nothing was read or written for this long is closed; it also
    /// bounds the TLS handshake and reading a request's headers.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits { max_connections: 10_000, idle_timeout: Duration::from_secs(60) }
    }
}

/// Back-off after a failed accept (file descriptors running out must not spin a core).
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// Accepts connections on `listener`, at most `limits.max_connections` at once, each wrapped in
/// the idle timeout and handed to `serve` with its peer address, until `shutdown`; then gives
/// open connections a moment to finish and ends the rest (watch streams never finish on their
/// own).
pub async fn accept_loop<F, Fut>(listener: TcpListener, limits: ConnectionLimits, shutdown: CancellationToken, serve: F)
where
    F: Fn(Idle<TcpStream>, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff = ACCEPT_BACKOFF.0;
                    accepted
                }
                Err(e) => {
                    tracing::warn!("accept failed, trying again in {backoff:?}: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let connection = serve(Idle::new(stream, limits.idle_timeout), peer);
        connections.spawn(async move {
            let _slot = slot;
            connection.await;
        });
    }
    let _ =
        tokio::time::timeout(Duration::from_millis(500), async { while connections.join_next().await.is_some() {} })
            .await;
    connections.shutdown().await;
}

/// Streams one HTTP/2 connection carries at once.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 100;

/// A hyper connection builder with the timeouts every listener uses: headers read within the
/// idle timeout. The server sends no HTTP/2 pings of its own: its own traffic would keep an
/// idle connection alive past the idle timeout (clients ping; a dead client's connection goes
/// quiet and is closed).
pub fn connection_builder(limits: ConnectionLimits) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    connection_builder_with(limits, TokioExecutor::new())
}

/// Like [`connection_builder`], with HTTP/2 streams spawned by `executor`.
pub fn connection_builder_with<E>(limits: ConnectionLimits, executor: E) -> hyper_util::server::conn::auto::Builder<E> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(executor);
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.idle_timeout);
    // Requests a connection carries at once: with the connections one principal may hold,
    // this bounds its requests in flight.
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
    builder
}

/// Serves `router` on `listener` with TLS `config`, within `limits`, until `shutdown` is
/// cancelled.
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    router: axum::Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(config);
    let serve = |stream: Idle<TcpStream>, peer: SocketAddr| {
        let (acceptor, router, shutdown) = (acceptor.clone(), router.clone(), shutdown.clone());
        async move {
            let tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(e) => return tracing::debug!("TLS handshake with {peer} failed: {e}"),
            };
            let peer_cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.clone().into_owned());
            let router =
                router.layer(axum::Extension(TlsPeer(peer_cert))).layer(axum::Extension(ConnectionScope::default()));
            let service = TowerToHyperService::new(router);
            let builder = connection_builder(limits);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            tokio::select! {
                result = connection => if let Err(e) = result {
                    tracing::debug!("connection from {peer} ended: {e}");
                },
                _ = shutdown.cancelled() => {}
            }
        }
    };
    accept_loop(listener, limits, shutdown.clone(), serve).await;
}

/// A stream that fails with `TimedOut` once nothing was read or written on it for `timeout`
/// while it is being read (hyper reads whenever it waits for a client).
pub struct Idle<S> {
    inner: S,
    timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<S> Idle<S> {
    /// `inner`, closed after `timeout` without traffic.
    pub fn new(inner: S, timeout: Duration) -> Self {
        Idle { inner, timeout, deadline: Box::pin(tokio::time::sleep(timeout)) }
    }

    fn active(&mut self) {
        self.deadline.as_mut().reset(tokio::time::Instant::now() + self.timeout);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.active();
                }
                Poll::Ready(result)
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("idle for {:?}", this.timeout),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.active();
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
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
