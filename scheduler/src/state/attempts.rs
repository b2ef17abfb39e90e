//! Attempts: an instance handed to an agent, and what that agent reports about it.
//!
//! Reports count only from the agent that holds the attempt, with its current fencing token,
//! and not from a revoked agent. An attempt ends once: a later report is kept on the attempt for
//! the operator to see, except a success reported after the scheduler had given up on the
//! attempt while nothing else ran the instance, which stands (see [`Store::late_report`]).

use super::command::{Applied, Command, Reporter};
use super::lifecycle::Changes;
use super::model::{
    Agent, Attempt, AttemptState, InstanceState, LogRecord, MAX_LOG_BYTES_PER_ATTEMPT,
    MAX_LOG_LINE_BYTES, READER_LEG_LOG_BASE, Stats, cut_text,
};
use super::{AGENT, ATTEMPT, FENCING, INSTANCE, LIVE, Store, Writes, key, log_key, timeout_key};
use crate::error::{Error, Result};

/// Why an attempt ends, and what that means for its instance.
pub(super) struct Ending {
    pub state: AttemptState,
    pub stats: Option<Stats>,
    pub error: String,
    pub by_scheduler: bool,
    pub kind: EndKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EndKind {
    /// What the attempt's result says; a failure retries when the policy allows.
    Normal,
    /// An operator killed the instance: it ends killed, without retry.
    Operator,
    /// It ran past its timeout: a failure (retried when the policy allows).
    Timeout,
    /// It never reached its agent: the instance is queued again, spending no retry.
    Undelivered,
}

impl Ending {
    /// The scheduler gives up on the attempt (lease, start timeout, lost or revoked agent).
    pub fn by_scheduler(state: AttemptState, error: String) -> Self {
        Self {
            state,
            stats: None,
            error,
            by_scheduler: true,
            kind: EndKind::Normal,
        }
    }
}

impl Store {
    pub(super) fn apply_attempt(&self, cmd: Command, w: &mut Writes) -> Result<Applied> {
        match cmd {
            Command::DispatchAttempt {
                id,
                instance_id,
                agent_id,
                at_ms,
            } => self.dispatch(w, id, instance_id, agent_id, String::new(), at_ms),
            Command::DispatchRelay {
                id,
                instance_id,
                agent_id,
                reader_agent_id,
                at_ms,
            } => self.dispatch(w, id, instance_id, agent_id, reader_agent_id, at_ms),
            Command::AttemptStarted {
                id,
                agent_id,
                fencing_token,
                at_ms,
            } => {
                let mut a = match self.live_attempt(w, &id, fencing_token, Some(&agent_id))? {
                    Ok(a) => a,
                    Err(stale) => return Ok(stale),
                };
                if a.is_reader_leg(&agent_id) {
                    // The writer leg's start is the attempt's; the reader leg's says its
                    // start message arrived, which its log shows.
                    return Ok(Applied::Done);
                }
                a.state = AttemptState::Running;
                a.started_ms = at_ms;
                w.put(key(ATTEMPT, &id), &a)?;
                if let Some(mut inst) = self.read_instance(w, &a.instance_id)?
                    && inst.attempts.last() == Some(&id)
                    && inst.state == InstanceState::Dispatched
                {
                    let before = inst.clone();
                    inst.set_state(
                        InstanceState::Running,
                        at_ms,
                        format!("attempt {id} started on agent {agent_id}"),
                    );
                    self.save_instance(w, Some(&before), &inst)?;
                }
                Ok(Applied::Done)
            }
            Command::AppendLogs {
                attempt_id,
                agent_id,
                fencing_token,
                lines,
            } => {
                let Some(mut a) = self.read::<Attempt>(w, &key(ATTEMPT, &attempt_id))? else {
                    return Ok(Applied::Stale(format!("unknown attempt {attempt_id}")));
                };
                if a.fencing_token != fencing_token {
                    return Ok(Applied::Stale(format!(
                        "attempt {attempt_id} fenced: token {fencing_token} is not {}",
                        a.fencing_token
                    )));
                }
                if !a.holds(&agent_id) {
                    return Ok(Applied::Stale(format!(
                        "agent {agent_id} sent log lines for attempt {attempt_id}, which belongs to agent {}",
                        a.agent_id
                    )));
                }
                if let Some(stale) = self.revoked(w, &agent_id)? {
                    return Ok(stale);
                }
                let base = if a.is_reader_leg(&agent_id) {
                    READER_LEG_LOG_BASE
                } else {
                    0
                };
                // Lines that arrive after the attempt finished (resent after a reconnect) are
                // still the attempt's own log: keep them. A resent line (same index) is stored
                // and counted once; past the attempt's budget lines are dropped, and the
                // first one dropped leaves a line that says so.
                let before = a.log_bytes;
                for mut line in lines {
                    line.index |= base;
                    let k = log_key(&attempt_id, line.index);
                    if self.read::<LogRecord>(w, &k)?.is_some() {
                        continue;
                    }
                    if let std::borrow::Cow::Owned(c) = cut_text(&line.message, MAX_LOG_LINE_BYTES)
                    {
                        line.message = c;
                    }
                    line.level = cut_text(&line.level, 16).into_owned();
                    let size = line.message.len() as u64 + 64;
                    if a.log_bytes.saturating_add(size) > MAX_LOG_BYTES_PER_ATTEMPT {
                        if a.log_bytes < MAX_LOG_BYTES_PER_ATTEMPT {
                            line.level = "error".into();
                            line.message = format!(
                                "log cut: the attempt printed more than {} MiB; later lines are not stored",
                                MAX_LOG_BYTES_PER_ATTEMPT >> 20
                            );
                            w.put(k, &line)?;
                            a.log_bytes = MAX_LOG_BYTES_PER_ATTEMPT;
                        }
                        continue;
                    }
                    a.log_bytes += size;
                    w.put(k, &line)?;
                }
                if a.log_bytes != before {
                    w.put(key(ATTEMPT, &attempt_id), &a)?;
                }
                Ok(Applied::Done)
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
                let Some(a) = self.read::<Attempt>(w, &key(ATTEMPT, &id))? else {
                    return Ok(Applied::Stale(format!("unknown attempt {id}")));
                };
                if a.fencing_token != fencing_token {
                    return Ok(Applied::Stale(format!(
                        "attempt {id} fenced: token {fencing_token} is not {}",
                        a.fencing_token
                    )));
                }
                let error = cut_text(&error, MAX_LOG_LINE_BYTES).into_owned();
                let agent = match &by {
                    Reporter::Agent(agent) if a.is_reader_leg(agent) => {
                        if let Some(stale) = self.revoked(w, agent)? {
                            return Ok(stale);
                        }
                        return self.reader_leg_finished(w, a, state, error, at_ms);
                    }
                    Reporter::Agent(agent) => {
                        if *agent != a.agent_id {
                            return Ok(Applied::Stale(format!(
                                "agent {agent} reported attempt {id}, which belongs to agent {}",
                                a.agent_id
                            )));
                        }
                        if let Some(stale) = self.revoked(w, agent)? {
                            return Ok(stale);
                        }
                        Some(agent.as_str())
                    }
                    Reporter::Scheduler => None,
                };
                let mut changes = Changes::default();
                if !a.state.is_final() {
                    self.end_attempt(
                        w,
                        a,
                        Ending {
                            state,
                            stats: Some(stats),
                            error,
                            by_scheduler: agent.is_none(),
                            kind: EndKind::Normal,
                        },
                        at_ms,
                        &mut changes,
                    )?;
                    Ok(changes.applied())
                } else if agent.is_some() {
                    self.late_report(w, a, state, stats, error, at_ms)
                } else {
                    Ok(Applied::Stale(format!(
                        "attempt {id} already {}",
                        a.state.as_str()
                    )))
                }
            }
            Command::Undelivered {
                id,
                agent_id,
                fencing_token,
                reason,
                at_ms,
            } => {
                let Some(a) = self.read::<Attempt>(w, &key(ATTEMPT, &id))? else {
                    return Ok(Applied::Stale(format!("unknown attempt {id}")));
                };
                if a.fencing_token != fencing_token || a.agent_id != agent_id {
                    return Ok(Applied::Stale(format!(
                        "attempt {id} fenced: it is not agent {agent_id}'s with token {fencing_token}"
                    )));
                }
                if a.state != AttemptState::Dispatched {
                    // Its agent reported it started: it ran, and only its result may end it.
                    return Ok(Applied::Stale(format!(
                        "attempt {id} is {}, not waiting for its agent to start it",
                        a.state.as_str()
                    )));
                }
                let mut changes = Changes::default();
                self.end_attempt(
                    w,
                    a,
                    Ending {
                        state: AttemptState::Failed,
                        stats: None,
                        error: reason,
                        by_scheduler: false,
                        kind: EndKind::Undelivered,
                    },
                    at_ms,
                    &mut changes,
                )?;
                Ok(changes.applied())
            }
            other => Err(Error::InvalidArgument(format!(
                "not an attempt command: {other:?}"
            ))),
        }
    }

    /// Creates an attempt of an instance waiting for resources, with the next fencing token.
    fn dispatch(
        &self,
        w: &mut Writes,
        id: String,
        instance_id: String,
        agent_id: String,
        reader_agent_id: String,
        at_ms: i64,
    ) -> Result<Applied> {
        let Some(mut inst) = self.read_instance(w, &instance_id)? else {
            return Err(Error::NotFound {
                what: "instance",
                name: instance_id,
                hint: "see `ferry instance list`",
            });
        };
        if inst.state != InstanceState::WaitingResources {
            return Ok(Applied::Stale(format!(
                "instance {instance_id} is {}, not waiting for resources",
                inst.state.as_str()
            )));
        }
        if self.read::<Attempt>(w, &key(ATTEMPT, &id))?.is_some() {
            // A retried proposal of an attempt that exists: never overwrite one.
            return Ok(Applied::Stale(format!("attempt {id} exists already")));
        }
        let before = inst.clone();
        let fencing_token = self.read::<u64>(w, FENCING.as_bytes())?.unwrap_or(0) + 1;
        w.put(FENCING.as_bytes().to_vec(), &fencing_token)?;
        let timeout_secs = self
            .read::<super::model::TaskVersion>(w, &super::version_key(&inst.task, inst.version))?
            .map(|v| v.timeout_secs)
            .unwrap_or(0);
        let deadline_ms = if timeout_secs > 0 {
            at_ms.saturating_add((timeout_secs as i64).saturating_mul(1000))
        } else {
            0
        };
        let a = Attempt {
            id: id.clone(),
            instance_id: instance_id.clone(),
            agent_id: agent_id.clone(),
            reader_agent_id: reader_agent_id.clone(),
            fencing_token,
            state: AttemptState::Dispatched,
            dispatched_ms: at_ms,
            started_ms: 0,
            finished_ms: 0,
            stats: Default::default(),
            error: String::new(),
            ended_by_scheduler: false,
            late_report: String::new(),
            deadline_ms,
            log_bytes: 0,
        };
        inst.attempts.push(id.clone());
        let to = if agent_id.is_empty() {
            "nobody (the job could not be resolved)".to_string()
        } else if reader_agent_id.is_empty() {
            format!("agent {agent_id}")
        } else {
            format!("agent {reader_agent_id} (reader leg) and agent {agent_id} (writer leg)")
        };
        inst.set_state(
            InstanceState::Dispatched,
            at_ms,
            format!("attempt {id} dispatched to {to}"),
        );
        w.put(key(LIVE, &id), &id)?;
        if deadline_ms > 0 {
            w.put(timeout_key(deadline_ms, &id), &id)?;
        }
        w.put(key(ATTEMPT, &id), &a)?;
        self.save_instance(w, Some(&before), &inst)?;
        Ok(Applied::Dispatched { fencing_token })
    }

    /// Why a report of `agent` counts for nothing, if it is revoked.
    fn revoked(&self, w: &Writes, agent: &str) -> Result<Option<Applied>> {
        Ok(self
            .get_in::<Agent>(w, AGENT, agent)?
            .filter(Agent::is_revoked)
            .map(|_| Applied::Stale(format!("agent {agent} is revoked; its reports are refused"))))
    }

    /// Ends a live attempt; when it is its instance's current one, the instance succeeds, fails,
    /// is killed, or waits for a retry, and its downstream moves on.
    pub(super) fn end_attempt(
        &self,
        w: &mut Writes,
        mut a: Attempt,
        end: Ending,
        at_ms: i64,
        changes: &mut Changes,
    ) -> Result<()> {
        a.state = end.state;
        if let Some(s) = end.stats {
            a.stats = s;
        }
        a.error = end.error.clone();
        a.finished_ms = at_ms;
        a.ended_by_scheduler = end.by_scheduler;
        if a.started_ms == 0 {
            a.started_ms = at_ms;
        }
        w.remove(key(LIVE, &a.id));
        if a.deadline_ms > 0 {
            w.remove(timeout_key(a.deadline_ms, &a.id));
        }
        w.put(key(ATTEMPT, &a.id), &a)?;
        if end.by_scheduler && !a.agent_id.is_empty() {
            changes.stop.push(super::command::StopOrder {
                attempt_id: a.id.clone(),
                agent_id: a.agent_id.clone(),
                instance_id: a.instance_id.clone(),
                reason: end.error.clone(),
            });
        }
        if !a.reader_agent_id.is_empty() && end.state != AttemptState::Succeeded {
            // A two-group attempt that did not succeed: neither leg may go on (the other one
            // would wait on the relay until it noticed).
            changes.stop.push(super::command::StopOrder {
                attempt_id: a.id.clone(),
                agent_id: a.reader_agent_id.clone(),
                instance_id: a.instance_id.clone(),
                reason: end.error.clone(),
            });
            if !end.by_scheduler {
                changes.stop.push(super::command::StopOrder {
                    attempt_id: a.id.clone(),
                    agent_id: a.agent_id.clone(),
                    instance_id: a.instance_id.clone(),
                    reason: end.error.clone(),
                });
            }
        }
        let Some(mut inst) = self.read_instance(w, &a.instance_id)? else {
            return Ok(());
        };
        // Only the instance's current attempt decides its state.
        if inst.attempts.last() != Some(&a.id) || !inst.state.is_active() {
            return Ok(());
        }
        let before = inst.clone();
        match (end.state, end.kind) {
            (AttemptState::Succeeded, _) => inst.set_state(
                InstanceState::Success,
                at_ms,
                format!("attempt {} succeeded", a.id),
            ),
            (_, EndKind::Operator) => inst.set_state(InstanceState::Killed, at_ms, end.error),
            (_, EndKind::Undelivered) => inst.set_state(
                InstanceState::WaitingResources,
                at_ms,
                format!("queued again: {}", end.error),
            ),
            (state, kind) => {
                if inst.retries_left > 0 {
                    let version = self.read::<super::model::TaskVersion>(
                        w,
                        &super::version_key(&inst.task, inst.version),
                    )?;
                    let (total, interval) = version
                        .map(|v| (v.retries, v.retry_interval_secs))
                        .unwrap_or((inst.retries_left, 0));
                    inst.retries_left -= 1;
                    let n = total.saturating_sub(inst.retries_left);
                    inst.due_ms = at_ms.saturating_add((interval as i64).saturating_mul(1000));
                    inst.set_state(
                        InstanceState::WaitingTime,
                        at_ms,
                        format!(
                            "retry {n} of {total} in {interval}s after attempt {}: {}",
                            a.id, end.error
                        ),
                    );
                } else {
                    let final_state = match (state, kind) {
                        (AttemptState::Killed, EndKind::Normal) => InstanceState::Killed,
                        _ => InstanceState::Failed,
                    };
                    inst.set_state(final_state, at_ms, end.error);
                }
            }
        }
        let mut work = self.save_instance(w, Some(&before), &inst)?;
        changes.instances.insert(inst.id.clone());
        work.push(inst.id.clone());
        self.settle(w, work, at_ms, changes)?;
        Ok(())
    }

    /// The reader leg of a two-group attempt ended. Its success changes nothing (the writer
    /// leg's commit decides); its failure fails the attempt at once, saying which leg, agent and
    /// group failed, and the writer leg is stopped (it rolls back). A report on an attempt that
    /// already ended is a resend or comes too late, and changes nothing.
    fn reader_leg_finished(
        &self,
        w: &mut Writes,
        a: Attempt,
        state: AttemptState,
        error: String,
        at_ms: i64,
    ) -> Result<Applied> {
        if a.state.is_final() {
            return Ok(Applied::Stale(format!(
                "attempt {} already {}; its reader leg reported {}",
                a.id,
                a.state.as_str(),
                state.as_str()
            )));
        }
        if state == AttemptState::Succeeded {
            return Ok(Applied::Done);
        }
        let group = self
            .get_in::<Agent>(w, AGENT, &a.reader_agent_id)?
            .map(|g| g.group)
            .unwrap_or_default();
        let error = format!(
            "reader leg on agent {} (group {group}) failed: {}",
            a.reader_agent_id,
            cut_text(&error, MAX_LOG_LINE_BYTES)
        );
        let mut changes = Changes::default();
        self.end_attempt(
            w,
            a,
            Ending {
                state: AttemptState::Failed,
                stats: None,
                error,
                by_scheduler: false,
                kind: EndKind::Normal,
            },
            at_ms,
            &mut changes,
        )?;
        Ok(changes.applied())
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
        let Some(inst) = self.read_instance(w, &a.instance_id)? else {
            return Ok(Applied::Stale(format!("attempt {} has no instance", a.id)));
        };
        let current = inst.attempts.last() == Some(&a.id);
        let given_up = a.ended_by_scheduler && a.state == AttemptState::Failed;
        let moved_on = inst.state.is_active() || inst.state == InstanceState::Success;
        if state == AttemptState::Succeeded && given_up && current && !moved_on {
            let mut inst = inst;
            let before = inst.clone();
            a.late_report = format!(
                "the scheduler had failed this attempt ({}); the agent then reported success, which stands because no other attempt ran since",
                a.error
            );
            a.state = AttemptState::Succeeded;
            a.error = String::new();
            a.stats = stats;
            a.finished_ms = at_ms;
            inst.set_state(
                InstanceState::Success,
                at_ms,
                format!(
                    "attempt {} reported success after the scheduler gave up on it",
                    a.id
                ),
            );
            w.put(key(ATTEMPT, &a.id), &a)?;
            let mut work = self.save_instance(w, Some(&before), &inst)?;
            let mut changes = Changes::default();
            changes.instances.insert(inst.id.clone());
            work.push(inst.id.clone());
            self.settle(w, work, at_ms, &mut changes)?;
            return Ok(changes.applied());
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
        w: &Writes,
        id: &str,
        token: u64,
        agent: Option<&str>,
    ) -> Result<std::result::Result<Attempt, Applied>> {
        let Some(a) = self.read::<Attempt>(w, &key(ATTEMPT, id))? else {
            return Ok(Err(Applied::Stale(format!("unknown attempt {id}"))));
        };
        if a.fencing_token != token {
            return Ok(Err(Applied::Stale(format!(
                "attempt {id} fenced: token {token} is not {}",
                a.fencing_token
            ))));
        }
        if let Some(agent) = agent {
            if !a.holds(agent) {
                return Ok(Err(Applied::Stale(format!(
                    "agent {agent} reported attempt {id}, which belongs to agent {}",
                    a.agent_id
                ))));
            }
            if let Some(stale) = self.revoked(w, agent)? {
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

    /// An instance as the command being applied sees it.
    pub(super) fn read_instance(
        &self,
        w: &Writes,
        id: &str,
    ) -> Result<Option<super::model::Instance>> {
        self.read(w, &key(INSTANCE, id))
    }
}
