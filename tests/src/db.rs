//! The real PostgreSQL and MariaDB on 127.0.0.1 as tests use them: their own command-line
//! clients (what an operator would type), and scratch databases dropped when the test ends.

use anyhow::{Result, bail};
use std::process::Command;

/// Runs `sql` in PostgreSQL database `db` as `postgres`; returns unaligned, tuples-only output.
pub fn psql(db: &str, sql: &str) -> Result<String> {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            db,
            "-tAq",
            "-c",
            sql,
        ])
        .output()?;
    if !out.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs `sql` in MariaDB as root; returns tab-separated output without headers.
pub fn mysql(sql: &str) -> Result<String> {
    let out = Command::new("mysql")
        .args([
            "--protocol=tcp",
            "-h",
            "127.0.0.1",
            "-uroot",
            "-N",
            "-B",
            "-e",
            sql,
        ])
        .output()?;
    if !out.status.success() {
        bail!("mysql: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A scratch database of this name in PostgreSQL (and in MariaDB when `with_mysql`), dropped
/// on drop, whatever the test's outcome.
pub struct ScratchDb {
    pub name: String,
    mysql: bool,
}

impl ScratchDb {
    /// Creates `<prefix>_<random>` in PostgreSQL.
    pub fn postgres(prefix: &str) -> Result<Self> {
        let name = format!("{prefix}_{}", crate::unique_suffix());
        psql("test", &format!("CREATE DATABASE {name}"))?;
        Ok(Self { name, mysql: false })
    }

    /// Creates `<prefix>_<random>` in both PostgreSQL and MariaDB.
    pub fn both(prefix: &str) -> Result<Self> {
        let mut db = Self::postgres(prefix)?;
        db.mysql = true;
        mysql(&format!("CREATE DATABASE {}", db.name))?;
        Ok(db)
    }

    /// `psql` in this database.
    pub fn psql(&self, sql: &str) -> Result<String> {
        psql(&self.name, sql)
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let _ = psql(
            "test",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
        if self.mysql {
            let _ = mysql(&format!("DROP DATABASE IF EXISTS {}", self.name));
        }
    }
}
