//! Calling other Services (and hosts the workload's spec allows) over `wasi:http`:
//! `shoal_guest::get("http://api.shop.svc.cluster.local/items")` is the whole call. The node
//! routes cluster names itself (in process when the Service runs on the same node); any other
//! host is refused unless the spec lists it in `allowedOutboundHosts`.

use std::io::{Read, Write};

use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

use crate::http::Response;

/// Why a call got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The URL is not `http://HOST/PATH` or `https://HOST/PATH`.
    BadUrl(String),
    /// The cluster refused the call: the host is neither a Service this workload may call nor in
    /// its `allowedOutboundHosts`.
    Denied(String),
    /// The Service has no ready instance anywhere, or no node answered.
    Unavailable(String),
    /// Anything else the host reported.
    Failed(String, String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::BadUrl(url) => write!(f, "{url:?} is not an http:// or https:// URL"),
            CallError::Denied(url) => {
                write!(f, "call to {url} denied: not a Service this workload may call, nor in its allowedOutboundHosts")
            }
            CallError::Unavailable(url) => write!(f, "call to {url}: no ready instance answered"),
            CallError::Failed(url, why) => write!(f, "call to {url} failed: {why}"),
        }
    }
}

impl std::error::Error for CallError {}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, CallError> {
    call("GET", url, &[])
}

fn method_of(name: &str) -> Method {
    match name.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "OPTIONS" => Method::Options,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_owned()),
    }
}

/// Sends `method url` with `body` and reads the whole response.
pub fn call(method: &str, url: &str, body: &[u8]) -> Result<Response, CallError> {
    let bad = || CallError::BadUrl(url.to_owned());
    let (scheme, rest) = match url.split_once("://") {
        Some(("http", rest)) => (Scheme::Http, rest),
        Some(("https", rest)) => (Scheme::Https, rest),
        _ => return Err(bad()),
    };
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    if authority.is_empty() {
        return Err(bad());
    }
    let request = OutgoingRequest::new(Fields::new());
    request.set_method(&method_of(method)).map_err(|()| bad())?;
    request.set_scheme(Some(&scheme)).map_err(|()| bad())?;
    request.set_authority(Some(authority)).map_err(|()| bad())?;
    request.set_path_with_query(Some(path)).map_err(|()| bad())?;
    let outgoing = request.body().map_err(|()| bad())?;
    let failed = |code: ErrorCode| match code {
        ErrorCode::HttpRequestDenied => CallError::Denied(url.to_owned()),
        ErrorCode::DestinationUnavailable | ErrorCode::ConnectionRefused => CallError::Unavailable(url.to_owned()),
        other => CallError::Failed(url.to_owned(), format!("{other:?}")),
    };
    let pending = outgoing_handler::handle(request, None).map_err(failed)?;
    // A write fails when the host has already given up on the request (it was refused, say);
    // the response future then carries the reason, so that is what the caller gets.
    let written = match outgoing.write() {
        Ok(mut stream) => stream.write_all(body).and_then(|()| Write::flush(&mut stream)).is_ok(),
        Err(()) => false,
    };
    let finished = OutgoingBody::finish(outgoing, None);
    pending.subscribe().block();
    let incoming = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(failed(code)),
        Some(Err(())) | None => return Err(CallError::Failed(url.to_owned(), "response already taken".into())),
    };
    if !written {
        return Err(CallError::Failed(url.to_owned(), "the request body could not be sent".into()));
    }
    finished.map_err(failed)?;
    let headers =
        incoming.headers().entries().into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned())).collect();
    let mut response = Response { status: incoming.status(), headers, body: Vec::new() };
    if let Ok(body) = incoming.consume()
        && let Ok(mut stream) = body.stream()
    {
        stream.read_to_end(&mut response.body).map_err(|e| CallError::Failed(url.to_owned(), e.to_string()))?;
    }
    Ok(response)
}
