//! Shell tasks: a script the scheduler sends, run next to the data.
//!
//! Shell runs code on servers inside private networks, so it is off unless both sides allow it:
//! the resource group (`ferry group set G --allow-shell on`, checked by the scheduler) and this
//! agent (`--shell` to run as the agent's own user, or `--shell-user USER` to run as another OS
//! user, which needs the agent to run as root). The script gets a clean environment — a fixed
//! PATH, its own HOME and working folder, and its parameters as `FERRY_PARAM_<name>` — so
//! nothing of the agent's environment (tokens, credentials) leaks into it. Its standard output
//! and error stream into the attempt's log line by line; killing the attempt stops the script's
//! whole process group.

use crate::sync::JobLog;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

/// How this agent runs shell tasks.
#[derive(Debug, Clone, Default)]
pub struct ShellConfig {
    pub enabled: bool,
    /// Run scripts as this OS user (via `runuser`), not the agent's.
    pub run_as: Option<String>,
    /// Where each attempt gets its working folder.
    pub work_dir: PathBuf,
}

/// Why a shell task did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error(
        "this agent does not run shell tasks; start it with --shell (as its own user) or --shell-user USER"
    )]
    Disabled,
    #[error("cannot prepare the script: {0}")]
    Prepare(String),
    #[error("cannot start the script: {0}")]
    Start(String),
    #[error("the script exited with status {0}")]
    Exit(i32),
    #[error("the script was stopped by signal {0}")]
    Signal(String),
    #[error("killed: {0}")]
    Killed(String),
}

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn prepare(dir: &Path, script: &str, run_as: Option<&str>) -> Result<PathBuf, ShellError> {
    use std::io::Write;
    let err = |e: std::io::Error| ShellError::Prepare(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(err)?;
    let path = dir.join("script.sh");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o700);
    }
    let mut f = opts.open(&path).map_err(err)?;
    f.write_all(script.as_bytes()).map_err(err)?;
    if let Some(user) = run_as {
        let status = std::process::Command::new("chown")
            .arg("-R")
            .arg(user)
            .arg(dir)
            .status()
            .map_err(|e| ShellError::Prepare(format!("chown to {user}: {e}")))?;
        if !status.success() {
            return Err(ShellError::Prepare(format!(
                "cannot hand {} to user {user} (does the user exist, does the agent run as root?)",
                dir.display()
            )));
        }
    }
    Ok(path)
}

/// Sends `signal` to the process group `pgid` (the script and everything it started).
fn signal_group(pgid: u32, signal: &str) {
    if pgid == 0 {
        return;
    }
    let _ = std::process::Command::new("kill")
        .args(["-s", signal, "--"])
        .arg(format!("-{pgid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Runs `script` for attempt `attempt_id`, streaming its output to `log`, until it ends or
/// `cancel` fires.
pub async fn run(
    cfg: &ShellConfig,
    attempt_id: &str,
    script: &str,
    env: &HashMap<String, String>,
    log: &JobLog,
    cancel: &CancellationToken,
) -> Result<(), ShellError> {
    if !cfg.enabled {
        return Err(ShellError::Disabled);
    }
    let dir = cfg.work_dir.join(attempt_id);
    let path = prepare(&dir, script, cfg.run_as.as_deref())?;
    let mut cmd = match &cfg.run_as {
        Some(user) => {
            let mut c = tokio::process::Command::new("runuser");
            c.args(["-u", user, "--", "bash"]).arg(&path);
            c
        }
        None => {
            let mut c = tokio::process::Command::new("bash");
            c.arg(&path);
            c
        }
    };
    cmd.env_clear()
        .env("PATH", PATH)
        .env("HOME", &dir)
        .env("LANG", "C.UTF-8")
        .env("FERRY_ATTEMPT_ID", attempt_id)
        .envs(env)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    log.info(format!(
        "running the shell script ({} bytes) as {}",
        script.len(),
        cfg.run_as.as_deref().unwrap_or("the agent's user")
    ));
    let mut child = cmd.spawn().map_err(|e| ShellError::Start(e.to_string()))?;
    let pgid = child.id().unwrap_or(0);
    let out = child.stdout.take();
    let err = child.stderr.take();
    let (l1, l2) = (log.clone(), log.clone());
    let stdout = tokio::spawn(async move {
        if let Some(o) = out {
            let mut lines = BufReader::new(o).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                l1.info(line);
            }
        }
    });
    let stderr = tokio::spawn(async move {
        if let Some(e) = err {
            let mut lines = BufReader::new(e).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                l2.warn(line);
            }
        }
    });
    let result = tokio::select! {
        status = child.wait() => status.map_err(|e| ShellError::Start(e.to_string())),
        _ = cancel.cancelled() => {
            // The whole group: a script's children must not outlive a kill.
            signal_group(pgid, "TERM");
            match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    signal_group(pgid, "KILL");
                    let _ = child.wait().await;
                }
            }
            Err(ShellError::Killed("the attempt was stopped".into()))
        }
    };
    let _ = stdout.await;
    let _ = stderr.await;
    let _ = std::fs::remove_dir_all(&dir);
    let status = result?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(ShellError::Exit(code)),
        None => {
            #[cfg(unix)]
            {
                use std::os::unix::process::ExitStatusExt;
                Err(ShellError::Signal(
                    status.signal().map(|s| s.to_string()).unwrap_or_default(),
                ))
            }
            #[cfg(not(unix))]
            {
                Err(ShellError::Signal(String::new()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{JobLog, LogEntry};
    use tokio::sync::mpsc;

    fn setup() -> (
        ShellConfig,
        JobLog,
        mpsc::UnboundedReceiver<LogEntry>,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cfg = ShellConfig {
            enabled: true,
            run_as: None,
            work_dir: dir.path().to_path_buf(),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        (cfg, JobLog::new(tx), rx, dir)
    }

    fn lines(rx: &mut mpsc::UnboundedReceiver<LogEntry>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(l) = rx.try_recv() {
            out.push(l.message);
        }
        out
    }

    #[tokio::test]
    async fn runs_with_its_parameters_and_a_clean_environment() {
        let (cfg, log, mut rx, _d) = setup();
        let env = HashMap::from([("FERRY_PARAM_bizdate".to_string(), "20261124".to_string())]);
        // SAFETY-free way to prove the agent's environment does not leak: a variable of this
        // test process is not seen by the script.
        let r = run(
            &cfg,
            "a1",
            "echo day=$FERRY_PARAM_bizdate; echo home=${CARGO:-unset}; echo oops >&2",
            &env,
            &log,
            &CancellationToken::new(),
        )
        .await;
        assert!(r.is_ok(), "{r:?}");
        let out = lines(&mut rx);
        assert!(out.contains(&"day=20261124".to_string()), "{out:?}");
        assert!(out.contains(&"home=unset".to_string()), "{out:?}");
        assert!(out.contains(&"oops".to_string()), "{out:?}");
    }

    #[tokio::test]
    async fn a_failing_script_reports_its_status() {
        let (cfg, log, _rx, _d) = setup();
        let r = run(
            &cfg,
            "a2",
            "exit 3",
            &HashMap::new(),
            &log,
            &CancellationToken::new(),
        )
        .await;
        assert!(matches!(r, Err(ShellError::Exit(3))), "{r:?}");
    }

    #[tokio::test]
    async fn a_kill_stops_the_whole_process_group() {
        let (cfg, log, _rx, d) = setup();
        let marker = d.path().join("still-running");
        let script = format!("(sleep 3; touch {}) & sleep 30", marker.display());
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            c2.cancel();
        });
        let r = run(&cfg, "a3", &script, &HashMap::new(), &log, &cancel).await;
        assert!(matches!(r, Err(ShellError::Killed(_))), "{r:?}");
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!marker.exists(), "a child of the script outlived the kill");
    }

    #[tokio::test]
    async fn disabled_unless_the_agent_allows_it() {
        let (mut cfg, log, _rx, _d) = setup();
        cfg.enabled = false;
        let r = run(
            &cfg,
            "a4",
            "true",
            &HashMap::new(),
            &log,
            &CancellationToken::new(),
        )
        .await;
        assert!(matches!(r, Err(ShellError::Disabled)));
    }
}
