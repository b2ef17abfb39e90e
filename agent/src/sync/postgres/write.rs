//! The PostgreSQL writer's bulk channel: rows are converted and encoded as binary COPY tuples
//! while earlier ones are on the wire, so the server ingests while the next rows convert; a
//! segment is one `COPY … FROM STDIN (FORMAT binary)`. Tuples passed through from a PostgreSQL
//! reader are sent as they are.

use super::codec::{self, PgValue, convert};
use super::{Target, describe};
use crate::sync::plugin::{JobLog, RawBatch, Result, SyncError};
use crate::sync::rdbms::{BadRow, BulkChannel, Refusal};
use crate::sync::value::{Row, row_size};
use bytes::{BufMut, Bytes, BytesMut};
use ferry_common::job::{RdbmsWriter, WriteMode};
use futures_util::SinkExt;
use std::pin::Pin;
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{Client, CopyInSink};

/// One writer channel: a connection in its transaction.
pub struct PgChannel {
    client: Client,
    target: Target,
    /// The staging table of update and replace modes.
    stage: Option<String>,
    /// The COPY in progress and its unsent bytes.
    copy: Option<(Pin<Box<CopyInSink<Bytes>>>, BytesMut)>,
    /// Rows per segment (`batchSize`).
    batch: usize,
}

/// A row of the COPY in progress.
pub enum SegRow {
    Values(Vec<PgValue>, u64),
    /// A tuple passed through from a PostgreSQL reader.
    Raw(Bytes),
}

impl SegRow {
    fn size(&self) -> u64 {
        match self {
            SegRow::Values(_, size) => *size,
            SegRow::Raw(b) => b.len() as u64,
        }
    }

    /// The row's values, for the dirty-record log.
    fn shown(&self, types: &[Type]) -> Row {
        match self {
            SegRow::Values(v, _) => shown(v),
            SegRow::Raw(b) => codec::tuple_values(b, types),
        }
    }
}

/// Binary COPY header: signature, flags, header extension length.
pub(super) const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// Send COPY data in chunks of about this size: large enough that the connection task is woken
/// rarely, small enough to keep memory flat.
const COPY_CHUNK: usize = 1 << 20;

/// Appends one row in binary COPY format; on an encoding error the buffer is left as it was.
fn encode_row(buf: &mut BytesMut, values: &[PgValue], types: &[Type]) -> Result<(), String> {
    let row_start = buf.len();
    buf.put_i16(values.len() as i16);
    for (v, ty) in values.iter().zip(types) {
        let at = buf.len();
        buf.put_i32(0);
        match v.to_sql(ty, buf) {
            Ok(IsNull::Yes) => {
                buf.truncate(at);
                buf.put_i32(-1);
            }
            Ok(IsNull::No) => {
                let len = (buf.len() - at - 4) as i32;
                buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
            }
            Err(e) => {
                buf.truncate(row_start);
                return Err(format!("cannot encode {v:?} as {ty}: {e}"));
            }
        }
    }
    Ok(())
}

/// Converted values back in the column model, for the dirty-record log.
fn shown(values: &[PgValue]) -> Row {
    values.iter().map(PgValue::to_value).collect()
}

/// A segment is also ended at this many bytes, which bounds a channel's memory whatever the
/// row width.
const SEGMENT_BYTES: u64 = 8 << 20;

/// A refusal from a server error; `None` for errors that are not about the data.
fn refusal(e: &tokio_postgres::Error) -> Option<Refusal> {
    e.as_db_error().map(|db| Refusal {
        reason: format!("{} ({})", db.message(), db.code().code()),
        column: db.column().map(str::to_string),
    })
}

impl PgChannel {
    /// A channel on `client`, whose transaction has begun; update and replace create their
    /// staging table.
    pub(super) async fn open(
        client: Client,
        target: Target,
        params: &RdbmsWriter,
        index: usize,
    ) -> Result<Self> {
        let stage = if params.write_mode == WriteMode::Insert {
            None
        } else {
            let stage = format!("ferry_stage_{index}");
            client
                .batch_execute(&format!(
                    "CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA",
                    target.columns.join(", "),
                    target.table
                ))
                .await
                .map_err(|e| SyncError::Target(describe(&e)))?;
            Some(stage)
        };
        Ok(Self {
            client,
            target,
            stage,
            copy: None,
            batch: params.batch_size.unwrap_or(65_536).max(1) as usize,
        })
    }

    async fn open_copy(&self) -> Result<Pin<Box<CopyInSink<Bytes>>>, tokio_postgres::Error> {
        let into = self.stage.as_deref().unwrap_or(&self.target.table);
        let sink = self
            .client
            .copy_in::<_, Bytes>(&format!(
                "COPY {into} ({}) FROM STDIN (FORMAT binary)",
                self.target.columns.join(", ")
            ))
            .await?;
        Ok(Box::pin(sink))
    }

    /// In update/replace mode, merges the staging table into the target.
    async fn merge(&self) -> Result<(), tokio_postgres::Error> {
        let Some(stage) = &self.stage else {
            return Ok(());
        };
        let cols = self.target.columns.join(", ");
        let updates: Vec<String> = self
            .target
            .columns
            .iter()
            .filter(|c| !self.target.conflict.contains(c))
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect();
        let action = if updates.is_empty() {
            "DO NOTHING".to_string()
        } else {
            format!("DO UPDATE SET {}", updates.join(", "))
        };
        self.client
            .batch_execute(&format!(
                "INSERT INTO {} ({cols}) SELECT {cols} FROM {stage} ON CONFLICT ({}) {action}; TRUNCATE {stage}",
                self.target.table,
                self.target.conflict.join(", ")
            ))
            .await
    }

    /// The COPY of the current segment, opened when there is none.
    async fn open_segment(&mut self) -> Result<()> {
        if self.copy.is_none() {
            let sink = self
                .open_copy()
                .await
                .map_err(|e| SyncError::Target(describe(&e)))?;
            let mut buf = BytesMut::with_capacity(COPY_CHUNK + (64 << 10));
            buf.put_slice(COPY_HEADER);
            self.copy = Some((sink, buf));
        }
        Ok(())
    }

    /// Writes `rows` in one COPY (and merge).
    async fn copy_rows(&self, rows: &[SegRow]) -> Result<(), tokio_postgres::Error> {
        let mut sink = self.open_copy().await?;
        let mut buf = BytesMut::new();
        buf.put_slice(COPY_HEADER);
        for row in rows {
            match row {
                // Encoding succeeded once already, so it succeeds again.
                SegRow::Values(values, _) => {
                    let _ = encode_row(&mut buf, values, &self.target.types);
                }
                SegRow::Raw(tuple) => buf.put_slice(tuple),
            }
        }
        buf.put_i16(-1);
        sink.send(buf.freeze()).await?;
        sink.as_mut().finish().await?;
        self.merge().await
    }
}

impl BulkChannel for PgChannel {
    type Row = SegRow;

    fn width(&self) -> usize {
        self.target.types.len()
    }

    fn convert(&self, row: Row) -> Result<SegRow, BadRow> {
        let size = row_size(&row) as u64;
        let mut values = Vec::with_capacity(row.len());
        let mut cells = row.into_iter();
        for (i, ty) in self.target.types.iter().enumerate() {
            let Some(v) = cells.next() else { break };
            match convert(v, ty) {
                Ok(pv) => values.push(pv),
                Err((reason, original)) => {
                    let mut partial = shown(&values);
                    partial.push(original);
                    partial.extend(cells);
                    return Err(BadRow {
                        column: Some(self.target.columns[i].trim_matches('"').to_string()),
                        reason,
                        row: partial,
                    });
                }
            }
        }
        Ok(SegRow::Values(values, size))
    }

    fn size(row: &SegRow) -> u64 {
        row.size()
    }

    /// What a decoded row really holds in memory: its data plus one enum slot per value and
    /// allocation overhead, so the byte cap bounds memory, not just data.
    fn held(row: &SegRow) -> u64 {
        match row {
            SegRow::Values(v, size) => size + 48 * v.len() as u64 + 64,
            SegRow::Raw(b) => b.len() as u64,
        }
    }

    fn shown(&self, row: &SegRow) -> Row {
        row.shown(&self.target.types)
    }

    fn full(&self, rows: usize, bytes: u64) -> bool {
        rows >= self.batch || bytes >= SEGMENT_BYTES
    }

    async fn execute(&mut self, sql: &str) -> Result<(), String> {
        self.client
            .batch_execute(sql)
            .await
            .map_err(|e| describe(&e))
    }

    /// Encodes the row onto the COPY in progress and sends full chunks.
    async fn push(&mut self, row: &SegRow) -> Result<Result<(), String>> {
        self.open_segment().await?;
        let Some((sink, buf)) = self.copy.as_mut() else {
            return Ok(Ok(()));
        };
        let encoded = match row {
            SegRow::Values(values, _) => encode_row(buf, values, &self.target.types),
            SegRow::Raw(tuple) => {
                buf.put_slice(tuple);
                Ok(())
            }
        };
        if buf.len() >= COPY_CHUNK {
            let chunk = buf.split().freeze();
            if let Err(e) = sink.send(chunk).await {
                // The server refused the data; ending the segment says so.
                tracing::debug!(error = %describe(&e), "COPY chunk refused");
            }
        }
        Ok(encoded)
    }

    /// Sends passed-through tuples as they are.
    async fn push_raw(&mut self, batch: RawBatch) -> Result<Vec<SegRow>> {
        self.open_segment().await?;
        let Some((sink, buf)) = self.copy.as_mut() else {
            return Ok(Vec::new());
        };
        let ends = batch
            .starts
            .iter()
            .skip(1)
            .copied()
            .chain([batch.data.len()]);
        let rows = batch
            .starts
            .iter()
            .copied()
            .zip(ends)
            .map(|(start, end)| SegRow::Raw(batch.data.slice(start..end)))
            .collect();
        let mut sent = Ok(());
        if !buf.is_empty() {
            sent = sink.send(buf.split().freeze()).await;
        }
        if sent.is_ok() {
            sent = sink.send(batch.data).await;
        }
        if let Err(e) = sent {
            // The server refused the data; ending the segment says so.
            tracing::debug!(error = %describe(&e), "COPY chunk refused");
        }
        Ok(rows)
    }

    async fn end(&mut self, _rows: &[SegRow], _log: &JobLog) -> Result<Option<Refusal>> {
        let Some((mut sink, mut buf)) = self.copy.take() else {
            return Ok(None);
        };
        buf.put_i16(-1);
        let sent = async {
            sink.send(buf.split().freeze()).await?;
            sink.as_mut().finish().await?;
            self.merge().await
        }
        .await;
        match sent {
            Ok(()) => Ok(None),
            Err(e) => refusal(&e)
                .map(Some)
                .ok_or_else(|| SyncError::Target(describe(&e))),
        }
    }

    async fn part(&mut self, rows: &[SegRow]) -> Result<Option<Refusal>> {
        match self.copy_rows(rows).await {
            Ok(()) => Ok(None),
            Err(e) => refusal(&e)
                .map(Some)
                .ok_or_else(|| SyncError::Target(describe(&e))),
        }
    }

    async fn close(self) {}
}
