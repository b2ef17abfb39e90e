//! Alerts through the real binaries: a rule added with the CLI, a task that fails, the webhook
//! posted by the scheduler, and the delivery on record; the webhook's token shown nowhere.

use anyhow::Result;
use ferry_tests::Cluster;
use ferry_tests::webhook::Receiver;
use std::time::{Duration, Instant};

#[test]
fn a_failed_run_is_posted_to_the_webhook() -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let (hook, url) = rt
        .block_on(Receiver::start(&[]))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (c, _) = Cluster::start_with_agent("rg")?;
    let added = c
        .ferry(&[
            "alert",
            "add",
            "oncall",
            "--webhook",
            &url,
            "--format",
            "slack",
            "--on",
            "failed",
        ])?
        .ok()?;
    assert!(
        added.stdout.contains("http://127.0.0.1"),
        "{}",
        added.stdout
    );
    let job = r#"{"job": {"content": [{
        "reader": {"name": "postgresqlreader", "parameter": {"username": "postgres", "password": "",
                   "column": ["*"], "connection": [{"jdbcUrl": ["jdbc:postgresql://127.0.0.1:5432/test"],
                   "table": ["ferry_no_such_table_for_alerts"]}]}},
        "writer": {"name": "streamwriter", "parameter": {}}}]}}"#;
    let path = c.job_file("fails.json", job)?;
    c.ferry(&["task", "create", "fails", "--group", "rg", "--file", &path])?
        .ok()?;
    let run = c.ferry(&["task", "run", "fails", "--follow"])?;
    assert_ne!(run.code, 0, "{}", run.stdout);

    let deadline = Instant::now() + Duration::from_secs(30);
    while hook.count() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let text = bodies[0]["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("default/fails failed") && text.contains("ferry_no_such_table_for_alerts"),
        "{text}"
    );

    // The delivery is on record (the record is written right after the POST).
    let mut shown = String::new();
    // Delivered and settled: the event has left the outbox, so nothing can send it again.
    while Instant::now() < deadline {
        shown = c.ferry(&["alert", "deliveries"])?.ok()?.stdout;
        if shown.contains("delivered") && !shown.contains("waiting to be delivered") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        shown.contains("oncall") && shown.contains("delivered") && shown.contains("HTTP 200"),
        "{shown}"
    );
    let listed = c.ferry(&["alert", "list"])?.ok()?.stdout;
    let audit = c.ferry(&["audit"])?.ok()?.stdout;
    for out in [&added.stdout, &shown, &listed, &audit] {
        assert!(!out.contains("SECRET-TOKEN-123"), "token shown: {out}");
    }
    assert!(!shown.contains("waiting to be delivered"), "{shown}");
    assert_eq!(hook.count(), 1, "sent more than once");
    c.ferry(&["alert", "remove", "oncall"])?.ok()?;
    assert!(!c.ferry(&["alert", "list"])?.ok()?.stdout.contains("oncall"));
    Ok(())
}
