//! The agent's one long-lived stream to the scheduler.
//!
//! The agent always dials out, so it works from behind NAT. It keeps HTTP/2 pings going (NATs
//! drop idle flows silently), and when the stream breaks it reconnects at once and then with
//! capped, jittered backoff, trying each scheduler address in turn. Attempts keep running
//! meanwhile and their reports wait in the [`Spool`].
//!
//! Self-fencing: the scheduler fails an agent's attempts once the agent has been out of touch for
//! the attempt lease (and may run them again elsewhere). So that two copies of one instance never
//! write at once, the agent stops its own attempts a little before that (three quarters of the
//! lease the scheduler announced in its Welcome), counted from the last message it received.

use crate::connectivity;
use crate::executor::Executor;
use crate::identity::{Identity, host_facts};
use crate::spool::Spool;
use ferry_proto::agent::v1 as pb;
use ferry_proto::tls::ClientTls;
use ferry_proto::{
    AGENT_CREDENTIAL_HEADER, AGENT_ID_HEADER, FENCING_TOKEN_HEADER, RELAY_ID_HEADER,
    RELAY_ROLE_HEADER,
};
use pb::agent_message::Body;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Settings of the session loop.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Scheduler URLs, tried in turn.
    pub schedulers: Vec<String>,
    pub heartbeat: Duration,
    /// Random per process; lets the scheduler tell a reconnect from a restart.
    pub boot_id: String,
    pub labels: BTreeMap<String, String>,
    /// Stop attempts after this long out of touch; `None`: three quarters of the scheduler's
    /// lease (45 s until the first Welcome says otherwise).
    pub fence_after: Option<Duration>,
    pub tls: ClientTls,
}

/// Why the session loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    Shutdown,
    /// The scheduler refuses this agent for good (revoked, uninstalled, unknown credential).
    Refused(String),
    /// Another process of this agent took over.
    Superseded(String),
}

/// A gRPC channel to `url` with the keepalive settings agents need.
pub async fn connect(url: &str, tls: &ClientTls) -> Result<tonic::transport::Channel, String> {
    let endpoint = tls.endpoint(url)?;
    endpoint
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .connect()
        .await
        .map_err(|e| {
            let mut msg = format!("cannot connect to {url}: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            msg
        })
}

/// Opens relay streams (one leg of a two-group sync each) to the scheduler this agent's session
/// is connected to: the leader, which joins the two legs. Like the session, it only dials out.
pub struct RelayDialer {
    identity: Identity,
    tls: ClientTls,
    /// The scheduler of the current (or last) session.
    url: Mutex<Option<String>>,
}

/// Largest relay frame this agent accepts (a batch is cut at about 1 MiB; one large row alone
/// may be more).
const MAX_RELAY_FRAME: usize = 32 << 20;

impl RelayDialer {
    pub fn new(identity: Identity, tls: ClientTls) -> Self {
        Self {
            identity,
            tls,
            url: Mutex::new(None),
        }
    }

    fn set_url(&self, url: &str) {
        *self.url.lock().unwrap_or_else(|p| p.into_inner()) = Some(url.to_string());
    }

    /// Opens this agent's side of relay `leg` for the attempt with `fencing_token`.
    pub async fn dial(
        &self,
        leg: &pb::RelayLeg,
        fencing_token: u64,
    ) -> Result<crate::sync::relay::Link, String> {
        use tokio_stream::StreamExt;
        let url = self
            .url
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or("no scheduler session yet")?;
        let channel = connect(&url, &self.tls).await?;
        let mut client = pb::agent_service_client::AgentServiceClient::new(channel)
            .max_decoding_message_size(MAX_RELAY_FRAME)
            .max_encoding_message_size(MAX_RELAY_FRAME);
        let (tx, rx) = mpsc::channel(crate::sync::relay::OUTBOUND_FRAMES);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        let md = request.metadata_mut();
        let bad = |what: &str| format!("the {what} is not valid metadata");
        md.insert(
            AGENT_ID_HEADER,
            self.identity
                .agent_id
                .parse()
                .map_err(|_| bad("agent id"))?,
        );
        md.insert(
            AGENT_CREDENTIAL_HEADER,
            self.identity
                .credential
                .parse()
                .map_err(|_| bad("credential"))?,
        );
        md.insert(
            RELAY_ID_HEADER,
            leg.relay_id.parse().map_err(|_| bad("relay id"))?,
        );
        md.insert(
            RELAY_ROLE_HEADER,
            leg.role.parse().map_err(|_| bad("relay role"))?,
        );
        md.insert(FENCING_TOKEN_HEADER, fencing_token.into());
        let inbound = client
            .relay(request)
            .await
            .map_err(|s| format!("the scheduler at {url} refused the relay: {}", s.message()))?
            .into_inner()
            .map(|r| r.map_err(|s| s.message().to_string()));
        Ok(crate::sync::relay::Link {
            tx,
            rx: Box::pin(inbound),
        })
    }
}

/// Backoff with jitter: 0.2 s doubling to 5 s.
pub fn backoff(failures: u32) -> Duration {
    let base = 200u64.saturating_mul(1 << failures.min(5)).min(5_000);
    let jitter = rand::random::<u64>() % (base / 4 + 1);
    Duration::from_millis(base + jitter)
}

/// Contact with the scheduler, shared by the session and the fencing watchdog.
#[derive(Default)]
struct Contact {
    connected: AtomicBool,
    lease_ms: AtomicU64,
    last: Mutex<Option<Instant>>,
}

impl Contact {
    fn touch(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    fn silent_for(&self) -> Option<Duration> {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
    }
}

/// Keeps a session open until `shutdown`, or until the scheduler refuses this agent.
pub async fn run(
    cfg: SessionConfig,
    identity: Identity,
    executor: Arc<Executor>,
    spool: Arc<Spool>,
    shutdown: CancellationToken,
) -> SessionEnd {
    let contact = Arc::new(Contact::default());
    contact.touch();
    let watchdog = tokio::spawn(fence(
        cfg.fence_after,
        contact.clone(),
        executor.clone(),
        shutdown.clone(),
    ));
    let mut failures = 0u32;
    let mut which = 0usize;
    // Where a scheduler that does not lead sent us; tried once, next.
    let mut redirect: Option<String> = None;
    let mut redirects = 0u32;
    let end = loop {
        if shutdown.is_cancelled() {
            break SessionEnd::Shutdown;
        }
        let url = redirect
            .take()
            .unwrap_or_else(|| cfg.schedulers[which % cfg.schedulers.len()].clone());
        let mut opened = false;
        match once(
            &cfg,
            &url,
            &identity,
            &executor,
            &spool,
            &contact,
            &shutdown,
            &mut opened,
        )
        .await
        {
            Ok(()) => {
                if shutdown.is_cancelled() {
                    break SessionEnd::Shutdown;
                }
                info!(scheduler = %url, "session ended; reconnecting");
            }
            Err(Failure::Refused(msg)) => {
                error!(scheduler = %url, "scheduler refused this agent: {msg}");
                break SessionEnd::Refused(msg);
            }
            Err(Failure::Superseded(msg)) => {
                error!(scheduler = %url, "{msg}");
                break SessionEnd::Superseded(msg);
            }
            Err(Failure::Transient(msg)) => {
                warn!(scheduler = %url, pending = spool.pending(), "no session: {msg}");
                which += 1;
            }
            Err(Failure::Redirect(leader)) => {
                info!(scheduler = %url, leader = %leader, "this scheduler does not lead; going to the leader");
                redirect = Some(leader);
                redirects += 1;
            }
        }
        contact.connected.store(false, Ordering::Relaxed);
        // A session that was up broke: try again at once; otherwise back off. Following the
        // leader is immediate too, unless schedulers keep pointing elsewhere (an election).
        let followed = redirect.is_some() && redirects <= 3;
        if opened {
            redirects = 0;
        }
        failures = if opened || followed { 0 } else { failures + 1 };
        let wait = if opened || followed {
            Duration::from_millis(50 + rand::random::<u64>() % 100)
        } else {
            backoff(failures)
        };
        debug!(?wait, "waiting before reconnecting");
        tokio::select! {
            _ = shutdown.cancelled() => break SessionEnd::Shutdown,
            _ = tokio::time::sleep(wait) => {}
        }
    };
    watchdog.abort();
    end
}

/// Stops running attempts once the scheduler has been out of touch for too long.
async fn fence(
    fixed: Option<Duration>,
    contact: Arc<Contact>,
    executor: Arc<Executor>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut fenced = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if contact.connected.load(Ordering::Relaxed) {
            fenced = false;
            continue;
        }
        let limit = fixed.unwrap_or_else(|| {
            let lease = contact.lease_ms.load(Ordering::Relaxed);
            let lease = if lease == 0 { 60_000 } else { lease };
            Duration::from_millis(lease * 3 / 4)
        });
        if let Some(silent) = contact.silent_for()
            && silent >= limit
            && !fenced
            && executor.running_count() > 0
        {
            warn!(
                silent_secs = silent.as_secs(),
                "out of touch with the scheduler; stopping running attempts so a retry elsewhere never runs alongside them"
            );
            executor.kill_all(&format!(
                "the agent lost the scheduler for {}s; it stopped the attempt before the scheduler's lease ran out (self-fencing)",
                silent.as_secs()
            ));
            fenced = true;
        }
    }
}

enum Failure {
    Refused(String),
    Superseded(String),
    Transient(String),
    /// The scheduler does not lead the cluster; the leader is at this URL.
    Redirect(String),
}

/// The header a scheduler that does not lead names the leader's URL in.
const LEADER_ADDR_HEADER: &str = "x-ferry-leader-addr";

fn classify(s: &tonic::Status) -> Failure {
    if s.code() == tonic::Code::Unavailable
        && let Some(leader) = s
            .metadata()
            .get(LEADER_ADDR_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
    {
        return Failure::Redirect(leader.to_string());
    }
    match s.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
            Failure::Refused(s.message().to_string())
        }
        tonic::Code::Aborted if s.message().starts_with("superseded") => {
            Failure::Superseded(s.message().to_string())
        }
        _ => Failure::Transient(s.message().to_string()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn once(
    cfg: &SessionConfig,
    url: &str,
    identity: &Identity,
    executor: &Arc<Executor>,
    spool: &Arc<Spool>,
    contact: &Arc<Contact>,
    shutdown: &CancellationToken,
    opened: &mut bool,
) -> Result<(), Failure> {
    let channel = connect(url, &cfg.tls).await.map_err(Failure::Transient)?;
    // A start message carries the whole job file, which an operator may make large.
    let mut client = pb::agent_service_client::AgentServiceClient::new(channel)
        .max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(256);
    let finished = spool
        .unacknowledged_results()
        .map_err(|e| Failure::Transient(e.to_string()))?;
    let hello = pb::AgentMessage {
        seq: 0,
        body: Some(Body::Hello(pb::Hello {
            host: Some(host_facts(executor.slots(), &cfg.labels, Some(url))),
            running_attempts: executor.running_ids(),
            boot_id: cfg.boot_id.clone(),
            finished_attempts: finished,
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
        Err(s) => return Err(classify(&s)),
    };
    *opened = true;
    executor.relay_dialer().set_url(url);
    contact.connected.store(true, Ordering::Relaxed);
    contact.touch();
    info!(scheduler = %url, agent = %identity.agent_id, pending = spool.pending(), "session open");
    spool.begin_session(tx.clone());
    let pump = {
        let (spool, tx) = (spool.clone(), tx.clone());
        tokio::spawn(async move {
            loop {
                match spool.next().await {
                    Ok(m) => {
                        if tx.send(m).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        error!(error = %e, "cannot read the spool; reports wait");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        })
    };
    let mut heartbeat = tokio::time::interval(cfg.heartbeat);
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = heartbeat.tick() => {
                spool.send_live(Body::Heartbeat(pb::Heartbeat {
                    free_slots: executor.free_slots(),
                    running: executor.running_count(),
                    load1: load1(),
                    running_attempts: executor.running_ids(),
                }));
            }
            msg = inbound.message() => match msg {
                Ok(Some(m)) => {
                    contact.touch();
                    handle(m, executor, spool, contact);
                }
                Ok(None) => break Ok(()),
                Err(s) => {
                    break match classify(&s) {
                        Failure::Transient(m) => Err(Failure::Transient(format!("session broke: {m}"))),
                        other => Err(other),
                    };
                }
            },
        }
    };
    pump.abort();
    spool.end_session();
    result
}

/// The host's one-minute load average (0 where the system does not say).
fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

fn handle(
    msg: pb::SchedulerMessage,
    executor: &Arc<Executor>,
    spool: &Arc<Spool>,
    contact: &Arc<Contact>,
) {
    use pb::scheduler_message::Body as S;
    match msg.body {
        Some(S::Ack(a)) => {
            if let Err(e) = spool.ack(a.up_to) {
                warn!(error = %e, "cannot drop acknowledged reports from the spool");
            }
        }
        Some(S::Welcome(w)) => {
            contact.lease_ms.store(w.lease_ms, Ordering::Relaxed);
            executor.set_draining(w.draining);
        }
        Some(S::Drain(d)) => executor.set_draining(d.draining),
        Some(S::Start(start)) => {
            info!(attempt = %start.attempt_id, task = %start.task, "attempt received");
            executor.start(start);
        }
        Some(S::Kill(k)) => executor.kill(&k.attempt_id, &k.reason),
        Some(S::Test(t)) => {
            let spool = spool.clone();
            let roots = executor.file_roots().to_vec();
            tokio::spawn(async move {
                info!(datasource = %t.datasource, table = %t.table, access = %t.access, "testing connectivity");
                let result = connectivity::test_and_describe(
                    t.request_id,
                    &t.config_json,
                    &t.table,
                    &t.access,
                    t.describe,
                    &roots,
                )
                .await;
                spool.send_live(Body::Connectivity(result));
            });
        }
        None => {}
    }
}
