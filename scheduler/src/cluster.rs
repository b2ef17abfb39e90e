//! Several schedulers as one: the raft node under the store, who may act, and the cluster API.
//!
//! Only the leader acts on the world: it alone holds agent sessions, dispatches, generates
//! instances and answers the admin API, because those act on in-memory state (sessions, waiting
//! reasons, connectivity tests) that exists in one place. A follower answers agents and CLIs
//! with UNAVAILABLE and the leader's URL (`x-ferry-leader-addr`), and both follow it. Every
//! change still goes through the replicated log, and the state machine refuses a second
//! dispatch of one instance, so even two schedulers that both believe they lead for a moment
//! cannot run a day twice; the leader lease (`has_quorum_lease`) makes that moment not happen.
//!
//! When leadership moves, the old leader ends its agent sessions (agents reconnect to the new
//! one with the results they have not had acknowledged), and the new leader counts every
//! agent's lease from its own start, so an agent is never failed for time it spent connected
//! to the old leader.

use crate::context::{Config, Context};
use crate::error::{Error, Result};
use crate::raft::{RaftConfig, RaftError, RaftHandle, Role};
use crate::secrets::SecretBox;
use crate::state::Store;
use ferry_proto::admin::v1 as pb;
use ferry_proto::admin::v1::cluster_service_server::ClusterService;
use ferry_proto::tls::ClientTls;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

/// How this scheduler takes part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// This scheduler's raft id: non-zero, unique in the cluster, never reused.
    pub node_id: u64,
    /// The voters of a new cluster (`id -> URL`), this one included; empty for a single
    /// scheduler. Read on the first start only.
    pub peers: BTreeMap<u64, String>,
    /// Start with no members: wait to be added with `ferry cluster add` and catch up.
    pub join: bool,
    /// How this scheduler checks other schedulers' certificates (and presents its own).
    pub peer_tls: ClientTls,
    /// One raft tick; an election follows 10 ticks without a leader.
    pub tick: Duration,
    /// Applied commands between snapshots.
    pub snapshot_every: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            node_id: 1,
            peers: BTreeMap::new(),
            join: false,
            peer_tls: ClientTls::default(),
            tick: Duration::from_millis(100),
            snapshot_every: 10_000,
        }
    }
}

impl ClusterSettings {
    /// Whether this scheduler is (or will be) one of several.
    pub fn is_multi(&self) -> bool {
        self.join || self.peers.len() > 1
    }
}

/// Parses `--peers`: `1=https://s1:7100,2=https://s2:7100,3=https://s3:7100`.
pub fn parse_peers(text: &str) -> std::result::Result<BTreeMap<u64, String>, String> {
    let mut out = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, url) = part
            .split_once('=')
            .ok_or_else(|| format!("\"{part}\" is not id=URL (e.g. 1=https://sched-1:7100)"))?;
        let id: u64 = id
            .trim()
            .parse()
            .ok()
            .filter(|i| *i > 0)
            .ok_or_else(|| format!("\"{id}\" is not a scheduler id (a number from 1)"))?;
        let url = url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "peer {id}: \"{url}\" is not a URL (http:// or https://)"
            ));
        }
        if out.insert(id, url.to_string()).is_some() {
            return Err(format!("peer id {id} is given twice"));
        }
    }
    Ok(out)
}

/// The raft settings of this scheduler.
fn raft_config(config: &Config, secrets: &SecretBox) -> Result<RaftConfig> {
    let c = &config.cluster;
    let mut rc = if c.join {
        RaftConfig::new(c.node_id, config.advertise_url.clone())
    } else if c.peers.is_empty() {
        RaftConfig::single(c.node_id, config.advertise_url.clone())
    } else {
        let Some(mine) = c.peers.get(&c.node_id) else {
            return Err(Error::InvalidArgument(format!(
                "--peers does not list this scheduler's --node-id {} (it lists {:?})",
                c.node_id,
                c.peers.keys().collect::<Vec<_>>()
            )));
        };
        if mine.trim_end_matches('/') != config.advertise_url.trim_end_matches('/') {
            warn!(
                node_id = c.node_id,
                peers_say = %mine,
                advertise = %config.advertise_url,
                "--peers gives this scheduler another URL than --advertise-url; peers will use --peers"
            );
        }
        let mut rc = RaftConfig::new(c.node_id, mine.clone());
        rc.initial_members = c.peers.clone();
        rc
    };
    rc.tick = c.tick;
    rc.snapshot_every = c.snapshot_every.max(1);
    rc.snapshot_dir = Some(config.data_dir.join("snapshots"));
    rc.cluster_token = Some(secrets.cluster_tokens());
    rc = rc.with_tls(c.peer_tls.clone());
    Ok(rc)
}

/// Starts the raft node under `store` and attaches it, so every proposal from now on goes
/// through the replicated log.
pub async fn start(
    config: &Config,
    store: &Arc<Store>,
    secrets: &SecretBox,
    shutdown: CancellationToken,
) -> Result<RaftHandle> {
    let fresh_log = !crate::raft::storage::SledStorage::open(store.db())
        .map_err(Error::from)?
        .is_initialized();
    if fresh_log && store.applied_index() > 0 && !config.cluster.join {
        return Err(Error::FailedPrecondition(format!(
            "the data directory {} holds state (applied index {}) but no replication log: it was \
             written by a Ferry version before replication. Start this version with a new \
             --data-dir and submit the tasks and data sources again",
            config.data_dir.display(),
            store.applied_index()
        )));
    }
    let rc = raft_config(config, secrets)?;
    info!(node_id = rc.id, addr = %rc.addr, members = ?rc.initial_members, join = config.cluster.join, "starting the raft node");
    let handle = crate::raft::start(rc, store.db().clone(), store.clone(), shutdown).await?;
    store.attach(handle.clone());
    Ok(handle)
}

/// Waits until this node knows a leader (or leads), up to `limit`.
pub async fn await_leader(raft: &RaftHandle, limit: Duration) -> bool {
    let mut role = raft.role();
    tokio::time::timeout(limit, role.wait_for(|r| r.leader.is_some()))
        .await
        .is_ok_and(|r| r.is_ok())
}

/// UNAVAILABLE naming the leader, for callers that must go there.
pub fn not_leader(raft: &RaftHandle) -> Status {
    Status::from(RaftError::NotLeader {
        leader: raft.leader(),
    })
}

/// Whether this scheduler may act (dispatch, hold sessions, answer the admin API): always
/// without replication, else only as a leader a majority heard from just now.
pub fn leading(ctx: &Context) -> bool {
    ctx.store.raft().is_none_or(RaftHandle::has_quorum_lease)
}

/// Refuses a call on a scheduler that does not lead, naming the leader. Admin reads are served
/// from the leader's applied state under its lease (`has_quorum_lease`: a majority heard from
/// it within half an election timeout, and `check_quorum` keeps them from electing another
/// before a full one), so they are linearizable without a ReadIndex round per call.
pub fn gate(ctx: &Context) -> std::result::Result<(), Status> {
    match ctx.store.raft() {
        None => Ok(()),
        Some(r) if r.has_quorum_lease() => Ok(()),
        Some(r) if r.is_leader() => Err(Status::unavailable(
            "this scheduler was just elected (or lost touch with the others) and is confirming its leadership; retry in a moment",
        )),
        Some(r) if r.leader().is_none() => Err(Status::unavailable(
            "no scheduler leads the cluster right now (an election is under way, or a majority of schedulers is down); retry in a few seconds",
        )),
        Some(r) => Err(not_leader(r)),
    }
}

/// Follows leadership for the life of the scheduler: on taking it, resets agent leases,
/// bootstraps a new cluster and wakes the dispatcher; on losing it, ends agent sessions so
/// agents go to the new leader.
pub async fn watch_leadership(ctx: Arc<Context>, shutdown: CancellationToken) {
    let Some(raft) = ctx.store.raft().cloned() else {
        return;
    };
    let mut roles = raft.role();
    let mut leading_term: Option<u64> = None;
    loop {
        let role: Role = roles.borrow_and_update().clone();
        match (role.is_leader, leading_term) {
            (true, Some(t)) if t == role.term => {}
            (true, _) => {
                info!(term = role.term, "this scheduler leads the cluster");
                leading_term = Some(role.term);
                ctx.hub.take_leadership();
                match crate::auth::bootstrap(&ctx, ctx.config.bootstrap_token.as_deref()).await {
                    Ok(Some(token)) => {
                        if let Err(e) = crate::server::announce_first_token(&ctx.config, &token) {
                            warn!(error = %e, "cannot write the first admin token file");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        warn!(error = %e, "bootstrapping the first admin failed; retried on the next leadership")
                    }
                }
                ctx.hub.dispatch.notify_one();
            }
            (false, Some(_)) => {
                info!(term = role.term, leader = ?role.leader, "this scheduler no longer leads; ending agent sessions");
                leading_term = None;
                ctx.hub.step_down(not_leader(&raft));
            }
            (false, None) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = roles.changed() => if changed.is_err() { return },
        }
    }
}

/// `ferry cluster ...`: served by every scheduler.
pub struct ClusterApi {
    ctx: Arc<Context>,
}

impl ClusterApi {
    pub fn new(ctx: Arc<Context>) -> Self {
        Self { ctx }
    }

    fn raft(&self) -> std::result::Result<&RaftHandle, Status> {
        self.ctx
            .store
            .raft()
            .ok_or_else(|| Status::failed_precondition("this scheduler runs without replication"))
    }

    fn cluster_admin<T>(
        &self,
        req: &Request<T>,
    ) -> std::result::Result<crate::auth::Principal, Status> {
        let p = crate::auth::principal(req)?;
        if !p.cluster_admin {
            return Err(Status::permission_denied(format!(
                "user \"{}\" is not a cluster admin; changing or inspecting the cluster needs one",
                p.user
            )));
        }
        Ok(p)
    }

    async fn status_response(&self) -> std::result::Result<pb::ClusterStatusResponse, Status> {
        let s = self.raft()?.status().await.map_err(Status::from)?;
        let (leader_id, leader_addr) = s.leader.unwrap_or((0, String::new()));
        Ok(pb::ClusterStatusResponse {
            node_id: s.id,
            role: s.role,
            leader_id,
            leader_addr,
            term: s.term,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            first_index: s.first_index,
            last_index: s.last_index,
            snapshot_index: s.snapshot_index,
            members: s
                .members
                .into_iter()
                .map(|m| pb::ClusterMember {
                    id: m.id,
                    addr: m.addr,
                    voter: m.voter,
                    matched: m.matched,
                    lag: m.lag,
                    progress: m.progress,
                    recently_active: m.recently_active,
                })
                .collect(),
        })
    }

    async fn audit(&self, p: crate::auth::Principal, action: &str, target: String) {
        let record = crate::state::model::AuditRecord {
            at_ms: self.ctx.now_ms(),
            user: p.user,
            action: action.into(),
            workspace: String::new(),
            target,
            from: p.from,
            outcome: "ok".into(),
        };
        if let Err(e) = self
            .ctx
            .store
            .propose(crate::state::command::Command::RecordAudit { record })
            .await
        {
            warn!(error = %e, action, "cannot record a cluster change in the audit log");
        }
    }
}

#[tonic::async_trait]
impl ClusterService for ClusterApi {
    async fn leader(
        &self,
        req: Request<pb::LeaderRequest>,
    ) -> std::result::Result<Response<pb::LeaderResponse>, Status> {
        crate::auth::principal(&req)?;
        let Some(raft) = self.ctx.store.raft() else {
            return Ok(Response::new(pb::LeaderResponse {
                node_id: 0,
                node_addr: self.ctx.config.advertise_url.clone(),
                is_leader: true,
                leader_id: 0,
                leader_addr: self.ctx.config.advertise_url.clone(),
                term: 0,
            }));
        };
        let role = raft.role().borrow().clone();
        let (leader_id, leader_addr) = role.leader.clone().unwrap_or((0, String::new()));
        Ok(Response::new(pb::LeaderResponse {
            node_id: role.id,
            node_addr: self.ctx.config.advertise_url.clone(),
            // Leading and able to answer now (see `gate`).
            is_leader: raft.has_quorum_lease(),
            leader_id,
            leader_addr,
            term: role.term,
        }))
    }

    async fn cluster_status(
        &self,
        req: Request<pb::ClusterStatusRequest>,
    ) -> std::result::Result<Response<pb::ClusterStatusResponse>, Status> {
        self.cluster_admin(&req)?;
        Ok(Response::new(self.status_response().await?))
    }

    async fn add_member(
        &self,
        req: Request<pb::AddMemberRequest>,
    ) -> std::result::Result<Response<pb::ClusterStatusResponse>, Status> {
        let p = self.cluster_admin(&req)?;
        let r = req.into_inner();
        let target = format!("{}={}", r.id, r.addr);
        if let Err(e) = parse_peers(&target) {
            return Err(Status::invalid_argument(e));
        }
        match self.raft()?.add_voter(r.id, &r.addr).await {
            Ok(_) => {
                info!(user = %p.user, member = %target, "scheduler added to the cluster");
                self.audit(p, "AddMember", target).await;
            }
            Err(e) => return Err(Status::from(e)),
        }
        Ok(Response::new(self.status_response().await?))
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> std::result::Result<Response<pb::ClusterStatusResponse>, Status> {
        let p = self.cluster_admin(&req)?;
        let id = req.into_inner().id;
        match self.raft()?.remove_voter(id).await {
            Ok(_) => {
                info!(user = %p.user, member = id, "scheduler removed from the cluster");
                self.audit(p, "RemoveMember", id.to_string()).await;
            }
            Err(e) => return Err(Status::from(e)),
        }
        Ok(Response::new(self.status_response().await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_refuse_what_is_not_a_peer_list() {
        let p = parse_peers("1=http://a:7100, 2=https://b:7100,3=http://c:1").unwrap_or_default();
        assert_eq!(p.len(), 3);
        assert_eq!(p.get(&2).map(String::as_str), Some("https://b:7100"));
        for bad in [
            "1",
            "0=http://a:1",
            "x=http://a:1",
            "1=a:7100",
            "1=http://a:1,1=http://b:1",
        ] {
            assert!(parse_peers(bad).is_err(), "{bad} was accepted");
        }
    }
}
