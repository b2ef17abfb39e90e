//! splitPk: every row read exactly once, whatever the key type and collation.

use crate::support::*;
use mysql_async::prelude::Queryable;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integer_split_pk_with_gaps_and_nulls_reads_every_row_once() -> anyhow::Result<()> {
    let pg = PgDb::create().await?;
    let result = async {
        let c = pg.client().await?;
        c.batch_execute(
            "CREATE TABLE src (id bigint PRIMARY KEY, k integer, name text);
             INSERT INTO src SELECT g, CASE WHEN g % 97 = 0 THEN NULL ELSE (g * 7) % 5003 - 2000 END, 'n' || g
               FROM generate_series(1, 20000) g;
             CREATE TABLE dst (id bigint, k integer, name text);",
        )
        .await?;
        let (summary, log) = run_job(&job(
            4,
            Some(0),
            pg_reader(&pg, "src", &["id", "k", "name"], Some("k")),
            pg_writer(&pg, "dst", &["id", "k", "name"], json!({})),
        ))
        .await;
        let summary = summary.map_err(|e| anyhow::anyhow!("{e}\n{}", log.join("\n")))?;
        assert_eq!(summary.records_written, 20_000);
        assert!(log.iter().any(|l| l.contains("17 split(s) by k")), "{log:?}");
        let row = c
            .query_one(
                "SELECT count(*), count(DISTINCT id), sum(id)::bigint, sum(k)::bigint, count(*) FILTER (WHERE k IS NULL) FROM dst",
                &[],
            )
            .await?;
        let src = c
            .query_one(
                "SELECT count(*), count(DISTINCT id), sum(id)::bigint, sum(k)::bigint, count(*) FILTER (WHERE k IS NULL) FROM src",
                &[],
            )
            .await?;
        for i in 0..5 {
            assert_eq!(row.get::<_, i64>(i), src.get::<_, i64>(i), "aggregate {i}");
        }
        anyhow::Ok(())
    }
    .await;
    pg.drop_db().await?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_split_pk_under_case_insensitive_collation() -> anyhow::Result<()> {
    let my = MyDb::create().await?;
    let pg = PgDb::create().await?;
    let result = async {
        let mut c = my.conn().await?;
        c.query_drop(
            "CREATE TABLE src (id INT PRIMARY KEY, code VARCHAR(20) COLLATE utf8mb4_general_ci)",
        )
        .await?;
        // Values that a case- and accent-insensitive collation treats as equal, plus NULLs.
        let words = [
            "a", "A", "b", "B", "é", "E", "e", "zz", "Zz", "ß", "ss", "🚢", "", "m",
        ];
        let mut id = 0;
        for round in 0..40 {
            for w in words {
                id += 1;
                let code = if id % 11 == 0 {
                    None
                } else {
                    Some(format!("{w}{}", round % 3))
                };
                c.exec_drop("INSERT INTO src VALUES (?, ?)", (id, code))
                    .await?;
            }
        }
        pg.client()
            .await?
            .batch_execute("CREATE TABLE dst (id integer, code text)")
            .await?;
        let (summary, log) = run_job(&job(
            3,
            Some(0),
            my_reader(&my, "src", &["id", "code"], Some("code")),
            pg_writer(&pg, "dst", &["id", "code"], json!({})),
        ))
        .await;
        let summary = summary.map_err(|e| anyhow::anyhow!("{e}\n{}", log.join("\n")))?;
        assert_eq!(summary.records_written, id as u64);
        assert!(
            log.iter().any(|l| l.contains("split(s) by code")),
            "{log:?}"
        );
        let row = pg
            .client()
            .await?
            .query_one(
                "SELECT count(*), count(DISTINCT id), sum(id)::bigint FROM dst",
                &[],
            )
            .await?;
        assert_eq!(row.get::<_, i64>(0), id);
        assert_eq!(row.get::<_, i64>(1), id, "no row read twice");
        assert_eq!(row.get::<_, i64>(2), id * (id + 1) / 2);
        anyhow::Ok(())
    }
    .await;
    my.drop_db().await?;
    pg.drop_db().await?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_split_pk_on_postgresql_with_where() -> anyhow::Result<()> {
    let pg = PgDb::create().await?;
    let my = MyDb::create().await?;
    let result = async {
        let c = pg.client().await?;
        c.batch_execute(
            "CREATE TABLE src (id integer, code text, day text);
             INSERT INTO src SELECT g, md5(g::text) || CASE WHEN g % 3 = 0 THEN 'Ä' ELSE 'a' END,
               CASE WHEN g % 2 = 0 THEN '20261124' ELSE '20261123' END FROM generate_series(1, 5000) g;
             INSERT INTO src VALUES (5001, NULL, '20261124'), (5002, NULL, '20261123');",
        )
        .await?;
        my.conn()
            .await?
            .query_drop("CREATE TABLE dst (id INT PRIMARY KEY, code VARCHAR(64), day CHAR(8))")
            .await?;
        let mut reader = pg_reader(&pg, "src", &["id", "code", "day"], Some("code"));
        reader["parameter"]["where"] = json!("day = '20261124'");
        let (summary, log) = run_job(&job(
            4,
            Some(0),
            reader,
            my_writer(&my, "dst", &["id", "code", "day"], json!({})),
        ))
        .await;
        let summary = summary.map_err(|e| anyhow::anyhow!("{e}\n{}", log.join("\n")))?;
        assert_eq!(summary.records_written, 2501);
        let (n, sum): (i64, i64) = my
            .conn()
            .await?
            .query_first("SELECT COUNT(*), SUM(id) FROM dst WHERE day = '20261124'")
            .await?
            .unwrap_or_default();
        assert_eq!(n, 2501);
        assert_eq!(sum, (2..=5000).step_by(2).sum::<i64>() + 5001);
        anyhow::Ok(())
    }
    .await;
    pg.drop_db().await?;
    my.drop_db().await?;
    result
}
