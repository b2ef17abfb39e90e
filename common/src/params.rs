//! Scheduling parameters substituted into a job's text before it is dispatched.
//!
//! Substitution happens on the text so that a parameter may stand anywhere (a table name, a
//! `where` clause, a file name). An unknown `${name}` is an error at submit time: a silently empty
//! string in a `where` clause would load the wrong day.
//!
//! What a job text may hold, following DataWorks:
//! - `${bizdate}`: the business date, `yyyymmdd`, the day BEFORE the cycle date;
//! - `${cyctime}`: the cycle time, `yyyymmddhh24miss`;
//! - `$[format±shift]`: a time expression computed from the CYCLE time (not the business date):
//!   `$[yyyymmdd]`, `$[yyyymmdd-1]`, `$[yyyy-mm-dd]`, `$[hh24miss-1/24]`, `$[add_months(yyyymmdd,-1)]`;
//! - `${name}`: a user parameter, defined with the task as `name=expression`
//!   (`dt=$[yyyymmdd-1] region=cn`). The expression is a literal, `$bizdate`, `$cyctime`, a
//!   `$[...]` time expression, a `${...}` date expression computed from the BUSINESS date
//!   (`${yyyymmdd}` = the bizdate, `${yyyy-mm-dd-1}`), or text mixing them (`log_$[yyyymm]`).
//!
//! So for the cycle time 2026-11-25 02:30: `${bizdate}` = `$[yyyymmdd-1]` = `${yyyymmdd}` =
//! 20261124, `$[yyyymmdd]` = 20261125.
//!
//! [`check_with`] validates a text and its definitions at submit; [`resolve`] computes one
//! instance's values when the instance is generated, and they are stored with it, so a late run
//! or a rerun sees the same values; [`substitute`] applies them. A shell task also gets each
//! value as an environment variable `FERRY_PARAM_<name>` ([`ResolvedParams::env_vars`]); plain
//! names are not used, so a parameter called `PATH` cannot break the task.

mod timeexpr;

use crate::{Error, Result};
use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use timeexpr::TimeExpr;

/// The built-in parameter names.
const BUILTINS: [&str; 2] = ["bizdate", "cyctime"];

/// Prefix of the environment variables a shell task gets its parameters in.
pub const ENV_PREFIX: &str = "FERRY_PARAM_";

/// The times one instance's values are computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamContext {
    /// The business date: the day before the cycle date, as in DataWorks.
    pub bizdate: NaiveDate,
    /// The cycle time of the instance, on the node's local wall clock.
    pub cyctime: NaiveDateTime,
}

impl ParamContext {
    /// The context of a manual run for `bizdate`: cycle time is midnight of the next day.
    pub fn for_bizdate(bizdate: NaiveDate) -> Self {
        let cycle_day = bizdate.succ_opt().unwrap_or(bizdate);
        Self {
            bizdate,
            cyctime: cycle_day.and_time(NaiveTime::MIN),
        }
    }

    /// The context of a scheduled instance: its bizdate is the day before the cycle's date.
    pub fn for_cycle(cyctime: NaiveDateTime) -> Self {
        let date = cyctime.date();
        Self {
            bizdate: date.pred_opt().unwrap_or(date),
            cyctime,
        }
    }

    fn builtin(&self, name: &str) -> Option<String> {
        match name {
            "bizdate" => Some(yyyymmdd(self.bizdate)),
            "cyctime" => Some(yyyymmddhhmmss(self.cyctime)),
            _ => None,
        }
    }
}

/// A date as `yyyymmdd`, as chrono's `%Y%m%d` writes it. By hand for four-digit years: chrono
/// parses its pattern again on every call, and generating a day formats each instance's
/// business date and cycle time several times (a fifth of planning a day went to it).
pub fn yyyymmdd(d: NaiveDate) -> String {
    if (0..=9999).contains(&d.year()) {
        format!("{:04}{:02}{:02}", d.year(), d.month(), d.day())
    } else {
        d.format("%Y%m%d").to_string()
    }
}

/// A time as `yyyymmddhh24miss`, as chrono's `%Y%m%d%H%M%S` writes it (see [`yyyymmdd`]).
pub fn yyyymmddhhmmss(t: NaiveDateTime) -> String {
    use chrono::Timelike;
    if (0..=9999).contains(&t.year()) {
        format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    } else {
        t.format("%Y%m%d%H%M%S").to_string()
    }
}

/// Parses `yyyymmdd` or `yyyy-mm-dd`.
pub fn parse_bizdate(text: &str) -> Result<NaiveDate> {
    let t = text.trim();
    NaiveDate::parse_from_str(t, "%Y%m%d")
        .or_else(|_| NaiveDate::parse_from_str(t, "%Y-%m-%d"))
        .ok()
        .filter(|d| d.year() > 1900)
        .ok_or_else(|| Error::InvalidBizdate(text.to_string()))
}

/// One piece of a user parameter's expression.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Builtin(&'static str),
    /// `$[...]`, from the cycle time.
    Cycle(TimeExpr),
    /// `${...}`, from the business date.
    Business(TimeExpr),
}

/// One user parameter: `name=expression`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ParamDef {
    name: String,
    expression: String,
    segments: Vec<Segment>,
}

/// A task's user parameter definitions, in the order written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamDefs {
    defs: Vec<ParamDef>,
}

impl ParamDefs {
    /// Parses definitions separated by spaces or new lines, DataWorks style:
    /// `dt=$[yyyymmdd-1] region=cn`. A value with spaces is written in double quotes
    /// (`title="daily load"`); spaces inside `$[...]` and `${...}` need none.
    pub fn parse(text: &str) -> Result<Self> {
        let mut pairs = Vec::new();
        for item in split_definitions(text)? {
            let Some((name, expression)) = item.split_once('=') else {
                return Err(invalid_def(&item, "expected name=expression"));
            };
            pairs.push((name.to_string(), expression.to_string()));
        }
        Self::from_pairs(pairs)
    }

    /// Builds definitions from (name, expression) pairs, e.g. from an API's map.
    pub fn from_pairs<I, N, E>(pairs: I) -> Result<Self>
    where
        I: IntoIterator<Item = (N, E)>,
        N: Into<String>,
        E: Into<String>,
    {
        let mut defs: Vec<ParamDef> = Vec::new();
        for (name, expression) in pairs {
            let (name, expression) = (name.into(), expression.into());
            let what = format!("{name}={expression}");
            if !is_identifier(&name) {
                return Err(invalid_def(
                    &what,
                    "a name is a letter or _ followed by letters, digits or _",
                ));
            }
            if BUILTINS.contains(&name.as_str()) {
                return Err(invalid_def(
                    &what,
                    &format!("${{{name}}} is built in and cannot be redefined"),
                ));
            }
            if defs.iter().any(|d| d.name == name) {
                return Err(invalid_def(&what, &format!("{name} is defined twice")));
            }
            let segments = parse_expression(&expression).map_err(|m| invalid_def(&what, &m))?;
            defs.push(ParamDef {
                name,
                expression,
                segments,
            });
        }
        Ok(Self { defs })
    }

    /// The defined names, in the order written.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.defs.iter().map(|d| d.name.as_str())
    }

    /// (name, expression) pairs, in the order written.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.defs
            .iter()
            .map(|d| (d.name.as_str(), d.expression.as_str()))
    }

    /// Whether there are no definitions.
    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    fn contains(&self, name: &str) -> bool {
        self.defs.iter().any(|d| d.name == name)
    }

    fn known(&self) -> String {
        known_list(self.names())
    }
}

impl fmt::Display for ParamDefs {
    /// The definitions as [`ParamDefs::parse`] reads them back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.defs.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            if needs_quotes(&d.expression) {
                write!(f, "{}=\"{}\"", d.name, d.expression)?;
            } else {
                write!(f, "{}={}", d.name, d.expression)?;
            }
        }
        Ok(())
    }
}

/// One instance's parameter values, fixed when the instance is generated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedParams {
    /// The times `$[...]` expressions written directly in the job text are computed from.
    pub context: ParamContext,
    /// Every `${name}`'s value: the built-ins and the user parameters.
    pub values: BTreeMap<String, String>,
}

impl ResolvedParams {
    /// The value of `${name}`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The values as environment variables of a shell task: `FERRY_PARAM_bizdate=20261124`.
    pub fn env_vars(&self) -> BTreeMap<String, String> {
        self.values
            .iter()
            .map(|(k, v)| (format!("{ENV_PREFIX}{k}"), v.clone()))
            .collect()
    }
}

/// Computes one instance's values: the built-ins and every user parameter at `ctx`.
pub fn resolve(defs: &ParamDefs, ctx: &ParamContext) -> Result<ResolvedParams> {
    let mut values = BTreeMap::new();
    for name in BUILTINS {
        if let Some(v) = ctx.builtin(name) {
            values.insert(name.to_string(), v);
        }
    }
    for def in &defs.defs {
        let mut value = String::new();
        for segment in &def.segments {
            let piece = match segment {
                Segment::Literal(s) => Some(s.clone()),
                Segment::Builtin(name) => ctx.builtin(name),
                Segment::Cycle(e) => e.eval(ctx.cyctime),
                Segment::Business(e) => e.eval(ctx.bizdate.and_time(NaiveTime::MIN)),
            };
            value.push_str(&piece.ok_or_else(|| {
                invalid_def(
                    &format!("{}={}", def.name, def.expression),
                    "its value falls outside the calendar",
                )
            })?);
        }
        values.insert(def.name.clone(), value);
    }
    Ok(ResolvedParams {
        context: ctx.clone(),
        values,
    })
}

/// Something that gives `${name}` values: a bare [`ParamContext`] (the built-ins only) or an
/// instance's [`ResolvedParams`].
pub trait ParamValues {
    /// The times `$[...]` is computed from.
    fn context(&self) -> &ParamContext;
    /// The value of `${name}`.
    fn value(&self, name: &str) -> Option<Cow<'_, str>>;
    /// The known names, for a message.
    fn known(&self) -> String;
}

impl ParamValues for ParamContext {
    fn context(&self) -> &ParamContext {
        self
    }
    fn value(&self, name: &str) -> Option<Cow<'_, str>> {
        self.builtin(name).map(Cow::Owned)
    }
    fn known(&self) -> String {
        known_list(std::iter::empty())
    }
}

impl ParamValues for ResolvedParams {
    fn context(&self) -> &ParamContext {
        &self.context
    }
    fn value(&self, name: &str) -> Option<Cow<'_, str>> {
        self.get(name).map(Cow::Borrowed)
    }
    fn known(&self) -> String {
        known_list(
            self.values
                .keys()
                .map(String::as_str)
                .filter(|k| !BUILTINS.contains(k)),
        )
    }
}

/// A parameter reference in a job text.
enum Reference<'a> {
    /// `${name}`
    Name(&'a str),
    /// `$[expression]`
    Time(&'a str),
}

/// The `${...}` and `$[...]` references in `text`: (start, end, reference), in order.
fn references(text: &str) -> Vec<(usize, usize, Reference<'_>)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = text[from..].find('$') {
        let start = from + found;
        let close = match text.as_bytes().get(start + 1) {
            Some(b'{') => '}',
            Some(b'[') => ']',
            _ => {
                from = start + 1;
                continue;
            }
        };
        let Some(len) = text[start + 2..].find(close) else {
            break;
        };
        let end = start + 2 + len + 1;
        let inner = &text[start + 2..end - 1];
        out.push((
            start,
            end,
            if close == '}' {
                Reference::Name(inner)
            } else {
                Reference::Time(inner)
            },
        ));
        from = end;
    }
    out
}

/// Checks that every `${name}` in `text` is a built-in parameter and every `$[...]` is valid.
pub fn check(text: &str) -> Result<()> {
    check_with(text, &ParamDefs::default())
}

/// Checks that every `${name}` in `text` is a built-in or defined in `defs`, and every `$[...]`
/// is a valid time expression.
pub fn check_with(text: &str, defs: &ParamDefs) -> Result<()> {
    for (_, _, reference) in references(text) {
        match reference {
            Reference::Name(name) => {
                if !BUILTINS.contains(&name) && !defs.contains(name) {
                    return Err(Error::UnknownParameter {
                        name: format!("${{{name}}}"),
                        known: defs.known(),
                    });
                }
            }
            Reference::Time(inner) => {
                TimeExpr::parse(inner).map_err(|m| invalid_time(inner, m))?;
            }
        }
    }
    Ok(())
}

/// Replaces every `${name}` and `$[...]` in `text` with its value.
pub fn substitute<P: ParamValues + ?Sized>(text: &str, params: &P) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (start, end, reference) in references(text) {
        out.push_str(&text[last..start]);
        match reference {
            Reference::Name(name) => {
                let value = params.value(name).ok_or_else(|| Error::UnknownParameter {
                    name: format!("${{{name}}}"),
                    known: params.known(),
                })?;
                out.push_str(&value);
            }
            Reference::Time(inner) => {
                let value = TimeExpr::parse(inner)
                    .map_err(|m| invalid_time(inner, m))?
                    .eval(params.context().cyctime)
                    .ok_or_else(|| invalid_time(inner, "its value falls outside the calendar"))?;
                out.push_str(&value);
            }
        }
        last = end;
    }
    out.push_str(&text[last..]);
    Ok(out)
}

fn known_list<'a>(user: impl Iterator<Item = &'a str>) -> String {
    BUILTINS
        .iter()
        .copied()
        .chain(user)
        .map(|n| format!("${{{n}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn invalid_def(what: &str, message: &str) -> Error {
    Error::InvalidParameter {
        what: format!("\"{what}\""),
        message: format!("{message}; e.g. dt=$[yyyymmdd-1] region=cn"),
    }
}

fn invalid_time(inner: &str, message: impl Into<String>) -> Error {
    Error::InvalidParameter {
        what: format!("$[{inner}]"),
        message: message.into(),
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether an expression has spaces outside `$[...]`/`${...}`, so it must be quoted to be read
/// back.
fn needs_quotes(expression: &str) -> bool {
    let mut last = 0;
    let mut outside = String::new();
    for (start, end, _) in references(expression) {
        outside.push_str(&expression[last..start]);
        last = end;
    }
    outside.push_str(&expression[last..]);
    outside.chars().any(char::is_whitespace)
}

/// Splits definitions on whitespace outside double quotes and `$[...]`/`${...}`; quotes are
/// removed.
fn split_definitions(text: &str) -> Result<Vec<String>> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut started = false;
    let mut quoted = false;
    let mut closing: Option<char> = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                quoted = false;
            } else {
                current.push(c);
            }
            continue;
        }
        if let Some(close) = closing {
            current.push(c);
            if c == close {
                closing = None;
            }
            continue;
        }
        match c {
            '"' => {
                quoted = true;
                started = true;
            }
            '$' => {
                closing = match chars.peek() {
                    Some('[') => Some(']'),
                    Some('{') => Some('}'),
                    _ => None,
                };
                current.push(c);
                started = true;
            }
            c if c.is_whitespace() => {
                if started {
                    items.push(std::mem::take(&mut current));
                    started = false;
                }
            }
            c => {
                current.push(c);
                started = true;
            }
        }
    }
    if quoted || closing.is_some() {
        return Err(invalid_def(text.trim(), "a quote or bracket is not closed"));
    }
    if started {
        items.push(current);
    }
    Ok(items)
}

/// Parses a user parameter's expression into literal text and values.
fn parse_expression(text: &str) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        literal.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (segment, consumed) = if let Some(inner) = after.strip_prefix('[') {
            let len = inner.find(']').ok_or("a $[ is not closed")?;
            let e =
                TimeExpr::parse(&inner[..len]).map_err(|m| format!("$[{}]: {m}", &inner[..len]))?;
            (Some(Segment::Cycle(e)), len + 2)
        } else if let Some(inner) = after.strip_prefix('{') {
            let len = inner.find('}').ok_or("a ${ is not closed")?;
            let body = inner[..len].trim();
            let segment = match BUILTINS.iter().find(|b| **b == body) {
                Some(b) => Segment::Builtin(b),
                None => {
                    let e = TimeExpr::parse(body).map_err(|m| {
                        format!(
                            "${{{body}}}: in an expression ${{...}} is bizdate, cyctime or a \
                             date computed from the business date such as ${{yyyymmdd-1}} ({m})"
                        )
                    })?;
                    if e.has_time_of_day() {
                        return Err(format!(
                            "${{{body}}} is computed from the business date, which has no time \
                             of day; use $[{body}] for the cycle time"
                        ));
                    }
                    Segment::Business(e)
                }
            };
            (Some(segment), len + 2)
        } else {
            let word: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !is_identifier(&word) {
                literal.push('$');
                (None, 0)
            } else {
                let b = BUILTINS
                    .iter()
                    .find(|b| **b == word)
                    .ok_or_else(|| format!("unknown ${word}; known: $bizdate, $cyctime"))?;
                (Some(Segment::Builtin(b)), word.len())
            }
        };
        if let Some(segment) = segment {
            if !literal.is_empty() {
                segments.push(Segment::Literal(std::mem::take(&mut literal)));
            }
            segments.push(segment);
        }
        rest = &after[consumed..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        segments.push(Segment::Literal(literal));
    }
    Ok(segments)
}

#[cfg(test)]
mod tests;
