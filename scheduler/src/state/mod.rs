//! The scheduler's state machine over sled.
//!
//! One tree holds every record under a typed key prefix, so a command that touches several
//! records (an attempt and its instance) lands in one atomic batch. [`Store::propose`] is the only
//! way to change state: it serializes the command, applies it, and flushes sled before returning,
//! because sled acknowledges writes before they are on disk and a caller (an agent waiting for an
//! ack, a CLI told "created") must be able to rely on what it was told. Raft will slot in between
//! serialization and apply without changing callers.

pub mod command;
pub mod model;

use crate::error::{Error, Result};
use command::{Applied, Command, Reporter};
use model::{
    Agent, ApiToken, Attempt, AttemptState, AuditRecord, DataSourceRecord, Group, Instance,
    InstanceState, LogRecord, Stats, Task, TaskVersion, User, Workspace,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;
use tokio::sync::Mutex;

const GROUP: &str = "g/";
const AGENT: &str = "a/";
const DATASOURCE: &str = "d/";
const TASK: &str = "t/";
const VERSION: &str = "v/";
const INSTANCE: &str = "i/";
const ATTEMPT: &str = "x/";
const LOG: &str = "l/";
/// Index of instances waiting for resources, so the dispatcher does not scan every instance.
const WAITING: &str = "q/";
/// Index of attempts not yet finished, for slot counts, leases and agent reconciliation.
const LIVE: &str = "r/";
const USER: &str = "u/";
/// API tokens by the SHA-256 of the token.
const TOKEN: &str = "k/";
const WORKSPACE: &str = "w/";
const AUDIT: &str = "z/";
const FENCING: &str = "m/fencing";
const APPLIED: &str = "m/applied";

/// Durable state of one scheduler.
pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    /// Serializes proposals: apply reads then writes, and must see the previous command's writes.
    write: Mutex<()>,
}

fn key(prefix: &str, id: &str) -> Vec<u8> {
    format!("{prefix}{id}").into_bytes()
}

fn log_key(attempt: &str, index: u64) -> Vec<u8> {
    format!("{LOG}{attempt}/{index:020}").into_bytes()
}

fn audit_key(at_ms: i64, index: u64) -> Vec<u8> {
    format!("{AUDIT}{:020}/{index:020}", at_ms.max(0)).into_bytes()
}

fn version_key(task: &str, version: u32) -> Vec<u8> {
    format!("{VERSION}{task}/{version:010}").into_bytes()
}

/// Writes collected by one apply, committed atomically.
struct Writes {
    batch: sled::Batch,
}

impl Writes {
    fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) -> Result<()> {
        self.batch.insert(key, serde_json::to_vec(value)?);
        Ok(())
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let db = sled::Config::new().path(dir.join("state")).open()?;
        let tree = db.open_tree("state")?;
        Ok(Self {
            db,
            tree,
            write: Mutex::new(()),
        })
    }

    /// Applies `cmd` and makes it durable.
    pub async fn propose(&self, cmd: Command) -> Result<Applied> {
        let _guard = self.write.lock().await;
        let applied = self.apply(cmd)?;
        self.db.flush_async().await?;
        Ok(applied)
    }

    /// Flushes everything to disk; called on shutdown.
    pub async fn flush(&self) -> Result<()> {
        self.db.flush_async().await?;
        Ok(())
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        match self.tree.get(key)? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    fn scan<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>> {
        self.tree
            .scan_prefix(prefix.as_bytes())
            .map(|item| {
                let (_, v) = item?;
                Ok(serde_json::from_slice(&v)?)
            })
            .collect()
    }

    fn counter(&self, k: &str) -> Result<u64> {
        Ok(self.get::<u64>(k.as_bytes())?.unwrap_or(0))
    }

    /// The deterministic state transition. Validation that depends on state happens here, so
    /// every node would refuse the same commands.
    fn apply(&self, cmd: Command) -> Result<Applied> {
        let mut w = Writes {
            batch: sled::Batch::default(),
        };
        let applied_index = self.counter(APPLIED)? + 1;
        w.put(APPLIED.as_bytes().to_vec(), &applied_index)?;
        let result = self.transition(cmd, &mut w, applied_index)?;
        self.tree.apply_batch(w.batch)?;
        Ok(result)
    }

    /// The writes of one command into `w`; an error means the command changes nothing.
    fn transition(&self, cmd: Command, w: &mut Writes, applied_index: u64) -> Result<Applied> {
        let result = match cmd {
            Command::Audited { record, change } => {
                let applied = self.transition(*change, w, applied_index)?;
                w.put(audit_key(record.at_ms, applied_index), &record)?;
                applied
            }
            Command::RecordAudit { record } => {
                w.put(audit_key(record.at_ms, applied_index), &record)?;
                Applied::Done
            }
            Command::CreateWorkspace { name, at_ms } => {
                if self.workspace(&name)?.is_some() {
                    return Err(Error::AlreadyExists {
                        what: "workspace",
                        name,
                    });
                }
                w.put(
                    key(WORKSPACE, &name),
                    &Workspace {
                        name: name.clone(),
                        created_ms: at_ms,
                    },
                )?;
                Applied::Done
            }
            Command::CreateUser {
                name,
                cluster_admin,
                at_ms,
            } => {
                if self.user(&name)?.is_some() {
                    return Err(Error::AlreadyExists { what: "user", name });
                }
                w.put(
                    key(USER, &name),
                    &User {
                        name: name.clone(),
                        cluster_admin,
                        roles: Default::default(),
                        created_ms: at_ms,
                    },
                )?;
                Applied::Done
            }
            Command::SetRole {
                user,
                workspace,
                role,
            } => {
                let mut u = self.user(&user)?.ok_or_else(|| Error::NotFound {
                    what: "user",
                    name: user.clone(),
                    hint: "see `ferry user list`",
                })?;
                self.require_workspace(&workspace)?;
                match role {
                    Some(r) => u.roles.insert(workspace, r),
                    None => u.roles.remove(&workspace),
                };
                w.put(key(USER, &user), &u)?;
                Applied::Done
            }
            Command::CreateToken { token } => {
                if self.user(&token.user)?.is_none() {
                    return Err(Error::NotFound {
                        what: "user",
                        name: token.user,
                        hint: "see `ferry user list`",
                    });
                }
                w.put(key(TOKEN, &token.hash), &token)?;
                Applied::Done
            }
            Command::RevokeToken { id, at_ms } => {
                let mut t = self
                    .tokens()?
                    .into_iter()
                    .find(|t| t.id == id)
                    .ok_or_else(|| Error::NotFound {
                        what: "token",
                        name: id.clone(),
                        hint: "see `ferry token list`",
                    })?;
                if t.revoked_ms == 0 {
                    t.revoked_ms = at_ms;
                    w.put(key(TOKEN, &t.hash), &t)?;
                }
                Applied::Done
            }
            Command::BindGroup {
                group,
                workspace,
                bind,
            } => {
                let mut g = self.require_group(&group)?;
                self.require_workspace(&workspace)?;
                g.workspaces.retain(|x| *x != workspace);
                if bind {
                    g.workspaces.push(workspace);
                    g.workspaces.sort();
                }
                w.put(key(GROUP, &group), &g)?;
                Applied::Done
            }
            Command::CreateGroup {
                name,
                token_hash,
                workspaces,
                at_ms,
            } => {
                if self.group(&name)?.is_some() {
                    return Err(Error::AlreadyExists {
                        what: "resource group",
                        name,
                    });
                }
                for ws in &workspaces {
                    self.require_workspace(ws)?;
                }
                let g = Group {
                    name: name.clone(),
                    token_hash,
                    created_ms: at_ms,
                    workspaces,
                };
                w.put(key(GROUP, &name), &g)?;
                Applied::Done
            }
            Command::RotateGroupToken { name, token_hash } => {
                let mut g = self.require_group(&name)?;
                g.token_hash = token_hash;
                w.put(key(GROUP, &name), &g)?;
                Applied::Done
            }
            Command::RegisterAgent {
                id,
                group,
                credential_hash,
                host,
                at_ms,
            } => {
                self.require_group(&group)?;
                let a = Agent {
                    id: id.clone(),
                    group,
                    credential_hash,
                    host,
                    registered_ms: at_ms,
                    last_seen_ms: at_ms,
                    connected: false,
                    boot_id: String::new(),
                    draining: false,
                    revoked_ms: 0,
                    revoked_reason: String::new(),
                };
                w.put(key(AGENT, &id), &a)?;
                Applied::Done
            }
            Command::AgentSeen {
                id,
                connected,
                host,
                boot_id,
                at_ms,
            } => {
                let Some(mut a) = self.agent(&id)? else {
                    return Ok(Applied::Stale(format!("agent {id} is not registered")));
                };
                a.connected = connected;
                a.last_seen_ms = at_ms;
                if let Some(h) = host {
                    a.host = h;
                }
                if let Some(b) = boot_id {
                    a.boot_id = b;
                }
                w.put(key(AGENT, &id), &a)?;
                Applied::Done
            }
            Command::RevokeAgent { id, reason, at_ms } => {
                let Some(mut a) = self.agent(&id)? else {
                    return Err(Error::NotFound {
                        what: "agent",
                        name: id,
                        hint: "see `ferry agent list`",
                    });
                };
                if !a.is_revoked() {
                    a.revoked_ms = at_ms;
                    a.revoked_reason = reason.clone();
                    a.connected = false;
                    w.put(key(AGENT, &id), &a)?;
                    for att in self.live_attempts()? {
                        if att.agent_id == id {
                            self.end_attempt(
                                w,
                                att,
                                AttemptState::Failed,
                                None,
                                format!(
                                    "agent {id} was revoked ({reason}); the attempt was stopped"
                                ),
                                at_ms,
                                true,
                            )?;
                        }
                    }
                }
                Applied::Done
            }
            Command::SetAgentDraining { id, draining } => {
                let Some(mut a) = self.agent(&id)? else {
                    return Err(Error::NotFound {
                        what: "agent",
                        name: id,
                        hint: "see `ferry agent list`",
                    });
                };
                a.draining = draining;
                w.put(key(AGENT, &id), &a)?;
                Applied::Done
            }
            Command::PutDataSource { record } => {
                w.put(key(DATASOURCE, &record.name), &record)?;
                Applied::Done
            }
            Command::RemoveDataSource { name } => {
                if self.datasource(&name)?.is_none() {
                    return Err(Error::NotFound {
                        what: "data source",
                        name,
                        hint: "see `ferry datasource list`",
                    });
                }
                w.batch.remove(key(DATASOURCE, &name));
                Applied::Done
            }
            Command::CreateTask {
                name,
                group,
                job_text,
                agent_labels,
                at_ms,
            } => {
                self.require_group(&group)?;
                let version = self.task(&name)?.map(|t| t.version).unwrap_or(0) + 1;
                let t = Task {
                    name: name.clone(),
                    group: group.clone(),
                    version,
                    updated_ms: at_ms,
                    agent_labels: agent_labels.clone(),
                };
                let v = TaskVersion {
                    task: name.clone(),
                    version,
                    group,
                    job_text,
                    created_ms: at_ms,
                    agent_labels,
                };
                w.put(key(TASK, &name), &t)?;
                w.put(version_key(&name, version), &v)?;
                Applied::TaskVersion(version)
            }
            Command::CreateInstance {
                id,
                task,
                bizdate,
                cyctime,
                at_ms,
            } => {
                let t = self.task(&task)?.ok_or_else(|| Error::NotFound {
                    what: "task",
                    name: task.clone(),
                    hint: "see `ferry task list`",
                })?;
                let i = Instance {
                    id: id.clone(),
                    task,
                    version: t.version,
                    group: t.group,
                    bizdate,
                    cyctime,
                    state: InstanceState::WaitingResources,
                    created_ms: at_ms,
                    finished_ms: 0,
                    attempts: Vec::new(),
                };
                w.put(key(INSTANCE, &id), &i)?;
                w.put(key(WAITING, &id), &id)?;
                Applied::Done
            }
            Command::DispatchAttempt {
                id,
                instance_id,
                agent_id,
                at_ms,
            } => {
                let mut inst = self.require_instance(&instance_id)?;
                if inst.state != InstanceState::WaitingResources {
                    return Ok(Applied::Stale(format!(
                        "instance {instance_id} is {}, not waiting",
                        inst.state.as_str()
                    )));
                }
                let fencing_token = self.counter(FENCING)? + 1;
                w.put(FENCING.as_bytes().to_vec(), &fencing_token)?;
                let a = Attempt {
                    id: id.clone(),
                    instance_id: instance_id.clone(),
                    agent_id,
                    fencing_token,
                    state: AttemptState::Dispatched,
                    dispatched_ms: at_ms,
                    started_ms: 0,
                    finished_ms: 0,
                    stats: Default::default(),
                    error: String::new(),
                    ended_by_scheduler: false,
                    late_report: String::new(),
                };
                inst.state = InstanceState::Dispatched;
                inst.attempts.push(id.clone());
                w.batch.remove(key(WAITING, &instance_id));
                w.put(key(LIVE, &id), &id)?;
                w.put(key(ATTEMPT, &id), &a)?;
                w.put(key(INSTANCE, &instance_id), &inst)?;
                Applied::Dispatched { fencing_token }
            }
            Command::AttemptStarted {
                id,
                agent_id,
                fencing_token,
                at_ms,
            } => {
                let mut a = match self.live_attempt(&id, fencing_token, Some(&agent_id))? {
                    Ok(a) => a,
                    Err(stale) => return Ok(stale),
                };
                let mut inst = self.require_instance(&a.instance_id)?;
                a.state = AttemptState::Running;
                a.started_ms = at_ms;
                inst.state = InstanceState::Running;
                w.put(key(ATTEMPT, &id), &a)?;
                w.put(key(INSTANCE, &a.instance_id), &inst)?;
                Applied::Done
            }
            Command::AppendLogs {
                attempt_id,
                agent_id,
                fencing_token,
                lines,
            } => {
                let Some(a) = self.attempt(&attempt_id)? else {
                    return Ok(Applied::Stale(format!("unknown attempt {attempt_id}")));
                };
                if a.fencing_token != fencing_token {
                    return Ok(Applied::Stale(format!(
                        "attempt {attempt_id} fenced: token {fencing_token} is not {}",
                        a.fencing_token
                    )));
                }
                if a.agent_id != agent_id {
                    return Ok(Applied::Stale(format!(
                        "agent {agent_id} sent log lines for attempt {attempt_id}, which belongs to agent {}",
                        a.agent_id
                    )));
                }
                if let Some(stale) = self.revoked(&agent_id)? {
                    return Ok(stale);
                }
                // Lines that arrive after the attempt finished (resent after a reconnect) are
                // still the attempt's own log: keep them.
                for line in lines {
                    w.put(log_key(&attempt_id, line.index), &line)?;
                }
                Applied::Done
            }
            Command::FinishAttempt {
                id,
                by,
                fencing_token,
                state,
                stats,
                error,
                at_ms,
            } => {
                let Some(a) = self.attempt(&id)? else {
                    return Ok(Applied::Stale(format!("unknown attempt {id}")));
                };
                if a.fencing_token != fencing_token {
                    return Ok(Applied::Stale(format!(
                        "attempt {id} fenced: token {fencing_token} is not {}",
                        a.fencing_token
                    )));
                }
                let agent = match &by {
                    Reporter::Agent(agent) => {
                        if *agent != a.agent_id {
                            return Ok(Applied::Stale(format!(
                                "agent {agent} reported attempt {id}, which belongs to agent {}",
                                a.agent_id
                            )));
                        }
                        if let Some(stale) = self.revoked(agent)? {
                            return Ok(stale);
                        }
                        Some(agent.as_str())
                    }
                    Reporter::Scheduler => None,
                };
                if !a.state.is_final() {
                    self.end_attempt(w, a, state, Some(stats), error, at_ms, agent.is_none())?;
                    Applied::Done
                } else if agent.is_some() {
                    self.late_report(w, a, state, stats, error, at_ms)?
                } else {
                    return Ok(Applied::Stale(format!(
                        "attempt {id} already {}",
                        a.state.as_str()
                    )));
                }
            }
        };
        Ok(result)
    }

    /// Why a report of `agent` counts for nothing, if it is revoked.
    fn revoked(&self, agent: &str) -> Result<Option<Applied>> {
        Ok(self
            .agent(agent)?
            .filter(Agent::is_revoked)
            .map(|_| Applied::Stale(format!("agent {agent} is revoked; its reports are refused"))))
    }

    /// Ends a live attempt and its instance in `w`.
    #[allow(clippy::too_many_arguments)]
    fn end_attempt(
        &self,
        w: &mut Writes,
        mut a: Attempt,
        state: AttemptState,
        stats: Option<Stats>,
        error: String,
        at_ms: i64,
        by_scheduler: bool,
    ) -> Result<()> {
        let mut inst = self.require_instance(&a.instance_id)?;
        a.state = state;
        if let Some(s) = stats {
            a.stats = s;
        }
        a.error = error;
        a.finished_ms = at_ms;
        a.ended_by_scheduler = by_scheduler;
        if a.started_ms == 0 {
            a.started_ms = at_ms;
        }
        // Only the instance's current attempt decides its state.
        if inst.attempts.last() == Some(&a.id) {
            inst.state = match state {
                AttemptState::Succeeded => InstanceState::Success,
                AttemptState::Killed => InstanceState::Killed,
                _ => InstanceState::Failed,
            };
            inst.finished_ms = at_ms;
            w.put(key(INSTANCE, &a.instance_id), &inst)?;
        }
        w.batch.remove(key(LIVE, &a.id));
        w.put(key(ATTEMPT, &a.id), &a)?;
        Ok(())
    }

    /// An agent's report on an attempt that has already ended. A success wins when the scheduler
    /// had given up on the attempt (lease, lost session) and nothing ran the instance since:
    /// the rows are in the target, so showing "failed" would invite a rerun that doubles them.
    /// Anything else is kept on the attempt for the operator to see, and changes nothing.
    fn late_report(
        &self,
        w: &mut Writes,
        mut a: Attempt,
        state: AttemptState,
        stats: Stats,
        error: String,
        at_ms: i64,
    ) -> Result<Applied> {
        if state == a.state {
            // The same result again: a resend after a reconnect.
            return Ok(Applied::Stale(format!(
                "attempt {} already {}",
                a.id,
                a.state.as_str()
            )));
        }
        let inst = self.require_instance(&a.instance_id)?;
        let current = inst.attempts.last() == Some(&a.id);
        let given_up = a.ended_by_scheduler && a.state == AttemptState::Failed;
        if state == AttemptState::Succeeded && given_up && current && !inst.state.is_active() {
            let mut inst = inst;
            a.late_report = format!(
                "the scheduler had failed this attempt ({}); the agent then reported success, which stands because no other attempt ran since",
                a.error
            );
            a.state = AttemptState::Succeeded;
            a.error = String::new();
            a.stats = stats;
            a.finished_ms = at_ms;
            inst.state = InstanceState::Success;
            inst.finished_ms = at_ms;
            w.batch.remove(key(WAITING, &inst.id));
            w.put(key(INSTANCE, &inst.id), &inst)?;
            w.put(key(ATTEMPT, &a.id), &a)?;
            return Ok(Applied::Done);
        }
        let note = format!(
            "after the attempt had ended as {}, its agent reported {}{}{}",
            a.state.as_str(),
            state.as_str(),
            if error.is_empty() { "" } else { ": " },
            error
        );
        if a.late_report != note {
            a.late_report = note.clone();
            w.put(key(ATTEMPT, &a.id), &a)?;
        }
        Ok(Applied::Stale(note))
    }

    /// The attempt, if it exists, carries `token`, belongs to `agent` (when given) and has not
    /// finished; otherwise why not.
    fn live_attempt(
        &self,
        id: &str,
        token: u64,
        agent: Option<&str>,
    ) -> Result<Result<Attempt, Applied>> {
        let Some(a) = self.attempt(id)? else {
            return Ok(Err(Applied::Stale(format!("unknown attempt {id}"))));
        };
        if a.fencing_token != token {
            return Ok(Err(Applied::Stale(format!(
                "attempt {id} fenced: token {token} is not {}",
                a.fencing_token
            ))));
        }
        if let Some(agent) = agent {
            if a.agent_id != agent {
                return Ok(Err(Applied::Stale(format!(
                    "agent {agent} reported attempt {id}, which belongs to agent {}",
                    a.agent_id
                ))));
            }
            if let Some(stale) = self.revoked(agent)? {
                return Ok(Err(stale));
            }
        }
        if a.state.is_final() {
            return Ok(Err(Applied::Stale(format!(
                "attempt {id} already {}",
                a.state.as_str()
            ))));
        }
        Ok(Ok(a))
    }

    fn require_group(&self, name: &str) -> Result<Group> {
        self.group(name)?.ok_or_else(|| Error::NotFound {
            what: "resource group",
            name: name.to_string(),
            hint: "see `ferry group list`",
        })
    }

    fn require_instance(&self, id: &str) -> Result<Instance> {
        self.instance(id)?.ok_or_else(|| Error::NotFound {
            what: "instance",
            name: id.to_string(),
            hint: "see `ferry instance list`",
        })
    }

    fn require_workspace(&self, name: &str) -> Result<Workspace> {
        self.workspace(name)?.ok_or_else(|| Error::NotFound {
            what: "workspace",
            name: name.to_string(),
            hint: "see `ferry workspace list`",
        })
    }

    pub fn workspace(&self, name: &str) -> Result<Option<Workspace>> {
        self.get(&key(WORKSPACE, name))
    }
    pub fn workspaces(&self) -> Result<Vec<Workspace>> {
        self.scan(WORKSPACE)
    }
    pub fn user(&self, name: &str) -> Result<Option<User>> {
        self.get(&key(USER, name))
    }
    pub fn users(&self) -> Result<Vec<User>> {
        self.scan(USER)
    }
    /// The token whose SHA-256 is `hash`.
    pub fn token_by_hash(&self, hash: &str) -> Result<Option<ApiToken>> {
        self.get(&key(TOKEN, hash))
    }
    pub fn tokens(&self) -> Result<Vec<ApiToken>> {
        self.scan(TOKEN)
    }
    /// Audit records, oldest first, from `since_ms` on, at most `limit` (the newest ones).
    pub fn audit(&self, since_ms: i64, limit: usize) -> Result<Vec<AuditRecord>> {
        let from = audit_key(since_ms, 0);
        let mut out = Vec::new();
        for item in self.tree.range(from..).rev() {
            let (k, v) = item?;
            if !k.starts_with(AUDIT.as_bytes()) {
                continue;
            }
            out.push(serde_json::from_slice(&v)?);
            if out.len() >= limit {
                break;
            }
        }
        out.reverse();
        Ok(out)
    }

    pub fn group(&self, name: &str) -> Result<Option<Group>> {
        self.get(&key(GROUP, name))
    }
    pub fn groups(&self) -> Result<Vec<Group>> {
        self.scan(GROUP)
    }
    pub fn agent(&self, id: &str) -> Result<Option<Agent>> {
        self.get(&key(AGENT, id))
    }
    pub fn agents(&self) -> Result<Vec<Agent>> {
        self.scan(AGENT)
    }
    pub fn datasource(&self, name: &str) -> Result<Option<DataSourceRecord>> {
        self.get(&key(DATASOURCE, name))
    }
    pub fn datasources(&self) -> Result<Vec<DataSourceRecord>> {
        self.scan(DATASOURCE)
    }
    pub fn task(&self, name: &str) -> Result<Option<Task>> {
        self.get(&key(TASK, name))
    }
    pub fn tasks(&self) -> Result<Vec<Task>> {
        self.scan(TASK)
    }
    pub fn task_version(&self, name: &str, version: u32) -> Result<Option<TaskVersion>> {
        self.get(&version_key(name, version))
    }
    pub fn instance(&self, id: &str) -> Result<Option<Instance>> {
        self.get(&key(INSTANCE, id))
    }
    /// Every instance, oldest first.
    pub fn instances(&self) -> Result<Vec<Instance>> {
        let mut all: Vec<Instance> = self.scan(INSTANCE)?;
        all.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(all)
    }
    /// Instances waiting for resources, oldest first.
    pub fn waiting_instances(&self) -> Result<Vec<Instance>> {
        let mut out = Vec::new();
        for id in self.scan::<String>(WAITING)? {
            if let Some(i) = self.instance(&id)? {
                out.push(i);
            }
        }
        out.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(out)
    }
    /// Attempts dispatched or running.
    pub fn live_attempts(&self) -> Result<Vec<Attempt>> {
        let mut out = Vec::new();
        for id in self.scan::<String>(LIVE)? {
            if let Some(a) = self.attempt(&id)? {
                out.push(a);
            }
        }
        Ok(out)
    }
    /// Attempts dispatched or running, per agent: the slots each agent has in use.
    pub fn running_per_agent(&self) -> Result<std::collections::HashMap<String, u32>> {
        let mut busy = std::collections::HashMap::new();
        for a in self.live_attempts()? {
            *busy.entry(a.agent_id).or_default() += 1;
        }
        Ok(busy)
    }
    pub fn attempt(&self, id: &str) -> Result<Option<Attempt>> {
        self.get(&key(ATTEMPT, id))
    }
    pub fn attempts(&self) -> Result<Vec<Attempt>> {
        self.scan(ATTEMPT)
    }
    /// The stored log of an attempt, in order.
    pub fn logs(&self, attempt_id: &str) -> Result<Vec<LogRecord>> {
        self.scan(&format!("{LOG}{attempt_id}/"))
    }
}

#[cfg(test)]
mod tests;
