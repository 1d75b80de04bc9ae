//! `shoal dev`: a whole cluster in one process, with no configuration: a one-member control
//! plane and one node, state under one data directory (which survives a restart), the client
//! config written so that `shoal apply/get/logs` work from another shell with no flags.
//! `-f FILE|DIR` applies manifests once it is up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use shoal_api::resources::node::Capacity;
use shoal_api::token::TokenRequest;
use shoal_api::{Client, ClientConfig, Name, Reason};
use shoal_control::{ControlConfig, ControlPlane};
use shoal_node::agent::{Agent, AgentConfig};

use super::node::{machine_cpu, machine_memory};
use crate::connect::ConnectionArgs;

/// The dev node's name.
const NODE_NAME: &str = "dev";

/// Flags of `shoal dev`.
#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Where the cluster's state lives [default: ~/.local/share/shoal/dev]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the API server (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:7443")]
    api_listen: SocketAddr,
    /// Address of the node's ingress (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    ingress_listen: SocketAddr,
    /// How many instances the node takes.
    #[arg(long, default_value_t = 10_000)]
    max_instances: u32,
    /// Manifests to apply once the cluster is up (file or directory, repeatable).
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR")]
    files: Vec<PathBuf>,
    /// Per-request deadline of HTTP workloads whose spec sets none, e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    #[command(flatten)]
    dns: super::control::DnsArgs,
}

/// The dev node's token: made once, kept in the data directory.
async fn node_token(admin: &Client, data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("node.token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        return Ok(token.trim().to_owned());
    }
    let request = TokenRequest { name: Name::new(NODE_NAME)?, namespaces: Vec::new(), node: true };
    let issued = match admin.create_token(&request).await {
        Err(e) if e.reason() == Some(Reason::Conflict) => {
            // The token exists but its secret file was lost: issue it anew.
            admin.delete_token(NODE_NAME).await?;
            admin.create_token(&request).await?
        }
        other => other?,
    };
    shoal_api::config::write_private(&path, issued.token.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(issued.token)
}

impl DevArgs {
    pub async fn execute(&self, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
        let data_dir = match &self.data_dir {
            Some(d) => d.clone(),
            None => PathBuf::from(std::env::var_os("HOME").context("--data-dir not given and $HOME not set")?)
                .join(".local/share/shoal/dev"),
        };
        let mut control_config = ControlConfig::local(data_dir.join("control"));
        control_config.api_listen = self.api_listen;
        control_config.dns = self.dns.config()?;
        control_config.admission = self.dns.admission(&[]);
        let control = ControlPlane::start(control_config).await?;
        let admin_config = control.admin_client_config();
        let admin = Client::new(&admin_config)?;
        let token = node_token(&admin, &data_dir).await?;
        let node_client = Client::new(&ClientConfig { token, ..admin_config.clone() })?;
        let agent = Agent::start(AgentConfig {
            client: node_client,
            name: Name::new(NODE_NAME)?,
            labels: Default::default(),
            data_dir: data_dir.join("node"),
            capacity: Capacity { memory: machine_memory(), cpu: machine_cpu(), instances: self.max_instances },
            ingress_listen: self.ingress_listen,
            agent_listen: None,
            advertise_host: None,
            ingress_domains: vec!["localhost".into()],
            cluster_domain: self.dns.cluster_domain().to_owned(),
            heartbeat: Duration::from_secs(1),
            request_timeout: self.request_timeout,
            ingress_limits: Default::default(),
            event_pacing: Default::default(),
            instance_concurrency: 8,
            instance_queue: 100,
            guest_slots: shoal_node::agent::default_guest_slots(),
            namespace_guest_slots: shoal_node::agent::default_namespace_guest_slots(),
        })
        .await?;

        let config_path = connection.config_path()?;
        admin_config.save(&config_path)?;
        admin_config.save(&data_dir.join("client.yaml"))?;
        println!("client config written to {}", config_path.display());
        println!("api listening on {}", control.api_url());
        println!("dashboard on {}/ui/ (log in with a token)", control.api_url());
        println!("ingress listening on http://{}", agent.ingress_addr);
        super::control::announce_dns(&control);
        println!("state in {}", data_dir.display());
        if self.files.is_empty() {
            let port = agent.ingress_addr.port();
            println!("try: shoal apply -f examples/hello/app.yaml && curl http://hello.default.localhost:{port}/");
        } else if super::apply::apply_paths(Some(&admin), &self.files).await? != ExitCode::SUCCESS {
            eprintln!("some manifests were not applied (see above); the cluster runs on");
        }
        super::control::wait_for_signal().await?;
        eprintln!("draining");
        agent.shutdown().await;
        control.shutdown().await;
        Ok(ExitCode::SUCCESS)
    }
}
