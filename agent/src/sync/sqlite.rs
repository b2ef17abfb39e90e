//! `sqlitereader` / `sqlitewriter`.
//!
//! The writer runs one transaction per channel and SQLite allows one writer at a time, so it
//! writes with a single channel and commits once at the end: a failed or killed run leaves the
//! table as it was, and a rerun does not duplicate rows.

use super::plugin::{
    BlockingReadSplit, BlockingReader, BlockingSink, BlockingWriteChannel, BlockingWriter, JobLog,
    Result, Shared, SyncError, TargetInfo,
};
use super::value::{Row, Value, row_size};
use ferry_common::job::{SqliteReader as ReaderParams, SqliteWriter as WriterParams, WriteMode};
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::time::Duration;

/// Quotes a plain identifier; anything else (an expression the job author wrote, like
/// `count(*)`) is passed through as the author's SQL.
pub fn column_sql(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain { quote(name) } else { name.to_string() }
}

/// Double-quotes an identifier, doubling embedded quotes.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn open(path: &str, write: bool) -> Result<Connection, String> {
    if !write && !Path::new(path).exists() {
        return Err(format!("SQLite database {path} does not exist"));
    }
    let flags = if write {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| format!("cannot open SQLite database {path}: {e}"))?;
    conn.busy_timeout(Duration::from_secs(30))
        .map_err(|e| format!("{path}: {e}"))?;
    Ok(conn)
}

/// Opens a database to check it can be read, for connectivity tests.
pub fn probe(path: &str) -> Result<usize, String> {
    let conn = open(path, false)?;
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as usize)
    .map_err(|e| format!("{path} is not a readable SQLite database: {e}"))
}

/// Checks that `table` exists in the database at `path`.
pub fn probe_table(path: &str, table: &str) -> Result<(), String> {
    let conn = open(path, false)?;
    conn.prepare(&format!(
        "SELECT * FROM \"{}\" LIMIT 0",
        table.replace('"', "\"\"")
    ))
    .map(|_| ())
    .map_err(|e| format!("table {table} in {path}: {e}"))
}

/// The columns of `table`: name, declared type, nullable, primary key.
pub fn columns(path: &str, table: &str) -> Result<Vec<(String, String, bool, bool)>, String> {
    let conn = open(path, false)?;
    let mut stmt = conn
        .prepare("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1)")
        .map_err(|e| format!("table {table} in {path}: {e}"))?;
    let rows = stmt
        .query_map([table], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)? == 0,
                r.get::<_, i64>(3)? > 0,
            ))
        })
        .map_err(|e| format!("table {table} in {path}: {e}"))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("table {table} in {path}: {e}"))
}

pub struct SqliteReader {
    params: ReaderParams,
}

impl SqliteReader {
    pub fn new(params: ReaderParams) -> Self {
        Self { params }
    }

    fn query(&self) -> String {
        if let Some(q) = &self.params.query_sql {
            return q.clone();
        }
        let cols = if self.params.column.is_empty() || self.params.column == ["*"] {
            "*".to_string()
        } else {
            self.params
                .column
                .iter()
                .map(|c| column_sql(c))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let table = self.params.table.as_deref().unwrap_or_default();
        let mut sql = format!("SELECT {cols} FROM {}", quote(table));
        if let Some(w) = &self.params.where_clause {
            sql.push_str(&format!(" WHERE {w}"));
        }
        sql
    }
}

impl BlockingReader for SqliteReader {
    fn name(&self) -> &'static str {
        "sqlitereader"
    }

    fn splits(&self, _channels: usize, _log: &JobLog) -> Result<Vec<Box<dyn BlockingReadSplit>>> {
        let path = self.params.path.clone().unwrap_or_default();
        let conn = open(&path, false).map_err(SyncError::Source)?;
        let sql = self.query();
        conn.prepare(&sql)
            .map_err(|e| SyncError::Source(format!("{path}: {sql}: {e}")))?;
        Ok(vec![Box::new(Query { path, sql })])
    }
}

struct Query {
    path: String,
    sql: String,
}

fn to_value(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Float(f),
        // SQLite does not check that TEXT is UTF-8; text that is not stays bytes, unchanged.
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => Value::String(s.to_string()),
            Err(_) => Value::Bytes(t.to_vec()),
        },
        ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
    }
}

impl BlockingReadSplit for Query {
    fn describe(&self) -> String {
        format!("{}: {}", self.path, self.sql)
    }

    fn run(self: Box<Self>, sink: &mut BlockingSink, _target: &TargetInfo) -> Result<()> {
        let err = |e: rusqlite::Error| SyncError::Source(format!("{}: {e}", self.path));
        let conn = open(&self.path, false).map_err(SyncError::Source)?;
        let mut stmt = conn.prepare(&self.sql).map_err(err)?;
        let n = stmt.column_count();
        let mut rows = stmt.query([]).map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            let mut row = Vec::with_capacity(n);
            for i in 0..n {
                row.push(to_value(r.get_ref(i).map_err(err)?));
            }
            sink.push(row)?;
        }
        Ok(())
    }
}

pub struct SqliteWriter {
    params: WriterParams,
    columns: std::sync::OnceLock<Vec<String>>,
    /// Which target columns are declared BLOB.
    binary: std::sync::OnceLock<Vec<bool>>,
}

impl SqliteWriter {
    pub fn new(params: WriterParams) -> Self {
        Self {
            params,
            columns: std::sync::OnceLock::new(),
            binary: std::sync::OnceLock::new(),
        }
    }

    fn path(&self) -> &str {
        self.params.path.as_deref().unwrap_or_default()
    }

    fn run_sql(
        &self,
        conn: &Connection,
        statements: &[String],
        what: &str,
        log: &JobLog,
    ) -> Result<()> {
        for s in statements {
            let sql = s.replace("@table", &quote(&self.params.table));
            log.info(format!("{what}: {sql}"));
            conn.execute_batch(&sql)
                .map_err(|e| SyncError::Target(format!("{what} \"{sql}\" failed: {e}")))?;
        }
        Ok(())
    }
}

/// Binds a value; NaN is refused because SQLite stores it as NULL.
fn to_sql(v: Value) -> Result<SqlValue, String> {
    Ok(match v {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(b)),
        Value::Int(i) => SqlValue::Integer(i),
        Value::Float(f) if f.is_nan() => {
            return Err("NaN has no SQLite representation (SQLite stores it as NULL)".into());
        }
        Value::Float(f) => SqlValue::Real(f),
        Value::Bytes(b) => SqlValue::Blob(b),
        other @ (Value::Decimal(_)
        | Value::String(_)
        | Value::Json(_)
        | Value::Date(_)
        | Value::Time(_)
        | Value::Timestamp(_)
        | Value::TimestampTz(_)) => SqlValue::Text(other.to_string()),
    })
}

impl BlockingWriter for SqliteWriter {
    fn name(&self) -> &'static str {
        "sqlitewriter"
    }

    fn prepare(&self, log: &JobLog) -> Result<()> {
        let conn = open(self.path(), true).map_err(SyncError::Target)?;
        self.run_sql(&conn, &self.params.pre_sql, "preSql", log)?;
        let table = quote(&self.params.table);
        let stmt = conn
            .prepare(&format!("SELECT * FROM {table} LIMIT 0"))
            .map_err(|e| {
                SyncError::Target(format!(
                    "target table {} in {}: {e}; create it first (for example in preSql)",
                    self.params.table,
                    self.path()
                ))
            })?;
        let existing: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
        let columns = if self.params.column.is_empty() || self.params.column == ["*"] {
            existing
        } else {
            for c in &self.params.column {
                if !existing.iter().any(|e| e.eq_ignore_ascii_case(c)) {
                    return Err(SyncError::Target(format!(
                        "column \"{c}\" does not exist in table {}; it has: {}",
                        self.params.table,
                        existing.join(", ")
                    )));
                }
            }
            self.params.column.clone()
        };
        let declared: Vec<(String, bool)> = stmt
            .columns()
            .iter()
            .map(|c| {
                let blob = c
                    .decl_type()
                    .is_some_and(|t| t.to_ascii_uppercase().contains("BLOB"));
                (c.name().to_string(), blob)
            })
            .collect();
        let binary = columns
            .iter()
            .map(|c| {
                declared
                    .iter()
                    .any(|(name, blob)| *blob && name.eq_ignore_ascii_case(c))
            })
            .collect();
        let _ = self.columns.set(columns);
        let _ = self.binary.set(binary);
        Ok(())
    }

    fn target_info(&self) -> TargetInfo {
        TargetInfo {
            binary_columns: self.binary.get().cloned(),
            ..TargetInfo::default()
        }
    }

    fn parallelism(&self) -> usize {
        1
    }

    fn open(&self, _index: usize) -> Result<Box<dyn BlockingWriteChannel>> {
        let conn = open(self.path(), true).map_err(SyncError::Target)?;
        let columns = self.columns.get().cloned().unwrap_or_default();
        let verb = match self.params.write_mode {
            WriteMode::Insert => "INSERT",
            // A whole-row upsert is a replace in SQLite.
            WriteMode::Replace | WriteMode::Update => "INSERT OR REPLACE",
        };
        let sql = format!(
            "{verb} INTO {} ({}) VALUES ({})",
            quote(&self.params.table),
            columns
                .iter()
                .map(|c| quote(c))
                .collect::<Vec<_>>()
                .join(", "),
            vec!["?"; columns.len()].join(", ")
        );
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| SyncError::Target(format!("{}: {e}", self.path())))?;
        Ok(Box::new(SqliteChannel {
            conn,
            sql,
            width: columns.len(),
            path: self.path().to_string(),
            columns,
        }))
    }

    fn finish(&self, log: &JobLog) -> Result<()> {
        if self.params.post_sql.is_empty() {
            return Ok(());
        }
        let conn = open(self.path(), true).map_err(SyncError::Target)?;
        self.run_sql(&conn, &self.params.post_sql, "postSql", log)
    }

    fn abort(&self, log: &JobLog) {
        log.warn(format!(
            "sqlitewriter: transaction on {} rolled back; the table is as before this attempt",
            self.path()
        ));
    }
}

struct SqliteChannel {
    conn: Connection,
    sql: String,
    width: usize,
    path: String,
    columns: Vec<String>,
}

impl BlockingWriteChannel for SqliteChannel {
    fn write(&mut self, rows: Vec<Row>, shared: &Shared) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare_cached(&self.sql)
            .map_err(|e| SyncError::Target(format!("{}: {}: {e}", self.path, self.sql)))?;
        let (mut written, mut bytes) = (0u64, 0u64);
        for row in rows {
            if row.len() != self.width {
                shared.dirty(
                    "writer",
                    &row,
                    None,
                    &format!(
                        "row has {} fields but the target takes {} columns",
                        row.len(),
                        self.width
                    ),
                )?;
                continue;
            }
            let size = row_size(&row) as u64;
            let shown = row.clone();
            let mut params = Vec::with_capacity(row.len());
            let mut bad = None;
            for (i, v) in row.into_iter().enumerate() {
                match to_sql(v) {
                    Ok(p) => params.push(p),
                    Err(reason) => {
                        bad = Some((i, reason));
                        break;
                    }
                }
            }
            if let Some((i, reason)) = bad {
                let column = self.columns.get(i).map(String::as_str);
                shared.dirty("writer", &shown, column, &reason)?;
                continue;
            }
            match stmt.execute(rusqlite::params_from_iter(params)) {
                Ok(_) => {
                    written += 1;
                    bytes += size;
                }
                Err(rusqlite::Error::SqliteFailure(e, msg))
                    if matches!(
                        e.code,
                        rusqlite::ErrorCode::ConstraintViolation
                            | rusqlite::ErrorCode::TypeMismatch
                            | rusqlite::ErrorCode::TooBig
                    ) =>
                {
                    shared.dirty(
                        "writer",
                        &shown,
                        None,
                        &msg.unwrap_or_else(|| e.to_string()),
                    )?;
                }
                Err(e) => return Err(SyncError::Target(format!("{}: {e}", self.path))),
            }
        }
        shared.written(written, bytes);
        Ok(())
    }

    fn commit(self: Box<Self>, _shared: &Shared) -> Result<()> {
        self.conn
            .execute_batch("COMMIT")
            .map_err(|e| SyncError::Target(format!("commit on {} failed: {e}", self.path)))
    }
}
