//! Scheduling benchmark (issues 9 and 10): a day of about 100,000 instances run by real
//! `ferry-scheduler` processes, on one scheduler and on a 3-scheduler raft cluster on loopback,
//! and (with `--airflow`) a small DAG against Apache Airflow 3.
//!
//! `cargo bench -p ferry-scheduler --bench schedule_day -- [--schedulers 1,3] [--nodes 20000]
//! [--layers 30] [--hourly 174] [--virtual-every 10] [--agents 8] [--slots 32]
//! [--probe-rate 500] [--probe-secs 5] [--snapshot-every N] [--cpu-per-scheduler CORES] [--airflow]
//! [--keep]`
//!
//! `--cpu-per-scheduler` gives each scheduler process the same CPU budget (a cgroup quota; needs
//! root and cgroup v1's cpu controller): one scheduler and each of three then have equal "machines",
//! so the 3-vs-1 ratio measures replication, not three processes sharing two cores.
//!
//! The day: the 20,000-node shape of `support/plan_shape.rs` (30 layers, each node after one to
//! three nodes of earlier layers, 174 in 1,000 hourly and the rest daily, one in ten also after
//! its own previous cycle), every tenth node virtual and the others shell tasks run by no-op
//! agents (`support/noop_agent.rs`: they report started and succeeded at once, so the scheduler
//! is what is measured), plus a virtual `gate` node that every first-layer node waits for.
//!
//! How a whole day runs in minutes: the schedulers run with `--clock-offset-secs`. The tasks are
//! submitted on day D (their first day is D+1, the T+1 rule); then the schedulers restart with
//! their clocks 30 s (90 s for three schedulers) before D+1 23:10:00, a day never generated, so the leader generates all of
//! D+1 at once (timed from its log line) and every cycle of it is already due — except the gate,
//! at 23:10:00, which holds the day back until the agents are connected. Then the whole day runs
//! as fast as the dependencies and the scheduler allow. Afterwards the benchmark reads every
//! instance's history from the leader's store: dispatch times, and ready (waiting_resources) to
//! running, both stamped by the scheduler's clock.
//!
//! `--airflow` also runs `scripts/bench-airflow.sh` (10 chains of 100 BashOperator `true` tasks,
//! LocalExecutor, PostgreSQL) and the same DAG as Ferry shell tasks on one real `ferry-agent`
//! (`cargo build --release --bins` first), triggered as a one-day backfill of a virtual start
//! node, from the backfill to the last success.

use anyhow::{Context as _, Result, anyhow, bail};
use chrono::{NaiveDate, TimeZone};
use ferry_common::schedule::{CronSchedule, Period};
use ferry_proto::admin::v1 as apb;
use ferry_scheduler::plan::{Generation, NodeSchedule, NodeSpec, NodeType, plan_day};
use ferry_scheduler::state::Store;
use ferry_scheduler::state::model::{Instance, InstanceState, TaskKind};
use futures_util::StreamExt as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[path = "support/noop_agent.rs"]
mod noop_agent;
#[path = "support/plan_shape.rs"]
mod plan_shape;
#[path = "support/procs.rs"]
mod procs;

use noop_agent::{NoopAgent, Seen};
use procs::{Schedulers, admin};

const ZONE: &str = "Asia/Shanghai";
const GROUP: &str = "bench";

struct Opts {
    schedulers: Vec<usize>,
    nodes: usize,
    layers: usize,
    hourly: usize,
    virtual_every: usize,
    agents: usize,
    slots: u32,
    airflow: bool,
    keep: bool,
    /// Manual runs offered per second after the day, and for how many seconds.
    probe_rate: usize,
    probe_secs: usize,
    /// `--snapshot-every` for the schedulers (their default when not given).
    snapshot_every: Option<usize>,
    /// Each scheduler's CPU budget in cores, if limited.
    cpu_per_scheduler: Option<f64>,
}

impl Opts {
    fn parse() -> Result<Self> {
        let args: Vec<String> = std::env::args().collect();
        let value = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        let num = |name: &str, default: usize| -> Result<usize> {
            value(name)
                .map(|v| v.parse().with_context(|| format!("{name} {v}")))
                .transpose()
                .map(|v| v.unwrap_or(default))
        };
        let schedulers = match value("--schedulers") {
            Some(v) => v
                .split(',')
                .filter(|n| !n.trim().is_empty() && n.trim() != "none")
                .map(|n| {
                    n.trim()
                        .parse()
                        .with_context(|| format!("--schedulers {v}"))
                })
                .collect::<Result<Vec<usize>>>()?,
            None => vec![1, 3],
        };
        Ok(Self {
            schedulers,
            nodes: num("--nodes", 20_000)?,
            layers: num("--layers", 30)?,
            hourly: num("--hourly", 174)?,
            virtual_every: num("--virtual-every", 10)?.max(1),
            agents: num("--agents", 8)?,
            slots: num("--slots", 32)? as u32,
            airflow: args.iter().any(|a| a == "--airflow"),
            keep: args.iter().any(|a| a == "--keep"),
            probe_rate: num("--probe-rate", 500)?,
            probe_secs: num("--probe-secs", 5)?,
            snapshot_every: value("--snapshot-every")
                .map(|v| v.parse().with_context(|| format!("--snapshot-every {v}")))
                .transpose()?,
            cpu_per_scheduler: value("--cpu-per-scheduler")
                .map(|v| {
                    v.parse::<f64>()
                        .ok()
                        .filter(|c| *c > 0.0)
                        .ok_or_else(|| anyhow!("--cpu-per-scheduler {v}: a number of cores > 0"))
                })
                .transpose()?,
        })
    }
}

/// The day's graph: the shape's nodes with kinds, and the gate before the first layer.
fn graph(o: &Opts) -> Result<Vec<NodeSpec>> {
    let mut nodes = plan_shape::synthetic_with(o.nodes, o.layers, o.hourly, 1000)?;
    let per_layer = o.nodes.div_ceil(o.layers);
    for (i, n) in nodes.iter_mut().enumerate() {
        n.node_type = if i % o.virtual_every == o.virtual_every - 1 {
            NodeType::Virtual
        } else {
            NodeType::Shell
        };
        if i < per_layer {
            n.dependencies
                .push(ferry_scheduler::plan::Dependency::same_cycle("gate"));
        }
    }
    let mut gate = NodeSpec::new(
        "gate",
        NodeSchedule::Cron(CronSchedule::parse("10 23 * * *", ZONE)?),
    );
    gate.node_type = NodeType::Virtual;
    nodes.insert(0, gate);
    Ok(nodes)
}

fn cron_of(n: &NodeSpec) -> &'static str {
    match (n.name.as_str(), n.schedule.period()) {
        ("gate", _) => "10 23 * * *",
        (_, Period::Hourly) => "0 * * * *",
        _ => "30 2 * * *",
    }
}

fn task_request(n: &NodeSpec) -> apb::CreateTaskRequest {
    let (kind, script) = match n.node_type {
        NodeType::Virtual => ("virtual", ""),
        _ => ("shell", "true"),
    };
    apb::CreateTaskRequest {
        name: n.name.clone(),
        group: GROUP.into(),
        job_json: script.into(),
        kind: kind.into(),
        cron: cron_of(n).into(),
        timezone: ZONE.into(),
        dependencies: n
            .dependencies
            .iter()
            .map(|d| apb::Dependency {
                upstream: d.upstream.clone(),
                previous: d.previous,
            })
            .collect(),
        ..Default::default()
    }
}

/// Seconds to add to the system clock for the scheduler's to read `local` in the zone.
fn offset_to(local: chrono::NaiveDateTime) -> Result<i64> {
    let tz: chrono_tz::Tz = ZONE.parse().map_err(|_| anyhow!("zone {ZONE}"))?;
    let at = tz
        .from_local_datetime(&local)
        .single()
        .ok_or_else(|| anyhow!("{local} is not one instant in {ZONE}"))?;
    Ok(at.timestamp() - chrono::Utc::now().timestamp())
}

/// Creates the group (shell allowed) and returns its registration token.
async fn group(admin: &mut procs::Admin) -> Result<String> {
    let g = admin
        .create_group(apb::CreateGroupRequest { name: GROUP.into() })
        .await?
        .into_inner();
    admin
        .set_group_options(apb::SetGroupOptionsRequest {
            group: GROUP.into(),
            max_concurrency: -1,
            allow_shell: "on".into(),
        })
        .await?;
    Ok(g.registration_token)
}

/// Submits `nodes` (each after nodes earlier in the list) with `parallel` calls in flight, a
/// dependency level at a time.
async fn submit(admin: &procs::Admin, nodes: &[NodeSpec], parallel: usize) -> Result<()> {
    let mut level: std::collections::HashMap<&str, usize> = Default::default();
    let mut levels: Vec<Vec<&NodeSpec>> = Vec::new();
    for n in nodes {
        let l = n
            .dependencies
            .iter()
            .filter(|d| d.upstream != n.name)
            .filter_map(|d| level.get(d.upstream.as_str()).map(|l| l + 1))
            .max()
            .unwrap_or(0);
        level.insert(&n.name, l);
        if levels.len() <= l {
            levels.resize(l + 1, Vec::new());
        }
        levels[l].push(n);
    }
    for batch in levels {
        let results: Vec<Result<()>> = futures_util::stream::iter(batch)
            .map(|n| async move {
                retrying(|| {
                    let mut admin = admin.clone();
                    async move { admin.create_task(task_request(n)).await }
                })
                .await
                .map(|_| ())
                .with_context(|| format!("submit {}", n.name))
            })
            .buffer_unordered(parallel)
            .collect()
            .await;
        results.into_iter().collect::<Result<()>>()?;
    }
    Ok(())
}

/// Manual shell tasks the latency probe runs (each on many business dates).
const PROBES: usize = 25;

fn probe_request(i: usize) -> apb::CreateTaskRequest {
    apb::CreateTaskRequest {
        name: format!("probe_{i:02}"),
        group: GROUP.into(),
        job_json: "true".into(),
        kind: "shell".into(),
        ..Default::default()
    }
}

/// Offers `rate` manual runs a second for `secs` seconds, each of a probe task on its own
/// business date (counting back from 2026-10-31), without waiting for one call to offer the next.
async fn probe(admin: &procs::Admin, rate: usize, secs: usize) -> Result<usize> {
    let total = rate * secs;
    let base = NaiveDate::from_ymd_opt(2026, 10, 31).ok_or_else(|| anyhow!("date"))?;
    let start = tokio::time::Instant::now();
    let mut calls = Vec::with_capacity(total);
    for k in 0..total {
        tokio::time::sleep_until(start + Duration::from_secs_f64(k as f64 / rate as f64)).await;
        let admin = admin.clone();
        let day = base - chrono::Duration::days((k / PROBES) as i64);
        calls.push(tokio::spawn(async move {
            let request = apb::RunTaskRequest {
                name: format!("probe_{:02}", k % PROBES),
                bizdate: day.format("%Y%m%d").to_string(),
            };
            // The measure is ready -> running, which starts when the run is accepted.
            retrying(|| {
                let (mut admin, request) = (admin.clone(), request.clone());
                async move { admin.run_task(request).await }
            })
            .await
        }));
    }
    for c in calls {
        c.await??;
    }
    Ok(total)
}

/// Calls `f` again while it fails with UNAVAILABLE, for up to 60 s, as a client should: a
/// leader confirming its leadership (its lease lapsed, as it can when schedulers share two busy
/// cores or run on a small CPU budget, and for seconds while they write snapshots after the
/// 20,000 submits) says to retry in a moment.
async fn retrying<T, Fut>(mut f: impl FnMut() -> Fut) -> Result<T, tonic::Status>
where
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match f().await {
            Err(s)
                if s.code() == tonic::Code::Unavailable
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// Registers `count` no-op agents.
async fn agents(url: &str, token: &str, count: usize, slots: u32) -> Result<Vec<NoopAgent>> {
    let mut out = Vec::new();
    for i in 0..count {
        out.push(NoopAgent::register(url, GROUP, token, &format!("noop-{i}"), slots).await?);
    }
    Ok(out)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// When an instance last entered `state`, by its history.
fn entered(i: &Instance, state: InstanceState) -> Option<i64> {
    i.history
        .iter()
        .rev()
        .find(|t| t.state == state)
        .map(|t| t.at_ms)
}

/// What one run of the day measured.
struct DayResult {
    schedulers: usize,
    instances: usize,
    on_agents: usize,
    submit_secs: f64,
    generated: usize,
    plan_ms: u64,
    generation_ms: u64,
    /// Peak RSS (MiB) of each scheduler, the leader first.
    rss_mib: Vec<f64>,
    /// CPU seconds each scheduler used over the day and the probe, the leader first.
    cpu_secs: Vec<f64>,
    dispatch_all: f64,
    dispatch_mid: f64,
    ready_running: [i64; 4],
    makespan_secs: f64,
    probes: usize,
    probe_latency: [i64; 4],
}

/// The day on `count` schedulers.
async fn day(o: &Opts, count: usize) -> Result<DayResult> {
    let tmp = tempfile::Builder::new()
        .prefix("ferry-schedule-day-")
        .tempdir()?;
    let dir = if o.keep {
        tmp.keep()
    } else {
        tmp.path().to_path_buf()
    };
    let nodes = graph(o)?;
    let d = NaiveDate::from_ymd_opt(2026, 11, 24).ok_or_else(|| anyhow!("date"))?;
    let d1 = d.succ_opt().ok_or_else(|| anyhow!("date"))?;
    let plan = plan_day(&nodes, d1, Generation::FullDay)?;
    let instances = plan.instances.len();
    let on_agents = plan
        .instances
        .iter()
        .filter(|p| p.node_type != NodeType::Virtual)
        .count();
    println!(
        "[{count} scheduler(s)] {} nodes, {instances} instances on {d1} ({on_agents} on agents); data in {}",
        nodes.len(),
        dir.display()
    );

    // Day D: submit everything.
    let mut s = Schedulers::new(&dir, count)?;
    if let Some(n) = o.snapshot_every {
        s.extra = vec!["--snapshot-every".into(), n.to_string()];
    }
    s.cpu_budget = o.cpu_per_scheduler;
    s.start(offset_to(d.and_hms_opt(10, 0, 0).unwrap_or_default())?)?;
    let leader = s.leader(Duration::from_secs(60)).await?;
    let url = s.urls[leader].clone();
    let mut adm = admin(&url, &s.token).await?;
    let token = group(&mut adm).await?;
    let noop = agents(&url, &token, o.agents, o.slots).await?;
    let t = Instant::now();
    submit(&adm, &nodes, 32).await?;
    let submit_secs = t.elapsed().as_secs_f64();
    for i in 0..PROBES {
        retrying(|| {
            let mut adm = adm.clone();
            async move { adm.create_task(probe_request(i)).await }
        })
        .await?;
    }
    println!("  submitted {} tasks in {submit_secs:.1} s", nodes.len());
    s.stop()?;

    // Day D+1 shortly before 23:10: generated at once, held by the gate until 23:10:00. A
    // cluster replicates the day to every scheduler, so it gets longer.
    let hold = 30 * count as u32;
    let gate_at = d1.and_hms_opt(23, 10, 0).unwrap_or_default();
    let offset = offset_to(gate_at - chrono::Duration::seconds(hold.into()))?;
    s.start(offset)?;
    let leader = s.leader(Duration::from_secs(60)).await?;
    let url = s.urls[leader].clone();
    let seen = Arc::new(Seen::default());
    let stop = CancellationToken::new();
    let mut sessions = Vec::new();
    for a in &noop {
        sessions.push(a.run(&url, seen.clone(), stop.clone()).await?);
    }
    // The leader generates; leadership may have moved since it was found, so look at every log.
    let marker = "instances generated";
    let logs: Vec<std::path::PathBuf> = (0..count)
        .map(|i| s.proc(i).map(|p| p.log.clone()))
        .collect::<Result<_>>()?;
    let (leader, logged) =
        procs::wait_for(Duration::from_secs(600), "the day's generation", || {
            logs.iter().enumerate().find_map(|(i, log)| {
                let text = std::fs::read_to_string(log).ok()?;
                let day = procs::log_field(&text, marker, "day")?;
                (day == d1.to_string()).then_some((i, text))
            })
        })?;
    let log = logs[leader].clone();
    let field = |k: &str| -> Result<u64> {
        procs::log_field(&logged, marker, k)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no {k} in the generation log line"))
    };
    let (generated, plan_ms, generation_ms) = (
        field("instances")? as usize,
        field("plan_ms")?,
        field("elapsed_ms")?,
    );
    println!("  generated {generated} instances in {generation_ms} ms (planning {plan_ms} ms)");
    let done = procs::wait_for(Duration::from_secs(1200), "every attempt to finish", || {
        let n = seen.finished.load(Ordering::Relaxed) as usize;
        (n >= on_agents).then_some(n)
    });
    if let Err(e) = done {
        bail!(
            "{e}: {} of {on_agents} finished; see {}",
            seen.finished.load(Ordering::Relaxed),
            log.display()
        );
    }
    // The latency probe: manual runs at a steady rate, after the day.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let adm = admin(&url, &s.token).await?;
    let probes = probe(&adm, o.probe_rate, o.probe_secs).await?;
    procs::wait_for(
        Duration::from_secs(300),
        "the probe's runs to finish",
        || {
            let n = seen.finished.load(Ordering::Relaxed) as usize;
            (n >= on_agents + probes).then_some(())
        },
    )?;
    // Let the last reports be applied.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut rss_mib = vec![s.proc(leader)?.peak_rss_kib()? as f64 / 1024.0];
    let mut cpu_secs = vec![s.proc(leader)?.cpu_secs()?];
    for i in (0..count).filter(|i| *i != leader) {
        rss_mib.push(s.proc(i)?.peak_rss_kib()? as f64 / 1024.0);
        cpu_secs.push(s.proc(i)?.cpu_secs()?);
    }
    stop.cancel();
    for h in sessions {
        let _ = h.await;
    }
    s.stop()?;

    // The leader's store: every instance of the day, as it ended.
    let store = Store::open(&s.data_dir(leader))?;
    let bizdate = d.format("%Y%m%d").to_string();
    let all = store.instances_of_bizdate(&bizdate)?;
    if all.len() != instances {
        bail!(
            "the store has {} instances of {bizdate}, the plan {instances}",
            all.len()
        );
    }
    let unfinished: Vec<&Instance> = all
        .iter()
        .filter(|i| i.state != InstanceState::Success)
        .collect();
    if let Some(i) = unfinished.first() {
        bail!(
            "{} instances did not succeed, e.g. {} is {}",
            unfinished.len(),
            i.id,
            i.state.as_str()
        );
    }
    let ran: Vec<&Instance> = all
        .iter()
        .filter(|i| i.node_type != TaskKind::Virtual)
        .collect();
    let mut dispatched: Vec<i64> = ran
        .iter()
        .filter_map(|i| entered(i, InstanceState::Dispatched))
        .collect();
    dispatched.sort_unstable();
    let mut latency: Vec<i64> = ran
        .iter()
        .filter(|i| !i.task.ends_with("/gate"))
        .filter_map(|i| {
            Some(entered(i, InstanceState::Running)? - entered(i, InstanceState::WaitingResources)?)
        })
        .collect();
    latency.sort_unstable();
    if dispatched.len() != on_agents || latency.len() != on_agents {
        bail!(
            "{} dispatch times and {} latencies for {on_agents} instances run on agents",
            dispatched.len(),
            latency.len()
        );
    }
    let mut probe_latency: Vec<i64> = store
        .instances()?
        .iter()
        .filter(|i| i.task.contains("/probe_") || i.task.starts_with("probe_"))
        .filter(|i| i.state == InstanceState::Success)
        .filter_map(|i| {
            Some(entered(i, InstanceState::Running)? - entered(i, InstanceState::WaitingResources)?)
        })
        .collect();
    probe_latency.sort_unstable();
    if probe_latency.len() != probes {
        bail!("{} of {probes} probe runs succeeded", probe_latency.len());
    }
    let span = |a: i64, b: i64| ((b - a).max(1)) as f64 / 1000.0;
    let n = dispatched.len();
    let dispatch_all = (n - 1) as f64 / span(dispatched[0], dispatched[n - 1]);
    let (lo, hi) = (n / 20, n - 1 - n / 20);
    let dispatch_mid = (hi - lo) as f64 / span(dispatched[lo], dispatched[hi]);
    let gate = all
        .iter()
        .find(|i| i.task.ends_with("/gate") || i.task == "gate")
        .and_then(|i| entered(i, InstanceState::Success))
        .ok_or_else(|| anyhow!("no gate instance"))?;
    let last = all.iter().map(|i| i.finished_ms).max().unwrap_or(gate);
    Ok(DayResult {
        schedulers: count,
        instances,
        on_agents,
        submit_secs,
        generated,
        plan_ms,
        generation_ms,
        rss_mib,
        cpu_secs,
        dispatch_all,
        dispatch_mid,
        ready_running: [
            percentile(&latency, 0.5),
            percentile(&latency, 0.99),
            percentile(&latency, 0.999),
            *latency.last().unwrap_or(&0),
        ],
        makespan_secs: span(gate, last),
        probes,
        probe_latency: [
            percentile(&probe_latency, 0.5),
            percentile(&probe_latency, 0.99),
            percentile(&probe_latency, 0.999),
            *probe_latency.last().unwrap_or(&0),
        ],
    })
}

fn report(o: &Opts, results: &[DayResult]) {
    println!();
    println!(
        "nodes: {} ({} layers, {} in 1,000 hourly, every {}th virtual, plus the gate); no-op agents: {} x {} slots; snapshot every {} entries",
        o.nodes,
        o.layers,
        o.hourly,
        o.virtual_every,
        o.agents,
        o.slots,
        o.snapshot_every
            .map(|n| n.to_string())
            .unwrap_or_else(|| "10000 (default)".into())
    );
    if let Some(c) = o.cpu_per_scheduler {
        println!("each scheduler held to {c} cores of CPU time (cgroup quota)");
    }
    println!();
    println!(
        "| schedulers | instances (on agents) | submit 20k tasks s | generation ms (planning) | peak RSS MiB (leader; others) | dispatch/s all | dispatch/s middle 90 % | ready->running p50 / p99 / p99.9 / max ms | gate -> last success s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in results {
        let others: Vec<String> = r.rss_mib[1..].iter().map(|m| format!("{m:.0}")).collect();
        println!(
            "| {} | {} ({}) | {:.1} | {} ({}) | {:.0}{} | {:.0} | {:.0} | {} / {} / {} / {} | {:.1} |",
            r.schedulers,
            r.instances,
            r.on_agents,
            r.submit_secs,
            r.generation_ms,
            r.plan_ms,
            r.rss_mib[0],
            if others.is_empty() {
                String::new()
            } else {
                format!("; {}", others.join(", "))
            },
            r.dispatch_all,
            r.dispatch_mid,
            r.ready_running[0],
            r.ready_running[1],
            r.ready_running[2],
            r.ready_running[3],
            r.makespan_secs,
        );
        if r.generated != r.instances {
            println!(
                "(generation logged {} instances, the plan has {})",
                r.generated, r.instances
            );
        }
    }
    println!();
    println!(
        "| schedulers | CPU s over the day and probe (leader; others) | leader CPU ms per instance |"
    );
    println!("|---|---|---|");
    for r in results {
        let all: Vec<String> = r.cpu_secs.iter().map(|c| format!("{c:.1}")).collect();
        let per = r.cpu_secs.first().copied().unwrap_or(0.0) * 1000.0
            / (r.instances + r.probes).max(1) as f64;
        println!("| {} | {} | {per:.3} |", r.schedulers, all.join("; "));
    }
    println!();
    println!(
        "latency probe: {} manual runs a second for {} s after the day (each ready at once: no upstream, due now)",
        o.probe_rate, o.probe_secs
    );
    println!();
    println!("| schedulers | runs | ready->running p50 / p99 / p99.9 / max ms |");
    println!("|---|---|---|");
    for r in results {
        println!(
            "| {} | {} | {} / {} / {} / {} |",
            r.schedulers,
            r.probes,
            r.probe_latency[0],
            r.probe_latency[1],
            r.probe_latency[2],
            r.probe_latency[3]
        );
    }
    println!();
    println!("| check | measured | target |");
    println!("|---|---|---|");
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    for r in results {
        let tag = format!("{} scheduler(s)", r.schedulers);
        let g = r.generation_ms as f64 / 1000.0;
        println!(
            "| generation, {tag} | {g:.2} s | < 5 s ({}) |",
            met(g < 5.0)
        );
        let rss = r.rss_mib.iter().cloned().fold(0.0, f64::max);
        println!(
            "| scheduler peak RSS, {tag} | {rss:.0} MiB | < 1024 MiB ({}) |",
            met(rss < 1024.0)
        );
        println!(
            "| dispatch sustained (middle 90 %), {tag} | {:.0}/s | >= 2,000/s ({}) |",
            r.dispatch_mid,
            met(r.dispatch_mid >= 2000.0)
        );
        println!(
            "| ready -> running p99 in the day's burst, {tag} | {} ms | < 100 ms ({}) |",
            r.ready_running[1],
            met(r.ready_running[1] < 100)
        );
        println!(
            "| ready -> running p99 at {}/s offered, {tag} | {} ms | < 100 ms ({}) |",
            o.probe_rate,
            r.probe_latency[1],
            met(r.probe_latency[1] < 100)
        );
    }
    if let (Some(one), Some(three)) = (
        results.iter().find(|r| r.schedulers == 1),
        results.iter().find(|r| r.schedulers == 3),
    ) {
        let ratio = three.dispatch_mid / one.dispatch_mid;
        println!(
            "| 3 schedulers vs 1, dispatch | {ratio:.2}x | >= 0.70x ({}) |",
            met(ratio >= 0.7)
        );
    }
}

fn main() -> Result<()> {
    let o = Opts::parse()?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut results = Vec::new();
        for &n in &o.schedulers {
            let r = day(&o, n).await?;
            // Each run's figures as soon as they are known; the whole table at the end.
            report(&o, std::slice::from_ref(&r));
            results.push(r);
        }
        if !results.is_empty() {
            report(&o, &results);
        }
        if o.airflow {
            airflow::compare(o.keep).await?;
        }
        Ok(())
    })
}

#[path = "support/airflow.rs"]
mod airflow;
