//! The agent-facing gRPC service: registration with a group's token, and the Session stream over
//! which agents report everything and receive work.
//!
//! Every report is stored (proposed) before it is acknowledged, so an agent that loses its
//! connection resends exactly what the scheduler may not have, and the state machine's fencing
//! and idempotent log keys make resends harmless.

use crate::context::Context;
use crate::error::Error;
use crate::hub::InstanceEvent;
use crate::relay::{Leg, Role};
use crate::state::command::{Applied, Command, Reporter};
use crate::state::model::{AttemptState, HostInfo, LogRecord, Stats};
use ferry_common::secret::{hash_token, random_token, token_matches};
use ferry_proto::agent::v1 as pb;
use ferry_proto::agent::v1::agent_service_server::AgentService;
use ferry_proto::{
    AGENT_CREDENTIAL_HEADER, AGENT_ID_HEADER, FENCING_TOKEN_HEADER, RELAY_ID_HEADER,
    RELAY_ROLE_HEADER,
};
use futures_util::FutureExt as _;
use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, info, info_span, warn};

pub struct AgentApi {
    ctx: Arc<Context>,
    shutdown: CancellationToken,
}

impl AgentApi {
    pub fn new(ctx: Arc<Context>, shutdown: CancellationToken) -> Self {
        Self { ctx, shutdown }
    }
}

impl From<pb::HostFacts> for HostInfo {
    fn from(h: pb::HostFacts) -> Self {
        Self {
            hostname: h.hostname,
            addresses: h.addresses,
            version: h.version,
            slots: h.slots,
            os: h.os,
            labels: h.labels.into_iter().collect(),
        }
    }
}

impl From<pb::SyncStats> for Stats {
    fn from(s: pb::SyncStats) -> Self {
        Self {
            records_read: s.records_read,
            bytes_read: s.bytes_read,
            records_written: s.records_written,
            bytes_written: s.bytes_written,
            dirty_records: s.dirty_records,
            elapsed_ms: s.elapsed_ms,
            splits_done: s.splits_done,
            splits_total: s.splits_total,
        }
    }
}

fn metadata<T>(req: &Request<T>, key: &str) -> Result<String, Status> {
    req.metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| Status::unauthenticated(format!("missing {key}; register the agent first")))
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<pb::SchedulerMessage, Status>> + Send>>;
type RelayStream = Pin<Box<dyn Stream<Item = Result<pb::RelayFrame, Status>> + Send>>;

/// The agent a request's metadata names, if its credential is right and it is not revoked.
fn authenticate<T>(
    ctx: &Context,
    request: &Request<T>,
) -> Result<crate::state::model::Agent, Status> {
    let agent_id = metadata(request, AGENT_ID_HEADER)?;
    let credential = metadata(request, AGENT_CREDENTIAL_HEADER)?;
    let agent = ctx.store.agent(&agent_id)?.ok_or_else(|| {
        Status::unauthenticated(format!(
            "agent {agent_id} is not registered here; remove the agent's state file and register again with the group's token"
        ))
    })?;
    if !token_matches(&credential, &agent.credential_hash) {
        warn!(agent = %agent_id, "session refused: wrong credential");
        return Err(Status::unauthenticated(format!(
            "credential of agent {agent_id} is wrong"
        )));
    }
    if agent.is_revoked() {
        warn!(agent = %agent_id, "session refused: agent revoked");
        return Err(Status::unauthenticated(format!(
            "agent {agent_id} was revoked ({}); install it again with a fresh token from `ferry group rotate-token {}`",
            agent.revoked_reason, agent.group
        )));
    }
    Ok(agent)
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let req = request.into_inner();
        let group = self
            .ctx
            .store
            .group(&req.group)?
            .ok_or_else(|| Error::NotFound {
                what: "resource group",
                name: req.group.clone(),
                hint: "create it with `ferry group create` and use the install command it prints",
            })?;
        if !token_matches(&req.token, &group.token_hash) {
            warn!(group = %req.group, "registration refused: wrong token");
            return Err(Error::Unauthenticated(format!(
                "registration token for group \"{}\" is wrong; get a fresh one with `ferry group rotate-token {}`",
                req.group, req.group
            ))
            .into());
        }
        let agent_id = format!("agt-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let credential = random_token("fac_");
        let host: HostInfo = req.host.unwrap_or_default().into();
        info!(agent = %agent_id, group = %req.group, host = %host.hostname, "agent registered");
        self.ctx
            .store
            .propose(Command::RegisterAgent {
                id: agent_id.clone(),
                group: req.group,
                credential_hash: hash_token(&credential),
                host,
                at_ms: self.ctx.now_ms(),
            })
            .await?;
        Ok(Response::new(pb::RegisterResponse {
            agent_id,
            credential,
        }))
    }

    async fn deregister(
        &self,
        request: Request<pb::DeregisterRequest>,
    ) -> Result<Response<pb::DeregisterResponse>, Status> {
        let agent = authenticate(&self.ctx, &request)?;
        info!(agent = %agent.id, group = %agent.group, "agent uninstalled itself");
        self.ctx
            .store
            .propose(Command::RevokeAgent {
                id: agent.id.clone(),
                reason: "uninstalled".into(),
                at_ms: self.ctx.now_ms(),
            })
            .await?;
        self.ctx.hub.kick(
            &agent.id,
            Status::unauthenticated(format!("agent {} was uninstalled", agent.id)),
        );
        self.ctx.hub.dispatch.notify_one();
        Ok(Response::new(pb::DeregisterResponse {}))
    }

    type SessionStream = SessionStream;
    type RelayStream = RelayStream;

    async fn relay(
        &self,
        request: Request<Streaming<pb::RelayFrame>>,
    ) -> Result<Response<Self::RelayStream>, Status> {
        let agent = authenticate(&self.ctx, &request)?;
        // Relays live on the leader, beside the sessions that started their legs.
        crate::cluster::gate(&self.ctx)?;
        let relay_id = metadata(&request, RELAY_ID_HEADER)?;
        let role_text = metadata(&request, RELAY_ROLE_HEADER)?;
        let role = Role::parse(&role_text).ok_or_else(|| {
            Status::invalid_argument(format!(
                "relay role \"{role_text}\" is not reader or writer"
            ))
        })?;
        let token: u64 = metadata(&request, FENCING_TOKEN_HEADER)?
            .parse()
            .map_err(|_| Status::invalid_argument("the fencing token is not a number"))?;
        let attempt = self.ctx.store.attempt(&relay_id)?.ok_or_else(|| {
            Status::not_found(format!("attempt {relay_id} is unknown to this scheduler"))
        })?;
        let (holder, peer) = match role {
            Role::Reader => (&attempt.reader_agent_id, &attempt.agent_id),
            Role::Writer => (&attempt.agent_id, &attempt.reader_agent_id),
        };
        if attempt.reader_agent_id.is_empty() || *holder != agent.id {
            warn!(agent = %agent.id, attempt = %relay_id, role = role.as_str(), "relay refused: not this agent's leg");
            return Err(Status::permission_denied(format!(
                "agent {} does not run the {} leg of attempt {relay_id}",
                agent.id,
                role.as_str()
            )));
        }
        if attempt.fencing_token != token || attempt.state.is_final() {
            return Err(Status::failed_precondition(format!(
                "attempt {relay_id} is {} (fencing token {}); its relay is closed",
                attempt.state.as_str(),
                attempt.fencing_token
            )));
        }
        let peer_group = self
            .ctx
            .store
            .agent(peer)?
            .map(|a| a.group)
            .unwrap_or_default();
        let leg = Leg {
            role,
            agent: agent.id,
            group: agent.group,
            peer: format!("agent {peer} (group {peer_group})"),
        };
        let inbound: crate::relay::Inbound = Box::pin(request.into_inner());
        let rx =
            self.ctx
                .hub
                .relays
                .open(&relay_id, leg, inbound, self.ctx.config.start_timeout)?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let agent = authenticate(&self.ctx, &request)?;
        // Sessions live on the leader, where dispatch happens; elsewhere the agent is told where.
        crate::cluster::gate(&self.ctx)?;
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let (tx, rx) = mpsc::channel(256);
        let inbound = request.into_inner();
        let ctx = self.ctx.clone();
        let shutdown = self.shutdown.clone();
        let span = info_span!("session", agent = %agent.id, group = %agent.group, %peer);
        tokio::spawn(
            async move {
                run_session(ctx, agent.id, agent.group, inbound, tx, shutdown).await;
            }
            .instrument(span),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn run_session(
    ctx: Arc<Context>,
    agent_id: String,
    group: String,
    mut inbound: Streaming<pb::AgentMessage>,
    tx: mpsc::Sender<Result<pb::SchedulerMessage, Status>>,
    shutdown: CancellationToken,
) {
    let mut session: Option<(u64, CancellationToken)> = None;
    let never = CancellationToken::new();
    loop {
        let closed = session
            .as_ref()
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| never.clone());
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = closed.cancelled() => {
                info!("session replaced or revoked; no longer serving it");
                break;
            }
            msg = inbound.next() => msg,
        };
        let msg = match msg {
            Some(Ok(m)) => m,
            Some(Err(status)) => {
                info!(error = %status.message(), "session stream broke");
                break;
            }
            None => break,
        };
        if session.is_some() {
            // Reports that arrived together are stored together (see `on_batch`) and
            // acknowledged with one ack.
            let (batch, end) = drain(msg, &mut inbound);
            // Ephemeral messages (heartbeats) carry seq 0: acknowledge the highest.
            let seq = batch.iter().map(|m| m.seq).max().unwrap_or_default();
            if let Err(e) = on_batch(&ctx, &agent_id, batch).await {
                // Not acknowledged: the agent resends them on its next session.
                warn!(error = %e, seq, "could not store an agent report");
                break;
            }
            let ack = pb::SchedulerMessage {
                body: Some(pb::scheduler_message::Body::Ack(pb::Ack { up_to: seq })),
            };
            if tx.send(Ok(ack)).await.is_err() {
                break;
            }
            match end {
                Some(Some(status)) => {
                    info!(error = %status.message(), "session stream broke");
                    break;
                }
                Some(None) => break,
                None => continue,
            }
        }
        let seq = msg.seq;
        let handled = match msg.body {
            Some(pb::agent_message::Body::Hello(hello)) => {
                if session.is_some() {
                    Ok(())
                } else {
                    match on_hello(&ctx, &agent_id, &group, hello, &tx).await {
                        Ok(opened) => {
                            session = Some(opened);
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
            }
            Some(body) if session.is_none() => {
                warn!(?body, "message before hello; closing session");
                let _ = tx
                    .send(Err(Status::failed_precondition("send Hello first")))
                    .await;
                break;
            }
            Some(body) => on_message(&ctx, &agent_id, body).await,
            None => Ok(()),
        };
        match handled {
            Ok(()) => {
                let ack = pb::SchedulerMessage {
                    body: Some(pb::scheduler_message::Body::Ack(pb::Ack { up_to: seq })),
                };
                if tx.send(Ok(ack)).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                // Not acknowledged: the agent resends it on its next session.
                warn!(error = %e, seq, "could not store an agent report");
                break;
            }
        }
    }
    if let Some((id, _)) = session
        && ctx.hub.close_session(&agent_id, id)
    {
        info!("agent session closed");
        let _ = ctx
            .store
            .propose(Command::AgentSeen {
                id: agent_id.clone(),
                connected: false,
                host: None,
                boot_id: None,
                at_ms: ctx.now_ms(),
            })
            .await;
    }
}

/// Most reports handled as one batch.
const BATCH: usize = 256;

/// `first` and the messages that already arrived after it, up to [`BATCH`]; and whether the
/// stream ended meanwhile (`Some(Some(status))` broke, `Some(None)` closed).
fn drain(
    first: pb::AgentMessage,
    inbound: &mut Streaming<pb::AgentMessage>,
) -> (Vec<pb::AgentMessage>, Option<Option<Status>>) {
    let mut batch = vec![first];
    while batch.len() < BATCH {
        match inbound.next().now_or_never() {
            Some(Some(Ok(m))) => batch.push(m),
            Some(Some(Err(status))) => return (batch, Some(Some(status))),
            Some(None) => return (batch, Some(None)),
            None => break,
        }
    }
    (batch, None)
}

/// The attempt a report is about.
fn attempt_of(body: &pb::agent_message::Body) -> Option<&str> {
    use pb::agent_message::Body;
    match body {
        Body::Started(s) => Some(&s.attempt_id),
        Body::Progress(p) => Some(&p.attempt_id),
        Body::Log(l) => Some(&l.attempt_id),
        Body::Finished(f) => Some(&f.attempt_id),
        _ => None,
    }
}

/// Handles reports that arrived together. Reports on different attempts do not depend on each
/// other, so they are proposed at once and raft packs them into one log entry; an attempt's own
/// reports keep their order (its n-th report goes in the n-th wave). A busy agent then costs a
/// few raft writes per batch instead of two per attempt.
async fn on_batch(
    ctx: &Context,
    agent_id: &str,
    batch: Vec<pb::AgentMessage>,
) -> Result<(), Error> {
    let mut waves: Vec<Vec<pb::agent_message::Body>> = Vec::new();
    let mut reports: HashMap<String, usize> = HashMap::new();
    for body in batch.into_iter().filter_map(|m| m.body) {
        let wave = match attempt_of(&body) {
            Some(id) => {
                let n = reports.entry(id.to_string()).or_default();
                *n += 1;
                *n - 1
            }
            None => 0,
        };
        if waves.len() <= wave {
            waves.resize_with(wave + 1, Vec::new);
        }
        waves[wave].push(body);
    }
    for wave in waves {
        let handled =
            futures_util::future::join_all(wave.into_iter().map(|b| on_message(ctx, agent_id, b)))
                .await;
        for r in handled {
            r?;
        }
    }
    Ok(())
}

/// Settles everything the scheduler believes about this agent against what the agent says, then
/// opens the session. Results the agent reached while out of touch are applied first, so a sync
/// that committed while the scheduler was down is never recorded as failed.
async fn on_hello(
    ctx: &Context,
    agent_id: &str,
    group: &str,
    hello: pb::Hello,
    tx: &mpsc::Sender<Result<pb::SchedulerMessage, Status>>,
) -> Result<(u64, CancellationToken), Error> {
    let previous = ctx.store.agent(agent_id)?;
    let restarted = previous
        .as_ref()
        .is_some_and(|a| !a.boot_id.is_empty() && a.boot_id != hello.boot_id);
    let slots = hello.host.as_ref().map(|h| h.slots).unwrap_or(1);
    ctx.store
        .propose(Command::AgentSeen {
            id: agent_id.to_string(),
            connected: true,
            host: hello.host.map(Into::into),
            boot_id: Some(hello.boot_id.clone()),
            at_ms: ctx.now_ms(),
        })
        .await?;
    for f in hello.finished_attempts {
        finish_reported(ctx, agent_id, f).await?;
    }
    let running: HashSet<&str> = hello.running_attempts.iter().map(String::as_str).collect();
    for attempt in ctx.store.live_attempts()? {
        if attempt.agent_id != agent_id || running.contains(attempt.id.as_str()) {
            continue;
        }
        if attempt.state == AttemptState::Dispatched {
            // Agents record a start on disk before running, and hand back every result not
            // yet acknowledged: an attempt this hello does not mention never started here.
            let reason = format!(
                "attempt {} never reached agent {agent_id} (its session or the leader that sent it ended first); it did not run",
                attempt.id
            );
            info!(attempt = %attempt.id, instance = %attempt.instance_id, "{reason}");
            let applied = ctx
                .store
                .propose(Command::Undelivered {
                    id: attempt.id.clone(),
                    agent_id: agent_id.to_string(),
                    fencing_token: attempt.fencing_token,
                    reason,
                    at_ms: ctx.now_ms(),
                })
                .await?;
            ctx.announce(&applied);
            continue;
        }
        let error = if restarted {
            format!(
                "agent {agent_id} restarted and did not have the attempt; it was lost and can be rerun"
            )
        } else {
            format!(
                "agent {agent_id} never received the attempt (its session broke first); it did not run and can be rerun"
            )
        };
        warn!(attempt = %attempt.id, instance = %attempt.instance_id, "{error}");
        let applied = ctx
            .store
            .propose(Command::FinishAttempt {
                id: attempt.id.clone(),
                by: Reporter::Scheduler,
                fencing_token: attempt.fencing_token,
                state: AttemptState::Failed,
                stats: attempt.stats,
                error,
                at_ms: ctx.now_ms(),
            })
            .await?;
        ctx.announce(&applied);
    }
    let agent = ctx.store.agent(agent_id)?;
    let draining = agent.as_ref().is_some_and(|a| a.draining);
    let opened = ctx
        .hub
        .open_session(agent_id, group, &hello.boot_id, slots, tx.clone());
    if let Some(old) = &opened.superseded {
        warn!(old_boot = %old, new_boot = %hello.boot_id, "a newer session of this agent replaced the one of another process");
    }
    info!(boot = %hello.boot_id, restarted, "agent online");
    let welcome = pb::SchedulerMessage {
        body: Some(pb::scheduler_message::Body::Welcome(pb::Welcome {
            lease_ms: ctx.config.attempt_lease.as_millis() as u64,
            draining,
        })),
    };
    let _ = tx.send(Ok(welcome)).await;
    stop_unwanted(ctx, agent_id, &hello.running_attempts)?;
    Ok((opened.session_id, opened.closed))
}

/// Tells the agent to stop attempts it runs that the scheduler no longer counts as its own
/// (failed after a lease, killed, or unknown): nothing may keep writing for an attempt the
/// scheduler has given up on.
fn stop_unwanted(ctx: &Context, agent_id: &str, running: &[String]) -> Result<(), Error> {
    for id in running {
        let reason = match ctx.store.attempt(id)? {
            None => "the scheduler does not know this attempt".to_string(),
            Some(a) if !a.holds(agent_id) => {
                format!("the attempt belongs to agent {}", a.agent_id)
            }
            Some(a) if a.state.is_final() => format!(
                "the scheduler ended this attempt as {}: {}",
                a.state.as_str(),
                a.error
            ),
            Some(_) => continue,
        };
        warn!(attempt = %id, %reason, "telling the agent to stop an attempt");
        ctx.hub.send(
            agent_id,
            pb::SchedulerMessage {
                body: Some(pb::scheduler_message::Body::Kill(pb::KillAttempt {
                    attempt_id: id.clone(),
                    reason,
                })),
            },
        );
    }
    Ok(())
}

fn attempt_state(status: i32) -> AttemptState {
    match pb::AttemptStatus::try_from(status) {
        Ok(pb::AttemptStatus::Succeeded) => AttemptState::Succeeded,
        Ok(pb::AttemptStatus::Killed) => AttemptState::Killed,
        _ => AttemptState::Failed,
    }
}

/// Applies an agent's AttemptFinished (live on the session, or carried in a Hello).
async fn finish_reported(
    ctx: &Context,
    agent_id: &str,
    f: pb::AttemptFinished,
) -> Result<(), Error> {
    let state = attempt_state(f.status);
    // A reader leg's rows are counted by its writer leg, whose result is the attempt's.
    let reader_leg = ctx
        .store
        .attempt(&f.attempt_id)?
        .is_some_and(|a| a.is_reader_leg(agent_id));
    if reader_leg {
        info!(attempt = %f.attempt_id, state = state.as_str(), "reader leg finished");
    } else {
        info!(attempt = %f.attempt_id, state = state.as_str(), "attempt finished");
    }
    let stats: Stats = f.stats.unwrap_or_default().into();
    let applied = ctx
        .store
        .propose(Command::FinishAttempt {
            id: f.attempt_id.clone(),
            by: Reporter::Agent(agent_id.to_string()),
            fencing_token: f.fencing_token,
            state,
            stats,
            error: f.error,
            at_ms: ctx.now_ms(),
        })
        .await?;
    match (&applied, reader_leg) {
        (Applied::Changed { .. } | Applied::Done, false) => {
            ctx.hub.metrics.attempt_finished(state.as_str(), &stats)
        }
        // The reader leg's failure ended the attempt; its rows never counted as written.
        (Applied::Changed { .. }, true) => ctx
            .hub
            .metrics
            .attempt_finished(state.as_str(), &Stats::default()),
        _ => {}
    }
    ctx.announce(&applied);
    if !matches!(applied, Applied::Stale(_)) {
        ctx.hub.slot_freed(agent_id);
    }
    ctx.hub.dispatch.notify_one();
    changed(ctx, &f.attempt_id, &applied)
}

/// Applies one report of an agent whose session said hello: what a session does with every
/// message after the first. Public so hostile-input tests can feed it without a network.
pub async fn on_message(
    ctx: &Context,
    agent_id: &str,
    body: pb::agent_message::Body,
) -> Result<(), Error> {
    use pb::agent_message::Body;
    match body {
        Body::Hello(_) => Ok(()),
        Body::Heartbeat(hb) => {
            ctx.hub.heartbeat(agent_id, hb.free_slots, hb.load1);
            stop_unwanted(ctx, agent_id, &hb.running_attempts)
        }
        Body::Started(s) => {
            let applied = ctx
                .store
                .propose(Command::AttemptStarted {
                    id: s.attempt_id.clone(),
                    agent_id: agent_id.to_string(),
                    fencing_token: s.fencing_token,
                    at_ms: ctx.now_ms(),
                })
                .await?;
            changed(ctx, &s.attempt_id, &applied)
        }
        Body::Progress(p) => {
            if let Some(a) = ctx.store.attempt(&p.attempt_id)?
                && a.fencing_token == p.fencing_token
                && a.agent_id == agent_id
                && !a.state.is_final()
            {
                ctx.hub.publish(InstanceEvent::Progress {
                    instance_id: a.instance_id,
                    stats: p.stats.unwrap_or_default().into(),
                });
            }
            Ok(())
        }
        Body::Log(l) => {
            let lines: Vec<LogRecord> = l
                .lines
                .into_iter()
                .map(|x| LogRecord {
                    index: x.index,
                    ts_ms: x.ts_ms,
                    level: x.level,
                    message: x.message,
                })
                .collect();
            let applied = ctx
                .store
                .propose(Command::AppendLogs {
                    attempt_id: l.attempt_id.clone(),
                    agent_id: agent_id.to_string(),
                    fencing_token: l.fencing_token,
                    lines: lines.clone(),
                })
                .await?;
            match applied {
                Applied::Stale(why) => {
                    warn!(attempt = %l.attempt_id, reason = %why, "log lines refused")
                }
                _ => {
                    if let Some(a) = ctx.store.attempt(&l.attempt_id)? {
                        for line in lines {
                            ctx.hub.publish(InstanceEvent::Log {
                                instance_id: a.instance_id.clone(),
                                attempt_id: a.id.clone(),
                                index: line.index,
                                ts_ms: line.ts_ms,
                                level: line.level,
                                message: line.message,
                            });
                        }
                    }
                }
            }
            Ok(())
        }
        Body::Finished(f) => finish_reported(ctx, agent_id, f).await,
        Body::Connectivity(c) => {
            ctx.hub.test_result(agent_id, c);
            Ok(())
        }
    }
}

fn changed(ctx: &Context, attempt_id: &str, applied: &Applied) -> Result<(), Error> {
    match applied {
        Applied::Stale(why) => {
            warn!(attempt = %attempt_id, reason = %why, "stale report ignored");
        }
        _ => {
            if let Some(a) = ctx.store.attempt(attempt_id)? {
                ctx.hub.publish(InstanceEvent::Changed {
                    instance_id: a.instance_id,
                });
            }
        }
    }
    Ok(())
}
