//! `shoal token create|list|delete`: tenant tokens, each limited to some namespaces, and node
//! tokens, each acting as one node (what `shoal node --join` takes).

use std::process::ExitCode;

use shoal_api::Name;
use shoal_api::token::TokenRequest;

use crate::connect::ConnectionArgs;

/// Flags of `shoal token`.
#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    action: TokenAction,
}

#[derive(clap::Subcommand, Debug)]
enum TokenAction {
    /// Issue a token that may use only the given namespaces (or, with --node, that acts as the
    /// node called NAME); prints the secret (shown once).
    Create {
        /// A name to list and revoke it by; for a node token, the node's name.
        name: Name,
        /// A namespace it may use (repeatable).
        #[arg(short, long = "namespace", required_unless_present = "node", conflicts_with = "node")]
        namespaces: Vec<Name>,
        /// A node token: for `shoal node --join URL --token T --name NAME`.
        #[arg(long)]
        node: bool,
    },
    /// List tokens (without secrets).
    List,
    /// Revoke a token.
    Delete {
        /// Its name.
        name: String,
    },
}

impl TokenArgs {
    pub async fn execute(&self, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
        let client = connection.client()?;
        match &self.action {
            TokenAction::Create { name, namespaces, node } => {
                let request = TokenRequest { name: name.clone(), namespaces: namespaces.clone(), node: *node };
                let issued = client.create_token(&request).await?;
                println!("{}", issued.token);
            }
            TokenAction::List => {
                for t in client.list_tokens().await? {
                    let namespaces: Vec<&str> = t.namespaces.iter().map(|n| n.as_str()).collect();
                    let scope = if t.node { "node".to_owned() } else { namespaces.join(",") };
                    println!("{}\t{scope}\t{}", t.name, t.created_at);
                }
            }
            TokenAction::Delete { name } => {
                client.delete_token(name).await?;
                println!("token {name} revoked");
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
