//! `/metrics`, `/healthz` and `/readyz`: plain HTTP on the scheduler's gRPC address, read the
//! way Prometheus and a load balancer read them.

use anyhow::{Result, anyhow, bail};
use ferry_tests::Cluster;
use ferry_tests::ha::Replicated;
use ferry_tests::http::get;
use std::time::Duration;

/// The value of the sample `name` (with its labels, as exposed), if present.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn metrics_count_what_ran_and_health_answers() -> Result<()> {
    let (c, _) = Cluster::start_with_agent("rg")?;
    let job = r#"{"job":{"content":[{"reader":{"name":"streamreader","parameter":{"column":[{"value":"x"}],"sliceRecordCount":250}},"writer":{"name":"streamwriter","parameter":{"print":false}}}]}}"#;
    let path = c.job_file("gen.json", job)?;
    c.ferry(&["task", "create", "gen", "--group", "rg", "--file", &path])?
        .ok()?;
    for d in ["2026-03-01", "2026-03-02"] {
        let out = c.ferry(&["task", "run", "gen", "--bizdate", d])?.ok()?;
        let text = c.wait_final(&Cluster::instance_id(&out)?, Duration::from_secs(60))?;
        if !text.contains("state: success") {
            bail!("run failed:\n{text}");
        }
    }
    let (code, body) = get(&c.url, "/metrics")?;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        sample(&body, r#"ferry_instances{state="success"}"#),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, r#"ferry_agents_online{group="rg"}"#),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, r#"ferry_queue_depth{group="rg"}"#),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "ferry_sync_records_written_total"),
        Some(500.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, r#"ferry_attempts_finished_total{state="succeeded"}"#),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "ferry_dispatch_latency_seconds_count"),
        Some(2.0),
        "{body}"
    );
    assert_eq!(sample(&body, "ferry_leader"), Some(1.0), "{body}");
    assert!(
        sample(&body, "ferry_raft_applied_index").is_some_and(|v| v > 0.0),
        "{body}"
    );
    // No secret or token in the exposition.
    assert!(
        !body.contains(&c.token),
        "the admin token leaked into /metrics"
    );

    assert_eq!(get(&c.url, "/healthz")?.0, 200);
    let (code, body) = get(&c.url, "/readyz")?;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("leader"), "{body}");
    // gRPC still works on the same address.
    c.ferry(&["task", "list"])?.ok()?;
    Ok(())
}

/// In a cluster, a follower is ready (it points callers to the leader) and says it does not
/// lead; the instance counts are the same on every scheduler.
#[test]
fn followers_report_the_same_state_and_are_ready() -> Result<()> {
    let r = Replicated::start(3, &[])?;
    let leader = r.leader(Duration::from_secs(30))?;
    let follower = (0..3)
        .find(|&i| i != leader)
        .ok_or_else(|| anyhow!("no follower"))?;
    let (code, body) = get(&r.urls[follower], "/readyz")?;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("follower"), "{body}");
    let (_, lm) = get(&r.urls[leader], "/metrics")?;
    let (_, fm) = get(&r.urls[follower], "/metrics")?;
    assert_eq!(sample(&lm, "ferry_leader"), Some(1.0), "{lm}");
    assert_eq!(sample(&fm, "ferry_leader"), Some(0.0), "{fm}");
    assert_eq!(sample(&fm, "ferry_raft_members"), Some(3.0), "{fm}");
    Ok(())
}
