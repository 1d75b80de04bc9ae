//! Serving HTTP on a listener until shutdown: the one accept loop behind `shoal run --listen`
//! (one guest) and the node's ingress (routed guests).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::runtime::host::Sandbox;
use crate::runtime::http::{Body, HttpApp, text_response};

/// What one listener lets its clients hold: a client that opens connections and sends nothing
/// (or trickles its headers) costs a slot for at most the idle timeout, and never more slots
/// than the limit, so it cannot starve other clients or the node for long.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once; past it, new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// A connection on which nothing was read or written for this long is closed; it also
    /// bounds reading a request's headers.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits { max_connections: 10_000, idle_timeout: Duration::from_secs(60) }
    }
}

/// Back-off after a failed accept (file descriptors running out must not spin a core).
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// Serves every request on `listener` with `handler` (HTTP/1.1 and HTTP/2), within `limits`,
/// until `shutdown`.
pub async fn serve_http<H, F>(listener: TcpListener, handler: H, limits: ConnectionLimits, shutdown: CancellationToken)
where
    H: Fn(hyper::Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = hyper::Response<Body>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    backoff = ACCEPT_BACKOFF.0;
                    stream
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
        let handler = handler.clone();
        connections.spawn(async move {
            let _slot = slot;
            let service = service_fn(move |request| {
                let response = handler(request);
                async move { Ok::<_, std::convert::Infallible>(response.await) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.idle_timeout);
            let io = TokioIo::new(Idle::new(stream, limits.idle_timeout));
            if let Err(e) = builder.serve_connection(io, service).await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    connections.shutdown().await;
}

/// A stream that fails with `TimedOut` once nothing was read or written on it for `timeout`
/// while it is being read (hyper reads whenever it waits for a client).
struct Idle<S> {
    inner: S,
    timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<S> Idle<S> {
    fn new(inner: S, timeout: Duration) -> Self {
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

/// Serves `app` on `listener`, each request in a fresh instance sandboxed by `sandbox`.
pub async fn serve_app(listener: TcpListener, app: HttpApp, sandbox: Sandbox, shutdown: CancellationToken) {
    let shared = Arc::new((app, sandbox));
    let handler = move |request| {
        let shared = shared.clone();
        async move {
            let (app, sandbox) = &*shared;
            match app.handle(request, sandbox).await {
                Ok(response) => response,
                Err(e) => text_response(e.status(), format!("{e}\n")),
            }
        }
    };
    serve_http(listener, handler, ConnectionLimits::default(), shutdown).await;
}
