use super::*;
use crate::datasource::{CsvFolder, SqliteFile};

/// A DataX-shaped job file from the repository's fixtures (`tests/fixtures/datax`).
fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/datax")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn err_text(text: &str) -> String {
    JobSpec::parse(text)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_else(|| "parsed".into())
}

#[test]
fn datax_job_json_parses_unchanged() -> Result<()> {
    let job = JobSpec::parse(&fixture("stream-typed-columns.json"))?;
    assert_eq!(job.setting.speed.channel, Some(3));
    assert_eq!(
        job.setting.error_limit.record,
        Some(0),
        "a count given as a string"
    );
    assert_eq!(job.setting.error_limit.percentage, Some(0.02));
    let ReaderConfig::Stream(r) = &job.reader else {
        panic!("expected a stream reader, got {:?}", job.reader)
    };
    assert_eq!(r.slice_record_count, 50);
    assert_eq!(r.column.len(), 5);
    // `print` appears twice in the writer: the last one wins, as in DataX.
    assert!(matches!(
        job.writer,
        WriterConfig::Stream(StreamWriter { print: false, .. })
    ));
    Ok(())
}

#[test]
fn stream2stream_with_number_as_string() -> Result<()> {
    let job = JobSpec::parse(&fixture("stream-numbers-as-strings.json"))?;
    assert_eq!(job.setting.speed.channel, Some(4));
    let ReaderConfig::Stream(r) = &job.reader else {
        panic!("expected a stream reader")
    };
    assert_eq!(r.slice_record_count, 20);
    assert_eq!(r.column[0].value, Value::String("42".into()));
    assert!(matches!(
        job.writer,
        WriterConfig::Stream(StreamWriter {
            print: true,
            encoding: None
        })
    ));
    Ok(())
}

#[test]
fn round_trips_through_to_json() -> Result<()> {
    for name in [
        "stream-typed-columns.json",
        "stream-numbers-as-strings.json",
    ] {
        let job = JobSpec::parse(&fixture(name))?;
        let again = JobSpec::parse(&job.to_json())?;
        assert_eq!(job, again, "{name}");
    }
    Ok(())
}

#[test]
fn malformed_json_names_line_and_column() {
    let text = "{\n  \"job\": {\n    \"content\": [,]\n  }\n}";
    let msg = err_text(text);
    assert_eq!(msg, "malformed JSON at line 3, column 17: expected value");
}

#[test]
fn unknown_key_names_its_path() {
    let text = r#"{"job":{"content":[{"reader":{"name":"streamreader","parameter":
        {"column":[],"sliceRecordCount":1,"sliceRecordCont":2}},
        "writer":{"name":"streamwriter","parameter":{}}}]}}"#;
    let msg = err_text(text);
    assert!(msg.contains("job.content[0].reader.parameter"), "{msg}");
    assert!(msg.contains("sliceRecordCont"), "{msg}");
}

#[test]
fn wrong_type_names_its_path() {
    let text = r#"{"job":{"setting":{"speed":{"channel":"two"}},"content":[{"reader":{"name":"streamreader","parameter":
        {"column":[],"sliceRecordCount":1}},"writer":{"name":"streamwriter","parameter":{}}}]}}"#;
    let msg = err_text(text);
    assert!(msg.contains("job.setting.speed.channel"), "{msg}");
}

#[test]
fn unknown_plugin_lists_known() {
    let text = r#"{"job":{"content":[{"reader":{"name":"oraclereader","parameter":{}},
        "writer":{"name":"streamwriter","parameter":{}}}]}}"#;
    let msg = err_text(text);
    assert!(
        msg.contains("unknown reader plugin \"oraclereader\""),
        "{msg}"
    );
    assert!(msg.contains("streamreader"), "{msg}");
}

#[test]
fn duplicate_key_keeps_the_last_as_datax_does() -> Result<()> {
    let text = r#"{"job":{"content":[{"reader":{"name":"streamreader","parameter":
        {"column":[],"sliceRecordCount":1}},
        "writer":{"name":"sqlitewriter","parameter":{"path":"/tmp/x.db","table":"t",
        "preSql":["delete from t"],"preSql":[]}}}]}}"#;
    let job = JobSpec::parse(text)?;
    let WriterConfig::Sqlite(w) = job.writer else {
        panic!("expected sqlite writer")
    };
    assert!(w.pre_sql.is_empty());
    Ok(())
}

#[test]
fn resolves_datasources_and_relative_paths() -> Result<()> {
    let text = r#"{"job":{"content":[{"reader":{"name":"csv","parameter":
        {"datasource":"files","path":["orders.csv"],"column":["*"],"skipHeader":"true"}},
        "writer":{"name":"sqlite","parameter":{"datasource":"wh","table":"orders"}}}]}}"#;
    let job = JobSpec::parse(text)?;
    assert_eq!(
        job.datasources(),
        vec!["files".to_string(), "wh".to_string()]
    );
    let resolved = job.resolve(|name| match name {
        "files" => Some(DataSourceConfig::Csv(CsvFolder {
            path: "/data/in".into(),
        })),
        "wh" => Some(DataSourceConfig::Sqlite(SqliteFile {
            path: "/data/wh.db".into(),
        })),
        _ => None,
    })?;
    let ReaderConfig::TxtFile(r) = &resolved.reader else {
        panic!("expected txtfile reader")
    };
    assert_eq!(r.path, vec!["/data/in/orders.csv".to_string()]);
    // The agent confines every path to the data source's folder; the root travels with the job.
    assert_eq!(r.root.as_deref(), Some("/data/in"));
    let again = JobSpec::parse(&resolved.to_json())?;
    assert_eq!(again.reader, resolved.reader);
    assert!(r.skip_header);
    let WriterConfig::Sqlite(w) = &resolved.writer else {
        panic!("expected sqlite writer")
    };
    assert_eq!(w.path.as_deref(), Some("/data/wh.db"));
    Ok(())
}

#[test]
fn resolve_refuses_missing_and_mismatched_sources() -> Result<()> {
    let text = r#"{"job":{"content":[{"reader":{"name":"sqlite","parameter":
        {"datasource":"files","table":"t"}},
        "writer":{"name":"streamwriter","parameter":{}}}]}}"#;
    let missing = JobSpec::parse(text)?.resolve(|_| None);
    assert_eq!(
        missing.err().map(|e| e.to_string()).as_deref(),
        Some("data source \"files\" not found; see `ferry datasource list`")
    );
    let wrong = JobSpec::parse(text)?
        .resolve(|_| Some(DataSourceConfig::Csv(CsvFolder { path: "/x".into() })));
    let msg = wrong.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("is of type csv"), "{msg}");
    Ok(())
}

/// Fills a DataX plugin template's empty slots with the given (JSON pointer, value) pairs.
fn fill(template: &str, values: &[(&str, Value)]) -> Value {
    let mut v: Value = serde_json::from_str(template).expect("template is JSON");
    for (pointer, value) in values {
        *v.pointer_mut(pointer)
            .unwrap_or_else(|| panic!("no {pointer} in template")) = value.clone();
    }
    v
}

fn job_of(reader: Value, writer: Value) -> String {
    serde_json::json!({"job": {"content": [{"reader": reader, "writer": writer}]}}).to_string()
}

#[test]
fn datax_rdbms_templates_parse_when_filled() -> Result<()> {
    use serde_json::json;
    let my_r = fill(
        &fixture("mysqlreader.template.json"),
        &[
            ("/parameter/username", json!("root")),
            ("/parameter/column", json!(["id", "name"])),
            (
                "/parameter/connection/0/jdbcUrl",
                json!(["jdbc:mysql://127.0.0.1:3306/test"]),
            ),
            ("/parameter/connection/0/table", json!(["src"])),
        ],
    );
    let pg_w = fill(
        &fixture("postgresqlwriter.template.json"),
        &[
            ("/parameter/username", json!("postgres")),
            ("/parameter/column", json!(["id", "name"])),
            (
                "/parameter/connection/0/jdbcUrl",
                json!("jdbc:postgresql://127.0.0.1:5432/test"),
            ),
            ("/parameter/connection/0/table", json!(["dst"])),
        ],
    );
    let job = JobSpec::parse(&job_of(my_r, pg_w))?.resolve(|_| None)?;
    let ReaderConfig::Mysql(r) = &job.reader else {
        panic!("expected mysqlreader")
    };
    assert_eq!(r.where_clause, None, "empty where means none");
    assert_eq!(r.connection[0].table, vec!["src".to_string()]);
    let WriterConfig::Postgresql(w) = &job.writer else {
        panic!("expected postgresqlwriter")
    };
    assert_eq!(w.target_table(), "dst");
    assert_eq!(w.write_mode, WriteMode::Insert);

    let pg_r = fill(
        &fixture("postgresqlreader.template.json"),
        &[
            (
                "/parameter/connection/0/jdbcUrl",
                json!(["jdbc:postgresql://127.0.0.1/test"]),
            ),
            ("/parameter/connection/0/table", json!(["src"])),
        ],
    );
    let my_w = fill(
        &fixture("mysqlwriter.template.json"),
        &[
            ("/parameter/writeMode", json!("update")),
            ("/parameter/column", json!(["*"])),
            (
                "/parameter/connection/0/jdbcUrl",
                json!("jdbc:mysql://127.0.0.1/test"),
            ),
            ("/parameter/connection/0/table", json!(["dst"])),
        ],
    );
    // The PostgreSQL reader template has no column list: refused with its path.
    let err = JobSpec::parse(&job_of(pg_r.clone(), my_w.clone()))?
        .resolve(|_| None)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("job.content[0].reader.parameter.column"),
        "{err}"
    );
    let mut pg_r = pg_r;
    pg_r["parameter"]["column"] = json!(["*"]);
    let job = JobSpec::parse(&job_of(pg_r, my_w))?.resolve(|_| None)?;
    let WriterConfig::Mysql(w) = &job.writer else {
        panic!("expected mysqlwriter")
    };
    assert_eq!(w.write_mode, WriteMode::Update);
    Ok(())
}

#[test]
fn rdbms_datasource_fills_connection() -> Result<()> {
    use crate::datasource::DbConnection;
    use crate::secret::Secret;
    let text = r#"{"job":{"content":[{"reader":{"name":"postgresqlreader","parameter":
        {"datasource":"pg","table":"orders","column":["*"],"splitPk":"id"}},
        "writer":{"name":"mysqlwriter","parameter":{"datasource":"my","table":"orders","column":["*"],"writeMode":"replace"}}}]}}"#;
    let conn = |port| DbConnection {
        host: "db".into(),
        port,
        database: "shop".into(),
        username: "etl".into(),
        password: Secret::new("pw"),
        ..Default::default()
    };
    let job = JobSpec::parse(text)?.resolve(|n| match n {
        "pg" => Some(DataSourceConfig::Postgresql(conn(5432))),
        "my" => Some(DataSourceConfig::Mysql(conn(3306))),
        _ => None,
    })?;
    let ReaderConfig::Postgresql(r) = &job.reader else {
        panic!("expected postgresqlreader")
    };
    assert_eq!(
        r.connection[0].jdbc_url,
        vec!["jdbc:postgresql://db:5432/shop".to_string()]
    );
    assert_eq!(r.connection[0].table, vec!["orders".to_string()]);
    assert_eq!(r.password.expose(), "pw");
    let again = JobSpec::parse(&job.to_json())?;
    assert_eq!(again, job);
    // A MySQL data source cannot feed a PostgreSQL reader.
    let wrong = JobSpec::parse(text)?
        .resolve(|_| Some(DataSourceConfig::Mysql(conn(3306))))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(wrong.contains("needs a postgresql data source"), "{wrong}");
    Ok(())
}

#[test]
fn unsupported_datax_plugins_say_so() {
    let text = r#"{"job":{"content":[{"reader":{"name":"hdfsreader","parameter":{}},
        "writer":{"name":"streamwriter","parameter":{}}}]}}"#;
    assert!(err_text(text).contains("not supported by this release yet"));
}

#[test]
fn relay_halves_carry_only_their_own_side() -> Result<()> {
    let text = r#"{"job": {"setting": {"speed": {"channel": 2}}, "content": [{
        "reader": {"name": "postgresqlreader", "parameter": {"username": "r", "password": "reader-secret",
            "column": ["id"], "connection": [{"table": ["t"], "jdbcUrl": ["jdbc:postgresql://a:5432/x"]}]}},
        "writer": {"name": "mysqlwriter", "parameter": {"username": "w", "password": "writer-secret",
            "column": ["id"], "connection": [{"table": "t", "jdbcUrl": "jdbc:mysql://b:3306/y"}]}}
    }]}}"#;
    let job = JobSpec::parse(text)?;
    let reader = job.reader_half().to_json();
    let writer = job.writer_half().to_json();
    assert!(reader.contains("reader-secret") && !reader.contains("writer-secret"));
    assert!(writer.contains("writer-secret") && !writer.contains("reader-secret"));
    assert!(!reader.contains("jdbc:mysql") && !writer.contains("jdbc:postgresql"));
    // Each half travels as a job an agent parses like any other.
    let r = JobSpec::parse(&reader)?;
    let w = JobSpec::parse(&writer)?;
    assert_eq!(r.reader, job.reader);
    assert_eq!(w.writer, job.writer);
    assert_eq!(r.setting, job.setting);
    assert_eq!(w.setting, job.setting);
    Ok(())
}
