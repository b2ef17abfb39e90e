//! What the scheduler knows only while it runs: which agents have a session open right now, their
//! last heartbeat and free slots, connectivity tests in flight, why instances wait, and a broadcast
//! of instance events for `ferry task run --follow`.
//!
//! Nothing here must survive a restart: after one, agents reconnect and say again what they run.

use crate::clock::SharedClock;
use crate::state::model::Stats;
use ferry_proto::agent::v1 as pb;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// The sending half of an agent's session stream.
pub type SessionTx = mpsc::Sender<Result<pb::SchedulerMessage, Status>>;

/// One open agent session.
#[derive(Clone)]
pub struct Session {
    pub session_id: u64,
    pub group: String,
    /// The agent process's random id: a different one on a new session means another process.
    pub boot_id: String,
    pub tx: SessionTx,
    pub slots: u32,
    /// Free slots as of the last heartbeat, less what was dispatched since.
    pub free_slots: u32,
    pub load1: f64,
    pub last_heartbeat_ms: i64,
    /// When this scheduler last dispatched to the agent, to spread work evenly.
    pub last_dispatch_ms: i64,
    /// Cancelled when the session is replaced or the agent revoked: its stream stops serving.
    pub closed: CancellationToken,
}

/// What opening a session displaced.
pub struct Opened {
    pub session_id: u64,
    pub closed: CancellationToken,
    /// The previous session of the same agent, when another process (other boot id) held it.
    pub superseded: Option<String>,
}

/// An event about an instance, for watchers.
#[derive(Debug, Clone)]
pub enum InstanceEvent {
    /// State changed: read the store for the new state.
    Changed {
        instance_id: String,
    },
    Progress {
        instance_id: String,
        stats: Stats,
    },
    Log {
        instance_id: String,
        attempt_id: String,
        index: u64,
        ts_ms: i64,
        level: String,
        message: String,
    },
}

impl InstanceEvent {
    pub fn instance_id(&self) -> &str {
        match self {
            Self::Changed { instance_id }
            | Self::Progress { instance_id, .. }
            | Self::Log { instance_id, .. } => instance_id,
        }
    }
}

/// A connectivity result with the agent that produced it.
pub type TestReply = (String, pb::ConnectivityResult);

/// In-memory registry shared by the agent service, the admin service and the dispatcher.
pub struct Hub {
    clock: SharedClock,
    sessions: Mutex<HashMap<String, Session>>,
    /// When each agent lost its session (clock ms), for the attempt lease.
    lost_since: Mutex<HashMap<String, i64>>,
    tests: Mutex<HashMap<String, mpsc::Sender<TestReply>>>,
    waiting: Mutex<HashMap<String, String>>,
    next_session: AtomicU64,
    events: broadcast::Sender<InstanceEvent>,
    /// Wakes the dispatcher: an instance became runnable or a slot freed.
    pub dispatch: Notify,
    /// What this process counts for `/metrics`.
    pub metrics: crate::metrics::Metrics,
    /// Relays of two-group syncs whose first leg waits for the second.
    pub relays: crate::relay::Relays,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these maps leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    pub fn new(clock: SharedClock) -> Self {
        Self {
            clock,
            sessions: Mutex::default(),
            lost_since: Mutex::default(),
            tests: Mutex::default(),
            waiting: Mutex::default(),
            next_session: AtomicU64::new(1),
            events: broadcast::channel(4096).0,
            dispatch: Notify::new(),
            metrics: Default::default(),
            relays: Default::default(),
        }
    }

    /// Registers a session, replacing an older one of the same agent: the newest session always
    /// wins. When the older one belonged to another process of the agent (another boot id, say a
    /// copy still stopping or a cloned data folder), that process is told why it lost.
    pub fn open_session(
        &self,
        agent_id: &str,
        group: &str,
        boot_id: &str,
        slots: u32,
        tx: SessionTx,
    ) -> Opened {
        let session_id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let now = self.clock.now_ms();
        let closed = CancellationToken::new();
        let old = lock(&self.sessions).insert(
            agent_id.to_string(),
            Session {
                session_id,
                group: group.to_string(),
                boot_id: boot_id.to_string(),
                tx,
                slots,
                free_slots: slots,
                load1: 0.0,
                last_heartbeat_ms: now,
                last_dispatch_ms: 0,
                closed: closed.clone(),
            },
        );
        lock(&self.lost_since).remove(agent_id);
        let mut superseded = None;
        if let Some(old) = old {
            if old.boot_id != boot_id {
                let why = format!(
                    "superseded: another process of agent {agent_id} (boot {boot_id}) opened a newer session; this one (boot {}) is closed",
                    old.boot_id
                );
                let _ = old.tx.try_send(Err(Status::aborted(why.clone())));
                superseded = Some(old.boot_id);
            }
            old.closed.cancel();
        }
        self.dispatch.notify_one();
        Opened {
            session_id,
            closed,
            superseded,
        }
    }

    /// Removes the session if it is still `session_id` (a newer one may have replaced it).
    pub fn close_session(&self, agent_id: &str, session_id: u64) -> bool {
        let mut sessions = lock(&self.sessions);
        if sessions.get(agent_id).map(|s| s.session_id) == Some(session_id) {
            sessions.remove(agent_id);
            lock(&self.lost_since).insert(agent_id.to_string(), self.clock.now_ms());
            true
        } else {
            false
        }
    }

    /// Ends an agent's session at once with `status` (revocation).
    pub fn kick(&self, agent_id: &str, status: Status) {
        if let Some(s) = lock(&self.sessions).remove(agent_id) {
            let _ = s.tx.try_send(Err(status));
            s.closed.cancel();
            lock(&self.lost_since).insert(agent_id.to_string(), self.clock.now_ms());
        }
    }

    /// Drops every session, which ends their response streams; used on shutdown.
    pub fn close_all(&self) {
        for (_, s) in lock(&self.sessions).drain() {
            s.closed.cancel();
        }
    }

    /// This scheduler stopped leading: every session ends with `status` (which names the new
    /// leader when known), so agents reconnect there with their unreported results.
    pub fn step_down(&self, status: Status) {
        for (_, s) in lock(&self.sessions).drain() {
            let _ = s.tx.try_send(Err(status.clone()));
            s.closed.cancel();
        }
        lock(&self.waiting).clear();
    }

    /// This scheduler starts leading: what an earlier term here knew about lost sessions is
    /// stale, so every agent's lease counts from now until it reconnects.
    pub fn take_leadership(&self) {
        lock(&self.lost_since).clear();
    }

    pub fn heartbeat(&self, agent_id: &str, free_slots: u32, load1: f64) {
        if let Some(s) = lock(&self.sessions).get_mut(agent_id) {
            s.free_slots = free_slots;
            s.load1 = load1;
            s.last_heartbeat_ms = self.clock.now_ms();
        }
    }

    /// Notes a dispatch to the agent: one slot fewer until its next heartbeat says otherwise.
    pub fn dispatched_to(&self, agent_id: &str) {
        if let Some(s) = lock(&self.sessions).get_mut(agent_id) {
            s.free_slots = s.free_slots.saturating_sub(1);
            s.last_dispatch_ms = self.clock.now_ms();
        }
    }

    /// Notes that an attempt on the agent ended by its own report: its slot is free again, as
    /// its next heartbeat would say. Without this an agent running short attempts would take
    /// new work only once per heartbeat.
    pub fn slot_freed(&self, agent_id: &str) {
        if let Some(s) = lock(&self.sessions).get_mut(agent_id) {
            s.free_slots = (s.free_slots + 1).min(s.slots);
        }
    }

    /// The session of an agent that heartbeat within `fresh`.
    pub fn online(&self, agent_id: &str, fresh: Duration) -> Option<Session> {
        let now = self.clock.now_ms();
        lock(&self.sessions)
            .get(agent_id)
            .filter(|s| now - s.last_heartbeat_ms <= fresh.as_millis() as i64)
            .cloned()
    }

    pub fn session(&self, agent_id: &str) -> Option<Session> {
        lock(&self.sessions).get(agent_id).cloned()
    }

    /// Sends a message to an agent's session if it has one and room for it; never waits, so one
    /// stuck agent cannot hold up the caller.
    pub fn send(&self, agent_id: &str, msg: pb::SchedulerMessage) -> bool {
        let tx = lock(&self.sessions).get(agent_id).map(|s| s.tx.clone());
        tx.is_some_and(|tx| tx.try_send(Ok(msg)).is_ok())
    }

    /// How long an agent has been without a session; `None` while it has one. An agent never
    /// seen since this scheduler started counts from the first time anyone asks.
    pub fn lost_for(&self, agent_id: &str) -> Option<Duration> {
        if lock(&self.sessions).contains_key(agent_id) {
            return None;
        }
        let now = self.clock.now_ms();
        let mut lost = lock(&self.lost_since);
        let since = *lost.entry(agent_id.to_string()).or_insert(now);
        Some(Duration::from_millis((now - since).max(0) as u64))
    }

    pub fn start_test(&self, request_id: &str, tx: mpsc::Sender<TestReply>) {
        lock(&self.tests).insert(request_id.to_string(), tx);
    }

    pub fn end_test(&self, request_id: &str) {
        lock(&self.tests).remove(request_id);
    }

    pub fn test_result(&self, agent_id: &str, result: pb::ConnectivityResult) {
        let tx = lock(&self.tests).get(&result.request_id).cloned();
        if let Some(tx) = tx {
            let _ = tx.try_send((agent_id.to_string(), result));
        }
    }

    /// Records why an instance waits; returns true when the reason changed.
    pub fn set_waiting(&self, instance_id: &str, reason: Option<String>) -> bool {
        let mut w = lock(&self.waiting);
        let old = match reason {
            Some(r) => w
                .insert(instance_id.to_string(), r.clone())
                .filter(|o| *o == r),
            None => {
                return w.remove(instance_id).is_some();
            }
        };
        old.is_none()
    }

    pub fn waiting_reason(&self, instance_id: &str) -> Option<String> {
        lock(&self.waiting).get(instance_id).cloned()
    }

    pub fn publish(&self, event: InstanceEvent) {
        // No watcher is not an error.
        let _ = self.events.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<InstanceEvent> {
        self.events.subscribe()
    }
}
