//! A generated round trip through every reader -> writer pair Ferry supports (PostgreSQL,
//! MariaDB, SQLite, csv, text, stream): random rows of the column model, edge values always
//! included, loaded into the source through Ferry's own writer, copied by the pair under test,
//! read back through Ferry's reader and compared value by value with what went in.
//!
//! The property: a row either arrives with every value equal, or is a dirty record (at load or
//! copy). Never a changed value. Rows built from ordinary values (not the edge rows) must never
//! be dirty, so "everything dirty" cannot pass either.
//!
//! proptest runs with a fixed seed; `FERRY_PROPTEST_CASES=N` runs more cases, and
//! `FERRY_PROPTEST_SEED=n` another seed.

use crate::support::*;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc};
use ferry_agent::sync::plugin::{
    BlockingReadSplit, BlockingReader, BlockingSink, BlockingWriteChannel, BlockingWriter,
    TargetInfo, Writer, blocking_reader, blocking_writer,
};
use ferry_agent::sync::value::{Row, Value, parse_date};
use ferry_agent::sync::{JobLog, Shared, build_reader, build_writer, run_plugins};
use ferry_common::job::{DirtySetting, ErrorLimit, JobSpec, Setting, Speed};
use mysql_async::prelude::Queryable;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value as J, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

const COLS: [&str; 12] = [
    "id", "flag", "i", "f", "dec", "s", "b", "d", "t", "ts", "tz", "j",
];
/// Edge rows have ids below this; generated rows above.
const FIRST_GENERATED: i64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Pg,
    My,
    Sqlite,
    Csv,
    Text,
    Stream,
}

const STORES: [Store; 6] = [
    Store::Pg,
    Store::My,
    Store::Sqlite,
    Store::Csv,
    Store::Text,
    Store::Stream,
];

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::Pg => "pg",
            Store::My => "my",
            Store::Sqlite => "sqlite",
            Store::Csv => "csv",
            Store::Text => "text",
            Store::Stream => "stream",
        }
    }
}

struct Env {
    pg: PgDb,
    my: MyDb,
    dir: tempfile::TempDir,
}

impl Env {
    fn sqlite(&self) -> PathBuf {
        self.dir.path().join("rt.db")
    }

    fn file(&self, table: &str) -> PathBuf {
        self.dir.path().join(table)
    }

    async fn create(&self, store: Store, table: &str) -> anyhow::Result<()> {
        match store {
            Store::Pg => {
                self.pg
                    .client()
                    .await?
                    .batch_execute(&format!(
                        "CREATE TABLE {table} (id bigint, flag boolean, i bigint, f float8, dec numeric, \
                         s text, b bytea, d date, t time, ts timestamp, tz timestamptz, j jsonb)"
                    ))
                    .await?
            }
            Store::My => {
                self.my
                    .conn()
                    .await?
                    .query_drop(format!(
                        "CREATE TABLE {table} (id BIGINT, flag BOOLEAN, i BIGINT, f DOUBLE, `dec` DECIMAL(65,20), \
                         s LONGTEXT, b LONGBLOB, d DATE, t TIME(6), ts DATETIME(6), tz TIMESTAMP(6) NULL, j JSON) \
                         CHARACTER SET utf8mb4"
                    ))
                    .await?
            }
            Store::Sqlite => {
                let conn = rusqlite::Connection::open(self.sqlite())?;
                conn.execute_batch(&format!(
                    "CREATE TABLE {table} (id INTEGER, flag INTEGER, i INTEGER, f REAL, dec TEXT, s TEXT, \
                     b BLOB, d TEXT, t TEXT, ts TEXT, tz TEXT, j TEXT)"
                ))?;
            }
            Store::Csv | Store::Text | Store::Stream => {}
        }
        Ok(())
    }

    fn writer(&self, store: Store, table: &str, append: bool) -> J {
        match store {
            Store::Pg => pg_writer(&self.pg, table, &COLS, json!({})),
            Store::My => my_writer(&self.my, table, &COLS, json!({})),
            Store::Sqlite => json!({"name": "sqlitewriter", "parameter": {
                "path": self.sqlite().display().to_string(), "table": table, "column": COLS}}),
            Store::Csv | Store::Text => json!({"name": "txtfilewriter", "parameter": {
                "path": self.dir.path().display().to_string(), "fileName": table,
                "fileFormat": store.name(), "writeMode": if append { "append" } else { "truncate" }}}),
            Store::Stream => json!({"name": "streamwriter", "parameter": {"print": false}}),
        }
    }

    fn reader(&self, store: Store, table: &str) -> J {
        match store {
            Store::Pg => pg_reader(&self.pg, table, &COLS, None),
            Store::My => my_reader(&self.my, table, &COLS, None),
            Store::Sqlite => json!({"name": "sqlitereader", "parameter": {
                "path": self.sqlite().display().to_string(), "table": table, "column": COLS}}),
            Store::Csv | Store::Text => {
                let types = [
                    "long", "bool", "long", "double", "decimal", "string", "bytes", "date", "time",
                    "date", "date", "json",
                ];
                let column: Vec<J> = types
                    .iter()
                    .enumerate()
                    .map(|(i, t)| json!({"index": i, "type": t}))
                    .collect();
                json!({"name": "txtfilereader", "parameter": {
                    "path": [self.file(table).display().to_string()], "column": column,
                    "fileFormat": store.name()}})
            }
            Store::Stream => {
                json!({"name": "streamreader", "parameter": {"column": [], "sliceRecordCount": 0}})
            }
        }
    }
}

/// Rows handed to a writer from memory.
struct MemReader(Vec<Row>);

struct MemSplit(Vec<Row>);

impl BlockingReader for MemReader {
    fn name(&self) -> &'static str {
        "memoryreader"
    }
    fn splits(
        &self,
        _: usize,
        _: &JobLog,
    ) -> Result<Vec<Box<dyn BlockingReadSplit>>, ferry_agent::sync::SyncError> {
        Ok(vec![Box::new(MemSplit(self.0.clone()))])
    }
}

impl BlockingReadSplit for MemSplit {
    fn describe(&self) -> String {
        "memory".into()
    }
    fn run(
        self: Box<Self>,
        sink: &mut BlockingSink,
        _: &TargetInfo,
    ) -> Result<(), ferry_agent::sync::SyncError> {
        for r in self.0 {
            sink.push(r)?;
        }
        Ok(())
    }
}

/// Rows a reader produced, kept in memory.
#[derive(Clone, Default)]
struct MemWriter(Arc<Mutex<Vec<Row>>>);

impl BlockingWriter for MemWriter {
    fn name(&self) -> &'static str {
        "memorywriter"
    }
    fn prepare(&self, _: &JobLog) -> Result<(), ferry_agent::sync::SyncError> {
        Ok(())
    }
    fn parallelism(&self) -> usize {
        1
    }
    fn open(
        &self,
        _: usize,
    ) -> Result<Box<dyn BlockingWriteChannel>, ferry_agent::sync::SyncError> {
        Ok(Box::new(self.clone()))
    }
    fn finish(&self, _: &JobLog) -> Result<(), ferry_agent::sync::SyncError> {
        Ok(())
    }
    fn abort(&self, _: &JobLog) {}
}

impl BlockingWriteChannel for MemWriter {
    fn write(
        &mut self,
        rows: Vec<Row>,
        shared: &Shared,
    ) -> Result<(), ferry_agent::sync::SyncError> {
        shared.written(rows.len() as u64, 0);
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(rows);
        Ok(())
    }
    fn commit(self: Box<Self>, _: &Shared) -> Result<(), ferry_agent::sync::SyncError> {
        Ok(())
    }
}

fn setting(dirty: &Path, channels: u64) -> Setting {
    Setting {
        speed: Speed {
            channel: Some(channels),
            ..Speed::default()
        },
        error_limit: ErrorLimit {
            record: Some(u64::MAX),
            percentage: None,
        },
        dirty: Some(DirtySetting {
            path: Some(dirty.display().to_string()),
        }),
    }
}

fn shared() -> Arc<Shared> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    Arc::new(Shared::new(
        JobLog::new(tx),
        CancellationToken::new(),
        u64::MAX,
    ))
}

fn spec(reader: J, writer: J) -> anyhow::Result<JobSpec> {
    let text = json!({"job": {"content": [{"reader": reader, "writer": writer}]}}).to_string();
    Ok(JobSpec::parse(&text)?)
}

/// Ids of the rows in a dirty-record file (which is then emptied); reasons of ordinary rows
/// are printed, since those should not be dirty.
fn dirty_ids(path: &Path) -> anyhow::Result<BTreeSet<i64>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let _ = std::fs::remove_file(path);
    let mut ids = BTreeSet::new();
    for line in text.lines() {
        let v: J = serde_json::from_str(line)?;
        let id = match &v["row"][0] {
            J::Number(n) => n.as_i64(),
            J::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        let id = id.ok_or_else(|| anyhow::anyhow!("dirty record without id: {line}"))?;
        if id >= FIRST_GENERATED {
            eprintln!(
                "dirty ordinary row: {}",
                line.chars().take(600).collect::<String>()
            );
        }
        ids.insert(id);
    }
    Ok(ids)
}

/// Writes `rows` into `store` through Ferry's writer; answers the ids it refused.
async fn load(env: &Env, store: Store, table: &str, rows: &[Row]) -> anyhow::Result<BTreeSet<i64>> {
    env.create(store, table).await?;
    let cfg = spec(
        env.reader(Store::Stream, ""),
        env.writer(store, table, false),
    )?;
    let dirty = env.dir.path().join(format!("{table}.load.jsonl"));
    let writer: Arc<dyn Writer> =
        Arc::from(build_writer(&cfg.writer, table).ok_or_else(|| anyhow::anyhow!("no writer"))?);
    run_plugins(
        Arc::from(blocking_reader(MemReader(rows.to_vec()))),
        writer,
        &setting(&dirty, 2),
        shared(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("loading {table}: {e}"))?;
    dirty_ids(&dirty)
}

/// Reads `store` back through Ferry's reader.
async fn collect(env: &Env, store: Store, table: &str) -> anyhow::Result<Vec<Row>> {
    let cfg = spec(
        env.reader(store, table),
        env.writer(Store::Stream, "", false),
    )?;
    let dirty = env.dir.path().join(format!("{table}.collect.jsonl"));
    let out = MemWriter::default();
    run_plugins(
        Arc::from(build_reader(&cfg.reader).ok_or_else(|| anyhow::anyhow!("no reader"))?),
        Arc::from(blocking_writer(out.clone())),
        &setting(&dirty, 2),
        shared(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("reading {table} back: {e}"))?;
    let refused = dirty_ids(&dirty)?;
    anyhow::ensure!(
        refused.is_empty(),
        "reading {table} back refused rows {refused:?}"
    );
    let rows = out.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(rows)
}

/// Runs a job from `reader` to `writer`; answers the ids it made dirty.
async fn copy(env: &Env, reader: J, writer: J, tag: &str) -> anyhow::Result<(u64, BTreeSet<i64>)> {
    // A streamreader generates its rows once per channel.
    let channels = if reader["name"] == "streamreader" {
        1
    } else {
        2
    };
    let cfg = spec(reader, writer)?;
    let dirty = env.dir.path().join(format!("{tag}.copy.jsonl"));
    let s = run_plugins(
        Arc::from(build_reader(&cfg.reader).ok_or_else(|| anyhow::anyhow!("no reader"))?),
        Arc::from(build_writer(&cfg.writer, tag).ok_or_else(|| anyhow::anyhow!("no writer"))?),
        &setting(&dirty, channels),
        shared(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{tag}: {e}"))?;
    Ok((s.records_written, dirty_ids(&dirty)?))
}

/// The value of column `col` as comparable text, whatever type a store hands back for it.
fn canon(col: &str, v: &Value) -> String {
    let from_text = |s: &str| match col {
        "d" | "t" | "ts" | "tz" => parse_date(s, None)
            .or_else(|_| {
                NaiveTime::parse_from_str(s, "%H:%M:%S%.f")
                    .map(Value::Time)
                    .map_err(|e| e.to_string())
            })
            .map(|v| canon(col, &v))
            .unwrap_or_else(|e| format!("unparsed {s}: {e}")),
        _ => format!("text {s}"),
    };
    match (col, v) {
        (_, Value::Null) => "NULL".into(),
        ("flag", Value::Bool(b)) => b.to_string(),
        ("flag", Value::Int(i)) if *i == 0 || *i == 1 => (*i == 1).to_string(),
        (_, Value::Int(i)) => i.to_string(),
        ("f", Value::Float(f)) if f.is_nan() => "NaN".into(),
        // IEEE equality: MySQL and SQLite store -0.0 as 0.0, which compares equal.
        ("f", Value::Float(f)) => format!("{:e}", f + 0.0),
        ("dec", Value::Decimal(s) | Value::String(s)) => decimal(s),
        ("s", Value::String(s)) => s.clone(),
        ("b", Value::Bytes(b)) => hex::encode(b),
        ("d", Value::Date(d)) => d.to_string(),
        ("t", Value::Time(t)) => t.format("%H:%M:%S%.6f").to_string(),
        ("ts", Value::Timestamp(t)) => t.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        ("tz", Value::TimestampTz(t)) => t
            .with_timezone(&Utc)
            .format("%Y-%m-%d %H:%M:%S%.6f")
            .to_string(),
        ("tz", Value::Timestamp(t)) => t.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        ("j", Value::Json(s) | Value::String(s)) => serde_json::from_str::<J>(s)
            .map(|j| j.to_string())
            .unwrap_or_else(|e| format!("bad json {s}: {e}")),
        (_, Value::String(s)) => from_text(s),
        (_, other) => format!("{} {other}", other.type_name()),
    }
}

/// A decimal without sign of zero, leading zeros or trailing fraction zeros.
fn decimal(s: &str) -> String {
    let t = s.trim();
    let (neg, body) = match t.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let zero = int == "0" && frac.is_empty();
    let mut out = String::new();
    if neg && !zero {
        out.push('-');
    }
    out.push_str(int);
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

fn canon_row(r: &Row) -> Vec<String> {
    COLS.iter().zip(r).map(|(c, v)| canon(c, v)).collect()
}

fn id_of(r: &Row) -> i64 {
    match r.first() {
        Some(Value::Int(i)) => *i,
        _ => -1,
    }
}

fn ts(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, us: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(y, mo, d)
        .and_then(|d| d.and_hms_micro_opt(h, mi, s, us))
        .unwrap_or_default()
}

fn tz(t: NaiveDateTime, offset_secs: i32) -> Value {
    let off = FixedOffset::east_opt(offset_secs).unwrap_or_else(|| {
        Utc.from_utc_datetime(&NaiveDateTime::default())
            .offset()
            .fix()
    });
    off.from_local_datetime(&t)
        .single()
        .map(Value::TimestampTz)
        .unwrap_or(Value::Null)
}

/// Rows of edge values, always part of every case.
fn edge_rows() -> Vec<Row> {
    let all_bytes: Vec<u8> = (0u8..=255).collect();
    let big = "Ferry ⛴ one megabyte of text, ".repeat(1_000_000 / 32 + 1);
    let date = |y, m, d| Value::Date(NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default());
    let time =
        |h, m, s, us| Value::Time(NaiveTime::from_hms_micro_opt(h, m, s, us).unwrap_or_default());
    let s = |t: &str| Value::String(t.to_string());
    let dec = |t: &str| Value::Decimal(t.to_string());
    let j = |t: &str| Value::Json(t.to_string());
    vec![
        vec![
            Value::Int(1),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
        ],
        vec![
            Value::Int(2),
            Value::Bool(true),
            Value::Int(i64::MAX),
            Value::Float(f64::MAX),
            dec("99999999999999999999999999999999999999"),
            s(&big),
            Value::Bytes(all_bytes),
            date(9999, 12, 31),
            time(23, 59, 59, 999_999),
            Value::Timestamp(ts(9999, 12, 31, 23, 59, 59, 999_999)),
            tz(ts(9999, 12, 31, 23, 59, 59, 999_999), 0),
            j(r#"{"a": [1, 2, {"b": null}], "ü": "✓ 🚢"}"#),
        ],
        vec![
            Value::Int(3),
            Value::Bool(false),
            Value::Int(i64::MIN),
            Value::Float(f64::NAN),
            dec("-0.00000000000000000001"),
            s("\\N"),
            Value::Bytes(b"\\N".to_vec()),
            date(1, 1, 1),
            time(0, 0, 0, 0),
            Value::Timestamp(ts(1, 1, 1, 0, 0, 0, 0)),
            tz(ts(1, 1, 1, 0, 0, 0, 0), 0),
            j("[]"),
        ],
        vec![
            Value::Int(4),
            Value::Bool(true),
            Value::Int(0),
            Value::Float(f64::INFINITY),
            dec("0"),
            s("NULL"),
            Value::Bytes(Vec::new()),
            date(2026, 3, 29),
            time(2, 30, 0, 0),
            // Times that do not exist or exist twice in Europe's DST changes.
            Value::Timestamp(ts(2026, 3, 29, 2, 30, 0, 0)),
            tz(ts(2026, 3, 29, 3, 30, 0, 0), 2 * 3600),
            j(r#""string""#),
        ],
        vec![
            Value::Int(5),
            Value::Null,
            Value::Int(-1),
            Value::Float(f64::NEG_INFINITY),
            dec("-12345678901234567890.12345678901234567890"),
            s(""),
            Value::Bytes(vec![0]),
            date(2000, 2, 29),
            time(12, 0, 0, 1),
            Value::Timestamp(ts(2026, 10, 25, 2, 30, 0, 500_000)),
            tz(ts(2026, 10, 25, 2, 30, 0, 0), 3600),
            j("{}"),
        ],
        vec![
            Value::Int(6),
            Value::Bool(false),
            Value::Int(1),
            Value::Float(-0.0),
            dec("1.5"),
            s("quote ' double \" backslash \\ tab \t newline \n cr \r comma , pipe | end"),
            Value::Bytes(b"\\\\N\t\n,\"".to_vec()),
            date(1970, 1, 1),
            time(23, 59, 59, 0),
            Value::Timestamp(ts(1970, 1, 1, 0, 0, 0, 0)),
            tz(ts(2038, 1, 19, 3, 14, 7, 0), 0),
            j(r#"{"nested": {"deep": [true, false, "x"]}}"#),
        ],
        vec![
            Value::Int(7),
            Value::Bool(true),
            Value::Int(42),
            Value::Float(5e-324),
            dec("0.1"),
            s("null"),
            Value::Bytes(vec![0xff, 0xfe, 0xfd]),
            date(1000, 1, 1),
            time(1, 2, 3, 0),
            Value::Timestamp(ts(1000, 1, 1, 0, 0, 0, 0)),
            tz(ts(1970, 1, 1, 0, 0, 1, 0), 0),
            j("null"),
        ],
        vec![
            Value::Int(8),
            Value::Bool(false),
            Value::Int(7),
            Value::Float(f64::MIN_POSITIVE),
            dec("-1"),
            s("héllo 世界 🚢🎉 👨‍👩‍👧 \u{202e}rtl \u{feff}bom \u{1}\u{7f} control"),
            Value::Bytes(vec![0x5c]),
            date(2024, 2, 29),
            time(0, 0, 0, 1),
            Value::Timestamp(ts(2024, 2, 29, 12, 0, 0, 1)),
            tz(ts(2024, 2, 29, 12, 0, 0, 1), -(9 * 3600 + 30 * 60)),
            j(r#"[1, -2, 3000000000]"#),
        ],
    ]
}

fn json_leaf() -> impl Strategy<Value = J> {
    prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        any::<i32>().prop_map(J::from),
        "[a-zA-Z0-9 ü✓]{0,8}".prop_map(J::String),
    ]
}

fn json_doc() -> impl Strategy<Value = J> {
    json_leaf().prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(J::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| J::Object(m.into_iter().collect())),
        ]
    })
}

fn nullable<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
    f: impl Fn(T) -> Value + 'static,
) -> BoxedStrategy<Value> {
    prop::option::weighted(0.9, s)
        .prop_map(move |o| o.map(&f).unwrap_or(Value::Null))
        .boxed()
}

/// A row of ordinary values every store can hold exactly (ids assigned later).
fn plain_row() -> impl Strategy<Value = Row> {
    let date = (1000i32..=9999, 1u32..=12, 1u32..=28);
    let time = (0u32..86_400, 0u32..1_000_000);
    let text = prop_oneof![
        4 => "[^\u{0}]{0,40}",
        1 => Just("\\N".to_string()),
        1 => Just("NULL".to_string()),
        1 => Just(String::new()),
    ];
    (
        nullable(any::<bool>(), Value::Bool),
        nullable(any::<i64>(), Value::Int),
        nullable(prop::num::f64::NORMAL | prop::num::f64::ZERO, Value::Float),
        nullable(
            (
                any::<bool>(),
                "[0-9]{1,30}",
                prop::option::of("[0-9]{1,20}"),
            ),
            |(neg, i, f)| {
                Value::Decimal(format!(
                    "{}{i}{}",
                    if neg { "-" } else { "" },
                    f.map(|f| format!(".{f}")).unwrap_or_default()
                ))
            },
        ),
        nullable(text, Value::String),
        nullable(prop::collection::vec(any::<u8>(), 0..40), Value::Bytes),
        nullable(date.clone(), move |(y, m, d)| {
            Value::Date(NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default())
        }),
        nullable(time.clone(), |(s, us)| {
            Value::Time(
                NaiveTime::from_num_seconds_from_midnight_opt(s, us * 1000).unwrap_or_default(),
            )
        }),
        (
            nullable((date.clone(), time.clone()), |((y, m, d), (s, us))| {
                Value::Timestamp(
                    NaiveDate::from_ymd_opt(y, m, d)
                        .and_then(|d| d.and_hms_micro_opt(s / 3600, s / 60 % 60, s % 60, us))
                        .unwrap_or_default(),
                )
            }),
            // Inside MySQL TIMESTAMP's range, at any offset.
            nullable(
                (86_400i64..2_147_000_000, 0u32..1_000_000, -48i32..=56),
                |(secs, us, q)| {
                    DateTime::from_timestamp(secs, us * 1000)
                        .map(|t| {
                            Value::TimestampTz(t.with_timezone(
                                &FixedOffset::east_opt(q * 900).unwrap_or_else(|| {
                                    Utc.from_utc_datetime(&NaiveDateTime::default())
                                        .offset()
                                        .fix()
                                }),
                            ))
                        })
                        .unwrap_or(Value::Null)
                },
            ),
            nullable(json_doc(), |j| Value::Json(j.to_string())),
        ),
    )
        .prop_map(|(flag, i, f, dec, s, b, d, t, (ts, tz, j))| {
            vec![Value::Null, flag, i, f, dec, s, b, d, t, ts, tz, j]
        })
}

fn case_rows() -> impl Strategy<Value = Vec<Row>> {
    prop::collection::vec(plain_row(), 1..6).prop_map(|generated| {
        let mut rows = edge_rows();
        for (k, mut r) in generated.into_iter().enumerate() {
            r[0] = Value::Int(FIRST_GENERATED + k as i64);
            rows.push(r);
        }
        rows
    })
}

/// What a streamreader column can say: the value's text and type; bytes only as UTF-8 text.
fn stream_column(col: &str, v: &Value) -> J {
    let kind = match col {
        "id" | "i" => "long",
        "flag" => "bool",
        "f" => "double",
        "dec" => "decimal",
        "b" => "bytes",
        "t" => "time",
        "d" | "ts" | "tz" => "date",
        "j" => "json",
        _ => "string",
    };
    let text = match v {
        Value::Null => J::Null,
        Value::Bytes(b) => match std::str::from_utf8(b) {
            Ok(t) => J::String(t.to_string()),
            Err(_) => J::Null,
        },
        other => J::String(other.to_string()),
    };
    json!({"type": kind, "value": text})
}

/// The rows a streamreader can generate: bytes that are not UTF-8 have no stream spelling.
fn stream_projection(rows: &[Row]) -> Vec<Row> {
    rows.iter()
        .map(|r| {
            r.iter()
                .map(|v| match v {
                    Value::Bytes(b) if std::str::from_utf8(b).is_err() => Value::Null,
                    other => other.clone(),
                })
                .collect()
        })
        .collect()
}

/// Checks one reader store against every writer store for one case; answers a description of
/// each violation.
async fn check_reader(
    env: &Env,
    case: usize,
    source: Store,
    rows: &[Row],
) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    let src = format!("src_{}_{case}", source.name());
    // Load the source; what it cannot hold is dirty there and leaves the expectation.
    let (expected, load_dirty) = if source == Store::Stream {
        (stream_projection(rows), BTreeSet::new())
    } else {
        let dirty = load(env, source, &src, rows).await?;
        (rows.to_vec(), dirty)
    };
    for id in &load_dirty {
        if *id >= FIRST_GENERATED {
            problems.push(format!("{}: load refused ordinary row {id}", source.name()));
        }
    }
    for target in STORES {
        let pair = format!("{}->{}", source.name(), target.name());
        let dst = format!("dst_{}_{}_{case}", source.name(), target.name());
        env.create(target, &dst).await?;
        let mut dirty = BTreeSet::new();
        let mut written = 0;
        if source == Store::Stream {
            // A streamreader repeats one row: one job per row (the edge rows and two more).
            for r in expected.iter().filter(|r| id_of(r) < FIRST_GENERATED + 2) {
                let column: Vec<J> = COLS
                    .iter()
                    .zip(r)
                    .map(|(c, v)| stream_column(c, v))
                    .collect();
                let reader = json!({"name": "streamreader", "parameter": {"column": column, "sliceRecordCount": 1}});
                let (w, d) = copy(env, reader, env.writer(target, &dst, true), &dst).await?;
                written += w;
                dirty.extend(d);
            }
        } else {
            let (w, d) = copy(
                env,
                env.reader(source, &src),
                env.writer(target, &dst, false),
                &dst,
            )
            .await?;
            written = w;
            dirty = d;
        }
        let sent: Vec<&Row> = expected
            .iter()
            .filter(|r| !load_dirty.contains(&id_of(r)))
            .filter(|r| source != Store::Stream || id_of(r) < FIRST_GENERATED + 2)
            .collect();
        for id in &dirty {
            if *id >= FIRST_GENERATED {
                problems.push(format!("{pair}: ordinary row {id} was dirty"));
            }
        }
        let want: BTreeMap<i64, Vec<String>> = sent
            .iter()
            .filter(|r| !dirty.contains(&id_of(r)))
            .map(|r| (id_of(r), canon_row(r)))
            .collect();
        if target == Store::Stream {
            if written != want.len() as u64 {
                problems.push(format!(
                    "{pair}: wrote {written} rows, expected {}",
                    want.len()
                ));
            }
            continue;
        }
        let back = collect(env, target, &dst).await?;
        if back.len() != want.len() {
            problems.push(format!(
                "{pair}: {} rows read back, {} expected",
                back.len(),
                want.len()
            ));
        }
        let got: BTreeMap<i64, Vec<String>> =
            back.iter().map(|r| (id_of(r), canon_row(r))).collect();
        if got.len() != want.len() {
            problems.push(format!(
                "{pair}: {} rows arrived, {} expected (dirty {dirty:?})",
                got.len(),
                want.len()
            ));
        }
        for (id, w) in &want {
            match got.get(id) {
                None => problems.push(format!("{pair}: row {id} missing and not dirty")),
                Some(g) => {
                    for (k, (a, b)) in w.iter().zip(g).enumerate() {
                        if a != b {
                            let clip = |s: &str| s.chars().take(120).collect::<String>();
                            problems.push(format!(
                                "{pair}: row {id} column {}: sent {:?}, got {:?}",
                                COLS[k],
                                clip(a),
                                clip(b)
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(problems)
}

fn runner() -> TestRunner {
    let cases = std::env::var("FERRY_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let seed: u64 = std::env::var("FERRY_PROPTEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x000F_E227);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(
        Config {
            cases,
            max_shrink_iters: 0,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

fn round_trip_from(source: Store) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let env = rt.block_on(async {
        anyhow::Ok(Env {
            pg: PgDb::create().await?,
            my: MyDb::create().await?,
            dir: tempfile::tempdir()?,
        })
    })?;
    let case = std::sync::atomic::AtomicUsize::new(0);
    let result = runner().run(&case_rows(), |rows| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let problems = rt
            .block_on(check_reader(&env, n, source, &rows))
            .map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TestCaseError::fail(problems.join("\n")))
        }
    });
    rt.block_on(async {
        env.pg.drop_db().await?;
        env.my.drop_db().await
    })?;
    result.map_err(|e| anyhow::anyhow!("{e}"))
}

#[test]
fn round_trip_from_postgresql() -> anyhow::Result<()> {
    round_trip_from(Store::Pg)
}

#[test]
fn round_trip_from_mysql() -> anyhow::Result<()> {
    round_trip_from(Store::My)
}

#[test]
fn round_trip_from_sqlite() -> anyhow::Result<()> {
    round_trip_from(Store::Sqlite)
}

#[test]
fn round_trip_from_csv() -> anyhow::Result<()> {
    round_trip_from(Store::Csv)
}

#[test]
fn round_trip_from_text() -> anyhow::Result<()> {
    round_trip_from(Store::Text)
}

#[test]
fn round_trip_from_stream() -> anyhow::Result<()> {
    round_trip_from(Store::Stream)
}
