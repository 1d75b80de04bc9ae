//! `shoal version`: this client's release and the server's.

use std::process::ExitCode;

use crate::connect::ConnectionArgs;

/// Flags of `shoal version`.
#[derive(clap::Args, Debug)]
pub struct VersionArgs {
    /// Only this client's release; ask no server.
    #[arg(long)]
    client: bool,
}

impl VersionArgs {
    pub async fn execute(&self, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
        println!("client: {}", env!("CARGO_PKG_VERSION"));
        if self.client {
            return Ok(ExitCode::SUCCESS);
        }
        let version = connection.client()?.server_version().await?;
        println!("server: {}", version.version);
        Ok(ExitCode::SUCCESS)
    }
}
