//! Regression tests for paths that used to change data silently: bytes and NULL markers
//! through text files, MySQL sessions that turn strict mode off, Java date patterns, dirty
//! records that showed driver debug text, malformed CSV, and jobs without `errorLimit`.

use crate::support::*;
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};

fn csv_writer(dir: &std::path::Path, name: &str, extra: Value) -> Value {
    let mut p = json!({"path": dir.display().to_string(), "fileName": name});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            p[k] = v;
        }
    }
    json!({"name": "txtfilewriter", "parameter": p})
}

fn csv_reader(path: &std::path::Path, extra: Value) -> Value {
    let mut p = json!({"path": [path.display().to_string()], "column": ["*"]});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            p[k] = v;
        }
    }
    json!({"name": "txtfilereader", "parameter": p})
}

fn with_dirty_file(job_text: &str, path: &std::path::Path) -> anyhow::Result<String> {
    let mut j: Value = serde_json::from_str(job_text)?;
    j["job"]["setting"]["dirty"] = json!({"path": path.display().to_string()});
    Ok(j.to_string())
}

fn dirty_lines(path: &std::path::Path) -> anyhow::Result<Vec<Value>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?)
}

/// PG -> csv -> PG: bytes and values spelled like the NULL marker come back exactly, in both
/// file formats, read with `"*"` (the reader decodes bytes for the bytea column).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_and_null_markers_round_trip_through_text_files() -> anyhow::Result<()> {
    let pg = PgDb::create().await?;
    let dir = tempfile::tempdir()?;
    let result = async {
        let c = pg.client().await?;
        c.batch_execute(
            r"CREATE TABLE src (id integer, s text, b bytea);
             INSERT INTO src VALUES
               (1, '\N', '\xdeadbeef00ff'),
               (2, 'NULL', '\x5c4e'),
               (3, NULL, NULL),
               (4, 'tab	and \ backslash', '\x'),
               (5, '', '\x0a0d2c22');
             CREATE TABLE back_csv (id integer, s text, b bytea);
             CREATE TABLE back_text (id integer, s text, b bytea);",
        )
        .await?;
        let cols = ["id", "s", "b"];
        for (format, table) in [("csv", "back_csv"), ("text", "back_text")] {
            let name = format!("out.{format}");
            let (r, log) = run_job(&job(
                1,
                Some(0),
                pg_reader(&pg, "src", &cols, None),
                csv_writer(
                    dir.path(),
                    &name,
                    json!({"fileFormat": format, "fieldDelimiter": "\t"}),
                ),
            ))
            .await;
            let s = r.map_err(|e| anyhow::anyhow!("{format} out: {e}\n{}", log.join("\n")))?;
            assert_eq!((s.records_written, s.dirty_records), (5, 0), "{format}");
            let (r, log) = run_job(&job(
                1,
                Some(0),
                csv_reader(
                    &dir.path().join(&name),
                    json!({"fileFormat": format, "fieldDelimiter": "\t"}),
                ),
                pg_writer(&pg, table, &cols, json!({})),
            ))
            .await;
            let s = r.map_err(|e| anyhow::anyhow!("{format} in: {e}\n{}", log.join("\n")))?;
            assert_eq!((s.records_written, s.dirty_records), (5, 0), "{format}");
            let diff: i64 = c
                .query_one(
                    &format!(
                        "SELECT count(*) FROM (SELECT * FROM src EXCEPT SELECT * FROM {table}) d"
                    ),
                    &[],
                )
                .await?
                .get(0);
            let nulls: i64 = c
                .query_one(
                    &format!("SELECT count(*) FROM {table} WHERE s IS NULL"),
                    &[],
                )
                .await?
                .get(0);
            let file = std::fs::read_to_string(dir.path().join(&name))?;
            assert_eq!(
                (diff, nulls),
                (0, 1),
                "{format}: values changed; file:\n{file}"
            );
        }
        anyhow::Ok(())
    }
    .await;
    pg.drop_db().await?;
    result
}

/// DataX's own example session statement turns strict mode off; MySQL must still refuse or
/// report what it would change, on the LOAD DATA and the INSERT path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_session_cannot_turn_warnings_into_silent_changes() -> anyhow::Result<()> {
    let pg = PgDb::create().await?;
    let my = MyDb::create().await?;
    let dir = tempfile::tempdir()?;
    let result = async {
        pg.client()
            .await?
            .batch_execute(
                "CREATE TABLE src (id integer, f double precision, d numeric);
                 INSERT INTO src VALUES (1, 1.5, 1.5), (2, 'NaN', 2.5), (3, 'Infinity', 3.5),
                   (4, 4.5, 1.25), (5, '-Infinity', 5.5);",
            )
            .await?;
        let cols = ["id", "f", "d"];
        for mode in ["insert", "update"] {
            let table = format!("dst_{mode}");
            my.conn()
                .await?
                .query_drop(format!(
                    "CREATE TABLE {table} (id INT PRIMARY KEY, f DOUBLE, d DECIMAL(5,1))"
                ))
                .await?;
            let dirty = dir.path().join(format!("{mode}.jsonl"));
            let text = job(
                1,
                Some(10),
                pg_reader(&pg, "src", &cols, None),
                my_writer(
                    &my,
                    &table,
                    &cols,
                    json!({"writeMode": mode, "session": ["set session sql_mode='ANSI'"]}),
                ),
            );
            let (r, log) = run_job(&with_dirty_file(&text, &dirty)?).await;
            let s = r.map_err(|e| anyhow::anyhow!("{mode}: {e}\n{}", log.join("\n")))?;
            assert_eq!(
                (s.records_written, s.dirty_records),
                (1, 4),
                "{mode}: {}",
                log.join("\n")
            );
            let rows: Vec<(i32, f64, String)> = my
                .conn()
                .await?
                .query(format!("SELECT id, f, CAST(d AS CHAR) FROM {table}"))
                .await?;
            assert_eq!(rows, vec![(1, 1.5, "1.5".to_string())], "{mode}");
            let lines = dirty_lines(&dirty)?;
            let reason = |id: i64| {
                lines
                    .iter()
                    .find(|l| l["row"][0].as_i64() == Some(id))
                    .and_then(|l| l["reason"].as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            assert!(reason(2).contains("NaN"), "{mode}: {lines:?}");
            assert!(
                reason(3).contains("inf") && reason(5).contains("inf"),
                "{lines:?}"
            );
            assert!(
                reason(4).contains("1265"),
                "the rounding of 1.25 is reported with MySQL's warning: {lines:?}"
            );
        }
        anyhow::Ok(())
    }
    .await;
    pg.drop_db().await?;
    my.drop_db().await?;
    result
}

/// `dateFormat` in Java notation formats dates, timestamps and zoned timestamps; a pattern
/// that cannot show a value in full makes it dirty instead of writing another value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_date_format_formats_every_date_type() -> anyhow::Result<()> {
    let pg = PgDb::create().await?;
    let dir = tempfile::tempdir()?;
    let result = async {
        pg.client()
            .await?
            .batch_execute(
                "CREATE TABLE src (id integer, d date, ts timestamp, tz timestamptz);
                 INSERT INTO src VALUES (1, '2024-01-02', '2024-01-02 03:04:05', '2024-01-02 03:04:05+00'),
                   (2, '0001-01-01', '9999-12-31 23:59:59', NULL),
                   (3, '2024-01-02', '2024-01-02 03:04:05.5', NULL);",
            )
            .await?;
        let (r, log) = run_job(&job(
            1,
            Some(1),
            pg_reader(&pg, "src", &["id", "d", "ts", "tz"], None),
            csv_writer(dir.path(), "dates.csv", json!({"dateFormat": "yyyy-MM-dd HH:mm:ss"})),
        ))
        .await;
        let s = r.map_err(|e| anyhow::anyhow!("{e}\n{}", log.join("\n")))?;
        assert_eq!((s.records_written, s.dirty_records), (2, 1));
        let text = std::fs::read_to_string(dir.path().join("dates.csv"))?;
        assert_eq!(
            text,
            "1,2024-01-02 00:00:00,2024-01-02 03:04:05,2024-01-02 03:04:05\n\
             2,0001-01-01 00:00:00,9999-12-31 23:59:59,\\N\n"
        );
        assert!(
            log.iter().any(|l| l.contains("cannot show 2024-01-02 03:04:05.500")),
            "{log:?}"
        );
        // A pattern Ferry cannot use is refused before anything runs.
        let (r, _) = run_job(&job(
            1,
            Some(0),
            pg_reader(&pg, "src", &["id"], None),
            csv_writer(dir.path(), "x.csv", json!({"dateFormat": "yyyy-ww"})),
        ))
        .await;
        let err = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("job.content[0].writer.parameter.dateFormat"), "{err}");
        anyhow::Ok(())
    }
    .await;
    pg.drop_db().await?;
    result
}

/// Dirty records hold the row's values in the column model (null as null, bytes as hex), the
/// column at fault and the reason, whichever path refused them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dirty_records_hold_real_values() -> anyhow::Result<()> {
    let pg = PgDb::create().await?;
    let my = MyDb::create().await?;
    let dir = tempfile::tempdir()?;
    let result = async {
        let c = pg.client().await?;
        c.batch_execute(
            r"CREATE TABLE src (id integer, n integer, b bytea);
             INSERT INTO src VALUES (1, NULL, '\x00ff'), (1, 7, NULL), (3, 3, '\xdead');
             CREATE TABLE same (id integer PRIMARY KEY, n integer, b bytea);
             CREATE TABLE narrow (id integer PRIMARY KEY, n smallint CHECK (n < 5), b bytea);",
        )
        .await?;
        my.conn()
            .await?
            .query_drop("CREATE TABLE dst (id INT PRIMARY KEY, n INT, b BLOB)")
            .await?;
        let cols = ["id", "n", "b"];
        let cases = [
            // Passed-through COPY tuples refused by the server (duplicate key).
            ("pg_passthrough", pg_writer(&pg, "same", &cols, json!({}))),
            // Converted values refused by the server (CHECK constraint, duplicate key).
            ("pg_converted", pg_writer(&pg, "narrow", &cols, json!({}))),
            // MySQL: LOAD DATA warns, the INSERT replay names the row.
            ("mysql", my_writer(&my, "dst", &cols, json!({}))),
        ];
        for (name, writer) in cases {
            let path = dir.path().join(format!("{name}.jsonl"));
            let text = job(1, Some(5), pg_reader(&pg, "src", &cols, None), writer);
            let (r, log) = run_job(&with_dirty_file(&text, &path)?).await;
            let s = r.map_err(|e| anyhow::anyhow!("{name}: {e}\n{}", log.join("\n")))?;
            assert_eq!(
                (s.records_written, s.dirty_records),
                (2, 1),
                "{name}: {log:?}"
            );
            let lines = dirty_lines(&path)?;
            assert_eq!(lines.len(), 1, "{name}: {lines:?}");
            assert_eq!(lines[0]["row"], json!([1, 7, null]), "{name}: {lines:?}");
            assert_eq!(lines[0]["types"], json!(["int", "int", "null"]), "{name}");
            assert_eq!(lines[0]["side"], "writer", "{name}");
            assert!(
                lines[0]["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "{name}"
            );
            let logged = log
                .iter()
                .find(|l| l.contains("dirty record #1"))
                .cloned()
                .unwrap_or_default();
            assert!(logged.contains("row: [1, 7, null]"), "{name}: {logged}");
        }
        anyhow::Ok(())
    }
    .await;
    pg.drop_db().await?;
    my.drop_db().await?;
    result
}

/// A quote never closed used to swallow the rest of the file into one field and report
/// success; now the job fails and names the line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unterminated_quote_fails_the_job() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("in.csv");
    let mut text = String::from("1,a\n2,\"b\n");
    for i in 3..2000 {
        text.push_str(&format!("{i},row {i}\n"));
    }
    std::fs::write(&input, text)?;
    let (r, log) = run_job(&job(
        1,
        Some(0),
        csv_reader(&input, json!({})),
        json!({"name": "streamwriter", "parameter": {}}),
    ))
    .await;
    let err = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        err.contains("line 2") && err.contains("never closed"),
        "{err}\n{log:?}"
    );
    Ok(())
}

/// Without `errorLimit`, a dirty record fails the job (DataX would let every row be dirty).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_error_limit_allows_no_dirty_record() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("in.csv");
    std::fs::write(&input, "1,x\n2,y\n")?;
    let reader = json!({"name": "txtfilereader", "parameter": {
        "path": [input.display().to_string()], "column": [{"index": 0, "type": "long"}, {"index": 1, "type": "long"}]}});
    let text = json!({"job": {"content": [{"reader": reader, "writer": {"name": "streamwriter", "parameter": {}}}]}})
        .to_string();
    let (r, _) = run_job(&text).await;
    let err = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("errorLimit"), "{err}");
    Ok(())
}

/// The writer's start line names the path rows really take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysqlwriter_logs_the_path_it_uses() -> anyhow::Result<()> {
    let my = MyDb::create().await?;
    let result = async {
        my.conn()
            .await?
            .query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
            .await?;
        let reader = json!({"name": "streamreader", "parameter": {"column": [{"value": 1, "type": "long"}], "sliceRecordCount": 1}});
        let (r, log) = run_job(&job(1, Some(0), reader, my_writer(&my, "t", &["id"], json!({})))).await;
        r.map_err(|e| anyhow::anyhow!("{e}\n{}", log.join("\n")))?;
        let start: Vec<&String> = log.iter().filter(|l| l.contains("mysqlwriter: ")).collect();
        assert!(
            start.iter().any(|l| l.contains("LOAD DATA")) && !start.iter().any(|l| l.contains("multi-row prepared INSERT")),
            "{start:?}"
        );
        anyhow::Ok(())
    }
    .await;
    my.drop_db().await?;
    result
}
