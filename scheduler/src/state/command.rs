//! Commands: every change of the scheduler's state, as data.
//!
//! Callers never write sled directly; they propose a [`Command`] and the store applies it with one
//! deterministic function. Everything a command needs (ids, timestamps, hashes) is decided by the
//! proposer and carried inside it, so replaying the same log on another node (raft, later) gives
//! the same state.

use super::alerts::{AlertDelivery, AlertEvent, AlertRule};
use super::model::{
    ApiToken, AttemptState, AuditRecord, Backfill, DataSourceRecord, HostInfo, Instance, LogRecord,
    Role, Stats, TaskVersion,
};
use chrono::NaiveDate;
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
    /// The first start of a cluster: the default workspace, the first cluster admin and its
    /// token, and groups made before workspaces bound to the default one, all at once. Once any
    /// user exists it only makes sure the default workspace exists and answers `Stale`, so
    /// schedulers racing to bootstrap make one admin.
    Bootstrap {
        workspace: String,
        user: String,
        token: ApiToken,
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
    /// Sets (or with an empty hash, removes) `user`'s console password; the hash is made by
    /// the proposer, so every node stores the same one.
    SetPassword {
        user: String,
        hash: String,
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
    /// Submits a new version of a task (creating the task). `version.version` is ignored: the
    /// next number is assigned. `submit_id` makes a retried submit a no-op.
    SubmitTask {
        version: TaskVersion,
        submit_id: String,
        /// With a schedule: the first day nightly generation makes instances of.
        first_day: Option<NaiveDate>,
        at_ms: i64,
    },
    /// Replaces a stored version's job text with the same job whose inline passwords are sealed
    /// under the current key (key rotation); nothing else of the version changes.
    ResealJobText {
        task: String,
        version: u32,
        job_text: String,
    },
    SetGroupOptions {
        group: String,
        max_concurrency: Option<u32>,
        allow_shell: Option<bool>,
    },
    /// Stores planned instances that do not exist yet (identity: their id), and records that
    /// `generated` (zone, day) is done when given.
    AddInstances {
        instances: Vec<Instance>,
        generated: Option<(String, NaiveDate)>,
        at_ms: i64,
    },
    /// A manual run of (task, business date): joins an instance of that pair that is waiting or
    /// running, reruns the manual one when it has ended, or creates `instance`.
    RunTask {
        instance: Instance,
        at_ms: i64,
    },
    /// Time passes: instances whose time has come become ready, attempts past their timeout are
    /// stopped.
    Tick {
        at_ms: i64,
    },
    /// Runs ended instances again (with their downstream, when listed).
    Rerun {
        ids: Vec<String>,
        reason: String,
        at_ms: i64,
    },
    KillInstance {
        id: String,
        reason: String,
        at_ms: i64,
    },
    Freeze {
        ids: Vec<String>,
        freeze: bool,
        reason: String,
        at_ms: i64,
    },
    SetTaskFrozen {
        task: String,
        frozen: bool,
        at_ms: i64,
    },
    MarkSuccess {
        id: String,
        reason: String,
        at_ms: i64,
    },
    CreateBackfill {
        backfill: Backfill,
        instances: Vec<Instance>,
        at_ms: i64,
    },
    /// Assigns an instance to an agent; the fencing token is the next value of a counter.
    DispatchAttempt {
        id: String,
        instance_id: String,
        agent_id: String,
        at_ms: i64,
    },
    /// Assigns an instance to two agents of two resource groups (a sync whose task names a
    /// writer group): `agent_id` runs the writer leg and decides the result, `reader_agent_id`
    /// runs the reader leg, and rows flow between them through the scheduler's relay.
    DispatchRelay {
        id: String,
        instance_id: String,
        agent_id: String,
        reader_agent_id: String,
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
    /// The attempt's agent opened a new session and showed it never started the attempt (it
    /// is neither running nor among the results it still holds; agents record a start on disk
    /// before running): the start message was lost with the old session or the old leader. The
    /// attempt ends without having run and its instance waits for resources again, spending
    /// no retry, so a failover never turns into a failed day.
    Undelivered {
        id: String,
        agent_id: String,
        fencing_token: u64,
        reason: String,
        at_ms: i64,
    },
    /// Creates or replaces an alert rule (its webhook URL sealed).
    PutAlertRule {
        rule: AlertRule,
    },
    RemoveAlertRule {
        /// `workspace/name`
        id: String,
    },
    /// An event the leader found by the clock (a missed baseline); a no-op if already raised.
    RaiseAlert {
        event: AlertEvent,
    },
    /// What delivering alerts did: delivery records written, and events whose every
    /// delivery is over (or that no rule wants) leave the outbox.
    SettleAlerts {
        deliveries: Vec<AlertDelivery>,
        done_events: Vec<String>,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    Done,
    TaskVersion(u32),
    Dispatched {
        fencing_token: u64,
    },
    /// The command came from a stale or fenced-off attempt and changed nothing.
    Stale(String),
    /// Instances whose state changed, and attempts whose agents must be told to stop.
    Changed {
        instances: Vec<String>,
        stop: Vec<StopOrder>,
    },
    /// A manual run joined instance `id`, already waiting or running.
    Joined(String),
}

/// An attempt the scheduler ended that its agent may still be running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopOrder {
    pub attempt_id: String,
    pub agent_id: String,
    pub instance_id: String,
    pub reason: String,
}
