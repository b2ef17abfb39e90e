//! `ferry`: the command-line client of the scheduler's admin API, and `ferry quickstart`.

mod access;
mod agents;
mod alerts;
mod client;
mod cluster;
mod commands;
mod follow;
mod format;
mod instances;
mod json;
mod quickstart;
mod tasks;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Ferry: schedule and run data syncs next to your data.
#[derive(Parser, Debug)]
#[command(version, propagate_version = true)]
struct Cli {
    /// Scheduler URL(s), comma separated; the first that answers is used (default: the ones
    /// `ferry login` saved, else http://127.0.0.1:7100).
    #[arg(long, global = true, env = "FERRY_SCHEDULER", value_delimiter = ',')]
    scheduler: Vec<String>,
    /// The workspace to act in (default: the one `ferry login` saved, else "default").
    #[arg(long, global = true, env = "FERRY_WORKSPACE")]
    workspace: Option<String>,
    /// How list and show commands print: text for people, json for scripts.
    #[arg(long, global = true, value_enum, default_value = "text")]
    output: format::Output,
    /// PEM file of the CA that signed the scheduler's certificate (for a private CA).
    #[arg(long, global = true, env = "FERRY_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Client certificate and key (PEM), when the scheduler requires one.
    #[arg(long, global = true, env = "FERRY_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    #[arg(long, global = true, env = "FERRY_TLS_KEY")]
    tls_key: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Check an API token and save it (with the scheduler address) for later commands.
    Login {
        /// The token; prefer --token-stdin, which keeps it out of the process list.
        #[arg(long, conflicts_with = "token_stdin")]
        token: Option<String>,
        #[arg(long)]
        token_stdin: bool,
    },
    /// Forget the saved token.
    Logout,
    /// Who the token belongs to and its roles.
    Whoami,
    /// Users and their roles in the workspace.
    #[command(subcommand)]
    User(access::UserCmd),
    /// API tokens.
    #[command(subcommand)]
    Token(access::TokenCmd),
    /// Workspaces.
    #[command(subcommand)]
    Workspace(access::WorkspaceCmd),
    /// Stored secrets: `reseal` re-encrypts them all under the current master key (rotation).
    #[command(subcommand)]
    Secrets(access::SecretsCmd),
    /// Changes made through the API (and refused attempts): who, what, when, from where.
    Audit {
        /// Only the last period, e.g. 24h or 7d.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 200)]
        limit: u32,
    },
    /// Resource groups and their agents.
    #[command(subcommand)]
    Group(commands::GroupCmd),
    /// Agents: list, drain, resume, revoke.
    #[command(subcommand)]
    Agent(commands::AgentCmd),
    /// Webhook alerts on failures, timeouts and missed baselines; the record of deliveries.
    #[command(subcommand)]
    Alert(alerts::AlertCmd),
    /// Data sources in the catalog.
    #[command(subcommand, alias = "ds")]
    Datasource(commands::DatasourceCmd),
    /// Tasks (the DAG's nodes): submit with a schedule, run, freeze, read logs.
    #[command(subcommand)]
    Task(tasks::TaskCmd),
    /// Instances (runs of tasks): list, show, logs, rerun, kill, freeze, mark success.
    #[command(subcommand)]
    Instance(instances::InstanceCmd),
    /// The DAG around an instance, or a task's instances of a business date, a few hops up and
    /// down: a text tree, or Graphviz with --dot.
    Dag(instances::DagArgs),
    /// Run a task (and optionally its downstream) for a range of business dates, in order.
    Backfill {
        task: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        downstream: bool,
        /// Days run at once.
        #[arg(long, default_value_t = 1)]
        parallelism: u32,
    },
    /// The schedulers replicating the state: status, add, remove.
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
    /// Start a local scheduler and agent, and run a bundled sample sync end to end.
    Quickstart {
        /// Folder for the scheduler's and agent's data, the sample and the target.
        #[arg(long, default_value = "./ferry-quickstart")]
        workdir: PathBuf,
        /// Rows in the sample source.
        #[arg(long, default_value_t = 200_000)]
        rows: u64,
        /// Keep the scheduler and agent running until Ctrl-C.
        #[arg(long)]
        keep_running: bool,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Quickstart {
            workdir,
            rows,
            keep_running,
        } => quickstart::run(&workdir, rows, keep_running).await,
        Command::Logout => access::logout(),
        other => {
            let tls = ferry_proto::tls::ClientTls {
                ca_cert: cli.ca_cert,
                client_cert: cli.tls_cert,
                client_key: cli.tls_key,
            };
            let saved = client::load_credentials();
            let schedulers = if !cli.scheduler.is_empty() {
                cli.scheduler
            } else if let Some(c) = saved.as_ref().filter(|c| !c.schedulers.is_empty()) {
                c.schedulers.clone()
            } else {
                vec!["http://127.0.0.1:7100".to_string()]
            };
            let workspace = cli
                .workspace
                .or_else(|| saved.as_ref().and_then(|c| c.workspace.clone()));
            commands::run(&schedulers, &tls, workspace, saved, cli.output, other).await
        }
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

use Command as TopCommand;
