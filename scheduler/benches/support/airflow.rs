//! Ferry against Apache Airflow 3 on one DAG: `CHAINS` parallel chains of `LENGTH` tasks that
//! run `true`. Ferry runs them as shell tasks on one real `ferry-agent` (after a virtual start
//! node, since a one-day backfill of it is how a DAG run is triggered by hand); Airflow runs
//! BashOperators with the LocalExecutor (`scripts/bench-airflow.sh`). Both are timed from the
//! trigger to the last task's success, by each scheduler's own records.

use super::procs::{Proc, Schedulers, admin, sibling_bin};
use anyhow::{Context as _, Result, anyhow, bail};
use ferry_proto::admin::v1 as apb;
use ferry_scheduler::state::Store;
use ferry_scheduler::state::model::InstanceState;
use std::time::{Duration, Instant};

const CHAINS: usize = 10;
const LENGTH: usize = 100;

/// Seconds from the backfill to the last success, for Ferry.
async fn ferry(keep: bool) -> Result<f64> {
    let tmp = tempfile::Builder::new().prefix("ferry-chains-").tempdir()?;
    let dir = if keep {
        tmp.keep()
    } else {
        tmp.path().to_path_buf()
    };
    let mut s = Schedulers::new(&dir, 1)?;
    s.start(0)?;
    let url = s.urls[0].clone();
    let mut adm = admin(&url, &s.token).await?;
    let token = super::group(&mut adm).await?;
    let agent_dir = dir.join("agent");
    let args: Vec<String> = [
        "--scheduler",
        &url,
        "--group",
        super::GROUP,
        "--token",
        &token,
        "--data-dir",
        &agent_dir.display().to_string(),
        "--shell",
        "--slots",
        &CHAINS.to_string(),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let _agent = Proc::spawn(
        &sibling_bin("ferry-agent")?,
        &args,
        dir.join("agent.log"),
        &[],
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let agents = adm
            .list_agents(apb::ListAgentsRequest {
                group: super::GROUP.into(),
            })
            .await?
            .into_inner()
            .agents;
        if agents.iter().any(|a| a.state == "online") {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the agent did not come online; see {}",
                dir.join("agent.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let daily = |name: String, kind: &str, after: Option<String>| apb::CreateTaskRequest {
        name,
        group: super::GROUP.into(),
        job_json: if kind == "shell" {
            "true".into()
        } else {
            String::new()
        },
        kind: kind.into(),
        cron: "0 0 * * *".into(),
        timezone: "UTC".into(),
        dependencies: after
            .map(|u| apb::Dependency {
                upstream: u,
                previous: false,
            })
            .into_iter()
            .collect(),
        ..Default::default()
    };
    adm.create_task(daily("start".into(), "virtual", None))
        .await?;
    for i in 0..LENGTH {
        for c in 0..CHAINS {
            let up = if i == 0 {
                "start".to_string()
            } else {
                format!("c{c:02}_t{:03}", i - 1)
            };
            adm.create_task(daily(format!("c{c:02}_t{i:03}"), "shell", Some(up)))
                .await
                .context("submit a chain task")?;
        }
    }
    let bizdate = (chrono::Utc::now() - chrono::Duration::days(2))
        .format("%Y%m%d")
        .to_string();
    let bf = adm
        .backfill(apb::BackfillRequest {
            task: "start".into(),
            from: bizdate.clone(),
            to: bizdate.clone(),
            downstream: true,
            parallelism: 1,
        })
        .await?
        .into_inner();
    let total = CHAINS * LENGTH + 1;
    if bf.instances as usize != total {
        bail!("the backfill made {} instances, not {total}", bf.instances);
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = adm
            .list_instances(apb::ListInstancesRequest {
                bizdate: bizdate.clone(),
                state: "success".into(),
                limit: 5000,
                ..Default::default()
            })
            .await?
            .into_inner()
            .instances
            .len();
        if done >= total {
            break;
        }
        if Instant::now() > deadline {
            bail!("{done} of {total} instances succeeded after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    s.stop()?;
    let store = Store::open(&s.data_dir(0))?;
    let backfill = store
        .backfill(&bf.id)?
        .ok_or_else(|| anyhow!("no backfill {}", bf.id))?;
    let instances = store.instances_of_bizdate(&bizdate)?;
    if instances.iter().any(|i| i.state != InstanceState::Success) {
        bail!("not every instance succeeded");
    }
    let last = instances.iter().map(|i| i.finished_ms).max().unwrap_or(0);
    Ok((last - backfill.created_ms) as f64 / 1000.0)
}

/// Seconds from trigger to the last success, for Airflow, by `scripts/bench-airflow.sh`.
fn airflow(keep: bool) -> Result<(f64, String)> {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench-airflow.sh");
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(&script).args([
        "--chains",
        &CHAINS.to_string(),
        "--length",
        &LENGTH.to_string(),
    ]);
    if keep {
        cmd.arg("--keep");
    }
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("{} failed:\n{text}", script.display());
    }
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
    };
    let secs = field("airflow_seconds")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no airflow_seconds in:\n{text}"))?;
    Ok((secs, field("airflow_version").unwrap_or_default()))
}

/// Runs both and prints them side by side.
pub async fn compare(keep: bool) -> Result<()> {
    println!();
    println!("[airflow] {CHAINS} chains of {LENGTH} tasks running `true`");
    let ferry_secs = ferry(keep).await?;
    println!("  ferry: {ferry_secs:.2} s");
    let (airflow_secs, version) = airflow(keep)?;
    println!("  airflow {version}: {airflow_secs:.2} s");
    println!();
    println!("| scheduler | tasks | trigger -> last success s | tasks/s |");
    println!("|---|---|---|---|");
    let tasks = (CHAINS * LENGTH) as f64;
    println!(
        "| Ferry (1 scheduler, 1 agent, {CHAINS} slots, shell) | {} | {ferry_secs:.2} | {:.0} |",
        CHAINS * LENGTH,
        tasks / ferry_secs
    );
    println!(
        "| Airflow {version} (LocalExecutor, PostgreSQL, BashOperator) | {} | {airflow_secs:.2} | {:.1} |",
        CHAINS * LENGTH,
        tasks / airflow_secs
    );
    let ratio = airflow_secs / ferry_secs;
    println!();
    println!(
        "| check | measured | target |\n|---|---|---|\n| Ferry vs Airflow, trigger to last success | {ratio:.1}x faster | >= 50x ({}) |",
        if ratio >= 50.0 { "met" } else { "NOT met" }
    );
    Ok(())
}
