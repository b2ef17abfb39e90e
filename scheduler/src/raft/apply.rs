//! The applier: a thread that applies committed entries to the [`StateMachine`] in log order,
//! answers the proposers waiting on them, and starts snapshots.
//!
//! It runs apart from the node task so that applying a large batch never stops raft from
//! ticking and heartbeating. The node hands it entries in commit order and learns the applied
//! index back, which it passes to raft (`advance_apply_to`). A snapshot of hundreds of MB takes
//! seconds to write, so the applier only fixes its index (between two applies) and a snapshot
//! thread writes it while applies go on; the node hears of it once it is stored and flushed,
//! and only then compacts the log. One snapshot is written at a time; a restore (or a stop)
//! abandons the one in progress.

use super::error::{RaftError, Result};
use super::node::NodeMsg;
use super::snapshot::{ChunkWriter, SnapshotStore};
use super::{Committed, Prepared, SnapshotSource, StateMachine};
use raft::prelude::{ConfState, Entry, EntryType, SnapshotMetadata};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

/// A proposal's identity, carried in its entry's context: a random number of this node's run
/// and a sequence, so a result reaches exactly its own proposer, even across restarts.
pub(crate) type RequestId = [u8; 16];

/// What a waiting proposer receives: the index its entry applied at and the state machine's result.
#[derive(Debug)]
pub(crate) struct Applied {
    pub index: u64,
    pub result: Vec<u8>,
}

pub(crate) type Reply = oneshot::Sender<Result<Applied>>;

/// Proposers waiting for their entries, shared by the node (which registers them) and the applier
/// (which answers them).
#[derive(Default)]
pub(crate) struct Waiters {
    by_id: HashMap<RequestId, Reply>,
    /// The index each proposal was appended at: an applied entry at that index without it
    /// means the proposal was overwritten by a new leader and will never apply.
    by_index: BTreeMap<u64, Vec<RequestId>>,
}

impl Waiters {
    pub fn insert(&mut self, id: RequestId, index: u64, reply: Reply) {
        self.by_id.insert(id, reply);
        self.by_index.entry(index).or_default().push(id);
    }

    /// Answers the proposer of a command applied at `index`, if it waits here.
    fn answer(&mut self, id: &[u8], index: u64, result: Vec<u8>) {
        if let Ok(id) = RequestId::try_from(id)
            && let Some(reply) = self.by_id.remove(&id)
        {
            let _ = reply.send(Ok(Applied { index, result }));
        }
    }

    /// Fails the proposals expected at or below `index` that did not apply there.
    fn expire_through(&mut self, index: u64) {
        while let Some(entry) = self.by_index.first_entry() {
            if *entry.key() > index {
                break;
            }
            for id in entry.remove() {
                if let Some(reply) = self.by_id.remove(&id) {
                    let _ = reply.send(Err(RaftError::Dropped));
                }
            }
        }
    }

    /// Fails every waiting proposer (the node stopped).
    pub fn fail_all(&mut self, err: impl Fn() -> RaftError) {
        for (_, reply) in self.by_id.drain() {
            let _ = reply.send(Err(err()));
        }
        self.by_index.clear();
    }
}

/// The context of an entry that packs several commands.
pub(crate) const PACKED: &[u8] = b"\xffpacked";

/// Packs commands with their request ids into one entry's data: per command, the 16-byte id,
/// a 4-byte big-endian length and the command.
pub(crate) fn pack(commands: &[(RequestId, Vec<u8>)]) -> Vec<u8> {
    let size = commands.iter().map(|(_, c)| 20 + c.len()).sum();
    let mut out = Vec::with_capacity(size);
    for (id, c) in commands {
        out.extend_from_slice(id);
        out.extend_from_slice(&(c.len() as u32).to_be_bytes());
        out.extend_from_slice(c);
    }
    out
}

/// The (request id, command) pairs of a packed entry; `None` if it is malformed.
fn unpack(mut data: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let id = data.get(..16)?;
        let len = u32::from_be_bytes(data.get(16..20)?.try_into().ok()?) as usize;
        let command = data.get(20..20 + len)?;
        out.push((id, command));
        data = &data[20 + len..];
    }
    Some(out)
}

/// The commands of an entry, each with the request id its result goes to: several in a packed
/// entry, one in any other normal entry, and one empty command for an entry raft writes itself.
fn commands_of(e: &Entry) -> Result<Vec<(&[u8], &[u8])>> {
    match e.get_entry_type() {
        EntryType::EntryNormal if e.context.as_ref() == PACKED => unpack(e.data.as_ref())
            .ok_or_else(|| RaftError::Corrupt(format!("packed entry {} is malformed", e.index))),
        EntryType::EntryNormal => Ok(vec![(e.context.as_ref(), e.data.as_ref())]),
        _ => Ok(vec![(e.context.as_ref(), &[][..])]),
    }
}

/// A committed entry and, for a membership change, the configuration it produced.
pub(crate) struct CommittedEntry {
    pub entry: Entry,
    pub conf_state: Option<ConfState>,
    /// What the state machine prepared for each of the entry's commands ahead of apply (see
    /// [`prepare_ahead`]); empty when nothing was.
    pub prepared: Vec<Option<Prepared>>,
}

/// The preparing thread, between the node and the applier: lets the state machine prepare
/// each committed command (see [`StateMachine::prepare`]) and passes every task on in order.
/// Returns when either side is gone.
pub(crate) fn prepare_ahead<S: StateMachine>(
    sm: Arc<S>,
    mut tasks: mpsc::UnboundedReceiver<ApplyTask>,
    applier: mpsc::Sender<ApplyTask>,
) {
    while let Some(mut task) = tasks.blocking_recv() {
        if let ApplyTask::Entries(entries) = &mut task {
            for c in entries.iter_mut() {
                // A malformed entry is left unprepared; the applier reports it.
                if let Ok(commands) = commands_of(&c.entry) {
                    c.prepared = commands
                        .iter()
                        .map(|(_, data)| (!data.is_empty()).then(|| sm.prepare(data)).flatten())
                        .collect();
                }
            }
        }
        if applier.blocking_send(task).is_err() {
            return;
        }
    }
}

/// Tasks the preparing thread may hold ready ahead of the applier. Decoded commands take
/// several times their size in the log, and a node far behind (catching up after a restart)
/// would otherwise decode its whole backlog into memory; past this the backlog waits encoded.
pub(crate) const PREPARED_AHEAD: usize = 8;

/// The most entries queued behind a running apply that the next apply takes at once.
const MERGE_UP_TO: usize = 256;

pub(crate) enum ApplyTask {
    Entries(Vec<CommittedEntry>),
    /// Replace the state by the snapshot stored at this metadata's index.
    Restore(SnapshotMetadata),
    /// Raft needs a snapshot newer than the stored one.
    MakeSnapshot,
}

pub(crate) struct Applier<S> {
    pub sm: Arc<S>,
    pub db: sled::Db,
    pub snaps: SnapshotStore,
    pub node: mpsc::Sender<NodeMsg>,
    pub waiters: Arc<Mutex<Waiters>>,
    pub applied_tx: watch::Sender<u64>,
    pub applied: u64,
    pub applied_term: u64,
    /// The configuration as of `applied`.
    pub conf_state: ConfState,
    /// Below this index `conf_state` may be ahead of `applied` (after a restart, entries between
    /// the state's applied index and the stored conf state are replayed): no snapshot until then.
    pub conf_valid_from: u64,
    /// The index of the last snapshot stored or being written.
    pub last_snapshot: u64,
    pub snapshot_every: u64,
    pub id: u64,
    /// The snapshot being written, if any.
    pub writing: Option<Writing>,
}

/// A snapshot being written by its own thread.
pub(crate) struct Writing {
    index: u64,
    cancel: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<()>>,
}

impl<S: StateMachine> Applier<S> {
    /// Runs until the node drops its sender; a state machine or storage error stops the node.
    pub fn run(mut self, mut tasks: mpsc::Receiver<ApplyTask>) {
        let mut next = None;
        loop {
            let task = match next.take() {
                Some(task) => task,
                None => match tasks.blocking_recv() {
                    Some(task) => task,
                    None => break,
                },
            };
            let task = match task {
                // Entries that queued up while the last apply ran are applied in one call:
                // one stored batch and one round of answers for all of them.
                ApplyTask::Entries(mut entries) => {
                    while entries.len() < MERGE_UP_TO {
                        match tasks.try_recv() {
                            Ok(ApplyTask::Entries(more)) => entries.extend(more),
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    ApplyTask::Entries(entries)
                }
                other => other,
            };
            let done = self.reap_snapshot().and_then(|()| match task {
                ApplyTask::Entries(entries) => self.apply(entries),
                ApplyTask::Restore(meta) => self.restore(meta),
                ApplyTask::MakeSnapshot => {
                    if self.applied > self.last_snapshot {
                        self.start_snapshot()
                    } else {
                        Ok(())
                    }
                }
            });
            if let Err(e) = done {
                error!(raft_id = self.id, error = %e, applied = self.applied, "applier stopped");
                self.abandon_snapshot();
                let _ = self.node.blocking_send(NodeMsg::Fatal(e.to_string()));
                return;
            }
        }
        // A snapshot in progress is abandoned (the next one is made after the restart).
        self.abandon_snapshot();
        // A graceful stop leaves the applied state on disk (after a crash the log replays it).
        if let Err(e) = self.db.flush() {
            error!(raft_id = self.id, error = %e, "flush of the applied state failed");
        }
    }

    fn apply(&mut self, entries: Vec<CommittedEntry>) -> Result<()> {
        let mut entries: Vec<CommittedEntry> = entries
            .into_iter()
            .filter(|c| c.entry.index > self.applied)
            .collect();
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let (last_index, last_term) = (last.entry.index, last.entry.term);
        // One command per entry, or several packed in one (see `pack`); the request ids say
        // whom each result goes to. What the preparing thread made of each command goes along.
        let prepared: Vec<Vec<Option<Prepared>>> = entries
            .iter_mut()
            .map(|c| std::mem::take(&mut c.prepared))
            .collect();
        let mut committed: Vec<Committed<'_>> = Vec::with_capacity(entries.len());
        let mut ids: Vec<&[u8]> = Vec::with_capacity(entries.len());
        for (c, prepared) in entries.iter().zip(prepared) {
            let e = &c.entry;
            let mut prepared = prepared.into_iter();
            for (id, data) in commands_of(e)? {
                committed.push(Committed {
                    index: e.index,
                    term: e.term,
                    data,
                    prepared: prepared.next().flatten(),
                });
                ids.push(id);
            }
        }
        let results = self
            .sm
            .apply(&mut committed)
            .map_err(|e| RaftError::StateMachine(e.to_string()))?;
        if results.len() != committed.len() {
            return Err(RaftError::StateMachine(format!(
                "apply returned {} results for {} entries",
                results.len(),
                committed.len()
            )));
        }
        {
            let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            for ((c, id), result) in committed.iter().zip(&ids).zip(results) {
                waiters.answer(id, c.index, result);
            }
            waiters.expire_through(last_index);
        }
        for c in &entries {
            if let Some(cs) = &c.conf_state {
                self.conf_state = cs.clone();
            }
        }
        self.applied = last_index;
        self.applied_term = last_term;
        self.applied_tx.send_replace(last_index);
        let _ = self
            .node
            .blocking_send(NodeMsg::Applied { index: last_index });
        if snapshot_due(
            self.applied,
            self.last_snapshot,
            self.snapshot_every,
            self.id,
        ) && self.applied >= self.conf_valid_from
            && self.writing.is_none()
        {
            self.start_snapshot()?;
        }
        Ok(())
    }

    fn restore(&mut self, meta: SnapshotMetadata) -> Result<()> {
        if meta.index <= self.applied {
            debug!(
                raft_id = self.id,
                index = meta.index,
                applied = self.applied,
                "snapshot not newer than the state; kept the state"
            );
            return Ok(());
        }
        // The state the snapshot in progress reads is about to be replaced.
        self.abandon_snapshot();
        let mut reader = self.snaps.reader(meta.index)?;
        self.sm
            .restore(meta.index, &mut reader)
            .map_err(|e| RaftError::StateMachine(e.to_string()))?;
        info!(
            raft_id = self.id,
            index = meta.index,
            term = meta.term,
            "state restored from snapshot"
        );
        self.applied = meta.index;
        self.applied_term = meta.term;
        self.conf_state = meta.get_conf_state().clone();
        self.conf_valid_from = 0;
        self.last_snapshot = meta.index;
        self.snaps.remove_below(meta.index)?;
        self.applied_tx.send_replace(meta.index);
        let _ = self
            .node
            .blocking_send(NodeMsg::Applied { index: meta.index });
        Ok(())
    }

    /// Starts a snapshot of the state at the applied index, written by its own thread while
    /// applies go on; the thread tells the node once the snapshot is stored and flushed. Does
    /// nothing while another snapshot is being written (raft asks again if it still needs one).
    fn start_snapshot(&mut self) -> Result<()> {
        if let Some(w) = &self.writing {
            debug!(
                raft_id = self.id,
                writing = w.index,
                applied = self.applied,
                "a snapshot is being written; not starting another"
            );
            return Ok(());
        }
        let source = self
            .sm
            .begin_snapshot()
            .map_err(|e| RaftError::StateMachine(e.to_string()))?;
        if source.index() != self.applied {
            return Err(RaftError::StateMachine(format!(
                "snapshot is at index {} but {} entries were applied",
                source.index(),
                self.applied
            )));
        }
        let mut meta = SnapshotMetadata {
            index: self.applied,
            term: self.applied_term,
            ..Default::default()
        };
        meta.set_conf_state(self.conf_state.clone());
        let cancel = Arc::new(AtomicBool::new(false));
        let job = SnapshotJob {
            source,
            out: Cancellable {
                inner: self.snaps.writer(self.applied)?,
                cancel: cancel.clone(),
            },
            meta,
            db: self.db.clone(),
            node: self.node.clone(),
            raft_id: self.id,
        };
        let thread = std::thread::Builder::new()
            .name(format!("raft-snapshot-{}", self.id))
            .spawn(move || job.run())
            .map_err(|e| {
                RaftError::StateMachine(format!("cannot start the snapshot thread: {e}"))
            })?;
        debug!(raft_id = self.id, index = self.applied, "snapshot started");
        self.writing = Some(Writing {
            index: self.applied,
            cancel,
            thread,
        });
        self.last_snapshot = self.applied;
        Ok(())
    }

    /// Collects the snapshot thread once it is done; its storage error stops the node as a
    /// failed apply would.
    fn reap_snapshot(&mut self) -> Result<()> {
        if !self
            .writing
            .as_ref()
            .is_some_and(|w| w.thread.is_finished())
        {
            return Ok(());
        }
        let Some(w) = self.writing.take() else {
            return Ok(());
        };
        match w.thread.join() {
            Ok(Ok(())) | Ok(Err(RaftError::SnapshotCancelled)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(RaftError::StateMachine(format!(
                "the thread writing the snapshot at index {} panicked",
                w.index
            ))),
        }
    }

    /// Stops the snapshot in progress and waits for its thread (it stops at its next write).
    fn abandon_snapshot(&mut self) {
        let Some(w) = self.writing.take() else {
            return;
        };
        w.cancel.store(true, Ordering::SeqCst);
        match w.thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(RaftError::SnapshotCancelled)) => {
                info!(raft_id = self.id, index = w.index, "snapshot abandoned");
            }
            Ok(Err(e)) => {
                warn!(raft_id = self.id, index = w.index, error = %e, "abandoned snapshot had failed");
            }
            Err(_) => {
                warn!(
                    raft_id = self.id,
                    index = w.index,
                    "abandoned snapshot thread panicked"
                );
            }
        }
    }
}

/// What the snapshot thread needs: the state fixed at `meta.index` and where it goes.
struct SnapshotJob {
    source: Box<dyn SnapshotSource>,
    out: Cancellable<ChunkWriter>,
    meta: SnapshotMetadata,
    db: sled::Db,
    node: mpsc::Sender<NodeMsg>,
    raft_id: u64,
}

impl SnapshotJob {
    /// Writes and stores the snapshot, flushes (so it and the state up to it are durable
    /// before the node compacts the log behind it), and tells the node.
    fn run(self) -> Result<()> {
        lower_priority(self.raft_id);
        let started = std::time::Instant::now();
        let Self {
            source,
            mut out,
            meta,
            db,
            node,
            raft_id,
        } = self;
        if let Err(e) = source.write_to(&mut out) {
            if out.cancel.load(Ordering::SeqCst) {
                return Err(RaftError::SnapshotCancelled);
            }
            error!(raft_id, index = meta.index, error = %e, "writing the snapshot failed");
            return Err(RaftError::StateMachine(format!(
                "writing the snapshot at index {}: {e}",
                meta.index
            )));
        }
        if out.cancel.load(Ordering::SeqCst) {
            return Err(RaftError::SnapshotCancelled);
        }
        let size = out.inner.finish()?;
        db.flush()?;
        info!(
            raft_id,
            index = meta.index,
            term = meta.term,
            bytes = size,
            ms = started.elapsed().as_millis() as u64,
            "snapshot written"
        );
        let _ = node.blocking_send(NodeMsg::SnapshotMade(meta));
        Ok(())
    }
}

/// Gives the snapshot thread the lowest CPU priority (Linux: a thread's own nice value), so
/// on a busy machine the applier and the node get the cores first: the snapshot only has to
/// be done before the log grows too long, applying is what proposers wait for.
#[cfg(target_os = "linux")]
fn lower_priority(raft_id: u64) {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), 19) {
        debug!(raft_id, error = %e, "cannot lower the snapshot thread's priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(_raft_id: u64) {}

/// A writer that fails once `cancel` is set, so an abandoned snapshot stops at its next write.
struct Cancellable<W> {
    inner: W,
    cancel: Arc<AtomicBool>,
}

impl<W: io::Write> io::Write for Cancellable<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("the snapshot was abandoned"));
        }
        self.inner.write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Whether a node that last snapshotted at `last` snapshots at `applied`. Each member snapshots
/// every `every` entries at its own phase (node 1 at multiples of `every`, node 2 a quarter
/// later, node 3 half-way, ...), so the members of a cluster do not all write a snapshot of the
/// whole state at once: on shared cores and disks that made a majority slow to answer the
/// leader's heartbeats, and the leader paused until its quorum lease came back.
fn snapshot_due(applied: u64, last: u64, every: u64, id: u64) -> bool {
    let every = every.max(1);
    let phase = (id.saturating_sub(1) % 4) * (every / 4);
    // At most `every + phase` (under two intervals) after `last`.
    let next = (last.saturating_sub(phase) / every + 1) * every + phase;
    applied >= next
}

#[cfg(test)]
mod tests;
