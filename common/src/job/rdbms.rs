//! Parameters of the relational database plugins (`mysqlreader`, `mysqlwriter`,
//! `postgresqlreader`, `postgresqlwriter`), in DataX's shape, and JDBC URL parsing.
//!
//! DataX puts connection details in `connection[]`: readers take `jdbcUrl` as an array (the
//! first address that connects wins) and writers as a string; both forms are accepted on both
//! sides. With `"datasource": NAME` the catalog supplies URL, user and password, and `table` /
//! `querySql` may sit directly in `parameter`.

use super::de;
use crate::datasource::DbConnection;
use crate::secret::Secret;
use crate::{Error, Result};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::{Deserialize, Serialize};

/// What is escaped in a URL parameter value: everything but letters, digits and `-._~/`.
const URL_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// `mysqlreader` / `postgresqlreader`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RdbmsReader {
    #[serde(
        default,
        deserialize_with = "de::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub datasource: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Secret,
    #[serde(default)]
    pub column: Vec<String>,
    #[serde(default)]
    pub connection: Vec<ReaderConnection>,
    /// Ferry's shorthand for `connection[0].table` when a data source gives the URL.
    #[serde(
        default,
        deserialize_with = "de::string_or_vec",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub table: Vec<String>,
    /// Ferry's shorthand for `connection[0].querySql`.
    #[serde(
        default,
        deserialize_with = "de::string_or_vec",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub query_sql: Vec<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub split_pk: Option<String>,
    #[serde(default, rename = "where", deserialize_with = "de::opt_string")]
    pub where_clause: Option<String>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub fetch_size: Option<u64>,
    #[serde(default)]
    pub session: Vec<String>,
}

/// One entry of a reader's `connection[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReaderConnection {
    #[serde(default, deserialize_with = "de::string_or_vec")]
    pub jdbc_url: Vec<String>,
    #[serde(default, deserialize_with = "de::string_or_vec")]
    pub table: Vec<String>,
    #[serde(default, deserialize_with = "de::string_or_vec")]
    pub query_sql: Vec<String>,
}

/// `mysqlwriter` / `postgresqlwriter`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RdbmsWriter {
    #[serde(
        default,
        deserialize_with = "de::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub datasource: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Secret,
    #[serde(default)]
    pub column: Vec<String>,
    #[serde(default)]
    pub connection: Vec<WriterConnection>,
    #[serde(
        default,
        deserialize_with = "de::string_or_vec",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub table: Vec<String>,
    #[serde(default)]
    pub session: Vec<String>,
    #[serde(default)]
    pub pre_sql: Vec<String>,
    #[serde(default)]
    pub post_sql: Vec<String>,
    #[serde(default)]
    pub write_mode: super::WriteMode,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub batch_size: Option<u64>,
    /// Columns of the conflict key for `update`/`replace` on PostgreSQL (default: the primary
    /// key). A Ferry extension.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upsert_key: Vec<String>,
}

/// One entry of a writer's `connection[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WriterConnection {
    #[serde(default, deserialize_with = "de::string_or_vec")]
    pub jdbc_url: Vec<String>,
    #[serde(default, deserialize_with = "de::string_or_vec")]
    pub table: Vec<String>,
}

/// Which database a JDBC URL or plugin speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Mysql,
    Postgresql,
}

impl DbKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mysql => "mysql",
            Self::Postgresql => "postgresql",
        }
    }
}

/// A parsed `jdbc:mysql://host:port/db?k=v` or `jdbc:postgresql://host:port/db`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JdbcUrl {
    pub kind: DbKind,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub params: Vec<(String, String)>,
}

impl JdbcUrl {
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidJob {
            path: "jdbcUrl".into(),
            message: format!(
                "\"{url}\" {why}; expected jdbc:mysql://host:port/database or jdbc:postgresql://host:port/database"
            ),
        };
        let rest = url.trim().strip_prefix("jdbc:").unwrap_or(url.trim());
        let (kind, rest) = if let Some(r) = rest.strip_prefix("mysql://") {
            (DbKind::Mysql, r)
        } else if let Some(r) = rest.strip_prefix("mariadb://") {
            (DbKind::Mysql, r)
        } else if let Some(r) = rest
            .strip_prefix("postgresql://")
            .or_else(|| rest.strip_prefix("postgres://"))
        {
            (DbKind::Postgresql, r)
        } else {
            return Err(bad("is not a MySQL or PostgreSQL URL"));
        };
        let (hostport, rest) = rest.split_once('/').unwrap_or((rest, ""));
        let (database, query) = rest.split_once('?').unwrap_or((rest, ""));
        let default_port = match kind {
            DbKind::Mysql => 3306,
            DbKind::Postgresql => 5432,
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
                h.trim_matches(['[', ']']).to_string(),
                p.parse().map_err(|_| bad("has an invalid port"))?,
            ),
            _ => (hostport.to_string(), default_port),
        };
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let params = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                let decode = |t: &str| percent_decode_str(t).decode_utf8_lossy().into_owned();
                (decode(k), decode(v))
            })
            .collect();
        Ok(Self {
            kind,
            host,
            port,
            database: database.to_string(),
            params,
        })
    }

    /// The URL a data source stands for, its TLS settings as parameters (percent-encoded, so
    /// an inline PEM certificate survives).
    pub fn of(kind: DbKind, c: &DbConnection) -> String {
        let mut url = format!(
            "jdbc:{}://{}:{}/{}",
            kind.as_str(),
            c.host,
            c.port,
            c.database
        );
        let params = [
            ("sslmode", &c.sslmode),
            ("sslrootcert", &c.sslrootcert),
            ("sslcert", &c.sslcert),
            ("sslkey", &c.sslkey),
        ];
        let mut sep = '?';
        for (name, value) in params {
            if let Some(v) = value {
                url.push(sep);
                url.push_str(name);
                url.push('=');
                url.extend(utf8_percent_encode(v, URL_VALUE));
                sep = '&';
            }
        }
        url
    }
}

impl RdbmsReader {
    /// Fills URL, user and password from a data source, and moves the shorthands into
    /// `connection[0]`.
    pub fn apply_datasource(&mut self, kind: DbKind, c: &DbConnection) {
        let url = JdbcUrl::of(kind, c);
        if self.connection.is_empty() {
            self.connection.push(ReaderConnection {
                jdbc_url: Vec::new(),
                table: Vec::new(),
                query_sql: Vec::new(),
            });
        }
        for conn in &mut self.connection {
            if conn.jdbc_url.is_empty() {
                conn.jdbc_url = vec![url.clone()];
            }
        }
        if self.username.is_none() {
            self.username = Some(c.username.clone());
        }
        if self.password.is_empty() {
            self.password = c.password.clone();
        }
        self.normalize();
    }

    /// Moves `table` / `querySql` shorthands into `connection[0]`.
    pub fn normalize(&mut self) {
        if self.table.is_empty() && self.query_sql.is_empty() {
            return;
        }
        if self.connection.is_empty() {
            self.connection.push(ReaderConnection {
                jdbc_url: Vec::new(),
                table: Vec::new(),
                query_sql: Vec::new(),
            });
        }
        let first = &mut self.connection[0];
        first.table.append(&mut self.table);
        first.query_sql.append(&mut self.query_sql);
    }

    /// Checks that every connection names where to connect and what to read.
    pub fn check(&self, path: &str) -> Result<()> {
        if self.connection.is_empty() {
            return Err(Error::InvalidJob {
                path: format!("{path}.connection"),
                message:
                    "is empty: add {\"jdbcUrl\": [...], \"table\": [...]} or name a \"datasource\""
                        .into(),
            });
        }
        for (i, c) in self.connection.iter().enumerate() {
            if c.jdbc_url.is_empty() {
                return Err(Error::InvalidJob {
                    path: format!("{path}.connection[{i}].jdbcUrl"),
                    message: "is empty: set it or name a \"datasource\"".into(),
                });
            }
            for u in &c.jdbc_url {
                JdbcUrl::parse(u)?.tls()?;
            }
            if c.table.is_empty() && c.query_sql.is_empty() {
                return Err(Error::InvalidJob {
                    path: format!("{path}.connection[{i}]"),
                    message: "needs \"table\" or \"querySql\"".into(),
                });
            }
        }
        if self.column.is_empty() && self.connection.iter().any(|c| !c.table.is_empty()) {
            return Err(Error::InvalidJob {
                path: format!("{path}.column"),
                message: "is empty: list the columns, or [\"*\"] for all".into(),
            });
        }
        Ok(())
    }
}

impl RdbmsWriter {
    pub fn apply_datasource(&mut self, kind: DbKind, c: &DbConnection) {
        let url = JdbcUrl::of(kind, c);
        if self.connection.is_empty() {
            self.connection.push(WriterConnection {
                jdbc_url: Vec::new(),
                table: Vec::new(),
            });
        }
        for conn in &mut self.connection {
            if conn.jdbc_url.is_empty() {
                conn.jdbc_url = vec![url.clone()];
            }
        }
        if self.username.is_none() {
            self.username = Some(c.username.clone());
        }
        if self.password.is_empty() {
            self.password = c.password.clone();
        }
        self.normalize();
    }

    pub fn normalize(&mut self) {
        if self.table.is_empty() {
            return;
        }
        if self.connection.is_empty() {
            self.connection.push(WriterConnection {
                jdbc_url: Vec::new(),
                table: Vec::new(),
            });
        }
        self.connection[0].table.append(&mut self.table);
    }

    pub fn check(&self, path: &str) -> Result<()> {
        let [c] = self.connection.as_slice() else {
            return Err(Error::InvalidJob {
                path: format!("{path}.connection"),
                message: format!(
                    "must hold exactly one entry, found {}",
                    self.connection.len()
                ),
            });
        };
        let Some(url) = c.jdbc_url.first() else {
            return Err(Error::InvalidJob {
                path: format!("{path}.connection[0].jdbcUrl"),
                message: "is empty: set it or name a \"datasource\"".into(),
            });
        };
        JdbcUrl::parse(url)?.tls()?;
        if c.table.len() != 1 {
            return Err(Error::InvalidJob {
                path: format!("{path}.connection[0].table"),
                message: format!("must name exactly one table, found {}", c.table.len()),
            });
        }
        if self.column.is_empty() {
            return Err(Error::InvalidJob {
                path: format!("{path}.column"),
                message: "is empty: list the target columns, or [\"*\"] for all".into(),
            });
        }
        Ok(())
    }

    /// The one target table.
    pub fn target_table(&self) -> &str {
        self.connection
            .first()
            .and_then(|c| c.table.first())
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// The one target URL.
    pub fn target_url(&self) -> &str {
        self.connection
            .first()
            .and_then(|c| c.jdbc_url.first())
            .map(String::as_str)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_jdbc_urls() -> Result<()> {
        let u = JdbcUrl::parse("jdbc:mysql://db1:3307/shop?useSSL=false&characterEncoding=utf8")?;
        assert_eq!(u.kind, DbKind::Mysql);
        assert_eq!(
            (u.host.as_str(), u.port, u.database.as_str()),
            ("db1", 3307, "shop")
        );
        assert_eq!(u.params.len(), 2);
        let p = JdbcUrl::parse("jdbc:postgresql://127.0.0.1/test")?;
        assert_eq!((p.kind, p.port), (DbKind::Postgresql, 5432));
        assert!(JdbcUrl::parse("jdbc:oracle:thin:@h:1521:x").is_err());
        assert!(JdbcUrl::parse("jdbc:mysql://h:notaport/x").is_err());
        Ok(())
    }
}
