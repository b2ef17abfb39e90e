//! The instance list's indexes: what the operations center pages through on a day of 100,000
//! instances without decoding them.
//!
//! Listing used to read every instance of a business date (JSON records of a kilobyte or two
//! each) to filter, count and sort them in memory, which took seconds on the scheduling
//! benchmark's day. These indexes, written by [`Store::save_instance`] in the apply batch of
//! every change of an instance (so every replica, every snapshot and every restart agrees with
//! the records), answer the list's questions from keys:
//! - `il/<ws>|<place>`, where an instance's *place* is `<bizdate>|<cyctime>|<task>|<id>` (the
//!   task without its workspace): every instance in the list's order, valued with its state and
//!   group. A page is a range read from the place after the last row seen.
//! - `is/<ws>|<state>|<place>`: the same by state, so "the failed ones" is a range too.
//! - `ic/<ws>|<bizdate>|<state>`: how many instances of the day are in the state, so totals and
//!   the overview's counts read at most ten keys a day.
//! - `it/<ws>|<bizdate>|<task>`: the same per task, and `iq/<ws>|<bizdate>|<task>|<cyctime>|<id>`
//!   (written once): a search reads one counter per task of the day (a fifth of the keys of
//!   the benchmark's day), then either the matching tasks' `iq/` rows, or, when they are a
//!   large share of the day, the day in order until the page is full.
//!
//! The list index is the one kept in step by reading it, not by trusting the caller's `before`:
//! each save compares the instance with its `il/` value and moves the others from there, so the
//! counters cannot drift from the keys. Stores made before these indexes get them at open
//! (and after restoring a snapshot without them), in one batch with the [`LISTING`] marker.

use super::model::{Instance, InstanceState};
use super::{INSTANCE, Store, Writes, task_day_prefix};
use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

/// Index: instances in list order, per workspace.
const LIST: &str = "il/";
/// Index: instances in list order, per workspace and state.
const LIST_STATE: &str = "is/";
/// Counters: instances per workspace, business date and state.
const DAY_COUNT: &str = "ic/";
/// Counters: instances per workspace, business date and task, by state (a search reads these,
/// one per task, rather than one key per instance).
const TASK_COUNT: &str = "it/";
/// Index: a task's instances of a day in cycle order (written once, at creation).
const TASK_LIST: &str = "iq/";
/// A search whose matches are at least this share of the day (1 in N) pages through the day in
/// order, skipping other tasks' rows; a rarer one reads the matching tasks' rows and sorts them.
const DENSE: u64 = 20;
/// Marker: the store has the listing indexes (written with them by the migration, and on
/// every new store).
pub(super) const LISTING: &str = "m/listing-v1";

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

    fn state_key(&self, state: InstanceState) -> Vec<u8> {
        format!(
            "{LIST_STATE}{}|{}|{}",
            self.workspace,
            state.as_str(),
            self.place
        )
        .into_bytes()
    }

    fn count_key(&self, state: InstanceState) -> Vec<u8> {
        count_key(&self.workspace, &self.bizdate, state)
    }

    fn task(&self) -> &str {
        task_and_id(&self.place).map_or("", |(t, _)| t)
    }

    fn task_count_key(&self) -> Vec<u8> {
        format!(
            "{TASK_COUNT}{}|{}|{}",
            self.workspace,
            self.bizdate,
            self.task()
        )
        .into_bytes()
    }

    /// `iq/<ws>|<bizdate>|<task>|<cyctime>|<id>`: the place with the task first.
    fn task_list_key(&self, cyctime: &str, id: &str) -> Vec<u8> {
        format!(
            "{TASK_LIST}{}|{}|{}|{cyctime}|{id}",
            self.workspace,
            self.bizdate,
            self.task()
        )
        .into_bytes()
    }
}

fn count_key(workspace: &str, bizdate: &str, state: InstanceState) -> Vec<u8> {
    format!("{DAY_COUNT}{workspace}|{bizdate}|{}", state.as_str()).into_bytes()
}

/// A place's parts: (task, id).
fn task_and_id(place: &str) -> Option<(&str, &str)> {
    let mut parts = place.splitn(4, '|');
    let (_, _, task, id) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some((task, id))
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

/// A row of the slow path: a place and what its index entry says.
struct Row {
    place: String,
    id: String,
    state: InstanceState,
}

impl Store {
    /// Keeps the listing indexes in step with `inst`, in the same batch as its record.
    pub(super) fn index_listing(&self, w: &mut Writes, inst: &Instance) -> Result<()> {
        let pos = Position::of(inst);
        let list_key = pos.list_key();
        let now = Listed {
            state: inst.state,
            group: inst.group.clone(),
        };
        let was: Option<Listed> = self.read(w, &list_key)?;
        if was.as_ref() == Some(&now) {
            return Ok(());
        }
        match &was {
            Some(was) => {
                w.remove(pos.state_key(was.state));
                self.bump(w, pos.count_key(was.state), -1)?;
            }
            None => w.put(pos.task_list_key(&inst.cyctime, &inst.id), &())?,
        }
        w.put(list_key, &now)?;
        w.put(pos.state_key(now.state), &())?;
        self.bump(w, pos.count_key(now.state), 1)?;
        let key = pos.task_count_key();
        let mut counts: BTreeMap<InstanceState, u64> = self.read(w, &key)?.unwrap_or_default();
        if let Some(was) = &was
            && let Some(n) = counts.get_mut(&was.state)
        {
            *n = n.saturating_sub(1);
        }
        *counts.entry(now.state).or_default() += 1;
        counts.retain(|_, n| *n > 0);
        w.put(key, &counts)
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

    /// Builds the listing indexes from the instance records when the store does not have them
    /// (made before them, or restored from a snapshot of such a store): one batch, with the
    /// marker, so a crash half way leaves no marker and the next open builds them again.
    pub(super) fn ensure_listing(&self) -> Result<()> {
        if self.tree.contains_key(LISTING)? {
            return Ok(());
        }
        let mut w = Writes::new();
        for prefix in [LIST, LIST_STATE, DAY_COUNT, TASK_COUNT, TASK_LIST] {
            for item in self.tree.scan_prefix(prefix.as_bytes()) {
                w.remove(item?.0.to_vec());
            }
        }
        let mut count = 0usize;
        for item in self.tree.scan_prefix(INSTANCE.as_bytes()) {
            let inst: Instance = serde_json::from_slice(&item?.1)?;
            self.index_listing(&mut w, &inst)?;
            count += 1;
        }
        w.put(LISTING.as_bytes().to_vec(), &1u32)?;
        self.tree.apply_batch(w.into_batch())?;
        self.db.flush()?;
        if count > 0 {
            tracing::info!(instances = count, "listing indexes built");
        }
        Ok(())
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

    /// A page of a workspace's instances, with the total and the counts by state. Without a
    /// filter but the day and state, it reads the page's keys and the day's counters; a search
    /// in a day reads the day's per-task counters, then the matching rows (or the day in order
    /// until the page is full, when they are many); a task, a group, or a search over every
    /// day looks at each candidate row.
    pub fn list_instances(&self, q: &ListQuery) -> Result<ListPage> {
        if q.task.is_some() || q.group.is_some() {
            return self.list_filtered(q);
        }
        if !q.search.is_empty() {
            return match &q.bizdate {
                Some(day) => self.list_searched(q, day, None),
                None => self.list_filtered(q),
            };
        }
        let counts = self.day_counts(&q.workspace, q.bizdate.as_deref())?;
        let total = match q.state {
            Some(s) => counts.get(&s).copied().unwrap_or(0),
            None => counts.values().sum(),
        };
        let (ids, next) = self.ordered_page(q, |_| true)?;
        Ok(ListPage {
            ids,
            total,
            counts,
            next,
        })
    }

    /// A page read in list order from the `il/` (or, with a state, the `is/`) index, keeping
    /// the rows of the tasks `keep` accepts.
    fn ordered_page(
        &self,
        q: &ListQuery,
        keep: impl Fn(&str) -> bool,
    ) -> Result<(Vec<String>, Option<String>)> {
        let root = match q.state {
            Some(s) => format!("{LIST_STATE}{}|{}|", q.workspace, s.as_str()),
            None => format!("{LIST}{}|", q.workspace),
        };
        let prefix = match &q.bizdate {
            Some(d) => format!("{root}{d}|"),
            None => root.clone(),
        };
        let start = prefix.as_bytes().to_vec();
        let mut end = start.clone();
        // '|' + 1: just past every key under the prefix.
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
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
        let mut ids = Vec::with_capacity(q.limit.min(1024));
        let mut skip = q.offset;
        let mut last = String::new();
        for item in keys {
            let (k, _) = item?;
            let Some(place) = k
                .get(root.len()..)
                .and_then(|p| std::str::from_utf8(p).ok())
            else {
                continue;
            };
            let Some((task, id)) = task_and_id(place) else {
                continue;
            };
            if !keep(task) {
                continue;
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            if ids.len() == q.limit {
                return Ok((ids, Some(last)));
            }
            ids.push(id.to_string());
            last = place.to_string();
        }
        Ok((ids, None))
    }

    /// A search in one day. `dense` forces the strategy (tests); `None` picks it by how many
    /// rows match.
    fn list_searched(&self, q: &ListQuery, day: &str, dense: Option<bool>) -> Result<ListPage> {
        let search = q.search.to_ascii_lowercase();
        let prefix = format!("{TASK_COUNT}{}|{day}|", q.workspace);
        let mut counts: BTreeMap<InstanceState, u64> = BTreeMap::new();
        let mut tasks: HashSet<String> = HashSet::new();
        for item in self.tree.scan_prefix(prefix.as_bytes()) {
            let (k, v) = item?;
            let Some(task) = k
                .get(prefix.len()..)
                .and_then(|t| std::str::from_utf8(t).ok())
            else {
                continue;
            };
            if !task.to_ascii_lowercase().contains(&search) {
                continue;
            }
            let of_task: BTreeMap<InstanceState, u64> = serde_json::from_slice(&v)?;
            for (s, n) in &of_task {
                *counts.entry(*s).or_default() += n;
            }
            if q.state.is_none_or(|s| of_task.contains_key(&s)) {
                tasks.insert(task.to_string());
            }
        }
        let total = match q.state {
            Some(s) => counts.get(&s).copied().unwrap_or(0),
            None => counts.values().sum(),
        };
        if total == 0 {
            return Ok(ListPage {
                counts,
                ..Default::default()
            });
        }
        let dense = match dense {
            Some(d) => d,
            None => {
                let day_counts = self.day_counts(&q.workspace, Some(day))?;
                let of_day: u64 = match q.state {
                    Some(s) => day_counts.get(&s).copied().unwrap_or(0),
                    None => day_counts.values().sum(),
                };
                total.saturating_mul(DENSE) >= of_day
            }
        };
        let (ids, next) = if dense {
            self.ordered_page(q, |t| tasks.contains(t))?
        } else {
            let mut rows = Vec::new();
            for task in &tasks {
                let prefix = format!("{TASK_LIST}{}|{day}|{task}|", q.workspace);
                for item in self.tree.scan_prefix(prefix.as_bytes()) {
                    let (k, _) = item?;
                    let Some((cyctime, id)) = k
                        .get(prefix.len()..)
                        .and_then(|t| std::str::from_utf8(t).ok())
                        .and_then(|t| t.split_once('|'))
                    else {
                        continue;
                    };
                    let place = format!("{day}|{cyctime}|{task}|{id}");
                    if let Some(s) = q.state {
                        let key = format!("{LIST_STATE}{}|{}|{place}", q.workspace, s.as_str());
                        if !self.tree.contains_key(key)? {
                            continue;
                        }
                    }
                    rows.push((place, id.to_string()));
                }
            }
            rows.sort();
            page_of(rows, q)
        };
        Ok(ListPage {
            ids,
            total,
            counts,
            next,
        })
    }

    /// The list with a task, search or group filter: every row of the day looked at once.
    fn list_filtered(&self, q: &ListQuery) -> Result<ListPage> {
        let search = q.search.to_ascii_lowercase();
        let mut rows = Vec::new();
        if let Some(task) = &q.task {
            // A task has few instances a day: read them.
            let prefix = match &q.bizdate {
                Some(d) => task_day_prefix(task, d),
                None => format!("{}{task}|", super::TASK_DAY),
            };
            for id in self.index(&prefix)? {
                let Some(inst) = self.instance(&id)? else {
                    continue;
                };
                let pos = Position::of(&inst);
                if pos.workspace != q.workspace
                    || q.group.as_ref().is_some_and(|g| *g != inst.group)
                    || !task_and_id(&pos.place)
                        .is_some_and(|(t, _)| t.to_ascii_lowercase().contains(&search))
                {
                    continue;
                }
                rows.push(Row {
                    place: pos.place,
                    id: inst.id,
                    state: inst.state,
                });
            }
            rows.sort_by(|a, b| a.place.cmp(&b.place));
        } else {
            let root = format!("{LIST}{}|", q.workspace);
            let prefix = match &q.bizdate {
                Some(d) => format!("{root}{d}|"),
                None => root.clone(),
            };
            for item in self.tree.scan_prefix(prefix.as_bytes()) {
                let (k, v) = item?;
                let Some(place) = k.get(root.len()..) else {
                    continue;
                };
                let place = String::from_utf8_lossy(place);
                let Some((task, id)) = task_and_id(&place) else {
                    continue;
                };
                if !search.is_empty() && !task.to_ascii_lowercase().contains(&search) {
                    continue;
                }
                let listed: Listed = serde_json::from_slice(&v)?;
                if q.group.as_ref().is_some_and(|g| *g != listed.group) {
                    continue;
                }
                rows.push(Row {
                    id: id.to_string(),
                    place: place.into_owned(),
                    state: listed.state,
                });
            }
        }
        let mut counts: BTreeMap<InstanceState, u64> = BTreeMap::new();
        for r in &rows {
            *counts.entry(r.state).or_default() += 1;
        }
        let rows: Vec<(String, String)> = rows
            .into_iter()
            .filter(|r| q.state.is_none_or(|s| s == r.state))
            .map(|r| (r.place, r.id))
            .collect();
        let total = rows.len() as u64;
        let (ids, next) = page_of(rows, q);
        Ok(ListPage {
            ids,
            total,
            counts,
            next,
        })
    }
}

/// The page `q` asks for of `rows` (place, id), sorted by place.
fn page_of(mut rows: Vec<(String, String)>, q: &ListQuery) -> (Vec<String>, Option<String>) {
    if q.descending {
        rows.reverse();
    }
    let from = match &q.after {
        Some(a) if q.descending => rows.partition_point(|r| r.0 >= *a),
        Some(a) => rows.partition_point(|r| r.0 <= *a),
        None => 0,
    };
    let start = from.saturating_add(q.offset).min(rows.len());
    let end = start.saturating_add(q.limit).min(rows.len());
    let next = (end < rows.len() && end > start).then(|| rows[end - 1].0.clone());
    (rows[start..end].iter().map(|r| r.1.clone()).collect(), next)
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
            for prefix in [LIST, LIST_STATE, DAY_COUNT] {
                for item in store.tree.scan_prefix(prefix) {
                    batch.remove(item?.0);
                }
            }
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
        Ok(())
    }

    /// Both ways of answering a search (reading the matching tasks' rows, or the day in order)
    /// give what looking at every row gives, for every state, page size, direction and cursor.
    #[tokio::test]
    async fn both_search_strategies_answer_alike() -> Result<()> {
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
                all.push(instance(
                    &format!("ws/{name}"),
                    &format!("ws/{name}@{c}"),
                    &format!("2026112{}000000", (c * 7 + k) % 10),
                ));
            }
        }
        let ids: Vec<String> = all.iter().map(|i| i.id.clone()).collect();
        store
            .propose(Command::AddInstances {
                instances: all,
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
        for search in ["ord", "SALES", "user", "s", "none"] {
            for state in states {
                for limit in [1, 2, 5, 100] {
                    for descending in [false, true] {
                        let mut q = ListQuery {
                            workspace: "ws".into(),
                            bizdate: Some("20261124".into()),
                            search: search.into(),
                            state,
                            limit,
                            descending,
                            ..Default::default()
                        };
                        loop {
                            let want = store.list_filtered(&q)?;
                            for dense in [true, false] {
                                let got = store.list_searched(&q, "20261124", Some(dense))?;
                                assert_eq!(got, want, "{q:?}, dense: {dense}");
                            }
                            match want.next {
                                Some(next) => q.after = Some(next),
                                None => break,
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
