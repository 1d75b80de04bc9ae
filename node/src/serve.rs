//! Serving HTTP on a listener until shutdown: the one accept loop behind `shoal run --listen`
//! (one guest) and the node's ingress (routed guests).

use std::future::Future;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::runtime::host::Sandbox;
use crate::runtime::http::{Body, HttpApp, text_response};

/// Serves every request on `listener` with `handler` (HTTP/1.1 and HTTP/2), until `shutdown`.
pub async fn serve_http<H, F>(listener: TcpListener, handler: H, shutdown: CancellationToken)
where
    H: Fn(hyper::Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = hyper::Response<Body>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let mut connections = JoinSet::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let response = handler(request);
                async move { Ok::<_, std::convert::Infallible>(response.await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    connections.shutdown().await;
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
    serve_http(listener, handler, shutdown).await;
}
