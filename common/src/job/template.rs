//! `ferry task template --reader R --writer W`: a complete job file with every parameter the two
//! plugins take, filled with example values to edit, as DataX's `python datax.py -r R -w W`
//! prints. Each template is one consistent choice where parameters exclude each other (a
//! `connection` with `table`, not `querySql`; `username`/`password`, not a catalog
//! `datasource`); the alternatives are listed by [`alternatives`]. A test parses every pair with
//! the job parser, which refuses unknown keys, so a template never shows a key Ferry does not take.

use crate::{Error, Result};
use serde_json::{Value, json};

/// Reader plugin names, as job files spell them.
pub const READERS: [&str; 5] = [
    "mysqlreader",
    "postgresqlreader",
    "sqlitereader",
    "txtfilereader",
    "streamreader",
];

/// Writer plugin names, as job files spell them.
pub const WRITERS: [&str; 5] = [
    "mysqlwriter",
    "postgresqlwriter",
    "sqlitewriter",
    "txtfilewriter",
    "streamwriter",
];

/// The full plugin name for `name` on `side` ("reader"/"writer"): `mysql` and `mysqlreader`
/// both name the MySQL reader.
fn plugin(name: &str, side: &str, known: &[&str]) -> Result<String> {
    let lower = name.trim().to_ascii_lowercase();
    let full = if lower.ends_with(side) {
        lower
    } else {
        format!("{lower}{side}")
    };
    if known.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(Error::UnknownPlugin {
            role: if side == "reader" { "reader" } else { "writer" },
            name: name.to_string(),
            path: format!("--{side}"),
            known: known.join(", "),
        })
    }
}

fn jdbc(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "mysql" => ("jdbc:mysql://127.0.0.1:3306/shop", "root"),
        _ => ("jdbc:postgresql://127.0.0.1:5432/warehouse", "postgres"),
    }
}

fn reader_parameter(name: &str) -> Value {
    match name {
        "mysqlreader" | "postgresqlreader" => {
            let (url, user) = jdbc(name.trim_end_matches("reader"));
            json!({
                "username": user,
                "password": "",
                "column": ["id", "name", "amount", "updated_at"],
                "splitPk": "id",
                "where": "updated_at >= '${bizdate}'",
                "fetchSize": 10000,
                "session": [],
                "connection": [{"jdbcUrl": [url], "table": ["orders"]}]
            })
        }
        "sqlitereader" => json!({
            "path": "/data/shop.db",
            "table": "orders",
            "column": ["id", "name", "amount", "updated_at"],
            "where": "updated_at >= '${bizdate}'"
        }),
        "txtfilereader" => json!({
            "path": ["/data/in/orders_${bizdate}.csv"],
            "column": [
                {"index": 0, "type": "long"},
                {"index": 1, "type": "string"},
                {"index": 2, "type": "decimal"},
                {"index": 3, "type": "date", "format": "yyyy-MM-dd HH:mm:ss"}
            ],
            "fieldDelimiter": ",",
            "skipHeader": true,
            "nullFormat": "\\N",
            "encoding": "UTF-8",
            "compress": "",
            "fileFormat": "csv",
            "bytesEncoding": "base64"
        }),
        _ => json!({
            "column": [
                {"value": "1", "type": "long"},
                {"value": "hello", "type": "string"},
                {"value": "2026-01-01 00:00:00", "type": "date", "dateFormat": "yyyy-MM-dd HH:mm:ss"}
            ],
            "sliceRecordCount": 10
        }),
    }
}

fn writer_parameter(name: &str) -> Value {
    match name {
        "mysqlwriter" | "postgresqlwriter" => {
            let (url, user) = jdbc(name.trim_end_matches("writer"));
            json!({
                "username": user,
                "password": "",
                "column": ["id", "name", "amount", "updated_at"],
                "session": [],
                "preSql": ["DELETE FROM @table WHERE updated_at >= '${bizdate}'"],
                "postSql": [],
                "writeMode": "insert",
                "batchSize": 1024,
                "connection": [{"jdbcUrl": url, "table": ["orders"]}]
            })
        }
        "sqlitewriter" => json!({
            "path": "/data/mart.db",
            "table": "orders",
            "column": ["id", "name", "amount", "updated_at"],
            "writeMode": "insert",
            "preSql": [],
            "postSql": [],
            "batchSize": 1024
        }),
        "txtfilewriter" => json!({
            "path": "/data/out",
            "fileName": "orders_${bizdate}.csv",
            "writeMode": "truncate",
            "fieldDelimiter": ",",
            "dateFormat": "yyyy-MM-dd HH:mm:ss",
            "header": ["id", "name", "amount", "updated_at"],
            "nullFormat": "\\N",
            "encoding": "UTF-8",
            "fileFormat": "csv",
            "compress": "",
            "bytesEncoding": "base64"
        }),
        _ => json!({"print": true, "encoding": "UTF-8"}),
    }
}

/// The job file for `reader` and `writer` (short or full plugin names).
pub fn template(reader: &str, writer: &str) -> Result<Value> {
    let r = plugin(reader, "reader", &READERS)?;
    let w = plugin(writer, "writer", &WRITERS)?;
    Ok(json!({
        "job": {
            "setting": {
                "speed": {"channel": 2, "byte": 0, "record": 0},
                "errorLimit": {"record": 0, "percentage": 0.0}
            },
            "content": [{
                "reader": {"name": r, "parameter": reader_parameter(&r)},
                "writer": {"name": w, "parameter": writer_parameter(&w)}
            }]
        }
    }))
}

/// What the template chose among parameters that exclude each other, for the two plugins.
pub fn alternatives(reader: &str, writer: &str) -> Result<Vec<&'static str>> {
    let r = plugin(reader, "reader", &READERS)?;
    let w = plugin(writer, "writer", &WRITERS)?;
    let mut out = Vec::new();
    if r == "mysqlreader" || r == "postgresqlreader" {
        out.push("reader: \"datasource\": \"<catalog name>\" instead of username, password and jdbcUrl (the password then stays sealed in the catalog)");
        out.push("reader: \"querySql\": [\"SELECT ...\"] in connection instead of table, column, where and splitPk");
    }
    if w == "mysqlwriter" || w == "postgresqlwriter" {
        out.push(
            "writer: \"datasource\": \"<catalog name>\" instead of username, password and jdbcUrl",
        );
        out.push("writer: \"writeMode\": \"update\" (MySQL: ON DUPLICATE KEY UPDATE; PostgreSQL: upsert on \"upsertKey\") or \"replace\"");
    }
    if r == "sqlitereader" || w == "sqlitewriter" || r == "txtfilereader" || w == "txtfilewriter" {
        out.push("file and SQLite plugins: \"datasource\": \"<catalog name>\" instead of path (paths then stay inside its folder)");
    }
    if r == "sqlitereader" {
        out.push("reader: \"querySql\": \"SELECT ...\" instead of table, column and where");
    }
    if r == "txtfilereader" || w == "txtfilewriter" {
        out.push("files: \"fileFormat\": \"text\" (no quoting), \"compress\": \"gzip\", \"bytesEncoding\": \"hex\"");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobSpec;

    /// Every reader x writer pair parses with the job parser (which refuses unknown keys).
    #[test]
    fn every_pair_parses() -> Result<()> {
        for r in READERS {
            for w in WRITERS {
                let text = template(r, w)?.to_string();
                if let Err(e) = JobSpec::parse(&text) {
                    panic!("template {r} -> {w} does not parse: {e}\n{text}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn short_names_and_unknown_plugins() -> Result<()> {
        assert_eq!(
            template("mysql", "postgresql")?,
            template("MySQLReader", "postgresqlwriter")?
        );
        let err = template("oracle", "stream").err().map(|e| e.to_string());
        assert!(
            err.is_some_and(|e| e.contains("unknown reader plugin") && e.contains("mysqlreader"))
        );
        assert!(template("mysql", "mysqlreader").is_err());
        Ok(())
    }
}
