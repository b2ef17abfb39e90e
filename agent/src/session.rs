//! The agent's one long-lived stream to the scheduler.
//!
//! The agent always dials out, so it works from behind NAT. It keeps HTTP/2 pings going (NATs
//! drop idle flows silently), and when the stream breaks it reconnects with capped, jittered
//! backoff, trying each scheduler address in turn. Attempts keep running meanwhile.

use crate::connectivity;
use crate::executor::Executor;
use crate::identity::{Identity, host_facts};
use crate::outbox::Outbox;
use ferry_proto::agent::v1 as pb;
use ferry_proto::{AGENT_CREDENTIAL_HEADER, AGENT_ID_HEADER};
use pb::agent_message::Body;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, error, info, warn};

/// Settings of the session loop.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Scheduler URLs, tried in turn.
    pub schedulers: Vec<String>,
    pub heartbeat: Duration,
    /// Random per process; lets the scheduler tell a reconnect from a restart.
    pub boot_id: String,
}

/// A gRPC channel to `url` with the keepalive settings agents need.
pub async fn connect(url: &str) -> Result<Channel, String> {
    Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("invalid scheduler URL {url}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))
}

/// Backoff with jitter: 0.5 s doubling to 10 s.
pub fn backoff(failures: u32) -> Duration {
    let base = 500u64.saturating_mul(1 << failures.min(5)).min(10_000);
    let jitter = rand::random::<u64>() % (base / 4 + 1);
    Duration::from_millis(base + jitter)
}

/// Keeps a session open until `shutdown`.
pub async fn run(
    cfg: SessionConfig,
    identity: Identity,
    executor: Arc<Executor>,
    outbox: Arc<Outbox>,
    shutdown: CancellationToken,
) {
    let mut failures = 0u32;
    let mut which = 0usize;
    while !shutdown.is_cancelled() {
        let url = cfg.schedulers[which % cfg.schedulers.len()].clone();
        match once(&cfg, &url, &identity, &executor, &outbox, &shutdown).await {
            Ok(()) => {
                failures = 0;
                if shutdown.is_cancelled() {
                    break;
                }
                info!(scheduler = %url, "session ended; reconnecting");
            }
            Err(Failure::Refused(msg)) => {
                error!(scheduler = %url, "scheduler refused this agent: {msg}");
                failures = failures.max(5);
            }
            Err(Failure::Transient(msg)) => {
                warn!(scheduler = %url, pending = outbox.pending(), "no session: {msg}");
                failures += 1;
                which += 1;
            }
        }
        let wait = backoff(failures);
        debug!(?wait, "waiting before reconnecting");
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

enum Failure {
    Refused(String),
    Transient(String),
}

async fn once(
    cfg: &SessionConfig,
    url: &str,
    identity: &Identity,
    executor: &Arc<Executor>,
    outbox: &Arc<Outbox>,
    shutdown: &CancellationToken,
) -> Result<(), Failure> {
    let channel = connect(url).await.map_err(Failure::Transient)?;
    let mut client = pb::agent_service_client::AgentServiceClient::new(channel);
    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(256);
    let hello = pb::AgentMessage {
        seq: 0,
        body: Some(Body::Hello(pb::Hello {
            host: Some(host_facts(executor.slots())),
            running_attempts: executor.running_ids(),
            boot_id: cfg.boot_id.clone(),
        })),
    };
    tx.send(hello)
        .await
        .map_err(|_| Failure::Transient("session channel closed".into()))?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    let md = request.metadata_mut();
    let bad = |_| Failure::Refused("agent id or credential is not valid metadata".into());
    md.insert(AGENT_ID_HEADER, identity.agent_id.parse().map_err(bad)?);
    md.insert(
        AGENT_CREDENTIAL_HEADER,
        identity.credential.parse().map_err(bad)?,
    );
    let mut inbound = match client.session(request).await {
        Ok(r) => r.into_inner(),
        Err(s)
            if matches!(
                s.code(),
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
            ) =>
        {
            return Err(Failure::Refused(s.message().to_string()));
        }
        Err(s) => return Err(Failure::Transient(s.message().to_string())),
    };
    info!(scheduler = %url, agent = %identity.agent_id, "session open");
    outbox.begin_session(tx.clone());
    let pump = {
        let (outbox, tx) = (outbox.clone(), tx.clone());
        tokio::spawn(async move {
            loop {
                let m = outbox.next().await;
                if tx.send(m).await.is_err() {
                    return;
                }
            }
        })
    };
    let mut heartbeat = tokio::time::interval(cfg.heartbeat);
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = heartbeat.tick() => {
                outbox.send_live(Body::Heartbeat(pb::Heartbeat {
                    free_slots: executor.free_slots(),
                    running: executor.running_count(),
                }));
            }
            msg = inbound.message() => match msg {
                Ok(Some(m)) => handle(m, executor, outbox),
                Ok(None) => break Ok(()),
                Err(s) if s.code() == tonic::Code::Unauthenticated => {
                    break Err(Failure::Refused(s.message().to_string()));
                }
                Err(s) => break Err(Failure::Transient(format!("session broke: {}", s.message()))),
            },
        }
    };
    pump.abort();
    outbox.end_session();
    result
}

fn handle(msg: pb::SchedulerMessage, executor: &Arc<Executor>, outbox: &Arc<Outbox>) {
    use pb::scheduler_message::Body as S;
    match msg.body {
        Some(S::Ack(a)) => outbox.ack(a.up_to),
        Some(S::Start(start)) => {
            info!(attempt = %start.attempt_id, task = %start.task, "attempt received");
            executor.start(start);
        }
        Some(S::Kill(k)) => executor.kill(&k.attempt_id, &k.reason),
        Some(S::Test(t)) => {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                info!(datasource = %t.datasource, "testing connectivity");
                let result = connectivity::test(t.request_id, &t.config_json).await;
                outbox.send_live(Body::Connectivity(result));
            });
        }
        None => {}
    }
}
