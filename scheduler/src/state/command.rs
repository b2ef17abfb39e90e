//! Commands: every change of the scheduler's state, as data.
//!
//! Callers never write sled directly; they propose a [`Command`] and the store applies it with one
//! deterministic function. Everything a command needs (ids, timestamps, hashes) is decided by the
//! proposer and carried inside it, so replaying the same log on another node (raft, later) gives
//! the same state.

use super::model::{
    ApiToken, AttemptState, AuditRecord, DataSourceRecord, HostInfo, Labels, LogRecord, Role, Stats,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    CreateGroup {
        name: String,
        token_hash: String,
        #[serde(default)]
        workspaces: Vec<String>,
        at_ms: i64,
    },
    /// Lets a workspace's tasks use a resource group (or stops it).
    BindGroup {
        group: String,
        workspace: String,
        bind: bool,
    },
    CreateWorkspace {
        name: String,
        at_ms: i64,
    },
    CreateUser {
        name: String,
        cluster_admin: bool,
        at_ms: i64,
    },
    /// Gives `user` `role` in `workspace`, or takes its role away (`None`).
    SetRole {
        user: String,
        workspace: String,
        role: Option<Role>,
    },
    CreateToken {
        token: ApiToken,
    },
    RevokeToken {
        id: String,
        at_ms: i64,
    },
    /// A change made through the admin API, recorded with who made it, atomically with it.
    Audited {
        record: AuditRecord,
        change: Box<Command>,
    },
    /// An admin API call that was refused, for the audit log.
    RecordAudit {
        record: AuditRecord,
    },
    RotateGroupToken {
        name: String,
        token_hash: String,
    },
    RegisterAgent {
        id: String,
        group: String,
        credential_hash: String,
        host: HostInfo,
        at_ms: i64,
    },
    /// The agent opened (connected) or lost (not connected) its session.
    AgentSeen {
        id: String,
        connected: bool,
        host: Option<HostInfo>,
        /// The agent process's boot id, on connect.
        #[serde(default)]
        boot_id: Option<String>,
        at_ms: i64,
    },
    /// Cuts an agent off: its credential stops working and its live attempts fail.
    RevokeAgent {
        id: String,
        reason: String,
        at_ms: i64,
    },
    SetAgentDraining {
        id: String,
        draining: bool,
    },
    PutDataSource {
        record: DataSourceRecord,
    },
    RemoveDataSource {
        name: String,
    },
    /// Creates the task or a new version of it.
    CreateTask {
        name: String,
        group: String,
        job_text: String,
        #[serde(default)]
        agent_labels: Labels,
        at_ms: i64,
    },
    CreateInstance {
        id: String,
        task: String,
        bizdate: String,
        cyctime: String,
        at_ms: i64,
    },
    /// Assigns an instance to an agent; the fencing token is the next value of a counter.
    DispatchAttempt {
        id: String,
        instance_id: String,
        agent_id: String,
        at_ms: i64,
    },
    /// Reported by the agent that holds the attempt.
    AttemptStarted {
        id: String,
        agent_id: String,
        fencing_token: u64,
        at_ms: i64,
    },
    /// Reported by the agent that holds the attempt.
    AppendLogs {
        attempt_id: String,
        agent_id: String,
        fencing_token: u64,
        lines: Vec<LogRecord>,
    },
    /// The end of an attempt, reported by its agent or decided by the scheduler.
    FinishAttempt {
        id: String,
        by: Reporter,
        fencing_token: u64,
        state: AttemptState,
        stats: Stats,
        error: String,
        at_ms: i64,
    },
}

/// Who ends an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reporter {
    /// The agent that holds the attempt, reporting what happened.
    Agent(String),
    /// The scheduler, giving up on it (lease, start timeout, lost or revoked agent).
    Scheduler,
}

/// What applying a command produced, for the proposer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Done,
    TaskVersion(u32),
    Dispatched {
        fencing_token: u64,
    },
    /// The command came from a stale or fenced-off attempt and changed nothing.
    Stale(String),
}
