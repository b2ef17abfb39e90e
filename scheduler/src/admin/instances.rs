//! Instances: list, show, follow, logs, and the operator's actions — rerun (with downstream),
//! kill, freeze, mark success, backfill. The DAG around them is in [`super::dag`].

use super::tasks::require_task;
use super::{AdminApi, EventStream};
use crate::auth::{Action, Principal, qualify, short, workspace_of};
use crate::convert::instance_info;
use crate::error::{Error, Result};
use crate::generate;
use crate::hub::InstanceEvent;
use crate::state::ListQuery;
use crate::state::command::Command;
use crate::state::model::{Instance, InstanceState};
use ferry_common::params;
use ferry_proto::admin::v1 as pb;
use std::collections::{BTreeSet, HashSet};
use tokio::sync::{broadcast, mpsc};
use tracing::info;

/// The instance, if it belongs to the caller's workspace (others look like they do not exist).
pub(super) fn require_instance(api: &AdminApi, p: &Principal, id: &str) -> Result<Instance> {
    api.ctx
        .store
        .instance(id)?
        .filter(|i| workspace_of(&i.task) == p.workspace)
        .ok_or_else(|| Error::NotFound {
            what: "instance",
            name: id.to_string(),
            hint: "see `ferry instance list`",
        })
}

fn latest_instance_of(api: &AdminApi, p: &Principal, task: &str) -> Result<Instance> {
    let q = qualify(&p.workspace, task);
    api.ctx
        .store
        .instances()?
        .into_iter()
        .filter(|i| i.task == q && !i.attempts.is_empty())
        .max_by_key(|i| i.history.last().map(|t| t.at_ms).unwrap_or(i.created_ms))
        .ok_or_else(|| Error::NotFound {
            what: "instance of task",
            name: task.to_string(),
            hint: "run it with `ferry task run`",
        })
}

pub async fn get_instance(
    api: &AdminApi,
    p: &Principal,
    req: pb::GetInstanceRequest,
) -> Result<pb::InstanceInfo> {
    api.allow(p, Action::Read, &p.workspace, "GetInstance", &req.id)
        .await?;
    let inst = require_instance(api, p, &req.id)?;
    instance_info(&api.ctx, &inst)
}

/// Rows a list answers when the caller does not say (0), and at most.
const DEFAULT_LIMIT: u32 = 1000;
const MAX_LIMIT: u32 = 100_000;

/// A page of the workspace's instances from the listing indexes (`state::listing`): only the
/// page's records are decoded, so a page of a 100,000-instance day costs what a page costs.
pub async fn list_instances(
    api: &AdminApi,
    p: &Principal,
    req: pb::ListInstancesRequest,
) -> Result<pb::ListInstancesResponse> {
    api.allow(p, Action::Read, &p.workspace, "ListInstances", "")
        .await?;
    let state = match req.state.as_str() {
        "" => None,
        s => Some(InstanceState::parse(s).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "\"{s}\" is not an instance state; use one of {}",
                InstanceState::ALL.map(|s| s.as_str()).join(", ")
            ))
        })?),
    };
    let bizdate = match req.bizdate.as_str() {
        "" => None,
        d => Some(params::parse_bizdate(d)?.format("%Y%m%d").to_string()),
    };
    let after = match req.page_token.as_str() {
        "" => None,
        t => Some(page_place(t)?),
    };
    let limit = match req.limit {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    };
    let query = ListQuery {
        workspace: p.workspace.clone(),
        bizdate,
        task: (!req.task.is_empty()).then(|| qualify(&p.workspace, &req.task)),
        search: req.search,
        state,
        group: (!req.group.is_empty()).then_some(req.group),
        after,
        offset: req.offset as usize,
        limit: limit as usize,
        descending: req.descending,
    };
    let page = api.ctx.store.list_instances(&query)?;
    let mut instances = Vec::with_capacity(page.ids.len());
    for id in &page.ids {
        // Gone between the index read and this one only if the store is inconsistent.
        if let Some(i) = api.ctx.store.instance(id)? {
            instances.push(instance_info(&api.ctx, &i)?);
        }
    }
    let count = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    Ok(pb::ListInstancesResponse {
        instances,
        total: count(page.total),
        counts: InstanceState::ALL
            .into_iter()
            .map(|s| {
                (
                    s.as_str().to_string(),
                    count(page.counts.get(&s).copied().unwrap_or(0)),
                )
            })
            .collect(),
        next_page_token: page
            .next
            .map(|place| hex::encode(place.as_bytes()))
            .unwrap_or_default(),
    })
}

/// The place a page token names (the hex of the last row's place: opaque to callers).
fn page_place(token: &str) -> Result<String> {
    hex::decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|p| p.split('|').count() == 4)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "page token \"{token}\" is not one this scheduler gave; start from the first page"
            ))
        })
}

fn log_event(
    attempt: &str,
    index: u64,
    ts_ms: i64,
    level: String,
    message: String,
) -> pb::InstanceEvent {
    pb::InstanceEvent {
        body: Some(pb::instance_event::Body::Log(pb::LogLine {
            attempt_id: attempt.to_string(),
            index,
            ts_ms,
            level,
            message,
        })),
    }
}

/// The current state and stored log, then every change, progress report and log line until
/// the instance ends.
pub async fn watch_instance(
    api: &AdminApi,
    p: &Principal,
    req: pb::GetInstanceRequest,
) -> Result<EventStream> {
    api.allow(p, Action::Read, &p.workspace, "WatchInstance", &req.id)
        .await?;
    let id = req.id;
    // Subscribe before reading the current state so no event falls in between.
    let mut events = api.ctx.hub.subscribe();
    let inst = require_instance(api, p, &id)?;
    let ctx = api.ctx.clone();
    let (tx, rx) = mpsc::channel::<Result<pb::InstanceEvent, tonic::Status>>(256);
    tokio::spawn(async move {
        let mut seen: HashSet<(String, u64)> = HashSet::new();
        let state_of = |inst: &Instance| -> Result<pb::InstanceEvent> {
            Ok(pb::InstanceEvent {
                body: Some(pb::instance_event::Body::State(instance_info(&ctx, inst)?)),
            })
        };
        let mut out: Vec<pb::InstanceEvent> = Vec::new();
        match state_of(&inst) {
            Ok(ev) => out.push(ev),
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        }
        for attempt in &inst.attempts {
            for line in ctx.store.logs(attempt).unwrap_or_default() {
                seen.insert((attempt.clone(), line.index));
                out.push(log_event(
                    attempt,
                    line.index,
                    line.ts_ms,
                    line.level,
                    line.message,
                ));
            }
        }
        for ev in out {
            if tx.send(Ok(ev)).await.is_err() {
                return;
            }
        }
        if inst.state.is_final() {
            return;
        }
        loop {
            let ev = match events.recv().await {
                Ok(ev) => ev,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(skipped = n, "watcher lagged");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if ev.instance_id() != id {
                continue;
            }
            let out = match ev {
                InstanceEvent::Changed { .. } => {
                    let Ok(Some(now)) = ctx.store.instance(&id) else {
                        return;
                    };
                    let ev = match state_of(&now) {
                        Ok(ev) => ev,
                        Err(_) => return,
                    };
                    if now.state.is_final() {
                        // Flush any stored log line the watcher has not seen, then end.
                        let _ = tx.send(Ok(ev)).await;
                        for attempt in &now.attempts {
                            for line in ctx.store.logs(attempt).unwrap_or_default() {
                                if seen.insert((attempt.clone(), line.index)) {
                                    let _ = tx
                                        .send(Ok(log_event(
                                            attempt,
                                            line.index,
                                            line.ts_ms,
                                            line.level,
                                            line.message,
                                        )))
                                        .await;
                                }
                            }
                        }
                        return;
                    }
                    ev
                }
                InstanceEvent::Progress { stats, .. } => pb::InstanceEvent {
                    body: Some(pb::instance_event::Body::Progress(stats.into())),
                },
                InstanceEvent::Log {
                    attempt_id,
                    index,
                    ts_ms,
                    level,
                    message,
                    ..
                } => {
                    if !seen.insert((attempt_id.clone(), index)) {
                        continue;
                    }
                    log_event(&attempt_id, index, ts_ms, level, message)
                }
            };
            if tx.send(Ok(out)).await.is_err() {
                return;
            }
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

pub async fn get_logs(
    api: &AdminApi,
    p: &Principal,
    req: pb::GetLogsRequest,
) -> Result<pb::GetLogsResponse> {
    api.allow(p, Action::Read, &p.workspace, "GetLogs", &req.instance)
        .await?;
    let inst = if !req.instance.is_empty() {
        require_instance(api, p, &req.instance)?
    } else if !req.task.is_empty() {
        latest_instance_of(api, p, &req.task)?
    } else {
        return Err(Error::InvalidArgument("name an instance or a task".into()));
    };
    if !req.attempt.is_empty() && !inst.attempts.contains(&req.attempt) {
        return Err(Error::NotFound {
            what: "attempt of the instance",
            name: req.attempt,
            hint: "`ferry instance show` lists its attempts",
        });
    }
    let mut lines = Vec::new();
    for attempt in inst
        .attempts
        .iter()
        .filter(|a| req.attempt.is_empty() || **a == req.attempt)
    {
        for l in api.ctx.store.logs(attempt)? {
            lines.push(pb::LogLine {
                attempt_id: attempt.clone(),
                index: l.index,
                ts_ms: l.ts_ms,
                level: l.level,
                message: l.message,
            });
        }
    }
    Ok(pb::GetLogsResponse {
        instance_id: inst.id,
        lines,
    })
}

pub async fn rerun_instance(
    api: &AdminApi,
    p: &Principal,
    req: pb::RerunInstanceRequest,
) -> Result<pb::RerunInstanceResponse> {
    api.allow(p, Action::Operate, &p.workspace, "RerunInstance", &req.id)
        .await?;
    let inst = require_instance(api, p, &req.id)?;
    let mut ids = vec![inst.id.clone()];
    if req.downstream {
        ids.extend(api.ctx.store.downstream_closure(&inst.id)?);
    }
    // Refuse the whole rerun, with every reason, rather than run part of it.
    let mut problems = Vec::new();
    for id in &ids {
        let Some(i) = api.ctx.store.instance(id)? else {
            continue;
        };
        if !i.state.is_final() {
            problems.push(format!(
                "{} is {}{}",
                short(&i.id),
                i.state.as_str(),
                if i.state.is_active() {
                    " (kill it first)"
                } else {
                    ""
                }
            ));
        } else if let Some(why) = api.ctx.store.rerun_refusal(&i)? {
            problems.push(why);
        }
    }
    if !problems.is_empty() {
        return Err(Error::FailedPrecondition(format!(
            "cannot rerun: {}",
            problems.join("; ")
        )));
    }
    let applied = api
        .audited(
            p,
            "RerunInstance",
            &req.id,
            Command::Rerun {
                ids: ids.clone(),
                reason: format!(
                    "rerun by {}{}",
                    p.user,
                    if req.downstream {
                        " (with downstream)"
                    } else {
                        ""
                    }
                ),
                at_ms: api.ctx.now_ms(),
            },
        )
        .await?;
    api.ctx.announce(&applied);
    info!(instance = %req.id, count = ids.len(), user = %p.user, "rerun");
    Ok(pb::RerunInstanceResponse { ids })
}

pub async fn kill_instance(
    api: &AdminApi,
    p: &Principal,
    req: pb::InstanceActionRequest,
) -> Result<pb::InstanceInfo> {
    api.allow(p, Action::Operate, &p.workspace, "KillInstance", &req.id)
        .await?;
    require_instance(api, p, &req.id)?;
    let applied = api
        .audited(
            p,
            "KillInstance",
            &req.id,
            Command::KillInstance {
                id: req.id.clone(),
                reason: format!("killed by {}", p.user),
                at_ms: api.ctx.now_ms(),
            },
        )
        .await?;
    api.ctx.announce(&applied);
    instance_info(&api.ctx, &require_instance(api, p, &req.id)?)
}

pub async fn freeze_instance(
    api: &AdminApi,
    p: &Principal,
    req: pb::FreezeInstanceRequest,
) -> Result<pb::InstanceInfo> {
    let call = if req.freeze {
        "FreezeInstance"
    } else {
        "UnfreezeInstance"
    };
    api.allow(p, Action::Operate, &p.workspace, call, &req.id)
        .await?;
    let inst = require_instance(api, p, &req.id)?;
    if req.freeze && !inst.state.is_waiting() {
        return Err(Error::FailedPrecondition(format!(
            "instance {} is {}: only a waiting instance can be frozen",
            req.id,
            inst.state.as_str()
        )));
    }
    if !req.freeze && inst.state != InstanceState::Frozen {
        return Err(Error::FailedPrecondition(format!(
            "instance {} is {}, not frozen",
            req.id,
            inst.state.as_str()
        )));
    }
    let applied = api
        .audited(
            p,
            call,
            &req.id,
            Command::Freeze {
                ids: vec![req.id.clone()],
                freeze: req.freeze,
                reason: format!(
                    "{} by {}",
                    if req.freeze { "frozen" } else { "unfrozen" },
                    p.user
                ),
                at_ms: api.ctx.now_ms(),
            },
        )
        .await?;
    api.ctx.announce(&applied);
    instance_info(&api.ctx, &require_instance(api, p, &req.id)?)
}

pub async fn mark_success(
    api: &AdminApi,
    p: &Principal,
    req: pb::InstanceActionRequest,
) -> Result<pb::InstanceInfo> {
    api.allow(p, Action::Operate, &p.workspace, "MarkSuccess", &req.id)
        .await?;
    require_instance(api, p, &req.id)?;
    let applied = api
        .audited(
            p,
            "MarkSuccess",
            &req.id,
            Command::MarkSuccess {
                id: req.id.clone(),
                reason: format!("marked success by {}", p.user),
                at_ms: api.ctx.now_ms(),
            },
        )
        .await?;
    api.ctx.announce(&applied);
    instance_info(&api.ctx, &require_instance(api, p, &req.id)?)
}

pub async fn backfill(
    api: &AdminApi,
    p: &Principal,
    req: pb::BackfillRequest,
) -> Result<pb::BackfillResponse> {
    api.allow(p, Action::Operate, &p.workspace, "Backfill", &req.task)
        .await?;
    let task = require_task(api, &p.workspace, &req.task)?;
    let from = params::parse_bizdate(&req.from)?;
    let to = params::parse_bizdate(&req.to)?;
    if to < from {
        return Err(Error::InvalidArgument(format!(
            "--to {to} is before --from {from}"
        )));
    }
    let mut days = Vec::new();
    let mut d = from;
    while d <= to {
        days.push(d);
        if days.len() > 3660 {
            return Err(Error::InvalidArgument(
                "a backfill covers at most ten years; split it".into(),
            ));
        }
        d = d.succ_opt().unwrap_or(d);
        if d == from {
            break;
        }
    }
    let tasks: BTreeSet<String> = if req.downstream {
        generate::downstream_tasks(&api.ctx.store, &task.name)?
            .into_iter()
            .filter(|t| workspace_of(t) == p.workspace)
            .collect()
    } else {
        BTreeSet::from([task.name.clone()])
    };
    let id = format!("bf-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let now = api.ctx.now_ms();
    let (bf, instances) = generate::plan_backfill(
        &api.ctx.store,
        &generate::BackfillSpec {
            id: &id,
            root: &task.name,
            tasks: &tasks,
            days: &days,
            downstream: req.downstream,
            parallelism: req.parallelism.max(1),
            now_ms: now,
            who: &p.user,
        },
    )?;
    let count = instances.len() as u32;
    let applied = api
        .audited(
            p,
            "Backfill",
            &format!(
                "{} {}..{}",
                req.task,
                from.format("%Y%m%d"),
                to.format("%Y%m%d")
            ),
            Command::CreateBackfill {
                backfill: bf.clone(),
                instances,
                at_ms: now,
            },
        )
        .await?;
    api.ctx.announce(&applied);
    info!(backfill = %id, task = %task.name, days = days.len(), instances = count, "backfill created");
    Ok(pb::BackfillResponse {
        id,
        days: bf.days,
        instances: count,
    })
}
