//! A model test of the store as raft's state machine (issue 10): random logs of realistic
//! commands, over names from a small alphabet so that duplicates, unknown names and stale
//! fencing tokens happen, applied to fresh sled stores in the ways raft may apply them.
//!
//! Properties, each over its own generated logs:
//! 1. packing the commands into log entries (and entries into apply calls) at random points
//!    changes neither the state nor any command's outcome, nor does decoding the commands
//!    ahead of apply (as the raft node's preparing thread does);
//! 2. entries at or below the applied index change nothing and get no result when applied
//!    again, on the same store or after it is reopened, also mixed with new entries;
//! 3. a snapshot at any point, restored into a fresh or a used store and followed by the rest of
//!    the log, ends byte for byte where the whole log ends; a torn snapshot is refused and the
//!    store no longer claims an index it does not hold;
//! 4. a refused command leaves no trace: the state is unchanged but for the applied index, and
//!    the log without its refused commands ends in the same state;
//! 5. a snapshot begun at any point and written on another thread while the rest of the log
//!    applies is, byte for byte, the state at that point (as a snapshot taken with applies
//!    paused), and restores to it;
//! 6. the instance list's indexes and counters agree with the instance records (lists by day
//!    and state, searches, counts), also on a store whose days were listed part way through the
//!    log and so were held in memory while the rest applied; and the dispatch queue held in
//!    memory is the instances waiting for resources, in dispatch order.
//!
//! Logs are made by `random_log` against a reference store that applies them one command per
//! entry, so they reach retries, timeouts, late reports and downstream instances rather than
//! being refused at their first step (`generated_logs_reach_deep_states` checks that they do).
//!
//! Each property runs 64 cases from a fixed seed. `PROPTEST_CASES` runs more and
//! `PROPTEST_RNG_SEED` explores other logs:
//! `PROPTEST_CASES=1000 PROPTEST_RNG_SEED=7 cargo nextest run -p ferry-scheduler --test replica_model`.
//! A failing case is minimised and saved to `replica_model.proptest-regressions` beside this
//! file, which is committed and replayed first on every run.

use anyhow::{Context as _, Result, anyhow, ensure};
use ferry_scheduler::raft::{Committed, StateMachine};
use ferry_scheduler::state::model::{InstanceState, Queued};
use ferry_scheduler::state::replica::decode_command;
use ferry_scheduler::state::{ListQuery, Store};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;
use proptest::test_runner::{RngSeed, TestCaseError, TestRunner};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::sync::mpsc::{Receiver, sync_channel};

#[path = "replica_model/random_log.rs"]
mod random_log;

use random_log::{MAX_OPS, Maker, Op, op_strategy, preamble};

/// The seed of the cases CI runs, unless `PROPTEST_RNG_SEED` is set.
const SEED: u64 = 0x5eed_0010;

/// One generated case: the choices of the log, where entries and apply calls split, and the
/// points a property picks.
#[derive(Debug, Clone)]
struct Case {
    preamble: bool,
    ops: Vec<Op>,
    /// Per command (in the order applied): whether it starts a new log entry.
    cuts: Vec<bool>,
    /// Per entry: whether it starts a new apply call.
    calls: Vec<bool>,
    /// Where the snapshot is taken, or how much a store applied before it restarts.
    at: Index,
    /// What the store a snapshot is restored into had applied, or where a replay starts.
    other: Index,
    /// Where a torn snapshot ends.
    torn: Index,
    /// Per apply call made while a snapshot is written: how many of its records go out first.
    records: Vec<usize>,
}

impl Case {
    fn ops(&self) -> Vec<Op> {
        let mut ops = if self.preamble {
            preamble()
        } else {
            Vec::new()
        };
        ops.extend(self.ops.iter().cloned());
        ops
    }
}

fn case_strategy() -> impl Strategy<Value = Case> {
    let room = MAX_OPS + preamble().len();
    (
        proptest::bool::weighted(0.85),
        proptest::collection::vec(op_strategy(), 1..MAX_OPS),
        proptest::collection::vec(proptest::bool::weighted(0.4), room),
        proptest::collection::vec(proptest::bool::weighted(0.5), room),
        any::<Index>(),
        any::<Index>(),
        any::<Index>(),
        proptest::collection::vec(0..24usize, room),
    )
        .prop_map(
            |(preamble, ops, cuts, calls, at, other, torn, records)| Case {
                preamble,
                ops,
                cuts,
                calls,
                at,
                other,
                torn,
                records,
            },
        )
}

/// 64 cases from a fixed seed, unless `PROPTEST_CASES` / `PROPTEST_RNG_SEED` say otherwise.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 64;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(SEED);
    }
    config
}

fn open(dir: &Path) -> Result<Store> {
    Ok(Store::open(dir)?)
}

/// Opens the store again in the same process. sled's background flusher can hold the
/// directory's lock for a moment after the previous handle is dropped, so poll with a deadline.
fn reopen(dir: &Path) -> Result<Store> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Store::open(dir) {
            Ok(s) => return Ok(s),
            Err(e) if std::time::Instant::now() > deadline => return Err(e.into()),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}

/// Applies `(index, data)` entries in one call, as the raft applier does.
fn apply(store: &Store, entries: &[(u64, &[u8])]) -> Result<Vec<Vec<u8>>> {
    apply_with(store, entries, false)
}

/// [`apply`], with each command prepared first when `prepared` (decoded on the raft node's
/// preparing thread, ahead of the applier, as a running node does).
fn apply_with(store: &Store, entries: &[(u64, &[u8])], prepared: bool) -> Result<Vec<Vec<u8>>> {
    let mut committed: Vec<Committed<'_>> = entries
        .iter()
        .map(|(index, data)| {
            let mut c = Committed::new(*index, 1, data);
            if prepared && !data.is_empty() {
                c.prepared = StateMachine::prepare(store, data);
            }
            c
        })
        .collect();
    let out = StateMachine::apply(store, &mut committed).map_err(|e| anyhow!("apply: {e}"))?;
    ensure!(
        out.len() == entries.len(),
        "{} results for {} commands",
        out.len(),
        entries.len()
    );
    Ok(out)
}

/// The whole state as the snapshot function writes it; checks it is at the applied index.
fn dump(store: &Store) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let index = StateMachine::snapshot(store, &mut out).map_err(|e| anyhow!("snapshot: {e}"))?;
    ensure!(
        index == store.applied_index(),
        "snapshot at {index}, store at {}",
        store.applied_index()
    );
    Ok(out)
}

type Records = BTreeMap<Vec<u8>, Vec<u8>>;

/// The records of a dump, and the offsets where records start.
fn records(dump: &[u8]) -> Result<(Records, BTreeSet<usize>)> {
    let mut out = Records::new();
    let mut starts = BTreeSet::new();
    let mut rest = dump;
    let chunk = |rest: &mut &[u8]| -> Result<Vec<u8>> {
        ensure!(rest.len() >= 4, "dump ends inside a length");
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        ensure!(rest.len() >= 4 + len, "dump ends inside a record");
        let data = rest[4..4 + len].to_vec();
        *rest = &rest[4 + len..];
        Ok(data)
    };
    while !rest.is_empty() {
        starts.insert(dump.len() - rest.len());
        let k = chunk(&mut rest)?;
        let v = chunk(&mut rest)?;
        out.insert(k, v);
    }
    Ok((out, starts))
}

const APPLIED_KEY: &[u8] = b"m/applied";
const AUDIT_PREFIX: &[u8] = b"z/";

/// The records of a dump but the applied index.
fn without_applied(dump: &[u8]) -> Result<Records> {
    let (mut r, _) = records(dump)?;
    r.remove(APPLIED_KEY);
    Ok(r)
}

/// The records of a dump as they do not depend on how commands were packed into entries: no
/// applied index, and audit records keyed by time and their order rather than by the log index
/// and position of the command that wrote them.
fn unpacked(dump: &[u8]) -> Result<Records> {
    let mut out = Records::new();
    let mut n = 0usize;
    for (k, v) in without_applied(dump)? {
        // `z/<at_ms:020>/<index:020>/<pos:06>`
        if k.starts_with(AUDIT_PREFIX) && k.len() > AUDIT_PREFIX.len() + 20 {
            let mut key = k[..AUDIT_PREFIX.len() + 20].to_vec();
            key.extend_from_slice(format!("/#{n:06}").as_bytes());
            n += 1;
            out.insert(key, v);
        } else {
            out.insert(k, v);
        }
    }
    Ok(out)
}

/// The first records where two states differ, for people.
fn diff(left: &Records, right: &Records) -> String {
    let show = |v: Option<&Vec<u8>>| match v {
        Some(v) => {
            let s = String::from_utf8_lossy(v);
            s.chars().take(400).collect::<String>()
        }
        None => "<absent>".into(),
    };
    left.keys()
        .chain(right.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|k| left.get(*k) != right.get(*k))
        .take(4)
        .map(|k| {
            format!(
                "  {}:\n    left:  {}\n    right: {}",
                String::from_utf8_lossy(k),
                show(left.get(k)),
                show(right.get(k))
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn same_state(left: &Records, right: &Records, what: &str) -> Result<()> {
    ensure!(left == right, "{what}:\n{}", diff(left, right));
    Ok(())
}

/// Whether a command's outcome is a refusal.
fn refused(outcome: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(outcome)
        .ok()
        .and_then(|v| v.get("Refused").cloned())
        .is_some()
}

/// The log for people: one line per command.
fn render(log: &[Vec<u8>], outcomes: &[Vec<u8>]) -> String {
    log.iter()
        .enumerate()
        .map(|(i, data)| {
            let cmd = if data.is_empty() {
                "<empty entry>".to_string()
            } else {
                match decode_command(data) {
                    Ok(c) => serde_json::to_string(&c).unwrap_or_default(),
                    Err(_) => format!("<garbage {:?}>", String::from_utf8_lossy(data)),
                }
            };
            let cmd: String = cmd.chars().take(300).collect();
            let outcome: String = outcomes
                .get(i)
                .map(|o| String::from_utf8_lossy(o).chars().take(200).collect())
                .unwrap_or_default();
            format!("{:3}: {cmd}\n     -> {outcome}", i + 1)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A log applied one command per entry, entry `i + 1` holding command `i`.
struct Reference {
    store: Store,
    _dir: tempfile::TempDir,
    log: Vec<Vec<u8>>,
    outcomes: Vec<Vec<u8>>,
    /// The state after every command, when asked for.
    dumps: Vec<Vec<u8>>,
}

impl Reference {
    /// Makes the log of `ops` while applying it to a fresh store.
    fn run(ops: &[Op], keep_dumps: bool) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let store = open(dir.path())?;
        let mut log = Vec::with_capacity(ops.len());
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut dumps = Vec::new();
        if keep_dumps {
            dumps.push(dump(&store)?);
        }
        let mut maker = Maker::new(&store);
        for (pos, op) in ops.iter().enumerate() {
            let data = maker.entry(pos, op)?;
            let mut out = apply(&store, &[(pos as u64 + 1, &data)])?;
            log.push(data);
            outcomes.push(out.pop().unwrap_or_default());
            if keep_dumps {
                dumps.push(dump(&store)?);
            }
        }
        Ok(Self {
            store,
            _dir: dir,
            log,
            outcomes,
            dumps,
        })
    }

    fn entries(&self, from: usize, to: usize) -> Vec<(u64, &[u8])> {
        (from..to)
            .map(|i| (i as u64 + 1, self.log[i].as_slice()))
            .collect()
    }

    /// Adds the log to an error.
    fn explain<T>(&self, r: Result<T>) -> Result<T> {
        r.with_context(|| format!("the log:\n{}", render(&self.log, &self.outcomes)))
    }
}

/// Log positions packed into entries: a new entry where `cuts` says, and raft's own empty
/// entries always alone (raft never packs them with commands).
fn pack(log: &[Vec<u8>], positions: &[usize], cuts: &[bool]) -> Vec<Vec<usize>> {
    let mut entries: Vec<Vec<usize>> = Vec::new();
    let mut last_empty = false;
    for (i, &pos) in positions.iter().enumerate() {
        let empty = log[pos].is_empty();
        let cut = cuts.get(i).copied().unwrap_or(true) || empty || last_empty;
        match entries.last_mut() {
            Some(e) if !cut => e.push(pos),
            _ => entries.push(vec![pos]),
        }
        last_empty = empty;
    }
    entries
}

/// Applies packed entries (entry `e` at index `e + 1`) in calls split where `calls` says, each
/// command prepared ahead as on a running node (the reference applied them unprepared);
/// returns the outcome of each log position applied.
fn apply_packed(
    store: &Store,
    log: &[Vec<u8>],
    entries: &[Vec<usize>],
    calls: &[bool],
) -> Result<BTreeMap<usize, Vec<u8>>> {
    let mut outcomes = BTreeMap::new();
    let mut call: Vec<(u64, &[u8])> = Vec::new();
    let mut positions: Vec<usize> = Vec::new();
    for (e, entry) in entries.iter().enumerate() {
        if e > 0 && calls.get(e).copied().unwrap_or(true) {
            for (pos, out) in positions.drain(..).zip(apply_with(store, &call, true)?) {
                outcomes.insert(pos, out);
            }
            call.clear();
        }
        for &pos in entry {
            call.push((e as u64 + 1, log[pos].as_slice()));
            positions.push(pos);
        }
    }
    if !call.is_empty() {
        for (pos, out) in positions.drain(..).zip(apply_with(store, &call, true)?) {
            outcomes.insert(pos, out);
        }
    }
    ensure!(
        store.applied_index() == entries.len() as u64,
        "applied index {} after {} entries",
        store.applied_index(),
        entries.len()
    );
    Ok(outcomes)
}

/// Entries `from..to` split into calls where `cuts` says a new one starts.
fn spans(from: usize, to: usize, cuts: &[bool]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = from;
    for i in from + 1..to {
        if cuts.get(i).copied().unwrap_or(true) {
            out.push((start, i));
            start = i;
        }
    }
    if start < to {
        out.push((start, to));
    }
    out
}

fn check(r: Result<()>) -> Result<(), TestCaseError> {
    r.map_err(|e| TestCaseError::fail(format!("{e:#}")))
}

/// Property 1: the same commands packed into entries and calls at random points give the same
/// outcomes and the same state.
fn batch_splits(case: &Case) -> Result<()> {
    let reference = Reference::run(&case.ops(), false)?;
    reference.explain((|| -> Result<()> {
        let log = &reference.log;
        let all: Vec<usize> = (0..log.len()).collect();
        let entries = pack(log, &all, &case.cuts);
        let dir = tempfile::tempdir()?;
        let store = open(dir.path())?;
        let outcomes = apply_packed(&store, log, &entries, &case.calls)?;
        for (pos, out) in &outcomes {
            ensure!(
                *out == reference.outcomes[*pos],
                "command {} packed in {entries:?} has outcome\n  {}\nbut alone\n  {}",
                pos + 1,
                String::from_utf8_lossy(out),
                String::from_utf8_lossy(&reference.outcomes[*pos])
            );
        }
        same_state(
            &unpacked(&dump(&store)?)?,
            &unpacked(&dump(&reference.store)?)?,
            &format!("packed as {entries:?} (left) vs one command per entry (right)"),
        )
    })())
}

/// Property 2: entries at or below the applied index are skipped with no result, on the same
/// store and after a reopen, alone or mixed with new entries.
fn replays(case: &Case) -> Result<()> {
    let reference = Reference::run(&case.ops(), false)?;
    reference.explain((|| -> Result<()> {
        let n = reference.log.len();
        let end = dump(&reference.store)?;

        // The whole log again, in one call and entry by entry.
        let again = apply(&reference.store, &reference.entries(0, n))?;
        ensure!(
            again.iter().all(Vec::is_empty),
            "a replayed entry got a result"
        );
        for i in 0..n {
            let again = apply(&reference.store, &reference.entries(i, i + 1))?;
            ensure!(
                again.iter().all(Vec::is_empty),
                "replayed entry {} got a result",
                i + 1
            );
        }
        ensure!(dump(&reference.store)? == end, "a replay changed the state");

        // A store that applied a prefix, restarts, and is given the log from an earlier point.
        let k = case.at.index(n + 1);
        let j = case.other.index(k + 1);
        let dir = tempfile::tempdir()?;
        {
            let store = open(dir.path())?;
            for (i, out) in apply(&store, &reference.entries(0, k))?
                .into_iter()
                .enumerate()
            {
                ensure!(
                    out == reference.outcomes[i],
                    "command {} has another outcome in one call",
                    i + 1
                );
            }
            store.db().flush()?;
        }
        let store = reopen(dir.path())?;
        ensure!(
            store.applied_index() == k as u64,
            "reopened at {}, applied {k}",
            store.applied_index()
        );
        for (from, to) in spans(j, n, &case.calls) {
            let out = apply(&store, &reference.entries(from, to))?;
            for (i, out) in (from..to).zip(out) {
                let want: &[u8] = if i < k { &[] } else { &reference.outcomes[i] };
                ensure!(
                    out == want,
                    "entry {} (applied {k}, replayed from {}) got\n  {}\nnot\n  {}",
                    i + 1,
                    j + 1,
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(want)
                );
            }
        }
        ensure!(store.applied_index() == n as u64, "not all entries applied");
        same_state(
            &records(&dump(&store)?)?.0,
            &records(&end)?.0,
            &format!(
                "applied {k}, reopened, replayed from {} (left) vs once (right)",
                j + 1
            ),
        )
    })())
}

/// Property 3: a snapshot after `k` commands, restored into a fresh or a used store and
/// followed by the rest of the log, ends where the whole log ends.
fn snapshots(case: &Case) -> Result<()> {
    let reference = Reference::run(&case.ops(), true)?;
    reference.explain((|| -> Result<()> {
        let n = reference.log.len();
        let k = case.at.index(n + 1);
        let m = case.other.index(n + 1);
        let snapshot = &reference.dumps[k];

        // The store restored into has applied another part of the log (none: a fresh one).
        let dir = tempfile::tempdir()?;
        let store = open(dir.path())?;
        apply(&store, &reference.entries(0, m))?;

        // A torn snapshot is refused, and the store does not go on claiming its old index.
        let (_, starts) = records(snapshot)?;
        if !snapshot.is_empty() {
            let mut cut = case.torn.index(snapshot.len());
            while starts.contains(&cut) {
                cut += 1;
            }
            let torn = StateMachine::restore(&store, k as u64, &mut &snapshot[..cut]);
            ensure!(torn.is_err(), "a snapshot torn at byte {cut} was restored");
            ensure!(
                store.applied_index() == 0,
                "after a failed restore the store claims index {} (it held {m})",
                store.applied_index()
            );
        }

        StateMachine::restore(&store, k as u64, &mut snapshot.as_slice())
            .map_err(|e| anyhow!("restore: {e}"))?;
        ensure!(
            store.applied_index() == k as u64,
            "restored at another index"
        );
        // The same records (a fresh store's snapshot has no applied index; a restored one has).
        same_state(
            &without_applied(&dump(&store)?)?,
            &without_applied(snapshot)?,
            "a restored snapshot (left) is not the snapshot (right)",
        )?;
        for (from, to) in spans(k, n, &case.cuts) {
            let out = apply(&store, &reference.entries(from, to))?;
            for (i, out) in (from..to).zip(out) {
                ensure!(
                    out == reference.outcomes[i],
                    "after the snapshot at {k}, command {} got\n  {}\nnot\n  {}",
                    i + 1,
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&reference.outcomes[i])
                );
            }
        }
        ensure!(store.applied_index() == n as u64, "not all entries applied");
        same_state(
            &records(&dump(&store)?)?.0,
            &records(&reference.dumps[n])?.0,
            &format!(
                "snapshot at {k} into a store at {m}, then the rest (left) vs the whole log (right)"
            ),
        )
    })())
}

/// Property 4: a refused command changes nothing but the applied index, alone or packed with
/// others; the log without its refused commands ends in the same state.
fn refusals(case: &Case) -> Result<()> {
    let reference = Reference::run(&case.ops(), true)?;
    reference.explain((|| -> Result<()> {
        let log = &reference.log;
        for (i, out) in reference.outcomes.iter().enumerate() {
            if refused(out) {
                same_state(
                    &without_applied(&reference.dumps[i + 1])?,
                    &without_applied(&reference.dumps[i])?,
                    &format!("refused command {} changed the state (left: after)", i + 1),
                )?;
            }
        }
        let all: Vec<usize> = (0..log.len()).collect();
        let kept: Vec<usize> = all
            .iter()
            .copied()
            .filter(|i| !refused(&reference.outcomes[*i]))
            .collect();
        let packed = |positions: &[usize]| -> Result<(BTreeMap<usize, Vec<u8>>, Records)> {
            let dir = tempfile::tempdir()?;
            let store = open(dir.path())?;
            let outcomes =
                apply_packed(&store, log, &pack(log, positions, &case.cuts), &case.calls)?;
            Ok((outcomes, unpacked(&dump(&store)?)?))
        };
        let (with, with_state) = packed(&all)?;
        let (without, without_state) = packed(&kept)?;
        for (pos, out) in &without {
            ensure!(
                with.get(pos) == Some(out),
                "command {} has another outcome once refused commands are left out",
                pos + 1
            );
        }
        same_state(
            &with_state,
            &without_state,
            "the log with refused commands (left) vs without them (right)",
        )
    })())
}

/// A snapshot's output that takes one permit per record, so the test decides how far the
/// snapshot gets between two apply calls; once the permits' sender is gone it runs freely.
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

/// Property 5: a snapshot begun after `k` commands and written while the rest of the log
/// applies (on this thread, between the snapshot's records) is exactly the state after `k`.
fn concurrent_snapshots(case: &Case) -> Result<()> {
    let reference = Reference::run(&case.ops(), true)?;
    reference.explain((|| -> Result<()> {
        let n = reference.log.len();
        let k = case.at.index(n + 1);
        let dir = tempfile::tempdir()?;
        let store = open(dir.path())?;
        for (from, to) in spans(0, k, &case.calls) {
            apply(&store, &reference.entries(from, to))?;
        }
        let source = StateMachine::begin_snapshot(&store).map_err(|e| anyhow!("begin: {e}"))?;
        ensure!(
            source.index() == k as u64,
            "snapshot begun at another index"
        );
        let (permits, rx) = sync_channel(0);
        let writer = std::thread::spawn(move || {
            let mut out = Gated {
                permits: rx,
                out: Vec::new(),
            };
            source
                .write_to(&mut out)
                .map(|()| out.out)
                .map_err(|e| anyhow!("snapshot: {e}"))
        });
        for (call, (from, to)) in spans(k, n, &case.cuts).into_iter().enumerate() {
            apply(&store, &reference.entries(from, to))?;
            for _ in 0..case.records.get(call).copied().unwrap_or(0) {
                if permits.send(()).is_err() {
                    break;
                }
            }
        }
        drop(permits);
        let written = writer
            .join()
            .map_err(|_| anyhow!("the snapshot thread panicked"))??;
        same_state(
            &records(&written)?.0,
            &records(&reference.dumps[k])?.0,
            &format!(
                "snapshot begun at {k} and written while {n} applied (left) vs at {k} (right)"
            ),
        )?;
        ensure!(
            written == reference.dumps[k],
            "same records, other bytes (order)"
        );
        // Applies were not disturbed, and the snapshot restores to the state at `k`.
        same_state(
            &records(&dump(&store)?)?.0,
            &records(&reference.dumps[n])?.0,
            "the store that was snapshotted (left) vs the whole log (right)",
        )?;
        let other = tempfile::tempdir()?;
        let restored = open(other.path())?;
        StateMachine::restore(&restored, k as u64, &mut written.as_slice())
            .map_err(|e| anyhow!("restore: {e}"))?;
        same_state(
            &without_applied(&dump(&restored)?)?,
            &without_applied(&reference.dumps[k])?,
            "restored (left) vs the state at the snapshot's index (right)",
        )
    })())
}

/// The listing indexes (`state::listing`) say what the instance records say, whatever the log
/// did to them (retries, reruns, kills, backfills, refusals undone): every workspace's list, in
/// order, per day and state, and its counters.
fn listing_matches_records(case: &Case) -> Result<()> {
    let reference = Reference::run(&case.ops(), false)?;
    // The same log into another store whose days are listed part way (so it holds them in
    // memory while the rest applies), checked against its records at the end.
    let dir = tempfile::tempdir()?;
    let held = open(dir.path())?;
    let at = case.at.index(reference.log.len() + 1);
    for (pos, data) in reference.log.iter().enumerate() {
        if pos == at {
            list_every_day(&held)?;
            held.waiting_queue()?;
        }
        apply(&held, &[(pos as u64 + 1, data)])?;
    }
    for (name, store) in [("reference", &reference.store), ("listed part way", &held)] {
        reference.explain(listing_matches(store).with_context(|| format!("the {name} store")))?;
        // The dispatch queue held in memory is the instances waiting for resources, in order.
        let want: Vec<Queued> = store.waiting_instances()?.iter().map(Queued::of).collect();
        let got = store.waiting_queue()?;
        reference.explain(
            (got == want).then_some(()).ok_or_else(|| {
                anyhow!("the {name} store queues {got:?}, its records say {want:?}")
            }),
        )?;
    }
    Ok(())
}

/// Lists every day of every workspace the store has instances in (one row each).
fn list_every_day(store: &Store) -> Result<()> {
    let mut days = BTreeSet::new();
    for i in store.instances()? {
        let ws = i.task.split_once('/').map_or("", |(w, _)| w).to_string();
        days.insert((ws, i.bizdate));
    }
    for (workspace, day) in days {
        store.list_instances(&ListQuery {
            workspace,
            bizdate: Some(day),
            limit: 1,
            ..Default::default()
        })?;
    }
    Ok(())
}

fn listing_matches(store: &Store) -> Result<()> {
    {
        let all = store.instances()?;
        let split = |task: &str| -> (String, String) {
            match task.split_once('/') {
                Some((w, t)) => (w.to_string(), t.to_string()),
                None => (String::new(), task.to_string()),
            }
        };
        let workspaces: BTreeSet<String> = all.iter().map(|i| split(&i.task).0).collect();
        for ws in &workspaces {
            let mut mine: Vec<_> = all.iter().filter(|i| split(&i.task).0 == *ws).collect();
            mine.sort_by_key(|i| {
                (
                    i.bizdate.clone(),
                    i.cyctime.clone(),
                    split(&i.task).1,
                    i.id.clone(),
                )
            });
            let days: BTreeSet<Option<String>> = mine
                .iter()
                .map(|i| Some(i.bizdate.clone()))
                .chain([None])
                .collect();
            for day in days {
                for state in [None].into_iter().chain(InstanceState::ALL.map(Some)) {
                    let want: Vec<String> = mine
                        .iter()
                        .filter(|i| day.as_ref().is_none_or(|d| *d == i.bizdate))
                        .filter(|i| state.is_none_or(|s| s == i.state))
                        .map(|i| i.id.clone())
                        .collect();
                    let page = store.list_instances(&ListQuery {
                        workspace: ws.clone(),
                        bizdate: day.clone(),
                        state,
                        limit: usize::MAX,
                        ..Default::default()
                    })?;
                    ensure!(
                        page.ids == want && page.total == want.len() as u64,
                        "workspace {ws:?}, day {day:?}, state {state:?}: listed {:?} (total {}), records say {want:?}",
                        page.ids,
                        page.total
                    );
                }
                // A search reads the per-task counters and rows of the day.
                let names: BTreeSet<String> = mine.iter().map(|i| split(&i.task).1).collect();
                for name in names.iter().filter(|_| day.is_some()) {
                    for state in [None].into_iter().chain(InstanceState::ALL.map(Some)) {
                        let want: Vec<String> = mine
                            .iter()
                            .filter(|i| day.as_ref().is_none_or(|d| *d == i.bizdate))
                            .filter(|i| split(&i.task).1.contains(name.as_str()))
                            .filter(|i| state.is_none_or(|s| s == i.state))
                            .map(|i| i.id.clone())
                            .collect();
                        let page = store.list_instances(&ListQuery {
                            workspace: ws.clone(),
                            bizdate: day.clone(),
                            search: name.clone(),
                            state,
                            limit: usize::MAX,
                            ..Default::default()
                        })?;
                        ensure!(
                            page.ids == want && page.total == want.len() as u64,
                            "workspace {ws:?}, day {day:?}, search {name:?}, state {state:?}: listed {:?} (total {}), records say {want:?}",
                            page.ids,
                            page.total
                        );
                    }
                }
                let mut want: BTreeMap<InstanceState, u64> = BTreeMap::new();
                for i in mine
                    .iter()
                    .filter(|i| day.as_ref().is_none_or(|d| *d == i.bizdate))
                {
                    *want.entry(i.state).or_default() += 1;
                }
                let got = store.day_counts(ws, day.as_deref())?;
                ensure!(
                    got == want,
                    "workspace {ws:?}, day {day:?}: counters {got:?}, records {want:?}"
                );
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_listing_indexes_say_what_the_records_say(case in case_strategy()) {
        check(listing_matches_records(&case))?;
    }

    #[test]
    fn a_snapshot_written_while_the_log_applies_is_the_state_at_its_index(case in case_strategy()) {
        check(concurrent_snapshots(&case))?;
    }

    #[test]
    fn packing_commands_into_entries_changes_no_state_and_no_outcome(case in case_strategy()) {
        check(batch_splits(&case))?;
    }

    #[test]
    fn replayed_entries_change_nothing(case in case_strategy()) {
        check(replays(&case))?;
    }

    #[test]
    fn a_snapshot_and_the_rest_of_the_log_end_where_the_whole_log_does(case in case_strategy()) {
        check(snapshots(&case))?;
    }

    #[test]
    fn refused_commands_leave_no_trace(case in case_strategy()) {
        check(refusals(&case))?;
    }
}

/// The generator is only as good as the states it reaches: over the cases CI runs, logs must
/// reach every kind of refusal, stale reports, retries, timeouts, late reports and the ends of
/// instances, or the properties above prove little.
#[test]
fn generated_logs_reach_deep_states() -> Result<()> {
    let mut runner = TestRunner::new(config());
    let strategy = case_strategy();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut note = |what: &str| *seen.entry(what.to_string()).or_default() += 1;
    for _ in 0..32 {
        let case = strategy
            .new_tree(&mut runner)
            .map_err(|e| anyhow!("{e}"))?
            .current();
        let reference = Reference::run(&case.ops(), false)?;
        for (data, out) in reference.log.iter().zip(&reference.outcomes) {
            if data.first() == Some(&b'Z') && decode_command(data).is_ok() {
                note("deflated command");
            }
            let out = String::from_utf8_lossy(out);
            for (what, needle) in [
                ("refused: already exists", "\"already_exists\""),
                ("refused: not found", "\"not_found\""),
                ("refused: failed precondition", "\"failed_precondition\""),
                ("refused: undecodable", "\"invalid_argument\""),
                ("stale: fenced token", "fenced: token"),
                ("stale: another agent", "which belongs to agent"),
                ("dispatched", "Dispatched"),
                ("joined a manual run", "Joined"),
            ] {
                if out.contains(needle) {
                    note(what);
                }
            }
        }
        for i in reference.store.instances()? {
            note(&format!("instance {}", i.state.as_str()));
            if i.history.iter().any(|t| t.reason.starts_with("retry ")) {
                note("instance retried");
            }
            if i.attempts.len() > 1 {
                note("instance with several attempts");
            }
        }
        for a in reference.store.attempts()? {
            if a.error.starts_with("timed out") {
                note("attempt timed out");
            }
            if !a.late_report.is_empty() {
                note("late report");
            }
        }
        if !reference.store.audit(0, 1000)?.is_empty() {
            note("audit record");
        }
    }
    let wanted = [
        "deflated command",
        "refused: already exists",
        "refused: not found",
        "refused: failed precondition",
        "refused: undecodable",
        "stale: fenced token",
        "stale: another agent",
        "dispatched",
        "joined a manual run",
        "instance success",
        "instance failed",
        "instance killed",
        "instance dry_run",
        "instance frozen",
        "instance waiting_upstream",
        "instance running",
        "instance retried",
        "instance with several attempts",
        "attempt timed out",
        "late report",
        "audit record",
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|w| !seen.contains_key(*w))
        .collect();
    ensure!(
        missing.is_empty(),
        "never reached {missing:?}; reached {seen:?}"
    );
    Ok(())
}
