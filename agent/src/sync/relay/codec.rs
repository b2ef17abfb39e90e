//! Rows of the column model as bytes on the relay, and back.
//!
//! The two legs of a relay are agents of the same release talking through the scheduler, so the
//! format is Ferry's own and plain: per row a column count, per value a tag byte and a
//! fixed-width or length-prefixed payload, little-endian. Nothing is lost: decimals and JSON
//! travel as their text, timestamps with nanoseconds and their offset. Decoding checks every
//! length, so a damaged frame is an error, never a panic or a wrong value.

use crate::sync::value::{Row, Value};
use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveTime, TimeZone, Timelike};

const NULL: u8 = 0;
const BOOL: u8 = 1;
const INT: u8 = 2;
const FLOAT: u8 = 3;
const DECIMAL: u8 = 4;
const STRING: u8 = 5;
const BYTES: u8 = 6;
const DATE: u8 = 7;
const TIME: u8 = 8;
const TIMESTAMP: u8 = 9;
const TIMESTAMP_TZ: u8 = 10;
const JSON: u8 = 11;

/// Appends `row` to `out`.
pub fn encode_row(row: &Row, out: &mut Vec<u8>) {
    out.extend_from_slice(&(row.len() as u32).to_le_bytes());
    for v in row {
        match v {
            Value::Null => out.push(NULL),
            Value::Bool(b) => {
                out.push(BOOL);
                out.push(u8::from(*b));
            }
            Value::Int(i) => {
                out.push(INT);
                out.extend_from_slice(&i.to_le_bytes());
            }
            Value::Float(f) => {
                out.push(FLOAT);
                out.extend_from_slice(&f.to_le_bytes());
            }
            Value::Decimal(s) => text(out, DECIMAL, s.as_bytes()),
            Value::String(s) => text(out, STRING, s.as_bytes()),
            Value::Json(s) => text(out, JSON, s.as_bytes()),
            Value::Bytes(b) => text(out, BYTES, b),
            Value::Date(d) => {
                out.push(DATE);
                out.extend_from_slice(&d.num_days_from_ce().to_le_bytes());
            }
            Value::Time(t) => {
                out.push(TIME);
                out.extend_from_slice(&t.num_seconds_from_midnight().to_le_bytes());
                out.extend_from_slice(&t.nanosecond().to_le_bytes());
            }
            Value::Timestamp(t) => {
                out.push(TIMESTAMP);
                let utc = t.and_utc();
                out.extend_from_slice(&utc.timestamp().to_le_bytes());
                out.extend_from_slice(&utc.timestamp_subsec_nanos().to_le_bytes());
            }
            Value::TimestampTz(t) => {
                out.push(TIMESTAMP_TZ);
                out.extend_from_slice(&t.timestamp().to_le_bytes());
                out.extend_from_slice(&t.timestamp_subsec_nanos().to_le_bytes());
                out.extend_from_slice(&t.offset().local_minus_utc().to_le_bytes());
            }
        }
    }
}

fn text(out: &mut Vec<u8>, tag: u8, b: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Reads `count` rows from `data`, which must hold exactly them.
pub fn decode_rows(mut data: &[u8], count: usize) -> Result<Vec<Row>, String> {
    let mut rows = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let n = u32_at(&mut data)? as usize;
        // Every value takes at least its tag byte: a count beyond what is left is damage.
        if n > data.len() {
            return Err(format!("a row claims {n} columns in {} bytes", data.len()));
        }
        let mut row = Vec::with_capacity(n);
        for _ in 0..n {
            row.push(value(&mut data)?);
        }
        rows.push(row);
    }
    if !data.is_empty() {
        return Err(format!(
            "{} bytes left after the batch's {count} rows",
            data.len()
        ));
    }
    Ok(rows)
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if data.len() < n {
        return Err(format!(
            "the batch ends early: {n} bytes wanted, {} left",
            data.len()
        ));
    }
    let (head, rest) = data.split_at(n);
    *data = rest;
    Ok(head)
}

fn array<const N: usize>(data: &mut &[u8]) -> Result<[u8; N], String> {
    let mut a = [0u8; N];
    a.copy_from_slice(take(data, N)?);
    Ok(a)
}

fn u32_at(data: &mut &[u8]) -> Result<u32, String> {
    Ok(u32::from_le_bytes(array(data)?))
}

fn i64_at(data: &mut &[u8]) -> Result<i64, String> {
    Ok(i64::from_le_bytes(array(data)?))
}

fn string(data: &mut &[u8]) -> Result<String, String> {
    let n = u32_at(data)? as usize;
    String::from_utf8(take(data, n)?.to_vec()).map_err(|e| format!("text is not UTF-8: {e}"))
}

fn value(data: &mut &[u8]) -> Result<Value, String> {
    let [tag] = array::<1>(data)?;
    Ok(match tag {
        NULL => Value::Null,
        BOOL => Value::Bool(array::<1>(data)?[0] != 0),
        INT => Value::Int(i64_at(data)?),
        FLOAT => Value::Float(f64::from_le_bytes(array(data)?)),
        DECIMAL => Value::Decimal(string(data)?),
        STRING => Value::String(string(data)?),
        JSON => Value::Json(string(data)?),
        BYTES => {
            let n = u32_at(data)? as usize;
            Value::Bytes(take(data, n)?.to_vec())
        }
        DATE => {
            let days = i32::from_le_bytes(array(data)?);
            Value::Date(
                NaiveDate::from_num_days_from_ce_opt(days)
                    .ok_or_else(|| format!("day {days} is out of range"))?,
            )
        }
        TIME => {
            let secs = u32_at(data)?;
            let nanos = u32_at(data)?;
            Value::Time(
                NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos)
                    .ok_or_else(|| format!("time {secs}s {nanos}ns is out of range"))?,
            )
        }
        TIMESTAMP => {
            let (secs, nanos) = (i64_at(data)?, u32_at(data)?);
            Value::Timestamp(
                DateTime::from_timestamp(secs, nanos)
                    .ok_or_else(|| format!("timestamp {secs}s is out of range"))?
                    .naive_utc(),
            )
        }
        TIMESTAMP_TZ => {
            let (secs, nanos) = (i64_at(data)?, u32_at(data)?);
            let offset = i32::from_le_bytes(array(data)?);
            let zone = FixedOffset::east_opt(offset)
                .ok_or_else(|| format!("offset {offset}s is out of range"))?;
            let utc = DateTime::from_timestamp(secs, nanos)
                .ok_or_else(|| format!("timestamp {secs}s is out of range"))?;
            Value::TimestampTz(zone.from_utc_datetime(&utc.naive_utc()))
        }
        other => return Err(format!("unknown value tag {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<Row> {
        let ts = NaiveDate::from_ymd_opt(2026, 11, 24)
            .and_then(|d| d.and_hms_nano_opt(23, 59, 58, 123_456_789))
            .expect("valid");
        let tz = FixedOffset::east_opt(5 * 3600 + 1800)
            .expect("valid")
            .from_utc_datetime(&ts);
        vec![
            vec![
                Value::Null,
                Value::Bool(true),
                Value::Int(i64::MIN),
                Value::Float(-0.5),
                Value::Decimal("12345678901234567890.123456789".into()),
                Value::String("héllo\tworld\n".into()),
                Value::Bytes(vec![0, 255, 10]),
            ],
            vec![
                Value::Date(NaiveDate::from_ymd_opt(1, 1, 1).expect("valid")),
                Value::Time(NaiveTime::from_hms_nano_opt(1, 2, 3, 4).expect("valid")),
                Value::Timestamp(ts),
                Value::TimestampTz(tz),
                Value::Json(r#"{"a":[1,2]}"#.into()),
            ],
            vec![],
        ]
    }

    #[test]
    fn rows_come_back_unchanged() {
        let rows = sample();
        let mut data = Vec::new();
        for r in &rows {
            encode_row(r, &mut data);
        }
        assert_eq!(decode_rows(&data, rows.len()), Ok(rows));
    }

    #[test]
    fn damaged_batches_are_errors() {
        let rows = sample();
        let mut data = Vec::new();
        for r in &rows {
            encode_row(r, &mut data);
        }
        for cut in 0..data.len() {
            assert!(
                decode_rows(&data[..cut], rows.len()).is_err(),
                "cut at {cut}"
            );
        }
        assert!(decode_rows(&data, rows.len() - 1).is_err());
        let mut bad = data.clone();
        bad[4] = 200;
        assert!(decode_rows(&bad, rows.len()).is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256), n in 0usize..4) {
            let _ = decode_rows(&data, n);
        }

        #[test]
        fn ints_strings_and_floats_round_trip(
            cells in proptest::collection::vec((any::<i64>(), ".{0,20}", any::<f64>().prop_filter("not NaN", |f| !f.is_nan())), 0..20)
        ) {
            let row: Row = cells
                .iter()
                .flat_map(|(i, s, f)| [Value::Int(*i), Value::String(s.clone()), Value::Float(*f)])
                .collect();
            let mut data = Vec::new();
            encode_row(&row, &mut data);
            prop_assert_eq!(decode_rows(&data, 1), Ok(vec![row]));
        }
    }
}
