//! shoal-guest: what a Shoal guest workload links to. Built for `wasm32-wasip2`.
//!
//! An HTTP workload is a function from [`Request`] to [`Response`] plus one macro:
//!
//! ```ignore
//! use shoal_guest::{Request, Response};
//!
//! fn hello(request: Request) -> Response {
//!     Response::text(200, format!("hello from {}\n", request.path))
//! }
//! shoal_guest::http_handler!(hello);
//! ```
//!
//! Calling another Service is one line, `shoal_guest::get("http://api.shop.svc.cluster.local/")`
//! ([`client`]).
//!
//! A command workload is a plain `fn main`. [`config`] reads configuration from the environment
//! the spec grants, and [`log`] writes leveled lines to stderr, which the node keeps per instance.
//!
//! # Layout
//! - [`http`]: the request and response types, and the glue to `wasi:http/incoming-handler`.
//! - [`client`]: calls to other Services and allowed hosts.
//! - [`config`], [`log`]: configuration and logging helpers.

pub mod client;
pub mod config;
pub mod http;
pub mod log;

pub use client::{CallError, call, get};
pub use http::{Request, Response};

#[doc(hidden)]
pub use wasip2 as __wasip2;

/// Exports `handler` (a `fn(Request) -> Response`) as the component's
/// `wasi:http/incoming-handler`.
#[macro_export]
macro_rules! http_handler {
    ($handler:path) => {
        struct __ShoalHandler;
        impl $crate::__wasip2::exports::http::incoming_handler::Guest for __ShoalHandler {
            fn handle(
                request: $crate::__wasip2::http::types::IncomingRequest,
                out: $crate::__wasip2::http::types::ResponseOutparam,
            ) {
                $crate::http::serve(request, out, $handler);
            }
        }
        $crate::__wasip2::http::proxy::export!(__ShoalHandler);
    };
}
