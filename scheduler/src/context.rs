//! The parts every service of one scheduler shares.

use crate::clock::SharedClock;
use crate::hub::{Hub, InstanceEvent};
use crate::secrets::SecretBox;
use crate::state::Store;
use crate::state::command::Applied;
use ferry_proto::agent::v1 as pb;
use std::path::PathBuf;
use std::time::Duration;

/// Settings of one scheduler process.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// The URL agents and CLIs use to reach this scheduler; printed in install commands.
    pub advertise_url: String,
    /// An agent without a heartbeat for this long is offline and gets no new work.
    pub offline_after: Duration,
    /// A running attempt whose agent has had no session for this long is failed.
    pub attempt_lease: Duration,
    /// A dispatched attempt the agent has not reported started within this long is failed.
    pub start_timeout: Duration,
    /// How often the dispatcher looks for work even when nothing woke it.
    pub dispatch_interval: Duration,
    /// TLS for the listener; `None` serves plaintext.
    pub tls: Option<ServerTls>,
    /// Where the first start writes the first admin token (besides showing it once).
    pub admin_token_file: Option<PathBuf>,
    /// The first admin token to create on the first start, instead of a random one.
    pub bootstrap_token: Option<String>,
    /// Written with the bound address once the scheduler serves (for scripts and tests).
    pub addr_file: Option<PathBuf>,
    /// When, on each schedule's wall clock, the next day's instances are generated.
    pub generate_at: chrono::NaiveTime,
    /// Where the master key that seals secrets comes from.
    pub keys: crate::secrets::KeySource,
    /// Raft id, initial peers, joining, peer TLS.
    pub cluster: crate::cluster::ClusterSettings,
}

/// PEM files of the scheduler's certificate and key, and optionally a CA whose client
/// certificates agents and CLIs must present.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl Config {
    pub fn new(data_dir: PathBuf, advertise_url: String) -> Self {
        Self {
            data_dir,
            advertise_url,
            offline_after: Duration::from_secs(15),
            attempt_lease: Duration::from_secs(60),
            start_timeout: Duration::from_secs(60),
            dispatch_interval: Duration::from_millis(500),
            tls: None,
            admin_token_file: None,
            bootstrap_token: None,
            addr_file: None,
            generate_at: chrono::NaiveTime::from_hms_opt(23, 30, 0).unwrap_or_default(),
            keys: Default::default(),
            cluster: Default::default(),
        }
    }
}

/// Store, live registry, secret box, clock and settings of one scheduler.
pub struct Context {
    pub store: std::sync::Arc<Store>,
    pub hub: Hub,
    pub secrets: SecretBox,
    pub config: Config,
    pub clock: SharedClock,
}

impl Context {
    /// Milliseconds since the Unix epoch by the scheduler's clock: the one reading commands carry.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Makes what a command changed known: watchers hear of changed instances, agents are told
    /// to stop attempts the scheduler ended, the dispatcher wakes.
    pub fn announce(&self, applied: &Applied) {
        let Applied::Changed { instances, stop } = applied else {
            return;
        };
        for id in instances {
            self.hub.publish(InstanceEvent::Changed {
                instance_id: id.clone(),
            });
        }
        for s in stop {
            tracing::info!(attempt = %s.attempt_id, agent = %s.agent_id, reason = %s.reason, "telling the agent to stop the attempt");
            self.hub.send(
                &s.agent_id,
                pb::SchedulerMessage {
                    body: Some(pb::scheduler_message::Body::Kill(pb::KillAttempt {
                        attempt_id: s.attempt_id.clone(),
                        reason: s.reason.clone(),
                    })),
                },
            );
        }
        if !instances.is_empty() {
            self.hub.dispatch.notify_one();
        }
    }
}
