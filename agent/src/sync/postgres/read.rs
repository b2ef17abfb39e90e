//! Reading a split: `COPY … TO STDOUT (FORMAT binary)`, decoded into the column model, or passed
//! through as COPY tuples when the writer is PostgreSQL with the same column types.

use super::codec::{JsonText, Numeric, UuidText, readable};
use super::write::COPY_HEADER;
use super::{RAW_FORMAT, describe};
use crate::sync::plugin::{RawBatch, RawFormat, Result, RowSink, TargetInfo};
use crate::sync::rdbms::TableSplit;
use crate::sync::value::Value;
use bytes::{Bytes, BytesMut};
use chrono::{FixedOffset, Utc};
use std::pin::pin;
use tokio_postgres::Client;
use tokio_postgres::binary_copy::{BinaryCopyOutRow, BinaryCopyOutStream};
use tokio_postgres::types::Type;
use tokio_stream::StreamExt;

/// Tuples per pass-through batch, and bytes.
const RAW_BATCH_ROWS: usize = 1024;
const RAW_BATCH_BYTES: usize = 512 << 10;

/// Cuts complete tuples off the front of a binary COPY stream; `None` when more data is needed,
/// `Some(None)` at the trailer.
fn next_tuple(
    buf: &mut BytesMut,
    width: usize,
) -> std::result::Result<Option<Option<Bytes>>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fields = i16::from_be_bytes([buf[0], buf[1]]);
    if fields == -1 {
        return Ok(Some(None));
    }
    if fields as usize != width {
        return Err(format!("COPY tuple has {fields} fields, expected {width}"));
    }
    let mut pos = 2;
    for _ in 0..fields {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]);
        pos += 4;
        if len > 0 {
            pos += len as usize;
        }
    }
    if buf.len() < pos {
        return Ok(None);
    }
    Ok(Some(Some(buf.split_to(pos).freeze())))
}

/// `COPY t (cols) TO` for a whole table, which skips the executor; `COPY (SELECT …) TO`
/// otherwise.
fn copy_sql(split: &TableSplit) -> String {
    match &split.whole_table {
        Some(t) => format!("COPY {t} TO STDOUT (FORMAT binary)"),
        None => format!("COPY ({}) TO STDOUT (FORMAT binary)", split.sql),
    }
}

/// Streams the split's binary COPY tuples untouched to a PostgreSQL writer.
async fn run_raw(
    client: &Client,
    split: &TableSplit,
    width: usize,
    sink: &mut RowSink,
) -> Result<()> {
    let src = |e: String| split.fail(e);
    let stream = client
        .copy_out(&format!("COPY ({}) TO STDOUT (FORMAT binary)", split.sql))
        .await
        .map_err(|e| src(describe(&e)))?;
    let mut stream = pin!(stream);
    let mut pending = BytesMut::new();
    let mut header = true;
    let mut batch = BytesMut::with_capacity(RAW_BATCH_BYTES + (64 << 10));
    let mut starts = Vec::with_capacity(RAW_BATCH_ROWS);
    'stream: while let Some(chunk) = stream.next().await {
        pending.extend_from_slice(&chunk.map_err(|e| src(describe(&e)))?);
        if header {
            if pending.len() < COPY_HEADER.len() {
                continue;
            }
            if pending[..11] != COPY_HEADER[..11] {
                return Err(src("not a binary COPY stream".into()));
            }
            let ext =
                u32::from_be_bytes([pending[15], pending[16], pending[17], pending[18]]) as usize;
            if pending.len() < COPY_HEADER.len() + ext {
                continue;
            }
            let _ = pending.split_to(COPY_HEADER.len() + ext);
            header = false;
        }
        loop {
            match next_tuple(&mut pending, width).map_err(src)? {
                None => break,
                Some(None) => break 'stream,
                Some(Some(tuple)) => {
                    starts.push(batch.len());
                    batch.extend_from_slice(&tuple);
                }
            }
            if starts.len() >= RAW_BATCH_ROWS || batch.len() >= RAW_BATCH_BYTES {
                sink.push_raw(RawBatch {
                    format: RAW_FORMAT,
                    data: batch.split().freeze(),
                    starts: std::mem::take(&mut starts),
                })
                .await?;
            }
        }
    }
    if !starts.is_empty() {
        sink.push_raw(RawBatch {
            format: RAW_FORMAT,
            data: batch.split().freeze(),
            starts,
        })
        .await?;
    }
    Ok(())
}

fn decode(row: &BinaryCopyOutRow, i: usize, ty: &Type) -> Result<Value, tokio_postgres::Error> {
    Ok(match *ty {
        Type::BOOL => row.try_get::<Option<bool>>(i)?.map(Value::Bool),
        Type::INT2 => row.try_get::<Option<i16>>(i)?.map(|v| Value::Int(v.into())),
        Type::INT4 => row.try_get::<Option<i32>>(i)?.map(|v| Value::Int(v.into())),
        Type::INT8 => row.try_get::<Option<i64>>(i)?.map(Value::Int),
        Type::OID => row.try_get::<Option<u32>>(i)?.map(|v| Value::Int(v.into())),
        Type::FLOAT4 => row
            .try_get::<Option<f32>>(i)?
            .map(|v| Value::Float(v.into())),
        Type::FLOAT8 => row.try_get::<Option<f64>>(i)?.map(Value::Float),
        Type::NUMERIC => row
            .try_get::<Option<Numeric>>(i)?
            .map(|n| Value::Decimal(n.0)),
        Type::BYTEA => row.try_get::<Option<Vec<u8>>>(i)?.map(Value::Bytes),
        Type::DATE => row
            .try_get::<Option<chrono::NaiveDate>>(i)?
            .map(Value::Date),
        Type::TIME => row
            .try_get::<Option<chrono::NaiveTime>>(i)?
            .map(Value::Time),
        Type::TIMESTAMP => row
            .try_get::<Option<chrono::NaiveDateTime>>(i)?
            .map(Value::Timestamp),
        Type::TIMESTAMPTZ => row.try_get::<Option<chrono::DateTime<Utc>>>(i)?.map(|t| {
            Value::TimestampTz(t.with_timezone(
                &FixedOffset::east_opt(0).unwrap_or_else(|| t.fixed_offset().offset().to_owned()),
            ))
        }),
        Type::JSON | Type::JSONB => row
            .try_get::<Option<JsonText>>(i)?
            .map(|j| Value::Json(j.0)),
        Type::UUID => row
            .try_get::<Option<UuidText>>(i)?
            .map(|u| Value::String(u.0)),
        _ => row.try_get::<Option<String>>(i)?.map(Value::String),
    }
    .unwrap_or(Value::Null))
}

/// Reads `split` on `client` into `sink`.
pub(super) async fn run(
    client: &mut Client,
    split: &TableSplit,
    sink: &mut RowSink,
    target: &TargetInfo,
) -> Result<()> {
    let stmt = client
        .prepare(&split.sql)
        .await
        .map_err(|e| split.fail(format!("{}: {}", split.sql, describe(&e))))?;
    let columns = stmt.columns();
    let oids: Vec<u32> = columns.iter().map(|c| c.type_().oid()).collect();
    let raw = RawFormat {
        format: RAW_FORMAT,
        column_types: oids,
    };
    if target.raw.as_ref() == Some(&raw) {
        let oids = raw.column_types;
        tracing::debug!(split = %split.label, "column types match the target: passing COPY tuples through");
        return run_raw(client, split, oids.len(), sink).await;
    }
    let all_native = columns.iter().all(|c| readable(c.type_()));
    let (copy_sql, types) = if all_native {
        (
            copy_sql(split),
            columns
                .iter()
                .map(|c| c.type_().clone())
                .collect::<Vec<_>>(),
        )
    } else {
        // Types without a native mapping are read as their text form.
        let list: Vec<String> = columns
            .iter()
            .map(|c| {
                let name = format!("q.\"{}\"", c.name().replace('"', "\"\""));
                if readable(c.type_()) {
                    name
                } else {
                    format!("{name}::text")
                }
            })
            .collect();
        (
            format!(
                "COPY (SELECT {} FROM ({}) AS q) TO STDOUT (FORMAT binary)",
                list.join(", "),
                split.sql
            ),
            columns
                .iter()
                .map(|c| {
                    if readable(c.type_()) {
                        c.type_().clone()
                    } else {
                        Type::TEXT
                    }
                })
                .collect(),
        )
    };
    let stream = client
        .copy_out(&copy_sql)
        .await
        .map_err(|e| split.fail(describe(&e)))?;
    let mut rows = pin!(BinaryCopyOutStream::new(stream, &types));
    while let Some(row) = rows.next().await {
        let row = row.map_err(|e| split.fail(describe(&e)))?;
        let mut values = Vec::with_capacity(types.len());
        let mut bad = None;
        let mut bad_column = None;
        for (i, ty) in types.iter().enumerate() {
            match decode(&row, i, ty) {
                Ok(v) => values.push(v),
                Err(e) => {
                    bad = Some(format!("{ty}: {e}"));
                    bad_column = Some(columns[i].name());
                    values.push(Value::Null);
                }
            }
        }
        match bad {
            None => sink.push(values).await?,
            Some(reason) => {
                sink.dirty(&values, bad_column, &reason)?;
            }
        }
    }
    Ok(())
}
