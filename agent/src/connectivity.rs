//! Connectivity tests run from where the agent stands: the point is to learn whether *this*
//! network reaches the data source, so the check happens here and not on the scheduler.
//!
//! A test goes as far as it can and names the first thing that stops it, in the terms an
//! operator acts on: the name does not resolve (dns), nothing listens (refused), packets vanish
//! (timeout), the login is refused (auth), the database or table is missing, or the user may not
//! read or write the table. Table checks never change data: PostgreSQL answers privilege
//! questions itself (`has_table_privilege`); MySQL is asked to insert the empty result of a
//! query inside a transaction that is rolled back.

use crate::sync::{mysql, postgres, sqlite, txtfile};
use ferry_common::datasource::{DataSourceConfig, DbConnection};
use ferry_common::job::{DbKind, JdbcUrl};
use ferry_proto::agent::v1 as pb;
use std::time::{Duration, Instant};

/// Error kinds reported to the user.
const DNS: &str = "dns";
const REFUSED: &str = "refused";
const TIMEOUT: &str = "timeout";
const NOT_FOUND: &str = "not_found";
const PERMISSION: &str = "permission";
const OTHER: &str = "other";
const AUTH: &str = "auth";
const MISSING_DATABASE: &str = "missing_database";
const MISSING_TABLE: &str = "missing_table";
const READ_PRIVILEGE: &str = "read_privilege";
const WRITE_PRIVILEGE: &str = "write_privilege";
const PRIVILEGE: &str = "privilege";
const TLS: &str = "tls";

/// Whether a connection failure is about TLS (handshake, certificate, a server without TLS when
/// the data source demands it): checked before the database's own codes, which it precedes.
fn is_tls(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    ["tls", "certificate", "asked for ssl"]
        .iter()
        .any(|w| m.contains(w))
        && !m.contains("(28p01)")
        && !m.contains("(28000)")
        && !m.contains("error 1045")
}

/// What a test checks beyond reaching and logging in.
#[derive(Debug, Clone, Default)]
struct Probe {
    table: Option<String>,
    read: bool,
    write: bool,
}

impl Probe {
    fn new(table: &str, access: &str) -> Self {
        let table = Some(table.trim().to_string()).filter(|t| !t.is_empty());
        let (read, write) = match access {
            "read" => (true, false),
            "write" => (false, true),
            "both" => (true, true),
            _ => (false, false),
        };
        Self { table, read, write }
    }
}

/// Tests one data source (and optionally `table` for `access`: read, write or both) and says
/// how it went.
pub async fn test(
    request_id: String,
    config_json: &str,
    table: &str,
    access: &str,
) -> pb::ConnectivityResult {
    test_within(request_id, config_json, table, access, &[]).await
}

/// [`test`] on an agent started with `--file-root`: file and SQLite data sources are tested
/// only inside its roots, as their jobs would run.
pub async fn test_within(
    request_id: String,
    config_json: &str,
    table: &str,
    access: &str,
    file_roots: &[std::path::PathBuf],
) -> pb::ConnectivityResult {
    let started = Instant::now();
    let probe = Probe::new(table, access);
    let outcome = match serde_json::from_str::<DataSourceConfig>(config_json) {
        Err(e) => Err((
            OTHER,
            format!("agent cannot read the data source settings: {e}"),
        )),
        Ok(config) => match within_roots(&config, file_roots) {
            Err(m) => Err((PERMISSION, m)),
            Ok(()) => check(config, &probe).await,
        },
    };
    let latency_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok(message) => pb::ConnectivityResult {
            request_id,
            reachable: true,
            latency_ms,
            error_kind: String::new(),
            message,
        },
        Err((kind, message)) => pb::ConnectivityResult {
            request_id,
            reachable: false,
            latency_ms,
            error_kind: kind.to_string(),
            message,
        },
    }
}

/// Refuses a file or SQLite data source whose path lies outside the agent's file roots.
fn within_roots(config: &DataSourceConfig, roots: &[std::path::PathBuf]) -> Result<(), String> {
    let path = match config {
        DataSourceConfig::Sqlite(f) => &f.path,
        DataSourceConfig::Csv(f) => &f.path,
        _ => return Ok(()),
    };
    if roots.is_empty() {
        return Ok(());
    }
    crate::files::Roots::new(None, roots)?
        .existing(std::path::Path::new(path))
        .map(|_| ())
}

fn fs_kind(message: &str) -> &'static str {
    if message.contains("does not exist") {
        NOT_FOUND
    } else if message.contains("permission") {
        PERMISSION
    } else {
        OTHER
    }
}

async fn check(config: DataSourceConfig, probe: &Probe) -> Result<String, (&'static str, String)> {
    match config {
        DataSourceConfig::Stream {} => Ok("stream data sources are always reachable".into()),
        DataSourceConfig::Sqlite(f) => {
            let path = f.path.clone();
            let table = probe.table.clone();
            tokio::task::spawn_blocking(move || {
                let n = sqlite::probe(&path).map_err(|m| (fs_kind(&m), m))?;
                if let Some(t) = &table {
                    sqlite::probe_table(&path, t).map_err(|m| (MISSING_TABLE, m))?;
                }
                Ok(format!("{path} opened; {n} table(s)"))
            })
            .await
            .map_err(|e| (OTHER, e.to_string()))?
        }
        DataSourceConfig::Csv(f) => {
            let path = f.path.clone();
            let write = probe.write;
            tokio::task::spawn_blocking(move || {
                let files =
                    txtfile::expand(std::slice::from_ref(&path)).map_err(|m| (fs_kind(&m), m))?;
                if write {
                    writable_folder(&path)?;
                }
                Ok(format!("{path} readable; {} file(s)", files.len()))
            })
            .await
            .map_err(|e| (OTHER, e.to_string()))?
        }
        DataSourceConfig::Mysql(c) => {
            tcp(&c.host, c.port).await?;
            within_login_timeout(&c, login_mysql(&c, probe)).await
        }
        DataSourceConfig::Postgresql(c) => {
            tcp(&c.host, c.port).await?;
            within_login_timeout(&c, login_postgres(&c, probe)).await
        }
    }
}

/// How long a server that accepted the connection may take to let us in and answer.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(8);

async fn within_login_timeout(
    c: &DbConnection,
    login: impl std::future::Future<Output = Result<String, (&'static str, String)>>,
) -> Result<String, (&'static str, String)> {
    tokio::time::timeout(LOGIN_TIMEOUT, login)
        .await
        .unwrap_or_else(|_| {
            Err((
                TIMEOUT,
                format!(
                    "{}:{} accepted the connection but did not complete the login within {}s (is it really this database, or is it overloaded?)",
                    c.host,
                    c.port,
                    LOGIN_TIMEOUT.as_secs()
                ),
            ))
        })
}

/// Whether files can be created in `folder` (a file is made and removed at once).
fn writable_folder(folder: &str) -> Result<(), (&'static str, String)> {
    let probe = std::path::Path::new(folder).join(format!(".ferry-probe-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err((
            WRITE_PRIVILEGE,
            format!("cannot create files in {folder}: {e}"),
        )),
    }
}

async fn login_mysql(c: &DbConnection, probe: &Probe) -> Result<String, (&'static str, String)> {
    use mysql_async::prelude::Queryable;
    let url = JdbcUrl::of(DbKind::Mysql, c);
    let mut conn = mysql::connect(&url, &c.username, &c.password, &[])
        .await
        .map_err(|m| (mysql_kind(&m), m))?;
    let version: Option<String> = conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(|e| (OTHER, mysql::describe(&e)))?;
    let cipher: Option<(String, String)> = conn
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_version'")
        .await
        .map_err(|e| (OTHER, mysql::describe(&e)))?;
    let channel = encryption(cipher.map(|(_, v)| v).filter(|v| !v.is_empty()));
    let mut note = String::new();
    if let Some(table) = &probe.table {
        let q = crate::sync::rdbms::sql_name(&mysql::My, table);
        conn.query_drop(format!("SELECT * FROM {q} LIMIT 0"))
            .await
            .map_err(|e| {
                let m = mysql::describe(&e);
                let kind = match mysql_kind(&m) {
                    PRIVILEGE => READ_PRIVILEGE,
                    k => k,
                };
                (kind, format!("table {table}: {m}"))
            })?;
        note = format!("; table {table} exists");
        if probe.read {
            note.push_str(", readable");
        }
        if probe.write {
            conn.query_drop("START TRANSACTION")
                .await
                .map_err(|e| (OTHER, mysql::describe(&e)))?;
            let tried = conn
                .query_drop(format!("INSERT INTO {q} SELECT * FROM {q} WHERE 1 = 0"))
                .await;
            let _ = conn.query_drop("ROLLBACK").await;
            tried.map_err(|e| {
                let m = mysql::describe(&e);
                let kind = match mysql_kind(&m) {
                    PRIVILEGE if m.contains("SELECT command") => READ_PRIVILEGE,
                    PRIVILEGE => WRITE_PRIVILEGE,
                    k => k,
                };
                (kind, format!("table {table}: {m}"))
            })?;
            note.push_str(", writable");
        }
    }
    let _ = conn.disconnect().await;
    Ok(format!(
        "logged in to {} as {} ({channel}); server {}{note}",
        c.database,
        c.username,
        version.unwrap_or_default()
    ))
}

/// How the session is protected, in the words of the test's answer.
fn encryption(tls_version: Option<String>) -> String {
    match tls_version {
        Some(v) => format!("encrypted, {v}"),
        None => "not encrypted".into(),
    }
}

fn mysql_kind(message: &str) -> &'static str {
    if is_tls(message) {
        TLS
    } else if message.contains("error 1045") {
        AUTH
    } else if message.contains("error 1049") {
        MISSING_DATABASE
    } else if message.contains("error 1146") {
        MISSING_TABLE
    } else if message.contains("error 1044")
        || message.contains("error 1142")
        || message.contains("error 1143")
    {
        PRIVILEGE
    } else if message.contains("timed out") {
        TIMEOUT
    } else {
        OTHER
    }
}

async fn login_postgres(c: &DbConnection, probe: &Probe) -> Result<String, (&'static str, String)> {
    let url = JdbcUrl::of(DbKind::Postgresql, c);
    let client = postgres::connect(&url, &c.username, &c.password)
        .await
        .map_err(|m| (pg_kind(&m), m))?;
    let row = client
        .query_one("SELECT version()", &[])
        .await
        .map_err(|e| (OTHER, postgres::describe(&e)))?;
    let version: String = row.try_get(0).unwrap_or_default();
    let tls: Option<String> = client
        .query_opt(
            "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl",
            &[],
        )
        .await
        .map_err(|e| (OTHER, postgres::describe(&e)))?
        .and_then(|r| r.try_get(0).ok());
    let channel = encryption(tls);
    let mut note = String::new();
    if let Some(table) = &probe.table {
        let row = client
            .query_one(
                "SELECT to_regclass($1)::oid IS NOT NULL, \
                 CASE WHEN to_regclass($1) IS NULL THEN false ELSE has_table_privilege(to_regclass($1), 'SELECT') END, \
                 CASE WHEN to_regclass($1) IS NULL THEN false ELSE has_table_privilege(to_regclass($1), 'INSERT') END",
                &[table],
            )
            .await
            .map_err(|e| (OTHER, format!("table {table}: {}", postgres::describe(&e))))?;
        let exists: bool = row.try_get(0).unwrap_or(false);
        let can_read: bool = row.try_get(1).unwrap_or(false);
        let can_write: bool = row.try_get(2).unwrap_or(false);
        if !exists {
            return Err((
                MISSING_TABLE,
                format!(
                    "table {table} does not exist in database {} (or is not on the search path)",
                    c.database
                ),
            ));
        }
        note = format!("; table {table} exists");
        if probe.read {
            if !can_read {
                return Err((
                    READ_PRIVILEGE,
                    format!("user {} may not SELECT from {table}", c.username),
                ));
            }
            note.push_str(", readable");
        }
        if probe.write {
            if !can_write {
                return Err((
                    WRITE_PRIVILEGE,
                    format!("user {} may not INSERT into {table}", c.username),
                ));
            }
            note.push_str(", writable");
        }
    }
    Ok(format!(
        "logged in to {} as {} ({channel}); {}{note}",
        c.database,
        c.username,
        version.split(" on ").next().unwrap_or_default()
    ))
}

fn pg_kind(message: &str) -> &'static str {
    if is_tls(message) {
        TLS
    } else if message.contains("(28P01)") || message.contains("(28000)") {
        AUTH
    } else if message.contains("(3D000)") {
        MISSING_DATABASE
    } else if message.contains("(42501)") {
        PRIVILEGE
    } else if message.contains("timed out") {
        TIMEOUT
    } else {
        OTHER
    }
}

/// Opens a TCP connection and classifies the failure the way an operator thinks about it.
async fn tcp(host: &str, port: u16) -> Result<u128, (&'static str, String)> {
    let started = Instant::now();
    let addrs: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| (DNS, format!("cannot resolve host {host}: {e}")))?
        .collect();
    let Some(addr) = addrs.first() else {
        return Err((DNS, format!("host {host} resolves to no address")));
    };
    match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await {
        Err(_) => Err((
            TIMEOUT,
            format!("no answer from {addr} within 5s (firewall or wrong network?)"),
        )),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err((
            REFUSED,
            format!("{addr} refused the connection: is the database listening on port {port}?"),
        )),
        Ok(Err(e)) => Err((OTHER, format!("cannot connect to {addr}: {e}"))),
        Ok(Ok(_)) => Ok(started.elapsed().as_millis()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An agent with file roots tests file and SQLite data sources only inside them.
    #[tokio::test]
    async fn file_sources_outside_the_roots_are_refused() -> std::io::Result<()> {
        let root = tempfile::tempdir()?;
        let outside = tempfile::tempdir()?;
        let roots = vec![root.path().canonicalize()?];
        let csv = |dir: &std::path::Path| {
            serde_json::json!({"type": "csv", "path": dir.display().to_string()}).to_string()
        };
        let r = test_within("r3".into(), &csv(outside.path()), "", "", &roots).await;
        assert!(!r.reachable);
        assert_eq!(r.error_kind, "permission", "{}", r.message);
        let db = outside.path().join("x.db");
        std::fs::write(&db, b"")?;
        let cfg = serde_json::json!({"type": "sqlite", "path": db.display().to_string()});
        let r = test_within("r4".into(), &cfg.to_string(), "", "", &roots).await;
        assert!(!r.reachable, "{}", r.message);
        let r = test_within("r5".into(), &csv(root.path()), "", "", &roots).await;
        assert!(r.reachable, "{}", r.message);
        // Without roots the same folder outside is fine.
        let r = test_within("r6".into(), &csv(outside.path()), "", "", &[]).await;
        assert!(r.reachable, "{}", r.message);
        Ok(())
    }

    #[tokio::test]
    async fn missing_sqlite_file_is_not_found() {
        let r = test_within(
            "r1".into(),
            r#"{"type":"sqlite","path":"/nonexistent/ferry-test.db"}"#,
            "",
            "",
            &[],
        )
        .await;
        assert!(!r.reachable);
        assert_eq!(r.error_kind, "not_found");
    }

    #[tokio::test]
    async fn refused_port_is_classified() -> std::io::Result<()> {
        // Bind then drop to get a port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let cfg = format!(
            r#"{{"type":"postgresql","host":"127.0.0.1","port":{port},"database":"d","username":"u"}}"#
        );
        let r = test_within("r2".into(), &cfg, "", "", &[]).await;
        assert!(!r.reachable);
        assert_eq!(r.error_kind, "refused", "{}", r.message);
        Ok(())
    }

    #[tokio::test]
    async fn unresolvable_host_is_dns() {
        let cfg = r#"{"type":"mysql","host":"no-such-host.invalid","port":3306,"database":"d","username":"u"}"#;
        let r = test_within("r3".into(), cfg, "", "", &[]).await;
        assert!(!r.reachable);
        assert_eq!(r.error_kind, "dns", "{}", r.message);
    }
}
