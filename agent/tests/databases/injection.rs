//! Identifier injection through table, column and data source names against the real
//! PostgreSQL and MariaDB: each odd name either works as a name (quoted) or is refused with an
//! error; it is never executed as SQL. A `victim` table beside each test's tables must survive
//! every job, and a `DROP`/`INSERT` smuggled into a name must leave no trace.

use crate::support::*;
use ferry_common::job::JobSpec;
use mysql_async::prelude::Queryable;
use serde_json::json;

/// Names a hostile job author might write, each trying to end the statement and run another.
const HOSTILE_TABLES: &[&str] = &[
    "t\"; DROP TABLE victim; --",
    "t`; DROP TABLE victim; --",
    "t; DROP TABLE victim",
    "t' OR '1'='1",
    "victim; DROP TABLE victim",
    "t /* */ UNION SELECT 1",
];

const HOSTILE_COLUMNS: &[&str] = &[
    "id\"; DROP TABLE victim; --",
    "id`; DROP TABLE victim; --",
    "id FROM victim; DROP TABLE victim; --",
    "1; DROP TABLE victim",
];

fn reader_with(mut r: serde_json::Value, table: &str, column: &str) -> serde_json::Value {
    r["parameter"]["connection"][0]["table"] = json!([table]);
    r["parameter"]["column"] = json!([column]);
    r
}

fn writer_with(mut w: serde_json::Value, table: &str, column: &str) -> serde_json::Value {
    w["parameter"]["connection"][0]["table"] = json!([table]);
    w["parameter"]["column"] = json!([column]);
    w
}

fn stream_one() -> serde_json::Value {
    json!({"name": "streamreader", "parameter": {"column": [{"type": "long", "value": "7"}], "sliceRecordCount": 1}})
}

fn stream_out() -> serde_json::Value {
    json!({"name": "streamwriter", "parameter": {}})
}

/// Runs a read and a write job with every hostile table and column name (`reader` and `writer`
/// are the database's plugins, their table and column replaced), checking after each that the
/// victim table still holds its row; what each job answered, for the caller's checks.
async fn try_hostile_names<F, Fut>(
    reader: serde_json::Value,
    writer: serde_json::Value,
    victim_left: &F,
) -> anyhow::Result<Vec<String>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<i64>>,
{
    let outcome = |what: String, r: &Result<_, ferry_agent::sync::SyncError>| {
        format!(
            "{what}: {:?}",
            r.as_ref().map(|_: &_| ()).map_err(|e| e.to_string())
        )
    };
    let mut outcomes = Vec::new();
    let names = HOSTILE_TABLES
        .iter()
        .map(|t| ("table", *t, "id"))
        .chain(HOSTILE_COLUMNS.iter().map(|c| ("column", "victim", *c)));
    for (kind, table, column) in names {
        let shown = if kind == "table" { table } else { column };
        let (r, log) = run_job(&job(
            1,
            Some(0),
            reader_with(reader.clone(), table, column),
            stream_out(),
        ))
        .await;
        outcomes.push(outcome(format!("read {kind} {shown:?}"), &r));
        let (w, _) = run_job(&job(
            1,
            Some(0),
            stream_one(),
            writer_with(writer.clone(), table, column),
        ))
        .await;
        outcomes.push(outcome(format!("write {kind} {shown:?}"), &w));
        assert_eq!(victim_left().await?, 1, "{shown}: {log:?}");
    }
    Ok(outcomes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_names_are_never_sql() -> anyhow::Result<()> {
    let pg = PgDb::create().await?;
    let result = async {
        let c = pg.client().await?;
        c.batch_execute(
            "CREATE TABLE victim (id integer); INSERT INTO victim VALUES (1);
             CREATE TABLE \"odd\"\"; DROP TABLE victim; --\" (\"c\"\"x`y\" integer);",
        )
        .await?;
        let victim_left = || async {
            let rows = pg
                .client()
                .await?
                .query("SELECT count(*) FROM victim", &[])
                .await?;
            anyhow::Ok(rows[0].get::<_, i64>(0))
        };
        let outcomes = try_hostile_names(
            pg_reader(&pg, "x", &["id"], None),
            pg_writer(&pg, "x", &["id"], json!({})),
            &victim_left,
        )
        .await?;
        // A table literally named with quotes and a semicolon works as a name.
        let (w, log) = run_job(&job(
            1,
            Some(0),
            stream_one(),
            writer_with(
                pg_writer(&pg, "x", &["id"], json!({})),
                "odd\"; DROP TABLE victim; --",
                "c\"x`y",
            ),
        ))
        .await;
        eprintln!("{}", outcomes.join("\n"));
        eprintln!(
            "odd-name write: {:?} {log:?}",
            w.as_ref().map(|_| ()).map_err(|e| e.to_string())
        );
        assert_eq!(victim_left().await?, 1);
        // Table names and writer columns are only ever names: the odd ones are quoted (so the
        // server says the table does not exist, never a syntax error), and the table really
        // named with a quote and a semicolon takes the row.
        assert!(
            w.is_ok(),
            "the odd-name table must work as a name: {w:?} {log:?}"
        );
        let odd = c
            .query(
                "SELECT count(*) FROM \"odd\"\"; DROP TABLE victim; --\"",
                &[],
            )
            .await?;
        assert_eq!(odd[0].get::<_, i64>(0), 1);
        for o in outcomes
            .iter()
            .filter(|o| o.starts_with("read table") || o.starts_with("write"))
        {
            assert!(
                !o.contains("syntax"),
                "a name reached the SQL parser as SQL: {o}"
            );
        }
        anyhow::Ok(())
    }
    .await;
    pg.drop_db().await?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_names_are_never_sql() -> anyhow::Result<()> {
    let my = MyDb::create().await?;
    let result = async {
        let mut c = my.conn().await?;
        c.query_drop("CREATE TABLE victim (id integer)").await?;
        c.query_drop("INSERT INTO victim VALUES (1)").await?;
        c.query_drop("CREATE TABLE `odd\"; DROP TABLE victim; --` (`c\"x``y` integer)")
            .await?;
        let victim_left = || async {
            let n: Option<i64> = my
                .conn()
                .await?
                .query_first("SELECT count(*) FROM victim")
                .await?;
            anyhow::Ok(n.unwrap_or_default())
        };
        let outcomes = try_hostile_names(
            my_reader(&my, "x", &["id"], None),
            my_writer(&my, "x", &["id"], json!({})),
            &victim_left,
        )
        .await?;
        eprintln!("{}", outcomes.join("\n"));
        anyhow::Ok(())
    }
    .await;
    my.drop_db().await?;
    result
}

/// A data source name is looked up in the catalog, never pasted into SQL: a hostile one is
/// simply not found.
#[test]
fn datasource_names_are_only_looked_up() {
    let text = json!({"job": {"content": [{
        "reader": {"name": "mysqlreader", "parameter": {"datasource": "db'; DROP TABLE victim; --", "column": ["id"], "connection": [{"table": ["t"]}]}},
        "writer": {"name": "streamwriter", "parameter": {}}}]}});
    let err = JobSpec::parse(&text.to_string())
        .and_then(|j| j.resolve(|_| None))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("not found"), "{err}");
}
