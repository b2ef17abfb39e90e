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

/// A catalog data source that asks for TLS gets it on every connection an agent opens for it,
/// and one whose CA does not match the server is refused (connectivity test and run alike)
/// rather than used in clear.
#[test]
fn catalog_tls_settings_reach_every_connection() -> Result<()> {
    if psql("test", "SHOW ssl")? != "on" {
        println!("SKIPPED: the local PostgreSQL has ssl=off");
        return Ok(());
    }
    let db = ScratchDb::postgres("ferry_tls")?;
    let name = db.name.clone();
    psql(
        &name,
        "CREATE TABLE src (id bigint PRIMARY KEY, v text);
         INSERT INTO src SELECT g, 'row ' || g FROM generate_series(1, 500) g;
         CREATE TABLE dst (id bigint PRIMARY KEY, v text);
         CREATE TABLE seen (encrypted boolean)",
    )?;
    let (c, _) = Cluster::start_with_agent("rg")?;
    // A CA that did not sign the server's certificate.
    let dir = tempfile::tempdir()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other = params.self_signed(&rcgen::KeyPair::generate()?)?;
    let ca = dir.path().join("other-ca.pem");
    std::fs::write(&ca, other.pem())?;
    let ca = ca.display().to_string();
    for (ds, tls) in [
        ("pg_tls", vec!["--sslmode", "require"]),
        (
            "pg_bad_ca",
            vec!["--sslmode", "verify-ca", "--ssl-root-cert", &ca],
        ),
    ] {
        let mut args = vec![
            "datasource",
            "add",
            ds,
            "--type",
            "postgresql",
            "--host",
            "127.0.0.1",
            "--database",
            &name,
            "--user",
            "postgres",
        ];
        args.extend(tls);
        c.ferry(&args)?.ok()?;
    }
    let t = c
        .ferry(&["datasource", "test", "pg_tls", "--group", "rg"])?
        .ok()?;
    assert!(t.stdout.contains("encrypted, TLS"), "{}", t.stdout);
    let bad = c.ferry(&["datasource", "test", "pg_bad_ca", "--group", "rg"])?;
    assert!(
        bad.stdout.contains("tls") && bad.stdout.contains("certificate"),
        "{}\n{}",
        bad.stdout,
        bad.stderr
    );

    let job = |reader: &str, writer: &str| {
        format!(
            r#"{{"job": {{"content": [{{
          "reader": {{"name": "postgresqlreader", "parameter": {{"datasource": "{reader}",
                     "table": ["src"], "column": ["id", "v"]}}}},
          "writer": {{"name": "postgresqlwriter", "parameter": {{"datasource": "{writer}",
                     "table": ["dst"], "column": ["id", "v"],
                     "postSql": ["INSERT INTO seen SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"]}}}}
        }}]}}}}"#
        )
    };
    let path = c.job_file("tls.json", &job("pg_tls", "pg_tls"))?;
    c.ferry(&["task", "create", "copy", "--group", "rg", "--file", &path])?
        .ok()?;
    let run = c.ferry(&["task", "run", "copy", "--follow"])?.ok()?;
    assert!(run.stdout.contains("written 500"), "{}", run.stdout);
    assert_eq!(psql(&name, "SELECT count(*) FROM dst")?, "500");
    assert_eq!(
        psql(&name, "SELECT string_agg(encrypted::text, ',') FROM seen")?,
        "true"
    );

    let path = c.job_file("bad.json", &job("pg_tls", "pg_bad_ca"))?;
    c.ferry(&["task", "create", "bad", "--group", "rg", "--file", &path])?
        .ok()?;
    let run = c.ferry(&["task", "run", "bad", "--follow"])?;
    assert_ne!(run.code, 0, "{}", run.stdout);
    let log = format!("{}{}", run.stdout, run.stderr);
    assert!(log.contains("certificate"), "{log}");
    assert_eq!(psql(&name, "SELECT count(*) FROM seen")?, "1");
    drop(db);
    Ok(())
}
