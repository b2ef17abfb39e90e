//! Instance planning: from submitted nodes to the instances of a day and the edges between them.
//! Pure and deterministic — no clock, no store — so the leader can plan, propose the result as a
//! raft command, and every replica applies the same instances; and so a week of schedules is
//! tested in milliseconds.
//!
//! # Layout
//! - [`node`]: [`NodeSpec`], a node version as planning needs it (schedule, dates,
//!   dependencies, parameters).
//! - [`graph`]: [`validate_graph`], refusing unknown upstreams and dependency cycles at submit.
//! - [`day`]: [`plan_day`], the instances of one day with keys, parameters and upstream keys,
//!   matched by period as design §3 says (`ferry_common::schedule::period`).
//!
//! Errors are `ferry_common::Error`s (user mistakes), which the scheduler's error wraps as
//! invalid arguments.

pub mod day;
pub mod graph;
pub mod node;

#[cfg(test)]
mod tests;

pub use day::{
    DayPlan, DryRun, Generation, PlannedInstance, instance_key, plan_day, plan_graph_day,
};
pub use graph::{Graph, validate_graph};
pub use node::{Dependency, NodeSchedule, NodeSpec, NodeType};
