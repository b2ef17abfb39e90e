//! The reader leg's writer: sends the engine's row batches over the relay, then waits for the
//! writer leg's verdict.

use super::{FRAME_BYTES, Inbound, Link, codec, frame};
use crate::sync::plugin::{
    BoxFuture, JobLog, RawBatch, RawFormat, Result, Shared, SyncError, TargetInfo, WriteChannel,
    Writer,
};
use crate::sync::value::{Row, row_size};
use ferry_proto::agent::v1 as pb;
use pb::relay_frame::Body;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

/// Rows and bytes handed to the relay by all channels.
#[derive(Default)]
struct Sent {
    rows: AtomicU64,
    bytes: AtomicU64,
}

/// Stands in for the writer on the reader leg (see the module documentation of `relay`).
pub struct RelaySink {
    tx: mpsc::Sender<pb::RelayFrame>,
    rx: tokio::sync::Mutex<Inbound>,
    /// The writer leg's target, once it said it is ready.
    target: OnceLock<TargetInfo>,
    sent: Arc<Sent>,
    /// The attempt's counters, seen by the first channel, for the end frame.
    shared: Arc<OnceLock<Arc<Shared>>>,
    /// "the writer leg on agent … (group …)".
    peer: String,
}

impl RelaySink {
    pub fn new(link: Link, peer: String) -> Self {
        Self {
            tx: link.tx,
            rx: tokio::sync::Mutex::new(link.rx),
            target: OnceLock::new(),
            sent: Arc::default(),
            shared: Arc::default(),
            peer,
        }
    }

    async fn send(&self, body: Body) -> Result<()> {
        self.tx
            .send(frame(body))
            .await
            .map_err(|_| SyncError::Target(format!("relay to {} closed", self.peer)))
    }

    /// The next frame from the writer leg; its abort or a broken stream is an error.
    async fn next(&self, waiting_for: &str) -> Result<Option<Body>> {
        let mut rx = self.rx.lock().await;
        match rx.next().await {
            Some(Ok(f)) => match f.body {
                Some(Body::Abort(a)) => Err(SyncError::Target(format!(
                    "{} gave up: {}",
                    self.peer, a.error
                ))),
                other => Ok(other),
            },
            Some(Err(e)) => Err(SyncError::Target(format!(
                "relay broke while waiting for {waiting_for}: {e}"
            ))),
            None => Ok(None),
        }
    }
}

fn target_from(t: pb::TargetReady) -> TargetInfo {
    TargetInfo {
        raw: crate::sync::registry::raw_format(&t.raw_format).map(|format| RawFormat {
            format,
            column_types: t.column_types,
        }),
        binary_columns: t.has_binary_columns.then_some(t.binary_columns),
    }
}

impl Writer for RelaySink {
    fn name(&self) -> &'static str {
        "relay (writer leg)"
    }

    /// Says the source is cut, then waits until the writer leg has prepared its target.
    fn prepare<'a>(&'a self, log: &'a JobLog) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.send(Body::SourceReady(pb::SourceReady {})).await?;
            log.info(format!(
                "source ready; waiting for {} to prepare the target",
                self.peer
            ));
            loop {
                match self.next("the target to be ready").await? {
                    Some(Body::TargetReady(t)) => {
                        let info = target_from(t);
                        if let Some(raw) = &info.raw {
                            log.info(format!(
                                "target ready; it takes {} rows as they are",
                                raw.format
                            ));
                        } else {
                            log.info("target ready");
                        }
                        let _ = self.target.set(info);
                        return Ok(());
                    }
                    Some(_) => continue,
                    None => {
                        return Err(SyncError::Target(format!(
                            "relay closed before {} prepared the target",
                            self.peer
                        )));
                    }
                }
            }
        })
    }

    fn target_info(&self) -> TargetInfo {
        self.target.get().cloned().unwrap_or_default()
    }

    fn parallelism(&self) -> usize {
        64
    }

    fn open(&self, _index: usize) -> BoxFuture<'_, Result<Box<dyn WriteChannel>>> {
        Box::pin(async move {
            Ok(Box::new(RelayChannel {
                tx: self.tx.clone(),
                sent: self.sent.clone(),
                shared: self.shared.clone(),
                peer: self.peer.clone(),
            }) as Box<dyn WriteChannel>)
        })
    }

    /// Says how many rows went out, then waits for the writer leg's verdict.
    fn finish<'a>(&'a self, log: &'a JobLog) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let rows = self.sent.rows.load(Ordering::Relaxed);
            let (records_read, dirty_records) = self
                .shared
                .get()
                .map(|s| {
                    (
                        s.counters.records_read.load(Ordering::Relaxed),
                        s.counters.dirty.load(Ordering::Relaxed),
                    )
                })
                .unwrap_or((rows, 0));
            self.send(Body::End(pb::RelayEnd {
                rows,
                bytes: self.sent.bytes.load(Ordering::Relaxed),
                records_read,
                dirty_records,
            }))
            .await?;
            log.info(format!(
                "all {rows} rows handed to the relay; waiting for {} to commit",
                self.peer
            ));
            loop {
                match self.next("the writer's verdict").await {
                    Ok(Some(Body::Verdict(v))) if v.committed => {
                        log.info(format!(
                            "{} committed {} rows",
                            self.peer, v.records_written
                        ));
                        return Ok(());
                    }
                    Ok(Some(Body::Verdict(v))) => {
                        return Err(SyncError::Target(format!(
                            "{} did not commit: {}",
                            self.peer, v.error
                        )));
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(SyncError::Target(_)) => {
                        // Every row was handed over; whether the writer committed is its own
                        // report's to say, and the attempt's result is the writer's.
                        log.warn(format!(
                            "the relay closed before {} gave its verdict; the writer leg's own result decides the attempt",
                            self.peer
                        ));
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                }
            }
        })
    }

    fn abort<'a>(&'a self, _log: &'a JobLog) -> BoxFuture<'a, ()> {
        // `relay::run_leg` sends the abort with the reason.
        Box::pin(async {})
    }
}

/// One reader-leg channel: encodes batches into frames of about [`FRAME_BYTES`].
struct RelayChannel {
    tx: mpsc::Sender<pb::RelayFrame>,
    sent: Arc<Sent>,
    shared: Arc<OnceLock<Arc<Shared>>>,
    peer: String,
}

impl RelayChannel {
    async fn send(&self, body: Body, rows: u64, bytes: u64, shared: &Shared) -> Result<()> {
        self.tx
            .send(frame(body))
            .await
            .map_err(|_| SyncError::Target(format!("relay to {} closed", self.peer)))?;
        self.sent.rows.fetch_add(rows, Ordering::Relaxed);
        self.sent.bytes.fetch_add(bytes, Ordering::Relaxed);
        shared.written(rows, bytes);
        Ok(())
    }
}

impl WriteChannel for RelayChannel {
    fn write<'a>(
        &'a mut self,
        rows: Vec<Row>,
        shared: &'a Arc<Shared>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let _ = self.shared.set(shared.clone());
            let mut data = Vec::with_capacity(FRAME_BYTES.min(64 << 10));
            let (mut n, mut bytes) = (0u32, 0u64);
            for row in &rows {
                codec::encode_row(row, &mut data);
                n += 1;
                bytes += row_size(row) as u64;
                if data.len() >= FRAME_BYTES {
                    let batch = pb::RowBatch {
                        rows: n,
                        data: std::mem::take(&mut data).into(),
                        ..Default::default()
                    };
                    self.send(Body::Rows(batch), n.into(), bytes, shared)
                        .await?;
                    (n, bytes) = (0, 0);
                }
            }
            if n > 0 {
                let batch = pb::RowBatch {
                    rows: n,
                    data: data.into(),
                    ..Default::default()
                };
                self.send(Body::Rows(batch), n.into(), bytes, shared)
                    .await?;
            }
            Ok(())
        })
    }

    fn write_raw<'a>(
        &'a mut self,
        batch: RawBatch,
        shared: &'a Arc<Shared>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let _ = self.shared.set(shared.clone());
            let rows = batch.starts.len() as u64;
            let bytes = batch.data.len() as u64;
            let frame = pb::RowBatch {
                rows: batch.starts.len() as u32,
                data: batch.data,
                raw_format: batch.format.to_string(),
                starts: batch.starts.iter().map(|s| *s as u64).collect(),
            };
            self.send(Body::Rows(frame), rows, bytes, shared).await
        })
    }

    fn commit(self: Box<Self>, _shared: &Arc<Shared>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}
