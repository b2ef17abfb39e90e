//! Snapshot stall benchmark: how long commits stop while a 3-node cluster snapshots a large
//! state (issue 10). Fills a `KvMachine` with `--keys` keys of `--value` bytes (by default 270 MB
//! in 700,000 records, about a day of 100,000 instances: a record and six index keys each) with
//! no snapshot, restarts the three nodes so that their first snapshot falls `--after` entries
//! later, then runs `--proposers` closed-loop proposers through the leader across that snapshot
//! and reports the longest gap between two commits and the commit rate before and during the
//! snapshot (from the leader reaching the snapshot's index to every node having stored it).
//!
//! It uses only the raft test kit's public API, so the same file builds against an older
//! commit for a before/after comparison in one run (see docs/benchmarks.md).
//!
//! `cargo bench -p ferry-scheduler --bench snapshot_stall -- [--keys N] [--value B]
//! [--after E] [--proposers P]`

use ferry_scheduler::raft::testkit::{TestCluster, set_command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The longest time between two consecutive instants of `times` (sorted) that overlaps
/// `[from, to]`.
fn longest_gap(times: &[Instant], from: Instant, to: Instant) -> Duration {
    times
        .windows(2)
        .filter(|w| w[1] > from && w[0] < to)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

/// The longest time between two consecutive instants of `times` (sorted) inside `[from, to]`.
fn longest_gap_inside(times: &[Instant], from: Instant, to: Instant) -> Duration {
    times
        .windows(2)
        .filter(|w| w[0] >= from && w[1] <= to)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

fn rate(times: &[Instant], from: Instant, to: Instant) -> f64 {
    let n = times.iter().filter(|t| **t >= from && **t < to).count();
    n as f64 / (to - from).as_secs_f64().max(1e-3)
}

async fn fill(cluster: &TestCluster, leader: u64, keys: u64, value: usize) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..256 {
        let handle = cluster.node(leader).handle.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= keys {
                    return anyhow::Ok(());
                }
                // Not compressible, like encoded records.
                let v: Vec<u8> = (0..value)
                    .map(|j| {
                        (i.wrapping_mul(2_654_435_761)
                            .wrapping_add(j as u64 * 40_503)
                            >> 7) as u8
                    })
                    .collect();
                handle.write(set_command(&format!("f{i:09}"), &v)).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes --bench; nothing else of the libtest harness applies here.
    let keys = arg("--keys", 700_000);
    let value = arg("--value", 385) as usize;
    let after = arg("--after", 3000);
    let proposers = arg("--proposers", 8);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let every = Arc::new(AtomicU64::new(u64::MAX / 4));
        let tune_every = every.clone();
        let mut cluster = TestCluster::start_with(3, false, move |c| {
            c.snapshot_every = tune_every.load(Ordering::Relaxed);
            // A blocked applier must show as a gap, not as failed proposals.
            c.request_timeout = Duration::from_secs(300);
        })
        .await?;
        let leader = cluster.wait_leader(Duration::from_secs(20)).await?;
        let started = Instant::now();
        fill(&cluster, leader, keys, value).await?;
        let applied = cluster.node(leader).handle.applied_index();
        cluster
            .wait_applied(applied, Duration::from_secs(300))
            .await?;
        println!(
            "filled {keys} keys of {value} bytes ({} MB) in {:.1} s, applied index {applied}",
            keys * value as u64 / 1_000_000,
            started.elapsed().as_secs_f64()
        );

        // The next start's first snapshot (after the bootstrap one at index 1) falls `after`
        // entries from here, on every node at once.
        let target = applied + after;
        every.store(target - 1, Ordering::Relaxed);
        let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
        for id in &ids {
            cluster.kill(*id).await;
        }
        for id in &ids {
            cluster.restart(*id).await?;
        }
        let leader = cluster.wait_leader(Duration::from_secs(60)).await?;

        let commits: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
        let worst = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for p in 0..proposers {
            let handle = cluster.node(leader).handle.clone();
            let (commits, worst, failed, stop) =
                (commits.clone(), worst.clone(), failed.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let v = vec![b'x'; 200];
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match handle.write(set_command(&format!("m{p}-{i}"), &v)).await {
                        Ok(_) => {
                            let now = Instant::now();
                            commits
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(now);
                            worst.fetch_max((now - t).as_micros() as u64, Ordering::Relaxed);
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    i += 1;
                }
            }));
        }

        // The snapshot runs from the leader reaching its index to every node having stored it.
        let measure_from = Instant::now();
        let mut reached: Option<Instant> = None;
        let deadline = Instant::now() + Duration::from_secs(600);
        let stored = loop {
            if Instant::now() > deadline {
                anyhow::bail!("the snapshot at {target} was not stored within 600 s");
            }
            if reached.is_none() && cluster.node(leader).handle.applied_index() >= target {
                reached = Some(Instant::now());
            }
            let mut all = true;
            for n in cluster.nodes.values() {
                all &= n.handle.status().await?.snapshot_index >= target;
            }
            if all {
                break Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let reached = reached.unwrap_or(stored);
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await?;
        }
        let mut times = commits.lock().unwrap_or_else(|e| e.into_inner()).clone();
        times.sort_unstable();
        println!(
            "| state MB | snapshot s (leader at index -> stored on all 3) | longest gap between commits ms (during; before) | commits/s before | commits/s during | slowest commit ms | failed |"
        );
        println!("|---|---|---|---|---|---|---|");
        println!(
            "| {} | {:.1} | {}; {} | {:.0} | {:.0} | {} | {} |",
            keys * value as u64 / 1_000_000,
            (stored - reached).as_secs_f64(),
            longest_gap(&times, reached, stored).as_millis(),
            longest_gap_inside(&times, measure_from, reached).as_millis(),
            rate(&times, measure_from, reached),
            rate(&times, reached, stored),
            worst.load(Ordering::Relaxed) / 1000,
            failed.load(Ordering::Relaxed),
        );
        Ok(())
    })
}
