//! Serving plain HTTP on a listener until shutdown: behind `shoal run --listen` (one guest) and
//! the node's ingress (routed guests), on [`shoal_api::serve::accept_loop`].

use std::future::Future;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::runtime::fair::{Fair, FairGate, Owner};
use crate::runtime::host::Sandbox;
use crate::runtime::http::{Body, HttpApp, text_response};

pub use shoal_api::serve::ConnectionLimits;

/// Serves every request on `listener` with `handler` (HTTP/1.1 and HTTP/2), within `limits`,
/// until `shutdown`. With `gate`, each connection runs in the turns of the namespace its
/// handler last routed a request to (the handler finds the connection's
/// [`Owner`] among the request's extensions), so that reading, parsing and answering one
/// tenant's flood takes that tenant's share of the node's threads, not the others'.
pub async fn serve_http<H, F>(
    listener: TcpListener,
    handler: H,
    limits: ConnectionLimits,
    gate: Option<Arc<FairGate>>,
    shutdown: CancellationToken,
) where
    H: Fn(hyper::Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = hyper::Response<Body>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let serve = |stream, _peer| {
        let (handler, gate, owner) = (handler.clone(), gate.clone(), Owner::default());
        let connection = {
            let (owner, gate) = (owner.clone(), gate.clone());
            async move {
                // HTTP/2 streams run as tasks of their own: in the connection's turns too.
                let executor = FairExecutor { gate: gate.clone(), owner: owner.clone() };
                let service = service_fn(move |mut request: hyper::Request<Incoming>| {
                    // Charged to no namespace until the handler routes it.
                    owner.set(crate::runtime::fair::UNROUTED);
                    request.extensions_mut().insert(owner.clone());
                    let response = handler(request);
                    async move { Ok::<_, std::convert::Infallible>(response.await) }
                });
                let builder = shoal_api::serve::connection_builder_with(limits, executor);
                if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
                    tracing::debug!("connection ended: {e}");
                }
            }
        };
        async move {
            match gate {
                Some(gate) => Fair::owned(connection, gate, owner).await,
                None => connection.await,
            }
        }
    };
    shoal_api::serve::accept_loop(listener, limits, shutdown, serve).await;
}

/// Spawns a connection's HTTP/2 streams, in the turns of the connection's owner when the
/// listener shares the node's threads.
#[derive(Clone)]
struct FairExecutor {
    gate: Option<Arc<FairGate>>,
    owner: Owner,
}

impl<F> hyper::rt::Executor<F> for FairExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, stream: F) {
        match &self.gate {
            Some(gate) => tokio::spawn(Fair::owned(stream, gate.clone(), self.owner.clone())),
            None => tokio::spawn(stream),
        };
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
    serve_http(listener, handler, ConnectionLimits::default(), None, shutdown).await;
}
