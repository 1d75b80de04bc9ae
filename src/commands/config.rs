//! `shoal config`: the client config file's contexts (connections with a default namespace),
//! as `kubectl config` keeps them: list them, choose one, add or change one, drop one, and set
//! the current one's namespace. Tokens are never printed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use shoal_api::config::{ConfigFile, Context, DEFAULT_CONTEXT};

use crate::connect::ConnectionArgs;
use crate::output::align;

/// Flags of `shoal config`.
#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    #[command(subcommand)]
    action: ConfigAction,
}

#[derive(clap::Subcommand, Debug)]
enum ConfigAction {
    /// List the contexts (`*` marks the current one).
    GetContexts,
    /// Print the current context's name.
    CurrentContext,
    /// Make NAME the current context.
    UseContext {
        /// The context.
        name: String,
    },
    /// Add context NAME, or change it: what is not given is kept (a new one starts from the
    /// current context).
    SetContext {
        /// The context.
        name: String,
        /// The API server's URL.
        #[arg(long)]
        server: Option<String>,
        /// A file holding the bearer token (kept out of the shell's history and `ps`).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// A file holding the PEM of the cluster CA.
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
        /// Its default namespace.
        #[arg(long)]
        namespace: Option<String>,
    },
    /// Set the current context's default namespace.
    SetNamespace {
        /// The namespace.
        namespace: String,
    },
    /// Remove context NAME (not the default one, which the control plane writes).
    DeleteContext {
        /// The context.
        name: String,
    },
}

fn read(path: &PathBuf, what: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the {what} from {}", path.display()))?;
    Ok(text.trim().to_owned())
}

impl ConfigArgs {
    pub async fn execute(&self, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
        let path = connection.config_path()?;
        let mut file = ConfigFile::load(&path)?;
        let changed = match &self.action {
            ConfigAction::GetContexts => {
                let mut rows = vec![["CURRENT", "NAME", "SERVER", "NAMESPACE"].map(str::to_owned).to_vec()];
                let names = std::iter::once(DEFAULT_CONTEXT.to_owned()).chain(file.contexts.keys().cloned());
                for name in names {
                    let context = file.context(&name).expect("listed");
                    let current = if name == file.current_name() { "*" } else { "" };
                    let namespace = context.namespace.unwrap_or_default();
                    rows.push(vec![current.to_owned(), name, context.server, namespace]);
                }
                print!("{}", align(rows));
                false
            }
            ConfigAction::CurrentContext => {
                println!("{}", file.current_name());
                false
            }
            ConfigAction::UseContext { name } => {
                if file.context(name).is_none() {
                    bail!("{}: no context {name:?} (shoal config get-contexts lists them)", path.display());
                }
                file.current_context = (name != DEFAULT_CONTEXT).then(|| name.clone());
                println!("switched to context {name:?}");
                true
            }
            ConfigAction::SetContext { name, server, token_file, ca_file, namespace } => {
                let base = match file.context(name) {
                    Some(existing) => existing,
                    None => file.current().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                };
                let context = Context {
                    server: server.clone().unwrap_or(base.server),
                    token: token_file.as_ref().map(|f| read(f, "token")).transpose()?.unwrap_or(base.token),
                    ca: ca_file.as_ref().map(|f| read(f, "CA")).transpose()?.map_or(base.ca, |ca| ca + "\n"),
                    namespace: namespace.clone().or(base.namespace),
                };
                file.set(name, context);
                println!("context {name:?} set");
                true
            }
            ConfigAction::SetNamespace { namespace } => {
                let name = file.current_name().to_owned();
                let context = file.current().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                file.set(&name, Context { namespace: Some(namespace.clone()), ..context });
                println!("context {name:?} now uses namespace {namespace:?}");
                true
            }
            ConfigAction::DeleteContext { name } => {
                if name == DEFAULT_CONTEXT {
                    bail!("the {DEFAULT_CONTEXT:?} context is the control plane's; it cannot be deleted");
                }
                if file.contexts.remove(name).is_none() {
                    bail!("{}: no context {name:?}", path.display());
                }
                if file.current_context.as_deref() == Some(name) {
                    file.current_context = None;
                }
                println!("context {name:?} deleted");
                true
            }
        };
        if changed {
            file.save(&path)?;
        }
        Ok(ExitCode::SUCCESS)
    }
}
