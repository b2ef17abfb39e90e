//! `mysqlreader` / `mysqlwriter` for MySQL and MariaDB: the [`Driver`] the database skeleton
//! ([`super::rdbms`]) runs.
//!
//! Reads stream rows over the binary protocol (a prepared statement per split), so values
//! arrive typed and the result is never buffered whole. Sessions run in strict SQL mode,
//! re-asserted after the job's own `session` statements, so no job setting can make MySQL
//! change a value quietly.
//!
//! # Layout
//! - this file: connecting, split queries, reading, learning the target.
//! - [`write`]: binding values, `LOAD DATA` text and the writer's bulk channel.

mod write;

pub use write::to_mysql;

use super::dbtls;
use super::plugin::{JobLog, Result, RowSink, SyncError, TargetInfo};
use super::rdbms::{Dialect, Driver, SplitQueries, TableSplit, column_list, sql_name};
use super::value::{Row, Value, parse_date};
use chrono::{Datelike, NaiveDate, NaiveTime, Utc};
use ferry_common::job::{DbTls, JdbcUrl, RdbmsWriter, TlsMode, WriteMode};
use ferry_common::secret::Secret;
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::prelude::Queryable;
use mysql_async::{
    ClientIdentity, Column, Conn, DriverError, OptsBuilder, SslOpts, Value as MyValue,
};
use write::MyChannel;

#[derive(Debug, Default)]
pub struct My;

impl Dialect for My {
    fn quote_char(&self) -> char {
        '`'
    }
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

/// mysql_async builds its own rustls client; these options give it the checks of `tls.mode`.
fn ssl_opts(tls: &DbTls) -> Result<SslOpts, String> {
    let mut opts = SslOpts::default();
    if tls.mode.verifies() {
        let roots = dbtls::roots(tls)?
            .into_iter()
            .map(|c| c.as_ref().to_vec().into())
            .collect();
        opts = opts
            .with_root_certs(roots)
            .with_disable_built_in_roots(true)
            .with_danger_skip_domain_validation(tls.mode == TlsMode::VerifyCa);
    } else {
        opts = opts.with_danger_accept_invalid_certs(true);
    }
    if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
        opts = opts.with_client_identity(Some(ClientIdentity::new(
            std::path::PathBuf::from(cert).into(),
            std::path::PathBuf::from(key).into(),
        )));
    }
    Ok(opts)
}

/// Opens a connection with the TLS the URL asks for and prepares its session.
pub async fn connect(
    url: &str,
    user: &str,
    password: &Secret,
    session: &[String],
) -> Result<Conn, String> {
    let u = JdbcUrl::parse(url).map_err(|e| e.to_string())?;
    let tls = u.tls().map_err(|e| e.to_string())?;
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
    let failed = |e: mysql_async::Error| {
        format!(
            "cannot connect to {}:{}/{} as {user} (sslmode {}): {}",
            u.host,
            u.port,
            u.database,
            tls.mode.as_str(),
            describe(&e)
        )
    };
    let mut conn = if tls.mode == TlsMode::Disable {
        Conn::new(opts).await.map_err(failed)?
    } else {
        match Conn::new(opts.clone().ssl_opts(ssl_opts(&tls)?)).await {
            Ok(conn) => conn,
            // `prefer` alone may talk in clear, and only to a server that offers no TLS.
            Err(mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer))
                if tls.mode == TlsMode::Prefer =>
            {
                Conn::new(opts).await.map_err(failed)?
            }
            Err(e) => return Err(failed(e)),
        }
    };
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

/// Split planning runs on the reader's first connection.
impl SplitQueries for Conn {
    async fn is_integer(&mut self, table: &str, column: &str) -> Result<bool, String> {
        let sql = format!(
            "SELECT {} FROM {} LIMIT 0",
            sql_name(&My, column),
            sql_name(&My, table)
        );
        let stmt = self.prep(sql).await.map_err(|e| describe(&e))?;
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
            self.query_first(sql).await.map_err(|e| describe(&e))?;
        Ok(row.and_then(|(lo, hi)| lo.zip(hi)))
    }

    async fn count(&mut self, sql: &str) -> Result<i64, String> {
        let n: Option<i64> = self.query_first(sql).await.map_err(|e| describe(&e))?;
        Ok(n.unwrap_or(0))
    }

    async fn literal(&mut self, sql: &str) -> Result<Option<String>, String> {
        let v: Option<Option<String>> = self.query_first(sql).await.map_err(|e| describe(&e))?;
        Ok(v.flatten())
    }

    fn quote_literal_expr(&self, expr: &str) -> String {
        format!("QUOTE({expr})")
    }
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

impl Driver for My {
    const READER: &'static str = "mysqlreader";
    const WRITER: &'static str = "mysqlwriter";
    type Conn = Conn;
    type Target = Target;
    type Channel = MyChannel;

    async fn connect(
        url: &str,
        user: &str,
        password: &Secret,
        session: &[String],
    ) -> Result<Conn, String> {
        connect(url, user, password, session).await
    }

    async fn execute(conn: &mut Conn, sql: &str) -> Result<(), String> {
        conn.query_drop(sql).await.map_err(|e| describe(&e))
    }

    async fn close(conn: Conn) {
        let _ = conn.disconnect().await;
    }

    async fn read(
        conn: &mut Conn,
        split: &TableSplit,
        sink: &mut RowSink,
        _target: &TargetInfo,
    ) -> Result<()> {
        let mut result = conn
            .exec_iter(split.sql.as_str(), ())
            .await
            .map_err(|e| split.fail(format!("{}: {}", split.sql, describe(&e))))?;
        let columns = result.columns().map(|c| c.to_vec()).unwrap_or_default();
        while let Some(row) = result.next().await.map_err(|e| split.fail(describe(&e)))? {
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
                Some((column, reason)) => sink.dirty(&values, Some(&column), &reason)?,
            }
        }
        Ok(())
    }

    async fn target(
        conn: &mut Conn,
        params: &RdbmsWriter,
        table: &str,
        log: &JobLog,
    ) -> Result<Target> {
        let cols = column_list(&My, &params.column);
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
        let path = match params.write_mode {
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
            params.write_mode
        ));
        Ok(Target {
            table: table.to_string(),
            columns,
            types,
            binary,
        })
    }

    fn target_info(target: &Target) -> TargetInfo {
        TargetInfo {
            binary_columns: Some(target.binary.clone()),
            ..TargetInfo::default()
        }
    }

    async fn channel(
        conn: Conn,
        target: &Target,
        params: &RdbmsWriter,
        _index: usize,
    ) -> Result<MyChannel> {
        Ok(MyChannel::new(conn, target.clone(), params))
    }
}

/// What `prepare` learns about the target, shared by all channels.
#[derive(Debug, Clone)]
pub struct Target {
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
    pub(super) fn check(&self, row: &Row) -> Result<(), (usize, String)> {
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
    pub(super) fn adapt(&self, row: &mut Row) {
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
    pub(super) fn name(&self, i: usize) -> String {
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
