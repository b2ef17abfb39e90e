//! The relay of two-group syncs: when a job's source is reachable only from one private network
//! and its target only from another, the reader leg (an agent of the first group) and the
//! writer leg (an agent of the second) both dial out to the scheduler, and this module joins
//! their two `Relay` streams so row batches flow from one to the other.
//!
//! The scheduler holds no rows beyond [`BUFFER`] frames per direction: each direction is one
//! task that reads a frame from one leg and awaits room in the other leg's bounded outbound
//! channel before it reads the next, and gRPC's (HTTP/2) flow control does the same on both
//! connections. A slow writer therefore stops the scheduler reading, which stops the reader
//! leg's sends, which stops its database reads: backpressure end to end, memory bounded.
//!
//! The relay decides nothing about the result; the writer leg commits only after it has every
//! row the reader leg counted (see the agent's `sync::relay`). When a leg's stream breaks, the
//! other leg is told which leg, agent and group dropped, fails and rolls back; when the first
//! leg waits longer than the start timeout for its peer, it is told who never came.

use ferry_proto::agent::v1 as pb;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;
use tracing::{Instrument, info, info_span, warn};

/// Frames buffered per direction of one relay (each frame at most about a MiB of rows, see the
/// agent's `RelaySink`): what the scheduler holds is bounded whatever the table size.
pub const BUFFER: usize = 4;

/// The largest relay frame accepted from an agent: a batch of rows is cut at about 1 MiB, so
/// only a single row larger than this fails a relay (with the gRPC message size error).
pub const MAX_FRAME: usize = 32 << 20;

/// What a leg sends: frames, or the status its stream broke with.
pub type Inbound = Pin<Box<dyn Stream<Item = Result<pb::RelayFrame, Status>> + Send>>;
/// Where frames for a leg go (its response stream).
pub type Outbound = mpsc::Sender<Result<pb::RelayFrame, Status>>;

/// Which half of the job a leg runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Reader,
    Writer,
}

impl Role {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "reader" => Some(Self::Reader),
            "writer" => Some(Self::Writer),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::Writer => "writer",
        }
    }

    fn other(self) -> Self {
        match self {
            Self::Reader => Self::Writer,
            Self::Writer => Self::Reader,
        }
    }
}

/// One leg as the relay names it in what it tells the other.
#[derive(Debug, Clone)]
pub struct Leg {
    pub role: Role,
    pub agent: String,
    pub group: String,
    /// The other leg, as in "agent agt-… (group rg-…)".
    pub peer: String,
}

impl std::fmt::Display for Leg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} leg on agent {} (group {})",
            self.role.as_str(),
            self.agent,
            self.group
        )
    }
}

struct Half {
    leg: Leg,
    inbound: Inbound,
    tx: Outbound,
    /// Tells a waiting half apart from a later one of the same relay.
    serial: u64,
}

/// Relays whose first leg waits for the second.
#[derive(Default)]
pub struct Relays {
    pending: Arc<Mutex<HashMap<String, Half>>>,
    serial: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Relays {
    /// Adds one leg to relay `relay_id` and returns what to stream back to it. The first leg
    /// waits up to `wait` for the other; when both are there, they are joined until both end.
    pub fn open(
        &self,
        relay_id: &str,
        leg: Leg,
        inbound: Inbound,
        wait: Duration,
    ) -> Result<mpsc::Receiver<Result<pb::RelayFrame, Status>>, Status> {
        let (tx, rx) = mpsc::channel(BUFFER);
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let me = Half {
            leg,
            inbound,
            tx,
            serial,
        };
        let mut pending = lock(&self.pending);
        match pending.remove(relay_id) {
            Some(other) if other.leg.role != me.leg.role => {
                drop(pending);
                let (reader, writer) = if me.leg.role == Role::Reader {
                    (me, other)
                } else {
                    (other, me)
                };
                let span = info_span!("relay", attempt = %relay_id, reader = %reader.leg.agent, writer = %writer.leg.agent);
                tokio::spawn(join(reader, writer).instrument(span));
            }
            Some(other) => {
                let role = other.leg.role.as_str();
                pending.insert(relay_id.to_string(), other);
                return Err(Status::already_exists(format!(
                    "the {role} leg of attempt {relay_id} is already on the relay"
                )));
            }
            None => {
                info!(attempt = %relay_id, leg = %me.leg, "relay leg waits for its peer");
                pending.insert(relay_id.to_string(), me);
                let (pending, relay_id) = (self.pending.clone(), relay_id.to_string());
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let mut p = lock(&pending);
                    if p.get(&relay_id).is_some_and(|h| h.serial == serial)
                        && let Some(h) = p.remove(&relay_id)
                    {
                        let why = format!(
                            "the {} leg ({}) did not join the relay of attempt {relay_id} within {}s",
                            h.leg.role.other().as_str(),
                            h.leg.peer,
                            wait.as_secs()
                        );
                        warn!(attempt = %relay_id, leg = %h.leg, "{why}");
                        let _ = h.tx.try_send(Err(Status::deadline_exceeded(why)));
                    }
                });
            }
        }
        Ok(rx)
    }

    /// Relays whose first leg still waits.
    pub fn waiting(&self) -> usize {
        lock(&self.pending).len()
    }
}

/// What one direction of a relay carried.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Carried {
    pub frames: u64,
    pub rows: u64,
    pub bytes: u64,
    /// The leg's last word (RelayEnd, RelayVerdict or RelayAbort) went through.
    pub closed_cleanly: bool,
}

async fn join(reader: Half, writer: Half) {
    info!("relay joined: rows flow from the reader leg to the writer leg");
    let (down, up) = tokio::join!(
        forward(&reader.leg, reader.inbound, writer.tx),
        forward(&writer.leg, writer.inbound, reader.tx),
    );
    info!(
        rows = down.rows,
        bytes = down.bytes,
        frames = down.frames,
        reader_clean = down.closed_cleanly,
        writer_clean = up.closed_cleanly,
        "relay closed"
    );
}

/// Moves frames from one leg to the other, one at a time: the next frame is read only once the
/// previous one found room on the other side. Ends when the source leg ends or the other leg
/// is gone; a source that breaks, or ends without its last word, is reported to the other leg
/// as an error that names it.
pub async fn forward(from: &Leg, mut inbound: Inbound, to: Outbound) -> Carried {
    use pb::relay_frame::Body;
    let mut carried = Carried::default();
    loop {
        let frame = match inbound.next().await {
            Some(Ok(frame)) => frame,
            Some(Err(status)) => {
                let why = format!("the {from} dropped off the relay: {}", status.message());
                warn!("{why}");
                let _ = to.send(Err(Status::aborted(why))).await;
                return carried;
            }
            None => {
                if !carried.closed_cleanly {
                    let why = format!("the {from} left the relay before its last word");
                    warn!("{why}");
                    let _ = to.send(Err(Status::aborted(why))).await;
                }
                return carried;
            }
        };
        match &frame.body {
            Some(Body::Rows(b)) => {
                carried.rows += u64::from(b.rows);
                carried.bytes += b.data.len() as u64;
            }
            Some(Body::End(_) | Body::Verdict(_) | Body::Abort(_)) => carried.closed_cleanly = true,
            _ => {}
        }
        carried.frames += 1;
        if to.send(Ok(frame)).await.is_err() {
            // The other leg's stream is gone; dropping ours tells this leg.
            return carried;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::wrappers::ReceiverStream;

    fn leg(role: Role, agent: &str) -> Leg {
        Leg {
            role,
            agent: agent.into(),
            group: format!("rg-{agent}"),
            peer: "agent x (group y)".into(),
        }
    }

    fn rows(n: u32) -> pb::RelayFrame {
        pb::RelayFrame {
            body: Some(pb::relay_frame::Body::Rows(pb::RowBatch {
                rows: n,
                data: vec![0u8; 16].into(),
                ..Default::default()
            })),
        }
    }

    fn end() -> pb::RelayFrame {
        pb::RelayFrame {
            body: Some(pb::relay_frame::Body::End(pb::RelayEnd::default())),
        }
    }

    /// A leg whose frames the test sends; its channel holds one frame, so the test sees at once
    /// when the relay stops taking them.
    fn source() -> (mpsc::Sender<Result<pb::RelayFrame, Status>>, Inbound) {
        let (tx, rx) = mpsc::channel(1);
        (tx, Box::pin(ReceiverStream::new(rx)))
    }

    type Frames = Result<pb::RelayFrame, Status>;

    /// A relay with both legs joined: what the reader leg sends, and what the writer leg gets
    /// (the other two ends are kept alive in `_kept`).
    struct Joined {
        reader_tx: mpsc::Sender<Frames>,
        to_writer: mpsc::Receiver<Frames>,
        _kept: (mpsc::Sender<Frames>, mpsc::Receiver<Frames>),
    }

    fn joined(relays: &Relays, id: &str) -> Joined {
        let (reader_tx, reader_in) = source();
        let (writer_tx, writer_in) = source();
        let wait = Duration::from_secs(60);
        let to_reader = relays
            .open(id, leg(Role::Reader, "r"), reader_in, wait)
            .expect("reader joins");
        let to_writer = relays
            .open(id, leg(Role::Writer, "w"), writer_in, wait)
            .expect("writer joins");
        Joined {
            reader_tx,
            to_writer,
            _kept: (writer_tx, to_reader),
        }
    }

    #[tokio::test]
    async fn a_writer_that_does_not_read_stops_the_reader() {
        let relays = Relays::default();
        let Joined {
            reader_tx,
            mut to_writer,
            _kept,
        } = joined(&relays, "a1");
        assert_eq!(relays.waiting(), 0);
        // The writer reads nothing: the relay takes BUFFER frames for it, one more in its
        // hands, one in the reader's own channel; then the reader's send must wait.
        let mut sent = 0;
        loop {
            let send = reader_tx.send(Ok(rows(10)));
            match tokio::time::timeout(Duration::from_millis(200), send).await {
                Ok(r) => {
                    r.expect("relay is reading");
                    sent += 1;
                }
                Err(_) => break,
            }
            assert!(sent <= BUFFER + 4, "the relay kept taking frames: {sent}");
        }
        assert!(sent >= BUFFER, "the relay took only {sent} frames");
        // Once the writer reads, everything flows again, in order, and the end goes through.
        let mut got = 0;
        while got < sent {
            let f = to_writer
                .recv()
                .await
                .expect("frame")
                .expect("not an error");
            assert!(matches!(f.body, Some(pb::relay_frame::Body::Rows(_))));
            got += 1;
        }
        reader_tx.send(Ok(rows(1))).await.expect("room again");
        reader_tx.send(Ok(end())).await.expect("room again");
        drop(reader_tx);
        let mut rows_seen = 0;
        let mut ended = false;
        while let Some(f) = to_writer.recv().await {
            match f.expect("clean end").body {
                Some(pb::relay_frame::Body::Rows(b)) => rows_seen += b.rows,
                Some(pb::relay_frame::Body::End(_)) => ended = true,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(rows_seen, 1);
        assert!(ended);
    }

    #[tokio::test]
    async fn a_broken_reader_is_named_to_the_writer() {
        let relays = Relays::default();
        let Joined {
            reader_tx,
            mut to_writer,
            _kept,
        } = joined(&relays, "a2");
        reader_tx.send(Ok(rows(5))).await.expect("sent");
        reader_tx
            .send(Err(Status::unavailable("connection reset")))
            .await
            .expect("sent");
        let first = to_writer.recv().await.expect("frame").expect("rows");
        assert!(matches!(first.body, Some(pb::relay_frame::Body::Rows(_))));
        let err = to_writer.recv().await.expect("frame").expect_err("error");
        assert!(
            err.message()
                .contains("reader leg on agent r (group rg-r) dropped off the relay"),
            "{}",
            err.message()
        );
    }

    #[tokio::test]
    async fn a_reader_that_leaves_without_its_end_is_an_error() {
        let relays = Relays::default();
        let Joined {
            reader_tx,
            mut to_writer,
            _kept,
        } = joined(&relays, "a3");
        reader_tx.send(Ok(rows(5))).await.expect("sent");
        drop(reader_tx);
        assert!(to_writer.recv().await.expect("frame").is_ok());
        let err = to_writer.recv().await.expect("frame").expect_err("error");
        assert!(
            err.message().contains("before its last word"),
            "{}",
            err.message()
        );
    }

    #[tokio::test]
    async fn a_peer_that_never_comes_ends_the_wait() {
        let relays = Relays::default();
        let (_tx, writer_in) = source();
        let mut to_writer = relays
            .open(
                "a4",
                leg(Role::Writer, "w"),
                writer_in,
                Duration::from_millis(50),
            )
            .expect("writer waits");
        assert_eq!(relays.waiting(), 1);
        let err = to_writer.recv().await.expect("frame").expect_err("timeout");
        assert!(
            err.message()
                .contains("the reader leg (agent x (group y)) did not join"),
            "{}",
            err.message()
        );
        assert_eq!(relays.waiting(), 0);
    }

    #[tokio::test]
    async fn a_second_leg_of_the_same_role_is_refused() {
        let relays = Relays::default();
        let (_a, one) = source();
        let (_b, two) = source();
        let _w = relays
            .open("a5", leg(Role::Writer, "w"), one, Duration::from_secs(60))
            .expect("first");
        let err = relays
            .open("a5", leg(Role::Writer, "w"), two, Duration::from_secs(60))
            .expect_err("second");
        assert_eq!(err.code(), tonic::Code::AlreadyExists);
        assert_eq!(relays.waiting(), 1);
    }
}
