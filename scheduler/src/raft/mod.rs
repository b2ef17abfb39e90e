//! Replication of the scheduler's state machine with raft-rs.
//!
//! One task owns `raft::RawNode` ([`node`]), reached through a [`RaftHandle`] ([`handle`]): it ticks, steps peer messages, takes proposals and
//! handles each `Ready` in raft-rs's documented order, persisting log entries and hard state in
//! sled ([`storage`]) with one flush per `Ready` before the messages that depend on them leave.
//! The commands proposed while the task was busy are packed into one log entry (one log write,
//! one append message, one apply batch for all of them); each proposer still gets its own result.
//! Committed entries go, in order, to an applier thread ([`apply`]) that hands them in batches
//! to the [`StateMachine`] and answers each proposer with its own result, so a slow apply or a
//! snapshot of a large state never stops the node from ticking and heartbeating (which would cost
//! the leadership). Every N applied entries the applier starts a snapshot: a thread writes the
//! state as of that index ([`tree_snapshot`]) into a file ([`snapshot`]) while the
//! applier goes on applying, and once it is stored and flushed the log before it is compacted; a follower too far behind gets that snapshot
//! streamed in chunks by the transport ([`transport`]), never inside a raft message. The leader
//! pushes the chunks (rather than the follower fetching them) because raft-rs already tells the
//! leader when and to whom a snapshot must go and wants its outcome back (`report_snapshot`);
//! the follower stores the chunks and flushes before stepping the `MsgSnapshot`, so a crash
//! mid-restore restarts from the stored snapshot.
//!
//! A single scheduler is a cluster of one voter running the same code: it elects itself at once
//! and a proposal costs one flush. Reads are linearizable through raft's ReadIndex
//! ([`RaftHandle::read_index`]): the leader confirms its leadership with a heartbeat round,
//! and a follower asks the leader (raft-rs forwards the request), then waits until it has applied
//! up to the returned index. The dispatcher fences itself with [`RaftHandle::has_quorum_lease`]:
//! true only on a leader that heard from a majority within half an election timeout, so a
//! deposed leader stops dispatching before anyone else can be elected (`check_quorum` makes
//! followers refuse votes for a full election timeout after hearing from the leader).
//!
//! The [`service`] serves peers (`ferry.raft.v1.RaftService`): raft messages, snapshots,
//! proposals forwarded by followers, status and membership changes.

pub mod apply;
pub mod error;
pub mod handle;
mod logger;
pub mod node;
pub mod service;
pub mod snapshot;
pub mod storage;
pub mod testkit;
pub mod transport;
pub mod tree_snapshot;

#[cfg(test)]
mod tests;

pub use error::{RaftError, Result};
pub use handle::{ClusterStatus, MemberStatus, RaftHandle, Role};
pub use node::start;
pub use transport::{MessageFilter, NetworkPartition};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Endpoint;

/// An error the state machine reports; it stops the node (apply must be deterministic, so an
/// error here means storage failed, not that a command was refused).
pub type StateMachineError = Box<dyn std::error::Error + Send + Sync>;

/// What a state machine made of a command ahead of applying it (see [`StateMachine::prepare`]).
pub type Prepared = Box<dyn std::any::Any + Send + Sync>;

/// One committed command handed to the state machine.
#[derive(Debug)]
pub struct Committed<'a> {
    /// The log index of the entry holding the command (shared by the commands packed in it).
    pub index: u64,
    pub term: u64,
    /// The proposed command; empty for entries raft writes itself (a new leader's first entry,
    /// membership changes), which only advance the applied index.
    pub data: &'a [u8],
    /// What [`StateMachine::prepare`] made of `data`, when it ran; the state machine may take it.
    pub prepared: Option<Prepared>,
}

impl<'a> Committed<'a> {
    /// A command nothing was prepared for.
    pub fn new(index: u64, term: u64, data: &'a [u8]) -> Self {
        Self {
            index,
            term,
            data,
            prepared: None,
        }
    }
}

/// The replicated state machine: the scheduler's `Store` implements it.
///
/// Its trees must live in the `sled::Db` given to [`start`]: the node's flushes make applied
/// state durable, and its snapshots are stored there too.
pub trait StateMachine: Send + Sync + 'static {
    /// Applies committed commands in log order and records the last one's index as applied, all
    /// in ONE atomic write (a sled transaction or batch): commands proposed together are packed
    /// into one log entry, so several commands may share an index, and a call always holds whole
    /// entries. Commands at or below the applied index are never passed again. Returns one result
    /// per command, which its proposer receives (empty for empty data). Must be deterministic:
    /// every node applies the same commands to the same state. A command the state refuses is a
    /// result, not an error.
    fn apply(&self, entries: &mut [Committed<'_>]) -> Result<Vec<Vec<u8>>, StateMachineError>;

    /// Work on one command that needs no state, decoding it say, done ahead of
    /// [`StateMachine::apply`] on a thread of its own; apply finds the result in
    /// [`Committed::prepared`]. Every command of the cluster goes through the one applier thread
    /// in order, so what moves here runs beside it instead of before it. Must be a pure function
    /// of `data`: apply gives the same result with or without it (entries replayed after a
    /// restart, for one, come unprepared).
    fn prepare(&self, _data: &[u8]) -> Option<Prepared> {
        None
    }

    /// The index of the last applied entry (0 for a new state).
    fn applied_index(&self) -> u64;

    /// Fixes the state as it is now, at the applied index, for a snapshot. Called between
    /// applies; the snapshot is then written on another thread while applies go on, and must
    /// still be exactly the state at that index (see [`tree_snapshot`]). One at a time: a call
    /// while another snapshot is being written fails.
    fn begin_snapshot(&self) -> Result<Box<dyn SnapshotSource>, StateMachineError>;

    /// Writes the whole state to `out` on this thread; returns the applied index the snapshot
    /// is at.
    fn snapshot(&self, out: &mut dyn std::io::Write) -> Result<u64, StateMachineError> {
        let source = self.begin_snapshot()?;
        let index = source.index();
        source.write_to(out)?;
        Ok(index)
    }

    /// Replaces the whole state by a snapshot at `index` and records `index` as applied. A
    /// snapshot still being written is abandoned (its writing fails).
    fn restore(&self, index: u64, data: &mut dyn std::io::Read) -> Result<(), StateMachineError>;
}

/// A snapshot of the state machine fixed at one applied index by
/// [`StateMachine::begin_snapshot`].
pub trait SnapshotSource: Send {
    /// The applied index the snapshot is at.
    fn index(&self) -> u64;

    /// Writes the state as it was at [`SnapshotSource::index`], whatever was applied since.
    fn write_to(self: Box<Self>, out: &mut dyn std::io::Write) -> Result<(), StateMachineError>;
}

/// Builds the endpoint a peer is reached at (plain or TLS): see [`RaftConfig::with_tls`].
pub type ConnectFn = Arc<dyn Fn(&str) -> std::result::Result<Endpoint, String> + Send + Sync>;

/// Settings of one raft node.
#[derive(Clone)]
pub struct RaftConfig {
    /// This node's raft id (non-zero, unique in the cluster, never reused).
    pub id: u64,
    /// The URL peers reach this node's raft service at (the scheduler's address).
    pub addr: String,
    /// The voters of a new cluster with their addresses, this node included; used only on the
    /// first start. Empty for a node that joins an existing cluster (it is added with a
    /// membership change and catches up from the leader).
    pub initial_members: BTreeMap<u64, String>,
    /// One raft tick.
    pub tick: Duration,
    /// Ticks without a leader's message before a follower campaigns (randomized up to twice).
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// Applied entries between two snapshots (after each the log is compacted).
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, so a briefly lagging follower catches up from
    /// the log rather than a full snapshot.
    pub log_tail: u64,
    /// How long a proposal, read or membership change waits before failing with a timeout.
    pub request_timeout: Duration,
    /// The largest append message raft sends (bytes of entries).
    pub max_size_per_msg: u64,
    /// Append messages in flight to one peer.
    pub max_inflight_msgs: usize,
    /// Messages queued for one peer; more are dropped (raft retransmits).
    pub peer_queue: usize,
    /// When set, peers must present it (metadata `x-ferry-raft-token`) and this node sends it;
    /// several tokens joined by commas (a key rotation) match when any one is shared.
    pub cluster_token: Option<String>,
    /// Builds the endpoint for a peer's URL; TLS when the cluster uses it.
    pub connect: ConnectFn,
    /// Fault injection for tests: decides which messages get through.
    pub filter: Option<Arc<dyn MessageFilter>>,
    /// The folder snapshots are stored in (see [`snapshot`]); required.
    pub snapshot_dir: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for RaftConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftConfig")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .field("initial_members", &self.initial_members)
            .field("tick", &self.tick)
            .field("election_ticks", &self.election_ticks)
            .field("heartbeat_ticks", &self.heartbeat_ticks)
            .field("snapshot_every", &self.snapshot_every)
            .field("snapshot_dir", &self.snapshot_dir)
            .finish_non_exhaustive()
    }
}

impl RaftConfig {
    /// Defaults: 100 ms ticks, election after 10, heartbeat every 3, a snapshot every 10,000
    /// entries, requests time out after 10 s, plain `http://` peers.
    pub fn new(id: u64, addr: impl Into<String>) -> Self {
        Self {
            id,
            addr: addr.into(),
            initial_members: BTreeMap::new(),
            tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 3,
            snapshot_every: 10_000,
            log_tail: 1_000,
            request_timeout: Duration::from_secs(10),
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            peer_queue: 4096,
            cluster_token: None,
            connect: Arc::new(|url: &str| {
                Endpoint::from_shared(url.to_string())
                    .map_err(|e| format!("invalid peer URL {url}: {e}"))
            }),
            filter: None,
            snapshot_dir: None,
        }
    }

    /// A single-node cluster (or the first of several to be added later).
    pub fn single(id: u64, addr: impl Into<String>) -> Self {
        let addr = addr.into();
        let mut c = Self::new(id, addr.clone());
        c.initial_members.insert(id, addr);
        c
    }

    /// Reaches peers with the same client TLS settings agents and the CLI use.
    pub fn with_tls(mut self, tls: ferry_proto::tls::ClientTls) -> Self {
        self.connect = Arc::new(move |url: &str| tls.endpoint(url));
        self
    }

    /// An election timeout: the longest a healthy leader goes unheard.
    pub fn election_timeout(&self) -> Duration {
        self.tick * self.election_ticks as u32
    }
}
