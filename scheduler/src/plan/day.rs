//! Planning one calendar day: every scheduled node's instances of that day (in its own time
//! zone), their identities, parameters and the upstream instances each waits for.
//!
//! Every scheduled node has instances on every day: on a day its schedule skips (a weekly node
//! on Tuesday) or outside its effective dates they are dry runs, marked success without running,
//! as in DataWorks; so a daily node downstream of a weekly one is never blocked, and matching
//! never meets a missing upstream. Instances are keyed by [`instance_key`] (node, cycle time):
//! planning the same day again gives the same keys, so storing a plan is idempotent.

use super::graph::{Graph, validate_graph};
use super::node::{NodeSchedule, NodeSpec, NodeType};
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use ferry_common::Result;
use ferry_common::params::{ParamContext, ResolvedParams, resolve};
use ferry_common::schedule::{Fire, MatchRule, match_rule};

/// Which cycles of the day are planned to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// All of them: the nightly generation of the next day's instances (the T+1 rule: a node
    /// submitted today first runs tomorrow).
    FullDay,
    /// Submit with "generate now": cycles after the instant run; those at or before it are
    /// planned as expired dry runs, so edges and previous-cycle chains still have an instance
    /// to point at and nothing runs late by surprise (DataWorks does the same).
    RemainingAfter(DateTime<Utc>),
}

/// Why an instance is a dry run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DryRun {
    /// The schedule does not run that day (a weekly node on another weekday).
    NotScheduledDay,
    /// The day lies outside the node's start and end dates.
    OutsideDates,
    /// Planned with [`Generation::RemainingAfter`] after its cycle time had passed.
    Expired,
}

/// One planned instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedInstance {
    /// [`instance_key`] of node and cycle: the instance's identity.
    pub key: String,
    pub node: String,
    pub version: u32,
    pub node_type: NodeType,
    /// The cycle time on the node's wall clock, with its UTC offset.
    pub cycle: DateTime<FixedOffset>,
    /// When it is due.
    pub at: DateTime<Utc>,
    /// The day before the cycle date.
    pub bizdate: NaiveDate,
    /// `Some` when the instance is marked success without running.
    pub dry_run: Option<DryRun>,
    /// Parameter values, fixed now and stored with the instance.
    pub params: ResolvedParams,
    /// Same-cycle upstream instance keys, all in this plan; sorted.
    pub upstream: Vec<String>,
    /// Cross-cycle upstream instance keys (a previous cycle, of this node or another), in this
    /// plan or the previous day's; sorted. One the store has never seen (the day before a node
    /// was first generated) counts as satisfied, as in DataWorks.
    pub previous: Vec<String>,
}

/// The instances of one day, each node's after its same-cycle upstreams', cycles in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayPlan {
    pub day: NaiveDate,
    pub instances: Vec<PlannedInstance>,
}

impl DayPlan {
    /// The planned instance with `key` (a linear search: index the plan for many look-ups).
    pub fn get(&self, key: &str) -> Option<&PlannedInstance> {
        self.instances.iter().find(|i| i.key == key)
    }
}

/// The identity of a node's instance: `orders@2026-11-25T02:30:00+08:00`. The offset tells the
/// two runs of an hourly node in a fall-back hour apart. Task names hold no `@`.
pub fn instance_key(node: &str, cycle: &DateTime<FixedOffset>) -> String {
    format!("{node}@{}", cycle.format("%Y-%m-%dT%H:%M:%S%:z"))
}

/// Validates `nodes` and plans `day`.
pub fn plan_day(nodes: &[NodeSpec], day: NaiveDate, generation: Generation) -> Result<DayPlan> {
    plan_graph_day(&validate_graph(nodes)?, day, generation)
}

/// A node's cycles of one day and their keys.
struct Cycles {
    fires: Vec<Fire>,
    keys: Vec<String>,
}

impl Cycles {
    fn of(node: &NodeSpec, day: Option<NaiveDate>) -> Self {
        let fires = match (&node.schedule, day) {
            (NodeSchedule::Cron(c), Some(day)) => c.cycles_on(day),
            _ => Vec::new(),
        };
        let keys = fires
            .iter()
            .map(|f| instance_key(&node.name, &f.cycle))
            .collect();
        Self { fires, keys }
    }
}

/// Plans `day` over an already validated graph.
pub fn plan_graph_day(
    graph: &Graph<'_>,
    day: NaiveDate,
    generation: Generation,
) -> Result<DayPlan> {
    let nodes = graph.nodes();
    let today: Vec<Cycles> = nodes.iter().map(|n| Cycles::of(n, Some(day))).collect();
    let yesterday_day = day.pred_opt();
    // The previous day's cycles, only for nodes some cross-cycle edge needs.
    let mut yesterday: Vec<Option<Cycles>> = (0..nodes.len()).map(|_| None).collect();
    for i in 0..nodes.len() {
        for &(u, previous) in graph.upstream_of(i) {
            if previous {
                for n in [i, u] {
                    if yesterday[n].is_none() {
                        yesterday[n] = Some(Cycles::of(&nodes[n], yesterday_day));
                    }
                }
            }
        }
    }
    let none = Cycles {
        fires: Vec::new(),
        keys: Vec::new(),
    };

    let total = today.iter().map(|c| c.fires.len()).sum();
    let mut instances = Vec::with_capacity(total);
    for &i in graph.order() {
        let node = &nodes[i];
        let NodeSchedule::Cron(schedule) = &node.schedule else {
            continue;
        };
        let day_dry_run = if !node.in_effect(day) {
            Some(DryRun::OutsideDates)
        } else if !schedule.runs_on(day) {
            Some(DryRun::NotScheduledDay)
        } else {
            None
        };
        // Yesterday's instance of a node not yet in effect is a dry run: waiting on it is moot.
        let yesterday_in_effect = |n: usize| yesterday_day.is_some_and(|d| nodes[n].in_effect(d));
        let mine = &today[i];
        for (j, fire) in mine.fires.iter().enumerate() {
            let mut upstream = Vec::new();
            let mut previous = Vec::new();
            for &(u, is_previous) in graph.upstream_of(i) {
                let period = (node.schedule.period(), nodes[u].schedule.period());
                let Some(rule) = match_rule(period.0, period.1) else {
                    continue;
                };
                if !is_previous {
                    let theirs = &today[u];
                    for k in matching(rule, &mine.fires, j, &theirs.fires) {
                        upstream.extend(theirs.keys.get(k).cloned());
                    }
                    continue;
                }
                let mine_before = yesterday[i].as_ref().unwrap_or(&none);
                let theirs_before = yesterday[u].as_ref().unwrap_or(&none);
                if u == i {
                    // Self: the previous cycle, for the first of the day yesterday's last.
                    match j.checked_sub(1) {
                        Some(p) => previous.extend(mine.keys.get(p).cloned()),
                        None if yesterday_in_effect(i) => {
                            previous.extend(mine_before.keys.last().cloned())
                        }
                        None => {}
                    }
                    continue;
                }
                match (rule, j.checked_sub(1)) {
                    // Several a day each: what this node's previous cycle matched.
                    (MatchRule::ByCycle, Some(p)) => {
                        let theirs = &today[u];
                        for k in matching(rule, &mine.fires, p, &theirs.fires) {
                            previous.extend(theirs.keys.get(k).cloned());
                        }
                    }
                    (MatchRule::ByCycle, None) => {
                        if yesterday_in_effect(u) && !mine_before.fires.is_empty() {
                            let last = mine_before.fires.len() - 1;
                            for k in matching(rule, &mine_before.fires, last, &theirs_before.fires)
                            {
                                previous.extend(theirs_before.keys.get(k).cloned());
                            }
                        }
                    }
                    // The upstream's previous day: its one instance, or all of them.
                    (MatchRule::DayInstance | MatchRule::AllOfDay, _) => {
                        if yesterday_in_effect(u) {
                            previous.extend(theirs_before.keys.iter().cloned());
                        }
                    }
                }
            }
            upstream.sort_unstable();
            upstream.dedup();
            previous.sort_unstable();
            previous.dedup();
            let dry_run = day_dry_run.or(match generation {
                Generation::RemainingAfter(now) if fire.at <= now => Some(DryRun::Expired),
                _ => None,
            });
            let context = ParamContext::for_cycle(fire.cycle_time());
            let params = resolve(&node.params, &context)?;
            instances.push(PlannedInstance {
                key: mine.keys.get(j).cloned().unwrap_or_default(),
                node: node.name.clone(),
                version: node.version,
                node_type: node.node_type,
                cycle: fire.cycle,
                at: fire.at,
                bizdate: context.bizdate,
                dry_run,
                params,
                upstream,
                previous,
            });
        }
    }
    Ok(DayPlan { day, instances })
}

/// Indices into `theirs` (one node's cycles of a day) that cycle `j` of `mine` waits for.
fn matching(rule: MatchRule, mine: &[Fire], j: usize, theirs: &[Fire]) -> std::ops::Range<usize> {
    match rule {
        MatchRule::DayInstance | MatchRule::AllOfDay => 0..theirs.len(),
        MatchRule::ByCycle => {
            let Some(at) = mine.get(j).map(|f| f.at) else {
                return 0..0;
            };
            // Upstream cycles after my previous cycle, up to mine.
            let end = theirs.partition_point(|f| f.at <= at);
            let start = match j.checked_sub(1).and_then(|p| mine.get(p)) {
                Some(prev) => theirs.partition_point(|f| f.at <= prev.at),
                None => 0,
            };
            if start < end {
                start..end
            } else if end > 0 {
                // None in the window: the latest one at or before my cycle.
                end - 1..end
            } else if theirs.is_empty() {
                0..0
            } else {
                // All of theirs come later in the day: the first.
                0..1
            }
        }
    }
}
