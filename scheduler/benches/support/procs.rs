//! Real `ferry-scheduler` (and `ferry-agent`) processes for the scheduling benchmark: one
//! scheduler or a raft cluster of several on loopback, each with its own data folder and log,
//! the same master key, and a clock offset the benchmark chooses per start; their peak memory
//! from /proc; an admin client with the first admin's token.
//!
//! Optionally each scheduler runs under its own CPU budget (a cgroup v1 `cpu` quota): three
//! schedulers on one two-core machine otherwise compete for the same cores, which measures the
//! machine rather than replication. Equal budgets stand in for equal machines.

use anyhow::{Context as _, Result, anyhow, bail};
use ferry_proto::admin::v1::admin_service_client::AdminServiceClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The scheduler binary: from `FERRY_BIN_DIR` when set (a copy no other build can replace
/// mid-run), else the one cargo built for this benchmark.
pub fn scheduler_bin() -> PathBuf {
    match std::env::var_os("FERRY_BIN_DIR") {
        Some(dir) => PathBuf::from(dir).join("ferry-scheduler"),
        None => PathBuf::from(env!("CARGO_BIN_EXE_ferry-scheduler")),
    }
}

/// A workspace binary next to the scheduler's (built by `cargo build --release --bins`).
pub fn sibling_bin(name: &str) -> Result<PathBuf> {
    let path = scheduler_bin()
        .parent()
        .map(|d| d.join(name))
        .ok_or_else(|| anyhow!("no folder around the scheduler binary"))?;
    if !path.exists() {
        bail!(
            "{} is missing: build it first with `cargo build --release -p ferry-agent -p ferry-cli`",
            path.display()
        );
    }
    Ok(path)
}

/// Polls `f` every 50 ms until it returns `Some`, or fails after `timeout` naming `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process, killed when dropped.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
    /// The cgroup holding its CPU budget, removed when it is dropped.
    cgroup: Option<PathBuf>,
}

/// Where cgroup v1's `cpu` controller is mounted.
const CPU_CGROUPS: &str = "/sys/fs/cgroup/cpu";

impl Proc {
    pub fn spawn(bin: &Path, args: &[String], log: PathBuf, env: &[(&str, &str)]) -> Result<Self> {
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env("FERRY_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        Ok(Self {
            child,
            log,
            cgroup: None,
        })
    }

    /// Holds the process (its threads, and any it starts later) to `cores` CPUs' worth of time
    /// per 100 ms, in a cgroup of its own named `name`.
    pub fn limit_cpu(&mut self, cores: f64, name: &str) -> Result<()> {
        let root = Path::new(CPU_CGROUPS);
        if !root.join("cpu.cfs_quota_us").exists() {
            bail!(
                "--cpu-per-scheduler needs cgroup v1's cpu controller at {CPU_CGROUPS} (and root)"
            );
        }
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        self.cgroup = Some(dir.clone());
        let period = 100_000u64;
        let quota = (cores * period as f64).round().max(1000.0) as u64;
        std::fs::write(dir.join("cpu.cfs_period_us"), period.to_string())?;
        std::fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string())?;
        std::fs::write(dir.join("cgroup.procs"), self.child.id().to_string())
            .with_context(|| format!("move {} into {}", self.child.id(), dir.display()))?;
        Ok(())
    }

    /// CPU seconds (user and system) the process has used so far, from /proc.
    pub fn cpu_secs(&self) -> Result<f64> {
        let path = format!("/proc/{}/stat", self.child.id());
        let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        // The fields after the command name (which may hold spaces) in parentheses.
        let rest = text
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or_else(|| anyhow!("malformed {path}"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> Result<f64> {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| anyhow!("no field {i} in {path}"))
        };
        // utime and stime are the 14th and 15th fields; `rest` starts at the 3rd. They count
        // USER_HZ ticks, 100 a second on Linux.
        let hz = 100.0;
        Ok((ticks(11)? + ticks(12)?) / hz)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Peak resident memory (VmHWM) in KiB; an error, never 0, when /proc does not say.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        let path = format!("/proc/{}/status", self.child.id());
        let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        text.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .filter(|kib| *kib > 0)
            .ok_or_else(|| anyhow!("no VmHWM in {path}: cannot measure the scheduler's memory"))
    }

    /// SIGTERM and wait for a clean exit (sled flushed).
    pub fn stop(&mut self) -> Result<()> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let child = &mut self.child;
        wait_for(
            Duration::from_secs(60),
            "a process to stop on SIGTERM",
            || child.try_wait().ok().flatten(),
        )?;
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.cgroup.take() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Schedulers of one cluster (one of them: a single scheduler).
pub struct Schedulers {
    pub dir: PathBuf,
    pub urls: Vec<String>,
    listens: Vec<String>,
    pub procs: Vec<Option<Proc>>,
    starts: usize,
    pub token: String,
    /// Flags every scheduler gets besides the ones set here.
    pub extra: Vec<String>,
    /// Each scheduler's CPU budget in cores (see [`Proc::limit_cpu`]); none when `None`.
    pub cpu_budget: Option<f64>,
}

impl Schedulers {
    /// Chooses `n` loopback ports and writes a shared master key; starts nothing yet.
    pub fn new(dir: &Path, n: usize) -> Result<Self> {
        let held: Vec<std::net::TcpListener> = (0..n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<_>>()?;
        let listens: Vec<String> = held
            .iter()
            .map(|l| l.local_addr().map(|a| a.to_string()))
            .collect::<std::io::Result<_>>()?;
        drop(held);
        let key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(29).wrapping_add(7));
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(dir.join("master.key"), hex)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            urls: listens.iter().map(|l| format!("http://{l}")).collect(),
            listens,
            procs: (0..n).map(|_| None).collect(),
            starts: 0,
            token: String::new(),
            extra: Vec::new(),
            cpu_budget: None,
        })
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("sched-{}", i + 1))
    }

    /// Starts every scheduler with the clock shifted by `offset_secs`; waits until each serves
    /// and (first start) the first admin token is written.
    pub fn start(&mut self, offset_secs: i64) -> Result<()> {
        self.starts += 1;
        let n = self.urls.len();
        let peers: String = self
            .urls
            .iter()
            .enumerate()
            .map(|(i, u)| format!("{}={u}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        for i in 0..n {
            let id = i + 1;
            let addr = self.dir.join(format!("sched-{id}.addr"));
            let _ = std::fs::remove_file(&addr);
            let mut args: Vec<String> = vec![
                "--node-id".into(),
                id.to_string(),
                "--listen".into(),
                self.listens[i].clone(),
                "--data-dir".into(),
                self.data_dir(i).display().to_string(),
                "--master-key-file".into(),
                self.dir.join("master.key").display().to_string(),
                "--addr-file".into(),
                addr.display().to_string(),
                "--admin-token-file".into(),
                self.dir
                    .join(format!("admin-{id}.token"))
                    .display()
                    .to_string(),
                "--clock-offset-secs".into(),
                offset_secs.to_string(),
            ];
            args.extend(self.extra.iter().cloned());
            if n > 1 {
                args.extend(["--peers".into(), peers.clone()]);
                args.extend(["--advertise-url".into(), self.urls[i].clone()]);
            }
            let log = self.dir.join(format!("scheduler-{id}-{}.log", self.starts));
            let mut p = Proc::spawn(&scheduler_bin(), &args, log, &[])?;
            if let Some(cores) = self.cpu_budget {
                p.limit_cpu(
                    cores,
                    &format!("ferry-bench-{}-sched-{id}", std::process::id()),
                )?;
            }
            self.procs[i] = Some(p);
        }
        for i in 0..n {
            let addr = self.dir.join(format!("sched-{}.addr", i + 1));
            let p = self.procs[i]
                .as_mut()
                .ok_or_else(|| anyhow!("scheduler {} not started", i + 1))?;
            wait_for(Duration::from_secs(60), "a scheduler address file", || {
                if let Ok(Some(status)) = p.child.try_wait() {
                    return Some(Err(anyhow!(
                        "scheduler exited with {status}:\n{}",
                        p.log_text()
                    )));
                }
                addr.exists().then_some(Ok(()))
            })??;
        }
        if self.token.is_empty() {
            let dir = self.dir.clone();
            let token = wait_for(Duration::from_secs(60), "the first admin token", || {
                (1..=n).find_map(|id| {
                    std::fs::read_to_string(dir.join(format!("admin-{id}.token")))
                        .ok()
                        .filter(|t| !t.trim().is_empty())
                })
            })?;
            self.token = token.trim().to_string();
        }
        Ok(())
    }

    /// Stops every scheduler cleanly.
    pub fn stop(&mut self) -> Result<()> {
        for p in self.procs.iter_mut() {
            if let Some(mut p) = p.take() {
                p.stop()?;
            }
        }
        Ok(())
    }

    /// The index of the leading scheduler: the one whose admin API answers.
    pub async fn leader(&self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            for (i, url) in self.urls.iter().enumerate() {
                if let Ok(mut admin) = admin(url, &self.token).await
                    && admin
                        .list_groups(ferry_proto::admin::v1::ListGroupsRequest {})
                        .await
                        .is_ok()
                {
                    return Ok(i);
                }
            }
            if Instant::now() > deadline {
                bail!("no scheduler leads after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn proc(&self, i: usize) -> Result<&Proc> {
        self.procs[i]
            .as_ref()
            .ok_or_else(|| anyhow!("scheduler {} is not running", i + 1))
    }
}

/// Adds the bearer token to every admin call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub type Admin = AdminServiceClient<InterceptedService<Channel, Bearer>>;

/// An admin client of the scheduler at `url` with `token`.
pub async fn admin(url: &str, token: &str) -> Result<Admin> {
    let channel = Channel::from_shared(url.to_string())?.connect().await?;
    let bearer = Bearer(format!("Bearer {token}").parse()?);
    Ok(AdminServiceClient::with_interceptor(channel, bearer)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20))
}

/// The value of `key=` in the last line of `log` that contains `marker` and `key=`.
pub fn log_field(log: &str, marker: &str, key: &str) -> Option<String> {
    let needle = format!("{key}=");
    log.lines()
        .rev()
        .map(strip_ansi)
        .filter(|l| l.contains(marker))
        .find_map(|l| {
            let at = l.find(&needle)? + needle.len();
            let rest = &l[at..];
            let end = rest.find(' ').unwrap_or(rest.len());
            Some(rest[..end].trim_matches('"').to_string())
        })
}

/// `line` without terminal colour sequences.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
