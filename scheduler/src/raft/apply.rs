//! The applier: a thread that applies committed entries to the [`StateMachine`] in log order,
//! answers the proposers waiting on them, and writes snapshots.
//!
//! It runs apart from the node task so that applying a large batch or writing a snapshot of
//! hundreds of MB (while nothing may change the state, since sled has no point-in-time view)
//! never stops raft from ticking and heartbeating. The node hands it entries in commit order and
//! learns the applied index back, which it passes to raft (`advance_apply_to`).

use super::error::{RaftError, Result};
use super::node::NodeMsg;
use super::snapshot::SnapshotStore;
use super::{Committed, StateMachine};
use raft::prelude::{ConfState, Entry, EntryType, SnapshotMetadata};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info};

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

/// A committed entry and, for a membership change, the configuration it produced.
pub(crate) struct CommittedEntry {
    pub entry: Entry,
    pub conf_state: Option<ConfState>,
}

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
    pub last_snapshot: u64,
    pub snapshot_every: u64,
    pub id: u64,
}

impl<S: StateMachine> Applier<S> {
    /// Runs until the node drops its sender; a state machine or storage error stops the node.
    pub fn run(mut self, mut tasks: mpsc::UnboundedReceiver<ApplyTask>) {
        while let Some(task) = tasks.blocking_recv() {
            let done = match task {
                ApplyTask::Entries(entries) => self.apply(entries),
                ApplyTask::Restore(meta) => self.restore(meta),
                ApplyTask::MakeSnapshot => {
                    if self.applied > self.last_snapshot {
                        self.make_snapshot()
                    } else {
                        Ok(())
                    }
                }
            };
            if let Err(e) = done {
                error!(raft_id = self.id, error = %e, applied = self.applied, "applier stopped");
                let _ = self.node.blocking_send(NodeMsg::Fatal(e.to_string()));
                return;
            }
        }
        // A graceful stop leaves the applied state on disk (after a crash the log replays it).
        if let Err(e) = self.db.flush() {
            error!(raft_id = self.id, error = %e, "flush of the applied state failed");
        }
    }

    fn apply(&mut self, entries: Vec<CommittedEntry>) -> Result<()> {
        let entries: Vec<CommittedEntry> = entries
            .into_iter()
            .filter(|c| c.entry.index > self.applied)
            .collect();
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let (last_index, last_term) = (last.entry.index, last.entry.term);
        // One command per entry, or several packed in one (see `pack`); the request ids say
        // whom each result goes to.
        let mut committed: Vec<Committed<'_>> = Vec::with_capacity(entries.len());
        let mut ids: Vec<&[u8]> = Vec::with_capacity(entries.len());
        for c in &entries {
            let e = &c.entry;
            let single = |data| Committed {
                index: e.index,
                term: e.term,
                data,
            };
            match e.get_entry_type() {
                EntryType::EntryNormal if e.context.as_ref() == PACKED => {
                    for (id, data) in unpack(e.data.as_ref()).ok_or_else(|| {
                        RaftError::Corrupt(format!("packed entry {} is malformed", e.index))
                    })? {
                        committed.push(single(data));
                        ids.push(id);
                    }
                }
                EntryType::EntryNormal => {
                    committed.push(single(e.data.as_ref()));
                    ids.push(e.context.as_ref());
                }
                _ => {
                    committed.push(single(&[]));
                    ids.push(e.context.as_ref());
                }
            }
        }
        let results = self
            .sm
            .apply(&committed)
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
        if self.applied - self.last_snapshot >= self.snapshot_every
            && self.applied >= self.conf_valid_from
        {
            self.make_snapshot()?;
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

    /// Writes the state at the applied index as a snapshot and flushes, so the state is durable
    /// at least up to the snapshot before the node compacts the log behind it.
    fn make_snapshot(&mut self) -> Result<()> {
        let started = std::time::Instant::now();
        let mut writer = self.snaps.writer(self.applied)?;
        let at = self
            .sm
            .snapshot(&mut writer)
            .map_err(|e| RaftError::StateMachine(e.to_string()))?;
        if at != self.applied {
            return Err(RaftError::StateMachine(format!(
                "snapshot is at index {at} but {} entries were applied",
                self.applied
            )));
        }
        let size = writer.finish()?;
        self.db.flush()?;
        let mut meta = SnapshotMetadata {
            index: self.applied,
            term: self.applied_term,
            ..Default::default()
        };
        meta.set_conf_state(self.conf_state.clone());
        self.last_snapshot = self.applied;
        info!(
            raft_id = self.id,
            index = meta.index,
            term = meta.term,
            bytes = size,
            ms = started.elapsed().as_millis() as u64,
            "snapshot written"
        );
        let _ = self.node.blocking_send(NodeMsg::SnapshotMade(meta));
        Ok(())
    }
}
