//! Scenario tests of Ferry's cron (day numbering, forms, daylight saving) and a property test over
//! random expressions and zones.

use super::*;
use crate::Result;
use chrono::offset::LocalResult;
use chrono::{
    DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;
use proptest::prelude::*;

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default()
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

fn cycles(fires: &[Fire]) -> Vec<String> {
    fires.iter().map(|f| f.cycle.to_rfc3339()).collect()
}

fn weekday_of_next(expr: &str) -> Result<Option<Weekday>> {
    let s = CronSchedule::parse(expr, "UTC")?;
    Ok(s.next_after(utc("2026-11-22T08:00:00Z"))
        .map(|f| f.cycle.weekday()))
}

#[test]
fn crontab_one_and_mon_mean_monday() -> Result<()> {
    assert_eq!(weekday_of_next("0 7 * * 1")?, Some(Weekday::Mon));
    assert_eq!(weekday_of_next("0 7 * * MON")?, Some(Weekday::Mon));
    assert_eq!(weekday_of_next("0 7 * * mon")?, Some(Weekday::Mon));
    Ok(())
}

#[test]
fn crontab_zero_and_seven_mean_sunday() -> Result<()> {
    assert_eq!(weekday_of_next("0 7 * * 0")?, Some(Weekday::Sun));
    assert_eq!(weekday_of_next("0 7 * * 7")?, Some(Weekday::Sun));
    assert_eq!(weekday_of_next("0 7 * * SUN")?, Some(Weekday::Sun));
    Ok(())
}

#[test]
fn seconds_form_numbers_days_from_sunday() -> Result<()> {
    assert_eq!(weekday_of_next("0 0 7 ? * 1")?, Some(Weekday::Sun));
    assert_eq!(weekday_of_next("0 0 7 ? * 2")?, Some(Weekday::Mon));
    assert_eq!(weekday_of_next("0 0 7 ? * MON")?, Some(Weekday::Mon));
    Ok(())
}

#[test]
fn both_forms_agree_on_weekdays() -> Result<()> {
    let five = CronSchedule::parse("30 2 * * 1-5", "Asia/Shanghai")?;
    let six = CronSchedule::parse("0 30 2 ? * 2-6", "Asia/Shanghai")?;
    let (from, to) = (utc("2026-11-01T00:00:00Z"), utc("2026-12-01T00:00:00Z"));
    let a = five.fires_between(from, to);
    // November's 21 weekdays, and Tuesday 1 December 02:30 in Shanghai is still November in UTC.
    assert_eq!(a.len(), 22);
    assert_eq!(a, six.fires_between(from, to));
    assert!(
        a.iter()
            .all(|f| f.cycle.weekday().number_from_monday() <= 5)
    );
    Ok(())
}

#[test]
fn dataworks_daily_at_0230() -> Result<()> {
    let s = CronSchedule::parse("00 30 02 * * ?", "Asia/Shanghai")?;
    assert_eq!(s.form(), CronForm::Seconds);
    assert_eq!(s.period(), Period::Daily);
    let fires = s.fires_between(utc("2026-11-23T00:00:00Z"), utc("2026-11-26T00:00:00Z"));
    assert_eq!(
        cycles(&fires),
        [
            "2026-11-24T02:30:00+08:00",
            "2026-11-25T02:30:00+08:00",
            "2026-11-26T02:30:00+08:00",
        ]
    );
    assert_eq!(
        fires.first().map(|f| f.at),
        Some(utc("2026-11-23T18:30:00Z"))
    );
    Ok(())
}

#[test]
fn spring_forward_gap_runs_at_the_end_of_the_gap() -> Result<()> {
    for expr in ["30 2 * * *", "00 30 02 * * ?"] {
        let s = CronSchedule::parse(expr, "Europe/Berlin")?;
        let fires = s.fires_on(day(2026, 3, 29));
        assert_eq!(cycles(&fires), ["2026-03-29T03:00:00+02:00"], "{expr}");
        assert_eq!(
            fires.first().map(|f| f.at),
            Some(utc("2026-03-29T01:00:00Z"))
        );
        // The days around it are untouched.
        assert_eq!(
            cycles(&s.fires_on(day(2026, 3, 28))),
            ["2026-03-28T02:30:00+01:00"]
        );
        assert_eq!(
            cycles(&s.fires_on(day(2026, 3, 30))),
            ["2026-03-30T02:30:00+02:00"]
        );
        // And next_after does not skip it.
        let next = s.next_after(utc("2026-03-28T12:00:00Z"));
        assert_eq!(next.map(|f| f.at), Some(utc("2026-03-29T01:00:00Z")));
    }
    Ok(())
}

#[test]
fn fall_back_overlap_runs_a_fixed_time_once() -> Result<()> {
    let s = CronSchedule::parse("30 2 * * *", "Europe/Berlin")?;
    let fires = s.fires_between(utc("2026-10-24T12:00:00Z"), utc("2026-10-25T12:00:00Z"));
    assert_eq!(cycles(&fires), ["2026-10-25T02:30:00+02:00"]);
    assert_eq!(
        fires.first().map(|f| f.at),
        Some(utc("2026-10-25T00:30:00Z"))
    );
    Ok(())
}

#[test]
fn hourly_across_both_daylight_saving_days() -> Result<()> {
    let s = CronSchedule::parse("0 * * * *", "Europe/Berlin")?;
    assert_eq!(s.period(), Period::Hourly);
    assert_eq!(s.fires_on(day(2026, 3, 28)).len(), 24);
    let spring = s.fires_on(day(2026, 3, 29));
    assert_eq!(spring.len(), 23);
    assert!(!cycles(&spring).iter().any(|c| c.contains("T02:")));
    let autumn = s.fires_on(day(2026, 10, 25));
    assert_eq!(autumn.len(), 25);
    let twos: Vec<String> = cycles(&autumn)
        .into_iter()
        .filter(|c| c.contains("T02:"))
        .collect();
    assert_eq!(
        twos,
        ["2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00"]
    );
    // Counting over the local day's instants gives the same numbers.
    let berlin = chrono_tz::Europe::Berlin;
    let midnight = |d: NaiveDate| {
        berlin
            .from_local_datetime(&d.and_time(chrono::NaiveTime::MIN))
            .earliest()
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    };
    let count = |d: NaiveDate| {
        s.fires_between(midnight(d), midnight(d + Duration::days(1)))
            .len()
    };
    assert_eq!(
        (count(day(2026, 3, 29)), count(day(2026, 10, 25))),
        (23, 25)
    );
    // DataWorks' way of writing hourly, without a `*`, counts the same.
    let dataworks = CronSchedule::parse("00 00 00-23/1 * * ?", "Europe/Berlin")?;
    assert_eq!(dataworks.fires_on(day(2026, 3, 29)).len(), 23);
    assert_eq!(dataworks.fires_on(day(2026, 10, 25)).len(), 25);
    // Every 15 minutes keeps its rhythm in elapsed time too.
    let quarter = CronSchedule::parse("*/15 * * * *", "Europe/Berlin")?;
    assert_eq!(quarter.period(), Period::Minute);
    assert_eq!(quarter.fires_on(day(2026, 3, 29)).len(), 92);
    assert_eq!(quarter.fires_on(day(2026, 10, 25)).len(), 100);
    Ok(())
}

#[test]
fn hourly_fires_are_an_hour_apart_in_elapsed_time_across_dst() -> Result<()> {
    let s = CronSchedule::parse("0 * * * *", "America/New_York")?;
    for d in [day(2026, 3, 8), day(2026, 11, 1)] {
        let fires = s.fires_on(d);
        for pair in fires.windows(2) {
            if let [a, b] = pair {
                assert_eq!(b.at - a.at, Duration::hours(1), "{d}");
            }
        }
    }
    Ok(())
}

#[test]
fn weekly_and_monthly() -> Result<()> {
    let (from, to) = (utc("2026-01-01T00:00:00Z"), utc("2027-01-01T00:00:00Z"));
    let first = CronSchedule::parse("0 3 1 * *", "UTC")?;
    assert_eq!(first.period(), Period::Monthly);
    let fires = first.fires_between(from, to);
    assert_eq!(fires.len(), 12);
    assert!(fires.iter().all(|f| f.cycle.day() == 1));
    let last = CronSchedule::parse("0 3 31 * *", "UTC")?;
    assert_eq!(last.fires_between(from, to).len(), 7);
    let yearly = CronSchedule::parse("@yearly", "UTC")?;
    assert_eq!(yearly.period(), Period::Monthly);
    assert_eq!(yearly.fires_between(from, to).len(), 1);
    let workdays = CronSchedule::parse("0 9 * * MON-FRI", "Europe/Berlin")?;
    assert_eq!(workdays.period(), Period::Weekly);
    let two_weeks =
        workdays.fires_between(utc("2026-11-23T00:00:00Z"), utc("2026-12-07T00:00:00Z"));
    assert_eq!(two_weeks.len(), 10);
    assert!(!workdays.runs_on(day(2026, 11, 28)));
    assert!(workdays.runs_on(day(2026, 11, 27)));
    // Crontab's rule: day-of-month and day-of-week both restricted means either.
    let either = CronSchedule::parse("0 0 1 * MON", "UTC")?;
    let nov = either.fires_between(utc("2026-11-01T00:00:00Z"), utc("2026-12-01T00:00:00Z"));
    let days: Vec<u32> = nov.iter().map(|f| f.cycle.day()).collect();
    assert_eq!(days, [1, 2, 9, 16, 23, 30]);
    Ok(())
}

#[test]
fn next_after_is_strict_and_finds_rare_days() -> Result<()> {
    let s = CronSchedule::parse("0 0 2 * * ?", "UTC")?;
    let t = utc("2026-11-24T02:00:00Z");
    assert_eq!(
        s.next_after(t).map(|f| f.at),
        Some(utc("2026-11-25T02:00:00Z"))
    );
    let leap = CronSchedule::parse("0 0 29 2 *", "UTC")?;
    assert_eq!(
        leap.next_after(t).map(|f| f.at),
        Some(utc("2028-02-29T00:00:00Z"))
    );
    let past = CronSchedule::parse("0 0 0 1 1 ? 2020", "UTC")?;
    assert_eq!(past.next_after(t), None);
    Ok(())
}

#[test]
fn bad_zone_or_expression_is_a_typed_error_with_an_example() {
    let zone = CronSchedule::parse("30 2 * * *", "Asia/Shangai").err();
    assert!(matches!(zone, Some(crate::Error::UnknownTimeZone(_))));
    let msg = zone.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("Asia/Shangai") && msg.contains("Asia/Shanghai"),
        "{msg}"
    );
    for (expr, want) in [
        ("0 0 30 2 *", "never fires"),
        ("* * * * * *", "at most once a minute"),
        ("30 2 * *", "4 fields"),
    ] {
        let err = CronSchedule::parse(expr, "UTC").err();
        assert!(
            matches!(err, Some(crate::Error::InvalidCron { .. })),
            "{expr}"
        );
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains(want) && msg.contains("`00 30 02 * * ?`"),
            "{msg}"
        );
    }
}

#[test]
fn periods_of_common_schedules() -> Result<()> {
    for (expr, period) in [
        ("*/5 * * * *", Period::Minute),
        ("0 * * * *", Period::Hourly),
        ("0 0,12 * * *", Period::Hourly),
        ("30 2 * * *", Period::Daily),
        ("0 3 * * MON", Period::Weekly),
        ("0 3 1 * *", Period::Monthly),
        ("0 0 3 L * ?", Period::Monthly),
    ] {
        match CronSchedule::parse(expr, "UTC") {
            Ok(s) => assert_eq!(s.period(), period, "{expr}"),
            // `L` (last day of month) is Quartz syntax the crate does not take: refused, not guessed.
            Err(e) => assert!(expr.contains('L'), "{expr}: {e}"),
        }
    }
    Ok(())
}

// ---- property test ----

const MINUTES: &[&str] = &["0", "30", "*/15", "5,35", "*/20", "0-10/5", "59"];
const HOURS: &[&str] = &["*", "2", "1-3", "*/2", "0,2,12", "3", "23", "0", "0-23/1"];
const DOMS: &[&str] = &["*", "1", "15", "1-7", "*/10", "29", "31"];
const MONTHS: &[&str] = &["*", "3", "10", "3,10", "*/3", "NOV"];
const DOWS: &[&str] = &["*", "0", "1-5", "MON", "SUN,SAT", "7", "*/2"];

const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Shanghai",
    "Australia/Lord_Howe",
    "America/Santiago",
    "America/Sao_Paulo",
    "Pacific/Apia",
];

fn offset_secs(tz: Tz, at: DateTime<Utc>) -> i32 {
    tz.offset_from_utc_datetime(&at.naive_utc())
        .fix()
        .local_minus_utc()
}

fn matches_expression(s: &CronSchedule, local: NaiveDateTime) -> bool {
    s.runs_on(local.date()) && s.times_of_day().contains(&local.time())
}

/// Whether the wall times skipped just before `at` (a spring-forward gap ending at `at`) hold
/// one of the expression's times.
fn gap_before_holds_a_run(s: &CronSchedule, tz: Tz, at: DateTime<Utc>) -> bool {
    let before = at - Duration::seconds(1);
    if offset_secs(tz, before) >= offset_secs(tz, at) {
        return false;
    }
    let gap_start = before.with_timezone(&tz).naive_local() + Duration::seconds(1);
    let gap_end = at.with_timezone(&tz).naive_local();
    let mut d = gap_start.date();
    while d <= gap_end.date() {
        for t in s.times_of_day() {
            let w = d.and_time(*t);
            if s.runs_on(d) && gap_start <= w && w < gap_end {
                return true;
            }
        }
        d += Duration::days(1);
    }
    false
}

/// The days of `year` on which `tz` changes its offset, as the instant of the day's noon before.
fn clock_changes(tz: Tz, year: i32) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let mut noon = day(year, 1, 1)
        .and_hms_opt(12, 0, 0)
        .unwrap_or_default()
        .and_utc();
    let end = day(year + 1, 1, 1)
        .and_time(chrono::NaiveTime::MIN)
        .and_utc();
    while noon < end {
        let next = noon + Duration::days(1);
        if offset_secs(tz, noon) != offset_secs(tz, next) {
            out.push(noon);
        }
        noon = next;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn fires_increase_and_map_back_to_the_expression(
        min in 0..MINUTES.len(), hour in 0..HOURS.len(), dom in 0..DOMS.len(),
        month in 0..MONTHS.len(), dow in 0..DOWS.len(), zone in 0..ZONES.len(),
        // Most expressions run every day, so most short ranges have runs to check.
        every_day in proptest::bool::weighted(0.7),
        year in 2010i32..2030, change in 0usize..4, before_secs in 0i64..(3 * 86_400),
        span_days in 1i64..10,
    ) {
        let (dom, month, dow) = if every_day { ("*", "*", "*") } else { (DOMS[dom], MONTHS[month], DOWS[dow]) };
        let expr = format!("{} {} {dom} {month} {dow}", MINUTES[min], HOURS[hour]);
        let Ok(s) = CronSchedule::parse(&expr, ZONES[zone]) else {
            return Ok(()); // e.g. `0 0 31 NOV *` never fires and is refused
        };
        let tz = s.timezone();
        // Start up to three days before one of the year's clock changes, so most ranges hold one.
        let changes = clock_changes(tz, year);
        let from = changes
            .get(change % changes.len().max(1))
            .copied()
            .unwrap_or_else(|| day(year, 6, 1).and_time(chrono::NaiveTime::MIN).and_utc())
            - Duration::seconds(before_secs);
        let to = from + Duration::days(span_days);
        let fires = s.fires_between(from, to);

        for pair in fires.windows(2) {
            if let [a, b] = pair {
                prop_assert!(a.at < b.at, "{expr} in {tz}: not increasing {a:?} {b:?}");
            }
        }
        for f in &fires {
            prop_assert!(from <= f.at && f.at < to);
            prop_assert_eq!(f.cycle, f.at.with_timezone(&tz).fixed_offset());
            let local = f.cycle_time();
            prop_assert!(
                matches_expression(&s, local) || gap_before_holds_a_run(&s, tz, f.at),
                "{} in {}: {} is neither a wall time of the expression nor the end of a gap holding one",
                expr, tz, f.cycle
            );
        }
        // Never skipped: every wall time of a whole day inside the range has its run.
        let mut d = from.with_timezone(&tz).date_naive() + Duration::days(2);
        let last = to.with_timezone(&tz).date_naive() - Duration::days(2);
        while d <= last {
            if s.runs_on(d) {
                for t in s.times_of_day() {
                    let w = d.and_time(*t);
                    let found = match tz.from_local_datetime(&w) {
                        LocalResult::Single(x) | LocalResult::Ambiguous(x, _) => {
                            fires.iter().any(|f| f.at == x.with_timezone(&Utc))
                        }
                        LocalResult::None => fires.iter().any(|f| {
                            gap_before_holds_a_run(&s, tz, f.at)
                                && (f.at - Duration::seconds(1)).with_timezone(&tz).naive_local() < w
                                && w < f.cycle_time()
                        }),
                    };
                    prop_assert!(found, "{} in {}: wall time {} has no run", expr, tz, w);
                }
            }
            d += Duration::days(1);
        }
        // next_after walks the same runs.
        for pair in fires.windows(2).take(40) {
            if let [a, b] = pair {
                prop_assert_eq!(s.next_after(a.at), Some(*b));
            }
        }
        if let Some(first) = fires.first() {
            prop_assert_eq!(s.next_after(from - Duration::seconds(1)), Some(*first));
        }
    }
}
