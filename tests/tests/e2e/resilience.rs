//! Restarts and crashes: state survives the scheduler, agents reconnect, lost attempts are
//! failed visibly instead of hanging or vanishing.

use anyhow::Result;
use ferry_tests::{Cluster, wait_for};
use std::time::Duration;

const SMALL: &str = r#"{"job":{"content":[{"reader":{"name":"streamreader","parameter":{"column":[{"value":"x","type":"string"}],"sliceRecordCount":1000}},"writer":{"name":"streamwriter","parameter":{}}}]}}"#;
const ENDLESS: &str = r#"{"job":{"setting":{"speed":{"channel":1}},"content":[{"reader":{"name":"streamreader","parameter":{"column":[{"value":"x","type":"string"}],"sliceRecordCount":"2000000000"}},"writer":{"name":"streamwriter","parameter":{}}}]}}"#;

#[test]
fn scheduler_crash_keeps_catalog_and_agents_reconnect() -> Result<()> {
    let (mut c, _) = Cluster::start_with_agent("rg")?;
    c.ferry(&["datasource", "add", "gen", "--type", "stream"])?
        .ok()?;
    let job = c.job_file("job.json", SMALL)?;
    c.ferry(&["task", "create", "t", "--group", "rg", "--file", &job])?
        .ok()?;
    c.ferry(&["task", "run", "t", "--follow"])?.ok()?;

    c.crash_and_restart_scheduler()?;
    let ds = c.ferry(&["datasource", "list"])?.ok()?;
    assert!(ds.stdout.contains("gen"), "{}", ds.stdout);
    let tasks = c.ferry(&["task", "list"])?.ok()?;
    assert!(tasks.stdout.contains("t "), "{}", tasks.stdout);
    let instances = c.ferry(&["instance", "list"])?.ok()?;
    assert!(instances.stdout.contains("success"), "{}", instances.stdout);
    let logs = c.ferry(&["task", "logs", "t"])?.ok()?;
    assert!(
        logs.stdout.contains("finished: 1000 records"),
        "{}",
        logs.stdout
    );

    // The same agent (no new registration) comes back and runs new work.
    c.wait_online("rg", 1)?;
    let run = c.ferry(&["task", "run", "t", "--follow"])?.ok()?;
    assert!(run.stdout.contains("written 1,000"), "{}", run.stdout);
    let groups = c.ferry(&["group", "list"])?.ok()?;
    assert_eq!(
        groups
            .stdout
            .lines()
            .filter(|l| l.starts_with("rg "))
            .count(),
        1,
        "{}",
        groups.stdout
    );
    Ok(())
}

#[test]
fn agent_killed_mid_sync_fails_the_attempt_visibly() -> Result<()> {
    let (mut c, token) = Cluster::start_with_agent("rg")?;
    let job = c.job_file("job.json", ENDLESS)?;
    c.ferry(&["task", "create", "t", "--group", "rg", "--file", &job])?
        .ok()?;
    let run = c.ferry(&["task", "run", "t"])?.ok()?;
    let id = Cluster::instance_id(&run)?;
    wait_for(Duration::from_secs(20), "running", || {
        let out = c.ferry(&["instance", "show", &id]).ok()?;
        out.stdout.contains("state: running").then_some(())
    })?;
    c.agents[0].kill9();
    // The agent comes back (same identity), finds the attempt in its spool and reports it lost at
    // once: failed, not left running until the lease.
    c.start_agent("a1", "rg", &token)?;
    let shown = wait_for(Duration::from_secs(30), "failed attempt", || {
        let out = c.ferry(&["instance", "show", &id]).ok()?;
        out.stdout.contains("state: failed").then_some(out.stdout)
    })?;
    assert!(shown.contains("agent process stopped"), "{shown}");
    Ok(())
}

#[test]
fn agent_gone_past_the_lease_fails_the_attempt() -> Result<()> {
    let mut c = Cluster::start_with(&["--attempt-lease-secs", "2"])?;
    let token = c.create_group("rg")?;
    let i = c.start_agent("a1", "rg", &token)?;
    c.wait_online("rg", 1)?;
    let job = c.job_file("job.json", ENDLESS)?;
    c.ferry(&["task", "create", "t", "--group", "rg", "--file", &job])?
        .ok()?;
    let run = c.ferry(&["task", "run", "t"])?.ok()?;
    let id = Cluster::instance_id(&run)?;
    wait_for(Duration::from_secs(20), "running", || {
        let out = c.ferry(&["instance", "show", &id]).ok()?;
        out.stdout.contains("state: running").then_some(())
    })?;
    c.agents[i].kill9();
    let shown = wait_for(Duration::from_secs(30), "lease expiry", || {
        let out = c.ferry(&["instance", "show", &id]).ok()?;
        out.stdout.contains("state: failed").then_some(out.stdout)
    })?;
    assert!(shown.contains("unreachable for more than 2s"), "{shown}");
    let groups = wait_for(Duration::from_secs(15), "agent offline", || {
        let out = c.ferry(&["group", "list"]).ok()?;
        out.stdout.contains("offline").then_some(out.stdout)
    })?;
    assert!(groups.contains("rg "), "{groups}");
    Ok(())
}

#[test]
fn agent_stop_reports_the_killed_attempt() -> Result<()> {
    let (mut c, _) = Cluster::start_with_agent("rg")?;
    let job = c.job_file("job.json", ENDLESS)?;
    c.ferry(&["task", "create", "t", "--group", "rg", "--file", &job])?
        .ok()?;
    let run = c.ferry(&["task", "run", "t"])?.ok()?;
    let id = Cluster::instance_id(&run)?;
    wait_for(Duration::from_secs(20), "running", || {
        let out = c.ferry(&["instance", "show", &id]).ok()?;
        out.stdout.contains("state: running").then_some(())
    })?;
    c.agents[0].stop()?;
    let shown = c.ferry(&["instance", "show", &id])?.ok()?;
    assert!(shown.stdout.contains("state: killed"), "{}", shown.stdout);
    Ok(())
}
