//! PostgreSQL binary formats Ferry needs beyond what tokio-postgres ships: NUMERIC of any
//! precision (decimals of 38 digits must survive exactly), JSON/JSONB as text, UUID; and the
//! conversion of Ferry's column model into the target column's type.
//!
//! Conversions that would lose information (a fraction into an integer, a time of day into a
//! date, text that is not a number) fail with a reason, which the writer turns into a dirty
//! record instead of storing something else.

use crate::sync::value::Value;
use bytes::{BufMut, BytesMut};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use std::error::Error as StdError;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

type BoxError = Box<dyn StdError + Sync + Send>;

const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;

/// Checks a plain decimal string (`-123.4500`, no exponent) and returns its parts:
/// negative, integer digits without leading zeros, fraction digits.
fn decimal_parts(text: &str) -> Result<(bool, &[u8], &[u8]), String> {
    let t = text.trim();
    let (negative, body) = match t.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int_part, frac_part) = body.split_once('.').unwrap_or((body, ""));
    let valid = !(int_part.is_empty() && frac_part.is_empty())
        && int_part.bytes().all(|b| b.is_ascii_digit())
        && frac_part.bytes().all(|b| b.is_ascii_digit());
    if !valid {
        return Err(format!("\"{text}\" is not a decimal number"));
    }
    if frac_part.len() > 0x3FFF || int_part.len() > 131_072 {
        return Err(format!("\"{text}\" is out of NUMERIC's range"));
    }
    Ok((
        negative,
        int_part.trim_start_matches('0').as_bytes(),
        frac_part.as_bytes(),
    ))
}

/// Validates text that [`numeric_into`] will encode.
pub fn check_numeric(text: &str) -> Result<(), String> {
    if text.trim().eq_ignore_ascii_case("nan") {
        return Ok(());
    }
    decimal_parts(text).map(|_| ())
}

/// Writes a plain decimal string as PostgreSQL binary NUMERIC, without intermediate
/// allocations: base-10000 groups are read straight off the digits.
pub fn numeric_into(text: &str, out: &mut impl BufMut) -> Result<(), String> {
    if text.trim().eq_ignore_ascii_case("nan") {
        for v in [0u16, 0, NUMERIC_NAN, 0] {
            out.put_u16(v);
        }
        return Ok(());
    }
    let (negative, int, frac) = decimal_parts(text)?;
    let pad_int = (4 - int.len() % 4) % 4;
    let pad_frac = (4 - frac.len() % 4) % 4;
    let total = pad_int + int.len() + frac.len() + pad_frac;
    let groups = total / 4;
    let int_groups = (pad_int + int.len()) / 4;
    let digit = |k: usize| -> i16 {
        if k < pad_int {
            0
        } else if k < pad_int + int.len() {
            i16::from(int[k - pad_int] - b'0')
        } else if k < pad_int + int.len() + frac.len() {
            i16::from(frac[k - pad_int - int.len()] - b'0')
        } else {
            0
        }
    };
    let group = |g: usize| (0..4).fold(0i16, |acc, j| acc * 10 + digit(g * 4 + j));
    let first = (0..groups).find(|&g| group(g) != 0);
    let last = (0..groups).rev().find(|&g| group(g) != 0);
    let (ndigits, weight, sign) = match (first, last) {
        (Some(f), Some(l)) => (
            l - f + 1,
            int_groups as i32 - 1 - f as i32,
            if negative { NUMERIC_NEG } else { NUMERIC_POS },
        ),
        _ => (0, 0, NUMERIC_POS),
    };
    out.put_i16(ndigits as i16);
    out.put_i16(weight as i16);
    out.put_u16(sign);
    out.put_u16(frac.len() as u16);
    if let Some(f) = first {
        for g in f..f + ndigits {
            out.put_i16(group(g));
        }
    }
    Ok(())
}

/// Encodes a plain decimal string as PostgreSQL binary NUMERIC.
pub fn encode_numeric(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(16);
    numeric_into(text, &mut out)?;
    Ok(out)
}

/// Decodes binary NUMERIC into its exact decimal text.
pub fn decode_numeric(raw: &[u8]) -> Result<String, String> {
    let word = |i: usize| -> Result<u16, String> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated NUMERIC".to_string())
    };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i16 as i32;
    let sign = word(2)?;
    let dscale = word(3)? as usize;
    match sign {
        NUMERIC_NAN => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let digits: Vec<u16> = (0..ndigits)
        .map(|i| word(4 + i))
        .collect::<Result<_, _>>()?;
    let push4 = |s: &mut String, d: u16| {
        for div in [1000, 100, 10, 1] {
            s.push(char::from(b'0' + (d / div % 10) as u8));
        }
    };
    let mut int_part = String::with_capacity(4 * (weight.max(0) as usize + 1));
    for pos in 0..=weight.max(-1) {
        let d = digits.get(pos as usize).copied().unwrap_or(0);
        if int_part.is_empty() {
            if d != 0 {
                int_part.push_str(&d.to_string());
            }
        } else {
            push4(&mut int_part, d);
        }
    }
    if int_part.is_empty() {
        int_part.push('0');
    }
    let mut frac = String::new();
    let mut pos = weight + 1;
    while frac.len() < dscale {
        let d = if pos >= 0 {
            digits.get(pos as usize).copied().unwrap_or(0)
        } else {
            0
        };
        push4(&mut frac, d);
        pos += 1;
    }
    frac.truncate(dscale);
    let mut out = String::new();
    if sign == NUMERIC_NEG {
        out.push('-');
    }
    out.push_str(&int_part);
    if dscale > 0 {
        out.push('.');
        out.push_str(&frac);
    }
    Ok(out)
}

/// NUMERIC read as exact text.
pub struct Numeric(pub String);

impl<'a> FromSql<'a> for Numeric {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        decode_numeric(raw).map(Numeric).map_err(Into::into)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// JSON or JSONB read as text.
pub struct JsonText(pub String);

impl<'a> FromSql<'a> for JsonText {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let body = if *ty == Type::JSONB {
            match raw.split_first() {
                Some((1, rest)) => rest,
                _ => return Err("unknown JSONB version".into()),
            }
        } else {
            raw
        };
        Ok(JsonText(std::str::from_utf8(body)?.to_string()))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSON || *ty == Type::JSONB
    }
}

/// UUID read as its hyphenated text.
pub struct UuidText(pub String);

impl<'a> FromSql<'a> for UuidText {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let u = uuid::Uuid::from_slice(raw)?;
        Ok(UuidText(u.hyphenated().to_string()))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::UUID
    }
}

/// Types the connector reads natively; others are read as `::text`.
pub fn readable(ty: &Type) -> bool {
    [
        Type::BOOL,
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::OID,
        Type::FLOAT4,
        Type::FLOAT8,
        Type::NUMERIC,
        Type::TEXT,
        Type::VARCHAR,
        Type::BPCHAR,
        Type::NAME,
        Type::BYTEA,
        Type::DATE,
        Type::TIME,
        Type::TIMESTAMP,
        Type::TIMESTAMPTZ,
        Type::JSON,
        Type::JSONB,
        Type::UUID,
    ]
    .contains(ty)
}

/// Types the writer can encode.
pub fn writable(ty: &Type) -> bool {
    readable(ty) && *ty != Type::OID
}

/// A value encoded for one target column.
#[derive(Debug, Clone)]
pub enum PgValue {
    Null,
    Bool(bool),
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    /// Validated decimal text, encoded when written.
    Numeric(String),
    Text(String),
    Bytes(Vec<u8>),
    Date(NaiveDate),
    Time(NaiveTime),
    Timestamp(NaiveDateTime),
    TimestampTz(DateTime<Utc>),
    Json(String),
    Uuid(uuid::Uuid),
}

impl ToSql for PgValue {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            PgValue::Null => return Ok(IsNull::Yes),
            PgValue::Bool(v) => v.to_sql(ty, out)?,
            PgValue::I16(v) => v.to_sql(ty, out)?,
            PgValue::I32(v) => v.to_sql(ty, out)?,
            PgValue::I64(v) => v.to_sql(ty, out)?,
            PgValue::F32(v) => v.to_sql(ty, out)?,
            PgValue::F64(v) => v.to_sql(ty, out)?,
            PgValue::Numeric(s) => {
                numeric_into(s, out)?;
                IsNull::No
            }
            PgValue::Bytes(b) => {
                out.put_slice(b);
                IsNull::No
            }
            PgValue::Text(s) => {
                out.put_slice(s.as_bytes());
                IsNull::No
            }
            PgValue::Date(v) => v.to_sql(ty, out)?,
            PgValue::Time(v) => v.to_sql(ty, out)?,
            PgValue::Timestamp(v) => v.to_sql(ty, out)?,
            PgValue::TimestampTz(v) => v.to_sql(ty, out)?,
            PgValue::Json(s) => {
                if *ty == Type::JSONB {
                    out.put_u8(1);
                }
                out.put_slice(s.as_bytes());
                IsNull::No
            }
            PgValue::Uuid(u) => {
                out.put_slice(u.as_bytes());
                IsNull::No
            }
        };
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn parse_int(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if let Ok(v) = t.parse::<i64>() {
        return Ok(v);
    }
    // "12.000" is an integer; "12.5" is not.
    if let Some((i, f)) = t.split_once('.')
        && f.bytes().all(|b| b == b'0')
        && let Ok(v) = i.parse::<i64>()
    {
        return Ok(v);
    }
    Err(format!("\"{text}\" is not an integer"))
}

fn as_int(v: &Value) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Bool(b) => Ok(i64::from(*b)),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(*f as i64),
        Value::Float(f) => Err(format!("{f} is not an integer")),
        Value::Decimal(s) | Value::String(s) => parse_int(s),
        other => Err(format!("{} cannot become an integer", kind(other))),
    }
}

fn as_float(v: &Value) -> Result<f64, String> {
    match v {
        // Integers beyond 2^53 have no exact double.
        Value::Int(i) if (*i as f64) as i128 == i128::from(*i) => Ok(*i as f64),
        Value::Int(i) => Err(format!("{i} has no exact double precision value")),
        Value::Float(f) => Ok(*f),
        Value::Bool(b) => Ok(f64::from(u8::from(*b))),
        Value::Decimal(s) | Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("\"{s}\" is not a number")),
        other => Err(format!("{} cannot become a float", kind(other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Bool(_) => "a boolean",
        Value::Int(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Decimal(_) => "a decimal",
        Value::String(_) => "a string",
        Value::Bytes(_) => "bytes",
        Value::Date(_) => "a date",
        Value::Time(_) => "a time",
        Value::Timestamp(_) => "a timestamp",
        Value::TimestampTz(_) => "a timestamp with time zone",
        Value::Json(_) => "JSON",
    }
}

/// Parses date-time text in the forms databases and files commonly use.
pub fn parse_timestamp(text: &str) -> Option<NaiveDateTime> {
    let t = text.trim();
    [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y%m%d%H%M%S",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
    .or_else(|| {
        NaiveDate::parse_from_str(t, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    })
}

fn parse_timestamptz(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim();
    DateTime::parse_from_rfc3339(t)
        .ok()
        .or_else(|| DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%#z").ok())
        .map(|d| d.with_timezone(&Utc))
        .or_else(|| parse_timestamp(t).map(|n| n.and_utc()))
}

fn check_text(s: &str) -> Result<(), String> {
    if s.as_bytes().contains(&0) {
        Err("text contains a NUL character, which PostgreSQL text cannot hold".into())
    } else {
        Ok(())
    }
}

/// Converts a value for a target column of type `ty`; a value the column cannot hold exactly
/// comes back with the reason, unchanged, for the dirty-record log.
pub fn convert(v: Value, ty: &Type) -> Result<PgValue, (String, Value)> {
    match check(&v, ty) {
        Err(reason) => Err((reason, v)),
        Ok(Some(pv)) => Ok(pv),
        Ok(None) => Ok(take(v, ty)),
    }
}

/// Moves text or bytes into a value [`check`] has accepted for `ty`; nothing here can fail.
fn take(v: Value, ty: &Type) -> PgValue {
    match (*ty == Type::BYTEA, v) {
        (true, Value::Bytes(b)) => PgValue::Bytes(b),
        (true, Value::String(s) | Value::Json(s) | Value::Decimal(s)) => {
            PgValue::Bytes(s.into_bytes())
        }
        (false, Value::Bytes(b)) => PgValue::Text(
            String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into()),
        ),
        (false, Value::String(s) | Value::Decimal(s) | Value::Json(s)) => match *ty {
            Type::NUMERIC => PgValue::Numeric(s),
            Type::JSON | Type::JSONB => PgValue::Json(s),
            _ => PgValue::Text(s),
        },
        (_, other) => PgValue::Text(other.to_string()),
    }
}

/// Checks that `v` fits a column of type `ty` exactly; converts what is cheap to convert by
/// reference, and answers `None` for text and bytes that [`take`] moves without copying.
fn check(v: &Value, ty: &Type) -> Result<Option<PgValue>, String> {
    if matches!(v, Value::Null) {
        return Ok(Some(PgValue::Null));
    }
    let range = |i: i64, min: i64, max: i64, name: &str| {
        if (min..=max).contains(&i) {
            Ok(i)
        } else {
            Err(format!("{i} is out of range for {name}"))
        }
    };
    Ok(Some(match *ty {
        Type::BOOL => PgValue::Bool(match v {
            Value::Bool(b) => *b,
            Value::Int(0) => false,
            Value::Int(1) => true,
            Value::String(s) | Value::Decimal(s) => match s.trim().to_ascii_lowercase().as_str() {
                "t" | "true" | "1" | "yes" | "y" => true,
                "f" | "false" | "0" | "no" | "n" => false,
                _ => return Err(format!("\"{s}\" is not a boolean")),
            },
            other => return Err(format!("{} cannot become a boolean", kind(other))),
        }),
        Type::INT2 => {
            PgValue::I16(range(as_int(v)?, i16::MIN.into(), i16::MAX.into(), "smallint")? as i16)
        }
        Type::INT4 => {
            PgValue::I32(range(as_int(v)?, i32::MIN.into(), i32::MAX.into(), "integer")? as i32)
        }
        Type::INT8 => PgValue::I64(as_int(v)?),
        Type::FLOAT4 => {
            let f = as_float(v)?;
            let narrow = f as f32;
            // A double that real cannot hold exactly would be rounded.
            if !f.is_nan() && f64::from(narrow) != f {
                return Err(format!("{f} has no exact real (float4) value"));
            }
            PgValue::F32(narrow)
        }
        Type::FLOAT8 => PgValue::F64(as_float(v)?),
        Type::NUMERIC => PgValue::Numeric(match v {
            Value::Int(i) => i.to_string(),
            Value::Bool(b) => if *b { "1" } else { "0" }.to_string(),
            Value::Float(f) if f.is_nan() => "NaN".to_string(),
            Value::Float(f) if f.is_finite() => f.to_string(),
            Value::Decimal(s) | Value::String(s) => {
                check_numeric(s)?;
                return Ok(None);
            }
            other => return Err(format!("{} cannot become a numeric", kind(other))),
        }),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => match v {
            Value::String(s) | Value::Decimal(s) | Value::Json(s) => {
                check_text(s)?;
                return Ok(None);
            }
            Value::Bytes(b) => {
                let s =
                    std::str::from_utf8(b).map_err(|_| "bytes are not UTF-8 text".to_string())?;
                check_text(s)?;
                return Ok(None);
            }
            other => PgValue::Text(other.to_string()),
        },
        Type::BYTEA => match v {
            // U+FFFD is what lossy decoding leaves where bytes were; text holding it is not the
            // bytes it stood for.
            Value::String(s) if s.contains('\u{FFFD}') => {
                return Err(
                    "text holds U+FFFD, the mark of bytes lost in decoding; read the column as bytes"
                        .into(),
                );
            }
            Value::Bytes(_) | Value::String(_) | Value::Json(_) | Value::Decimal(_) => {
                return Ok(None);
            }
            other => return Err(format!("{} cannot become bytea", kind(other))),
        },
        Type::DATE => PgValue::Date(match v {
            Value::Date(d) => *d,
            Value::Timestamp(t) if t.time() == NaiveTime::MIN => t.date(),
            Value::String(s) => parse_timestamp(s)
                .filter(|t| t.time() == NaiveTime::MIN)
                .map(|t| t.date())
                .ok_or_else(|| format!("\"{s}\" is not a date"))?,
            other => {
                return Err(format!(
                    "{} cannot become a date without losing its time",
                    kind(other)
                ));
            }
        }),
        Type::TIME => PgValue::Time(match v {
            Value::Time(t) => *t,
            Value::String(s) => NaiveTime::parse_from_str(s.trim(), "%H:%M:%S%.f")
                .map_err(|_| format!("\"{s}\" is not a time"))?,
            other => return Err(format!("{} cannot become a time", kind(other))),
        }),
        Type::TIMESTAMP => PgValue::Timestamp(match v {
            Value::Timestamp(t) => *t,
            Value::Date(d) => d.and_time(NaiveTime::MIN),
            Value::TimestampTz(t) => t.naive_utc(),
            Value::String(s) => {
                parse_timestamp(s).ok_or_else(|| format!("\"{s}\" is not a timestamp"))?
            }
            other => return Err(format!("{} cannot become a timestamp", kind(other))),
        }),
        Type::TIMESTAMPTZ => PgValue::TimestampTz(match v {
            Value::TimestampTz(t) => t.with_timezone(&Utc),
            Value::Timestamp(t) => t.and_utc(),
            Value::Date(d) => d.and_time(NaiveTime::MIN).and_utc(),
            Value::String(s) => {
                parse_timestamptz(s).ok_or_else(|| format!("\"{s}\" is not a timestamp"))?
            }
            other => return Err(format!("{} cannot become a timestamptz", kind(other))),
        }),
        Type::JSON | Type::JSONB => match v {
            Value::Json(s) => {
                check_text(s)?;
                return Ok(None);
            }
            Value::String(s) => {
                serde_json::from_str::<serde_json::Value>(s)
                    .map_err(|e| format!("not JSON: {e}"))?;
                check_text(s)?;
                return Ok(None);
            }
            other => return Err(format!("{} cannot become JSON", kind(other))),
        },
        Type::UUID => PgValue::Uuid(match v {
            Value::String(s) => {
                uuid::Uuid::parse_str(s.trim()).map_err(|_| format!("\"{s}\" is not a UUID"))?
            }
            Value::Bytes(b) => uuid::Uuid::from_slice(b).map_err(|e| e.to_string())?,
            other => return Err(format!("{} cannot become a UUID", kind(other))),
        }),
        ref other => {
            return Err(format!(
                "column type {other} is not supported by the writer"
            ));
        }
    }))
}

impl PgValue {
    /// The value in the column model, for dirty-record logs.
    pub fn to_value(&self) -> Value {
        match self {
            PgValue::Null => Value::Null,
            PgValue::Bool(b) => Value::Bool(*b),
            PgValue::I16(i) => Value::Int((*i).into()),
            PgValue::I32(i) => Value::Int((*i).into()),
            PgValue::I64(i) => Value::Int(*i),
            PgValue::F32(f) => Value::Float((*f).into()),
            PgValue::F64(f) => Value::Float(*f),
            PgValue::Numeric(s) => Value::Decimal(s.clone()),
            PgValue::Text(s) => Value::String(s.clone()),
            PgValue::Bytes(b) => Value::Bytes(b.clone()),
            PgValue::Date(d) => Value::Date(*d),
            PgValue::Time(t) => Value::Time(*t),
            PgValue::Timestamp(t) => Value::Timestamp(*t),
            PgValue::TimestampTz(t) => Value::TimestampTz(t.fixed_offset()),
            PgValue::Json(s) => Value::Json(s.clone()),
            PgValue::Uuid(u) => Value::String(u.hyphenated().to_string()),
        }
    }
}

/// Decodes one binary field of type `ty` (`None` is NULL) into the column model.
pub fn decode_field(ty: &Type, raw: Option<&[u8]>) -> Result<Value, BoxError> {
    let Some(raw) = raw else {
        return Ok(Value::Null);
    };
    Ok(match *ty {
        Type::BOOL => Value::Bool(bool::from_sql(ty, raw)?),
        Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
        Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
        Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
        Type::OID => Value::Int(u32::from_sql(ty, raw)?.into()),
        Type::FLOAT4 => Value::Float(f32::from_sql(ty, raw)?.into()),
        Type::FLOAT8 => Value::Float(f64::from_sql(ty, raw)?),
        Type::NUMERIC => Value::Decimal(Numeric::from_sql(ty, raw)?.0),
        Type::BYTEA => Value::Bytes(raw.to_vec()),
        Type::DATE => Value::Date(NaiveDate::from_sql(ty, raw)?),
        Type::TIME => Value::Time(NaiveTime::from_sql(ty, raw)?),
        Type::TIMESTAMP => Value::Timestamp(NaiveDateTime::from_sql(ty, raw)?),
        Type::TIMESTAMPTZ => Value::TimestampTz(DateTime::<Utc>::from_sql(ty, raw)?.fixed_offset()),
        Type::JSON | Type::JSONB => Value::Json(JsonText::from_sql(ty, raw)?.0),
        Type::UUID => Value::String(UuidText::from_sql(ty, raw)?.0),
        _ => Value::String(String::from_sql(&Type::TEXT, raw)?),
    })
}

/// The values of one binary COPY tuple, decoded with the target's column types, for
/// dirty-record logs of passed-through rows; a field that does not decode shows as its bytes.
pub fn tuple_values(tuple: &[u8], types: &[Type]) -> Vec<Value> {
    let mut out = Vec::with_capacity(types.len());
    let mut pos = 2;
    for ty in types {
        let Some(len) = tuple.get(pos..pos + 4) else {
            break;
        };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        pos += 4;
        if len < 0 {
            out.push(Value::Null);
            continue;
        }
        let end = pos + len as usize;
        let Some(field) = tuple.get(pos..end) else {
            break;
        };
        out.push(decode_field(ty, Some(field)).unwrap_or_else(|_| Value::Bytes(field.to_vec())));
        pos = end;
    }
    out
}

/// Drops sub-microsecond precision, which PostgreSQL cannot store, so equality checks in tests
/// compare like with like.
pub fn truncate_micros(t: NaiveTime) -> NaiveTime {
    t.with_nanosecond(t.nanosecond() / 1000 * 1000).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_round_trips_exactly() -> Result<(), String> {
        for s in [
            "0",
            "1",
            "-1",
            "10000",
            "0.0001",
            "123.4500",
            "-99999999999999999999999999999999999999",
            "12345678901234567890.123456789012345678",
            "0.00000000000000000000000000000000000001",
            "-0.5",
            "100000000.00000001",
        ] {
            let enc = encode_numeric(s)?;
            assert_eq!(decode_numeric(&enc)?, s, "{s}");
        }
        assert_eq!(decode_numeric(&encode_numeric("007.50")?)?, "7.50");
        assert_eq!(decode_numeric(&encode_numeric("NaN")?)?, "NaN");
        assert!(encode_numeric("1e5").is_err());
        assert!(encode_numeric("abc").is_err());
        assert!(encode_numeric("").is_err());
        Ok(())
    }

    #[test]
    fn conversions_refuse_losing_information() {
        assert!(convert(Value::Float(1.5), &Type::INT4).is_err());
        assert!(convert(Value::Int(70_000), &Type::INT2).is_err());
        assert!(matches!(
            convert(Value::String("12.00".into()), &Type::INT8),
            Ok(PgValue::I64(12))
        ));
        assert!(convert(Value::String("x\0y".into()), &Type::TEXT).is_err());
        assert!(convert(Value::String("{bad".into()), &Type::JSONB).is_err());
        let ts = NaiveDate::from_ymd_opt(2026, 3, 29)
            .and_then(|d| d.and_hms_opt(2, 30, 0))
            .unwrap_or_default();
        assert!(convert(Value::Timestamp(ts), &Type::DATE).is_err());
        assert!(convert(Value::Float(0.1), &Type::FLOAT4).is_err());
        assert!(convert(Value::Float(0.5), &Type::FLOAT4).is_ok());
        assert!(convert(Value::Int(i64::MAX), &Type::FLOAT8).is_err());
        assert!(convert(Value::Int(1 << 60), &Type::FLOAT8).is_ok());
        let lossy = Value::String("\u{FFFD}\u{FFFD}".into());
        assert!(matches!(convert(lossy.clone(), &Type::BYTEA), Err((_, v)) if v == lossy));
    }
}
