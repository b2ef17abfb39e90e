//! The period of a schedule (minute-level, hourly, daily, weekly, monthly, manual) and the rule
//! that matches a downstream node's instances to its upstream's by comparing periods, as in
//! DataWorks (design §3): equal periods match one-to-one by cycle; a coarser downstream (daily on
//! hourly) waits for all of the day's upstream instances; a finer downstream (hourly on daily)
//! waits for the day's upstream instance. Weekly and monthly nodes have one instance every day
//! (a dry run on days they are not scheduled), so for matching they behave as daily ones.

use chrono::{NaiveTime, Timelike};
use std::cmp::Ordering;

/// How often a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// More than once within some hour (every 5, 15, 30 minutes).
    Minute,
    /// At several hours of a day, at most once within each hour.
    Hourly,
    /// Once a day, every day.
    Daily,
    /// Once a day, on some days of the week.
    Weekly,
    /// Once a day, on some days of the month or of some months (yearly schedules count here).
    Monthly,
    /// Never by schedule: only run by hand or by a backfill.
    Manual,
}

/// Which of the day's upstream instances a downstream instance waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchRule {
    /// Both run several times a day: the upstream instances whose cycle times fall after the
    /// downstream's previous cycle and up to its own; when there are none, the latest upstream
    /// instance at or before its cycle, else the day's first. Equal schedules match one-to-one.
    ByCycle,
    /// The downstream runs once a day, the upstream several times: all of the day's upstream
    /// instances.
    AllOfDay,
    /// The upstream runs once a day: its instance of the day.
    DayInstance,
}

impl Period {
    /// Classifies a schedule by the times of day it runs at and whether it is limited to some
    /// days (`weekdays` limits by day of week, `month_days` by day of month, month or year).
    pub fn classify(times_of_day: &[NaiveTime], weekdays: bool, month_days: bool) -> Self {
        if times_of_day.len() > 1 {
            let mut hours: Vec<u32> = times_of_day.iter().map(|t| t.hour()).collect();
            hours.dedup();
            return if hours.len() < times_of_day.len() {
                Self::Minute
            } else {
                Self::Hourly
            };
        }
        if month_days {
            Self::Monthly
        } else if weekdays {
            Self::Weekly
        } else {
            Self::Daily
        }
    }

    /// Whether the node has several instances a day.
    pub fn is_sub_daily(self) -> bool {
        matches!(self, Self::Minute | Self::Hourly)
    }

    /// Whether the node has exactly one instance a day (daily, weekly, monthly).
    pub fn is_day_level(self) -> bool {
        matches!(self, Self::Daily | Self::Weekly | Self::Monthly)
    }

    /// Coarser (`Greater`) or finer (`Less`) than `other`; `None` when either is manual.
    pub fn compare(self, other: Self) -> Option<Ordering> {
        let rank = |p: Self| match p {
            Self::Minute => Some(0),
            Self::Hourly => Some(1),
            Self::Daily => Some(2),
            Self::Weekly => Some(3),
            Self::Monthly => Some(4),
            Self::Manual => None,
        };
        Some(rank(self)?.cmp(&rank(other)?))
    }

    /// The name used in messages and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hourly => "hourly",
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
            Self::Manual => "manual",
        }
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a `downstream` node's instance matches its `upstream`'s instances of the same day; `None`
/// when either runs only by hand (a manual node has no scheduled instances to match).
pub fn match_rule(downstream: Period, upstream: Period) -> Option<MatchRule> {
    if downstream == Period::Manual || upstream == Period::Manual {
        return None;
    }
    Some(if upstream.is_day_level() {
        MatchRule::DayInstance
    } else if downstream.is_day_level() {
        MatchRule::AllOfDay
    } else {
        MatchRule::ByCycle
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap_or_default()
    }

    #[test]
    fn classification() {
        assert_eq!(
            Period::classify(&[t(0, 0), t(0, 30)], false, false),
            Period::Minute
        );
        assert_eq!(
            Period::classify(&[t(0, 0), t(12, 0)], false, false),
            Period::Hourly
        );
        assert_eq!(Period::classify(&[t(2, 30)], false, false), Period::Daily);
        assert_eq!(Period::classify(&[t(2, 30)], true, false), Period::Weekly);
        assert_eq!(Period::classify(&[t(2, 30)], true, true), Period::Monthly);
    }

    #[test]
    fn coarser_and_finer() {
        assert_eq!(
            Period::Daily.compare(Period::Hourly),
            Some(Ordering::Greater)
        );
        assert_eq!(Period::Minute.compare(Period::Hourly), Some(Ordering::Less));
        assert_eq!(
            Period::Weekly.compare(Period::Weekly),
            Some(Ordering::Equal)
        );
        assert_eq!(Period::Manual.compare(Period::Daily), None);
    }

    #[test]
    fn rules_follow_the_periods() {
        use MatchRule::*;
        assert_eq!(match_rule(Period::Daily, Period::Hourly), Some(AllOfDay));
        assert_eq!(match_rule(Period::Hourly, Period::Daily), Some(DayInstance));
        assert_eq!(match_rule(Period::Hourly, Period::Hourly), Some(ByCycle));
        assert_eq!(match_rule(Period::Minute, Period::Hourly), Some(ByCycle));
        assert_eq!(match_rule(Period::Daily, Period::Weekly), Some(DayInstance));
        assert_eq!(match_rule(Period::Daily, Period::Daily), Some(DayInstance));
        assert_eq!(match_rule(Period::Daily, Period::Manual), None);
    }
}
