//! The applier goes on applying while a snapshot is written, and the snapshot it stores is the
//! state at the index it started at.

use super::*;
use crate::raft::testkit::{KvMachine, set_command};
use crate::raft::{SnapshotSource, StateMachineError};
use raft::prelude::Entry;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

const WITHIN: Duration = Duration::from_secs(15);

/// A [`KvMachine`] whose first snapshot waits for a signal before writing anything, so a test
/// holds it open.
struct HeldSnapshot {
    kv: KvMachine,
    gate: Mutex<Option<std_mpsc::Receiver<()>>>,
}

struct HeldSource {
    inner: Box<dyn SnapshotSource>,
    gate: Option<std_mpsc::Receiver<()>>,
}

impl SnapshotSource for HeldSource {
    fn index(&self) -> u64 {
        self.inner.index()
    }

    fn write_to(
        self: Box<Self>,
        out: &mut dyn std::io::Write,
    ) -> std::result::Result<(), StateMachineError> {
        if let Some(gate) = &self.gate {
            let _ = gate.recv();
        }
        self.inner.write_to(out)
    }
}

impl StateMachine for HeldSnapshot {
    fn apply(
        &self,
        entries: &mut [Committed<'_>],
    ) -> std::result::Result<Vec<Vec<u8>>, StateMachineError> {
        self.kv.apply(entries)
    }

    fn applied_index(&self) -> u64 {
        self.kv.applied_index()
    }

    fn begin_snapshot(&self) -> std::result::Result<Box<dyn SnapshotSource>, StateMachineError> {
        let inner = self.kv.begin_snapshot()?;
        let gate = self.gate.lock().unwrap_or_else(|p| p.into_inner()).take();
        Ok(Box::new(HeldSource { inner, gate }))
    }

    fn restore(
        &self,
        index: u64,
        data: &mut dyn std::io::Read,
    ) -> std::result::Result<(), StateMachineError> {
        self.kv.restore(index, data)
    }
}

fn entries(from: u64, to: u64) -> ApplyTask {
    ApplyTask::Entries(
        (from..=to)
            .map(|i| CommittedEntry {
                entry: Entry {
                    index: i,
                    term: 1,
                    data: set_command(&format!("k{i:03}"), b"v").into(),
                    ..Default::default()
                },
                conf_state: None,
                prepared: Vec::new(),
            })
            .collect(),
    )
}

/// An applier of a new state (node 1), with what it tells the node and its applied index.
fn fresh_applier<S: StateMachine>(
    sm: Arc<S>,
    db: &sled::Db,
    snaps: &SnapshotStore,
    snapshot_every: u64,
) -> (Applier<S>, mpsc::Receiver<NodeMsg>, watch::Receiver<u64>) {
    let (node_tx, node_rx) = mpsc::channel(1024);
    let applied_tx = watch::Sender::new(0);
    let applied_rx = applied_tx.subscribe();
    let applier = Applier {
        sm,
        db: db.clone(),
        snaps: snaps.clone(),
        node: node_tx,
        waiters: Arc::new(Mutex::new(Waiters::default())),
        applied_tx,
        applied: 0,
        applied_term: 0,
        conf_state: ConfState::default(),
        conf_valid_from: 0,
        last_snapshot: 0,
        snapshot_every,
        id: 1,
        writing: None,
    };
    (applier, node_rx, applied_rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_apply_while_a_snapshot_is_written() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = sled::Config::new().path(dir.path()).open()?;
    let (release, gate) = std_mpsc::channel();
    let sm = Arc::new(HeldSnapshot {
        kv: KvMachine::open(&db)?,
        gate: Mutex::new(Some(gate)),
    });
    let snaps = SnapshotStore::open(&db, &dir.path().join("snapshots"))?;
    let (applier, mut node_rx, mut applied_rx) = fresh_applier(sm.clone(), &db, &snaps, 10);
    let (tasks, tasks_rx) = mpsc::channel(64);
    let thread = std::thread::spawn(move || applier.run(tasks_rx));

    // Index 10 starts a snapshot, which the gate holds open.
    tasks.send(entries(1, 10)).await?;
    tokio::time::timeout(WITHIN, applied_rx.wait_for(|i| *i >= 10)).await??;
    // Entries go on applying meanwhile, past the point of the next snapshot (20), which waits
    // for this one.
    for i in 11..=35 {
        tasks.send(entries(i, i)).await?;
    }
    tokio::time::timeout(WITHIN, applied_rx.wait_for(|i| *i >= 35)).await??;
    assert_eq!(sm.kv.get("k035").as_deref(), Some(&b"v"[..]));
    assert_eq!(snaps.complete_size(10)?, None, "the snapshot is still held");
    while let Ok(msg) = node_rx.try_recv() {
        assert!(
            !matches!(msg, NodeMsg::SnapshotMade(_)),
            "no snapshot is reported before it is written"
        );
    }

    release.send(())?;
    let meta = tokio::time::timeout(WITHIN, async {
        loop {
            match node_rx.recv().await {
                Some(NodeMsg::SnapshotMade(meta)) => return Some(meta),
                Some(_) => {}
                None => return None,
            }
        }
    })
    .await?
    .ok_or_else(|| anyhow::anyhow!("the applier stopped before reporting the snapshot"))?;
    assert_eq!(meta.index, 10);
    assert_eq!(meta.term, 1);

    // The stored snapshot is the state at 10, not at 35.
    let other = tempfile::tempdir()?;
    let other_db = sled::Config::new().path(other.path()).open()?;
    let restored = KvMachine::open(&other_db)?;
    restored
        .restore(10, &mut snaps.reader(10)?)
        .map_err(|e| anyhow::anyhow!("restore: {e}"))?;
    assert_eq!(restored.len(), 10);
    assert_eq!(restored.get("k010").as_deref(), Some(&b"v"[..]));
    assert_eq!(restored.get("k011"), None);
    assert_eq!(Some(&restored.digest()), sm.kv.history().get(&10));

    drop(tasks);
    thread
        .join()
        .map_err(|_| anyhow::anyhow!("applier panicked"))?;
    Ok(())
}

/// The members of a cluster snapshot at their own phases: node 1 every `every` entries from 0,
/// the others shifted, so no two write a snapshot at the same index; each keeps the interval.
#[test]
fn members_snapshot_at_their_own_phase() {
    let every = 10_000;
    let mut all = std::collections::BTreeSet::new();
    for id in 1..=3u64 {
        let mut last = 0;
        let mut taken = Vec::new();
        for applied in 1..=100_000 {
            if super::snapshot_due(applied, last, every, id) {
                taken.push(applied);
                last = applied;
            }
        }
        assert!(taken.len() >= 9, "node {id}: {taken:?}");
        for pair in taken.windows(2) {
            assert_eq!(pair[1] - pair[0], every, "node {id}: {taken:?}");
        }
        for t in &taken {
            assert!(all.insert(*t), "node {id} snapshots at {t} as another does");
        }
        if id == 1 {
            assert_eq!(taken[0], every, "a single scheduler snapshots as before");
        }
    }
    // Applies come in batches: a node past its point snapshots at once, and never waits for
    // more than two intervals whatever it last snapshotted at.
    assert!(super::snapshot_due(12_600, 0, every, 2));
    assert!(super::snapshot_due(20_001, 1, every, 3));
}

/// A [`KvMachine`] that prepares every command and records, per apply call, which of its
/// commands came prepared.
struct Recording {
    kv: KvMachine,
    calls: Mutex<Vec<Vec<bool>>>,
}

impl StateMachine for Recording {
    fn apply(
        &self,
        entries: &mut [Committed<'_>],
    ) -> std::result::Result<Vec<Vec<u8>>, StateMachineError> {
        let prepared = entries
            .iter()
            .map(|e| {
                e.prepared
                    .as_ref()
                    .and_then(|p| p.downcast_ref::<usize>())
                    .is_some_and(|len| *len == e.data.len())
            })
            .collect();
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(prepared);
        self.kv.apply(entries)
    }

    fn prepare(&self, data: &[u8]) -> Option<Prepared> {
        Some(Box::new(data.len()))
    }

    fn applied_index(&self) -> u64 {
        self.kv.applied_index()
    }

    fn begin_snapshot(&self) -> std::result::Result<Box<dyn SnapshotSource>, StateMachineError> {
        self.kv.begin_snapshot()
    }

    fn restore(
        &self,
        index: u64,
        data: &mut dyn std::io::Read,
    ) -> std::result::Result<(), StateMachineError> {
        self.kv.restore(index, data)
    }
}

/// Entries that queue up while the applier is busy go through the preparing thread (each
/// command arrives prepared) and are applied in one call, up to the next task of another kind,
/// which keeps its place: a snapshot asked for between them is at the index before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_entries_arrive_prepared_and_apply_together() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = sled::Config::new().path(dir.path()).open()?;
    let sm = Arc::new(Recording {
        kv: KvMachine::open(&db)?,
        calls: Mutex::new(Vec::new()),
    });
    let snaps = SnapshotStore::open(&db, &dir.path().join("snapshots"))?;
    let (applier, mut node_rx, mut applied_rx) = fresh_applier(sm.clone(), &db, &snaps, 1_000);
    let (tasks, tasks_rx) = mpsc::unbounded_channel();
    let (prepared_tx, mut prepared_rx) = mpsc::channel(PREPARED_AHEAD);
    tasks.send(entries(1, 3))?;
    tasks.send(entries(4, 6))?;
    tasks.send(ApplyTask::MakeSnapshot)?;
    tasks.send(entries(7, 8))?;
    tasks.send(entries(9, 9))?;
    drop(tasks);
    let preparing = sm.clone();
    std::thread::spawn(move || prepare_ahead(preparing, tasks_rx, prepared_tx))
        .join()
        .map_err(|_| anyhow::anyhow!("preparing thread panicked"))?;
    // Everything is prepared and queued before the applier starts.
    let (queued, queued_rx) = mpsc::channel(PREPARED_AHEAD);
    while let Ok(task) = prepared_rx.try_recv() {
        queued.send(task).await?;
    }
    let thread = std::thread::spawn(move || applier.run(queued_rx));
    tokio::time::timeout(WITHIN, applied_rx.wait_for(|i| *i >= 9)).await??;
    let made = tokio::time::timeout(WITHIN, async {
        loop {
            match node_rx.recv().await {
                Some(NodeMsg::SnapshotMade(meta)) => return Some(meta.index),
                Some(_) => {}
                None => return None,
            }
        }
    })
    .await?;
    assert_eq!(
        made,
        Some(6),
        "the snapshot is at the index it was asked for after"
    );
    drop(queued);
    thread
        .join()
        .map_err(|_| anyhow::anyhow!("applier panicked"))?;

    let calls = sm.calls.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(calls, vec![vec![true; 6], vec![true; 3]]);
    assert_eq!(sm.kv.len(), 9);
    Ok(())
}
