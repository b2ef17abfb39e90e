//! Real databases through the real binaries: catalog data sources with secrets, a connectivity
//! test from the agent, and a daily partition moved from MariaDB to PostgreSQL twice without
//! duplicates.

use anyhow::Result;
use ferry_tests::Cluster;
use ferry_tests::db::{ScratchDb, mysql, psql};

#[test]
fn mysql_partition_to_postgresql_via_catalog_datasources() -> Result<()> {
    let dbs = ScratchDb::both("ferry_e2e")?;
    let name = dbs.name.clone();
    psql(
        &name,
        "CREATE TABLE orders (id bigint PRIMARY KEY, day text, amount numeric(20,4))",
    )?;
    mysql(&format!(
        "CREATE TABLE {name}.orders (id INT PRIMARY KEY, day CHAR(8), amount DECIMAL(20,4));
         USE {name}; INSERT INTO {name}.orders SELECT seq, IF(seq % 2 = 0, '20261124', '20261123'), seq / 7 FROM seq_1_to_4000;"
    ))?;

    let (c, _) = Cluster::start_with_agent("rg")?;
    for (ds, kind, port, user) in [
        ("shop", "mysql", "3306", "root"),
        ("dwh", "postgresql", "5432", "postgres"),
    ] {
        c.ferry_stdin(
            &[
                "datasource",
                "add",
                ds,
                "--type",
                kind,
                "--host",
                "127.0.0.1",
                "--port",
                port,
                "--database",
                &name,
                "--user",
                user,
                "--password-stdin",
            ],
            Some("\n"),
        )?
        .ok()?;
        let t = c
            .ferry(&["datasource", "test", ds, "--group", "rg"])?
            .ok()?;
        assert!(
            t.stdout.contains("reachable") && t.stdout.contains("logged in"),
            "{}",
            t.stdout
        );
    }
    let job = r#"{"job": {"setting": {"speed": {"channel": 3}, "errorLimit": {"record": 0}},
      "content": [{
        "reader": {"name": "mysqlreader", "parameter": {"datasource": "shop", "table": ["orders"],
                   "column": ["id", "day", "amount"], "where": "day = '${bizdate}'", "splitPk": "id"}},
        "writer": {"name": "postgresqlwriter", "parameter": {"datasource": "dwh", "table": ["orders"],
                   "column": ["id", "day", "amount"], "preSql": ["DELETE FROM @table WHERE day = '${bizdate}'"]}}
      }]}}"#;
    let path = c.job_file("job.json", job)?;
    c.ferry(&["task", "create", "orders", "--group", "rg", "--file", &path])?
        .ok()?;
    for _ in 0..2 {
        let run = c
            .ferry(&[
                "task",
                "run",
                "orders",
                "--bizdate",
                "2026-11-24",
                "--follow",
            ])?
            .ok()?;
        assert!(
            run.stdout.contains("records read 2,000, written 2,000"),
            "{}",
            run.stdout
        );
    }
    assert_eq!(
        psql(&name, "SELECT count(*) FROM orders WHERE day = '20261124'")?,
        "2000"
    );
    assert_eq!(psql(&name, "SELECT count(*) FROM orders")?, "2000");
    assert_eq!(
        psql(&name, "SELECT sum(amount)::text FROM orders")?,
        mysql(&format!(
            "SELECT CAST(SUM(amount) AS CHAR) FROM {name}.orders WHERE day = '20261124'"
        ))?
    );
    drop(dbs);
    Ok(())
}
