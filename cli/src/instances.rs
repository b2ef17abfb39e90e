//! `ferry instance …`, `ferry dag` and `ferry backfill`: the instances of each day, their states
//! and logs, and the operator's actions on them.

use crate::client::{Admin, status};
use crate::follow::{follow, print_summary};
use crate::format::{Output, table, thousands, time};
use crate::json;
use clap::Subcommand;
use ferry_proto::admin::v1 as pb;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Subcommand, Debug)]
pub enum InstanceCmd {
    /// List instances (of a business date, a task, a state): the newest `--limit` by cycle
    /// time, newest last; `--offset` pages back.
    List {
        /// Exact task name.
        #[arg(long)]
        task: Option<String>,
        /// Tasks whose name contains this (case ignored).
        #[arg(long)]
        search: Option<String>,
        /// yyyymmdd or yyyy-mm-dd.
        #[arg(long)]
        bizdate: Option<String>,
        /// waiting_upstream, waiting_time, waiting_resources, dispatched, running, success,
        /// failed, killed, frozen, dry_run.
        #[arg(long)]
        state: Option<String>,
        /// Resource group.
        #[arg(long)]
        group: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// Skip this many of the newest first (the next page: --offset <limit>).
        #[arg(long, default_value_t = 0)]
        offset: u32,
    },
    /// Show an instance: state, why it waits, parameters, attempts, every transition.
    Show {
        id: String,
    },
    /// Print an instance's log (every attempt, or one).
    Logs {
        id: String,
        #[arg(long)]
        attempt: Option<String>,
    },
    /// Follow a running instance.
    Follow {
        id: String,
    },
    /// Run an ended instance again, by its task's rerun policy.
    Rerun {
        id: String,
        /// And every instance downstream of it.
        #[arg(long)]
        downstream: bool,
    },
    /// Stop an instance: its attempt is killed on the agent.
    Kill {
        id: String,
    },
    /// Hold a waiting instance; its downstream waits too.
    Freeze {
        id: String,
    },
    Unfreeze {
        id: String,
    },
    /// Mark an instance successful without running it; its downstream goes on.
    MarkSuccess {
        id: String,
    },
}

pub fn print_logs(r: &pb::GetLogsResponse) {
    println!("log of instance {}", r.instance_id);
    let mut attempt = "";
    for l in &r.lines {
        if l.attempt_id != attempt {
            attempt = &l.attempt_id;
            println!("--- attempt {attempt}");
        }
        println!("{} [{}] {}", time(l.ts_ms), l.level, l.message);
    }
}

/// `success`, or `success (12 dirty)` when the last attempt skipped dirty records.
fn state_with_dirty(i: &pb::InstanceInfo) -> String {
    crate::format::instance_state(&i.state, i.dirty_records)
}

fn show(i: &pb::InstanceInfo) {
    println!(
        "instance {} of task {} v{} ({}, {}) bizdate {} cycle {}",
        i.id, i.task, i.version, i.kind, i.run, i.bizdate, i.cyctime
    );
    println!("state: {}", state_with_dirty(i));
    if !i.waiting_reason.is_empty() {
        println!("waiting: {}", i.waiting_reason);
    }
    if !i.dry_run.is_empty() {
        println!("dry run: {}", i.dry_run);
    }
    if !i.upstream.is_empty() {
        println!("upstream: {}", i.upstream.join(", "));
    }
    if !i.previous.is_empty() {
        println!("previous cycle: {}", i.previous.join(", "));
    }
    if !i.params.is_empty() {
        let p: Vec<String> = i.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("params: {}", p.join(" "));
    }
    println!("priority {}, retries left {}", i.priority, i.retries_left);
    for a in &i.attempts {
        println!(
            "attempt {} on {}: {} (started {}, finished {})",
            a.id,
            if a.agent_id.is_empty() {
                "-"
            } else {
                &a.agent_id
            },
            a.state,
            time(a.started_ms),
            time(a.finished_ms)
        );
        if !a.reader_agent_id.is_empty() {
            println!(
                "  two groups: reader leg on {}, writer leg on {}",
                a.reader_agent_id, a.agent_id
            );
        }
        if !a.error.is_empty() {
            println!("  error: {}", a.error);
        }
        if !a.late_report.is_empty() {
            println!("  late report: {}", a.late_report);
        }
    }
    println!("history:");
    for t in &i.history {
        println!("  {} {:<18} {}", time(t.at_ms), t.state, t.reason);
    }
    if let Some(a) = i.attempts.last()
        && a.stats.is_some()
    {
        print_summary(i);
    }
}

pub async fn run(admin: &mut Admin, out: Output, cmd: InstanceCmd) -> anyhow::Result<i32> {
    match cmd {
        InstanceCmd::List {
            task,
            search,
            bizdate,
            state,
            group,
            limit,
            offset,
        } => {
            let mut r = admin
                .list_instances(pb::ListInstancesRequest {
                    task: task.unwrap_or_default(),
                    search: search.unwrap_or_default(),
                    bizdate: bizdate.unwrap_or_default(),
                    state: state.unwrap_or_default(),
                    group: group.unwrap_or_default(),
                    limit,
                    offset,
                    descending: true,
                    ..Default::default()
                })
                .await
                .map_err(status)?
                .into_inner();
            // Asked newest first, so a limit keeps the newest; shown newest last.
            r.instances.reverse();
            if out == Output::Json {
                println!("{}", json::list(r.instances.iter().map(json::instance)));
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = r
                .instances
                .iter()
                .map(|i| {
                    let written = i
                        .attempts
                        .last()
                        .and_then(|a| a.stats.as_ref())
                        .map(|s| thousands(s.records_written))
                        .unwrap_or_default();
                    vec![
                        i.id.clone(),
                        i.task.clone(),
                        i.bizdate.clone(),
                        i.cyctime.clone(),
                        state_with_dirty(i),
                        i.attempts.len().to_string(),
                        written,
                        i.run.clone(),
                    ]
                })
                .collect();
            table(
                &[
                    "INSTANCE", "TASK", "BIZDATE", "CYCLE", "STATE", "ATTEMPTS", "WRITTEN", "RUN",
                ],
                &rows,
            );
            let shown = r.instances.len() as u32;
            if offset > 0 || shown < r.total {
                println!(
                    "{shown} of {} instance(s){}",
                    r.total,
                    if offset + shown < r.total {
                        format!("; older ones: --offset {}", offset + shown)
                    } else {
                        String::new()
                    }
                );
            }
        }
        InstanceCmd::Show { id } => {
            let i = admin
                .get_instance(pb::GetInstanceRequest { id })
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                println!("{}", json::instance(&i));
            } else {
                show(&i);
            }
        }
        InstanceCmd::Logs { id, attempt } => {
            let r = admin
                .get_logs(pb::GetLogsRequest {
                    instance: id,
                    attempt: attempt.unwrap_or_default(),
                    ..Default::default()
                })
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                println!("{}", json::logs(&r));
            } else {
                print_logs(&r);
            }
        }
        InstanceCmd::Follow { id } => {
            let done = follow(admin, &id).await?;
            return Ok(if done.state == "success" { 0 } else { 1 });
        }
        InstanceCmd::Rerun { id, downstream } => {
            let r = admin
                .rerun_instance(pb::RerunInstanceRequest { id, downstream })
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "rerunning {} instance(s): {}",
                r.ids.len(),
                r.ids.join(", ")
            );
        }
        InstanceCmd::Kill { id } => {
            let i = admin
                .kill_instance(pb::InstanceActionRequest { id })
                .await
                .map_err(status)?
                .into_inner();
            println!("instance {} is {}", i.id, i.state);
        }
        InstanceCmd::Freeze { id } => {
            let i = admin
                .freeze_instance(pb::FreezeInstanceRequest { id, freeze: true })
                .await
                .map_err(status)?
                .into_inner();
            println!("instance {} is {}", i.id, i.state);
        }
        InstanceCmd::Unfreeze { id } => {
            let i = admin
                .freeze_instance(pb::FreezeInstanceRequest { id, freeze: false })
                .await
                .map_err(status)?
                .into_inner();
            println!("instance {} is {}", i.id, i.state);
        }
        InstanceCmd::MarkSuccess { id } => {
            let i = admin
                .mark_success(pb::InstanceActionRequest { id })
                .await
                .map_err(status)?
                .into_inner();
            println!("instance {} is {}", i.id, i.state);
        }
    }
    Ok(0)
}

pub async fn backfill(
    admin: &mut Admin,
    task: String,
    from: String,
    to: String,
    downstream: bool,
    parallelism: u32,
) -> anyhow::Result<i32> {
    let r = admin
        .backfill(pb::BackfillRequest {
            task,
            from,
            to,
            downstream,
            parallelism,
        })
        .await
        .map_err(status)?
        .into_inner();
    println!(
        "backfill {}: {} instance(s) over {} day(s) ({} .. {}), {} day(s) at a time",
        r.id,
        r.instances,
        r.days.len(),
        r.days.first().cloned().unwrap_or_default(),
        r.days.last().cloned().unwrap_or_default(),
        parallelism.max(1)
    );
    Ok(0)
}

/// A short label of an instance for the tree and the graph.
fn label(i: &pb::InstanceInfo) -> String {
    let cycle = i.cyctime.get(8..12).unwrap_or("");
    format!(
        "{} {}:{} [{}]",
        i.task,
        &cycle[..cycle.len().min(2)],
        cycle.get(2..).unwrap_or(""),
        i.state
    )
}

/// What `ferry dag` draws.
#[derive(clap::Args, Debug)]
pub struct DagArgs {
    /// yyyymmdd or yyyy-mm-dd; required unless --instance is given.
    #[arg(long)]
    bizdate: Option<String>,
    /// Around this task's instances of the business date.
    #[arg(long)]
    task: Option<String>,
    /// Around this instance.
    #[arg(long)]
    instance: Option<String>,
    /// Hops upstream (default 2, at most 10).
    #[arg(long, default_value_t = 0)]
    up: u32,
    /// Hops downstream (default 2, at most 10).
    #[arg(long, default_value_t = 0)]
    down: u32,
    #[arg(long)]
    dot: bool,
}

pub async fn dag(admin: &mut Admin, out: Output, args: DagArgs) -> anyhow::Result<i32> {
    let dot = args.dot;
    let r = admin
        .get_dag(pb::GetDagRequest {
            bizdate: args.bizdate.unwrap_or_default(),
            task: args.task.unwrap_or_default(),
            instance: args.instance.unwrap_or_default(),
            depth_up: args.up,
            depth_down: args.down,
        })
        .await
        .map_err(status)?
        .into_inner();
    if out == Output::Json {
        println!("{}", json::dag(&r));
        return Ok(0);
    }
    let by_id: BTreeMap<&str, &pb::InstanceInfo> =
        r.instances.iter().map(|i| (i.id.as_str(), i)).collect();
    if dot {
        println!("digraph ferry {{");
        println!("  rankdir=LR; node [shape=box, style=filled];");
        for i in &r.instances {
            let color = match i.state.as_str() {
                "success" => "palegreen",
                "dry_run" => "gray90",
                "failed" | "killed" => "salmon",
                "running" | "dispatched" => "lightskyblue",
                "frozen" => "lightsteelblue",
                _ => "khaki",
            };
            println!(
                "  \"{}\" [label=\"{}\", fillcolor={color}];",
                i.id,
                label(i)
            );
        }
        for e in &r.edges {
            let style = if e.previous { " [style=dashed]" } else { "" };
            println!("  \"{}\" -> \"{}\"{style};", e.from, e.to);
        }
        println!("}}");
        return Ok(0);
    }
    // A text tree: roots first, each instance under the instances it waits for.
    let mut children: BTreeMap<&str, Vec<(&str, bool)>> = BTreeMap::new();
    let mut has_parent: BTreeSet<&str> = BTreeSet::new();
    for e in &r.edges {
        children
            .entry(e.from.as_str())
            .or_default()
            .push((e.to.as_str(), e.previous));
        has_parent.insert(e.to.as_str());
    }
    fn walk(
        id: &str,
        previous: bool,
        depth: usize,
        by_id: &BTreeMap<&str, &pb::InstanceInfo>,
        children: &BTreeMap<&str, Vec<(&str, bool)>>,
        seen: &mut BTreeSet<String>,
    ) {
        let Some(i) = by_id.get(id) else { return };
        let mark = if previous { "(previous cycle) " } else { "" };
        let again = !seen.insert(id.to_string());
        println!(
            "{}{mark}{}{}",
            "  ".repeat(depth),
            label(i),
            if again { " …" } else { "" }
        );
        if again {
            return;
        }
        for (c, p) in children.get(id).into_iter().flatten() {
            walk(c, *p, depth + 1, by_id, children, seen);
        }
    }
    let mut seen = BTreeSet::new();
    for i in &r.instances {
        if !has_parent.contains(i.id.as_str()) {
            walk(&i.id, false, 0, &by_id, &children, &mut seen);
        }
    }
    println!(
        "{} instance(s), {} edge(s); {} up, {} down{}",
        r.instances.len(),
        r.edges.len(),
        r.depth_up,
        r.depth_down,
        if r.truncated {
            "; cut at the answer's size limit"
        } else {
            ""
        }
    );
    let more: Vec<String> = r
        .borders
        .iter()
        .map(|b| {
            let way = match (b.more_upstream, b.more_downstream) {
                (true, true) => "up and down",
                (true, false) => "up",
                _ => "down",
            };
            let name = by_id.get(b.id.as_str()).map_or(b.id.clone(), |i| label(i));
            format!("  {name}: more {way}")
        })
        .collect();
    if !more.is_empty() {
        println!("goes on beyond (--up/--down or --instance to see more):");
        for m in more {
            println!("{m}");
        }
    }
    Ok(0)
}
