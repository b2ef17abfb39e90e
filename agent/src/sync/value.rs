//! The column model every reader produces and every writer consumes.
//!
//! One small enum keeps connectors independent of each other: a reader maps its source types
//! into [`Value`], a writer maps [`Value`] into its target types, and a value a writer cannot
//! take becomes a dirty record with a reason instead of being silently changed.

use base64::Engine;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime};
use ferry_common::job::{BytesEncoding, DatePattern};
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
    /// Text form used by `print` and text targets; NULL prints as empty (file writers use
    /// `nullFormat`), bytes as lowercase hex so no byte is lost.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => Ok(()),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Decimal(s) | Value::String(s) | Value::Json(s) => f.write_str(s),
            Value::Bytes(b) => f.write_str(&encode_bytes(b, BytesEncoding::Hex)),
            Value::Date(d) => write!(f, "{}", d.format("%Y-%m-%d")),
            Value::Time(t) => write!(f, "{}", t.format("%H:%M:%S%.f")),
            Value::Timestamp(t) => write!(f, "{}", t.format("%Y-%m-%d %H:%M:%S%.f")),
            Value::TimestampTz(t) => write!(f, "{}", t.format("%Y-%m-%d %H:%M:%S%.f%:z")),
        }
    }
}

impl Value {
    /// The column-model type's name, as dirty-record files spell it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Decimal(_) => "decimal",
            Value::String(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Date(_) => "date",
            Value::Time(_) => "time",
            Value::Timestamp(_) => "timestamp",
            Value::TimestampTz(_) => "timestamptz",
            Value::Json(_) => "json",
        }
    }

    /// The value as JSON for dirty-record files and logs: null as null, numbers as numbers
    /// (NaN and infinities, which JSON lacks, and decimals, which must stay exact, as text),
    /// bytes as hex, dates and times as ISO text; with [`Value::type_name`] beside it nothing
    /// is ambiguous.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or_else(|| J::String(self.to_string())),
            Value::TimestampTz(t) => {
                J::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false))
            }
            other => J::String(other.to_string()),
        }
    }
}

/// Spells bytes as text.
pub fn encode_bytes(b: &[u8], enc: BytesEncoding) -> String {
    match enc {
        BytesEncoding::Hex => hex::encode(b),
        BytesEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(b),
    }
}

/// Reads bytes spelled as text; the error says why, for the dirty-record log.
pub fn decode_bytes(text: &str, enc: BytesEncoding) -> Result<Vec<u8>, String> {
    match enc {
        BytesEncoding::Hex => {
            hex::decode(text).map_err(|e| format!("\"{}\" is not hex bytes: {e}", clip(text)))
        }
        BytesEncoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("\"{}\" is not base64 bytes: {e}", clip(text))),
    }
}

/// The start of a long text, for error messages.
pub fn clip(text: &str) -> String {
    const MAX: usize = 64;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(MAX).collect::<String>())
    }
}

/// How a text source spells typed values: its date pattern and, for `bytes` columns, its bytes
/// encoding (`None` reads the text's own UTF-8 bytes, as DataX's streamreader does).
#[derive(Debug, Clone, Copy, Default)]
pub struct TextSpelling<'a> {
    pub date: Option<&'a DatePattern>,
    pub bytes: Option<BytesEncoding>,
}

/// Converts text to a typed value of a DataX column type (`long`, `double`, `decimal`,
/// `string`, `date`, `time`, `bool`/`boolean`, `bytes`, `json`); the error says why, for the
/// dirty-record log.
pub fn parse_typed(text: &str, kind: &str, spelling: TextSpelling<'_>) -> Result<Value, String> {
    match kind.to_ascii_lowercase().as_str() {
        "string" | "" => Ok(Value::String(text.to_string())),
        "long" | "int" | "integer" | "bigint" => text
            .trim()
            .parse()
            .map(Value::Int)
            .map_err(|_| format!("\"{}\" is not a long", clip(text))),
        "double" | "float" => text
            .trim()
            .parse()
            .map(Value::Float)
            .map_err(|_| format!("\"{}\" is not a double", clip(text))),
        "decimal" => {
            let t = text.trim();
            let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
            let ok = !digits.is_empty()
                && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
                && digits.chars().any(|c| c.is_ascii_digit())
                && t.matches('.').count() <= 1;
            if ok {
                Ok(Value::Decimal(t.to_string()))
            } else {
                Err(format!("\"{}\" is not a decimal", clip(text)))
            }
        }
        "bool" | "boolean" => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "t" | "yes" => Ok(Value::Bool(true)),
            "false" | "0" | "f" | "no" => Ok(Value::Bool(false)),
            _ => Err(format!("\"{}\" is not a boolean", clip(text))),
        },
        "bytes" => match spelling.bytes {
            None => Ok(Value::Bytes(text.as_bytes().to_vec())),
            Some(enc) => decode_bytes(text, enc).map(Value::Bytes),
        },
        "date" => parse_date(text.trim(), spelling.date),
        "time" => NaiveTime::parse_from_str(text.trim(), "%H:%M:%S%.f")
            .map(Value::Time)
            .map_err(|_| format!("\"{}\" is not a time", clip(text))),
        "json" => serde_json::from_str::<serde_json::Value>(text)
            .map(|_| Value::Json(text.to_string()))
            .map_err(|e| format!("not JSON: {e}")),
        other => Err(format!("unknown column type \"{other}\"")),
    }
}

/// Parses a date, time or timestamp: with the job's pattern when there is one, otherwise in the
/// ISO-like forms files commonly use. Text with a UTC offset becomes a timestamp with zone.
pub fn parse_date(text: &str, pattern: Option<&DatePattern>) -> Result<Value, String> {
    if let Some(p) = pattern {
        let f = p.chrono();
        let parsed = if p.has_offset {
            DateTime::parse_from_str(text, f)
                .ok()
                .map(Value::TimestampTz)
        } else if p.has_date && p.has_time {
            NaiveDateTime::parse_from_str(text, f)
                .ok()
                .map(Value::Timestamp)
        } else if p.has_date {
            NaiveDate::parse_from_str(text, f).ok().map(Value::Date)
        } else {
            NaiveTime::parse_from_str(text, f).ok().map(Value::Time)
        };
        return parsed.ok_or_else(|| {
            format!(
                "\"{}\" does not match date format \"{}\"",
                clip(text),
                p.java()
            )
        });
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(text, fmt) {
            return Ok(Value::TimestampTz(t));
        }
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(Value::TimestampTz(t));
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
    Err(format!("\"{}\" is not a date", clip(text)))
}

/// Formats a date, timestamp or timestamp with zone with the job's `dateFormat`. A pattern
/// without an offset shows instants in UTC. A value the pattern cannot show in full (a time of
/// day under a date-only pattern, a fraction of a second under a pattern without one) is an
/// error, which makes the row dirty: the file would hold another value than the source.
pub fn format_date(v: &Value, p: &DatePattern) -> Result<String, String> {
    use std::fmt::Write;
    let instant: DateTime<FixedOffset> = match v {
        Value::Date(d) => d.and_time(NaiveTime::MIN).and_utc().fixed_offset(),
        Value::Timestamp(t) => t.and_utc().fixed_offset(),
        Value::TimestampTz(t) if p.has_offset => *t,
        Value::TimestampTz(t) => t.naive_utc().and_utc().fixed_offset(),
        other => return Err(format!("{} is not a date", other.type_name())),
    };
    let mut out = String::new();
    // chrono reports items it cannot print as a formatting error; `write!` returns it instead
    // of panicking as `to_string` would.
    write!(out, "{}", instant.format(p.chrono()))
        .map_err(|_| format!("date format \"{}\" cannot print {v}", p.java()))?;
    let back = parse_date(&out, Some(p)).ok().and_then(|b| match b {
        Value::Date(d) => Some(d.and_time(NaiveTime::MIN).and_utc()),
        Value::Timestamp(t) => Some(t.and_utc()),
        Value::TimestampTz(t) => Some(t.with_timezone(&chrono::Utc)),
        _ => None,
    });
    if back != Some(instant.with_timezone(&chrono::Utc)) {
        return Err(format!(
            "date format \"{}\" cannot show {v} in full (it would be written as \"{out}\"); use a pattern with the value's precision",
            p.java()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(p: &str) -> DatePattern {
        DatePattern::parse(p).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn typed_parsing() {
        let plain = TextSpelling::default();
        assert_eq!(parse_typed("42", "long", plain), Ok(Value::Int(42)));
        assert!(parse_typed("4x2", "long", plain).is_err());
        assert_eq!(parse_typed("true", "boolean", plain), Ok(Value::Bool(true)));
        assert_eq!(
            parse_typed("2024-01-01 00:00:00", "date", plain).map(|v| v.to_string()),
            Ok("2024-01-01 00:00:00".to_string())
        );
        let ymd = pattern("yyyyMMdd");
        assert_eq!(
            parse_typed(
                "20240102",
                "date",
                TextSpelling {
                    date: Some(&ymd),
                    bytes: None
                }
            ),
            Ok(Value::Date(
                NaiveDate::from_ymd_opt(2024, 1, 2).unwrap_or_default()
            ))
        );
        assert_eq!(
            parse_typed("12345678901234567890.123", "decimal", plain),
            Ok(Value::Decimal("12345678901234567890.123".into()))
        );
        assert!(parse_typed(".", "decimal", plain).is_err());
        let hex = TextSpelling {
            date: None,
            bytes: Some(BytesEncoding::Hex),
        };
        assert_eq!(
            parse_typed("deadbeef00ff", "bytes", hex),
            Ok(Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef, 0, 0xff]))
        );
        assert!(parse_typed("xyz", "bytes", hex).is_err());
    }

    #[test]
    fn dates_format_per_type_or_refuse_to_drop_information() {
        let full = pattern("yyyy-MM-dd HH:mm:ss");
        let d = NaiveDate::from_ymd_opt(2024, 3, 1).unwrap_or_default();
        assert_eq!(
            format_date(&Value::Date(d), &full),
            Ok("2024-03-01 00:00:00".into())
        );
        let noon = d.and_hms_opt(12, 30, 0).unwrap_or_default();
        assert_eq!(
            format_date(&Value::Timestamp(noon), &full),
            Ok("2024-03-01 12:30:00".into())
        );
        assert!(format_date(&Value::Timestamp(noon), &pattern("yyyy-MM-dd")).is_err());
        let frac = d.and_hms_milli_opt(1, 2, 3, 500).unwrap_or_default();
        assert!(format_date(&Value::Timestamp(frac), &full).is_err());
        assert_eq!(
            format_date(&Value::Timestamp(frac), &pattern("yyyy-MM-dd HH:mm:ss.SSS")),
            Ok("2024-03-01 01:02:03.500".into())
        );
    }

    #[test]
    fn json_form_keeps_types_apart() {
        assert_eq!(Value::Null.to_json(), serde_json::Value::Null);
        assert_eq!(Value::Int(3).to_json(), serde_json::json!(3));
        assert_eq!(Value::Float(f64::NAN).to_json(), serde_json::json!("NaN"));
        assert_eq!(
            Value::Bytes(vec![0, 255]).to_json(),
            serde_json::json!("00ff")
        );
    }
}
