//! The instance list's indexes: what the operations center pages through on a day of 100,000
//! instances without decoding them.
//!
//! Listing used to read every instance of a business date (JSON records of a kilobyte or two
//! each) to filter, count and sort them in memory, which took seconds on the scheduling
//! benchmark's day. Two stored indexes, written by [`Store::save_instance`] in the apply batch of
//! every change of an instance (so every replica, every snapshot and every restart agrees with
//! the records), answer from keys:
//! - `il/<ws>|<place>`, where an instance's *place* is `<bizdate>|<cyctime>|<task>|<id>` (the
//!   task without its workspace): every instance in the list's order, valued with its state and
//!   group. A page is a range read from the place after the last row seen.
//! - `ic/<ws>|<bizdate>|<state>`: how many instances of the day are in the state, so totals and
//!   the overview's counts read at most ten keys a day.
//!
//! A day's filters (state, search, task, group) are answered from a [`DayList`] held in memory:
//! the day's `il/` range read once (keys and small values, no records) and then kept in step
//! by the applier after every batch it stores. Only the days read lately are held
//! ([`DAYS_HELD`]). The first version kept three more stored indexes for these filters (by state,
//! by task, and per-task counters); they were a third of every instance change's writes, and
//! the applier is what limits dispatch (issue 9), so they became this derived, per-node cache,
//! which nothing replicated depends on.
//!
//! The list index is the one kept in step by reading it, not by trusting the caller's `before`:
//! each save of an existing instance compares it with its `il/` value and moves the counter from
//! there, so the counters cannot drift from the keys. (A new instance has no entry: the insert
//! checked that its record does not exist, and the two are written together.) Stores made
//! before these indexes get them at open (and after restoring a snapshot without them), in one
//! batch with the [`LISTING`] marker; stores of the first version lose the three dropped
//! indexes the same way.

use super::model::{Instance, InstanceState};
use super::{INSTANCE, Store, Writes};
use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

/// Index: instances in list order, per workspace.
pub(super) const LIST: &str = "il/";
/// Counters: instances per workspace, business date and state.
const DAY_COUNT: &str = "ic/";
/// Indexes of the first version, removed when a store is opened: by state, per-task counters,
/// and a task's rows.
const DROPPED: [&str; 3] = ["is/", "it/", "iq/"];
/// Marker: the store has the listing indexes of this version (written with them by the
/// migration, and on every new store).
pub(super) const LISTING: &str = "m/listing-v2";
/// The first version's marker: its `il/` and `ic/` are this version's.
const LISTING_V1: &str = "m/listing-v1";
/// Days whose lists are held in memory; the least recently read goes first. A day of 100,000
/// instances takes about 25 MiB.
const DAYS_HELD: usize = 4;

/// The value of an instance's `il/` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Listed {
    state: InstanceState,
    group: String,
}

/// An instance's position in the list: workspace and place.
struct Position {
    workspace: String,
    bizdate: String,
    place: String,
}

impl Position {
    fn of(inst: &Instance) -> Self {
        let (workspace, task) = inst.task.split_once('/').unwrap_or(("", &inst.task));
        Self {
            workspace: workspace.to_string(),
            bizdate: inst.bizdate.clone(),
            place: format!("{}|{}|{task}|{}", inst.bizdate, inst.cyctime, inst.id),
        }
    }

    fn list_key(&self) -> Vec<u8> {
        format!("{LIST}{}|{}", self.workspace, self.place).into_bytes()
    }

    fn count_key(&self, state: InstanceState) -> Vec<u8> {
        count_key(&self.workspace, &self.bizdate, state)
    }
}

fn count_key(workspace: &str, bizdate: &str, state: InstanceState) -> Vec<u8> {
    format!("{DAY_COUNT}{workspace}|{bizdate}|{}", state.as_str()).into_bytes()
}

/// The key range of everything under `prefix` (which ends in `|`): from it to just past it.
fn prefix_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    let start = prefix.as_bytes().to_vec();
    let mut end = start.clone();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    (start, end)
}

/// A place's parts: (task, id).
fn task_and_id(place: &str) -> Option<(&str, &str)> {
    let mut parts = place.splitn(4, '|');
    let (_, _, task, id) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some((task, id))
}

/// An `il/` key's parts: (workspace, business date, place).
fn split_list_key(k: &[u8]) -> Option<(&str, &str, &str)> {
    let rest = std::str::from_utf8(k.strip_prefix(LIST.as_bytes())?).ok()?;
    let (ws, place) = rest.split_once('|')?;
    let (day, _) = place.split_once('|')?;
    Some((ws, day, place))
}

/// Whether `text` contains `lower` (already lower case), ignoring ASCII case.
fn contains_ignoring_case(text: &str, lower: &str) -> bool {
    lower.is_empty()
        || text
            .as_bytes()
            .windows(lower.len())
            .any(|w| w.eq_ignore_ascii_case(lower.as_bytes()))
}

/// What a list asks for. Rows are in the order of their place (business date, cycle time,
/// task, id), or its reverse.
#[derive(Debug, Default, Clone)]
pub struct ListQuery {
    pub workspace: String,
    /// yyyymmdd; `None`: every day.
    pub bizdate: Option<String>,
    /// A qualified task name: only its instances.
    pub task: Option<String>,
    /// Only tasks whose name (without workspace) contains this, ignoring ASCII case.
    pub search: String,
    pub state: Option<InstanceState>,
    pub group: Option<String>,
    /// Rows after this place (before it, descending): where the previous page ended.
    pub after: Option<String>,
    /// Rows skipped (after `after`).
    pub offset: usize,
    pub limit: usize,
    pub descending: bool,
}

impl ListQuery {
    /// Whether a row passes every filter but the state.
    fn keeps(&self, place: &str, listed: &Listed, search: &str) -> bool {
        let Some((task, _)) = task_and_id(place) else {
            return false;
        };
        self.group.as_ref().is_none_or(|g| *g == listed.group)
            && self.task.as_ref().is_none_or(|t| {
                t.split_once('/')
                    .map_or(t.as_str(), |(_, name)| name)
                    .eq(task)
            })
            && contains_ignoring_case(task, search)
    }

    fn filters(&self) -> bool {
        self.task.is_some() || self.group.is_some() || !self.search.is_empty()
    }
}

/// One page of a list.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ListPage {
    /// The page's instance ids, in order.
    pub ids: Vec<String>,
    /// Rows matching every filter.
    pub total: u64,
    /// Rows matching every filter but the state, by state.
    pub counts: BTreeMap<InstanceState, u64>,
    /// The place of the page's last row when more rows follow it.
    pub next: Option<String>,
}

/// A workspace's day in list order, as its `il/` range says.
#[derive(Debug, Default)]
pub(super) struct DayList {
    rows: BTreeMap<String, Listed>,
    counts: BTreeMap<InstanceState, u64>,
}

impl DayList {
    /// The list of `rows` (place, entry), in any order.
    fn of(rows: Vec<(String, Listed)>) -> Self {
        let mut list = Self::default();
        for (place, listed) in rows {
            list.set(place, Some(listed));
        }
        list
    }

    fn set(&mut self, place: String, listed: Option<Listed>) {
        let was = match listed {
            Some(l) => {
                *self.counts.entry(l.state).or_default() += 1;
                self.rows.insert(place, l)
            }
            None => self.rows.remove(&place),
        };
        if let Some(was) = was
            && let Some(n) = self.counts.get_mut(&was.state)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.counts.remove(&was.state);
            }
        }
    }

    /// The page `q` asks for.
    fn page(&self, q: &ListQuery) -> ListPage {
        let search = q.search.to_ascii_lowercase();
        let counts = if q.filters() {
            let mut counts = BTreeMap::new();
            for (place, listed) in &self.rows {
                if q.keeps(place, listed, &search) {
                    *counts.entry(listed.state).or_default() += 1;
                }
            }
            counts
        } else {
            self.counts.clone()
        };
        let total = match q.state {
            Some(s) => counts.get(&s).copied().unwrap_or(0),
            None => counts.values().sum(),
        };
        let range = match (&q.after, q.descending) {
            (None, _) => (Bound::Unbounded, Bound::Unbounded),
            (Some(a), false) => (Bound::Excluded(a.as_str()), Bound::Unbounded),
            (Some(a), true) => (Bound::Unbounded, Bound::Excluded(a.as_str())),
        };
        let rows = self.rows.range::<str, _>(range);
        let rows: Box<dyn Iterator<Item = (&String, &Listed)>> = if q.descending {
            Box::new(rows.rev())
        } else {
            Box::new(rows)
        };
        let matching = rows.filter(|(place, listed)| {
            q.state.is_none_or(|s| s == listed.state) && q.keeps(place, listed, &search)
        });
        let (ids, next) = take_page(matching.map(|(place, _)| place.as_str()), q);
        ListPage {
            ids,
            total,
            counts,
            next,
        }
    }
}

/// Skips `q.offset` places and takes `q.limit`: their ids, and the last one's place when more
/// follow.
fn take_page<'a>(
    places: impl Iterator<Item = &'a str>,
    q: &ListQuery,
) -> (Vec<String>, Option<String>) {
    let mut ids = Vec::with_capacity(q.limit.min(1024));
    let mut last = "";
    for place in places.skip(q.offset) {
        if ids.len() == q.limit {
            return (ids, Some(last.to_string()));
        }
        let Some((_, id)) = task_and_id(place) else {
            continue;
        };
        ids.push(id.to_string());
        last = place;
    }
    (ids, None)
}

/// A day's list, or the changes it missed while being read.
enum Held {
    Loading(Vec<(String, Option<Listed>)>),
    Ready(DayList),
}

/// The days held in memory, by (workspace, business date), and the order they were read in.
#[derive(Default)]
pub(super) struct DayLists {
    days: HashMap<(String, String), Held>,
    /// Least recently read first.
    recent: Vec<(String, String)>,
}

impl DayLists {
    fn touch(&mut self, day: &(String, String)) {
        self.recent.retain(|d| d != day);
        self.recent.push(day.clone());
        while self.recent.len() > DAYS_HELD {
            let gone = self.recent.remove(0);
            self.days.remove(&gone);
        }
    }

    /// Forgets every day (a snapshot replaced the records).
    pub(super) fn clear(&mut self) {
        self.days.clear();
        self.recent.clear();
    }
}

impl Store {
    /// Keeps the listing indexes in step with `inst`, in the same batch as its record; `new`:
    /// it has no record yet, so no entry either.
    pub(super) fn index_listing(&self, w: &mut Writes, inst: &Instance, new: bool) -> Result<()> {
        let pos = Position::of(inst);
        let list_key = pos.list_key();
        let now = Listed {
            state: inst.state,
            group: inst.group.clone(),
        };
        let was: Option<Listed> = if new { None } else { self.read(w, &list_key)? };
        if was.as_ref() == Some(&now) {
            return Ok(());
        }
        if let Some(was) = &was {
            if was.state == now.state {
                return w.put(list_key, &now);
            }
            self.bump(w, pos.count_key(was.state), -1)?;
        }
        w.put(list_key, &now)?;
        self.bump(w, pos.count_key(now.state), 1)
    }

    fn bump(&self, w: &mut Writes, key: Vec<u8>, by: i64) -> Result<()> {
        let n = self.read::<u64>(w, &key)?.unwrap_or(0);
        let n = n.saturating_add_signed(by);
        if n == 0 {
            w.remove(key);
        } else {
            w.put(key, &n)?;
        }
        Ok(())
    }

    /// Brings the held days up to a stored batch's `il/` entries. The batch is stored already,
    /// so nothing here may fail it: a day an entry cannot be read into is dropped (and read
    /// again when next asked for).
    pub(super) fn listed_stored(&self, changes: Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        if changes.is_empty() {
            return;
        }
        let mut lists = self.day_lists();
        if lists.days.is_empty() {
            return;
        }
        for (k, v) in changes {
            let Some((ws, day, place)) = split_list_key(&k) else {
                continue;
            };
            let at = (ws.to_string(), day.to_string());
            let Some(held) = lists.days.get_mut(&at) else {
                continue;
            };
            let listed = match v.as_deref().map(serde_json::from_slice::<Listed>) {
                Some(Ok(l)) => Some(l),
                None => None,
                Some(Err(e)) => {
                    tracing::warn!(workspace = ws, bizdate = day, error = %e, "unreadable list entry; the day is read again when next listed");
                    lists.days.remove(&at);
                    continue;
                }
            };
            match held {
                Held::Loading(missed) => missed.push((place.to_string(), listed)),
                Held::Ready(list) => list.set(place.to_string(), listed),
            }
        }
    }

    pub(super) fn day_lists(&self) -> std::sync::MutexGuard<'_, DayLists> {
        // A panic while holding it can leave a day half updated: forget them all.
        self.listing.lock().unwrap_or_else(|p| {
            let mut g = p.into_inner();
            g.clear();
            g
        })
    }

    /// The `il/` entries of a workspace from `start` (inclusive) to `end` (exclusive), as
    /// (place, entry) in list order.
    fn listed_rows(
        &self,
        workspace: &str,
        start: Vec<u8>,
        end: Vec<u8>,
    ) -> Result<Vec<(String, Listed)>> {
        let root = format!("{LIST}{workspace}|");
        let mut rows = Vec::new();
        for item in self.tree.range(start..end) {
            let (k, v) = item?;
            let Some(place) = k
                .get(root.len()..)
                .and_then(|p| std::str::from_utf8(p).ok())
            else {
                continue;
            };
            rows.push((place.to_string(), serde_json::from_slice(&v)?));
        }
        Ok(rows)
    }

    /// A workspace's day read from its `il/` range.
    fn read_day(&self, workspace: &str, day: &str) -> Result<DayList> {
        let (start, end) = prefix_range(&format!("{LIST}{workspace}|{day}|"));
        Ok(DayList::of(self.listed_rows(workspace, start, end)?))
    }

    /// Answers `f` from a workspace's day: held, or read now and held from then on. Changes
    /// stored while it is read are kept aside and applied to it after, so it misses none.
    fn with_day<R>(&self, workspace: &str, day: &str, f: impl FnOnce(&DayList) -> R) -> Result<R> {
        let at = (workspace.to_string(), day.to_string());
        {
            let mut lists = self.day_lists();
            match lists.days.get(&at) {
                Some(Held::Ready(list)) => {
                    let r = f(list);
                    lists.touch(&at);
                    return Ok(r);
                }
                // Another reader is reading it: read it too, without holding it.
                Some(Held::Loading(_)) => {
                    drop(lists);
                    return Ok(f(&self.read_day(workspace, day)?));
                }
                None => {
                    lists.days.insert(at.clone(), Held::Loading(Vec::new()));
                }
            }
        }
        let read = self.read_day(workspace, day);
        let mut lists = self.day_lists();
        let missed = match lists.days.remove(&at) {
            Some(Held::Loading(missed)) => Some(missed),
            // Cleared meanwhile (a restore): answer, but do not hold what was read.
            _ => None,
        };
        let mut list = read?;
        match missed {
            Some(missed) => {
                for (place, listed) in missed {
                    list.set(place, listed);
                }
                let r = f(&list);
                lists.days.insert(at.clone(), Held::Ready(list));
                lists.touch(&at);
                Ok(r)
            }
            None => Ok(f(&list)),
        }
    }

    /// Builds the listing indexes from the instance records when the store does not have them
    /// (made before them, or restored from a snapshot of such a store): one batch, with the
    /// marker, so a crash half way leaves no marker and the next open builds them again. A
    /// store of the first version only loses the indexes this one no longer keeps.
    pub(super) fn ensure_listing(&self) -> Result<()> {
        if self.tree.contains_key(LISTING)? {
            return Ok(());
        }
        let mut w = Writes::new();
        for prefix in DROPPED {
            for item in self.tree.scan_prefix(prefix.as_bytes()) {
                w.remove(item?.0.to_vec());
            }
        }
        let mut count = 0usize;
        if !self.tree.contains_key(LISTING_V1)? {
            for prefix in [LIST, DAY_COUNT] {
                for item in self.tree.scan_prefix(prefix.as_bytes()) {
                    w.remove(item?.0.to_vec());
                }
            }
            for item in self.tree.scan_prefix(INSTANCE.as_bytes()) {
                let inst: Instance = serde_json::from_slice(&item?.1)?;
                self.index_listing(&mut w, &inst, true)?;
                count += 1;
            }
        }
        w.remove(LISTING_V1.as_bytes().to_vec());
        w.put(LISTING.as_bytes().to_vec(), &1u32)?;
        self.tree.apply_batch(w.into_batch())?;
        self.db.flush()?;
        self.day_lists().clear();
        if count > 0 {
            tracing::info!(instances = count, "listing indexes built");
        }
        Ok(())
    }

    /// How many instances are in each state, every workspace and day, from the counters.
    pub fn instance_counts(&self) -> Result<BTreeMap<InstanceState, u64>> {
        self.counts_under(DAY_COUNT)
    }

    /// Ids of a business date's instances in every workspace, in list order per workspace:
    /// each workspace's day is one range of `il/`, and the workspaces are found by skipping
    /// from one to the next rather than reading every day of each.
    pub fn ids_of_bizdate(&self, bizdate: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut from = LIST.as_bytes().to_vec();
        loop {
            let Some(item) = self.tree.range(from..).next() else {
                break;
            };
            let (k, _) = item?;
            let Some(rest) = k.strip_prefix(LIST.as_bytes()) else {
                break;
            };
            let Some(bar) = rest.iter().position(|b| *b == b'|') else {
                // Not a list key (none is written without a bar): step past it.
                from = k.to_vec();
                from.push(0);
                continue;
            };
            let workspace = String::from_utf8_lossy(&rest[..bar]).to_string();
            let (start, end) = prefix_range(&format!("{LIST}{workspace}|{bizdate}|"));
            for (place, _) in self.listed_rows(&workspace, start, end)? {
                if let Some((_, id)) = task_and_id(&place) {
                    out.push(id.to_string());
                }
            }
            // The next workspace: past every key of this one.
            from = prefix_range(&format!("{LIST}{workspace}|")).1;
        }
        Ok(out)
    }

    /// Instances by state of a workspace's day (every day: `None`), from the counters.
    pub fn day_counts(
        &self,
        workspace: &str,
        bizdate: Option<&str>,
    ) -> Result<BTreeMap<InstanceState, u64>> {
        let prefix = match bizdate {
            Some(d) => format!("{DAY_COUNT}{workspace}|{d}|"),
            None => format!("{DAY_COUNT}{workspace}|"),
        };
        self.counts_under(&prefix)
    }

    /// The counters under `prefix`, summed by state.
    fn counts_under(&self, prefix: &str) -> Result<BTreeMap<InstanceState, u64>> {
        let mut counts = BTreeMap::new();
        for item in self.tree.scan_prefix(prefix.as_bytes()) {
            let (k, v) = item?;
            let k = String::from_utf8_lossy(&k);
            let Some(state) = k.rsplit('|').next().and_then(InstanceState::parse) else {
                continue;
            };
            *counts.entry(state).or_default() += serde_json::from_slice::<u64>(&v)?;
        }
        Ok(counts)
    }

    /// A page of a workspace's instances, with the total and the counts by state. A task's
    /// instances are read through its task-day index (a task has few a day); a day is answered
    /// from its list in memory; every day at once reads the `il/` index in order (and the
    /// counters, without filters).
    pub fn list_instances(&self, q: &ListQuery) -> Result<ListPage> {
        if let Some(task) = &q.task {
            return self.list_of_task(q, task);
        }
        if let Some(day) = &q.bizdate {
            return self.with_day(&q.workspace, day, |list| list.page(q));
        }
        let root = format!("{LIST}{}|", q.workspace);
        let (start, end) = prefix_range(&root);
        if !q.filters() && q.state.is_none() {
            return self.every_day_page(q, &root, start, end);
        }
        let rows = self.listed_rows(&q.workspace, start, end)?;
        Ok(DayList::of(rows).page(q))
    }

    /// The instances of one task (on the query's day, or every day), from its task-day index
    /// and their records.
    fn list_of_task(&self, q: &ListQuery, task: &str) -> Result<ListPage> {
        let mut rows = Vec::new();
        for id in self.task_day_ids(task, q.bizdate.as_deref())? {
            let Some(inst) = self.instance(&id)? else {
                continue;
            };
            let pos = Position::of(&inst);
            if pos.workspace != q.workspace {
                continue;
            }
            rows.push((
                pos.place,
                Listed {
                    state: inst.state,
                    group: inst.group,
                },
            ));
        }
        Ok(DayList::of(rows).page(q))
    }

    /// Every day without a filter: the page's keys in order, and the counters.
    fn every_day_page(
        &self,
        q: &ListQuery,
        root: &str,
        start: Vec<u8>,
        end: Vec<u8>,
    ) -> Result<ListPage> {
        let (lo, hi) = match (&q.after, q.descending) {
            (None, _) => (Bound::Included(start), Bound::Excluded(end)),
            (Some(a), false) => (
                Bound::Excluded(format!("{root}{a}").into_bytes()),
                Bound::Excluded(end),
            ),
            (Some(a), true) => (
                Bound::Included(start),
                Bound::Excluded(format!("{root}{a}").into_bytes()),
            ),
        };
        let range = self.tree.range::<Vec<u8>, _>((lo, hi));
        let keys: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = if q.descending
        {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        let mut places = Vec::new();
        for item in keys {
            let (k, _) = item?;
            if let Some(place) = k
                .get(root.len()..)
                .and_then(|p| std::str::from_utf8(p).ok())
            {
                places.push(place.to_string());
            }
            if places.len() > q.offset.saturating_add(q.limit) {
                break;
            }
        }
        let counts = self.day_counts(&q.workspace, None)?;
        let (ids, next) = take_page(places.iter().map(String::as_str), q);
        Ok(ListPage {
            ids,
            total: counts.values().sum(),
            counts,
            next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::command::Command;

    fn instance(task: &str, id: &str, cyctime: &str) -> Instance {
        Instance {
            id: id.into(),
            task: task.into(),
            group: "rg".into(),
            bizdate: "20261124".into(),
            cyctime: cyctime.into(),
            ..Default::default()
        }
    }

    fn everything(store: &Store, workspace: &str) -> Result<ListPage> {
        store.list_instances(&ListQuery {
            workspace: workspace.into(),
            limit: 1000,
            ..Default::default()
        })
    }

    /// A store from before the indexes (simulated by removing them and the marker, and leaving
    /// a stray entry) gets them at open, the same as if they had always been kept.
    #[tokio::test]
    async fn an_old_store_gets_its_indexes_at_open() -> Result<()> {
        let dir =
            tempfile::tempdir().map_err(|e| crate::error::Error::InvalidArgument(e.to_string()))?;
        let (ws1, ws2) = {
            let store = Store::open(dir.path())?;
            store
                .propose(Command::AddInstances {
                    instances: vec![
                        instance("ws1/b", "ws1/b@1", "20261125010000"),
                        instance("ws1/a", "ws1/a@2", "20261125020000"),
                        instance("ws1/a", "ws1/a@1", "20261125010000"),
                        instance("ws2/a", "ws2/a@1", "20261125010000"),
                    ],
                    generated: None,
                    at_ms: 1,
                })
                .await?;
            let ws1 = everything(&store, "ws1")?;
            let ws2 = everything(&store, "ws2")?;
            assert_eq!(ws1.ids, ["ws1/a@1", "ws1/b@1", "ws1/a@2"]);
            assert_eq!(ws2.ids, ["ws2/a@1"]);
            let mut batch = sled::Batch::default();
            for prefix in [LIST, DAY_COUNT] {
                for item in store.tree.scan_prefix(prefix) {
                    batch.remove(item?.0);
                }
            }
            // What the first version kept besides.
            batch.insert(
                "is/ws1|success|20261124|20261125000000|gone|ws1/gone@0",
                "null",
            );
            batch.insert("iq/ws1|20261124|gone|20261125000000|ws1/gone@0", "null");
            batch.remove(LISTING);
            batch.insert("il/ws1|20261124|20261125000000|gone|ws1/gone@0", "{}");
            store.tree.apply_batch(batch)?;
            store.flush().await?;
            (ws1, ws2)
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let store = loop {
            match Store::open(dir.path()) {
                Ok(s) => break s,
                Err(e) if std::time::Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        };
        assert_eq!(everything(&store, "ws1")?, ws1);
        assert_eq!(everything(&store, "ws2")?, ws2);
        assert_eq!(
            store.day_counts("ws1", Some("20261124"))?,
            BTreeMap::from([(InstanceState::WaitingResources, 3)])
        );
        for prefix in DROPPED {
            assert_eq!(store.tree.scan_prefix(prefix).count(), 0, "{prefix}");
        }
        Ok(())
    }

    /// A day held in memory and kept in step by the applies after it was read answers every
    /// query as the day read afresh does, and as the every-day path (which reads the stored
    /// index) does when the store holds that one day: every filter, state, page size,
    /// direction, offset and cursor.
    #[tokio::test]
    async fn a_held_day_answers_as_the_stored_index_does() -> Result<()> {
        let dir =
            tempfile::tempdir().map_err(|e| crate::error::Error::InvalidArgument(e.to_string()))?;
        let store = Store::open(dir.path())?;
        let names = [
            "orders",
            "users",
            "ods_orders",
            "dim_user",
            "sales",
            "Sales_2",
        ];
        let mut all = Vec::new();
        for (k, name) in names.iter().enumerate() {
            for c in 0..(k % 4 + 1) {
                let mut i = instance(
                    &format!("ws/{name}"),
                    &format!("ws/{name}@{c}"),
                    &format!("2026112{}000000", (c * 7 + k) % 10),
                );
                if k % 2 == 1 {
                    i.group = "other".into();
                }
                all.push(i);
            }
        }
        let ids: Vec<String> = all.iter().map(|i| i.id.clone()).collect();
        let (first, rest) = all.split_at(5);
        store
            .propose(Command::AddInstances {
                instances: first.to_vec(),
                generated: None,
                at_ms: 1,
            })
            .await?;
        // Held from here on, with five of the rows.
        let day = |q: &ListQuery| store.list_instances(q);
        day(&ListQuery {
            workspace: "ws".into(),
            bizdate: Some("20261124".into()),
            limit: 1,
            ..Default::default()
        })?;
        store
            .propose(Command::AddInstances {
                instances: rest.to_vec(),
                generated: None,
                at_ms: 1,
            })
            .await?;
        for (n, id) in ids.iter().enumerate().filter(|(n, _)| n % 3 != 0) {
            let cmd = if n % 3 == 1 {
                Command::MarkSuccess {
                    id: id.clone(),
                    reason: "test".into(),
                    at_ms: 2,
                }
            } else {
                Command::KillInstance {
                    id: id.clone(),
                    reason: "test".into(),
                    at_ms: 2,
                }
            };
            store.propose(cmd).await?;
        }
        let states = [
            None,
            Some(InstanceState::Success),
            Some(InstanceState::Killed),
            Some(InstanceState::Failed),
        ];
        let mut pages = 0;
        for (search, task, group) in [
            ("", None, None),
            ("ord", None, None),
            ("SALES", None, None),
            ("s", None, Some("other")),
            ("", Some("ws/users"), None),
            ("", Some("ws/dim_user"), Some("rg")),
            ("none", None, None),
        ] {
            for state in states {
                for (limit, offset) in [(1, 0), (2, 1), (5, 0), (100, 3)] {
                    for descending in [false, true] {
                        let mut q = ListQuery {
                            workspace: "ws".into(),
                            bizdate: Some("20261124".into()),
                            search: search.into(),
                            task: task.map(String::from),
                            group: group.map(String::from),
                            state,
                            limit,
                            offset,
                            descending,
                            ..Default::default()
                        };
                        loop {
                            let held = store.list_instances(&q)?;
                            let fresh = store.read_day("ws", "20261124")?.page(&q);
                            assert_eq!(held, fresh, "{q:?}");
                            let every_day = store.list_instances(&ListQuery {
                                bizdate: None,
                                ..q.clone()
                            })?;
                            assert_eq!(held, every_day, "{q:?}, every day");
                            pages += 1;
                            match held.next {
                                Some(next) => q.after = Some(next),
                                None => break,
                            }
                        }
                    }
                }
            }
        }
        assert!(pages > 200, "{pages} pages");
        Ok(())
    }
}
