//! Catalog commands: workspaces, users, tokens, resource groups, agents, data sources and task
//! versions.

use super::attempts::Ending;
use super::command::{Applied, Command};
use super::lifecycle::Changes;
use super::model::{
    Agent, ApiToken, AttemptState, DataSourceRecord, DependencySpec, Group, Task, TaskVersion,
    User, Workspace,
};
use super::{
    AGENT, DATASOURCE, GROUP, Store, TASK, TOKEN, USER, WORKSPACE, Writes, key, version_key,
};
use crate::error::{Error, Result};

impl Store {
    pub(super) fn apply_catalog(&self, cmd: Command, w: &mut Writes) -> Result<Applied> {
        let result = match cmd {
            Command::CreateWorkspace { name, at_ms } => {
                if self.get_in::<Workspace>(w, WORKSPACE, &name)?.is_some() {
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
            Command::Bootstrap {
                workspace,
                user,
                token,
                at_ms,
            } => {
                if self
                    .get_in::<Workspace>(w, WORKSPACE, &workspace)?
                    .is_none()
                {
                    w.put(
                        key(WORKSPACE, &workspace),
                        &Workspace {
                            name: workspace.clone(),
                            created_ms: at_ms,
                        },
                    )?;
                }
                if !self.keys_in(w, USER)?.is_empty() {
                    return Ok(Applied::Stale("the cluster already has users".into()));
                }
                w.put(
                    key(USER, &user),
                    &User {
                        name: user.clone(),
                        cluster_admin: true,
                        roles: Default::default(),
                        created_ms: at_ms,
                        password_hash: String::new(),
                    },
                )?;
                w.put(key(TOKEN, &token.hash), &token)?;
                for mut g in self.scan_in::<Group>(w, GROUP)? {
                    if g.workspaces.is_empty() {
                        g.workspaces.push(workspace.clone());
                        w.put(key(GROUP, &g.name), &g)?;
                    }
                }
                Applied::Done
            }
            Command::CreateUser {
                name,
                cluster_admin,
                at_ms,
            } => {
                if self.get_in::<User>(w, USER, &name)?.is_some() {
                    return Err(Error::AlreadyExists { what: "user", name });
                }
                w.put(
                    key(USER, &name),
                    &User {
                        name: name.clone(),
                        cluster_admin,
                        roles: Default::default(),
                        created_ms: at_ms,
                        password_hash: String::new(),
                    },
                )?;
                Applied::Done
            }
            Command::SetRole {
                user,
                workspace,
                role,
            } => {
                let mut u =
                    self.get_in::<User>(w, USER, &user)?
                        .ok_or_else(|| Error::NotFound {
                            what: "user",
                            name: user.clone(),
                            hint: "see `ferry user list`",
                        })?;
                self.require_workspace(w, &workspace)?;
                match role {
                    Some(r) => u.roles.insert(workspace, r),
                    None => u.roles.remove(&workspace),
                };
                w.put(key(USER, &user), &u)?;
                Applied::Done
            }
            Command::SetPassword { user, hash } => {
                let mut u =
                    self.get_in::<User>(w, USER, &user)?
                        .ok_or_else(|| Error::NotFound {
                            what: "user",
                            name: user.clone(),
                            hint: "see `ferry user list`",
                        })?;
                u.password_hash = hash;
                w.put(key(USER, &user), &u)?;
                Applied::Done
            }
            Command::CreateToken { token } => {
                if self.get_in::<User>(w, USER, &token.user)?.is_none() {
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
                    .scan_in::<ApiToken>(w, TOKEN)?
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
                let mut g = self.require_group(w, &group)?;
                self.require_workspace(w, &workspace)?;
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
                if self.get_in::<Group>(w, GROUP, &name)?.is_some() {
                    return Err(Error::AlreadyExists {
                        what: "resource group",
                        name,
                    });
                }
                for ws in &workspaces {
                    self.require_workspace(w, ws)?;
                }
                let g = Group {
                    name: name.clone(),
                    token_hash,
                    created_ms: at_ms,
                    workspaces,
                    max_concurrency: 0,
                    allow_shell: false,
                };
                w.put(key(GROUP, &name), &g)?;
                Applied::Done
            }
            Command::RotateGroupToken { name, token_hash } => {
                let mut g = self.require_group(w, &name)?;
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
                self.require_group(w, &group)?;
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
                let Some(mut a) = self.get_in::<Agent>(w, AGENT, &id)? else {
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
                let Some(mut a) = self.get_in::<Agent>(w, AGENT, &id)? else {
                    return Err(Error::NotFound {
                        what: "agent",
                        name: id,
                        hint: "see `ferry agent list`",
                    });
                };
                let mut changes = Changes::default();
                if !a.is_revoked() {
                    a.revoked_ms = at_ms;
                    a.revoked_reason = reason.clone();
                    a.connected = false;
                    w.put(key(AGENT, &id), &a)?;
                    for att in self.live_attempts_in(w)? {
                        if att.holds(&id) {
                            self.end_attempt(
                                w,
                                att,
                                Ending::by_scheduler(
                                    AttemptState::Failed,
                                    format!(
                                        "agent {id} was revoked ({reason}); the attempt was stopped"
                                    ),
                                ),
                                at_ms,
                                &mut changes,
                            )?;
                        }
                    }
                }
                changes.applied()
            }
            Command::SetAgentDraining { id, draining } => {
                let Some(mut a) = self.get_in::<Agent>(w, AGENT, &id)? else {
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
                if self
                    .get_in::<DataSourceRecord>(w, DATASOURCE, &name)?
                    .is_none()
                {
                    return Err(Error::NotFound {
                        what: "data source",
                        name,
                        hint: "see `ferry datasource list`",
                    });
                }
                w.remove(key(DATASOURCE, &name));
                Applied::Done
            }
            Command::SubmitTask {
                version,
                submit_id,
                first_day,
                at_ms,
            } => {
                self.require_group(w, &version.group)?;
                for d in &version.dependencies {
                    let DependencySpec { upstream, .. } = d;
                    if *upstream != version.task
                        && self.get_in::<Task>(w, TASK, upstream)?.is_none()
                    {
                        return Err(Error::NotFound {
                            what: "upstream task",
                            name: upstream.clone(),
                            hint: "submit it first; see `ferry task list`",
                        });
                    }
                }
                let name = version.task.clone();
                let previous = self.get_in::<Task>(w, TASK, &name)?;
                if let Some(t) = &previous
                    && t.last_submit == submit_id
                {
                    // A retried submit: the version exists already.
                    return Ok(Applied::TaskVersion(t.version));
                }
                let number = previous.as_ref().map(|t| t.version).unwrap_or(0) + 1;
                let t = Task {
                    name: name.clone(),
                    group: version.group.clone(),
                    version: number,
                    updated_ms: at_ms,
                    agent_labels: version.agent_labels.clone(),
                    frozen: previous.as_ref().is_some_and(|t| t.frozen),
                    // The first day with a schedule stays: resubmitting does not delay it.
                    first_day: previous
                        .as_ref()
                        .and_then(|t| t.first_day)
                        .or(first_day)
                        .filter(|_| version.schedule.is_some()),
                    last_submit: submit_id,
                };
                let v = TaskVersion {
                    version: number,
                    created_ms: at_ms,
                    ..version
                };
                w.put(key(TASK, &name), &t)?;
                w.put(version_key(&name, number), &v)?;
                Applied::TaskVersion(number)
            }
            Command::ResealJobText {
                task,
                version,
                job_text,
            } => {
                let Some(mut v) = self.read::<TaskVersion>(w, &version_key(&task, version))? else {
                    return Err(Error::NotFound {
                        what: "task version",
                        name: format!("{task} v{version}"),
                        hint: "see `ferry task list`",
                    });
                };
                v.job_text = job_text;
                w.put(version_key(&task, version), &v)?;
                Applied::Done
            }
            Command::SetGroupOptions {
                group,
                max_concurrency,
                allow_shell,
            } => {
                let mut g = self.require_group(w, &group)?;
                if let Some(n) = max_concurrency {
                    g.max_concurrency = n;
                }
                if let Some(s) = allow_shell {
                    g.allow_shell = s;
                }
                w.put(key(GROUP, &group), &g)?;
                Applied::Done
            }
            other => {
                return Err(Error::InvalidArgument(format!(
                    "not a catalog command: {other:?}"
                )));
            }
        };
        Ok(result)
    }

    pub(super) fn require_group(&self, w: &Writes, name: &str) -> Result<Group> {
        self.get_in::<Group>(w, GROUP, name)?
            .ok_or_else(|| Error::NotFound {
                what: "resource group",
                name: name.to_string(),
                hint: "see `ferry group list`",
            })
    }

    fn require_workspace(&self, w: &Writes, name: &str) -> Result<Workspace> {
        self.get_in::<Workspace>(w, WORKSPACE, name)?
            .ok_or_else(|| Error::NotFound {
                what: "workspace",
                name: name.to_string(),
                hint: "see `ferry workspace list`",
            })
    }
}
