//! The column model every reader produces and every writer consumes.
//!
//! One small enum keeps connectors independent of each other: a reader maps its source types
//! into [`Value`], a writer maps [`Value`] into its target types, and a value a writer cannot
//! take becomes a dirty record with a reason instead of being silently changed.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime};
use std::fmt;

/// One cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Exact decimal, kept as its text so no digit is lost.
    Decimal(String),
    String(String),
    Bytes(Vec<u8>),
    Date(NaiveDate),
    Time(NaiveTime),
    Timestamp(NaiveDateTime),
    /// An instant with its offset.
    TimestampTz(DateTime<FixedOffset>),
    /// JSON document text.
    Json(String),
}

/// One record.
pub type Row = Vec<Value>;

impl Value {
    /// Approximate size in bytes, for throughput statistics and byte speed limits.
    pub fn size(&self) -> usize {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) | Value::Float(_) | Value::Timestamp(_) | Value::Time(_) => 8,
            Value::TimestampTz(_) => 12,
            Value::Date(_) => 4,
            Value::Decimal(s) | Value::String(s) | Value::Json(s) => s.len(),
            Value::Bytes(b) => b.len(),
        }
    }
}

/// Size of a row as counted in statistics.
pub fn row_size(row: &Row) -> usize {
    row.iter().map(Value::size).sum()
}

impl fmt::Display for Value {
    /// Text form used by file writers and `print`; NULL prints as empty (writers that need
    /// another marker use `nullFormat`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => Ok(()),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Decimal(s) | Value::String(s) | Value::Json(s) => f.write_str(s),
            Value::Bytes(b) => f.write_str(&String::from_utf8_lossy(b)),
            Value::Date(d) => write!(f, "{}", d.format("%Y-%m-%d")),
            Value::Time(t) => write!(f, "{}", t.format("%H:%M:%S%.f")),
            Value::Timestamp(t) => write!(f, "{}", t.format("%Y-%m-%d %H:%M:%S%.f")),
            Value::TimestampTz(t) => write!(f, "{}", t.format("%Y-%m-%d %H:%M:%S%.f%:z")),
        }
    }
}

/// Translates a Java `SimpleDateFormat` pattern, as DataX jobs carry (`yyyy-MM-dd HH:mm:ss`),
/// into a chrono format string.
pub fn java_date_format(pattern: &str) -> String {
    const MAP: &[(&str, &str)] = &[
        ("yyyy", "%Y"),
        ("yy", "%y"),
        ("MM", "%m"),
        ("dd", "%d"),
        ("HH", "%H"),
        ("mm", "%M"),
        ("ss", "%S"),
        ("SSS", "%3f"),
    ];
    let mut out = String::new();
    let mut rest = pattern;
    'outer: while !rest.is_empty() {
        for (java, chrono) in MAP {
            if let Some(r) = rest.strip_prefix(java) {
                out.push_str(chrono);
                rest = r;
                continue 'outer;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            if c == '%' {
                out.push_str("%%");
            } else {
                out.push(c);
            }
        }
        rest = chars.as_str();
    }
    out
}

/// Converts text to a typed value of a DataX column type (`long`, `double`, `string`, `date`,
/// `bool`/`boolean`, `bytes`); the error says why, for the dirty-record log.
pub fn parse_typed(text: &str, kind: &str, date_format: Option<&str>) -> Result<Value, String> {
    match kind.to_ascii_lowercase().as_str() {
        "string" | "" => Ok(Value::String(text.to_string())),
        "long" | "int" | "integer" | "bigint" => text
            .trim()
            .parse()
            .map(Value::Int)
            .map_err(|_| format!("\"{text}\" is not a long")),
        "double" | "float" => text
            .trim()
            .parse()
            .map(Value::Float)
            .map_err(|_| format!("\"{text}\" is not a double")),
        "decimal" => {
            let t = text.trim();
            let ok = !t.is_empty()
                && t.trim_start_matches(['-', '+'])
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '.')
                && t.matches('.').count() <= 1;
            if ok {
                Ok(Value::Decimal(t.to_string()))
            } else {
                Err(format!("\"{text}\" is not a decimal"))
            }
        }
        "bool" | "boolean" => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "t" | "yes" => Ok(Value::Bool(true)),
            "false" | "0" | "f" | "no" => Ok(Value::Bool(false)),
            _ => Err(format!("\"{text}\" is not a boolean")),
        },
        "bytes" => Ok(Value::Bytes(text.as_bytes().to_vec())),
        "date" => parse_date(text.trim(), date_format),
        "time" => NaiveTime::parse_from_str(text.trim(), "%H:%M:%S%.f")
            .map(Value::Time)
            .map_err(|_| format!("\"{text}\" is not a time")),
        "json" => serde_json::from_str::<serde_json::Value>(text)
            .map(|_| Value::Json(text.to_string()))
            .map_err(|e| format!("not JSON: {e}")),
        other => Err(format!("unknown column type \"{other}\"")),
    }
}

fn parse_date(text: &str, format: Option<&str>) -> Result<Value, String> {
    if let Some(java) = format {
        let fmt = java_date_format(java);
        if let Ok(t) = NaiveDateTime::parse_from_str(text, &fmt) {
            return Ok(Value::Timestamp(t));
        }
        if let Ok(d) = NaiveDate::parse_from_str(text, &fmt) {
            return Ok(Value::Date(d));
        }
        return Err(format!("\"{text}\" does not match date format \"{java}\""));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y%m%d%H%M%S",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, fmt) {
            return Ok(Value::Timestamp(t));
        }
    }
    for fmt in ["%Y-%m-%d", "%Y%m%d", "%Y/%m/%d"] {
        if let Ok(d) = NaiveDate::parse_from_str(text, fmt) {
            return Ok(Value::Date(d));
        }
    }
    Err(format!("\"{text}\" is not a date"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_patterns_translate() {
        assert_eq!(java_date_format("yyyy-MM-dd HH:mm:ss"), "%Y-%m-%d %H:%M:%S");
        assert_eq!(java_date_format("yyyyMMdd"), "%Y%m%d");
    }

    #[test]
    fn typed_parsing() {
        assert_eq!(parse_typed("42", "long", None), Ok(Value::Int(42)));
        assert!(parse_typed("4x2", "long", None).is_err());
        assert_eq!(parse_typed("true", "boolean", None), Ok(Value::Bool(true)));
        assert_eq!(
            parse_typed("2024-01-01 00:00:00", "date", None).map(|v| v.to_string()),
            Ok("2024-01-01 00:00:00".to_string())
        );
        assert_eq!(
            parse_typed("20240102", "date", Some("yyyyMMdd")),
            Ok(Value::Date(
                NaiveDate::from_ymd_opt(2024, 1, 2).unwrap_or_default()
            ))
        );
        assert_eq!(
            parse_typed("12345678901234567890.123", "decimal", None),
            Ok(Value::Decimal("12345678901234567890.123".into()))
        );
    }
}
