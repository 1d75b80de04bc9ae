//! Calls from one control node to another over the raft listener: HTTPS with the cluster CA,
//! a bearer cluster token, postcard bodies. Raft's own RPCs and Shoal's (forwarded writes,
//! read indexes, joins) share this one transport.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a peer call failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No connection could be made: the request certainly did not arrive.
    #[error("cannot connect to {url}: {source}")]
    Unreachable {
        /// What was called.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The request may or may not have arrived (timeout, reset, bad answer).
    #[error("call to {url} failed: {message}")]
    Failed {
        /// What was called.
        url: String,
        /// Why.
        message: String,
    },
}

impl PeerError {
    /// Whether the call certainly did not reach the peer (and so can be retried elsewhere).
    pub fn never_arrived(&self) -> bool {
        matches!(self, PeerError::Unreachable { .. })
    }
}

/// A client for peer calls.
#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    token: String,
}

impl PeerClient {
    /// A client trusting only the cluster CA (PEM) and presenting the cluster token.
    pub fn new(ca_pem: &str, token: &str) -> Result<Self, reqwest::Error> {
        shoal_api::client::install_crypto_provider();
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes())?;
        let http = reqwest::Client::builder()
            .tls_certs_only([ca])
            // HTTP/1.1: raft sends one request at a time to each peer, so HTTP/2's streams buy
            // nothing and its framing costs CPU (+9% creates/s at 64 clients without it).
            .http1_only()
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(PeerClient { http, token: token.to_owned() })
    }

    /// POSTs `request` to `https://{addr}{path}` and decodes the answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        let body = self.encode(addr, path, request)?;
        self.call_encoded(addr, path, body, timeout).await
    }

    /// The body of a call of `request` to `path` on `addr`.
    pub fn encode<Req: Serialize>(&self, addr: &str, path: &str, request: &Req) -> Result<Vec<u8>, PeerError> {
        postcard::to_allocvec(request)
            .map_err(|e| PeerError::Failed { url: format!("https://{addr}{path}"), message: e.to_string() })
    }

    /// [`PeerClient::call`] with the request encoded already.
    pub async fn call_encoded<Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        let url = format!("https://{addr}{path}");
        let (status, bytes) = self.send(reqwest::Method::POST, &url, Some(body.into()), timeout).await?;
        let failed = |message: String| PeerError::Failed { url: url.clone(), message };
        if !status.is_success() {
            return Err(failed(format!("{status}: {}", String::from_utf8_lossy(&bytes))));
        }
        postcard::from_bytes(&bytes).map_err(|e| failed(format!("undecodable answer: {e}")))
    }

    /// Sends raw bytes (`PUT`, with a body) or asks for them (`GET`) at `https://{addr}{path}`:
    /// module bytes travel this way, outside raft. Returns the status and the body.
    pub async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<reqwest::Body>,
        timeout: Duration,
    ) -> Result<(reqwest::StatusCode, bytes::Bytes), PeerError> {
        let failed = |message: String| PeerError::Failed { url: url.to_owned(), message };
        let mut request = self.http.request(method, url).bearer_auth(&self.token).timeout(timeout);
        if let Some(body) = body {
            request = request.body(body);
        }
        let resp = request.send().await.map_err(|source| {
            if source.is_connect() {
                PeerError::Unreachable { url: url.to_owned(), source }
            } else {
                failed(source.to_string())
            }
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| failed(e.to_string()))?;
        Ok((status, bytes))
    }
}
