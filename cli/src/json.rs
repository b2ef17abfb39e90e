//! `--output json`: what list and show commands print for scripts and monitoring. Field names
//! are stable (documented in docs/operations.md); new fields may be added, none renamed.

use ferry_proto::admin::v1 as pb;
use serde_json::{Value, json};

/// A JSON array of `items`, one per line for large lists.
pub fn list(items: impl Iterator<Item = Value>) -> String {
    Value::Array(items.collect()).to_string()
}

fn stats(s: Option<&pb::SyncStats>) -> Value {
    match s {
        Some(s) => json!({
            "records_read": s.records_read,
            "bytes_read": s.bytes_read,
            "records_written": s.records_written,
            "bytes_written": s.bytes_written,
            "dirty_records": s.dirty_records,
            "elapsed_ms": s.elapsed_ms,
        }),
        None => Value::Null,
    }
}

pub fn instance(i: &pb::InstanceInfo) -> Value {
    json!({
        "id": i.id,
        "task": i.task,
        "version": i.version,
        "kind": i.kind,
        "run": i.run,
        "bizdate": i.bizdate,
        "cyctime": i.cyctime,
        "state": i.state,
        "dirty_records": i.dirty_records,
        "waiting_reason": i.waiting_reason,
        "dry_run": i.dry_run,
        "priority": i.priority,
        "due_ms": i.due_ms,
        "created_ms": i.created_ms,
        "finished_ms": i.finished_ms,
        "retries_left": i.retries_left,
        "upstream": i.upstream,
        "previous": i.previous,
        "params": i.params,
        "attempts": i.attempts.iter().map(|a| json!({
            "id": a.id,
            "agent_id": a.agent_id,
            "reader_agent_id": a.reader_agent_id,
            "state": a.state,
            "started_ms": a.started_ms,
            "finished_ms": a.finished_ms,
            "error": a.error,
            "late_report": a.late_report,
            "stats": stats(a.stats.as_ref()),
        })).collect::<Vec<_>>(),
        "history": i.history.iter().map(|t| json!({
            "at_ms": t.at_ms,
            "state": t.state,
            "reason": t.reason,
        })).collect::<Vec<_>>(),
    })
}

pub fn task(t: &pb::TaskInfo) -> Value {
    json!({
        "name": t.name,
        "version": t.version,
        "kind": t.kind,
        "group": t.group,
        "writer_group": t.writer_group,
        "cron": t.cron,
        "timezone": t.timezone,
        "dependencies": t.dependencies.iter().map(|d| json!({
            "upstream": d.upstream,
            "previous": d.previous,
        })).collect::<Vec<_>>(),
        "params": t.params,
        "priority": t.priority,
        "timeout_secs": t.timeout_secs,
        "retries": t.retries,
        "retry_interval_secs": t.retry_interval_secs,
        "rerun": t.rerun,
        "frozen": t.frozen,
        "first_day": t.first_day,
        "start_date": t.start_date,
        "end_date": t.end_date,
        "agent_labels": t.agent_labels,
        "updated_ms": t.updated_ms,
    })
}

pub fn logs(r: &pb::GetLogsResponse) -> String {
    json!({
        "instance_id": r.instance_id,
        "lines": r.lines.iter().map(|l| json!({
            "attempt_id": l.attempt_id,
            "index": l.index,
            "ts_ms": l.ts_ms,
            "level": l.level,
            "message": l.message,
        })).collect::<Vec<_>>(),
    })
    .to_string()
}

pub fn dag(r: &pb::DagResponse) -> String {
    json!({
        "instances": r.instances.iter().map(instance).collect::<Vec<_>>(),
        "edges": r.edges.iter().map(|e| json!({
            "from": e.from,
            "to": e.to,
            "previous": e.previous,
        })).collect::<Vec<_>>(),
        "borders": r.borders.iter().map(|b| json!({
            "id": b.id,
            "more_upstream": b.more_upstream,
            "more_downstream": b.more_downstream,
        })).collect::<Vec<_>>(),
        "truncated": r.truncated,
        "depth_up": r.depth_up,
        "depth_down": r.depth_down,
    })
    .to_string()
}

pub fn agent(a: &pb::AgentInfo) -> Value {
    json!({
        "id": a.id,
        "group": a.group,
        "hostname": a.hostname,
        "addresses": a.addresses,
        "version": a.version,
        "slots": a.slots,
        "running": a.running,
        "load1": a.load1,
        "labels": a.labels,
        "last_heartbeat_ms": a.last_heartbeat_ms,
        "state": a.state,
    })
}
