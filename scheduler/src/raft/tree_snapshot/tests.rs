//! The snapshot of a tree is the tree at its moment, with a writer changing it meanwhile: a
//! scripted case that puts writes on both sides of the cursor, and generated cases.

use super::*;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// Output that takes one permit per write (one record), so a test holds the snapshot's
/// iterator where it wants it; once the permits' sender is gone it runs freely.
struct Gated {
    permits: Receiver<()>,
    out: Vec<u8>,
}

impl Write for Gated {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let _ = self.permits.recv();
        self.out.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn key(n: u32) -> Vec<u8> {
    format!("k{n:03}").into_bytes()
}

fn tree() -> anyhow::Result<(tempfile::TempDir, sled::Tree)> {
    let dir = tempfile::tempdir()?;
    let db = sled::Config::new().path(dir.path()).open()?;
    let tree = db.open_tree("state")?;
    Ok((dir, tree))
}

/// The tree as a snapshot of it with nothing written meanwhile: what every snapshot must equal.
fn paused_copy(cow: &CopyOnWrite) -> anyhow::Result<Vec<u8>> {
    let snapshot = cow.begin(0, |_| false)?;
    let mut out = Vec::new();
    snapshot.write(&mut out)?;
    Ok(out)
}

/// One write as the state machine's writer makes it: pre-images first, then the change.
fn put(cow: &CopyOnWrite, tree: &sled::Tree, k: &[u8], v: Option<&[u8]>) -> anyhow::Result<()> {
    cow.before_write([k])?;
    match v {
        Some(v) => tree.insert(k, v)?,
        None => tree.remove(k)?,
    };
    Ok(())
}

/// The thread writing a snapshot, which returns what it wrote.
type Writer = JoinHandle<Result<Vec<u8>>>;

/// Starts writing a snapshot on its own thread, one record per permit.
fn start(cow: &CopyOnWrite) -> anyhow::Result<(SyncSender<()>, Writer)> {
    let snapshot = cow.begin(7, |_| false)?;
    let (permits, rx) = sync_channel(0);
    let thread = std::thread::spawn(move || {
        let mut out = Gated {
            permits: rx,
            out: Vec::new(),
        };
        snapshot.write(&mut out).map(|_| out.out)
    });
    Ok((permits, thread))
}

fn finish(permits: SyncSender<()>, thread: Writer) -> anyhow::Result<Vec<u8>> {
    drop(permits);
    thread
        .join()
        .map_err(|_| anyhow::anyhow!("snapshot thread panicked"))?
        .map_err(Into::into)
}

#[test]
fn writes_on_both_sides_of_the_cursor_do_not_show() -> anyhow::Result<()> {
    let (_dir, tree) = tree()?;
    let cow = CopyOnWrite::new(tree.clone());
    for n in 0..200 {
        tree.insert(key(n), b"at the moment".as_slice())?;
    }
    let moment = paused_copy(&cow)?;
    let (permits, thread) = start(&cow)?;
    // 50 records out: the iterator holds k049 or k050 (it reads one ahead of its permit).
    for _ in 0..50 {
        permits.send(())?;
    }
    // Behind the cursor: changed, removed, created.
    put(&cow, &tree, &key(10), Some(b"later"))?;
    put(&cow, &tree, &key(20), None)?;
    put(&cow, &tree, b"k005a", Some(b"created later"))?;
    // Ahead of it: changed twice, removed, created, removed and created again, created and removed.
    put(&cow, &tree, &key(180), Some(b"later"))?;
    put(&cow, &tree, &key(180), Some(b"later still"))?;
    put(&cow, &tree, &key(160), None)?;
    put(&cow, &tree, b"k150a", Some(b"created later"))?;
    put(&cow, &tree, &key(170), None)?;
    put(&cow, &tree, &key(170), Some(b"back"))?;
    put(&cow, &tree, b"k190a", Some(b"created later"))?;
    put(&cow, &tree, b"k190a", None)?;
    put(&cow, &tree, &key(199), None)?;
    assert_eq!(
        cow.recorded(),
        6,
        "only keys ahead of the cursor are recorded, each once"
    );
    for _ in 0..30 {
        permits.send(())?;
    }
    // Keys the cursor passed meanwhile are no longer recorded.
    put(&cow, &tree, &key(60), Some(b"later"))?;
    assert_eq!(cow.recorded(), 6);
    let written = finish(permits, thread)?;
    assert!(
        written == moment,
        "the snapshot is not the tree at its moment"
    );
    assert_eq!(
        cow.recorded(),
        0,
        "nothing is kept once the snapshot is written"
    );
    put(&cow, &tree, &key(100), Some(b"after"))?;
    assert_eq!(cow.recorded(), 0, "nothing is recorded without a snapshot");
    Ok(())
}

#[test]
fn one_snapshot_at_a_time_and_a_cancelled_one_fails() -> anyhow::Result<()> {
    let (_dir, tree) = tree()?;
    let cow = CopyOnWrite::new(tree.clone());
    tree.insert(key(1), b"v".as_slice())?;
    let first = cow.begin(1, |_| false)?;
    assert!(matches!(
        cow.begin(1, |_| false),
        Err(RaftError::SnapshotInProgress)
    ));
    drop(first);
    let second = cow.begin(1, |_| false)?;
    put(&cow, &tree, &key(2), Some(b"v"))?;
    assert_eq!(cow.recorded(), 1);
    cow.cancel();
    put(&cow, &tree, &key(3), Some(b"v"))?;
    assert_eq!(cow.recorded(), 0);
    assert!(matches!(
        second.write(&mut Vec::new()),
        Err(RaftError::SnapshotCancelled)
    ));
    // A cancelled snapshot does not hold the place of the next one.
    drop(second);
    cow.begin(3, |_| false)?;
    Ok(())
}

/// A change the writer makes while the snapshot is written, or permits for its next records.
#[derive(Debug, Clone)]
enum Op {
    Put(u32, u8),
    Remove(u32),
    Records(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..96u32, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (0..96u32).prop_map(Op::Remove),
        2 => (1..12usize).prop_map(Op::Records),
    ]
}

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 64;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0x5eed_0011);
    }
    config
}

fn snapshot_meanwhile(initial: &[(u32, u8)], ops: &[Op]) -> anyhow::Result<()> {
    let (_dir, tree) = tree()?;
    let cow = CopyOnWrite::new(tree.clone());
    for (k, v) in initial {
        tree.insert(key(*k), vec![*v])?;
    }
    let moment = paused_copy(&cow)?;
    let (permits, thread) = start(&cow)?;
    for op in ops {
        match op {
            Op::Put(k, v) => put(&cow, &tree, &key(*k), Some(&[*v]))?,
            Op::Remove(k) => put(&cow, &tree, &key(*k), None)?,
            Op::Records(n) => {
                for _ in 0..*n {
                    if permits.send(()).is_err() {
                        break;
                    }
                }
            }
        }
    }
    let written = finish(permits, thread)?;
    anyhow::ensure!(
        written == moment,
        "the snapshot ({} bytes) is not the tree at its moment ({} bytes)",
        written.len(),
        moment.len()
    );
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_snapshot_written_during_writes_is_the_tree_at_its_moment(
        initial in proptest::collection::vec((0..96u32, any::<u8>()), 0..96),
        ops in proptest::collection::vec(op(), 0..120),
    ) {
        snapshot_meanwhile(&initial, &ops).map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
    }
}
