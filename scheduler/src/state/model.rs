//! Records the state machine keeps. They are serialized as JSON in one sled tree so one atomic
//! batch can change several of them (an attempt and its instance) together.

use chrono::NaiveDate;
use ferry_common::datasource::DataSourceConfig;
use ferry_common::params::ResolvedParams;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Labels of an agent (`--labels zone=a`), and the labels a task requires of its agent.
pub type Labels = BTreeMap<String, String>;

/// A resource group: a set of agents that can reach the same networks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    /// SHA-256 of the registration token; the token itself is shown once.
    pub token_hash: String,
    pub created_ms: i64,
    /// Workspaces whose tasks may run on this group's agents.
    #[serde(default)]
    pub workspaces: Vec<String>,
    /// Most attempts the group runs at once (0: only its agents' slots limit it).
    #[serde(default)]
    pub max_concurrency: u32,
    /// Whether its agents run shell tasks.
    #[serde(default)]
    pub allow_shell: bool,
}

/// Facts an agent reports about its host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    pub hostname: String,
    pub addresses: Vec<String>,
    pub version: String,
    pub slots: u32,
    pub os: String,
    #[serde(default)]
    pub labels: Labels,
}

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub id: String,
    pub group: String,
    pub credential_hash: String,
    pub host: HostInfo,
    pub registered_ms: i64,
    /// Last time the agent connected or disconnected, as recorded in the log.
    pub last_seen_ms: i64,
    pub connected: bool,
    /// The agent process's random id at its last session; a new one means it restarted.
    #[serde(default)]
    pub boot_id: String,
    /// Finishes what runs, takes nothing new.
    #[serde(default)]
    pub draining: bool,
    /// When the agent was revoked (or uninstalled); 0 while it may connect.
    #[serde(default)]
    pub revoked_ms: i64,
    #[serde(default)]
    pub revoked_reason: String,
}

impl Agent {
    pub fn is_revoked(&self) -> bool {
        self.revoked_ms > 0
    }

    /// Whether the agent carries every label in `required`.
    pub fn has_labels(&self, required: &Labels) -> bool {
        required
            .iter()
            .all(|(k, v)| self.host.labels.get(k) == Some(v))
    }
}

/// A catalog data source; secrets inside `config` are sealed (encrypted) at rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSourceRecord {
    pub name: String,
    pub config: DataSourceConfig,
    pub groups: Vec<String>,
    pub updated_ms: i64,
}

/// A task (a node of the DAG) and its latest version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// `workspace/name`.
    pub name: String,
    pub group: String,
    pub version: u32,
    pub updated_ms: i64,
    #[serde(default)]
    pub agent_labels: Labels,
    /// New instances are created frozen; the task's waiting instances were frozen with it.
    #[serde(default)]
    pub frozen: bool,
    /// The first day nightly generation makes instances of (the T+1 rule: the day after the
    /// first submit with a schedule, in the schedule's zone).
    #[serde(default)]
    pub first_day: Option<NaiveDate>,
    /// The id of the submit that made the latest version, so a retried submit is a no-op.
    #[serde(default)]
    pub last_submit: String,
}

/// What an instance of a task does when it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// A sync job (DataX job JSON) run by an agent's sync engine.
    #[default]
    Sync,
    /// A shell script run by an agent of a group that allows shell tasks.
    Shell,
    /// Runs nothing: a start or join point of a DAG.
    Virtual,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Shell => "shell",
            Self::Virtual => "virtual",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" | "sync" => Some(Self::Sync),
            "shell" => Some(Self::Shell),
            "virtual" => Some(Self::Virtual),
            _ => None,
        }
    }
}

/// When a task runs by itself: a cron expression in an IANA time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    pub cron: String,
    pub timezone: String,
}

/// Whether an instance may be run again by hand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RerunPolicy {
    #[default]
    Always,
    /// Only an instance that failed or was killed.
    OnlyAfterFailure,
    Never,
}

impl RerunPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::OnlyAfterFailure => "only_after_failure",
            Self::Never => "never",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" | "always" => Some(Self::Always),
            "only_after_failure" | "failed" | "after-failure" => Some(Self::OnlyAfterFailure),
            "never" => Some(Self::Never),
            _ => None,
        }
    }
}

/// A dependency of a task on another task (qualified name) of its workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DependencySpec {
    pub upstream: String,
    /// On the upstream's previous cycle (cross-cycle) rather than the same cycle.
    #[serde(default)]
    pub previous: bool,
}

/// One immutable submitted version of a task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskVersion {
    pub task: String,
    pub version: u32,
    pub group: String,
    /// The job file (sync) or script (shell) as the user wrote it; parameters are substituted
    /// per instance.
    pub job_text: String,
    pub created_ms: i64,
    /// Labels an agent must carry to run this version.
    #[serde(default)]
    pub agent_labels: Labels,
    /// A sync whose target only another resource group reaches: the writer runs on an agent
    /// of this group, the reader on one of `group`, and rows flow through the scheduler's
    /// relay (empty: one agent of `group` runs the whole job).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub writer_group: String,
    #[serde(default)]
    pub kind: TaskKind,
    /// `None`: manual only (run, backfill).
    #[serde(default)]
    pub schedule: Option<ScheduleSpec>,
    #[serde(default)]
    pub start_date: Option<NaiveDate>,
    #[serde(default)]
    pub end_date: Option<NaiveDate>,
    /// Higher runs first when resources are short.
    #[serde(default)]
    pub priority: i32,
    /// An attempt running longer is killed (0: no limit).
    #[serde(default)]
    pub timeout_secs: u64,
    #[serde(default)]
    pub dependencies: Vec<DependencySpec>,
    /// User parameters, `name=expression …` (DataWorks style).
    #[serde(default)]
    pub params: String,
    #[serde(default)]
    pub rerun: RerunPolicy,
    /// Automatic retries after a failure, and the wait before each.
    #[serde(default)]
    pub retries: u32,
    #[serde(default)]
    pub retry_interval_secs: u64,
}

/// What the dispatch queue keeps of an instance waiting for resources (the value of its entry
/// in the queue's index): enough to choose an agent and to order the queue without decoding the
/// instance, which the dispatcher reads only once it picked one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queued {
    pub id: String,
    pub task: String,
    pub version: u32,
    pub group: String,
    pub priority: i32,
    pub ready_ms: i64,
}

impl Queued {
    pub fn of(inst: &Instance) -> Self {
        Self {
            id: inst.id.clone(),
            task: inst.task.clone(),
            version: inst.version,
            group: inst.group.clone(),
            priority: inst.priority,
            ready_ms: inst.ready_ms,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Some upstream instance has not succeeded yet.
    #[default]
    WaitingUpstream,
    /// Upstreams are done; the cycle time (or a retry's wait) has not come.
    WaitingTime,
    /// Ready; waiting for an agent of its group with a free slot.
    WaitingResources,
    Dispatched,
    Running,
    Success,
    Failed,
    Killed,
    /// Held by an operator: does not run, and blocks its downstream.
    Frozen,
    /// Marked success without running (a day its schedule skips, outside its dates, or a cycle
    /// already past when generated): satisfies its downstream.
    DryRun,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WaitingUpstream => "waiting_upstream",
            Self::WaitingTime => "waiting_time",
            Self::WaitingResources => "waiting_resources",
            Self::Dispatched => "dispatched",
            Self::Running => "running",
            Self::Success => "success",
            Self::Failed => "failed",
            Self::Killed => "killed",
            Self::Frozen => "frozen",
            Self::DryRun => "dry_run",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::WaitingUpstream,
            Self::WaitingTime,
            Self::WaitingResources,
            Self::Dispatched,
            Self::Running,
            Self::Success,
            Self::Failed,
            Self::Killed,
            Self::Frozen,
            Self::DryRun,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Success | Self::Failed | Self::Killed | Self::DryRun
        )
    }

    /// Dispatched or running: an attempt is live.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Dispatched | Self::Running)
    }

    /// Waiting for upstreams, time or resources.
    pub fn is_waiting(self) -> bool {
        matches!(
            self,
            Self::WaitingUpstream | Self::WaitingTime | Self::WaitingResources
        )
    }

    /// Lets downstream instances go.
    pub fn satisfies_downstream(self) -> bool {
        matches!(self, Self::Success | Self::DryRun)
    }
}

/// Why an instance exists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RunKind {
    /// Generated from the task's schedule.
    Scheduled,
    /// `ferry task run`.
    #[default]
    Manual,
    /// Part of a backfill, on its `day`-th business date (0 = the first).
    Backfill { id: String, day: u32 },
}

/// One change of an instance's state, with when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub at_ms: i64,
    pub state: InstanceState,
    pub reason: String,
}

/// A run of a task version for one cycle. Its identity is (task, cycle time): a scheduled
/// instance's id is `plan::instance_key`, so generating a day twice never makes a second one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    /// `workspace/name` of the task.
    pub task: String,
    pub version: u32,
    pub group: String,
    /// yyyymmdd
    pub bizdate: String,
    /// yyyymmddhh24miss, on the schedule's wall clock.
    pub cyctime: String,
    pub state: InstanceState,
    pub created_ms: i64,
    pub finished_ms: i64,
    pub attempts: Vec<String>,
    #[serde(default)]
    pub run: RunKind,
    #[serde(default)]
    pub node_type: TaskKind,
    /// When it may run (its cycle time, or a retry's wait).
    #[serde(default)]
    pub due_ms: i64,
    /// When it became ready (waiting for resources): the dispatch queue's order after priority.
    #[serde(default)]
    pub ready_ms: i64,
    #[serde(default)]
    pub priority: i32,
    /// Parameter values, fixed when the instance was created.
    #[serde(default)]
    pub params: Option<ResolvedParams>,
    /// Same-cycle upstream instances: each must exist and have succeeded.
    #[serde(default)]
    pub upstream: Vec<String>,
    /// Cross-cycle upstream instances: each must have succeeded, or never have existed.
    #[serde(default)]
    pub previous: Vec<String>,
    /// Why it is a dry run (empty: it runs).
    #[serde(default)]
    pub dry_run: String,
    #[serde(default)]
    pub retries_left: u32,
    #[serde(default)]
    pub history: Vec<Transition>,
}

/// How many transitions an instance keeps.
const HISTORY: usize = 100;

impl Instance {
    /// Moves to `state`, recording when and why.
    pub fn set_state(&mut self, state: InstanceState, at_ms: i64, reason: impl Into<String>) {
        self.state = state;
        if state.is_final() {
            self.finished_ms = at_ms;
        }
        if self.history.len() >= HISTORY {
            self.history.remove(0);
        }
        self.history.push(Transition {
            at_ms,
            state,
            reason: reason.into(),
        });
    }
}

/// A backfill: days run in order, at most `parallelism` days at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backfill {
    pub id: String,
    pub task: String,
    pub downstream: bool,
    pub parallelism: u32,
    /// Business dates, in order.
    pub days: Vec<String>,
    /// Per day: instances not yet succeeded.
    pub remaining: Vec<u32>,
    pub created_ms: i64,
    pub user: String,
}

impl Backfill {
    /// The first day not yet fully succeeded (`days.len()` when all are).
    pub fn first_open_day(&self) -> u32 {
        self.remaining
            .iter()
            .position(|r| *r > 0)
            .unwrap_or(self.remaining.len()) as u32
    }

    /// Whether instances of `day` may run now.
    pub fn may_run(&self, day: u32) -> bool {
        day < self
            .first_open_day()
            .saturating_add(self.parallelism.max(1))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptState {
    Dispatched,
    Running,
    Succeeded,
    Failed,
    Killed,
}

impl AttemptState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dispatched => "dispatched",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Killed => "killed",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Killed)
    }
}

/// Counters of a sync attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub records_read: u64,
    pub bytes_read: u64,
    pub records_written: u64,
    pub bytes_written: u64,
    pub dirty_records: u64,
    pub elapsed_ms: u64,
    #[serde(default)]
    pub splits_done: u64,
    #[serde(default)]
    pub splits_total: u64,
}

/// One try at running an instance on one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub id: String,
    pub instance_id: String,
    /// The agent that runs the attempt; of a two-group sync, the writer leg's agent, whose
    /// result is the attempt's.
    pub agent_id: String,
    /// Of a two-group sync, the agent that runs the reader leg (empty otherwise). Its reports
    /// count too: its log lines, and a failure, which fails the attempt.
    #[serde(default)]
    pub reader_agent_id: String,
    /// Increases with every attempt; reports carrying another token are stale and rejected.
    pub fencing_token: u64,
    pub state: AttemptState,
    pub dispatched_ms: i64,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub stats: Stats,
    pub error: String,
    /// The scheduler (not the agent) ended the attempt: lease expired, never started, agent lost
    /// or revoked. A success the agent reports later may then still win (see `FinishAttempt`).
    #[serde(default)]
    pub ended_by_scheduler: bool,
    /// What the agent reported after the attempt had already ended.
    #[serde(default)]
    pub late_report: String,
    /// When it is killed for running too long (0: no limit).
    #[serde(default)]
    pub deadline_ms: i64,
    /// Bytes of log stored for it, against [`MAX_LOG_BYTES_PER_ATTEMPT`].
    #[serde(default)]
    pub log_bytes: u64,
}

impl Attempt {
    /// Whether `agent` runs this attempt or one of its legs.
    pub fn holds(&self, agent: &str) -> bool {
        self.agent_id == agent || self.is_reader_leg(agent)
    }

    /// Whether `agent` runs the reader leg of this two-group attempt.
    pub fn is_reader_leg(&self, agent: &str) -> bool {
        !self.reader_agent_id.is_empty() && self.reader_agent_id == agent
    }

    /// The agents running it: one, or the writer leg's and the reader leg's.
    pub fn agents(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.agent_id.as_str())
            .chain((!self.reader_agent_id.is_empty()).then_some(self.reader_agent_id.as_str()))
    }
}

/// Log lines of a two-group attempt's reader leg are stored from this index on (the reader
/// agent numbers its lines from 0 like the writer's), so the two legs' logs never collide;
/// an attempt's log shows the writer leg's lines, then the reader leg's.
pub const READER_LEG_LOG_BASE: u64 = 1 << 48;

/// The longest log line the scheduler stores; longer ones are cut (agents cut them too, but the
/// scheduler does not trust a report to be well-behaved). Above the agents' own 16 KiB plus
/// their marker, so a line an agent already cut arrives unchanged.
pub const MAX_LOG_LINE_BYTES: usize = 32 << 10;

/// The log an attempt may store; lines beyond it are dropped and one line says so, so an
/// attempt printing without end (or a hostile agent) cannot fill the scheduler's disk.
pub const MAX_LOG_BYTES_PER_ATTEMPT: u64 = 64 << 20;

/// `text` cut to at most `max` bytes on a character boundary, marked when cut.
pub fn cut_text(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    // Room for the marker (at most 45 bytes); too small a limit gets no marker.
    let marked = max >= 64;
    let mut end = if marked { max - 48 } else { max };
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if !marked {
        return std::borrow::Cow::Owned(text[..end].to_string());
    }
    std::borrow::Cow::Owned(format!(
        "{}… [cut, {} bytes in all]",
        &text[..end],
        text.len()
    ))
}

/// One stored line of an attempt's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    pub index: u64,
    pub ts_ms: i64,
    pub level: String,
    pub message: String,
}

/// What a user may do in one workspace. Each role includes the ones before it, except that
/// operators and developers are peers: operators run and repair instances, developers change
/// tasks and data sources; both read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Developer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Developer => "developer",
            Self::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Self::Viewer),
            "operator" => Some(Self::Operator),
            "developer" => Some(Self::Developer),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// A person or a machine that calls the admin API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    /// Manages the cluster: users, workspaces, resource groups and agents.
    pub cluster_admin: bool,
    /// Role per workspace.
    pub roles: BTreeMap<String, Role>,
    pub created_ms: i64,
    /// Argon2id hash (PHC string) of the password the console logs in with; empty: none set,
    /// the user works with API tokens only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password_hash: String,
}

/// An API token; only its SHA-256 is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Short public id (the first characters of the hash) to list and revoke it by.
    pub id: String,
    pub user: String,
    pub hash: String,
    pub name: String,
    pub created_ms: i64,
    /// 0: never expires.
    pub expires_ms: i64,
    pub revoked_ms: i64,
}

/// A workspace: the unit data sources, tasks and roles belong to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workspace {
    pub name: String,
    pub created_ms: i64,
}

/// One change (or refused attempt at one) made through the admin API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at_ms: i64,
    pub user: String,
    /// The API call, e.g. `CreateTask`.
    pub action: String,
    pub workspace: String,
    /// What it acted on (a task, a data source, an agent).
    pub target: String,
    /// The caller's address.
    pub from: String,
    /// `ok`, or why it was refused.
    pub outcome: String,
}
