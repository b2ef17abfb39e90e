//! When nodes run: cron expressions in a time zone, the runs (cycles) they produce, and the
//! period that decides how a node's instances match its upstream's.
//!
//! # Layout
//! - [`cron`]: [`CronSchedule`], an expression plus an IANA zone; its runs as [`Fire`]s.
//! - `expr`: the two accepted expression forms ([`CronForm`]) and their translation into the
//!   `cron` crate's syntax.
//! - `zone`: wall time to instant, with Ferry's daylight-saving rules.
//! - [`period`]: [`Period`] of a schedule and the [`MatchRule`] between two periods.

pub mod cron;
mod expr;
pub mod period;
mod zone;

#[cfg(test)]
mod tests;

pub use cron::{CronSchedule, Fire};
pub use expr::CronForm;
pub use period::{MatchRule, Period, match_rule};
