//! `ferry task …`: submit versions (job or script, schedule, dependencies, parameters,
//! policies), list and show them, freeze them, run one now.

use crate::client::{Admin, status};
use crate::follow::follow;
use crate::format::{Output, table, time};
use crate::json;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ferry_proto::admin::v1 as pb;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum TaskCmd {
    /// Submit a task, or a new version of it: an immutable version its instances pin.
    #[command(alias = "submit")]
    Create(Box<Submit>),
    /// Print a complete job file for a reader and a writer, with every parameter both take
    /// (`ferry task template --reader mysql --writer postgresql > job.json`).
    Template {
        #[arg(long)]
        reader: String,
        #[arg(long)]
        writer: String,
    },
    /// List tasks.
    List,
    /// Show a task's latest version.
    Show {
        name: String,
    },
    /// Run a task for a business date now (joins a run of that date already waiting or running).
    Run {
        name: String,
        /// Business date, yyyymmdd or yyyy-mm-dd (default: yesterday).
        #[arg(long)]
        bizdate: Option<String>,
        /// Show live progress and the log until the run ends.
        #[arg(long)]
        follow: bool,
    },
    /// Print the log of the task's latest instance.
    Logs {
        name: String,
    },
    /// Hold the task: its waiting instances and the ones generated later are frozen.
    Freeze {
        name: String,
    },
    Unfreeze {
        name: String,
    },
}

/// What a submit says.
#[derive(Args, Debug)]
pub struct Submit {
    name: String,
    /// The resource group that runs the task (of a two-group sync: the reader's).
    #[arg(long)]
    group: String,
    /// A sync whose target only another private network reaches: the writer runs on an agent
    /// of this group, the reader on one of --group, and rows flow through the scheduler's relay,
    /// which both agents dial out to.
    #[arg(long)]
    writer_group: Option<String>,
    /// The job file (DataX job JSON) of a sync task, or the script of a shell task.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    file: Option<PathBuf>,
    /// Wizard mode: the source as datasource.table; the job is written from the two tables'
    /// columns, read through an agent of the group.
    #[arg(long, requires = "to")]
    from: Option<String>,
    /// Wizard mode: the target as datasource.table.
    #[arg(long, requires = "from")]
    to: Option<String>,
    /// Wizard: the columns to copy (`a,b` or `src:dst` pairs); default every shared name.
    #[arg(long, value_delimiter = ',', requires = "from")]
    columns: Vec<String>,
    /// Wizard: a filter on the source (`day = '${bizdate}'`).
    #[arg(long = "where", requires = "from")]
    where_clause: Option<String>,
    /// Wizard: insert | replace | update.
    #[arg(long, requires = "from")]
    write_mode: Option<String>,
    /// Wizard: concurrent channels (split on the source's integer primary key).
    #[arg(long, requires = "from")]
    channels: Option<u32>,
    /// Wizard: a statement run on the target before writing (repeatable).
    #[arg(long = "pre-sql", requires = "from")]
    pre_sql: Vec<String>,
    /// Wizard: print the job file it would submit ("show as script") and submit nothing.
    #[arg(long, requires = "from")]
    show_script: bool,
    /// sync | shell | virtual
    #[arg(long = "type", default_value = "sync")]
    kind: String,
    /// A schedule: 5-field crontab (`30 2 * * *`, 0 and 7 = Sunday) or the 6/7-field form with
    /// seconds DataWorks shows (`00 30 02 * * ?`). Without it the task runs only by hand.
    #[arg(long)]
    cron: Option<String>,
    /// IANA time zone of the schedule.
    #[arg(long, default_value = "UTC")]
    timezone: String,
    /// Upstream tasks of the same cycle (comma separated or repeated).
    #[arg(long, value_delimiter = ',')]
    after: Vec<String>,
    /// Tasks whose previous cycle must have succeeded (the task's own name: itself).
    #[arg(long, value_delimiter = ',')]
    after_previous: Vec<String>,
    /// User parameters, `name=expression …` (`dt=$[yyyymmdd-1] region=cn`).
    #[arg(long, default_value = "")]
    params: String,
    /// Higher runs first when agents are short.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    priority: i32,
    /// Kill an attempt running longer, e.g. 30m, 2h.
    #[arg(long)]
    timeout: Option<String>,
    /// Automatic retries after a failure.
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Wait before each retry, e.g. 5m.
    #[arg(long, default_value = "0s")]
    retry_interval: String,
    /// Who may rerun: always | only_after_failure | never.
    #[arg(long, default_value = "always")]
    rerun: String,
    #[arg(long)]
    start_date: Option<String>,
    #[arg(long)]
    end_date: Option<String>,
    /// Also make today's remaining cycles now (otherwise instances start tomorrow).
    #[arg(long)]
    generate_now: bool,
    /// Run only on agents carrying these labels (k=v, repeatable or comma separated).
    #[arg(long = "agent-label", value_delimiter = ',', value_parser = crate::commands::parse_kv)]
    agent_labels: Vec<(String, String)>,
}

/// Wizard mode: the scheduler reads both tables' columns through the group's agents, maps
/// them and writes the job file (the same logic as the console's form); the mapping and what
/// it left out go to stderr.
async fn wizard(admin: &mut Admin, s: &Submit, from: &str, to: &str) -> anyhow::Result<String> {
    let r = admin
        .wizard_script(pb::WizardScriptRequest {
            group: s.group.clone(),
            from: from.to_string(),
            to: to.to_string(),
            columns: s.columns.clone(),
            where_clause: s.where_clause.clone().unwrap_or_default(),
            write_mode: s.write_mode.clone().unwrap_or_default(),
            channels: s.channels.unwrap_or(0),
            pre_sql: s.pre_sql.clone(),
            writer_group: s.writer_group.clone().unwrap_or_default(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let pairs: Vec<String> = r
        .mapping
        .iter()
        .map(|m| {
            if m.source == m.target {
                m.source.clone()
            } else {
                format!("{} -> {}", m.source, m.target)
            }
        })
        .collect();
    eprintln!("columns: {}", pairs.join(", "));
    if !r.source_only.is_empty() {
        eprintln!(
            "not copied (no such target column): {}",
            r.source_only.join(", ")
        );
    }
    if !r.target_only.is_empty() {
        eprintln!("left to their defaults: {}", r.target_only.join(", "));
    }
    Ok(r.job_json)
}

/// `90d` / `12h` / `30m` / `45s` -> seconds.
pub fn secs(text: &str) -> anyhow::Result<u64> {
    crate::access::duration_secs(text)
}

fn print_task(t: &pb::TaskInfo) {
    println!(
        "task {} v{} ({}) in group {}",
        t.name, t.version, t.kind, t.group
    );
    if !t.writer_group.is_empty() {
        println!(
            "two groups: reader on group {}, writer on group {}, rows through the scheduler's relay",
            t.group, t.writer_group
        );
    }
    if t.cron.is_empty() {
        println!("schedule: manual only");
    } else {
        println!(
            "schedule: {} ({}); generated from {}",
            t.cron,
            t.timezone,
            if t.first_day.is_empty() {
                "-"
            } else {
                &t.first_day
            }
        );
    }
    let deps: Vec<String> = t
        .dependencies
        .iter()
        .map(|d| {
            if d.previous {
                format!("{} (previous cycle)", d.upstream)
            } else {
                d.upstream.clone()
            }
        })
        .collect();
    if !deps.is_empty() {
        println!("after: {}", deps.join(", "));
    }
    if !t.params.is_empty() {
        println!("params: {}", t.params);
    }
    println!(
        "priority {}, timeout {}, retries {} every {}s, rerun {}{}",
        t.priority,
        if t.timeout_secs == 0 {
            "none".to_string()
        } else {
            format!("{}s", t.timeout_secs)
        },
        t.retries,
        t.retry_interval_secs,
        t.rerun,
        if t.frozen { ", FROZEN" } else { "" }
    );
}

/// Prints the job template on stdout and the alternatives it did not choose on stderr, so
/// `ferry task template ... > job.json` writes a file that parses as it is.
pub fn template(reader: &str, writer: &str) -> anyhow::Result<i32> {
    use ferry_common::job::template;
    let job = template::template(reader, writer)?;
    println!("{}", serde_json::to_string_pretty(&job)?);
    for alt in template::alternatives(reader, writer)? {
        eprintln!("# or {alt}");
    }
    Ok(0)
}

pub async fn run(admin: &mut Admin, out: Output, cmd: TaskCmd) -> anyhow::Result<i32> {
    match cmd {
        TaskCmd::Template { reader, writer } => {
            template(&reader, &writer)?;
        }
        TaskCmd::Create(s) => {
            let job_json = match (&s.file, &s.from, &s.to) {
                (Some(f), _, _) => std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read job file {}", f.display()))?,
                (None, Some(from), Some(to)) => {
                    let job = wizard(admin, &s, from, to).await?;
                    if s.show_script {
                        println!("{job}");
                        return Ok(0);
                    }
                    job
                }
                _ if s.kind == "virtual" => String::new(),
                _ => bail!(
                    "give the job file (or the script of a shell task) with --file, or the tables with --from ds.table --to ds.table"
                ),
            };
            let mut dependencies: Vec<pb::Dependency> = s
                .after
                .iter()
                .map(|u| pb::Dependency {
                    upstream: u.clone(),
                    previous: false,
                })
                .collect();
            dependencies.extend(s.after_previous.iter().map(|u| pb::Dependency {
                upstream: u.clone(),
                previous: true,
            }));
            let t = admin
                .create_task(pb::CreateTaskRequest {
                    name: s.name,
                    group: s.group,
                    job_json,
                    agent_labels: s.agent_labels.into_iter().collect(),
                    kind: s.kind,
                    cron: s.cron.unwrap_or_default(),
                    timezone: s.timezone,
                    start_date: s.start_date.unwrap_or_default(),
                    end_date: s.end_date.unwrap_or_default(),
                    priority: s.priority,
                    timeout_secs: s.timeout.as_deref().map(secs).transpose()?.unwrap_or(0),
                    dependencies,
                    params: s.params,
                    rerun: s.rerun,
                    retries: s.retries,
                    retry_interval_secs: secs(&s.retry_interval)?,
                    generate_now: s.generate_now,
                    writer_group: s.writer_group.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                println!("{}", json::task(&t));
            } else {
                if t.writer_group.is_empty() {
                    println!(
                        "task {} saved as version {} (group {})",
                        t.name, t.version, t.group
                    );
                } else {
                    println!(
                        "task {} saved as version {} (reader group {}, writer group {})",
                        t.name, t.version, t.group, t.writer_group
                    );
                }
                if t.generated_now > 0 {
                    println!("{} instances of today generated now", t.generated_now);
                }
            }
        }
        TaskCmd::List => {
            let r = admin
                .list_tasks(pb::ListTasksRequest {})
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                println!("{}", json::list(r.tasks.iter().map(json::task)));
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = r
                .tasks
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        t.kind.clone(),
                        t.group.clone(),
                        t.version.to_string(),
                        if t.cron.is_empty() {
                            "manual".into()
                        } else {
                            format!("{} {}", t.cron, t.timezone)
                        },
                        if t.frozen { "frozen" } else { "" }.into(),
                        time(t.updated_ms),
                    ]
                })
                .collect();
            table(
                &[
                    "TASK", "TYPE", "GROUP", "VERSION", "SCHEDULE", "", "UPDATED",
                ],
                &rows,
            );
        }
        TaskCmd::Show { name } => {
            let t = admin
                .get_task(pb::GetTaskRequest { name })
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                println!("{}", json::task(&t));
            } else {
                print_task(&t);
            }
        }
        TaskCmd::Run {
            name,
            bizdate,
            follow: follow_it,
        } => {
            let i = admin
                .run_task(pb::RunTaskRequest {
                    name,
                    bizdate: bizdate.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            if i.joined {
                println!(
                    "instance {} of task {} (bizdate {}) is already {}; joined it instead of starting a second run",
                    i.id, i.task, i.bizdate, i.state
                );
            } else {
                println!(
                    "instance {} of task {} (bizdate {}) created",
                    i.id, i.task, i.bizdate
                );
            }
            if follow_it {
                let done = follow(admin, &i.id).await?;
                return Ok(if done.state == "success" { 0 } else { 1 });
            }
        }
        TaskCmd::Logs { name } => {
            let r = admin
                .get_logs(pb::GetLogsRequest {
                    task: name,
                    ..Default::default()
                })
                .await
                .map_err(status)?
                .into_inner();
            crate::instances::print_logs(&r);
        }
        TaskCmd::Freeze { name } => {
            let t = admin
                .freeze_task(pb::FreezeTaskRequest { name, freeze: true })
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "task {} frozen: its waiting instances and new ones wait",
                t.name
            );
        }
        TaskCmd::Unfreeze { name } => {
            let t = admin
                .freeze_task(pb::FreezeTaskRequest {
                    name,
                    freeze: false,
                })
                .await
                .map_err(status)?
                .into_inner();
            println!("task {} unfrozen", t.name);
        }
    }
    Ok(0)
}
