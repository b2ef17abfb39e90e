//! Every error a user meets on the main path: a clear message, and nothing changed.

use crate::csv_to_sqlite_job;
use anyhow::Result;
use ferry_tests::{Cluster, sqlite_count, wait_for, write_orders_csv};
use std::time::Duration;

#[test]
fn wrong_registration_token_is_refused() -> Result<()> {
    let mut c = Cluster::start()?;
    c.create_group("rg")?;
    let i = c.start_agent("bad", "rg", "frt_not-the-token")?;
    let status = c.agents[i].wait_exit(Duration::from_secs(30))?;
    assert!(!status.success());
    let log = c.agents[i].log_text();
    assert!(
        log.contains("registration token for group \"rg\" is wrong"),
        "{log}"
    );
    assert!(
        !log.contains("frt_not-the-token"),
        "the token is not echoed: {log}"
    );
    let groups = c.ferry(&["group", "list"])?.ok()?;
    assert!(groups.stdout.contains("no agents"), "{}", groups.stdout);

    // No token at all (and no saved identity): the agent says what it needs.
    let k = c.start_agent_without_token("none")?;
    c.agents[k].wait_exit(Duration::from_secs(30))?;
    let log = c.agents[k].log_text();
    assert!(log.contains("pass --group and --token"), "{log}");

    // An unknown group is refused too, naming it.
    let j = c.start_agent("bad2", "nope", "frt_x")?;
    c.agents[j].wait_exit(Duration::from_secs(30))?;
    assert!(
        c.agents[j]
            .log_text()
            .contains("resource group \"nope\" not found")
    );
    Ok(())
}

#[test]
fn bad_job_files_are_refused_with_their_place() -> Result<()> {
    let c = Cluster::start()?;
    c.create_group("rg")?;
    let cases = [
        (
            "malformed.json",
            "{\"job\": {\"content\": [\n  {\"reader\": }\n]}}".to_string(),
            "malformed JSON at line 2, column 14",
        ),
        (
            "plugin.json",
            r#"{"job":{"content":[{"reader":{"name":"oraclereader","parameter":{}},"writer":{"name":"streamwriter","parameter":{}}}]}}"#.to_string(),
            "unknown reader plugin \"oraclereader\"",
        ),
        (
            "datasource.json",
            r#"{"job":{"content":[{"reader":{"name":"sqlitereader","parameter":{"datasource":"nope","table":"t"}},"writer":{"name":"streamwriter","parameter":{}}}]}}"#.to_string(),
            "data source \"nope\" not found",
        ),
        (
            "key.json",
            r#"{"job":{"content":[{"reader":{"name":"streamreader","parameter":{"column":[],"sliceRecordCount":1,"colum":[]}},"writer":{"name":"streamwriter","parameter":{}}}]}}"#.to_string(),
            "job.content[0].reader.parameter",
        ),
        (
            "param.json",
            r#"{"job":{"content":[{"reader":{"name":"streamreader","parameter":{"column":[{"value":"${bizdat}"}],"sliceRecordCount":1}},"writer":{"name":"streamwriter","parameter":{}}}]}}"#.to_string(),
            "unknown parameter ${bizdat}",
        ),
    ];
    for (file, text, expected) in cases {
        let path = c.job_file(file, &text)?;
        let out = c.ferry(&["task", "create", "t", "--group", "rg", "--file", &path])?;
        assert_eq!(out.code, 1, "{file}: {out:?}");
        assert!(out.stderr.contains(expected), "{file}: {}", out.stderr);
    }
    let missing = c.ferry(&[
        "task",
        "create",
        "t",
        "--group",
        "rg",
        "--file",
        "/nonexistent.json",
    ])?;
    assert!(
        missing
            .stderr
            .contains("cannot read job file /nonexistent.json"),
        "{missing:?}"
    );
    let no_group = c.job_file("ok.json", r#"{"job":{"content":[{"reader":{"name":"streamreader","parameter":{"column":[],"sliceRecordCount":1}},"writer":{"name":"streamwriter","parameter":{}}}]}}"#)?;
    let out = c.ferry(&[
        "task", "create", "t", "--group", "nope", "--file", &no_group,
    ])?;
    assert!(
        out.stderr.contains("resource group \"nope\" not found"),
        "{out:?}"
    );
    // Nothing was created.
    let tasks = c.ferry(&["task", "list"])?.ok()?;
    assert_eq!(tasks.stdout.lines().count(), 1, "{}", tasks.stdout);
    Ok(())
}

#[test]
fn run_waits_for_an_agent_and_says_why() -> Result<()> {
    let mut c = Cluster::start()?;
    let token = c.create_group("rg")?;
    let job = c.job_file(
        "job.json",
        r#"{"job":{"content":[{"reader":{"name":"streamreader","parameter":{"column":[{"value":1,"type":"long"}],"sliceRecordCount":5}},"writer":{"name":"streamwriter","parameter":{}}}]}}"#,
    )?;
    c.ferry(&["task", "create", "t", "--group", "rg", "--file", &job])?
        .ok()?;
    let run = c.ferry(&["task", "run", "t"])?.ok()?;
    let id = Cluster::instance_id(&run)?;
    let shown = wait_for(Duration::from_secs(10), "waiting reason", || {
        let out = c.ferry(&["instance", "show", &id]).ok()?;
        out.stdout.contains("waiting:").then_some(out.stdout)
    })?;
    assert!(
        shown.contains("resource group \"rg\" has no agents"),
        "{shown}"
    );
    assert!(shown.contains("state: waiting_resources"), "{shown}");

    c.start_agent("late", "rg", &token)?;
    let done = c.ferry(&["instance", "follow", &id])?.ok()?;
    assert!(done.stdout.contains("finished: success"), "{}", done.stdout);
    Ok(())
}

#[test]
fn missing_source_file_fails_and_keeps_the_target() -> Result<()> {
    let (c, _) = Cluster::start_with_agent("rg")?;
    let files = c.path("files");
    write_orders_csv(&files, "orders.csv", 10)?;
    let db = c.path("wh.db");
    c.add_path_datasources(&files, &db)?;
    let good = c.job_file("good.json", &csv_to_sqlite_job("orders.csv", "t"))?;
    c.ferry(&["task", "create", "good", "--group", "rg", "--file", &good])?
        .ok()?;
    c.ferry(&["task", "run", "good", "--follow"])?.ok()?;
    assert_eq!(sqlite_count(&db, "t")?.0, 10);

    let bad = c.job_file("bad.json", &csv_to_sqlite_job("missing.csv", "t"))?;
    c.ferry(&["task", "create", "bad", "--group", "rg", "--file", &bad])?
        .ok()?;
    let run = c.ferry(&["task", "run", "bad", "--follow"])?;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("finished: failed"), "{}", run.stdout);
    assert!(
        run.stdout.contains("missing.csv does not exist"),
        "{}",
        run.stdout
    );
    assert_eq!(sqlite_count(&db, "t")?.0, 10, "the target is untouched");
    Ok(())
}

#[test]
fn dirty_records_past_the_limit_fail_and_roll_back() -> Result<()> {
    let (c, _) = Cluster::start_with_agent("rg")?;
    let files = c.path("files");
    std::fs::create_dir_all(&files)?;
    std::fs::write(
        files.join("in.csv"),
        "id,name,amount\n1,a,1\nx,b,2\n3,c,3\ny,d,4\n",
    )?;
    let db = c.path("wh.db");
    c.add_path_datasources(&files, &db)?;
    // errorLimit.record = 0: the first bad id fails the run; nothing is committed.
    let strict = c.job_file("strict.json", &csv_to_sqlite_job("in.csv", "t"))?;
    c.ferry(&[
        "task", "create", "strict", "--group", "rg", "--file", &strict,
    ])?
    .ok()?;
    let run = c.ferry(&["task", "run", "strict", "--follow"])?;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("exceed errorLimit.record = 0"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("\"x\" is not a long"), "{}", run.stdout);
    assert_eq!(sqlite_count(&db, "t")?.0, 0, "rolled back");

    // errorLimit.record = 2 allows both bad rows through as dirty.
    let lenient = csv_to_sqlite_job("in.csv", "t").replace("\"record\": 0", "\"record\": 2");
    let path = c.job_file("lenient.json", &lenient)?;
    c.ferry(&[
        "task", "create", "lenient", "--group", "rg", "--file", &path,
    ])?
    .ok()?;
    let run = c.ferry(&["task", "run", "lenient", "--follow"])?.ok()?;
    assert!(run.stdout.contains("dirty 2"), "{}", run.stdout);
    // A success that skipped rows says so wherever its state is shown.
    assert!(run.stdout.contains("success (2 dirty)"), "{}", run.stdout);
    let list = c.ferry(&["instance", "list"])?.ok()?;
    assert!(list.stdout.contains("success (2 dirty)"), "{}", list.stdout);
    assert_eq!(sqlite_count(&db, "t")?, (2, 4));
    Ok(())
}

#[test]
fn passwords_are_never_shown_or_stored_in_clear() -> Result<()> {
    let c = Cluster::start()?;
    let secret = "S3cret-pa55-ferry";
    c.ferry_stdin(
        &[
            "datasource",
            "add",
            "orders_db",
            "--type",
            "mysql",
            "--host",
            "127.0.0.1",
            "--database",
            "shop",
            "--user",
            "etl",
            "--password-stdin",
        ],
        Some(&format!("{secret}\n")),
    )?
    .ok()?;
    let show = c.ferry(&["datasource", "show", "orders_db"])?.ok()?;
    assert!(
        show.stdout
            .contains("password: ******** (stored encrypted)"),
        "{}",
        show.stdout
    );
    assert!(show.stdout.contains("port:    3306"), "{}", show.stdout);
    let list = c.ferry(&["datasource", "list"])?.ok()?;
    for text in [&show.stdout, &list.stdout] {
        assert!(!text.contains(secret));
    }
    // Not in the scheduler's files nor its log.
    let mut stack = vec![c.path("scheduler")];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(
                std::fs::read_dir(&p)?
                    .filter_map(|e| e.ok())
                    .map(|e| e.path()),
            );
        } else {
            let bytes = std::fs::read(&p)?;
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds the password in clear",
                p.display()
            );
        }
    }
    if let Some(s) = &c.scheduler {
        assert!(!s.log_text().contains(secret));
    }
    // A password as a plain field is refused.
    let out = c.ferry(&[
        "datasource",
        "add",
        "x",
        "--type",
        "mysql",
        "--host",
        "h",
        "--user",
        "u",
        "--field",
        "password=oops",
    ])?;
    assert!(out.stderr.contains("password is a secret"), "{out:?}");
    let removed = c.ferry(&["datasource", "remove", "orders_db"])?.ok()?;
    assert!(removed.stdout.contains("removed"));
    let gone = c.ferry(&["datasource", "show", "orders_db"])?;
    assert!(
        gone.stderr.contains("data source \"orders_db\" not found"),
        "{gone:?}"
    );
    Ok(())
}
