//! Connectivity tests run from where the agent stands: the point is to learn whether *this*
//! network reaches the data source, so the check happens here and not on the scheduler.

use crate::sync::{sqlite, txtfile};
use ferry_common::datasource::DataSourceConfig;
use ferry_proto::agent::v1 as pb;
use std::time::{Duration, Instant};

/// Error kinds reported to the user.
const DNS: &str = "dns";
const REFUSED: &str = "refused";
const TIMEOUT: &str = "timeout";
const NOT_FOUND: &str = "not_found";
const PERMISSION: &str = "permission";
const OTHER: &str = "other";

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
        DataSourceConfig::Mysql(c) | DataSourceConfig::Postgresql(c) => {
            tcp(&c.host, c.port).await.map(|ms| {
                format!(
                    "TCP connection to {}:{} opened in {ms} ms; login is not checked by this release",
                    c.host, c.port
                )
            })
        }
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
}
