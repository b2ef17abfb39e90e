//! The agent's reports to the scheduler, kept on local disk until acknowledged.
//!
//! A sync may finish while the scheduler is down, unreachable, or while the agent itself is being
//! restarted; its result must still reach the scheduler, because a result recorded as "failed"
//! invites a rerun that doubles the rows already committed. So every durable report (attempt
//! started, log lines, attempt finished) is numbered and written to a sled database in the agent's
//! data folder, sent in order, and removed only when the scheduler acknowledges its number; after
//! a reconnect or a restart the unacknowledged ones are sent again. Starts and results are flushed
//! to disk before anyone relies on them; log lines ride on sled's background flush.
//!
//! Next to the queue, the spool keeps what the agent knows of each attempt until its result is
//! acknowledged: the Hello of every session carries those results, and an attempt that was
//! running when a previous agent process died is reported lost at once instead of waiting for the
//! scheduler's lease.
//!
//! The spool is bounded: past its byte limit new log lines are dropped (and counted, and the count
//! written into the attempt's log later); starts and results are always kept. Ephemeral messages
//! (heartbeats, progress, connectivity results) go straight to the current session and are dropped
//! when there is none.

use ferry_proto::agent::v1 as pb;
use pb::agent_message::Body;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::sync::{Notify, mpsc};

/// Why the spool cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error(
        "agent spool {path} cannot be opened: {source}; another ferry-agent may be using this data folder"
    )]
    Open { path: PathBuf, source: sled::Error },
    #[error("agent spool: {0}")]
    Storage(#[from] sled::Error),
    #[error("agent spool holds a record it cannot read: {0}")]
    Corrupt(String),
}

pub type Result<T, E = SpoolError> = std::result::Result<T, E>;

/// What the agent knows of one attempt until its result is acknowledged.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AttemptRecord {
    attempt_id: String,
    fencing_token: u64,
    /// The agent process that ran it.
    boot_id: String,
    /// The result (a prost-encoded `AttemptFinished`), once there is one.
    finished: Option<Vec<u8>>,
    /// Sequence number of the queued `AttemptFinished`.
    finished_seq: u64,
}

struct Inner {
    next_seq: u64,
    /// The next sequence number to send on the current session.
    cursor: u64,
    live: Option<mpsc::Sender<pb::AgentMessage>>,
    /// Bytes of queued reports.
    bytes: u64,
    /// Log lines dropped per attempt because the spool was full.
    dropped: HashMap<String, u64>,
}

/// The agent's durable queue of reports.
pub struct Spool {
    db: sled::Db,
    queue: sled::Tree,
    attempts: sled::Tree,
    inner: Mutex<Inner>,
    notify: Notify,
    limit_bytes: u64,
    /// One flush at a time: sled 0.34's `flush_async` deadlocks its I/O threads when many run
    /// at once (ten attempts starting and finishing together hung an agent for good).
    flushing: tokio::sync::Mutex<()>,
}

const META_AGENT: &[u8] = b"agent_id";

fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn decode_seq(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

impl Spool {
    /// Opens the spool in `dir` for `agent_id`. A spool left by another identity (the agent was
    /// registered again) is emptied: its reports cannot be delivered any more.
    pub fn open(dir: &Path, agent_id: &str, limit_bytes: u64) -> Result<Self> {
        let path = dir.join("spool");
        let db = sled::Config::new()
            .path(&path)
            .open()
            .map_err(|source| SpoolError::Open {
                path: path.clone(),
                source,
            })?;
        let queue = db.open_tree("queue")?;
        let attempts = db.open_tree("attempts")?;
        let owner = db.get(META_AGENT)?;
        if owner.as_deref() != Some(agent_id.as_bytes()) {
            if owner.is_some() {
                tracing::warn!(
                    "the spool belonged to another agent identity; its undelivered reports are dropped"
                );
            }
            queue.clear()?;
            attempts.clear()?;
            db.insert(META_AGENT, agent_id.as_bytes())?;
            db.flush()?;
        }
        let mut bytes = 0u64;
        for item in queue.iter() {
            let (_, v) = item?;
            bytes += v.len() as u64;
        }
        let next_seq = match queue.last()? {
            Some((k, _)) => decode_seq(&k) + 1,
            None => 1,
        };
        Ok(Self {
            db,
            queue,
            attempts,
            inner: Mutex::new(Inner {
                next_seq,
                cursor: 0,
                live: None,
                bytes,
                dropped: HashMap::new(),
            }),
            notify: Notify::new(),
            flushing: tokio::sync::Mutex::new(()),
            limit_bytes,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a report and returns its sequence number.
    fn enqueue(&self, body: Body) -> Result<u64> {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        let msg = pb::AgentMessage {
            seq,
            body: Some(body),
        };
        let bytes = msg.encode_to_vec();
        self.queue.insert(seq_key(seq), bytes.as_slice())?;
        inner.next_seq += 1;
        inner.bytes += bytes.len() as u64;
        drop(inner);
        self.notify.notify_one();
        Ok(seq)
    }

    /// Records that an attempt started here and queues its `AttemptStarted`, on disk before it
    /// returns.
    pub async fn started(&self, start: pb::AttemptStarted, boot_id: &str) -> Result<()> {
        let record = AttemptRecord {
            attempt_id: start.attempt_id.clone(),
            fencing_token: start.fencing_token,
            boot_id: boot_id.to_string(),
            finished: None,
            finished_seq: 0,
        };
        self.put_record(&record)?;
        self.enqueue(Body::Started(start))?;
        self.durable().await?;
        Ok(())
    }

    /// Queues log lines unless the spool is full; then they are counted and dropped.
    pub fn log(&self, log: pb::AttemptLog) -> Result<bool> {
        self.log_bounded(log, true)
    }

    /// Queues a short note even past the bound (the count of dropped lines).
    pub fn note(&self, log: pb::AttemptLog) -> Result<()> {
        self.log_bounded(log, false).map(|_| ())
    }

    fn log_bounded(&self, log: pb::AttemptLog, bounded: bool) -> Result<bool> {
        if bounded {
            let mut inner = self.lock();
            if inner.bytes >= self.limit_bytes {
                *inner.dropped.entry(log.attempt_id.clone()).or_default() += log.lines.len() as u64;
                return Ok(false);
            }
        }
        self.enqueue(Body::Log(log))?;
        Ok(true)
    }

    /// Log lines of `attempt_id` dropped so far because the spool was full (and forgets them).
    pub fn take_dropped(&self, attempt_id: &str) -> u64 {
        self.lock().dropped.remove(attempt_id).unwrap_or(0)
    }

    /// Records an attempt's result and queues its `AttemptFinished`, on disk before it returns.
    pub async fn finished(&self, finished: pb::AttemptFinished, boot_id: &str) -> Result<()> {
        let encoded = finished.encode_to_vec();
        let id = finished.attempt_id.clone();
        let token = finished.fencing_token;
        let seq = self.enqueue(Body::Finished(finished))?;
        self.put_record(&AttemptRecord {
            attempt_id: id,
            fencing_token: token,
            boot_id: boot_id.to_string(),
            finished: Some(encoded),
            finished_seq: seq,
        })?;
        self.durable().await?;
        Ok(())
    }

    /// Makes everything written so far durable; flushes run one at a time (see `flushing`), and
    /// one flush covers every write made before it started.
    async fn durable(&self) -> Result<()> {
        let _one = self.flushing.lock().await;
        self.db.flush_async().await?;
        Ok(())
    }

    fn put_record(&self, r: &AttemptRecord) -> Result<()> {
        let bytes = serde_json::to_vec(r).map_err(|e| SpoolError::Corrupt(e.to_string()))?;
        self.attempts.insert(r.attempt_id.as_bytes(), bytes)?;
        Ok(())
    }

    fn records(&self) -> Result<Vec<AttemptRecord>> {
        self.attempts
            .iter()
            .map(|item| {
                let (_, v) = item?;
                serde_json::from_slice(&v).map_err(|e| SpoolError::Corrupt(e.to_string()))
            })
            .collect()
    }

    /// Attempts a previous agent process was running when it stopped without reporting them:
    /// their id and fencing token. The caller reports them lost.
    pub fn orphans(&self, boot_id: &str) -> Result<Vec<(String, u64)>> {
        Ok(self
            .records()?
            .into_iter()
            .filter(|r| r.finished.is_none() && r.boot_id != boot_id)
            .map(|r| (r.attempt_id, r.fencing_token))
            .collect())
    }

    /// Results the scheduler has not acknowledged yet, for the Hello.
    pub fn unacknowledged_results(&self) -> Result<Vec<pb::AttemptFinished>> {
        let mut out = Vec::new();
        for r in self.records()? {
            if let Some(bytes) = r.finished {
                out.push(
                    pb::AttemptFinished::decode(bytes.as_slice())
                        .map_err(|e| SpoolError::Corrupt(e.to_string()))?,
                );
            }
        }
        Ok(out)
    }

    /// Sends an ephemeral message on the current session, if there is one.
    pub fn send_live(&self, body: Body) {
        if let Some(tx) = &self.lock().live {
            let _ = tx.try_send(pb::AgentMessage {
                seq: 0,
                body: Some(body),
            });
        }
    }

    /// Forgets everything up to and including `up_to`, and the attempts whose results are in it.
    pub fn ack(&self, up_to: u64) -> Result<()> {
        if up_to == 0 {
            return Ok(());
        }
        let mut freed = 0u64;
        let mut batch = sled::Batch::default();
        for item in self.queue.range(..=seq_key(up_to)) {
            let (k, v) = item?;
            freed += v.len() as u64;
            batch.remove(k);
        }
        self.queue.apply_batch(batch)?;
        for r in self.records()? {
            if r.finished.is_some() && r.finished_seq <= up_to {
                self.attempts.remove(r.attempt_id.as_bytes())?;
            }
        }
        let mut inner = self.lock();
        inner.bytes = inner.bytes.saturating_sub(freed);
        inner.cursor = inner.cursor.max(up_to + 1);
        Ok(())
    }

    /// Starts a new session: everything unacknowledged will be sent again, in order.
    pub fn begin_session(&self, live: mpsc::Sender<pb::AgentMessage>) {
        let first = self
            .queue
            .first()
            .ok()
            .flatten()
            .map(|(k, _)| decode_seq(&k))
            .unwrap_or(0);
        let mut inner = self.lock();
        inner.cursor = first;
        inner.live = Some(live);
        drop(inner);
        self.notify.notify_one();
    }

    pub fn end_session(&self) {
        self.lock().live = None;
    }

    /// Unacknowledged reports.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Bytes of unacknowledged reports.
    pub fn pending_bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// The next report to send on this session; waits for one.
    pub async fn next(&self) -> Result<pb::AgentMessage> {
        loop {
            let notified = self.notify.notified();
            let cursor = self.lock().cursor;
            if let Some(item) = self.queue.range(seq_key(cursor)..).next() {
                let (k, v) = item?;
                let seq = decode_seq(&k);
                {
                    let mut inner = self.lock();
                    // Another call may have moved the cursor meanwhile; never go backwards.
                    if inner.cursor > seq {
                        continue;
                    }
                    inner.cursor = seq + 1;
                }
                return pb::AgentMessage::decode(v.as_ref())
                    .map_err(|e| SpoolError::Corrupt(e.to_string()));
            }
            notified.await;
        }
    }

    /// Writes everything to disk (shutdown).
    pub async fn flush(&self) -> Result<()> {
        self.durable().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Spool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match Spool::open(dir, "agt-1", 1 << 20) {
                Ok(s) => return s,
                Err(e) if std::time::Instant::now() > deadline => panic!("{e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
    }

    fn log(attempt: &str, n: usize) -> pb::AttemptLog {
        pb::AttemptLog {
            attempt_id: attempt.into(),
            fencing_token: 1,
            lines: (0..n)
                .map(|i| pb::LogLine {
                    index: i as u64,
                    ts_ms: 0,
                    level: "info".into(),
                    message: "x".repeat(100),
                })
                .collect(),
        }
    }

    fn finished(attempt: &str) -> pb::AttemptFinished {
        pb::AttemptFinished {
            attempt_id: attempt.into(),
            fencing_token: 1,
            status: pb::AttemptStatus::Succeeded as i32,
            stats: None,
            error: String::new(),
        }
    }

    #[tokio::test]
    async fn replays_unacknowledged_after_reconnect() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| SpoolError::Corrupt(e.to_string()))?;
        let spool = open(dir.path());
        let (tx, _rx) = mpsc::channel(8);
        spool.begin_session(tx.clone());
        for _ in 0..3 {
            spool.log(log("a", 1))?;
        }
        assert_eq!(spool.next().await?.seq, 1);
        assert_eq!(spool.next().await?.seq, 2);
        spool.ack(1)?;
        // Connection lost; a new session starts from the first unacknowledged report.
        spool.begin_session(tx);
        assert_eq!(spool.next().await?.seq, 2);
        assert_eq!(spool.next().await?.seq, 3);
        spool.ack(3)?;
        assert_eq!(spool.pending(), 0);
        Ok(())
    }

    #[tokio::test]
    async fn results_survive_a_restart_until_acknowledged() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| SpoolError::Corrupt(e.to_string()))?;
        {
            let spool = open(dir.path());
            spool
                .started(
                    pb::AttemptStarted {
                        attempt_id: "a".into(),
                        fencing_token: 1,
                    },
                    "boot-1",
                )
                .await?;
            spool
                .started(
                    pb::AttemptStarted {
                        attempt_id: "b".into(),
                        fencing_token: 1,
                    },
                    "boot-1",
                )
                .await?;
            spool.log(log("a", 2))?;
            spool.finished(finished("a"), "boot-1").await?;
        }
        let spool = open(dir.path());
        // "b" was running when the process went away; "a" finished and is reported in the Hello.
        assert_eq!(spool.orphans("boot-2")?, vec![("b".to_string(), 1)]);
        let results = spool.unacknowledged_results()?;
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].attempt_id, "a");
        let (tx, _rx) = mpsc::channel(8);
        spool.begin_session(tx);
        let mut seqs = Vec::new();
        for _ in 0..4 {
            seqs.push(spool.next().await?.seq);
        }
        assert_eq!(seqs, vec![1, 2, 3, 4]);
        spool.ack(4)?;
        assert!(spool.unacknowledged_results()?.is_empty());
        assert_eq!(spool.pending(), 0);
        Ok(())
    }

    #[tokio::test]
    async fn full_spool_drops_logs_but_keeps_results() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| SpoolError::Corrupt(e.to_string()))?;
        let spool = Spool::open(dir.path(), "agt-1", 4096)?;
        let mut kept = 0;
        for _ in 0..100 {
            if spool.log(log("a", 5))? {
                kept += 1;
            }
        }
        assert!(kept < 100, "the bound was not applied");
        assert_eq!(spool.take_dropped("a"), (100 - kept) * 5);
        spool.finished(finished("a"), "boot-1").await?;
        assert_eq!(spool.unacknowledged_results()?.len(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn another_identity_starts_empty() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| SpoolError::Corrupt(e.to_string()))?;
        {
            let spool = open(dir.path());
            spool.finished(finished("a"), "boot-1").await?;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let spool = loop {
            match Spool::open(dir.path(), "agt-2", 1 << 20) {
                Ok(s) => break s,
                Err(e) if std::time::Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        };
        assert_eq!(spool.pending(), 0);
        assert!(spool.unacknowledged_results()?.is_empty());
        Ok(())
    }
}
