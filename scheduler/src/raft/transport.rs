//! Sends raft messages to peers over gRPC, and knows where peers are.
//!
//! Each peer has a bounded queue and one task that connects lazily, keeps a client stream
//! (`RaftService.Step`) open and sends what is queued in batches. When a peer is slow or down,
//! the queue fills and further messages are dropped, and a broken stream is reported to raft as
//! unreachable and reconnected with backoff: raft retransmits what matters, and a stalled peer
//! must never stall the node. Snapshots go on their own stream (`InstallSnapshot`), read chunk
//! by chunk from sled, and their outcome is reported to raft.

use super::error::{RaftError, Result};
use super::node::NodeMsg;
use super::snapshot::SnapshotStore;
use super::{ConnectFn, RaftConfig};
use ferry_proto::raft::v1::raft_service_client::RaftServiceClient;
use ferry_proto::raft::v1::{ForwardRequest, MessageBatch, SnapshotChunk};
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

/// Metadata key carrying the cluster token between peers.
pub const RAFT_TOKEN_HEADER: &str = "x-ferry-raft-token";

const PEERS_TREE: &str = "raft_peers";
/// Messages in one `Step` batch at most.
const MAX_BATCH: usize = 512;
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Decides which raft messages get through; for fault injection in tests.
pub trait MessageFilter: Send + Sync + 'static {
    fn allows(&self, from: u64, to: u64) -> bool;
}

/// A network partition for tests: drops every raft message between an isolated node and the
/// others, both when sent and when received. Shared by all nodes of a test cluster.
#[derive(Default)]
pub struct NetworkPartition {
    isolated: Mutex<HashSet<u64>>,
}

impl NetworkPartition {
    /// Cuts `node` off from every node not isolated with it.
    pub fn isolate(&self, node: u64) {
        self.isolated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node);
    }

    /// Restores every connection.
    pub fn heal(&self) {
        self.isolated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

impl MessageFilter for NetworkPartition {
    fn allows(&self, from: u64, to: u64) -> bool {
        let isolated = self.isolated.lock().unwrap_or_else(|p| p.into_inner());
        isolated.contains(&from) == isolated.contains(&to)
    }
}

/// Peers' addresses, kept in sled so a restarted node can reach the peers it learned about.
pub(crate) struct PeerBook {
    tree: sled::Tree,
    addrs: Mutex<BTreeMap<u64, String>>,
}

impl PeerBook {
    pub fn open(db: &sled::Db) -> Result<Self> {
        let tree = db.open_tree(PEERS_TREE)?;
        let mut addrs = BTreeMap::new();
        for item in tree.iter() {
            let (k, v) = item?;
            let arr: [u8; 8] = k
                .as_ref()
                .try_into()
                .map_err(|_| RaftError::Corrupt("peer key is not 8 bytes".into()))?;
            addrs.insert(
                u64::from_be_bytes(arr),
                String::from_utf8_lossy(&v).into_owned(),
            );
        }
        Ok(Self {
            tree,
            addrs: Mutex::new(addrs),
        })
    }

    pub fn set(&self, id: u64, addr: &str) -> Result<bool> {
        let mut addrs = self.addrs.lock().unwrap_or_else(|p| p.into_inner());
        if addrs.get(&id).map(String::as_str) == Some(addr) {
            return Ok(false);
        }
        self.tree.insert(id.to_be_bytes(), addr.as_bytes())?;
        addrs.insert(id, addr.to_string());
        Ok(true)
    }

    fn remove(&self, id: u64) -> Result<()> {
        self.tree.remove(id.to_be_bytes())?;
        self.addrs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        Ok(())
    }

    fn get(&self, id: u64) -> Option<String> {
        self.addrs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    fn all(&self) -> BTreeMap<u64, String> {
        self.addrs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

struct PeerQueue {
    tx: mpsc::Sender<Message>,
    stop: CancellationToken,
}

/// The outgoing side of one node's raft traffic.
pub(crate) struct Transport {
    id: u64,
    addr: String,
    connect: ConnectFn,
    filter: Option<Arc<dyn super::MessageFilter>>,
    token: Option<String>,
    queue_len: usize,
    peers: PeerBook,
    queues: Mutex<HashMap<u64, PeerQueue>>,
    /// Peers a snapshot is being sent to (one at a time each).
    sending_snapshot: Mutex<HashSet<u64>>,
    /// Channels to leaders for forwarded proposals, by address.
    channels: Mutex<HashMap<String, Channel>>,
    snaps: SnapshotStore,
    node: mpsc::Sender<NodeMsg>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Transport {
    pub fn new(
        config: &RaftConfig,
        peers: PeerBook,
        snaps: SnapshotStore,
        node: mpsc::Sender<NodeMsg>,
        stop: CancellationToken,
        tasks: TaskTracker,
    ) -> Arc<Self> {
        let known = peers.all();
        let t = Arc::new(Self {
            id: config.id,
            addr: config.addr.clone(),
            connect: config.connect.clone(),
            filter: config.filter.clone(),
            token: config.cluster_token.clone(),
            queue_len: config.peer_queue.max(16),
            peers,
            queues: Mutex::new(HashMap::new()),
            sending_snapshot: Mutex::new(HashSet::new()),
            channels: Mutex::new(HashMap::new()),
            snaps,
            node,
            stop,
            tasks,
        });
        for (id, addr) in known {
            if id != t.id {
                t.start_peer(id, addr);
            }
        }
        t
    }

    pub fn addr_of(&self, id: u64) -> Option<String> {
        self.peers.get(id)
    }

    pub fn allows(&self, from: u64, to: u64) -> bool {
        self.filter.as_ref().is_none_or(|f| f.allows(from, to))
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Records (and connects to) a member added by a configuration change.
    pub fn add_peer(self: &Arc<Self>, id: u64, addr: &str) -> Result<()> {
        if id == self.id {
            return Ok(());
        }
        if self.peers.set(id, addr)? || !self.has_queue(id) {
            self.start_peer(id, addr.to_string());
        }
        Ok(())
    }

    /// Learns a peer's address from a message it sent, unless already known.
    pub fn learn(self: &Arc<Self>, id: u64, addr: &str) {
        if id == self.id || addr.is_empty() || self.peers.get(id).is_some() {
            return;
        }
        info!(
            raft_id = self.id,
            peer = id,
            addr,
            "learned a peer's address"
        );
        if let Err(e) = self.add_peer(id, addr) {
            warn!(raft_id = self.id, peer = id, error = %e, "cannot record a peer's address");
        }
    }

    pub fn remove_peer(&self, id: u64) -> Result<()> {
        self.peers.remove(id)?;
        if let Some(q) = self
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
        {
            q.stop.cancel();
        }
        Ok(())
    }

    fn has_queue(&self, id: u64) -> bool {
        self.queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&id)
    }

    fn start_peer(self: &Arc<Self>, id: u64, addr: String) {
        let (tx, rx) = mpsc::channel(self.queue_len);
        let stop = self.stop.child_token();
        let old = self
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id,
                PeerQueue {
                    tx,
                    stop: stop.clone(),
                },
            );
        if let Some(old) = old {
            old.stop.cancel();
        }
        let t = self.clone();
        self.tasks
            .spawn(async move { t.run_peer(id, addr, rx, stop).await });
    }

    /// Queues messages for their peers; drops what a full queue or the filter does not take.
    pub fn send(self: &Arc<Self>, msgs: Vec<Message>) {
        for m in msgs {
            if !self.allows(self.id, m.to) {
                continue;
            }
            if m.get_msg_type() == MessageType::MsgSnapshot {
                self.send_snapshot(m);
                continue;
            }
            let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            match queues.get(&m.to) {
                Some(q) => {
                    if let Err(e) = q.tx.try_send(m) {
                        debug!(
                            raft_id = self.id,
                            peer = e.into_inner().to,
                            "peer queue full; message dropped"
                        );
                    }
                }
                None => {
                    debug!(
                        raft_id = self.id,
                        peer = m.to,
                        "no address for peer; message dropped"
                    );
                }
            }
        }
    }

    fn endpoint(&self, addr: &str) -> Result<Channel> {
        let endpoint = (self.connect)(addr)
            .map_err(RaftError::InvalidArgument)?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        Ok(endpoint.connect_lazy())
    }

    fn request<T>(&self, body: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(body);
        if let Some(token) = &self.token
            && let Ok(v) = token.parse()
        {
            req.metadata_mut().insert(RAFT_TOKEN_HEADER, v);
        }
        req
    }

    async fn run_peer(
        self: Arc<Self>,
        to: u64,
        addr: String,
        mut rx: mpsc::Receiver<Message>,
        stop: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(50);
        let mut first: Option<Message> = None;
        loop {
            // Connect only when there is something to send.
            if first.is_none() {
                first = tokio::select! {
                    _ = stop.cancelled() => return,
                    m = rx.recv() => match m { Some(m) => Some(m), None => return },
                };
            }
            let channel = match self.endpoint(&addr) {
                Ok(c) => c,
                Err(e) => {
                    warn!(raft_id = self.id, peer = to, addr = %addr, error = %e, "cannot reach peer");
                    return;
                }
            };
            let (stream_tx, stream_rx) = mpsc::channel::<MessageBatch>(16);
            let mut client = RaftServiceClient::new(channel)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20);
            let req = self.request(ReceiverStream::new(stream_rx));
            let mut call = tokio::spawn(async move { client.step(req).await });
            let mut sent_any = false;
            let broken = loop {
                let mut batch = Vec::new();
                if let Some(m) = first.take() {
                    batch.push(m);
                }
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(m) => batch.push(m),
                        Err(_) => break,
                    }
                }
                if !batch.is_empty() {
                    let mut encoded = Vec::with_capacity(batch.len());
                    for m in &batch {
                        match m.write_to_bytes() {
                            Ok(b) => encoded.push(b),
                            Err(e) => {
                                warn!(raft_id = self.id, peer = to, error = %e, "cannot encode a raft message")
                            }
                        }
                    }
                    let out = MessageBatch {
                        from: self.id,
                        from_addr: self.addr.clone(),
                        messages: encoded,
                    };
                    if stream_tx.send(out).await.is_err() {
                        break true;
                    }
                    if !sent_any {
                        sent_any = true;
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => { call.abort(); return; }
                    r = &mut call => {
                        match r {
                            Ok(Err(status)) => debug!(raft_id = self.id, peer = to, error = %status.message(), "raft stream to peer ended"),
                            Ok(Ok(_)) => debug!(raft_id = self.id, peer = to, "raft stream to peer closed"),
                            Err(_) => {}
                        }
                        break true;
                    }
                    m = rx.recv() => match m {
                        Some(m) => first = Some(m),
                        None => { call.abort(); return; }
                    },
                }
            };
            if broken {
                // What was queued for a broken stream is lost; raft resends after probing.
                let _ = self.node.try_send(NodeMsg::Unreachable(to));
                if sent_any {
                    backoff = Duration::from_millis(50);
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// Streams the stored snapshot a MsgSnapshot refers to, then tells raft how it went.
    fn send_snapshot(self: &Arc<Self>, msg: Message) {
        let to = msg.to;
        {
            let mut sending = self
                .sending_snapshot
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !sending.insert(to) {
                return;
            }
        }
        let t = self.clone();
        self.tasks.spawn(async move {
            let index = msg.get_snapshot().get_metadata().index;
            let ok = match t.stream_snapshot(msg).await {
                Ok(bytes) => {
                    info!(raft_id = t.id, peer = to, index, bytes, "snapshot sent");
                    true
                }
                Err(e) => {
                    warn!(raft_id = t.id, peer = to, index, error = %e, "snapshot not sent; raft will retry");
                    false
                }
            };
            t.sending_snapshot
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&to);
            let _ = t.node.send(NodeMsg::SnapshotSent { to, ok }).await;
        });
    }

    async fn stream_snapshot(&self, msg: Message) -> Result<u64> {
        let to = msg.to;
        let index = msg.get_snapshot().get_metadata().index;
        let addr = self
            .addr_of(to)
            .ok_or_else(|| RaftError::InvalidArgument(format!("no address for peer {to}")))?;
        let total = self.snaps.complete_size(index)?.ok_or_else(|| {
            RaftError::Corrupt(format!("snapshot at index {index} is not stored"))
        })?;
        let first = SnapshotChunk {
            message: msg.write_to_bytes()?,
            from: self.id,
            from_addr: self.addr.clone(),
            data: Vec::new(),
            last: false,
            total_bytes: 0,
        };
        let (tx, rx) = mpsc::channel::<SnapshotChunk>(4);
        let snaps = self.snaps.clone();
        // sled reads block: read the chunks on a blocking thread, a few ahead of the network.
        let reader = tokio::task::spawn_blocking(move || -> Result<()> {
            if tx.blocking_send(first).is_err() {
                return Ok(());
            }
            for chunk in snaps.chunks(index) {
                let chunk = SnapshotChunk {
                    data: chunk?.to_vec(),
                    ..Default::default()
                };
                if tx.blocking_send(chunk).is_err() {
                    return Ok(());
                }
            }
            let _ = tx.blocking_send(SnapshotChunk {
                last: true,
                total_bytes: total,
                ..Default::default()
            });
            Ok(())
        });
        let mut client =
            RaftServiceClient::new(self.endpoint(&addr)?).max_encoding_message_size(64 << 20);
        let sent = client
            .install_snapshot(self.request(ReceiverStream::new(rx)))
            .await;
        reader
            .await
            .map_err(|e| RaftError::Corrupt(format!("snapshot reader: {e}")))??;
        sent.map_err(|s| RaftError::Forward(s.message().to_string()))?;
        Ok(total)
    }

    /// Proposes `command` on the leader at `addr`; returns the index it applied at and its result.
    pub async fn forward(
        &self,
        addr: &str,
        command: Vec<u8>,
        timeout: Duration,
    ) -> Result<(u64, Vec<u8>)> {
        let channel = {
            let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
            match channels.get(addr) {
                Some(c) => c.clone(),
                None => {
                    let c = self.endpoint(addr)?;
                    channels.insert(addr.to_string(), c.clone());
                    c
                }
            }
        };
        let mut client = RaftServiceClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let mut req = self.request(ForwardRequest { command });
        req.set_timeout(timeout);
        match client.forward(req).await {
            Ok(resp) => {
                let resp = resp.into_inner();
                Ok((resp.index, resp.result))
            }
            Err(status) if status.code() == tonic::Code::DeadlineExceeded => {
                Err(RaftError::Timeout(timeout))
            }
            Err(status) if status.code() == tonic::Code::Aborted => Err(RaftError::Dropped),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                let e = RaftError::from_status(&status);
                match e {
                    RaftError::NotLeader { .. } => Err(e),
                    // The leader is gone or has no leader either: wait for an election.
                    _ => Err(RaftError::NoLeader),
                }
            }
            Err(status) => Err(RaftError::Forward(status.message().to_string())),
        }
    }
}
