//! Hostile input as bounded generated-input tests (stable toolchain, part of `cargo test`): the
//! DataX job parser, parameter expressions and cron expressions never panic, fail with a typed
//! error that says something, and produce output bounded by their input.
//!
//! Found cases stay in the repository: proptest's own `hostile.proptest-regressions` beside this
//! file (replayed first on every run), and hand-kept hostile job files under `corpus/jobs/`,
//! each replayed by [`corpus_jobs_fail_cleanly_or_parse`]. `FERRY_PROPTEST_CASES` raises the
//! number of generated cases for a longer hunt.

use chrono::{NaiveDate, NaiveDateTime};
use ferry_common::datasource::{CsvFolder, DataSourceConfig};
use ferry_common::job::JobSpec;
use ferry_common::params::{self, ParamContext, ParamDefs};
use ferry_common::schedule::CronSchedule;
use proptest::prelude::*;
use std::path::Path;

fn config() -> ProptestConfig {
    let cases = std::env::var("FERRY_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Pieces job files are made of, so generated text reaches deep into the parser.
const JOB_WORDS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"job\"",
    "\"content\"",
    "\"setting\"",
    "\"reader\"",
    "\"writer\"",
    "\"name\"",
    "\"parameter\"",
    "\"streamreader\"",
    "\"streamwriter\"",
    "\"txtfilereader\"",
    "\"txtfilewriter\"",
    "\"mysqlreader\"",
    "\"postgresqlwriter\"",
    "\"sqlitereader\"",
    "\"column\"",
    "\"connection\"",
    "\"jdbcUrl\"",
    "\"table\"",
    "\"querySql\"",
    "\"path\"",
    "\"fileName\"",
    "\"datasource\"",
    "\"speed\"",
    "\"channel\"",
    "\"errorLimit\"",
    "\"record\"",
    "\"percentage\"",
    "\"sliceRecordCount\"",
    "\"type\"",
    "\"index\"",
    "\"value\"",
    "\"format\"",
    "\"dateFormat\"",
    "\"fieldDelimiter\"",
    "\"encoding\"",
    "\"compress\"",
    "\"splitPk\"",
    "\"where\"",
    "\"preSql\"",
    "\"writeMode\"",
    "\"nullFormat\"",
    "\"root\"",
    "\"yyyy-MM-dd HH:mm:ss\"",
    "\"GBK\"",
    "\"gzip\"",
    "\"\\t\"",
    "\"*\"",
    "\"long\"",
    "\"date\"",
    "\"bytes\"",
    "\"jdbc:mysql://h:3306/d\"",
    "\"jdbc:postgresql://[::1]:99999/d?x=%zz\"",
    "0",
    "-1",
    "1e999",
    "18446744073709551616",
    "3.5",
    "true",
    "null",
    "\"\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"${bizdate}\"",
    "\"$[yyyymmdd-1]\"",
    "\"../../etc/passwd\"",
    "\"t\\\"; DROP TABLE x; --\"",
];

fn job_text() -> impl Strategy<Value = String> {
    prop_oneof![
        // Arbitrary text, including invalid UTF-8 replaced and control characters.
        ".{0,200}",
        prop::collection::vec(prop::sample::select(JOB_WORDS), 0..80).prop_map(|w| w.concat()),
        // Deep nesting: the parser must refuse, not overflow its stack.
        (1usize..5000).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
        (1usize..5000).prop_map(|n| format!("{{\"job\":{}1", "{\"a\":".repeat(n))),
    ]
}

/// A parsed job goes back to JSON and parses to itself; resolving against a file data source
/// never panics either.
fn exercise_job(text: &str) -> Result<(), TestCaseError> {
    match JobSpec::parse(text) {
        Ok(job) => {
            let again = JobSpec::parse(&job.to_json())
                .map_err(|e| TestCaseError::fail(format!("round trip: {e}")))?;
            prop_assert_eq!(&again.reader, &job.reader);
            prop_assert_eq!(&again.writer, &job.writer);
            let _ = job.datasources();
            let resolved = job.resolve(|_| {
                Some(DataSourceConfig::Csv(CsvFolder {
                    path: "/data/in".into(),
                }))
            });
            if let Err(e) = resolved {
                prop_assert!(!e.to_string().is_empty());
            }
        }
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    Ok(())
}

const PARAM_WORDS: &[&str] = &[
    "$[",
    "${",
    "]",
    "}",
    "yyyy",
    "yyyymmdd",
    "yyyy-mm-dd",
    "hh24",
    "mi",
    "ss",
    "mm",
    "dd",
    "-",
    "+",
    "*",
    "/",
    "1",
    "0",
    "24",
    "60",
    "999999999999",
    "-9223372036854775808",
    "add_months(",
    ",",
    ")",
    "bizdate",
    "cyctime",
    "dt",
    "=",
    " ",
    "\"",
    "\n",
    "x",
    "_",
    "$",
    "[",
    "$$",
    "\\",
    "\u{1F600}",
    "年",
];

fn param_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,80}",
        prop::collection::vec(prop::sample::select(PARAM_WORDS), 0..30).prop_map(|w| w.concat()),
    ]
}

fn base() -> impl Strategy<Value = NaiveDateTime> {
    // Calendar edges included: the first and last days chrono knows.
    prop_oneof![
        Just(NaiveDate::MIN.and_hms_opt(0, 0, 0)),
        Just(NaiveDate::MAX.and_hms_opt(23, 59, 59)),
        (1i32..9999, 1u32..13, 1u32..29, 0u32..24)
            .prop_map(|(y, m, d, h)| NaiveDate::from_ymd_opt(y, m, d)
                .and_then(|d| d.and_hms_opt(h, 0, 0))),
    ]
    .prop_filter_map("a valid time", |t| t)
}

const CRON_WORDS: &[&str] = &[
    "*",
    "?",
    "/",
    "-",
    ",",
    " ",
    "0",
    "1",
    "7",
    "59",
    "60",
    "99",
    "2147483648",
    "L",
    "W",
    "#",
    "MON",
    "JAN",
    "SUN-SAT",
    "1-31/0",
    "*/0",
    "0/1",
    "31",
    "2",
    "L-3",
    "5L",
    "3#5",
    "\t",
];
const ZONES: &[&str] = &[
    "UTC",
    "Asia/Shanghai",
    "Europe/Berlin",
    "America/Sao_Paulo",
    "Pacific/Apia",
    "Nope/Zone",
    "",
    " UTC ",
];

fn cron_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        prop::collection::vec(prop::sample::select(CRON_WORDS), 0..20).prop_map(|w| w.concat()),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn job_parser_never_panics(text in job_text()) {
        exercise_job(&text)?;
    }

    /// Parameter definitions, substitution and resolution: typed errors, output bounded by
    /// the input (no expression expands without limit).
    #[test]
    fn parameter_expressions_never_panic(defs in param_text(), job in param_text(), at in base()) {
        let ctx = ParamContext::for_cycle(at);
        match params::substitute(&job, &ctx) {
            Ok(out) => prop_assert!(out.len() <= 64 * (job.len() + 1), "{} -> {} bytes", job, out.len()),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        if let Err(e) = params::check(&job) {
            prop_assert!(!e.to_string().is_empty());
        }
        match ParamDefs::parse(&defs) {
            Ok(parsed) => {
                // What is shown reads back as itself.
                let shown = parsed.to_string();
                let again = ParamDefs::parse(&shown)
                    .map_err(|e| TestCaseError::fail(format!("{shown}: {e}")))?;
                prop_assert_eq!(&again, &parsed);
                match params::resolve(&parsed, &ctx) {
                    Ok(values) => {
                        for (_, v) in values.values.iter() {
                            prop_assert!(v.len() <= 64 * (defs.len() + 32));
                        }
                        if let Err(e) = params::substitute(&job, &values) {
                            prop_assert!(!e.to_string().is_empty());
                        }
                    }
                    Err(e) => prop_assert!(!e.to_string().is_empty()),
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// Cron expressions in any zone: parse or fail with a message; a parsed schedule answers
    /// for any day, including the calendar's edges, in bounded time and space.
    #[test]
    fn cron_expressions_never_panic(expr in cron_text(), zone in prop::sample::select(ZONES), at in base()) {
        match CronSchedule::parse(&expr, zone) {
            Ok(s) => {
                let day = at.date();
                let fires = s.fires_on(day);
                prop_assert!(fires.len() <= 2 * 24 * 60 * 60);
                let _ = s.cycles_on(day);
                let _ = s.runs_on(day);
                let _ = s.next_after(at.and_utc());
                let _ = s.period();
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

/// Every hostile job file kept in `corpus/jobs/` parses or fails with a message, never panics.
#[test]
fn corpus_jobs_fail_cleanly_or_parse() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/jobs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let bytes = std::fs::read(&path)?;
        let text = String::from_utf8_lossy(&bytes);
        exercise_job(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        seen += 1;
    }
    assert!(seen > 0, "no corpus in {}", dir.display());
    Ok(())
}
