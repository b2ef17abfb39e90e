//! What the scheduler knows only while it runs: which agents have a session open right now, their
//! last heartbeat and free slots, connectivity tests in flight, why instances wait, and a broadcast
//! of instance events for `ferry task run --follow`.
//!
//! Nothing here must survive a restart: after one, agents reconnect and say again what they run.

use crate::state::model::Stats;
use ferry_proto::agent::v1 as pb;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio::time::Instant;
use tonic::Status;

/// The sending half of an agent's session stream.
pub type SessionTx = mpsc::Sender<Result<pb::SchedulerMessage, Status>>;

/// One open agent session.
#[derive(Clone)]
pub struct Session {
    pub session_id: u64,
    pub group: String,
    pub tx: SessionTx,
    pub slots: u32,
    pub free_slots: u32,
    pub last_heartbeat: Instant,
    pub last_heartbeat_ms: i64,
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
    sessions: Mutex<HashMap<String, Session>>,
    /// When each agent lost its session, for the attempt lease.
    lost_since: Mutex<HashMap<String, Instant>>,
    tests: Mutex<HashMap<String, mpsc::Sender<TestReply>>>,
    waiting: Mutex<HashMap<String, String>>,
    next_session: AtomicU64,
    events: broadcast::Sender<InstanceEvent>,
    /// Wakes the dispatcher: an instance became runnable or a slot freed.
    pub dispatch: Notify,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these maps leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    pub fn new() -> Self {
        Self {
            sessions: Mutex::default(),
            lost_since: Mutex::default(),
            tests: Mutex::default(),
            waiting: Mutex::default(),
            next_session: AtomicU64::new(1),
            events: broadcast::channel(4096).0,
            dispatch: Notify::new(),
        }
    }

    /// Registers a session, replacing an older one of the same agent; returns its id.
    pub fn open_session(&self, agent_id: &str, group: &str, slots: u32, tx: SessionTx) -> u64 {
        let session_id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        lock(&self.sessions).insert(
            agent_id.to_string(),
            Session {
                session_id,
                group: group.to_string(),
                tx,
                slots,
                free_slots: slots,
                last_heartbeat: now,
                last_heartbeat_ms: chrono::Utc::now().timestamp_millis(),
            },
        );
        lock(&self.lost_since).remove(agent_id);
        self.dispatch.notify_one();
        session_id
    }

    /// Removes the session if it is still `session_id` (a newer one may have replaced it).
    pub fn close_session(&self, agent_id: &str, session_id: u64) -> bool {
        let mut sessions = lock(&self.sessions);
        if sessions.get(agent_id).map(|s| s.session_id) == Some(session_id) {
            sessions.remove(agent_id);
            lock(&self.lost_since).insert(agent_id.to_string(), Instant::now());
            true
        } else {
            false
        }
    }

    /// Drops every session, which ends their response streams; used on shutdown.
    pub fn close_all(&self) {
        lock(&self.sessions).clear();
    }

    pub fn heartbeat(&self, agent_id: &str, free_slots: u32) {
        if let Some(s) = lock(&self.sessions).get_mut(agent_id) {
            s.free_slots = free_slots;
            s.last_heartbeat = Instant::now();
            s.last_heartbeat_ms = chrono::Utc::now().timestamp_millis();
        }
    }

    /// The session of an agent that heartbeat within `fresh`.
    pub fn online(&self, agent_id: &str, fresh: std::time::Duration) -> Option<Session> {
        lock(&self.sessions)
            .get(agent_id)
            .filter(|s| s.last_heartbeat.elapsed() <= fresh)
            .cloned()
    }

    pub fn session(&self, agent_id: &str) -> Option<Session> {
        lock(&self.sessions).get(agent_id).cloned()
    }

    /// How long an agent has been without a session; `None` while it has one. An agent never
    /// seen since this scheduler started counts from `first_check`.
    pub fn lost_for(&self, agent_id: &str) -> Option<std::time::Duration> {
        if lock(&self.sessions).contains_key(agent_id) {
            return None;
        }
        let mut lost = lock(&self.lost_since);
        let since = *lost
            .entry(agent_id.to_string())
            .or_insert_with(Instant::now);
        Some(since.elapsed())
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
