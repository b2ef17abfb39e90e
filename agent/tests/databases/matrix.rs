//! A type round-trip matrix: the same edge values (NULLs, Unicode and emoji, 1 MB text,
//! integer extremes, 38-digit decimals, timestamps around DST changes, bytes, JSON) go through
//! every reader x writer pair of PostgreSQL and MariaDB and must come out equal.

use crate::support::*;
use mysql_async::prelude::Queryable;
use serde_json::json;

const COLUMNS: &[&str] = &[
    "id", "i", "big", "dec", "f", "s", "d", "t", "ts", "tz", "b", "j", "flag", "u",
];

const PG_DDL: &str = "(id bigint PRIMARY KEY, i integer, big bigint, dec numeric(38,10), f double precision, \
    s text, d date, t time, ts timestamp, tz timestamptz, b bytea, j jsonb, flag boolean, u uuid)";
const MY_DDL: &str = "(id BIGINT PRIMARY KEY, i INT, big BIGINT, `dec` DECIMAL(38,10), f DOUBLE, \
    s LONGTEXT, d DATE, t TIME(6), ts DATETIME(6), tz TIMESTAMP(6) NULL, b LONGBLOB, j JSON, flag TINYINT(1), u CHAR(36)) \
    CHARACTER SET utf8mb4";

/// Rows in neutral text form (tz in UTC, b in hex, flag 1/0).
fn rows() -> Vec<Vec<Option<String>>> {
    let s = |v: &str| Some(v.to_string());
    let big_text: String = "Ferry ⛴ 1 MB of text, ".repeat(1_000_000 / 24 + 1);
    let all_bytes: String = (0u8..=255).map(|b| format!("{b:02x}")).collect();
    vec![
        vec![
            s("1"),
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        ],
        vec![
            s("2"),
            s("2147483647"),
            s("9223372036854775807"),
            s("9999999999999999999999999999.9999999999"),
            s("1.7976931348623157e308"),
            s("héllo 世界 🚢🎉 👨‍👩‍👧 \u{202e}rtl"),
            s("9999-12-31"),
            s("23:59:59.999999"),
            s("2026-03-29 02:30:00.123456"),
            s("2026-03-29 01:30:00.000000"),
            Some(all_bytes),
            s(r#"{"a": [1, 2, {"b": null}], "ü": "✓"}"#),
            s("1"),
            s("123e4567-e89b-12d3-a456-426614174000"),
        ],
        vec![
            s("3"),
            s("-2147483648"),
            s("-9223372036854775808"),
            s("-9999999999999999999999999999.9999999999"),
            s("2.2250738585072014e-308"),
            s(""),
            s("1000-01-01"),
            s("00:00:00.000000"),
            s("1000-01-01 00:00:00.000000"),
            s("1970-01-01 00:00:01.000000"),
            s(""),
            s("[]"),
            s("0"),
            s("00000000-0000-0000-0000-000000000000"),
        ],
        vec![
            s("4"),
            s("0"),
            s("0"),
            s("0.0000000001"),
            s("0.1"),
            Some(big_text),
            s("2026-11-01"),
            s("12:00:00.000001"),
            s("2026-11-01 01:30:00.000000"),
            s("2026-11-01 06:30:00.000000"),
            s("00ff00"),
            s(r#""string""#),
            s("1"),
            None,
        ],
        vec![
            s("5"),
            s("-1"),
            s("1"),
            s("-0.5000000000"),
            s("-3.25"),
            s("quote ' double \" backslash \\ tab \t newline \n end"),
            s("2000-02-29"),
            s("01:02:03.000000"),
            s("2000-02-29 23:59:59.500000"),
            s("2038-01-19 03:14:07.000000"),
            s("5c27"),
            s(r#"{"nested": {"deep": [true, false, 1.5]}}"#),
            s("0"),
            s("ffffffff-ffff-ffff-ffff-ffffffffffff"),
        ],
    ]
}

async fn fill_pg(db: &PgDb, table: &str) -> anyhow::Result<()> {
    let c = db.client().await?;
    c.batch_execute(&format!("CREATE TABLE {table} {PG_DDL}"))
        .await?;
    let sql = format!(
        "INSERT INTO {table} VALUES ($1::text::bigint, $2::text::int, $3::text::bigint, $4::text::numeric, \
         $5::text::float8, $6::text, $7::text::date, $8::text::time, $9::text::timestamp, \
         ($10::text::timestamp AT TIME ZONE 'UTC'), decode($11::text, 'hex'), $12::text::jsonb, \
         $13::text::int::bool, $14::text::uuid)"
    );
    for r in rows() {
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = r
            .iter()
            .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        c.execute(&sql, &params).await?;
    }
    Ok(())
}

async fn fill_my(db: &MyDb, table: &str) -> anyhow::Result<()> {
    let mut c = db.conn().await?;
    c.query_drop(format!("CREATE TABLE {table} {MY_DDL}"))
        .await?;
    let sql = format!("INSERT INTO {table} VALUES (?,?,?,?,?,?,?,?,?,?,UNHEX(?),?,?,?)");
    for r in rows() {
        let params: Vec<mysql_async::Value> = r
            .into_iter()
            .map(|v| {
                v.map(|s| mysql_async::Value::Bytes(s.into_bytes()))
                    .unwrap_or(mysql_async::Value::NULL)
            })
            .collect();
        c.exec_drop(&sql, params).await?;
    }
    Ok(())
}

async fn read_pg(db: &PgDb, table: &str) -> anyhow::Result<Vec<Vec<Option<String>>>> {
    let c = db.client().await?;
    let sql = format!(
        "SELECT id::text, i::text, big::text, dec::text, f::text, s, d::text, to_char(t, 'HH24:MI:SS.US'), \
         to_char(ts, 'YYYY-MM-DD HH24:MI:SS.US'), to_char(tz AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), \
         encode(b, 'hex'), j::text, CASE WHEN flag THEN '1' WHEN NOT flag THEN '0' END, u::text \
         FROM {table} ORDER BY id"
    );
    let rows = c.query(&sql, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            (0..COLUMNS.len())
                .map(|i| r.get::<_, Option<String>>(i))
                .collect()
        })
        .collect())
}

async fn read_my(db: &MyDb, table: &str) -> anyhow::Result<Vec<Vec<Option<String>>>> {
    let mut c = db.conn().await?;
    let sql = format!(
        "SELECT CAST(id AS CHAR), CAST(i AS CHAR), CAST(big AS CHAR), CAST(`dec` AS CHAR), CAST(f AS CHAR), s, \
         CAST(d AS CHAR), TIME_FORMAT(t, '%H:%i:%s.%f'), DATE_FORMAT(ts, '%Y-%m-%d %H:%i:%s.%f'), \
         DATE_FORMAT(tz, '%Y-%m-%d %H:%i:%s.%f'), LOWER(HEX(b)), CAST(j AS CHAR), CAST(flag AS CHAR), u \
         FROM {table} ORDER BY id"
    );
    let rows: Vec<mysql_async::Row> = c.query(sql).await?;
    Ok(rows
        .into_iter()
        .map(|mut r| {
            (0..COLUMNS.len())
                .map(|i| r.take::<Option<String>, _>(i).flatten())
                .collect()
        })
        .collect())
}

/// Compares with the per-column meaning: floats and JSON by value, the rest as text.
fn assert_same(pair: &str, expected: &[Vec<Option<String>>], actual: &[Vec<Option<String>>]) {
    assert_eq!(expected.len(), actual.len(), "{pair}: row count");
    for (e, a) in expected.iter().zip(actual) {
        for (i, name) in COLUMNS.iter().enumerate() {
            let (x, y) = (&e[i], &a[i]);
            let same = match (*name, x, y) {
                ("f", Some(x), Some(y)) => x.parse::<f64>().ok() == y.parse::<f64>().ok(),
                ("j", Some(x), Some(y)) => {
                    serde_json::from_str::<serde_json::Value>(x).ok()
                        == serde_json::from_str::<serde_json::Value>(y).ok()
                }
                _ => x == y,
            };
            let show =
                |v: &Option<String>| v.as_deref().map(|s| s.chars().take(80).collect::<String>());
            assert!(
                same,
                "{pair}: row {:?} column {name}: expected {:?}, got {:?}",
                e[0],
                show(x),
                show(y)
            );
        }
    }
}

fn writer_cfg() -> serde_json::Value {
    json!({"batchSize": 2})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reader_writer_pair_round_trips_types() -> anyhow::Result<()> {
    let pg = PgDb::create().await?;
    let my = MyDb::create().await?;
    let result = async {
        fill_pg(&pg, "src").await?;
        fill_my(&my, "src").await?;
        let expected = rows();
        // The expectation itself must match what each database stores.
        assert_same("pg source", &expected, &read_pg(&pg, "src").await?);
        assert_same("mysql source", &expected, &read_my(&my, "src").await?);

        for (pair, reader, to_pg) in [
            ("pg->pg", pg_reader(&pg, "src", &["*"], Some("id")), true),
            (
                "mysql->pg",
                my_reader(&my, "src", COLUMNS, Some("id")),
                true,
            ),
            ("pg->mysql", pg_reader(&pg, "src", COLUMNS, None), false),
            ("mysql->mysql", my_reader(&my, "src", &["*"], None), false),
        ] {
            let table = format!("dst_{}", pair.replace("->", "_"));
            let writer = if to_pg {
                pg.client()
                    .await?
                    .batch_execute(&format!("CREATE TABLE {table} {PG_DDL}"))
                    .await?;
                pg_writer(&pg, &table, COLUMNS, writer_cfg())
            } else {
                my.conn()
                    .await?
                    .query_drop(format!("CREATE TABLE {table} {MY_DDL}"))
                    .await?;
                my_writer(&my, &table, COLUMNS, writer_cfg())
            };
            let (summary, log) = run_job(&job(2, Some(0), reader, writer)).await;
            let summary =
                summary.map_err(|e| anyhow::anyhow!("{pair}: {e}\n{}", log.join("\n")))?;
            assert_eq!(summary.records_written, 5, "{pair}");
            if !to_pg {
                // MySQL's bulk path took every row: none needed the INSERT fallback.
                let channels: Vec<_> = log
                    .iter()
                    .filter(|l| l.contains("mysqlwriter channel"))
                    .collect();
                assert!(!channels.is_empty(), "{pair}: {log:?}");
                assert!(
                    channels.iter().all(|l| l.ends_with(" 0 by INSERT")),
                    "{pair}: {channels:?}"
                );
            }
            assert_eq!(summary.dirty_records, 0, "{pair}");
            let actual = if to_pg {
                read_pg(&pg, &table).await?
            } else {
                read_my(&my, &table).await?
            };
            assert_same(pair, &expected, &actual);
        }
        anyhow::Ok(())
    }
    .await;
    pg.drop_db().await?;
    my.drop_db().await?;
    result
}
