//! Two-group syncs through the scheduler's relay against the single-agent path, side by side in
//! one run: the same PostgreSQL table copied by one agent (reader and writer in one process),
//! and by a reader agent and a writer agent of two groups whose rows cross the relay (two gRPC
//! streams joined by the scheduler). Real scheduler and agent processes on this machine, the
//! real PostgreSQL on 127.0.0.1 (`scripts/services.sh`).
//!
//! ```text
//! cargo build --release --bins
//! cargo bench -p ferry-tests --bench relay -- [--rows 1000000] [--channels 1,4] [--repeat 3]
//! ```
//! (With `--profile dev`, build the debug binaries instead; the test binaries sit next to them.)
//!
//! Two variants per channel count: identical tables (PostgreSQL's binary COPY tuples pass
//! through, on one agent and across the relay alike) and a target whose `note` column is
//! `varchar` (rows are decoded into the column model and, across the relay, encoded into
//! Ferry's frames). Rounds alternate single and relay. Every run must leave the target with the
//! source's row count and checksum. Reported: median wall time of `ferry task run --follow`,
//! rows/s, the relay/single ratio, CPU seconds per run of the processes involved (agents and
//! scheduler, from `/proc/<pid>/stat`), and each process's peak RSS (VmHWM) over the whole run.
//! Prints Markdown for `docs/benchmarks.md`; asserts nothing about time.

use anyhow::{Context, Result, anyhow, bail};
use ferry_tests::Cluster;
use ferry_tests::db::ScratchDb;
use std::time::Instant;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// Clock ticks per second of `/proc/<pid>/stat` (Linux's USER_HZ).
const TICKS: f64 = 100.0;

/// CPU seconds (user + system) of process `pid` so far.
fn cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command may hold spaces; fields after its closing parenthesis are fixed.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(ticks as f64 / TICKS)
}

/// Peak resident set of process `pid`, MiB.
fn peak_rss_mib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb / 1024)
        .ok_or_else(|| anyhow!("no VmHWM for process {pid}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

const DIGEST: &str = "SELECT count(*) || ' ' || coalesce(sum(('x' || substr(md5(o::text), 1, 8))::bit(32)::bigint), 0) FROM ";

fn job(dst: &str, channels: u32) -> String {
    serde_json::json!({"job": {
        "setting": {"speed": {"channel": channels}, "errorLimit": {"record": 0}},
        "content": [{
            "reader": {"name": "postgresqlreader", "parameter": {
                "datasource": "src", "splitPk": "id",
                "column": ["id", "customer_id", "sku", "qty", "price", "discount", "status", "note", "created_at", "updated_at"],
                "connection": [{"table": ["src"]}]}},
            "writer": {"name": "postgresqlwriter", "parameter": {
                "datasource": "dst",
                "column": ["id", "customer_id", "sku", "qty", "price", "discount", "status", "note", "created_at", "updated_at"],
                "preSql": ["TRUNCATE @table"],
                "connection": [{"table": dst}]}}
        }]}})
    .to_string()
}

struct Run {
    secs: f64,
    cpu: f64,
}

fn main() -> Result<()> {
    let rows: u64 = arg("--rows")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let repeat: usize = arg("--repeat").and_then(|v| v.parse().ok()).unwrap_or(3);
    let channels: Vec<u32> = arg("--channels")
        .unwrap_or_else(|| "1,4".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let db = ScratchDb::postgres("ferry_relay_bench")?;
    let cols = "(id bigint PRIMARY KEY, customer_id integer, sku varchar(32), qty integer, \
        price numeric(12,2), discount double precision, status varchar(16), note text, \
        created_at timestamp, updated_at timestamp)";
    db.psql(&format!(
        "CREATE TABLE src {cols};
         INSERT INTO src SELECT g, g % 5000, 'SKU-' || (g % 977), g % 13, (g % 100000) / 100.0,
                (g % 7) / 10.0, CASE g % 3 WHEN 0 THEN 'new' WHEN 1 THEN 'paid' ELSE 'shipped' END,
                CASE WHEN g % 17 = 0 THEN NULL ELSE 'order ' || g || ' – ünïcode note' END,
                timestamp '2026-01-01' + g * interval '1 second', timestamp '2026-06-01' + g * interval '1 second'
           FROM generate_series(1, {rows}) g;
         CREATE TABLE dst_same {cols};
         CREATE TABLE dst_model {};
         ANALYZE src;",
        cols.replace("note text", "note varchar(200)")
    ))?;
    let source = db.psql(&format!("{DIGEST} src o"))?;

    let mut c = Cluster::start()?;
    let one = c.create_group("one")?;
    let reader = c.create_group("east")?;
    let writer = c.create_group("west")?;
    c.start_agent("single", "one", &one)?;
    c.start_agent("reader", "east", &reader)?;
    c.start_agent("writer", "west", &writer)?;
    for g in ["one", "east", "west"] {
        c.wait_online(g, 1)?;
    }
    let pids = |c: &Cluster| -> Result<(u32, u32, u32, u32)> {
        let s = c.scheduler.as_ref().context("no scheduler")?.child.id();
        Ok((
            s,
            c.agents[0].child.id(),
            c.agents[1].child.id(),
            c.agents[2].child.id(),
        ))
    };
    let (sched, single, rleg, wleg) = pids(&c)?;
    for name in ["src", "dst"] {
        c.ferry(&[
            "datasource",
            "add",
            name,
            "--type",
            "postgresql",
            "--host",
            "127.0.0.1",
            "--port",
            "5432",
            "--database",
            &db.name,
            "--user",
            "postgres",
        ])?
        .ok()?;
    }
    let mut table = Vec::new();
    for &ch in &channels {
        for (variant, dst) in [("COPY tuples", "dst_same"), ("column model", "dst_model")] {
            let path = c.job_file(&format!("{dst}-{ch}.json"), &job(dst, ch))?;
            let single_task = format!("single-{dst}-{ch}");
            let relay_task = format!("relay-{dst}-{ch}");
            c.ferry(&[
                "task",
                "create",
                &single_task,
                "--group",
                "one",
                "--file",
                &path,
            ])?
            .ok()?;
            c.ferry(&[
                "task",
                "create",
                &relay_task,
                "--group",
                "east",
                "--writer-group",
                "west",
                "--file",
                &path,
            ])?
            .ok()?;
            let mut runs: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
            for round in 0..repeat {
                for (i, task) in [&single_task, &relay_task].into_iter().enumerate() {
                    let procs: Vec<u32> = if i == 0 {
                        vec![sched, single]
                    } else {
                        vec![sched, rleg, wleg]
                    };
                    let cpu0: f64 = procs.iter().map(|p| cpu_secs(*p).unwrap_or(0.0)).sum();
                    let t = Instant::now();
                    let out = c.ferry(&["task", "run", task, "--follow"])?;
                    let secs = t.elapsed().as_secs_f64();
                    let cpu1: f64 = procs.iter().map(|p| cpu_secs(*p).unwrap_or(0.0)).sum();
                    if !out.stdout.contains("finished: success") {
                        bail!("{task} round {round} failed:\n{}{}", out.stdout, out.stderr);
                    }
                    let got = db.psql(&format!("{DIGEST} {dst} o"))?;
                    if got != source {
                        bail!("{task} round {round}: target {got} != source {source}");
                    }
                    eprintln!("{task} round {round}: {secs:.2}s, {:.2} CPU s", cpu1 - cpu0);
                    runs[i].push(Run {
                        secs,
                        cpu: cpu1 - cpu0,
                    });
                }
            }
            let [s, r] = runs;
            let ss = median(s.iter().map(|r| r.secs).collect());
            let rs = median(r.iter().map(|r| r.secs).collect());
            let sc = median(s.iter().map(|r| r.cpu).collect());
            let rc = median(r.iter().map(|r| r.cpu).collect());
            table.push(format!(
                "| {variant} | {ch} | {ss:.2} | {:.0} | {rs:.2} | {:.0} | {:.2}x | {sc:.2} | {rc:.2} |",
                rows as f64 / ss,
                rows as f64 / rs,
                ss / rs
            ));
        }
    }
    println!(
        "rows: {rows}, table: 10 columns (bigint, int, varchar, int, numeric(12,2), double, varchar, text, 2 timestamps); median of {repeat} rounds, alternating single and relay\n"
    );
    println!(
        "| rows cross as | channels | single-agent s | single rows/s | relay s | relay rows/s | relay / single | CPU s single (agent + scheduler) | CPU s relay (2 agents + scheduler) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for line in table {
        println!("{line}");
    }
    println!(
        "\npeak RSS over the whole run (MiB): single agent {}, reader-leg agent {}, writer-leg agent {}, scheduler {}",
        peak_rss_mib(single)?,
        peak_rss_mib(rleg)?,
        peak_rss_mib(wleg)?,
        peak_rss_mib(sched)?
    );
    c.agents.clear();
    Ok(())
}
