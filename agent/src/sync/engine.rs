//! The pipeline that binds one reader to one writer, its counters, dirty-record accounting and
//! cancellation.

use super::throttle::{SystemClock, Throttle};
use super::value::{Row, Value, clip, row_size};
use super::{mysql, postgres, sqlite, stream, txtfile};
use ferry_common::job::{JobSpec, ReaderConfig, Setting, WriterConfig};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Why a sync failed; each message says what to look at.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("reader: {0}")]
    Source(String),
    #[error("writer: {0}")]
    Target(String),
    #[error(
        "{count} dirty records exceed errorLimit.record = {limit} (a job without errorLimit allows none); the first ones and their reasons are in the log"
    )]
    DirtyLimit { count: u64, limit: u64 },
    #[error(
        "dirty records are {percent:.2}% of {total} records, over errorLimit.percentage = {limit}"
    )]
    DirtyPercentage {
        percent: f64,
        total: u64,
        limit: f64,
    },
    #[error("killed: {0}")]
    Killed(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = SyncError> = std::result::Result<T, E>;

/// Live counters of one attempt, read by the progress reporter.
#[derive(Debug, Default)]
pub struct Counters {
    pub records_read: AtomicU64,
    pub bytes_read: AtomicU64,
    pub records_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub dirty: AtomicU64,
    pub splits_done: AtomicU64,
    pub splits_total: AtomicU64,
}

/// Final statistics of a successful sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub records_read: u64,
    pub bytes_read: u64,
    pub records_written: u64,
    pub bytes_written: u64,
    pub dirty_records: u64,
    pub elapsed_ms: u64,
    pub splits_done: u64,
    pub splits_total: u64,
}

impl Counters {
    pub fn summary(&self, elapsed_ms: u64) -> Summary {
        Summary {
            records_read: self.records_read.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            records_written: self.records_written.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            dirty_records: self.dirty.load(Ordering::Relaxed),
            elapsed_ms,
            splits_done: self.splits_done.load(Ordering::Relaxed),
            splits_total: self.splits_total.load(Ordering::Relaxed),
        }
    }
}

/// A line of an attempt's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub level: &'static str,
    pub message: String,
}

/// The attempt's log: lines go to the scheduler, and to the agent's own tracing output.
#[derive(Debug, Clone)]
pub struct JobLog {
    tx: mpsc::UnboundedSender<LogEntry>,
}

impl JobLog {
    pub fn new(tx: mpsc::UnboundedSender<LogEntry>) -> Self {
        Self { tx }
    }

    fn line(&self, level: &'static str, message: String) {
        match level {
            "error" => tracing::error!("{message}"),
            "warn" => tracing::warn!("{message}"),
            _ => tracing::info!("{message}"),
        }
        // The receiver lives as long as the attempt; after that nothing is listening.
        let _ = self.tx.send(LogEntry { level, message });
    }

    pub fn info(&self, message: impl Into<String>) {
        self.line("info", message.into());
    }
    pub fn warn(&self, message: impl Into<String>) {
        self.line("warn", message.into());
    }
    pub fn error(&self, message: impl Into<String>) {
        self.line("error", message.into());
    }
}

/// How many dirty records are logged one by one before the log only counts them.
const DIRTY_SAMPLES: u64 = 10;

/// What every worker of one attempt shares.
pub struct Shared {
    pub counters: Counters,
    pub log: JobLog,
    pub cancel: CancellationToken,
    /// Dirty records allowed before the job fails (`ErrorLimit::record_limit`).
    dirty_limit: u64,
    throttle: Throttle,
    /// `job.setting.dirty.path`: every dirty record as a JSON line.
    dirty_file: Mutex<Option<std::io::BufWriter<std::fs::File>>>,
}

impl Shared {
    pub fn new(log: JobLog, cancel: CancellationToken, dirty_limit: u64) -> Self {
        Self {
            counters: Counters::default(),
            log,
            cancel,
            dirty_limit,
            throttle: Throttle::unlimited(),
            dirty_file: Mutex::new(None),
        }
    }

    /// Appends dirty records to `path` (created with its folder if needed).
    pub fn open_dirty_file(&self, path: &str) -> Result<()> {
        let p = std::path::Path::new(path);
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| SyncError::Internal(format!("dirty-record file {path}: {e}")))?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(|e| SyncError::Internal(format!("dirty-record file {path}: {e}")))?;
        *self.dirty_file.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(std::io::BufWriter::new(f));
        self.log.info(format!("dirty records go to {path}"));
        Ok(())
    }

    /// Flushes the dirty-record file.
    pub fn close_dirty_file(&self) {
        use std::io::Write;
        if let Some(f) = self
            .dirty_file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            let _ = f.flush();
        }
    }

    /// Applies the job's speed limits to every channel.
    pub fn with_throttle(mut self, throttle: Throttle) -> Self {
        self.throttle = throttle;
        self
    }

    /// Counts a dirty record; fails once the count passes `errorLimit.record`. `row` holds the
    /// row's values in the column model (as read, or as converted for the target), `column` the
    /// column at fault when one is. The dirty-record file gets the whole row, typed, so it can be
    /// fixed and replayed; the log gets the first ones, long values clipped.
    pub fn dirty(&self, side: &str, row: &Row, column: Option<&str>, reason: &str) -> Result<()> {
        let n = self.counters.dirty.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(f) = self
            .dirty_file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            use std::io::Write;
            let line = serde_json::json!({
                "side": side,
                "column": column,
                "reason": reason,
                "types": row.iter().map(Value::type_name).collect::<Vec<_>>(),
                "row": row.iter().map(Value::to_json).collect::<Vec<_>>(),
            });
            if writeln!(f, "{line}").is_err() {
                self.log.warn("cannot append to the dirty-record file");
            }
        }
        if n <= DIRTY_SAMPLES {
            let shown: Vec<String> = row
                .iter()
                .take(16)
                .map(|v| clip(&v.to_json().to_string()))
                .collect();
            let at = column.map(|c| format!(", column {c}")).unwrap_or_default();
            self.log.warn(format!(
                "dirty record #{n} ({side}{at}): {reason}; row: [{}]",
                shown.join(", ")
            ));
        } else if n == DIRTY_SAMPLES + 1 {
            self.log
                .warn("more dirty records: only counted from here on");
        }
        if n > self.dirty_limit {
            return Err(SyncError::DirtyLimit {
                count: n,
                limit: self.dirty_limit,
            });
        }
        Ok(())
    }

    /// Counts rows the target has taken.
    pub fn written(&self, rows: u64, bytes: u64) {
        self.counters
            .records_written
            .fetch_add(rows, Ordering::Relaxed);
        self.counters
            .bytes_written
            .fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn check_cancel(&self) -> Result<()> {
        if self.cancel.is_cancelled() {
            Err(SyncError::Killed("the attempt was stopped".into()))
        } else {
            Ok(())
        }
    }
}

/// Rows per batch on the channel: large enough to amortise the hand-off, small enough that
/// `channels x queue depth x batch` stays a few MB.
pub const BATCH_ROWS: usize = 1024;

/// Where a reader puts its rows; batches them onto the channel and counts them.
/// What travels from readers to writers.
pub enum Batch {
    Rows(Vec<Row>),
    /// Tuples in PostgreSQL's binary COPY format, passed from a PostgreSQL reader to a
    /// PostgreSQL writer whose columns have exactly the source's types: nothing is decoded.
    PgCopy(PgCopyBatch),
}

/// Raw binary COPY tuples and where each starts.
pub struct PgCopyBatch {
    pub data: bytes::Bytes,
    pub starts: Vec<usize>,
}

pub struct RowSink<'a> {
    tx: &'a flume::Sender<Batch>,
    shared: &'a Shared,
    batch: Vec<Row>,
    batch_bytes: u64,
}

impl<'a> RowSink<'a> {
    fn new(tx: &'a flume::Sender<Batch>, shared: &'a Shared) -> Self {
        Self {
            tx,
            shared,
            batch: Vec::with_capacity(BATCH_ROWS),
            batch_bytes: 0,
        }
    }

    pub fn shared(&self) -> &Shared {
        self.shared
    }

    pub fn push(&mut self, row: Row) -> Result<()> {
        let size = row_size(&row) as u64;
        self.batch_bytes += size;
        self.shared
            .counters
            .bytes_read
            .fetch_add(size, Ordering::Relaxed);
        self.shared
            .counters
            .records_read
            .fetch_add(1, Ordering::Relaxed);
        self.batch.push(row);
        if self.batch.len() >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.shared.check_cancel()?;
        if self.batch.is_empty() {
            return Ok(());
        }
        self.shared
            .throttle
            .acquire(self.batch.len() as u64, self.batch_bytes);
        self.batch_bytes = 0;
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_ROWS));
        self.tx
            .send(Batch::Rows(batch))
            .map_err(|_| SyncError::Killed("the writer stopped".into()))
    }

    /// Sends raw binary COPY tuples (see [`Batch::PgCopy`]).
    pub fn push_pg_copy(&mut self, batch: PgCopyBatch) -> Result<()> {
        self.flush()?;
        let rows = batch.starts.len() as u64;
        let bytes = batch.data.len() as u64;
        self.shared
            .counters
            .records_read
            .fetch_add(rows, Ordering::Relaxed);
        self.shared
            .counters
            .bytes_read
            .fetch_add(bytes, Ordering::Relaxed);
        self.shared.throttle.acquire(rows, bytes);
        self.tx
            .send(Batch::PgCopy(batch))
            .map_err(|_| SyncError::Killed("the writer stopped".into()))
    }
}

/// One piece of the source, read by one worker.
pub trait ReadSplit: Send {
    fn describe(&self) -> String;
    /// Reads the split. `target` describes the writer (known once it has prepared), so a
    /// reader can pick a pass-through path.
    fn run(self: Box<Self>, sink: &mut RowSink<'_>, target: &TargetInfo) -> Result<()>;
}

/// A reader cuts its source into splits.
pub trait Reader: Send + Sync {
    fn name(&self) -> &'static str;
    /// Cuts the source; this checks the source is there before the writer touches the target.
    fn splits(&self, channels: usize, log: &JobLog) -> Result<Vec<Box<dyn ReadSplit>>>;
}

/// One writer worker's connection or file.
pub trait WriteChannel: Send {
    /// Writes a batch; rows the target refuses are reported with [`Shared::dirty`].
    fn write(&mut self, rows: Vec<Row>, shared: &Shared) -> Result<()>;
    /// Writes raw binary COPY tuples; only writers that announce [`TargetInfo::pg_copy_types`]
    /// receive them.
    fn write_pg_copy(&mut self, _batch: PgCopyBatch, _shared: &Shared) -> Result<()> {
        Err(SyncError::Internal(
            "this writer cannot take PostgreSQL COPY data".into(),
        ))
    }
    fn commit(self: Box<Self>, shared: &Shared) -> Result<()>;
}

/// What a writer tells readers about itself after `prepare`.
#[derive(Debug, Clone, Default)]
pub struct TargetInfo {
    /// A PostgreSQL writer's column type OIDs: a PostgreSQL reader whose columns have exactly
    /// these types may pass binary COPY tuples through untouched.
    pub pg_copy_types: Option<Vec<u32>>,
    /// Which target columns hold bytes, when the writer knows: a reader of untyped text (a
    /// text file read with `"*"`) decodes those fields from their bytes encoding instead of
    /// passing the encoded text on.
    pub binary_columns: Option<Vec<bool>>,
}

impl TargetInfo {
    /// Whether target column `i` is known to hold bytes.
    pub fn is_binary(&self, i: usize) -> bool {
        self.binary_columns
            .as_ref()
            .and_then(|b| b.get(i))
            .copied()
            .unwrap_or(false)
    }
}

/// A writer: prepares the target, opens channels, and finishes (or cleans up) at the end.
pub trait Writer: Send + Sync {
    fn name(&self) -> &'static str;
    fn prepare(&self, log: &JobLog) -> Result<()>;
    /// Facts readers may use, known after `prepare`.
    fn target_info(&self) -> TargetInfo {
        TargetInfo::default()
    }
    /// How many channels may write at once (1 for a single file or SQLite database).
    fn parallelism(&self) -> usize;
    fn open(&self, index: usize) -> Result<Box<dyn WriteChannel>>;
    fn finish(&self, log: &JobLog) -> Result<()>;
    /// Undo what a failed run left behind where that is possible (temporary files).
    fn abort(&self, log: &JobLog);
}

/// Ferry's reader for a job's reader configuration.
pub fn build_reader(cfg: &ReaderConfig) -> Box<dyn Reader> {
    match cfg {
        ReaderConfig::Stream(c) => Box::new(stream::StreamReader::new(c.clone())),
        ReaderConfig::Sqlite(c) => Box::new(sqlite::SqliteReader::new(c.clone())),
        ReaderConfig::TxtFile(c) => Box::new(txtfile::TxtFileReader::new(c.clone())),
        ReaderConfig::Mysql(c) => Box::new(mysql::MysqlReader::new(c.clone())),
        ReaderConfig::Postgresql(c) => Box::new(postgres::PgReader::new(c.clone())),
    }
}

/// Ferry's writer for a job's writer configuration; `attempt` names temporary files.
pub fn build_writer(cfg: &WriterConfig, attempt: &str) -> Box<dyn Writer> {
    match cfg {
        WriterConfig::Stream(c) => Box::new(stream::StreamWriter::new(c.clone())),
        WriterConfig::Sqlite(c) => Box::new(sqlite::SqliteWriter::new(c.clone())),
        WriterConfig::TxtFile(c) => Box::new(txtfile::TxtFileWriter::new(c.clone(), attempt)),
        WriterConfig::Mysql(c) => Box::new(mysql::MysqlWriter::new(c.clone())),
        WriterConfig::Postgresql(c) => Box::new(postgres::PgWriter::new(c.clone())),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SyncError::Internal(format!("worker panicked: {e}")))?
}

/// The throttle a job's `speed` settings ask for.
pub fn throttle_for(job: &JobSpec) -> Throttle {
    Throttle::new(
        job.setting.speed.record,
        job.setting.speed.byte,
        Arc::new(SystemClock::default()),
    )
}

/// Runs `job` to the end. `attempt` names temporary files so two attempts never share one.
pub async fn run(job: &JobSpec, attempt: &str, shared: Arc<Shared>) -> Result<Summary> {
    let reader: Arc<dyn Reader> = Arc::from(build_reader(&job.reader));
    let writer: Arc<dyn Writer> = Arc::from(build_writer(&job.writer, attempt));
    run_plugins(reader, writer, &job.setting, shared).await
}

/// Runs `reader` into `writer` with the job's settings: the engine itself, for any plugins.
pub async fn run_plugins(
    reader: Arc<dyn Reader>,
    writer: Arc<dyn Writer>,
    setting: &Setting,
    shared: Arc<Shared>,
) -> Result<Summary> {
    let started = Instant::now();
    let channels = setting.speed.channel.unwrap_or(1).clamp(1, 64) as usize;
    if setting.speed.record.is_some() || setting.speed.byte.is_some() {
        shared.log.info(format!(
            "speed limit: {} records/s, {} bytes/s across all channels",
            setting.speed.record.map_or("no".into(), |v| v.to_string()),
            setting.speed.byte.map_or("no".into(), |v| v.to_string())
        ));
    }
    shared.log.info(format!(
        "sync {} -> {} with {channels} channel(s)",
        reader.name(),
        writer.name()
    ));

    // The source is checked (split) before the writer runs preSql, so a missing source never
    // costs the target its rows.
    let splits = {
        let (r, s) = (reader.clone(), shared.clone());
        blocking(move || r.splits(channels, &s.log)).await?
    };
    shared.log.info(format!(
        "reader cut the source into {} split(s)",
        splits.len()
    ));
    shared
        .counters
        .splits_total
        .store(splits.len() as u64, Ordering::Relaxed);
    if let Some(path) = setting.dirty.as_ref().and_then(|d| d.path.as_deref()) {
        shared.open_dirty_file(path)?;
    }
    {
        let (w, s) = (writer.clone(), shared.clone());
        blocking(move || w.prepare(&s.log)).await?;
    }

    let result = pump(splits, channels, writer.clone(), shared.clone()).await;
    shared.close_dirty_file();
    let result = match result {
        Ok(()) => {
            let (w, s) = (writer.clone(), shared.clone());
            blocking(move || w.finish(&s.log)).await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        let (w, s) = (writer.clone(), shared.clone());
        let _ = tokio::task::spawn_blocking(move || w.abort(&s.log)).await;
        return Err(e);
    }

    let summary = shared
        .counters
        .summary(started.elapsed().as_millis() as u64);
    if let Some(limit) = setting.error_limit.percentage
        && summary.records_read > 0
    {
        let percent = summary.dirty_records as f64 * 100.0 / summary.records_read as f64;
        // DataX writes the percentage as a fraction (0.02 = 2%); so does Ferry.
        if percent > limit * 100.0 {
            return Err(SyncError::DirtyPercentage {
                percent,
                total: summary.records_read,
                limit,
            });
        }
    }
    Ok(summary)
}

/// Moves every split through the channel into the writer; the first error stops everything.
async fn pump(
    splits: Vec<Box<dyn ReadSplit>>,
    channels: usize,
    writer: Arc<dyn Writer>,
    shared: Arc<Shared>,
) -> Result<()> {
    let target = Arc::new(writer.target_info());
    let readers = channels.min(splits.len()).max(1);
    let writers = channels.min(writer.parallelism()).max(1);
    // A few batches in flight per channel let readers and writers overlap their waits.
    let (tx, rx) = flume::bounded::<Batch>(channels * 4);
    let queue = Arc::new(Mutex::new(VecDeque::from(splits)));
    let mut handles = Vec::new();
    for _ in 0..readers {
        let (tx, queue, shared, target) =
            (tx.clone(), queue.clone(), shared.clone(), target.clone());
        handles.push(tokio::task::spawn_blocking(move || {
            let result = (|| {
                loop {
                    let split = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                    let Some(split) = split else { return Ok(()) };
                    let what = split.describe();
                    let mut sink = RowSink::new(&tx, &shared);
                    split.run(&mut sink, &target)?;
                    sink.flush()?;
                    let done = shared.counters.splits_done.fetch_add(1, Ordering::Relaxed) + 1;
                    shared.log.info(format!(
                        "split {done}/{} done: {what}",
                        shared.counters.splits_total.load(Ordering::Relaxed)
                    ));
                }
            })();
            if result.is_err() {
                shared.cancel.cancel();
            }
            result
        }));
    }
    drop(tx);
    for index in 0..writers {
        let (rx, writer, shared) = (rx.clone(), writer.clone(), shared.clone());
        handles.push(tokio::task::spawn_blocking(move || {
            let result = (|| {
                let mut ch = writer.open(index)?;
                while let Ok(batch) = rx.recv() {
                    shared.check_cancel()?;
                    match batch {
                        Batch::Rows(rows) => ch.write(rows, &shared)?,
                        Batch::PgCopy(raw) => ch.write_pg_copy(raw, &shared)?,
                    }
                }
                shared.check_cancel()?;
                ch.commit(&shared)
            })();
            if result.is_err() {
                shared.cancel.cancel();
            }
            result
        }));
    }
    drop(rx);
    let mut first: Option<SyncError> = None;
    for h in handles {
        let r = h
            .await
            .map_err(|e| SyncError::Internal(format!("worker panicked: {e}")))
            .and_then(|r| r);
        if let Err(e) = r {
            // The error that caused the stop beats the "stopped" errors it caused elsewhere.
            let replace = match (&first, &e) {
                (None, _) => true,
                (Some(SyncError::Killed(_)), e) => !matches!(e, SyncError::Killed(_)),
                _ => false,
            };
            if replace {
                first = Some(e);
            }
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
