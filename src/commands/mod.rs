//! The subcommands, one file each.

mod apply;
mod completion;
mod config;
mod control;
mod delete;
mod describe;
mod dev;
mod diff;
mod drain;
mod events;
mod get;
mod logs;
mod member;
mod node;
mod push;
mod rollout;
mod run;
mod scale;
mod snapshot;
mod token;
mod top;
mod version;

use std::process::ExitCode;

use crate::connect::ConnectionArgs;

/// Every subcommand.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Run a control node (API server, raft-replicated store).
    Control(control::ControlArgs),
    /// Run a control plane and a node in one process, with no configuration (for development).
    Dev(dev::DevArgs),
    /// Run a worker node: join a cluster, run the instances bound to it, serve their HTTP.
    Node(node::NodeArgs),
    /// Create or update objects from manifest files or directories.
    Apply(apply::ApplyArgs),
    /// List objects, or show one.
    Get(get::GetArgs),
    /// Show one object in detail, with its events.
    Describe(describe::DescribeArgs),
    /// Delete objects by name, or those a manifest names.
    Delete(delete::DeleteArgs),
    /// Print (or follow) what instances write to stdout and stderr.
    Logs(logs::LogsArgs),
    /// Follow a rollout, list a workload's revisions, undo one, or restart every instance.
    Rollout(rollout::RolloutArgs),
    /// Run a wasm module once, here, as a node would (or serve an HTTP component).
    Run(run::RunArgs),
    /// Issue, list and revoke tenant tokens (limited to some namespaces).
    Token(token::TokenArgs),
    /// Show requests per second, CPU and memory of nodes, workloads or instances.
    Top(top::TopArgs),
    /// Set how many replicas workloads want.
    Scale(scale::ScaleArgs),
    /// Print this client's release and the server's.
    Version(version::VersionArgs),
    /// List (and follow) Events, oldest first.
    Events(events::EventsArgs),
    /// Mark a node unschedulable: nothing new is bound to it.
    Cordon(drain::CordonArgs),
    /// Make a node schedulable again (and stop a drain).
    Uncordon(drain::CordonArgs),
    /// Show what `apply` would change, as a unified diff (exit 1 when it would change something).
    Diff(diff::DiffArgs),
    /// Cordon a node and move every instance off it, within each workload's rollout bounds.
    Drain(drain::DrainArgs),
    /// Show and change the client config's contexts and their default namespaces.
    Config(config::ConfigArgs),
    /// List, add, remove and replace control-plane members.
    Member(member::MemberArgs),
    /// Save a backup of the cluster, restore one into a new member, or check one.
    Snapshot(snapshot::SnapshotArgs),
    /// Publish a module to an OCI registry, as a wasm artifact a Workload can name.
    Push(push::PushArgs),
    /// Print a shell completion script (e.g. `source <(shoal completion bash)`).
    Completion(completion::CompletionArgs),
}

impl Command {
    /// Runs the subcommand.
    pub async fn execute(&self, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
        match self {
            Command::Control(args) => args.execute(connection).await,
            Command::Node(args) => args.execute(connection).await,
            Command::Dev(args) => args.execute(connection).await,
            Command::Logs(args) => args.execute(connection).await,
            Command::Rollout(args) => args.execute(connection).await,
            Command::Apply(args) => args.execute(connection).await,
            Command::Get(args) => args.execute(connection).await,
            Command::Describe(args) => args.execute(connection).await,
            Command::Delete(args) => args.execute(connection).await,
            Command::Token(args) => args.execute(connection).await,
            Command::Run(args) => args.execute(connection).await,
            Command::Top(args) => args.execute(connection).await,
            Command::Scale(args) => args.execute(connection).await,
            Command::Version(args) => args.execute(connection).await,
            Command::Completion(args) => args.execute(),
            Command::Member(args) => args.execute(connection).await,
            Command::Snapshot(args) => args.execute(connection).await,
            Command::Push(args) => args.execute().await,
            Command::Events(args) => args.execute(connection).await,
            Command::Config(args) => args.execute(connection).await,
            Command::Cordon(args) => args.cordon(connection).await,
            Command::Uncordon(args) => args.uncordon(connection).await,
            Command::Drain(args) => args.execute(connection).await,
            Command::Diff(args) => args.execute(connection).await,
        }
    }
}
