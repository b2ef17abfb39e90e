//! DataWorks time expressions: a date/time format made of `yyyy yy mm dd hh24 mi ss` and
//! separators, optionally shifted: `yyyymmdd-1` (days), `hh24miss-1/24` (hours),
//! `hh24mi-30/24/60` (minutes), `add_months(yyyymmdd,-1)` (months, clamped to the month's last
//! day). Written `$[...]` it is computed from the cycle time; written `${...}` in a parameter
//! definition it is computed from the business date and may hold no time of day.

use chrono::{Datelike, Duration, Months, NaiveDateTime, Timelike};
use std::fmt::Write;

/// The largest shift accepted, in its own unit: far beyond any real use, small enough that the
/// arithmetic cannot overflow.
const MAX_SHIFT: i64 = 100_000;

const HELP: &str = "write a format of yyyy, yy, mm, dd, hh24, mi, ss and - / : _ . or a space, \
                    optionally shifted: yyyymmdd-1, hh24miss-1/24, add_months(yyyymmdd,-1)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    Year4,
    Year2,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Sep(char),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shift {
    Days(i64),
    Hours(i64),
    Minutes(i64),
    Months(i64),
}

/// A parsed time expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TimeExpr {
    pieces: Vec<Piece>,
    shift: Shift,
}

impl TimeExpr {
    /// Parses the text between the brackets of `$[...]` or `${...}`.
    pub fn parse(inner: &str) -> Result<Self, String> {
        let text = inner.trim();
        let lower = text.to_ascii_lowercase();
        if let Some(args) = lower
            .strip_prefix("add_months(")
            .and_then(|rest| rest.strip_suffix(')'))
        {
            let (format, n) = args.rsplit_once(',').ok_or_else(|| {
                format!("add_months needs a format and a number of months; {HELP}")
            })?;
            let n = parse_count(n.trim().trim_start_matches('+'), "month")?;
            return Ok(Self {
                pieces: parse_format(format.trim())?,
                shift: Shift::Months(n),
            });
        }
        let (format, shift) = split_shift(&lower)?;
        Ok(Self {
            pieces: parse_format(format)?,
            shift,
        })
    }

    /// Whether it shows or shifts by a time of day (hours, minutes, seconds).
    pub fn has_time_of_day(&self) -> bool {
        matches!(self.shift, Shift::Hours(_) | Shift::Minutes(_))
            || self
                .pieces
                .iter()
                .any(|p| matches!(p, Piece::Hour | Piece::Minute | Piece::Second))
    }

    /// The expression's value at `base`; `None` only past the calendar's end.
    pub fn eval(&self, base: NaiveDateTime) -> Option<String> {
        let t = match self.shift {
            Shift::Days(n) => base.checked_add_signed(Duration::try_days(n)?)?,
            Shift::Hours(n) => base.checked_add_signed(Duration::try_hours(n)?)?,
            Shift::Minutes(n) => base.checked_add_signed(Duration::try_minutes(n)?)?,
            Shift::Months(n) => {
                let months = Months::new(u32::try_from(n.unsigned_abs()).ok()?);
                if n >= 0 {
                    base.checked_add_months(months)?
                } else {
                    base.checked_sub_months(months)?
                }
            }
        };
        let mut out = String::with_capacity(self.pieces.len() * 2);
        for piece in &self.pieces {
            let _ = match piece {
                Piece::Year4 => write!(out, "{:04}", t.year()),
                Piece::Year2 => write!(out, "{:02}", t.year().rem_euclid(100)),
                Piece::Month => write!(out, "{:02}", t.month()),
                Piece::Day => write!(out, "{:02}", t.day()),
                Piece::Hour => write!(out, "{:02}", t.hour()),
                Piece::Minute => write!(out, "{:02}", t.minute()),
                Piece::Second => write!(out, "{:02}", t.second()),
                Piece::Sep(c) => write!(out, "{c}"),
            };
        }
        Some(out)
    }
}

fn parse_count(text: &str, unit: &str) -> Result<i64, String> {
    text.parse::<i64>()
        .ok()
        .filter(|n| n.abs() <= MAX_SHIFT)
        .ok_or_else(|| format!("\"{text}\" is not a whole number of {unit}s up to {MAX_SHIFT}"))
}

/// Splits `yyyymmdd-1` into the format and the shift; a text without one shifts by 0 days.
fn split_shift(text: &str) -> Result<(&str, Shift), String> {
    let Some(at) = text.rfind(['+', '-']) else {
        return Ok((text, Shift::Days(0)));
    };
    let (format, rest) = (&text[..at], &text[at..]);
    let negative = rest.starts_with('-');
    let amount: String = rest[1..].chars().filter(|c| !c.is_whitespace()).collect();
    if !amount.starts_with(|c: char| c.is_ascii_digit()) {
        // `yyyy-mm-dd`: the last `-` is a separator, not a shift.
        return Ok((text, Shift::Days(0)));
    }
    let (count, unit) = match amount.split_once('/') {
        None => (amount.as_str(), "day"),
        Some((n, "24")) => (n, "hour"),
        Some((n, "24/60")) => (n, "minute"),
        Some(_) => {
            return Err(format!(
                "shift \"{rest}\" is not N (days), N/24 (hours) or N/24/60 (minutes)"
            ));
        }
    };
    let mut n = parse_count(count, unit)?;
    if negative {
        n = -n;
    }
    let shift = match unit {
        "hour" => Shift::Hours(n),
        "minute" => Shift::Minutes(n),
        _ => Shift::Days(n),
    };
    Ok((format.trim_end(), shift))
}

fn parse_format(format: &str) -> Result<Vec<Piece>, String> {
    const TOKENS: [(&str, Piece); 7] = [
        ("yyyy", Piece::Year4),
        ("yy", Piece::Year2),
        ("hh24", Piece::Hour),
        ("mm", Piece::Month),
        ("mi", Piece::Minute),
        ("dd", Piece::Day),
        ("ss", Piece::Second),
    ];
    let mut pieces = Vec::new();
    let mut rest = format;
    'outer: while let Some(c) = rest.chars().next() {
        for (token, piece) in TOKENS {
            if let Some(after) = rest.strip_prefix(token) {
                pieces.push(piece);
                rest = after;
                continue 'outer;
            }
        }
        if matches!(c, '-' | '/' | ':' | '_' | '.' | ' ') {
            pieces.push(Piece::Sep(c));
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let hint = if rest.starts_with("hh") {
            "; the hour is hh24".to_string()
        } else {
            String::new()
        };
        return Err(format!(
            "unknown piece \"{rest}\" in \"{format}\"{hint}; {HELP}"
        ));
    }
    if !pieces.iter().any(|p| !matches!(p, Piece::Sep(_))) {
        return Err(format!("\"{format}\" holds no date or time; {HELP}"));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn cycle() -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 3, 31)
            .and_then(|d| d.and_hms_opt(2, 30, 5))
            .unwrap_or_default()
    }

    fn eval(text: &str) -> String {
        match TimeExpr::parse(text) {
            Ok(e) => e.eval(cycle()).unwrap_or_default(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn dataworks_forms() {
        assert_eq!(eval("yyyymmdd"), "20260331");
        assert_eq!(eval("yyyymmdd-1"), "20260330");
        assert_eq!(eval("yyyymmdd+1"), "20260401");
        assert_eq!(eval("yyyymmdd - 7"), "20260324");
        assert_eq!(eval("yyyy-mm-dd"), "2026-03-31");
        assert_eq!(eval("yyyy-mm-dd-1"), "2026-03-30");
        assert_eq!(eval("hh24miss"), "023005");
        assert_eq!(eval("hh24miss-1/24"), "013005");
        assert_eq!(eval("hh24miss-3/24"), "233005");
        assert_eq!(eval("yyyymmddhh24miss-3/24"), "20260330233005");
        assert_eq!(
            eval("yyyy-mm-dd hh24:mi:ss-30/24/60"),
            "2026-03-31 02:00:05"
        );
        assert_eq!(eval("add_months(yyyymmdd,-1)"), "20260228");
        assert_eq!(eval("add_months(yyyymmdd, 12)"), "20270331");
        assert_eq!(eval("ADD_MONTHS(yyyymm,+1)"), "202604");
        assert_eq!(eval("yyyymm"), "202603");
        assert_eq!(eval("yymmdd"), "260331");
        assert_eq!(eval("YYYYMMDD"), "20260331");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (text, want) in [
            ("yyyymmddx", "unknown piece \"x\""),
            ("hhmiss", "the hour is hh24"),
            ("yyyymmdd-1/12", "not N (days)"),
            ("yyyymmdd-999999999", "whole number"),
            ("add_months(yyyymmdd)", "needs a format"),
            ("add_months(yyyymmdd,x)", "whole number of months"),
            ("--", "holds no date"),
            ("", "holds no date"),
        ] {
            let got = eval(text);
            assert!(got.contains(want), "{text}: {got}");
        }
    }

    #[test]
    fn time_of_day_is_told() {
        let has = |t: &str| TimeExpr::parse(t).map(|e| e.has_time_of_day()).ok();
        assert_eq!(has("yyyymmdd-1"), Some(false));
        assert_eq!(has("yyyymmdd-1/24"), Some(true));
        assert_eq!(has("hh24"), Some(true));
    }
}
