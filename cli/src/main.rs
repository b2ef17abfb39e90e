//! `ferry`: the command-line client of the scheduler's admin API, and `ferry quickstart`.

mod agents;
mod client;
mod commands;
mod follow;
mod format;
mod quickstart;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Ferry: schedule and run data syncs next to your data.
#[derive(Parser, Debug)]
#[command(version, propagate_version = true)]
struct Cli {
    /// Scheduler URL(s), comma separated; the first that answers is used.
    #[arg(
        long,
        global = true,
        env = "FERRY_SCHEDULER",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7100"
    )]
    scheduler: Vec<String>,
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
    /// Resource groups and their agents.
    #[command(subcommand)]
    Group(commands::GroupCmd),
    /// Agents: list, drain, resume, revoke.
    #[command(subcommand)]
    Agent(commands::AgentCmd),
    /// Data sources in the catalog.
    #[command(subcommand, alias = "ds")]
    Datasource(commands::DatasourceCmd),
    /// Sync tasks: create from a job file, run, read logs.
    #[command(subcommand)]
    Task(commands::TaskCmd),
    /// Instances (runs of tasks).
    #[command(subcommand)]
    Instance(commands::InstanceCmd),
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
        other => {
            let tls = ferry_proto::tls::ClientTls {
                ca_cert: cli.ca_cert,
                client_cert: cli.tls_cert,
                client_key: cli.tls_key,
            };
            commands::run(&cli.scheduler, &tls, other).await
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
