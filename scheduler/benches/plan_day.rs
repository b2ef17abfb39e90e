//! Times instance planning for a large workspace: 20,000 nodes, 30 layers deep, a quarter hourly
//! (about 135,000 instances a day). Run in release with
//! `/work/bin/lcargo bench -p ferry-scheduler --bench plan_day`; it prints, it asserts nothing.

use chrono::NaiveDate;
use ferry_common::Result;
use ferry_common::schedule::CronSchedule;
use ferry_scheduler::plan::{Generation, NodeSchedule, NodeSpec, plan_graph_day, validate_graph};
use std::time::{Duration, Instant};

#[path = "support/plan_shape.rs"]
mod plan_shape;

fn main() -> Result<()> {
    let nodes = plan_shape::synthetic(20_000, 30)?;
    let day = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap_or_default();
    let mut validate = Vec::new();
    let mut plan = Vec::new();
    let mut counts = (0, 0, 0);
    for _ in 0..7 {
        let t = Instant::now();
        let graph = validate_graph(&nodes)?;
        validate.push(t.elapsed());
        let t = Instant::now();
        let p = plan_graph_day(&graph, day, Generation::FullDay)?;
        plan.push(t.elapsed());
        counts = (
            p.instances.len(),
            p.instances.iter().map(|i| i.upstream.len()).sum::<usize>(),
            p.instances.iter().map(|i| i.previous.len()).sum::<usize>(),
        );
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or_default()
    };
    println!(
        "plan_day: {} nodes, {} instances, {} same-cycle and {} previous-cycle edges",
        nodes.len(),
        counts.0,
        counts.1,
        counts.2
    );
    println!(
        "validate_graph median {:?}, plan_graph_day median {:?} (7 runs)",
        median(&mut validate),
        median(&mut plan)
    );
    Ok(())
}
