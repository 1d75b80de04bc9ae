//! Finding the cluster: `--server`/`--token` flags, else the client config file
//! (`$SHOAL_CONFIG`, else `~/.config/shoal/config.yaml`), like kubectl's kubeconfig.

use std::path::PathBuf;

use anyhow::Context;
use shoal_api::{Client, ClientConfig};

/// Flags every client command shares.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectionArgs {
    /// Client config file [default: $SHOAL_CONFIG, else ~/.config/shoal/config.yaml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// API server URL, overriding the config file's.
    #[arg(long, global = true, env = "SHOAL_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// Bearer token, overriding the config file's.
    #[arg(long, global = true, env = "SHOAL_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ConnectionArgs {
    /// The config file path these flags point at.
    pub fn config_path(&self) -> anyhow::Result<PathBuf> {
        match &self.config {
            Some(p) => Ok(p.clone()),
            None => Ok(ClientConfig::default_path()?),
        }
    }

    /// A client for the cluster.
    pub fn client(&self) -> anyhow::Result<Client> {
        let path = self.config_path()?;
        let mut config = ClientConfig::load(&path).with_context(|| {
            format!(
                "no usable client config at {} (start `shoal control` or `shoal dev`, or pass --config)",
                path.display()
            )
        })?;
        if let Some(server) = &self.server {
            config.server = server.clone();
        }
        if let Some(token) = &self.token {
            config.token = token.clone();
        }
        Ok(Client::new(&config)?)
    }
}
