//! The applier alone on the scheduling benchmark's day (issue 9): how long the state machine
//! takes to apply the day's generation and its run, on one thread, without raft, agents or
//! other processes in the way — the part of `schedule_day` that profiles found to be the limit.
//!
//! `cargo bench -p ferry-scheduler --bench apply_day -- [--nodes 20000] [--hourly 174]
//! [--rounds 2]`
//!
//! Each round builds the day of `support/busy_day.rs` (about 100,000 instances generated with
//! `AddInstances` of 2,000, each applied alone as the scheduler does, then run to mid-afternoon by dispatch, start, finish and kill commands
//! applied in calls of up to 1,000). Prints the seconds spent inside `StateMachine::apply` for
//! the generation and for the run, and the run's commands per second. To compare two builds,
//! run their binaries alternately (`--rounds 1` each): the second day built in one process was
//! slower than the first in every run so far.

use anyhow::{Context as _, Result};
use ferry_scheduler::state::Store;
// What `support/plan_shape.rs` names through `super`.
use ferry_common::schedule::CronSchedule;
use ferry_scheduler::plan::{NodeSchedule, NodeSpec};
use std::time::Instant;

/// The scheduler binary's allocator, so the applier is measured as it runs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/busy_day.rs"]
mod busy_day;
#[path = "support/plan_shape.rs"]
mod plan_shape;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).cloned()
}

fn number(name: &str, default: usize) -> Result<usize> {
    match arg(name) {
        Some(v) => v.parse().with_context(|| format!("{name} {v}")),
        None => Ok(default),
    }
}

fn main() -> Result<()> {
    let nodes = number("--nodes", 20_000)?;
    let hourly = number("--hourly", 174)?;
    let rounds = number("--rounds", 2)?;
    println!(
        "| round | instances | generation s | run s | run commands | run commands/s | built s |"
    );
    println!("|---|---|---|---|---|---|---|");
    for round in 1..=rounds {
        let t = Instant::now();
        let day = busy_day::build_with(nodes, hourly, Store::open)?;
        let built = t.elapsed();
        let tm = day.timings;
        println!(
            "| {round} | {} | {:.2} | {:.2} | {} | {:.0} | {:.1} |",
            day.instances,
            tm.generate.as_secs_f64(),
            tm.run.as_secs_f64(),
            tm.run_commands,
            tm.run_commands as f64 / tm.run.as_secs_f64().max(1e-9),
            built.as_secs_f64()
        );
    }
    Ok(())
}
