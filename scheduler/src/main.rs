//! `ferry-scheduler`: parse flags, set up logging, serve until SIGINT/SIGTERM.

use anyhow::Context as _;
use clap::Parser;
use ferry_scheduler::{Config, ServerTls, server};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// mimalloc rather than glibc's malloc: on the scheduling benchmark's day glibc's per-thread
/// arenas left the scheduler at 1.15 GiB resident, and capping them (`MALLOC_ARENA_MAX=2`)
/// brought it under 1 GiB but cut dispatch by a third (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Ferry's scheduler: keeps the catalog and the instance DAG, dispatches work to agents.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Where the state (sled) and the secret key live.
    #[arg(long, env = "FERRY_DATA_DIR", default_value = "./ferry-data")]
    data_dir: PathBuf,
    /// Address to serve gRPC (agents and CLI) on; port 0 picks a free one.
    #[arg(long, env = "FERRY_LISTEN", default_value = "127.0.0.1:7100")]
    listen: String,
    /// URL agents and CLIs use to reach this scheduler (default: http://<listen address>).
    #[arg(long, env = "FERRY_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// Write the bound address to this file once listening (for scripts and tests).
    #[arg(long)]
    addr_file: Option<PathBuf>,
    /// Seconds without a heartbeat after which an agent counts as offline.
    #[arg(long, default_value_t = 15)]
    offline_after_secs: u64,
    /// Seconds an agent may stay unreachable before its running attempts are failed.
    #[arg(long, default_value_t = 60)]
    attempt_lease_secs: u64,
    /// Seconds an agent may take to report a dispatched attempt started.
    #[arg(long, default_value_t = 60)]
    start_timeout_secs: u64,
    /// The scheduler's certificate (PEM, chain first); with --tls-key, serve TLS only.
    #[arg(long, env = "FERRY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long, env = "FERRY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// On the first start, also write the first admin token to this file (mode 0600).
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// The master key sealing secrets (32 bytes, raw or hex); every scheduler of a cluster needs
    /// the same one. Default: FERRY_MASTER_KEY, else <data-dir>/secret.key (made on first start).
    #[arg(long, env = "FERRY_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// A key being rotated out: secrets it sealed still open until `ferry secrets reseal`.
    #[arg(long)]
    previous_master_key_file: Vec<PathBuf>,
    /// Require client certificates signed by this CA (PEM) from agents and CLIs.
    #[arg(long, env = "FERRY_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// This scheduler's id in its cluster (non-zero, unique, never reused).
    #[arg(long, env = "FERRY_NODE_ID", default_value_t = 1)]
    node_id: u64,
    /// The schedulers of a new cluster, this one included: `1=https://s1:7100,2=...`. Read on
    /// the first start only; every scheduler gets the same list. Without it: a single scheduler.
    #[arg(long, env = "FERRY_PEERS", conflicts_with = "join")]
    peers: Option<String>,
    /// Join an existing cluster: start empty and wait for `ferry cluster add <id> <url>`.
    #[arg(long, env = "FERRY_JOIN")]
    join: bool,
    /// CA (PEM) that signed the other schedulers' certificates, for https:// peers.
    #[arg(long, env = "FERRY_PEER_CA")]
    peer_ca: Option<PathBuf>,
    /// Raft tick in milliseconds; an election follows 10 to 20 ticks without a leader.
    #[arg(long, env = "FERRY_RAFT_TICK_MS", default_value_t = 100)]
    raft_tick_ms: u64,
    /// Applied commands between two raft snapshots.
    #[arg(long, default_value_t = 10_000)]
    snapshot_every: u64,
    /// When, on each schedule's own wall clock, the next day's instances are generated (HH:MM).
    #[arg(long, env = "FERRY_GENERATE_AT", default_value = "23:30", value_parser = parse_time_of_day)]
    generate_at: chrono::NaiveTime,
    /// Shift the scheduler's clock by this many seconds (may be negative): for benchmarks and
    /// drills that replay a chosen day at real speed. Every scheduler of a cluster needs the same.
    #[arg(
        long,
        env = "FERRY_CLOCK_OFFSET_SECS",
        default_value_t = 0,
        allow_hyphen_values = true
    )]
    clock_offset_secs: i64,
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
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if args.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let mut config = Config::new(
        args.data_dir.clone(),
        args.advertise_url
            .unwrap_or_else(|| format!("{scheme}://{addr}")),
    );
    config.offline_after = Duration::from_secs(args.offline_after_secs);
    config.attempt_lease = Duration::from_secs(args.attempt_lease_secs);
    config.start_timeout = Duration::from_secs(args.start_timeout_secs);
    config.generate_at = args.generate_at;
    config.admin_token_file = args.admin_token_file;
    config.keys = ferry_scheduler::secrets::KeySource {
        env: std::env::var("FERRY_MASTER_KEY")
            .ok()
            .filter(|k| !k.is_empty()),
        file: args.master_key_file,
        previous: args.previous_master_key_file,
    };
    config.addr_file = args.addr_file;
    // Automation may choose the first admin token (at least 32 characters).
    config.bootstrap_token = std::env::var("FERRY_BOOTSTRAP_TOKEN").ok();
    config.cluster = ferry_scheduler::cluster::ClusterSettings {
        node_id: args.node_id,
        peers: match &args.peers {
            Some(p) => ferry_scheduler::cluster::parse_peers(p)
                .map_err(|e| anyhow::anyhow!("--peers: {e}"))?,
            None => Default::default(),
        },
        join: args.join,
        peer_tls: ferry_proto::tls::ClientTls {
            ca_cert: args.peer_ca,
            // When schedulers require client certificates, each presents its own to its peers.
            client_cert: args.tls_client_ca.as_ref().and(args.tls_cert.clone()),
            client_key: args.tls_client_ca.as_ref().and(args.tls_key.clone()),
        },
        tick: Duration::from_millis(args.raft_tick_ms.max(1)),
        snapshot_every: args.snapshot_every,
    };
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls = Some(ServerTls {
            cert,
            key,
            client_ca: args.tls_client_ca,
        });
    }
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        signal.cancel();
    });
    let clock = ferry_scheduler::clock::shifted(args.clock_offset_secs.saturating_mul(1000));
    if args.clock_offset_secs != 0 {
        tracing::warn!(
            offset_secs = args.clock_offset_secs,
            "the scheduler's clock is shifted from the system's"
        );
    }
    server::run_with_clock(listener, config, clock, shutdown).await?;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn parse_time_of_day(s: &str) -> Result<chrono::NaiveTime, String> {
    chrono::NaiveTime::parse_from_str(s, "%H:%M")
        .map_err(|_| format!("{s:?} is not a time of day; write HH:MM, e.g. 23:30"))
}
