//! The shape of a large workspace for planning at scale, shared by the 20,000-node unit test
//! (`plan::tests`) and the `plan_day` benchmark: it names what it needs through `super`.

use super::{CronSchedule, NodeSchedule, NodeSpec, Result};

/// A graph shaped like a large workspace: `layers` deep, each node waiting on one to three
/// nodes of earlier layers; a quarter hourly, the rest daily; some self-dependent.
#[allow(dead_code)] // each user of this file takes the shape it needs
pub fn synthetic(count: usize, layers: usize) -> Result<Vec<NodeSpec>> {
    synthetic_with(count, layers, 1, 4)
}

/// [`synthetic`] with `hourly_in` of every `out_of` nodes hourly (the same graph as
/// [`synthetic`] for 1 in 4). 174 in 1,000 of 20,000 nodes make about 100,000 instances a day.
#[allow(dead_code)]
pub fn synthetic_with(
    count: usize,
    layers: usize,
    hourly_in: usize,
    out_of: usize,
) -> Result<Vec<NodeSpec>> {
    let hourly = NodeSchedule::Cron(CronSchedule::parse("0 * * * *", "Asia/Shanghai")?);
    let daily = NodeSchedule::Cron(CronSchedule::parse("30 2 * * *", "Asia/Shanghai")?);
    let per_layer = count.div_ceil(layers);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |bound: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        usize::try_from(seed % u64::try_from(bound.max(1)).unwrap_or(1)).unwrap_or(0)
    };
    let mut nodes = Vec::with_capacity(count);
    for i in 0..count {
        let layer = i / per_layer;
        let schedule = if next(out_of) < hourly_in {
            hourly.clone()
        } else {
            daily.clone()
        };
        let mut spec = NodeSpec::new(format!("node_{i:05}"), schedule);
        if layer > 0 {
            for _ in 0..1 + next(3) {
                let up_layer = layer - 1 - next(layer.min(3));
                let up = up_layer * per_layer + next(per_layer);
                spec = spec.after(format!("node_{up:05}"));
            }
        }
        if next(10) == 0 {
            spec = spec.after_previous(format!("node_{i:05}"));
        }
        nodes.push(spec);
    }
    Ok(nodes)
}
