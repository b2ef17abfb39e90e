//! `mysqlreader` / `mysqlwriter` for MySQL and MariaDB.
//!
//! Reads stream rows over the binary protocol (a prepared statement per split), so values
//! arrive typed and the result is never buffered whole. Writes use multi-row prepared `INSERT`
//! (or `REPLACE`, or `INSERT … ON DUPLICATE KEY UPDATE`) in one transaction per channel, with
//! values bound, never pasted. Sessions run in strict SQL mode, re-asserted after the job's own
//! `session` statements, and every write checks the server's warning count whatever the mode:
//! a statement with warnings is rolled back to its savepoint and replayed row by row, and each
//! row that still warns is a dirty record with MySQL's own warning text. Values MySQL has no
//! form for (NaN, infinity, years outside 0-9999) are dirty before they are sent.

use super::plugin::{
    BoxFuture, JobLog, ReadSplit, Reader, Result, RowSink, Shared, SyncError, TargetInfo,
    WriteChannel, Writer,
};
use super::rdbms::{
    Dialect, SplitQueries, TableSplit, connect_first, plan_table, select_list, sql_name,
};
use super::value::{Row, Value, parse_date, row_size};
use bytes::Bytes;
use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use ferry_common::job::{JdbcUrl, RdbmsReader, RdbmsWriter, WriteMode};
use ferry_common::secret::Secret;
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::prelude::Queryable;
use mysql_async::{Column, Conn, OptsBuilder, Params, Value as MyValue};
use std::sync::Arc;
use std::sync::OnceLock;

pub struct My;

impl Dialect for My {
    fn quote_part(&self, part: &str) -> String {
        format!("`{}`", part.replace('`', "``"))
    }
}

/// Statements every Ferry session starts with: strict mode (refuse, never truncate), UTC, and
/// full Unicode.
const SESSION: &[&str] = &[
    "SET NAMES utf8mb4",
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO'",
    "SET SESSION time_zone = '+00:00'",
];

/// Statements run after the job's own `session` statements (DataX's example sets
/// `sql_mode='ANSI'`), so none can turn strict mode or warnings off or move the session out of
/// UTC: the job's sql_mode flags are kept and the strict ones added back.
const GUARD: &[&str] = &[
    "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO')",
    "SET SESSION sql_notes = 1",
    "SET NAMES utf8mb4",
    "SET SESSION time_zone = '+00:00'",
];

/// The most useful text of a driver error.
pub fn describe(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => {
            format!("{} (error {}, SQLSTATE {})", s.message, s.code, s.state)
        }
        other => other.to_string(),
    }
}

/// Opens a connection and prepares its session.
pub async fn connect(
    url: &str,
    user: &str,
    password: &Secret,
    session: &[String],
) -> Result<Conn, String> {
    let u = JdbcUrl::parse(url).map_err(|e| e.to_string())?;
    let mut opts = OptsBuilder::default()
        .ip_or_hostname(u.host.clone())
        .tcp_port(u.port)
        .user(Some(user))
        .prefer_socket(false);
    if !password.is_empty() {
        opts = opts.pass(Some(password.expose()));
    }
    if !u.database.is_empty() {
        opts = opts.db_name(Some(u.database.clone()));
    }
    let mut conn = Conn::new(opts).await.map_err(|e| {
        format!(
            "cannot connect to {}:{}/{} as {user}: {}",
            u.host,
            u.port,
            u.database,
            describe(&e)
        )
    })?;
    for s in SESSION
        .iter()
        .copied()
        .chain(session.iter().map(String::as_str))
        .chain(GUARD.iter().copied())
    {
        conn.query_drop(s)
            .await
            .map_err(|e| format!("session statement \"{s}\" failed: {}", describe(&e)))?;
    }
    Ok(conn)
}

struct MySplitQ<'a>(&'a mut Conn);

impl SplitQueries for MySplitQ<'_> {
    async fn is_integer(&mut self, table: &str, column: &str) -> Result<bool, String> {
        let sql = format!(
            "SELECT {} FROM {} LIMIT 0",
            sql_name(&My, column),
            sql_name(&My, table)
        );
        let stmt = self.0.prep(sql).await.map_err(|e| describe(&e))?;
        Ok(stmt.columns().first().is_some_and(|c| {
            matches!(
                c.column_type(),
                ColumnType::MYSQL_TYPE_TINY
                    | ColumnType::MYSQL_TYPE_SHORT
                    | ColumnType::MYSQL_TYPE_INT24
                    | ColumnType::MYSQL_TYPE_LONG
                    | ColumnType::MYSQL_TYPE_LONGLONG
            )
        }))
    }

    async fn min_max(&mut self, qpk: &str, from: &str) -> Result<Option<(i64, i64)>, String> {
        let sql = format!("SELECT CAST(MIN({qpk}) AS SIGNED), CAST(MAX({qpk}) AS SIGNED) {from}");
        let row: Option<(Option<i64>, Option<i64>)> =
            self.0.query_first(sql).await.map_err(|e| describe(&e))?;
        Ok(row.and_then(|(lo, hi)| lo.zip(hi)))
    }

    async fn count(&mut self, sql: &str) -> Result<i64, String> {
        let n: Option<i64> = self.0.query_first(sql).await.map_err(|e| describe(&e))?;
        Ok(n.unwrap_or(0))
    }

    async fn literal(&mut self, sql: &str) -> Result<Option<String>, String> {
        let v: Option<Option<String>> = self.0.query_first(sql).await.map_err(|e| describe(&e))?;
        Ok(v.flatten())
    }

    fn quote_literal_expr(&self, expr: &str) -> String {
        format!("QUOTE({expr})")
    }
}

pub struct MysqlReader {
    params: RdbmsReader,
}

impl MysqlReader {
    pub fn new(params: RdbmsReader) -> Self {
        Self { params }
    }
}

impl Reader for MysqlReader {
    fn name(&self) -> &'static str {
        "mysqlreader"
    }

    fn splits<'a>(
        &'a self,
        channels: usize,
        log: &'a JobLog,
    ) -> BoxFuture<'a, Result<Vec<Box<dyn ReadSplit>>>> {
        let p = &self.params;
        let user = p.username.clone().unwrap_or_default();
        Box::pin(async move {
            let mut out: Vec<Box<dyn ReadSplit>> = Vec::new();
            for conn in &p.connection {
                let (mut c, url) = connect_first(&conn.jdbc_url, |u| {
                    let (user, password, session) =
                        (user.clone(), p.password.clone(), p.session.clone());
                    async move { connect(&u, &user, &password, &session).await }
                })
                .await
                .map_err(SyncError::Source)?;
                let split = |split: TableSplit| {
                    Box::new(MySplit {
                        url: url.clone(),
                        user: user.clone(),
                        password: p.password.clone(),
                        session: p.session.clone(),
                        split,
                    }) as Box<dyn ReadSplit>
                };
                for q in &conn.query_sql {
                    out.push(split(TableSplit {
                        sql: q.trim().trim_end_matches(';').to_string(),
                        label: "querySql".into(),
                        whole_table: None,
                    }));
                }
                for table in &conn.table {
                    let splits = plan_table(
                        &mut MySplitQ(&mut c),
                        &My,
                        table,
                        &p.column,
                        p.where_clause.as_deref(),
                        p.split_pk.as_deref(),
                        channels,
                    )
                    .await
                    .map_err(|e| SyncError::Source(format!("splitting {table}: {e}")))?;
                    if let Some(pk) = &p.split_pk {
                        log.info(format!("{table}: {} split(s) by {pk}", splits.len()));
                    }
                    out.extend(splits.into_iter().map(split));
                }
                let _ = c.disconnect().await;
            }
            Ok(out)
        })
    }
}

struct MySplit {
    url: String,
    user: String,
    password: Secret,
    session: Vec<String>,
    split: TableSplit,
}

fn text_or_bytes(b: Vec<u8>, col: &Column) -> Value {
    if col.character_set() == 63 {
        return Value::Bytes(b);
    }
    match String::from_utf8(b) {
        Ok(s) => Value::String(s),
        Err(e) => Value::Bytes(e.into_bytes()),
    }
}

/// Maps a MySQL value of column `col` into the column model; a value that has no form there
/// comes back as an error with the value as MySQL spelled it, for the dirty-record log.
pub fn to_value(v: MyValue, col: &Column) -> Result<Value, (String, Value)> {
    let ty = col.column_type();
    let not_utf8 = |what: &str, e: std::string::FromUtf8Error| {
        (format!("{what} is not UTF-8"), Value::Bytes(e.into_bytes()))
    };
    Ok(match v {
        MyValue::NULL => Value::Null,
        MyValue::Int(i) => Value::Int(i),
        MyValue::UInt(u) => i64::try_from(u)
            .map(Value::Int)
            .unwrap_or_else(|_| Value::Decimal(u.to_string())),
        MyValue::Float(f) => Value::Float(f64::from(f)),
        MyValue::Double(d) => Value::Float(d),
        MyValue::Bytes(b) => match ty {
            ColumnType::MYSQL_TYPE_DECIMAL | ColumnType::MYSQL_TYPE_NEWDECIMAL => {
                Value::Decimal(String::from_utf8(b).map_err(|e| not_utf8("decimal", e))?)
            }
            ColumnType::MYSQL_TYPE_JSON => {
                Value::Json(String::from_utf8(b).map_err(|e| not_utf8("JSON", e))?)
            }
            ColumnType::MYSQL_TYPE_BIT => {
                Value::Int(b.iter().fold(0i64, |acc, x| (acc << 8) | i64::from(*x)))
            }
            ColumnType::MYSQL_TYPE_GEOMETRY => Value::Bytes(b),
            _ if col.flags().contains(ColumnFlags::BINARY_FLAG) && col.character_set() == 63 => {
                Value::Bytes(b)
            }
            _ => text_or_bytes(b, col),
        },
        MyValue::Date(y, mo, d, h, mi, s, us) => {
            let shown = || {
                Value::String(format!(
                    "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}"
                ))
            };
            if y == 0 && mo == 0 && d == 0 {
                return Err(("zero date 0000-00-00 has no calendar value".into(), shown()));
            }
            let date = NaiveDate::from_ymd_opt(y.into(), mo.into(), d.into())
                .ok_or_else(|| (format!("invalid date {y}-{mo}-{d}"), shown()))?;
            let time = NaiveTime::from_hms_micro_opt(h.into(), mi.into(), s.into(), us)
                .ok_or_else(|| (format!("invalid time {h}:{mi}:{s}.{us}"), shown()))?;
            match ty {
                ColumnType::MYSQL_TYPE_DATE | ColumnType::MYSQL_TYPE_NEWDATE => Value::Date(date),
                ColumnType::MYSQL_TYPE_TIMESTAMP | ColumnType::MYSQL_TYPE_TIMESTAMP2 => {
                    // The session runs in UTC, so TIMESTAMP values are UTC instants.
                    Value::TimestampTz(date.and_time(time).and_utc().fixed_offset())
                }
                _ => Value::Timestamp(date.and_time(time)),
            }
        }
        MyValue::Time(neg, days, h, mi, s, us) => {
            if !neg && days == 0 {
                Value::Time(
                    NaiveTime::from_hms_micro_opt(h.into(), mi.into(), s.into(), us).ok_or_else(
                        || {
                            (
                                "invalid time".to_string(),
                                Value::String(format!("{h:02}:{mi:02}:{s:02}.{us:06}")),
                            )
                        },
                    )?,
                )
            } else {
                // Durations beyond a day have no time-of-day form; keep MySQL's text.
                let hours = days * 24 + u32::from(h);
                Value::String(format!(
                    "{}{hours:02}:{mi:02}:{s:02}{}",
                    if neg { "-" } else { "" },
                    if us > 0 {
                        format!(".{us:06}")
                    } else {
                        String::new()
                    }
                ))
            }
        }
    })
}

impl ReadSplit for MySplit {
    fn describe(&self) -> String {
        self.split.label.clone()
    }

    fn run<'a>(
        self: Box<Self>,
        sink: &'a mut RowSink,
        _target: &'a TargetInfo,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let src = |e: String| SyncError::Source(format!("{}: {e}", self.split.label));
            let mut conn = connect(&self.url, &self.user, &self.password, &self.session)
                .await
                .map_err(src)?;
            let mut result = conn
                .exec_iter(self.split.sql.as_str(), ())
                .await
                .map_err(|e| src(format!("{}: {}", self.split.sql, describe(&e))))?;
            let columns = result.columns().map(|c| c.to_vec()).unwrap_or_default();
            while let Some(row) = result.next().await.map_err(|e| src(describe(&e)))? {
                let raw = row.unwrap();
                let mut values = Vec::with_capacity(raw.len());
                let mut bad = None;
                for (v, col) in raw.into_iter().zip(&columns) {
                    match to_value(v, col) {
                        Ok(v) => values.push(v),
                        Err((reason, shown)) => {
                            bad = Some((col.name_str().into_owned(), reason));
                            values.push(shown);
                        }
                    }
                }
                match bad {
                    None => sink.push(values).await?,
                    Some((column, reason)) => {
                        sink.dirty(&values, Some(&column), &reason)?;
                    }
                }
            }
            drop(result);
            let _ = conn.disconnect().await;
            Ok(())
        })
    }
}

/// The largest number of placeholders one MySQL statement may carry.
const MAX_PLACEHOLDERS: usize = 65_535;

#[derive(Debug, Clone)]
struct Target {
    table: String,
    columns: Vec<String>,
    /// Each column's type, for the checks MySQL itself would not make loudly.
    types: Vec<ColumnType>,
    /// Which columns hold bytes (binary character set).
    binary: Vec<bool>,
}

impl Target {
    /// Checks a row before it is sent: values MySQL has no form for, or would round without a
    /// warning, are refused with the column at fault.
    fn check(&self, row: &Row) -> Result<(), (usize, String)> {
        for (i, v) in row.iter().enumerate() {
            let ty = self.types.get(i).copied();
            let year_ok = |y: i32| (0..=9999).contains(&y);
            let bad = match v {
                Value::Float(f) if !f.is_finite() => Some(format!(
                    "{f} has no MySQL form (MySQL has no NaN or infinity)"
                )),
                Value::Float(f)
                    if ty == Some(ColumnType::MYSQL_TYPE_FLOAT) && f64::from(*f as f32) != *f =>
                {
                    Some(format!("{f} has no exact FLOAT value; use DOUBLE"))
                }
                Value::Date(d) if !year_ok(d.year()) => {
                    Some(format!("{d} is outside MySQL's years 0-9999"))
                }
                Value::Timestamp(t) if !year_ok(t.year()) => {
                    Some(format!("{t} is outside MySQL's years 0-9999"))
                }
                Value::TimestampTz(t) if !year_ok(t.with_timezone(&Utc).year()) => {
                    Some(format!("{t} is outside MySQL's years 0-9999"))
                }
                _ => None,
            };
            if let Some(reason) = bad {
                return Err((i, reason));
            }
        }
        Ok(())
    }

    /// Text with a UTC offset going into a `TIMESTAMP` or `DATETIME` column (a timestamp read
    /// from SQLite or a file without a type) is taken as the instant it names, which MySQL,
    /// whose text literals have no offset, would refuse.
    fn adapt(&self, row: &mut Row) {
        for (v, ty) in row.iter_mut().zip(&self.types) {
            if let Value::String(s) = v
                && matches!(
                    ty,
                    ColumnType::MYSQL_TYPE_TIMESTAMP
                        | ColumnType::MYSQL_TYPE_TIMESTAMP2
                        | ColumnType::MYSQL_TYPE_DATETIME
                        | ColumnType::MYSQL_TYPE_DATETIME2
                )
                && let Ok(t @ Value::TimestampTz(_)) = parse_date(s.trim(), None)
            {
                *v = t;
            }
        }
    }

    /// The name of column `i` as the job knows it, for dirty records.
    fn name(&self, i: usize) -> String {
        self.columns
            .get(i)
            .map(|c| c.trim_matches('`').replace("``", "`"))
            .unwrap_or_default()
    }
}

/// Whether a result column holds bytes rather than text.
fn is_binary(col: &Column) -> bool {
    col.character_set() == 63
        && matches!(
            col.column_type(),
            ColumnType::MYSQL_TYPE_BLOB
                | ColumnType::MYSQL_TYPE_TINY_BLOB
                | ColumnType::MYSQL_TYPE_MEDIUM_BLOB
                | ColumnType::MYSQL_TYPE_LONG_BLOB
                | ColumnType::MYSQL_TYPE_STRING
                | ColumnType::MYSQL_TYPE_VAR_STRING
                | ColumnType::MYSQL_TYPE_VARCHAR
        )
}

pub struct MysqlWriter {
    params: RdbmsWriter,
    target: OnceLock<Target>,
}

impl MysqlWriter {
    pub fn new(params: RdbmsWriter) -> Self {
        Self {
            params,
            target: OnceLock::new(),
        }
    }

    async fn conn(&self) -> Result<Conn> {
        connect(
            self.params.target_url(),
            self.params.username.as_deref().unwrap_or_default(),
            &self.params.password,
            &self.params.session,
        )
        .await
        .map_err(SyncError::Target)
    }

    async fn run_sql(
        &self,
        conn: &mut Conn,
        statements: &[String],
        what: &str,
        log: &JobLog,
    ) -> Result<()> {
        let table = sql_name(&My, self.params.target_table());
        for s in statements {
            let sql = s.replace("@table", &table);
            log.info(format!("{what}: {sql}"));
            conn.query_drop(&sql).await.map_err(|e| {
                SyncError::Target(format!("{what} \"{sql}\" failed: {}", describe(&e)))
            })?;
        }
        Ok(())
    }
}

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

impl Writer for MysqlWriter {
    fn name(&self) -> &'static str {
        "mysqlwriter"
    }

    fn prepare<'a>(&'a self, log: &'a JobLog) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            self.run_sql(&mut conn, &self.params.pre_sql, "preSql", log)
                .await?;
            let table = sql_name(&My, self.params.target_table());
            let cols = select_list(&My, &self.params.column);
            let stmt = conn
                .prep(format!("SELECT {cols} FROM {table} LIMIT 0"))
                .await
                .map_err(|e| SyncError::Target(format!("target {table}: {}", describe(&e))))?;
            let columns: Vec<String> = stmt
                .columns()
                .iter()
                .map(|c| My.quote_part(&c.name_str()))
                .collect();
            let types = stmt.columns().iter().map(Column::column_type).collect();
            let binary = stmt.columns().iter().map(is_binary).collect();
            // The path rows really take: LOAD DATA for insert and replace (refused chunks are
            // replayed through INSERT), INSERT … ON DUPLICATE KEY UPDATE for update.
            let path = match self.params.write_mode {
                WriteMode::Insert => {
                    "streaming LOAD DATA LOCAL INFILE (chunks with warnings replayed through INSERT)"
                }
                WriteMode::Replace => {
                    "streaming LOAD DATA LOCAL INFILE … REPLACE (chunks with warnings replayed through REPLACE)"
                }
                WriteMode::Update => "multi-row prepared INSERT … ON DUPLICATE KEY UPDATE",
            };
            log.info(format!(
                "mysqlwriter: {table} ({} columns), mode {:?}, {path}",
                columns.len(),
                self.params.write_mode
            ));
            let _ = self.target.set(Target {
                table,
                columns,
                types,
                binary,
            });
            let _ = conn.disconnect().await;
            Ok(())
        })
    }

    fn target_info(&self) -> TargetInfo {
        TargetInfo {
            binary_columns: self.target.get().map(|t| t.binary.clone()),
            ..TargetInfo::default()
        }
    }

    fn parallelism(&self) -> usize {
        usize::MAX
    }

    fn open(&self, _index: usize) -> BoxFuture<'_, Result<Box<dyn WriteChannel>>> {
        Box::pin(async move {
            let target = self
                .target
                .get()
                .cloned()
                .ok_or_else(|| SyncError::Internal("writer used before prepare".into()))?;
            let mut conn = self.conn().await?;
            conn.query_drop("START TRANSACTION")
                .await
                .map_err(|e| SyncError::Target(describe(&e)))?;
            let width = target.columns.len().max(1);
            let per_statement = (self.params.batch_size.unwrap_or(1024).max(1) as usize)
                .min(MAX_PLACEHOLDERS / width)
                .max(1);
            Ok(Box::new(MyChannel {
                conn: Some(conn),
                target,
                mode: self.params.write_mode,
                per_statement,
                pending: Vec::new(),
                full_statement: None,
                load_data: self.params.write_mode != WriteMode::Update,
                loading: None,
                loaded: 0,
                inserted: 0,
            }) as Box<dyn WriteChannel>)
        })
    }

    fn finish<'a>(&'a self, log: &'a JobLog) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if self.params.post_sql.is_empty() {
                return Ok(());
            }
            let mut conn = self.conn().await?;
            self.run_sql(&mut conn, &self.params.post_sql, "postSql", log)
                .await
        })
    }

    fn abort<'a>(&'a self, log: &'a JobLog) -> BoxFuture<'a, ()> {
        log.warn(
            "mysqlwriter: open transactions rolled back; uncommitted rows are not in the target",
        );
        Box::pin(async {})
    }
}

struct MyChannel {
    /// The connection; lent to the task running a streaming `LOAD DATA` while one runs.
    conn: Option<Conn>,
    target: Target,
    mode: WriteMode,
    per_statement: usize,
    /// Rows waiting for the next INSERT (update mode, or the fallback).
    pending: Vec<Row>,
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
    /// Kept until the server confirms them, for the replay through INSERT.
    rows: Vec<Row>,
    bytes: usize,
    buf: Vec<u8>,
}

/// The connection back from a `LOAD DATA` task, with its warnings and affected rows.
type LoadOutcome = (Conn, Result<(u16, u64), mysql_async::Error>);

/// Send streamed LOAD DATA text in pieces of about this size.
const LOAD_DATA_PIECE: usize = 256 << 10;

impl MyChannel {
    fn conn(&mut self) -> Result<&mut Conn> {
        self.conn
            .as_mut()
            .ok_or_else(|| SyncError::Internal("MySQL connection is lent to a LOAD DATA".into()))
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
            None => Err(mysql_async::Error::Other(
                "MySQL connection is lent to a LOAD DATA".into(),
            )),
        }
    }

    async fn query(&mut self, sql: &str) -> Result<()> {
        self.conn()?
            .query_drop(sql)
            .await
            .map_err(|e| SyncError::Target(describe(&e)))
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

    /// Starts a streaming `LOAD DATA LOCAL INFILE` behind a savepoint.
    async fn start_load(&mut self) -> Result<()> {
        let err = |e: mysql_async::Error| SyncError::Target(describe(&e));
        let mut conn = self
            .conn
            .take()
            .ok_or_else(|| SyncError::Internal("LOAD DATA already running".into()))?;
        if let Err(e) = conn.query_drop("SAVEPOINT ferry_chunk").await {
            self.conn = Some(conn);
            return Err(err(e));
        }
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
            rows: Vec::with_capacity(LOAD_DATA_ROWS),
            bytes: 0,
            buf: Vec::with_capacity(LOAD_DATA_PIECE + (16 << 10)),
        });
        Ok(())
    }

    /// Adds a row to the running `LOAD DATA`, starting one if needed.
    async fn load_row(&mut self, row: Row, shared: &Shared) -> Result<()> {
        if self.loading.is_none() {
            self.start_load().await?;
        }
        let Some(l) = self.loading.as_mut() else {
            return Ok(());
        };
        tsv_row(&mut l.buf, &row);
        l.bytes += row_size(&row);
        l.rows.push(row);
        if l.buf.len() >= LOAD_DATA_PIECE {
            let piece = Bytes::from(std::mem::take(&mut l.buf));
            // A closed receiver means the statement already ended; finishing says why.
            let _ = l.tx.send(Ok(piece)).await;
        }
        if l.rows.len() >= LOAD_DATA_ROWS || l.bytes >= LOAD_DATA_BYTES {
            self.finish_load(shared).await?;
        }
        Ok(())
    }

    /// Ends the running `LOAD DATA`. LOCAL turns bad values and duplicate keys into warnings
    /// rather than errors, so a chunk with any warning is rolled back to its savepoint and
    /// replayed through strict INSERTs, which say exactly which rows are dirty: nothing is
    /// loaded altered.
    async fn finish_load(&mut self, shared: &Shared) -> Result<()> {
        let Some(mut l) = self.loading.take() else {
            return Ok(());
        };
        if !l.buf.is_empty() {
            let _ = l.tx.send(Ok(Bytes::from(std::mem::take(&mut l.buf)))).await;
        }
        drop(l.tx);
        let (conn, result) = l
            .task
            .await
            .map_err(|e| SyncError::Internal(format!("LOAD DATA task failed: {e}")))?;
        self.conn = Some(conn);
        let err = |e: mysql_async::Error| SyncError::Target(describe(&e));
        let rows = l.rows;
        let clean = match &result {
            Ok((warnings, affected)) => {
                *warnings == 0
                    && (self.mode == WriteMode::Replace || *affected == rows.len() as u64)
            }
            Err(e) if is_data_error(e) => false,
            Err(e) if is_local_infile_refused(e) => {
                shared.log.warn(format!(
                    "mysqlwriter: the server refuses LOAD DATA LOCAL ({}); using multi-row INSERT",
                    describe(e)
                ));
                self.load_data = false;
                false
            }
            Err(e) => return Err(SyncError::Target(describe(e))),
        };
        if clean {
            self.conn()?
                .query_drop("RELEASE SAVEPOINT ferry_chunk")
                .await
                .map_err(err)?;
            shared.written(rows.len() as u64, l.bytes as u64);
            self.loaded += rows.len();
            return Ok(());
        }
        self.conn()?
            .query_drop("ROLLBACK TO SAVEPOINT ferry_chunk")
            .await
            .map_err(err)?;
        self.flush_insert(rows, shared).await
    }

    async fn flush_insert(&mut self, rows: Vec<Row>, shared: &Shared) -> Result<()> {
        self.inserted += rows.len();
        let mut rows = rows.into_iter();
        loop {
            let chunk: Vec<Row> = rows.by_ref().take(self.per_statement).collect();
            if chunk.is_empty() {
                return Ok(());
            }
            self.insert_chunk(chunk, shared).await?;
        }
    }

    /// One multi-row statement behind a savepoint. Any warning means MySQL changed or dropped
    /// something (strict mode or not), so the statement is undone and its rows replayed one by
    /// one to find the rows at fault.
    async fn insert_chunk(&mut self, chunk: Vec<Row>, shared: &Shared) -> Result<()> {
        let n = chunk.len();
        let bytes: usize = chunk.iter().map(row_size).sum();
        let params: Vec<MyValue> = chunk.iter().flatten().map(to_mysql).collect();
        self.query("SAVEPOINT ferry_stmt").await?;
        match self.exec(n, params).await {
            Ok(0) => {
                shared.written(n as u64, bytes as u64);
                return Ok(());
            }
            Ok(_) => self.query("ROLLBACK TO SAVEPOINT ferry_stmt").await?,
            Err(e) if is_data_error(&e) => self.query("ROLLBACK TO SAVEPOINT ferry_stmt").await?,
            Err(e) => return Err(SyncError::Target(describe(&e))),
        }
        for row in chunk {
            self.insert_one(row, shared).await?;
        }
        Ok(())
    }

    /// One row behind a savepoint; a row the server refuses or warns about is dirty.
    async fn insert_one(&mut self, row: Row, shared: &Shared) -> Result<()> {
        let params: Vec<MyValue> = row.iter().map(to_mysql).collect();
        self.query("SAVEPOINT ferry_row").await?;
        let reason = match self.exec(1, params).await {
            Ok(0) => {
                shared.written(1, row_size(&row) as u64);
                return Ok(());
            }
            Ok(_) => self.warnings().await?,
            Err(e) if is_data_error(&e) => describe(&e),
            Err(e) => return Err(SyncError::Target(describe(&e))),
        };
        self.query("ROLLBACK TO SAVEPOINT ferry_row").await?;
        shared.dirty("writer", &row, None, &reason)
    }
}

impl WriteChannel for MyChannel {
    fn write<'a>(
        &'a mut self,
        rows: Vec<Row>,
        shared: &'a Arc<Shared>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let width = self.target.columns.len();
            for mut row in rows {
                self.target.adapt(&mut row);
                if row.len() != width {
                    shared.dirty(
                        "writer",
                        &row,
                        None,
                        &format!(
                            "row has {} fields but the target takes {width} columns",
                            row.len()
                        ),
                    )?;
                } else if let Err((i, reason)) = self.target.check(&row) {
                    shared.dirty("writer", &row, Some(&self.target.name(i)), &reason)?;
                } else if self.load_data {
                    self.load_row(row, shared).await?;
                } else {
                    self.pending.push(row);
                }
            }
            if self.pending.len() >= self.per_statement {
                let rows = std::mem::take(&mut self.pending);
                self.flush_insert(rows, shared).await?;
            }
            Ok(())
        })
    }

    fn commit(mut self: Box<Self>, shared: &Arc<Shared>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.finish_load(shared).await?;
            let rows = std::mem::take(&mut self.pending);
            self.flush_insert(rows, shared).await?;
            shared.log.info(format!(
                "mysqlwriter channel: {} rows by LOAD DATA, {} by INSERT",
                self.loaded, self.inserted
            ));
            let conn = self.conn()?;
            conn.query_drop("COMMIT")
                .await
                .map_err(|e| SyncError::Target(format!("commit failed: {}", describe(&e))))?;
            if let Some(c) = self.conn.take() {
                let _ = c.disconnect().await;
            }
            Ok(())
        })
    }
}
