//! Test harness for Ferry's end-to-end tests: starts the real `ferry-scheduler` and
//! `ferry-agent` binaries on ephemeral ports with their own temporary folders, runs the real
//! `ferry` CLI against them, and stops everything when dropped.
//!
//! The binaries come from the same target folder as the test executable; the test command
//! builds them first (`cargo build --bins`).

pub mod browser;
pub mod db;
pub mod ha;
pub mod http;
pub mod netns;
pub mod proxy;
pub mod webhook;

use anyhow::{Context, Result, anyhow, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Path of a workspace binary next to the test executable's target folder.
pub fn bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/debug/deps/e2e-<hash> -> target/debug/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("unexpected test executable location {}", exe.display()))?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build the binaries first with `cargo build --bins` (scripts/test.sh does)",
            path.display()
        );
    }
    Ok(path)
}

/// Polls `f` until it returns `Some`, or fails after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .arg(sig)
        .arg(child.id().to_string())
        .status();
}

/// A running child process that is killed when dropped.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(bin: &Path, args: &[String], log: PathBuf) -> Result<Self> {
        Self::spawn_in(None, bin, args, log)
    }

    /// Spawns `bin`, inside network namespace `netns` when given (`ip netns exec` execs the
    /// program, so the pid is the program's own).
    pub fn spawn_in(
        netns: Option<&str>,
        bin: &Path,
        args: &[String],
        log: PathBuf,
    ) -> Result<Self> {
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = cmd
            .args(args)
            .env("FERRY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        Ok(Self { child, log })
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> Result<()> {
        signal(&self.child, "-TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
        bail!("process did not stop on SIGTERM within 15 s")
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let child = &mut self.child;
        wait_for(timeout, "process exit", || child.try_wait().ok().flatten())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Result of one CLI run.
#[derive(Debug)]
pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Fails with both outputs unless the command exited 0.
    pub fn ok(self) -> Result<Self> {
        if self.code != 0 {
            bail!(
                "command failed with {}:\nstdout:\n{}\nstderr:\n{}",
                self.code,
                self.stdout,
                self.stderr
            );
        }
        Ok(self)
    }
}

/// One scheduler, its agents, and a scratch folder for everything they write.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub scheduler: Option<Proc>,
    pub agents: Vec<Proc>,
    pub url: String,
    pub port: u16,
    /// The scheduler's extra flags, kept for restarts.
    extra: Vec<String>,
    /// Flags every CLI run and agent gets (`--ca-cert` for a TLS scheduler).
    pub client_args: Vec<String>,
    /// The first admin's API token, which CLI runs use unless told otherwise.
    pub token: String,
    /// The network namespace CLI runs and agents start in (a test LAN), if any.
    pub netns: Option<String>,
}

/// Flags that make liveness quick enough for tests.
const FAST: &[&str] = &["--offline-after-secs", "3"];

impl Cluster {
    /// Starts a scheduler on an ephemeral port.
    pub fn start() -> Result<Self> {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Result<Self> {
        Self::start_listen("127.0.0.1:0", extra)
    }

    /// Starts a scheduler listening on `listen` (an address of a test network, say).
    pub fn start_listen(listen: &str, extra: &[&str]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut c = Self {
            dir,
            scheduler: None,
            agents: Vec::new(),
            url: String::new(),
            port: 0,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            client_args: Vec::new(),
            token: String::new(),
            netns: None,
        };
        c.start_scheduler(listen)?;
        Ok(c)
    }

    /// A scratch folder, CLI and agents without a scheduler of its own: [`ha::Replicated`]
    /// starts several and points `url` at all of them.
    pub fn without_scheduler() -> Result<Self> {
        Ok(Self {
            dir: tempfile::tempdir()?,
            scheduler: None,
            agents: Vec::new(),
            url: String::new(),
            port: 0,
            extra: Vec::new(),
            client_args: Vec::new(),
            token: String::new(),
            netns: None,
        })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn start_scheduler(&mut self, listen: &str) -> Result<()> {
        let addr_file = self.path("scheduler.addr");
        let _ = std::fs::remove_file(&addr_file);
        let mut args: Vec<String> = vec![
            "--data-dir".into(),
            self.path("scheduler").display().to_string(),
            "--listen".into(),
            listen.into(),
            "--addr-file".into(),
            addr_file.display().to_string(),
            "--admin-token-file".into(),
            self.path("admin.token").display().to_string(),
        ];
        args.extend(FAST.iter().map(|s| s.to_string()));
        args.extend(self.extra.iter().cloned());
        let n = std::fs::read_dir(self.dir.path())?.count();
        let mut proc = Proc::spawn(
            &bin("ferry-scheduler")?,
            &args,
            self.path(&format!("scheduler-{n}.log")),
        )?;
        let addr = wait_for(Duration::from_secs(30), "scheduler address file", || {
            if let Ok(Some(status)) = proc.child.try_wait() {
                return Some(Err(anyhow!(
                    "scheduler exited with {status}:\n{}",
                    proc.log_text()
                )));
            }
            std::fs::read_to_string(&addr_file).ok().map(Ok)
        })??;
        let addr = addr.trim().to_string();
        self.port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow!("bad address {addr}"))?;
        let scheme = if self.extra.iter().any(|a| a == "--tls-cert") {
            "https"
        } else {
            "http"
        };
        // The test certificate names "localhost".
        let host = if scheme == "https" {
            addr.replace("127.0.0.1", "localhost")
        } else {
            addr.clone()
        };
        self.url = format!("{scheme}://{host}");
        self.token = std::fs::read_to_string(self.path("admin.token"))
            .context("the scheduler wrote no admin token")?
            .trim()
            .to_string();
        self.scheduler = Some(proc);
        Ok(())
    }

    /// Kills the scheduler with SIGKILL and starts it again on the same port and data.
    pub fn crash_and_restart_scheduler(&mut self) -> Result<()> {
        if let Some(mut s) = self.scheduler.take() {
            s.kill9();
        }
        let listen = format!("127.0.0.1:{}", self.port);
        self.start_scheduler(&listen)
    }

    /// Runs the `ferry` CLI against this cluster.
    pub fn ferry(&self, args: &[&str]) -> Result<CliOutput> {
        self.ferry_stdin(args, None)
    }

    pub fn ferry_stdin(&self, args: &[&str], stdin: Option<&str>) -> Result<CliOutput> {
        self.ferry_as(&self.token.clone(), args, stdin)
    }

    /// Runs the CLI with another API token (empty: none).
    pub fn ferry_as(&self, token: &str, args: &[&str], stdin: Option<&str>) -> Result<CliOutput> {
        use std::io::Write;
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("ferry")?);
                c
            }
            None => Command::new(bin("ferry")?),
        };
        // Hermetic: no credentials of the person running the tests.
        cmd.env("XDG_CONFIG_HOME", self.path("cli-config"))
            .env("FERRY_TOKEN", token)
            .env_remove("FERRY_WORKSPACE");
        cmd.arg("--scheduler")
            .arg(&self.url)
            .args(&self.client_args)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd.spawn()?;
        if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
            input.write_all(text.as_bytes())?;
        }
        Ok(CliOutput::from(child.wait_with_output()?))
    }

    /// Creates a group through the CLI and returns its registration token.
    pub fn create_group(&self, name: &str) -> Result<String> {
        let out = self.ferry(&["group", "create", name])?.ok()?;
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix("registration token (shown once): "))
            .map(|t| t.trim().to_string())
            .ok_or_else(|| anyhow!("no token in output:\n{}", out.stdout))
    }

    /// Starts an agent with its own data folder `agent-<name>`.
    pub fn start_agent(&mut self, name: &str, group: &str, token: &str) -> Result<usize> {
        let url = self.url.clone();
        self.start_agent_with(name, group, token, &url, &[])
    }

    /// Starts an agent reaching the scheduler at `url` (a proxy, say), with extra flags.
    pub fn start_agent_with(
        &mut self,
        name: &str,
        group: &str,
        token: &str,
        url: &str,
        extra: &[&str],
    ) -> Result<usize> {
        let mut args: Vec<String> = vec![
            "--scheduler".into(),
            url.to_string(),
            "--group".into(),
            group.into(),
            "--token".into(),
            token.into(),
            "--data-dir".into(),
            self.path(&format!("agent-{name}")).display().to_string(),
            "--heartbeat-secs".into(),
            "1".into(),
            "--progress-ms".into(),
            "300".into(),
        ];
        args.extend(self.client_args.iter().cloned());
        args.extend(extra.iter().map(|s| s.to_string()));
        let n = self.agents.len();
        let proc = Proc::spawn_in(
            self.netns.as_deref(),
            &bin("ferry-agent")?,
            &args,
            self.path(&format!("agent-{name}-{n}.log")),
        )?;
        self.agents.push(proc);
        Ok(n)
    }

    /// Starts an agent inside network namespace `netns`, reaching the scheduler at `url`.
    pub fn start_agent_in(
        &mut self,
        netns: &str,
        name: &str,
        group: &str,
        token: &str,
        url: &str,
    ) -> Result<usize> {
        let mut args: Vec<String> = vec![
            "--scheduler".into(),
            url.to_string(),
            "--group".into(),
            group.into(),
            "--token".into(),
            token.into(),
            "--data-dir".into(),
            self.path(&format!("agent-{name}")).display().to_string(),
            "--heartbeat-secs".into(),
            "1".into(),
        ];
        args.extend(self.client_args.iter().cloned());
        let n = self.agents.len();
        let proc = Proc::spawn_in(
            Some(netns),
            &bin("ferry-agent")?,
            &args,
            self.path(&format!("agent-{name}-{n}.log")),
        )?;
        self.agents.push(proc);
        Ok(n)
    }

    /// The agent id saved in `agent-<name>/agent.json`.
    pub fn agent_id(&self, name: &str) -> Result<String> {
        let text = std::fs::read_to_string(self.path(&format!("agent-{name}/agent.json")))?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        v["agent_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no agent_id in agent.json"))
    }

    /// Kills the scheduler with SIGKILL and leaves it down.
    pub fn crash_scheduler(&mut self) {
        if let Some(mut s) = self.scheduler.take() {
            s.kill9();
        }
    }

    /// Starts the scheduler again on the same port, data and flags.
    pub fn restart_scheduler(&mut self) -> Result<()> {
        let host = self
            .url
            .split("://")
            .nth(1)
            .and_then(|a| a.rsplit_once(':'))
            .map(|(h, _)| h.replace("localhost", "127.0.0.1"))
            .unwrap_or_else(|| "127.0.0.1".into());
        let listen = format!("{host}:{}", self.port);
        self.start_scheduler(&listen)
    }

    /// Waits until `ferry instance show` reports a final state; returns the output.
    pub fn wait_final(&self, id: &str, timeout: Duration) -> Result<String> {
        wait_for(timeout, &format!("instance {id} to end"), || {
            let out = self.ferry(&["instance", "show", id]).ok()?;
            ["state: success", "state: failed", "state: killed"]
                .iter()
                .any(|s| out.stdout.contains(s))
                .then_some(out.stdout)
        })
    }

    /// Waits until `ferry instance show` prints `text`; returns the output.
    pub fn wait_instance(&self, id: &str, text: &str, timeout: Duration) -> Result<String> {
        wait_for(timeout, &format!("instance {id} to show {text:?}"), || {
            let out = self.ferry(&["instance", "show", id]).ok()?;
            out.stdout.contains(text).then_some(out.stdout)
        })
    }

    /// Starts an agent with no group and token, as someone who skipped the install command would.
    pub fn start_agent_without_token(&mut self, name: &str) -> Result<usize> {
        let args: Vec<String> = vec![
            "--scheduler".into(),
            self.url.clone(),
            "--data-dir".into(),
            self.path(&format!("agent-{name}")).display().to_string(),
        ];
        let n = self.agents.len();
        let proc = Proc::spawn(
            &bin("ferry-agent")?,
            &args,
            self.path(&format!("agent-{name}-{n}.log")),
        )?;
        self.agents.push(proc);
        Ok(n)
    }

    /// A scheduler with group `group` and one online agent `a1` in it; also returns the group's
    /// registration token.
    pub fn start_with_agent(group: &str) -> Result<(Self, String)> {
        let mut c = Self::start()?;
        let token = c.create_group(group)?;
        c.start_agent("a1", group, &token)?;
        c.wait_online(group, 1)?;
        Ok((c, token))
    }

    /// Adds the data sources `files` (a CSV folder) and `wh` (a SQLite database).
    pub fn add_path_datasources(&self, files: &Path, db: &Path) -> Result<()> {
        for (name, kind, path) in [("files", "csv", files), ("wh", "sqlite", db)] {
            self.ferry(&[
                "datasource",
                "add",
                name,
                "--type",
                kind,
                "--path",
                &path.display().to_string(),
            ])?
            .ok()?;
        }
        Ok(())
    }

    /// Waits until `count` agents of `group` are online.
    pub fn wait_online(&self, group: &str, count: usize) -> Result<()> {
        wait_for(Duration::from_secs(30), "agents online", || {
            let out = self.ferry(&["group", "list"]).ok()?;
            let online = out
                .stdout
                .lines()
                .filter(|l| l.starts_with(&format!("{group} ")) && l.trim_end().ends_with("online"))
                .count();
            (online >= count).then_some(())
        })
    }

    /// Writes a job file into the scratch folder and returns its path.
    pub fn job_file(&self, name: &str, json: &str) -> Result<String> {
        let p = self.path(name);
        std::fs::write(&p, json)?;
        Ok(p.display().to_string())
    }

    /// The instance id printed by `ferry task run`.
    pub fn instance_id(out: &CliOutput) -> Result<String> {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix("instance "))
            .and_then(|l| l.split_whitespace().next())
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no instance id in:\n{}", out.stdout))
    }
}

/// Reads a DataX-shaped job file from the repository's fixtures (`tests/fixtures/datax`).
pub fn datax_fixture(name: &str) -> Result<String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/datax")
        .join(name);
    std::fs::read_to_string(&p).with_context(|| format!("read {}", p.display()))
}

/// Writes a CSV file of `rows` numbered orders; returns its path.
pub fn write_orders_csv(dir: &Path, name: &str, rows: u64) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    let mut w = csv::Writer::from_path(&path)?;
    w.write_record(["id", "name", "amount"])?;
    for i in 1..=rows {
        w.write_record([
            i.to_string(),
            format!("customer \"{i}\", ünïcode 🚢"),
            format!("{}.{:02}", i * 7 % 1000, i % 100),
        ])?;
    }
    w.flush()?;
    Ok(path)
}

/// Count and sum of ids of a SQLite table.
pub fn sqlite_count(db: &Path, table: &str) -> Result<(i64, i64)> {
    let conn = rusqlite::Connection::open(db)?;
    Ok(conn.query_row(
        &format!("SELECT count(*), coalesce(sum(id),0) FROM \"{table}\""),
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

/// A short suffix no other test run uses at the same time (time and process id), for names of
/// databases, tables and namespaces.
pub fn unique_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", nanos & 0xffff_ffff_ffff, std::process::id())
}
