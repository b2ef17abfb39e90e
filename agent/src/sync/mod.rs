//! The sync engine: reader -> bounded channel of row batches -> writer.
//!
//! A reader cuts its source into splits (files, generator slices, later key ranges); up to
//! `job.setting.speed.channel` reader workers take splits from a queue and push batches into one
//! bounded channel; writer workers drain it. The bound is what keeps memory flat whatever the
//! table size: a slow writer stops the readers instead of piling rows up. Workers are tasks on
//! the runtime and database drivers are async; connectors built on blocking libraries (SQLite,
//! files) run on tokio's blocking pool, so a slow disk or database never stalls the agent's
//! session with the scheduler.
//!
//! A row a reader cannot convert or a writer cannot take is a dirty record: counted, the first
//! ones logged with their values and reason, and the job fails once `errorLimit` is passed.
//!
//! # Layout
//! - [`plugin`]: the boundary: the async `Reader`/`Writer` traits (and blocking twins), row
//!   batches, shared counters and the dirty-record accounting. Connectors depend on it alone.
//! - [`registry`]: plugin names and their constructors; the only module that names connectors.
//! - [`relay`]: one leg of a two-group sync, the engine with the relay standing in for the
//!   reader or the writer that runs on another agent.
//! - [`engine`]: splits, channels, backpressure, cancellation, error limits.
//! - [`value`]: the column model and its text forms.
//! - [`rdbms`]: the database reader and writer skeleton (splits, sessions, preSql/postSql,
//!   segments, dirty-row replay) over a per-database `Driver`.
//! - connectors: the [`postgres`] and [`mysql`] drivers, [`sqlite`], [`txtfile`], [`stream`];
//!   [`throttle`] for speed limits.

pub mod dbtls;
pub mod engine;
pub mod mysql;
pub mod plugin;
pub mod postgres;
pub mod rdbms;
pub mod registry;
pub mod relay;
pub mod sqlite;
pub mod stream;
pub mod throttle;
pub mod txtfile;
pub mod value;

pub use engine::{run, run_plugins, throttle_for};
pub use plugin::{Counters, JobLog, LogEntry, Shared, Summary, SyncError};
pub use registry::{build_reader, build_writer};
