//! The plugin boundary: what readers and writers implement and what they share with the
//! engine (the column model's rows travel in batches; counters, the attempt's log and dirty-record
//! accounting live in [`Shared`]). Connectors depend on this module only, never on the engine or
//! on each other; the engine depends on it and on [`super::registry`], never on a connector.
//!
//! The traits are async: database drivers run on the runtime like the rest of the agent.
//! Connectors built on blocking libraries implement the `Blocking*` twins instead, and
//! [`blocking_reader`] / [`blocking_writer`] run them on tokio's blocking pool ([`blocking`]).

mod blocking;

pub use blocking::{
    BlockingReadSplit, BlockingReader, BlockingSink, BlockingWriteChannel, BlockingWriter,
    blocking_reader, blocking_writer,
};

use super::throttle::Throttle;
use super::value::{Row, Value, clip, row_size};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// A boxed future that may move between threads: what the plugin traits return, so the engine
/// can hold any plugin behind `dyn`.
pub type BoxFuture<'a, T> = futures_util::future::BoxFuture<'a, T>;

/// What travels from readers to writers.
pub enum Batch {
    Rows(Vec<Row>),
    /// Rows still in a database's own wire format, passed from a reader to a writer that
    /// announced exactly that format and those column types ([`TargetInfo::raw`]): nothing is
    /// decoded on the way (PostgreSQL binary COPY tuples between identical tables).
    Raw(RawBatch),
}

/// Rows in a driver's own format and where each starts.
pub struct RawBatch {
    /// [`RawFormat::format`] of the rows.
    pub format: &'static str,
    pub data: bytes::Bytes,
    pub starts: Vec<usize>,
}

/// Where a reader puts its rows; batches them onto the channel and counts them.
pub struct RowSink {
    tx: flume::Sender<Batch>,
    shared: Arc<Shared>,
    batch: Vec<Row>,
    batch_bytes: u64,
}

impl RowSink {
    pub(crate) fn new(tx: flume::Sender<Batch>, shared: Arc<Shared>) -> Self {
        Self {
            tx,
            shared,
            batch: Vec::with_capacity(BATCH_ROWS),
            batch_bytes: 0,
        }
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Counts a row and adds it to the batch; answers whether the batch is full.
    pub(super) fn add(&mut self, row: Row) -> bool {
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
        self.batch.len() >= BATCH_ROWS
    }

    /// The batch to send, with its size, if there is one.
    pub(super) fn take(&mut self) -> Result<Option<(Vec<Row>, u64)>> {
        self.shared.check_cancel()?;
        if self.batch.is_empty() {
            return Ok(None);
        }
        let bytes = std::mem::take(&mut self.batch_bytes);
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_ROWS));
        Ok(Some((batch, bytes)))
    }

    pub async fn push(&mut self, row: Row) -> Result<()> {
        if self.add(row) {
            self.flush().await?;
        }
        Ok(())
    }

    /// A row the reader cannot convert: counted as read, and as a dirty record.
    pub fn dirty(&self, row: &Row, column: Option<&str>, reason: &str) -> Result<()> {
        self.shared
            .counters
            .records_read
            .fetch_add(1, Ordering::Relaxed);
        self.shared.dirty("reader", row, column, reason)
    }

    pub(crate) async fn flush(&mut self) -> Result<()> {
        let Some((batch, bytes)) = self.take()? else {
            return Ok(());
        };
        self.shared
            .throttle
            .acquire_async(batch.len() as u64, bytes)
            .await;
        self.tx
            .send_async(Batch::Rows(batch))
            .await
            .map_err(|_| SyncError::Killed("the writer stopped".into()))
    }

    /// Sends rows in the target's own format (see [`Batch::Raw`]).
    pub async fn push_raw(&mut self, batch: RawBatch) -> Result<()> {
        self.flush().await?;
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
        self.shared.throttle.acquire_async(rows, bytes).await;
        self.tx
            .send_async(Batch::Raw(batch))
            .await
            .map_err(|_| SyncError::Killed("the writer stopped".into()))
    }

    /// A sink of its own onto the same channel, for a split that runs on the blocking pool.
    pub(super) fn fork(&self) -> Self {
        Self::new(self.tx.clone(), self.shared.clone())
    }
}

/// One piece of the source, read by one worker.
pub trait ReadSplit: Send {
    fn describe(&self) -> String;
    /// Reads the split. `target` describes the writer (known once it has prepared), so a
    /// reader can pick a pass-through path.
    fn run<'a>(
        self: Box<Self>,
        sink: &'a mut RowSink,
        target: &'a TargetInfo,
    ) -> BoxFuture<'a, Result<()>>;
}

/// A reader cuts its source into splits.
pub trait Reader: Send + Sync {
    fn name(&self) -> &'static str;
    /// Cuts the source; this checks the source is there before the writer touches the target.
    fn splits<'a>(
        &'a self,
        channels: usize,
        log: &'a JobLog,
    ) -> BoxFuture<'a, Result<Vec<Box<dyn ReadSplit>>>>;
}

/// One writer worker's connection or file.
pub trait WriteChannel: Send {
    /// Writes a batch; rows the target refuses are reported with [`Shared::dirty`].
    fn write<'a>(
        &'a mut self,
        rows: Vec<Row>,
        shared: &'a Arc<Shared>,
    ) -> BoxFuture<'a, Result<()>>;
    /// Writes rows in the writer's own format; only writers that announce
    /// [`TargetInfo::raw`] receive them.
    fn write_raw<'a>(
        &'a mut self,
        batch: RawBatch,
        _shared: &'a Arc<Shared>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            Err(SyncError::Internal(format!(
                "this writer cannot take raw {} rows",
                batch.format
            )))
        })
    }
    fn commit(self: Box<Self>, shared: &Arc<Shared>) -> BoxFuture<'_, Result<()>>;
}

/// What a writer tells readers about itself after `prepare`.
#[derive(Debug, Clone, Default)]
pub struct TargetInfo {
    /// The wire format a writer takes as is, with its column types: a reader of the same
    /// database whose columns have exactly these types may pass rows through untouched.
    pub raw: Option<RawFormat>,
    /// Which target columns hold bytes, when the writer knows: a reader of untyped text (a
    /// text file read with `"*"`) decodes those fields from their bytes encoding instead of
    /// passing the encoded text on.
    pub binary_columns: Option<Vec<bool>>,
}

/// A driver's own row format and the column types it was produced for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFormat {
    /// The driver's name for the format (`postgresql-binary-copy`).
    pub format: &'static str,
    /// The driver's type ids of the target's columns.
    pub column_types: Vec<u32>,
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
    fn prepare<'a>(&'a self, log: &'a JobLog) -> BoxFuture<'a, Result<()>>;
    /// Facts readers may use, known after `prepare`.
    fn target_info(&self) -> TargetInfo {
        TargetInfo::default()
    }
    /// How many channels may write at once (1 for a single file or SQLite database).
    fn parallelism(&self) -> usize;
    fn open(&self, index: usize) -> BoxFuture<'_, Result<Box<dyn WriteChannel>>>;
    fn finish<'a>(&'a self, log: &'a JobLog) -> BoxFuture<'a, Result<()>>;
    /// Undo what a failed run left behind where that is possible (temporary files).
    fn abort<'a>(&'a self, log: &'a JobLog) -> BoxFuture<'a, ()>;
}
