//! Failover time of a real three-scheduler cluster: from `kill -9` of the leader to the moment
//! a survivor accepts a run, and to the new leader's first dispatch of work asked
//! for right after the kill (a CLI that keeps retrying `ferry task run`, as a user's script
//! would, and follows the new leader by itself). Default raft timeouts (100 ms ticks, an
//! election after 10-20 silent ticks). Prints a table; asserts nothing.
//!
//! `cargo build --bins && cargo bench -p ferry-tests --bench failover --profile dev -- --rounds 5`
//! (the dev profile uses the debug binaries the tests use; with `--release` build the release
//! binaries first: `cargo build --release --bins`).

use anyhow::{Result, anyhow};
use ferry_tests::ha::Replicated;
use ferry_tests::{Cluster, wait_for};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const JOB: &str = r#"{"job":{"content":[{"reader":{"name":"streamreader","parameter":{"column":[{"value":"x"}],"sliceRecordCount":1}},"writer":{"name":"streamwriter","parameter":{"print":false}}}]}}"#;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// When the instance's attempt was dispatched (scheduler time, ms since the epoch).
fn dispatched_at(c: &Cluster, id: &str) -> Result<i64> {
    let out = c
        .ferry(&["--output", "json", "instance", "show", id])?
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&out.stdout)?;
    v["history"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["state"] == "dispatched")
        .and_then(|t| t["at_ms"].as_i64())
        .ok_or_else(|| anyhow!("instance {id} was never dispatched: {v}"))
}

fn main() -> Result<()> {
    let rounds = arg("--rounds", 5);
    let mut r = Replicated::start(3, &[])?;
    r.leader(Duration::from_secs(30))?;
    let token = r.c.create_group("rg")?;
    r.c.start_agent("a1", "rg", &token)?;
    r.c.wait_online("rg", 1)?;
    let path = r.c.job_file("ping.json", JOB)?;
    r.c.ferry(&["task", "create", "ping", "--group", "rg", "--file", &path])?
        .ok()?;
    let out =
        r.c.ferry(&["task", "run", "ping", "--bizdate", "2026-01-01"])?
            .ok()?;
    r.c.wait_final(&Cluster::instance_id(&out)?, Duration::from_secs(60))?;

    println!("| round | killed | new leader | kill -> run accepted | kill -> first dispatch |");
    println!("|---|---|---|---|---|");
    let mut accepted_all = Vec::new();
    let mut dispatched = Vec::new();
    for round in 1..=rounds {
        let old = r.leader(Duration::from_secs(30))?;
        let killed_at = now_ms();
        r.kill9(old);
        // Work asked for at once: the CLI retries until a scheduler takes it.
        let bizdate = format!("2026-02-{round:02}");
        let run = wait_for(
            Duration::from_secs(30),
            "a scheduler to take the run",
            || {
                r.c.ferry(&["task", "run", "ping", "--bizdate", &bizdate])
                    .ok()
                    .and_then(|o| o.ok().ok())
            },
        )?;
        let accepted = now_ms() - killed_at;
        let id = Cluster::instance_id(&run)?;
        let new = r.leader(Duration::from_secs(30))?;
        r.c.wait_final(&id, Duration::from_secs(60))?;
        let first = dispatched_at(&r.c, &id)? - killed_at;
        println!(
            "| {round} | {} | {} | {accepted} ms | {first} ms |",
            old + 1,
            new + 1
        );
        accepted_all.push(accepted);
        dispatched.push(first);
        r.restart(old)?;
        r.leader(Duration::from_secs(30))?;
    }
    dispatched.sort_unstable();
    accepted_all.sort_unstable();
    println!(
        "\nmedian kill -> first dispatch: {} ms (max {} ms); median kill -> run accepted: {} ms",
        dispatched[dispatched.len() / 2],
        dispatched.last().copied().unwrap_or(0),
        accepted_all[accepted_all.len() / 2]
    );
    Ok(())
}
