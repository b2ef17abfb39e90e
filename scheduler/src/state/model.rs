//! Records the state machine keeps. They are serialized as JSON in one sled tree so one atomic
//! batch can change several of them (an attempt and its instance) together.

use ferry_common::datasource::DataSourceConfig;
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
    pub name: String,
    pub group: String,
    pub version: u32,
    pub updated_ms: i64,
    #[serde(default)]
    pub agent_labels: Labels,
}

/// One immutable submitted version of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskVersion {
    pub task: String,
    pub version: u32,
    pub group: String,
    /// The job file as the user wrote it; parameters are substituted per instance.
    pub job_text: String,
    pub created_ms: i64,
    /// Labels an agent must carry to run this version.
    #[serde(default)]
    pub agent_labels: Labels,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    WaitingResources,
    Dispatched,
    Running,
    Success,
    Failed,
    Killed,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WaitingResources => "waiting_resources",
            Self::Dispatched => "dispatched",
            Self::Running => "running",
            Self::Success => "success",
            Self::Failed => "failed",
            Self::Killed => "killed",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Success | Self::Failed | Self::Killed)
    }

    /// Dispatched or running: an attempt is live.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Dispatched | Self::Running)
    }
}

/// A run of a task version for one cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub task: String,
    pub version: u32,
    pub group: String,
    /// yyyymmdd
    pub bizdate: String,
    /// yyyymmddhh24miss
    pub cyctime: String,
    pub state: InstanceState,
    pub created_ms: i64,
    pub finished_ms: i64,
    pub attempts: Vec<String>,
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
    pub agent_id: String,
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
