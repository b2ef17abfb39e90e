//! Three real schedulers replicating their state with raft, and real agents: what a user sees
//! when schedulers die, restart, or drop off the network. Checked by invariants over what the
//! cluster reports (every instance ends once, one successful attempt each, rows exactly once),
//! never by sleeping and hoping.

use anyhow::{Result, anyhow, bail};
use ferry_tests::ha::Replicated;
use ferry_tests::netns::{self, Lan};
use ferry_tests::{Cluster, wait_for};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const STREAM_JOB: &str = r#"{"job":{"content":[{"reader":{"name":"streamreader","parameter":{"column":[{"value":"x"},{"value":"${bizdate}"}],"sliceRecordCount":20}},"writer":{"name":"streamwriter","parameter":{"print":false}}}]}}"#;

fn instances(c: &Cluster, task: &str) -> Result<Vec<serde_json::Value>> {
    let out = c
        .ferry(&[
            "--output", "json", "instance", "list", "--task", task, "--limit", "100000",
        ])?
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&out.stdout)?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

fn show(c: &Cluster, id: &str) -> Result<serde_json::Value> {
    let out = c
        .ferry(&["--output", "json", "instance", "show", id])?
        .ok()?;
    Ok(serde_json::from_str(&out.stdout)?)
}

/// Runs `task` for `bizdate` and waits for success; returns the instance.
fn run_once(c: &Cluster, task: &str, bizdate: &str) -> Result<serde_json::Value> {
    let out = c
        .ferry(&["task", "run", task, "--bizdate", bizdate])?
        .ok()?;
    let id = Cluster::instance_id(&out)?;
    let text = c.wait_final(&id, Duration::from_secs(60))?;
    if !text.contains("state: success") {
        bail!("{task} {bizdate} did not succeed:\n{text}");
    }
    show(c, &id)
}

fn succeeded_attempts(i: &serde_json::Value) -> usize {
    i["attempts"]
        .as_array()
        .map(|a| a.iter().filter(|x| x["state"] == "succeeded").count())
        .unwrap_or(0)
}

/// Kill -9 and restart each scheduler in turn, then the whole cluster at once: the catalog,
/// the instances and their attempts are intact, and scheduling carries on after each.
#[test]
fn each_scheduler_restarted_in_turn_and_all_at_once_keep_the_state() -> Result<()> {
    let mut r = Replicated::start(3, &[])?;
    let leader = r.leader(Duration::from_secs(30))?;
    let token = r.c.create_group("rg")?;
    r.c.start_agent("a1", "rg", &token)?;
    r.c.wait_online("rg", 1)?;
    let job = r.c.job_file("job.json", STREAM_JOB)?;
    r.c.ferry(&["task", "create", "ping", "--group", "rg", "--file", &job])?
        .ok()?;
    let first = run_once(&r.c, "ping", "2026-11-01")?;

    let mut days = vec![("2026-11-01", first["id"].as_str().unwrap_or("").to_string())];
    let order: Vec<usize> = (0..3).map(|k| (leader + k) % 3).collect();
    for (n, i) in order.into_iter().enumerate() {
        r.kill9(i);
        // The two left keep scheduling while one is down...
        let day = ["2026-11-02", "2026-11-03", "2026-11-04"][n];
        let inst = run_once(&r.c, "ping", day).map_err(|e| anyhow!("{e}\n{}", r.logs()))?;
        days.push((day, inst["id"].as_str().unwrap_or("").to_string()));
        // ...and the restarted one catches up and agrees on the leader.
        r.restart(i)?;
        r.leader(Duration::from_secs(30))?;
        wait_for(
            Duration::from_secs(30),
            "the restarted scheduler to catch up",
            || {
                let s = r.status(i).ok()?;
                let leader = r.leader(Duration::from_secs(5)).ok()?;
                let l = r.status(leader).ok()?;
                (s["applied_index"].as_u64()? >= l["commit_index"].as_u64()?.saturating_sub(5))
                    .then_some(())
            },
        )?;
    }

    // The whole cluster at once.
    for i in 0..3 {
        r.kill9(i);
    }
    for i in 0..3 {
        r.restart(i)?;
    }
    r.leader(Duration::from_secs(30))?;
    r.c.wait_online("rg", 1)?;
    for (day, id) in &days {
        let i = show(&r.c, id)?;
        assert_eq!(i["state"], "success", "{day}: {i}");
        assert_eq!(succeeded_attempts(&i), 1, "{day}: {i}");
    }
    let all = instances(&r.c, "ping")?;
    assert_eq!(all.len(), days.len(), "{all:?}");
    let tasks = r.c.ferry(&["task", "list"])?.ok()?;
    assert!(tasks.stdout.contains("ping"), "{}", tasks.stdout);
    run_once(&r.c, "ping", "2026-11-05").map_err(|e| anyhow!("{e}\n{}", r.logs()))?;
    Ok(())
}
