//! The dispatcher: hands waiting instances to online agents of their resource group, and fails
//! attempts whose agent has been gone longer than the lease.
//!
//! It wakes when something changes (an instance is created, an agent connects, a slot frees) and
//! on a short tick, and it says why an instance still waits, because "it just sits there" is the
//! worst thing a scheduler can show a user.

use crate::context::{Context, now_ms};
use crate::error::{Error, Result};
use crate::hub::InstanceEvent;
use crate::state::command::{Applied, Command};
use crate::state::model::{AttemptState, Instance};
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
        if let Err(e) = tick(&ctx).await {
            warn!(error = %e, "dispatch round failed; retrying");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ctx.hub.dispatch.notified() => {}
            _ = tokio::time::sleep(ctx.config.dispatch_interval) => {}
        }
    }
}

async fn tick(ctx: &Context) -> Result<()> {
    expire_leases(ctx).await?;
    let waiting = ctx.store.waiting_instances()?;
    if waiting.is_empty() {
        return Ok(());
    }
    // Slots in use per agent, from the durable state (dispatched or running attempts).
    let mut busy = ctx.store.running_per_agent()?;
    let agents = ctx.store.agents()?;
    for inst in waiting {
        let span = info_span!("instance", instance = %inst.id, task = %inst.task);
        async {
            let in_group: Vec<_> = agents.iter().filter(|a| a.group == inst.group).collect();
            let online: Vec<_> = in_group
                .iter()
                .filter_map(|a| {
                    ctx.hub
                        .online(&a.id, ctx.config.offline_after)
                        .map(|s| (a.id.clone(), s))
                })
                .collect();
            let free = online.iter().find(|(id, s)| {
                busy.get(id).copied().unwrap_or(0) < s.slots.max(1)
            });
            let Some((agent_id, session)) = free else {
                let reason = if in_group.is_empty() {
                    format!(
                        "resource group \"{}\" has no agents; install one with the command printed by `ferry group create`",
                        inst.group
                    )
                } else if online.is_empty() {
                    format!(
                        "no online agent in resource group \"{}\" ({} registered, all offline); start one",
                        inst.group,
                        in_group.len()
                    )
                } else {
                    format!(
                        "all {} online agents of resource group \"{}\" are busy",
                        online.len(),
                        inst.group
                    )
                };
                if ctx.hub.set_waiting(&inst.id, Some(reason.clone())) {
                    info!(%reason, "instance waits");
                    ctx.hub.publish(InstanceEvent::Changed {
                        instance_id: inst.id.clone(),
                    });
                }
                return Ok::<(), Error>(());
            };
            ctx.hub.set_waiting(&inst.id, None);
            *busy.entry(agent_id.clone()).or_default() += 1;
            dispatch(ctx, &inst, agent_id, &session.tx).await
        }
        .instrument(span)
        .await?;
    }
    Ok(())
}

/// Resolves the instance's job for the agent: parameters substituted, data sources filled in
/// with their secrets opened.
fn resolve_job(ctx: &Context, inst: &Instance) -> Result<String> {
    let version = ctx
        .store
        .task_version(&inst.task, inst.version)?
        .ok_or_else(|| Error::NotFound {
            what: "task version",
            name: format!("{}@{}", inst.task, inst.version),
            hint: "the store is inconsistent; restore from backup",
        })?;
    let bizdate = params::parse_bizdate(&inst.bizdate)?;
    let text = params::substitute(&version.job_text, &ParamContext::for_bizdate(bizdate))?;
    let job = JobSpec::parse(&text)?;
    let mut sources = HashMap::new();
    for name in job.datasources() {
        let Some(mut record) = ctx.store.datasource(&name)? else {
            continue; // resolve() reports it by name
        };
        if !record.groups.is_empty() && !record.groups.contains(&inst.group) {
            return Err(Error::FailedPrecondition(format!(
                "data source \"{name}\" may not be used by resource group \"{}\" (allowed: {})",
                inst.group,
                record.groups.join(", ")
            )));
        }
        ctx.secrets.open(&mut record.config)?;
        sources.insert(name, record.config);
    }
    let resolved = job.resolve(|n| sources.get(n).cloned())?;
    Ok(resolved.to_json())
}

async fn dispatch(
    ctx: &Context,
    inst: &Instance,
    agent_id: &str,
    tx: &crate::hub::SessionTx,
) -> Result<()> {
    let attempt_id = format!("att-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let resolved = resolve_job(ctx, inst);
    let target_agent = if resolved.is_ok() { agent_id } else { "" };
    let Applied::Dispatched { fencing_token } = ctx
        .store
        .propose(Command::DispatchAttempt {
            id: attempt_id.clone(),
            instance_id: inst.id.clone(),
            agent_id: target_agent.to_string(),
            at_ms: now_ms(),
        })
        .await?
    else {
        return Ok(());
    };
    let job_json = match resolved {
        Ok(j) => j,
        Err(e) => {
            warn!(attempt = %attempt_id, error = %e, "job cannot be resolved; failing the attempt");
            ctx.store
                .propose(Command::FinishAttempt {
                    id: attempt_id,
                    fencing_token,
                    state: AttemptState::Failed,
                    stats: Default::default(),
                    error: e.to_string(),
                    at_ms: now_ms(),
                })
                .await?;
            ctx.hub.publish(InstanceEvent::Changed {
                instance_id: inst.id.clone(),
            });
            return Ok(());
        }
    };
    info!(attempt = %attempt_id, agent = %agent_id, fencing_token, "dispatched");
    ctx.hub.publish(InstanceEvent::Changed {
        instance_id: inst.id.clone(),
    });
    let start = pb::SchedulerMessage {
        body: Some(pb::scheduler_message::Body::Start(pb::StartAttempt {
            attempt_id: attempt_id.clone(),
            instance_id: inst.id.clone(),
            fencing_token,
            task: inst.task.clone(),
            job_json,
            bizdate: inst.bizdate.clone(),
        })),
    };
    if tx.send(Ok(start)).await.is_err() {
        // The session closed under us; the agent's next Hello (or the lease) settles the attempt.
        warn!(attempt = %attempt_id, agent = %agent_id, "session closed before the attempt was sent");
    }
    Ok(())
}

/// Fails attempts whose agent has had no session for longer than the lease.
async fn expire_leases(ctx: &Context) -> Result<()> {
    for a in ctx.store.live_attempts()? {
        if a.agent_id.is_empty() {
            continue;
        }
        let Some(lost) = ctx.hub.lost_for(&a.agent_id) else {
            continue;
        };
        if lost < ctx.config.attempt_lease {
            continue;
        }
        warn!(attempt = %a.id, instance = %a.instance_id, agent = %a.agent_id, "agent lost past the lease; failing the attempt");
        let applied = ctx
            .store
            .propose(Command::FinishAttempt {
                id: a.id.clone(),
                fencing_token: a.fencing_token,
                state: AttemptState::Failed,
                stats: a.stats,
                error: format!(
                    "agent {} was unreachable for more than {}s; the attempt is failed and its late reports will be rejected",
                    a.agent_id,
                    ctx.config.attempt_lease.as_secs()
                ),
                at_ms: now_ms(),
            })
            .await?;
        if applied == Applied::Done {
            ctx.hub.publish(InstanceEvent::Changed {
                instance_id: a.instance_id,
            });
        }
    }
    Ok(())
}
