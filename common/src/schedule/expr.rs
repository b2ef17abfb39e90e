//! The two ways a user writes a cron expression, and their translation into the `cron` crate's
//! syntax. The crate only takes the form with seconds (`sec min hour dom month dow [year]`) and
//! numbers the days of the week 1 = Sunday .. 7 = Saturday, while a crontab line has five fields
//! and numbers them 0 (or 7) = Sunday, 1 = Monday. Passing a crontab day number through unchanged
//! would silently run a Monday job on Sunday, so the crontab day-of-week field is expanded here
//! into day names, which mean the same in both.

use crate::{Error, Result};
use std::str::FromStr;

/// Which of the two accepted forms an expression was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CronForm {
    /// Five fields, `min hour dom month dow`, as in crontab: day-of-week 0 or 7 = Sunday,
    /// 1 = Monday .. 6 = Saturday, or names `SUN`..`SAT`; `@daily`-style shortcuts too. When both
    /// day-of-month and day-of-week are restricted, a day matching either one runs (crontab's rule).
    Crontab,
    /// Six or seven fields with seconds first, `sec min hour dom month dow [year]`, as DataWorks
    /// shows them (`00 30 02 * * ?`): day-of-week 1 = Sunday .. 7 = Saturday (Quartz numbering),
    /// `?` means any; day-of-month and day-of-week may not both be restricted.
    Seconds,
}

/// An expression made ready for the `cron` crate, with what Ferry needs to know about its text.
pub(crate) struct Parsed {
    pub schedule: ::cron::Schedule,
    pub form: CronForm,
    /// Crontab's rule: with both day fields restricted a day matching either one runs.
    pub dom_or_dow: bool,
    /// The minute or hour field begins with `*` (an interval schedule such as hourly): in a
    /// fall-back overlap such a schedule runs in both occurrences of the repeated hour, so an
    /// hourly node has 25 cycles on that day, while a fixed-time schedule runs once.
    pub interval: bool,
}

fn invalid(expr: &str, message: impl Into<String>) -> Error {
    Error::InvalidCron {
        expr: expr.to_string(),
        message: message.into(),
    }
}

/// Parses either form into the crate's schedule.
pub(crate) fn parse(expr: &str) -> Result<Parsed> {
    let text = expr.trim();
    if text.is_empty() {
        return Err(invalid(expr, "it is empty"));
    }
    let expanded;
    let text = if text.starts_with('@') {
        expanded = shortcut(text).ok_or_else(|| {
            invalid(
                expr,
                "unknown shortcut; known: @yearly, @annually, @monthly, @weekly, @daily, \
                 @midnight, @hourly",
            )
        })?;
        expanded
    } else {
        text
    };
    let fields: Vec<&str> = text.split_whitespace().collect();
    let (crate_expr, form, dom_or_dow, interval) = match fields.as_slice() {
        [min, hour, dom, month, dow] => {
            let dom_any = is_unrestricted(dom);
            let dow_any = is_unrestricted(dow);
            let dom = if *dom == "?" { "*" } else { dom };
            let days = crontab_days_of_week(dow).map_err(|m| invalid(expr, m))?;
            (
                format!("0 {min} {hour} {dom} {month} {days}"),
                CronForm::Crontab,
                !dom_any && !dow_any,
                min.starts_with('*') || hour.starts_with('*'),
            )
        }
        [_sec, min, hour, dom, _month, dow] | [_sec, min, hour, dom, _month, dow, _] => {
            if !is_unrestricted(dom) && !is_unrestricted(dow) {
                return Err(invalid(
                    expr,
                    "day-of-month and day-of-week are both restricted; put ? in one of them, \
                     e.g. `0 0 2 1 * ?` (the 1st of each month)",
                ));
            }
            if quartz_day_zero(dow) {
                return Err(invalid(
                    expr,
                    "day-of-week 0 does not exist in the form with seconds, where 1 = Sunday .. \
                     7 = Saturday; write 1 or SUN",
                ));
            }
            (
                fields.join(" "),
                CronForm::Seconds,
                false,
                min.starts_with('*') || hour.starts_with('*'),
            )
        }
        other => {
            return Err(invalid(
                expr,
                format!(
                    "it has {} fields; expected 5 (crontab) or 6/7 (with seconds first)",
                    other.len()
                ),
            ));
        }
    };
    let schedule =
        ::cron::Schedule::from_str(&crate_expr).map_err(|e| invalid(expr, e.to_string()))?;
    Ok(Parsed {
        schedule,
        form,
        dom_or_dow,
        interval,
    })
}

fn shortcut(text: &str) -> Option<&'static str> {
    Some(match text.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => return None,
    })
}

/// A day field that does not restrict: crontab treats any field beginning with `*` so.
fn is_unrestricted(field: &str) -> bool {
    field.starts_with('*') || field == "?"
}

fn quartz_day_zero(dow: &str) -> bool {
    dow.split([',', '-'])
        .map(|part| part.split('/').next().unwrap_or(part))
        .any(|n| !n.is_empty() && n.bytes().all(|b| b == b'0'))
}

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const FULL_DAY_NAMES: [&str; 7] = [
    "SUNDAY",
    "MONDAY",
    "TUESDAY",
    "WEDNESDAY",
    "THURSDAY",
    "FRIDAY",
    "SATURDAY",
];

/// One crontab day-of-week value: 0..=7 (0 and 7 = Sunday) or a name; `is_end` lets `SUN` close
/// a range as 7 (`FRI-SUN`).
fn crontab_day(text: &str, is_end: bool) -> Result<u32, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u32>() {
            Ok(n) if n <= 7 => Ok(n),
            _ => Err(format!(
                "day-of-week {text} is out of range; crontab days are 0-7 (0 and 7 = Sunday, 1 = Monday)"
            )),
        };
    }
    let upper = text.to_ascii_uppercase();
    let index = DAY_NAMES
        .iter()
        .position(|d| *d == upper)
        .or_else(|| FULL_DAY_NAMES.iter().position(|d| *d == upper))
        .ok_or_else(|| {
            format!("unknown day-of-week \"{text}\"; use 0-7 (0 and 7 = Sunday) or SUN..SAT")
        })?;
    let index = u32::try_from(index).unwrap_or(0);
    Ok(if is_end && index == 0 { 7 } else { index })
}

/// Expands a crontab day-of-week field (lists, ranges, steps, names) into the crate's syntax:
/// `*` or a list of day names.
fn crontab_days_of_week(field: &str) -> Result<String, String> {
    let mut days = [false; 7];
    for item in field.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|s| (1..=7).contains(s))
                    .ok_or_else(|| {
                        format!("day-of-week step \"{step}\" must be a number from 1 to 7")
                    })?;
                (base, step)
            }
            None => (item, 1),
        };
        let (first, last) = if base == "*" || base == "?" {
            (0, 6)
        } else if let Some((a, b)) = base.split_once('-') {
            let (a, b) = (crontab_day(a, false)?, crontab_day(b, true)?);
            if a > b {
                return Err(format!(
                    "day-of-week range \"{base}\" runs backwards; write it from the earlier day"
                ));
            }
            (a, b)
        } else {
            let a = crontab_day(base, false)?;
            // `MON/2` means from Monday to the end of the week, as in cronie.
            (a, if item.contains('/') { 7 } else { a })
        };
        let mut d = first;
        while d <= last {
            if let Some(slot) = days.get_mut((d % 7) as usize) {
                *slot = true;
            }
            d += step;
        }
    }
    if days.iter().all(|d| *d) {
        return Ok("*".to_string());
    }
    let names: Vec<&str> = DAY_NAMES
        .iter()
        .zip(days)
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect();
    Ok(names.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crontab_day_numbers_become_names() {
        assert_eq!(crontab_days_of_week("1").as_deref(), Ok("MON"));
        assert_eq!(crontab_days_of_week("MON").as_deref(), Ok("MON"));
        assert_eq!(crontab_days_of_week("0").as_deref(), Ok("SUN"));
        assert_eq!(crontab_days_of_week("7").as_deref(), Ok("SUN"));
        assert_eq!(
            crontab_days_of_week("1-5").as_deref(),
            Ok("MON,TUE,WED,THU,FRI")
        );
        assert_eq!(
            crontab_days_of_week("mon-fri").as_deref(),
            Ok("MON,TUE,WED,THU,FRI")
        );
        assert_eq!(crontab_days_of_week("5-7").as_deref(), Ok("SUN,FRI,SAT"));
        assert_eq!(
            crontab_days_of_week("FRI-SUN").as_deref(),
            Ok("SUN,FRI,SAT")
        );
        assert_eq!(
            crontab_days_of_week("*/2").as_deref(),
            Ok("SUN,TUE,THU,SAT")
        );
        assert_eq!(crontab_days_of_week("0-7").as_deref(), Ok("*"));
        assert_eq!(crontab_days_of_week("*").as_deref(), Ok("*"));
        assert_eq!(crontab_days_of_week("1,3,5").as_deref(), Ok("MON,WED,FRI"));
        assert_eq!(crontab_days_of_week("1-5/2").as_deref(), Ok("MON,WED,FRI"));
    }

    #[test]
    fn crontab_day_errors_say_what_is_wrong() {
        for bad in ["8", "FOO", "5-1", "*/0", "*/x", ""] {
            assert!(crontab_days_of_week(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forms_are_told_apart() -> Result<()> {
        assert_eq!(parse("30 2 * * *")?.form, CronForm::Crontab);
        assert_eq!(parse("00 30 02 * * ?")?.form, CronForm::Seconds);
        assert_eq!(parse("0 0 2 * * ? 2026")?.form, CronForm::Seconds);
        assert_eq!(parse("@daily")?.form, CronForm::Crontab);
        Ok(())
    }

    #[test]
    fn interval_and_day_rules() -> Result<()> {
        assert!(parse("0 * * * *")?.interval);
        assert!(parse("*/15 3 * * *")?.interval);
        assert!(!parse("30 2 * * *")?.interval);
        assert!(parse("0 0 1 * MON")?.dom_or_dow);
        assert!(!parse("0 0 1 * *")?.dom_or_dow);
        assert!(!parse("0 0 * * */2")?.dom_or_dow);
        Ok(())
    }

    #[test]
    fn bad_expressions_are_refused_with_the_reason() {
        let cases = [
            ("", "empty"),
            ("* * *", "3 fields"),
            ("@often", "unknown shortcut"),
            ("0 0 0 1 * MON", "both restricted"),
            ("0 0 0 * * 0", "day-of-week 0"),
            ("61 * * * *", "Minutes"),
            ("0 0 * * 9", "out of range"),
        ];
        for (expr, want) in cases {
            let msg = parse(expr).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(msg.contains(want), "{expr}: {msg}");
            assert!(
                msg.contains("`30 2 * * *`"),
                "{expr}: shows an example: {msg}"
            );
        }
    }
}
