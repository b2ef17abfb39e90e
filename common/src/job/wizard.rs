//! Wizard mode: a sync job from "this table of that data source to that table of this one",
//! with the column mapping proposed from the two tables' columns, as DataWorks' codeless UI
//! does. The wizard only ever produces a job file (the script): that text is what is stored,
//! shown ("show as script") and edited afterwards, so there is one format to understand and
//! nothing converts back.
//!
//! The columns come from the agents (they reach the databases; the scheduler may not), so the
//! caller fetches them and this module decides, the same way for the CLI and the console.

use crate::{Error, Result};
use serde_json::{Value, json};

/// A table's column as an agent described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_name: String,
    pub nullable: bool,
    pub primary_key: bool,
}

/// One end of the sync: a catalog data source (of kind `kind`) and a table in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    pub datasource: String,
    pub kind: String,
    pub table: String,
}

impl Side {
    /// `ds.table` (the table may itself be `schema.table`).
    pub fn parse(text: &str, kind: &str) -> Result<Self> {
        let (ds, table) = text.split_once('.').ok_or_else(|| Error::InvalidJob {
            path: "wizard".into(),
            message: format!("\"{text}\" is not datasource.table"),
        })?;
        if ds.is_empty() || table.is_empty() {
            return Err(Error::InvalidJob {
                path: "wizard".into(),
                message: format!("\"{text}\" is not datasource.table"),
            });
        }
        Ok(Self {
            datasource: ds.into(),
            kind: kind.into(),
            table: table.into(),
        })
    }
}

/// Choices the user made beyond the two tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Source columns to copy, or `source:target` pairs; empty: every column both tables have.
    pub columns: Vec<String>,
    pub where_clause: Option<String>,
    /// insert (default), replace or update.
    pub write_mode: Option<String>,
    pub channels: Option<u32>,
    /// Statements before writing (`DELETE FROM @table WHERE ...` for daily partitions).
    pub pre_sql: Vec<String>,
}

/// Which source column goes to which target column, and what was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub pairs: Vec<(String, String)>,
    /// Source columns not copied (no target column of that name).
    pub source_only: Vec<String>,
    /// Target columns not written (they take their defaults).
    pub target_only: Vec<String>,
}

fn invalid(message: String) -> Error {
    Error::InvalidJob {
        path: "wizard".into(),
        message,
    }
}

fn find<'a>(cols: &'a [Column], name: &str) -> Option<&'a Column> {
    cols.iter()
        .find(|c| c.name == name)
        .or_else(|| cols.iter().find(|c| c.name.eq_ignore_ascii_case(name)))
}

/// Proposes the mapping: by name (case-insensitive when no exact match), in the source's order;
/// or the user's list, each name checked against both tables.
pub fn map_columns(source: &[Column], target: &[Column], requested: &[String]) -> Result<Mapping> {
    let mut pairs = Vec::new();
    if requested.is_empty() {
        for c in source {
            if let Some(t) = find(target, &c.name) {
                pairs.push((c.name.clone(), t.name.clone()));
            }
        }
    } else {
        for r in requested {
            let (s, t) = r.split_once(':').unwrap_or((r.as_str(), r.as_str()));
            let sc = find(source, s.trim()).ok_or_else(|| {
                invalid(format!(
                    "the source table has no column \"{s}\"; it has {}",
                    names(source)
                ))
            })?;
            let tc = find(target, t.trim()).ok_or_else(|| {
                invalid(format!(
                    "the target table has no column \"{t}\"; it has {}",
                    names(target)
                ))
            })?;
            if pairs
                .iter()
                .any(|(_, used): &(String, String)| *used == tc.name)
            {
                return Err(invalid(format!(
                    "target column \"{}\" is mapped twice",
                    tc.name
                )));
            }
            pairs.push((sc.name.clone(), tc.name.clone()));
        }
    }
    if pairs.is_empty() {
        return Err(invalid(format!(
            "the tables share no column name (source: {}; target: {}); map them with --columns src:dst,...",
            names(source),
            names(target)
        )));
    }
    let source_only = source
        .iter()
        .filter(|c| !pairs.iter().any(|(s, _)| *s == c.name))
        .map(|c| c.name.clone())
        .collect();
    let target_only = target
        .iter()
        .filter(|c| !pairs.iter().any(|(_, t)| *t == c.name))
        .map(|c| c.name.clone())
        .collect();
    Ok(Mapping {
        pairs,
        source_only,
        target_only,
    })
}

fn names(cols: &[Column]) -> String {
    cols.iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A column as the job must spell it so the engine finds exactly that column: plain names as
/// they are, except where the database would fold them (PostgreSQL lower-cases unquoted names,
/// so `Customer` is written `"Customer"`) or where they are not plain identifiers.
pub fn job_column(kind: &str, name: &str) -> String {
    let simple = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match kind {
        "postgresql" if simple && !name.chars().any(|c| c.is_ascii_uppercase()) => name.into(),
        "mysql" | "sqlite" if simple => name.into(),
        "mysql" => format!("`{}`", name.replace('`', "``")),
        _ => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

fn plugin(kind: &str, side: &str) -> Result<&'static str> {
    Ok(match (kind, side) {
        ("mysql", "reader") => "mysqlreader",
        ("mysql", _) => "mysqlwriter",
        ("postgresql", "reader") => "postgresqlreader",
        ("postgresql", _) => "postgresqlwriter",
        ("sqlite", "reader") => "sqlitereader",
        ("sqlite", _) => "sqlitewriter",
        (other, _) => {
            return Err(invalid(format!(
                "the wizard maps database tables (mysql, postgresql, sqlite); a {other} data source \
                 needs a job file (`ferry task template`)"
            )));
        }
    })
}

/// The job file for `from` -> `to` with `mapping`.
pub fn build(
    from: &Side,
    source: &[Column],
    to: &Side,
    mapping: &Mapping,
    opts: &Options,
) -> Result<Value> {
    let reader = plugin(&from.kind, "reader")?;
    let writer = plugin(&to.kind, "writer")?;
    let channels = opts.channels.unwrap_or(1).max(1);
    let src_cols: Vec<String> = mapping
        .pairs
        .iter()
        .map(|(s, _)| job_column(&from.kind, s))
        .collect();
    let dst_cols: Vec<String> = mapping
        .pairs
        .iter()
        .map(|(_, t)| job_column(&to.kind, t))
        .collect();
    let mut rp = serde_json::Map::new();
    rp.insert("datasource".into(), json!(from.datasource));
    rp.insert("column".into(), json!(src_cols));
    if from.kind == "sqlite" {
        rp.insert("table".into(), json!(from.table));
    } else {
        rp.insert("table".into(), json!([from.table]));
        // Splitting needs one integer key: the source's primary key when it is one.
        let keys: Vec<&Column> = source.iter().filter(|c| c.primary_key).collect();
        if channels > 1
            && let [k] = keys.as_slice()
            && k.type_name.to_ascii_lowercase().contains("int")
        {
            rp.insert("splitPk".into(), json!(job_column(&from.kind, &k.name)));
        }
    }
    if let Some(w) = opts
        .where_clause
        .as_deref()
        .filter(|w| !w.trim().is_empty())
    {
        rp.insert("where".into(), json!(w));
    }
    let mut wp = serde_json::Map::new();
    wp.insert("datasource".into(), json!(to.datasource));
    wp.insert("column".into(), json!(dst_cols));
    if to.kind == "sqlite" {
        wp.insert("table".into(), json!(to.table));
    } else {
        wp.insert("table".into(), json!([to.table]));
    }
    wp.insert(
        "writeMode".into(),
        json!(opts.write_mode.as_deref().unwrap_or("insert")),
    );
    if !opts.pre_sql.is_empty() {
        wp.insert("preSql".into(), json!(opts.pre_sql));
    }
    Ok(json!({
        "job": {
            "setting": {"speed": {"channel": channels}, "errorLimit": {"record": 0}},
            "content": [{
                "reader": {"name": reader, "parameter": Value::Object(rp)},
                "writer": {"name": writer, "parameter": Value::Object(wp)}
            }]
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasource::{DataSourceConfig, DbConnection, SqliteFile};
    use crate::job::JobSpec;

    fn col(name: &str, ty: &str, pk: bool) -> Column {
        Column {
            name: name.into(),
            type_name: ty.into(),
            nullable: !pk,
            primary_key: pk,
        }
    }

    #[test]
    fn maps_by_name_and_reports_the_rest() -> Result<()> {
        let src = [
            col("id", "bigint", true),
            col("Name", "text", false),
            col("secret", "text", false),
        ];
        let dst = [
            col("id", "bigint", true),
            col("name", "varchar(64)", false),
            col("loaded_at", "timestamp", false),
        ];
        let m = map_columns(&src, &dst, &[])?;
        assert_eq!(
            m.pairs,
            vec![("id".into(), "id".into()), ("Name".into(), "name".into())]
        );
        assert_eq!(m.source_only, vec!["secret".to_string()]);
        assert_eq!(m.target_only, vec!["loaded_at".to_string()]);
        let m = map_columns(&src, &dst, &["id".into(), "secret:name".into()])?;
        assert_eq!(m.pairs[1], ("secret".into(), "name".into()));
        assert!(map_columns(&src, &dst, &["nope".into()]).is_err());
        assert!(map_columns(&src, &dst, &["id".into(), "Name:id".into()]).is_err());
        assert!(map_columns(&src, &[col("other", "int", false)], &[]).is_err());
        Ok(())
    }

    /// Every pair of database kinds gives a job the parser accepts and resolves.
    #[test]
    fn every_database_pair_builds_a_valid_job() -> Result<()> {
        let kinds = ["mysql", "postgresql", "sqlite"];
        let config = |kind: &str| match kind {
            "sqlite" => DataSourceConfig::Sqlite(SqliteFile {
                path: "/data/w.db".into(),
            }),
            "mysql" => DataSourceConfig::Mysql(DbConnection {
                host: "db".into(),
                port: 3306,
                database: "shop".into(),
                username: "u".into(),
                ..Default::default()
            }),
            _ => DataSourceConfig::Postgresql(DbConnection {
                host: "db".into(),
                port: 5432,
                database: "dwh".into(),
                username: "u".into(),
                ..Default::default()
            }),
        };
        let src = [col("id", "int(11)", true), col("v", "text", false)];
        for r in kinds {
            for w in kinds {
                let from = Side::parse(&format!("src_{r}.orders"), r)?;
                let to = Side::parse(&format!("dst_{w}.orders_copy"), w)?;
                let m = map_columns(&src, &src, &[])?;
                let opts = Options {
                    channels: Some(4),
                    where_clause: Some("id > 0".into()),
                    pre_sql: vec!["DELETE FROM @table".into()],
                    ..Default::default()
                };
                let job = build(&from, &src, &to, &m, &opts)?;
                let spec = JobSpec::parse(&job.to_string())?;
                let resolved = spec.resolve(|name| {
                    if name == from.datasource {
                        Some(config(r))
                    } else if name == to.datasource {
                        Some(config(w))
                    } else {
                        None
                    }
                });
                assert!(resolved.is_ok(), "{r} -> {w}: {resolved:?}\n{job}");
                let reader = &job["job"]["content"][0]["reader"]["parameter"];
                if r != "sqlite" {
                    assert_eq!(reader["splitPk"], "id", "{r}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn names_are_spelled_so_the_database_finds_them() {
        assert_eq!(job_column("postgresql", "amount"), "amount");
        assert_eq!(job_column("postgresql", "Customer"), "\"Customer\"");
        assert_eq!(job_column("postgresql", "a\"b"), "\"a\"\"b\"");
        assert_eq!(job_column("mysql", "Customer"), "Customer");
        assert_eq!(job_column("mysql", "order date"), "`order date`");
        assert_eq!(job_column("sqlite", "1st"), "\"1st\"");
    }

    #[test]
    fn files_are_left_to_job_files() {
        let src = [col("id", "int", true)];
        let m = Mapping {
            pairs: vec![("id".into(), "id".into())],
            source_only: vec![],
            target_only: vec![],
        };
        let from = Side {
            datasource: "f".into(),
            kind: "csv".into(),
            table: "x".into(),
        };
        assert!(build(&from, &src, &from, &m, &Options::default()).is_err());
    }
}
