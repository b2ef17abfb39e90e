//! Tasks: submitting versions (job, schedule, dependencies, parameters, policies), listing,
//! freezing, running one for a business date now, and wizard mode (the job written from two
//! tables' columns), which lives here so the CLI and the console get the same job from one
//! logic.

use super::catalog::{require_datasource, test_data_source, usable_group};
use super::{AdminApi, check_name};
use crate::auth::{Action, Principal, qualify, workspace_of};
use crate::convert::{instance_info, task_info};
use crate::error::{Error, Result};
use crate::generate;
use crate::plan::{NodeSchedule, validate_graph};
use crate::state::command::{Applied, Command};
use crate::state::model::{DependencySpec, RerunPolicy, ScheduleSpec, Task, TaskKind, TaskVersion};
use chrono::NaiveDate;
use ferry_common::job::JobSpec;
use ferry_common::job::wizard::{self, Column, Options, Side};
use ferry_common::params::{self, ParamContext, ParamDefs};
use ferry_common::schedule::CronSchedule;
use ferry_proto::admin::v1 as pb;
use std::collections::HashMap;
use tracing::info;

pub(super) fn require_task(api: &AdminApi, workspace: &str, name: &str) -> Result<Task> {
    api.ctx
        .store
        .task(&qualify(workspace, name))?
        .ok_or_else(|| Error::NotFound {
            what: "task",
            name: name.to_string(),
            hint: "see `ferry task list`",
        })
}

fn version_of(api: &AdminApi, t: &Task) -> Result<TaskVersion> {
    api.ctx
        .store
        .task_version(&t.name, t.version)?
        .ok_or_else(|| Error::Unavailable(format!("task {} has no version {}", t.name, t.version)))
}

fn date(text: &str, what: &str) -> Result<Option<NaiveDate>> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    params::parse_bizdate(text).map(Some).map_err(|_| {
        Error::InvalidArgument(format!("{what} \"{text}\" is not a date (yyyy-mm-dd)"))
    })
}

/// Checks a sync job as it will run: parameters resolved for a sample day, data sources of the
/// workspace found, and each one usable by the task's group.
/// Checks a sync job: it parses, its data sources exist and fit, and each may be used by the
/// group that will open it (the reader's by `group`, the writer's by `writer_group`, which is
/// `group` too unless the task names a writer group).
fn check_job(
    api: &AdminApi,
    workspace: &str,
    group: &str,
    writer_group: &str,
    text: &str,
    defs: &ParamDefs,
) -> Result<()> {
    let sample = params::resolve(
        defs,
        &ParamContext::for_bizdate(
            chrono::DateTime::from_timestamp_millis(api.ctx.now_ms())
                .map(|t| t.date_naive())
                .unwrap_or_default(),
        ),
    )?;
    let job = JobSpec::parse(&params::substitute(text, &sample)?)?;
    let mut known = HashMap::new();
    let sides = job
        .reader_datasource()
        .map(|n| (n, group))
        .into_iter()
        .chain(job.writer_datasource().map(|n| (n, writer_group)));
    for (name, group) in sides {
        if let Some(r) = api.ctx.store.datasource(&qualify(workspace, &name))? {
            if !r.groups.is_empty() && !r.groups.iter().any(|g| g == group) {
                return Err(Error::FailedPrecondition(format!(
                    "data source \"{name}\" may not be used by resource group \"{group}\" (allowed: {})",
                    r.groups.join(", ")
                )));
            }
            known.insert(name, r.config);
        }
    }
    job.resolve(|n| known.get(n).cloned())?;
    Ok(())
}

/// Checks the node graph with `spec` in it. A new task has no downstream yet (an upstream must
/// exist when a task names it), so it cannot close a cycle nor leave a scheduled task waiting on
/// a manual one: only its own upstreams need looking at, which keeps submitting the 20,000th task
/// as cheap as the first. A new version of an existing task is checked against the whole graph.
fn check_graph(api: &AdminApi, spec: crate::plan::NodeSpec) -> Result<()> {
    let store = &api.ctx.store;
    if store.task(&spec.name)?.is_some() {
        let (mut specs, _) = generate::nodes(store)?;
        specs.retain(|n| n.name != spec.name);
        specs.push(spec);
        validate_graph(&specs)?;
        return Ok(());
    }
    if matches!(spec.schedule, NodeSchedule::Manual) {
        return Ok(());
    }
    for d in spec.dependencies.iter().filter(|d| d.upstream != spec.name) {
        let upstream = store
            .task(&d.upstream)?
            .and_then(|t| store.task_version(&t.name, t.version).ok().flatten());
        match upstream {
            None => {
                return Err(ferry_common::Error::UnknownUpstream {
                    node: spec.name.clone(),
                    upstream: d.upstream.clone(),
                }
                .into());
            }
            Some(v) if v.schedule.is_none() => {
                return Err(ferry_common::Error::ManualUpstream {
                    node: spec.name.clone(),
                    upstream: d.upstream.clone(),
                }
                .into());
            }
            Some(_) => {}
        }
    }
    Ok(())
}

pub async fn create_task(
    api: &AdminApi,
    p: &Principal,
    req: pb::CreateTaskRequest,
) -> Result<pb::TaskInfo> {
    api.allow(p, Action::Develop, &p.workspace, "CreateTask", &req.name)
        .await?;
    check_name("task", &req.name)?;
    let ws = p.workspace.clone();
    let group = usable_group(api, &req.group, &ws)?;
    let kind = TaskKind::parse(&req.kind).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "task type \"{}\" is not sync, shell or virtual",
            req.kind
        ))
    })?;
    if kind == TaskKind::Shell && !group.allow_shell {
        return Err(Error::FailedPrecondition(format!(
            "resource group \"{}\" does not run shell tasks; a cluster admin can allow them with `ferry group set {} --allow-shell on`",
            group.name, group.name
        )));
    }
    let schedule = if req.cron.trim().is_empty() {
        None
    } else {
        let timezone = if req.timezone.is_empty() {
            "UTC".to_string()
        } else {
            req.timezone.clone()
        };
        CronSchedule::parse(&req.cron, &timezone)?;
        Some(ScheduleSpec {
            cron: req.cron.trim().to_string(),
            timezone,
        })
    };
    let defs = ParamDefs::parse(&req.params)?;
    params::check_with(&req.job_json, &defs)?;
    let writer_group = req.writer_group.trim();
    if !writer_group.is_empty() {
        if kind != TaskKind::Sync {
            return Err(Error::InvalidArgument(format!(
                "only sync tasks have a writer group; a {} task runs in its group \"{}\" alone",
                kind.as_str(),
                group.name
            )));
        }
        if writer_group == group.name {
            return Err(Error::InvalidArgument(format!(
                "the writer group is the task's own group \"{writer_group}\"; leave --writer-group out (one agent runs reader and writer)"
            )));
        }
        usable_group(api, writer_group, &ws)?;
    }
    let writer_group = writer_group.to_string();
    let job_writer_group = if writer_group.is_empty() {
        group.name.clone()
    } else {
        writer_group.clone()
    };
    match kind {
        TaskKind::Sync => check_job(
            api,
            &ws,
            &group.name,
            &job_writer_group,
            &req.job_json,
            &defs,
        )?,
        TaskKind::Shell if req.job_json.trim().is_empty() => {
            return Err(Error::InvalidArgument(
                "a shell task needs a script (--file)".into(),
            ));
        }
        _ => {}
    }
    let q = qualify(&ws, &req.name);
    let mut dependencies = Vec::new();
    for d in &req.dependencies {
        let upstream = qualify(&ws, &d.upstream);
        if upstream == q && !d.previous {
            return Err(Error::InvalidArgument(format!(
                "task {} cannot wait for its own same cycle; use a previous-cycle dependency (--after-previous {})",
                req.name, req.name
            )));
        }
        if upstream != q && api.ctx.store.task(&upstream)?.is_none() {
            return Err(Error::NotFound {
                what: "upstream task",
                name: d.upstream.clone(),
                hint: "submit it first; see `ferry task list`",
            });
        }
        dependencies.push(DependencySpec {
            upstream,
            previous: d.previous,
        });
    }
    let rerun = RerunPolicy::parse(&req.rerun).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "rerun policy \"{}\" is not always, only_after_failure or never",
            req.rerun
        ))
    })?;
    // Passwords written inline are sealed like catalog ones before they are stored.
    let job_text = match api.ctx.secrets.seal_job_text(&req.job_json)? {
        Some(sealed) => sealed,
        None => req.job_json,
    };
    let version = TaskVersion {
        task: q.clone(),
        version: 0,
        group: group.name.clone(),
        job_text,
        created_ms: 0,
        agent_labels: req.agent_labels.into_iter().collect(),
        writer_group,
        kind,
        schedule,
        start_date: date(&req.start_date, "start date")?,
        end_date: date(&req.end_date, "end date")?,
        priority: req.priority,
        timeout_secs: req.timeout_secs,
        dependencies,
        params: defs.to_string(),
        rerun,
        retries: req.retries,
        retry_interval_secs: req.retry_interval_secs,
    };
    // The whole graph with this version in it: an unknown upstream or a cycle is refused now,
    // with the path that closes it.
    let now = api.ctx.now_ms();
    let first_day = version
        .schedule
        .as_ref()
        .and_then(|s| generate::first_day(now, &s.timezone));
    let probe = Task {
        name: q.clone(),
        group: group.name.clone(),
        version: 0,
        updated_ms: now,
        agent_labels: Default::default(),
        frozen: false,
        first_day,
        last_submit: String::new(),
    };
    let spec = generate::node_spec(&probe, &version)?;
    match check_graph(api, spec) {
        Err(Error::Job(e)) => {
            let message = e.to_string().replace(&format!("{ws}/"), "");
            return Err(Error::InvalidArgument(message));
        }
        Err(e) => return Err(e),
        Ok(()) => {}
    }
    let applied = api
        .audited(
            p,
            "CreateTask",
            &req.name,
            Command::SubmitTask {
                version,
                submit_id: uuid::Uuid::new_v4().to_string(),
                first_day,
                at_ms: now,
            },
        )
        .await?;
    let number = match applied {
        Applied::TaskVersion(v) => v,
        _ => 0,
    };
    info!(task = %q, version = number, "task submitted");
    let generated = if req.generate_now {
        generate::generate_now(&api.ctx, &q).await? as u32
    } else {
        0
    };
    let task = api.ctx.store.task(&q)?.ok_or_else(|| {
        Error::Unavailable("task vanished right after it was saved; retry".into())
    })?;
    let v = version_of(api, &task)?;
    Ok(pb::TaskInfo {
        generated_now: generated,
        ..task_info(&task, Some(&v))
    })
}

pub async fn list_tasks(
    api: &AdminApi,
    p: &Principal,
    _: pb::ListTasksRequest,
) -> Result<pb::ListTasksResponse> {
    api.allow(p, Action::Read, &p.workspace, "ListTasks", "")
        .await?;
    let mut tasks = Vec::new();
    for t in api.ctx.store.tasks()? {
        if workspace_of(&t.name) == p.workspace {
            let v = api.ctx.store.task_version(&t.name, t.version)?;
            tasks.push(task_info(&t, v.as_ref()));
        }
    }
    Ok(pb::ListTasksResponse { tasks })
}

pub async fn get_task(
    api: &AdminApi,
    p: &Principal,
    req: pb::GetTaskRequest,
) -> Result<pb::TaskInfo> {
    api.allow(p, Action::Read, &p.workspace, "GetTask", &req.name)
        .await?;
    let t = require_task(api, &p.workspace, &req.name)?;
    let v = version_of(api, &t)?;
    Ok(task_info(&t, Some(&v)))
}

pub async fn freeze_task(
    api: &AdminApi,
    p: &Principal,
    req: pb::FreezeTaskRequest,
) -> Result<pb::TaskInfo> {
    let call = if req.freeze {
        "FreezeTask"
    } else {
        "UnfreezeTask"
    };
    api.allow(p, Action::Operate, &p.workspace, call, &req.name)
        .await?;
    let t = require_task(api, &p.workspace, &req.name)?;
    let applied = api
        .audited(
            p,
            call,
            &req.name,
            Command::SetTaskFrozen {
                task: t.name.clone(),
                frozen: req.freeze,
                at_ms: api.ctx.now_ms(),
            },
        )
        .await?;
    api.ctx.announce(&applied);
    let t = require_task(api, &p.workspace, &req.name)?;
    let v = version_of(api, &t)?;
    Ok(task_info(&t, Some(&v)))
}

pub async fn run_task(
    api: &AdminApi,
    p: &Principal,
    req: pb::RunTaskRequest,
) -> Result<pb::InstanceInfo> {
    api.allow(p, Action::Run, &p.workspace, "RunTask", &req.name)
        .await?;
    let task = require_task(api, &p.workspace, &req.name)?;
    let v = version_of(api, &task)?;
    let now = api.ctx.now_ms();
    let bizdate = if req.bizdate.trim().is_empty() {
        chrono::DateTime::from_timestamp_millis(now)
            .map(|t| t.date_naive())
            .unwrap_or_default()
            .pred_opt()
            .unwrap_or_default()
    } else {
        params::parse_bizdate(&req.bizdate)?
    };
    let instance = generate::manual_instance(&v, bizdate, now, &p.user)?;
    let id = instance.id.clone();
    if let Some(existing) = api.ctx.store.instance(&id)?
        && existing.state.is_final()
        && let Some(why) = api.ctx.store.rerun_refusal(&existing)?
    {
        return Err(Error::FailedPrecondition(why));
    }
    let applied = api
        .audited(
            p,
            "RunTask",
            &format!("{} {}", req.name, bizdate.format("%Y%m%d")),
            Command::RunTask {
                instance,
                at_ms: now,
            },
        )
        .await?;
    api.ctx.announce(&applied);
    let (id, joined) = match applied {
        Applied::Joined(other) => (other, true),
        _ => (id, false),
    };
    info!(task = %task.name, instance = %id, joined, user = %p.user, "manual run requested");
    api.ctx.hub.dispatch.notify_one();
    let inst = api
        .ctx
        .store
        .instance(&id)?
        .ok_or_else(|| Error::NotFound {
            what: "instance",
            name: id.clone(),
            hint: "see `ferry instance list`",
        })?;
    Ok(pb::InstanceInfo {
        joined,
        ..instance_info(&api.ctx, &inst)?
    })
}

/// The columns of `side`'s table as the first agent of `group` that reads them sees them
/// (through the connectivity test, so the same group rules and time-outs apply).
async fn describe(
    api: &AdminApi,
    p: &Principal,
    group: &str,
    side: &Side,
    access: &str,
) -> Result<Vec<Column>> {
    let r = test_data_source(
        api,
        p,
        pb::TestDataSourceRequest {
            name: side.datasource.clone(),
            group: group.to_string(),
            timeout_ms: 0,
            inline: None,
            table: side.table.clone(),
            access: access.into(),
            describe: true,
        },
    )
    .await?;
    match r
        .reports
        .iter()
        .find(|x| x.reachable && !x.columns.is_empty())
    {
        Some(x) => Ok(x
            .columns
            .iter()
            .map(|c| Column {
                name: c.name.clone(),
                type_name: c.r#type.clone(),
                nullable: c.nullable,
                primary_key: c.primary_key,
            })
            .collect()),
        None => {
            let why: Vec<String> = r
                .reports
                .iter()
                .map(|x| format!("{}: {} {}", x.agent_id, x.error_kind, x.message))
                .collect();
            Err(Error::FailedPrecondition(format!(
                "no agent of group {group} could read the columns of {}.{}: {}",
                side.datasource,
                side.table,
                why.join("; ")
            )))
        }
    }
}

fn column_info(c: &Column) -> pb::ColumnInfo {
    pb::ColumnInfo {
        name: c.name.clone(),
        r#type: c.type_name.clone(),
        nullable: c.nullable,
        primary_key: c.primary_key,
    }
}

/// Wizard mode: both tables described by agents, the mapping proposed, the job written.
pub async fn wizard_script(
    api: &AdminApi,
    p: &Principal,
    req: pb::WizardScriptRequest,
) -> Result<pb::WizardScriptResponse> {
    let target = format!("{} -> {}", req.from, req.to);
    api.allow(p, Action::Develop, &p.workspace, "WizardScript", &target)
        .await?;
    let side = |text: &str| -> Result<Side> {
        let (ds, _) = text
            .split_once('.')
            .ok_or_else(|| Error::InvalidArgument(format!("\"{text}\" is not datasource.table")))?;
        let record = require_datasource(api, &p.workspace, ds)?;
        Ok(Side::parse(text, record.config.kind())?)
    };
    let (src, dst) = (side(&req.from)?, side(&req.to)?);
    let writer_group = if req.writer_group.trim().is_empty() {
        req.group.as_str()
    } else {
        req.writer_group.trim()
    };
    let src_cols = describe(api, p, &req.group, &src, "read").await?;
    let dst_cols = describe(api, p, writer_group, &dst, "write").await?;
    let mapping = wizard::map_columns(&src_cols, &dst_cols, &req.columns)?;
    let opts = Options {
        columns: req.columns,
        where_clause: Some(req.where_clause).filter(|w| !w.trim().is_empty()),
        write_mode: Some(req.write_mode).filter(|w| !w.trim().is_empty()),
        channels: Some(req.channels).filter(|&n| n > 0),
        pre_sql: req
            .pre_sql
            .into_iter()
            .filter(|s| !s.trim().is_empty())
            .collect(),
    };
    let job = wizard::build(&src, &src_cols, &dst, &mapping, &opts)?;
    let type_of = |cols: &[Column], name: &str| {
        cols.iter()
            .find(|c| c.name == name)
            .map(|c| c.type_name.clone())
            .unwrap_or_default()
    };
    info!(from = %req.from, to = %req.to, columns = mapping.pairs.len(), user = %p.user, "wizard wrote a job");
    Ok(pb::WizardScriptResponse {
        job_json: serde_json::to_string_pretty(&job)?,
        mapping: mapping
            .pairs
            .iter()
            .map(|(s, t)| pb::ColumnPair {
                source: s.clone(),
                source_type: type_of(&src_cols, s),
                target: t.clone(),
                target_type: type_of(&dst_cols, t),
            })
            .collect(),
        source_only: mapping.source_only,
        target_only: mapping.target_only,
        source_columns: src_cols.iter().map(column_info).collect(),
        target_columns: dst_cols.iter().map(column_info).collect(),
    })
}
