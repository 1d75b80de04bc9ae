//! Serving one HTTP guest on a listener (what `shoal run --listen` does), until shutdown.

use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::runtime::host::Sandbox;
use crate::runtime::http::{HttpApp, text_response};

/// Serves `app` on `listener`, each request in a fresh instance sandboxed by `sandbox`.
pub async fn serve_app(listener: TcpListener, app: HttpApp, sandbox: Sandbox, shutdown: CancellationToken) {
    let shared = Arc::new((app, sandbox));
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
        let shared = shared.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let shared = shared.clone();
                async move {
                    let (app, sandbox) = &*shared;
                    Ok::<_, std::convert::Infallible>(match app.handle(request, sandbox).await {
                        Ok(response) => response,
                        Err(e) => text_response(e.status(), format!("{e}\n")),
                    })
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    connections.shutdown().await;
}
