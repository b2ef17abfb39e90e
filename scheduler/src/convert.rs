//! Conversions from the state machine's records to the admin API's messages.

use crate::auth::short;
use crate::context::Context;
use crate::error::Result;
use crate::state::model::{
    Agent, Attempt, DataSourceRecord, Instance, InstanceState, RunKind, Stats, Task, TaskVersion,
};
use ferry_proto::admin::v1 as pb;

impl From<Stats> for pb::SyncStats {
    fn from(s: Stats) -> Self {
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

impl From<&DataSourceRecord> for pb::DataSourceInfo {
    fn from(r: &DataSourceRecord) -> Self {
        Self {
            name: r.name.clone(),
            r#type: r.config.kind().to_string(),
            fields: r.config.public_fields().into_iter().collect(),
            secret_fields: r.config.secret_fields(),
            groups: r.groups.clone(),
            updated_ms: r.updated_ms,
        }
    }
}

/// The admin view of a task and its latest version, names without their workspace.
pub fn task_info(t: &Task, v: Option<&TaskVersion>) -> pb::TaskInfo {
    let date = |d: Option<chrono::NaiveDate>| d.map(|d| d.to_string()).unwrap_or_default();
    let mut info = pb::TaskInfo {
        name: short(&t.name).to_string(),
        group: t.group.clone(),
        version: t.version,
        updated_ms: t.updated_ms,
        agent_labels: t.agent_labels.clone().into_iter().collect(),
        frozen: t.frozen,
        first_day: date(t.first_day),
        ..Default::default()
    };
    if let Some(v) = v {
        info.kind = v.kind.as_str().to_string();
        if let Some(s) = &v.schedule {
            info.cron = s.cron.clone();
            info.timezone = s.timezone.clone();
        }
        info.dependencies = v
            .dependencies
            .iter()
            .map(|d| pb::Dependency {
                upstream: short(&d.upstream).to_string(),
                previous: d.previous,
            })
            .collect();
        info.params = v.params.clone();
        info.rerun = v.rerun.as_str().to_string();
        info.retries = v.retries;
        info.retry_interval_secs = v.retry_interval_secs;
        info.priority = v.priority;
        info.timeout_secs = v.timeout_secs;
        info.start_date = date(v.start_date);
        info.end_date = date(v.end_date);
        info.writer_group = v.writer_group.clone();
    }
    info
}

impl From<&Attempt> for pb::AttemptInfo {
    fn from(a: &Attempt) -> Self {
        Self {
            id: a.id.clone(),
            agent_id: a.agent_id.clone(),
            state: a.state.as_str().to_string(),
            started_ms: a.started_ms,
            finished_ms: a.finished_ms,
            stats: Some(a.stats.into()),
            error: a.error.clone(),
            late_report: a.late_report.clone(),
            reader_agent_id: a.reader_agent_id.clone(),
        }
    }
}

/// The admin view of an agent, with its liveness as this scheduler sees it now.
pub fn agent_info(ctx: &Context, a: &Agent, running: u32) -> pb::AgentInfo {
    let online = ctx.hub.online(&a.id, ctx.config.offline_after);
    let session = ctx.hub.session(&a.id);
    let last_heartbeat_ms = session
        .as_ref()
        .map(|s| s.last_heartbeat_ms)
        .unwrap_or(a.last_seen_ms);
    let state = if a.is_revoked() {
        "revoked"
    } else if online.is_none() {
        "offline"
    } else if a.draining {
        "draining"
    } else {
        "online"
    };
    pb::AgentInfo {
        id: a.id.clone(),
        hostname: a.host.hostname.clone(),
        version: a.host.version.clone(),
        slots: a.host.slots,
        running,
        last_heartbeat_ms,
        state: state.to_string(),
        addresses: a.host.addresses.clone(),
        group: a.group.clone(),
        labels: a.host.labels.clone().into_iter().collect(),
        load1: session.map(|s| s.load1).unwrap_or_default(),
        boot_id: a.boot_id.clone(),
    }
}

/// Why an instance waits, for people.
fn waiting_reason(ctx: &Context, i: &Instance) -> Result<String> {
    Ok(match i.state {
        InstanceState::WaitingUpstream => ctx.store.waiting_for(i)?.unwrap_or_default(),
        InstanceState::WaitingTime => {
            let at = chrono::DateTime::from_timestamp_millis(i.due_ms)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_default();
            format!("its time comes at {at}")
        }
        InstanceState::WaitingResources => ctx.hub.waiting_reason(&i.id).unwrap_or_default(),
        InstanceState::Frozen => "frozen: unfreeze it to let it (and its downstream) run".into(),
        _ => String::new(),
    })
}

/// The admin view of an instance with its attempts and, when waiting, why. Task names and
/// instance ids lose their workspace prefix in what people read.
pub fn instance_info(ctx: &Context, i: &Instance) -> Result<pb::InstanceInfo> {
    let mut attempts: Vec<pb::AttemptInfo> = Vec::with_capacity(i.attempts.len());
    for id in &i.attempts {
        if let Some(a) = ctx.store.attempt(id)? {
            attempts.push((&a).into());
        }
    }
    let dirty_records = attempts
        .last()
        .and_then(|a| a.stats.as_ref())
        .map_or(0, |s| s.dirty_records);
    Ok(pb::InstanceInfo {
        id: i.id.clone(),
        task: short(&i.task).to_string(),
        version: i.version,
        bizdate: i.bizdate.clone(),
        state: i.state.as_str().to_string(),
        waiting_reason: waiting_reason(ctx, i)?,
        created_ms: i.created_ms,
        attempts,
        run: match &i.run {
            RunKind::Scheduled => "scheduled".into(),
            RunKind::Manual => "manual".into(),
            RunKind::Backfill { id, .. } => format!("backfill {id}"),
        },
        kind: i.node_type.as_str().to_string(),
        cyctime: i.cyctime.clone(),
        due_ms: i.due_ms,
        priority: i.priority,
        upstream: i.upstream.clone(),
        previous: i.previous.clone(),
        dry_run: i.dry_run.clone(),
        params: i
            .params
            .as_ref()
            .map(|p| p.values.clone().into_iter().collect())
            .unwrap_or_default(),
        history: i
            .history
            .iter()
            .map(|t| pb::Transition {
                at_ms: t.at_ms,
                state: t.state.as_str().to_string(),
                reason: t.reason.clone(),
            })
            .collect(),
        retries_left: i.retries_left,
        finished_ms: i.finished_ms,
        joined: false,
        dirty_records,
    })
}
