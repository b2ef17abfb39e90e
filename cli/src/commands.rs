//! The admin subcommands: each builds one request, sends it, and prints the answer for people.

use crate::TopCommand;
use crate::client::{Admin, connect, status};
use crate::follow::{follow, print_summary};
use crate::format::{instance_state, table, thousands, time};
use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use ferry_proto::admin::v1 as pb;
use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    /// Create a resource group; prints its registration token and the agent install command.
    Create { name: String },
    /// Replace a group's registration token (agents already registered keep working).
    RotateToken { name: String },
    /// List groups with their agents.
    List,
}

#[derive(Subcommand, Debug)]
pub enum DatasourceCmd {
    /// Add (or replace) a data source.
    Add(AddDatasource),
    /// List data sources.
    List,
    /// Show one data source (secrets are never shown).
    Show { name: String },
    /// Remove a data source no task uses.
    Remove { name: String },
    /// Ask every online agent of a group to reach the data source.
    Test {
        name: String,
        #[arg(long)]
        group: String,
        /// Seconds to wait for agents.
        #[arg(long, default_value_t = 15)]
        timeout: u64,
    },
}

#[derive(Args, Debug)]
pub struct AddDatasource {
    name: String,
    /// mysql | postgresql | sqlite | csv | stream
    #[arg(long = "type")]
    kind: String,
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    port: Option<u16>,
    #[arg(long)]
    database: Option<String>,
    #[arg(long, alias = "username")]
    user: Option<String>,
    /// File (sqlite) or folder (csv).
    #[arg(long)]
    path: Option<PathBuf>,
    /// Any other field, as key=value.
    #[arg(long = "field", value_parser = parse_kv)]
    fields: Vec<(String, String)>,
    /// Read the password from standard input.
    #[arg(long, conflicts_with = "password_env")]
    password_stdin: bool,
    /// Read the password from this environment variable.
    #[arg(long)]
    password_env: Option<String>,
    /// Restrict use to these resource groups.
    #[arg(long = "group")]
    groups: Vec<String>,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("\"{s}\" is not key=value"))
}

#[derive(Subcommand, Debug)]
pub enum TaskCmd {
    /// Create a task (or a new version of it) from a job file (DataX job JSON).
    Create {
        name: String,
        #[arg(long)]
        group: String,
        #[arg(long)]
        file: PathBuf,
    },
    /// List tasks.
    List,
    /// Run a task now.
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
    Logs { name: String },
}

#[derive(Subcommand, Debug)]
pub enum InstanceCmd {
    /// List instances, newest last.
    List {
        #[arg(long)]
        task: Option<String>,
    },
    /// Show an instance and its attempts.
    Show { id: String },
    /// Print an instance's log.
    Logs { id: String },
    /// Follow a running instance.
    Follow { id: String },
}

/// Runs one admin command; returns the process exit code.
pub async fn run(url: &str, cmd: TopCommand) -> anyhow::Result<i32> {
    let mut admin = connect(url).await?;
    match cmd {
        TopCommand::Group(c) => group(&mut admin, c).await,
        TopCommand::Datasource(c) => datasource(&mut admin, c).await,
        TopCommand::Task(c) => task(&mut admin, c).await,
        TopCommand::Instance(c) => instance(&mut admin, c).await,
        TopCommand::Quickstart { .. } => bail!("quickstart does not talk to an existing scheduler"),
    }
}

async fn group(admin: &mut Admin, cmd: GroupCmd) -> anyhow::Result<i32> {
    match cmd {
        GroupCmd::Create { name } => {
            let r = admin
                .create_group(pb::CreateGroupRequest { name })
                .await
                .map_err(status)?
                .into_inner();
            print_token(&r);
        }
        GroupCmd::RotateToken { name } => {
            let r = admin
                .rotate_group_token(pb::RotateGroupTokenRequest { name })
                .await
                .map_err(status)?
                .into_inner();
            print_token(&r);
        }
        GroupCmd::List => {
            let r = admin
                .list_groups(pb::ListGroupsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let mut rows = Vec::new();
            for g in &r.groups {
                if g.agents.is_empty() {
                    rows.push(vec![
                        g.name.clone(),
                        "-".into(),
                        "".into(),
                        "".into(),
                        "".into(),
                        "".into(),
                        "no agents".into(),
                    ]);
                }
                for a in &g.agents {
                    rows.push(vec![
                        g.name.clone(),
                        a.id.clone(),
                        a.hostname.clone(),
                        a.version.clone(),
                        format!("{}/{}", a.running, a.slots),
                        time(a.last_heartbeat_ms),
                        a.state.clone(),
                    ]);
                }
            }
            table(
                &[
                    "GROUP",
                    "AGENT",
                    "HOST",
                    "VERSION",
                    "RUNNING/SLOTS",
                    "LAST HEARTBEAT",
                    "STATE",
                ],
                &rows,
            );
        }
    }
    Ok(0)
}

fn print_token(r: &pb::CreateGroupResponse) {
    println!("resource group {}", r.name);
    println!("registration token (shown once): {}", r.registration_token);
    println!("install an agent on a server of this group with:");
    println!("  {}", r.install_command);
}

fn print_datasource(d: &pb::DataSourceInfo) {
    println!("name:    {}", d.name);
    println!("type:    {}", d.r#type);
    let mut fields: Vec<_> = d.fields.iter().collect();
    fields.sort();
    for (k, v) in fields {
        println!("{:<8} {v}", format!("{k}:"));
    }
    for s in &d.secret_fields {
        println!("{:<8} ******** (stored encrypted)", format!("{s}:"));
    }
    if !d.groups.is_empty() {
        println!("groups:  {}", d.groups.join(", "));
    }
}

async fn datasource(admin: &mut Admin, cmd: DatasourceCmd) -> anyhow::Result<i32> {
    match cmd {
        DatasourceCmd::Add(a) => {
            let mut fields: HashMap<String, String> = a.fields.into_iter().collect();
            let mut put = |k: &str, v: Option<String>| {
                if let Some(v) = v {
                    fields.insert(k.to_string(), v);
                }
            };
            put("host", a.host);
            put("port", a.port.map(|p| p.to_string()));
            put("database", a.database);
            put("username", a.user);
            put(
                "path",
                a.path.map(|p| {
                    std::path::absolute(&p)
                        .unwrap_or(p)
                        .to_string_lossy()
                        .into_owned()
                }),
            );
            let mut secrets = HashMap::new();
            if a.password_stdin {
                let mut pw = String::new();
                std::io::stdin()
                    .read_to_string(&mut pw)
                    .context("cannot read the password from standard input")?;
                secrets.insert(
                    "password".to_string(),
                    pw.trim_end_matches(['\n', '\r']).to_string(),
                );
            } else if let Some(var) = a.password_env {
                let pw = std::env::var(&var)
                    .map_err(|_| anyhow!("environment variable {var} is not set"))?;
                secrets.insert("password".to_string(), pw);
            }
            let d = admin
                .add_data_source(pb::AddDataSourceRequest {
                    name: a.name,
                    r#type: a.kind,
                    fields,
                    secrets,
                    groups: a.groups,
                })
                .await
                .map_err(status)?
                .into_inner();
            println!("data source {} saved", d.name);
            print_datasource(&d);
        }
        DatasourceCmd::List => {
            let r = admin
                .list_data_sources(pb::ListDataSourcesRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let rows: Vec<Vec<String>> = r
                .datasources
                .iter()
                .map(|d| {
                    let mut f: Vec<_> = d.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    f.sort();
                    vec![
                        d.name.clone(),
                        d.r#type.clone(),
                        f.join(" "),
                        time(d.updated_ms),
                    ]
                })
                .collect();
            table(&["NAME", "TYPE", "FIELDS", "UPDATED"], &rows);
        }
        DatasourceCmd::Show { name } => {
            let d = admin
                .get_data_source(pb::GetDataSourceRequest { name })
                .await
                .map_err(status)?
                .into_inner();
            print_datasource(&d);
        }
        DatasourceCmd::Remove { name } => {
            admin
                .remove_data_source(pb::RemoveDataSourceRequest { name: name.clone() })
                .await
                .map_err(status)?;
            println!("data source {name} removed");
        }
        DatasourceCmd::Test {
            name,
            group,
            timeout,
        } => {
            let r = admin
                .test_data_source(pb::TestDataSourceRequest {
                    name: name.clone(),
                    group,
                    timeout_ms: timeout * 1000,
                })
                .await
                .map_err(status)?
                .into_inner();
            let rows: Vec<Vec<String>> = r
                .reports
                .iter()
                .map(|x| {
                    vec![
                        x.agent_id.clone(),
                        x.hostname.clone(),
                        if x.reachable {
                            "reachable"
                        } else {
                            "UNREACHABLE"
                        }
                        .into(),
                        format!("{} ms", x.latency_ms),
                        x.error_kind.clone(),
                        x.message.clone(),
                    ]
                })
                .collect();
            table(
                &["AGENT", "HOST", "RESULT", "LATENCY", "ERROR", "DETAIL"],
                &rows,
            );
            if r.reports.iter().any(|x| !x.reachable) {
                return Ok(2);
            }
        }
    }
    Ok(0)
}

async fn task(admin: &mut Admin, cmd: TaskCmd) -> anyhow::Result<i32> {
    match cmd {
        TaskCmd::Create { name, group, file } => {
            let job_json = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read job file {}", file.display()))?;
            let t = admin
                .create_task(pb::CreateTaskRequest {
                    name,
                    group,
                    job_json,
                })
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "task {} saved as version {} (group {})",
                t.name, t.version, t.group
            );
        }
        TaskCmd::List => {
            let r = admin
                .list_tasks(pb::ListTasksRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let rows: Vec<Vec<String>> = r
                .tasks
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        t.group.clone(),
                        t.version.to_string(),
                        time(t.updated_ms),
                    ]
                })
                .collect();
            table(&["TASK", "GROUP", "VERSION", "UPDATED"], &rows);
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
            println!(
                "instance {} of task {} (bizdate {}) created",
                i.id, i.task, i.bizdate
            );
            if follow_it {
                let done = follow(admin, &i.id).await?;
                return Ok(if done.state == "success" { 0 } else { 1 });
            }
        }
        TaskCmd::Logs { name } => {
            let r = admin
                .get_logs(pb::GetLogsRequest {
                    instance: String::new(),
                    task: name,
                })
                .await
                .map_err(status)?
                .into_inner();
            print_logs(&r);
        }
    }
    Ok(0)
}

fn print_logs(r: &pb::GetLogsResponse) {
    println!("log of instance {}", r.instance_id);
    let mut attempt = "";
    for l in &r.lines {
        if l.attempt_id != attempt {
            attempt = &l.attempt_id;
            println!("--- attempt {attempt}");
        }
        println!("{} [{}] {}", time(l.ts_ms), l.level, l.message);
    }
}

async fn instance(admin: &mut Admin, cmd: InstanceCmd) -> anyhow::Result<i32> {
    match cmd {
        InstanceCmd::List { task } => {
            let r = admin
                .list_instances(pb::ListInstancesRequest {
                    task: task.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            let rows: Vec<Vec<String>> = r
                .instances
                .iter()
                .map(|i| {
                    let written = i
                        .attempts
                        .last()
                        .and_then(|a| a.stats.as_ref())
                        .map(|s| thousands(s.records_written))
                        .unwrap_or_default();
                    vec![
                        i.id.clone(),
                        i.task.clone(),
                        i.bizdate.clone(),
                        instance_state(&i.state, i.dirty_records),
                        i.attempts.len().to_string(),
                        written,
                        time(i.created_ms),
                    ]
                })
                .collect();
            table(
                &[
                    "INSTANCE", "TASK", "BIZDATE", "STATE", "ATTEMPTS", "WRITTEN", "CREATED",
                ],
                &rows,
            );
        }
        InstanceCmd::Show { id } => {
            let i = admin
                .get_instance(pb::GetInstanceRequest { id })
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "instance {} of task {} v{} bizdate {}",
                i.id, i.task, i.version, i.bizdate
            );
            println!("state: {}", instance_state(&i.state, i.dirty_records));
            if !i.waiting_reason.is_empty() {
                println!("waiting: {}", i.waiting_reason);
            }
            for a in &i.attempts {
                println!(
                    "attempt {} on {}: {} (started {}, finished {})",
                    a.id,
                    if a.agent_id.is_empty() {
                        "-"
                    } else {
                        &a.agent_id
                    },
                    a.state,
                    time(a.started_ms),
                    time(a.finished_ms)
                );
            }
            print_summary(&i);
        }
        InstanceCmd::Logs { id } => {
            let r = admin
                .get_logs(pb::GetLogsRequest {
                    instance: id,
                    task: String::new(),
                })
                .await
                .map_err(status)?
                .into_inner();
            print_logs(&r);
        }
        InstanceCmd::Follow { id } => {
            let done = follow(admin, &id).await?;
            return Ok(if done.state == "success" { 0 } else { 1 });
        }
    }
    Ok(0)
}
