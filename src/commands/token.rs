//! `shoal token create|list|delete`: tenant tokens, each limited to some namespaces.

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
    /// Issue a token that may use only the given namespaces; prints the secret (shown once).
    Create {
        /// A name to list and revoke it by.
        name: Name,
        /// A namespace it may use (repeatable).
        #[arg(short, long = "namespace", required = true)]
        namespaces: Vec<Name>,
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
            TokenAction::Create { name, namespaces } => {
                let issued =
                    client.create_token(&TokenRequest { name: name.clone(), namespaces: namespaces.clone() }).await?;
                println!("{}", issued.token);
            }
            TokenAction::List => {
                for t in client.list_tokens().await? {
                    let namespaces: Vec<&str> = t.namespaces.iter().map(|n| n.as_str()).collect();
                    println!("{}\t{}\t{}", t.name, namespaces.join(","), t.created_at);
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
