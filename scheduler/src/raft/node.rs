//! The task that owns `raft::RawNode`, and the handle everything else uses to reach it.
//!
//! Only this task touches raft's state: it ticks, steps peer messages, takes proposals, reads and
//! membership changes from its inbox, and after each batch of events handles the `Ready` in the
//! order raft-rs documents (see [`Node::on_ready`]). Everything it answers with goes back through
//! oneshot channels, so callers never hold a lock on raft.

use super::apply::{self, Applied, Applier, ApplyTask, CommittedEntry, Reply, RequestId, Waiters};
use super::error::{RaftError, Result};
use super::handle::{ClusterStatus, MemberStatus, RaftHandle, Role};
use super::snapshot::SnapshotStore;
use super::storage::SledStorage;
use super::transport::{PeerBook, Transport};
use super::{RaftConfig, StateMachine, logger};
use protobuf::Message as _;
use raft::prelude::{
    ConfChange, ConfChangeType, Entry, EntryType, Message, MessageType, SnapshotMetadata,
};
use raft::{ProgressState, RawNode, SnapshotStatus, StateRole, Storage as _};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

/// Events for the node task.
pub(crate) enum NodeMsg {
    /// Messages from peers.
    Raft(Vec<Message>),
    Propose {
        data: Vec<u8>,
        reply: oneshot::Sender<Result<Applied>>,
    },
    ChangeMembership {
        cc: ConfChange,
        reply: oneshot::Sender<Result<Applied>>,
    },
    ReadIndex {
        reply: oneshot::Sender<Result<u64>>,
    },
    Status {
        reply: oneshot::Sender<ClusterStatus>,
    },
    Unreachable(u64),
    SnapshotSent {
        to: u64,
        ok: bool,
    },
    /// From the applier: everything up to `index` is applied.
    Applied {
        index: u64,
    },
    /// From the applier: a snapshot at this metadata is stored; the log behind it may go.
    SnapshotMade(SnapshotMetadata),
    Fatal(String),
}

/// State the node publishes for readers that must not wait for it.
pub(crate) struct Shared {
    pub role: watch::Sender<Role>,
    pub applied: watch::Sender<u64>,
    /// Until when this leader is sure no other leader can exist (a majority acked recently).
    pub lease_until: Mutex<Option<Instant>>,
}

/// Starts a raft node over `db` (which also holds `sm`'s trees) and returns its handle. Serve
/// [`RaftHandle::service`] on the node's address so peers reach it. The node stops when
/// `shutdown` is cancelled (or [`RaftHandle::stop`] is called).
pub async fn start<S: StateMachine>(
    config: RaftConfig,
    db: sled::Db,
    sm: Arc<S>,
    shutdown: CancellationToken,
) -> Result<RaftHandle> {
    if config.id == 0 {
        return Err(RaftError::InvalidArgument(
            "raft node id must not be 0".into(),
        ));
    }
    let mut storage = SledStorage::open(&db)?;
    let snap_dir = config.snapshot_dir.clone().ok_or_else(|| {
        RaftError::InvalidArgument("raft needs a folder for its snapshots".into())
    })?;
    let snaps = SnapshotStore::open(&db, &snap_dir)?;
    let peers = PeerBook::open(&db)?;
    if !storage.is_initialized() && !config.initial_members.is_empty() {
        if !config.initial_members.contains_key(&config.id) {
            return Err(RaftError::InvalidArgument(format!(
                "the initial members {:?} do not include this node ({})",
                config.initial_members.keys().collect::<Vec<_>>(),
                config.id
            )));
        }
        for (id, addr) in &config.initial_members {
            peers.set(*id, addr)?;
        }
        // The first configuration is a snapshot at index 1 (see `SledStorage::bootstrap`); its
        // data is the state machine as it is now, empty.
        let mut writer = snaps.writer(1)?;
        sm.snapshot(&mut writer)
            .map_err(|e| RaftError::StateMachine(e.to_string()))?;
        writer.finish()?;
        storage.bootstrap(config.initial_members.keys().copied())?;
        info!(raft_id = config.id, members = ?config.initial_members, "bootstrapped a new cluster");
    }
    peers.set(config.id, &config.addr)?;

    // A crash between storing a received snapshot and restoring it leaves the state behind the
    // log's start: restore from the stored snapshot before raft replays the log.
    let snap_meta = storage.snapshot_metadata().clone();
    if snap_meta.index > sm.applied_index() {
        let mut reader = snaps.reader(snap_meta.index)?;
        sm.restore(snap_meta.index, &mut reader)
            .map_err(|e| RaftError::StateMachine(e.to_string()))?;
        info!(
            raft_id = config.id,
            index = snap_meta.index,
            "state restored from the stored snapshot"
        );
    }
    let applied = sm.applied_index();
    db.flush_async().await?;

    let raft_config = raft::Config {
        id: config.id,
        election_tick: config.election_ticks,
        heartbeat_tick: config.heartbeat_ticks,
        applied,
        max_size_per_msg: config.max_size_per_msg,
        max_inflight_msgs: config.max_inflight_msgs,
        check_quorum: true,
        pre_vote: true,
        // Appends to one peer generated in one Ready go as one message.
        batch_append: true,
        // Proposals on a follower are refused with the leader's address (and forwarded by
        // `RaftHandle::write`), not silently passed on by raft.
        ..Default::default()
    };
    raft_config.validate()?;
    let conf_index = storage.conf_index();
    let conf_state = storage.conf_state().clone();
    let alone = conf_state.voters == [config.id];
    let mut raw = RawNode::new(&raft_config, storage, &logger::for_node(config.id))?;
    if alone {
        // A cluster of one elects itself at once instead of waiting out an election timeout.
        raw.campaign()?;
    }

    let (inbox_tx, inbox) = mpsc::channel(1024);
    let (apply_tx, apply_rx) = mpsc::unbounded_channel();
    let stop = shutdown.child_token();
    let tasks = TaskTracker::new();
    let transport = Transport::new(
        &config,
        peers,
        snaps.clone(),
        inbox_tx.clone(),
        stop.clone(),
        tasks.clone(),
    );
    let shared = Arc::new(Shared {
        role: watch::Sender::new(Role {
            id: config.id,
            ..Role::default()
        }),
        applied: watch::Sender::new(applied),
        lease_until: Mutex::new(None),
    });
    let waiters = Arc::new(Mutex::new(Waiters::default()));
    // Committed entries go from the node through the preparing thread to the applier.
    let (prepared_tx, prepared_rx) = mpsc::channel(apply::PREPARED_AHEAD);
    let preparing = sm.clone();
    std::thread::Builder::new()
        .name(format!("raft-prepare-{}", config.id))
        .spawn(move || apply::prepare_ahead(preparing, apply_rx, prepared_tx))
        .map_err(|e| RaftError::StateMachine(format!("cannot start the preparing thread: {e}")))?;
    let applier = Applier {
        sm,
        db: db.clone(),
        snaps: snaps.clone(),
        node: inbox_tx.clone(),
        waiters: waiters.clone(),
        applied_tx: shared.applied.clone(),
        applied,
        applied_term: raw.store().term(applied).unwrap_or(0),
        conf_state,
        conf_valid_from: conf_index,
        last_snapshot: snap_meta.index,
        snapshot_every: config.snapshot_every.max(1),
        id: config.id,
        writing: None,
    };
    let applier_thread = std::thread::Builder::new()
        .name(format!("raft-apply-{}", config.id))
        .spawn(move || applier.run(prepared_rx))
        .map_err(|e| RaftError::StateMachine(format!("cannot start the applier thread: {e}")))?;

    let node = Node {
        id: config.id,
        raw,
        config: config.clone(),
        apply_tx,
        transport: transport.clone(),
        waiters,
        reads: HashMap::new(),
        shared: shared.clone(),
        boot: rand::random(),
        seq: 0,
        last_ack: HashMap::new(),
        snaps: snaps.clone(),
        applied,
        proposals: Vec::new(),
    };
    tasks.spawn(node.run(inbox, stop.clone()));
    tasks.close();
    Ok(RaftHandle {
        id: config.id,
        inbox: inbox_tx,
        shared,
        transport,
        snaps,
        db,
        timeout: config.request_timeout,
        stop,
        tasks,
        applier: Arc::new(Mutex::new(Some(applier_thread))),
    })
}

struct Node {
    id: u64,
    raw: RawNode<SledStorage>,
    config: RaftConfig,
    apply_tx: mpsc::UnboundedSender<ApplyTask>,
    transport: Arc<Transport>,
    waiters: Arc<Mutex<Waiters>>,
    reads: HashMap<RequestId, oneshot::Sender<Result<u64>>>,
    shared: Arc<Shared>,
    boot: u64,
    seq: u64,
    /// When each peer last acknowledged this leader in its current term.
    last_ack: HashMap<u64, Instant>,
    snaps: SnapshotStore,
    applied: u64,
    /// Proposals taken from the inbox, proposed together before the next `Ready`.
    proposals: Vec<(Vec<u8>, oneshot::Sender<Result<Applied>>)>,
}

/// Proposals put in one raft message at most.
const MAX_PROPOSALS_PER_STEP: usize = 1024;
/// Bytes of commands packed into one log entry at most.
const PACK_BYTES: usize = 256 << 10;

impl Node {
    async fn run(mut self, mut inbox: mpsc::Receiver<NodeMsg>, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(self.config.tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let outcome: Result<()> = async {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = ticker.tick() => {
                        self.raw.tick();
                    }
                    msg = inbox.recv() => {
                        let Some(msg) = msg else { return Ok(()) };
                        self.handle(msg)?;
                        // Take what else is queued before the next Ready: one flush for many.
                        for _ in 0..4096 {
                            match inbox.try_recv() {
                                Ok(msg) => self.handle(msg)?,
                                Err(_) => break,
                            }
                        }
                        self.propose_batch();
                    }
                }
                self.on_ready().await?;
                self.publish();
            }
        }
        .await;
        if let Err(e) = &outcome {
            error!(raft_id = self.id, error = %e, "raft node stopped on an error");
        }
        self.shared.role.send_replace(Role {
            id: self.id,
            ..Role::default()
        });
        *self
            .shared
            .lease_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .fail_all(|| RaftError::Stopped);
        for (_, reply) in self.reads.drain() {
            let _ = reply.send(Err(RaftError::Stopped));
        }
        stop.cancel();
        if let Err(e) = self.raw.store().db().flush_async().await {
            error!(raft_id = self.id, error = %e, "flush on stop failed");
        }
        info!(raft_id = self.id, "raft node stopped");
    }

    fn next_request_id(&mut self) -> RequestId {
        self.seq += 1;
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.boot.to_be_bytes());
        id[8..].copy_from_slice(&self.seq.to_be_bytes());
        id
    }

    fn leader(&self) -> Option<(u64, String)> {
        let leader = self.raw.raft.leader_id;
        (leader != raft::INVALID_ID)
            .then(|| (leader, self.transport.addr_of(leader).unwrap_or_default()))
    }

    fn not_leader(&self) -> RaftError {
        match self.leader() {
            Some(l) => RaftError::NotLeader { leader: Some(l) },
            None => RaftError::NoLeader,
        }
    }

    fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    fn handle(&mut self, msg: NodeMsg) -> Result<()> {
        match msg {
            NodeMsg::Raft(msgs) => {
                let now = Instant::now();
                for m in msgs {
                    if self.is_leader()
                        && m.term == self.raw.raft.term
                        && matches!(
                            m.get_msg_type(),
                            MessageType::MsgAppendResponse | MessageType::MsgHeartbeatResponse
                        )
                    {
                        self.last_ack.insert(m.from, now);
                    }
                    let (from, kind) = (m.from, m.get_msg_type());
                    if let Err(e) = self.raw.step(m) {
                        debug!(raft_id = self.id, peer = from, kind = ?kind, error = %e, "raft message not stepped");
                    }
                }
            }
            NodeMsg::Propose { data, reply } => {
                if !self.is_leader() {
                    let _ = reply.send(Err(self.not_leader()));
                    return Ok(());
                }
                self.proposals.push((data, reply));
                if self.proposals.len() >= MAX_PROPOSALS_PER_STEP {
                    self.propose_batch();
                }
            }
            NodeMsg::ChangeMembership { cc, reply } => {
                if !self.is_leader() {
                    let _ = reply.send(Err(self.not_leader()));
                    return Ok(());
                }
                if self.raw.raft.pending_conf_index > self.raw.raft.raft_log.applied {
                    let _ = reply.send(Err(RaftError::ChangeInProgress));
                    return Ok(());
                }
                let id = self.next_request_id();
                let before = self.raw.raft.raft_log.last_index();
                match self.raw.propose_conf_change(id.to_vec(), cc) {
                    Ok(()) if self.raw.raft.raft_log.last_index() > before => {
                        let index = self.raw.raft.raft_log.last_index();
                        self.waiters
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(id, index, reply);
                    }
                    Ok(()) | Err(raft::Error::ProposalDropped) => {
                        let _ = reply.send(Err(RaftError::Dropped));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            NodeMsg::ReadIndex { reply } => {
                if self.raw.raft.leader_id == raft::INVALID_ID {
                    let _ = reply.send(Err(RaftError::NoLeader));
                    return Ok(());
                }
                let id = self.next_request_id();
                self.raw.read_index(id.to_vec());
                self.reads.insert(id, reply);
            }
            NodeMsg::Status { reply } => {
                let _ = reply.send(self.status());
            }
            NodeMsg::Unreachable(peer) => self.raw.report_unreachable(peer),
            NodeMsg::SnapshotSent { to, ok } => {
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(to, status);
            }
            NodeMsg::Applied { index } => {
                self.applied = self.applied.max(index);
                let log = &self.raw.raft.raft_log;
                let limit = log.committed.min(log.persisted);
                let to = self.applied.min(limit);
                if to > log.applied {
                    self.raw.advance_apply_to(to);
                }
            }
            NodeMsg::SnapshotMade(meta) => self.on_snapshot_made(meta)?,
            NodeMsg::Fatal(e) => return Err(RaftError::StateMachine(e)),
        }
        Ok(())
    }

    /// Proposes the queued commands as one raft message of many entries (one entry each): raft
    /// then appends and replicates them together, instead of one append round per command.
    fn propose_batch(&mut self) {
        if self.proposals.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.proposals);
        if !self.is_leader() {
            // Leadership went while these waited; never step a proposal on a follower (raft-rs
            // would forward it to the leader behind the proposer's back).
            for (_, reply) in batch {
                let _ = reply.send(Err(self.not_leader()));
            }
            return;
        }
        // Commands go into entries of up to PACK_BYTES each: one command alone as it is, several
        // packed together (one log write and one apply batch for all of them).
        let mut entries = Vec::new();
        let mut waiting: Vec<Vec<(RequestId, Reply)>> = Vec::new();
        let mut pack: Vec<(RequestId, Vec<u8>)> = Vec::new();
        let mut replies: Vec<(RequestId, Reply)> = Vec::new();
        let mut pack_bytes = 0;
        let mut batch = batch.into_iter().peekable();
        while let Some((data, reply)) = batch.next() {
            let id = self.next_request_id();
            pack_bytes += data.len() + 20;
            pack.push((id, data));
            replies.push((id, reply));
            if pack_bytes >= PACK_BYTES || batch.peek().is_none() {
                let entry = if pack.len() == 1 {
                    let (id, data) = pack.pop().unwrap_or_default();
                    Entry {
                        data: data.into(),
                        context: id.to_vec().into(),
                        ..Default::default()
                    }
                } else {
                    Entry {
                        data: apply::pack(&pack).into(),
                        context: apply::PACKED.to_vec().into(),
                        ..Default::default()
                    }
                };
                pack.clear();
                pack_bytes = 0;
                entries.push(entry);
                waiting.push(std::mem::take(&mut replies));
            }
        }
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgPropose);
        m.from = self.id;
        m.set_entries(entries.into());
        let before = self.raw.raft.raft_log.last_index();
        let outcome = self.raw.raft.step(m);
        let appended = self.raw.raft.raft_log.last_index() - before;
        match outcome {
            Ok(()) if appended == waiting.len() as u64 => {
                let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
                for (i, entry) in waiting.into_iter().enumerate() {
                    for (id, reply) in entry {
                        waiters.insert(id, before + 1 + i as u64, reply);
                    }
                }
            }
            Ok(()) | Err(raft::Error::ProposalDropped) => {
                for (_, reply) in waiting.into_iter().flatten() {
                    let _ = reply.send(Err(RaftError::Dropped));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for (_, reply) in waiting.into_iter().flatten() {
                    let _ = reply.send(Err(RaftError::Refused(msg.clone())));
                }
            }
        }
    }

    /// Records a snapshot the applier wrote and compacts the log behind it, keeping a tail.
    fn on_snapshot_made(&mut self, meta: SnapshotMetadata) -> Result<()> {
        let store = self.raw.mut_store();
        if meta.index <= store.snapshot_metadata().index {
            return Ok(());
        }
        let index = meta.index;
        store.set_snapshot(meta)?;
        let compact_to = index.saturating_sub(self.config.log_tail) + 1;
        store.compact(compact_to)?;
        self.snaps.remove_below(index)?;
        debug!(
            raft_id = self.id,
            index,
            first_index = compact_to,
            "log compacted"
        );
        Ok(())
    }

    /// Handles one `Ready` in raft-rs's documented order.
    async fn on_ready(&mut self) -> Result<()> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut rd = self.raw.ready();
        if rd.ss().is_some() {
            self.on_role_change();
        }
        // 1. A leader sends its messages before persisting: replication overlaps its own write
        //    (raft thesis 10.2.1). On a follower this list is empty.
        self.transport.send(rd.take_messages());
        // 2. A snapshot from the leader replaces the log; the applier restores the state from it.
        let mut wrote = false;
        if !rd.snapshot().is_empty() {
            let meta = rd.snapshot().get_metadata().clone();
            info!(
                raft_id = self.id,
                index = meta.index,
                term = meta.term,
                "applying snapshot from the leader"
            );
            self.raw.mut_store().apply_snapshot(meta.clone())?;
            self.send_apply(ApplyTask::Restore(meta));
            wrote = true;
        }
        // 3. Committed entries go to the applier in order; membership changes take effect here.
        let committed = rd.take_committed_entries();
        self.hand_over(committed)?;
        // 4. New entries and the hard state are written...
        if !rd.entries().is_empty() {
            self.raw.mut_store().append(rd.entries())?;
            wrote = true;
        }
        if let Some(hs) = rd.hs() {
            self.raw.mut_store().set_hard_state(hs.clone())?;
            wrote = true;
        }
        // 5. ...and made durable with one flush, before anything that depends on them is sent.
        if wrote {
            self.raw.store().db().flush_async().await?;
        }
        // 6. Votes and append responses promise persisted state: only now may they leave.
        self.transport.send(rd.take_persisted_messages());
        for rs in rd.take_read_states() {
            if let Ok(id) = RequestId::try_from(rs.request_ctx.as_slice())
                && let Some(reply) = self.reads.remove(&id)
            {
                let _ = reply.send(Ok(rs.index));
            }
        }
        // 7. Advance: what became committed by this persist comes back as a LightReady.
        let mut light = self.raw.advance_append(rd);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit)?;
        }
        self.transport.send(light.take_messages());
        let committed = light.take_committed_entries();
        self.hand_over(committed)?;
        // 8. The applied index advances when the applier reports back (NodeMsg::Applied).
        if self.raw.store().take_snapshot_wanted() {
            self.send_apply(ApplyTask::MakeSnapshot);
        }
        Ok(())
    }

    fn send_apply(&self, task: ApplyTask) {
        if self.apply_tx.send(task).is_err() {
            warn!(raft_id = self.id, "applier has stopped");
        }
    }

    /// Passes committed entries to the applier, applying membership changes to raft first.
    fn hand_over(&mut self, entries: Vec<Entry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let conf_state = match entry.get_entry_type() {
                EntryType::EntryConfChange => Some(self.apply_conf_change(&entry)?),
                EntryType::EntryConfChangeV2 => {
                    warn!(
                        raft_id = self.id,
                        index = entry.index,
                        "ignoring a v2 configuration change (Ferry proposes v1 only)"
                    );
                    None
                }
                EntryType::EntryNormal => None,
            };
            out.push(CommittedEntry {
                entry,
                conf_state,
                prepared: Vec::new(),
            });
        }
        self.send_apply(ApplyTask::Entries(out));
        Ok(())
    }

    fn apply_conf_change(&mut self, entry: &Entry) -> Result<raft::prelude::ConfState> {
        let cc = ConfChange::parse_from_bytes(entry.data.as_ref())?;
        let cs = self.raw.apply_conf_change(&cc)?;
        let addr = String::from_utf8_lossy(cc.context.as_ref()).into_owned();
        match cc.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                if !addr.is_empty() {
                    self.transport.add_peer(cc.node_id, &addr)?;
                }
                info!(raft_id = self.id, index = entry.index, node = cc.node_id, addr = %addr, voters = ?cs.voters, "member added");
            }
            ConfChangeType::RemoveNode => {
                if cc.node_id != self.id {
                    self.transport.remove_peer(cc.node_id)?;
                }
                self.last_ack.remove(&cc.node_id);
                info!(raft_id = self.id, index = entry.index, node = cc.node_id, voters = ?cs.voters, "member removed");
            }
        }
        self.raw
            .mut_store()
            .set_conf_state(cs.clone(), entry.index)?;
        Ok(cs)
    }

    fn on_role_change(&mut self) {
        self.last_ack.clear();
        // Pending reads were addressed to a leadership that changed; raft drops them.
        for (_, reply) in self.reads.drain() {
            let _ = reply.send(Err(RaftError::Dropped));
        }
        let role = self.raw.raft.state;
        let leader = self.raw.raft.leader_id;
        let term = self.raw.raft.term;
        if role == StateRole::Leader {
            info!(raft_id = self.id, term, "became leader");
        } else {
            info!(raft_id = self.id, term, role = ?role, leader, "following");
        }
    }

    /// Publishes the role and the leader lease for readers outside the task.
    fn publish(&mut self) {
        let role = Role {
            id: self.id,
            term: self.raw.raft.term,
            is_leader: self.is_leader(),
            leader: self.leader(),
        };
        self.shared.role.send_if_modified(|r| {
            if *r != role {
                *r = role.clone();
                true
            } else {
                false
            }
        });
        let lease = if role.is_leader {
            self.quorum_ack_time()
                .map(|t| t + self.config.election_timeout() / 2)
        } else {
            None
        };
        *self
            .shared
            .lease_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = lease;
    }

    /// The time by which a majority of voters (this leader included) had acknowledged it.
    fn quorum_ack_time(&self) -> Option<Instant> {
        let voters = &self.raw.store().conf_state().voters;
        if voters.is_empty() {
            return None;
        }
        let now = Instant::now();
        let mut times: Vec<Instant> = voters
            .iter()
            .filter_map(|v| {
                if *v == self.id {
                    Some(now)
                } else {
                    self.last_ack.get(v).copied()
                }
            })
            .collect();
        let quorum = voters.len() / 2 + 1;
        if times.len() < quorum {
            return None;
        }
        times.sort_unstable_by(|a, b| b.cmp(a));
        times.get(quorum - 1).copied()
    }

    fn status(&self) -> ClusterStatus {
        let raft = &self.raw.raft;
        let store = self.raw.store();
        let last_index = raft.raft_log.last_index();
        let cs = store.conf_state();
        let mut ids: Vec<u64> = cs
            .voters
            .iter()
            .chain(cs.learners.iter())
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let members = ids
            .into_iter()
            .map(|id| {
                let mut m = MemberStatus {
                    id,
                    addr: self.transport.addr_of(id).unwrap_or_default(),
                    voter: cs.voters.contains(&id),
                    matched: 0,
                    next_index: 0,
                    lag: 0,
                    progress: String::new(),
                    recently_active: false,
                };
                if self.is_leader()
                    && let Some(pr) = raft.prs().get(id)
                {
                    m.matched = pr.matched;
                    m.next_index = pr.next_idx;
                    m.lag = last_index.saturating_sub(pr.matched);
                    m.progress = match pr.state {
                        ProgressState::Probe => "probe",
                        ProgressState::Replicate => "replicate",
                        ProgressState::Snapshot => "snapshot",
                    }
                    .to_string();
                    m.recently_active = pr.recent_active;
                }
                m
            })
            .collect();
        ClusterStatus {
            id: self.id,
            role: match raft.state {
                StateRole::Leader => "leader",
                StateRole::Follower => "follower",
                StateRole::Candidate => "candidate",
                StateRole::PreCandidate => "pre-candidate",
            }
            .to_string(),
            leader: self.leader(),
            term: raft.term,
            commit_index: raft.raft_log.committed,
            applied_index: self.applied,
            first_index: store.first_index().unwrap_or(0),
            last_index,
            snapshot_index: store.snapshot_metadata().index,
            members,
        }
    }
}
