//! What the operations center reads on a 100,000-instance day (issue 11): the admin API's
//! instance list and DAG calls, timed on the scheduling benchmark's day (`support/busy_day.rs`:
//! 20,000 nodes, 174 in 1,000 hourly, run to mid-afternoon with failures, kills and running
//! instances) held in a real sled store. Calls go through the admin service's handlers as the
//! gRPC server invokes them (authenticated principal, conversion to messages), without the
//! network. Run in release with
//! `CARGO_TARGET_DIR=… /work/bin/lcargo bench -p ferry-scheduler --bench instance_views -- [--nodes 20000] [--hourly 174] [--reps 200]`;
//! it prints p50/p99 per call and asserts nothing.

use anyhow::{Context as _, Result, anyhow};
use ferry_proto::admin::v1 as pb;
use ferry_proto::admin::v1::admin_service_server::AdminService;
use ferry_scheduler::admin::AdminApi;
use ferry_scheduler::auth::Principal;
use std::time::{Duration, Instant};

#[path = "support/busy_day.rs"]
mod busy_day;
#[path = "support/plan_shape.rs"]
mod plan_shape;

// `support/plan_shape.rs` names these through `super`.
use ferry_common::schedule::CronSchedule;
use ferry_scheduler::plan::{NodeSchedule, NodeSpec};

fn arg(name: &str, default: usize) -> Result<usize> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .ok_or_else(|| anyhow!("{name} needs a value"))?
            .parse()
            .with_context(|| name.to_string()),
        None => Ok(default),
    }
}

fn request<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.extensions_mut().insert(Principal {
        user: "bench".into(),
        cluster_admin: true,
        roles: Default::default(),
        token_id: "bench".into(),
        workspace: busy_day::WORKSPACE.into(),
        from: "bench".into(),
    });
    r
}

/// Calls `f` `reps` times (fewer when it takes over 20 s in all) and prints p50 and p99.
async fn time<F, Fut>(name: &str, reps: usize, mut f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<String>>,
{
    let mut took = Vec::with_capacity(reps);
    let mut what = String::new();
    let budget = Instant::now();
    for _ in 0..reps {
        let t = Instant::now();
        what = f().await?;
        took.push(t.elapsed());
        if budget.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    took.sort();
    let at = |q: f64| {
        took.get(((took.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{name:<34} p50 {:>10.2?}  p99 {:>10.2?}  ({} calls; {what})",
        at(0.5),
        at(0.99),
        took.len()
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let nodes = arg("--nodes", 20_000)?;
    let hourly = arg("--hourly", 174)?;
    let reps = arg("--reps", 200)?;
    let t = Instant::now();
    let day = busy_day::build(nodes, hourly)?;
    println!(
        "instance_views: {nodes} nodes, {} instances on {}, built in {:.1?} (applying: \
         generation {:.1?}, run {:.1?} for {} commands)",
        day.instances,
        day.bizdate,
        t.elapsed(),
        day.timings.generate,
        day.timings.run,
        day.timings.run_commands
    );
    let counts = day.ctx.store.instance_counts()?;
    println!(
        "states: {}",
        counts
            .iter()
            .map(|(s, n)| format!("{} {n}", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let api = AdminApi::new(day.ctx.clone());
    let bizdate = day.bizdate.clone();
    // A node in the middle layers, with upstream and downstream.
    let node = "node_10007";
    let centre = day
        .ctx
        .store
        .instances_of_task_day(&format!("{}/{node}", busy_day::WORKSPACE), &bizdate)?
        .first()
        .map(|i| i.id.clone())
        .ok_or_else(|| anyhow!("{node} has no instance"))?;

    let list = |req: pb::ListInstancesRequest| {
        let api = &api;
        async move {
            let r = api.list_instances(request(req)).await?.into_inner();
            Ok::<_, anyhow::Error>(format!("{} rows of {}", r.instances.len(), r.total))
        }
    };
    let page = |offset: u32| pb::ListInstancesRequest {
        bizdate: bizdate.clone(),
        limit: 50,
        offset,
        ..Default::default()
    };
    time("list page 1 (50)", reps, || list(page(0))).await?;
    let deep = u32::try_from(day.instances * 9 / 10).unwrap_or(u32::MAX);
    time("list page at offset 90% (50)", reps, || list(page(deep))).await?;
    // The same depth by page token: the token of the row before it.
    let token = api
        .list_instances(request(pb::ListInstancesRequest {
            bizdate: bizdate.clone(),
            limit: deep,
            ..Default::default()
        }))
        .await?
        .into_inner()
        .next_page_token;
    time("list page at 90% by token (50)", reps, || {
        list(pb::ListInstancesRequest {
            bizdate: bizdate.clone(),
            limit: 50,
            page_token: token.clone(),
            ..Default::default()
        })
    })
    .await?;
    time("list state=failed (50)", reps, || {
        list(pb::ListInstancesRequest {
            bizdate: bizdate.clone(),
            state: "failed".into(),
            limit: 50,
            ..Default::default()
        })
    })
    .await?;
    time("list search \"node_1000\" (50)", reps, || {
        list(pb::ListInstancesRequest {
            bizdate: bizdate.clone(),
            search: "node_1000".into(),
            limit: 50,
            ..Default::default()
        })
    })
    .await?;
    time("list search \"node_1\" (50)", reps, || {
        list(pb::ListInstancesRequest {
            bizdate: bizdate.clone(),
            search: "node_1".into(),
            limit: 50,
            ..Default::default()
        })
    })
    .await?;
    time("list task (exact)", reps, || {
        list(pb::ListInstancesRequest {
            bizdate: bizdate.clone(),
            task: node.into(),
            limit: 50,
            ..Default::default()
        })
    })
    .await?;
    time("counts (limit 1)", reps, || {
        let api = &api;
        let bizdate = bizdate.clone();
        async move {
            let r = api
                .list_instances(request(pb::ListInstancesRequest {
                    bizdate,
                    limit: 1,
                    ..Default::default()
                }))
                .await?
                .into_inner();
            Ok(format!(
                "failed {}",
                r.counts.get("failed").copied().unwrap_or(0)
            ))
        }
    })
    .await?;
    let dag = |req: pb::GetDagRequest| {
        let api = &api;
        async move {
            let r = api.get_dag(request(req)).await?.into_inner();
            Ok::<_, anyhow::Error>(format!(
                "{} nodes, {} edges, {} borders{}",
                r.instances.len(),
                r.edges.len(),
                r.borders.len(),
                if r.truncated { ", truncated" } else { "" }
            ))
        }
    };
    for depth in [2, 5] {
        time(&format!("dag instance depth {depth}"), reps, || {
            dag(pb::GetDagRequest {
                instance: centre.clone(),
                depth_up: depth,
                depth_down: depth,
                ..Default::default()
            })
        })
        .await?;
    }
    time("dag task (default depth 2)", reps, || {
        dag(pb::GetDagRequest {
            bizdate: bizdate.clone(),
            task: node.into(),
            ..Default::default()
        })
    })
    .await?;
    time("get instance", reps, || {
        let api = &api;
        let id = centre.clone();
        async move {
            let r = api
                .get_instance(request(pb::GetInstanceRequest { id }))
                .await?
                .into_inner();
            Ok(r.state)
        }
    })
    .await?;
    drop(day.dir);
    Ok(())
}
