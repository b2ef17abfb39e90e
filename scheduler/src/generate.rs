//! Instances from task versions: nightly generation, "generate now", manual runs and backfills.
//!
//! Planning is pure ([`crate::plan`]); this module turns the store's task versions into plan
//! nodes, plans, and turns planned instances into records the state machine stores with
//! [`Command::AddInstances`]. Identity is (task, cycle time), so generating a day twice — a
//! retry, a restart in the middle, a new leader — never makes a second instance.
//!
//! Each schedule's time zone has its own generation time (default 23:30 on its wall clock): at
//! 23:30 on day D the next day D+1 is generated for every node in that zone. A zone's day that
//! was never generated (the scheduler was down over the generation time, or this is its first
//! start) is generated when the scheduler notices, and its past cycles run then: no day is lost.

use crate::auth::short;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::plan::{DryRun, Generation, NodeSchedule, NodeSpec, NodeType, PlannedInstance};
use crate::state::Store;
use crate::state::command::{Applied, Command};
use crate::state::model::{
    Backfill, Instance, InstanceState, RunKind, Task, TaskKind, TaskVersion, Transition,
};
use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};
use ferry_common::params::{self, ParamContext, ParamDefs};
use ferry_common::schedule::CronSchedule;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tracing::info;

/// Instances per `AddInstances` command: large enough to batch, small enough for one raft entry.
const CHUNK: usize = 2000;

fn node_type(kind: TaskKind) -> NodeType {
    match kind {
        TaskKind::Sync => NodeType::Sync,
        TaskKind::Shell => NodeType::Shell,
        TaskKind::Virtual => NodeType::Virtual,
    }
}

/// A task version as a plan node. The T+1 rule enters as the start date: before the task's
/// first generation day its instances are dry runs (a backfill plans without it).
pub fn node_spec(task: &Task, v: &TaskVersion) -> Result<NodeSpec> {
    let schedule = match &v.schedule {
        Some(s) => NodeSchedule::Cron(CronSchedule::parse(&s.cron, &s.timezone)?),
        None => NodeSchedule::Manual,
    };
    let start_date = match (v.start_date, task.first_day) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    Ok(NodeSpec {
        name: v.task.clone(),
        version: v.version,
        node_type: node_type(v.kind),
        schedule,
        start_date,
        end_date: v.end_date,
        dependencies: v
            .dependencies
            .iter()
            .map(|d| crate::plan::Dependency {
                upstream: d.upstream.clone(),
                previous: d.previous,
            })
            .collect(),
        params: ParamDefs::parse(&v.params)?,
    })
}

/// Every task's latest version as plan nodes, with the versions by name.
pub fn nodes(store: &Store) -> Result<(Vec<NodeSpec>, HashMap<String, TaskVersion>)> {
    nodes_with(store, true)
}

/// [`nodes`], with or without the T+1 rule.
fn nodes_with(
    store: &Store,
    t_plus_one: bool,
) -> Result<(Vec<NodeSpec>, HashMap<String, TaskVersion>)> {
    let mut specs = Vec::new();
    let mut versions = HashMap::new();
    for mut t in store.tasks()? {
        let Some(v) = store.task_version(&t.name, t.version)? else {
            continue;
        };
        if !t_plus_one {
            t.first_day = None;
        }
        specs.push(node_spec(&t, &v)?);
        versions.insert(t.name.clone(), v);
    }
    Ok((specs, versions))
}

fn dry_run_reason(d: DryRun) -> &'static str {
    match d {
        DryRun::NotScheduledDay => "not_scheduled_day",
        DryRun::OutsideDates => "outside_dates",
        DryRun::Expired => crate::state::EXPIRED,
    }
}

/// The record of a planned instance (taken, not copied: a day has 100,000 of them).
pub fn instance_of(p: PlannedInstance, v: &TaskVersion, run: RunKind, reason: String) -> Instance {
    Instance {
        id: p.key,
        task: p.node,
        version: p.version,
        group: v.group.clone(),
        bizdate: ferry_common::params::yyyymmdd(p.bizdate),
        cyctime: ferry_common::params::yyyymmddhhmmss(p.cycle.naive_local()),
        state: InstanceState::WaitingUpstream,
        created_ms: 0,
        finished_ms: 0,
        attempts: Vec::new(),
        run,
        node_type: v.kind,
        due_ms: p.at.timestamp_millis(),
        ready_ms: 0,
        priority: v.priority,
        params: Some(p.params),
        upstream: p.upstream,
        previous: p.previous,
        dry_run: p
            .dry_run
            .map(dry_run_reason)
            .unwrap_or_default()
            .to_string(),
        retries_left: v.retries,
        history: vec![Transition {
            at_ms: 0,
            state: InstanceState::WaitingUpstream,
            reason,
        }],
    }
}

/// Plans `day` for every node and returns the records of the nodes `keep` selects. A node not
/// yet in effect by the T+1 rule gets no instances that day — unless an instance kept here waits
/// for one of them, which then is a dry run so it does not wait forever.
pub fn plan(
    store: &Store,
    day: NaiveDate,
    generation: Generation,
    keep: impl Fn(&NodeSpec) -> bool,
    reason: &str,
) -> Result<Vec<Instance>> {
    plan_with(store, day, generation, keep, reason, true)
}

fn plan_with(
    store: &Store,
    day: NaiveDate,
    generation: Generation,
    keep: impl Fn(&NodeSpec) -> bool,
    reason: &str,
    t_plus_one: bool,
) -> Result<Vec<Instance>> {
    let (specs, versions) = nodes_with(store, t_plus_one)?;
    let plan = crate::plan::plan_day(&specs, day, generation)?;
    let keep: BTreeSet<&str> = specs
        .iter()
        .filter(|n| keep(n))
        .map(|n| n.name.as_str())
        .collect();
    let not_yet: BTreeSet<String> = store
        .tasks()?
        .into_iter()
        .filter(|t| t_plus_one && t.first_day.is_some_and(|f| f > day))
        .map(|t| t.name)
        .collect();
    let chosen: Vec<PlannedInstance> = plan
        .instances
        .into_iter()
        .filter(|p| keep.contains(p.node.as_str()))
        .collect();
    // Only asked about instances of tasks not yet in effect; usually there are none.
    let needed: BTreeSet<String> = if not_yet.is_empty() {
        BTreeSet::new()
    } else {
        chosen
            .iter()
            .filter(|p| !not_yet.contains(&p.node))
            .flat_map(|p| p.upstream.iter().cloned())
            .collect()
    };
    // Sized up front: grown by doubling, the records of a day (tens of MB) were copied into
    // fresh memory again and again, and the kernel zeroing those pages was most of this step.
    let mut records = Vec::with_capacity(chosen.len());
    records.extend(
        chosen
            .into_iter()
            .filter(|p| !not_yet.contains(&p.node) || needed.contains(p.key.as_str()))
            .filter_map(|p| {
                let v = versions.get(&p.node)?;
                Some(instance_of(p, v, RunKind::Scheduled, reason.to_string()))
            }),
    );
    Ok(records)
}

/// Chunks of a generation in flight at once: while the applier applies one, the next is
/// encoded and written to the raft log on another core.
const IN_FLIGHT: usize = 2;

/// Proposes `instances` in chunks, up to [`IN_FLIGHT`] at a time; the last chunk records
/// `generated`, and is proposed only once every other chunk is applied, so the marker never
/// stands for a day with a chunk missing (chunks in flight may commit in either order after a
/// retry, which is harmless: each instance is created once, whichever chunk comes first, and
/// waits for upstream instances created later).
pub async fn store_instances(
    ctx: &Context,
    instances: Vec<Instance>,
    generated: Option<(String, NaiveDate)>,
) -> Result<usize> {
    let n = instances.len();
    let mut chunks: Vec<Vec<Instance>> = Vec::new();
    let mut it = instances.into_iter().peekable();
    while it.peek().is_some() {
        chunks.push(it.by_ref().take(CHUNK).collect());
    }
    let last = chunks.pop().unwrap_or_default();
    let mut flying = std::collections::VecDeque::new();
    for chunk in chunks {
        if flying.len() >= IN_FLIGHT
            && let Some(first) = flying.pop_front()
        {
            landed(ctx, first).await?;
        }
        let store = ctx.store.clone();
        let at_ms = ctx.now_ms();
        flying.push_back(tokio::spawn(async move {
            store
                .propose(Command::AddInstances {
                    instances: chunk,
                    generated: None,
                    at_ms,
                })
                .await
        }));
    }
    while let Some(first) = flying.pop_front() {
        landed(ctx, first).await?;
    }
    let applied = ctx
        .store
        .propose(Command::AddInstances {
            instances: last,
            generated,
            at_ms: ctx.now_ms(),
        })
        .await?;
    ctx.announce(&applied);
    Ok(n)
}

/// Waits for a chunk proposed by [`store_instances`] and announces what it changed.
async fn landed(ctx: &Context, chunk: tokio::task::JoinHandle<Result<Applied>>) -> Result<()> {
    let applied = chunk
        .await
        .map_err(|e| Error::Unavailable(format!("a generation chunk was not proposed: {e}")))??;
    ctx.announce(&applied);
    Ok(())
}

/// Generates every zone's days that are due and not generated yet: today (when it never was)
/// and, from the generation time on, tomorrow.
pub async fn generate_due(ctx: &Context) -> Result<()> {
    let now_ms = ctx.now_ms();
    let Some(now) = DateTime::<Utc>::from_timestamp_millis(now_ms) else {
        return Ok(());
    };
    for zone in ctx.store.schedule_zones()? {
        let tz: chrono_tz::Tz = match zone.parse() {
            Ok(tz) => tz,
            Err(_) => continue,
        };
        let local = now.with_timezone(&tz);
        let today = local.date_naive();
        let mut due = vec![today];
        if local.time() >= ctx.config.generate_at
            && let Some(tomorrow) = today.succ_opt()
        {
            due.push(tomorrow);
        }
        for day in due {
            if ctx.store.generated(&zone, day)? {
                continue;
            }
            let started = std::time::Instant::now();
            // Planning a day is seconds of CPU: on a blocking thread, not on a runtime worker,
            // where the tasks queued behind it (the raft node's ticks and heartbeats among them)
            // would wait for it, and a leader busy planning would look dead to its followers.
            let (store, planned_zone) = (ctx.store.clone(), zone.clone());
            let instances = tokio::task::spawn_blocking(move || {
                plan(
                    &store,
                    day,
                    Generation::FullDay,
                    |n| match &n.schedule {
                        NodeSchedule::Cron(c) => c.timezone().name() == planned_zone,
                        NodeSchedule::Manual => false,
                    },
                    &format!("generated for {day} ({planned_zone})"),
                )
            })
            .await
            .map_err(|e| Error::Unavailable(format!("planning {day} ({zone}) stopped: {e}")))??;
            let plan_ms = started.elapsed().as_millis() as u64;
            let n = store_instances(ctx, instances, Some((zone.clone(), day))).await?;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            info!(%zone, %day, instances = n, plan_ms, elapsed_ms, "instances generated");
        }
    }
    Ok(())
}

/// "Generate now": today's remaining cycles of `task`, in its zone.
pub async fn generate_now(ctx: &Context, task: &str) -> Result<usize> {
    let Some(v) = ctx
        .store
        .task(task)?
        .and_then(|t| ctx.store.task_version(&t.name, t.version).ok().flatten())
    else {
        return Ok(0);
    };
    let Some(schedule) = &v.schedule else {
        return Ok(0);
    };
    let tz: chrono_tz::Tz = schedule
        .timezone
        .parse()
        .map_err(|_| Error::InvalidArgument(format!("unknown time zone {}", schedule.timezone)))?;
    let now = DateTime::<Utc>::from_timestamp_millis(ctx.now_ms()).unwrap_or_default();
    let today = now.with_timezone(&tz).date_naive();
    // "Generate now" is the exception to the T+1 rule, for this task only.
    let instances = plan_with(
        &ctx.store,
        today,
        Generation::RemainingAfter(now),
        |n| n.name == task,
        "generated now at submit",
        false,
    )?;
    store_instances(ctx, instances, None).await
}

/// The first day nightly generation makes instances of for a task submitted now: tomorrow in
/// its zone (the T+1 rule).
pub fn first_day(now_ms: i64, timezone: &str) -> Option<NaiveDate> {
    let tz: chrono_tz::Tz = timezone.parse().ok()?;
    let now = DateTime::<Utc>::from_timestamp_millis(now_ms)?;
    now.with_timezone(&tz).date_naive().succ_opt()
}

/// Midnight after `bizdate` in `timezone`, as an instant (the cycle of a manual or backfill
/// run of a manual task).
fn midnight_after(bizdate: NaiveDate, timezone: &str) -> (chrono::NaiveDateTime, i64) {
    let local = bizdate
        .succ_opt()
        .unwrap_or(bizdate)
        .and_time(NaiveTime::MIN);
    let tz: chrono_tz::Tz = timezone.parse().unwrap_or(chrono_tz::UTC);
    let at = tz
        .from_local_datetime(&local)
        .earliest()
        .map(|t| t.timestamp_millis())
        .unwrap_or_else(|| local.and_utc().timestamp_millis());
    (local, at)
}

/// The instance of a manual run of `v` for `bizdate`: identity (task, business date), no
/// upstream, due now.
pub fn manual_instance(
    v: &TaskVersion,
    bizdate: NaiveDate,
    now_ms: i64,
    who: &str,
) -> Result<Instance> {
    let tz = v
        .schedule
        .as_ref()
        .map(|s| s.timezone.clone())
        .unwrap_or_else(|| "UTC".into());
    let (cycle, _) = midnight_after(bizdate, &tz);
    let ctx = ParamContext::for_bizdate(bizdate);
    let resolved = params::resolve(&ParamDefs::parse(&v.params)?, &ctx)?;
    let day = bizdate.format("%Y%m%d").to_string();
    Ok(Instance {
        id: format!("{}@run-{day}", v.task),
        task: v.task.clone(),
        version: v.version,
        group: v.group.clone(),
        bizdate: day,
        cyctime: cycle.format("%Y%m%d%H%M%S").to_string(),
        state: InstanceState::WaitingUpstream,
        created_ms: now_ms,
        finished_ms: 0,
        attempts: Vec::new(),
        run: RunKind::Manual,
        node_type: v.kind,
        due_ms: now_ms,
        ready_ms: 0,
        priority: v.priority,
        params: Some(resolved),
        upstream: Vec::new(),
        previous: Vec::new(),
        dry_run: String::new(),
        retries_left: v.retries,
        history: vec![Transition {
            at_ms: now_ms,
            state: InstanceState::WaitingUpstream,
            reason: format!("run by {who}"),
        }],
    })
}

/// Names of `task` and every task downstream of it (same-cycle or cross-cycle).
pub fn downstream_tasks(store: &Store, task: &str) -> Result<BTreeSet<String>> {
    let mut down: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in store.latest_versions()? {
        for d in &v.dependencies {
            if d.upstream != v.task {
                down.entry(d.upstream.clone())
                    .or_default()
                    .push(v.task.clone());
            }
        }
    }
    let mut out = BTreeSet::from([task.to_string()]);
    let mut frontier = vec![task.to_string()];
    while let Some(t) = frontier.pop() {
        for d in down.get(&t).into_iter().flatten() {
            if out.insert(d.clone()) {
                frontier.push(d.clone());
            }
        }
    }
    Ok(out)
}

/// What a backfill covers.
pub struct BackfillSpec<'a> {
    pub id: &'a str,
    /// The task asked for.
    pub root: &'a str,
    /// It and, with `downstream`, every task downstream of it.
    pub tasks: &'a BTreeSet<String>,
    /// Business dates, in order.
    pub days: &'a [NaiveDate],
    pub downstream: bool,
    pub parallelism: u32,
    pub now_ms: i64,
    pub who: &'a str,
}

/// Plans a backfill: each day's instances as the schedule would have made them, renamed into
/// the backfill, with edges kept only inside it.
pub fn plan_backfill(store: &Store, spec: &BackfillSpec<'_>) -> Result<(Backfill, Vec<Instance>)> {
    let BackfillSpec {
        id,
        root,
        tasks,
        days,
        downstream,
        parallelism,
        now_ms,
        who,
    } = *spec;
    // A backfill runs past days on purpose: the T+1 rule does not apply, the task's own start
    // and end dates do.
    let (specs, versions) = nodes_with(store, false)?;
    let rename = |key: &str| format!("{id}:{key}");
    let mut instances: Vec<Instance> = Vec::new();
    let mut remaining = Vec::new();
    let mut keys_by_day: Vec<BTreeSet<String>> = Vec::new();
    for (i, bizdate) in days.iter().enumerate() {
        let cycle_day = bizdate.succ_opt().unwrap_or(*bizdate);
        let plan = crate::plan::plan_day(&specs, cycle_day, Generation::FullDay)?;
        let mut today: Vec<Instance> = Vec::new();
        for p in plan
            .instances
            .into_iter()
            .filter(|p| tasks.contains(&p.node))
        {
            let Some(v) = versions.get(&p.node) else {
                continue;
            };
            let key = rename(&p.key);
            let mut inst = instance_of(
                p,
                v,
                RunKind::Backfill {
                    id: id.to_string(),
                    day: i as u32,
                },
                format!("backfill {id} of {} for {bizdate}, by {who}", short(root)),
            );
            inst.id = key;
            today.push(inst);
        }
        // Manual tasks have no cycles to plan: one instance per business date, waiting for
        // the backfill's instances of its upstream tasks on the same date (or the date before,
        // for a previous-cycle dependency), as a scheduled day would.
        let key_of = |t: &str, d: &NaiveDate| format!("{t}@{}", d.format("%Y%m%d"));
        let previous_day = i.checked_sub(1).and_then(|p| days.get(p));
        for t in tasks {
            if let Some(v) = versions.get(t)
                && v.schedule.is_none()
            {
                let mut inst = manual_instance(v, *bizdate, now_ms, who)?;
                for dep in &v.dependencies {
                    if !tasks.contains(&dep.upstream) {
                        continue;
                    }
                    match (dep.previous, previous_day) {
                        (false, _) => inst.upstream.push(key_of(&dep.upstream, bizdate)),
                        (true, Some(before)) => inst.previous.push(key_of(&dep.upstream, before)),
                        (true, None) => {}
                    }
                }
                inst.id = rename(&key_of(t, bizdate));
                inst.run = RunKind::Backfill {
                    id: id.to_string(),
                    day: i as u32,
                };
                inst.due_ms = 0;
                today.push(inst);
            }
        }
        let keys: BTreeSet<String> = today.iter().map(|x| x.id.clone()).collect();
        remaining.push(today.len() as u32);
        keys_by_day.push(keys);
        instances.extend(today);
    }
    // Edges stay inside the backfill: upstream instances outside it count as done.
    let all: BTreeSet<String> = instances.iter().map(|x| x.id.clone()).collect();
    for inst in &mut instances {
        inst.upstream = inst
            .upstream
            .iter()
            .map(|u| rename(u))
            .filter(|u| all.contains(u))
            .collect();
        inst.previous = inst
            .previous
            .iter()
            .map(|u| rename(u))
            .filter(|u| all.contains(u))
            .collect();
    }
    let backfill = Backfill {
        id: id.to_string(),
        task: root.to_string(),
        downstream,
        parallelism: parallelism.max(1),
        days: days
            .iter()
            .map(|d| d.format("%Y%m%d").to_string())
            .collect(),
        remaining,
        created_ms: now_ms,
        user: who.to_string(),
    };
    Ok((backfill, instances))
}

/// The leader's loop over time: generation when due, and a [`Command::Tick`] whenever an
/// instance's time has come or an attempt's timeout passed.
pub async fn tick(ctx: &Context) -> Result<()> {
    generate_due(ctx).await?;
    let now = ctx.now_ms();
    let due = ctx.store.next_due_ms()?.is_some_and(|d| d <= now)
        || ctx.store.next_timeout_ms()?.is_some_and(|d| d <= now);
    if due {
        let applied = ctx.store.propose(Command::Tick { at_ms: now }).await?;
        ctx.announce(&applied);
        if matches!(applied, Applied::Changed { .. }) {
            ctx.hub.dispatch.notify_one();
        }
    }
    Ok(())
}
