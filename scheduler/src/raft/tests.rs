//! In-process clusters on loopback gRPC: election, replication, forwarding, failover, restart,
//! joining from a snapshot, partitions, and random crashes that must keep every node's applied
//! state a prefix of the same history. Every wait has a deadline; no sleep is an assertion.

use super::testkit::{TestCluster, fast, set_command, wait_until};
use super::*;
use ferry_proto::raft::v1::raft_service_client::RaftServiceClient;
use ferry_proto::raft::v1::{ForwardRequest, StatusRequest};
use rand::{Rng, SeedableRng};
use std::time::Duration;

const WITHIN: Duration = Duration::from_secs(15);

/// Logs to the test's output when RUST_LOG is set (e.g. `RUST_LOG=ferry_scheduler=debug,raft=debug`).
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

fn count(result: &[u8]) -> u64 {
    u64::from_be_bytes(result.try_into().unwrap_or([0; 8]))
}

/// Every pair of nodes agrees on the digest at every index both applied themselves.
fn assert_prefix_consistent(cluster: &TestCluster) {
    let histories: Vec<(u64, std::collections::BTreeMap<u64, u64>)> = cluster
        .nodes
        .values()
        .map(|n| (n.id, n.sm.history()))
        .collect();
    for (a, ha) in &histories {
        for (b, hb) in &histories {
            for (index, digest) in ha {
                if let Some(other) = hb.get(index) {
                    assert_eq!(digest, other, "nodes {a} and {b} differ at index {index}");
                }
            }
        }
    }
}

async fn wait_same_state(cluster: &TestCluster) -> anyhow::Result<()> {
    logs();
    let ok = wait_until(WITHIN, || {
        let digests: Vec<(u64, u64)> = cluster
            .nodes
            .values()
            .map(|n| (n.sm.digest(), n.handle.applied_index()))
            .collect();
        digests.windows(2).all(|w| w[0] == w[1])
    })
    .await;
    if ok.is_err() {
        let view: Vec<(u64, u64, u64)> = cluster
            .nodes
            .values()
            .map(|n| (n.id, n.handle.applied_index(), n.sm.digest()))
            .collect();
        anyhow::bail!("nodes did not converge: (id, applied, digest) {view:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_elects_itself_and_applies() -> anyhow::Result<()> {
    logs();
    let cluster = TestCluster::start(1, fast).await?;
    let leader = cluster.wait_leader(WITHIN).await?;
    assert_eq!(leader, 1);
    let n = cluster.node(1);
    assert!(
        n.handle.has_quorum_lease(),
        "a single voter is its own quorum"
    );
    let r = n.handle.propose(set_command("a", b"1")).await?;
    assert_eq!(count(&r), 1);
    let r = n.handle.propose(set_command("b", b"2")).await?;
    assert_eq!(count(&r), 2);
    let index = n.handle.read_index().await?;
    assert!(n.handle.applied_index() >= index);
    assert_eq!(n.sm.get("b").as_deref(), Some(&b"2"[..]));
    let status = n.handle.status().await?;
    assert_eq!(status.role, "leader");
    assert_eq!(status.members.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_and_replicate() -> anyhow::Result<()> {
    logs();
    let cluster = TestCluster::start(3, fast).await?;
    let leader = cluster.wait_leader(WITHIN).await?;
    let mut last = 0;
    for i in 0..50 {
        let r = cluster.write(leader, &format!("k{i}"), b"v").await?;
        last = count(&r);
    }
    assert_eq!(last, 50, "each proposer gets its own result, in order");
    let applied = cluster.node(leader).handle.applied_index();
    cluster.wait_applied(applied, WITHIN).await?;
    wait_same_state(&cluster).await?;
    for n in cluster.nodes.values() {
        assert_eq!(n.sm.len(), 50, "node {}", n.id);
    }
    assert_prefix_consistent(&cluster);

    let status = cluster.node(leader).handle.status().await?;
    assert_eq!(status.role, "leader");
    assert_eq!(status.members.len(), 3);
    assert!(status.commit_index >= applied);
    for m in &status.members {
        assert!(m.voter);
        assert!(!m.addr.is_empty());
        if m.id != leader {
            assert!(m.matched > 0, "leader tracks member {}", m.id);
        }
    }
    wait_until(WITHIN, || cluster.node(leader).handle.has_quorum_lease())
        .await
        .map_err(|_| anyhow::anyhow!("leader never got a quorum lease"))?;
    for n in cluster.nodes.values().filter(|n| n.id != leader) {
        assert!(!n.handle.has_quorum_lease(), "a follower holds no lease");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_refuses_with_the_leaders_address_and_forwards() -> anyhow::Result<()> {
    logs();
    let cluster = TestCluster::start(3, fast).await?;
    let leader = cluster.wait_leader(WITHIN).await?;
    let follower = *cluster
        .nodes
        .keys()
        .find(|id| **id != leader)
        .ok_or_else(|| anyhow::anyhow!("no follower"))?;
    let f = cluster.node(follower);
    match f.handle.propose(set_command("x", b"1")).await {
        Err(RaftError::NotLeader {
            leader: Some((id, addr)),
        }) => {
            assert_eq!(id, leader);
            assert_eq!(addr, cluster.addrs[&leader]);
        }
        other => anyhow::bail!("expected NotLeader with an address, got {other:?}"),
    }
    // The gRPC form: UNAVAILABLE with the leader in metadata.
    let mut client = RaftServiceClient::connect(f.addr.clone()).await?;
    let status = client
        .forward(ForwardRequest {
            command: set_command("x", b"1"),
        })
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a follower accepted a forwarded proposal"))?;
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(
        status
            .metadata()
            .get(error::LEADER_ADDR_HEADER)
            .and_then(|v| v.to_str().ok()),
        Some(cluster.addrs[&leader].as_str())
    );
    // `write` forwards to the leader and returns the leader's result, once applied here too.
    let r = f.handle.write(set_command("x", b"2")).await?;
    assert_eq!(count(&r), 1);
    assert_eq!(f.sm.get("x").as_deref(), Some(&b"2"[..]));
    // A linearizable read on the follower sees the write.
    f.handle.read_index().await?;
    assert_eq!(f.sm.get("x").as_deref(), Some(&b"2"[..]));
    // Status answers on a follower too, naming the leader.
    let s = client.status(StatusRequest {}).await?.into_inner();
    assert_eq!(s.leader_id, leader);
    assert_eq!(s.role, "follower");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_another_and_loses_nothing_committed() -> anyhow::Result<()> {
    logs();
    let mut cluster = TestCluster::start(3, fast).await?;
    let old = cluster.wait_leader(WITHIN).await?;
    for i in 0..30 {
        cluster.write(old, &format!("before{i}"), b"v").await?;
    }
    cluster.kill(old).await;
    let killed_at = std::time::Instant::now();
    let new = cluster.wait_leader(WITHIN).await?;
    assert_ne!(new, old);
    tracing::info!(
        ms = killed_at.elapsed().as_millis() as u64,
        "new leader elected"
    );
    let via = *cluster
        .nodes
        .keys()
        .next()
        .ok_or_else(|| anyhow::anyhow!("empty"))?;
    for i in 0..30 {
        cluster.write(via, &format!("after{i}"), b"v").await?;
    }
    wait_same_state(&cluster).await?;
    for n in cluster.nodes.values() {
        assert_eq!(n.sm.len(), 60, "node {} has every committed entry", n.id);
    }
    // The old leader comes back as a follower and catches up.
    cluster.restart(old).await?;
    wait_same_state(&cluster).await?;
    assert_eq!(cluster.node(old).sm.len(), 60);
    assert!(!cluster.node(old).handle.is_leader() || cluster.wait_leader(WITHIN).await? == old);
    assert_prefix_consistent(&cluster);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_rejoins_and_catches_up_from_its_directory() -> anyhow::Result<()> {
    logs();
    let mut cluster = TestCluster::start(3, fast).await?;
    let leader = cluster.wait_leader(WITHIN).await?;
    let follower = *cluster
        .nodes
        .keys()
        .find(|id| **id != leader)
        .ok_or_else(|| anyhow::anyhow!("no follower"))?;
    for i in 0..10 {
        cluster.write(leader, &format!("a{i}"), b"v").await?;
    }
    let before = cluster.node(leader).handle.applied_index();
    cluster.wait_applied(before, WITHIN).await?;
    cluster.kill(follower).await;
    for i in 0..40 {
        cluster.write(leader, &format!("b{i}"), b"v").await?;
    }
    cluster.restart(follower).await?;
    let status = cluster.node(follower).handle.status().await?;
    assert!(
        status.last_index >= before,
        "its log survived the restart: {status:?}"
    );
    wait_same_state(&cluster).await?;
    assert_eq!(cluster.node(follower).sm.len(), 50);
    assert_eq!(
        cluster.node(follower).sm.restores(),
        0,
        "caught up from the log"
    );
    assert_prefix_consistent(&cluster);
    Ok(())
}

/// A node added while the leader's log still starts at the beginning (nothing compacted yet)
/// learns the whole configuration, not only its own addition: it must never believe itself
/// the only voter and elect itself beside the real leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_before_any_compaction_learns_every_member() -> anyhow::Result<()> {
    logs();
    let mut cluster = TestCluster::start(3, |c| {
        fast(c);
        c.snapshot_every = 100_000;
    })
    .await?;
    let leader = cluster.wait_leader(WITHIN).await?;
    for i in 0..10 {
        cluster.write(leader, &format!("k{i}"), b"v").await?;
    }
    let addr = cluster.start_joining(4).await?;
    cluster.node(leader).handle.add_voter(4, &addr).await?;
    wait_same_state(&cluster).await?;
    let joined = cluster.node(4).handle.status().await?;
    let mut ids: Vec<u64> = joined.members.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2, 3, 4], "{joined:?}");
    // Time for a wrongly configured node to campaign alone; the leader stays the leader.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cluster.wait_leader(WITHIN).await?, leader);
    assert_eq!(cluster.node(4).sm.len(), 10);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_joins_by_conf_change_and_catches_up_from_a_snapshot() -> anyhow::Result<()> {
    logs();
    let mut cluster = TestCluster::start(3, |c| {
        fast(c);
        c.snapshot_every = 20;
        c.log_tail = 5;
    })
    .await?;
    let leader = cluster.wait_leader(WITHIN).await?;
    for i in 0..100 {
        cluster.write(leader, &format!("k{i}"), &[7u8; 100]).await?;
    }
    let status = cluster.node(leader).handle.status().await?;
    assert!(
        status.snapshot_index > 0,
        "the leader snapshotted: {status:?}"
    );
    assert!(status.first_index > 1, "and compacted its log: {status:?}");

    let addr = cluster.start_joining(4).await?;
    let index = cluster.node(leader).handle.add_voter(4, &addr).await?;
    assert!(index > 0);
    wait_same_state(&cluster).await?;
    let joined = cluster.node(4);
    assert_eq!(joined.sm.len(), 100);
    assert!(joined.sm.restores() >= 1, "caught up from a snapshot");
    let status = cluster.node(leader).handle.status().await?;
    assert_eq!(status.members.len(), 4);
    // The new voter counts: with two of four down, nothing commits; with one down it does.
    let others: Vec<u64> = cluster
        .nodes
        .keys()
        .copied()
        .filter(|id| *id != leader && *id != 4)
        .collect();
    cluster.kill(others[0]).await;
    cluster.write(4, "after-join", b"v").await?;
    // `write` returns once the command is applied on the node it was given to.
    assert_eq!(
        cluster.node(4).sm.get("after-join").as_deref(),
        Some(&b"v"[..])
    );

    // Removing a member: the cluster goes on with the rest.
    let leader = cluster.wait_leader(WITHIN).await?;
    cluster.node(leader).handle.remove_voter(others[0]).await?;
    let status = cluster.node(leader).handle.status().await?;
    assert_eq!(status.members.len(), 3);
    cluster.write(leader, "after-remove", b"v").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_steps_down_and_rejoins_as_follower() -> anyhow::Result<()> {
    logs();
    let cluster = TestCluster::start(3, fast).await?;
    let old = cluster.wait_leader(WITHIN).await?;
    cluster.write(old, "before", b"v").await?;
    let config_timeout = Duration::from_millis(30) * 10;

    cluster.partition.isolate(old);
    let cut = std::time::Instant::now();
    // Fencing: the lease goes within half an election timeout, the leadership within about one
    // (check_quorum).
    wait_until(WITHIN, || !cluster.node(old).handle.has_quorum_lease())
        .await
        .map_err(|_| anyhow::anyhow!("isolated leader kept its lease"))?;
    let lease_gone = cut.elapsed();
    wait_until(WITHIN, || !cluster.node(old).handle.is_leader())
        .await
        .map_err(|_| anyhow::anyhow!("isolated leader did not step down"))?;
    let stepped_down = cut.elapsed();
    assert!(lease_gone <= stepped_down + Duration::from_millis(50));
    assert!(
        stepped_down < config_timeout * 4,
        "stepped down after {stepped_down:?}"
    );
    // The majority elects a new leader and goes on.
    let majority: Vec<u64> = cluster
        .nodes
        .keys()
        .copied()
        .filter(|id| *id != old)
        .collect();
    wait_until(WITHIN, || {
        majority
            .iter()
            .any(|id| cluster.node(*id).handle.has_quorum_lease())
    })
    .await
    .map_err(|_| anyhow::anyhow!("the majority elected no leader"))?;
    cluster.write(majority[0], "during", b"v").await?;
    // A proposal on the isolated node cannot commit.
    assert!(
        cluster
            .node(old)
            .handle
            .propose(set_command("lost", b"v"))
            .await
            .is_err()
    );

    cluster.partition.heal();
    let leader = cluster.wait_leader(WITHIN).await?;
    assert_ne!(
        leader, old,
        "pre-vote keeps the rejoining node from disrupting the leader"
    );
    wait_same_state(&cluster).await?;
    assert_eq!(
        cluster.node(old).sm.get("during").as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(cluster.node(old).sm.get("lost"), None);
    assert_prefix_consistent(&cluster);
    Ok(())
}

/// Random proposals, crashes and restarts (never more than a minority down at once), with a
/// seed per run printed for reproduction: applied states stay prefix-consistent throughout and
/// converge at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_proposals_and_crashes_keep_states_prefix_consistent() -> anyhow::Result<()> {
    logs();
    let seed: u64 = std::env::var("FERRY_RAFT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("FERRY_RAFT_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cluster = TestCluster::start(3, |c| {
        fast(c);
        c.snapshot_every = 25;
        c.log_tail = 5;
    })
    .await?;
    cluster.wait_leader(WITHIN).await?;
    let mut down: Option<u64> = None;
    let mut acknowledged = Vec::new();
    for step in 0..12 {
        match rng.random_range(0..4) {
            0 if down.is_none() => {
                let id = rng.random_range(1..=3u64);
                cluster.kill(id).await;
                down = Some(id);
            }
            1 => {
                if let Some(id) = down.take() {
                    cluster.restart(id).await?;
                }
            }
            _ => {}
        }
        let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
        let writes = rng.random_range(1..15);
        let mut pending = Vec::new();
        for w in 0..writes {
            let via = ids[rng.random_range(0..ids.len())];
            let handle = cluster.node(via).handle.clone();
            let key = format!("s{step}-w{w}");
            pending.push(tokio::spawn(async move {
                let r = handle.write(set_command(&key, b"v")).await;
                (key, r)
            }));
        }
        for p in pending {
            let (key, r) = p.await?;
            match r {
                Ok(_) => acknowledged.push(key),
                // A write can time out or be dropped across a crash; it is then not acknowledged.
                Err(RaftError::Timeout(_) | RaftError::Dropped | RaftError::Stopped) => {}
                Err(e) => anyhow::bail!("write {key} failed: {e}"),
            }
        }
        assert_prefix_consistent(&cluster);
    }
    if let Some(id) = down.take() {
        cluster.restart(id).await?;
    }
    cluster.wait_leader(WITHIN).await?;
    wait_same_state(&cluster).await?;
    assert_prefix_consistent(&cluster);
    for n in cluster.nodes.values() {
        for key in &acknowledged {
            assert!(
                n.sm.get(key).is_some(),
                "node {} lost acknowledged {key}",
                n.id
            );
        }
    }
    Ok(())
}

/// Concurrent proposals are packed into shared entries; each proposer still gets its own result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_proposals_are_packed_and_each_gets_its_own_result() -> anyhow::Result<()> {
    logs();
    let cluster = TestCluster::start(3, fast).await?;
    let leader = cluster.wait_leader(WITHIN).await?;
    let mut tasks = Vec::new();
    for i in 0..300 {
        let handle = cluster.node(leader).handle.clone();
        tasks.push(tokio::spawn(async move {
            handle.propose(set_command(&format!("c{i}"), b"v")).await
        }));
    }
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(count(&t.await??));
    }
    counts.sort_unstable();
    assert_eq!(
        counts,
        (1..=300).collect::<Vec<u64>>(),
        "one distinct result per proposer"
    );
    let status = cluster.node(leader).handle.status().await?;
    assert!(
        status.last_index < 300,
        "300 commands took {} log entries: they were not packed",
        status.last_index
    );
    wait_same_state(&cluster).await?;
    assert_prefix_consistent(&cluster);
    Ok(())
}
