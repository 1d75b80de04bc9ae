//! `shoal run [FLAGS] MODULE [ARGS...]`: run a module once, here, with the very runtime a node
//! uses. It is called as `wasmtime run` is (scripts and test harnesses written for wasmtime call
//! it unchanged): flags before the module, everything after it goes to the guest (a `--` before
//! the guest's arguments is accepted too); `--env NAME=VALUE` or `--env NAME` (the host's value),
//! `--dir HOST[::GUEST]`. The guest's exit code is the command's. With `--listen ADDR`, an HTTP
//! component is served instead.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use shoal_api::quantity::{Cpu, Memory};
use shoal_node::runtime::command::{self, Exit};
use shoal_node::runtime::host::{Output, Preopen, Sandbox};
use shoal_node::runtime::http::HttpApp;
use shoal_node::runtime::limits::Limits;
use shoal_node::runtime::{Program, Runtime, RuntimeConfig};
use tokio_util::sync::CancellationToken;

use crate::connect::ConnectionArgs;

/// Flags of `shoal run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The `.wasm` file: a `wasi:cli/run` or `wasi:http/proxy` component, or a preview-1 module.
    module: PathBuf,
    /// Set an environment variable for the guest (repeatable): NAME=VALUE, or NAME alone for the
    /// host's value of NAME (not passed when the host has none). Nothing else is passed through.
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// Grant a host directory, as GUEST in the guest (default: the same path) (repeatable).
    #[arg(long = "dir", value_name = "HOST[::GUEST]")]
    dirs: Vec<String>,
    /// Serve an HTTP component on this address instead of running a command.
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Memory limit, e.g. 64Mi.
    #[arg(long)]
    memory: Option<Memory>,
    /// CPU share, e.g. 250m (a quarter of a core).
    #[arg(long)]
    cpu: Option<Cpu>,
    /// Stop the guest after this long (a command), or each request after this long (HTTP),
    /// e.g. 5s or 500ms.
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Arguments for the guest: everything after the module, flags included (a leading `--` is
    /// dropped, as `wasmtime run` does).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
    args: Vec<String>,
}

/// `NAME=VALUE` as given, or `NAME` with the host's value (`None` when the host has none,
/// as `wasmtime run` skips it).
fn parse_env(spec: &str) -> anyhow::Result<Option<(String, String)>> {
    match spec.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok(Some((k.to_owned(), v.to_owned()))),
        None if !spec.is_empty() => Ok(std::env::var(spec).ok().map(|v| (spec.to_owned(), v))),
        _ => bail!("--env {spec:?}: expected NAME=VALUE or NAME"),
    }
}

fn parse_dir(spec: &str) -> anyhow::Result<Preopen> {
    let (host, guest) = spec.split_once("::").unwrap_or((spec, spec));
    let host = PathBuf::from(host);
    if !host.is_dir() {
        bail!("--dir {spec:?}: {} is not a directory", host.display());
    }
    Ok(Preopen { host, guest: guest.to_owned(), read_only: false })
}

/// The guest's arguments without the `--` that may separate them from the module.
fn guest_args(args: &[String]) -> &[String] {
    match args.first() {
        Some(first) if first == "--" => &args[1..],
        _ => args,
    }
}

/// Where `shoal run` caches compiled modules: `$XDG_CACHE_HOME/shoal/wasm` or `~/.cache/shoal/wasm`.
fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("shoal/wasm"))
}

impl RunArgs {
    pub async fn execute(&self, _connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
        let bytes = std::fs::read(&self.module).with_context(|| format!("reading {}", self.module.display()))?;
        let runtime = Runtime::new(&RuntimeConfig { cache_dir: cache_dir(), max_instances: 64, ..Default::default() })?;
        let program = runtime.load(&bytes).with_context(|| format!("loading {}", self.module.display()))?;
        let name = self.module.file_name().map_or("main.wasm".into(), |n| n.to_string_lossy().into_owned());
        let mut sandbox = Sandbox::new(&name);
        sandbox.args.extend(guest_args(&self.args).iter().cloned());
        let env: Vec<Option<(String, String)>> =
            self.env.iter().map(|e| parse_env(e)).collect::<anyhow::Result<_>>()?;
        sandbox.env = env.into_iter().flatten().collect();
        sandbox.dirs = self.dirs.iter().map(|d| parse_dir(d)).collect::<anyhow::Result<_>>()?;
        sandbox.stdout = Output::Inherit;
        sandbox.stderr = Output::Inherit;
        sandbox.limits =
            Limits { memory: self.memory.map(|m| m.0), cpu_millis: self.cpu.map(|c| c.0), timeout: self.timeout };

        if let Some(addr) = self.listen {
            let Program::Component(component) = &program else {
                bail!("--listen needs an HTTP component, not a core module")
            };
            let app = HttpApp::new(&runtime, component)?;
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
            println!("listening on http://{}", listener.local_addr()?);
            let shutdown = CancellationToken::new();
            let server = tokio::spawn(shoal_node::serve::serve_app(listener, app, sandbox, shutdown.clone()));
            super::control::wait_for_signal().await?;
            shutdown.cancel();
            let _ = server.await;
            return Ok(ExitCode::SUCCESS);
        }

        let exit = command::run(&runtime, &program, &sandbox).await?;
        if let Exit::Stopped { .. } = &exit {
            eprintln!("shoal run: {}: {exit}", self.module.display());
        }
        Ok(ExitCode::from((exit.code() & 0xff) as u8))
    }
}
