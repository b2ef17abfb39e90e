//! Helpers for tests against the real PostgreSQL and MariaDB on 127.0.0.1: a uniquely named
//! database per test, dropped afterwards, and a way to run a job through the real engine.

#![allow(dead_code)]

use ferry_agent::sync::{self, JobLog, Shared, Summary, SyncError};
use ferry_common::job::JobSpec;
use mysql_async::prelude::Queryable;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const PG_USER: &str = "postgres";
pub const MY_USER: &str = "root";

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A scratch PostgreSQL database.
pub struct PgDb {
    pub name: String,
}

impl PgDb {
    pub async fn create() -> anyhow::Result<Self> {
        let name = unique("ferry_t");
        let admin = Self::client_of("test").await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        Ok(Self { name })
    }

    async fn client_of(db: &str) -> anyhow::Result<tokio_postgres::Client> {
        let (client, conn) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port=5432 user={PG_USER} dbname={db}"),
            tokio_postgres::NoTls,
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!("PostgreSQL on 127.0.0.1:5432 is needed (run scripts/services.sh): {e}")
        })?;
        tokio::spawn(conn);
        Ok(client)
    }

    pub async fn client(&self) -> anyhow::Result<tokio_postgres::Client> {
        Self::client_of(&self.name).await
    }

    pub fn url(&self) -> String {
        format!("jdbc:postgresql://127.0.0.1:5432/{}", self.name)
    }

    pub async fn drop_db(self) -> anyhow::Result<()> {
        let admin = Self::client_of("test").await?;
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await?;
        Ok(())
    }
}

/// A scratch MariaDB/MySQL database.
pub struct MyDb {
    pub name: String,
}

impl MyDb {
    pub async fn create() -> anyhow::Result<Self> {
        let name = unique("ferry_t");
        let mut c = Self::conn_of(None).await?;
        c.query_drop(format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"))
            .await?;
        Ok(Self { name })
    }

    async fn conn_of(db: Option<&str>) -> anyhow::Result<mysql_async::Conn> {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(3306)
            .user(Some(MY_USER))
            .prefer_socket(false)
            .db_name(db);
        mysql_async::Conn::new(opts).await.map_err(|e| {
            anyhow::anyhow!("MariaDB on 127.0.0.1:3306 is needed (run scripts/services.sh): {e}")
        })
    }

    pub async fn conn(&self) -> anyhow::Result<mysql_async::Conn> {
        let mut c = Self::conn_of(Some(&self.name)).await?;
        c.query_drop("SET time_zone = '+00:00'").await?;
        Ok(c)
    }

    pub fn url(&self) -> String {
        format!("jdbc:mysql://127.0.0.1:3306/{}", self.name)
    }

    pub async fn drop_db(self) -> anyhow::Result<()> {
        let mut c = Self::conn_of(None).await?;
        c.query_drop(format!("DROP DATABASE IF EXISTS {}", self.name))
            .await?;
        Ok(())
    }
}

/// Runs a job through the engine; returns its summary and log lines.
pub async fn run_job(json: &str) -> (Result<Summary, SyncError>, Vec<String>) {
    let job = match JobSpec::parse(json).and_then(|j| j.resolve(|_| None)) {
        Ok(j) => j,
        Err(e) => {
            return (
                Err(SyncError::Internal(format!("bad job: {e}"))),
                Vec::new(),
            );
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let shared = Arc::new(
        Shared::new(
            JobLog::new(tx),
            CancellationToken::new(),
            job.setting.error_limit.record_limit(),
        )
        .with_throttle(sync::throttle_for(&job)),
    );
    let result = sync::run(&job, &unique("att"), shared).await;
    let mut lines = Vec::new();
    while let Ok(l) = rx.try_recv() {
        lines.push(format!("[{}] {}", l.level, l.message));
    }
    (result, lines)
}

/// A job from one reader and one writer object.
pub fn job(
    channels: usize,
    error_limit: Option<u64>,
    reader: serde_json::Value,
    writer: serde_json::Value,
) -> String {
    let mut setting = serde_json::json!({"speed": {"channel": channels}});
    if let Some(l) = error_limit {
        setting["errorLimit"] = serde_json::json!({"record": l});
    }
    serde_json::json!({"job": {"setting": setting, "content": [{"reader": reader, "writer": writer}]}})
        .to_string()
}

pub fn pg_reader(
    db: &PgDb,
    table: &str,
    columns: &[&str],
    split_pk: Option<&str>,
) -> serde_json::Value {
    let mut p = serde_json::json!({
        "username": PG_USER, "password": "", "column": columns,
        "connection": [{"jdbcUrl": [db.url()], "table": [table]}]
    });
    if let Some(pk) = split_pk {
        p["splitPk"] = pk.into();
    }
    serde_json::json!({"name": "postgresqlreader", "parameter": p})
}

pub fn my_reader(
    db: &MyDb,
    table: &str,
    columns: &[&str],
    split_pk: Option<&str>,
) -> serde_json::Value {
    let mut p = serde_json::json!({
        "username": MY_USER, "password": "", "column": columns,
        "connection": [{"jdbcUrl": [db.url()], "table": [table]}]
    });
    if let Some(pk) = split_pk {
        p["splitPk"] = pk.into();
    }
    serde_json::json!({"name": "mysqlreader", "parameter": p})
}

pub fn pg_writer(
    db: &PgDb,
    table: &str,
    columns: &[&str],
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut p = serde_json::json!({
        "username": PG_USER, "password": "", "column": columns,
        "connection": [{"jdbcUrl": db.url(), "table": [table]}]
    });
    if let serde_json::Value::Object(m) = extra {
        for (k, v) in m {
            p[k] = v;
        }
    }
    serde_json::json!({"name": "postgresqlwriter", "parameter": p})
}

pub fn my_writer(
    db: &MyDb,
    table: &str,
    columns: &[&str],
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut p = serde_json::json!({
        "username": MY_USER, "password": "", "column": columns,
        "connection": [{"jdbcUrl": db.url(), "table": [table]}]
    });
    if let serde_json::Value::Object(m) = extra {
        for (k, v) in m {
            p[k] = v;
        }
    }
    serde_json::json!({"name": "mysqlwriter", "parameter": p})
}
