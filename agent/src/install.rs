//! `ferry-agent install` and `uninstall`: turn a server into an agent of a resource group with
//! one command, and back.
//!
//! Install registers first, so a wrong token or an unreachable scheduler fails before anything is
//! written; then it writes the agent's settings (an environment file, readable by root and the
//! agent's user only), a systemd unit made from the template in `deploy/systemd/`, and starts
//! it. The registration token is not kept: the agent keeps its own credential in its data folder.
//! Uninstall tells the scheduler to forget the agent (its credential stops working), stops and
//! removes the unit and settings, and with `--purge` the data folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The unit template; `@BINARY@`, `@USER@`, `@ENV_FILE@` and `@DATA_DIR@` are filled in.
pub const UNIT_TEMPLATE: &str = include_str!("../../deploy/systemd/ferry-agent.service");

/// Name of the systemd unit install writes.
pub const UNIT_NAME: &str = "ferry-agent.service";

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot remove {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("invalid setting: {0}")]
    Invalid(String),
}

/// What install writes.
#[derive(Debug, Clone)]
pub struct InstallPlan {
    pub schedulers: Vec<String>,
    pub data_dir: PathBuf,
    pub slots: u32,
    pub labels: BTreeMap<String, String>,
    pub env_file: PathBuf,
    pub unit_dir: PathBuf,
    /// The OS user the agent runs as (created by `deploy/install-agent.sh`); `root` if none.
    pub user: String,
    pub binary: PathBuf,
    /// TLS files, passed through to the agent.
    pub ca_cert: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl InstallPlan {
    /// The environment file's text. Values are checked: a newline would inject a setting.
    pub fn env_text(&self) -> Result<String, InstallError> {
        let mut lines = vec![
            "# Written by `ferry-agent install`; read by the ferry-agent systemd unit.".to_string(),
            format!("FERRY_SCHEDULER={}", self.schedulers.join(",")),
            format!("FERRY_AGENT_DATA_DIR={}", self.data_dir.display()),
            format!("FERRY_AGENT_SLOTS={}", self.slots),
            "FERRY_LOG=info".to_string(),
        ];
        if !self.labels.is_empty() {
            let labels: Vec<String> = self
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            lines.push(format!("FERRY_AGENT_LABELS={}", labels.join(",")));
        }
        for (key, value) in [
            ("FERRY_CA_CERT", &self.ca_cert),
            ("FERRY_TLS_CERT", &self.tls_cert),
            ("FERRY_TLS_KEY", &self.tls_key),
        ] {
            if let Some(p) = value {
                lines.push(format!("{key}={}", p.display()));
            }
        }
        for l in &lines {
            if l.contains('\r') {
                return Err(InstallError::Invalid(format!("line break in {l:?}")));
            }
        }
        let text = lines.join("\n") + "\n";
        if text.lines().count() != lines.len() {
            return Err(InstallError::Invalid(
                "a setting contains a line break".into(),
            ));
        }
        Ok(text)
    }

    /// The unit file's text.
    pub fn unit_text(&self) -> String {
        UNIT_TEMPLATE
            .replace("@BINARY@", &self.binary.display().to_string())
            .replace("@USER@", &self.user)
            .replace("@ENV_FILE@", &self.env_file.display().to_string())
            .replace("@DATA_DIR@", &self.data_dir.display().to_string())
    }

    pub fn unit_path(&self) -> PathBuf {
        self.unit_dir.join(UNIT_NAME)
    }

    /// Writes the settings and the unit.
    pub fn write(&self) -> Result<(), InstallError> {
        write_file(&self.env_file, self.env_text()?.as_bytes(), 0o640)?;
        write_file(&self.unit_path(), self.unit_text().as_bytes(), 0o644)?;
        if self.user != "root" {
            // The agent's user reads its settings and owns its data folder.
            run(Command::new("chown")
                .arg(format!("root:{}", self.user))
                .arg(&self.env_file))?;
            run(Command::new("chown")
                .arg("-R")
                .arg(format!("{0}:{0}", self.user))
                .arg(&self.data_dir))?;
        }
        Ok(())
    }
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    use std::io::Write;
    let err = |source| InstallError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    let mut f = opts.open(&tmp).map_err(err)?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn run(cmd: &mut Command) -> Result<(), InstallError> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| InstallError::Command {
        command: shown.clone(),
        message: e.to_string(),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(InstallError::Command {
            command: shown,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Whether this machine runs systemd (so units can be started).
pub fn has_systemd() -> bool {
    Path::new("/run/systemd/system").exists()
}

/// Reloads systemd and enables and starts the unit.
pub fn start_unit() -> Result<(), InstallError> {
    run(Command::new("systemctl").arg("daemon-reload"))?;
    run(Command::new("systemctl").args(["enable", "--now", UNIT_NAME]))
}

/// Stops and disables the unit (if systemd runs), then removes it and the settings.
pub fn remove(unit_dir: &Path, env_file: &Path) -> Result<Vec<String>, InstallError> {
    let mut done = Vec::new();
    if has_systemd() {
        // Not installed as a unit (or already stopped) is fine.
        let _ = run(Command::new("systemctl").args(["disable", "--now", UNIT_NAME]));
        done.push(format!("stopped and disabled {UNIT_NAME}"));
    }
    for path in [unit_dir.join(UNIT_NAME), env_file.to_path_buf()] {
        match std::fs::remove_file(&path) {
            Ok(()) => done.push(format!("removed {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(InstallError::Remove { path, source }),
        }
    }
    if has_systemd() {
        let _ = run(Command::new("systemctl").arg("daemon-reload"));
    }
    Ok(done)
}

/// Parses `k=v,k2=v2` (or repeated flags) into labels.
pub fn parse_labels(items: &[String]) -> Result<BTreeMap<String, String>, InstallError> {
    let mut out = BTreeMap::new();
    for item in items.iter().flat_map(|s| s.split(',')) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| InstallError::Invalid(format!("label \"{item}\" is not key=value")))?;
        let ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        };
        if !ok(k.trim()) || !ok(v.trim()) {
            return Err(InstallError::Invalid(format!(
                "label \"{item}\": use letters, digits, '-', '_', '.', '/' (at most 63 each)"
            )));
        }
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(dir: &Path) -> InstallPlan {
        InstallPlan {
            schedulers: vec!["https://sched:7100".into()],
            data_dir: dir.join("data"),
            slots: 8,
            labels: parse_labels(&["zone=a,disk=ssd".into()]).unwrap_or_default(),
            env_file: dir.join("etc/agent.env"),
            unit_dir: dir.join("units"),
            user: "root".into(),
            binary: "/usr/local/bin/ferry-agent".into(),
            ca_cert: Some("/etc/ferry/ca.pem".into()),
            tls_cert: None,
            tls_key: None,
        }
    }

    #[test]
    fn writes_settings_and_a_unit_from_the_template() -> Result<(), InstallError> {
        let dir = tempfile::tempdir().map_err(|e| InstallError::Invalid(e.to_string()))?;
        let p = plan(dir.path());
        p.write()?;
        let env = std::fs::read_to_string(&p.env_file).unwrap_or_default();
        assert!(
            env.contains("FERRY_SCHEDULER=https://sched:7100\n"),
            "{env}"
        );
        assert!(
            env.contains("FERRY_AGENT_LABELS=disk=ssd,zone=a\n"),
            "{env}"
        );
        assert!(env.contains("FERRY_CA_CERT=/etc/ferry/ca.pem\n"), "{env}");
        assert!(!env.contains("TOKEN"), "the token is never kept: {env}");
        let unit = std::fs::read_to_string(p.unit_path()).unwrap_or_default();
        assert!(
            unit.contains("ExecStart=/usr/local/bin/ferry-agent run"),
            "{unit}"
        );
        assert!(!unit.contains('@'), "a placeholder was left: {unit}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p.env_file)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0);
            assert_eq!(mode, 0o640);
        }
        let removed = remove(&p.unit_dir, &p.env_file)?;
        assert!(
            removed.iter().any(|r| r.contains("agent.env")),
            "{removed:?}"
        );
        assert!(!p.unit_path().exists());
        Ok(())
    }

    #[test]
    fn labels_are_checked() {
        assert!(parse_labels(&["zone=a".into()]).is_ok());
        assert!(parse_labels(&["zone".into()]).is_err());
        assert!(parse_labels(&["zone=a\nFERRY_X=1".into()]).is_err());
    }
}
