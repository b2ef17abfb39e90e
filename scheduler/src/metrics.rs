//! Prometheus metrics and health checks, served as plain HTTP beside gRPC on the scheduler's one
//! address (`/metrics`, `/healthz`, `/readyz`), so operators open no second port.
//!
//! Two kinds of figures, on purpose:
//! - what happens in this process (dispatch latency, attempts finished, rows and bytes synced)
//!   are counters and a histogram updated where it happens; like every Prometheus counter they
//!   start from zero with the process, and `rate()` gives rows per second;
//! - what the state holds (instances by state, queue depth per group, agents online, raft
//!   indexes) is read from the applied state when scraped, so it can never drift from the state
//!   and every scheduler of a cluster reports the same instance counts.

use crate::context::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabel {
    group: String,
}

/// The figures this process counts as things happen (cheap clones share the same values).
#[derive(Clone)]
pub struct Metrics {
    dispatch_latency: Histogram,
    attempts_finished: Family<StateLabel, Counter>,
    records_read: Counter,
    records_written: Counter,
    bytes_read: Counter,
    bytes_written: Counter,
    dirty_records: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            // 1 ms .. ~33 s.
            dispatch_latency: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 16),
            ),
            attempts_finished: Family::default(),
            records_read: Counter::default(),
            records_written: Counter::default(),
            bytes_read: Counter::default(),
            bytes_written: Counter::default(),
            dirty_records: Counter::default(),
        }
    }
}

impl Metrics {
    /// An instance was dispatched `waited` after it became ready to run.
    pub fn dispatched(&self, waited: Duration) {
        self.dispatch_latency.observe(waited.as_secs_f64());
    }

    /// An agent reported an attempt's end (applied, not stale).
    pub fn attempt_finished(&self, state: &str, stats: &crate::state::model::Stats) {
        self.attempts_finished
            .get_or_create(&StateLabel {
                state: state.to_string(),
            })
            .inc();
        self.records_read.inc_by(stats.records_read);
        self.records_written.inc_by(stats.records_written);
        self.bytes_read.inc_by(stats.bytes_read);
        self.bytes_written.inc_by(stats.bytes_written);
        self.dirty_records.inc_by(stats.dirty_records);
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "ferry_dispatch_latency_seconds",
            "Time from an instance being ready to its dispatch, on this scheduler",
            self.dispatch_latency.clone(),
        );
        r.register(
            "ferry_attempts_finished",
            "Attempts whose end an agent reported, by state",
            self.attempts_finished.clone(),
        );
        for (name, help, c) in [
            (
                "ferry_sync_records_read",
                "Records read by finished sync attempts",
                &self.records_read,
            ),
            (
                "ferry_sync_records_written",
                "Records written by finished sync attempts",
                &self.records_written,
            ),
            (
                "ferry_sync_bytes_read",
                "Bytes read by finished sync attempts",
                &self.bytes_read,
            ),
            (
                "ferry_sync_bytes_written",
                "Bytes written by finished sync attempts",
                &self.bytes_written,
            ),
            (
                "ferry_sync_dirty_records",
                "Dirty records of finished sync attempts",
                &self.dirty_records,
            ),
        ] {
            r.register(name, help, c.clone());
        }
    }
}

fn gauge(r: &mut Registry, name: &str, help: &str, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    r.register(name, help, g);
}

/// The whole exposition: this process's counters and the applied state's gauges.
pub async fn render(ctx: &Context) -> crate::Result<String> {
    let mut r = Registry::default();
    ctx.hub.metrics.register(&mut r);

    let by_state: Family<StateLabel, Gauge> = Family::default();
    let queue: Family<GroupLabel, Gauge> = Family::default();
    for (state, n) in ctx.store.instance_counts()? {
        by_state
            .get_or_create(&StateLabel {
                state: state.as_str().to_string(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    r.register(
        "ferry_instances",
        "Instances by state (all business dates kept in the store)",
        by_state,
    );
    let mut depth: BTreeMap<String, i64> = BTreeMap::new();
    for q in ctx.store.waiting_queue()? {
        *depth.entry(q.group).or_default() += 1;
    }
    let online: Family<GroupLabel, Gauge> = Family::default();
    for g in ctx.store.groups()? {
        queue
            .get_or_create(&GroupLabel {
                group: g.name.clone(),
            })
            .set(depth.get(&g.name).copied().unwrap_or(0));
        online
            .get_or_create(&GroupLabel {
                group: g.name.clone(),
            })
            .set(0);
    }
    for agent in ctx.store.agents()? {
        if ctx
            .hub
            .online(&agent.id, ctx.config.offline_after)
            .is_some()
        {
            online
                .get_or_create(&GroupLabel {
                    group: agent.group.clone(),
                })
                .inc();
        }
    }
    r.register(
        "ferry_queue_depth",
        "Instances ready to run and waiting for an agent, per resource group",
        queue,
    );
    r.register(
        "ferry_agents_online",
        "Agents with a live session on this scheduler, per resource group (the leader holds them all)",
        online,
    );

    let leading = crate::cluster::leading(ctx);
    gauge(
        &mut r,
        "ferry_leader",
        "1 when this scheduler leads (dispatches) with a quorum lease",
        i64::from(leading),
    );
    if let Some(raft) = ctx.store.raft() {
        let s = raft.status().await.map_err(crate::Error::Raft)?;
        for (name, help, v) in [
            ("ferry_raft_term", "Raft term", s.term),
            (
                "ferry_raft_commit_index",
                "Raft commit index",
                s.commit_index,
            ),
            (
                "ferry_raft_applied_index",
                "Raft log index applied to the state",
                s.applied_index,
            ),
            (
                "ferry_raft_members",
                "Voters and learners in the configuration",
                s.members.len() as u64,
            ),
        ] {
            gauge(&mut r, name, help, i64::try_from(v).unwrap_or(i64::MAX));
        }
    }
    let mut out = String::new();
    encode(&mut out, &r)
        .map_err(|e| crate::Error::Unavailable(format!("encoding metrics: {e}")))?;
    Ok(out)
}

async fn metrics(State(ctx): State<Arc<Context>>) -> axum::response::Response {
    match render(&ctx).await {
        Ok(body) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "metrics could not be gathered");
            (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
        }
    }
}

/// Alive: the process serves requests.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready to be sent traffic: this scheduler leads, or follows a leader it knows (and points
/// callers to it). A scheduler without a leader (an election, a partition) answers 503.
async fn readyz(State(ctx): State<Arc<Context>>) -> axum::response::Response {
    let Some(raft) = ctx.store.raft() else {
        return (StatusCode::OK, "ready: single scheduler\n").into_response();
    };
    if crate::cluster::leading(&ctx) {
        return (StatusCode::OK, "ready: leader\n").into_response();
    }
    let role = raft.role().borrow().clone();
    match role.leader {
        Some((id, addr)) if id != role.id => (
            StatusCode::OK,
            format!("ready: follower of {id} at {addr}\n"),
        )
            .into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no leader known (election or partition)\n",
        )
            .into_response(),
    }
}

/// The HTTP routes served beside gRPC.
pub fn routes(ctx: Arc<Context>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(ctx)
}
