//! A small replicated key-value state machine and an in-process cluster of raft nodes on
//! loopback gRPC, for the raft tests and the raft benchmark (which cannot see `#[cfg(test)]`
//! code). Not used by the scheduler itself.

use super::tree_snapshot::CopyOnWrite;
use super::{
    Committed, NetworkPartition, RaftConfig, RaftError, RaftHandle, SnapshotSource, StateMachine,
    StateMachineError,
};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

const APPLIED: &[u8] = b"\0applied";
const DIGEST: &[u8] = b"\0digest";
/// Keys of the per-index digest history: `\x01` + index.
const HISTORY: u8 = 1;
const KEY: u8 = 2;

/// A key-value store in one sled tree. A command is `key \0 value`; its result is the number of
/// commands applied so far (8 bytes, big-endian). It also keeps a running digest of every
/// command in order, and the digest after each index, so tests can check that nodes applied the
/// same commands in the same order.
pub struct KvMachine {
    tree: sled::Tree,
    cow: CopyOnWrite,
    /// Whether to keep the digest after each index (tests compare them; the benchmark does not).
    history: bool,
    applied: AtomicU64,
    restores: AtomicU64,
}

/// Encodes a `set key value` command.
pub fn set_command(key: &str, value: &[u8]) -> Vec<u8> {
    let mut c = key.as_bytes().to_vec();
    c.push(0);
    c.extend_from_slice(value);
    c
}

fn u64_of(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

fn mix(digest: u64, data: &[u8]) -> u64 {
    // FNV-1a over the previous digest and the command: order-sensitive and deterministic.
    let mut h = digest ^ 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl KvMachine {
    pub fn open(db: &sled::Db) -> sled::Result<Self> {
        Self::open_with(db, true)
    }

    /// Without the per-index digest history: one write per command, as a real state would do.
    pub fn open_with(db: &sled::Db, history: bool) -> sled::Result<Self> {
        let tree = db.open_tree("kv")?;
        let applied = u64_of(tree.get(APPLIED)?);
        Ok(Self {
            cow: CopyOnWrite::new(tree.clone()),
            tree,
            history,
            applied: AtomicU64::new(applied),
            restores: AtomicU64::new(0),
        })
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut k = vec![KEY];
        k.extend_from_slice(key.as_bytes());
        self.tree.get(k).ok().flatten().map(|v| v.to_vec())
    }

    /// Number of keys set.
    pub fn len(&self) -> usize {
        self.tree.scan_prefix([KEY]).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The digest of all commands applied up to the applied index.
    pub fn digest(&self) -> u64 {
        u64_of(self.tree.get(DIGEST).ok().flatten())
    }

    /// The digest after each applied index this node applied itself (not restored).
    pub fn history(&self) -> BTreeMap<u64, u64> {
        self.tree
            .scan_prefix([HISTORY])
            .filter_map(|kv| kv.ok())
            .filter_map(|(k, v)| {
                let index = <[u8; 8]>::try_from(k.get(1..)?).ok()?;
                let digest = <[u8; 8]>::try_from(v.as_ref()).ok()?;
                Some((u64::from_be_bytes(index), u64::from_be_bytes(digest)))
            })
            .collect()
    }

    /// How many snapshots this state was restored from since it was opened.
    pub fn restores(&self) -> u64 {
        self.restores.load(Ordering::Relaxed)
    }
}

impl StateMachine for KvMachine {
    fn apply(&self, entries: &mut [Committed<'_>]) -> Result<Vec<Vec<u8>>, StateMachineError> {
        let mut batch = sled::Batch::default();
        // The keys of `batch`, for the snapshot in progress (sled's batch does not list them).
        let mut keys: Vec<Vec<u8>> = Vec::with_capacity(entries.len() * 2 + 3);
        let mut digest = self.digest();
        let mut count = u64_of(self.tree.get(b"\0count")?);
        let mut out = Vec::with_capacity(entries.len());
        let before = self.applied.load(Ordering::Relaxed);
        let mut last = before;
        for e in entries.iter() {
            if e.index <= before {
                // Idempotent under retries: an entry at or below the applied index is done.
                out.push(Vec::new());
                continue;
            }
            last = e.index;
            if e.data.is_empty() {
                out.push(Vec::new());
                continue;
            }
            let (key, value) = match e.data.iter().position(|b| *b == 0) {
                Some(p) => (&e.data[..p], &e.data[p + 1..]),
                None => (e.data, &[][..]),
            };
            let mut k = vec![KEY];
            k.extend_from_slice(key);
            batch.insert(k.as_slice(), value);
            keys.push(k);
            digest = mix(digest, e.data);
            count += 1;
            if self.history {
                let mut h = vec![HISTORY];
                h.extend_from_slice(&e.index.to_be_bytes());
                batch.insert(h.as_slice(), &digest.to_be_bytes());
                keys.push(h);
            }
            out.push(count.to_be_bytes().to_vec());
        }
        batch.insert(DIGEST, &digest.to_be_bytes());
        batch.insert(b"\0count", &count.to_be_bytes());
        batch.insert(APPLIED, &last.to_be_bytes());
        self.cow.before_write(
            keys.iter()
                .map(Vec::as_slice)
                .chain([DIGEST, b"\0count", APPLIED]),
        )?;
        self.tree.apply_batch(batch)?;
        self.applied.store(last, Ordering::Relaxed);
        Ok(out)
    }

    fn applied_index(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    /// Every record but the digest history (each node keeps its own), as of this call.
    fn begin_snapshot(&self) -> Result<Box<dyn SnapshotSource>, StateMachineError> {
        let index = self.applied.load(Ordering::Relaxed);
        Ok(Box::new(
            self.cow.begin(index, |k| k.first() == Some(&HISTORY))?,
        ))
    }

    fn restore(&self, index: u64, data: &mut dyn Read) -> Result<(), StateMachineError> {
        self.cow.cancel();
        self.tree.clear()?;
        let mut batch = sled::Batch::default();
        let mut len = [0u8; 4];
        loop {
            match data.read_exact(&mut len) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e.into()),
            }
            let mut k = vec![0u8; u32::from_be_bytes(len) as usize];
            data.read_exact(&mut k)?;
            data.read_exact(&mut len)?;
            let mut v = vec![0u8; u32::from_be_bytes(len) as usize];
            data.read_exact(&mut v)?;
            if k.as_slice() != APPLIED {
                batch.insert(k, v);
            }
        }
        batch.insert(APPLIED, &index.to_be_bytes());
        self.tree.apply_batch(batch)?;
        self.applied.store(index, Ordering::Relaxed);
        self.restores.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// One running node of a [`TestCluster`].
pub struct TestNode {
    pub id: u64,
    pub addr: String,
    pub handle: RaftHandle,
    pub sm: Arc<KvMachine>,
    server_stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

/// Nodes on 127.0.0.1 listeners bound before the nodes start, each with its own sled directory.
pub struct TestCluster {
    pub nodes: BTreeMap<u64, TestNode>,
    pub addrs: BTreeMap<u64, String>,
    pub partition: Arc<NetworkPartition>,
    dirs: BTreeMap<u64, PathBuf>,
    root: PathBuf,
    tune: Arc<dyn Fn(&mut RaftConfig) + Send + Sync>,
    /// Whether nodes' state machines keep their digest history (see [`KvMachine::open_with`]).
    pub history: bool,
}

/// Settings for fast tests: 30 ms ticks (an election timeout of 300-600 ms).
pub fn fast(config: &mut RaftConfig) {
    config.tick = Duration::from_millis(30);
    config.request_timeout = Duration::from_secs(10);
}

impl TestCluster {
    /// Starts `n` voters that form a new cluster; `tune` adjusts every node's settings.
    pub async fn start(
        n: u64,
        tune: impl Fn(&mut RaftConfig) + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        Self::start_with(n, true, tune).await
    }

    /// [`TestCluster::start`], choosing whether state machines keep their digest history.
    pub async fn start_with(
        n: u64,
        history: bool,
        tune: impl Fn(&mut RaftConfig) + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        let mut listeners = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        for id in 1..=n {
            let l = TcpListener::bind("127.0.0.1:0").await?;
            addrs.insert(id, format!("http://{}", l.local_addr()?));
            listeners.insert(id, l);
        }
        let mut cluster = Self {
            nodes: BTreeMap::new(),
            addrs: addrs.clone(),
            partition: Arc::new(NetworkPartition::default()),
            dirs: BTreeMap::new(),
            root: {
                let root =
                    std::env::temp_dir().join(format!("ferry-raft-{:016x}", rand::random::<u64>()));
                std::fs::create_dir_all(&root)?;
                root
            },
            tune: Arc::new(tune),
            history,
        };
        for (id, l) in listeners {
            cluster.launch(id, l, addrs.clone()).await?;
        }
        Ok(cluster)
    }

    async fn launch(
        &mut self,
        id: u64,
        listener: TcpListener,
        initial_members: BTreeMap<u64, String>,
    ) -> anyhow::Result<()> {
        let addr = format!("http://{}", listener.local_addr()?);
        let dir = self
            .dirs
            .entry(id)
            .or_insert_with(|| self.root.join(format!("node-{id}")))
            .clone();
        let db = open_db(&dir).await?;
        let sm = Arc::new(KvMachine::open_with(&db, self.history)?);
        let mut config = RaftConfig::new(id, addr.clone());
        config.initial_members = initial_members;
        config.filter = Some(self.partition.clone());
        config.snapshot_dir = Some(dir.join("snapshots"));
        (self.tune)(&mut config);
        let handle = super::start(config, db, sm.clone(), CancellationToken::new()).await?;
        let server_stop = CancellationToken::new();
        let stop = server_stop.clone();
        let service = handle.service();
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop.cancelled())
                .await;
        });
        self.addrs.insert(id, addr.clone());
        self.nodes.insert(
            id,
            TestNode {
                id,
                addr,
                handle,
                sm,
                server_stop,
                server,
            },
        );
        Ok(())
    }

    /// Starts a node that is not in the initial configuration (to be added by a membership change).
    pub async fn start_joining(&mut self, id: u64) -> anyhow::Result<String> {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        self.launch(id, l, BTreeMap::new()).await?;
        Ok(self.addrs[&id].clone())
    }

    /// Stops a node and its server (its sled directory stays for a restart).
    pub async fn kill(&mut self, id: u64) {
        if let Some(node) = self.nodes.remove(&id) {
            node.handle.stop();
            node.server_stop.cancel();
            node.handle.stopped().await;
            if tokio::time::timeout(Duration::from_secs(5), node.server)
                .await
                .is_err()
            {
                tracing::warn!(node = id, "server did not stop within 5 s");
            }
        }
    }

    /// Restarts a killed node from its sled directory on its old address.
    pub async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        let addr = self.addrs[&id].trim_start_matches("http://").to_string();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(&addr).await {
                Ok(l) => break l,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "port not free yet");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        self.launch(id, listener, BTreeMap::new()).await
    }

    pub fn node(&self, id: u64) -> &TestNode {
        &self.nodes[&id]
    }

    /// The id of the node every running node agrees leads, waiting up to `within`.
    pub async fn wait_leader(&self, within: Duration) -> anyhow::Result<u64> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let leaders: Vec<u64> = self
                .nodes
                .values()
                .filter(|n| n.handle.is_leader())
                .map(|n| n.id)
                .collect();
            if let [leader] = leaders.as_slice()
                && self
                    .nodes
                    .values()
                    .all(|n| n.handle.leader().map(|l| l.0) == Some(*leader))
            {
                return Ok(*leader);
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("no agreed leader within {within:?} (leaders: {leaders:?})");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every running node has applied at least `index`.
    pub async fn wait_applied(&self, index: u64, within: Duration) -> anyhow::Result<()> {
        wait_until(within, || {
            self.nodes
                .values()
                .all(|n| n.handle.applied_index() >= index)
        })
        .await
        .map_err(|_| {
            let applied: Vec<(u64, u64)> = self
                .nodes
                .values()
                .map(|n| (n.id, n.handle.applied_index()))
                .collect();
            anyhow::anyhow!("not every node applied {index} within {within:?}: {applied:?}")
        })
    }

    /// Proposes through any node (forwarded to the leader), retrying while leadership changes.
    pub async fn write(&self, via: u64, key: &str, value: &[u8]) -> Result<Vec<u8>, RaftError> {
        self.node(via).handle.write(set_command(key, value)).await
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Opens a sled `Db`, waiting for a previous holder of its lock to let go.
pub async fn open_db(dir: &std::path::Path) -> anyhow::Result<sled::Db> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match sled::Config::new().path(dir).open() {
            Ok(db) => return Ok(db),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "sled not free yet");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Polls `cond` every 10 ms until it holds or `within` passes.
pub async fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        if tokio::time::Instant::now() >= deadline {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
