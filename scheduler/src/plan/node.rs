//! A node (task version) as instance planning sees it: what it is, when it runs, what it waits
//! for and which parameters it resolves. The state machine's records convert into this; nothing
//! here is stored.

use chrono::NaiveDate;
use ferry_common::params::ParamDefs;
use ferry_common::schedule::{CronSchedule, Period};

/// What an instance of the node does when it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeType {
    /// A sync job run by an agent's sync engine.
    Sync,
    /// A shell script run by an agent.
    Shell,
    /// Runs nothing and succeeds: a start or join point of a DAG.
    Virtual,
}

/// When a node runs by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeSchedule {
    /// Only by hand or by a backfill: no planned instances.
    Manual,
    /// By a cron expression in a time zone.
    Cron(CronSchedule),
}

impl NodeSchedule {
    /// How often the node runs.
    pub fn period(&self) -> Period {
        match self {
            Self::Manual => Period::Manual,
            Self::Cron(c) => c.period(),
        }
    }
}

/// One dependency of a node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Dependency {
    /// The node waited for; the node's own name with `previous` for a self-dependency.
    pub upstream: String,
    /// Cross-cycle: wait for the upstream's previous cycle rather than the same cycle. Such an
    /// edge can not close a cycle within a day.
    pub previous: bool,
}

impl Dependency {
    /// A same-cycle dependency on `upstream`.
    pub fn same_cycle(upstream: impl Into<String>) -> Self {
        Self {
            upstream: upstream.into(),
            previous: false,
        }
    }

    /// A dependency on `upstream`'s previous cycle (the node's own name: on itself).
    pub fn previous_cycle(upstream: impl Into<String>) -> Self {
        Self {
            upstream: upstream.into(),
            previous: true,
        }
    }
}

/// A submitted node version, as planning needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    /// The version instances pin.
    pub version: u32,
    pub node_type: NodeType,
    pub schedule: NodeSchedule,
    /// First day of the effective range; before it the node's instances are dry runs.
    pub start_date: Option<NaiveDate>,
    /// Last day of the effective range; after it the node's instances are dry runs.
    pub end_date: Option<NaiveDate>,
    pub dependencies: Vec<Dependency>,
    pub params: ParamDefs,
}

impl NodeSpec {
    /// A version-1 sync node with no dependencies, dates or parameters.
    pub fn new(name: impl Into<String>, schedule: NodeSchedule) -> Self {
        Self {
            name: name.into(),
            version: 1,
            node_type: NodeType::Sync,
            schedule,
            start_date: None,
            end_date: None,
            dependencies: Vec::new(),
            params: ParamDefs::default(),
        }
    }

    /// Adds a same-cycle dependency on `upstream`.
    pub fn after(mut self, upstream: impl Into<String>) -> Self {
        self.dependencies.push(Dependency::same_cycle(upstream));
        self
    }

    /// Adds a dependency on `upstream`'s previous cycle.
    pub fn after_previous(mut self, upstream: impl Into<String>) -> Self {
        self.dependencies.push(Dependency::previous_cycle(upstream));
        self
    }

    /// Whether `day` lies in the effective range.
    pub fn in_effect(&self, day: NaiveDate) -> bool {
        self.start_date.is_none_or(|s| s <= day) && self.end_date.is_none_or(|e| day <= e)
    }
}
