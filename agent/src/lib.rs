//! Ferry's agent: runs next to the data, inside a private network, and dials out to the
//! scheduler.
//!
//! # Layout
//! - [`identity`]: the agent's id and credential on local disk, and registration.
//! - [`session`]: the one long-lived stream to the scheduler, reconnecting with backoff.
//! - [`spool`]: reports kept on disk, numbered, until the scheduler acknowledges them.
//! - [`install`]: `ferry-agent install` / `uninstall` (settings, systemd unit).
//! - [`executor`]: runs attempts, streams their progress and logs, kills them.
//! - [`connectivity`]: tests whether a data source is reachable from here.
//! - [`files`]: file roots: the folders a job's file paths must stay inside.
//! - [`shell`]: shell tasks, when the group and this agent allow them.
//! - [`sync`]: the sync engine and its connectors.

pub mod connectivity;
pub mod executor;
pub mod files;
pub mod identity;
pub mod install;
pub mod session;
pub mod shell;
pub mod spool;
pub mod sync;
