//! DataX-shaped plugin templates (`tests/fixtures/datax/*.template.json`), quirks kept (numbers
//! as strings, `""` for unset, jdbcUrl as array or string, a key twice in one object), filled
//! with this machine's connection values and run through the engine against the real databases.

use crate::support::*;
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};

fn template(name: &str) -> anyhow::Result<String> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/datax")
        .join(name);
    std::fs::read_to_string(&p).map_err(|e| anyhow::anyhow!("read {}: {e}", p.display()))
}

/// Sets values at JSON pointers in the template's text, keeping everything else as published.
/// serde_json keeps the last of duplicated keys, as DataX does, so the result is what DataX
/// would run.
fn fill(name: &str, values: &[(&str, Value)]) -> anyhow::Result<Value> {
    let mut v: Value = serde_json::from_str(&template(name)?)?;
    for (pointer, value) in values {
        *v.pointer_mut(pointer)
            .ok_or_else(|| anyhow::anyhow!("{name} has no {pointer}"))? = value.clone();
    }
    Ok(v)
}

fn datax_job(reader: Value, writer: Value) -> String {
    // As in DataX's job.json: channel given as a number, errorLimit as a record count.
    json!({"job": {"setting": {"speed": {"channel": "2"}, "errorLimit": {"record": 0}},
                   "content": [{"reader": reader, "writer": writer}]}})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rdbms_templates_run_unchanged() -> anyhow::Result<()> {
    let pg = PgDb::create().await?;
    let my = MyDb::create().await?;
    let result = async {
        my.conn()
            .await?
            .query_drop(
                "CREATE TABLE orders (id INT PRIMARY KEY, item VARCHAR(40), qty INT);
                 INSERT INTO orders VALUES (1, 'tea', 2), (2, '茶', 3), (3, NULL, 0);
                 CREATE TABLE back (id INT PRIMARY KEY, item VARCHAR(40), qty INT);",
            )
            .await?;
        pg.client()
            .await?
            .batch_execute("CREATE TABLE orders (id integer PRIMARY KEY, item text, qty integer)")
            .await?;
        // mysqlreader template -> postgresqlwriter template (whose preSql appears twice).
        let reader = fill(
            "mysqlreader.template.json",
            &[
                ("/parameter/username", json!(MY_USER)),
                ("/parameter/column", json!(["id", "item", "qty"])),
                ("/parameter/connection/0/jdbcUrl", json!([my.url()])),
                ("/parameter/connection/0/table", json!(["orders"])),
            ],
        )?;
        let writer = fill(
            "postgresqlwriter.template.json",
            &[
                ("/parameter/username", json!(PG_USER)),
                ("/parameter/column", json!(["id", "item", "qty"])),
                ("/parameter/connection/0/jdbcUrl", json!(pg.url())),
                ("/parameter/connection/0/table", json!(["orders"])),
                (
                    "/parameter/postSql",
                    json!(["UPDATE @table SET qty = qty * 10"]),
                ),
            ],
        )?;
        let (r, log) = run_job(&datax_job(reader, writer)).await;
        let s = r.map_err(|e| anyhow::anyhow!("{e}\n{}", log.join("\n")))?;
        assert_eq!(s.records_written, 3);
        let rows = pg
            .client()
            .await?
            .query("SELECT id, item, qty FROM orders ORDER BY id", &[])
            .await?;
        let got: Vec<(i32, Option<String>, i32)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, Some("tea".into()), 20),
                (2, Some("茶".into()), 30),
                (3, None, 0)
            ]
        );

        // postgresqlreader template -> mysqlwriter template, writeMode and session kept.
        let reader = fill(
            "postgresqlreader.template.json",
            &[
                ("/parameter/username", json!(PG_USER)),
                ("/parameter/connection/0/jdbcUrl", json!([pg.url()])),
                ("/parameter/connection/0/table", json!(["orders"])),
            ],
        )?;
        let mut reader = reader;
        reader["parameter"]["column"] = json!(["*"]);
        let writer = fill(
            "mysqlwriter.template.json",
            &[
                ("/parameter/username", json!(MY_USER)),
                ("/parameter/writeMode", json!("replace")),
                ("/parameter/column", json!(["id", "item", "qty"])),
                (
                    "/parameter/session",
                    json!(["SET SESSION sql_safe_updates = 0"]),
                ),
                ("/parameter/preSql", json!(["DELETE FROM @table"])),
                ("/parameter/connection/0/jdbcUrl", json!(my.url())),
                ("/parameter/connection/0/table", json!(["back"])),
            ],
        )?;
        for _ in 0..2 {
            let (r, log) = run_job(&datax_job(reader.clone(), writer.clone())).await;
            r.map_err(|e| anyhow::anyhow!("{e}\n{}", log.join("\n")))?;
        }
        let (n, qty): (i64, i64) = my
            .conn()
            .await?
            .query_first("SELECT COUNT(*), CAST(SUM(qty) AS SIGNED) FROM back")
            .await?
            .unwrap_or_default();
        assert_eq!((n, qty), (3, 50));
        anyhow::Ok(())
    }
    .await;
    pg.drop_db().await?;
    my.drop_db().await?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_and_stream_templates_run_unchanged() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "1|alpha|2026-11-24\n2|\\N|2026-11-25\n")?;
    let reader = fill(
        "txtfilereader.template.json",
        &[
            ("/parameter/path", json!([input.display().to_string()])),
            ("/parameter/encoding", json!("UTF-8")),
            (
                "/parameter/column",
                json!([{"index": 0, "type": "long"}, {"index": 1, "type": "string"},
                       {"index": 2, "type": "date", "format": "yyyy-MM-dd"}]),
            ),
            ("/parameter/fieldDelimiter", json!("|")),
        ],
    )?;
    let writer = fill(
        "txtfilewriter.template.json",
        &[
            (
                "/parameter/path",
                json!(dir.path().join("out").display().to_string()),
            ),
            ("/parameter/fileName", json!("result")),
            ("/parameter/writeMode", json!("truncate")),
            ("/parameter/fieldDelimiter", json!(",")),
            ("/parameter/dateFormat", json!("yyyyMMdd")),
        ],
    )?;
    let (r, log) = run_job(&datax_job(reader, writer)).await;
    r.map_err(|e| anyhow::anyhow!("{e}\n{}", log.join("\n")))?;
    let out = std::fs::read_to_string(dir.path().join("out/result"))?;
    assert_eq!(out, "1,alpha,20261124\n2,\\N,20261125\n");

    let reader = fill(
        "streamreader.template.json",
        &[
            ("/parameter/sliceRecordCount", json!("25")),
            (
                "/parameter/column",
                json!([{"value": "x", "type": "string"}, {"value": 7, "type": "long"}]),
            ),
        ],
    )?;
    let writer = fill(
        "streamwriter.template.json",
        &[("/parameter/print", json!(false))],
    )?;
    let (r, log) = run_job(&datax_job(reader, writer)).await;
    let s = r.map_err(|e| anyhow::anyhow!("{e}\n{}", log.join("\n")))?;
    assert_eq!(s.records_written, 50, "2 channels x sliceRecordCount 25");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_missing_table_fail_clearly() -> anyhow::Result<()> {
    let my = MyDb::create().await?;
    let result = async {
        let mut reader = my_reader(&my, "nope", &["*"], None);
        let (r, _) = run_job(&datax_job(
            reader.clone(),
            json!({"name": "streamwriter", "parameter": {}}),
        ))
        .await;
        let err = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("doesn't exist"), "{err}");
        reader["parameter"]["username"] = json!("ferry_no_such_user");
        reader["parameter"]["password"] = json!("wrong");
        let (r, _) = run_job(&datax_job(
            reader,
            json!({"name": "streamwriter", "parameter": {}}),
        ))
        .await;
        let err = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("Access denied"), "{err}");
        assert!(!err.contains("wrong"), "password not echoed: {err}");
        anyhow::Ok(())
    }
    .await;
    my.drop_db().await?;
    result
}
