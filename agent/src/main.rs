//! `ferry-agent`: register once with a group's token, then keep a session with the scheduler and
//! run what it sends.

use anyhow::Context as _;
use clap::Parser;
use ferry_agent::executor::Executor;
use ferry_agent::identity::{self, IdentityError};
use ferry_agent::outbox::Outbox;
use ferry_agent::session::{self, SessionConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Ferry's agent: runs sync jobs next to the data and dials out to the scheduler.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Scheduler URL(s), comma separated, e.g. http://sched-1:7100,http://sched-2:7100.
    #[arg(long, env = "FERRY_SCHEDULER", value_delimiter = ',', required = true)]
    scheduler: Vec<String>,
    /// Resource group to join (first start only).
    #[arg(long, env = "FERRY_GROUP")]
    group: Option<String>,
    /// The group's registration token (first start only).
    #[arg(long, env = "FERRY_AGENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Where the agent keeps its identity.
    #[arg(
        long,
        env = "FERRY_AGENT_DATA_DIR",
        default_value = "./ferry-agent-data"
    )]
    data_dir: PathBuf,
    /// How many attempts may run at once.
    #[arg(long, default_value_t = 4)]
    slots: u32,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 3)]
    heartbeat_secs: u64,
    /// Milliseconds between progress reports of a running attempt.
    #[arg(long, default_value_t = 1000)]
    progress_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        signal.cancel();
    });
    #[cfg(unix)]
    {
        let signal = shutdown.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal as unix_signal};
            if let Ok(mut term) = unix_signal(SignalKind::terminate()) {
                term.recv().await;
                signal.cancel();
            }
        });
    }

    let identity = match identity::load(&args.data_dir)? {
        Some(id) => {
            info!(agent = %id.agent_id, group = %id.group, "using saved identity");
            id
        }
        None => {
            let (Some(group), Some(token)) = (&args.group, &args.token) else {
                return Err(IdentityError::NoToken.into());
            };
            let id =
                register_with_retry(&args.scheduler, group, token, args.slots, &shutdown).await?;
            identity::save(&args.data_dir, &id)?;
            info!(agent = %id.agent_id, group = %id.group, "registered");
            id
        }
    };

    let outbox = Arc::new(Outbox::default());
    let executor = Arc::new(Executor::new(
        args.slots,
        outbox.clone(),
        Duration::from_millis(args.progress_ms.max(100)),
    ));
    let cfg = SessionConfig {
        schedulers: args.scheduler.clone(),
        heartbeat: Duration::from_secs(args.heartbeat_secs.max(1)),
        boot_id: uuid::Uuid::new_v4().to_string(),
    };
    let session_stop = CancellationToken::new();
    let session = tokio::spawn(session::run(
        cfg,
        identity,
        executor.clone(),
        outbox.clone(),
        session_stop.clone(),
    ));
    shutdown.cancelled().await;
    info!(
        running = executor.running_count(),
        "stopping: killing running attempts and reporting them"
    );
    executor.kill_all();
    // Give the session a moment to deliver the killed attempts' final reports.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while (executor.running_count() > 0 || outbox.pending() > 0)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    session_stop.cancel();
    let _ = session.await;
    info!("agent stopped");
    Ok(())
}

async fn register_with_retry(
    urls: &[String],
    group: &str,
    token: &str,
    slots: u32,
    shutdown: &CancellationToken,
) -> anyhow::Result<identity::Identity> {
    let mut failures = 0u32;
    loop {
        let url = &urls[failures as usize % urls.len()];
        let result = match session::connect(url).await {
            Ok(ch) => identity::register(ch, url, group, token, slots).await,
            Err(message) => Err(IdentityError::Unreachable {
                url: url.clone(),
                message,
            }),
        };
        match result {
            Ok(id) => return Ok(id),
            Err(IdentityError::Unreachable { url, message }) => {
                error!(scheduler = %url, "cannot register yet: {message}; retrying");
                failures += 1;
            }
            Err(e) => return Err(e).context("registration failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => anyhow::bail!("stopped before registration"),
            _ = tokio::time::sleep(session::backoff(failures)) => {}
        }
    }
}
