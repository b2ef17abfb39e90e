//! The dispatcher: hands waiting instances to online agents of their resource group, and ends
//! attempts the scheduler has to give up on (agent gone past its lease, attempt never started).
//!
//! It wakes when something changes (an instance is created, an agent connects, a slot frees) and
//! on a short tick, and it says why an instance still waits, because "it just sits there" is the
//! worst thing a scheduler can show a user. It never waits on one agent: messages go out with
//! `try_send`, and an agent whose session buffer is full is skipped, so one stuck agent cannot
//! stall dispatch for the others.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::hub::{InstanceEvent, Session};
use crate::state::DispatchNeeds;
use crate::state::command::{Applied, Command, Reporter};
use crate::state::model::{
    Agent, Attempt, AttemptState, Group, Instance, InstanceState, Labels, Queued,
};
use ferry_common::job::JobSpec;
use ferry_common::params::{self, ParamContext};
use ferry_proto::agent::v1 as pb;
use std::collections::HashMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

/// Runs until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    loop {
        // Only the leader acts; a follower's loop idles until leadership comes its way.
        if crate::cluster::leading(&ctx) {
            if let Err(e) = crate::generate::tick(&ctx).await {
                warn!(error = %e, "scheduling round failed; retrying");
            }
            if let Err(e) = tick(&ctx).await {
                warn!(error = %e, "dispatch round failed; retrying");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ctx.hub.dispatch.notified() => {}
            _ = tokio::time::sleep(ctx.config.dispatch_interval) => {}
        }
    }
}

/// One round: give up on lost attempts, then dispatch what waits. The round's choices are
/// made first, on one snapshot of the agents' sessions, and then proposed together, so raft
/// packs them into one log entry (one write, one flush) instead of one per instance.
pub async fn tick(ctx: &Context) -> Result<()> {
    let live = ctx.store.live_attempts()?;
    let expired = expire(ctx, &live).await?;
    let waiting = ctx.store.waiting_queue()?;
    if waiting.is_empty() {
        return Ok(());
    }
    // Slots in use per agent, from the durable state (dispatched or running attempts).
    let mut busy: HashMap<String, u32> = HashMap::new();
    for a in live.iter().filter(|a| !expired.contains(&a.id)) {
        for agent in a.agents() {
            *busy.entry(agent.to_string()).or_default() += 1;
        }
    }
    let agents = ctx.store.agents()?;
    let groups: HashMap<String, Group> = ctx
        .store
        .groups()?
        .into_iter()
        .map(|g| (g.name.clone(), g))
        .collect();
    let mut group_busy: HashMap<String, u32> = HashMap::new();
    for a in &agents {
        *group_busy.entry(a.group.clone()).or_default() += busy.get(&a.id).copied().unwrap_or(0);
    }
    let mut sessions: HashMap<String, Online> = agents
        .iter()
        .filter_map(|a| {
            ctx.hub
                .online(&a.id, ctx.config.offline_after)
                .map(|s| (a.id.clone(), Online::new(s)))
        })
        .collect();
    // Why instances of a (group, labels, writer group) cannot go out this round: once there
    // is no room for one, there is none for the next (room only shrinks within a round), so
    // the thousands queued behind a full group are not each matched against every agent.
    let mut refused: HashMap<(String, Labels, String), String> = HashMap::new();
    let mut picks: Vec<(Queued, Pick)> = Vec::new();
    for inst in waiting {
        let DispatchNeeds {
            labels: required,
            writer_group,
        } = ctx.store.dispatch_needs(&inst.task, inst.version)?;
        let shape = (inst.group.clone(), required, writer_group);
        if let Some(reason) = refused.get(&shape) {
            note_waiting(ctx, &inst, reason);
            continue;
        }
        let (_, required, writer_group) = &shape;
        let full = |group: &str| {
            let limit = groups.get(group).map(|g| g.max_concurrency).unwrap_or(0);
            let in_use = group_busy.get(group).copied().unwrap_or(0);
            (limit > 0 && in_use >= limit).then(|| format!(
                "resource group \"{group}\" runs {in_use} attempts, its limit (`ferry group set {group} --max-concurrency`)"
            ))
        };
        let chosen = if let Some(why) = full(&inst.group) {
            Err(why)
        } else if writer_group.is_empty() {
            choose(&inst.group, required, &agents, &sessions, &busy).map(|a| (a, None))
        } else if let Some(why) = full(writer_group) {
            Err(why)
        } else {
            // Two legs: the writer on the writer group, the reader on the task's group; both
            // need a slot, or neither is taken.
            choose(writer_group, required, &agents, &sessions, &busy).and_then(|w| {
                choose(&inst.group, required, &agents, &sessions, &busy).map(|r| (w, Some(r)))
            })
        };
        match chosen {
            Ok((agent_id, reader)) => {
                ctx.hub.set_waiting(&inst.id, None);
                let mut taken = Vec::new();
                for (agent, group) in std::iter::once((agent_id, writer_group))
                    .chain(reader.map(|r| (r, &inst.group)))
                {
                    let group = if group.is_empty() { &inst.group } else { group };
                    *busy.entry(agent.clone()).or_default() += 1;
                    *group_busy.entry(group.clone()).or_default() += 1;
                    ctx.hub.dispatched_to(&agent);
                    let Some(online) = sessions.get_mut(&agent) else {
                        continue;
                    };
                    online.session.free_slots = online.session.free_slots.saturating_sub(1);
                    online.session.last_dispatch_ms = ctx.now_ms();
                    online.room = online.room.saturating_sub(1);
                    taken.push((agent, online.session.clone()));
                }
                let mut taken = taken.into_iter();
                let Some(writer) = taken.next() else {
                    continue;
                };
                let reader = taken.next();
                if !writer_group.is_empty() && reader.is_none() {
                    continue;
                }
                picks.push((inst, Pick { writer, reader }));
            }
            Err(reason) => {
                note_waiting(ctx, &inst, &reason);
                refused.insert(shape, reason);
            }
        }
    }
    let mut chosen = Vec::with_capacity(picks.len());
    for (q, pick) in picks {
        // The whole record only for what goes out now.
        match ctx.store.instance(&q.id)? {
            Some(inst) if inst.state == InstanceState::WaitingResources => {
                chosen.push((inst, pick));
            }
            _ => {}
        }
    }
    let rounds = chosen.iter().map(|(inst, pick)| {
        let span = info_span!("instance", instance = %inst.id, task = %inst.task);
        dispatch(ctx, inst, pick).instrument(span)
    });
    for result in futures_util::future::join_all(rounds).await {
        result?;
    }
    Ok(())
}

/// The agents an instance goes to: one, or the writer leg's and the reader leg's of a
/// two-group sync.
struct Pick {
    writer: (String, Session),
    reader: Option<(String, Session)>,
}

/// An online agent's session as one dispatch round sees it: its free slots and the room left
/// in its session buffer go down with each instance the round gives it.
struct Online {
    session: Session,
    room: usize,
}

impl Online {
    fn new(session: Session) -> Self {
        let room = session.tx.capacity();
        Self { session, room }
    }
}

/// Records why a queued instance waits; a new reason is logged and announced to watchers.
fn note_waiting(ctx: &Context, inst: &Queued, reason: &str) {
    if ctx.hub.set_waiting(&inst.id, Some(reason.to_string())) {
        info!(instance = %inst.id, task = %inst.task, %reason, "instance waits");
        ctx.hub.publish(InstanceEvent::Changed {
            instance_id: inst.id.clone(),
        });
    }
}

/// Picks the agent for `inst` in `group` (its own, or its writer group): online, in the group, not draining, carrying the labels the task
/// asks for, with a free slot (by the scheduler's count and by the agent's last heartbeat) and
/// room in its session; the most free slots first, then the lowest load, then the one that got
/// work longest ago. The error is why the instance waits.
fn choose(
    group: &str,
    required: &Labels,
    agents: &[Agent],
    sessions: &HashMap<String, Online>,
    busy: &HashMap<String, u32>,
) -> std::result::Result<String, String> {
    let in_group: Vec<&Agent> = agents
        .iter()
        .filter(|a| a.group == group && !a.is_revoked())
        .collect();
    if in_group.is_empty() {
        return Err(format!(
            "resource group \"{}\" has no agents; install one with the command printed by `ferry group create`",
            group
        ));
    }
    let online: Vec<(&Agent, &Online)> = in_group
        .iter()
        .filter_map(|a| sessions.get(&a.id).map(|s| (*a, s)))
        .collect();
    if online.is_empty() {
        return Err(format!(
            "no online agent in resource group \"{}\" ({} registered, all offline); start one",
            group,
            in_group.len()
        ));
    }
    let serving: Vec<&(&Agent, &Online)> = online.iter().filter(|(a, _)| !a.draining).collect();
    if serving.is_empty() {
        return Err(format!(
            "every online agent of resource group \"{}\" is draining; resume one with `ferry agent resume`",
            group
        ));
    }
    let fitting: Vec<&&(&Agent, &Online)> = serving
        .iter()
        .filter(|(a, _)| a.has_labels(required))
        .collect();
    if fitting.is_empty() {
        let wanted: Vec<String> = required.iter().map(|(k, v)| format!("{k}={v}")).collect();
        return Err(format!(
            "no online agent of resource group \"{}\" carries the labels {}",
            group,
            wanted.join(",")
        ));
    }
    let best = fitting
        .iter()
        .filter_map(|(a, o)| {
            let s = &o.session;
            let used = busy.get(&a.id).copied().unwrap_or(0);
            let free = s.slots.max(1).saturating_sub(used).min(s.free_slots);
            (free > 0 && o.room > 0).then_some((free, *a, s))
        })
        .max_by(|(fa, _, sa), (fb, _, sb)| {
            fa.cmp(fb)
                .then(sb.load1.total_cmp(&sa.load1))
                .then(sb.last_dispatch_ms.cmp(&sa.last_dispatch_ms))
        });
    match best {
        Some((_, a, _)) => Ok(a.id.clone()),
        None => Err(format!(
            "all {} eligible online agents of resource group \"{}\" are busy",
            fitting.len(),
            group
        )),
    }
}

/// What an agent is sent to run.
enum Work {
    Sync(String),
    /// A two-group sync: the reader's half for an agent of the task's group, the writer's
    /// half for an agent of `writer_group`.
    Relay {
        reader: String,
        writer: String,
        writer_group: String,
    },
    Shell {
        script: String,
        env: HashMap<String, String>,
    },
}

/// Resolves what the instance runs: a sync job with parameters substituted and data sources
/// filled in (secrets opened), or a shell script with its parameters, if its group allows.
fn resolve(ctx: &Context, inst: &Instance) -> Result<Work> {
    if inst.node_type == crate::state::model::TaskKind::Shell {
        let group = ctx.store.group(&inst.group)?;
        if !group.is_some_and(|g| g.allow_shell) {
            return Err(Error::FailedPrecondition(format!(
                "resource group \"{}\" does not run shell tasks (any more); a cluster admin can allow them with `ferry group set {} --allow-shell on`",
                inst.group, inst.group
            )));
        }
        let version = ctx
            .store
            .task_version(&inst.task, inst.version)?
            .ok_or_else(|| Error::NotFound {
                what: "task version",
                name: format!("{}@{}", inst.task, inst.version),
                hint: "the store is inconsistent; restore from backup",
            })?;
        let (script, env) = match &inst.params {
            Some(p) => (
                params::substitute(&version.job_text, p)?,
                p.env_vars().into_iter().collect(),
            ),
            None => (version.job_text.clone(), HashMap::new()),
        };
        return Ok(Work::Shell { script, env });
    }
    resolve_job(ctx, inst)
}

/// Resolves the instance's job for the agent: parameters substituted, data sources filled in
/// with their secrets opened. A two-group sync resolves into two halves, each with its own
/// side's data source only (checked against its own group), so the reader's agent never
/// receives the target's connection or password, nor the writer's agent the source's.
fn resolve_job(ctx: &Context, inst: &Instance) -> Result<Work> {
    let version = ctx
        .store
        .task_version(&inst.task, inst.version)?
        .ok_or_else(|| Error::NotFound {
            what: "task version",
            name: format!("{}@{}", inst.task, inst.version),
            hint: "the store is inconsistent; restore from backup",
        })?;
    // The values fixed when the instance was created, so a late run or a rerun sees the same.
    let text = match &inst.params {
        Some(resolved) => params::substitute(&version.job_text, resolved)?,
        None => {
            let bizdate = params::parse_bizdate(&inst.bizdate)?;
            params::substitute(&version.job_text, &ParamContext::for_bizdate(bizdate))?
        }
    };
    let mut job = JobSpec::parse(&text)?;
    // Passwords written in the job itself were sealed at submit.
    for s in job.secrets_mut() {
        ctx.secrets.open_one(s)?;
    }
    let workspace = crate::auth::workspace_of(&inst.task);
    if version.writer_group.is_empty() {
        let sources = sources_for(ctx, workspace, job.datasources(), &inst.group)?;
        let resolved = job.resolve(|n| sources.get(n).cloned())?;
        return Ok(Work::Sync(resolved.to_json()));
    }
    let reader = job.reader_half();
    let sources = sources_for(ctx, workspace, reader.datasources(), &inst.group)?;
    let reader = reader.resolve(|n| sources.get(n).cloned())?;
    let writer = job.writer_half();
    let sources = sources_for(ctx, workspace, writer.datasources(), &version.writer_group)?;
    let writer = writer.resolve(|n| sources.get(n).cloned())?;
    Ok(Work::Relay {
        reader: reader.to_json(),
        writer: writer.to_json(),
        writer_group: version.writer_group,
    })
}

/// The catalog data sources `names`, secrets opened, if `group` may use each of them.
fn sources_for(
    ctx: &Context,
    workspace: &str,
    names: Vec<String>,
    group: &str,
) -> Result<HashMap<String, ferry_common::datasource::DataSourceConfig>> {
    let mut sources = HashMap::new();
    for name in names {
        let Some(mut record) = ctx
            .store
            .datasource(&crate::auth::qualify(workspace, &name))?
        else {
            continue; // resolve() reports it by name
        };
        if !record.groups.is_empty() && !record.groups.iter().any(|g| g == group) {
            return Err(Error::FailedPrecondition(format!(
                "data source \"{name}\" may not be used by resource group \"{group}\" (allowed: {})",
                record.groups.join(", ")
            )));
        }
        ctx.secrets.open(&mut record.config)?;
        sources.insert(name, record.config);
    }
    Ok(sources)
}

async fn dispatch(ctx: &Context, inst: &Instance, pick: &Pick) -> Result<()> {
    if !crate::cluster::leading(ctx) {
        // Deposed mid-round: the new leader dispatches.
        return Ok(());
    }
    let (agent_id, session) = (&pick.writer.0, &pick.writer.1);
    let attempt_id = format!("att-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let resolved = resolve(ctx, inst).and_then(|w| match (&w, &pick.reader) {
        (Work::Relay { .. }, None) | (Work::Sync(_) | Work::Shell { .. }, Some(_)) => {
            Err(Error::FailedPrecondition(format!(
                "task {} v{} changed its writer group while the instance waited; rerun it",
                inst.task, inst.version
            )))
        }
        _ => Ok(w),
    });
    let target_agent = if resolved.is_ok() {
        agent_id.as_str()
    } else {
        ""
    };
    let command = match (&pick.reader, &resolved) {
        (Some((reader_id, _)), Ok(_)) => Command::DispatchRelay {
            id: attempt_id.clone(),
            instance_id: inst.id.clone(),
            agent_id: target_agent.to_string(),
            reader_agent_id: reader_id.clone(),
            at_ms: ctx.now_ms(),
        },
        _ => Command::DispatchAttempt {
            id: attempt_id.clone(),
            instance_id: inst.id.clone(),
            agent_id: target_agent.to_string(),
            at_ms: ctx.now_ms(),
        },
    };
    let Applied::Dispatched { fencing_token } = ctx.store.propose(command).await? else {
        return Ok(());
    };
    let work = match resolved {
        Ok(w) => w,
        Err(e) => {
            warn!(attempt = %attempt_id, error = %e, "job cannot be resolved; failing the attempt");
            let applied = ctx
                .store
                .propose(Command::FinishAttempt {
                    id: attempt_id,
                    by: Reporter::Scheduler,
                    fencing_token,
                    state: AttemptState::Failed,
                    stats: Default::default(),
                    error: e.to_string(),
                    at_ms: ctx.now_ms(),
                })
                .await?;
            ctx.announce(&applied);
            return Ok(());
        }
    };
    match &pick.reader {
        Some((reader_id, _)) => {
            info!(attempt = %attempt_id, agent = %agent_id, reader_agent = %reader_id, fencing_token, "dispatched in two legs")
        }
        None => info!(attempt = %attempt_id, agent = %agent_id, fencing_token, "dispatched"),
    }
    if inst.ready_ms > 0 {
        let waited = ctx.now_ms().saturating_sub(inst.ready_ms).max(0) as u64;
        ctx.hub
            .metrics
            .dispatched(std::time::Duration::from_millis(waited));
    }
    ctx.hub.publish(InstanceEvent::Changed {
        instance_id: inst.id.clone(),
    });
    let start = |kind: &str, job_json: String, script: String, env, relay| pb::SchedulerMessage {
        body: Some(pb::scheduler_message::Body::Start(pb::StartAttempt {
            attempt_id: attempt_id.clone(),
            instance_id: inst.id.clone(),
            fencing_token,
            task: inst.task.clone(),
            job_json,
            bizdate: inst.bizdate.clone(),
            kind: kind.to_string(),
            script,
            env,
            relay,
        })),
    };
    let hand = |session: &Session, agent: &str, msg| {
        if session.tx.try_send(Ok(msg)).is_err() {
            // The session closed or filled up under us; the agent's next Hello (or the start
            // timeout) settles the attempt.
            warn!(attempt = %attempt_id, agent = %agent, "could not hand the attempt to the agent's session");
        }
    };
    match work {
        Work::Sync(job) => hand(
            session,
            agent_id,
            start("sync", job, String::new(), HashMap::new(), None),
        ),
        Work::Shell { script, env } => hand(
            session,
            agent_id,
            start("shell", String::new(), script, env, None),
        ),
        Work::Relay {
            reader,
            writer,
            writer_group,
        } => {
            let Some((reader_id, reader_session)) = &pick.reader else {
                return Ok(());
            };
            let leg = |role: &str, peer_agent: &str, peer_group: &str| pb::RelayLeg {
                relay_id: attempt_id.clone(),
                role: role.to_string(),
                peer_agent: peer_agent.to_string(),
                peer_group: peer_group.to_string(),
            };
            hand(
                session,
                agent_id,
                start(
                    "sync",
                    writer,
                    String::new(),
                    HashMap::new(),
                    Some(leg("writer", reader_id, &inst.group)),
                ),
            );
            hand(
                reader_session,
                reader_id,
                start(
                    "sync",
                    reader,
                    String::new(),
                    HashMap::new(),
                    Some(leg("reader", agent_id, &writer_group)),
                ),
            );
        }
    }
    Ok(())
}

/// Ends attempts of `live` the scheduler must give up on: the agent has had no session for
/// longer than the lease, or never reported the attempt started within the start timeout. The
/// agent, if it is still there, is told to stop. Returns the ended attempts' ids.
async fn expire(ctx: &Context, live: &[Attempt]) -> Result<Vec<String>> {
    let now = ctx.now_ms();
    let mut expired = Vec::new();
    for a in live.iter().cloned() {
        if a.agent_id.is_empty() {
            continue;
        }
        let lost = a.agents().find(|agent| {
            ctx.hub
                .lost_for(agent)
                .is_some_and(|lost| lost >= ctx.config.attempt_lease)
        });
        let why = if let Some(agent) = lost {
            let leg = if a.is_reader_leg(agent) {
                " (reader leg)"
            } else if a.reader_agent_id.is_empty() {
                ""
            } else {
                " (writer leg)"
            };
            format!(
                "agent {agent}{leg} was unreachable for more than {}s; the attempt is failed and its late reports will be rejected",
                ctx.config.attempt_lease.as_secs()
            )
        } else if a.state == AttemptState::Dispatched
            && now - a.dispatched_ms >= ctx.config.start_timeout.as_millis() as i64
        {
            format!(
                "agent {} did not start the attempt within {}s of dispatch",
                a.agent_id,
                ctx.config.start_timeout.as_secs()
            )
        } else {
            continue;
        };
        expired.push(a.id.clone());
        give_up(ctx, a, why).await?;
    }
    Ok(expired)
}

/// Fails an attempt by the scheduler's decision and tells its agent to stop it.
pub async fn give_up(ctx: &Context, a: Attempt, why: String) -> Result<()> {
    warn!(attempt = %a.id, instance = %a.instance_id, agent = %a.agent_id, reason = %why, "giving up on the attempt");
    let applied = ctx
        .store
        .propose(Command::FinishAttempt {
            id: a.id.clone(),
            by: Reporter::Scheduler,
            fencing_token: a.fencing_token,
            state: AttemptState::Failed,
            stats: a.stats,
            error: why.clone(),
            at_ms: ctx.now_ms(),
        })
        .await?;
    ctx.announce(&applied);
    Ok(())
}
