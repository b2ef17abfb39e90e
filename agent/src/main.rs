//! `ferry-agent`: `install` into a resource group, `run` (the service: keep a session with the
//! scheduler and run what it sends), `uninstall`.

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use ferry_agent::executor::Executor;
use ferry_agent::identity::{self, IdentityError};
use ferry_agent::install::{self, InstallPlan};
use ferry_agent::session::{self, SessionConfig, SessionEnd};
use ferry_agent::spool::Spool;
use ferry_proto::tls::ClientTls;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Ferry's agent: runs sync jobs next to the data and dials out to the scheduler.
#[derive(Parser, Debug)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Without a subcommand: `run`.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the agent (what the systemd unit starts).
    Run(RunArgs),
    /// Register into a resource group, write settings and a systemd unit, and start it.
    Install(InstallArgs),
    /// Tell the scheduler to forget this agent, stop and remove the unit and settings.
    Uninstall(UninstallArgs),
}

#[derive(Args, Debug, Clone)]
struct Connection {
    /// Scheduler URL(s), comma separated, e.g. https://sched-1:7100,https://sched-2:7100.
    #[arg(long, env = "FERRY_SCHEDULER", value_delimiter = ',')]
    scheduler: Vec<String>,
    /// PEM file of the CA that signed the scheduler's certificate (for a private CA).
    #[arg(long, env = "FERRY_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Client certificate (PEM), when the scheduler requires one.
    #[arg(long, env = "FERRY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long, env = "FERRY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl Connection {
    fn tls(&self) -> ClientTls {
        ClientTls {
            ca_cert: self.ca_cert.clone(),
            client_cert: self.tls_cert.clone(),
            client_key: self.tls_key.clone(),
        }
    }

    fn schedulers(&self) -> anyhow::Result<Vec<String>> {
        if self.scheduler.is_empty() {
            bail!("say where the scheduler is: --scheduler URL (or FERRY_SCHEDULER)");
        }
        Ok(self.scheduler.clone())
    }
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    #[command(flatten)]
    conn: Connection,
    /// Resource group to join (first start only; `install` does this for you).
    #[arg(long, env = "FERRY_GROUP")]
    group: Option<String>,
    /// The group's registration token (first start only).
    #[arg(long, env = "FERRY_AGENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Where the agent keeps its identity and its spool of unsent reports.
    #[arg(
        long,
        env = "FERRY_AGENT_DATA_DIR",
        default_value = "./ferry-agent-data"
    )]
    data_dir: PathBuf,
    /// How many attempts may run at once.
    #[arg(long, env = "FERRY_AGENT_SLOTS", default_value_t = 4)]
    slots: u32,
    /// Labels tasks can ask for, k=v comma separated (zone=east,disk=ssd).
    #[arg(long, env = "FERRY_AGENT_LABELS", value_delimiter = ',')]
    labels: Vec<String>,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 3)]
    heartbeat_secs: u64,
    /// Milliseconds between progress reports of a running attempt.
    #[arg(long, default_value_t = 1000)]
    progress_ms: u64,
    /// Most disk the spool of unsent reports may use while the scheduler is unreachable; past
    /// it, new log lines are dropped (and counted), results never.
    #[arg(long, env = "FERRY_AGENT_SPOOL_MB", default_value_t = 512)]
    spool_max_mb: u64,
    /// Stop running attempts after this many seconds out of touch with the scheduler (default:
    /// three quarters of the scheduler's attempt lease).
    #[arg(long)]
    fence_after_secs: Option<u64>,
    /// Run shell tasks (of groups that allow them) as this agent's own user.
    #[arg(long, env = "FERRY_AGENT_SHELL")]
    shell: bool,
    /// Run shell tasks as this OS user instead (the agent must run as root).
    #[arg(long, env = "FERRY_AGENT_SHELL_USER")]
    shell_user: Option<String>,
    /// A folder jobs may read and write files in (repeatable). Given, every file path a job
    /// names (txtfile, SQLite; data source or not) must stay inside one; `..`, paths elsewhere
    /// and symbolic links leading out are refused.
    #[arg(
        long = "file-root",
        env = "FERRY_AGENT_FILE_ROOTS",
        value_delimiter = ','
    )]
    file_roots: Vec<PathBuf>,
}

#[derive(Args, Debug)]
struct InstallArgs {
    #[command(flatten)]
    conn: Connection,
    #[arg(long)]
    group: String,
    /// The group's registration token, from `ferry group create` (used once, not stored).
    #[arg(long, env = "FERRY_AGENT_TOKEN", hide_env_values = true)]
    token: String,
    #[arg(long, default_value_t = 4)]
    slots: u32,
    /// k=v labels, comma separated.
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    #[arg(long, default_value = "/var/lib/ferry-agent")]
    data_dir: PathBuf,
    /// The agent's settings file.
    #[arg(long, default_value = "/etc/ferry/agent.env")]
    config: PathBuf,
    /// Where the systemd unit goes.
    #[arg(long, default_value = "/etc/systemd/system")]
    unit_dir: PathBuf,
    /// The OS user the agent runs as (deploy/install-agent.sh creates `ferry`).
    #[arg(long, default_value = "ferry")]
    user: String,
    /// Write everything but do not start the unit.
    #[arg(long)]
    no_start: bool,
}

#[derive(Args, Debug)]
struct UninstallArgs {
    #[command(flatten)]
    conn: Connection,
    #[arg(long, default_value = "/var/lib/ferry-agent")]
    data_dir: PathBuf,
    #[arg(long, default_value = "/etc/ferry/agent.env")]
    config: PathBuf,
    #[arg(long, default_value = "/etc/systemd/system")]
    unit_dir: PathBuf,
    /// Also delete the data folder (identity and spool).
    #[arg(long)]
    purge: bool,
    /// Leave the agent registered on the scheduler (for example when it is unreachable).
    #[arg(long)]
    keep_registration: bool,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            None => run(cli.run).await,
            Some(Cmd::Run(args)) => run(args).await,
            Some(Cmd::Install(args)) => install_agent(args).await,
            Some(Cmd::Uninstall(args)) => uninstall_agent(args).await,
        }
    });
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn shutdown_on_signals() -> CancellationToken {
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
    shutdown
}

/// Holds the data folder for this process: two agents on one identity would fight over its
/// session and its spool. A second start (a restart while the old copy is still stopping)
/// waits for the first to exit.
async fn lock_data_dir(dir: &Path, shutdown: &CancellationToken) -> anyhow::Result<std::fs::File> {
    use std::io::Write;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("agent.lock");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut said = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                if !said {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    warn!(
                        "another ferry-agent (pid {}) uses {}; waiting for it to exit",
                        holder.trim(),
                        dir.display()
                    );
                    said = true;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => bail!("stopped while waiting for {}", path.display()),
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
    }
    file.set_len(0)?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}

async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let schedulers = args.conn.schedulers()?;
    let tls = args.conn.tls();
    let labels = install::parse_labels(&args.labels)?;
    let shutdown = shutdown_on_signals();
    let _lock = lock_data_dir(&args.data_dir, &shutdown).await?;
    // Its credential and spooled reports: readable by the agent's user only.
    ferry_common::secret::restrict(&args.data_dir)
        .with_context(|| format!("cannot restrict access to {}", args.data_dir.display()))?;
    let identity = match identity::load(&args.data_dir)? {
        Some(id) => {
            info!(agent = %id.agent_id, group = %id.group, "using saved identity");
            id
        }
        None => {
            let (Some(group), Some(token)) = (&args.group, &args.token) else {
                return Err(IdentityError::NoToken.into());
            };
            let host =
                identity::host_facts(args.slots, &labels, schedulers.first().map(String::as_str));
            let id = register_with_retry(&schedulers, &tls, group, token, host, &shutdown).await?;
            identity::save(&args.data_dir, &id)?;
            info!(agent = %id.agent_id, group = %id.group, "registered");
            id
        }
    };
    let boot_id = uuid::Uuid::new_v4().to_string();
    let spool = Arc::new(Spool::open(
        &args.data_dir,
        &identity.agent_id,
        args.spool_max_mb.max(1) << 20,
    )?);
    let file_roots =
        ferry_agent::files::agent_roots(&args.file_roots).map_err(anyhow::Error::msg)?;
    if !file_roots.is_empty() {
        info!(roots = ?file_roots, "jobs confined to file roots");
    }
    let shell = ferry_agent::shell::ShellConfig {
        enabled: args.shell || args.shell_user.is_some(),
        run_as: args.shell_user.clone(),
        work_dir: args.data_dir.join("shell"),
    };
    let executor = Arc::new(
        Executor::new(
            args.slots,
            spool.clone(),
            boot_id.clone(),
            Duration::from_millis(args.progress_ms.max(100)),
        )
        .with_shell(shell)
        .with_file_roots(file_roots)
        .with_relay(ferry_agent::session::RelayDialer::new(
            identity.clone(),
            tls.clone(),
        )),
    );
    executor.report_orphans().await?;
    let cfg = SessionConfig {
        schedulers,
        heartbeat: Duration::from_secs(args.heartbeat_secs.max(1)),
        boot_id,
        labels,
        fence_after: args.fence_after_secs.map(Duration::from_secs),
        tls,
    };
    let session_stop = CancellationToken::new();
    let mut session = tokio::spawn(session::run(
        cfg,
        identity,
        executor.clone(),
        spool.clone(),
        session_stop.clone(),
    ));
    let end = tokio::select! {
        _ = shutdown.cancelled() => None,
        end = &mut session => Some(end.unwrap_or(SessionEnd::Shutdown)),
    };
    let code = match &end {
        Some(SessionEnd::Refused(msg)) => {
            error!("the scheduler refuses this agent: {msg}");
            executor.kill_all(&format!("the scheduler refused this agent: {msg}"));
            3
        }
        Some(SessionEnd::Superseded(msg)) => {
            error!("{msg}");
            executor.kill_all("another process of this agent took over its session");
            3
        }
        _ => {
            info!(
                running = executor.running_count(),
                "stopping: killing running attempts and reporting them"
            );
            executor.kill_all("the agent is stopping (SIGTERM)");
            0
        }
    };
    // Give the session a moment to deliver the killed attempts' final reports; what is not
    // delivered stays in the spool for the next start.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while executor.running_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if end.is_none() {
        while spool.pending() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        session_stop.cancel();
        let _ = session.await;
    }
    spool.flush().await?;
    info!("agent stopped");
    Ok(code)
}

async fn register_with_retry(
    urls: &[String],
    tls: &ClientTls,
    group: &str,
    token: &str,
    host: ferry_proto::agent::v1::HostFacts,
    shutdown: &CancellationToken,
) -> anyhow::Result<identity::Identity> {
    let mut failures = 0u32;
    loop {
        let url = &urls[failures as usize % urls.len()];
        let result = match session::connect(url, tls).await {
            Ok(ch) => identity::register(ch, url, group, token, host.clone()).await,
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
            _ = shutdown.cancelled() => bail!("stopped before registration"),
            _ = tokio::time::sleep(session::backoff(failures)) => {}
        }
    }
}

async fn install_agent(args: InstallArgs) -> anyhow::Result<u8> {
    let schedulers = args.conn.schedulers()?;
    let tls = args.conn.tls();
    let labels = install::parse_labels(&args.labels)?;
    if identity::load(&args.data_dir)?.is_some() {
        bail!(
            "{} already holds a registered agent; run `ferry-agent uninstall` first (or pick another --data-dir)",
            args.data_dir.display()
        );
    }
    let url = &schedulers[0];
    let channel = session::connect(url, &tls)
        .await
        .map_err(|m| anyhow::anyhow!("{m}; check --scheduler and that the scheduler is up"))?;
    let host = identity::host_facts(args.slots, &labels, Some(url));
    let id = identity::register(channel, url, &args.group, &args.token, host)
        .await
        .context("registration failed")?;
    identity::save(&args.data_dir, &id)?;
    println!(
        "registered as agent {} in resource group {}",
        id.agent_id, id.group
    );
    let binary = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .context("cannot tell where this ferry-agent binary is")?;
    let user = if args.user != "root" && !user_exists(&args.user) {
        println!(
            "user {} does not exist; the agent will run as root (deploy/install-agent.sh creates a `ferry` user)",
            args.user
        );
        "root".to_string()
    } else {
        args.user.clone()
    };
    let plan = InstallPlan {
        schedulers,
        data_dir: std::path::absolute(&args.data_dir)?,
        slots: args.slots,
        labels,
        env_file: args.config.clone(),
        unit_dir: args.unit_dir.clone(),
        user,
        binary,
        ca_cert: args.conn.ca_cert.clone(),
        tls_cert: args.conn.tls_cert.clone(),
        tls_key: args.conn.tls_key.clone(),
    };
    plan.write()?;
    println!("wrote {}", plan.env_file.display());
    println!("wrote {}", plan.unit_path().display());
    if args.no_start {
        println!("not started (--no-start); start it with: systemctl enable --now ferry-agent");
    } else if install::has_systemd() {
        install::start_unit()?;
        println!(
            "started ferry-agent.service; `ferry group list` shows it online in a few seconds"
        );
    } else {
        println!(
            "systemd is not running here; start the agent with: {} run --data-dir {}  (settings in {})",
            plan.binary.display(),
            plan.data_dir.display(),
            plan.env_file.display()
        );
    }
    Ok(0)
}

fn user_exists(name: &str) -> bool {
    std::fs::read_to_string("/etc/passwd")
        .map(|p| p.lines().any(|l| l.split(':').next() == Some(name)))
        .unwrap_or(false)
}

async fn uninstall_agent(args: UninstallArgs) -> anyhow::Result<u8> {
    let mut code = 0;
    if !args.keep_registration {
        match identity::load(&args.data_dir)? {
            Some(id) => {
                let schedulers = args.conn.schedulers()?;
                match identity::deregister(&schedulers, &args.conn.tls(), &id).await {
                    Ok(()) => println!("the scheduler forgot agent {}", id.agent_id),
                    Err(e) => {
                        eprintln!(
                            "could not tell the scheduler ({e}); revoke the agent there with `ferry agent revoke {}`",
                            id.agent_id
                        );
                        code = 2;
                    }
                }
            }
            None => println!("no registered agent in {}", args.data_dir.display()),
        }
    }
    for line in install::remove(&args.unit_dir, &args.config)? {
        println!("{line}");
    }
    if args.purge {
        match std::fs::remove_dir_all(&args.data_dir) {
            Ok(()) => println!("removed {}", args.data_dir.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot remove {}", args.data_dir.display()));
            }
        }
    }
    Ok(code)
}
