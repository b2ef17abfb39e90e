//! `ferry agent …`: the agents of every resource group, and the operator's levers on one agent:
//! drain (finish what runs, take nothing new), resume, revoke (cut off at once).

use crate::client::{Admin, status};
use crate::format::{Output, table, time};
use clap::Subcommand;
use ferry_proto::admin::v1 as pb;

#[derive(Subcommand, Debug)]
pub enum AgentCmd {
    /// List agents with their state, load, labels and version.
    List {
        #[arg(long)]
        group: Option<String>,
    },
    /// Let the agent finish what it runs and give it nothing new.
    Drain { id: String },
    /// Give a drained agent work again.
    Resume { id: String },
    /// Cut an agent off at once: session closed, credential refused, attempts failed (and
    /// retried elsewhere when their policy allows).
    Revoke { id: String },
}

pub async fn run(admin: &mut Admin, out: Output, cmd: AgentCmd) -> anyhow::Result<i32> {
    match cmd {
        AgentCmd::List { group } => {
            let r = admin
                .list_agents(pb::ListAgentsRequest {
                    group: group.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                println!(
                    "{}",
                    crate::json::list(r.agents.iter().map(crate::json::agent))
                );
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = r.agents.iter().map(row).collect();
            table(
                &[
                    "AGENT",
                    "GROUP",
                    "HOST",
                    "ADDRESS",
                    "VERSION",
                    "RUNNING/SLOTS",
                    "LOAD",
                    "LABELS",
                    "LAST HEARTBEAT",
                    "STATE",
                ],
                &rows,
            );
        }
        AgentCmd::Drain { id } => {
            let a = drain(admin, id, true).await?;
            println!(
                "agent {} is draining: it finishes what runs and takes nothing new",
                a.id
            );
        }
        AgentCmd::Resume { id } => {
            let a = drain(admin, id, false).await?;
            println!("agent {} takes work again ({})", a.id, a.state);
        }
        AgentCmd::Revoke { id } => {
            let a = admin
                .revoke_agent(pb::RevokeAgentRequest { id })
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "agent {} revoked: its session is closed and its credential refused; its attempts were failed",
                a.id
            );
        }
    }
    Ok(0)
}

async fn drain(admin: &mut Admin, id: String, drain: bool) -> anyhow::Result<pb::AgentInfo> {
    Ok(admin
        .drain_agent(pb::DrainAgentRequest { id, drain })
        .await
        .map_err(status)?
        .into_inner())
}

fn row(a: &pb::AgentInfo) -> Vec<String> {
    let mut labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    vec![
        a.id.clone(),
        a.group.clone(),
        a.hostname.clone(),
        a.addresses.join(","),
        a.version.clone(),
        format!("{}/{}", a.running, a.slots),
        format!("{:.2}", a.load1),
        labels.join(","),
        time(a.last_heartbeat_ms),
        a.state.clone(),
    ]
}
