//! Connectivity tests run from where the agent stands: the point is to learn whether *this*
//! network reaches the data source, so the check happens here and not on the scheduler.

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
const PRIVILEGE: &str = "privilege";

/// Tests one data source and says how it went.
pub async fn test(request_id: String, config_json: &str) -> pb::ConnectivityResult {
    let started = Instant::now();
    let outcome = match serde_json::from_str::<DataSourceConfig>(config_json) {
        Err(e) => Err((
            OTHER,
            format!("agent cannot read the data source settings: {e}"),
        )),
        Ok(config) => check(config).await,
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

fn fs_kind(message: &str) -> &'static str {
    if message.contains("does not exist") {
        NOT_FOUND
    } else if message.contains("permission") {
        PERMISSION
    } else {
        OTHER
    }
}

async fn check(config: DataSourceConfig) -> Result<String, (&'static str, String)> {
    match config {
        DataSourceConfig::Stream {} => Ok("stream data sources are always reachable".into()),
        DataSourceConfig::Sqlite(f) => {
            let path = f.path.clone();
            tokio::task::spawn_blocking(move || sqlite::probe(&path))
                .await
                .map_err(|e| (OTHER, e.to_string()))?
                .map(|n| format!("{} opened; {n} table(s)", f.path))
                .map_err(|m| (fs_kind(&m), m))
        }
        DataSourceConfig::Csv(f) => {
            let path = f.path.clone();
            tokio::task::spawn_blocking(move || txtfile::expand(std::slice::from_ref(&path)))
                .await
                .map_err(|e| (OTHER, e.to_string()))?
                .map(|files| format!("{} readable; {} file(s)", f.path, files.len()))
                .map_err(|m| (fs_kind(&m), m))
        }
        DataSourceConfig::Mysql(c) => {
            tcp(&c.host, c.port).await?;
            login_mysql(&c).await
        }
        DataSourceConfig::Postgresql(c) => {
            tcp(&c.host, c.port).await?;
            login_postgres(&c).await
        }
    }
}

async fn login_mysql(c: &DbConnection) -> Result<String, (&'static str, String)> {
    use mysql_async::prelude::Queryable;
    let url = JdbcUrl::of(DbKind::Mysql, c);
    let mut conn = mysql::connect(&url, &c.username, &c.password, &[])
        .await
        .map_err(|m| (mysql_kind(&m), m))?;
    let version: Option<String> = conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(|e| (OTHER, mysql::describe(&e)))?;
    let _ = conn.disconnect().await;
    Ok(format!(
        "logged in to {} as {}; server {}",
        c.database,
        c.username,
        version.unwrap_or_default()
    ))
}

fn mysql_kind(message: &str) -> &'static str {
    if message.contains("error 1045") {
        AUTH
    } else if message.contains("error 1049") {
        MISSING_DATABASE
    } else if message.contains("error 1044") || message.contains("error 1142") {
        PRIVILEGE
    } else if message.contains("timed out") {
        TIMEOUT
    } else {
        OTHER
    }
}

async fn login_postgres(c: &DbConnection) -> Result<String, (&'static str, String)> {
    let url = JdbcUrl::of(DbKind::Postgresql, c);
    let client = postgres::connect(&url, &c.username, &c.password)
        .await
        .map_err(|m| (pg_kind(&m), m))?;
    let row = client
        .query_one("SELECT version()", &[])
        .await
        .map_err(|e| (OTHER, postgres::describe(&e)))?;
    let version: String = row.try_get(0).unwrap_or_default();
    Ok(format!(
        "logged in to {} as {}; {}",
        c.database,
        c.username,
        version.split(" on ").next().unwrap_or_default()
    ))
}

fn pg_kind(message: &str) -> &'static str {
    if message.contains("(28P01)") || message.contains("(28000)") {
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

    #[tokio::test]
    async fn missing_sqlite_file_is_not_found() {
        let r = test(
            "r1".into(),
            r#"{"type":"sqlite","path":"/nonexistent/ferry-test.db"}"#,
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
        let r = test("r2".into(), &cfg).await;
        assert!(!r.reachable);
        assert_eq!(r.error_kind, "refused", "{}", r.message);
        Ok(())
    }

    #[tokio::test]
    async fn unresolvable_host_is_dns() {
        let cfg = r#"{"type":"mysql","host":"no-such-host.invalid","port":3306,"database":"d","username":"u"}"#;
        let r = test("r3".into(), cfg).await;
        assert!(!r.reachable);
        assert_eq!(r.error_kind, "dns", "{}", r.message);
    }
}
