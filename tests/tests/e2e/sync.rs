//! The main path: group, agent, data sources, task, run with --follow, logs.

use crate::csv_to_sqlite_job;
use anyhow::Result;
use ferry_tests::{Cluster, datax_fixture, sqlite_count, write_orders_csv};

#[test]
fn csv_folder_to_sqlite_end_to_end() -> Result<()> {
    let (c, _) = Cluster::start_with_agent("rg-east")?;

    let files = c.path("files");
    write_orders_csv(&files, "orders.csv", 25_000)?;
    let db = c.path("wh.db");
    c.add_path_datasources(&files, &db)?;
    let list = c.ferry(&["datasource", "list"])?.ok()?;
    assert!(
        list.stdout.contains("files") && list.stdout.contains("wh"),
        "{}",
        list.stdout
    );

    let test = c
        .ferry(&["datasource", "test", "files", "--group", "rg-east"])?
        .ok()?;
    assert!(test.stdout.contains("reachable"), "{}", test.stdout);

    let job = c.job_file("job.json", &csv_to_sqlite_job("orders.csv", "orders"))?;
    let created = c
        .ferry(&[
            "task", "create", "orders", "--group", "rg-east", "--file", &job,
        ])?
        .ok()?;
    assert!(created.stdout.contains("version 1"), "{}", created.stdout);

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
    assert!(run.stdout.contains("finished: success"), "{}", run.stdout);
    assert!(
        run.stdout.contains("records read 25,000, written 25,000"),
        "{}",
        run.stdout
    );

    let (count, ids) = sqlite_count(&db, "orders")?;
    assert_eq!(count, 25_000);
    assert_eq!(ids, 25_000 * 25_001 / 2);
    let conn = rusqlite::Connection::open(&db)?;
    let (name, day): (String, String) =
        conn.query_row("SELECT name, day FROM orders WHERE id = 7", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    assert_eq!(name, "customer \"7\", ünïcode 🚢");
    assert_eq!(day, "20261124", "postSql got the substituted bizdate");

    // The stored log is there after the run.
    let logs = c.ferry(&["task", "logs", "orders"])?.ok()?;
    assert!(
        logs.stdout.contains("finished: 25000 records"),
        "{}",
        logs.stdout
    );
    assert!(logs.stdout.contains("preSql"), "{}", logs.stdout);

    // Running it again leaves exactly one copy (preSql clears the table).
    c.ferry(&["task", "run", "orders", "--follow"])?.ok()?;
    assert_eq!(sqlite_count(&db, "orders")?.0, 25_000);

    let group = c.ferry(&["group", "list"])?.ok()?;
    assert!(group.stdout.contains("online"), "{}", group.stdout);
    assert!(group.stdout.contains("0/4"), "{}", group.stdout);
    Ok(())
}

#[test]
fn datax_job_files_run_unchanged() -> Result<()> {
    let (c, _) = Cluster::start_with_agent("rg")?;
    // 3 channels x 50 records; 4 channels x 20, printed.
    for (name, records) in [
        ("stream-typed-columns.json", 150),
        ("stream-numbers-as-strings.json", 80),
    ] {
        let path = c.job_file(name, &datax_fixture(name)?)?;
        let task = name.trim_end_matches(".json");
        c.ferry(&["task", "create", task, "--group", "rg", "--file", &path])?
            .ok()?;
        let run = c.ferry(&["task", "run", task, "--follow"])?.ok()?;
        let expect = format!("records read {records}, written {records}");
        assert!(run.stdout.contains(&expect), "{name}: {}", run.stdout);
    }
    let logs = c
        .ferry(&["task", "logs", "stream-numbers-as-strings"])?
        .ok()?;
    assert!(
        logs.stdout.contains("42\t渡船 ferry — Ünïcode"),
        "print: true logs the rows: {}",
        logs.stdout
    );
    Ok(())
}

#[test]
fn sqlite_to_csv_with_header_and_nulls() -> Result<()> {
    let (c, _) = Cluster::start_with_agent("rg")?;
    let db = c.path("src.db");
    {
        let conn = rusqlite::Connection::open(&db)?;
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER, note TEXT, price REAL);
             INSERT INTO t VALUES (1, 'a,b', 1.5), (2, NULL, 2.25), (3, 'line\nbreak', NULL);",
        )?;
    }
    let out = c.path("out");
    c.ferry(&[
        "datasource",
        "add",
        "src",
        "--type",
        "sqlite",
        "--path",
        &db.display().to_string(),
    ])?
    .ok()?;
    c.ferry(&[
        "datasource",
        "add",
        "out",
        "--type",
        "csv",
        "--path",
        &out.display().to_string(),
    ])?
    .ok()?;
    let job = r#"{"job":{"content":[{
        "reader":{"name":"sqlitereader","parameter":{"datasource":"src","table":"t","column":["id","note","price"],"where":"id >= 1"}},
        "writer":{"name":"txtfilewriter","parameter":{"datasource":"out","fileName":"t_${bizdate}.csv","header":["id","note","price"],"nullFormat":""}}}]}}"#;
    let path = c.job_file("job.json", job)?;
    c.ferry(&["task", "create", "export", "--group", "rg", "--file", &path])?
        .ok()?;
    c.ferry(&["task", "run", "export", "--bizdate", "20261124", "--follow"])?
        .ok()?;
    let text = std::fs::read_to_string(out.join("t_20261124.csv"))?;
    assert_eq!(
        text,
        "id,note,price\n1,\"a,b\",1.5\n2,,2.25\n3,\"line\nbreak\",\n"
    );
    // No temporary file left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&out)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty());
    Ok(())
}

/// `ferry task template` prints, without a scheduler, a job file that a scheduler takes as it
/// is, for a pair of plugins; an unknown plugin is refused with the list of known ones.
#[test]
fn a_printed_template_is_a_job_the_scheduler_takes() -> Result<()> {
    let c = Cluster::start()?;
    c.create_group("rg")?;
    let mut offline = Cluster::without_scheduler()?;
    offline.url = "http://127.0.0.1:9".into();
    let out = offline
        .ferry(&[
            "task", "template", "--reader", "stream", "--writer", "stream",
        ])?
        .ok()?;
    assert!(
        out.stdout.contains("\"sliceRecordCount\""),
        "{}",
        out.stdout
    );
    let path = c.job_file("template.json", &out.stdout)?;
    c.ferry(&[
        "task",
        "create",
        "from_template",
        "--group",
        "rg",
        "--file",
        &path,
    ])?
    .ok()?;
    let bad = offline.ferry(&[
        "task", "template", "--reader", "oracle", "--writer", "stream",
    ])?;
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("mysqlreader"), "{}", bad.stderr);
    Ok(())
}
