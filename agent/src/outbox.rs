//! Reports to the scheduler, numbered and kept until acknowledged.
//!
//! A connection can drop between "sent" and "stored". The outbox keeps every durable report
//! (attempt started, log lines, attempt finished, in order) until the scheduler acknowledges its
//! sequence number, and replays the unacknowledged ones on the next session; the scheduler's
//! state machine treats replays as no-ops. Ephemeral messages (heartbeats, progress, connectivity
//! results) go straight to the current session and are dropped when there is none.

use ferry_proto::agent::v1 as pb;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::{Notify, mpsc};

#[derive(Default)]
struct Inner {
    next_seq: u64,
    queue: VecDeque<pb::AgentMessage>,
    /// Index in `queue` of the next message to send on the current session.
    cursor: usize,
    live: Option<mpsc::Sender<pb::AgentMessage>>,
}

/// The agent's queue of reports.
#[derive(Default)]
pub struct Outbox {
    inner: Mutex<Inner>,
    notify: Notify,
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a durable report.
    pub fn push(&self, body: pb::agent_message::Body) {
        {
            let mut inner = self.lock();
            inner.next_seq += 1;
            let seq = inner.next_seq;
            inner.queue.push_back(pb::AgentMessage {
                seq,
                body: Some(body),
            });
        }
        self.notify.notify_one();
    }

    /// Sends an ephemeral message on the current session, if there is one.
    pub fn send_live(&self, body: pb::agent_message::Body) {
        if let Some(tx) = &self.lock().live {
            let _ = tx.try_send(pb::AgentMessage {
                seq: 0,
                body: Some(body),
            });
        }
    }

    /// Forgets everything up to and including `up_to`.
    pub fn ack(&self, up_to: u64) {
        let mut inner = self.lock();
        while inner.queue.front().is_some_and(|m| m.seq <= up_to) {
            inner.queue.pop_front();
            inner.cursor = inner.cursor.saturating_sub(1);
        }
    }

    /// Starts a new session: everything unacknowledged will be sent again.
    pub fn begin_session(&self, live: mpsc::Sender<pb::AgentMessage>) {
        let mut inner = self.lock();
        inner.cursor = 0;
        inner.live = Some(live);
        drop(inner);
        self.notify.notify_one();
    }

    pub fn end_session(&self) {
        self.lock().live = None;
    }

    /// Unacknowledged reports.
    pub fn pending(&self) -> usize {
        self.lock().queue.len()
    }

    /// The next report to send on this session; waits for one.
    pub async fn next(&self) -> pb::AgentMessage {
        loop {
            let notified = self.notify.notified();
            {
                let mut inner = self.lock();
                if inner.cursor < inner.queue.len() {
                    let i = inner.cursor;
                    inner.cursor += 1;
                    if let Some(m) = inner.queue.get(i) {
                        return m.clone();
                    }
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::agent_message::Body;

    fn hb() -> Body {
        Body::Heartbeat(pb::Heartbeat::default())
    }

    #[tokio::test]
    async fn replays_unacknowledged_after_reconnect() {
        let outbox = Outbox::default();
        let (tx, _rx) = mpsc::channel(8);
        outbox.begin_session(tx.clone());
        outbox.push(hb());
        outbox.push(hb());
        outbox.push(hb());
        assert_eq!(outbox.next().await.seq, 1);
        assert_eq!(outbox.next().await.seq, 2);
        outbox.ack(1);
        // Connection lost; a new session starts from the first unacknowledged report.
        outbox.begin_session(tx);
        assert_eq!(outbox.next().await.seq, 2);
        assert_eq!(outbox.next().await.seq, 3);
        outbox.ack(3);
        assert_eq!(outbox.pending(), 0);
    }

    #[tokio::test]
    async fn ack_keeps_cursor_in_place() {
        let outbox = Outbox::default();
        let (tx, _rx) = mpsc::channel(8);
        outbox.begin_session(tx);
        for _ in 0..4 {
            outbox.push(hb());
        }
        assert_eq!(outbox.next().await.seq, 1);
        assert_eq!(outbox.next().await.seq, 2);
        outbox.ack(2);
        assert_eq!(outbox.next().await.seq, 3);
    }
}
