//! `ferry quickstart`: the whole path on one machine in one command.
//!
//! It starts a single-node `ferry-scheduler` (embedded sled store) and one `ferry-agent` from
//! the same folder as this binary, registers the agent into a resource group with its token,
//! creates a CSV data source over a generated sample of orders and a SQLite warehouse, tests
//! both from the agent, runs a DataX-style sync job with live progress, and then checks that the
//! target holds exactly the source rows.

use crate::client::{Admin, connect, status};
use crate::follow::follow;
use crate::format::thousands;
use anyhow::{Context, anyhow, bail};
use ferry_proto::admin::v1 as pb;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Child processes stopped when dropped, so a failed quickstart leaves nothing running.
struct Procs(Vec<(String, Child)>);

impl Drop for Procs {
    fn drop(&mut self) {
        for (name, child) in self.0.iter_mut().rev() {
            stop(name, child);
        }
    }
}

fn stop(name: &str, child: &mut Child) {
    #[cfg(unix)]
    {
        // SIGTERM first: the scheduler flushes its store, the agent reports its attempts.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                println!("stopped {name}");
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    println!("stopped {name}");
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the ferry binary")?;
    let path = exe
        .parent()
        .map(|d| d.join(name))
        .ok_or_else(|| anyhow!("ferry binary has no folder"))?;
    if !path.exists() {
        bail!(
            "{} not found next to {}; build all binaries with `cargo build --bins`",
            path.display(),
            exe.display()
        );
    }
    Ok(path)
}

fn spawn(bin: &Path, args: &[&str], log: &Path) -> anyhow::Result<Child> {
    let out =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out.try_clone()?;
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))
}

const COLUMNS: &str = "id,customer,amount,status,created_at";

/// Writes the sample orders file; returns (rows, sum of ids, sum of amounts in cents).
fn write_sample(path: &Path, rows: u64) -> anyhow::Result<(u64, u64, i64)> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "{COLUMNS}")?;
    const STATUS: [&str; 4] = ["paid", "shipped", "delivered", "refunded"];
    const NAMES: [&str; 6] = [
        "Zhang Wei",
        "Li Na",
        "Ana García",
        "O'Brien, Pat",
        "Müller",
        "陈静",
    ];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let (mut id_sum, mut cents_sum) = (0u64, 0i64);
    for id in 1..=rows {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let cents = (x % 1_000_000) as i64;
        let name = NAMES[(x % NAMES.len() as u64) as usize];
        let name = if name.contains(',') {
            format!("\"{name}\"")
        } else {
            name.to_string()
        };
        let day = 1 + (x >> 20) % 28;
        let second = (x >> 8) % 86_400;
        writeln!(
            f,
            "{id},{name},{}.{:02},{},2026-11-{day:02} {:02}:{:02}:{:02}",
            cents / 100,
            cents % 100,
            STATUS[(x % 4) as usize],
            second / 3600,
            second / 60 % 60,
            second % 60
        )?;
        id_sum += id;
        cents_sum += cents;
    }
    f.flush()?;
    Ok((rows, id_sum, cents_sum))
}

const JOB: &str = r#"{
  "job": {
    "setting": {
      "speed": { "channel": 2 },
      "errorLimit": { "record": 0 }
    },
    "content": [
      {
        "reader": {
          "name": "txtfilereader",
          "parameter": {
            "datasource": "sample_orders",
            "path": ["orders.csv"],
            "skipHeader": true,
            "fieldDelimiter": ",",
            "column": [
              { "index": 0, "type": "long" },
              { "index": 1, "type": "string" },
              { "index": 2, "type": "string" },
              { "index": 3, "type": "string" },
              { "index": 4, "type": "date", "format": "yyyy-MM-dd HH:mm:ss" }
            ]
          }
        },
        "writer": {
          "name": "sqlitewriter",
          "parameter": {
            "datasource": "warehouse",
            "table": "orders",
            "column": ["id", "customer", "amount", "status", "created_at"],
            "preSql": [
              "CREATE TABLE IF NOT EXISTS @table (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, amount TEXT NOT NULL, status TEXT NOT NULL, created_at TEXT NOT NULL, bizdate TEXT)",
              "DELETE FROM @table"
            ],
            "postSql": ["UPDATE @table SET bizdate = '${bizdate}'"]
          }
        }
      }
    ]
  }
}
"#;

async fn wait_online(admin: &mut Admin, group: &str) -> anyhow::Result<pb::AgentInfo> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let groups = admin
            .list_groups(pb::ListGroupsRequest {})
            .await
            .map_err(status)?
            .into_inner();
        if let Some(a) = groups
            .groups
            .iter()
            .filter(|g| g.name == group)
            .flat_map(|g| g.agents.iter())
            .find(|a| a.state == "online")
        {
            return Ok(a.clone());
        }
        if Instant::now() > deadline {
            bail!("the agent did not come online within 60 s; see its log");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the quickstart; returns the exit code.
pub async fn run(workdir: &Path, rows: u64, keep_running: bool) -> anyhow::Result<i32> {
    let scheduler_bin = sibling("ferry-scheduler")?;
    let agent_bin = sibling("ferry-agent")?;
    std::fs::create_dir_all(workdir)?;
    let workdir = std::path::absolute(workdir)?;
    for old in [
        "scheduler",
        "agent",
        "sample",
        "warehouse.db",
        "scheduler.addr",
        "admin.token",
    ] {
        let p = workdir.join(old);
        if p.is_dir() {
            std::fs::remove_dir_all(&p)?;
        } else if p.exists() {
            std::fs::remove_file(&p)?;
        }
    }
    let sample_dir = workdir.join("sample");
    std::fs::create_dir_all(&sample_dir)?;
    let (n, id_sum, cents_sum) = write_sample(&sample_dir.join("orders.csv"), rows)?;
    println!(
        "sample: {} orders in {}",
        thousands(n),
        sample_dir.join("orders.csv").display()
    );

    let mut procs = Procs(Vec::new());
    let addr_file = workdir.join("scheduler.addr");
    let sched_dir = workdir.join("scheduler");
    let child = spawn(
        &scheduler_bin,
        &[
            "--data-dir",
            &sched_dir.to_string_lossy(),
            "--listen",
            "127.0.0.1:0",
            "--addr-file",
            &addr_file.to_string_lossy(),
            "--admin-token-file",
            &workdir.join("admin.token").to_string_lossy(),
        ],
        &workdir.join("scheduler.log"),
    )?;
    procs.0.push(("ferry-scheduler".into(), child));
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        if let Ok(a) = std::fs::read_to_string(&addr_file) {
            break a;
        }
        if let Some((_, c)) = procs.0.last_mut()
            && let Ok(Some(code)) = c.try_wait()
        {
            bail!(
                "ferry-scheduler exited ({code}); see {}",
                workdir.join("scheduler.log").display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "ferry-scheduler did not start within 30 s; see {}",
                workdir.join("scheduler.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let url = format!("http://{}", addr.trim());
    println!(
        "scheduler: {url} (data in {}, log in scheduler.log)",
        sched_dir.display()
    );
    // The fresh scheduler created its first admin token; the quickstart uses it.
    let token = std::fs::read_to_string(workdir.join("admin.token"))
        .context("the scheduler did not write its first admin token")?;
    let mut admin = connect(
        std::slice::from_ref(&url),
        &Default::default(),
        crate::client::Auth::new(Some(token.trim()), None)?,
    )
    .await?;
    println!(
        "admin token in {} (log in with: ferry login --scheduler {url} --token-stdin < {})",
        workdir.join("admin.token").display(),
        workdir.join("admin.token").display()
    );

    let group = admin
        .create_group(pb::CreateGroupRequest {
            name: "local".into(),
        })
        .await
        .map_err(status)?
        .into_inner();
    println!("resource group: local (registration token issued)");
    let agent_dir = workdir.join("agent");
    let child = spawn(
        &agent_bin,
        &[
            "--scheduler",
            &url,
            "--group",
            "local",
            "--token",
            &group.registration_token,
            "--data-dir",
            &agent_dir.to_string_lossy(),
        ],
        &workdir.join("agent.log"),
    )?;
    procs.0.push(("ferry-agent".into(), child));
    let agent = wait_online(&mut admin, "local").await?;
    println!(
        "agent: {} on {} online ({} slots, log in agent.log)",
        agent.id, agent.hostname, agent.slots
    );

    let warehouse = workdir.join("warehouse.db");
    for (name, kind, path) in [
        ("sample_orders", "csv", &sample_dir),
        ("warehouse", "sqlite", &warehouse),
    ] {
        admin
            .add_data_source(pb::AddDataSourceRequest {
                name: name.into(),
                r#type: kind.into(),
                fields: [("path".to_string(), path.to_string_lossy().into_owned())]
                    .into_iter()
                    .collect(),
                secrets: Default::default(),
                keep_secrets: false,
                groups: vec![],
            })
            .await
            .map_err(status)?;
        println!("data source: {name} ({kind}) -> {}", path.display());
    }
    // The warehouse file does not exist until the first write; test the sample only.
    let test = admin
        .test_data_source(pb::TestDataSourceRequest {
            name: "sample_orders".into(),
            group: "local".into(),
            timeout_ms: 10_000,
            ..Default::default()
        })
        .await
        .map_err(status)?
        .into_inner();
    for r in &test.reports {
        println!(
            "connectivity: sample_orders from {}: {} ({} ms) {}",
            r.hostname,
            if r.reachable {
                "reachable"
            } else {
                "UNREACHABLE"
            },
            r.latency_ms,
            r.message
        );
    }

    let job_path = workdir.join("orders_sync.json");
    std::fs::write(&job_path, JOB)?;
    let task = admin
        .create_task(pb::CreateTaskRequest {
            name: "orders_sync".into(),
            group: "local".into(),
            job_json: JOB.into(),
            ..Default::default()
        })
        .await
        .map_err(status)?
        .into_inner();
    println!(
        "task: {} v{} from {}",
        task.name,
        task.version,
        job_path.display()
    );
    let inst = admin
        .run_task(pb::RunTaskRequest {
            name: "orders_sync".into(),
            bizdate: String::new(),
        })
        .await
        .map_err(status)?
        .into_inner();
    println!("run: instance {} (bizdate {})", inst.id, inst.bizdate);
    let done = follow(&mut admin, &inst.id).await?;
    if done.state != "success" {
        println!(
            "the sync did not succeed; the log is above and in `ferry instance logs {}`",
            inst.id
        );
        return Ok(1);
    }

    let (count, ids, cents) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, u64, i64)> {
            let conn = rusqlite::Connection::open(&warehouse)?;
            let (count, ids): (i64, i64) = conn.query_row(
                "SELECT count(*), coalesce(sum(id), 0) FROM orders",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let mut stmt = conn.prepare("SELECT amount FROM orders")?;
            let mut cents = 0i64;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let text: String = r.get(0)?;
                let (whole, frac) = text.split_once('.').unwrap_or((&text, "0"));
                cents += whole.parse::<i64>()? * 100 + frac.parse::<i64>()?;
            }
            Ok((count as u64, ids as u64, cents))
        })
        .await??;
    if (count, ids, cents) != (n, id_sum, cents_sum) {
        println!(
            "MISMATCH: target has {count} rows (id sum {ids}, amount {cents}) but the source has {n} (id sum {id_sum}, amount {cents_sum})"
        );
        return Ok(1);
    }
    println!(
        "verified: the warehouse holds exactly the {} source rows (id and amount checksums match)",
        thousands(count)
    );
    println!();
    if keep_running {
        println!(
            "web console: {url}/console/ (log in with the admin token in {})",
            workdir.join("admin.token").display()
        );
        println!("scheduler and agent keep running; in another terminal try:");
        println!("  ferry --scheduler {url} group list");
        println!("  ferry --scheduler {url} task logs orders_sync");
        println!("  ferry --scheduler {url} task run orders_sync --follow");
        println!("press Ctrl-C to stop them");
        let _ = tokio::signal::ctrl_c().await;
    } else {
        println!(
            "to explore with the CLI or the web console afterwards, rerun with --keep-running"
        );
    }
    drop(procs);
    Ok(0)
}
