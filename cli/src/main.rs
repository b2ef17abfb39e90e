//! `ferry`: the command-line client of the scheduler's admin API, and `ferry quickstart`.

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
    /// Scheduler URL.
    #[arg(
        long,
        global = true,
        env = "FERRY_SCHEDULER",
        default_value = "http://127.0.0.1:7100"
    )]
    scheduler: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Resource groups and their agents.
    #[command(subcommand)]
    Group(commands::GroupCmd),
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
        other => commands::run(&cli.scheduler, other).await,
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
