//! `shoal member list|add|remove|replace`: the control plane's members (etcdctl's `member`).
//! A member to add, or to put in another's place, is started first with
//! `shoal control --standby --id ID --pki-dir <the cluster's PKI>`; it catches up (from a
//! snapshot, when the log it needs is compacted) before it votes.

use std::process::ExitCode;

use shoal_api::members::{MemberList, NewMember};

use crate::connect::ConnectionArgs;

/// Flags of `shoal member`.
#[derive(clap::Args, Debug)]
pub struct MemberArgs {
    #[command(subcommand)]
    action: MemberAction,
}

#[derive(clap::Subcommand, Debug)]
enum MemberAction {
    /// List the members, as the leader sees them.
    List,
    /// Add a member started with `shoal control --standby`, once it has caught up.
    Add {
        /// Its raft member id.
        id: u64,
        /// Its raft address (`--raft-listen`, or `--advertise` and its port).
        address: String,
    },
    /// Remove a member (refused if the voters left could not form a quorum now); the removed
    /// member's process stops.
    Remove {
        /// Its raft member id.
        id: u64,
    },
    /// Put a member started with `shoal control --standby` in place of voter OLD, in one
    /// change, once it has caught up.
    Replace {
        /// The voter that goes.
        old: u64,
        /// The new member's raft member id.
        id: u64,
        /// The new member's raft address.
        address: String,
    },
}

/// The members as a table.
fn members_table(list: &MemberList) -> String {
    let mut rows = vec![["ID", "ADDRESS", "ROLE", "MATCHED", "LAG"].map(str::to_owned).to_vec()];
    for m in &list.members {
        let role = match (m.leader, m.voter) {
            (true, _) => "leader",
            (false, true) => "voter",
            (false, false) => "learner",
        };
        let (matched, lag) = match m.matched {
            Some(index) => (index.to_string(), list.last_log_index.saturating_sub(index).to_string()),
            None => ("-".into(), "-".into()),
        };
        rows.push(vec![m.id.to_string(), m.address.clone(), role.into(), matched, lag]);
    }
    crate::output::align(rows)
}

impl MemberArgs {
    pub async fn execute(&self, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
        let client = connection.client()?;
        let list = match &self.action {
            MemberAction::List => client.members().await?,
            MemberAction::Add { id, address } => {
                let list = client.add_member(&NewMember { id: *id, address: address.clone() }).await?;
                eprintln!("member {id} added");
                list
            }
            MemberAction::Remove { id } => {
                let list = client.remove_member(*id).await?;
                eprintln!("member {id} removed");
                list
            }
            MemberAction::Replace { old, id, address } => {
                let list = client.replace_member(*old, &NewMember { id: *id, address: address.clone() }).await?;
                eprintln!("member {old} replaced by member {id}");
                list
            }
        };
        print!("{}", members_table(&list));
        Ok(ExitCode::SUCCESS)
    }
}
