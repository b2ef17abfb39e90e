//! One leg of a two-group sync: the reader in one private network, the writer in another, rows
//! flowing between them through a relay stream that both agents open outward to the scheduler.
//!
//! Each leg runs the ordinary engine ([`super::engine::run_plugins`]) with the relay standing
//! in for the missing half: on the reader leg a [`RelaySink`] is the writer (it sends row
//! batches), on the writer leg a [`RelaySource`] is the reader (it receives them). So splits,
//! channels, speed limits, dirty records and the writer's transactions behave exactly as on one
//! agent, and the writer commits only when its engine would: after every row arrived.
//!
//! The conversation (frames of `ferry.agent.v1.RelayFrame`):
//! 1. reader leg: the source is cut into splits -> `SourceReady` (so a missing source never
//!    costs the target its rows: the writer's `preSql` runs only after this);
//! 2. writer leg: the target is prepared (`preSql`) -> `TargetReady` with the writer's own row
//!    format, so PostgreSQL to PostgreSQL passes binary COPY tuples through undecoded;
//! 3. reader leg: `RowBatch`es of about [`FRAME_BYTES`], then `RelayEnd` with how many rows it
//!    sent; the writer leg refuses to commit unless it received exactly that many;
//! 4. writer leg: `RelayVerdict` (committed or not).
//!
//! A leg that fails sends `RelayAbort` with its reason; a leg whose stream breaks is named to
//! the other by the scheduler. Either way the writer rolls back and the attempt fails; a rerun
//! gives exactly the source rows under the job's `preSql`/`writeMode`, as on one agent.
//!
//! Backpressure: frames go out through a channel of [`OUTBOUND_FRAMES`], the scheduler forwards
//! through a few more, gRPC flow control covers the rest, and the writer leg decodes into the
//! engine's bounded channel. A slow writer stops the reader's database reads; memory stays flat.

pub mod codec;
mod sink;
mod source;

pub use sink::RelaySink;
pub use source::RelaySource;

use super::plugin::{Result, Shared, Summary, SyncError};
use super::registry;
use ferry_common::job::JobSpec;
use ferry_proto::agent::v1 as pb;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::Stream;

/// A batch of rows is cut into frames of about this size.
pub const FRAME_BYTES: usize = 1 << 20;
/// Frames queued for the relay stream before the sending worker waits.
pub const OUTBOUND_FRAMES: usize = 4;

/// Frames from the other leg (through the scheduler), or why the stream broke.
pub type Inbound = Pin<Box<dyn Stream<Item = std::result::Result<pb::RelayFrame, String>> + Send>>;

/// A leg's two directions of its relay stream.
pub struct Link {
    pub tx: mpsc::Sender<pb::RelayFrame>,
    pub rx: Inbound,
}

/// Which leg this agent runs, and who runs the other.
#[derive(Debug, Clone)]
pub struct LegInfo {
    pub relay_id: String,
    pub writer: bool,
    /// "agent agt-… (group rg-…)".
    pub peer: String,
}

impl LegInfo {
    pub fn from_pb(leg: &pb::RelayLeg) -> std::result::Result<Self, String> {
        let writer = match leg.role.as_str() {
            "writer" => true,
            "reader" => false,
            other => return Err(format!("unknown relay role \"{other}\"")),
        };
        Ok(Self {
            relay_id: leg.relay_id.clone(),
            writer,
            peer: format!("agent {} (group {})", leg.peer_agent, leg.peer_group),
        })
    }

    pub fn role(&self) -> &'static str {
        if self.writer { "writer" } else { "reader" }
    }

    /// "the reader leg on agent … (group …)": the other leg, for messages.
    pub fn other(&self) -> String {
        let role = if self.writer { "reader" } else { "writer" };
        format!("the {role} leg on {}", self.peer)
    }
}

fn frame(body: pb::relay_frame::Body) -> pb::RelayFrame {
    pb::RelayFrame { body: Some(body) }
}

/// Runs this agent's leg of `job` (its half: the other side is a placeholder) over `link`.
pub async fn run_leg(
    job: &JobSpec,
    attempt: &str,
    leg: &LegInfo,
    link: Link,
    shared: Arc<Shared>,
) -> Result<Summary> {
    shared.log.info(format!(
        "{} leg of a two-group sync: rows travel through the scheduler's relay; {} runs the other half",
        leg.role(),
        leg.other()
    ));
    let out = link.tx.clone();
    let result = if leg.writer {
        run_writer(job, attempt, leg, link, shared.clone()).await
    } else {
        run_reader(job, leg, link, shared.clone()).await
    };
    if let Err(e) = &result {
        // Tell the other leg why, so its log says more than "the stream closed". The relay may
        // be full or gone; the other leg learns of the failure from the closed stream anyway.
        let abort = frame(pb::relay_frame::Body::Abort(pb::RelayAbort {
            error: format!("{} leg failed: {e}", leg.role()),
        }));
        let _ = tokio::time::timeout(Duration::from_secs(2), out.send(abort)).await;
    }
    result
}

async fn run_reader(
    job: &JobSpec,
    leg: &LegInfo,
    link: Link,
    shared: Arc<Shared>,
) -> Result<Summary> {
    let reader = registry::build_reader(&job.reader)
        .ok_or_else(|| SyncError::Internal("this agent has no such reader plugin".into()))?;
    let sink = Arc::new(RelaySink::new(link, leg.other()));
    super::engine::run_plugins(Arc::from(reader), sink, &job.setting, shared).await
}

async fn run_writer(
    job: &JobSpec,
    attempt: &str,
    leg: &LegInfo,
    link: Link,
    shared: Arc<Shared>,
) -> Result<Summary> {
    let writer = registry::build_writer(&job.writer, attempt)
        .ok_or_else(|| SyncError::Internal("this agent has no such writer plugin".into()))?;
    let out = link.tx.clone();
    let source = Arc::new(RelaySource::new(link, leg.other()));
    let result =
        super::engine::run_plugins(source.clone(), Arc::from(writer), &job.setting, shared).await;
    let verdict = match &result {
        Ok(s) => pb::RelayVerdict {
            committed: true,
            records_written: s.records_written,
            error: String::new(),
        },
        Err(e) => pb::RelayVerdict {
            committed: false,
            records_written: 0,
            error: e.to_string(),
        },
    };
    // The verdict goes out before the stream closes; then the other leg closes its side.
    if out
        .send(frame(pb::relay_frame::Body::Verdict(verdict)))
        .await
        .is_err()
    {
        tracing::debug!("the relay closed before the verdict could be sent");
    }
    drop(out);
    source.close().await;
    let mut summary = result?;
    // Rows the reader leg could not convert were counted there as read and dirty.
    if let Some(end) = source.end() {
        summary.records_read += end.dirty_records;
        summary.dirty_records += end.dirty_records;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests;
