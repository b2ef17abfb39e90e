//! Data sources: named connection settings kept in the scheduler's catalog so job files can say
//! `"datasource": "orders_db"` instead of carrying hosts and passwords.
//!
//! Fields arrive from the CLI as flat `key=value` maps; [`DataSourceConfig::from_fields`] turns
//! them into one typed variant per kind, refusing unknown fields, so a typo (`hots=`) is caught at
//! `datasource add` rather than at 2 a.m. when the job runs.

use crate::job::{DbKind, JdbcUrl};
use crate::secret::Secret;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Connection settings of a network database (MySQL/MariaDB, PostgreSQL).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbConnection {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub username: String,
    #[serde(default, skip_serializing_if = "Secret::is_empty")]
    pub password: Secret,
    /// TLS in libpq's words (`disable`, `prefer`, `require`, `verify-ca`, `verify-full`); MySQL
    /// sources take the same words. Unset means `prefer`, as the JDBC drivers do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslmode: Option<String>,
    /// The CA certificate to trust: a path on the agents, or the PEM text itself (a CA
    /// certificate is public, so the catalog can carry it to every agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslrootcert: Option<String>,
    /// A client certificate and its key, as paths on the agents (a key never travels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslcert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslkey: Option<String>,
}

/// Settings of a folder of CSV / text files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvFolder {
    /// The folder holding the files.
    pub path: String,
}

/// Settings of a SQLite database file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteFile {
    pub path: String,
}

/// One data source's connection settings, tagged by kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum DataSourceConfig {
    Mysql(DbConnection),
    Postgresql(DbConnection),
    Sqlite(SqliteFile),
    Csv(CsvFolder),
    /// Generated rows and a discarding sink, for tests and benchmarks.
    Stream {},
}

/// The kinds `ferry datasource add --type` accepts.
pub const KINDS: &[&str] = &["mysql", "postgresql", "sqlite", "csv", "stream"];

/// Field names whose values are secrets.
const SECRET_FIELDS: &[&str] = &["password"];

impl DataSourceConfig {
    /// Builds a config from the CLI's flat fields; numbers are parsed, unknown fields refused.
    pub fn from_fields(
        kind: &str,
        fields: &BTreeMap<String, String>,
        secrets: &BTreeMap<String, String>,
    ) -> Result<Self> {
        let kind = match kind.to_ascii_lowercase().as_str() {
            "mariadb" | "mysql" => "mysql".to_string(),
            "postgres" | "pg" | "postgresql" => "postgresql".to_string(),
            "txt" | "txtfile" | "csv" => "csv".to_string(),
            k if KINDS.contains(&k) => k.to_string(),
            other => {
                return Err(Error::InvalidDataSource(format!(
                    "unknown type \"{other}\"; known types: {}",
                    KINDS.join(", ")
                )));
            }
        };
        let mut obj = serde_json::Map::new();
        obj.insert("type".into(), kind.clone().into());
        for (k, v) in fields {
            if SECRET_FIELDS.contains(&k.as_str()) {
                return Err(Error::InvalidDataSource(format!(
                    "{k} is a secret: pass it with --password-stdin or --password-env, not as a field"
                )));
            }
            let value = if k == "port" {
                let port: u16 = v.parse().map_err(|_| {
                    Error::InvalidDataSource(format!("port \"{v}\" is not a port number"))
                })?;
                serde_json::Value::from(port)
            } else {
                serde_json::Value::from(v.clone())
            };
            obj.insert(k.clone(), value);
        }
        for (k, v) in secrets {
            obj.insert(k.clone(), serde_json::Value::from(v.clone()));
        }
        if matches!(kind.as_str(), "mysql" | "postgresql") && !obj.contains_key("port") {
            let port = if kind == "mysql" { 3306 } else { 5432 };
            obj.insert("port".into(), port.into());
        }
        let config: DataSourceConfig = serde_json::from_value(serde_json::Value::Object(obj))
            .map_err(|e| Error::InvalidDataSource(format!("{kind}: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let empty = |what: &str| {
            Err(Error::InvalidDataSource(format!(
                "{what} must not be empty"
            )))
        };
        match self {
            Self::Mysql(c) | Self::Postgresql(c) => {
                if c.host.trim().is_empty() {
                    return empty("host");
                }
                if c.username.trim().is_empty() {
                    return empty("username");
                }
                let kind = if matches!(self, Self::Mysql(_)) {
                    DbKind::Mysql
                } else {
                    DbKind::Postgresql
                };
                JdbcUrl::parse(&JdbcUrl::of(kind, c))
                    .and_then(|u| u.tls())
                    .map_err(|e| Error::InvalidDataSource(e.to_string()))?;
            }
            Self::Sqlite(SqliteFile { path }) | Self::Csv(CsvFolder { path }) => {
                if path.trim().is_empty() {
                    return empty("path");
                }
            }
            Self::Stream {} => {}
        }
        Ok(())
    }

    /// The kind as the CLI spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Mysql(_) => "mysql",
            Self::Postgresql(_) => "postgresql",
            Self::Sqlite(_) => "sqlite",
            Self::Csv(_) => "csv",
            Self::Stream {} => "stream",
        }
    }

    /// Non-secret fields, for display.
    pub fn public_fields(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(self) {
            for (k, v) in map {
                if k == "type" || SECRET_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                let text = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                out.insert(k, text);
            }
        }
        out
    }

    /// Names of the secret fields that hold a value.
    pub fn secret_fields(&self) -> Vec<String> {
        match self {
            Self::Mysql(c) | Self::Postgresql(c) if !c.password.is_empty() => {
                vec!["password".to_string()]
            }
            _ => Vec::new(),
        }
    }

    /// Mutable access to every secret, so the scheduler can seal and open them at rest.
    pub fn secrets_mut(&mut self) -> Vec<&mut Secret> {
        match self {
            Self::Mysql(c) | Self::Postgresql(c) => vec![&mut c.password],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn mysql_with_password_redacted() -> Result<()> {
        let c = DataSourceConfig::from_fields(
            "mysql",
            &map(&[("host", "db"), ("database", "shop"), ("username", "etl")]),
            &map(&[("password", "s3cret")]),
        )?;
        assert_eq!(c.kind(), "mysql");
        let fields = c.public_fields();
        assert_eq!(fields.get("port").map(String::as_str), Some("3306"));
        assert!(!fields.contains_key("password"));
        assert_eq!(c.secret_fields(), vec!["password".to_string()]);
        assert!(!format!("{c:?}").contains("s3cret"));
        Ok(())
    }

    #[test]
    fn unknown_field_is_refused() {
        let err = DataSourceConfig::from_fields("sqlite", &map(&[("paht", "/x")]), &map(&[]));
        let text = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("paht"), "{text}");
    }

    #[test]
    fn password_as_plain_field_is_refused() {
        let err = DataSourceConfig::from_fields(
            "postgresql",
            &map(&[("host", "h"), ("password", "x")]),
            &map(&[]),
        );
        assert!(err.is_err());
    }

    #[test]
    fn unknown_kind_lists_known() {
        let text = DataSourceConfig::from_fields("oracle", &map(&[]), &map(&[]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            text.contains("mysql, postgresql, sqlite, csv, stream"),
            "{text}"
        );
    }
}
