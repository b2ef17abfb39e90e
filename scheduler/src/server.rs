//! Serves the agent and admin gRPC services on one listener and runs the dispatcher, until the
//! shutdown token fires; then ends agent sessions and flushes the store.

use crate::admin::AdminApi;
use crate::agent_service::AgentApi;
use crate::auth::Authenticator;
use crate::clock::SharedClock;
use crate::cluster::{self, ClusterApi};
use crate::context::{Config, Context};
use crate::dispatch;
use crate::hub::Hub;
use crate::secrets::SecretBox;
use crate::state::Store;
use ferry_proto::admin::v1::admin_service_server::AdminServiceServer;
use ferry_proto::admin::v1::cluster_service_server::ClusterServiceServer;
use ferry_proto::agent::v1::agent_service_server::AgentServiceServer;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tracing::{info, warn};

/// The largest admin request or answer (job files, logs).
const MAX_ADMIN_MESSAGE: usize = 64 << 20;

/// Errors that stop a scheduler from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    State(#[from] crate::error::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read or write {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
}

/// Shows the first admin token once: on standard error, and in `--admin-token-file` (mode 0600)
/// when given, for automation.
pub(crate) fn announce_first_token(config: &Config, token: &str) -> Result<(), ServeError> {
    eprintln!(
        "\n  First start: created user \"admin\" with API token (shown once, stored hashed):\n\n      {token}\n\n  Log in with: ferry login --scheduler {} --token {token}\n",
        config.advertise_url
    );
    if let Some(path) = &config.admin_token_file {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        opts.open(path)
            .and_then(|mut f| f.write_all(token.as_bytes()))
            .map_err(|source| ServeError::File {
                path: path.display().to_string(),
                source,
            })?;
    }
    Ok(())
}

fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, ServeError> {
    std::fs::read(path).map_err(|source| ServeError::File {
        path: path.display().to_string(),
        source,
    })
}

/// The listener's TLS settings, or a loud warning when there are none and the listener is not
/// on loopback: start messages carry decrypted database passwords.
fn tls_settings(
    config: &Config,
    addr: Option<std::net::SocketAddr>,
) -> Result<Option<ServerTlsConfig>, ServeError> {
    let Some(tls) = &config.tls else {
        if addr.is_some_and(|a| !a.ip().is_loopback()) {
            warn!(
                addr = ?addr,
                "serving WITHOUT TLS on a non-loopback address: agents receive database passwords over this connection; \
                 give --tls-cert and --tls-key (see docs/deployment.md)"
            );
        }
        return Ok(None);
    };
    let identity = Identity::from_pem(read_pem(&tls.cert)?, read_pem(&tls.key)?);
    let mut settings = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca {
        settings = settings.client_ca_root(Certificate::from_pem(read_pem(ca)?));
    }
    Ok(Some(settings))
}

/// Runs one scheduler on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    run_with_clock(listener, config, crate::clock::system(), shutdown).await
}

/// [`run`] with the clock every time-based decision reads (tests pass a manual one).
pub async fn run_with_clock(
    listener: TcpListener,
    config: Config,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServeError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let store = Arc::new(Store::open(&config.data_dir)?);
    if config.cluster.is_multi() && config.keys.env.is_none() && config.keys.file.is_none() {
        return Err(ServeError::State(crate::error::Error::FailedPrecondition(
            "every scheduler of a cluster needs the same master key: give each FERRY_MASTER_KEY or --master-key-file with the same key (see docs/deployment.md)".into(),
        )));
    }
    let secrets = SecretBox::load(&config.data_dir, &config.keys)?;
    // Sealed secrets, token hashes and logs: readable by this user only.
    ferry_common::secret::restrict(&config.data_dir).map_err(|source| ServeError::File {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let raft = cluster::start(&config, &store, &secrets, shutdown.clone()).await?;
    let ctx = Arc::new(Context {
        store,
        hub: Hub::new(clock.clone()),
        secrets,
        config,
        clock,
    });
    if !ctx.config.cluster.is_multi() {
        // A single scheduler elects itself at once; bootstrap before the address file appears,
        // so whoever waits for it finds the first token written. A cluster bootstraps when its
        // first leader is elected (see `cluster::watch_leadership`).
        if !cluster::await_leader(&raft, Duration::from_secs(30)).await {
            warn!("this single scheduler did not elect itself within 30 s; check the log above");
        }
        if let Some(token) =
            crate::auth::bootstrap(&ctx, ctx.config.bootstrap_token.as_deref()).await?
        {
            announce_first_token(&ctx.config, &token)?;
        }
    }
    if let (Some(path), Some(addr)) = (&ctx.config.addr_file, listener.local_addr().ok()) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, addr.to_string())
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|source| ServeError::File {
                path: path.display().to_string(),
                source,
            })?;
    }
    let tasks = TaskTracker::new();
    tasks.spawn(cluster::watch_leadership(ctx.clone(), shutdown.clone()));
    tasks.spawn(dispatch::run(ctx.clone(), shutdown.clone()));
    tasks.spawn(crate::alerts::run(ctx.clone(), shutdown.clone()));

    let addr = listener.local_addr().ok();
    let tls = tls_settings(&ctx.config, addr)?;
    info!(addr = ?addr, tls = tls.is_some(), data_dir = %ctx.config.data_dir.display(), "scheduler serving");
    let serve_shutdown = shutdown.clone();
    let hub_ctx = ctx.clone();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let result = builder
        // Agents sit behind NATs that drop idle flows: ping well inside common idle timeouts.
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        // `/metrics`, `/healthz`, `/readyz`, the REST API and the web console over HTTP/1.1
        // on the same address.
        .accept_http1(true)
        .add_routes(tonic::service::Routes::from(http_routes(ctx.clone())))
        // Agents' reports are bounded by the agent (log lines cut, batches capped), so the default
        // 4 MiB limit holds for them; a job file sent by an operator may be larger.
        .add_service(
            AgentServiceServer::new(AgentApi::new(ctx.clone(), shutdown.clone()))
                .max_encoding_message_size(MAX_ADMIN_MESSAGE)
                // Relay frames carry row batches (about 1 MiB, one large row alone more).
                .max_decoding_message_size(crate::relay::MAX_FRAME),
        )
        // No admin call reaches a handler without a valid API token, nor on a scheduler that
        // does not lead (the caller is sent to the leader).
        .add_service(InterceptedService::new(
            AdminServiceServer::new(AdminApi::new(ctx.clone()))
                .max_decoding_message_size(MAX_ADMIN_MESSAGE)
                .max_encoding_message_size(MAX_ADMIN_MESSAGE),
            Authenticator {
                ctx: ctx.clone(),
                leader_only: true,
            },
        ))
        .add_service(InterceptedService::new(
            ClusterServiceServer::new(ClusterApi::new(ctx.clone())),
            Authenticator {
                ctx: ctx.clone(),
                leader_only: false,
            },
        ))
        // Peers: raft messages, snapshots, forwarded proposals (checked against the cluster
        // token derived from the master key).
        .add_service(raft.service())
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            serve_shutdown.cancelled().await;
            // Ending the session streams lets graceful shutdown finish.
            hub_ctx.hub.close_all();
        })
        .await;
    tasks.close();
    tasks.wait().await;
    raft.stop();
    raft.stopped().await;
    ctx.store.flush().await?;
    info!("scheduler stopped");
    result.map_err(Into::into)
}

/// Everything served over plain HTTP beside gRPC: metrics and probes, the REST API, the console.
pub fn http_routes(ctx: Arc<Context>) -> axum::Router {
    crate::metrics::routes(ctx.clone())
        .merge(crate::rest::routes(ctx))
        .merge(crate::console::routes())
}
