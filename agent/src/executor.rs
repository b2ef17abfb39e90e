//! Runs attempts the scheduler starts: one task each, bounded by the agent's slots.
//!
//! An attempt outlives any one session: if the connection drops, the sync goes on and its
//! reports wait in the outbox. Every attempt ends with exactly one `AttemptFinished`.

use crate::outbox::Outbox;
use crate::sync::{self, JobLog, LogEntry, Shared, Summary};
use ferry_common::job::JobSpec;
use ferry_proto::agent::v1 as pb;
use pb::agent_message::Body;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

struct Running {
    cancel: CancellationToken,
}

/// The attempts this agent runs.
pub struct Executor {
    slots: u32,
    outbox: Arc<Outbox>,
    running: Mutex<HashMap<String, Running>>,
    progress_every: Duration,
}

impl Executor {
    pub fn new(slots: u32, outbox: Arc<Outbox>, progress_every: Duration) -> Self {
        Self {
            slots: slots.max(1),
            outbox,
            running: Mutex::default(),
            progress_every,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn running_ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    pub fn running_count(&self) -> u32 {
        self.lock().len() as u32
    }

    pub fn free_slots(&self) -> u32 {
        self.slots.saturating_sub(self.running_count())
    }

    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Stops an attempt; it reports `killed`.
    pub fn kill(&self, attempt_id: &str, reason: &str) {
        if let Some(r) = self.lock().get(attempt_id) {
            info!(attempt = %attempt_id, %reason, "killing attempt");
            r.cancel.cancel();
        }
    }

    /// Cancels every attempt (agent shutdown).
    pub fn kill_all(&self) {
        for r in self.lock().values() {
            r.cancel.cancel();
        }
    }

    /// Starts an attempt unless it already runs here (a resent start after a reconnect).
    pub fn start(self: &Arc<Self>, start: pb::StartAttempt) {
        let cancel = CancellationToken::new();
        {
            let mut running = self.lock();
            if running.contains_key(&start.attempt_id) {
                return;
            }
            running.insert(
                start.attempt_id.clone(),
                Running {
                    cancel: cancel.clone(),
                },
            );
        }
        let this = self.clone();
        let span = info_span!("attempt", attempt = %start.attempt_id, instance = %start.instance_id, task = %start.task);
        tokio::spawn(
            async move {
                let id = start.attempt_id.clone();
                this.run(start, cancel).await;
                this.lock().remove(&id);
            }
            .instrument(span),
        );
    }

    async fn run(&self, start: pb::StartAttempt, cancel: CancellationToken) {
        let attempt_id = start.attempt_id.clone();
        let token = start.fencing_token;
        self.outbox.push(Body::Started(pb::AttemptStarted {
            attempt_id: attempt_id.clone(),
            fencing_token: token,
        }));
        let (log_tx, log_rx) = mpsc::unbounded_channel();
        let log = JobLog::new(log_tx);
        let shipper = tokio::spawn(ship_logs(
            self.outbox.clone(),
            attempt_id.clone(),
            token,
            log_rx,
        ));
        log.info(format!(
            "attempt {attempt_id} of task {} (bizdate {}) started on {}",
            start.task,
            start.bizdate,
            crate::identity::host_facts(self.slots).hostname
        ));
        let (status, summary, error) = match JobSpec::parse(&start.job_json) {
            Err(e) => {
                log.error(format!("the job cannot run: {e}"));
                (pb::AttemptStatus::Failed, Summary::default(), e.to_string())
            }
            Ok(job) => {
                let limit = job.setting.error_limit.record_limit();
                let shared = Arc::new(
                    Shared::new(log.clone(), cancel.clone(), limit)
                        .with_throttle(sync::throttle_for(&job)),
                );
                let reporter = tokio::spawn(report_progress(
                    self.outbox.clone(),
                    attempt_id.clone(),
                    token,
                    shared.clone(),
                    self.progress_every,
                ));
                let started = std::time::Instant::now();
                let result = sync::run(&job, &attempt_id, shared.clone()).await;
                reporter.abort();
                let elapsed = started.elapsed().as_millis() as u64;
                match result {
                    Ok(summary) => {
                        log.info(format!(
                            "finished: {} records ({} bytes) read, {} written, {} dirty, in {:.1}s",
                            summary.records_read,
                            summary.bytes_read,
                            summary.records_written,
                            summary.dirty_records,
                            summary.elapsed_ms as f64 / 1000.0
                        ));
                        (pb::AttemptStatus::Succeeded, summary, String::new())
                    }
                    Err(e) => {
                        let killed =
                            cancel.is_cancelled() && matches!(e, sync::SyncError::Killed(_));
                        log.error(format!("failed: {e}"));
                        (
                            if killed {
                                pb::AttemptStatus::Killed
                            } else {
                                pb::AttemptStatus::Failed
                            },
                            shared.counters.summary(elapsed),
                            e.to_string(),
                        )
                    }
                }
            }
        };
        drop(log);
        // All log lines are queued before the finish report, so the log is complete when the
        // scheduler marks the attempt finished.
        let _ = shipper.await;
        if status == pb::AttemptStatus::Succeeded {
            info!("attempt succeeded");
        } else {
            warn!(%error, "attempt did not succeed");
        }
        self.outbox.push(Body::Finished(pb::AttemptFinished {
            attempt_id,
            fencing_token: token,
            status: status as i32,
            stats: Some(stats(&summary)),
            error,
        }));
    }
}

fn stats(s: &Summary) -> pb::SyncStats {
    pb::SyncStats {
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

/// Batches log lines into `AttemptLog` reports (up to 500 lines or 200 ms).
async fn ship_logs(
    outbox: Arc<Outbox>,
    attempt_id: String,
    token: u64,
    mut rx: mpsc::UnboundedReceiver<LogEntry>,
) {
    let mut index = 0u64;
    let mut open = true;
    while open {
        let mut lines = Vec::new();
        match rx.recv().await {
            Some(e) => lines.push(e),
            None => break,
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
        while lines.len() < 500 {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(e)) => lines.push(e),
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_) => break,
            }
        }
        let now = chrono::Utc::now().timestamp_millis();
        let lines = lines
            .into_iter()
            .map(|e| {
                let line = pb::LogLine {
                    index,
                    ts_ms: now,
                    level: e.level.to_string(),
                    message: e.message,
                };
                index += 1;
                line
            })
            .collect();
        outbox.push(Body::Log(pb::AttemptLog {
            attempt_id: attempt_id.clone(),
            fencing_token: token,
            lines,
        }));
    }
}

async fn report_progress(
    outbox: Arc<Outbox>,
    attempt_id: String,
    token: u64,
    shared: Arc<Shared>,
    every: Duration,
) {
    let started = std::time::Instant::now();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let s = shared
            .counters
            .summary(started.elapsed().as_millis() as u64);
        outbox.send_live(Body::Progress(pb::AttemptProgress {
            attempt_id: attempt_id.clone(),
            fencing_token: token,
            stats: Some(stats(&s)),
        }));
    }
}
