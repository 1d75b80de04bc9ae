//! The typed async client of the API server, used by the CLI, by nodes, and by tests.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::{Method, StatusCode};

use crate::config::ClientConfig;
use crate::meta::{Kind, Object, Resource};
use crate::object::AnyObject;
use crate::status::{ClusterStatus, List, Reason, Status, WatchEvent, Watched};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error(transparent)]
    Api(#[from] Status),
    /// The request did not get an answer.
    #[error("request to {url} failed: {source}")]
    Transport {
        /// What was requested.
        url: String,
        /// Why it failed.
        #[source]
        source: reqwest::Error,
    },
    /// The answer was not what the API promises.
    #[error("unexpected response from {url}: {message}")]
    Decode {
        /// What was requested.
        url: String,
        /// What was wrong with it.
        message: String,
    },
    /// The CA in the config is not a PEM certificate, or the TLS stack could not start.
    #[error("bad TLS configuration: {0}")]
    Tls(#[source] reqwest::Error),
    /// A watch sent nothing, not even a bookmark, for longer than the server's bookmark
    /// interval allows: the connection is taken for dead (the watch is resumed elsewhere).
    #[error("watch of {url} silent for {silent:?}")]
    Silent {
        /// What was watched.
        url: String,
        /// How long it was silent.
        silent: Duration,
    },
}

impl ClientError {
    /// The API reason, when the server answered with an error status.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            ClientError::Api(s) => Some(s.reason),
            _ => None,
        }
    }
}

/// Installs rustls' `ring` provider as the process default (once; later calls do nothing).
/// wasmtime-wasi-http pulls in `ring` too, so it is the one provider the whole binary uses.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client of one API server.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    watch_silence: Duration,
}

/// The path of a collection: one namespace's, every namespace's (`namespace: None`), or a
/// cluster-scoped kind's.
pub fn collection_path(kind: Kind, namespace: Option<&str>) -> String {
    match (kind.namespaced(), namespace) {
        (true, Some(ns)) => format!("/api/v1/namespaces/{ns}/{}", kind.plural()),
        _ => format!("/api/v1/{}", kind.plural()),
    }
}

/// Where a page of a list starts and how long it is.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    /// The most objects on the page.
    pub limit: usize,
    /// The previous page's `continue`, or none for the first page.
    pub from: Option<&'a str>,
}

/// The path of one object.
pub fn object_path(kind: Kind, namespace: Option<&str>, name: &str) -> String {
    let ns = kind.namespaced().then(|| namespace.unwrap_or("default"));
    format!("{}/{name}", collection_path(kind, ns))
}

fn typed_path<R: Resource>(object: &Object<R>) -> String {
    let meta = &object.metadata;
    object_path(R::KIND, meta.namespace.as_ref().map(|n| n.as_str()), meta.name.as_str())
}

impl Client {
    /// A client for the cluster described by `config`, trusting only its CA.
    pub fn new(config: &ClientConfig) -> Result<Self, ClientError> {
        install_crypto_provider();
        let ca = reqwest::Certificate::from_pem(config.ca.as_bytes()).map_err(ClientError::Tls)?;
        let http = reqwest::Client::builder()
            .tls_certs_only([ca])
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            // A connection whose peer went away without a word (a half-open connection) is
            // found by HTTP/2 pings going unanswered, and closed with every stream on it.
            .http2_keep_alive_interval(Duration::from_secs(10))
            .http2_keep_alive_timeout(Duration::from_secs(10))
            .http2_keep_alive_while_idle(true)
            .tcp_keepalive(Duration::from_secs(30))
            .build()
            .map_err(ClientError::Tls)?;
        Ok(Client {
            http,
            base: config.server.trim_end_matches('/').to_owned(),
            token: config.token.clone(),
            watch_silence: WATCH_SILENCE,
        })
    }

    /// The same client, taking a watch that sends nothing for `silence` for dead (the server
    /// sends a bookmark line at least every third of [`WATCH_SILENCE`] by default).
    pub fn with_watch_silence(&self, silence: Duration) -> Client {
        Client { watch_silence: silence, ..self.clone() }
    }

    /// The same client, talking to another server of the same cluster.
    pub fn with_server(&self, server: &str) -> Client {
        Client { base: server.trim_end_matches('/').to_owned(), ..self.clone() }
    }

    /// The same client, with another token.
    pub fn with_token(&self, token: &str) -> Client {
        Client { token: token.to_owned(), ..self.clone() }
    }

    /// The server's base URL.
    pub fn server(&self) -> &str {
        &self.base
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<reqwest::Body>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.body(body);
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let resp = req.send().await.map_err(|source| ClientError::Transport { url: url.clone(), source })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let code = resp.status();
        let text = resp.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<Status>(&text) {
            Ok(status) => ClientError::Api(status),
            Err(_) => ClientError::Api(Status::new(reason_of(code), format!("{code}: {text}"))),
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ClientError> {
        self.json_within(method, path, body, Duration::from_secs(30)).await
    }

    async fn json_within<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let body = body.map(|b| reqwest::Body::from(serde_json::to_vec(b).expect("json values serialize")));
        let url = format!("{}{path}", self.base);
        let resp = self.send(method, path, body, Some(timeout)).await?;
        let bytes = resp.bytes().await.map_err(|source| ClientError::Transport { url: url.clone(), source })?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode { url, message: e.to_string() })
    }

    async fn object(
        &self,
        kind: Kind,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<AnyObject, ClientError> {
        let value: serde_json::Value = self.json(method, path, body).await?;
        AnyObject::from_json(kind, &value)
            .map_err(|e| ClientError::Decode { url: path.to_owned(), message: e.to_string() })
    }

    /// Creates `object`; a 409 if it exists.
    pub async fn create(&self, object: &AnyObject) -> Result<AnyObject, ClientError> {
        let kind = object.kind();
        self.object(kind, Method::POST, &collection_path(kind, object.namespace()), Some(&object.to_json())).await
    }

    /// Writes `object`. With `metadata.resourceVersion` set, only if that is still the current
    /// revision (else 409); without, creates it or replaces its spec, labels and annotations.
    pub async fn put(&self, object: &AnyObject) -> Result<AnyObject, ClientError> {
        let kind = object.kind();
        let path = object_path(kind, object.namespace(), object.meta().name.as_str());
        self.object(kind, Method::PUT, &path, Some(&object.to_json())).await
    }

    /// What [`Client::put`] of `object` would store, checked and admitted by the server but
    /// not written (a server-side dry run).
    pub async fn put_dry_run(&self, object: &AnyObject) -> Result<AnyObject, ClientError> {
        let kind = object.kind();
        let path = object_path(kind, object.namespace(), object.meta().name.as_str()) + "?dryRun=All";
        self.object(kind, Method::PUT, &path, Some(&object.to_json())).await
    }

    /// Replaces the status of `object` (its spec is left alone).
    pub async fn put_status(&self, object: &AnyObject) -> Result<AnyObject, ClientError> {
        let kind = object.kind();
        let path = format!("{}/status", object_path(kind, object.namespace(), object.meta().name.as_str()));
        self.object(kind, Method::PUT, &path, Some(&object.to_json())).await
    }

    /// Reads one object.
    pub async fn get(&self, kind: Kind, namespace: Option<&str>, name: &str) -> Result<AnyObject, ClientError> {
        self.object(kind, Method::GET, &object_path(kind, namespace, name), None).await
    }

    /// Reads one Secret with its values shown (the caller's token must be for its namespace;
    /// a plain [`Client::get`] shows each value as [`crate::resources::secret::REDACTED`]).
    pub async fn get_secret_shown(&self, namespace: &str, name: &str) -> Result<AnyObject, ClientError> {
        let path = format!("{}?showSecrets=true", object_path(Kind::Secret, Some(namespace), name));
        self.object(Kind::Secret, Method::GET, &path, None).await
    }

    /// The values instance `name` of `namespace` takes from Secrets and Configs, resolved: for
    /// the node it is bound to, when it starts it.
    pub async fn instance_values(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<crate::agent::InstanceValues, ClientError> {
        let path = format!("{}/values", object_path(Kind::Instance, Some(namespace), name));
        let url = format!("{}{path}", self.base);
        let resp = self.send(Method::GET, &path, None, Some(Duration::from_secs(30))).await?;
        // JSON escapes can double a value's size; past that the answer is not one to hold.
        let limit = 2 * crate::agent::MAX_VALUES_BYTES + 64 * 1024;
        let mut body = Vec::new();
        let mut chunks = resp.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            body.extend_from_slice(&chunk.map_err(|source| ClientError::Transport { url: url.clone(), source })?);
            if body.len() > limit {
                return Err(ClientError::Decode { url, message: format!("values larger than {limit} bytes") });
            }
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode { url, message: e.to_string() })
    }

    /// Lists objects of `kind` in `namespace` (all namespaces when `None`), optionally filtered by
    /// a label selector such as `app=hello`.
    pub async fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&str>,
    ) -> Result<List<AnyObject>, ClientError> {
        self.list_page(kind, namespace, selector, None).await
    }

    /// One page of a list: at most `page.limit` objects, from where `page.from` (the previous
    /// page's `continue`) says; the list's `continue` names the next page, if one follows.
    /// Without a page, the whole list.
    pub async fn list_page(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&str>,
        page: Option<Page<'_>>,
    ) -> Result<List<AnyObject>, ClientError> {
        let mut query = Vec::new();
        if let Some(s) = selector {
            query.push(format!("labelSelector={}", encode_query(s)));
        }
        if let Some(page) = page {
            query.push(format!("limit={}", page.limit));
            if let Some(from) = page.from {
                query.push(format!("continue={}", encode_query(from)));
            }
        }
        let mut path = collection_path(kind, namespace);
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        let list: List<serde_json::Value> = self.json(Method::GET, &path, None).await?;
        let items = list
            .items
            .iter()
            .map(|v| AnyObject::from_json(kind, v))
            .collect::<Result<_, _>>()
            .map_err(|e| ClientError::Decode { url: path.clone(), message: e.to_string() })?;
        Ok(List { resource_version: list.resource_version, items, continue_: list.continue_ })
    }

    /// Every object of a list, read a page of `limit` at a time (so that no single answer is
    /// large); the revision is the first page's.
    pub async fn list_paged(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&str>,
        limit: usize,
    ) -> Result<List<AnyObject>, ClientError> {
        let mut all = self.list_page(kind, namespace, selector, Some(Page { limit, from: None })).await?;
        while let Some(from) = all.continue_.take() {
            let page = Page { limit, from: Some(&from) };
            let next = self.list_page(kind, namespace, selector, Some(page)).await?;
            all.items.extend(next.items);
            all.continue_ = next.continue_;
        }
        Ok(all)
    }

    /// Deletes one object and returns its last state; 404 if it does not exist.
    pub async fn delete(&self, kind: Kind, namespace: Option<&str>, name: &str) -> Result<AnyObject, ClientError> {
        self.object(kind, Method::DELETE, &object_path(kind, namespace, name), None).await
    }

    /// Streams every change to objects of `kind` after revision `from` (a 410 if that revision
    /// was compacted away: list again and watch from the list's revision).
    pub async fn watch(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        from: u64,
    ) -> Result<impl Stream<Item = Result<WatchEvent<AnyObject>, ClientError>> + use<>, ClientError> {
        let path = format!("{}?watch=true&resourceVersion={from}", collection_path(kind, namespace));
        let resp = self.send(Method::GET, &path, None, None).await?;
        let url = format!("{}{path}", self.base);
        let lines = events_only(watch_lines(resp.bytes_stream(), url.clone(), self.watch_silence));
        Ok(lines.map(move |line| {
            let line = line?;
            let decode = |message: String| ClientError::Decode { url: url.clone(), message };
            let event: WatchEvent<serde_json::Value> =
                serde_json::from_slice(&line).map_err(|e| decode(e.to_string()))?;
            let object = AnyObject::from_json(kind, &event.object).map_err(|e| decode(e.to_string()))?;
            Ok(WatchEvent { type_: event.type_, revision: event.revision, object })
        }))
    }

    /// Lists objects of kind `R` (typed), in `namespace` or all.
    pub async fn list_of<R: Resource>(&self, namespace: Option<&str>) -> Result<List<Object<R>>, ClientError> {
        self.json(Method::GET, &collection_path(R::KIND, namespace), None).await
    }

    /// Watches objects of kind `R` (typed) after revision `from`; see [`Client::watch`].
    pub async fn watch_of<R: Resource>(
        &self,
        namespace: Option<&str>,
        from: u64,
    ) -> Result<impl Stream<Item = Result<WatchEvent<Object<R>>, ClientError>> + use<R>, ClientError> {
        let watched = self.watch_with_bookmarks_of::<R>(namespace, from).await?;
        Ok(watched.filter_map(|item| async move {
            match item {
                Ok(Watched::Change(event)) => Some(Ok(event)),
                Ok(Watched::Bookmark(_)) => None,
                Err(e) => Some(Err(e)),
            }
        }))
    }

    /// Like [`Client::watch_of`], with the bookmarks too: a client that resumes from the last
    /// revision it saw resumes from a quiet watch's bookmark rather than from its last change
    /// (which the history may no longer reach).
    pub async fn watch_with_bookmarks_of<R: Resource>(
        &self,
        namespace: Option<&str>,
        from: u64,
    ) -> Result<impl Stream<Item = Result<Watched<Object<R>>, ClientError>> + use<R>, ClientError> {
        let path = format!("{}?watch=true&resourceVersion={from}", collection_path(R::KIND, namespace));
        let resp = self.send(Method::GET, &path, None, None).await?;
        let url = format!("{}{path}", self.base);
        let lines = watch_lines(resp.bytes_stream(), url.clone(), self.watch_silence);
        Ok(lines.map(move |line| match line? {
            WatchLine::Bookmark(revision) => Ok(Watched::Bookmark(revision)),
            WatchLine::Event(line) => serde_json::from_slice(&line)
                .map(Watched::Change)
                .map_err(|e| ClientError::Decode { url: url.clone(), message: e.to_string() }),
        }))
    }

    /// Replaces the status of a typed object (no resourceVersion check when it has none).
    pub async fn put_status_of<R: Resource>(&self, object: &Object<R>) -> Result<Object<R>, ClientError> {
        let path = format!("{}/status", typed_path(object));
        self.json(Method::PUT, &path, Some(&serde_json::to_value(object).expect("objects serialize"))).await
    }

    /// Creates or replaces a typed object (optimistically, when it carries a resourceVersion).
    pub async fn put_of<R: Resource>(&self, object: &Object<R>) -> Result<Object<R>, ClientError> {
        let path = typed_path(object);
        self.json(Method::PUT, &path, Some(&serde_json::to_value(object).expect("objects serialize"))).await
    }

    /// Fresh credentials for node `name` (its own token only): a certificate for `hosts` and
    /// the node's name.
    pub async fn node_credentials(
        &self,
        name: &str,
        request: &crate::agent::CredentialsRequest,
    ) -> Result<crate::agent::NodeCredentials, ClientError> {
        let body = serde_json::to_value(request).expect("serializes");
        self.json(Method::POST, &format!("/api/v1/nodes/{name}/credentials"), Some(&body)).await
    }

    /// Tells the control plane that node `name` (this node token's own) is alive, and how
    /// loaded its autoscaled workloads were. The beat is held in the raft leader's memory. The
    /// answer names the nodes whose certificates are revoked, unless they are those of
    /// `known_revocations` (the tag of an earlier answer).
    pub async fn heartbeat(
        &self,
        name: &str,
        known_revocations: u64,
        beat: &crate::agent::Heartbeat,
    ) -> Result<crate::agent::HeartbeatAnswer, ClientError> {
        let path = format!("/api/v1/nodes/{name}/heartbeat?revocations={known_revocations}");
        let body = (!beat.load.is_empty()).then(|| reqwest::Body::from(serde_json::to_vec(beat).expect("serializes")));
        let response = self.send(Method::POST, &path, body, Some(Duration::from_secs(10))).await?;
        let url = format!("{}{path}", self.base);
        let bytes = response.bytes().await.map_err(|source| ClientError::Transport { url, source })?;
        // An older control plane answers `null`.
        Ok(serde_json::from_slice::<Option<crate::agent::HeartbeatAnswer>>(&bytes).ok().flatten().unwrap_or_default())
    }

    /// Reports the status of instances bound to node `name` (this node token's own), each
    /// answered on its own.
    pub async fn report_instances(
        &self,
        name: &str,
        reports: &crate::agent::InstanceReports,
    ) -> Result<crate::agent::ReportAnswers, ClientError> {
        let body = serde_json::to_value(reports).expect("reports serialize");
        self.json(Method::POST, &format!("/api/v1/nodes/{name}/reports"), Some(&body)).await
    }

    /// Node `name`'s metrics (Prometheus text), fetched from its agent by the control plane
    /// (the admin's token): per workload, or with `per_instance` per instance.
    pub async fn node_metrics(&self, name: &str, per_instance: bool) -> Result<String, ClientError> {
        let path = match per_instance {
            true => format!("/api/v1/nodes/{name}/metrics/resource"),
            false => format!("/api/v1/nodes/{name}/metrics"),
        };
        let response = self.send(Method::GET, &path, None, Some(Duration::from_secs(30))).await?;
        let url = format!("{}{path}", self.base);
        response.text().await.map_err(|source| ClientError::Transport { url, source })
    }

    /// Asks for an instance of the autoscaled workload `namespace/name` (a node holding a
    /// request for it while it has none); the control plane's leader scales it up at once.
    pub async fn activate(&self, namespace: &str, name: &str) -> Result<(), ClientError> {
        let path = format!("/api/v1/namespaces/{namespace}/workloads/{name}/activate");
        self.send(Method::POST, &path, None, Some(Duration::from_secs(10))).await?;
        Ok(())
    }

    /// An instance's logs: what it has written so far and, with `follow`, what it writes next,
    /// as it comes.
    pub async fn logs(
        &self,
        namespace: &str,
        instance: &str,
        options: &crate::agent::LogOptions,
    ) -> Result<impl Stream<Item = Result<Bytes, ClientError>> + use<>, ClientError> {
        let path = format!("/api/v1/namespaces/{namespace}/instances/{instance}/log?{}", options.to_query());
        let url = format!("{}{path}", self.base);
        let resp = self.send(Method::GET, &path, None, None).await?;
        Ok(resp
            .bytes_stream()
            .map(move |chunk| chunk.map_err(|source| ClientError::Transport { url: url.clone(), source })))
    }

    /// Who the server takes this client's token to be.
    pub async fn whoami(&self) -> Result<crate::token::Identity, ClientError> {
        self.json(Method::GET, "/api/v1/whoami", None).await
    }

    /// The server's release.
    pub async fn server_version(&self) -> Result<crate::status::Version, ClientError> {
        self.json(Method::GET, "/version", None).await
    }

    /// The answering control node's view of the raft cluster.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, ClientError> {
        self.json(Method::GET, "/api/v1/cluster", None).await
    }

    /// The control plane's members, as its leader sees them (admin only).
    pub async fn members(&self) -> Result<crate::members::MemberList, ClientError> {
        self.json(Method::GET, "/api/v1/members", None).await
    }

    /// Adds a member started with `--standby`; returns once it has caught up and votes
    /// (admin only).
    pub async fn add_member(
        &self,
        member: &crate::members::NewMember,
    ) -> Result<crate::members::MemberList, ClientError> {
        let body = serde_json::to_value(member).expect("serializes");
        self.json_within(Method::POST, "/api/v1/members", Some(&body), MEMBER_CHANGE_TIMEOUT).await
    }

    /// Removes member `id` (admin only).
    pub async fn remove_member(&self, id: u64) -> Result<crate::members::MemberList, ClientError> {
        self.json_within(Method::DELETE, &format!("/api/v1/members/{id}"), None, MEMBER_CHANGE_TIMEOUT).await
    }

    /// Replaces member `old` with `new` (started with `--standby`) in one membership change,
    /// once `new` has caught up (admin only).
    pub async fn replace_member(
        &self,
        old: u64,
        new: &crate::members::NewMember,
    ) -> Result<crate::members::MemberList, ClientError> {
        let body = serde_json::to_value(new).expect("serializes");
        self.json_within(Method::POST, &format!("/api/v1/members/{old}/replace"), Some(&body), MEMBER_CHANGE_TIMEOUT)
            .await
    }

    /// A backup of the cluster (objects, module bytes), as a stream of chunks (admin only).
    pub async fn snapshot(&self) -> Result<impl Stream<Item = Result<Bytes, ClientError>> + use<>, ClientError> {
        let path = "/api/v1/snapshot";
        let url = format!("{}{path}", self.base);
        let resp = self.send(Method::GET, path, None, None).await?;
        Ok(resp
            .bytes_stream()
            .map(move |chunk| chunk.map_err(|source| ClientError::Transport { url: url.clone(), source })))
    }

    /// Issues a tenant token limited to `namespaces` (admin only).
    pub async fn create_token(
        &self,
        request: &crate::token::TokenRequest,
    ) -> Result<crate::token::IssuedToken, ClientError> {
        self.json(Method::POST, "/api/v1/tokens", Some(&serde_json::to_value(request).expect("serializes"))).await
    }

    /// Lists tenant tokens, without their secrets (admin only).
    pub async fn list_tokens(&self) -> Result<Vec<crate::token::TokenInfo>, ClientError> {
        self.json(Method::GET, "/api/v1/tokens", None).await
    }

    /// Revokes a tenant token (admin only).
    pub async fn delete_token(&self, name: &str) -> Result<crate::token::TokenInfo, ClientError> {
        self.json(Method::DELETE, &format!("/api/v1/tokens/{name}"), None).await
    }

    /// Uploads a module to namespace `ns` (which its size is charged to); returns its
    /// `sha256:<hex>` reference. Uploading the same bytes to one namespace twice is harmless
    /// and charged once.
    pub async fn put_module(&self, ns: &str, bytes: Vec<u8>) -> Result<String, ClientError> {
        let hex = crate::digest::sha256_hex(&bytes);
        let path = format!("/api/v1/namespaces/{ns}/modules/{hex}");
        self.send(Method::PUT, &path, Some(bytes.into()), Some(Duration::from_secs(300))).await?;
        Ok(format!("sha256:{hex}"))
    }

    /// Whether namespace `ns` holds the module with this hex digest.
    pub async fn has_module(&self, ns: &str, hex: &str) -> Result<bool, ClientError> {
        let path = format!("/api/v1/namespaces/{ns}/modules/{hex}");
        match self.send(Method::HEAD, &path, None, Some(Duration::from_secs(30))).await {
            Ok(_) => Ok(true),
            Err(ClientError::Api(s)) if s.reason == Reason::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The modules uploaded to namespace `ns`.
    pub async fn list_modules(&self, ns: &str) -> Result<Vec<crate::module::ModuleRecord>, ClientError> {
        self.json(Method::GET, &format!("/api/v1/namespaces/{ns}/modules"), None).await
    }

    /// Removes the module with this hex digest from namespace `ns` (refused while one of its
    /// Workloads uses it); the bytes go once no namespace holds them.
    pub async fn delete_module(&self, ns: &str, hex: &str) -> Result<crate::module::ModuleRecord, ClientError> {
        self.json(Method::DELETE, &format!("/api/v1/namespaces/{ns}/modules/{hex}"), None).await
    }

    /// Downloads the module with this hex digest and checks that it hashes to it: from
    /// namespace `ns`, or with `None` from the whole cluster's store (node and admin tokens).
    pub async fn get_module(&self, ns: Option<&str>, hex: &str) -> Result<Bytes, ClientError> {
        let path = match ns {
            Some(ns) => format!("/api/v1/namespaces/{ns}/modules/{hex}"),
            None => format!("/api/v1/modules/{hex}"),
        };
        let url = format!("{}{path}", self.base);
        let resp = self.send(Method::GET, &path, None, Some(Duration::from_secs(300))).await?;
        let bytes = resp.bytes().await.map_err(|source| ClientError::Transport { url: url.clone(), source })?;
        if crate::digest::sha256_hex(&bytes) != hex {
            return Err(ClientError::Decode { url, message: "module does not match its digest".into() });
        }
        Ok(bytes)
    }
}

fn reason_of(code: StatusCode) -> Reason {
    match code.as_u16() {
        400 => Reason::BadRequest,
        401 => Reason::Unauthorized,
        403 => Reason::Forbidden,
        404 => Reason::NotFound,
        409 => Reason::Conflict,
        410 => Reason::Gone,
        422 => Reason::Invalid,
        429 => Reason::TooManyRequests,
        503 => Reason::Unavailable,
        _ => Reason::Internal,
    }
}

fn encode_query(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How long a membership change may take: adding a member waits until it has caught up, which
/// may mean receiving a snapshot of the whole store (the leader gives up after a minute).
pub const MEMBER_CHANGE_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a watch may send nothing before the client takes it for dead: three of the
/// server's default bookmark intervals.
pub const WATCH_SILENCE: Duration = Duration::from_secs(30);

/// The longest watch line taken: an object is at most 1.5 MiB, so a longer line is a server
/// gone wrong, not one to buffer without end.
pub const MAX_WATCH_LINE: usize = 4 << 20;

/// A line of a watch stream: an event, or the revision of a bookmark.
#[derive(Debug)]
enum WatchLine {
    Event(Vec<u8>),
    Bookmark(u64),
}

/// Splits a watch stream into its lines (without the newline), skipping empty ones; fails on a
/// line over [`MAX_WATCH_LINE`] and when nothing at all arrives for `silence`.
fn watch_lines<S>(stream: S, url: String, silence: Duration) -> impl Stream<Item = Result<WatchLine, ClientError>>
where
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Unpin,
{
    let state = (stream, Vec::<u8>::new(), false, url);
    futures::stream::unfold(state, move |(mut stream, mut buf, mut done, url)| async move {
        loop {
            if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).take(pos).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let line = match bookmark_revision(&line) {
                    Some(revision) => WatchLine::Bookmark(revision),
                    None => WatchLine::Event(line),
                };
                return Some((Ok(line), (stream, buf, done, url)));
            }
            if done {
                return None;
            }
            let error = if buf.len() > MAX_WATCH_LINE {
                let message = format!("a watch line longer than {MAX_WATCH_LINE} bytes");
                ClientError::Decode { url: url.clone(), message }
            } else {
                match tokio::time::timeout(silence, stream.next()).await {
                    Ok(Some(Ok(chunk))) => {
                        buf.extend_from_slice(&chunk);
                        continue;
                    }
                    Ok(None) => {
                        done = true;
                        continue;
                    }
                    Ok(Some(Err(source))) => ClientError::Transport { url: url.clone(), source },
                    Err(_) => ClientError::Silent { url: url.clone(), silent: silence },
                }
            };
            return Some((Err(error), (stream, Vec::new(), true, url)));
        }
    })
}

/// The events of a watch stream's lines, its bookmarks skipped (they only say it is alive).
fn events_only(
    lines: impl Stream<Item = Result<WatchLine, ClientError>>,
) -> impl Stream<Item = Result<Vec<u8>, ClientError>> {
    lines.filter_map(|line| async move {
        match line {
            Ok(WatchLine::Event(event)) => Some(Ok(event)),
            Ok(WatchLine::Bookmark(_)) => None,
            Err(e) => Some(Err(e)),
        }
    })
}

/// The revision a bookmark line (`{"type":"BOOKMARK","revision":N}`) names, if it is one.
fn bookmark_revision(line: &[u8]) -> Option<u64> {
    if !is_bookmark(line) {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Bookmark {
        revision: u64,
    }
    serde_json::from_slice::<Bookmark>(line).ok().map(|b| b.revision)
}

/// Whether `line` is a bookmark: `{"type":"BOOKMARK",...}`.
fn is_bookmark(line: &[u8]) -> bool {
    line.starts_with(br#"{"type":"BOOKMARK""#)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, reqwest::Error>> + Unpin + use<> {
        let parts: Vec<Result<Bytes, reqwest::Error>> = parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        futures::stream::iter(parts).chain(futures::stream::pending())
    }

    #[tokio::test]
    async fn watch_lines_tell_bookmarks_and_fail_on_silence_and_on_a_line_past_the_bound() {
        let silence = Duration::from_millis(50);
        let parts: &[&[u8]] =
            &[b"{\"type\":\"ADDED\",\"rev", b"ision\":1}\n\n{\"type\":\"BOOKMARK\",\"revision\":7}\n"];
        let mut lines = Box::pin(watch_lines(chunks(parts), "u".into(), silence));
        assert!(
            matches!(lines.next().await, Some(Ok(WatchLine::Event(e))) if e == br#"{"type":"ADDED","revision":1}"#)
        );
        assert!(matches!(lines.next().await, Some(Ok(WatchLine::Bookmark(7)))), "a bookmark says how far it read");
        let started = std::time::Instant::now();
        match lines.next().await {
            Some(Err(ClientError::Silent { silent, .. })) => assert_eq!(silent, silence),
            other => panic!("expected a silent watch, got {other:?}"),
        }
        assert!(started.elapsed() >= silence);
        assert!(lines.next().await.is_none(), "a failed watch ends");

        let long: &'static [u8] = Box::leak(vec![b'x'; MAX_WATCH_LINE + 1].into_boxed_slice());
        let mut lines = Box::pin(watch_lines(chunks(&[long]), "u".into(), silence));
        match lines.next().await {
            Some(Err(ClientError::Decode { message, .. })) => assert!(message.contains("longer than"), "{message}"),
            other => panic!("expected a refused line, got {other:?}"),
        }
    }
}
