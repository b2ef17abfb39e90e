//! The admin subcommands: each builds one request, sends it, and prints the answer for people.

use crate::TopCommand;
pub use crate::agents::AgentCmd;
use crate::client::{Admin, Auth, Credentials, connect, status};
use crate::format::{Output, table, time};
use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use ferry_proto::admin::v1 as pb;
use ferry_proto::tls::ClientTls;
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
    /// Let the current workspace's tasks use the group (cluster admins).
    Bind { name: String },
    /// Stop the current workspace from using the group.
    Unbind { name: String },
    /// Set a group's options (cluster admins).
    Set {
        name: String,
        /// Most attempts at once across its agents (0: no limit).
        #[arg(long)]
        max_concurrency: Option<u32>,
        /// Whether its agents run shell tasks: on | off.
        #[arg(long)]
        allow_shell: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum DatasourceCmd {
    /// Add (or replace) a data source.
    Add(Box<AddDatasource>),
    /// List data sources.
    List,
    /// Show one data source (secrets are never shown).
    Show { name: String },
    /// Remove a data source no task uses.
    Remove { name: String },
    /// Ask every online agent of a group to reach a data source: a saved one by name, or one
    /// described with --type and its fields, before saving it.
    Test(Box<TestDatasource>),
}

#[derive(Args, Debug)]
pub struct TestDatasource {
    /// A saved data source; leave out and give --type and fields to test before saving.
    name: Option<String>,
    #[arg(long)]
    group: String,
    /// Also check this table exists, and the access the sync needs.
    #[arg(long)]
    table: Option<String>,
    /// read | write | both (with --table).
    #[arg(long, requires = "table")]
    access: Option<String>,
    /// Also list the table's columns as the agents see them.
    #[arg(long, requires = "table")]
    describe: bool,
    /// Seconds to wait for agents.
    #[arg(long, default_value_t = 15)]
    timeout: u64,
    #[command(flatten)]
    fields: DatasourceFields,
}

#[derive(Args, Debug)]
pub struct AddDatasource {
    name: String,
    #[command(flatten)]
    fields: DatasourceFields,
}

/// A data source's type and connection fields, as flags.
#[derive(Args, Debug)]
pub struct DatasourceFields {
    /// mysql | postgresql | sqlite | csv | stream
    #[arg(long = "type")]
    kind: Option<String>,
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
    /// TLS to the database (mysql, postgresql): disable, prefer (the default), require,
    /// verify-ca or verify-full.
    #[arg(long)]
    sslmode: Option<String>,
    /// A PEM file of the CA to trust, read here and kept in the catalog so every agent gets it
    /// (`--field sslrootcert=/path` names a file on the agents instead).
    #[arg(long)]
    ssl_root_cert: Option<PathBuf>,
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
    #[arg(long = "allow-group", alias = "groups")]
    groups: Vec<String>,
}

impl DatasourceFields {
    /// The request that carries these fields (the password read from where the flags say).
    fn request(self, name: String) -> anyhow::Result<pb::AddDataSourceRequest> {
        let Some(kind) = self.kind else {
            bail!(
                "say the data source's type with --type (mysql, postgresql, sqlite, csv, stream)"
            );
        };
        let mut fields: HashMap<String, String> = self.fields.into_iter().collect();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                fields.insert(k.to_string(), v);
            }
        };
        put("host", self.host);
        put("port", self.port.map(|p| p.to_string()));
        put("database", self.database);
        put("username", self.user);
        put("sslmode", self.sslmode);
        if let Some(file) = self.ssl_root_cert {
            let pem = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            put("sslrootcert", Some(pem));
        }
        put(
            "path",
            self.path.map(|p| {
                std::path::absolute(&p)
                    .unwrap_or(p)
                    .to_string_lossy()
                    .into_owned()
            }),
        );
        let mut secrets = HashMap::new();
        if self.password_stdin {
            let mut pw = String::new();
            std::io::stdin()
                .read_to_string(&mut pw)
                .context("cannot read the password from standard input")?;
            secrets.insert(
                "password".to_string(),
                pw.trim_end_matches(['\n', '\r']).to_string(),
            );
        } else if let Some(var) = self.password_env {
            let pw = std::env::var(&var)
                .map_err(|_| anyhow!("environment variable {var} is not set"))?;
            secrets.insert("password".to_string(), pw);
        }
        Ok(pb::AddDataSourceRequest {
            name,
            r#type: kind,
            fields,
            secrets,
            groups: self.groups,
            keep_secrets: false,
        })
    }
}

pub(crate) fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("\"{s}\" is not key=value"))
}

/// Runs one admin command; returns the process exit code.
pub async fn run(
    urls: &[String],
    tls: &ClientTls,
    workspace: Option<String>,
    saved: Option<Credentials>,
    out: Output,
    cmd: TopCommand,
) -> anyhow::Result<i32> {
    // The token: FERRY_TOKEN, else what `ferry login` saved; `login` itself brings its own.
    let token = match &cmd {
        TopCommand::Login { token, token_stdin } => Some(match (token, token_stdin) {
            (Some(t), _) => t.clone(),
            (None, true) => crate::access::token_from_stdin()?,
            (None, false) => bail!("give the token with --token-stdin (or --token)"),
        }),
        _ => std::env::var("FERRY_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .or_else(|| saved.map(|c| c.token)),
    };
    // A template needs no scheduler.
    if let TopCommand::Task(crate::tasks::TaskCmd::Template { reader, writer }) = &cmd {
        return crate::tasks::template(reader, writer);
    }
    let auth = Auth::new(token.as_deref(), workspace.as_deref())?;
    if let TopCommand::Cluster(c) = cmd {
        return crate::cluster::run(urls, tls, auth, out, c).await;
    }
    let mut admin = connect(urls, tls, auth).await?;
    match cmd {
        TopCommand::Login { .. } => {
            crate::access::login(&mut admin, urls, token.unwrap_or_default(), workspace).await
        }
        TopCommand::Logout => crate::access::logout(),
        TopCommand::Whoami => crate::access::whoami(&mut admin).await,
        TopCommand::User(c) => crate::access::user(&mut admin, c).await,
        TopCommand::Token(c) => crate::access::token(&mut admin, c).await,
        TopCommand::Workspace(c) => crate::access::workspace(&mut admin, c).await,
        TopCommand::Audit { since, limit } => crate::access::audit(&mut admin, since, limit).await,
        TopCommand::Secrets(c) => crate::access::secrets(&mut admin, c).await,
        TopCommand::Group(c) => group(&mut admin, c).await,
        TopCommand::Agent(c) => crate::agents::run(&mut admin, out, c).await,
        TopCommand::Alert(c) => crate::alerts::run(&mut admin, out, c).await,
        TopCommand::Datasource(c) => datasource(&mut admin, c).await,
        TopCommand::Task(c) => crate::tasks::run(&mut admin, out, c).await,
        TopCommand::Instance(c) => crate::instances::run(&mut admin, out, c).await,
        TopCommand::Dag(args) => crate::instances::dag(&mut admin, out, args).await,
        TopCommand::Backfill {
            task,
            from,
            to,
            downstream,
            parallelism,
        } => crate::instances::backfill(&mut admin, task, from, to, downstream, parallelism).await,
        TopCommand::Quickstart { .. } => bail!("quickstart does not talk to an existing scheduler"),
        TopCommand::Cluster(_) => bail!("handled above"),
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
        GroupCmd::Bind { name } => {
            let g = admin
                .bind_group(pb::BindGroupRequest {
                    group: name,
                    bind: true,
                })
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "group {} is used by workspaces: {}",
                g.name,
                g.workspaces.join(", ")
            );
        }
        GroupCmd::Unbind { name } => {
            let g = admin
                .bind_group(pb::BindGroupRequest {
                    group: name,
                    bind: false,
                })
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "group {} is used by workspaces: {}",
                g.name,
                g.workspaces.join(", ")
            );
        }
        GroupCmd::Set {
            name,
            max_concurrency,
            allow_shell,
        } => {
            let g = admin
                .set_group_options(pb::SetGroupOptionsRequest {
                    group: name,
                    max_concurrency: max_concurrency.map(i64::from).unwrap_or(-1),
                    allow_shell: allow_shell.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "group {}: max concurrency {}, shell tasks {}",
                g.name,
                if g.max_concurrency == 0 {
                    "unlimited".to_string()
                } else {
                    g.max_concurrency.to_string()
                },
                if g.allow_shell {
                    "allowed"
                } else {
                    "not allowed"
                }
            );
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
            let d = admin
                .add_data_source(a.fields.request(a.name)?)
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
        DatasourceCmd::Test(t) => {
            let (name, inline) = match t.name {
                Some(name) => {
                    if t.fields.kind.is_some() {
                        bail!(
                            "give either a saved data source's name or --type with fields, not both"
                        );
                    }
                    (name, None)
                }
                None => (String::new(), Some(t.fields.request(String::new())?)),
            };
            let shown = if name.is_empty() {
                "the data source".to_string()
            } else {
                name.clone()
            };
            let r = admin
                .test_data_source(pb::TestDataSourceRequest {
                    name,
                    group: t.group,
                    timeout_ms: t.timeout * 1000,
                    inline,
                    table: t.table.unwrap_or_default(),
                    access: t.access.unwrap_or_default(),
                    describe: t.describe,
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
            if let Some(first) = r.reports.iter().find(|x| !x.columns.is_empty()) {
                println!();
                let cols: Vec<Vec<String>> = first
                    .columns
                    .iter()
                    .map(|c| {
                        vec![
                            c.name.clone(),
                            c.r#type.clone(),
                            if c.nullable { "yes" } else { "no" }.into(),
                            if c.primary_key { "yes" } else { "" }.into(),
                        ]
                    })
                    .collect();
                table(&["COLUMN", "TYPE", "NULLABLE", "KEY"], &cols);
            }
            let failed = r.reports.iter().filter(|x| !x.reachable).count();
            if failed == r.reports.len() {
                println!("{shown} is unreachable from group {}", r.group);
                return Ok(2);
            }
            if failed > 0 {
                println!(
                    "{shown} is unreachable from {failed} of {} agents of group {}",
                    r.reports.len(),
                    r.group
                );
                return Ok(2);
            }
            println!("{shown} is reachable from every agent of group {}", r.group);
        }
    }
    Ok(0)
}
