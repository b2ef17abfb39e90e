//! The DAG of a business date, drawn around chosen instances.
//!
//! A day of 100,000 instances cannot be drawn, or even sent, at once, and the transitive
//! closure of a node in the middle of a 30-layer graph is most of the day. So the graph is
//! walked from its centres (an instance, or a task's instances of the day) a bounded number of
//! hops upstream (through `upstream` and `previous` of each record) and downstream (through the
//! `dl/` index), reading only the records it reaches; the instances at the edge of the cut are
//! flagged where the graph goes on, so a viewer can offer to expand them.

use super::AdminApi;
use super::instances::require_instance;
use crate::auth::{Action, Principal, qualify, workspace_of};
use crate::convert::instance_info;
use crate::error::{Error, Result};
use crate::state::model::Instance;
use crate::state::{ListQuery, Store};
use ferry_common::params;
use ferry_proto::admin::v1 as pb;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

/// Hops walked when the request says 0.
const DEFAULT_DEPTH: u32 = 2;
/// Hops walked at most.
const MAX_DEPTH: u32 = 10;
/// Instances in an answer at most: more is no longer a picture, and each costs about 40 µs
/// (its record, its state, its edges), so an answer stays near 100 ms.
const MAX_NODES: usize = 2000;

fn depth(asked: u32) -> u32 {
    match asked {
        0 => DEFAULT_DEPTH,
        d => d.min(MAX_DEPTH),
    }
}

/// The instances reached so far.
struct Walk<'a> {
    store: &'a Store,
    workspace: &'a str,
    nodes: HashMap<String, Instance>,
    /// Downstream ids of the instances looked at, read once from the `dl/` index.
    downs: HashMap<String, Vec<String>>,
    truncated: bool,
}

/// `id`'s downstream ids, read once from the `dl/` index into `downs`.
fn downstream<'m>(
    store: &Store,
    downs: &'m mut HashMap<String, Vec<String>>,
    id: &str,
) -> Result<&'m [String]> {
    Ok(match downs.entry(id.to_string()) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => e.insert(store.downstream_of(id)?),
    })
}

impl Walk<'_> {
    /// Adds `inst` unless it is there already; `false` when the answer is full.
    fn add(&mut self, inst: Instance) -> bool {
        if self.nodes.contains_key(&inst.id) {
            return true;
        }
        if self.nodes.len() >= MAX_NODES {
            self.truncated = true;
            return false;
        }
        self.nodes.insert(inst.id.clone(), inst);
        true
    }

    /// Walks `hops` steps from `from`, upstream or downstream; stops when the answer is full.
    fn walk(&mut self, from: &[String], hops: u32, upstream: bool) -> Result<()> {
        let mut frontier = from.to_vec();
        for _ in 0..hops {
            let mut next = Vec::new();
            for id in &frontier {
                let neighbours = if upstream {
                    match self.nodes.get(id) {
                        Some(i) => i.upstream.iter().chain(&i.previous).cloned().collect(),
                        None => Vec::new(),
                    }
                } else {
                    downstream(self.store, &mut self.downs, id)?.to_vec()
                };
                for n in neighbours {
                    if self.nodes.contains_key(&n) {
                        continue;
                    }
                    let Some(inst) = self.store.instance(&n)? else {
                        continue;
                    };
                    if workspace_of(&inst.task) != self.workspace {
                        continue;
                    }
                    if !self.add(inst) {
                        return Ok(());
                    }
                    next.push(n);
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        Ok(())
    }
}

pub async fn get_dag(
    api: &AdminApi,
    p: &Principal,
    req: pb::GetDagRequest,
) -> Result<pb::DagResponse> {
    let target = if req.instance.is_empty() {
        &req.task
    } else {
        &req.instance
    };
    api.allow(p, Action::Read, &p.workspace, "GetDag", target)
        .await?;
    let (up, down) = (depth(req.depth_up), depth(req.depth_down));
    let store = &api.ctx.store;
    let mut walk = Walk {
        store,
        workspace: &p.workspace,
        nodes: HashMap::new(),
        downs: HashMap::new(),
        truncated: false,
    };
    let mut centres = Vec::new();
    if !req.instance.is_empty() {
        centres.push(require_instance(api, p, &req.instance)?);
    } else {
        if req.bizdate.is_empty() {
            return Err(Error::InvalidArgument(
                "name a business date (bizdate) or an instance".into(),
            ));
        }
        let day = params::parse_bizdate(&req.bizdate)?
            .format("%Y%m%d")
            .to_string();
        if !req.task.is_empty() {
            centres = store.instances_of_task_day(&qualify(&p.workspace, &req.task), &day)?;
        } else {
            // No centre: the day itself, as far as an answer goes.
            let page = store.list_instances(&ListQuery {
                workspace: p.workspace.clone(),
                bizdate: Some(day),
                limit: MAX_NODES,
                ..Default::default()
            })?;
            walk.truncated = page.next.is_some();
            for id in &page.ids {
                if let Some(i) = store.instance(id)? {
                    walk.add(i);
                }
            }
        }
    }
    let ids: Vec<String> = centres.iter().map(|i| i.id.clone()).collect();
    for c in centres {
        walk.add(c);
    }
    walk.walk(&ids, up, true)?;
    walk.walk(&ids, down, false)?;

    let mut instances = Vec::with_capacity(walk.nodes.len());
    let mut edges = Vec::new();
    let mut borders = Vec::new();
    let ids: Vec<String> = walk.nodes.keys().cloned().collect();
    let mut more_down = HashSet::new();
    for id in ids {
        if downstream(store, &mut walk.downs, &id)?
            .iter()
            .any(|d| !walk.nodes.contains_key(d))
        {
            more_down.insert(id);
        }
    }
    for i in walk.nodes.values() {
        let mut border = pb::DagBorder {
            id: i.id.clone(),
            ..Default::default()
        };
        for (ups, previous) in [(&i.upstream, false), (&i.previous, true)] {
            for u in ups {
                if walk.nodes.contains_key(u) {
                    edges.push(pb::DagEdge {
                        from: u.clone(),
                        to: i.id.clone(),
                        previous,
                    });
                } else if store.has_instance(u)? {
                    border.more_upstream = true;
                }
            }
        }
        border.more_downstream = more_down.contains(&i.id);
        if border.more_upstream || border.more_downstream {
            borders.push(border);
        }
        instances.push(instance_info(&api.ctx, i)?);
    }
    instances.sort_by(|a, b| (&a.cyctime, &a.id).cmp(&(&b.cyctime, &b.id)));
    edges.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
    borders.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(pb::DagResponse {
        instances,
        edges,
        borders,
        truncated: walk.truncated,
        depth_up: up,
        depth_down: down,
    })
}
