//! The scheduler's state machine over sled.
//!
//! One tree holds every record under a typed key prefix, so a command that touches several
//! records (an attempt, its instance and the instances downstream) lands in one atomic batch,
//! together with the applied index. [`Store::propose`] is the only way to change state: it
//! applies the command with one deterministic function and flushes sled before returning,
//! because sled acknowledges writes before they are on disk and a caller (an agent waiting for an
//! ack, a CLI told "created") must be able to rely on what it was told. Everything a command
//! depends on — ids, times, who reports — is inside it, so replaying the same commands (on
//! another replica, after a restart) gives the same state.
//!
//! # Layout
//! - [`command`]: every change, as data; [`model`]: the records.
//! - `catalog`: groups, agents, data sources, tasks, users, tokens, workspaces.
//! - `attempts`: dispatching an instance to an agent and what the agent reports.
//! - `lifecycle`: instances from creation to their end — upstreams, cycle times, retries,
//!   timeouts, reruns, kills, freezes, backfills.
//! - `queue`: the dispatch queue held in memory.
//! - `listing`: the index the instance list pages through, its counters, and the days held in
//!   memory for its filters.

pub mod alerts;
mod attempts;
mod catalog;
pub mod command;
mod lifecycle;
mod listing;
pub mod model;
mod queue;
pub mod replica;

use crate::error::Result;
use command::{Applied, Command};
pub use lifecycle::EXPIRED;
pub use listing::{ListPage, ListQuery};
use model::{
    Agent, ApiToken, Attempt, AuditRecord, Backfill, DataSourceRecord, Group, Instance,
    InstanceState, LogRecord, Task, TaskVersion, User, Workspace,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
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
const USER: &str = "u/";
/// API tokens by the SHA-256 of the token.
const TOKEN: &str = "k/";
const WORKSPACE: &str = "w/";
const AUDIT: &str = "z/";
const BACKFILL: &str = "b/";
/// Index: instances waiting for resources, so the dispatcher does not scan every instance.
const WAITING: &str = "q/";
/// Index: attempts not yet finished, for slot counts, leases and agent reconciliation.
const LIVE: &str = "r/";
/// Index: instances waiting for their time, by due time.
const TIMEQ: &str = "tq/";
/// Index: attempts by the time they time out.
const TIMEOUT: &str = "to/";
/// Index: the instances that wait for an instance (`dl/<up>`, valued with their ids in order),
/// to wake them when it ends. One key per upstream rather than one per edge: generating a day
/// writes ~3.6 edges per instance, and every key costs sled a tree descent.
const DOWN: &str = "dl/";
/// Index: instances of a task and business date (`ti/<task>|<day>`, valued with their ids in
/// order), for joining manual runs, freezing a task and listing. One key per task and day: an
/// hourly task's 24 instances of a day are generated together.
const TASK_DAY: &str = "ti/";
/// Index: instances of each day of a backfill.
const BACKFILL_DAY: &str = "bd/";
/// Markers: days generated per time zone.
const GENERATED: &str = "gn/";
const FENCING: &str = "m/fencing";
/// Marker: the store has this version's index layout — downstream edges as one list per
/// upstream (`dl/`), a task's instances as one list per day (`ti/`), no state index and no day
/// index. Stores made before it get it when they open (and after restoring a snapshot of such
/// a store): see [`Store::ensure_layout`].
const LAYOUT: &str = "m/layout-v4";
/// Earlier layouts' indexes: each instance's state (answered from the record now), the
/// instances of a business date (answered from the list index `il/`), and one key per
/// downstream edge (`dn/<up>|<down>`, now gathered into `dl/<up>`). The task-day index had one
/// key per instance too (`ti/<task>|<day>|<id>`).
const OLD_STATE: &str = "s/";
const OLD_BIZDATE: &str = "bz/";
const OLD_DOWN: &str = "dn/";
/// Keys an index migration changes per batch, so a store of many days is not moved in one.
const MIGRATE_BATCH: usize = 100_000;
const APPLIED: &str = "m/applied";

/// Durable state of one scheduler, replicated by raft once [`Store::attach`] gave it a node.
pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    /// Keeps what applies overwrite while a snapshot of `tree` is written (see
    /// [`crate::raft::tree_snapshot`]).
    cow: crate::raft::tree_snapshot::CopyOnWrite,
    /// Serializes local applies (no raft attached: tests of the state machine alone).
    write: Mutex<()>,
    raft: std::sync::OnceLock<crate::raft::RaftHandle>,
    applied: std::sync::atomic::AtomicU64,
    /// Bumped whenever an apply (or a restore) changes a task or a task version, so what is
    /// derived from every task can be cached until the next change.
    tasks_epoch: std::sync::atomic::AtomicU64,
    /// The time zones of scheduled tasks as of a `tasks_epoch`.
    zones: std::sync::Mutex<Option<(u64, std::collections::BTreeSet<String>)>>,
    /// Days of the instance list held in memory (see `listing`).
    listing: std::sync::Mutex<listing::DayLists>,
    /// What dispatching an instance of a task version needs, as of a `tasks_epoch`.
    needs: std::sync::Mutex<(u64, NeedsHeld)>,
    /// The dispatch queue held in memory (see `queue`).
    queue: std::sync::Mutex<queue::QueueMirror>,
}

/// What the dispatcher needs of a task version: the agent labels it asks for and its writer
/// group (empty: one agent runs the whole job).
#[derive(Debug, Clone, Default)]
pub struct DispatchNeeds {
    pub labels: model::Labels,
    pub writer_group: String,
}

/// [`DispatchNeeds`] by task and version.
type NeedsHeld = std::collections::HashMap<(String, u32), DispatchNeeds>;

/// Task versions whose [`DispatchNeeds`] are kept at most (the benchmark's day has 20,000).
const NEEDS_HELD: usize = 65_536;

fn key(prefix: &str, id: &str) -> Vec<u8> {
    format!("{prefix}{id}").into_bytes()
}

fn log_key(attempt: &str, index: u64) -> Vec<u8> {
    format!("{LOG}{attempt}/{index:020}").into_bytes()
}

/// An audit record's key: its time, then the log index and position of the command in its
/// entry (several commands share an index when proposals are packed).
fn audit_key(at_ms: i64, index: u64, pos: u32) -> Vec<u8> {
    format!("{AUDIT}{:020}/{index:020}/{pos:06}", at_ms.max(0)).into_bytes()
}

fn version_key(task: &str, version: u32) -> Vec<u8> {
    format!("{VERSION}{task}/{version:010}").into_bytes()
}

fn timeq_key(due_ms: i64, id: &str) -> Vec<u8> {
    format!("{TIMEQ}{:020}|{id}", due_ms.max(0)).into_bytes()
}

fn timeout_key(deadline_ms: i64, attempt: &str) -> Vec<u8> {
    format!("{TIMEOUT}{:020}|{attempt}", deadline_ms.max(0)).into_bytes()
}

fn down_key(up: &str) -> Vec<u8> {
    key(DOWN, up)
}

fn task_day_key(task: &str, bizdate: &str) -> Vec<u8> {
    format!("{TASK_DAY}{task}|{bizdate}").into_bytes()
}

/// The prefix of every `ti/` list of a task.
fn task_days_prefix(task: &str) -> String {
    format!("{TASK_DAY}{task}|")
}

fn backfill_day_prefix(backfill: &str, day: u32) -> String {
    format!("{BACKFILL_DAY}{backfill}|{day:06}|")
}

fn generated_key(zone: &str, day: chrono::NaiveDate) -> Vec<u8> {
    format!("{GENERATED}{zone}|{}", day.format("%Y%m%d")).into_bytes()
}

/// The part of an index key after its last `|`: the id it points at.
fn id_after_bar(k: &[u8]) -> String {
    let s = String::from_utf8_lossy(k);
    s.rsplit_once('|')
        .map(|(_, id)| id.to_string())
        .unwrap_or_default()
}

/// A migration of derived keys in progress: its writes, how many make a batch, and what to
/// call after each batch is stored.
struct Migration<'a> {
    w: Writes,
    limit: usize,
    stored: &'a mut dyn FnMut(&Store) -> Result<()>,
}

/// Writes collected by one apply (of one or several commands), committed atomically with the
/// applied index. Reads inside the apply go through [`Store::read`], which sees these writes
/// first, so one command can change a record twice and a command sees those before it. A
/// refused command's writes are undone back to its [`Writes::mark`].
struct Writes {
    overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Each write's key and what the overlay held before it, to undo a refused command.
    undo: Vec<Undo>,
}

/// A key and what the overlay held for it before a write: `None` when it held nothing, else
/// the value or the removal it held.
type Undo = (Vec<u8>, Option<Option<Vec<u8>>>);

impl Writes {
    fn new() -> Self {
        Self {
            overlay: BTreeMap::new(),
            undo: Vec::new(),
        }
    }

    fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value)?;
        let before = self.overlay.insert(key.clone(), Some(bytes));
        self.undo.push((key, before));
        Ok(())
    }

    fn remove(&mut self, key: Vec<u8>) {
        let before = self.overlay.insert(key.clone(), None);
        self.undo.push((key, before));
    }

    /// The writes and removals under `prefix`, in key order: what the in-memory copies of an
    /// index (see `listing` and `queue`) take in once the batch is stored. Taken whether or not
    /// a copy is held yet, as one may start being read before the batch is stored.
    fn entries_under(&self, prefix: &str) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.overlay
            .range(prefix.as_bytes().to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix.as_bytes()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Whether a key under `prefix` is written or removed.
    fn touches(&self, prefix: &str) -> bool {
        self.overlay
            .range(prefix.as_bytes().to_vec()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(prefix.as_bytes()))
    }

    fn mark(&self) -> usize {
        self.undo.len()
    }

    fn rollback(&mut self, mark: usize) {
        while self.undo.len() > mark {
            let Some((k, before)) = self.undo.pop() else {
                break;
            };
            match before {
                Some(v) => self.overlay.insert(k, v),
                None => self.overlay.remove(&k),
            };
        }
    }

    fn into_batch(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (k, v) in self.overlay {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        // sled's page cache defaults to 1 GiB, which alone would take a scheduler of 100,000
        // instances a day past a gigabyte; what falls out of it is still in the OS page cache.
        let db = sled::Config::new()
            .path(dir.join("state"))
            .cache_capacity(256 << 20)
            .open()?;
        let tree = db.open_tree("state")?;
        let applied = tree
            .get(APPLIED)?
            .and_then(|v| serde_json::from_slice::<u64>(&v).ok())
            .unwrap_or(0);
        let store = Self {
            db,
            cow: crate::raft::tree_snapshot::CopyOnWrite::new(tree.clone()),
            tree,
            write: Mutex::new(()),
            raft: std::sync::OnceLock::new(),
            applied: std::sync::atomic::AtomicU64::new(applied),
            tasks_epoch: std::sync::atomic::AtomicU64::new(0),
            zones: std::sync::Mutex::new(None),
            listing: std::sync::Mutex::new(listing::DayLists::default()),
            needs: std::sync::Mutex::new((0, std::collections::HashMap::new())),
            queue: std::sync::Mutex::new(queue::QueueMirror::default()),
        };
        store.ensure_layout()?;
        Ok(store)
    }

    /// Brings a store made by an earlier version to this version's indexes: the listing
    /// indexes, then the layout of [`LAYOUT`]. Batches of [`MIGRATE_BATCH`] keys, each of which
    /// may be applied again after a crash (a list is merged with what is stored, removals
    /// repeat, and no batch removes a key whose member is not in a list in the same batch or an
    /// earlier one), and the marker last, so an interrupted migration resumes when the store
    /// next opens. Only derived keys change; every replica makes the same ones from the same
    /// records.
    fn ensure_layout(&self) -> Result<()> {
        self.ensure_listing()?;
        self.migrate_layout(MIGRATE_BATCH, &mut |_| Ok(()))
    }

    /// [`Store::ensure_layout`]'s migration in batches of `limit` keys, calling `stored` after
    /// each batch it stores (a test looks at every point a crash could leave).
    fn migrate_layout(
        &self,
        limit: usize,
        stored: &mut dyn FnMut(&Store) -> Result<()>,
    ) -> Result<()> {
        if self.tree.contains_key(LAYOUT)? {
            return Ok(());
        }
        let mut m = Migration {
            w: Writes::new(),
            limit,
            stored,
        };
        let mut moved = 0usize;
        for prefix in [OLD_STATE, OLD_BIZDATE] {
            for item in self.tree.scan_prefix(prefix.as_bytes()) {
                m.w.remove(item?.0.to_vec());
                moved += 1;
                self.migrate_batch(&mut m)?;
            }
        }
        // `dn/<up>|<down>` -> `dl/<up>`.
        moved += self.gather_into_lists(&mut m, OLD_DOWN, DOWN, |_| true)?;
        // `ti/<task>|<day>|<id>` -> `ti/<task>|<day>` (keys of lists have one bar).
        moved += self.gather_into_lists(&mut m, TASK_DAY, TASK_DAY, |g| g.contains('|'))?;
        m.w.put(LAYOUT.as_bytes().to_vec(), &4u32)?;
        self.tree.apply_batch(m.w.into_batch())?;
        self.db.flush()?;
        if moved > 0 {
            tracing::info!(keys = moved, "index layout brought to version 4");
        }
        Ok(())
    }

    /// Stores the migration's writes once they hold a batch.
    fn migrate_batch(&self, m: &mut Migration<'_>) -> Result<()> {
        if m.w.overlay.len() >= m.limit {
            self.tree
                .apply_batch(std::mem::replace(&mut m.w, Writes::new()).into_batch())?;
            (m.stored)(self)?;
        }
        Ok(())
    }

    /// Turns keys `<old><group>|<member>` whose group `is_old` accepts into lists
    /// `<new><group>` (merged with a list already there), removing them; returns how many.
    /// The keys of one group are adjacent, as `<old><group>|` is their common prefix, and a
    /// batch is stored only between groups, after the finished group's list is written.
    fn gather_into_lists(
        &self,
        m: &mut Migration<'_>,
        old: &str,
        new: &str,
        is_old: impl Fn(&str) -> bool,
    ) -> Result<usize> {
        let mut moved = 0;
        let mut current: Option<(String, std::collections::BTreeSet<String>)> = None;
        for item in self.tree.scan_prefix(old.as_bytes()) {
            let (k, _) = item?;
            let rest = String::from_utf8_lossy(&k[old.len()..]).to_string();
            let Some((group, member)) = rest.rsplit_once('|') else {
                continue;
            };
            if !is_old(group) {
                continue;
            }
            if current.as_ref().is_none_or(|(g, _)| g != group) {
                if let Some((g, members)) = current.take() {
                    self.merge_list(&mut m.w, key(new, &g), members)?;
                }
                self.migrate_batch(m)?;
                current = Some((group.to_string(), Default::default()));
            }
            m.w.remove(k.to_vec());
            moved += 1;
            if let Some((_, members)) = current.as_mut() {
                members.insert(member.to_string());
            }
        }
        if let Some((g, members)) = current.take() {
            self.merge_list(&mut m.w, key(new, &g), members)?;
        }
        Ok(moved)
    }

    /// Adds `members` to the stored list at `list`, in `w`; the list stays sorted.
    fn merge_list(
        &self,
        w: &mut Writes,
        list: Vec<u8>,
        members: std::collections::BTreeSet<String>,
    ) -> Result<()> {
        let mut all: std::collections::BTreeSet<String> = self
            .read::<Vec<String>>(w, &list)?
            .unwrap_or_default()
            .into_iter()
            .collect();
        let before = all.len();
        all.extend(members);
        if all.len() != before {
            w.put(list, &all)?;
        }
        Ok(())
    }

    /// Proposes `cmd` and returns once it is applied here and durable: through raft when a node
    /// is attached (forwarded to the leader from a follower), else applied locally. Both ways run
    /// the same apply as every replica.
    pub async fn propose(&self, cmd: Command) -> Result<Applied> {
        let bytes = replica::encode_command(&cmd)?;
        let result = match self.raft.get() {
            Some(node) => node.write(bytes).await?,
            None => {
                let _guard = self.write.lock().await;
                let index = self.applied.load(std::sync::atomic::Ordering::SeqCst) + 1;
                let mut out = self.apply_entries(&[(index, bytes.as_slice())])?;
                self.db.flush_async().await?;
                out.pop().unwrap_or_default()
            }
        };
        replica::decode_outcome(&result)
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

    /// A record as the command being applied sees it: its own writes first.
    fn read<T: DeserializeOwned>(&self, w: &Writes, key: &[u8]) -> Result<Option<T>> {
        self.read_with(w, key, |bytes| Ok(serde_json::from_slice(bytes)?))
    }

    /// [`Store::read`] with the stored bytes handed to `decode` (for reading part of a record).
    fn read_with<T>(
        &self,
        w: &Writes,
        key: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<Option<T>> {
        match w.overlay.get(key) {
            Some(Some(bytes)) => decode(bytes).map(Some),
            Some(None) => Ok(None),
            None => match self.tree.get(key)? {
                Some(bytes) => decode(&bytes).map(Some),
                None => Ok(None),
            },
        }
    }

    /// The record `prefix` + `id` as the command being applied sees it.
    fn get_in<T: DeserializeOwned>(&self, w: &Writes, prefix: &str, id: &str) -> Result<Option<T>> {
        self.read(w, &key(prefix, id))
    }

    /// Every record under `prefix` as the command being applied sees them.
    fn scan_in<T: DeserializeOwned>(&self, w: &Writes, prefix: &str) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for k in self.keys_in(w, prefix)? {
            if let Some(v) = self.read(w, &k)? {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// Keys under `prefix` as the command being applied sees them, in order.
    fn keys_in(&self, w: &Writes, prefix: &str) -> Result<Vec<Vec<u8>>> {
        let mut keys: std::collections::BTreeSet<Vec<u8>> = std::collections::BTreeSet::new();
        for item in self.tree.scan_prefix(prefix.as_bytes()) {
            let (k, _) = item?;
            keys.insert(k.to_vec());
        }
        for (k, v) in w
            .overlay
            .range(prefix.as_bytes().to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix.as_bytes()))
        {
            match v {
                Some(_) => keys.insert(k.clone()),
                None => keys.remove(k),
            };
        }
        Ok(keys.into_iter().collect())
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

    /// Applies log entries `(index, encoded command)` in order with ONE atomic write that also
    /// records the last index as applied. Entries at or below the applied index are skipped
    /// (replays). A command the state refuses is undone and its refusal is its result; only a
    /// storage failure is an error. Deterministic: every replica applies the same commands to the
    /// same state and gets the same results.
    pub(crate) fn apply_entries(&self, entries: &[(u64, &[u8])]) -> Result<Vec<Vec<u8>>> {
        self.apply_decoded(entries.iter().map(|(index, data)| (*index, *data, None)))
    }

    /// [`Store::apply_entries`] with each command's decoding, where it was done already (see
    /// `StateMachine::prepare`): it must be what decoding the data gives.
    pub(crate) fn apply_decoded<'a>(
        &self,
        entries: impl IntoIterator<Item = (u64, &'a [u8], Option<Result<Command>>)>,
    ) -> Result<Vec<Vec<u8>>> {
        let before = self.applied.load(std::sync::atomic::Ordering::SeqCst);
        let mut w = Writes::new();
        let mut out = Vec::new();
        let mut last = before;
        let mut pos = 0u32;
        for (index, data, decoded) in entries {
            if index <= before {
                out.push(Vec::new());
                continue;
            }
            if index != last {
                pos = 0;
            }
            last = index;
            if data.is_empty() {
                out.push(Vec::new());
                continue;
            }
            let decoded = decoded.unwrap_or_else(|| replica::decode_command(data));
            let outcome = match decoded {
                Ok(cmd) => {
                    let mark = w.mark();
                    match self.transition(cmd, &mut w, index, pos) {
                        Ok(applied) => Ok(applied),
                        Err(e @ crate::error::Error::Storage(_)) => return Err(e),
                        Err(e) => {
                            w.rollback(mark);
                            Err(e)
                        }
                    }
                }
                Err(e) => Err(e),
            };
            out.push(replica::encode_outcome(outcome)?);
            pos += 1;
        }
        if last > before {
            w.put(APPLIED.as_bytes().to_vec(), &last)?;
        }
        let tasks_changed = w.touches(TASK) || w.touches(VERSION);
        self.cow.before_write(w.overlay.keys().map(Vec::as_slice))?;
        let listed = w.entries_under(listing::LIST);
        let queued = w.entries_under(WAITING);
        self.tree.apply_batch(w.into_batch())?;
        // Before the index moves: a read that waits for this index sees the copies held in
        // memory up to it too.
        self.listed_stored(listed);
        self.queue_stored(queued);
        self.applied
            .store(last, std::sync::atomic::Ordering::SeqCst);
        if tasks_changed {
            self.tasks_changed();
        }
        Ok(out)
    }

    /// The writes of one command into `w`.
    fn transition(&self, cmd: Command, w: &mut Writes, index: u64, pos: u32) -> Result<Applied> {
        match cmd {
            Command::Audited { record, change } => {
                let applied = self.transition(*change, w, index, pos)?;
                w.put(audit_key(record.at_ms, index, pos), &record)?;
                Ok(applied)
            }
            Command::RecordAudit { record } => {
                w.put(audit_key(record.at_ms, index, pos), &record)?;
                Ok(Applied::Done)
            }
            c @ (Command::DispatchAttempt { .. }
            | Command::DispatchRelay { .. }
            | Command::AttemptStarted { .. }
            | Command::AppendLogs { .. }
            | Command::FinishAttempt { .. }
            | Command::Undelivered { .. }) => self.apply_attempt(c, w),
            c @ (Command::AddInstances { .. }
            | Command::RunTask { .. }
            | Command::Tick { .. }
            | Command::Rerun { .. }
            | Command::KillInstance { .. }
            | Command::Freeze { .. }
            | Command::SetTaskFrozen { .. }
            | Command::MarkSuccess { .. }
            | Command::CreateBackfill { .. }) => self.apply_lifecycle(c, w),
            c @ (Command::PutAlertRule { .. }
            | Command::RemoveAlertRule { .. }
            | Command::RaiseAlert { .. }
            | Command::SettleAlerts { .. }) => self.apply_alert(c, w),
            c => self.apply_catalog(c, w),
        }
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
        let from = audit_key(since_ms, 0, 0);
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
    /// Every stored version of every task.
    pub fn all_versions(&self) -> Result<Vec<TaskVersion>> {
        self.scan(VERSION)
    }
    /// Notes that tasks changed (an apply or a restore): caches of them are stale.
    pub(crate) fn tasks_changed(&self) {
        self.tasks_epoch
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// The time zones of every scheduled task's latest version. Cached until a task changes: the
    /// leader asks before every dispatch round, and reading 20,000 tasks each time would cost
    /// more than the round.
    pub fn schedule_zones(&self) -> Result<std::collections::BTreeSet<String>> {
        let epoch = self.tasks_epoch.load(std::sync::atomic::Ordering::SeqCst);
        if let Some((at, zones)) = self.zones_cache().as_ref()
            && *at == epoch
        {
            return Ok(zones.clone());
        }
        let mut zones = std::collections::BTreeSet::new();
        for v in self.latest_versions()? {
            if let Some(s) = v.schedule {
                zones.insert(s.timezone);
            }
        }
        *self.zones_cache() = Some((epoch, zones.clone()));
        Ok(zones)
    }

    /// What dispatching an instance of `task` at `version` needs (defaults when the version is
    /// unknown). Kept until a task changes: the dispatcher asks for every waiting instance of
    /// every round, and decoding each version (job text and all) each time cost a sixth of the
    /// leader's dispatching.
    pub fn dispatch_needs(&self, task: &str, version: u32) -> Result<DispatchNeeds> {
        let epoch = self.tasks_epoch.load(std::sync::atomic::Ordering::SeqCst);
        let key = (task.to_string(), version);
        {
            let mut held = self.needs.lock().unwrap_or_else(|p| p.into_inner());
            if held.0 != epoch {
                *held = (epoch, std::collections::HashMap::new());
            }
            if let Some(n) = held.1.get(&key) {
                return Ok(n.clone());
            }
        }
        let needs = self
            .task_version(task, version)?
            .map(|v| DispatchNeeds {
                labels: v.agent_labels,
                writer_group: v.writer_group,
            })
            .unwrap_or_default();
        let mut held = self.needs.lock().unwrap_or_else(|p| p.into_inner());
        // A task changed while the version was read: keep nothing read before it.
        if held.0 == epoch {
            if held.1.len() >= NEEDS_HELD {
                held.1.clear();
            }
            held.1.insert(key, needs.clone());
        }
        Ok(needs)
    }

    fn zones_cache(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<(u64, std::collections::BTreeSet<String>)>> {
        // A panic while holding it leaves a plain value behind; keep serving.
        self.zones.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The latest version of every task.
    pub fn latest_versions(&self) -> Result<Vec<TaskVersion>> {
        let mut out = Vec::new();
        for t in self.tasks()? {
            if let Some(v) = self.task_version(&t.name, t.version)? {
                out.push(v);
            }
        }
        Ok(out)
    }
    pub fn instance(&self, id: &str) -> Result<Option<Instance>> {
        self.get(&key(INSTANCE, id))
    }
    /// Whether instance `id` exists, without decoding it.
    pub fn has_instance(&self, id: &str) -> Result<bool> {
        Ok(self.tree.contains_key(key(INSTANCE, id))?)
    }
    /// Every instance, oldest first.
    pub fn instances(&self) -> Result<Vec<Instance>> {
        let mut all: Vec<Instance> = self.scan(INSTANCE)?;
        all.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(all)
    }
    /// Instances of one business date (yyyymmdd), in list order per workspace.
    pub fn instances_of_bizdate(&self, bizdate: &str) -> Result<Vec<Instance>> {
        let mut out = Vec::new();
        for id in self.ids_of_bizdate(bizdate)? {
            if let Some(i) = self.instance(&id)? {
                out.push(i);
            }
        }
        Ok(out)
    }
    /// Ids of a task's instances on a business date (every date: `None`), from its `ti/` lists.
    fn task_day_ids(&self, task: &str, bizdate: Option<&str>) -> Result<Vec<String>> {
        match bizdate {
            Some(d) => Ok(self
                .get::<Vec<String>>(&task_day_key(task, d))?
                .unwrap_or_default()),
            None => {
                let mut ids = Vec::new();
                for item in self.tree.scan_prefix(task_days_prefix(task)) {
                    ids.extend(serde_json::from_slice::<Vec<String>>(&item?.1)?);
                }
                Ok(ids)
            }
        }
    }
    /// Instances of a task on a business date.
    pub fn instances_of_task_day(&self, task: &str, bizdate: &str) -> Result<Vec<Instance>> {
        let mut out = Vec::new();
        for id in self.task_day_ids(task, Some(bizdate))? {
            if let Some(i) = self.instance(&id)? {
                out.push(i);
            }
        }
        Ok(out)
    }
    /// Ids of the instances that wait for `id`.
    pub fn downstream_of(&self, id: &str) -> Result<Vec<String>> {
        Ok(self.get(&down_key(id))?.unwrap_or_default())
    }
    /// Instances waiting for resources, the dispatch queue's order: priority (highest first),
    /// then the time they became ready.
    pub fn waiting_instances(&self) -> Result<Vec<Instance>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(WAITING.as_bytes()) {
            let (k, _) = item?;
            let id = String::from_utf8_lossy(&k[WAITING.len()..]).into_owned();
            if let Some(i) = self.instance(&id)?
                && i.state == InstanceState::WaitingResources
            {
                out.push(i);
            }
        }
        out.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then(a.ready_ms.cmp(&b.ready_ms))
                .then(a.id.cmp(&b.id))
        });
        Ok(out)
    }
    /// The earliest due time among instances waiting for their time, if any.
    pub fn next_due_ms(&self) -> Result<Option<i64>> {
        match self.tree.scan_prefix(TIMEQ.as_bytes()).next() {
            Some(item) => {
                let (k, _) = item?;
                let s = String::from_utf8_lossy(&k[TIMEQ.len()..]).into_owned();
                Ok(s.split('|').next().and_then(|d| d.parse().ok()))
            }
            None => Ok(None),
        }
    }
    /// The earliest attempt timeout, if any.
    pub fn next_timeout_ms(&self) -> Result<Option<i64>> {
        match self.tree.scan_prefix(TIMEOUT.as_bytes()).next() {
            Some(item) => {
                let (k, _) = item?;
                let s = String::from_utf8_lossy(&k[TIMEOUT.len()..]).into_owned();
                Ok(s.split('|').next().and_then(|d| d.parse().ok()))
            }
            None => Ok(None),
        }
    }
    /// Whether day `day` was generated for schedules in `zone`.
    pub fn generated(&self, zone: &str, day: chrono::NaiveDate) -> Result<bool> {
        Ok(self.tree.contains_key(generated_key(zone, day))?)
    }
    pub fn backfill(&self, id: &str) -> Result<Option<Backfill>> {
        self.get(&key(BACKFILL, id))
    }
    pub fn backfills(&self) -> Result<Vec<Backfill>> {
        self.scan(BACKFILL)
    }
    /// Attempts dispatched or running.
    pub fn live_attempts(&self) -> Result<Vec<Attempt>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(LIVE.as_bytes()) {
            let (k, _) = item?;
            let id = String::from_utf8_lossy(&k[LIVE.len()..]).into_owned();
            if let Some(a) = self.attempt(&id)? {
                out.push(a);
            }
        }
        Ok(out)
    }
    /// Attempts dispatched or running, as the command being applied sees them.
    fn live_attempts_in(&self, w: &Writes) -> Result<Vec<Attempt>> {
        let mut out = Vec::new();
        for k in self.keys_in(w, LIVE)? {
            let id = String::from_utf8_lossy(&k[LIVE.len()..]).into_owned();
            if let Some(a) = self.get_in(w, ATTEMPT, &id)? {
                out.push(a);
            }
        }
        Ok(out)
    }
    /// Attempts dispatched or running, per agent: the slots each agent has in use.
    pub fn running_per_agent(&self) -> Result<std::collections::HashMap<String, u32>> {
        let mut busy = std::collections::HashMap::new();
        for a in self.live_attempts()? {
            if !a.reader_agent_id.is_empty() {
                *busy.entry(a.reader_agent_id).or_default() += 1;
            }
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
    /// The index of the last applied log entry.
    pub fn applied_index(&self) -> u64 {
        self.applied.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The sled database; the raft node keeps its log in it too, so one flush covers both.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Replicates this store through `node` from now on.
    pub fn attach(&self, node: crate::raft::RaftHandle) {
        let _ = self.raft.set(node);
    }

    /// The raft node, once attached.
    pub fn raft(&self) -> Option<&crate::raft::RaftHandle> {
        self.raft.get()
    }
}

#[cfg(test)]
mod tests;
