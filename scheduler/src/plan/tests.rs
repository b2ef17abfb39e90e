//! Planning scenarios (period matching, dry runs, cross-cycle chains, daylight saving, identity,
//! refusals), a property test over random graphs, and a plan of 20,000 nodes.

use super::*;
use chrono::{DateTime, NaiveDate, Utc};
use ferry_common::params::ParamDefs;
use ferry_common::schedule::CronSchedule;
use ferry_common::{Error, Result};
use proptest::prelude::*;
use std::collections::HashSet;

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default()
}

fn cron(expr: &str, tz: &str) -> Result<NodeSchedule> {
    Ok(NodeSchedule::Cron(CronSchedule::parse(expr, tz)?))
}

fn node(name: &str, expr: &str) -> Result<NodeSpec> {
    Ok(NodeSpec::new(name, cron(expr, "UTC")?))
}

fn of<'a>(plan: &'a DayPlan, name: &str) -> Vec<&'a PlannedInstance> {
    plan.instances.iter().filter(|i| i.node == name).collect()
}

fn keys(instances: &[&PlannedInstance]) -> Vec<String> {
    instances.iter().map(|i| i.key.clone()).collect()
}

const D: (i32, u32, u32) = (2026, 11, 25);

fn today() -> NaiveDate {
    day(D.0, D.1, D.2)
}

#[test]
fn daily_downstream_waits_for_all_hourly_instances_of_the_day() -> Result<()> {
    let nodes = [node("h", "0 * * * *")?, node("d", "0 2 * * *")?.after("h")];
    let plan = plan_day(&nodes, today(), Generation::FullDay)?;
    let hourly = of(&plan, "h");
    assert_eq!(hourly.len(), 24);
    let daily = of(&plan, "d");
    assert_eq!(daily.len(), 1);
    assert_eq!(daily[0].upstream, keys(&hourly));
    Ok(())
}

#[test]
fn hourly_downstream_waits_for_the_days_daily_instance() -> Result<()> {
    let nodes = [node("d", "30 2 * * *")?, node("h", "0 * * * *")?.after("d")];
    let plan = plan_day(&nodes, today(), Generation::FullDay)?;
    let daily = keys(&of(&plan, "d"));
    assert_eq!(daily, ["d@2026-11-25T02:30:00+00:00"]);
    for h in of(&plan, "h") {
        assert_eq!(h.upstream, daily, "{}", h.key);
    }
    Ok(())
}

#[test]
fn equal_periods_match_one_to_one_and_offsets_by_window() -> Result<()> {
    let nodes = [
        node("a", "0 * * * *")?,
        node("b", "0 * * * *")?.after("a"),
        node("c", "30 * * * *")?.after("a"),
        node("q", "*/15 * * * *")?.after("a"),
    ];
    let plan = plan_day(&nodes, today(), Generation::FullDay)?;
    for b in of(&plan, "b") {
        assert_eq!(b.upstream, [b.key.replacen("b@", "a@", 1)]);
    }
    let c = of(&plan, "c");
    assert_eq!(c[0].upstream, ["a@2026-11-25T00:00:00+00:00"]);
    assert_eq!(c[5].upstream, ["a@2026-11-25T05:00:00+00:00"]);
    let q = of(&plan, "q");
    assert_eq!(q.len(), 96);
    assert_eq!(q[0].upstream, ["a@2026-11-25T00:00:00+00:00"]);
    assert_eq!(q[1].upstream, ["a@2026-11-25T00:00:00+00:00"]); // 00:15: the latest before
    assert_eq!(q[4].upstream, ["a@2026-11-25T01:00:00+00:00"]);
    // A coarser sub-daily downstream waits for the finer instances in its window.
    let nodes = [
        node("q", "*/15 * * * *")?,
        node("h", "0 * * * *")?.after("q"),
    ];
    let plan = plan_day(&nodes, today(), Generation::FullDay)?;
    let h = of(&plan, "h");
    assert_eq!(
        h[1].upstream,
        [
            "q@2026-11-25T00:15:00+00:00",
            "q@2026-11-25T00:30:00+00:00",
            "q@2026-11-25T00:45:00+00:00",
            "q@2026-11-25T01:00:00+00:00",
        ]
    );
    Ok(())
}

#[test]
fn weekly_node_dry_runs_on_other_days_and_never_blocks_daily_downstream() -> Result<()> {
    let nodes = [
        node("w", "0 3 * * MON")?,
        node("d", "0 4 * * *")?.after("w"),
    ];
    // 2026-11-23 is a Monday.
    for offset in 0..7 {
        let d = day(2026, 11, 23 + offset);
        let plan = plan_day(&nodes, d, Generation::FullDay)?;
        let w = of(&plan, "w");
        assert_eq!(w.len(), 1);
        let want = if offset == 0 {
            None
        } else {
            Some(DryRun::NotScheduledDay)
        };
        assert_eq!(w[0].dry_run, want, "{d}");
        assert_eq!(of(&plan, "d")[0].upstream, keys(&w));
        assert_eq!(of(&plan, "d")[0].dry_run, None);
    }
    Ok(())
}

#[test]
fn self_dependency_chains_across_days() -> Result<()> {
    let nodes = [
        node("s", "0 1 * * *")?.after_previous("s"),
        node("h", "0 * * * *")?.after_previous("h"),
    ];
    let day1 = plan_day(&nodes, today(), Generation::FullDay)?;
    let day2 = plan_day(
        &nodes,
        today().succ_opt().unwrap_or_default(),
        Generation::FullDay,
    )?;
    assert_eq!(of(&day2, "s")[0].previous, keys(&of(&day1, "s")));
    let h1 = of(&day1, "h");
    let h2 = of(&day2, "h");
    assert_eq!(h2[0].previous, [h1[23].key.clone()]);
    for j in 1..24 {
        assert_eq!(h2[j].previous, [h2[j - 1].key.clone()]);
        assert!(h2[j].upstream.is_empty());
    }
    Ok(())
}

#[test]
fn previous_cycle_of_another_node() -> Result<()> {
    let nodes = [
        node("a", "0 1 * * *")?,
        node("h", "0 * * * *")?,
        node("b", "0 2 * * *")?
            .after_previous("a")
            .after_previous("h"),
        node("g", "0 * * * *")?.after_previous("h"),
    ];
    let yesterday = plan_day(&nodes, day(2026, 11, 24), Generation::FullDay)?;
    let plan = plan_day(&nodes, today(), Generation::FullDay)?;
    let mut want = keys(&of(&yesterday, "a"));
    want.extend(keys(&of(&yesterday, "h")));
    want.sort();
    assert_eq!(of(&plan, "b")[0].previous, want);
    let g = of(&plan, "g");
    assert_eq!(g[0].previous, [of(&yesterday, "h")[23].key.clone()]);
    assert_eq!(g[5].previous, [of(&plan, "h")[4].key.clone()]);
    Ok(())
}

#[test]
fn daylight_saving_days_have_23_and_25_hourly_instances() -> Result<()> {
    let nodes = [
        NodeSpec::new("h", cron("0 * * * *", "Europe/Berlin")?).after_previous("h"),
        NodeSpec::new("d", cron("30 2 * * *", "Europe/Berlin")?).after("h"),
    ];
    for (d, hours, daily_cycle) in [
        (day(2026, 3, 29), 23, "2026-03-29T03:00:00+02:00"),
        (day(2026, 10, 25), 25, "2026-10-25T02:30:00+02:00"),
        (day(2026, 11, 25), 24, "2026-11-25T02:30:00+01:00"),
    ] {
        let plan = plan_day(&nodes, d, Generation::FullDay)?;
        let h = of(&plan, "h");
        assert_eq!(h.len(), hours, "{d}");
        let unique: HashSet<&str> = h.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(unique.len(), hours);
        let daily = of(&plan, "d");
        assert_eq!(daily.len(), 1);
        assert_eq!(daily[0].cycle.to_rfc3339(), daily_cycle);
        assert_eq!(daily[0].upstream, {
            let mut k = keys(&h);
            k.sort();
            k
        });
        for pair in h.windows(2) {
            assert_eq!(pair[1].previous, [pair[0].key.clone()]);
        }
    }
    Ok(())
}

#[test]
fn planning_twice_gives_the_same_instances() -> Result<()> {
    let nodes = [
        node("a", "0 * * * *")?,
        node("b", "0 2 * * *")?.after("a").after_previous("b"),
    ];
    let first = plan_day(&nodes, today(), Generation::FullDay)?;
    let second = plan_day(&nodes, today(), Generation::FullDay)?;
    assert_eq!(first, second);
    let unique: HashSet<&str> = first.instances.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(unique.len(), first.instances.len());
    // A new version keeps the identity of its instances.
    let mut v2 = nodes.clone();
    v2[1].version = 2;
    let third = plan_day(&v2, today(), Generation::FullDay)?;
    assert_eq!(keys(&of(&third, "b")), keys(&of(&first, "b")));
    Ok(())
}

#[test]
fn cycle_is_refused_with_its_path() -> Result<()> {
    let nodes = [
        node("a", "0 1 * * *")?.after("c"),
        node("b", "0 1 * * *")?.after("a"),
        node("c", "0 1 * * *")?.after("b"),
    ];
    let err = validate_graph(&nodes).err();
    assert!(
        matches!(&err, Some(Error::DependencyCycle(p)) if p == "a -> b -> c -> a"),
        "{err:?}"
    );
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("a -> b -> c -> a") && msg.contains("previous cycle"),
        "{msg}"
    );
    let own = [node("a", "0 1 * * *")?.after("a")];
    let err = validate_graph(&own).err();
    assert!(
        matches!(&err, Some(Error::DependencyCycle(p)) if p == "a -> a"),
        "{err:?}"
    );
    // A previous-cycle edge cannot close a cycle.
    let ok = [
        node("a", "0 1 * * *")?
            .after_previous("b")
            .after_previous("a"),
        node("b", "0 1 * * *")?.after("a"),
    ];
    assert!(validate_graph(&ok).is_ok());
    Ok(())
}

#[test]
fn unknown_upstream_and_manual_upstream_are_refused_by_name() -> Result<()> {
    let nodes = [node("a", "0 1 * * *")?.after("orders_sync")];
    let msg = validate_graph(&nodes)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        msg.contains("\"a\"") && msg.contains("\"orders_sync\""),
        "{msg}"
    );
    let nodes = [
        NodeSpec::new("m", NodeSchedule::Manual),
        node("a", "0 1 * * *")?.after("m"),
    ];
    let err = validate_graph(&nodes).err();
    assert!(matches!(err, Some(Error::ManualUpstream { .. })), "{err:?}");
    let dup = [node("a", "0 1 * * *")?, node("a", "0 2 * * *")?];
    assert!(matches!(
        validate_graph(&dup).err(),
        Some(Error::DuplicateNode(_))
    ));
    // A manual node may wait on a scheduled one; it has no planned instances.
    let nodes = [
        node("a", "0 1 * * *")?,
        NodeSpec::new("m", NodeSchedule::Manual).after("a"),
    ];
    let plan = plan_day(&nodes, today(), Generation::FullDay)?;
    assert!(of(&plan, "m").is_empty());
    Ok(())
}

#[test]
fn outside_its_dates_a_node_dry_runs() -> Result<()> {
    let mut n = node("a", "0 1 * * *")?.after_previous("a");
    n.start_date = Some(today());
    n.end_date = Some(day(2026, 11, 30));
    let nodes = [n];
    let before = plan_day(&nodes, day(2026, 11, 24), Generation::FullDay)?;
    assert_eq!(before.instances[0].dry_run, Some(DryRun::OutsideDates));
    let first = plan_day(&nodes, today(), Generation::FullDay)?;
    assert_eq!(first.instances[0].dry_run, None);
    // Nothing to wait for before the first day.
    assert!(first.instances[0].previous.is_empty());
    let after = plan_day(&nodes, day(2026, 12, 1), Generation::FullDay)?;
    assert_eq!(after.instances[0].dry_run, Some(DryRun::OutsideDates));
    Ok(())
}

#[test]
fn generate_now_runs_only_the_remaining_cycles() -> Result<()> {
    let nodes = [node("h", "0 * * * *")?, node("d", "0 23 * * *")?.after("h")];
    let now: DateTime<Utc> = today().and_hms_opt(10, 30, 0).unwrap_or_default().and_utc();
    let plan = plan_day(&nodes, today(), Generation::RemainingAfter(now))?;
    let h = of(&plan, "h");
    assert_eq!(h.len(), 24);
    assert!(h[..11].iter().all(|i| i.dry_run == Some(DryRun::Expired)));
    assert!(h[11..].iter().all(|i| i.dry_run.is_none()));
    assert_eq!(of(&plan, "d")[0].dry_run, None);
    assert_eq!(of(&plan, "d")[0].upstream.len(), 24);
    Ok(())
}

#[test]
fn parameters_are_resolved_per_instance() -> Result<()> {
    let mut n = NodeSpec::new("a", cron("00 30 02 * * ?", "Asia/Shanghai")?);
    n.params = ParamDefs::parse("dt=$[yyyymmdd-1] hour=$[hh24] region=cn")?;
    n.node_type = NodeType::Shell;
    let plan = plan_day(&[n], today(), Generation::FullDay)?;
    let i = &plan.instances[0];
    assert_eq!(i.key, "a@2026-11-25T02:30:00+08:00");
    assert_eq!(i.bizdate, day(2026, 11, 24));
    assert_eq!(i.node_type, NodeType::Shell);
    assert_eq!(i.params.get("bizdate"), Some("20261124"));
    assert_eq!(i.params.get("cyctime"), Some("20261125023000"));
    assert_eq!(i.params.get("dt"), Some("20261124"));
    assert_eq!(i.params.get("hour"), Some("02"));
    assert_eq!(i.params.get("region"), Some("cn"));
    Ok(())
}

// ---- random graphs ----

const SCHEDULES: &[&str] = &[
    "0 * * * *",
    "30 */2 * * *",
    "*/30 * * * *",
    "0 2 * * *",
    "0 3 * * MON",
    "0 4 1 * *",
];

/// Whether same-cycle edges (downstream, upstream) over `n` nodes are acyclic, by Kahn's count.
fn acyclic(n: usize, edges: &[(usize, usize, bool)]) -> bool {
    let mut indegree = vec![0usize; n];
    for &(down, _, previous) in edges {
        if !previous {
            indegree[down] += 1;
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|i| indegree[*i] == 0).collect();
    let mut seen = 0;
    while let Some(u) = ready.pop() {
        seen += 1;
        for &(down, up, previous) in edges {
            if !previous && up == u {
                indegree[down] -= 1;
                if indegree[down] == 0 {
                    ready.push(down);
                }
            }
        }
    }
    seen == n
}

/// (downstream, upstream, previous cycle) edges.
type Edges = Vec<(usize, usize, bool)>;

fn graph_strategy() -> impl Strategy<Value = (usize, Edges, Vec<usize>)> {
    (2usize..12).prop_flat_map(|n| {
        (
            Just(n),
            Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
            // Acyclic by construction: position i may depend on an earlier position.
            proptest::collection::vec((0..n, 0..n, proptest::bool::weighted(0.2)), 0..(2 * n)),
            // A few extra edges in any direction, which may close cycles.
            proptest::collection::vec((0..n, 0..n, proptest::bool::weighted(0.3)), 0..3),
            proptest::collection::vec(0..SCHEDULES.len(), n),
        )
            .prop_map(|(n, perm, forward, extra, schedules)| {
                let mut edges: Vec<(usize, usize, bool)> = forward
                    .into_iter()
                    .filter(|(a, b, _)| a != b)
                    .map(|(a, b, p)| {
                        let (lo, hi) = (a.min(b), a.max(b));
                        (perm[hi], perm[lo], p)
                    })
                    .collect();
                edges.extend(extra);
                (n, edges, schedules)
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_graphs_validate_exactly_when_acyclic_and_plans_close_over_their_edges(
        (n, edges, schedules) in graph_strategy(),
    ) {
        let name = |i: usize| format!("n{i}");
        let mut nodes = Vec::new();
        for (i, s) in schedules.iter().enumerate() {
            let schedule = cron(SCHEDULES[*s], "Europe/Berlin").map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut spec = NodeSpec::new(name(i), schedule);
            for &(down, up, previous) in &edges {
                if down == i {
                    spec.dependencies.push(if previous {
                        Dependency::previous_cycle(name(up))
                    } else {
                        Dependency::same_cycle(name(up))
                    });
                }
            }
            nodes.push(spec);
        }
        let valid = validate_graph(&nodes);
        prop_assert_eq!(valid.is_ok(), acyclic(n, &edges), "{:?}", valid.as_ref().err());
        if let Err(e) = &valid {
            // The path closes and every arrow is a same-cycle dependency.
            let Error::DependencyCycle(path) = e else {
                return Err(TestCaseError::fail(format!("unexpected error {e}")));
            };
            let names: Vec<&str> = path.split(" -> ").collect();
            prop_assert!(names.len() >= 2 && names.first() == names.last(), "{path}");
            for pair in names.windows(2) {
                let down = nodes.iter().find(|s| s.name == pair[1]);
                prop_assert!(
                    down.is_some_and(|d| d.dependencies.contains(&Dependency::same_cycle(pair[0]))),
                    "{path}: {} does not depend on {}", pair[1], pair[0]
                );
            }
            return Ok(());
        }
        // A spring-forward day and the day before it.
        let (d0, d1) = (day(2026, 3, 28), day(2026, 3, 29));
        let before = plan_day(&nodes, d0, Generation::FullDay).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let plan = plan_day(&nodes, d1, Generation::FullDay).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let here: HashSet<&str> = plan.instances.iter().map(|i| i.key.as_str()).collect();
        let there: HashSet<&str> = before.instances.iter().map(|i| i.key.as_str()).collect();
        prop_assert_eq!(here.len(), plan.instances.len(), "keys are unique");
        let mut position = std::collections::HashMap::new();
        for (p, i) in plan.instances.iter().enumerate() {
            position.insert(i.key.as_str(), p);
        }
        for (p, i) in plan.instances.iter().enumerate() {
            for u in &i.upstream {
                prop_assert!(here.contains(u.as_str()), "{} waits for missing {}", i.key, u);
                // Upstreams come first, so a plan can be stored in order.
                prop_assert!(position.get(u.as_str()).is_some_and(|q| *q < p));
            }
            for u in &i.previous {
                prop_assert!(
                    here.contains(u.as_str()) || there.contains(u.as_str()),
                    "{} waits for missing previous {}", i.key, u
                );
            }
            let is_self_dependent = nodes.iter().any(|s| s.name == i.node && s.dependencies.contains(&Dependency::previous_cycle(&s.name)));
            if is_self_dependent {
                let own = format!("{}@", i.node);
                prop_assert!(i.previous.iter().any(|k| k.starts_with(&own)), "{} has no previous cycle", i.key);
            }
        }
    }
}

// ---- scale ----

// The benchmark `benches/plan_day.rs` plans the same shape in release mode.
#[path = "../../benches/support/plan_shape.rs"]
mod plan_shape;
use plan_shape::synthetic;

#[test]
fn plans_twenty_thousand_nodes() -> Result<()> {
    let nodes = synthetic(20_000, 30)?;
    let graph = validate_graph(&nodes)?;
    let plan = plan_graph_day(&graph, today(), Generation::FullDay)?;
    let hourly = nodes
        .iter()
        .filter(|n| n.schedule.period() == ferry_common::schedule::Period::Hourly)
        .count();
    assert_eq!(plan.instances.len(), hourly * 24 + (nodes.len() - hourly));
    let here: HashSet<&str> = plan.instances.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(here.len(), plan.instances.len());
    assert!(
        plan.instances
            .iter()
            .all(|i| i.upstream.iter().all(|u| here.contains(u.as_str())))
    );
    Ok(())
}
