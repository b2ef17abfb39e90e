//! Domain types shared by Ferry's scheduler, agent and CLI.
//!
//! # Layout
//! - [`job`]: the job file (DataX job JSON shape and Ferry's aliases), parsed strictly into typed
//!   plugin parameters, and its resolution against the data source catalog.
//! - [`datasource`]: data source kinds and connection fields; secrets stay redacted in `Debug`.
//! - [`params`]: scheduling parameters such as `${bizdate}` and `$[yyyymmdd-1]`, user parameters
//!   `name=expression`, resolved per instance and substituted into job text.
//! - [`schedule`]: cron expressions in a time zone, their runs across daylight-saving changes, and
//!   the period of a schedule that dependency matching compares.
//! - [`secret`]: the [`secret::Secret`] string and the token helpers (random tokens, hashes).
//! - [`error`]: the crate's error type.
//!
//! No I/O servers live here: this crate must stay cheap for the CLI to depend on.

pub mod datasource;
pub mod error;
pub mod job;
pub mod params;
pub mod schedule;
pub mod secret;

pub use error::{Error, Result};
