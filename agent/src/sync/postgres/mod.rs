//! `postgresqlreader` / `postgresqlwriter` over PostgreSQL's binary COPY, both ways: the
//! [`Driver`] the database skeleton ([`super::rdbms`]) runs.
//!
//! Reading runs `COPY (SELECT …) TO STDOUT (FORMAT binary)` per split: no per-row protocol
//! overhead and no text parsing; between tables of identical column types the COPY tuples pass
//! to the writer untouched. Writing runs `COPY … FROM STDIN (FORMAT binary)` in segments inside
//! one transaction per channel. `update` / `replace` COPY into a temporary staging table and
//! merge with `INSERT … ON CONFLICT (key) DO UPDATE`.
//!
//! # Layout
//! - this file: connecting, split queries, learning the target.
//! - [`read`]: the COPY read path, decoding and pass-through.
//! - [`write`]: the COPY write path (the writer's bulk channel).
//! - [`codec`]: values to and from PostgreSQL's binary forms.

pub mod codec;
mod read;
mod write;

use super::dbtls;
use super::plugin::{JobLog, RawFormat, Result, RowSink, SyncError, TargetInfo};
use super::rdbms::{Dialect, Driver, SplitQueries, TableSplit, column_list, sql_name};
use codec::writable;
use ferry_common::job::{JdbcUrl, RdbmsWriter, TlsMode, WriteMode};
use ferry_common::secret::Secret;
use std::time::Duration;
use tokio_postgres::config::SslMode;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;
use write::PgChannel;

/// The name of PostgreSQL's binary COPY tuples as a raw format between reader and writer.
pub(crate) const RAW_FORMAT: &str = "postgresql-binary-copy";

#[derive(Debug, Default)]
pub struct Pg;

impl Dialect for Pg {
    fn quote_char(&self) -> char {
        '"'
    }
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

/// Opens a connection with the TLS the URL asks for; the connection task runs on the runtime.
pub async fn connect(url: &str, user: &str, password: &Secret) -> Result<Client, String> {
    let u = JdbcUrl::parse(url).map_err(|e| e.to_string())?;
    let tls = u.tls().map_err(|e| e.to_string())?;
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
    let failed = |e: tokio_postgres::Error| {
        format!(
            "cannot connect to {}:{}/{} as {user} (sslmode {}): {}",
            u.host,
            u.port,
            u.database,
            tls.mode.as_str(),
            describe(&e)
        )
    };
    let client = if tls.mode == TlsMode::Disable {
        let (client, conn) = cfg.connect(NoTls).await.map_err(failed)?;
        spawn_connection(conn);
        client
    } else {
        // Verification is the connector's job; tokio-postgres only needs to know whether a
        // server without TLS may be talked to in clear (`prefer` only).
        cfg.ssl_mode(if tls.mode == TlsMode::Prefer {
            SslMode::Prefer
        } else {
            SslMode::Require
        });
        let connector = MakeRustlsConnect::new(dbtls::client_config(&tls)?);
        let (client, conn) = cfg.connect(connector).await.map_err(failed)?;
        spawn_connection(conn);
        client
    };
    Ok(client)
}

fn spawn_connection<F>(conn: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "postgresql connection closed");
        }
    });
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

/// Split planning runs on the reader's first connection.
impl SplitQueries for Client {
    async fn is_integer(&mut self, table: &str, column: &str) -> Result<bool, String> {
        let sql = format!(
            "SELECT {} FROM {} LIMIT 0",
            sql_name(&Pg, column),
            sql_name(&Pg, table)
        );
        let stmt = self.prepare(&sql).await.map_err(|e| describe(&e))?;
        Ok(stmt
            .columns()
            .first()
            .is_some_and(|c| [Type::INT2, Type::INT4, Type::INT8].contains(c.type_())))
    }

    async fn min_max(&mut self, qpk: &str, from: &str) -> Result<Option<(i64, i64)>, String> {
        let sql = format!("SELECT MIN({qpk})::bigint, MAX({qpk})::bigint {from}");
        let row = self.query_one(&sql, &[]).await.map_err(|e| describe(&e))?;
        let lo: Option<i64> = row.try_get(0).map_err(|e| describe(&e))?;
        let hi: Option<i64> = row.try_get(1).map_err(|e| describe(&e))?;
        Ok(lo.zip(hi))
    }

    async fn count(&mut self, sql: &str) -> Result<i64, String> {
        let row = self.query_one(sql, &[]).await.map_err(|e| describe(&e))?;
        row.try_get(0).map_err(|e| describe(&e))
    }

    async fn literal(&mut self, sql: &str) -> Result<Option<String>, String> {
        let row = self.query_opt(sql, &[]).await.map_err(|e| describe(&e))?;
        match row {
            Some(r) => r.try_get(0).map_err(|e| describe(&e)),
            None => Ok(None),
        }
    }

    fn quote_literal_expr(&self, expr: &str) -> String {
        format!("quote_literal({expr})")
    }
}

/// What `prepare` learns about the target, shared by all channels.
#[derive(Debug, Clone)]
pub struct Target {
    table: String,
    columns: Vec<String>,
    types: Vec<Type>,
    conflict: Vec<String>,
}

impl Driver for Pg {
    const READER: &'static str = "postgresqlreader";
    const WRITER: &'static str = "postgresqlwriter";
    type Conn = Client;
    type Target = Target;
    type Channel = PgChannel;

    async fn connect(
        url: &str,
        user: &str,
        password: &Secret,
        session: &[String],
    ) -> Result<Client, String> {
        let client = connect(url, user, password).await?;
        run_session(&client, session).await?;
        Ok(client)
    }

    async fn execute(conn: &mut Client, sql: &str) -> Result<(), String> {
        conn.batch_execute(sql).await.map_err(|e| describe(&e))
    }

    async fn close(conn: Client) {
        drop(conn);
    }

    async fn read(
        conn: &mut Client,
        split: &TableSplit,
        sink: &mut RowSink,
        target: &TargetInfo,
    ) -> Result<()> {
        read::run(conn, split, sink, target).await
    }

    async fn target(
        conn: &mut Client,
        params: &RdbmsWriter,
        table: &str,
        log: &JobLog,
    ) -> Result<Target> {
        let cols = column_list(&Pg, &params.column);
        let stmt = conn
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
        let conflict = if params.write_mode == WriteMode::Insert {
            Vec::new()
        } else if !params.upsert_key.is_empty() {
            params.upsert_key.iter().map(|k| sql_name(&Pg, k)).collect()
        } else {
            let rows = conn
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
                    params.write_mode
                )));
            }
            key
        };
        log.info(format!(
            "postgresqlwriter: {table} ({} columns), mode {:?}, binary COPY",
            columns.len(),
            params.write_mode
        ));
        Ok(Target {
            table: table.to_string(),
            columns,
            types,
            conflict,
        })
    }

    fn target_info(t: &Target) -> TargetInfo {
        TargetInfo {
            raw: Some(RawFormat {
                format: RAW_FORMAT,
                column_types: t.types.iter().map(Type::oid).collect(),
            }),
            binary_columns: Some(t.types.iter().map(|ty| *ty == Type::BYTEA).collect()),
        }
    }

    async fn channel(
        conn: Client,
        target: &Target,
        params: &RdbmsWriter,
        index: usize,
    ) -> Result<PgChannel> {
        PgChannel::open(conn, target.clone(), params, index).await
    }
}
