//! `postgresqlreader` / `postgresqlwriter` over PostgreSQL's binary COPY, both ways.
//!
//! Reading runs `COPY (SELECT …) TO STDOUT (FORMAT binary)` per split: no per-row protocol
//! overhead and no text parsing. Writing runs `COPY … FROM STDIN (FORMAT binary)` in batches
//! inside one transaction per channel, each batch behind a savepoint: when the server refuses a
//! batch (a unique or NOT NULL violation), the batch is replayed row by row to find the dirty
//! rows and keep the others. `update` / `replace` COPY into a temporary staging table and merge
//! with `INSERT … ON CONFLICT (key) DO UPDATE`.

pub mod codec;

use super::plugin::{
    BoxFuture, JobLog, RawBatch, RawFormat, ReadSplit, Reader, Result, RowSink, Shared, SyncError,
    TargetInfo, WriteChannel, Writer,
};
use super::rdbms::{Dialect, SplitQueries, TableSplit, plan_table, sql_name};
use super::value::{Row, Value, row_size};
use bytes::{BufMut, Bytes, BytesMut};
use chrono::{FixedOffset, Utc};
use codec::{JsonText, Numeric, PgValue, UuidText, convert, readable, writable};
use ferry_common::job::{JdbcUrl, RdbmsReader, RdbmsWriter, WriteMode};
use ferry_common::secret::Secret;
use futures_util::SinkExt;
use std::pin::Pin;
use std::pin::pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;
use tokio_postgres::CopyInSink;
use tokio_postgres::binary_copy::{BinaryCopyOutRow, BinaryCopyOutStream};
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls};
use tokio_stream::StreamExt;

pub struct Pg;

impl Dialect for Pg {
    fn quote_part(&self, part: &str) -> String {
        // Unquoted names fold to lower case in PostgreSQL; quote only names that are already
        // lower case, which protects reserved words (`user`, `order`) without changing meaning.
        if part.chars().any(|c| c.is_ascii_uppercase()) {
            part.to_string()
        } else {
            format!("\"{}\"", part.replace('"', "\"\""))
        }
    }
}

/// Connects to the first of DataX's `jdbcUrl[]` that answers; the error lists every attempt.
async fn connect_first<C, F, Fut>(urls: &[String], connect: F) -> Result<(C, String), String>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<C, String>>,
{
    let mut errors = Vec::new();
    for url in urls {
        match connect(url.clone()).await {
            Ok(c) => return Ok((c, url.clone())),
            Err(e) => errors.push(e),
        }
    }
    Err(errors.join("; "))
}

/// Opens a connection; the connection task runs on the runtime.
pub async fn connect(url: &str, user: &str, password: &Secret) -> Result<Client, String> {
    let u = JdbcUrl::parse(url).map_err(|e| e.to_string())?;
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&u.host)
        .port(u.port)
        .dbname(&u.database)
        .user(user)
        .application_name("ferry")
        .connect_timeout(Duration::from_secs(10));
    if !password.is_empty() {
        cfg.password(password.expose());
    }
    let (client, conn) = cfg.connect(NoTls).await.map_err(|e| {
        format!(
            "cannot connect to {}:{}/{} as {user}: {}",
            u.host,
            u.port,
            u.database,
            describe(&e)
        )
    })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "postgresql connection closed");
        }
    });
    Ok(client)
}

/// The most useful text of a driver error: the server's message when there is one.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} ({})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(&format!(": {d}"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            if let Some(src) = std::error::Error::source(e) {
                s.push_str(&format!(": {src}"));
            }
            s
        }
    }
}

async fn run_session(client: &Client, session: &[String]) -> Result<(), String> {
    for s in session {
        client
            .batch_execute(s)
            .await
            .map_err(|e| format!("session statement \"{s}\" failed: {}", describe(&e)))?;
    }
    Ok(())
}

struct PgSplitQ<'a>(&'a Client);

impl SplitQueries for PgSplitQ<'_> {
    async fn is_integer(&mut self, table: &str, column: &str) -> Result<bool, String> {
        let sql = format!(
            "SELECT {} FROM {} LIMIT 0",
            sql_name(&Pg, column),
            sql_name(&Pg, table)
        );
        let stmt = self.0.prepare(&sql).await.map_err(|e| describe(&e))?;
        Ok(stmt
            .columns()
            .first()
            .is_some_and(|c| [Type::INT2, Type::INT4, Type::INT8].contains(c.type_())))
    }

    async fn min_max(&mut self, qpk: &str, from: &str) -> Result<Option<(i64, i64)>, String> {
        let sql = format!("SELECT MIN({qpk})::bigint, MAX({qpk})::bigint {from}");
        let row = self
            .0
            .query_one(&sql, &[])
            .await
            .map_err(|e| describe(&e))?;
        let lo: Option<i64> = row.try_get(0).map_err(|e| describe(&e))?;
        let hi: Option<i64> = row.try_get(1).map_err(|e| describe(&e))?;
        Ok(lo.zip(hi))
    }

    async fn count(&mut self, sql: &str) -> Result<i64, String> {
        let row = self.0.query_one(sql, &[]).await.map_err(|e| describe(&e))?;
        row.try_get(0).map_err(|e| describe(&e))
    }

    async fn literal(&mut self, sql: &str) -> Result<Option<String>, String> {
        let row = self.0.query_opt(sql, &[]).await.map_err(|e| describe(&e))?;
        match row {
            Some(r) => r.try_get(0).map_err(|e| describe(&e)),
            None => Ok(None),
        }
    }

    fn quote_literal_expr(&self, expr: &str) -> String {
        format!("quote_literal({expr})")
    }
}

pub struct PgReader {
    params: RdbmsReader,
}

impl PgReader {
    pub fn new(params: RdbmsReader) -> Self {
        Self { params }
    }
}

impl Reader for PgReader {
    fn name(&self) -> &'static str {
        "postgresqlreader"
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
                let (client, url) = connect_first(&conn.jdbc_url, |u| {
                    let (user, password) = (user.clone(), p.password.clone());
                    async move { connect(&u, &user, &password).await }
                })
                .await
                .map_err(SyncError::Source)?;
                for q in &conn.query_sql {
                    out.push(Box::new(PgSplit {
                        url: url.clone(),
                        user: user.clone(),
                        password: p.password.clone(),
                        session: p.session.clone(),
                        split: TableSplit {
                            sql: q.trim().trim_end_matches(';').to_string(),
                            label: "querySql".into(),
                            whole_table: None,
                        },
                    }));
                }
                for table in &conn.table {
                    let splits = plan_table(
                        &mut PgSplitQ(&client),
                        &Pg,
                        table,
                        &p.column,
                        p.where_clause.as_deref(),
                        p.split_pk.as_deref(),
                        channels,
                    )
                    .await
                    .map_err(|e| SyncError::Source(format!("splitting {table}: {e}")))?;
                    if p.split_pk.is_some() {
                        log.info(format!(
                            "{table}: {} split(s) by {}",
                            splits.len(),
                            p.split_pk.as_deref().unwrap_or_default()
                        ));
                    }
                    out.extend(splits.into_iter().map(|split| {
                        Box::new(PgSplit {
                            url: url.clone(),
                            user: user.clone(),
                            password: p.password.clone(),
                            session: p.session.clone(),
                            split,
                        }) as Box<dyn ReadSplit>
                    }));
                }
            }
            Ok(out)
        })
    }
}

struct PgSplit {
    url: String,
    user: String,
    password: Secret,
    session: Vec<String>,
    split: TableSplit,
}

/// The name of PostgreSQL's binary COPY tuples as a raw format between reader and writer.
const RAW_FORMAT: &str = "postgresql-binary-copy";

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

impl PgSplit {
    /// `COPY t (cols) TO` for a whole table, which skips the executor; `COPY (SELECT …) TO`
    /// otherwise.
    fn copy_sql(&self) -> String {
        match &self.split.whole_table {
            Some(t) => format!("COPY {t} TO STDOUT (FORMAT binary)"),
            None => format!("COPY ({}) TO STDOUT (FORMAT binary)", self.split.sql),
        }
    }

    /// Streams the split's binary COPY tuples untouched to a PostgreSQL writer.
    async fn run_raw(&self, client: &Client, width: usize, sink: &mut RowSink) -> Result<()> {
        let src = |e: String| SyncError::Source(format!("{}: {e}", self.split.label));
        let stream = client
            .copy_out(&format!(
                "COPY ({}) TO STDOUT (FORMAT binary)",
                self.split.sql
            ))
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
                let ext = u32::from_be_bytes([pending[15], pending[16], pending[17], pending[18]])
                    as usize;
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

impl ReadSplit for PgSplit {
    fn describe(&self) -> String {
        self.split.label.clone()
    }

    fn run<'a>(
        self: Box<Self>,
        sink: &'a mut RowSink,
        target: &'a TargetInfo,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let src = |e: String| SyncError::Source(format!("{}: {e}", self.split.label));
            let client = connect(&self.url, &self.user, &self.password)
                .await
                .map_err(src)?;
            run_session(&client, &self.session).await.map_err(src)?;
            let stmt = client
                .prepare(&self.split.sql)
                .await
                .map_err(|e| src(format!("{}: {}", self.split.sql, describe(&e))))?;
            let columns = stmt.columns();
            let oids: Vec<u32> = columns.iter().map(|c| c.type_().oid()).collect();
            let raw = RawFormat {
                format: RAW_FORMAT,
                column_types: oids,
            };
            if target.raw.as_ref() == Some(&raw) {
                let oids = raw.column_types;
                tracing::debug!(split = %self.split.label, "column types match the target: passing COPY tuples through");
                return self.run_raw(&client, oids.len(), sink).await;
            }
            let all_native = columns.iter().all(|c| readable(c.type_()));
            let (copy_sql, types) = if all_native {
                (
                    self.copy_sql(),
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
                        self.split.sql
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
                .map_err(|e| src(describe(&e)))?;
            let mut rows = pin!(BinaryCopyOutStream::new(stream, &types));
            while let Some(row) = rows.next().await {
                let row = row.map_err(|e| src(describe(&e)))?;
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
        })
    }
}

/// What `prepare` learns about the target, shared by all channels.
#[derive(Debug, Clone)]
struct Target {
    table: String,
    columns: Vec<String>,
    types: Vec<Type>,
    conflict: Vec<String>,
}

pub struct PgWriter {
    params: RdbmsWriter,
    target: OnceLock<Target>,
}

impl PgWriter {
    pub fn new(params: RdbmsWriter) -> Self {
        Self {
            params,
            target: OnceLock::new(),
        }
    }

    fn user(&self) -> String {
        self.params.username.clone().unwrap_or_default()
    }

    async fn client(&self) -> Result<Client> {
        let client = connect(
            self.params.target_url(),
            &self.user(),
            &self.params.password,
        )
        .await
        .map_err(SyncError::Target)?;
        run_session(&client, &self.params.session)
            .await
            .map_err(SyncError::Target)?;
        Ok(client)
    }

    async fn run_sql(
        &self,
        client: &Client,
        statements: &[String],
        what: &str,
        log: &JobLog,
    ) -> Result<()> {
        let table = sql_name(&Pg, self.params.target_table());
        for s in statements {
            let sql = s.replace("@table", &table);
            log.info(format!("{what}: {sql}"));
            client.batch_execute(&sql).await.map_err(|e| {
                SyncError::Target(format!("{what} \"{sql}\" failed: {}", describe(&e)))
            })?;
        }
        Ok(())
    }
}

impl Writer for PgWriter {
    fn name(&self) -> &'static str {
        "postgresqlwriter"
    }

    fn prepare<'a>(&'a self, log: &'a JobLog) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let client = self.client().await?;
            self.run_sql(&client, &self.params.pre_sql, "preSql", log)
                .await?;
            let table = sql_name(&Pg, self.params.target_table());
            let cols = super::rdbms::select_list(&Pg, &self.params.column);
            let stmt = client
                .prepare(&format!("SELECT {cols} FROM {table} LIMIT 0"))
                .await
                .map_err(|e| SyncError::Target(format!("target {table}: {}", describe(&e))))?;
            let mut columns = Vec::new();
            let mut types = Vec::new();
            for c in stmt.columns() {
                if !writable(c.type_()) {
                    return Err(SyncError::Target(format!(
                        "column {} of {table} has type {}, which the PostgreSQL writer does not support yet",
                        c.name(),
                        c.type_()
                    )));
                }
                columns.push(format!("\"{}\"", c.name().replace('"', "\"\"")));
                types.push(c.type_().clone());
            }
            let conflict = if self.params.write_mode == WriteMode::Insert {
                Vec::new()
            } else if !self.params.upsert_key.is_empty() {
                self.params
                    .upsert_key
                    .iter()
                    .map(|k| sql_name(&Pg, k))
                    .collect()
            } else {
                let rows = client
                    .query(
                        "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a \
                         ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                         WHERE i.indrelid = $1::text::regclass AND i.indisprimary",
                        &[&table],
                    )
                    .await
                    .map_err(|e| {
                        SyncError::Target(format!("primary key of {table}: {}", describe(&e)))
                    })?;
                let key: Vec<String> = rows
                    .iter()
                    .filter_map(|r| r.try_get::<_, String>(0).ok())
                    .map(|k| format!("\"{}\"", k.replace('"', "\"\"")))
                    .collect();
                if key.is_empty() {
                    return Err(SyncError::Target(format!(
                        "writeMode {:?} needs a key: {table} has no primary key; set \"upsertKey\"",
                        self.params.write_mode
                    )));
                }
                key
            };
            log.info(format!(
                "postgresqlwriter: {table} ({} columns), mode {:?}, binary COPY",
                columns.len(),
                self.params.write_mode
            ));
            let _ = self.target.set(Target {
                table,
                columns,
                types,
                conflict,
            });
            Ok(())
        })
    }

    fn target_info(&self) -> TargetInfo {
        TargetInfo {
            raw: self.target.get().map(|t| RawFormat {
                format: RAW_FORMAT,
                column_types: t.types.iter().map(Type::oid).collect(),
            }),
            binary_columns: self
                .target
                .get()
                .map(|t| t.types.iter().map(|ty| *ty == Type::BYTEA).collect()),
        }
    }

    fn parallelism(&self) -> usize {
        usize::MAX
    }

    fn open(&self, index: usize) -> BoxFuture<'_, Result<Box<dyn WriteChannel>>> {
        Box::pin(async move {
            let target = self
                .target
                .get()
                .cloned()
                .ok_or_else(|| SyncError::Internal("writer used before prepare".into()))?;
            let client = self.client().await?;
            let err = |e: tokio_postgres::Error| SyncError::Target(describe(&e));
            client.batch_execute("BEGIN").await.map_err(err)?;
            let stage = if self.params.write_mode == WriteMode::Insert {
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
                    .map_err(err)?;
                Some(stage)
            };
            Ok(Box::new(PgChannel {
                client,
                target,
                stage,
                segment: Vec::new(),
                segment_bytes: 0,
                copy: None,
                batch: self.params.batch_size.unwrap_or(65_536).max(1) as usize,
            }) as Box<dyn WriteChannel>)
        })
    }

    fn finish<'a>(&'a self, log: &'a JobLog) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if self.params.post_sql.is_empty() {
                return Ok(());
            }
            let client = self.client().await?;
            self.run_sql(&client, &self.params.post_sql, "postSql", log)
                .await
        })
    }

    fn abort<'a>(&'a self, log: &'a JobLog) -> BoxFuture<'a, ()> {
        log.warn("postgresqlwriter: open transactions rolled back; uncommitted rows are not in the target");
        Box::pin(async {})
    }
}

struct PgChannel {
    client: Client,
    target: Target,
    stage: Option<String>,
    /// Rows of the COPY in progress (kept until the server accepts them, so a refused segment
    /// can be replayed row by row), with their size for statistics.
    segment: Vec<SegRow>,
    /// Bytes held by `segment`.
    segment_bytes: u64,
    /// The COPY in progress and its unsent bytes.
    copy: Option<(Pin<Box<CopyInSink<Bytes>>>, BytesMut)>,
    batch: usize,
}

/// A row of the COPY in progress.
enum SegRow {
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
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
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

impl PgChannel {
    fn segment_full(&self) -> bool {
        self.segment.len() >= self.batch || self.segment_bytes >= SEGMENT_BYTES
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

    /// The COPY of the current segment, opened behind a savepoint when there is none.
    async fn open_segment(&mut self) -> Result<()> {
        if self.copy.is_none() {
            let err = |e: tokio_postgres::Error| SyncError::Target(describe(&e));
            self.client
                .batch_execute("SAVEPOINT ferry_segment")
                .await
                .map_err(err)?;
            let sink = self.open_copy().await.map_err(err)?;
            let mut buf = BytesMut::with_capacity(COPY_CHUNK + (64 << 10));
            buf.put_slice(COPY_HEADER);
            self.copy = Some((sink, buf));
        }
        Ok(())
    }

    /// Adds a converted row to the COPY in progress, opening one (behind a savepoint) if needed
    /// and sending full chunks, so the server ingests while the next rows are converted.
    async fn push(&mut self, values: Vec<PgValue>, size: u64, shared: &Shared) -> Result<()> {
        self.open_segment().await?;
        let Some((sink, buf)) = self.copy.as_mut() else {
            return Ok(());
        };
        match encode_row(buf, &values, &self.target.types) {
            Ok(()) => {
                // What the decoded row really holds in memory: its data plus one enum slot per
                // value and allocation overhead, so the byte cap bounds memory, not just data.
                self.segment_bytes += size + 48 * values.len() as u64 + 64;
                self.segment.push(SegRow::Values(values, size));
            }
            Err(reason) => shared.dirty("writer", &shown(&values), None, &reason)?,
        }
        if buf.len() >= COPY_CHUNK {
            let chunk = buf.split().freeze();
            if let Err(e) = sink.send(chunk).await {
                // The server refused the data; finishing the segment replays it row by row.
                tracing::debug!(error = %describe(&e), "COPY chunk refused");
            }
        }
        Ok(())
    }

    /// Adds passed-through tuples to the COPY in progress, sending them as they are.
    async fn push_raw(&mut self, batch: RawBatch) -> Result<()> {
        self.open_segment().await?;
        let Some((sink, buf)) = self.copy.as_mut() else {
            return Ok(());
        };
        let ends = batch
            .starts
            .iter()
            .skip(1)
            .copied()
            .chain([batch.data.len()]);
        for (start, end) in batch.starts.iter().copied().zip(ends) {
            self.segment_bytes += (end - start) as u64;
            self.segment.push(SegRow::Raw(batch.data.slice(start..end)));
        }
        let mut sent = Ok(());
        if !buf.is_empty() {
            sent = sink.send(buf.split().freeze()).await;
        }
        if sent.is_ok() {
            sent = sink.send(batch.data).await;
        }
        if let Err(e) = sent {
            // The server refused the data; finishing the segment replays it row by row.
            tracing::debug!(error = %describe(&e), "COPY chunk refused");
        }
        Ok(())
    }

    /// Ends the COPY in progress; if the server refused it, replays its rows one by one
    /// behind savepoints to isolate the dirty rows and keep the rest.
    async fn finish_segment(&mut self, shared: &Shared) -> Result<()> {
        let Some((mut sink, mut buf)) = self.copy.take() else {
            return Ok(());
        };
        let rows = std::mem::take(&mut self.segment);
        self.segment_bytes = 0;
        let err = |e: tokio_postgres::Error| SyncError::Target(describe(&e));
        buf.put_i16(-1);
        let sent = async {
            sink.send(buf.split().freeze()).await?;
            sink.as_mut().finish().await?;
            self.merge().await
        }
        .await;
        match sent {
            Ok(()) => {
                self.client
                    .batch_execute("RELEASE SAVEPOINT ferry_segment")
                    .await
                    .map_err(err)?;
                let bytes = rows.iter().map(SegRow::size).sum();
                shared.written(rows.len() as u64, bytes);
                return Ok(());
            }
            Err(e) if e.as_db_error().is_none() => return Err(err(e)),
            Err(_) => {
                self.client
                    .batch_execute("ROLLBACK TO SAVEPOINT ferry_segment")
                    .await
                    .map_err(err)?;
            }
        }
        self.replay(&rows, shared).await
    }

    /// Writes `rows` in one COPY behind a savepoint.
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

    /// Finds the rows the server refuses by halving: a refused half is split again, an accepted
    /// one is kept, so k bad rows in n cost about 2·k·log2(n) COPYs instead of n.
    fn replay<'a>(
        &'a self,
        rows: &'a [SegRow],
        shared: &'a Shared,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(async move {
            if rows.is_empty() {
                return Ok(());
            }
            if rows.len() > 1 {
                let (a, b) = rows.split_at(rows.len() / 2);
                self.replay_part(a, shared).await?;
                return self.replay_part(b, shared).await;
            }
            self.replay_part(rows, shared).await
        })
    }

    async fn replay_part(&self, rows: &[SegRow], shared: &Shared) -> Result<()> {
        let err = |e: tokio_postgres::Error| SyncError::Target(describe(&e));
        self.client
            .batch_execute("SAVEPOINT ferry_part")
            .await
            .map_err(err)?;
        match self.copy_rows(rows).await {
            Ok(()) => {
                self.client
                    .batch_execute("RELEASE SAVEPOINT ferry_part")
                    .await
                    .map_err(err)?;
                shared.written(rows.len() as u64, rows.iter().map(SegRow::size).sum());
                Ok(())
            }
            Err(e) => match e.as_db_error() {
                Some(db) => {
                    self.client
                        .batch_execute("ROLLBACK TO SAVEPOINT ferry_part")
                        .await
                        .map_err(err)?;
                    match rows {
                        [one] => shared.dirty(
                            "writer",
                            &one.shown(&self.target.types),
                            db.column(),
                            &format!("{} ({})", db.message(), db.code().code()),
                        ),
                        _ => self.replay(rows, shared).await,
                    }
                }
                None => Err(err(e)),
            },
        }
    }
}

impl WriteChannel for PgChannel {
    fn write<'a>(
        &'a mut self,
        rows: Vec<Row>,
        shared: &'a Arc<Shared>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let width = self.target.types.len();
            for row in rows {
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
                    continue;
                }
                let size = row_size(&row) as u64;
                let mut values = Vec::with_capacity(width);
                let mut cells = row.into_iter();
                let mut bad = None;
                for (i, ty) in self.target.types.iter().enumerate() {
                    let Some(v) = cells.next() else { break };
                    match convert(v, ty) {
                        Ok(pv) => values.push(pv),
                        Err((reason, original)) => {
                            bad = Some((i, original, reason));
                            break;
                        }
                    }
                }
                match bad {
                    Some((i, original, reason)) => {
                        let mut partial = shown(&values);
                        partial.push(original);
                        partial.extend(cells);
                        let column = self.target.columns[i].trim_matches('"');
                        shared.dirty("writer", &partial, Some(column), &reason)?
                    }
                    None => {
                        self.push(values, size, shared).await?;
                        if self.segment_full() {
                            self.finish_segment(shared).await?;
                        }
                    }
                }
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
            self.push_raw(batch).await?;
            if self.segment_full() {
                self.finish_segment(shared).await?;
            }
            Ok(())
        })
    }

    fn commit(mut self: Box<Self>, shared: &Arc<Shared>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.finish_segment(shared).await?;
            self.client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| SyncError::Target(format!("commit failed: {}", describe(&e))))
        })
    }
}
