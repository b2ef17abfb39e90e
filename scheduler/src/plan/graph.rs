//! Validation of the node graph at submit: every upstream exists, no scheduled node waits on a
//! manual one, and same-cycle dependencies form no cycle (a cross-cycle edge points into the
//! past, so it cannot close one within a day). A refused cycle is reported with the path that
//! closes it, e.g. `a -> b -> c -> a`, arrows pointing from a node to the one that depends on it.

use super::node::{NodeSchedule, NodeSpec};
use ferry_common::{Error, Result};
use std::collections::HashMap;

/// A validated graph: nodes by index, their upstream edges, and an order in which every node
/// comes after its same-cycle upstreams.
#[derive(Debug)]
pub struct Graph<'a> {
    nodes: &'a [NodeSpec],
    index: HashMap<&'a str, usize>,
    /// Per node: (upstream index, previous cycle), in the order written.
    upstream: Vec<Vec<(usize, bool)>>,
    order: Vec<usize>,
}

impl<'a> Graph<'a> {
    /// The nodes, as given.
    pub fn nodes(&self) -> &'a [NodeSpec] {
        self.nodes
    }

    /// The index of node `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Node `i`'s dependencies as (upstream index, previous cycle).
    pub fn upstream_of(&self, i: usize) -> &[(usize, bool)] {
        self.upstream.get(i).map(Vec::as_slice).unwrap_or_default()
    }

    /// Node indices, each after its same-cycle upstreams; deterministic for a given input.
    pub fn order(&self) -> &[usize] {
        &self.order
    }
}

/// Checks names, upstreams and cycles, and orders the nodes.
pub fn validate_graph(nodes: &[NodeSpec]) -> Result<Graph<'_>> {
    let mut index = HashMap::with_capacity(nodes.len());
    for (i, n) in nodes.iter().enumerate() {
        if index.insert(n.name.as_str(), i).is_some() {
            return Err(Error::DuplicateNode(n.name.clone()));
        }
    }
    let mut upstream = Vec::with_capacity(nodes.len());
    for n in nodes {
        let mut edges = Vec::with_capacity(n.dependencies.len());
        for d in &n.dependencies {
            let u = *index
                .get(d.upstream.as_str())
                .ok_or_else(|| Error::UnknownUpstream {
                    node: n.name.clone(),
                    upstream: d.upstream.clone(),
                })?;
            let scheduled = !matches!(n.schedule, NodeSchedule::Manual);
            if scheduled && matches!(nodes[u].schedule, NodeSchedule::Manual) {
                return Err(Error::ManualUpstream {
                    node: n.name.clone(),
                    upstream: d.upstream.clone(),
                });
            }
            edges.push((u, d.previous));
        }
        upstream.push(edges);
    }
    let order = topological_order(nodes, &upstream)?;
    Ok(Graph {
        nodes,
        index,
        upstream,
        order,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    New,
    OnPath,
    Done,
}

/// Depth-first over same-cycle "depends on" edges, iteratively (a chain may be thousands deep):
/// post-order puts every upstream before its downstream; meeting a node still on the path is a
/// cycle.
fn topological_order(nodes: &[NodeSpec], upstream: &[Vec<(usize, bool)>]) -> Result<Vec<usize>> {
    let mut mark = vec![Mark::New; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    // (node, next edge to look at)
    let mut path: Vec<(usize, usize)> = Vec::new();
    for root in 0..nodes.len() {
        if mark[root] != Mark::New {
            continue;
        }
        mark[root] = Mark::OnPath;
        path.push((root, 0));
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            let edges = &upstream[node];
            let Some(&(u, previous)) = edges.get(*next) else {
                mark[node] = Mark::Done;
                order.push(node);
                path.pop();
                continue;
            };
            *next += 1;
            if previous {
                continue;
            }
            match mark[u] {
                Mark::New => {
                    mark[u] = Mark::OnPath;
                    path.push((u, 0));
                }
                Mark::OnPath => return Err(Error::DependencyCycle(cycle_path(nodes, &path, u))),
                Mark::Done => {}
            }
        }
    }
    Ok(order)
}

/// The cycle closed by an edge from the path's last node to `u` (already on the path), written
/// in data-flow direction: `u -> .. -> u`.
fn cycle_path(nodes: &[NodeSpec], path: &[(usize, usize)], u: usize) -> String {
    let from = path.iter().position(|(n, _)| *n == u).unwrap_or(0);
    // The path runs from a node to its upstream; data flows the other way.
    let mut names: Vec<&str> = vec![nodes[u].name.as_str()];
    names.extend(
        path[from..]
            .iter()
            .rev()
            .map(|(n, _)| nodes[*n].name.as_str()),
    );
    names.join(" -> ")
}
