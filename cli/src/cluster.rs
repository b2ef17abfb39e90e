//! `ferry cluster`: the schedulers replicating the state, as the one asked sees them.
//!
//! `status` asks the scheduler given (any member, not only the leader), because what an operator
//! wants during trouble is each member's own view: who it thinks leads, how far it has applied.
//! Membership changes go to the leader.

use crate::client::{Auth, cluster_client, connect_any, status};
use crate::format::Output;
use clap::Subcommand;
use ferry_proto::admin::v1 as pb;
use ferry_proto::tls::ClientTls;

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Members, leader, term, commit and applied index of the scheduler asked (the leader also
    /// shows each member's replication progress).
    Status,
    /// Add a scheduler started with --join as a voter.
    Add {
        /// Its --node-id.
        id: u64,
        /// The URL it serves on (its --advertise-url).
        url: String,
    },
    /// Remove a scheduler from the voters (stop it afterwards).
    Remove { id: u64 },
}

pub async fn run(
    urls: &[String],
    tls: &ClientTls,
    auth: Auth,
    out: Output,
    cmd: ClusterCmd,
) -> anyhow::Result<i32> {
    let (channel, _) = connect_any(urls, tls).await?;
    let mut cluster = cluster_client(channel, auth.clone());
    let s = match cmd {
        ClusterCmd::Status => cluster
            .cluster_status(pb::ClusterStatusRequest {})
            .await
            .map_err(status)?
            .into_inner(),
        ClusterCmd::Add { id, url } => {
            let mut leader = to_leader(urls, tls, auth).await?;
            leader
                .add_member(pb::AddMemberRequest { id, addr: url })
                .await
                .map_err(status)?
                .into_inner()
        }
        ClusterCmd::Remove { id } => {
            let mut leader = to_leader(urls, tls, auth).await?;
            leader
                .remove_member(pb::RemoveMemberRequest { id })
                .await
                .map_err(status)?
                .into_inner()
        }
    };
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(&json(&s))?),
        Output::Text => print_status(&s),
    }
    Ok(0)
}

/// The cluster service of the leader.
async fn to_leader(
    urls: &[String],
    tls: &ClientTls,
    auth: Auth,
) -> anyhow::Result<crate::client::Cluster> {
    let (channel, _) = connect_any(urls, tls).await?;
    let mut c = cluster_client(channel, auth.clone());
    let r = c
        .leader(pb::LeaderRequest {})
        .await
        .map_err(status)?
        .into_inner();
    if r.is_leader || r.leader_addr.is_empty() {
        return Ok(c);
    }
    let (channel, _) = connect_any(std::slice::from_ref(&r.leader_addr), tls).await?;
    Ok(cluster_client(channel, auth))
}

fn print_status(s: &pb::ClusterStatusResponse) {
    let leader = if s.leader_id == 0 {
        "none known".to_string()
    } else {
        format!("{} ({})", s.leader_id, s.leader_addr)
    };
    println!(
        "node {} is {}; leader: {leader}; term {}",
        s.node_id, s.role, s.term
    );
    println!(
        "log: first {} last {} committed {} applied {} snapshot {}",
        s.first_index, s.last_index, s.commit_index, s.applied_index, s.snapshot_index
    );
    println!(
        "{:<4} {:<32} {:<7} {:>10} {:>8} {:<10} ACTIVE",
        "ID", "URL", "VOTER", "MATCHED", "LAG", "PROGRESS"
    );
    for m in &s.members {
        println!(
            "{:<4} {:<32} {:<7} {:>10} {:>8} {:<10} {}",
            m.id,
            m.addr,
            if m.voter { "yes" } else { "no" },
            m.matched,
            m.lag,
            if m.progress.is_empty() {
                "-"
            } else {
                &m.progress
            },
            if m.recently_active { "yes" } else { "-" }
        );
    }
}

fn json(s: &pb::ClusterStatusResponse) -> serde_json::Value {
    serde_json::json!({
        "node_id": s.node_id,
        "role": s.role,
        "leader_id": s.leader_id,
        "leader_addr": s.leader_addr,
        "term": s.term,
        "commit_index": s.commit_index,
        "applied_index": s.applied_index,
        "first_index": s.first_index,
        "last_index": s.last_index,
        "snapshot_index": s.snapshot_index,
        "members": s.members.iter().map(|m| serde_json::json!({
            "id": m.id,
            "addr": m.addr,
            "voter": m.voter,
            "matched": m.matched,
            "lag": m.lag,
            "progress": m.progress,
            "recently_active": m.recently_active,
        })).collect::<Vec<_>>(),
    })
}
