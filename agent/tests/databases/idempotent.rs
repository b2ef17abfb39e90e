//! Reruns leave exactly one copy of the day's rows when the job is written idempotently, and
//! dirty records follow errorLimit with the target rolled back on failure.

use crate::support::*;
use mysql_async::prelude::Queryable;
use serde_json::json;

async fn pg_count(db: &PgDb, sql: &str) -> anyhow::Result<i64> {
    Ok(db.client().await?.query_one(sql, &[]).await?.get(0))
}

async fn my_count(db: &MyDb, sql: &str) -> anyhow::Result<i64> {
    Ok(db.conn().await?.query_first(sql).await?.unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reruns_leave_one_copy() -> anyhow::Result<()> {
    let pg = PgDb::create().await?;
    let my = MyDb::create().await?;
    let result = async {
        let c = pg.client().await?;
        c.batch_execute(
            "CREATE TABLE src (id integer PRIMARY KEY, v text, day text);
             INSERT INTO src SELECT g, 'v' || g, '20261124' FROM generate_series(1, 3000) g;
             CREATE TABLE part (id integer, v text, day text);
             INSERT INTO part VALUES (-1, 'other day', '20261123');
             CREATE TABLE up (id integer PRIMARY KEY, v text, day text);
             CREATE TABLE live (id integer PRIMARY KEY, v text, day text);",
        )
        .await?;
        my.conn()
            .await?
            .query_drop("CREATE TABLE rep (id INT PRIMARY KEY, v VARCHAR(20), day CHAR(8))")
            .await?;
        let cols = ["id", "v", "day"];
        // 1. Partition delete in preSql.
        let delete_day = job(
            2,
            Some(0),
            pg_reader(&pg, "src", &cols, Some("id")),
            pg_writer(&pg, "part", &cols, json!({"preSql": ["DELETE FROM @table WHERE day = '20261124'"]})),
        );
        // 2. MySQL REPLACE; 3. PostgreSQL upsert (ON CONFLICT).
        let replace = job(2, Some(0), pg_reader(&pg, "src", &cols, None), my_writer(&my, "rep", &cols, json!({"writeMode": "replace"})));
        let upsert = job(2, Some(0), pg_reader(&pg, "src", &cols, None), pg_writer(&pg, "up", &cols, json!({"writeMode": "update"})));
        // 4. Load a staging table, then swap it in atomically.
        let swap = job(
            2,
            Some(0),
            pg_reader(&pg, "src", &cols, None),
            pg_writer(
                &pg,
                "live_stage",
                &cols,
                json!({
                    "preSql": ["DROP TABLE IF EXISTS live_stage", "CREATE TABLE live_stage (LIKE live INCLUDING ALL)"],
                    "postSql": ["ALTER TABLE live RENAME TO live_old; ALTER TABLE live_stage RENAME TO live; DROP TABLE live_old"]
                }),
            ),
        );
        for round in 0..2 {
            if round == 1 {
                c.batch_execute("UPDATE src SET v = 'changed' WHERE id = 7").await?;
            }
            for (name, j) in [("delete", &delete_day), ("replace", &replace), ("upsert", &upsert), ("swap", &swap)] {
                let (r, log) = run_job(j).await;
                r.map_err(|e| anyhow::anyhow!("{name} round {round}: {e}\n{}", log.join("\n")))?;
            }
        }
        assert_eq!(pg_count(&pg, "SELECT count(*) FROM part WHERE day = '20261124'").await?, 3000);
        assert_eq!(pg_count(&pg, "SELECT count(*) FROM part").await?, 3001, "other days untouched");
        assert_eq!(my_count(&my, "SELECT COUNT(*) FROM rep").await?, 3000);
        assert_eq!(my_count(&my, "SELECT COUNT(*) FROM rep WHERE v = 'changed'").await?, 1);
        assert_eq!(pg_count(&pg, "SELECT count(*) FROM up").await?, 3000);
        assert_eq!(pg_count(&pg, "SELECT count(*) FROM up WHERE id = 7 AND v = 'changed'").await?, 1);
        assert_eq!(pg_count(&pg, "SELECT count(*) FROM live").await?, 3000);
        anyhow::Ok(())
    }
    .await;
    pg.drop_db().await?;
    my.drop_db().await?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dirty_rows_follow_error_limit_on_both_databases() -> anyhow::Result<()> {
    let pg = PgDb::create().await?;
    let my = MyDb::create().await?;
    let result = async {
        let c = pg.client().await?;
        c.batch_execute(
            "CREATE TABLE src (id integer, code text);
             INSERT INTO src SELECT g, CASE WHEN g IN (10, 2000) THEN 'too long' ELSE 'ok' END FROM generate_series(1, 3000) g;
             CREATE TABLE dst (id integer PRIMARY KEY, code varchar(3));",
        )
        .await?;
        my.conn()
            .await?
            .query_drop("CREATE TABLE dst (id INT PRIMARY KEY, code VARCHAR(3))")
            .await?;
        let cols = ["id", "code"];
        for to_pg in [true, false] {
            let writer = |_: ()| if to_pg { pg_writer(&pg, "dst", &cols, json!({})) } else { my_writer(&my, "dst", &cols, json!({})) };
            let count = || async {
                if to_pg { pg_count(&pg, "SELECT count(*) FROM dst").await } else { my_count(&my, "SELECT COUNT(*) FROM dst").await }
            };
            // Limit 0: the first dirty row fails the job and nothing is committed.
            let (r, log) = run_job(&job(1, Some(0), pg_reader(&pg, "src", &cols, None), writer(()))).await;
            let err = r.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("exceed errorLimit.record = 0"), "{err}\n{}", log.join("\n"));
            assert!(log.iter().any(|l| l.contains("dirty record #1")), "{log:?}");
            assert_eq!(count().await?, 0, "to_pg={to_pg}: rolled back");
            // Limit 5: both bad rows are dirty, the rest written; the dirty-record file has both.
            let dir = tempfile::tempdir()?;
            let dirty_path = dir.path().join("dirty/rows.jsonl");
            let mut lenient: serde_json::Value =
                serde_json::from_str(&job(2, Some(5), pg_reader(&pg, "src", &cols, None), writer(())))?;
            lenient["job"]["setting"]["dirty"] = json!({"path": dirty_path.display().to_string()});
            let (r, log) = run_job(&lenient.to_string()).await;
            let s = r.map_err(|e| anyhow::anyhow!("{e}\n{}", log.join("\n")))?;
            assert_eq!((s.records_read, s.records_written, s.dirty_records), (3000, 2998, 2), "to_pg={to_pg}");
            assert_eq!(count().await?, 2998);
            let dirty: Vec<serde_json::Value> = std::fs::read_to_string(&dirty_path)?
                .lines()
                .map(serde_json::from_str)
                .collect::<Result<_, _>>()?;
            assert_eq!(dirty.len(), 2, "{dirty:?}");
            assert!(dirty.iter().all(|d| d["side"] == "writer" && d["reason"].as_str().is_some_and(|r| !r.is_empty())));
        }
        anyhow::Ok(())
    }
    .await;
    pg.drop_db().await?;
    my.drop_db().await?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passed_through_tuples_still_yield_dirty_rows() -> anyhow::Result<()> {
    let pg = PgDb::create().await?;
    let result = async {
        let c = pg.client().await?;
        // Same column types on both sides: tuples pass through undecoded; the duplicate keys
        // are refused by the server and must come out as dirty records, the rest written.
        c.batch_execute(
            "CREATE TABLE src (id integer, v text);
             INSERT INTO src SELECT g, 'v' || g FROM generate_series(1, 5000) g;
             INSERT INTO src VALUES (10, 'dup'), (4000, 'dup');
             CREATE TABLE dst (id integer PRIMARY KEY, v text);",
        )
        .await?;
        let (r, log) = run_job(&job(
            1,
            Some(2),
            pg_reader(&pg, "src", &["id", "v"], None),
            pg_writer(&pg, "dst", &["id", "v"], json!({})),
        ))
        .await;
        let s = r.map_err(|e| anyhow::anyhow!("{e}\n{}", log.join("\n")))?;
        assert_eq!(
            (s.records_read, s.records_written, s.dirty_records),
            (5002, 5000, 2)
        );
        assert!(log.iter().any(|l| l.contains("duplicate key")), "{log:?}");
        // Passed-through tuples are decoded for the log: the row's values, not a byte count.
        assert!(
            log.iter().any(|l| l.contains(r#"row: [10, "dup"]"#)),
            "passed through: {log:?}"
        );
        assert_eq!(pg_count(&pg, "SELECT count(*) FROM dst").await?, 5000);
        anyhow::Ok(())
    }
    .await;
    pg.drop_db().await?;
    result
}
