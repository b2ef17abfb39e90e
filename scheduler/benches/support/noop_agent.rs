//! A no-op agent for the scheduling benchmark: it speaks the agent protocol as `ferry-agent`
//! does (register with the group's token, one session stream, Hello, heartbeats, an
//! AttemptStarted then an AttemptFinished for every attempt) but runs nothing, so what is
//! measured is the scheduler's work, not a shell's or a database's.

use anyhow::{Result, anyhow};
use ferry_proto::agent::v1 as pb;
use ferry_proto::agent::v1::agent_message::Body;
use ferry_proto::{AGENT_CREDENTIAL_HEADER, AGENT_ID_HEADER};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

type Client = pb::agent_service_client::AgentServiceClient<Channel>;

/// What all no-op agents together saw.
#[derive(Default)]
pub struct Seen {
    /// Attempts finished (reported succeeded).
    pub finished: AtomicU64,
    /// When the first attempt arrived and the last one was reported finished.
    pub first_start: Mutex<Option<Instant>>,
    pub last_finish: Mutex<Option<Instant>>,
}

/// A registered agent's identity.
#[derive(Clone)]
pub struct NoopAgent {
    pub id: String,
    pub credential: String,
    pub name: String,
    pub slots: u32,
}

fn host(name: &str, slots: u32) -> pb::HostFacts {
    pb::HostFacts {
        hostname: name.to_string(),
        addresses: vec!["127.0.0.1".into()],
        version: "noop".into(),
        slots,
        os: "linux".into(),
        labels: Default::default(),
    }
}

impl NoopAgent {
    /// Registers a new agent in `group` with the group's registration `token`.
    pub async fn register(
        url: &str,
        group: &str,
        token: &str,
        name: &str,
        slots: u32,
    ) -> Result<Self> {
        let mut client = Client::connect(url.to_string()).await?;
        let r = client
            .register(pb::RegisterRequest {
                group: group.to_string(),
                token: token.to_string(),
                host: Some(host(name, slots)),
            })
            .await?
            .into_inner();
        Ok(Self {
            id: r.agent_id,
            credential: r.credential,
            name: name.to_string(),
            slots,
        })
    }

    /// Opens a session to the scheduler at `url` and answers every attempt at once with started
    /// and succeeded, until `stop`. Returns once the session is open (Welcome received).
    pub async fn run(
        &self,
        url: &str,
        seen: Arc<Seen>,
        stop: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<Result<()>>> {
        let mut client = Client::connect(url.to_string())
            .await?
            .max_decoding_message_size(64 << 20);
        let (tx, rx) = mpsc::channel::<pb::AgentMessage>(4096);
        let boot = format!("noop-{}", uuid::Uuid::new_v4().simple());
        tx.send(pb::AgentMessage {
            seq: 1,
            body: Some(Body::Hello(pb::Hello {
                host: Some(host(&self.name, self.slots)),
                running_attempts: Vec::new(),
                boot_id: boot,
                finished_attempts: Vec::new(),
            })),
        })
        .await?;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request
            .metadata_mut()
            .insert(AGENT_ID_HEADER, self.id.parse()?);
        request
            .metadata_mut()
            .insert(AGENT_CREDENTIAL_HEADER, self.credential.parse()?);
        let mut inbound = client.session(request).await?.into_inner();
        // Wait for the welcome: from then on the scheduler may dispatch here.
        loop {
            let msg = inbound
                .message()
                .await?
                .ok_or_else(|| anyhow!("session closed before the welcome"))?;
            if matches!(msg.body, Some(pb::scheduler_message::Body::Welcome(_))) {
                break;
            }
        }
        let slots = self.slots;
        Ok(tokio::spawn(async move {
            let mut seq = 1u64;
            let mut next = |body| {
                seq += 1;
                pb::AgentMessage {
                    seq,
                    body: Some(body),
                }
            };
            let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = heartbeat.tick() => {
                        tx.send(next(Body::Heartbeat(pb::Heartbeat {
                            free_slots: slots,
                            running: 0,
                            load1: 0.0,
                            running_attempts: Vec::new(),
                        }))).await?;
                    }
                    msg = inbound.message() => {
                        let Some(msg) = msg? else { return Ok(()) };
                        let Some(pb::scheduler_message::Body::Start(start)) = msg.body else {
                            continue;
                        };
                        seen.first_start
                            .lock()
                            .map_err(|_| anyhow!("poisoned"))?
                            .get_or_insert_with(Instant::now);
                        tx.send(next(Body::Started(pb::AttemptStarted {
                            attempt_id: start.attempt_id.clone(),
                            fencing_token: start.fencing_token,
                        }))).await?;
                        tx.send(next(Body::Finished(pb::AttemptFinished {
                            attempt_id: start.attempt_id,
                            fencing_token: start.fencing_token,
                            status: pb::AttemptStatus::Succeeded as i32,
                            stats: Some(pb::SyncStats::default()),
                            error: String::new(),
                        }))).await?;
                        *seen.last_finish.lock().map_err(|_| anyhow!("poisoned"))? =
                            Some(Instant::now());
                        seen.finished.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }))
    }
}
