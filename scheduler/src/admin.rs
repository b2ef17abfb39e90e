//! The admin gRPC service behind the `ferry` CLI: resource groups, data sources, tasks, runs
//! and logs. Each call validates fully before it proposes a command, so a refused request
//! changes nothing.

use crate::context::Context;
use crate::convert::{agent_info, instance_info};
use crate::error::{Error, Result};
use crate::hub::InstanceEvent;
use crate::state::command::{Applied, Command};
use crate::state::model::{DataSourceRecord, Instance};
use ferry_common::datasource::DataSourceConfig;
use ferry_common::job::JobSpec;
use ferry_common::params::{self, ParamContext};
use ferry_common::secret::{hash_token, random_token};
use ferry_proto::admin::v1 as pb;
use ferry_proto::admin::v1::admin_service_server::AdminService;
use ferry_proto::agent::v1 as agent_pb;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::info;

pub struct AdminApi {
    ctx: Arc<Context>,
}

impl AdminApi {
    pub fn new(ctx: Arc<Context>) -> Self {
        Self { ctx }
    }

    fn install_command(&self, group: &str, token: &str) -> String {
        format!(
            "sudo ferry-agent install --scheduler {} --group {group} --token {token}",
            self.ctx.config.advertise_url
        )
    }

    fn require_agent(&self, id: &str) -> Result<crate::state::model::Agent> {
        self.ctx.store.agent(id)?.ok_or_else(|| Error::NotFound {
            what: "agent",
            name: id.to_string(),
            hint: "see `ferry agent list`",
        })
    }

    fn agent_view(&self, id: &str) -> Result<pb::AgentInfo> {
        let a = self.require_agent(id)?;
        let running = self.ctx.store.running_per_agent()?;
        Ok(agent_info(
            &self.ctx,
            &a,
            running.get(&a.id).copied().unwrap_or(0),
        ))
    }

    fn require_group(&self, name: &str) -> Result<()> {
        match self.ctx.store.group(name)? {
            Some(_) => Ok(()),
            None => Err(Error::NotFound {
                what: "resource group",
                name: name.to_string(),
                hint: "see `ferry group list`",
            }),
        }
    }

    fn require_datasource(&self, name: &str) -> Result<DataSourceRecord> {
        self.ctx
            .store
            .datasource(name)?
            .ok_or_else(|| Error::NotFound {
                what: "data source",
                name: name.to_string(),
                hint: "see `ferry datasource list`",
            })
    }

    fn latest_instance_of(&self, task: &str) -> Result<Instance> {
        self.ctx
            .store
            .instances()?
            .into_iter()
            .rev()
            .find(|i| i.task == task)
            .ok_or_else(|| Error::NotFound {
                what: "instance of task",
                name: task.to_string(),
                hint: "run it with `ferry task run`",
            })
    }

    fn require_instance(&self, id: &str) -> Result<Instance> {
        self.ctx.store.instance(id)?.ok_or_else(|| Error::NotFound {
            what: "instance",
            name: id.to_string(),
            hint: "see `ferry instance list`",
        })
    }
}

/// Names of groups, data sources and tasks: letters, digits, `_`, `-` and `.`, 1 to 64.
fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{what} name \"{name}\" is invalid: use 1 to 64 letters, digits, '_', '-' or '.'"
        )))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::InstanceEvent, Status>> + Send>>;

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::CreateGroupResponse>, Status> {
        let name = request.into_inner().name;
        check_name("resource group", &name)?;
        let token = random_token("frt_");
        self.ctx
            .store
            .propose(Command::CreateGroup {
                name: name.clone(),
                token_hash: hash_token(&token),
                at_ms: self.ctx.now_ms(),
            })
            .await?;
        info!(group = %name, "resource group created");
        Ok(Response::new(pb::CreateGroupResponse {
            install_command: self.install_command(&name, &token),
            name,
            registration_token: token,
        }))
    }

    async fn rotate_group_token(
        &self,
        request: Request<pb::RotateGroupTokenRequest>,
    ) -> Result<Response<pb::CreateGroupResponse>, Status> {
        let name = request.into_inner().name;
        self.require_group(&name)?;
        let token = random_token("frt_");
        self.ctx
            .store
            .propose(Command::RotateGroupToken {
                name: name.clone(),
                token_hash: hash_token(&token),
            })
            .await?;
        info!(group = %name, "registration token rotated");
        Ok(Response::new(pb::CreateGroupResponse {
            install_command: self.install_command(&name, &token),
            name,
            registration_token: token,
        }))
    }

    async fn list_groups(
        &self,
        _request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let running = self.ctx.store.running_per_agent()?;
        let agents = self.ctx.store.agents()?;
        let groups = self
            .ctx
            .store
            .groups()?
            .into_iter()
            .map(|g| pb::GroupInfo {
                agents: agents
                    .iter()
                    .filter(|a| a.group == g.name)
                    .map(|a| agent_info(&self.ctx, a, running.get(&a.id).copied().unwrap_or(0)))
                    .collect(),
                name: g.name,
                created_ms: g.created_ms,
            })
            .collect();
        Ok(Response::new(pb::ListGroupsResponse { groups }))
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let group = request.into_inner().group;
        let running = self.ctx.store.running_per_agent()?;
        let agents = self
            .ctx
            .store
            .agents()?
            .iter()
            .filter(|a| group.is_empty() || a.group == group)
            .map(|a| agent_info(&self.ctx, a, running.get(&a.id).copied().unwrap_or(0)))
            .collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn drain_agent(
        &self,
        request: Request<pb::DrainAgentRequest>,
    ) -> Result<Response<pb::AgentInfo>, Status> {
        let req = request.into_inner();
        self.require_agent(&req.id)?;
        self.ctx
            .store
            .propose(Command::SetAgentDraining {
                id: req.id.clone(),
                draining: req.drain,
            })
            .await?;
        self.ctx.hub.send(
            &req.id,
            agent_pb::SchedulerMessage {
                body: Some(agent_pb::scheduler_message::Body::Drain(agent_pb::Drain {
                    draining: req.drain,
                })),
            },
        );
        self.ctx.hub.dispatch.notify_one();
        info!(agent = %req.id, draining = req.drain, "agent drain changed");
        Ok(Response::new(self.agent_view(&req.id)?))
    }

    async fn revoke_agent(
        &self,
        request: Request<pb::RevokeAgentRequest>,
    ) -> Result<Response<pb::AgentInfo>, Status> {
        let id = request.into_inner().id;
        let live: Vec<_> = self
            .ctx
            .store
            .live_attempts()?
            .into_iter()
            .filter(|a| a.agent_id == id)
            .collect();
        self.ctx
            .store
            .propose(Command::RevokeAgent {
                id: id.clone(),
                reason: "revoked by an operator".into(),
                at_ms: self.ctx.now_ms(),
            })
            .await?;
        self.ctx.hub.kick(
            &id,
            Status::unauthenticated(format!(
                "agent {id} was revoked by an operator; install it again with a fresh token"
            )),
        );
        for a in live {
            self.ctx.hub.publish(InstanceEvent::Changed {
                instance_id: a.instance_id,
            });
        }
        self.ctx.hub.dispatch.notify_one();
        info!(agent = %id, "agent revoked");
        Ok(Response::new(self.agent_view(&id)?))
    }

    async fn add_data_source(
        &self,
        request: Request<pb::AddDataSourceRequest>,
    ) -> Result<Response<pb::DataSourceInfo>, Status> {
        let req = request.into_inner();
        check_name("data source", &req.name)?;
        let fields: BTreeMap<String, String> = req.fields.into_iter().collect();
        let secrets: BTreeMap<String, String> = req.secrets.into_iter().collect();
        let mut config =
            DataSourceConfig::from_fields(&req.r#type, &fields, &secrets).map_err(Error::from)?;
        for g in &req.groups {
            self.require_group(g)?;
        }
        self.ctx.secrets.seal(&mut config)?;
        let record = DataSourceRecord {
            name: req.name.clone(),
            config,
            groups: req.groups,
            updated_ms: self.ctx.now_ms(),
        };
        let info = pb::DataSourceInfo::from(&record);
        self.ctx
            .store
            .propose(Command::PutDataSource { record })
            .await?;
        info!(datasource = %req.name, kind = %info.r#type, "data source saved");
        Ok(Response::new(info))
    }

    async fn list_data_sources(
        &self,
        _request: Request<pb::ListDataSourcesRequest>,
    ) -> Result<Response<pb::ListDataSourcesResponse>, Status> {
        let datasources = self
            .ctx
            .store
            .datasources()?
            .iter()
            .map(Into::into)
            .collect();
        Ok(Response::new(pb::ListDataSourcesResponse { datasources }))
    }

    async fn get_data_source(
        &self,
        request: Request<pb::GetDataSourceRequest>,
    ) -> Result<Response<pb::DataSourceInfo>, Status> {
        let record = self.require_datasource(&request.into_inner().name)?;
        Ok(Response::new((&record).into()))
    }

    async fn remove_data_source(
        &self,
        request: Request<pb::RemoveDataSourceRequest>,
    ) -> Result<Response<pb::RemoveDataSourceResponse>, Status> {
        let name = request.into_inner().name;
        self.require_datasource(&name)?;
        for task in self.ctx.store.tasks()? {
            let Some(v) = self.ctx.store.task_version(&task.name, task.version)? else {
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
                    task.name
                ))
                .into());
            }
        }
        self.ctx
            .store
            .propose(Command::RemoveDataSource { name: name.clone() })
            .await?;
        info!(datasource = %name, "data source removed");
        Ok(Response::new(pb::RemoveDataSourceResponse {}))
    }

    async fn test_data_source(
        &self,
        request: Request<pb::TestDataSourceRequest>,
    ) -> Result<Response<pb::TestDataSourceResponse>, Status> {
        let req = request.into_inner();
        self.require_group(&req.group)?;
        let (name, config) = match (&req.inline, req.name.is_empty()) {
            (Some(inline), true) => {
                let fields: BTreeMap<String, String> = inline.fields.clone().into_iter().collect();
                let secrets: BTreeMap<String, String> =
                    inline.secrets.clone().into_iter().collect();
                let config = DataSourceConfig::from_fields(&inline.r#type, &fields, &secrets)
                    .map_err(Error::from)?;
                let name = if inline.name.is_empty() {
                    "(unsaved)".to_string()
                } else {
                    inline.name.clone()
                };
                (name, config)
            }
            (None, false) => {
                let mut record = self.require_datasource(&req.name)?;
                // The same rule as dispatch: a data source limited to groups never reaches an
                // agent of another group, not even for a test.
                if !record.groups.is_empty() && !record.groups.contains(&req.group) {
                    return Err(Error::FailedPrecondition(format!(
                        "data source \"{}\" may not be used by resource group \"{}\" (allowed: {})",
                        req.name,
                        req.group,
                        record.groups.join(", ")
                    ))
                    .into());
                }
                self.ctx.secrets.open(&mut record.config)?;
                (req.name.clone(), record.config)
            }
            _ => {
                return Err(Status::invalid_argument(
                    "name a saved data source, or describe one to test before saving it (not both)",
                ));
            }
        };
        if !req.access.is_empty() && !matches!(req.access.as_str(), "read" | "write" | "both") {
            return Err(Status::invalid_argument(format!(
                "access \"{}\" must be read, write or both",
                req.access
            )));
        }
        let config_json = serde_json::to_string(&config).map_err(Error::from)?;
        drop(config);
        let agents: Vec<_> = self
            .ctx
            .store
            .agents()?
            .into_iter()
            .filter(|a| a.group == req.group && !a.is_revoked())
            .filter(|a| {
                self.ctx
                    .hub
                    .online(&a.id, self.ctx.config.offline_after)
                    .is_some()
            })
            .collect();
        if agents.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "no online agent in resource group \"{}\"; see `ferry group list`",
                req.group
            ))
            .into());
        }
        let request_id = uuid::Uuid::new_v4().to_string();
        let (tx, mut rx) = mpsc::channel(agents.len().max(1));
        self.ctx.hub.start_test(&request_id, tx);
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
                    },
                )),
            };
            if self.ctx.hub.send(&agent.id, msg) {
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
                        });
                    }
                }
                _ => break,
            }
        }
        self.ctx.hub.end_test(&request_id);
        for (agent_id, hostname) in pending {
            reports.push(pb::ConnectivityReport {
                agent_id,
                hostname,
                reachable: false,
                latency_ms: 0,
                error_kind: "timeout".into(),
                message: format!("the agent did not answer within {}s", timeout.as_secs()),
            });
        }
        reports.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        Ok(Response::new(pb::TestDataSourceResponse {
            reports,
            group: req.group,
        }))
    }

    async fn create_task(
        &self,
        request: Request<pb::CreateTaskRequest>,
    ) -> Result<Response<pb::TaskInfo>, Status> {
        let req = request.into_inner();
        check_name("task", &req.name)?;
        self.require_group(&req.group)?;
        params::check(&req.job_json).map_err(Error::from)?;
        // Validate the job as it will run, with parameters standing in for a day.
        let sample = params::substitute(
            &req.job_json,
            &ParamContext::for_bizdate(chrono::Utc::now().date_naive()),
        )
        .map_err(Error::from)?;
        let job = JobSpec::parse(&sample).map_err(Error::from)?;
        let mut known = HashMap::new();
        for name in job.datasources() {
            if let Some(r) = self.ctx.store.datasource(&name)? {
                known.insert(name, r.config);
            }
        }
        job.resolve(|n| known.get(n).cloned())
            .map_err(Error::from)?;
        let applied = self
            .ctx
            .store
            .propose(Command::CreateTask {
                name: req.name.clone(),
                group: req.group.clone(),
                job_text: req.job_json,
                agent_labels: req.agent_labels.into_iter().collect(),
                at_ms: self.ctx.now_ms(),
            })
            .await?;
        let version = match applied {
            Applied::TaskVersion(v) => v,
            _ => 0,
        };
        info!(task = %req.name, version, "task saved");
        let task = self.ctx.store.task(&req.name)?.ok_or_else(|| {
            Error::Unavailable("task vanished right after it was saved; retry".into())
        })?;
        Ok(Response::new((&task).into()))
    }

    async fn list_tasks(
        &self,
        _request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let tasks = self.ctx.store.tasks()?.iter().map(Into::into).collect();
        Ok(Response::new(pb::ListTasksResponse { tasks }))
    }

    async fn run_task(
        &self,
        request: Request<pb::RunTaskRequest>,
    ) -> Result<Response<pb::InstanceInfo>, Status> {
        let req = request.into_inner();
        if self.ctx.store.task(&req.name)?.is_none() {
            return Err(Error::NotFound {
                what: "task",
                name: req.name,
                hint: "see `ferry task list`",
            }
            .into());
        }
        let bizdate = if req.bizdate.trim().is_empty() {
            chrono::Local::now()
                .date_naive()
                .pred_opt()
                .unwrap_or_default()
        } else {
            params::parse_bizdate(&req.bizdate).map_err(Error::from)?
        };
        let p = ParamContext::for_bizdate(bizdate);
        let id = format!(
            "ins-{}-{}",
            p.bizdate.format("%Y%m%d"),
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        self.ctx
            .store
            .propose(Command::CreateInstance {
                id: id.clone(),
                task: req.name.clone(),
                bizdate: p.bizdate.format("%Y%m%d").to_string(),
                cyctime: p.cyctime.format("%Y%m%d%H%M%S").to_string(),
                at_ms: self.ctx.now_ms(),
            })
            .await?;
        info!(task = %req.name, instance = %id, "manual run requested");
        self.ctx.hub.dispatch.notify_one();
        let inst = self.require_instance(&id)?;
        Ok(Response::new(instance_info(&self.ctx, &inst)?))
    }

    async fn get_instance(
        &self,
        request: Request<pb::GetInstanceRequest>,
    ) -> Result<Response<pb::InstanceInfo>, Status> {
        let inst = self.require_instance(&request.into_inner().id)?;
        Ok(Response::new(instance_info(&self.ctx, &inst)?))
    }

    async fn list_instances(
        &self,
        request: Request<pb::ListInstancesRequest>,
    ) -> Result<Response<pb::ListInstancesResponse>, Status> {
        let task = request.into_inner().task;
        let mut instances = Vec::new();
        for i in self.ctx.store.instances()? {
            if task.is_empty() || i.task == task {
                instances.push(instance_info(&self.ctx, &i)?);
            }
        }
        Ok(Response::new(pb::ListInstancesResponse { instances }))
    }

    type WatchInstanceStream = EventStream;

    async fn watch_instance(
        &self,
        request: Request<pb::GetInstanceRequest>,
    ) -> Result<Response<Self::WatchInstanceStream>, Status> {
        let id = request.into_inner().id;
        // Subscribe before reading the current state so no event falls in between.
        let mut events = self.ctx.hub.subscribe();
        let inst = self.require_instance(&id)?;
        let ctx = self.ctx.clone();
        let (tx, rx) = mpsc::channel::<Result<pb::InstanceEvent, Status>>(256);
        tokio::spawn(async move {
            let mut seen: HashSet<(String, u64)> = HashSet::new();
            let send_state = |inst: &Instance| -> Result<pb::InstanceEvent> {
                Ok(pb::InstanceEvent {
                    body: Some(pb::instance_event::Body::State(instance_info(&ctx, inst)?)),
                })
            };
            let mut out: Vec<pb::InstanceEvent> = Vec::new();
            match send_state(&inst) {
                Ok(ev) => out.push(ev),
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            }
            for attempt in &inst.attempts {
                for line in ctx.store.logs(attempt).unwrap_or_default() {
                    seen.insert((attempt.clone(), line.index));
                    out.push(log_event(
                        attempt,
                        line.index,
                        line.ts_ms,
                        line.level,
                        line.message,
                    ));
                }
            }
            for ev in out {
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            if inst.state.is_final() {
                return;
            }
            loop {
                let ev = match events.recv().await {
                    Ok(ev) => ev,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(skipped = n, "watcher lagged");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if ev.instance_id() != id {
                    continue;
                }
                let out = match ev {
                    InstanceEvent::Changed { .. } => {
                        let Ok(Some(now)) = ctx.store.instance(&id) else {
                            return;
                        };
                        let ev = match send_state(&now) {
                            Ok(ev) => ev,
                            Err(_) => return,
                        };
                        if now.state.is_final() {
                            // Flush any stored log line the watcher has not seen, then end.
                            let _ = tx.send(Ok(ev)).await;
                            for attempt in &now.attempts {
                                for line in ctx.store.logs(attempt).unwrap_or_default() {
                                    if seen.insert((attempt.clone(), line.index)) {
                                        let _ = tx
                                            .send(Ok(log_event(
                                                attempt,
                                                line.index,
                                                line.ts_ms,
                                                line.level,
                                                line.message,
                                            )))
                                            .await;
                                    }
                                }
                            }
                            return;
                        }
                        ev
                    }
                    InstanceEvent::Progress { stats, .. } => pb::InstanceEvent {
                        body: Some(pb::instance_event::Body::Progress(stats.into())),
                    },
                    InstanceEvent::Log {
                        attempt_id,
                        index,
                        ts_ms,
                        level,
                        message,
                        ..
                    } => {
                        if !seen.insert((attempt_id.clone(), index)) {
                            continue;
                        }
                        log_event(&attempt_id, index, ts_ms, level, message)
                    }
                };
                if tx.send(Ok(out)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_logs(
        &self,
        request: Request<pb::GetLogsRequest>,
    ) -> Result<Response<pb::GetLogsResponse>, Status> {
        let req = request.into_inner();
        let inst = if !req.instance.is_empty() {
            self.require_instance(&req.instance)?
        } else if !req.task.is_empty() {
            self.latest_instance_of(&req.task)?
        } else {
            return Err(Status::invalid_argument("name an instance or a task"));
        };
        let mut lines = Vec::new();
        for attempt in &inst.attempts {
            for l in self.ctx.store.logs(attempt)? {
                lines.push(pb::LogLine {
                    attempt_id: attempt.clone(),
                    index: l.index,
                    ts_ms: l.ts_ms,
                    level: l.level,
                    message: l.message,
                });
            }
        }
        Ok(Response::new(pb::GetLogsResponse {
            instance_id: inst.id,
            lines,
        }))
    }
}

fn log_event(
    attempt: &str,
    index: u64,
    ts_ms: i64,
    level: String,
    message: String,
) -> pb::InstanceEvent {
    pb::InstanceEvent {
        body: Some(pb::instance_event::Body::Log(pb::LogLine {
            attempt_id: attempt.to_string(),
            index,
            ts_ms,
            level,
            message,
        })),
    }
}
