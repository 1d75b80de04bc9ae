//! `shoal completion SHELL`: a completion script for the shell, e.g.
//! `source <(shoal completion bash)`.

use std::process::ExitCode;

/// Flags of `shoal completion`.
#[derive(clap::Args, Debug)]
pub struct CompletionArgs {
    /// bash, zsh, fish, elvish or powershell.
    shell: clap_complete::Shell,
}

impl CompletionArgs {
    pub fn execute(&self) -> anyhow::Result<ExitCode> {
        let mut command = <crate::Cli as clap::CommandFactory>::command();
        clap_complete::generate(self.shell, &mut command, "shoal", &mut std::io::stdout());
        Ok(ExitCode::SUCCESS)
    }
}
