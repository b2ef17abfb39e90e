//! Sync throughput benchmark: Ferry's engine against each database's own bulk pipe and against
//! peer tools, on the same 10-column table, side by side in one run.
//!
//! ```text
//! cargo bench -p ferry-agent --bench sync -- [--rows 2000000] [--channels 1,4,8]
//!     [--pairs pg-pg,my-pg,pg-my,my-my] [--repeat 3] [--peers] [--keep]
//!     (a side may carry a TLS mode, `pg@disable-pg@disable`, and a writer a write mode, `my:update`)
//! ```
//! Needs PostgreSQL and MariaDB on 127.0.0.1 (`scripts/services.sh`), `psql` and `mysql`;
//! `--peers` also runs pgloader and sling (`scripts/bench-peers.sh` installs them). Each Ferry
//! run is a child process of this binary running the engine alone, so its peak RSS (VmHWM) is
//! the engine's, and its CPU time (user + system) is reported too, steadier than wall time on a
//! shared machine; a run without those figures fails. After every Ferry run the target's row count
//! and an order-independent checksum of its rows must equal the source's. Prints a Markdown
//! table for `docs/benchmarks.md`.

use ferry_agent::sync::{self, JobLog, Shared};
use ferry_common::job::JobSpec;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

const DB: &str = "ferry_bench";
const PEER_DB: &str = "ferry_bench_peer";
const PG_DDL: &str = "(id bigint PRIMARY KEY, customer_id integer, sku varchar(32), qty integer, \
    price numeric(12,2), discount double precision, status varchar(16), note text, \
    created_at timestamp, updated_at timestamp)";
const MY_DDL: &str = "(id BIGINT PRIMARY KEY, customer_id INT, sku VARCHAR(32), qty INT, \
    price DECIMAL(12,2), discount DOUBLE, status VARCHAR(16), note TEXT, \
    created_at DATETIME, updated_at DATETIME) CHARACTER SET utf8mb4";
const COLS: &[&str] = &[
    "id",
    "customer_id",
    "sku",
    "qty",
    "price",
    "discount",
    "status",
    "note",
    "created_at",
    "updated_at",
];

type Res<T> = Result<T, String>;
/// Formats one result row: pair, tool, channels, seconds, peak RSS, baseline seconds.
type RowFmt<'a> = &'a dyn Fn(&str, &str, &str, f64, Option<u64>, Option<f64>) -> String;

fn sh(cmd: &str) -> Res<String> {
    let out = Command::new("bash")
        .args(["-o", "pipefail", "-c", cmd])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn psql(db: &str, sql: &str) -> Res<String> {
    sh(&format!(
        "psql -h 127.0.0.1 -U postgres -d {db} -v ON_ERROR_STOP=1 -tAq -c {}",
        shell_quote(sql)
    ))
}

fn mysql(sql: &str) -> Res<String> {
    sh(&format!(
        "mysql --protocol=tcp -h 127.0.0.1 -uroot --local-infile=1 -N -B -e {}",
        shell_quote(sql)
    ))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Writes the deterministic sample as tab-separated text (`\N` for NULL).
fn write_tsv(path: &Path, rows: u64) -> Res<()> {
    let f = std::fs::File::create(path).map_err(|e| e.to_string())?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    const STATUS: [&str; 5] = ["new", "paid", "shipped", "delivered", "refunded"];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for id in 1..=rows {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let secs = x % 86_400;
        let note = if id % 17 == 0 {
            "\\N".to_string()
        } else {
            format!("order note {} – ünïcode ✓ {:x}", id % 1000, x & 0xffff)
        };
        writeln!(
            w,
            "{id}\t{}\tSKU-{:08x}\t{}\t{}.{:02}\t{:.4}\t{}\t{note}\t2026-11-24 {:02}:{:02}:{:02}\t2026-11-25 {:02}:{:02}:{:02}",
            x % 100_000,
            (x >> 16) as u32,
            1 + x % 100,
            (x >> 8) % 100_000,
            x % 100,
            (x % 1000) as f64 / 1000.0,
            STATUS[(x % 5) as usize],
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            (secs * 7) % 86_400 / 3600,
            (secs * 7) % 3600 / 60,
            (secs * 7) % 60,
        )
        .map_err(|e| e.to_string())?;
    }
    w.flush().map_err(|e| e.to_string())
}

fn setup(rows: u64, tsv: &Path) -> Res<()> {
    eprintln!("setup: {rows} rows into {DB} (PostgreSQL and MariaDB)");
    write_tsv(tsv, rows)?;
    for db in [DB, PEER_DB] {
        psql(
            "test",
            &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
        )?;
        psql("test", &format!("CREATE DATABASE {db}"))?;
    }
    psql(
        DB,
        &format!("CREATE TABLE src {PG_DDL}; CREATE TABLE dst {PG_DDL}"),
    )?;
    psql(PEER_DB, &format!("CREATE TABLE src {PG_DDL}"))?;
    sh(&format!(
        "psql -h 127.0.0.1 -U postgres -d {DB} -c \"\\copy src FROM '{}'\"",
        tsv.display()
    ))?;
    psql(DB, "VACUUM ANALYZE src")?;
    mysql(&format!(
        "DROP DATABASE IF EXISTS {DB}; CREATE DATABASE {DB}; USE {DB}; \
         CREATE TABLE src {MY_DDL}; CREATE TABLE dst {MY_DDL}; \
         LOAD DATA LOCAL INFILE '{}' INTO TABLE src",
        tsv.display()
    ))?;
    Ok(())
}

/// The database of a pair side, without its write mode (`:update`) or TLS mode (`@disable`).
fn base(kind: &str) -> &str {
    kind.split([':', '@']).next().unwrap_or(kind)
}

/// A side's URL with its TLS mode (`pg@disable`, `my@require`): TLS costs are measured by
/// running the same pair with two modes side by side.
fn with_tls(kind: &str, url: String) -> String {
    match kind.split_once('@') {
        Some((_, mode)) => format!("{url}?sslmode={}", mode.split(':').next().unwrap_or(mode)),
        None => url,
    }
}

fn reader(kind: &str) -> serde_json::Value {
    let (name, url, user) = match base(kind) {
        "pg" => (
            "postgresqlreader",
            format!("jdbc:postgresql://127.0.0.1:5432/{DB}"),
            "postgres",
        ),
        _ => (
            "mysqlreader",
            format!("jdbc:mysql://127.0.0.1:3306/{DB}"),
            "root",
        ),
    };
    let url = with_tls(kind, url);
    serde_json::json!({"name": name, "parameter": {"username": user, "password": "", "column": COLS,
        "splitPk": "id", "connection": [{"jdbcUrl": [url], "table": ["src"]}]}})
}

/// A writer; `kind` may carry a write mode after a colon (`my:update` forces MySQL's INSERT
/// path, for comparing it with LOAD DATA).
fn writer(kind: &str) -> serde_json::Value {
    let full = kind;
    let mode = kind.split_once(':').map_or("insert", |(_, m)| m);
    let (name, url, user) = match base(kind) {
        "pg" => (
            "postgresqlwriter",
            format!("jdbc:postgresql://127.0.0.1:5432/{DB}"),
            "postgres",
        ),
        _ => (
            "mysqlwriter",
            format!("jdbc:mysql://127.0.0.1:3306/{DB}"),
            "root",
        ),
    };
    let url = with_tls(full, url);
    serde_json::json!({"name": name, "parameter": {"username": user, "password": "", "column": COLS,
        "writeMode": mode, "connection": [{"jdbcUrl": url, "table": ["dst"]}]}})
}

fn truncate(kind: &str) -> Res<()> {
    match base(kind) {
        "pg" => psql(DB, "TRUNCATE dst").map(drop),
        _ => mysql(&format!("TRUNCATE {DB}.dst")).map(drop),
    }
}

/// Row count and an order-independent checksum of a table: the sum of a hash of every row's
/// text, so two tables agree only if they hold the same rows, in any order.
fn checksum(kind: &str, table: &str) -> Res<String> {
    match base(kind) {
        "pg" => psql(
            DB,
            &format!(
                "SELECT count(*) || ' ' || coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::bigint), 0) FROM {table} t"
            ),
        ),
        _ => {
            let row = COLS
                .iter()
                .map(|c| format!("COALESCE({c}, '<null>')"))
                .collect::<Vec<_>>()
                .join(", ");
            mysql(&format!(
                "SELECT CONCAT(COUNT(*), ' ', COALESCE(SUM(CAST(CONV(SUBSTR(MD5(CONCAT_WS('|', {row})), 1, 15), 16, 10) AS UNSIGNED)), 0)) FROM {DB}.{table}"
            ))
        }
    }
}

/// One pair and channel count: its wall times, peak RSS and CPU times over the rounds.
type Run = (String, usize, Vec<f64>, u64, Vec<f64>);

struct Measure {
    secs: f64,
    peak_rss_kb: u64,
    /// User + system CPU time of the Ferry process: steadier than wall time on a shared machine.
    cpu_secs: f64,
}

/// Runs one Ferry job in a child process; returns wall time and the child's peak RSS.
fn ferry(job: &str) -> Res<Measure> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let out = Command::new(exe)
        .args(["--child-job", job])
        .output()
        .map_err(|e| e.to_string())?;
    let secs = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "ferry job failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let peak_rss_kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("peak_rss_kb="))
        .and_then(|v| v.trim().parse().ok())
        .filter(|kb| *kb > 0)
        .ok_or_else(|| format!("the Ferry child did not report its peak RSS:\n{text}"))?;
    let cpu_secs = text
        .lines()
        .find_map(|l| l.strip_prefix("cpu_ms="))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("the Ferry child did not report its CPU time:\n{text}"))?
        / 1000.0;
    Ok(Measure {
        secs,
        peak_rss_kb,
        cpu_secs,
    })
}

fn timed(cmd: &str) -> Res<f64> {
    let started = Instant::now();
    sh(cmd)?;
    Ok(started.elapsed().as_secs_f64())
}

/// Child mode: run the job with the engine, print peak RSS.
fn child(job: &str) -> Res<()> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let spec = JobSpec::parse(job).map_err(|e| e.to_string())?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let shared = Arc::new(
            Shared::new(
                JobLog::new(tx),
                CancellationToken::new(),
                spec.setting.error_limit.record_limit(),
            )
            .with_throttle(sync::throttle_for(&spec)),
        );
        let s = sync::run(&spec, "bench", shared)
            .await
            .map_err(|e| e.to_string())?;
        println!("records={}", s.records_written);
        Ok::<_, String>(())
    })?;
    // Peak RSS is half of what this benchmark reports: no figure means no result.
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status for peak RSS: {e}"))?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(|v| v.trim().trim_end_matches(" kB").trim().to_string())
        .ok_or("no VmHWM line in /proc/self/status: peak RSS cannot be measured")?;
    println!("peak_rss_kb={hwm}");
    // utime and stime, fields 14 and 15 of /proc/self/stat, in USER_HZ (100 per second).
    let stat = std::fs::read_to_string("/proc/self/stat")
        .map_err(|e| format!("cannot read /proc/self/stat for CPU time: {e}"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = fields
        .get(11..13)
        .ok_or("no utime/stime in /proc/self/stat")?
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    println!("cpu_ms={}", ticks * 10);
    Ok(())
}

struct Args {
    rows: u64,
    channels: Vec<usize>,
    pairs: Vec<String>,
    peers: bool,
    keep: bool,
    repeat: usize,
}

fn args() -> Res<Option<Args>> {
    let mut a = Args {
        rows: 2_000_000,
        channels: vec![1, 4, 8],
        pairs: ["pg-pg", "my-pg", "pg-my", "my-my"]
            .map(String::from)
            .to_vec(),
        peers: false,
        keep: false,
        repeat: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--child-job" => {
                let job = it.next().ok_or("--child-job needs a job")?;
                child(&job)?;
                return Ok(None);
            }
            "--rows" => a.rows = it.next().and_then(|v| v.parse().ok()).ok_or("--rows N")?,
            "--channels" => {
                a.channels = it
                    .next()
                    .ok_or("--channels 1,4,8")?
                    .split(',')
                    .map(|c| c.parse().map_err(|_| format!("bad channel count {c}")))
                    .collect::<Res<_>>()?
            }
            "--pairs" => {
                a.pairs = it
                    .next()
                    .ok_or("--pairs pg-pg,...")?
                    .split(',')
                    .map(String::from)
                    .collect()
            }
            "--peers" => a.peers = true,
            "--repeat" => {
                a.repeat = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|r| *r > 0)
                    .ok_or("--repeat N")?
            }
            "--keep" => a.keep = true,
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Some(a))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn run() -> Res<()> {
    let Some(a) = args()? else { return Ok(()) };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let tsv: PathBuf = dir.path().join("src.tsv");
    setup(a.rows, &tsv)?;
    // Both sources come from the same TSV; each target is checked against the source table in
    // its own database, so a value changed on the way (not only a lost row) fails the run.
    let src_sums = [
        ("pg", checksum("pg", "src")?),
        ("my", checksum("my", "src")?),
    ];
    for (kind, sum) in &src_sums {
        let rows = sum.split(' ').next().unwrap_or_default();
        if rows != a.rows.to_string() {
            return Err(format!(
                "{kind} source holds {rows} rows, expected {}",
                a.rows
            ));
        }
    }
    let n = a.rows as f64;
    let mb = std::fs::metadata(&tsv)
        .map(|m| m.len() as f64 / 1_048_576.0)
        .unwrap_or(0.0);
    // Every measurement is repeated; each round measures the baselines again right before
    // Ferry, so a noisy neighbour shifts both sides of a ratio alike. Medians are reported.
    let mut copy_pipe = Vec::new();
    let mut load_data = Vec::new();
    let mut runs: Vec<Run> = Vec::new();
    for pair in &a.pairs {
        for &ch in &a.channels {
            runs.push((pair.clone(), ch, Vec::new(), 0, Vec::new()));
        }
    }
    for round in 0..a.repeat {
        eprintln!("round {}/{}", round + 1, a.repeat);
        truncate("pg")?;
        copy_pipe.push(timed(&format!(
            "psql -h 127.0.0.1 -U postgres -d {DB} -c 'COPY src TO STDOUT (FORMAT binary)' | \
             psql -h 127.0.0.1 -U postgres -d {DB} -c 'COPY dst FROM STDIN (FORMAT binary)'"
        ))?);
        truncate("my")?;
        load_data.push(timed(&format!(
            "mysql --protocol=tcp -h 127.0.0.1 -uroot --local-infile=1 -e \"LOAD DATA LOCAL INFILE '{}' INTO TABLE {DB}.dst\"",
            tsv.display()
        ))?);
        for (pair, ch, secs, rss, cpu) in runs.iter_mut() {
            let (src, dst) = pair.split_once('-').ok_or(format!("bad pair {pair}"))?;
            truncate(dst)?;
            let job = serde_json::json!({"job": {"setting": {"speed": {"channel": *ch}, "errorLimit": {"record": 0}},
                "content": [{"reader": reader(src), "writer": writer(dst)}]}})
            .to_string();
            let m = ferry(&job)?;
            let kind = base(dst);
            let want = src_sums
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, s)| s.clone())
                .unwrap_or_default();
            let got = checksum(dst, "dst")?;
            if got != want {
                return Err(format!(
                    "{pair} x{ch}: target (rows, checksum) = {got}, source = {want}: data differs"
                ));
            }
            eprintln!(
                "  {pair} ferry x{ch}: {:.2}s, {:.2}s CPU",
                m.secs, m.cpu_secs
            );
            secs.push(m.secs);
            cpu.push(m.cpu_secs);
            *rss = (*rss).max(m.peak_rss_kb);
        }
    }
    let copy_pipe = median(&copy_pipe);
    let load_data = median(&load_data);
    let mut lines = vec![
        format!(
            "rows: {}, table: 10 columns (bigint, int, varchar, int, numeric(12,2), double, varchar, text, 2 timestamps), \
             {:.0} MB as TSV; median of {} rounds",
            a.rows, mb, a.repeat
        ),
        String::new(),
        "| pair | tool | channels | seconds | rows/s | MB/s (TSV size) | peak RSS MiB | vs target's bulk pipe |".into(),
        "|---|---|---|---|---|---|---|---|".into(),
    ];
    let row = |pair: &str, tool: &str, ch: &str, secs: f64, rss: Option<u64>, base: Option<f64>| {
        format!(
            "| {pair} | {tool} | {ch} | {secs:.2} | {:.0} | {:.1} | {} | {} |",
            n / secs,
            mb / secs,
            rss.map(|k| format!("{:.0}", k as f64 / 1024.0))
                .unwrap_or_else(|| "-".into()),
            base.map(|b| format!("{:.2}x", b / secs))
                .unwrap_or_else(|| "-".into())
        )
    };
    lines.push(row(
        "pg -> pg",
        "psql COPY binary pipe",
        "1",
        copy_pipe,
        None,
        Some(copy_pipe),
    ));
    lines.push(row(
        "any -> my",
        "LOAD DATA LOCAL INFILE (ready TSV)",
        "1",
        load_data,
        None,
        Some(load_data),
    ));
    for (pair, ch, secs, rss, _) in &runs {
        let target = pair.rsplit('-').next().unwrap_or(pair);
        let base = if self::base(target) == "pg" {
            copy_pipe
        } else {
            load_data
        };
        lines.push(row(
            pair,
            "ferry",
            &ch.to_string(),
            median(secs),
            Some(*rss),
            Some(base),
        ));
    }
    let mut peer_secs = Vec::new();
    if a.peers {
        peer_secs = peers(&a, &mut lines, &row, copy_pipe, load_data)?;
    }
    lines.push(String::new());
    lines.push("| pair | channels | Ferry CPU seconds (user + system) |".into());
    lines.push("|---|---|---|".into());
    for (pair, ch, _, _, cpu) in &runs {
        lines.push(format!("| {pair} | {ch} | {:.2} |", median(cpu)));
    }
    // The targets the sync-engine issue sets, from the medians above.
    let best = |pair: &str| {
        runs.iter()
            .filter(|r| r.0 == pair)
            .map(|r| median(&r.2))
            .fold(f64::INFINITY, f64::min)
    };
    let max_rss = runs
        .iter()
        .filter(|r| r.1 == 8)
        .map(|r| r.3)
        .max()
        .unwrap_or(0) as f64
        / 1024.0;
    lines.push(String::new());
    lines.push("| check | measured | target |".into());
    lines.push("|---|---|---|".into());
    let mut check = |what: String, value: f64, target: f64| {
        if value.is_finite() && value > 0.0 {
            let ok = if value >= target { "met" } else { "NOT met" };
            lines.push(format!("| {what} | {value:.2}x | >= {target}x ({ok}) |"));
        }
    };
    check(
        "pg-pg Ferry (best channels) vs COPY pipe".into(),
        copy_pipe / best("pg-pg"),
        1.0,
    );
    check(
        "my-pg Ferry vs COPY pipe".into(),
        copy_pipe / best("my-pg"),
        0.8,
    );
    check(
        "pg-my Ferry vs LOAD DATA".into(),
        load_data / best("pg-my"),
        0.9,
    );
    check(
        "my-my Ferry vs LOAD DATA".into(),
        load_data / best("my-my"),
        0.9,
    );
    for (pair, tool, secs) in &peer_secs {
        let target = if pair == "pg-my" { 10.0 } else { 3.0 };
        check(format!("{pair} Ferry vs {tool}"), secs / best(pair), target);
    }
    if max_rss > 0.0 {
        lines.push(format!(
            "| peak RSS at 8 channels, any pair | {max_rss:.0} MiB | <= 256 MiB ({}) |",
            if max_rss <= 256.0 { "met" } else { "NOT met" }
        ));
    }
    println!("{}", lines.join("\n"));
    if !a.keep {
        psql(
            "test",
            &format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"),
        )?;
        psql(
            "test",
            &format!("DROP DATABASE IF EXISTS {PEER_DB} WITH (FORCE)"),
        )?;
        mysql(&format!("DROP DATABASE IF EXISTS {DB}"))?;
    }
    Ok(())
}

/// pgloader (MySQL -> PostgreSQL) and sling (MySQL -> PostgreSQL, PostgreSQL -> MySQL).
fn peers(
    a: &Args,
    lines: &mut Vec<String>,
    row: RowFmt<'_>,
    copy_pipe: f64,
    load_data: f64,
) -> Res<Vec<(String, String, f64)>> {
    let mut out = Vec::new();
    let venv = std::env::var("FERRY_BENCH_VENV").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench-venv").to_string()
    });
    let load = std::env::temp_dir().join("ferry-bench.load");
    std::fs::write(
        &load,
        format!(
            "LOAD DATABASE FROM mysql://root@127.0.0.1:3306/{DB} INTO postgresql://postgres@127.0.0.1:5432/{PEER_DB}\n\
             WITH data only, truncate\n\
             INCLUDING ONLY TABLE NAMES MATCHING 'src'\n\
             ALTER SCHEMA '{DB}' RENAME TO 'public';\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    psql(PEER_DB, "TRUNCATE src")?;
    match timed(&format!("pgloader --quiet {}", load.display())) {
        Ok(secs) => {
            let got = psql(PEER_DB, "SELECT count(*) FROM src")?;
            eprintln!("pgloader: {secs:.2}s, {got} rows");
            lines.push(row("my-pg", "pgloader", "-", secs, None, Some(copy_pipe)));
            out.push(("my-pg".to_string(), "pgloader".to_string(), secs));
        }
        Err(e) => eprintln!("pgloader skipped: {e}"),
    }
    // The binary ships inside the PyPI package sling-linux-amd64; the `sling` wrapper would try
    // to download a matching one, which this network does not allow.
    let sling = std::fs::read_dir(format!("{venv}/lib"))
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|py| {
            py.path()
                .join("site-packages/sling_linux_amd64/bin/sling-linux-amd64")
        })
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if !Path::new(&sling).exists() {
        eprintln!("sling not installed under {venv}; run scripts/bench-peers.sh");
        return Ok(out);
    }
    let env = format!(
        "MYSQL_SRC='mysql://root:@127.0.0.1:3306/{DB}' PG_SRC='postgresql://postgres@127.0.0.1:5432/{DB}?sslmode=disable' \
         PG_PEER='postgresql://postgres@127.0.0.1:5432/{PEER_DB}?sslmode=disable' SLING_LOADED_AT_COLUMN=false"
    );
    psql(PEER_DB, "DROP TABLE IF EXISTS sling_dst")?;
    let secs = timed(&format!(
        "{env} {sling} run --src-conn MYSQL_SRC --src-stream {DB}.src --tgt-conn PG_PEER --tgt-object public.sling_dst --mode full-refresh"
    ))?;
    lines.push(row("my-pg", "sling", "-", secs, None, Some(copy_pipe)));
    out.push(("my-pg".to_string(), "sling".to_string(), secs));
    mysql(&format!("DROP TABLE IF EXISTS {DB}.sling_dst"))?;
    let secs = timed(&format!(
        "{env} {sling} run --src-conn PG_SRC --src-stream public.src --tgt-conn MYSQL_SRC --tgt-object {DB}.sling_dst --mode full-refresh"
    ))?;
    lines.push(row("pg-my", "sling", "-", secs, None, Some(load_data)));
    out.push(("pg-my".to_string(), "sling".to_string(), secs));
    let _ = a;
    Ok(out)
}
