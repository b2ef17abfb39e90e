//! The sync engine: reader -> bounded channel of row batches -> writer.
//!
//! A reader cuts its source into splits (files, generator slices, later key ranges); up to
//! `job.setting.speed.channel` reader workers take splits from a queue and push batches into one
//! bounded channel; writer workers drain it. The bound is what keeps memory flat whatever the
//! table size: a slow writer stops the readers instead of piling rows up. Connectors are
//! blocking code run on tokio's blocking pool, so a slow disk or database never stalls the
//! agent's session with the scheduler.
//!
//! A row a reader cannot convert or a writer cannot take is a dirty record: counted, the first
//! ones logged with their reason, and the job fails once `errorLimit` is passed.

pub mod engine;
pub mod mysql;
pub mod postgres;
pub mod rdbms;
pub mod sqlite;
pub mod stream;
pub mod throttle;
pub mod txtfile;
pub mod value;

pub use engine::{
    Counters, JobLog, LogEntry, Shared, Summary, SyncError, build_reader, build_writer, run,
    run_plugins, throttle_for,
};
