//! Scheduling parameters substituted into a job's text before it is dispatched.
//!
//! Substitution happens on the text so that a parameter may stand anywhere (a table name, a
//! `where` clause, a file name). An unknown `${name}` is an error at submit time: a silently empty
//! string in a `where` clause would load the wrong day.

use crate::{Error, Result};
use chrono::{Datelike, NaiveDate, NaiveDateTime};

/// The values one instance substitutes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamContext {
    /// The business date: the day before the cycle date, as in DataWorks.
    pub bizdate: NaiveDate,
    /// The cycle time of the instance.
    pub cyctime: NaiveDateTime,
}

impl ParamContext {
    /// The context of a manual run for `bizdate`: cycle time is midnight of the next day.
    pub fn for_bizdate(bizdate: NaiveDate) -> Self {
        let cycle_day = bizdate.succ_opt().unwrap_or(bizdate);
        Self {
            bizdate,
            cyctime: cycle_day.and_hms_opt(0, 0, 0).unwrap_or_default(),
        }
    }

    fn value(&self, name: &str) -> Option<String> {
        match name {
            "bizdate" => Some(self.bizdate.format("%Y%m%d").to_string()),
            "cyctime" => Some(self.cyctime.format("%Y%m%d%H%M%S").to_string()),
            _ => None,
        }
    }
}

const KNOWN: &str = "${bizdate}, ${cyctime}";

/// Parses `yyyymmdd` or `yyyy-mm-dd`.
pub fn parse_bizdate(text: &str) -> Result<NaiveDate> {
    let t = text.trim();
    NaiveDate::parse_from_str(t, "%Y%m%d")
        .or_else(|_| NaiveDate::parse_from_str(t, "%Y-%m-%d"))
        .ok()
        .filter(|d| d.year() > 1900)
        .ok_or_else(|| Error::InvalidBizdate(text.to_string()))
}

/// Names of `${...}` parameters used in `text`, in order of appearance.
fn references(text: &str) -> Vec<(usize, usize, &str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(start) = text[from..].find("${") {
        let start = from + start;
        match text[start + 2..].find('}') {
            Some(len) => {
                let end = start + 2 + len + 1;
                out.push((start, end, &text[start + 2..end - 1]));
                from = end;
            }
            None => break,
        }
    }
    out
}

/// Checks that every `${name}` in `text` is a known parameter.
pub fn check(text: &str) -> Result<()> {
    let ctx = ParamContext::for_bizdate(NaiveDate::default());
    for (_, _, name) in references(text) {
        if ctx.value(name).is_none() {
            return Err(Error::UnknownParameter {
                name: format!("${{{name}}}"),
                known: KNOWN.to_string(),
            });
        }
    }
    Ok(())
}

/// Replaces every `${name}` in `text` with its value for `ctx`.
pub fn substitute(text: &str, ctx: &ParamContext) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (start, end, name) in references(text) {
        let value = ctx.value(name).ok_or_else(|| Error::UnknownParameter {
            name: format!("${{{name}}}"),
            known: KNOWN.to_string(),
        })?;
        out.push_str(&text[last..start]);
        out.push_str(&value);
        last = end;
    }
    out.push_str(&text[last..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_bizdate_and_cyctime() -> Result<()> {
        let ctx = ParamContext::for_bizdate(parse_bizdate("2026-11-24")?);
        let s = substitute("dt='${bizdate}' and t<'${cyctime}'", &ctx)?;
        assert_eq!(s, "dt='20261124' and t<'20261125000000'");
        Ok(())
    }

    #[test]
    fn unknown_parameter_is_an_error() {
        let err = check("where dt = '${bizdat}'").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "unknown parameter ${bizdat} in the job; known: ${bizdate}, ${cyctime}; define \
                 others as name=expression, e.g. dt=$[yyyymmdd-1]"
            )
        );
    }

    #[test]
    fn bizdate_forms() {
        assert!(parse_bizdate("20261124").is_ok());
        assert!(parse_bizdate("2026-11-24").is_ok());
        assert!(parse_bizdate("2026-13-01").is_err());
        assert!(parse_bizdate("yesterday").is_err());
    }
}
