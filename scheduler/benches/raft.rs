//! Raft benchmark: committed commands per second on a 3-node cluster over loopback gRPC with
//! many concurrent proposers of ~200-byte commands, and failover time from killing the leader to
//! a new leader and to the first command it commits (default timeouts: 100 ms ticks, election
//! after 10).
//!
//! `cargo bench -p ferry-scheduler --bench raft -- [--proposers N] [--seconds S] [--failovers K]`

use ferry_scheduler::raft::testkit::{TestCluster, set_command};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The scheduler binary's allocator, so the raft layer is measured as it runs there (with
/// glibc's malloc a fifth of this benchmark's time went to the allocator).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn throughput(proposers: u64, seconds: u64, via_followers: bool) -> anyhow::Result<()> {
    // One write per command in the state machine (no digest history), as a real state would do.
    let cluster = TestCluster::start_with(3, false, |c| {
        c.snapshot_every = 100_000;
    })
    .await?;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..proposers {
        let via = if via_followers {
            ids[(p as usize) % ids.len()]
        } else {
            leader
        };
        let handle = cluster.node(via).handle.clone();
        let (done, failed) = (done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let value = vec![b'x'; 190];
            let mut i = 0u64;
            while Instant::now() < stop_at {
                let cmd = set_command(&format!("p{p}-{i}"), &value);
                match handle.write(cmd).await {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
                i += 1;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    let applied = cluster.node(leader).handle.applied_index();
    cluster
        .wait_applied(applied, Duration::from_secs(30))
        .await?;
    println!(
        "throughput: {} proposers via {}: {n} commands committed and applied in {elapsed:.1} s = {:.0}/s ({} failed)",
        proposers,
        if via_followers {
            "all nodes (followers forward)"
        } else {
            "the leader"
        },
        n as f64 / elapsed,
        failed.load(Ordering::Relaxed)
    );
    Ok(())
}

async fn failover(rounds: u64) -> anyhow::Result<()> {
    let mut elected = Vec::new();
    let mut first_commit = Vec::new();
    for _ in 0..rounds {
        let mut cluster = TestCluster::start(3, |_| {}).await?;
        let old = cluster.wait_leader(Duration::from_secs(10)).await?;
        for i in 0..100 {
            cluster.write(old, &format!("k{i}"), b"v").await?;
        }
        let survivor = *cluster
            .nodes
            .keys()
            .find(|id| **id != old)
            .ok_or_else(|| anyhow::anyhow!("no survivor"))?;
        let handle = cluster.node(survivor).handle.clone();
        let killed = Instant::now();
        cluster.kill(old).await;
        let mut role = handle.role();
        role.wait_for(|r| r.leader.as_ref().is_some_and(|(id, _)| *id != old))
            .await?;
        let new = cluster.wait_leader(Duration::from_secs(10)).await?;
        elected.push(killed.elapsed());
        // The new leader's first command: what its first dispatch would be.
        cluster
            .node(new)
            .handle
            .propose(set_command("first", b"dispatch"))
            .await?;
        first_commit.push(killed.elapsed());
    }
    let ms = |d: &Vec<Duration>| {
        d.iter()
            .map(|d| format!("{}", d.as_millis()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "failover (tick 100 ms, election 10 ticks): new leader after [{}] ms; its first commit after [{}] ms",
        ms(&elected),
        ms(&first_commit)
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes --bench; nothing else of the libtest harness applies here.
    let proposers = arg("--proposers", 256);
    let seconds = arg("--seconds", 10);
    let rounds = arg("--failovers", 5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        throughput(proposers, seconds, false).await?;
        throughput(proposers, seconds, true).await?;
        failover(rounds).await
    })
}
