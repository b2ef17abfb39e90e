//! Resource groups and their agents (cluster-wide, bound to workspaces), and data sources (per
//! workspace), with the connectivity test.

use super::{AdminApi, check_name};
use crate::auth::{Action, Principal, qualify, short, workspace_of};
use crate::convert::agent_info;
use crate::error::{Error, Result};
use crate::hub::InstanceEvent;
use crate::state::command::Command;
use crate::state::model::{Agent, DataSourceRecord, Group, cut_text};
use ferry_common::datasource::DataSourceConfig;
use ferry_common::job::JobSpec;
use ferry_common::params::{self, ParamContext};
use ferry_common::secret::{hash_token, random_token};
use ferry_proto::admin::v1 as pb;
use ferry_proto::agent::v1 as agent_pb;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::info;

fn install_command(api: &AdminApi, group: &str, token: &str) -> String {
    format!(
        "sudo ferry-agent install --scheduler {} --group {group} --token {token}",
        api.ctx.config.advertise_url
    )
}

pub(super) fn require_group(api: &AdminApi, name: &str) -> Result<Group> {
    api.ctx.store.group(name)?.ok_or_else(|| Error::NotFound {
        what: "resource group",
        name: name.to_string(),
        hint: "see `ferry group list`",
    })
}

/// The group, if the workspace may use it.
pub(super) fn usable_group(api: &AdminApi, name: &str, workspace: &str) -> Result<Group> {
    let g = require_group(api, name)?;
    if !g.workspaces.iter().any(|w| w == workspace) {
        return Err(Error::FailedPrecondition(format!(
            "resource group \"{name}\" is not bound to workspace \"{workspace}\"; a cluster admin can bind it with `ferry group bind {name} --workspace {workspace}`"
        )));
    }
    Ok(g)
}

pub(super) fn require_datasource(
    api: &AdminApi,
    workspace: &str,
    name: &str,
) -> Result<DataSourceRecord> {
    api.ctx
        .store
        .datasource(&qualify(workspace, name))?
        .ok_or_else(|| Error::NotFound {
            what: "data source",
            name: name.to_string(),
            hint: "see `ferry datasource list`",
        })
}

fn require_agent(api: &AdminApi, id: &str) -> Result<Agent> {
    api.ctx.store.agent(id)?.ok_or_else(|| Error::NotFound {
        what: "agent",
        name: id.to_string(),
        hint: "see `ferry agent list`",
    })
}

fn agent_view(api: &AdminApi, id: &str) -> Result<pb::AgentInfo> {
    let a = require_agent(api, id)?;
    let running = api.ctx.store.running_per_agent()?;
    Ok(agent_info(
        &api.ctx,
        &a,
        running.get(&a.id).copied().unwrap_or(0),
    ))
}

fn datasource_info(r: &DataSourceRecord) -> pb::DataSourceInfo {
    let mut info = pb::DataSourceInfo::from(r);
    info.name = short(&r.name).to_string();
    info
}

fn group_info(api: &AdminApi, g: Group) -> Result<pb::GroupInfo> {
    let running = api.ctx.store.running_per_agent()?;
    let agents = api
        .ctx
        .store
        .agents()?
        .iter()
        .filter(|a| a.group == g.name)
        .map(|a| agent_info(&api.ctx, a, running.get(&a.id).copied().unwrap_or(0)))
        .collect();
    Ok(pb::GroupInfo {
        agents,
        name: g.name,
        created_ms: g.created_ms,
        workspaces: g.workspaces,
        max_concurrency: g.max_concurrency,
        allow_shell: g.allow_shell,
    })
}

pub async fn create_group(
    api: &AdminApi,
    p: &Principal,
    req: pb::CreateGroupRequest,
) -> Result<pb::CreateGroupResponse> {
    api.allow(
        p,
        Action::AdministerCluster,
        &p.workspace,
        "CreateGroup",
        &req.name,
    )
    .await?;
    check_name("resource group", &req.name)?;
    let token = random_token("frt_");
    api.audited(
        p,
        "CreateGroup",
        &req.name,
        Command::CreateGroup {
            name: req.name.clone(),
            token_hash: hash_token(&token),
            workspaces: vec![p.workspace.clone()],
            at_ms: api.ctx.now_ms(),
        },
    )
    .await?;
    info!(group = %req.name, workspace = %p.workspace, "resource group created");
    Ok(pb::CreateGroupResponse {
        install_command: install_command(api, &req.name, &token),
        name: req.name,
        registration_token: token,
    })
}

pub async fn rotate_group_token(
    api: &AdminApi,
    p: &Principal,
    req: pb::RotateGroupTokenRequest,
) -> Result<pb::CreateGroupResponse> {
    api.allow(
        p,
        Action::AdministerCluster,
        &p.workspace,
        "RotateGroupToken",
        &req.name,
    )
    .await?;
    require_group(api, &req.name)?;
    let token = random_token("frt_");
    api.audited(
        p,
        "RotateGroupToken",
        &req.name,
        Command::RotateGroupToken {
            name: req.name.clone(),
            token_hash: hash_token(&token),
        },
    )
    .await?;
    info!(group = %req.name, "registration token rotated");
    Ok(pb::CreateGroupResponse {
        install_command: install_command(api, &req.name, &token),
        name: req.name,
        registration_token: token,
    })
}

pub async fn bind_group(
    api: &AdminApi,
    p: &Principal,
    req: pb::BindGroupRequest,
) -> Result<pb::GroupInfo> {
    let target = format!("{} to {}", req.group, p.workspace);
    api.allow(
        p,
        Action::AdministerCluster,
        &p.workspace,
        "BindGroup",
        &target,
    )
    .await?;
    api.audited(
        p,
        "BindGroup",
        &target,
        Command::BindGroup {
            group: req.group.clone(),
            workspace: p.workspace.clone(),
            bind: req.bind,
        },
    )
    .await?;
    group_info(api, require_group(api, &req.group)?)
}

pub async fn list_groups(
    api: &AdminApi,
    p: &Principal,
    _: pb::ListGroupsRequest,
) -> Result<pb::ListGroupsResponse> {
    api.allow(p, Action::Read, &p.workspace, "ListGroups", "")
        .await?;
    let mut groups = Vec::new();
    for g in api.ctx.store.groups()? {
        if p.cluster_admin || g.workspaces.contains(&p.workspace) {
            groups.push(group_info(api, g)?);
        }
    }
    Ok(pb::ListGroupsResponse { groups })
}

pub async fn list_agents(
    api: &AdminApi,
    p: &Principal,
    req: pb::ListAgentsRequest,
) -> Result<pb::ListAgentsResponse> {
    api.allow(p, Action::Read, &p.workspace, "ListAgents", "")
        .await?;
    let visible: Vec<String> = api
        .ctx
        .store
        .groups()?
        .into_iter()
        .filter(|g| p.cluster_admin || g.workspaces.contains(&p.workspace))
        .map(|g| g.name)
        .collect();
    let running = api.ctx.store.running_per_agent()?;
    let agents = api
        .ctx
        .store
        .agents()?
        .iter()
        .filter(|a| visible.contains(&a.group))
        .filter(|a| req.group.is_empty() || a.group == req.group)
        .map(|a| agent_info(&api.ctx, a, running.get(&a.id).copied().unwrap_or(0)))
        .collect();
    Ok(pb::ListAgentsResponse { agents })
}

pub async fn drain_agent(
    api: &AdminApi,
    p: &Principal,
    req: pb::DrainAgentRequest,
) -> Result<pb::AgentInfo> {
    let call = if req.drain {
        "DrainAgent"
    } else {
        "ResumeAgent"
    };
    api.allow(p, Action::AdministerCluster, &p.workspace, call, &req.id)
        .await?;
    require_agent(api, &req.id)?;
    api.audited(
        p,
        call,
        &req.id,
        Command::SetAgentDraining {
            id: req.id.clone(),
            draining: req.drain,
        },
    )
    .await?;
    api.ctx.hub.send(
        &req.id,
        agent_pb::SchedulerMessage {
            body: Some(agent_pb::scheduler_message::Body::Drain(agent_pb::Drain {
                draining: req.drain,
            })),
        },
    );
    api.ctx.hub.dispatch.notify_one();
    info!(agent = %req.id, draining = req.drain, "agent drain changed");
    agent_view(api, &req.id)
}

pub async fn revoke_agent(
    api: &AdminApi,
    p: &Principal,
    req: pb::RevokeAgentRequest,
) -> Result<pb::AgentInfo> {
    api.allow(
        p,
        Action::AdministerCluster,
        &p.workspace,
        "RevokeAgent",
        &req.id,
    )
    .await?;
    let id = req.id;
    require_agent(api, &id)?;
    let live: Vec<_> = api
        .ctx
        .store
        .live_attempts()?
        .into_iter()
        .filter(|a| a.agent_id == id)
        .collect();
    api.audited(
        p,
        "RevokeAgent",
        &id,
        Command::RevokeAgent {
            id: id.clone(),
            reason: format!("revoked by {}", p.user),
            at_ms: api.ctx.now_ms(),
        },
    )
    .await?;
    api.ctx.hub.kick(
        &id,
        Status::unauthenticated(format!(
            "agent {id} was revoked by an operator; install it again with a fresh token"
        )),
    );
    for a in live {
        api.ctx.hub.publish(InstanceEvent::Changed {
            instance_id: a.instance_id,
        });
    }
    api.ctx.hub.dispatch.notify_one();
    info!(agent = %id, "agent revoked");
    agent_view(api, &id)
}

pub async fn add_data_source(
    api: &AdminApi,
    p: &Principal,
    req: pb::AddDataSourceRequest,
) -> Result<pb::DataSourceInfo> {
    api.allow(p, Action::Develop, &p.workspace, "AddDataSource", &req.name)
        .await?;
    check_name("data source", &req.name)?;
    let fields: BTreeMap<String, String> = req.fields.into_iter().collect();
    let secrets: BTreeMap<String, String> = req.secrets.into_iter().collect();
    let mut config = DataSourceConfig::from_fields(&req.r#type, &fields, &secrets)?;
    for g in &req.groups {
        usable_group(api, g, &p.workspace)?;
    }
    api.ctx.secrets.seal(&mut config)?;
    if req.keep_secrets
        && let Some(mut old) = api
            .ctx
            .store
            .datasource(&qualify(&p.workspace, &req.name))?
        && old.config.kind() == config.kind()
    {
        // Still sealed: moved from the stored record as they are, never opened here.
        for (new, old) in config
            .secrets_mut()
            .into_iter()
            .zip(old.config.secrets_mut())
        {
            if new.is_empty() {
                std::mem::swap(new, old);
            }
        }
    }
    let record = DataSourceRecord {
        name: qualify(&p.workspace, &req.name),
        config,
        groups: req.groups,
        updated_ms: api.ctx.now_ms(),
    };
    let info = datasource_info(&record);
    api.audited(
        p,
        "AddDataSource",
        &req.name,
        Command::PutDataSource { record },
    )
    .await?;
    info!(datasource = %req.name, workspace = %p.workspace, kind = %info.r#type, "data source saved");
    Ok(info)
}

pub async fn list_data_sources(
    api: &AdminApi,
    p: &Principal,
    _: pb::ListDataSourcesRequest,
) -> Result<pb::ListDataSourcesResponse> {
    api.allow(p, Action::Read, &p.workspace, "ListDataSources", "")
        .await?;
    let datasources = api
        .ctx
        .store
        .datasources()?
        .iter()
        .filter(|d| workspace_of(&d.name) == p.workspace)
        .map(datasource_info)
        .collect();
    Ok(pb::ListDataSourcesResponse { datasources })
}

pub async fn get_data_source(
    api: &AdminApi,
    p: &Principal,
    req: pb::GetDataSourceRequest,
) -> Result<pb::DataSourceInfo> {
    api.allow(p, Action::Read, &p.workspace, "GetDataSource", &req.name)
        .await?;
    Ok(datasource_info(&require_datasource(
        api,
        &p.workspace,
        &req.name,
    )?))
}

pub async fn remove_data_source(
    api: &AdminApi,
    p: &Principal,
    req: pb::RemoveDataSourceRequest,
) -> Result<pb::RemoveDataSourceResponse> {
    api.allow(
        p,
        Action::Develop,
        &p.workspace,
        "RemoveDataSource",
        &req.name,
    )
    .await?;
    let name = req.name;
    require_datasource(api, &p.workspace, &name)?;
    for task in api.ctx.store.tasks()? {
        if workspace_of(&task.name) != p.workspace {
            continue;
        }
        let Some(v) = api.ctx.store.task_version(&task.name, task.version)? else {
            continue;
        };
        let Ok(text) =
            params::substitute(&v.job_text, &ParamContext::for_bizdate(Default::default()))
        else {
            continue;
        };
        if let Ok(job) = JobSpec::parse(&text)
            && job.datasources().contains(&name)
        {
            return Err(Error::FailedPrecondition(format!(
                "data source \"{name}\" is used by task \"{}\"; change that task first",
                short(&task.name)
            )));
        }
    }
    api.audited(
        p,
        "RemoveDataSource",
        &name,
        Command::RemoveDataSource {
            name: qualify(&p.workspace, &name),
        },
    )
    .await?;
    info!(datasource = %name, "data source removed");
    Ok(pb::RemoveDataSourceResponse {})
}

/// Columns of a described table passed on to the caller (more than any database allows).
const MAX_DESCRIBED_COLUMNS: usize = 4096;

pub async fn test_data_source(
    api: &AdminApi,
    p: &Principal,
    req: pb::TestDataSourceRequest,
) -> Result<pb::TestDataSourceResponse> {
    api.allow(
        p,
        Action::Develop,
        &p.workspace,
        "TestDataSource",
        &req.name,
    )
    .await?;
    usable_group(api, &req.group, &p.workspace)?;
    let (name, config) = match (&req.inline, req.name.is_empty()) {
        (Some(inline), true) => {
            let fields: BTreeMap<String, String> = inline.fields.clone().into_iter().collect();
            let secrets: BTreeMap<String, String> = inline.secrets.clone().into_iter().collect();
            let config = DataSourceConfig::from_fields(&inline.r#type, &fields, &secrets)?;
            let name = if inline.name.is_empty() {
                "(unsaved)".to_string()
            } else {
                inline.name.clone()
            };
            (name, config)
        }
        (None, false) => {
            let mut record = require_datasource(api, &p.workspace, &req.name)?;
            // The same rule as dispatch: a data source limited to groups never reaches an agent
            // of another group, not even for a test.
            if !record.groups.is_empty() && !record.groups.contains(&req.group) {
                return Err(Error::FailedPrecondition(format!(
                    "data source \"{}\" may not be used by resource group \"{}\" (allowed: {})",
                    req.name,
                    req.group,
                    record.groups.join(", ")
                )));
            }
            api.ctx.secrets.open(&mut record.config)?;
            (req.name.clone(), record.config)
        }
        _ => {
            return Err(Error::InvalidArgument(
                "name a saved data source, or describe one to test before saving it (not both)"
                    .into(),
            ));
        }
    };
    if !req.access.is_empty() && !matches!(req.access.as_str(), "read" | "write" | "both") {
        return Err(Error::InvalidArgument(format!(
            "access \"{}\" must be read, write or both",
            req.access
        )));
    }
    let config_json = serde_json::to_string(&config)?;
    drop(config);
    let agents: Vec<_> = api
        .ctx
        .store
        .agents()?
        .into_iter()
        .filter(|a| a.group == req.group && !a.is_revoked())
        .filter(|a| {
            api.ctx
                .hub
                .online(&a.id, api.ctx.config.offline_after)
                .is_some()
        })
        .collect();
    if agents.is_empty() {
        return Err(Error::FailedPrecondition(format!(
            "no online agent in resource group \"{}\"; see `ferry group list`",
            req.group
        )));
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    let (tx, mut rx) = mpsc::channel(agents.len().max(1));
    api.ctx.hub.start_test(&request_id, tx);
    let mut pending: HashMap<String, String> = HashMap::new();
    for agent in &agents {
        let msg = agent_pb::SchedulerMessage {
            body: Some(agent_pb::scheduler_message::Body::Test(
                agent_pb::TestConnectivity {
                    request_id: request_id.clone(),
                    datasource: name.clone(),
                    config_json: config_json.clone(),
                    table: req.table.clone(),
                    access: req.access.clone(),
                    describe: req.describe,
                },
            )),
        };
        if api.ctx.hub.send(&agent.id, msg) {
            pending.insert(agent.id.clone(), agent.host.hostname.clone());
        }
    }
    let timeout = Duration::from_millis(if req.timeout_ms == 0 {
        15_000
    } else {
        req.timeout_ms
    });
    let deadline = tokio::time::Instant::now() + timeout;
    let mut reports = Vec::new();
    while !pending.is_empty() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((agent_id, r))) => {
                if let Some(hostname) = pending.remove(&agent_id) {
                    reports.push(pb::ConnectivityReport {
                        agent_id,
                        hostname,
                        reachable: r.reachable,
                        latency_ms: r.latency_ms,
                        error_kind: r.error_kind,
                        message: r.message,
                        // Whatever an agent sends: a table's worth of columns, names cut.
                        columns: r
                            .columns
                            .into_iter()
                            .take(MAX_DESCRIBED_COLUMNS)
                            .map(|c| pb::ColumnInfo {
                                name: cut_text(&c.name, 256).into_owned(),
                                r#type: cut_text(&c.r#type, 256).into_owned(),
                                nullable: c.nullable,
                                primary_key: c.primary_key,
                            })
                            .collect(),
                    });
                }
            }
            _ => break,
        }
    }
    api.ctx.hub.end_test(&request_id);
    for (agent_id, hostname) in pending {
        reports.push(pb::ConnectivityReport {
            agent_id,
            hostname,
            reachable: false,
            latency_ms: 0,
            error_kind: "timeout".into(),
            message: format!("the agent did not answer within {}s", timeout.as_secs()),
            columns: Vec::new(),
        });
    }
    reports.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
    Ok(pb::TestDataSourceResponse {
        reports,
        group: req.group,
    })
}

pub async fn set_group_options(
    api: &AdminApi,
    p: &Principal,
    req: pb::SetGroupOptionsRequest,
) -> Result<pb::GroupInfo> {
    api.allow(
        p,
        Action::AdministerCluster,
        &p.workspace,
        "SetGroupOptions",
        &req.group,
    )
    .await?;
    require_group(api, &req.group)?;
    let max_concurrency = match req.max_concurrency {
        n if n < 0 => None,
        n => Some(
            u32::try_from(n)
                .map_err(|_| Error::InvalidArgument(format!("max concurrency {n} is too large")))?,
        ),
    };
    let allow_shell = match req.allow_shell.as_str() {
        "" => None,
        "on" | "true" | "yes" => Some(true),
        "off" | "false" | "no" => Some(false),
        other => {
            return Err(Error::InvalidArgument(format!(
                "allow_shell \"{other}\" must be on or off"
            )));
        }
    };
    api.audited(
        p,
        "SetGroupOptions",
        &req.group,
        Command::SetGroupOptions {
            group: req.group.clone(),
            max_concurrency,
            allow_shell,
        },
    )
    .await?;
    api.ctx.hub.dispatch.notify_one();
    group_info(api, require_group(api, &req.group)?)
}
