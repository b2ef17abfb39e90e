//! An instance from creation to its end.
//!
//! ```text
//! waiting_upstream -> waiting_time -> waiting_resources -> dispatched -> running -> success
//!        |                 |               (dry run / virtual: success without running)  -> failed -> (retry) waiting_time
//!        +-- frozen        +-- dry_run                                                   -> killed
//! ```
//! Every move is made inside [`Store::apply`] by a command that carries its time, so replaying
//! the commands gives the same moves: an instance leaves `waiting_upstream` when all its
//! upstream instances have succeeded (cross-cycle ones may also never have existed), leaves
//! `waiting_time` when a [`Command::Tick`] at or after its due time is applied, and then either
//! waits for an agent or, as a dry run or a virtual node, succeeds without running. When an
//! instance succeeds, the instances waiting for it (found through the `dl/` index) move on in
//! the same command, so a chain of virtual nodes settles at once. Each move is recorded in the
//! instance's history with its reason.

use super::attempts::{EndKind, Ending};
use super::command::{Applied, Command, StopOrder};
use super::model::{
    Attempt, AttemptState, Backfill, Instance, InstanceState, RerunPolicy, RunKind, TaskKind,
};
use super::{
    ATTEMPT, BACKFILL, INSTANCE, LIVE, Store, TASK, TIMEOUT, TIMEQ, WAITING, Writes,
    backfill_day_prefix, down_key, generated_key, id_after_bar, key, task_day_key,
    task_days_prefix, timeq_key,
};
use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// What one command changed, for the proposer: instances to announce, attempts to stop.
#[derive(Debug, Default)]
pub(super) struct Changes {
    pub instances: BTreeSet<String>,
    pub stop: Vec<StopOrder>,
}

impl Changes {
    pub fn applied(self) -> Applied {
        Applied::Changed {
            instances: self.instances.into_iter().collect(),
            stop: self.stop,
        }
    }
}

/// The dry-run reason of a cycle already past when it was generated; a rerun runs it for real.
pub const EXPIRED: &str = "expired";

/// What a command inserting instances collects before it settles them: the new ids, the
/// downstream edges and task-day entries to add (per list, so each list is written once per
/// command however many of its instances the command holds), and whether each task is frozen
/// (read once per task, not once per instance).
#[derive(Default)]
struct Inserting {
    new: Vec<String>,
    /// The new instances as stored, so settling them does not decode them again.
    held: HashMap<String, Instance>,
    edges: BTreeMap<String, BTreeSet<String>>,
    /// The new ids by `ti/` list.
    days: BTreeMap<Vec<u8>, BTreeSet<String>>,
    frozen: HashMap<String, bool>,
}

/// Instance states one settling has read or set, by id (`None`: no such instance). Held for one
/// call only, so a refused command, whose writes are undone, leaves nothing behind.
#[derive(Default)]
struct States(HashMap<String, Option<InstanceState>>);

impl States {
    fn of(&mut self, store: &Store, w: &Writes, id: &str) -> Result<Option<InstanceState>> {
        if let Some(s) = self.0.get(id) {
            return Ok(*s);
        }
        let s = store.state_of(w, id)?;
        self.0.insert(id.to_string(), s);
        Ok(s)
    }
}

/// The state in an instance record. Records are written with their fields in declaration
/// order, so `state` follows a few short strings and a number: [`scan_state`] finds it there
/// without reading the parameters and history after it (settling asks the state of every
/// upstream of every instance it wakes). Anything it does not expect is decoded by serde.
pub(super) fn state_in_record(bytes: &[u8]) -> Result<InstanceState> {
    match scan_state(bytes) {
        Some(s) => Ok(s),
        None => Ok(serde_json::from_slice::<StateOnly>(bytes)?.state),
    }
}

/// The top-level `state` of a JSON object, when every member before it is a string or a
/// number; `None` otherwise (or when the text is not such an object).
pub(super) fn scan_state(b: &[u8]) -> Option<InstanceState> {
    let ws = |mut i: usize| {
        while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
            i += 1;
        }
        i
    };
    // A string starting at `i` (its quote): its contents and the index past its end.
    let string = |i: usize| -> Option<(&[u8], usize)> {
        if *b.get(i)? != b'"' {
            return None;
        }
        let mut j = i + 1;
        loop {
            match *b.get(j)? {
                b'"' => return Some((&b[i + 1..j], j + 1)),
                b'\\' => j += 2,
                _ => j += 1,
            }
        }
    };
    let mut i = ws(0);
    if *b.get(i)? != b'{' {
        return None;
    }
    i += 1;
    loop {
        let (name, next) = string(ws(i))?;
        i = ws(next);
        if *b.get(i)? != b':' {
            return None;
        }
        i = ws(i + 1);
        if name == b"state" {
            let (value, _) = string(i)?;
            return InstanceState::parse(std::str::from_utf8(value).ok()?);
        }
        i = match *b.get(i)? {
            b'"' => string(i)?.1,
            b'-' | b'0'..=b'9' => {
                let mut j = i + 1;
                while b.get(j).is_some_and(|c| {
                    c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-')
                }) {
                    j += 1;
                }
                j
            }
            _ => return None,
        };
        i = ws(i);
        if *b.get(i)? != b',' {
            return None;
        }
        i += 1;
    }
}

/// An instance record read for its state alone: serde skips the other fields without building
/// them, so asking the state of an upstream does not cost decoding its parameters and history.
#[derive(Deserialize)]
struct StateOnly {
    state: InstanceState,
}

impl Store {
    pub(super) fn apply_lifecycle(&self, cmd: Command, w: &mut Writes) -> Result<Applied> {
        let mut changes = Changes::default();
        match cmd {
            Command::AddInstances {
                instances,
                generated,
                at_ms,
            } => {
                let mut ins = Inserting::default();
                for inst in instances {
                    self.insert_instance(w, inst, at_ms, &mut ins, &mut changes)?;
                }
                if let Some((zone, day)) = generated {
                    w.put(generated_key(&zone, day), &at_ms)?;
                }
                self.inserted(w, ins, at_ms, &mut changes)?;
            }
            Command::RunTask { instance, at_ms } => {
                let day: Option<Vec<String>> =
                    self.read(w, &task_day_key(&instance.task, &instance.bizdate))?;
                for id in day.unwrap_or_default() {
                    if let Some(i) = self.read_instance(w, &id)?
                        && (i.state.is_waiting() || i.state.is_active())
                    {
                        return Ok(Applied::Joined(i.id));
                    }
                }
                match self.read_instance(w, &instance.id)? {
                    Some(existing) => {
                        let reason = instance
                            .history
                            .last()
                            .map(|t| t.reason.clone())
                            .unwrap_or_else(|| "run again".into());
                        self.rerun(w, vec![existing.id], &reason, at_ms, &mut changes)?;
                    }
                    None => {
                        let mut ins = Inserting::default();
                        self.insert_instance(w, instance, at_ms, &mut ins, &mut changes)?;
                        self.inserted(w, ins, at_ms, &mut changes)?;
                    }
                }
            }
            Command::Tick { at_ms } => {
                let end = timeq_key(at_ms.saturating_add(1), "");
                let due: Vec<String> = self
                    .keys_in(w, TIMEQ)?
                    .into_iter()
                    .take_while(|k| *k < end)
                    .map(|k| id_after_bar(&k))
                    .collect();
                self.settle(w, due, at_ms, &mut changes)?;
                let end = super::timeout_key(at_ms.saturating_add(1), "");
                let late: Vec<String> = self
                    .keys_in(w, TIMEOUT)?
                    .into_iter()
                    .take_while(|k| *k < end)
                    .map(|k| id_after_bar(&k))
                    .collect();
                for attempt_id in late {
                    let Some(a) = self.read::<Attempt>(w, &key(ATTEMPT, &attempt_id))? else {
                        continue;
                    };
                    if a.state.is_final() {
                        continue;
                    }
                    let secs = (a.deadline_ms - a.dispatched_ms).max(0) / 1000;
                    let error = format!("timed out: still running after {secs}s");
                    self.alert_timeout(w, &a.instance_id, &a.id, &error, at_ms)?;
                    self.end_attempt(
                        w,
                        a,
                        Ending {
                            state: AttemptState::Killed,
                            stats: None,
                            error,
                            by_scheduler: true,
                            kind: EndKind::Timeout,
                        },
                        at_ms,
                        &mut changes,
                    )?;
                }
            }
            Command::Rerun { ids, reason, at_ms } => {
                self.rerun(w, ids, &reason, at_ms, &mut changes)?;
            }
            Command::KillInstance { id, reason, at_ms } => {
                let inst = self.require(w, &id)?;
                if inst.state.is_active() {
                    let current = inst.attempts.last().cloned().unwrap_or_default();
                    let Some(a) = self.read::<Attempt>(w, &key(ATTEMPT, &current))? else {
                        return Err(Error::NotFound {
                            what: "attempt",
                            name: current,
                            hint: "the store is inconsistent",
                        });
                    };
                    self.end_attempt(
                        w,
                        a,
                        Ending {
                            state: AttemptState::Killed,
                            stats: None,
                            error: reason,
                            by_scheduler: true,
                            kind: EndKind::Operator,
                        },
                        at_ms,
                        &mut changes,
                    )?;
                } else if inst.state.is_waiting() || inst.state == InstanceState::Frozen {
                    let mut inst = inst;
                    let before = inst.clone();
                    inst.set_state(InstanceState::Killed, at_ms, reason);
                    self.save_and_wake(w, &before, &inst, at_ms, &mut changes)?;
                } else {
                    return Err(Error::FailedPrecondition(format!(
                        "instance {id} already ended ({}); nothing to kill",
                        inst.state.as_str()
                    )));
                }
            }
            Command::Freeze {
                ids,
                freeze,
                reason,
                at_ms,
            } => {
                for id in ids {
                    let mut inst = self.require(w, &id)?;
                    let before = inst.clone();
                    if freeze {
                        if inst.state.is_active() {
                            return Err(Error::FailedPrecondition(format!(
                                "instance {id} is {}; kill it first",
                                inst.state.as_str()
                            )));
                        }
                        if !inst.state.is_waiting() {
                            continue;
                        }
                        inst.set_state(InstanceState::Frozen, at_ms, reason.clone());
                    } else {
                        if inst.state != InstanceState::Frozen {
                            continue;
                        }
                        inst.set_state(InstanceState::WaitingUpstream, at_ms, reason.clone());
                    }
                    self.save_and_wake(w, &before, &inst, at_ms, &mut changes)?;
                }
            }
            Command::SetTaskFrozen {
                task,
                frozen,
                at_ms,
            } => {
                let Some(mut t) = self.get_in::<super::model::Task>(w, TASK, &task)? else {
                    return Err(Error::NotFound {
                        what: "task",
                        name: task,
                        hint: "see `ferry task list`",
                    });
                };
                t.frozen = frozen;
                w.put(key(TASK, &task), &t)?;
                let reason = if frozen {
                    "the task was frozen"
                } else {
                    "the task was unfrozen"
                };
                let mut ids = Vec::new();
                for k in self.keys_in(w, &task_days_prefix(&task))? {
                    ids.extend(self.read::<Vec<String>>(w, &k)?.unwrap_or_default());
                }
                for id in ids {
                    let Some(mut inst) = self.read_instance(w, &id)? else {
                        continue;
                    };
                    let before = inst.clone();
                    if frozen && inst.state.is_waiting() {
                        inst.set_state(InstanceState::Frozen, at_ms, reason);
                    } else if !frozen && inst.state == InstanceState::Frozen {
                        inst.set_state(InstanceState::WaitingUpstream, at_ms, reason);
                    } else {
                        continue;
                    }
                    self.save_and_wake(w, &before, &inst, at_ms, &mut changes)?;
                }
            }
            Command::MarkSuccess { id, reason, at_ms } => {
                let mut inst = self.require(w, &id)?;
                if inst.state.is_active() {
                    return Err(Error::FailedPrecondition(format!(
                        "instance {id} is {}; kill it first",
                        inst.state.as_str()
                    )));
                }
                let before = inst.clone();
                inst.set_state(InstanceState::Success, at_ms, reason);
                self.save_and_wake(w, &before, &inst, at_ms, &mut changes)?;
            }
            Command::CreateBackfill {
                backfill,
                instances,
                at_ms,
            } => {
                if self
                    .read::<Backfill>(w, &key(BACKFILL, &backfill.id))?
                    .is_some()
                {
                    return Err(Error::AlreadyExists {
                        what: "backfill",
                        name: backfill.id,
                    });
                }
                w.put(key(BACKFILL, &backfill.id), &backfill)?;
                let mut ins = Inserting::default();
                for inst in instances {
                    self.insert_instance(w, inst, at_ms, &mut ins, &mut changes)?;
                }
                self.inserted(w, ins, at_ms, &mut changes)?;
            }
            other => {
                return Err(Error::InvalidArgument(format!(
                    "not an instance command: {other:?}"
                )));
            }
        }
        Ok(changes.applied())
    }

    fn require(&self, w: &Writes, id: &str) -> Result<Instance> {
        self.read_instance(w, id)?.ok_or_else(|| Error::NotFound {
            what: "instance",
            name: id.to_string(),
            hint: "see `ferry instance list`",
        })
    }

    /// Stores a new instance with its indexes, unless one with its id exists (generation is
    /// idempotent): frozen when its task is, else waiting for its upstreams. Its downstream
    /// edges are collected in `ins`; [`Store::inserted`] stores them and settles it.
    fn insert_instance(
        &self,
        w: &mut Writes,
        mut inst: Instance,
        at_ms: i64,
        ins: &mut Inserting,
        changes: &mut Changes,
    ) -> Result<()> {
        if self.has_instance_in(w, &inst.id)? {
            return Ok(());
        }
        let frozen = match ins.frozen.get(&inst.task) {
            Some(f) => *f,
            None => {
                let f = self
                    .get_in::<super::model::Task>(w, TASK, &inst.task)?
                    .is_some_and(|t| t.frozen);
                ins.frozen.insert(inst.task.clone(), f);
                f
            }
        };
        let reason = inst
            .history
            .last()
            .map(|t| t.reason.clone())
            .unwrap_or_else(|| "created".into());
        inst.history.clear();
        inst.created_ms = at_ms;
        if frozen {
            inst.set_state(
                InstanceState::Frozen,
                at_ms,
                format!("{reason}; its task is frozen"),
            );
        } else {
            inst.set_state(InstanceState::WaitingUpstream, at_ms, reason);
        }
        let id = inst.id.clone();
        ins.days
            .entry(task_day_key(&inst.task, &inst.bizdate))
            .or_default()
            .insert(id.clone());
        for up in inst.upstream.iter().chain(&inst.previous) {
            ins.edges.entry(up.clone()).or_default().insert(id.clone());
        }
        if let RunKind::Backfill { id: bf, day } = &inst.run {
            w.put(
                format!("{}{id}", backfill_day_prefix(bf, *day)).into_bytes(),
                &id,
            )?;
        }
        self.save_instance(w, None, &inst)?;
        changes.instances.insert(id.clone());
        ins.new.push(id.clone());
        ins.held.insert(id, inst);
        Ok(())
    }

    /// Stores the downstream edges of the instances just inserted, each upstream's list once,
    /// then settles the new instances.
    fn inserted(
        &self,
        w: &mut Writes,
        ins: Inserting,
        at_ms: i64,
        changes: &mut Changes,
    ) -> Result<()> {
        for (up, downs) in ins.edges {
            self.merge_list(w, down_key(&up), downs)?;
        }
        for (day, ids) in ins.days {
            self.merge_list(w, day, ids)?;
        }
        self.settle_held(w, ins.new, ins.held, at_ms, changes)
    }

    /// The instances waiting for `id`, in id order, as the command being applied sees them.
    fn downstream_in(&self, w: &Writes, id: &str) -> Result<Vec<String>> {
        Ok(self.read(w, &down_key(id))?.unwrap_or_default())
    }

    /// Whether instance `id` exists, as the command being applied sees it, without decoding it.
    fn has_instance_in(&self, w: &Writes, id: &str) -> Result<bool> {
        let k = key(INSTANCE, id);
        Ok(match w.overlay.get(&k) {
            Some(v) => v.is_some(),
            None => self.tree.contains_key(&k)?,
        })
    }

    /// Writes an instance and keeps its indexes in step with its state: the dispatch queue, the
    /// time queue, and its backfill's progress. Returns instances to look at again (the next
    /// days of a backfill whose day just completed).
    pub(super) fn save_instance(
        &self,
        w: &mut Writes,
        before: Option<&Instance>,
        inst: &Instance,
    ) -> Result<Vec<String>> {
        let id = &inst.id;
        if let Some(b) = before {
            if b.state == InstanceState::WaitingResources
                && inst.state != InstanceState::WaitingResources
            {
                w.remove(key(WAITING, id));
            }
            if b.state == InstanceState::WaitingTime
                && (inst.state != InstanceState::WaitingTime || inst.due_ms != b.due_ms)
            {
                w.remove(timeq_key(b.due_ms, id));
            }
        }
        if inst.state == InstanceState::WaitingResources {
            w.put(key(WAITING, id), &super::model::Queued::of(inst))?;
        }
        if inst.state == InstanceState::WaitingTime {
            w.put(timeq_key(inst.due_ms, id), id)?;
        }
        if before.is_none_or(|b| b.state != inst.state) {
            self.alert_on_change(w, before, inst)?;
        }
        self.index_listing(w, inst, before.is_none())?;
        w.put(key(INSTANCE, id), inst)?;
        let mut wake = Vec::new();
        if let RunKind::Backfill { id: bf_id, day } = &inst.run {
            let was = before.is_some_and(|b| b.state.satisfies_downstream());
            let is = inst.state.satisfies_downstream();
            if was != is
                && let Some(mut bf) = self.read::<Backfill>(w, &key(BACKFILL, bf_id))?
                && (*day as usize) < bf.remaining.len()
            {
                let open_before = bf.first_open_day();
                let r = &mut bf.remaining[*day as usize];
                if is {
                    *r = r.saturating_sub(1);
                } else {
                    *r += 1;
                }
                let open_after = bf.first_open_day();
                w.put(key(BACKFILL, bf_id), &bf)?;
                if open_after > open_before {
                    // Days that may start now.
                    let par = bf.parallelism.max(1);
                    for d in open_before + par..open_after + par {
                        for k in self.keys_in(w, &backfill_day_prefix(bf_id, d))? {
                            wake.push(id_after_bar(&k));
                        }
                    }
                }
            }
        }
        Ok(wake)
    }

    fn save_and_wake(
        &self,
        w: &mut Writes,
        before: &Instance,
        inst: &Instance,
        at_ms: i64,
        changes: &mut Changes,
    ) -> Result<()> {
        let mut work = self.save_instance(w, Some(before), inst)?;
        changes.instances.insert(inst.id.clone());
        work.push(inst.id.clone());
        self.settle(w, work, at_ms, changes)
    }

    /// Moves the listed instances (and, through them, their downstream) as far as the state
    /// allows at `at_ms`.
    pub(super) fn settle(
        &self,
        w: &mut Writes,
        work: Vec<String>,
        at_ms: i64,
        changes: &mut Changes,
    ) -> Result<()> {
        self.settle_held(w, work, HashMap::new(), at_ms, changes)
    }

    /// [`Store::settle`], given some of the instances as they are stored (each used once, in
    /// place of reading it).
    fn settle_held(
        &self,
        w: &mut Writes,
        mut work: Vec<String>,
        mut held: HashMap<String, Instance>,
        at_ms: i64,
        changes: &mut Changes,
    ) -> Result<()> {
        let mut woke: HashSet<String> = HashSet::new();
        // States read while settling, kept up to date as instances move: a finished instance
        // wakes each downstream, and each of those asks the state of all its upstream, so the
        // same records would be decoded again and again.
        let mut states = States::default();
        while let Some(id) = work.pop() {
            let inst = match held.remove(&id) {
                Some(inst) => Some(inst),
                None => self.read_instance(w, &id)?,
            };
            let Some(mut inst) = inst else {
                continue;
            };
            let before = inst.clone();
            self.advance(w, &mut inst, at_ms, &mut states)?;
            if inst != before {
                work.extend(self.save_instance(w, Some(&before), &inst)?);
                changes.instances.insert(id.clone());
            }
            states.0.insert(id.clone(), Some(inst.state));
            if inst.state.satisfies_downstream() && woke.insert(id.clone()) {
                for down in self.downstream_in(w, &id)? {
                    if states.of(self, w, &down)? == Some(InstanceState::WaitingUpstream) {
                        work.push(down);
                    }
                }
            }
        }
        Ok(())
    }

    /// One instance's moves at `at_ms`, as far as they go.
    fn advance(
        &self,
        w: &Writes,
        inst: &mut Instance,
        at_ms: i64,
        states: &mut States,
    ) -> Result<()> {
        loop {
            match inst.state {
                InstanceState::WaitingUpstream => {
                    if self.blocker(w, inst, states)?.is_some() {
                        return Ok(());
                    }
                    let why = if inst.upstream.is_empty() && inst.previous.is_empty() {
                        "no upstream to wait for"
                    } else {
                        "its upstream instances have succeeded"
                    };
                    inst.set_state(InstanceState::WaitingTime, at_ms, why);
                }
                InstanceState::WaitingTime => {
                    if inst.due_ms > at_ms {
                        return Ok(());
                    }
                    if !inst.dry_run.is_empty() {
                        let why =
                            format!("dry run ({}): marked success without running", inst.dry_run);
                        inst.set_state(InstanceState::DryRun, at_ms, why);
                    } else if inst.node_type == TaskKind::Virtual {
                        inst.set_state(
                            InstanceState::Success,
                            at_ms,
                            "virtual node: nothing to run",
                        );
                    } else {
                        inst.ready_ms = at_ms;
                        inst.set_state(InstanceState::WaitingResources, at_ms, "its time has come");
                    }
                    return Ok(());
                }
                _ => return Ok(()),
            }
        }
    }

    /// Why an instance waiting for its upstreams cannot go yet; `None` when it can.
    fn blocker(&self, w: &Writes, inst: &Instance, states: &mut States) -> Result<Option<String>> {
        for up in &inst.upstream {
            match states.of(self, w, up)? {
                None => return Ok(Some(format!("upstream {up} has not been generated yet"))),
                Some(s) if !s.satisfies_downstream() => {
                    return Ok(Some(format!("upstream {up} is {}", s.as_str())));
                }
                Some(_) => {}
            }
        }
        for up in &inst.previous {
            if let Some(s) = states.of(self, w, up)?
                && !s.satisfies_downstream()
            {
                return Ok(Some(format!("previous cycle {up} is {}", s.as_str())));
            }
        }
        if let RunKind::Backfill { id, day } = &inst.run
            && let Some(bf) = self.read::<Backfill>(w, &key(BACKFILL, id))?
            && !bf.may_run(*day)
        {
            return Ok(Some(format!(
                "backfill {id} runs days in order: waiting for {} to succeed",
                bf.days
                    .get(bf.first_open_day() as usize)
                    .cloned()
                    .unwrap_or_default()
            )));
        }
        Ok(None)
    }

    /// An instance's state as the command being applied sees it; `None` when there is no such
    /// instance.
    fn state_of(&self, w: &Writes, id: &str) -> Result<Option<InstanceState>> {
        self.read_with(w, &key(INSTANCE, id), state_in_record)
    }

    /// Why an instance waits for its upstreams, for people.
    pub fn waiting_for(&self, inst: &Instance) -> Result<Option<String>> {
        if inst.state != InstanceState::WaitingUpstream {
            return Ok(None);
        }
        self.blocker(&Writes::new(), inst, &mut States::default())
    }

    /// Whether a rerun of `inst` is allowed by its version's policy; the refusal says why.
    pub fn rerun_refusal(&self, inst: &Instance) -> Result<Option<String>> {
        self.rerun_refusal_in(&Writes::new(), inst)
    }

    fn rerun_refusal_in(&self, w: &Writes, inst: &Instance) -> Result<Option<String>> {
        let policy = self
            .read::<super::model::TaskVersion>(w, &super::version_key(&inst.task, inst.version))?
            .map(|v| v.rerun)
            .unwrap_or_default();
        let failed = matches!(inst.state, InstanceState::Failed | InstanceState::Killed);
        Ok(match policy {
            RerunPolicy::Never => Some(format!(
                "task {} may not be rerun (rerun policy: never)",
                inst.task
            )),
            RerunPolicy::OnlyAfterFailure if !failed => Some(format!(
                "task {} may be rerun only after a failure (rerun policy: only_after_failure), and instance {} is {}",
                inst.task,
                inst.id,
                inst.state.as_str()
            )),
            _ => None,
        })
    }

    fn rerun(
        &self,
        w: &mut Writes,
        ids: Vec<String>,
        reason: &str,
        at_ms: i64,
        changes: &mut Changes,
    ) -> Result<()> {
        let mut work = Vec::new();
        for id in ids {
            let mut inst = self.require(w, &id)?;
            if !inst.state.is_final() {
                return Err(Error::FailedPrecondition(format!(
                    "instance {id} is {}: only an ended instance is rerun",
                    inst.state.as_str()
                )));
            }
            if let Some(why) = self.rerun_refusal_in(w, &inst)? {
                return Err(Error::FailedPrecondition(why));
            }
            let before = inst.clone();
            inst.retries_left = self
                .read::<super::model::TaskVersion>(
                    w,
                    &super::version_key(&inst.task, inst.version),
                )?
                .map(|v| v.retries)
                .unwrap_or(0);
            if inst.dry_run == EXPIRED {
                inst.dry_run.clear();
            }
            inst.finished_ms = 0;
            inst.set_state(InstanceState::WaitingUpstream, at_ms, reason.to_string());
            work.extend(self.save_instance(w, Some(&before), &inst)?);
            changes.instances.insert(id.clone());
            work.push(id);
        }
        self.settle(w, work, at_ms, changes)
    }

    /// Ids of every instance downstream of `id`, transitively, nearest first.
    pub fn downstream_closure(&self, id: &str) -> Result<Vec<String>> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut order = Vec::new();
        let mut frontier = vec![id.to_string()];
        while let Some(cur) = frontier.pop() {
            for d in self.downstream_of(&cur)? {
                if seen.insert(d.clone()) {
                    order.push(d.clone());
                    frontier.push(d);
                }
            }
        }
        Ok(order)
    }

    /// Whether attempt `id` is still live (the LIVE index).
    pub fn attempt_is_live(&self, id: &str) -> Result<bool> {
        Ok(self.tree.contains_key(key(LIVE, id))?)
    }
}
