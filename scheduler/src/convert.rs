//! Conversions from the state machine's records to the admin API's messages.

use crate::context::Context;
use crate::error::Result;
use crate::state::model::{Agent, Attempt, DataSourceRecord, Instance, Stats, Task};
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

impl From<&Task> for pb::TaskInfo {
    fn from(t: &Task) -> Self {
        Self {
            name: t.name.clone(),
            group: t.group.clone(),
            version: t.version,
            updated_ms: t.updated_ms,
        }
    }
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
        }
    }
}

/// The admin view of an agent, with its liveness as this scheduler sees it now.
pub fn agent_info(ctx: &Context, a: &Agent, running: u32) -> pb::AgentInfo {
    let online = ctx.hub.online(&a.id, ctx.config.offline_after);
    let last_heartbeat_ms = ctx
        .hub
        .session(&a.id)
        .map(|s| s.last_heartbeat_ms)
        .unwrap_or(a.last_seen_ms);
    pb::AgentInfo {
        id: a.id.clone(),
        hostname: a.host.hostname.clone(),
        version: a.host.version.clone(),
        slots: a.host.slots,
        running,
        last_heartbeat_ms,
        state: if online.is_some() {
            "online"
        } else {
            "offline"
        }
        .to_string(),
        addresses: a.host.addresses.clone(),
    }
}

/// The admin view of an instance with its attempts and, when waiting, why.
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
        task: i.task.clone(),
        version: i.version,
        bizdate: i.bizdate.clone(),
        state: i.state.as_str().to_string(),
        waiting_reason: ctx.hub.waiting_reason(&i.id).unwrap_or_default(),
        created_ms: i.created_ms,
        attempts,
        dirty_records,
    })
}
