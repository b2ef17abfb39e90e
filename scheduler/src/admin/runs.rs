//! Tasks, their instances and logs, in the caller's workspace.

use super::catalog::usable_group;
use super::{AdminApi, EventStream, check_name};
use crate::auth::{Action, Principal, qualify, short, workspace_of};
use crate::convert::instance_info;
use crate::error::{Error, Result};
use crate::hub::InstanceEvent;
use crate::state::command::{Applied, Command};
use crate::state::model::{Instance, Task};
use ferry_common::job::JobSpec;
use ferry_common::params::{self, ParamContext};
use ferry_proto::admin::v1 as pb;
use std::collections::{HashMap, HashSet};
use tokio::sync::{broadcast, mpsc};
use tracing::info;

fn task_info(t: &Task) -> pb::TaskInfo {
    let mut info = pb::TaskInfo::from(t);
    info.name = short(&t.name).to_string();
    info
}

fn require_task(api: &AdminApi, workspace: &str, name: &str) -> Result<Task> {
    api.ctx
        .store
        .task(&qualify(workspace, name))?
        .ok_or_else(|| Error::NotFound {
            what: "task",
            name: name.to_string(),
            hint: "see `ferry task list`",
        })
}

/// The instance, if it belongs to the caller's workspace (others look like they do not exist).
fn require_instance(api: &AdminApi, p: &Principal, id: &str) -> Result<Instance> {
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
        .rev()
        .find(|i| i.task == q)
        .ok_or_else(|| Error::NotFound {
            what: "instance of task",
            name: task.to_string(),
            hint: "run it with `ferry task run`",
        })
}

fn info_of(api: &AdminApi, i: &Instance) -> Result<pb::InstanceInfo> {
    let mut info = instance_info(&api.ctx, i)?;
    info.task = short(&i.task).to_string();
    Ok(info)
}

pub async fn create_task(
    api: &AdminApi,
    p: &Principal,
    req: pb::CreateTaskRequest,
) -> Result<pb::TaskInfo> {
    api.allow(p, Action::Develop, &p.workspace, "CreateTask", &req.name)
        .await?;
    check_name("task", &req.name)?;
    usable_group(api, &req.group, &p.workspace)?;
    params::check(&req.job_json)?;
    // Validate the job as it will run, with parameters standing in for a day.
    let sample = params::substitute(
        &req.job_json,
        &ParamContext::for_bizdate(chrono::Utc::now().date_naive()),
    )?;
    let job = JobSpec::parse(&sample)?;
    let mut known = HashMap::new();
    for name in job.datasources() {
        if let Some(r) = api.ctx.store.datasource(&qualify(&p.workspace, &name))? {
            // A task may only use data sources its group may reach.
            if !r.groups.is_empty() && !r.groups.contains(&req.group) {
                return Err(Error::FailedPrecondition(format!(
                    "data source \"{name}\" may not be used by resource group \"{}\" (allowed: {})",
                    req.group,
                    r.groups.join(", ")
                )));
            }
            known.insert(name, r.config);
        }
    }
    job.resolve(|n| known.get(n).cloned())?;
    let q = qualify(&p.workspace, &req.name);
    let applied = api
        .audited(
            p,
            "CreateTask",
            &req.name,
            Command::CreateTask {
                name: q.clone(),
                group: req.group.clone(),
                job_text: req.job_json,
                agent_labels: req.agent_labels.into_iter().collect(),
                at_ms: api.ctx.now_ms(),
            },
        )
        .await?;
    let version = match applied {
        Applied::TaskVersion(v) => v,
        _ => 0,
    };
    info!(task = %q, version, "task saved");
    let task = api.ctx.store.task(&q)?.ok_or_else(|| {
        Error::Unavailable("task vanished right after it was saved; retry".into())
    })?;
    Ok(task_info(&task))
}

pub async fn list_tasks(
    api: &AdminApi,
    p: &Principal,
    _: pb::ListTasksRequest,
) -> Result<pb::ListTasksResponse> {
    api.allow(p, Action::Read, &p.workspace, "ListTasks", "")
        .await?;
    let tasks = api
        .ctx
        .store
        .tasks()?
        .iter()
        .filter(|t| workspace_of(&t.name) == p.workspace)
        .map(task_info)
        .collect();
    Ok(pb::ListTasksResponse { tasks })
}

pub async fn run_task(
    api: &AdminApi,
    p: &Principal,
    req: pb::RunTaskRequest,
) -> Result<pb::InstanceInfo> {
    api.allow(p, Action::Run, &p.workspace, "RunTask", &req.name)
        .await?;
    let task = require_task(api, &p.workspace, &req.name)?;
    let bizdate = if req.bizdate.trim().is_empty() {
        chrono::DateTime::from_timestamp_millis(api.ctx.now_ms())
            .map(|t| t.date_naive())
            .unwrap_or_default()
            .pred_opt()
            .unwrap_or_default()
    } else {
        params::parse_bizdate(&req.bizdate)?
    };
    let pc = ParamContext::for_bizdate(bizdate);
    let id = format!(
        "ins-{}-{}",
        pc.bizdate.format("%Y%m%d"),
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    api.audited(
        p,
        "RunTask",
        &format!("{} {}", req.name, pc.bizdate.format("%Y%m%d")),
        Command::CreateInstance {
            id: id.clone(),
            task: task.name.clone(),
            bizdate: pc.bizdate.format("%Y%m%d").to_string(),
            cyctime: pc.cyctime.format("%Y%m%d%H%M%S").to_string(),
            at_ms: api.ctx.now_ms(),
        },
    )
    .await?;
    info!(task = %task.name, instance = %id, user = %p.user, "manual run requested");
    api.ctx.hub.dispatch.notify_one();
    let inst = require_instance(api, p, &id)?;
    info_of(api, &inst)
}

pub async fn get_instance(
    api: &AdminApi,
    p: &Principal,
    req: pb::GetInstanceRequest,
) -> Result<pb::InstanceInfo> {
    api.allow(p, Action::Read, &p.workspace, "GetInstance", &req.id)
        .await?;
    let inst = require_instance(api, p, &req.id)?;
    info_of(api, &inst)
}

pub async fn list_instances(
    api: &AdminApi,
    p: &Principal,
    req: pb::ListInstancesRequest,
) -> Result<pb::ListInstancesResponse> {
    api.allow(p, Action::Read, &p.workspace, "ListInstances", "")
        .await?;
    let task = (!req.task.is_empty()).then(|| qualify(&p.workspace, &req.task));
    let mut instances = Vec::new();
    for i in api.ctx.store.instances()? {
        if workspace_of(&i.task) != p.workspace {
            continue;
        }
        if task.as_ref().is_none_or(|t| *t == i.task) {
            instances.push(info_of(api, &i)?);
        }
    }
    Ok(pb::ListInstancesResponse { instances })
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
            let mut info = instance_info(&ctx, inst)?;
            info.task = short(&inst.task).to_string();
            Ok(pb::InstanceEvent {
                body: Some(pb::instance_event::Body::State(info)),
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
    let mut lines = Vec::new();
    for attempt in &inst.attempts {
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
