//! The handle everything outside the node task uses: proposals (local or forwarded to the
//! leader), linearizable reads, membership changes, status, and leadership for the dispatcher.
//! Each call is a message to the node task answered on a oneshot channel, with a deadline.

use super::apply::Applied;
use super::error::{RaftError, Result};
use super::node::{NodeMsg, Shared};
use super::snapshot::SnapshotStore;
use super::transport::Transport;
use raft::prelude::{ConfChange, ConfChangeType};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Who leads, as this node sees it; the dispatcher watches it to start and stop.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Role {
    pub id: u64,
    pub term: u64,
    pub is_leader: bool,
    /// The leader's id and address, when one is known.
    pub leader: Option<(u64, String)>,
}

/// One member as the cluster status shows it; the progress fields are known on the leader only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    pub id: u64,
    pub addr: String,
    pub voter: bool,
    pub matched: u64,
    pub next_index: u64,
    /// Entries the member is behind the leader's last index.
    pub lag: u64,
    /// "probe", "replicate" or "snapshot" (empty off the leader).
    pub progress: String,
    pub recently_active: bool,
}

/// What `ferry cluster status` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    pub id: u64,
    pub role: String,
    pub leader: Option<(u64, String)>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub snapshot_index: u64,
    pub members: Vec<MemberStatus>,
}

/// A cheap, cloneable way to the node: proposals, reads, status, membership, leadership.
#[derive(Clone)]
pub struct RaftHandle {
    pub(crate) id: u64,
    pub(crate) inbox: mpsc::Sender<NodeMsg>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) transport: Arc<Transport>,
    pub(crate) snaps: SnapshotStore,
    pub(crate) db: sled::Db,
    pub(crate) timeout: Duration,
    pub(crate) stop: CancellationToken,
    pub(crate) tasks: TaskTracker,
    pub(crate) applier: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl RaftHandle {
    pub fn id(&self) -> u64 {
        self.id
    }

    async fn ask<T>(&self, msg: impl FnOnce(oneshot::Sender<Result<T>>) -> NodeMsg) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.inbox
            .send(msg(tx))
            .await
            .map_err(|_| RaftError::Stopped)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(RaftError::Stopped),
            Err(_) => Err(RaftError::Timeout(self.timeout)),
        }
    }

    /// Proposes `command` on this node, which must be the leader, and returns the state
    /// machine's result once the entry is applied here. Fails at once with
    /// [`RaftError::NotLeader`] (carrying the leader's address) elsewhere.
    pub async fn propose(&self, command: Vec<u8>) -> Result<Vec<u8>> {
        Ok(self.propose_applied(command).await?.result)
    }

    /// [`RaftHandle::propose`], also returning the index the command applied at.
    pub(crate) async fn propose_applied(&self, command: Vec<u8>) -> Result<Applied> {
        self.ask(|reply| NodeMsg::Propose {
            data: command,
            reply,
        })
        .await
    }

    /// Proposes `command` wherever the leader is: here, or forwarded to the leader's raft
    /// service; waits for an election when there is no leader. Returns once the command is
    /// applied on this node too (so what it wrote can be read here). Gives up after the request
    /// timeout.
    pub async fn write(&self, command: Vec<u8>) -> Result<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut role = self.shared.role.subscribe();
        loop {
            let attempt = match self.propose(command.clone()).await {
                Err(RaftError::NotLeader {
                    leader: Some((_, addr)),
                }) => match self
                    .transport
                    .forward(&addr, command.clone(), self.timeout)
                    .await
                {
                    Ok((index, result)) => self.wait_applied(index).await.map(|()| result),
                    Err(e) => Err(e),
                },
                other => other,
            };
            match attempt {
                Err(RaftError::NoLeader | RaftError::NotLeader { .. } | RaftError::Dropped)
                    if tokio::time::Instant::now() < deadline =>
                {
                    // Wait a little for the leadership to change, then retry.
                    let wait = deadline
                        .saturating_duration_since(tokio::time::Instant::now())
                        .min(Duration::from_millis(200));
                    let _ = tokio::time::timeout(wait, role.changed()).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(RaftError::NoLeader | RaftError::NotLeader { .. })
                    if tokio::time::Instant::now() >= deadline =>
                {
                    return Err(RaftError::Timeout(self.timeout));
                }
                other => return other,
            }
        }
    }

    /// A linearizable read barrier (ReadIndex): returns once this node has applied everything
    /// committed before the call, confirmed by a majority. Read the state machine after it.
    pub async fn read_index(&self) -> Result<u64> {
        let index = self.ask(|reply| NodeMsg::ReadIndex { reply }).await?;
        self.wait_applied(index).await?;
        Ok(index)
    }

    /// Waits until this node has applied `index`.
    pub async fn wait_applied(&self, index: u64) -> Result<()> {
        let mut applied = self.shared.applied.subscribe();
        match tokio::time::timeout(self.timeout, applied.wait_for(|a| *a >= index)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(RaftError::Stopped),
            Err(_) => Err(RaftError::Timeout(self.timeout)),
        }
    }

    /// Adds a voter through a configuration change (on the leader); returns the change's index
    /// once applied here. The new node starts with no initial members and catches up.
    pub async fn add_voter(&self, id: u64, addr: &str) -> Result<u64> {
        if id == 0 || addr.is_empty() {
            return Err(RaftError::InvalidArgument(
                "adding a member needs a non-zero id and its address".into(),
            ));
        }
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::AddNode);
        cc.node_id = id;
        cc.context = addr.as_bytes().to_vec().into();
        Ok(self
            .ask(|reply| NodeMsg::ChangeMembership { cc, reply })
            .await?
            .index)
    }

    /// Removes a voter through a configuration change (on the leader).
    pub async fn remove_voter(&self, id: u64) -> Result<u64> {
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::RemoveNode);
        cc.node_id = id;
        Ok(self
            .ask(|reply| NodeMsg::ChangeMembership { cc, reply })
            .await?
            .index)
    }

    /// Members, leader, term, commit and applied index, and each peer's progress (on the leader).
    pub async fn status(&self) -> Result<ClusterStatus> {
        let (tx, rx) = oneshot::channel();
        self.inbox
            .send(NodeMsg::Status { reply: tx })
            .await
            .map_err(|_| RaftError::Stopped)?;
        rx.await.map_err(|_| RaftError::Stopped)
    }

    /// Leadership as it changes: the dispatcher starts on `is_leader` and stops otherwise.
    pub fn role(&self) -> watch::Receiver<Role> {
        self.shared.role.subscribe()
    }

    pub fn is_leader(&self) -> bool {
        self.shared.role.borrow().is_leader
    }

    /// The leader's id and address, when known.
    pub fn leader(&self) -> Option<(u64, String)> {
        self.shared.role.borrow().leader.clone()
    }

    /// True on a leader that a majority acknowledged within half an election timeout: no other
    /// leader can exist yet. Check it before each dispatch; false on a deposed or cut-off leader.
    pub fn has_quorum_lease(&self) -> bool {
        self.is_leader()
            && self
                .shared
                .lease_until
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|until| Instant::now() < until)
    }

    /// The last index applied on this node.
    pub fn applied_index(&self) -> u64 {
        *self.shared.applied.borrow()
    }

    /// Stops the node (the same as cancelling the shutdown token it was started with).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits until the node task, its peer connections and the applier have ended, after which
    /// the `Db` can be reopened.
    pub async fn stopped(&self) {
        self.tasks.wait().await;
        let thread = self
            .applier
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}
