//! Scheduling with the real binaries: tasks that run on their own every minute (a sync and a
//! shell task), a failed sync retried on another agent to exactly one copy, one run per
//! (task, business date) however many ask, and every refusal of the scheduling API.

use anyhow::{Result, anyhow};
use ferry_tests::db::{ScratchDb, psql};
use ferry_tests::{Cluster, sqlite_count, wait_for, write_orders_csv};
use std::time::Duration;

fn instances(c: &Cluster, task: &str) -> Result<Vec<serde_json::Value>> {
    let out = c
        .ferry(&["--output", "json", "instance", "list", "--task", task])?
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&out.stdout)?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

fn successes(c: &Cluster, task: &str) -> Result<usize> {
    let out = c
        .ferry(&[
            "--output", "json", "instance", "list", "--task", task, "--state", "success",
        ])?
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&out.stdout)?;
    Ok(v.as_array().map(Vec::len).unwrap_or(0))
}

/// A sync task and a shell task scheduled every minute run on their own.
#[test]
fn tasks_scheduled_every_minute_run_on_their_own() -> Result<()> {
    let mut c = Cluster::start()?;
    let token = c.create_group("rg")?;
    c.ferry(&["group", "set", "rg", "--allow-shell", "on"])?
        .ok()?;
    let url = c.url.clone();
    c.start_agent_with("a1", "rg", &token, &url, &["--shell"])?;
    c.wait_online("rg", 1)?;
    let files = c.path("files");
    write_orders_csv(&files, "orders.csv", 500)?;
    let db = c.path("wh.db");
    c.add_path_datasources(&files, &db)?;
    let job = c.job_file(
        "job.json",
        &crate::csv_to_sqlite_job("orders.csv", "orders"),
    )?;
    c.ferry(&[
        "task",
        "submit",
        "sync_every_minute",
        "--group",
        "rg",
        "--file",
        &job,
        "--cron",
        "* * * * *",
        "--generate-now",
    ])?
    .ok()?;
    let out = c.path("shell-out.txt");
    let script = c.job_file(
        "script.sh",
        &format!(
            "echo \"cycle $FERRY_PARAM_cyctime day ${{bizdate}}\" >> {}\n",
            out.display()
        ),
    )?;
    c.ferry(&[
        "task",
        "submit",
        "shell_every_minute",
        "--type",
        "shell",
        "--group",
        "rg",
        "--file",
        &script,
        "--cron",
        "* * * * *",
        "--generate-now",
    ])?
    .ok()?;
    let waited = wait_for(
        Duration::from_secs(200),
        "two scheduled runs of each task",
        || {
            let sync = successes(&c, "sync_every_minute").ok()?;
            let shell = successes(&c, "shell_every_minute").ok()?;
            (sync >= 2 && shell >= 2).then_some(())
        },
    );
    if let Err(e) = waited {
        let moved: Vec<String> = ["sync_every_minute", "shell_every_minute"]
            .iter()
            .flat_map(|t| instances(&c, t).unwrap_or_default())
            .filter(|i| i["state"] != "waiting_time" && i["state"] != "dry_run")
            .map(|i| i.to_string())
            .collect();
        return Err(e.context(format!(
            "instances that moved: {moved:#?}\nagent log:\n{}",
            c.agents[0].log_text()
        )));
    }
    // The shell task got its parameters, one line per run.
    let text = std::fs::read_to_string(&out)?;
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2, "{text}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("cycle 20") && l.contains(" day 20")),
        "{text}"
    );
    // Every run loaded the source exactly once (the job deletes, then inserts).
    assert_eq!(sqlite_count(&db, "orders")?.0, 500);
    // They ran on their own: scheduled instances, not manual ones.
    let runs: Vec<String> = instances(&c, "sync_every_minute")?
        .iter()
        .filter(|i| i["state"] == "success")
        .map(|i| i["run"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(runs.iter().all(|r| r == "scheduled"), "{runs:?}");
    Ok(())
}

/// The agent running a sync is killed; after the lease the attempt fails, is retried by the
/// task's policy on the other agent of the group, and the target ends with exactly the source
/// rows.
#[test]
fn a_failed_sync_is_retried_on_another_agent_to_one_copy() -> Result<()> {
    let db = ScratchDb::postgres("ferry_e2e_retry")?;
    psql(
        &db.name,
        "CREATE TABLE src (id bigint primary key, v text);
         INSERT INTO src SELECT g, 'v' || g FROM generate_series(1, 40000) g;
         CREATE TABLE dst (id bigint primary key, v text);",
    )?;
    let mut c = Cluster::start_with(&["--attempt-lease-secs", "3"])?;
    let token = c.create_group("rg")?;
    c.start_agent("a1", "rg", &token)?;
    c.start_agent("a2", "rg", &token)?;
    c.wait_online("rg", 2)?;
    let url = format!("jdbc:postgresql://127.0.0.1:5432/{}", db.name);
    let job = serde_json::json!({"job": {
    "setting": {"speed": {"channel": 1, "record": 10000}, "errorLimit": {"record": 0}},
    "content": [{
        "reader": {"name": "postgresqlreader", "parameter": {"username": "postgres", "password": "",
            "column": ["id", "v"], "connection": [{"jdbcUrl": [url], "table": ["src"]}]}},
        "writer": {"name": "postgresqlwriter", "parameter": {"username": "postgres", "password": "",
            "column": ["id", "v"], "preSql": ["DELETE FROM @table"],
            "connection": [{"jdbcUrl": url, "table": ["dst"]}]}}
    }]}})
    .to_string();
    let path = c.job_file("job.json", &job)?;
    c.ferry(&[
        "task",
        "submit",
        "t",
        "--group",
        "rg",
        "--file",
        &path,
        "--retries",
        "2",
        "--retry-interval",
        "1s",
    ])?
    .ok()?;
    let id = Cluster::instance_id(&c.ferry(&["task", "run", "t"])?.ok()?)?;
    let shown = c.wait_instance(&id, "state: running", Duration::from_secs(30))?;
    let a1 = c.agent_id("a1")?;
    let victim = if shown.contains(&format!("on {a1}")) {
        0
    } else {
        1
    };
    std::thread::sleep(Duration::from_millis(800));
    c.agents[victim].kill9();
    let shown = c.wait_final(&id, Duration::from_secs(90))?;
    assert!(shown.contains("state: success"), "{shown}");
    let attempts: Vec<&str> = shown
        .lines()
        .filter(|l| l.starts_with("attempt "))
        .collect();
    assert_eq!(attempts.len(), 2, "{shown}");
    assert!(attempts[0].contains("failed"), "{shown}");
    assert!(shown.contains("retry 1 of 2"), "{shown}");
    assert_eq!(
        psql(&db.name, "SELECT count(*), count(DISTINCT id) FROM dst")?,
        "40000|40000"
    );
    assert_eq!(
        psql(
            &db.name,
            "SELECT count(*) FROM (SELECT * FROM src EXCEPT SELECT * FROM dst) x"
        )?,
        "0"
    );
    Ok(())
}

/// Ten concurrent runs of one (task, business date) make one instance: the first creates it,
/// the others join it.
#[test]
fn concurrent_runs_of_one_day_make_one_instance() -> Result<()> {
    let (c, _) = Cluster::start_with_agent("rg")?;
    let slow = r#"{"job":{"setting":{"speed":{"channel":1,"record":200}},"content":[{"reader":{"name":"streamreader","parameter":{"column":[{"value":"x"}],"sliceRecordCount":1000}},"writer":{"name":"streamwriter","parameter":{}}}]}}"#;
    let path = c.job_file("slow.json", slow)?;
    c.ferry(&["task", "submit", "t", "--group", "rg", "--file", &path])?
        .ok()?;
    let outs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..10)
            .map(|_| s.spawn(|| c.ferry(&["task", "run", "t", "--bizdate", "2026-11-24"])))
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    let mut ids = Vec::new();
    let mut joined = 0;
    for o in outs {
        let o = o.map_err(|_| anyhow!("a run panicked"))??.ok()?;
        joined += usize::from(o.stdout.contains("joined it"));
        ids.push(Cluster::instance_id(&o)?);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(joined, 9);
    let list = instances(&c, "t")?;
    assert_eq!(list.len(), 1);
    Ok(())
}

/// Every refusal of the scheduling API says why.
#[test]
fn scheduling_refusals_say_why() -> Result<()> {
    let (c, _) = Cluster::start_with_agent("rg")?;
    let job = c.job_file(
        "j.json",
        r#"{"job":{"content":[{"reader":{"name":"streamreader","parameter":{"column":[{"value":"${bizdate}"}],"sliceRecordCount":1}},"writer":{"name":"streamwriter","parameter":{}}}]}}"#,
    )?;
    let submit = |name: &str, extra: &[&str]| {
        let mut args = vec!["task", "submit", name, "--group", "rg", "--file", &job];
        args.extend_from_slice(extra);
        c.ferry(&args)
    };
    submit("a", &["--cron", "0 1 * * *"])?.ok()?;
    submit("b", &["--cron", "0 2 * * *", "--after", "a"])?.ok()?;
    submit("c", &["--cron", "0 3 * * *", "--after", "b"])?.ok()?;
    let cycle = submit("a", &["--cron", "0 1 * * *", "--after", "c"])?;
    assert!(
        cycle.stderr.contains("dependency cycle"),
        "{}",
        cycle.stderr
    );
    for path in ["a -> b", "b -> c", "c -> a"] {
        assert!(cycle.stderr.contains(path), "{}", cycle.stderr);
    }
    let unknown = submit("d", &["--after", "nope"])?;
    assert!(unknown.stderr.contains("nope"), "{}", unknown.stderr);
    let cron = submit("e", &["--cron", "61 * * * *"])?;
    assert_ne!(cron.code, 0);
    assert!(cron.stderr.contains("61"), "{}", cron.stderr);
    let tz = submit("f", &["--cron", "0 1 * * *", "--timezone", "Mars/Olympus"])?;
    assert!(tz.stderr.contains("Mars/Olympus"), "{}", tz.stderr);
    let param = c.job_file("p.json", r#"{"job":{"content":[{"reader":{"name":"streamreader","parameter":{"column":[{"value":"${nope}"}],"sliceRecordCount":1}},"writer":{"name":"streamwriter","parameter":{}}}]}}"#)?;
    let p = c.ferry(&["task", "submit", "g", "--group", "rg", "--file", &param])?;
    assert!(p.stderr.contains("${nope}"), "{}", p.stderr);
    let shell = c.ferry(&[
        "task", "submit", "s", "--type", "shell", "--group", "rg", "--file", &job,
    ])?;
    assert!(
        shell.stderr.contains("does not run shell tasks"),
        "{}",
        shell.stderr
    );
    // A task whose rerun policy is never: its ended instance is not rerun.
    submit("once", &["--rerun", "never"])?.ok()?;
    let run = c.ferry(&["task", "run", "once", "--follow"])?.ok()?;
    let id = Cluster::instance_id(&run)?;
    let again = c.ferry(&["instance", "rerun", &id])?;
    assert!(
        again.stderr.contains("rerun policy: never"),
        "{}",
        again.stderr
    );
    let again = c.ferry(&["task", "run", "once"])?;
    assert!(
        again.stderr.contains("rerun policy: never"),
        "{}",
        again.stderr
    );
    // A running instance is not rerun; an ended one is not killed.
    let kill = c.ferry(&["instance", "kill", &id])?;
    assert!(kill.stderr.contains("already ended"), "{}", kill.stderr);
    Ok(())
}

/// A backfill over a week with downstream, and the DAG of a day.
#[test]
fn backfill_and_dag_from_the_cli() -> Result<()> {
    let (c, _) = Cluster::start_with_agent("rg")?;
    let job = c.job_file(
        "j.json",
        r#"{"job":{"content":[{"reader":{"name":"streamreader","parameter":{"column":[{"value":"${bizdate}"}],"sliceRecordCount":1}},"writer":{"name":"streamwriter","parameter":{}}}]}}"#,
    )?;
    c.ferry(&[
        "task",
        "submit",
        "up",
        "--group",
        "rg",
        "--file",
        &job,
        "--cron",
        "0 1 * * *",
    ])?
    .ok()?;
    c.ferry(&[
        "task",
        "submit",
        "down",
        "--group",
        "rg",
        "--file",
        &job,
        "--cron",
        "0 2 * * *",
        "--after",
        "up",
    ])?
    .ok()?;
    let out = c
        .ferry(&[
            "backfill",
            "up",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-07",
            "--downstream",
            "--parallelism",
            "2",
        ])?
        .ok()?;
    assert!(
        out.stdout.contains("14 instance(s) over 7 day(s)"),
        "{}",
        out.stdout
    );
    // The backfill's instances only: from 23:30 in the tasks' zone the scheduler also generates
    // tomorrow's scheduled ones, as it should (a run of this test across that time failed).
    wait_for(Duration::from_secs(60), "the backfill to finish", || {
        let all: Vec<_> = instances(&c, "down")
            .ok()?
            .into_iter()
            .filter(|i| i["run"].as_str().is_some_and(|r| r.starts_with("backfill")))
            .collect();
        (all.len() == 7 && all.iter().all(|i| i["state"] == "success")).then_some(())
    })?;
    let dag = c.ferry(&["dag", "--bizdate", "2026-11-03"])?.ok()?;
    assert!(dag.stdout.contains("up 01:00 [success]"), "{}", dag.stdout);
    assert!(
        dag.stdout.contains("  down 02:00 [success]"),
        "{}",
        dag.stdout
    );
    let dot = c
        .ferry(&["dag", "--bizdate", "2026-11-03", "--dot"])?
        .ok()?;
    assert!(dot.stdout.starts_with("digraph"), "{}", dot.stdout);
    assert!(dot.stdout.contains("->"), "{}", dot.stdout);
    Ok(())
}
