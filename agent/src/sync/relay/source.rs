//! The writer leg's reader: receives the reader leg's row batches from the relay and feeds them
//! to the engine, one split per channel, all drawing from one decoding task.
//!
//! Exactness lives here: the splits end without error only when the reader leg's `RelayEnd`
//! arrived and the rows received are exactly the rows it says it sent. Anything else (an abort,
//! a broken or closed stream, a count that differs) fails the splits, so the engine never
//! commits the writer's transactions.

use super::{Inbound, Link, codec, frame};
use crate::sync::plugin::{
    BoxFuture, JobLog, RawBatch, ReadSplit, Reader, Result, RowSink, SyncError, TargetInfo,
};
use ferry_proto::agent::v1 as pb;
use pb::relay_frame::Body;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;

/// What the decoding task hands the splits: rows in the column model, or raw rows with the
/// name of their format.
enum Item {
    Rows(Vec<crate::sync::value::Row>),
    Raw {
        format: String,
        data: bytes::Bytes,
        starts: Vec<u64>,
    },
}

/// What the splits share.
struct State {
    tx: mpsc::Sender<pb::RelayFrame>,
    /// Why the relay failed, once it has.
    failure: Mutex<Option<String>>,
    /// The reader leg's end frame, once it arrived with the right count.
    end: OnceLock<pb::RelayEnd>,
    target_sent: AtomicBool,
    peer: String,
}

impl State {
    fn fail(&self, why: String) {
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(why);
        }
    }

    fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Stands in for the reader on the writer leg (see the module documentation of `relay`).
pub struct RelaySource {
    rx: Mutex<Option<Inbound>>,
    state: Arc<State>,
    /// The decoding task; it hands the inbound stream back when it ends, so the stream stays
    /// open until the verdict is out.
    task: Mutex<Option<JoinHandle<Inbound>>>,
}

impl RelaySource {
    pub fn new(link: Link, peer: String) -> Self {
        Self {
            rx: Mutex::new(Some(link.rx)),
            state: Arc::new(State {
                tx: link.tx,
                failure: Mutex::new(None),
                end: OnceLock::new(),
                target_sent: AtomicBool::new(false),
                peer,
            }),
            task: Mutex::new(None),
        }
    }

    /// The reader leg's end frame, when every row arrived.
    pub fn end(&self) -> Option<pb::RelayEnd> {
        self.state.end.get().cloned()
    }

    /// Waits (a little) for the other leg to close its side after the verdict, then lets go.
    pub async fn close(&self) {
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        let rx = match task {
            Some(t) => t.await.ok(),
            None => self.rx.lock().unwrap_or_else(|p| p.into_inner()).take(),
        };
        if let Some(mut rx) = rx {
            let drain = async { while rx.next().await.is_some() {} };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
        }
    }
}

impl Reader for RelaySource {
    fn name(&self) -> &'static str {
        "relay (reader leg)"
    }

    /// Waits until the reader leg has cut its source, then starts decoding what it sends.
    fn splits<'a>(
        &'a self,
        channels: usize,
        log: &'a JobLog,
    ) -> BoxFuture<'a, Result<Vec<Box<dyn ReadSplit>>>> {
        Box::pin(async move {
            let taken = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take();
            let Some(mut rx) = taken else {
                return Err(SyncError::Internal(
                    "the relay source was split twice".into(),
                ));
            };
            let peer = &self.state.peer;
            log.info(format!("waiting for {peer} to open the source"));
            loop {
                match rx.next().await {
                    Some(Ok(f)) => match f.body {
                        Some(Body::SourceReady(_)) => break,
                        Some(Body::Abort(a)) => {
                            return Err(SyncError::Source(format!("{peer} gave up: {}", a.error)));
                        }
                        _ => continue,
                    },
                    Some(Err(e)) => {
                        return Err(SyncError::Source(format!(
                            "relay broke before the source was ready: {e}"
                        )));
                    }
                    None => {
                        return Err(SyncError::Source(format!(
                            "relay closed before {peer} opened the source"
                        )));
                    }
                }
            }
            log.info("source ready on the reader leg; rows arrive through the relay");
            let (items_tx, items_rx) = flume::bounded::<Item>(channels.max(1) * 2);
            let state = self.state.clone();
            let task = tokio::spawn(async move {
                decode(&mut rx, items_tx, &state).await;
                rx
            });
            *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
            Ok((0..channels.max(1))
                .map(|i| {
                    Box::new(RelaySplit {
                        index: i,
                        items: items_rx.clone(),
                        state: self.state.clone(),
                    }) as Box<dyn ReadSplit>
                })
                .collect())
        })
    }
}

/// Decodes frames into items until the end frame, an abort or a broken stream; checks the
/// count against the end frame.
async fn decode(rx: &mut Inbound, items: flume::Sender<Item>, state: &State) {
    let peer = &state.peer;
    let mut received = 0u64;
    loop {
        let f = match rx.next().await {
            Some(Ok(f)) => f,
            Some(Err(e)) => return state.fail(format!("relay broke: {e}")),
            None => {
                return state.fail(format!(
                    "relay closed before {peer} sent all its rows ({received} received)"
                ));
            }
        };
        let item = match f.body {
            Some(Body::Rows(b)) if b.raw_format.is_empty() => {
                match codec::decode_rows(&b.data, b.rows as usize) {
                    Ok(rows) => Item::Rows(rows),
                    Err(e) => return state.fail(format!("a damaged batch of rows: {e}")),
                }
            }
            Some(Body::Rows(b)) => {
                if b.starts.len() != b.rows as usize
                    || b.starts.iter().any(|s| *s > b.data.len() as u64)
                {
                    return state.fail("a damaged batch of raw rows".into());
                }
                Item::Raw {
                    format: b.raw_format,
                    data: b.data,
                    starts: b.starts,
                }
            }
            Some(Body::End(end)) => {
                if end.rows != received {
                    return state.fail(format!(
                        "{peer} sent {} rows but {received} arrived; nothing is committed",
                        end.rows
                    ));
                }
                let _ = state.end.set(end);
                return;
            }
            Some(Body::Abort(a)) => return state.fail(format!("{peer} gave up: {}", a.error)),
            _ => continue,
        };
        received += match &item {
            Item::Rows(r) => r.len() as u64,
            Item::Raw { starts, .. } => starts.len() as u64,
        };
        if items.send_async(item).await.is_err() {
            // The splits stopped (the writer failed or the attempt was killed).
            return;
        }
    }
}

struct RelaySplit {
    index: usize,
    items: flume::Receiver<Item>,
    state: Arc<State>,
}

fn target_ready(target: &TargetInfo) -> pb::TargetReady {
    pb::TargetReady {
        raw_format: target
            .raw
            .as_ref()
            .map(|r| r.format.to_string())
            .unwrap_or_default(),
        column_types: target
            .raw
            .as_ref()
            .map(|r| r.column_types.clone())
            .unwrap_or_default(),
        has_binary_columns: target.binary_columns.is_some(),
        binary_columns: target.binary_columns.clone().unwrap_or_default(),
    }
}

impl ReadSplit for RelaySplit {
    fn describe(&self) -> String {
        format!("relay channel {}", self.index)
    }

    fn run<'a>(
        self: Box<Self>,
        sink: &'a mut RowSink,
        target: &'a TargetInfo,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let state = &self.state;
            if !state.target_sent.swap(true, Ordering::Relaxed) {
                // The engine runs splits only after the writer prepared (preSql): the reader
                // leg may start sending now.
                let ready = frame(Body::TargetReady(target_ready(target)));
                state
                    .tx
                    .send(ready)
                    .await
                    .map_err(|_| SyncError::Source(format!("relay to {} closed", state.peer)))?;
            }
            let own = target.raw.as_ref().map(|r| r.format);
            while let Ok(item) = self.items.recv_async().await {
                match item {
                    Item::Rows(rows) => {
                        for row in rows {
                            sink.push(row).await?;
                        }
                    }
                    Item::Raw {
                        format,
                        data,
                        starts,
                    } => {
                        let Some(format) = own.filter(|f| *f == format) else {
                            return Err(SyncError::Source(format!(
                                "rows arrived in {format}, which this writer does not take as they are"
                            )));
                        };
                        let starts = starts.into_iter().map(|s| s as usize).collect();
                        sink.push_raw(RawBatch {
                            format,
                            data,
                            starts,
                        })
                        .await?;
                    }
                }
            }
            match state.failure() {
                Some(why) => Err(SyncError::Source(why)),
                None if state.end.get().is_some() => Ok(()),
                // The decoding task stopped because the splits did: another error says why.
                None => Err(SyncError::Killed("the relay stopped".into())),
            }
        })
    }
}
