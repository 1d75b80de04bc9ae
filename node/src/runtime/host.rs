//! The host side of one instance: its WASI context (deny by default: only the args, env and
//! directories its spec grants; no sockets; nothing inherited from the host process), what
//! `wasi:config/store` answers it, its wasi-http context with the outbound policy, and its
//! memory guard.

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use wasmtime_wasi_http::WasiBody;

use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::limits::{Limits, MemoryGuard, MemoryPool};
use super::log::LogBuffer;

/// Where a guest's stdout or stderr goes.
#[derive(Clone)]
pub enum Output {
    /// The host process's own (for `shoal run`).
    Inherit,
    /// A bounded buffer the node keeps.
    Buffer(LogBuffer),
    /// Nowhere.
    Discard,
}

/// A host directory granted to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the guest sees it.
    pub guest: String,
    /// Whether the guest may only read.
    pub read_only: bool,
}

/// Everything a guest may see of the world.
#[derive(Clone)]
pub struct Sandbox {
    /// argv, program name first.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Granted directories.
    pub dirs: Vec<Preopen>,
    /// What `wasi:config/store` answers (components only).
    pub wasi_config: Arc<WasiConfigVariables>,
    /// Standard output.
    pub stdout: Output,
    /// Standard error.
    pub stderr: Output,
    /// Hosts the guest may call over `wasi:http` (none by default).
    pub allowed_hosts: Vec<String>,
    /// Whether those hosts may be at private addresses (never loopback or link-local).
    pub allow_private_egress: bool,
    /// The cluster's Services, for calls to them (none outside a node).
    pub cluster: Option<Arc<dyn Cluster>>,
    /// Resource limits.
    pub limits: Limits,
    /// Where the guest takes its turns on the node's threads (none: it runs whenever polled).
    pub turns: Option<super::fair::Turns>,
    /// The memory the instance's stores share (an HTTP instance's requests in flight), charged
    /// as they grow; without it each store has `limits.memory` to itself.
    pub memory_pool: Option<Arc<MemoryPool>>,
}

impl Sandbox {
    /// A sandbox with nothing granted, output discarded, no limits.
    pub fn new(program_name: &str) -> Self {
        Sandbox {
            args: vec![program_name.to_owned()],
            env: Vec::new(),
            dirs: Vec::new(),
            wasi_config: Arc::default(),
            stdout: Output::Discard,
            stderr: Output::Discard,
            allowed_hosts: Vec::new(),
            allow_private_egress: false,
            cluster: None,
            limits: Limits::default(),
            memory_pool: None,
            turns: None,
        }
    }

    /// The WASI context builder for this sandbox.
    pub(crate) fn wasi(&self) -> std::io::Result<WasiCtxBuilder> {
        let mut b = WasiCtxBuilder::new();
        b.args(&self.args).envs(&self.env).allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
        match &self.stdout {
            Output::Inherit => {
                b.inherit_stdout();
            }
            Output::Buffer(log) => {
                b.stdout(log.clone());
            }
            Output::Discard => {}
        }
        match &self.stderr {
            Output::Inherit => {
                b.inherit_stderr();
            }
            Output::Buffer(log) => {
                b.stderr(log.clone());
            }
            Output::Discard => {}
        }
        for dir in &self.dirs {
            let perms = if dir.read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
            b.preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(|e| std::io::Error::other(format!("granting {}: {e:#}", dir.host.display())))?;
        }
        Ok(b)
    }
}

/// What routing a guest's request through the cluster came to.
pub enum ClusterCall {
    /// The host is not a cluster name; here is the request back.
    NotCluster(Box<http::Request<WasiBody>>),
    /// The cluster refused it (and said why, to whoever keeps records).
    Refused,
    /// On its way.
    Routed(BoxFuture<'static, wasmtime_wasi_http::Result<http::Response<WasiBody>>>),
}

/// The cluster side of a guest's outgoing HTTP: the node agent routes calls to Services and
/// records refusals. Defined here so that the runtime does not depend on the agent.
pub trait Cluster: Send + Sync {
    /// Routes a request for `host` if it names a cluster Service.
    fn call(&self, host: &str, request: http::Request<WasiBody>) -> ClusterCall;
    /// A request to `host`, not a cluster name, was refused, for `why`.
    fn refused(&self, host: &str, why: &str);
}

/// The outbound HTTP policy: requests for cluster Services go through the cluster; requests to
/// hosts the spec allows go out; everything else is refused with `HttpRequestDenied`, which
/// the guest sees as that error code.
pub struct Outbound {
    allowed_hosts: Vec<String>,
    allow_private_egress: bool,
    cluster: Option<Arc<dyn Cluster>>,
    /// How many calls between guests led to the request this store serves.
    hops: u32,
}

/// How many calls between guests led to a request (a request extension): 0 for a request from
/// outside the cluster. A guest's call to a Service is one more than the request it serves, so
/// the cluster can refuse a chain past its limit (a guest calling itself).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hops(pub u32);

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _io: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
                )>,
            > + Send,
    > {
        let host = request.uri().host().unwrap_or_default().to_ascii_lowercase();
        let mut request = request;
        request.extensions_mut().insert(Hops(self.hops.saturating_add(1)));
        let request = match &self.cluster {
            None => request,
            Some(cluster) => match cluster.call(&host, request) {
                ClusterCall::NotCluster(request) => *request,
                ClusterCall::Refused => return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) }),
                ClusterCall::Routed(response) => {
                    return Box::new(async move {
                        let io: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send> =
                            Box::new(async { Ok(()) });
                        Ok((response.await?, io))
                    });
                }
            },
        };
        let allowed = self.allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(&host));
        let (cluster, allow_private) = (self.cluster.clone(), self.allow_private_egress);
        let refuse = move |why: &str| {
            tracing::info!("denied an outbound request to {host:?}: {why}");
            if let Some(cluster) = &cluster {
                cluster.refused(&host, why);
            }
            Err(wasmtime_wasi_http::Error::HttpRequestDenied)
        };
        if !allowed {
            let denied = refuse("not a cluster service and not in allowedOutboundHosts");
            return Box::new(async move { denied });
        }
        Box::new(async move {
            match super::egress::send(request, options, allow_private).await {
                Ok(sent) => Ok(sent),
                Err(Ok(refusal)) => refuse(&refusal.0),
                Err(Err(e)) => Err(e),
            }
        })
    }
}

/// Host state of a component instance.
pub struct Host {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    outbound: Outbound,
    config: Arc<WasiConfigVariables>,
    pub(crate) guard: MemoryGuard,
}

impl Host {
    /// Host state for `sandbox`.
    pub fn new(sandbox: &Sandbox) -> std::io::Result<Self> {
        Ok(Host {
            wasi: sandbox.wasi()?.build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            outbound: Outbound {
                allowed_hosts: sandbox.allowed_hosts.clone(),
                allow_private_egress: sandbox.allow_private_egress,
                cluster: sandbox.cluster.clone(),
                hops: 0,
            },
            config: sandbox.wasi_config.clone(),
            guard: MemoryGuard::new(&sandbox.limits, sandbox.memory_pool.clone()),
        })
    }
}

impl Host {
    /// Says how many calls between guests led to the request this store serves.
    pub fn set_hops(&mut self, hops: Hops) {
        self.outbound.hops = hops.0;
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.outbound }
    }
}

/// Host state of a preview-1 module instance.
pub struct P1Host {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) guard: MemoryGuard,
}

/// Linkers shared by every instance: built once per engine.
pub struct Linkers {
    /// For components: all of WASI preview 2 plus wasi-http.
    pub component: Linker<Host>,
    /// For preview-1 modules.
    pub module: wasmtime::Linker<P1Host>,
}

impl Linkers {
    /// Builds both linkers.
    pub fn new(engine: &wasmtime::Engine) -> wasmtime::Result<Self> {
        let mut component = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut component)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut component)?;
        wasmtime_wasi_config::add_to_linker(&mut component, |h: &mut Host| WasiConfig::new(&h.config))?;
        let mut module = wasmtime::Linker::new(engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut module, |h: &mut P1Host| &mut h.wasi)?;
        Ok(Linkers { component, module })
    }
}
