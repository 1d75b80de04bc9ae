//! Finding the cluster: `--server`/`--token` flags, else the client config file
//! (`$SHOAL_CONFIG`, else `~/.config/shoal/config.yaml`) and its current context (or
//! `--context`), like kubectl's kubeconfig; and the namespace commands use when `-n` names none:
//! the context's, else `default`.

use std::path::PathBuf;

use anyhow::Context;
use shoal_api::config::{self, ConfigFile};
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
    /// The config file's context to use instead of its current one.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
}

impl ConnectionArgs {
    /// The config file path these flags point at.
    pub fn config_path(&self) -> anyhow::Result<PathBuf> {
        match &self.config {
            Some(p) => Ok(p.clone()),
            None => Ok(ClientConfig::default_path()?),
        }
    }

    /// The context these flags choose.
    fn context(&self) -> anyhow::Result<config::Context> {
        let path = self.config_path()?;
        let file = ConfigFile::load(&path).with_context(|| {
            format!(
                "no usable client config at {} (start `shoal control` or `shoal dev`, or pass --config)",
                path.display()
            )
        })?;
        match &self.context {
            Some(name) => file.context(name).with_context(|| format!("{}: no context {name:?}", path.display())),
            None => file.current().map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        }
    }

    /// The namespace to use: `flag` (a command's `-n`), else the context's, else `default`.
    pub fn namespace(&self, flag: &Option<String>) -> String {
        if let Some(ns) = flag {
            return ns.clone();
        }
        let from_context = self.context().ok().and_then(|c| c.namespace);
        from_context.unwrap_or_else(|| "default".to_owned())
    }

    /// A client for the cluster.
    pub fn client(&self) -> anyhow::Result<Client> {
        let context = self.context()?;
        let mut config = ClientConfig { server: context.server, ca: context.ca, token: context.token };
        if let Some(server) = &self.server {
            config.server = server.clone();
        }
        if let Some(token) = &self.token {
            config.token = token.clone();
        }
        Ok(Client::new(&config)?)
    }
}
