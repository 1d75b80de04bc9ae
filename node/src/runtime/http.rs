//! Serving HTTP with a `wasi:http/proxy` component: the component is pre-instantiated once
//! ([`HttpApp::new`]), and every request gets a fresh store and instance with the sandbox's
//! limits, so requests share nothing and an idle app costs nothing but its compiled code.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use wasmtime::Store;
use wasmtime::component::Component;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::command::{Exit, StopReason, classify};
use super::host::{Host, Sandbox};
use super::{Runtime, RuntimeError, limits};

/// A response body, whether the guest's or the host's own.
pub type Body = HyperOutgoingBody;

/// A ready-to-serve HTTP component.
#[derive(Clone)]
pub struct HttpApp {
    pre: ProxyPre<Host>,
}

/// Why a request got no response from the guest.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The guest was stopped (deadline, memory limit, trap).
    #[error("{0}")]
    Stopped(Exit),
    /// The host could not run it.
    #[error("{0}")]
    Host(String),
    /// The instance serves as many requests as it may and its queue is full.
    #[error("busy: {in_flight} requests in flight and {queued} waiting, the most it takes; retry")]
    Busy {
        /// Requests it serves at once.
        in_flight: u32,
        /// Requests that may wait.
        queued: usize,
    },
}

impl RequestError {
    /// The status the caller should see: 504 for a deadline, 500 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::Stopped(Exit::Stopped { reason: StopReason::Timeout, .. }) => 504,
            RequestError::Busy { .. } => 503,
            _ => 500,
        }
    }
}

/// The response for a request that failed with `e` (`Retry-After` on a busy instance).
pub fn error_response(e: &RequestError, text: impl Into<String>) -> hyper::Response<Body> {
    let mut response = text_response(e.status(), text);
    if matches!(e, RequestError::Busy { .. }) {
        response.headers_mut().insert("retry-after", hyper::header::HeaderValue::from_static("1"));
    }
    response
}

/// A host-made response (errors, 404s) in the same body type as the guest's.
pub fn text_response(status: u16, text: impl Into<String>) -> hyper::Response<Body> {
    let body = Full::new(Bytes::from(text.into())).map_err(|never| match never {}).boxed_unsync();
    hyper::Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(body)
        .expect("a valid status and header")
}

impl HttpApp {
    /// Prepares `component`; fails if it does not export `wasi:http/incoming-handler`.
    pub fn new(runtime: &Runtime, component: &Component) -> Result<Self, RuntimeError> {
        let pre = runtime
            .linkers_for(component.engine())
            .component
            .instantiate_pre(component)
            .map_err(|e| RuntimeError::Instantiate(format!("{e:#}")))?;
        let pre = ProxyPre::new(pre)
            .map_err(|e| RuntimeError::Shape(format!("not an HTTP component (wasi:http/incoming-handler): {e:#}")))?;
        Ok(HttpApp { pre })
    }

    /// Sends `GET path` to a fresh instance (a readiness probe); the status it answered with.
    pub async fn probe(&self, path: &str, sandbox: &Sandbox) -> Result<u16, RequestError> {
        let body = http_body_util::Empty::<Bytes>::new()
            .map_err(|never: std::convert::Infallible| -> wasmtime_wasi_http::Error { match never {} });
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, "localhost")
            .body(body)
            .map_err(|e| RequestError::Host(format!("probe path {path:?}: {e}")))?;
        Ok(self.handle(request, sandbox).await?.status().as_u16())
    }

    /// A fresh store for one request: the sandbox's host state, memory guard and CPU budget
    /// (Shoal's per-instance setup; what the instantiation benchmark measures with
    /// [`HttpApp::instantiate`]).
    pub fn new_store(&self, sandbox: &Sandbox) -> Result<Store<Host>, RequestError> {
        let host = Host::new(sandbox).map_err(|e| RequestError::Host(e.to_string()))?;
        let mut store = Store::new(self.pre.engine(), host);
        store.limiter(|h| &mut h.guard);
        limits::arm(&mut store, &sandbox.limits);
        Ok(store)
    }

    /// Instantiates the component in `store`.
    pub async fn instantiate(&self, store: &mut Store<Host>) -> wasmtime::Result<Proxy> {
        self.pre.instantiate_async(store).await
    }

    /// Handles one request in a fresh instance.
    pub async fn handle<B>(
        &self,
        request: hyper::Request<B>,
        sandbox: &Sandbox,
    ) -> Result<hyper::Response<Body>, RequestError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        self.handle_holding(request, sandbox, ()).await
    }

    /// Handles one request in a fresh instance, keeping `held` (a place in a gate) until the
    /// guest has ended, body included. The guest ends at the request's deadline by the clock,
    /// not only by its running time (one blocked writing to a slow reader runs no wasm), and at
    /// once if this call is dropped before the guest has answered (the caller went away).
    pub async fn handle_holding<B, H>(
        &self,
        request: hyper::Request<B>,
        sandbox: &Sandbox,
        held: H,
    ) -> Result<hyper::Response<Body>, RequestError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
        H: Send + 'static,
    {
        let mut store = self.new_store(sandbox)?;
        store.data_mut().set_hops(request.extensions().get::<super::host::Hops>().copied().unwrap_or_default());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let host_err = |e: wasmtime::Error| RequestError::Host(format!("{e:#}"));
        let incoming = store.data_mut().http().new_incoming_request(Scheme::Http, request).map_err(host_err)?;
        let out = store.data_mut().http().new_response_outparam(tx).map_err(host_err)?;
        let pre = self.pre.clone();
        // The guest may go on streaming the body after it has sent the head, so it runs as a
        // task of its own, in turns on the node's threads when it has them.
        let deadline = sandbox.limits.timeout;
        let guest = async move {
            let _held = held;
            let run = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy.wasi_http_incoming_handler().call_handle(&mut store, incoming, out).await
            };
            match deadline {
                Some(limit) => tokio::time::timeout(limit, run)
                    .await
                    .unwrap_or_else(|_| Err(wasmtime::Error::new(super::limits::DeadlineExceeded(limit)))),
                None => run.await,
            }
        };
        let task = match sandbox.turns.clone() {
            Some(turns) => tokio::spawn(super::fair::Fair::new(guest, turns)),
            None => tokio::spawn(guest),
        };
        // Until the guest has answered, a caller that goes away takes the guest with it.
        struct AbortUnlessAnswered(Option<tokio::task::AbortHandle>);
        impl Drop for AbortUnlessAnswered {
            fn drop(&mut self) {
                if let Some(task) = self.0.take() {
                    task.abort();
                }
            }
        }
        let mut abort = AbortUnlessAnswered(Some(task.abort_handle()));
        let answer = rx.await;
        if matches!(answer, Ok(Ok(_))) {
            abort.0 = None;
        }
        match answer {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(RequestError::Host(format!("the guest answered with error code {code:?}"))),
            Err(_) => match task.await {
                Ok(Ok(())) => Err(RequestError::Host("the guest returned without sending a response".into())),
                Ok(Err(e)) => Err(RequestError::Stopped(classify(&e))),
                Err(e) => Err(RequestError::Host(format!("the request task failed: {e}"))),
            },
        }
    }
}
