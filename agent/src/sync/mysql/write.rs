//! The MySQL writer's bulk channel. Insert and replace stream rows into `LOAD DATA LOCAL
//! INFILE` as tab-separated text; update binds them into multi-row prepared `INSERT … ON
//! DUPLICATE KEY UPDATE` statements. Every write checks the server's warning count whatever the
//! session's mode: LOCAL turns bad values and duplicate keys into warnings, so a segment with
//! any warning counts as refused, and the skeleton replays it through INSERTs, which say
//! exactly which rows are dirty (with MySQL's own warning text): nothing is loaded altered.
//! Values MySQL has no form for (NaN, infinity, years outside 0-9999) are dirty before they
//! are sent.

use super::{Target, describe};
use crate::sync::plugin::{JobLog, Result, SyncError};
use crate::sync::rdbms::{BadRow, BulkChannel, Refusal};
use crate::sync::value::{Row, Value, row_size};
use bytes::Bytes;
use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use ferry_common::job::{RdbmsWriter, WriteMode};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Value as MyValue};

/// The largest number of placeholders one MySQL statement may carry.
const MAX_PLACEHOLDERS: usize = 65_535;

/// Binds a value for MySQL; the server (in strict mode, warnings checked) decides whether the
/// column takes it. Call [`Target::check`] first: years outside 0-9999 would not fit the
/// protocol's fields.
pub fn to_mysql(v: &Value) -> MyValue {
    let dt = |t: NaiveDateTime| {
        MyValue::Date(
            t.year() as u16,
            t.month() as u8,
            t.day() as u8,
            t.hour() as u8,
            t.minute() as u8,
            t.second() as u8,
            t.nanosecond() / 1000,
        )
    };
    match v {
        Value::Null => MyValue::NULL,
        Value::Bool(b) => MyValue::Int(i64::from(*b)),
        Value::Int(i) => MyValue::Int(*i),
        Value::Float(f) => MyValue::Double(*f),
        Value::Decimal(s) | Value::String(s) | Value::Json(s) => {
            MyValue::Bytes(s.as_bytes().to_vec())
        }
        Value::Bytes(b) => MyValue::Bytes(b.clone()),
        Value::Date(d) => {
            MyValue::Date(d.year() as u16, d.month() as u8, d.day() as u8, 0, 0, 0, 0)
        }
        Value::Time(t) => MyValue::Time(
            false,
            0,
            t.hour() as u8,
            t.minute() as u8,
            t.second() as u8,
            t.nanosecond() / 1000,
        ),
        Value::Timestamp(t) => dt(*t),
        Value::TimestampTz(t) => dt(t.with_timezone(&Utc).naive_utc()),
    }
}

/// Rows per `LOAD DATA` statement, kept until the server confirms them; also ended at
/// [`LOAD_DATA_BYTES`], which bounds a channel's memory whatever the row width.
const LOAD_DATA_ROWS: usize = 16_384;
const LOAD_DATA_BYTES: usize = 8 << 20;

/// Appends a row as LOAD DATA text: tab-separated, `\N` for NULL, backslash escapes.
fn tsv_row(out: &mut Vec<u8>, row: &Row) {
    use std::io::Write;
    for (i, v) in row.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        match v {
            Value::Null => out.extend_from_slice(b"\\N"),
            Value::Bool(b) => out.push(if *b { b'1' } else { b'0' }),
            Value::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Value::Float(f) => {
                let _ = write!(out, "{f}");
            }
            Value::Decimal(s) | Value::String(s) | Value::Json(s) => escape(out, s.as_bytes()),
            Value::Bytes(b) => escape(out, b),
            Value::Date(d) => push_date(out, *d),
            Value::Time(t) => push_time(out, *t),
            Value::Timestamp(t) => {
                push_date(out, t.date());
                out.push(b' ');
                push_time(out, t.time());
            }
            Value::TimestampTz(t) => {
                let t = t.with_timezone(&Utc).naive_utc();
                push_date(out, t.date());
                out.push(b' ');
                push_time(out, t.time());
            }
        }
    }
    out.push(b'\n');
}

fn push_digits(out: &mut Vec<u8>, v: u32, width: u32) {
    for i in (0..width).rev() {
        out.push(b'0' + (v / 10u32.pow(i) % 10) as u8);
    }
}

/// `YYYY-MM-DD`, written by hand: chrono's formatter parses its pattern on every call, which
/// shows up at millions of rows.
fn push_date(out: &mut Vec<u8>, d: NaiveDate) {
    if !(0..=9999).contains(&d.year()) {
        use std::io::Write;
        let _ = write!(out, "{}", d.format("%Y-%m-%d"));
        return;
    }
    push_digits(out, d.year() as u32, 4);
    out.push(b'-');
    push_digits(out, d.month(), 2);
    out.push(b'-');
    push_digits(out, d.day(), 2);
}

/// `HH:MM:SS[.ffffff]`, the fraction only when there is one.
fn push_time(out: &mut Vec<u8>, t: NaiveTime) {
    push_digits(out, t.hour(), 2);
    out.push(b':');
    push_digits(out, t.minute(), 2);
    out.push(b':');
    push_digits(out, t.second(), 2);
    let micros = t.nanosecond() / 1000;
    if micros > 0 {
        out.push(b'.');
        push_digits(out, micros.min(999_999), 6);
    }
}

fn escape(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0 => out.extend_from_slice(b"\\0"),
            _ => out.push(b),
        }
    }
}

/// The server or its settings forbid `LOAD DATA LOCAL`.
fn is_local_infile_refused(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if matches!(s.code, 1148 | 3948 | 4166))
}

/// Whether a server error is about the data of a row (so the row is dirty), not the job.
fn is_data_error(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Server(s) => {
            s.state.starts_with("22")
                || s.state.starts_with("23")
                || matches!(
                    s.code,
                    1048 | 1062
                        | 1264
                        | 1265
                        | 1292
                        | 1366
                        | 1367
                        | 1406
                        | 1411
                        | 1452
                        | 1690
                        | 3140
                        | 3819
                        | 4025
                )
        }
        _ => false,
    }
}

/// One writer channel: a connection in its transaction.
pub struct MyChannel {
    /// The connection; lent to the task running a streaming `LOAD DATA` while one runs.
    conn: Option<Conn>,
    target: Target,
    mode: WriteMode,
    /// Rows per INSERT statement (`batchSize`, within MySQL's placeholder limit).
    per_statement: usize,
    /// The statement text for a full chunk, built once.
    full_statement: Option<(usize, String)>,
    /// Insert and replace modes load through `LOAD DATA LOCAL INFILE`.
    load_data: bool,
    /// The `LOAD DATA` in progress.
    loading: Option<Loading>,
    /// Rows written by LOAD DATA and by INSERT, for the log.
    loaded: usize,
    inserted: usize,
}

/// A `LOAD DATA LOCAL INFILE` statement running in its own task while rows stream into it.
struct Loading {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    task: tokio::task::JoinHandle<LoadOutcome>,
    buf: Vec<u8>,
}

/// The connection back from a `LOAD DATA` task, with its warnings and affected rows.
type LoadOutcome = (Conn, Result<(u16, u64), mysql_async::Error>);

/// Send streamed LOAD DATA text in pieces of about this size.
const LOAD_DATA_PIECE: usize = 256 << 10;

/// The connection is with a running `LOAD DATA`.
const LENT: &str = "MySQL connection is lent to a LOAD DATA";

impl MyChannel {
    pub(super) fn new(conn: Conn, target: Target, params: &RdbmsWriter) -> Self {
        let width = target.columns.len().max(1);
        let per_statement = (params.batch_size.unwrap_or(1024).max(1) as usize)
            .min(MAX_PLACEHOLDERS / width)
            .max(1);
        Self {
            conn: Some(conn),
            target,
            mode: params.write_mode,
            per_statement,
            full_statement: None,
            load_data: params.write_mode != WriteMode::Update,
            loading: None,
            loaded: 0,
            inserted: 0,
        }
    }

    fn conn(&mut self) -> Result<&mut Conn> {
        self.conn
            .as_mut()
            .ok_or_else(|| SyncError::Internal(LENT.into()))
    }

    fn statement(&self, rows: usize) -> String {
        let width = self.target.columns.len();
        let one = format!("({})", vec!["?"; width].join(","));
        let values = vec![one; rows].join(",");
        let cols = self.target.columns.join(", ");
        match self.mode {
            WriteMode::Insert => {
                format!("INSERT INTO {} ({cols}) VALUES {values}", self.target.table)
            }
            WriteMode::Replace => format!(
                "REPLACE INTO {} ({cols}) VALUES {values}",
                self.target.table
            ),
            WriteMode::Update => {
                let set: Vec<String> = self
                    .target
                    .columns
                    .iter()
                    .map(|c| format!("{c} = VALUES({c})"))
                    .collect();
                format!(
                    "INSERT INTO {} ({cols}) VALUES {values} ON DUPLICATE KEY UPDATE {}",
                    self.target.table,
                    set.join(", ")
                )
            }
        }
    }

    /// Runs the statement for `rows` rows; answers the server's warning count.
    async fn exec(&mut self, rows: usize, params: Vec<MyValue>) -> Result<u16, mysql_async::Error> {
        let sql = match &self.full_statement {
            Some((n, sql)) if *n == rows => sql.clone(),
            _ => {
                let sql = self.statement(rows);
                if rows == self.per_statement {
                    self.full_statement = Some((rows, sql.clone()));
                }
                sql
            }
        };
        match self.conn.as_mut() {
            Some(c) => {
                c.exec_drop(sql, Params::Positional(params)).await?;
                Ok(c.get_warnings())
            }
            None => Err(mysql_async::Error::Other(LENT.into())),
        }
    }

    /// The warnings of the last statement, as MySQL words them.
    async fn warnings(&mut self) -> Result<String> {
        let rows: Vec<(String, u32, String)> = self
            .conn()?
            .query("SHOW WARNINGS")
            .await
            .map_err(|e| SyncError::Target(describe(&e)))?;
        let text: Vec<String> = rows
            .into_iter()
            .map(|(level, code, message)| format!("{level} {code}: {message}"))
            .collect();
        Ok(if text.is_empty() {
            "the server reported a warning".into()
        } else {
            text.join("; ")
        })
    }

    /// Starts a streaming `LOAD DATA LOCAL INFILE` (the skeleton has set the savepoint).
    fn start_load(&mut self) -> Result<()> {
        let mut conn = self
            .conn
            .take()
            .ok_or_else(|| SyncError::Internal("LOAD DATA already running".into()))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        conn.set_infile_handler(async move {
            let stream: mysql_async::InfileData =
                Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
            Ok(stream)
        });
        let verb = if self.mode == WriteMode::Replace {
            "REPLACE "
        } else {
            ""
        };
        let sql = format!(
            "LOAD DATA LOCAL INFILE 'ferry' {verb}INTO TABLE {} CHARACTER SET utf8mb4 \
             FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({})",
            self.target.table,
            self.target.columns.join(", ")
        );
        let task = tokio::spawn(async move {
            let r = conn.query_drop(sql).await;
            let r = r.map(|_| (conn.get_warnings(), conn.affected_rows()));
            (conn, r)
        });
        self.loading = Some(Loading {
            tx,
            task,
            buf: Vec::with_capacity(LOAD_DATA_PIECE + (16 << 10)),
        });
        Ok(())
    }

    /// Ends the running `LOAD DATA` of `rows`. A chunk with any warning, or fewer rows than
    /// sent, is refused.
    async fn finish_load(
        &mut self,
        mut l: Loading,
        rows: usize,
        log: &JobLog,
    ) -> Result<Option<Refusal>> {
        if !l.buf.is_empty() {
            let _ = l.tx.send(Ok(Bytes::from(std::mem::take(&mut l.buf)))).await;
        }
        drop(l.tx);
        let (conn, result) = l
            .task
            .await
            .map_err(|e| SyncError::Internal(format!("LOAD DATA task failed: {e}")))?;
        self.conn = Some(conn);
        let refused = |reason: String| {
            Ok(Some(Refusal {
                reason,
                column: None,
            }))
        };
        match result {
            Ok((0, affected)) if self.mode == WriteMode::Replace || affected == rows as u64 => {
                self.loaded += rows;
                Ok(None)
            }
            Ok((warnings, affected)) => refused(format!(
                "LOAD DATA reported {warnings} warning(s), {affected} of {rows} rows"
            )),
            Err(e) if is_data_error(&e) => refused(describe(&e)),
            Err(e) if is_local_infile_refused(&e) => {
                log.warn(format!(
                    "mysqlwriter: the server refuses LOAD DATA LOCAL ({}); using multi-row INSERT",
                    describe(&e)
                ));
                self.load_data = false;
                refused(describe(&e))
            }
            Err(e) => Err(SyncError::Target(describe(&e))),
        }
    }
}

impl BulkChannel for MyChannel {
    type Row = Row;

    fn width(&self) -> usize {
        self.target.columns.len()
    }

    fn convert(&self, mut row: Row) -> Result<Row, BadRow> {
        self.target.adapt(&mut row);
        match self.target.check(&row) {
            Ok(()) => Ok(row),
            Err((i, reason)) => Err(BadRow {
                column: Some(self.target.name(i)),
                reason,
                row,
            }),
        }
    }

    fn size(row: &Row) -> u64 {
        row_size(row) as u64
    }

    fn shown(&self, row: &Row) -> Row {
        row.clone()
    }

    fn full(&self, rows: usize, bytes: u64) -> bool {
        if self.load_data {
            rows >= LOAD_DATA_ROWS || bytes >= LOAD_DATA_BYTES as u64
        } else {
            rows >= self.per_statement
        }
    }

    async fn execute(&mut self, sql: &str) -> Result<(), String> {
        match self.conn.as_mut() {
            Some(c) => c.query_drop(sql).await.map_err(|e| describe(&e)),
            None => Err(LENT.into()),
        }
    }

    async fn push(&mut self, row: &Row) -> Result<Result<(), String>> {
        if !self.load_data {
            return Ok(Ok(()));
        }
        if self.loading.is_none() {
            self.start_load()?;
        }
        if let Some(l) = self.loading.as_mut() {
            tsv_row(&mut l.buf, row);
            if l.buf.len() >= LOAD_DATA_PIECE {
                let piece = Bytes::from(std::mem::take(&mut l.buf));
                // A closed receiver means the statement already ended; ending it says why.
                let _ = l.tx.send(Ok(piece)).await;
            }
        }
        Ok(Ok(()))
    }

    async fn end(&mut self, rows: &[Row], log: &JobLog) -> Result<Option<Refusal>> {
        match self.loading.take() {
            Some(l) => self.finish_load(l, rows.len(), log).await,
            None => self.part(rows).await,
        }
    }

    /// Multi-row statements of `per_statement` rows; any warning means MySQL changed or
    /// dropped something (strict mode or not), so the rows are refused.
    async fn part(&mut self, rows: &[Row]) -> Result<Option<Refusal>> {
        for chunk in rows.chunks(self.per_statement) {
            let params: Vec<MyValue> = chunk.iter().flatten().map(to_mysql).collect();
            let reason = match self.exec(chunk.len(), params).await {
                Ok(0) => continue,
                Ok(_) if rows.len() == 1 => self.warnings().await?,
                Ok(n) => format!("{n} warning(s)"),
                Err(e) if is_data_error(&e) => describe(&e),
                Err(e) => return Err(SyncError::Target(describe(&e))),
            };
            return Ok(Some(Refusal {
                reason,
                column: None,
            }));
        }
        self.inserted += rows.len();
        Ok(None)
    }

    fn summary(&self) -> Option<String> {
        Some(format!(
            "{} rows by LOAD DATA, {} by INSERT",
            self.loaded, self.inserted
        ))
    }

    async fn close(mut self) {
        if let Some(c) = self.conn.take() {
            let _ = c.disconnect().await;
        }
    }
}
