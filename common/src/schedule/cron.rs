//! Ferry's cron: an expression in either accepted form plus an IANA time zone, answering when a
//! schedule fires as UTC instants together with the local wall-clock cycle time.
//!
//! The `cron` crate parses the expression and holds its fields; Ferry walks the calendar itself,
//! one local day at a time, and maps each wall time through the zone with explicit
//! daylight-saving rules (see [`super::zone`]): the crate's own iterator skips a wall time that
//! falls into a spring-forward gap, which would lose a day's run. Walking days also makes "the
//! cycles of one day" — what instance generation needs — a direct question.

use super::expr::{self, CronForm};
use super::period::Period;
use super::zone::{self, GapCache};
use crate::{Error, Result};
use ::cron::TimeUnitSpec;
use chrono::{DateTime, Datelike, Days, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use chrono_tz::Tz;
use std::fmt;
use std::sync::Arc;

/// How far [`CronSchedule::next_after`] looks: a February 29 schedule can wait eight years.
const HORIZON_DAYS: u64 = 9 * 366;

/// One run of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fire {
    /// When it runs.
    pub at: DateTime<Utc>,
    /// The same instant as the zone's wall clock shows it: the instance's cycle time. After a
    /// spring-forward gap this is the first wall time after the gap (03:00 for a 02:30 schedule).
    pub cycle: DateTime<FixedOffset>,
}

impl Fire {
    fn new(at: DateTime<Utc>, tz: Tz) -> Self {
        Self {
            at,
            cycle: at.with_timezone(&tz).fixed_offset(),
        }
    }

    /// The local wall-clock cycle time, as `${cyctime}` shows it.
    pub fn cycle_time(&self) -> NaiveDateTime {
        self.cycle.naive_local()
    }
}

/// A parsed schedule: expression and time zone. Cloning is cheap (shared).
#[derive(Clone)]
pub struct CronSchedule(Arc<Inner>);

struct Inner {
    expr: String,
    tz: Tz,
    form: CronForm,
    schedule: ::cron::Schedule,
    dom_or_dow: bool,
    /// Runs in both occurrences of a fall-back hour (see `zone`).
    interval: bool,
    times: Vec<NaiveTime>,
    period: Period,
}

impl CronSchedule {
    /// Parses `expr` (5-field crontab or 6/7-field with seconds, see [`CronForm`]) in the IANA
    /// zone `timezone` (`Asia/Shanghai`, `Europe/Berlin`, `UTC`).
    pub fn parse(expr: &str, timezone: &str) -> Result<Self> {
        let tz: Tz = timezone
            .trim()
            .parse()
            .map_err(|_| Error::UnknownTimeZone(timezone.to_string()))?;
        let parsed = expr::parse(expr)?;
        let s = &parsed.schedule;
        if s.seconds().count() != 1 {
            return Err(Error::InvalidCron {
                expr: expr.to_string(),
                message: "Ferry runs a schedule at most once a minute; give the seconds field \
                          one value such as 0 or 00"
                    .to_string(),
            });
        }
        let mut times = Vec::new();
        for h in s.hours().iter() {
            for m in s.minutes().iter() {
                for sec in s.seconds().iter() {
                    if let Some(t) = NaiveTime::from_hms_opt(h, m, sec) {
                        times.push(t);
                    }
                }
            }
        }
        let weekdays = s.days_of_week().count() < 7;
        let month_days =
            s.days_of_month().count() < 31 || s.months().count() < 12 || !s.years().is_all();
        let period = Period::classify(&times, weekdays, month_days);
        // DataWorks writes hourly as `00 00 00-23/1 * * ?`: running every hour is an interval
        // schedule too, though no field begins with `*`.
        let interval = parsed.interval || s.hours().count() == 24;
        let this = Self(Arc::new(Inner {
            expr: expr.trim().to_string(),
            tz,
            form: parsed.form,
            dom_or_dow: parsed.dom_or_dow,
            interval,
            schedule: parsed.schedule,
            times,
            period,
        }));
        if this.0.times.is_empty() || !this.runs_within_a_calendar_cycle() {
            return Err(Error::InvalidCron {
                expr: expr.to_string(),
                message: "it never fires (no calendar day matches its day and month fields)"
                    .to_string(),
            });
        }
        Ok(this)
    }

    /// The expression as the user wrote it.
    pub fn expression(&self) -> &str {
        &self.0.expr
    }

    /// The zone the expression's wall times are read in.
    pub fn timezone(&self) -> Tz {
        self.0.tz
    }

    /// Which form the expression was written in.
    pub fn form(&self) -> CronForm {
        self.0.form
    }

    /// How often it runs (minute-level .. monthly).
    pub fn period(&self) -> Period {
        self.0.period
    }

    /// The wall times of day it runs at on a day it runs, in order.
    pub fn times_of_day(&self) -> &[NaiveTime] {
        &self.0.times
    }

    /// Whether the local calendar day `day` is one it runs on (day-of-month, month, day-of-week,
    /// year fields; crontab's either-day rule for the 5-field form).
    pub fn runs_on(&self, day: NaiveDate) -> bool {
        let s = &self.0.schedule;
        let Ok(year) = u32::try_from(day.year()) else {
            return false;
        };
        if !s.years().includes(year) || !s.months().includes(day.month()) {
            return false;
        }
        let dom = s.days_of_month().includes(day.day());
        let dow = s
            .days_of_week()
            .includes(day.weekday().number_from_sunday());
        if self.0.dom_or_dow {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// The runs of local day `day`, in order; empty when it does not run that day.
    pub fn fires_on(&self, day: NaiveDate) -> Vec<Fire> {
        if self.runs_on(day) {
            self.cycles_on(day)
        } else {
            Vec::new()
        }
    }

    /// The cycles of local day `day` whether or not the schedule runs that day: the times of
    /// day applied to `day`. A weekly node's instance on a day it does not run is a dry run at
    /// these times, so its daily downstream nodes are not blocked.
    pub fn cycles_on(&self, day: NaiveDate) -> Vec<Fire> {
        let mut out = Vec::with_capacity(self.0.times.len());
        self.collect_cycles(day, &mut GapCache::default(), &mut out);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The runs at or after `from` and before `to`, in order.
    pub fn fires_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Fire> {
        let mut out = Vec::new();
        if from >= to {
            return out;
        }
        // A run belongs to the local day of its wall time or, pushed past a gap, to the day
        // before; so start one day early.
        let first = from.with_timezone(&self.0.tz).date_naive().pred_opt();
        let last = to.with_timezone(&self.0.tz).date_naive();
        let mut cache = GapCache::default();
        let mut day = first;
        while let Some(d) = day
            && d <= last
        {
            if self.runs_on(d) {
                self.collect_cycles(d, &mut cache, &mut out);
            }
            day = d.succ_opt();
        }
        out.retain(|f| from <= f.at && f.at < to);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The first run strictly after `t`, or `None` when there is none in the next nine years.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<Fire> {
        let start = t.with_timezone(&self.0.tz).date_naive().pred_opt()?;
        let mut cache = GapCache::default();
        let mut found: Vec<Fire> = Vec::new();
        for offset in 0..HORIZON_DAYS {
            let day = start.checked_add_days(Days::new(offset))?;
            if !self.runs_on(day) {
                continue;
            }
            self.collect_cycles(day, &mut cache, &mut found);
            found.retain(|f| f.at > t);
            // A later day's runs are never earlier than this day's, except one pushed past a
            // gap into the next day, which may tie; one more day settles it.
            if !found.is_empty() {
                if let Some(next) = day.succ_opt()
                    && self.runs_on(next)
                {
                    self.collect_cycles(next, &mut cache, &mut found);
                }
                return found.into_iter().filter(|f| f.at > t).min();
            }
        }
        None
    }

    fn collect_cycles(&self, day: NaiveDate, cache: &mut GapCache, out: &mut Vec<Fire>) {
        let tz = self.0.tz;
        for time in &self.0.times {
            let (first, second) = zone::instants(tz, day.and_time(*time), self.0.interval, cache);
            out.extend(first.into_iter().chain(second).map(|at| Fire::new(at, tz)));
        }
    }

    /// Whether any day of a full 28-year calendar cycle (ignoring the year field) matches.
    fn runs_within_a_calendar_cycle(&self) -> bool {
        let s = &self.0.schedule;
        let Some(mut day) = NaiveDate::from_ymd_opt(2000, 1, 1) else {
            return false;
        };
        let Some(end) = NaiveDate::from_ymd_opt(2028, 12, 31) else {
            return false;
        };
        while day <= end {
            if s.months().includes(day.month()) {
                let dom = s.days_of_month().includes(day.day());
                let dow = s
                    .days_of_week()
                    .includes(day.weekday().number_from_sunday());
                if (self.0.dom_or_dow && (dom || dow)) || (dom && dow) {
                    return true;
                }
            }
            match day.succ_opt() {
                Some(d) => day = d,
                None => return false,
            }
        }
        false
    }
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSchedule({:?} in {})", self.0.expr, self.0.tz)
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.0.expr, self.0.tz)
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.0.expr == other.0.expr && self.0.tz == other.0.tz
    }
}

impl Eq for CronSchedule {}
