//! Runs attempts the scheduler starts: one task each, bounded by the agent's slots.
//!
//! An attempt outlives any one session: if the connection drops, the sync goes on and its
//! reports wait in the spool. Every attempt ends with exactly one `AttemptFinished`, written to
//! disk before the attempt counts as done. Nothing an attempt prints can break the session: log
//! lines are cut to [`MAX_LINE_BYTES`] and shipped in messages of at most [`MAX_LOG_BATCH_BYTES`],
//! far below the gRPC message limit.

use crate::session::RelayDialer;
use crate::shell::ShellConfig;
use crate::spool::Spool;
use crate::sync::{self, JobLog, LogEntry, Shared, Summary};
use ferry_common::job::JobSpec;
use ferry_proto::agent::v1 as pb;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

/// The longest log line shipped; a longer one keeps its start and says how much was cut.
pub const MAX_LINE_BYTES: usize = 16 << 10;
/// The most log text in one report.
pub const MAX_LOG_BATCH_BYTES: usize = 256 << 10;
/// The longest error text in a result.
const MAX_ERROR_BYTES: usize = 16 << 10;

struct Running {
    cancel: CancellationToken,
    /// Why it was stopped, for its result.
    reason: Arc<Mutex<Option<String>>>,
}

/// The attempts this agent runs.
pub struct Executor {
    slots: u32,
    spool: Arc<Spool>,
    boot_id: String,
    running: Mutex<HashMap<String, Running>>,
    progress_every: Duration,
    draining: AtomicBool,
    shell: ShellConfig,
    /// `--file-root`: canonical folders every file path of a job must stay inside.
    file_roots: Vec<std::path::PathBuf>,
    /// Opens relay streams for legs of two-group syncs.
    relay: Arc<RelayDialer>,
}

/// Cuts `text` to at most `max` bytes on a character boundary, saying how much was cut.
pub fn cut(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} … [{} more bytes cut]", &text[..end], text.len() - end)
}

impl Executor {
    pub fn new(slots: u32, spool: Arc<Spool>, boot_id: String, progress_every: Duration) -> Self {
        Self {
            slots: slots.max(1),
            spool,
            boot_id,
            running: Mutex::default(),
            progress_every,
            draining: AtomicBool::new(false),
            shell: ShellConfig::default(),
            file_roots: Vec::new(),
            relay: Arc::new(RelayDialer::new(
                crate::identity::Identity {
                    agent_id: String::new(),
                    credential: String::new(),
                    group: String::new(),
                },
                Default::default(),
            )),
        }
    }

    /// Lets this agent run legs of two-group syncs, dialing the scheduler as `dialer` says.
    pub fn with_relay(mut self, dialer: RelayDialer) -> Self {
        self.relay = Arc::new(dialer);
        self
    }

    /// What opens relay streams; the session tells it which scheduler leads.
    pub fn relay_dialer(&self) -> &RelayDialer {
        &self.relay
    }

    /// Confines every file path of every job to these folders (canonical; see
    /// [`crate::files::agent_roots`]).
    /// The folders this agent's jobs and tests may touch (empty: no limit).
    pub fn file_roots(&self) -> &[std::path::PathBuf] {
        &self.file_roots
    }

    pub fn with_file_roots(mut self, roots: Vec<std::path::PathBuf>) -> Self {
        self.file_roots = roots;
        self
    }

    /// Lets this agent run shell tasks as `shell` says.
    pub fn with_shell(mut self, shell: ShellConfig) -> Self {
        self.shell = shell;
        self
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
        if self.draining.load(Ordering::Relaxed) {
            return 0;
        }
        self.slots.saturating_sub(self.running_count())
    }

    pub fn slots(&self) -> u32 {
        self.slots
    }

    pub fn set_draining(&self, draining: bool) {
        if self.draining.swap(draining, Ordering::Relaxed) != draining {
            if draining {
                info!("draining: finishing running attempts, taking nothing new");
            } else {
                info!("resumed: taking new attempts");
            }
        }
    }

    /// Stops an attempt; it reports `killed` with `reason`.
    pub fn kill(&self, attempt_id: &str, reason: &str) {
        if let Some(r) = self.lock().get(attempt_id) {
            info!(attempt = %attempt_id, %reason, "killing attempt");
            *r.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
            r.cancel.cancel();
        }
    }

    /// Stops every attempt (agent shutdown, revocation, self-fencing).
    pub fn kill_all(&self, reason: &str) {
        for (id, r) in self.lock().iter() {
            info!(attempt = %id, %reason, "killing attempt");
            *r.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
            r.cancel.cancel();
        }
    }

    /// Reports attempts a previous process of this agent was running when it died: they are
    /// lost, and the scheduler hears it at once rather than after the lease.
    pub async fn report_orphans(&self) -> Result<(), crate::spool::SpoolError> {
        for (attempt_id, token) in self.spool.orphans(&self.boot_id)? {
            warn!(attempt = %attempt_id, "a previous agent process was running this attempt when it stopped; reporting it lost");
            self.spool
                .finished(
                    pb::AttemptFinished {
                        attempt_id,
                        fencing_token: token,
                        status: pb::AttemptStatus::Failed as i32,
                        stats: None,
                        error: "the agent process stopped (crash, kill or power loss) while the attempt ran; \
                                writes it had not committed were rolled back by the database, committed ones remain, \
                                so rerun it only if the job is idempotent (preSql delete, replace or upsert)"
                            .into(),
                    },
                    &self.boot_id,
                )
                .await?;
        }
        Ok(())
    }

    /// Starts an attempt unless it already runs here (a resent start after a reconnect).
    pub fn start(self: &Arc<Self>, start: pb::StartAttempt) {
        let cancel = CancellationToken::new();
        let reason = Arc::new(Mutex::new(None));
        {
            let mut running = self.lock();
            if running.contains_key(&start.attempt_id) {
                return;
            }
            running.insert(
                start.attempt_id.clone(),
                Running {
                    cancel: cancel.clone(),
                    reason: reason.clone(),
                },
            );
        }
        let this = self.clone();
        let span = info_span!("attempt", attempt = %start.attempt_id, instance = %start.instance_id, task = %start.task);
        tokio::spawn(
            async move {
                let id = start.attempt_id.clone();
                this.run(start, cancel, reason).await;
                this.lock().remove(&id);
            }
            .instrument(span),
        );
    }

    async fn run(
        &self,
        start: pb::StartAttempt,
        cancel: CancellationToken,
        reason: Arc<Mutex<Option<String>>>,
    ) {
        let attempt_id = start.attempt_id.clone();
        let token = start.fencing_token;
        if let Err(e) = self
            .spool
            .started(
                pb::AttemptStarted {
                    attempt_id: attempt_id.clone(),
                    fencing_token: token,
                },
                &self.boot_id,
            )
            .await
        {
            // Without a durable record the result could be lost; refuse to run.
            error!(error = %e, "cannot record the attempt in the spool; not running it");
            cancel.cancel();
        }
        let (log_tx, log_rx) = mpsc::unbounded_channel();
        let log = JobLog::new(log_tx);
        let shipper = tokio::spawn(ship_logs(
            self.spool.clone(),
            attempt_id.clone(),
            token,
            log_rx,
        ));
        log.info(format!(
            "attempt {attempt_id} of task {} (bizdate {}) started on {}",
            start.task,
            start.bizdate,
            crate::identity::hostname()
        ));
        let parsed = if start.kind == "shell" {
            None
        } else {
            // File paths outside the agent's roots fail the attempt before anything is opened.
            Some(
                JobSpec::parse(&start.job_json)
                    .map_err(|e| e.to_string())
                    .and_then(|mut job| {
                        crate::files::confine_job(&mut job, &self.file_roots).map(|()| job)
                    }),
            )
        };
        let (status, summary, error) = match parsed {
            None => {
                let result = crate::shell::run(
                    &self.shell,
                    &attempt_id,
                    &start.script,
                    &start.env,
                    &log,
                    &cancel,
                )
                .await;
                match result {
                    Ok(()) => {
                        log.info("finished: the script exited with status 0");
                        (
                            pb::AttemptStatus::Succeeded,
                            Summary::default(),
                            String::new(),
                        )
                    }
                    Err(e) => {
                        let why = reason.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        let killed = matches!(e, crate::shell::ShellError::Killed(_));
                        let text = match (&why, killed) {
                            (Some(why), true) => format!("killed: {why}"),
                            _ => e.to_string(),
                        };
                        log.error(format!("failed: {text}"));
                        (
                            if killed {
                                pb::AttemptStatus::Killed
                            } else {
                                pb::AttemptStatus::Failed
                            },
                            Summary::default(),
                            text,
                        )
                    }
                }
            }
            Some(Err(e)) => {
                log.error(format!("the job cannot run: {e}"));
                (pb::AttemptStatus::Failed, Summary::default(), e.to_string())
            }
            Some(Ok(job)) => {
                let limit = job.setting.error_limit.record_limit();
                let shared = Arc::new(
                    Shared::new(log.clone(), cancel.clone(), limit)
                        .with_throttle(sync::throttle_for(&job)),
                );
                let reporter = tokio::spawn(report_progress(
                    self.spool.clone(),
                    attempt_id.clone(),
                    token,
                    shared.clone(),
                    self.progress_every,
                ));
                let started = std::time::Instant::now();
                let result = match &start.relay {
                    None => sync::run(&job, &attempt_id, shared.clone()).await,
                    Some(leg) => self.run_leg(&job, &attempt_id, leg, token, &shared).await,
                };
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
                        let why = reason.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        let text = match (&why, killed) {
                            (Some(why), true) => format!("killed: {why}"),
                            _ => e.to_string(),
                        };
                        log.error(format!("failed: {text}"));
                        (
                            if killed {
                                pb::AttemptStatus::Killed
                            } else {
                                pb::AttemptStatus::Failed
                            },
                            shared.counters.summary(elapsed),
                            text,
                        )
                    }
                }
            }
        };
        drop(log);
        // All log lines are queued before the result, so the log is complete when the scheduler
        // marks the attempt finished.
        let _ = shipper.await;
        let dropped = self.spool.take_dropped(&attempt_id);
        if dropped > 0 {
            let note = pb::AttemptLog {
                attempt_id: attempt_id.clone(),
                fencing_token: token,
                lines: vec![pb::LogLine {
                    index: u64::MAX,
                    ts_ms: chrono::Utc::now().timestamp_millis(),
                    level: "warn".into(),
                    message: format!(
                        "{dropped} log lines were dropped: the agent's spool was full while the scheduler was unreachable"
                    ),
                }],
            };
            // Small and important: queued even though the spool is over its bound.
            if let Err(e) = self.spool.note(note) {
                warn!(error = %e, "cannot queue the dropped-lines note");
            }
        }
        if status == pb::AttemptStatus::Succeeded {
            info!("attempt succeeded");
        } else {
            warn!(%error, "attempt did not succeed");
        }
        let finished = pb::AttemptFinished {
            attempt_id,
            fencing_token: token,
            status: status as i32,
            stats: Some(stats(&summary)),
            error: cut(error, MAX_ERROR_BYTES),
        };
        if let Err(e) = self.spool.finished(finished, &self.boot_id).await {
            error!(error = %e, "cannot record the attempt's result in the spool; the scheduler will see it lost");
        }
    }
}

impl Executor {
    /// Runs this agent's leg of a two-group sync: dials the relay, then runs the engine with
    /// the relay standing in for the other half.
    async fn run_leg(
        &self,
        job: &JobSpec,
        attempt_id: &str,
        leg: &pb::RelayLeg,
        token: u64,
        shared: &Arc<Shared>,
    ) -> Result<Summary, sync::SyncError> {
        let info = sync::relay::LegInfo::from_pb(leg).map_err(sync::SyncError::Internal)?;
        info!(relay = %info.relay_id, role = info.role(), peer = %info.peer, "opening the relay");
        let link = self.relay.dial(leg, token).await.map_err(|e| {
            sync::SyncError::Internal(format!(
                "cannot open the relay for the {} leg: {e}",
                info.role()
            ))
        })?;
        sync::relay::run_leg(job, attempt_id, &info, link, shared.clone()).await
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

/// Batches log lines into `AttemptLog` reports: up to 500 lines, [`MAX_LOG_BATCH_BYTES`] or
/// 200 ms, each line cut to [`MAX_LINE_BYTES`].
async fn ship_logs(
    spool: Arc<Spool>,
    attempt_id: String,
    token: u64,
    mut rx: mpsc::UnboundedReceiver<LogEntry>,
) {
    let mut index = 0u64;
    let mut open = true;
    let mut carry: Option<LogEntry> = None;
    while open {
        let mut lines = Vec::new();
        let mut size = 0usize;
        let first = match carry.take() {
            Some(e) => Some(e),
            None => rx.recv().await,
        };
        let Some(first) = first else { break };
        let mut push = |e: LogEntry, lines: &mut Vec<pb::LogLine>, size: &mut usize| {
            let message = cut(e.message, MAX_LINE_BYTES);
            *size += message.len() + 32;
            lines.push(pb::LogLine {
                index,
                ts_ms: chrono::Utc::now().timestamp_millis(),
                level: e.level.to_string(),
                message,
            });
            index += 1;
        };
        push(first, &mut lines, &mut size);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
        while lines.len() < 500 && size < MAX_LOG_BATCH_BYTES {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(e)) => {
                    if size + e.message.len().min(MAX_LINE_BYTES) > MAX_LOG_BATCH_BYTES {
                        carry = Some(e);
                        break;
                    }
                    push(e, &mut lines, &mut size);
                }
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_) => break,
            }
        }
        let report = pb::AttemptLog {
            attempt_id: attempt_id.clone(),
            fencing_token: token,
            lines,
        };
        if let Err(e) = spool.log(report) {
            warn!(error = %e, "cannot queue log lines");
        }
    }
}

async fn report_progress(
    spool: Arc<Spool>,
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
        spool.send_live(pb::agent_message::Body::Progress(pb::AttemptProgress {
            attempt_id: attempt_id.clone(),
            fencing_token: token,
            stats: Some(stats(&s)),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        let s = "é".repeat(10);
        let c = cut(s, 5);
        assert!(c.starts_with("éé …"), "{c}");
        assert!(c.ends_with("[16 more bytes cut]"), "{c}");
        assert_eq!(cut("short".into(), 10), "short");
    }
}
