//! Random logs of realistic commands. Generated choices ([`Op`]: a kind and four bytes) become
//! commands against a reference store that applies the log as it is made: a dispatch mostly
//! picks an instance that waits for resources, a report an attempt with its agent and fencing
//! token, or on purpose a wrong one. Names come from small alphabets, so duplicates and unknown
//! names happen, and the log reaches retries, timeouts, late reports and downstream instances
//! rather than being refused at its first step.

use anyhow::{Result, anyhow};
use chrono::NaiveDate;
use ferry_common::datasource::{CsvFolder, DataSourceConfig};
use ferry_scheduler::state::Store;
use ferry_scheduler::state::command::{Command, Reporter};
use ferry_scheduler::state::model::{
    ApiToken, AttemptState, AuditRecord, Backfill, DataSourceRecord, DependencySpec, HostInfo,
    Instance, InstanceState, LogRecord, RerunPolicy, Role, RunKind, ScheduleSpec, Stats, TaskKind,
    TaskVersion, Transition,
};
use ferry_scheduler::state::replica::encode_command;
use proptest::prelude::*;
use std::collections::BTreeMap;

const WORKSPACES: &[&str] = &["ws1", "ws2"];
const GROUPS: &[&str] = &["g1", "g2", "g3"];
const AGENTS: &[&str] = &["a1", "a2", "a3"];
const USERS: &[&str] = &["alice", "bob"];
const DATASOURCES: &[&str] = &["ws1/orders", "ws1/users"];
const TASKS: &[&str] = &["ws1/t1", "ws1/t2", "ws1/t3"];
/// Business dates of generated and manual instances.
const DAYS: &[&str] = &["20260101", "20260102"];
/// Log entries no proposer writes; each is refused as undecodable.
const GARBAGE: &[&[u8]] = &[b"Jnull", b"Z\x00\x01\x02", b"x"];
/// The time of the first command (2026-01-01T00:00:00Z); each command is a second later.
const START_MS: i64 = 1_767_225_600_000;

/// Which command an [`Op`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Workspace,
    Group,
    BindGroup,
    User,
    SetRole,
    Token,
    RevokeToken,
    Bootstrap,
    RegisterAgent,
    AgentSeen,
    RevokeAgent,
    Drain,
    GroupOptions,
    PutDataSource,
    RemoveDataSource,
    Submit,
    Reseal,
    AddInstances,
    Run,
    Tick,
    Rerun,
    Kill,
    Freeze,
    TaskFrozen,
    MarkSuccess,
    Backfill,
    Dispatch,
    Started,
    Logs,
    Finish,
    RecordAudit,
    /// An entry raft writes itself (a new leader's, a membership change): no command.
    Empty,
    Garbage,
}

/// Kinds as often as they are drawn; shrinking moves towards the front.
const KINDS: &[Kind] = {
    use Kind::*;
    &[
        Tick,
        Tick,
        Tick,
        Dispatch,
        Dispatch,
        Dispatch,
        Dispatch,
        Dispatch,
        Finish,
        Finish,
        Finish,
        Finish,
        Finish,
        Started,
        Started,
        Started,
        Run,
        Run,
        Run,
        AddInstances,
        AddInstances,
        AddInstances,
        Submit,
        Submit,
        Submit,
        Workspace,
        Group,
        Group,
        RegisterAgent,
        RegisterAgent,
        Logs,
        Logs,
        Rerun,
        Rerun,
        Kill,
        Kill,
        Backfill,
        Backfill,
        Freeze,
        TaskFrozen,
        MarkSuccess,
        BindGroup,
        User,
        SetRole,
        Token,
        RevokeToken,
        Bootstrap,
        AgentSeen,
        RevokeAgent,
        Drain,
        GroupOptions,
        PutDataSource,
        RemoveDataSource,
        Reseal,
        RecordAudit,
        Empty,
        Garbage,
    ]
};

/// One generated choice: a kind and four bytes that pick its names and values.
#[derive(Debug, Clone)]
pub struct Op {
    kind: Kind,
    a: u8,
    b: u8,
    c: u8,
    d: u8,
    /// Made through the admin API: wrapped in `Command::Audited`.
    audited: bool,
}

fn op(kind: Kind, a: u8, b: u8, c: u8, d: u8) -> Op {
    Op {
        kind,
        a,
        b,
        c,
        d,
        audited: false,
    }
}

/// What most logs start with, so they get to instances and attempts: workspace ws1, group g1
/// bound to it, agent a1 connected in g1, task t1 and task t2 downstream of it, each with one
/// retry and a timeout of 3 s.
pub fn preamble() -> Vec<Op> {
    vec![
        op(Kind::Workspace, 0, 0, 0, 0),
        op(Kind::Group, 0, 0, 1, 0),
        op(Kind::RegisterAgent, 0, 0, 0, 1),
        op(Kind::AgentSeen, 0, 1, 1, 0),
        op(Kind::Submit, 0, 0, 4, 28),
        op(Kind::Submit, 1, 0, 0, 28),
    ]
}

/// The most generated commands in a log (after the preamble).
pub const MAX_OPS: usize = 60;

pub fn op_strategy() -> impl Strategy<Value = Op> {
    (
        proptest::sample::select(KINDS),
        any::<[u8; 4]>(),
        proptest::bool::weighted(0.08),
    )
        .prop_map(|(kind, [a, b, c, d], audited)| Op {
            kind,
            a,
            b,
            c,
            d,
            audited,
        })
}

fn pick<'a>(names: &[&'a str], i: u8) -> &'a str {
    names[i as usize % names.len()]
}

fn date(yyyymmdd: &str) -> Result<NaiveDate> {
    Ok(NaiveDate::parse_from_str(yyyymmdd, "%Y%m%d")?)
}

/// Makes commands from [`Op`]s, looking at the reference store for instances and attempts that
/// exist, and keeps the clock.
pub struct Maker<'a> {
    store: &'a Store,
    now: i64,
}

impl<'a> Maker<'a> {
    pub fn new(store: &'a Store) -> Self {
        Self {
            store,
            now: START_MS,
        }
    }

    /// The log entry of `op`, the `pos`-th command of the log.
    pub fn entry(&mut self, pos: usize, op: &Op) -> Result<Vec<u8>> {
        self.now += 1000;
        let cmd = match op.kind {
            Kind::Empty => return Ok(Vec::new()),
            Kind::Garbage => return Ok(GARBAGE[op.a as usize % GARBAGE.len()].to_vec()),
            _ => self.command(pos, op)?,
        };
        let cmd = if op.audited {
            Command::Audited {
                record: self.audit(op),
                change: Box::new(cmd),
            }
        } else {
            cmd
        };
        Ok(encode_command(&cmd)?)
    }

    fn command(&mut self, pos: usize, op: &Op) -> Result<Command> {
        let Op { a, b, c, d, .. } = *op;
        let at_ms = self.now;
        Ok(match op.kind {
            Kind::Workspace => Command::CreateWorkspace {
                name: pick(WORKSPACES, a).into(),
                at_ms,
            },
            Kind::Group => Command::CreateGroup {
                name: pick(GROUPS, a).into(),
                token_hash: format!("group-token-{b}"),
                workspaces: if c % 2 == 1 {
                    vec![pick(WORKSPACES, b).into()]
                } else {
                    Vec::new()
                },
                at_ms,
            },
            Kind::BindGroup => Command::BindGroup {
                group: pick(GROUPS, a).into(),
                workspace: pick(WORKSPACES, b).into(),
                bind: c.is_multiple_of(2),
            },
            Kind::User => Command::CreateUser {
                name: pick(USERS, a).into(),
                cluster_admin: b.is_multiple_of(2),
                at_ms,
            },
            Kind::SetRole => Command::SetRole {
                user: pick(USERS, a).into(),
                workspace: pick(WORKSPACES, b).into(),
                role: [
                    None,
                    Some(Role::Viewer),
                    Some(Role::Operator),
                    Some(Role::Developer),
                    Some(Role::Admin),
                ][c as usize % 5],
            },
            Kind::Token => Command::CreateToken {
                token: self.token(pick(USERS, a), b),
            },
            Kind::RevokeToken => Command::RevokeToken {
                id: format!("tok{}", a % 4),
                at_ms,
            },
            Kind::Bootstrap => Command::Bootstrap {
                workspace: pick(WORKSPACES, a).into(),
                user: pick(USERS, b).into(),
                token: self.token(pick(USERS, b), c),
                at_ms,
            },
            Kind::RegisterAgent => Command::RegisterAgent {
                id: pick(AGENTS, a).into(),
                group: pick(GROUPS, b).into(),
                credential_hash: format!("credential-{c}"),
                host: host(d),
                at_ms,
            },
            Kind::AgentSeen => Command::AgentSeen {
                id: pick(AGENTS, a).into(),
                connected: b % 3 != 0,
                host: c.is_multiple_of(2).then(|| host(d)),
                boot_id: (b % 2 == 1).then(|| format!("boot-{}", c % 3)),
                at_ms,
            },
            Kind::RevokeAgent => Command::RevokeAgent {
                id: pick(AGENTS, a).into(),
                reason: "uninstalled".into(),
                at_ms,
            },
            Kind::Drain => Command::SetAgentDraining {
                id: pick(AGENTS, a).into(),
                draining: b.is_multiple_of(2),
            },
            Kind::GroupOptions => Command::SetGroupOptions {
                group: pick(GROUPS, a).into(),
                max_concurrency: (!b.is_multiple_of(3)).then_some(u32::from(b % 4)),
                allow_shell: (!c.is_multiple_of(3)).then_some(c.is_multiple_of(2)),
            },
            Kind::PutDataSource => Command::PutDataSource {
                record: DataSourceRecord {
                    name: pick(DATASOURCES, a).into(),
                    config: DataSourceConfig::Csv(CsvFolder {
                        path: format!("/data/{}", b % 3),
                    }),
                    groups: vec![pick(GROUPS, c).into()],
                    updated_ms: at_ms,
                },
            },
            Kind::RemoveDataSource => Command::RemoveDataSource {
                name: pick(DATASOURCES, a).into(),
            },
            Kind::Submit => self.submit(a, b, c, d)?,
            Kind::Reseal => Command::ResealJobText {
                task: pick(TASKS, a).into(),
                version: 1 + u32::from(b % 3),
                job_text: format!("{{\"sealed\":{c}}}"),
            },
            Kind::AddInstances => {
                let mut instances = Vec::new();
                for k in 0..=(d % 3) {
                    let task = pick(TASKS, a.wrapping_add(k));
                    let day = (b >> k) % 2;
                    let due_ms = at_ms + i64::from((c >> k) % 8) * 1000;
                    let mut inst = self.instance(
                        task,
                        DAYS[day as usize],
                        format!("{task}@{}", DAYS[day as usize]),
                        RunKind::Scheduled,
                        due_ms,
                    )?;
                    if task != TASKS[0] && (d >> (2 + k)).is_multiple_of(2) {
                        inst.upstream = vec![format!("{}@{}", TASKS[0], DAYS[day as usize])];
                    }
                    if day == 1 && (c >> (4 + k)).is_multiple_of(2) {
                        inst.previous = vec![format!("{task}@{}", DAYS[0])];
                    }
                    if (a >> (5 + k)).is_multiple_of(4) {
                        inst.dry_run = "expired".into();
                    }
                    instances.push(inst);
                }
                let generated = match (c >> 6) % 2 {
                    0 => Some(("UTC".to_string(), date(DAYS[b as usize % 2])?)),
                    _ => None,
                };
                Command::AddInstances {
                    instances,
                    generated,
                    at_ms,
                }
            }
            Kind::Run => {
                let task = pick(TASKS, a);
                let day = pick(DAYS, b);
                Command::RunTask {
                    instance: self.instance(
                        task,
                        day,
                        format!("{task}@run-{day}"),
                        RunKind::Manual,
                        at_ms,
                    )?,
                    at_ms,
                }
            }
            Kind::Tick => {
                self.now += i64::from(a % 16) * 1000;
                Command::Tick { at_ms: self.now }
            }
            Kind::Rerun => {
                let mut ids = vec![self.any_instance(a)?];
                if c.is_multiple_of(3) {
                    ids.push(self.any_instance(b)?);
                }
                Command::Rerun {
                    ids,
                    reason: "rerun by alice".into(),
                    at_ms,
                }
            }
            Kind::Kill => Command::KillInstance {
                id: self.busy_instance(a)?,
                reason: "killed by alice".into(),
                at_ms,
            },
            Kind::Freeze => {
                let mut ids = vec![self.any_instance(a)?];
                if c.is_multiple_of(3) {
                    ids.push(self.any_instance(b)?);
                }
                Command::Freeze {
                    ids,
                    freeze: d % 3 != 0,
                    reason: "held by alice".into(),
                    at_ms,
                }
            }
            Kind::TaskFrozen => Command::SetTaskFrozen {
                task: pick(TASKS, a).into(),
                frozen: b.is_multiple_of(2),
                at_ms,
            },
            Kind::MarkSuccess => Command::MarkSuccess {
                id: self.any_instance(a)?,
                reason: "marked by alice".into(),
                at_ms,
            },
            Kind::Backfill => self.backfill(a, b, c, d)?,
            Kind::Dispatch => {
                let waiting = self.store.waiting_instances()?;
                let instance_id = if !waiting.is_empty() && a % 4 != 3 {
                    waiting[a as usize % waiting.len()].id.clone()
                } else {
                    self.any_instance(a)?
                };
                Command::DispatchAttempt {
                    id: format!("x{pos}"),
                    instance_id,
                    // An empty agent: the dispatcher could not resolve the job.
                    agent_id: match b % 8 {
                        7 => String::new(),
                        3 => pick(AGENTS, b / 8).into(),
                        _ => AGENTS[0].into(),
                    },
                    at_ms,
                }
            }
            Kind::Started => {
                let (id, agent_id, fencing_token) = self.report(a, b)?;
                Command::AttemptStarted {
                    id,
                    agent_id,
                    fencing_token,
                    at_ms,
                }
            }
            Kind::Logs => {
                let (attempt_id, agent_id, fencing_token) = self.report(a, b)?;
                // Sometimes enough lines to be deflated in the log.
                let n = if d.is_multiple_of(4) {
                    40
                } else {
                    u64::from(d % 4)
                };
                let from = u64::from(c % 8);
                let lines = (from..from + n)
                    .map(|index| LogRecord {
                        index,
                        ts_ms: at_ms,
                        level: "INFO".into(),
                        message: format!("copied rows of split {index} of the orders table"),
                    })
                    .collect();
                Command::AppendLogs {
                    attempt_id,
                    agent_id,
                    fencing_token,
                    lines,
                }
            }
            Kind::Finish => {
                let (id, agent, fencing_token) = self.report(a, b)?;
                let state = [
                    AttemptState::Succeeded,
                    AttemptState::Succeeded,
                    AttemptState::Failed,
                    AttemptState::Killed,
                ][c as usize % 4];
                Command::FinishAttempt {
                    id,
                    by: if d.is_multiple_of(5) {
                        Reporter::Scheduler
                    } else {
                        Reporter::Agent(agent)
                    },
                    fencing_token,
                    state,
                    stats: Stats {
                        records_read: u64::from(d),
                        records_written: u64::from(d),
                        elapsed_ms: 1000,
                        ..Stats::default()
                    },
                    error: match state {
                        AttemptState::Succeeded => String::new(),
                        _ => "connection reset by the source".into(),
                    },
                    at_ms,
                }
            }
            Kind::RecordAudit => Command::RecordAudit {
                record: AuditRecord {
                    outcome: "permission denied".into(),
                    ..self.audit(op)
                },
            },
            Kind::Empty | Kind::Garbage => {
                return Err(anyhow!("{:?} makes no command", op.kind));
            }
        })
    }

    fn token(&self, user: &str, t: u8) -> ApiToken {
        ApiToken {
            id: format!("tok{}", t % 3),
            user: user.into(),
            hash: format!("token-hash-{}", t % 3),
            name: "cli".into(),
            created_ms: self.now,
            expires_ms: 0,
            revoked_ms: 0,
        }
    }

    fn audit(&self, op: &Op) -> AuditRecord {
        AuditRecord {
            // Several records in one second now and then.
            at_ms: self.now - i64::from(op.d % 2) * 1000,
            user: pick(USERS, op.b).into(),
            action: format!("{:?}", op.kind),
            workspace: "ws1".into(),
            target: pick(TASKS, op.a).into(),
            from: "10.0.0.9:5500".into(),
            outcome: "ok".into(),
        }
    }

    fn submit(&self, a: u8, b: u8, c: u8, d: u8) -> Result<Command> {
        let task = pick(TASKS, a);
        let kind = [
            TaskKind::Sync,
            TaskKind::Sync,
            TaskKind::Shell,
            TaskKind::Virtual,
        ][(a / 3) as usize % 4];
        let schedule = (b / 12) % 2 == 1;
        let dependencies = match c % 5 {
            4 => Vec::new(),
            3 => vec![DependencySpec {
                upstream: "ws1/ghost".into(),
                previous: false,
            }],
            n => vec![DependencySpec {
                upstream: TASKS[n as usize].into(),
                previous: (c / 5) % 2 == 1,
            }],
        };
        Ok(Command::SubmitTask {
            version: TaskVersion {
                task: task.into(),
                version: 0,
                group: pick(GROUPS, b).into(),
                job_text: format!("{{\"job\":{d}}}"),
                created_ms: 0,
                agent_labels: Default::default(),
                writer_group: String::new(),
                kind,
                schedule: schedule.then(|| ScheduleSpec {
                    cron: "0 0 2 * * *".into(),
                    timezone: "UTC".into(),
                }),
                start_date: None,
                end_date: None,
                priority: i32::from(d % 3),
                timeout_secs: [0, 0, 1, 3][(d / 9) as usize % 4],
                dependencies,
                params: String::new(),
                rerun: [
                    RerunPolicy::Always,
                    RerunPolicy::OnlyAfterFailure,
                    RerunPolicy::Never,
                ][(d / 36) as usize % 3],
                retries: u32::from(d % 3),
                retry_interval_secs: u64::from((d / 3) % 3),
            },
            // A retried submit repeats the id of the last one.
            submit_id: format!("s{}", (b / 3) % 4),
            first_day: schedule.then(|| date(DAYS[1])).transpose()?,
            at_ms: self.now,
        })
    }

    fn backfill(&self, a: u8, b: u8, c: u8, d: u8) -> Result<Command> {
        let id = format!("bf{}", a % 3);
        let task = pick(TASKS, b);
        let days: Vec<String> = (0..=(c % 3)).map(|k| format!("2025121{k}")).collect();
        let mut instances = Vec::new();
        for (k, day) in days.iter().enumerate() {
            let mut inst = self.instance(
                task,
                day,
                format!("{task}@{id}-{k}"),
                RunKind::Backfill {
                    id: id.clone(),
                    day: k as u32,
                },
                self.now,
            )?;
            if k > 0 && d % 4 >= 2 {
                inst.previous = vec![format!("{task}@{id}-{}", k - 1)];
            }
            instances.push(inst);
        }
        Ok(Command::CreateBackfill {
            backfill: Backfill {
                id,
                task: task.into(),
                downstream: false,
                parallelism: 1 + u32::from(d % 2),
                remaining: vec![1; days.len()],
                days,
                created_ms: self.now,
                user: "alice".into(),
            },
            instances,
            at_ms: self.now,
        })
    }

    /// An instance of `task` as generation or a manual run plans it from the task's latest
    /// version (or a version that does not exist, when the task does not).
    fn instance(
        &self,
        task: &str,
        bizdate: &str,
        id: String,
        run: RunKind,
        due_ms: i64,
    ) -> Result<Instance> {
        let latest = match self.store.task(task)? {
            Some(t) => self.store.task_version(task, t.version)?,
            None => None,
        };
        let (version, group, kind, priority, retries) = latest
            .map(|v| (v.version, v.group, v.kind, v.priority, v.retries))
            .unwrap_or((1, GROUPS[0].into(), TaskKind::Sync, 0, 0));
        Ok(Instance {
            id,
            task: task.into(),
            version,
            group,
            bizdate: bizdate.into(),
            cyctime: format!("{bizdate}020000"),
            state: InstanceState::WaitingUpstream,
            created_ms: self.now,
            finished_ms: 0,
            attempts: Vec::new(),
            run,
            node_type: kind,
            due_ms,
            ready_ms: 0,
            priority,
            params: None,
            upstream: Vec::new(),
            previous: Vec::new(),
            dry_run: String::new(),
            retries_left: retries,
            history: vec![Transition {
                at_ms: self.now,
                state: InstanceState::WaitingUpstream,
                reason: "planned by the test".into(),
            }],
        })
    }

    /// An instance that exists, or now and then one that does not.
    fn any_instance(&self, p: u8) -> Result<String> {
        let all = self.store.instances()?;
        if all.is_empty() || p % 8 == 7 {
            return Ok("ws1/t1@nowhere".into());
        }
        Ok(all[p as usize % all.len()].id.clone())
    }

    /// Mostly an instance that waits or runs.
    fn busy_instance(&self, p: u8) -> Result<String> {
        let busy: Vec<String> = self
            .store
            .instances()?
            .into_iter()
            .filter(|i| i.state.is_waiting() || i.state.is_active())
            .map(|i| i.id)
            .collect();
        if busy.is_empty() || p % 4 == 3 {
            return self.any_instance(p);
        }
        Ok(busy[p as usize % busy.len()].clone())
    }

    /// An attempt an agent reports on (mostly a live one) as `(id, agent, token)`: right, or
    /// with a stale token or from another agent when `fault` says so.
    fn report(&self, p: u8, fault: u8) -> Result<(String, String, u64)> {
        let live = self.store.live_attempts()?;
        let all = self.store.attempts()?;
        let chosen = if !live.is_empty() && p % 4 != 3 {
            Some(&live[p as usize % live.len()])
        } else if !all.is_empty() && p % 8 != 7 {
            Some(&all[p as usize % all.len()])
        } else {
            None
        };
        let Some(a) = chosen else {
            return Ok(("x-unknown".into(), AGENTS[0].into(), 1));
        };
        Ok(match fault % 8 {
            6 if fault % 16 < 8 => (a.id.clone(), a.agent_id.clone(), a.fencing_token + 1),
            6 => (
                a.id.clone(),
                a.agent_id.clone(),
                a.fencing_token.saturating_sub(1),
            ),
            7 => {
                let other = AGENTS
                    .iter()
                    .find(|x| **x != a.agent_id)
                    .copied()
                    .unwrap_or("a9");
                (a.id.clone(), other.into(), a.fencing_token)
            }
            _ => (a.id.clone(), a.agent_id.clone(), a.fencing_token),
        })
    }
}

fn host(d: u8) -> HostInfo {
    HostInfo {
        hostname: format!("host-{}", d % 3),
        addresses: vec!["10.0.0.7".into()],
        version: "0.1.0".into(),
        slots: 1 + u32::from(d % 3),
        os: "linux".into(),
        labels: if d.is_multiple_of(2) {
            BTreeMap::new()
        } else {
            BTreeMap::from([("zone".to_string(), "a".to_string())])
        },
    }
}
