//! Connectors whose library blocks (SQLite, files) implement the `Blocking*` traits here, which
//! mirror the plugin traits without futures; [`blocking_reader`] / [`blocking_writer`] run them
//! on tokio's blocking pool, so the engine sees one kind of plugin and no async worker ever
//! waits on a disk. A blocking split gets a sink of its own on the same channel; a blocking
//! writer channel is lent to the pool for each batch.

use super::{
    Batch, BoxFuture, JobLog, ReadSplit, Reader, Result, RowSink, Shared, SyncError, TargetInfo,
    WriteChannel, Writer,
};
use crate::sync::value::Row;
use std::sync::Arc;

/// The sink of a split that runs on the blocking pool.
pub struct BlockingSink(RowSink);

impl BlockingSink {
    pub fn shared(&self) -> &Shared {
        self.0.shared()
    }

    /// Adds a row; waits (blocking the pool thread) while the channel is full.
    pub fn push(&mut self, row: Row) -> Result<()> {
        if self.0.add(row) {
            self.flush()?;
        }
        Ok(())
    }

    /// A row the reader cannot convert: counted as read, and as a dirty record.
    pub fn dirty(&self, row: &Row, column: Option<&str>, reason: &str) -> Result<()> {
        self.0.dirty(row, column, reason)
    }

    fn flush(&mut self) -> Result<()> {
        let Some((batch, bytes)) = self.0.take()? else {
            return Ok(());
        };
        self.0.shared.throttle.acquire(batch.len() as u64, bytes);
        self.0
            .tx
            .send(Batch::Rows(batch))
            .map_err(|_| SyncError::Killed("the writer stopped".into()))
    }
}

/// [`ReadSplit`] for blocking code.
pub trait BlockingReadSplit: Send + 'static {
    fn describe(&self) -> String;
    fn run(self: Box<Self>, sink: &mut BlockingSink, target: &TargetInfo) -> Result<()>;
}

/// [`Reader`] for blocking code.
pub trait BlockingReader: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn splits(&self, channels: usize, log: &JobLog) -> Result<Vec<Box<dyn BlockingReadSplit>>>;
}

/// [`WriteChannel`] for blocking code.
pub trait BlockingWriteChannel: Send + 'static {
    fn write(&mut self, rows: Vec<Row>, shared: &Shared) -> Result<()>;
    fn commit(self: Box<Self>, shared: &Shared) -> Result<()>;
}

/// [`Writer`] for blocking code.
pub trait BlockingWriter: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn prepare(&self, log: &JobLog) -> Result<()>;
    fn target_info(&self) -> TargetInfo {
        TargetInfo::default()
    }
    fn parallelism(&self) -> usize;
    fn open(&self, index: usize) -> Result<Box<dyn BlockingWriteChannel>>;
    fn finish(&self, log: &JobLog) -> Result<()>;
    fn abort(&self, log: &JobLog);
}

/// Runs `f` on tokio's blocking pool.
async fn on_pool<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SyncError::Internal(format!("worker panicked: {e}")))
}

/// A blocking reader or writer, run on the blocking pool.
struct OnPool<T: ?Sized>(Arc<T>);

/// The engine's view of a blocking reader.
pub fn blocking_reader(r: impl BlockingReader) -> Box<dyn Reader> {
    Box::new(OnPool(Arc::new(r)))
}

/// The engine's view of a blocking writer.
pub fn blocking_writer(w: impl BlockingWriter) -> Box<dyn Writer> {
    Box::new(OnPool(Arc::new(w)))
}

impl<R: BlockingReader> Reader for OnPool<R> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn splits<'a>(
        &'a self,
        channels: usize,
        log: &'a JobLog,
    ) -> BoxFuture<'a, Result<Vec<Box<dyn ReadSplit>>>> {
        let (r, log) = (self.0.clone(), log.clone());
        Box::pin(async move {
            let splits = on_pool(move || r.splits(channels, &log)).await??;
            Ok(splits
                .into_iter()
                .map(|s| Box::new(PoolSplit(s)) as Box<dyn ReadSplit>)
                .collect())
        })
    }
}

struct PoolSplit(Box<dyn BlockingReadSplit>);

impl ReadSplit for PoolSplit {
    fn describe(&self) -> String {
        self.0.describe()
    }

    fn run<'a>(
        self: Box<Self>,
        sink: &'a mut RowSink,
        target: &'a TargetInfo,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            sink.flush().await?;
            let mut own = BlockingSink(sink.fork());
            let (split, target) = (self.0, target.clone());
            on_pool(move || {
                split.run(&mut own, &target)?;
                own.flush()
            })
            .await?
        })
    }
}

impl<W: BlockingWriter> Writer for OnPool<W> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn prepare<'a>(&'a self, log: &'a JobLog) -> BoxFuture<'a, Result<()>> {
        let (w, log) = (self.0.clone(), log.clone());
        Box::pin(async move { on_pool(move || w.prepare(&log)).await? })
    }

    fn target_info(&self) -> TargetInfo {
        self.0.target_info()
    }

    fn parallelism(&self) -> usize {
        self.0.parallelism()
    }

    fn open(&self, index: usize) -> BoxFuture<'_, Result<Box<dyn WriteChannel>>> {
        let w = self.0.clone();
        Box::pin(async move {
            let ch = on_pool(move || w.open(index)).await??;
            Ok(Box::new(PoolChannel(Some(ch))) as Box<dyn WriteChannel>)
        })
    }

    fn finish<'a>(&'a self, log: &'a JobLog) -> BoxFuture<'a, Result<()>> {
        let (w, log) = (self.0.clone(), log.clone());
        Box::pin(async move { on_pool(move || w.finish(&log)).await? })
    }

    fn abort<'a>(&'a self, log: &'a JobLog) -> BoxFuture<'a, ()> {
        let (w, log) = (self.0.clone(), log.clone());
        Box::pin(async move {
            let _ = on_pool(move || w.abort(&log)).await;
        })
    }
}

/// A blocking channel, lent to the blocking pool for each batch.
struct PoolChannel(Option<Box<dyn BlockingWriteChannel>>);

impl WriteChannel for PoolChannel {
    fn write<'a>(
        &'a mut self,
        rows: Vec<Row>,
        shared: &'a Arc<Shared>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut ch = self
                .0
                .take()
                .ok_or_else(|| SyncError::Internal("writer channel lost".into()))?;
            let shared = shared.clone();
            let (ch, result) = on_pool(move || {
                let r = ch.write(rows, &shared);
                (ch, r)
            })
            .await?;
            self.0 = Some(ch);
            result
        })
    }

    fn commit(self: Box<Self>, shared: &Arc<Shared>) -> BoxFuture<'_, Result<()>> {
        let shared = shared.clone();
        Box::pin(async move {
            let ch = self
                .0
                .ok_or_else(|| SyncError::Internal("writer channel lost".into()))?;
            on_pool(move || ch.commit(&shared)).await?
        })
    }
}
