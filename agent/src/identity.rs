//! The agent's identity: registered once with the group's token, then kept on local disk
//! (`agent.json`, mode 0600) so restarts reuse the same id and credential.

use ferry_proto::agent::v1 as pb;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What the scheduler gave this agent at registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub agent_id: String,
    pub credential: String,
    pub group: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is corrupt ({source}); remove it and register again with the group's token")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("registration refused: {0}")]
    Refused(String),
    #[error("cannot reach the scheduler at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error(
        "this agent is not registered yet: pass --group and --token (from `ferry group create`)"
    )]
    NoToken,
}

fn file(dir: &Path) -> PathBuf {
    dir.join("agent.json")
}

/// The saved identity, if this data directory has one.
pub fn load(dir: &Path) -> Result<Option<Identity>, IdentityError> {
    let path = file(dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| IdentityError::Corrupt { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IdentityError::Io { path, source }),
    }
}

/// Saves the identity readable by the agent's user only.
pub fn save(dir: &Path, id: &Identity) -> Result<(), IdentityError> {
    use std::io::Write;
    let path = file(dir);
    let io = |source| IdentityError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join("agent.json.tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let bytes = serde_json::to_vec_pretty(id).map_err(|source| IdentityError::Corrupt {
        path: path.clone(),
        source,
    })?;
    let mut f = opts.open(&tmp).map_err(io)?;
    f.write_all(&bytes).and_then(|_| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// Facts about this host reported at registration and in every Hello. `scheduler` (a URL) lets
/// the agent name the address it reaches the scheduler from, which is the one an operator needs
/// to find the server.
pub fn host_facts(
    slots: u32,
    labels: &std::collections::BTreeMap<String, String>,
    scheduler: Option<&str>,
) -> pb::HostFacts {
    pb::HostFacts {
        hostname: hostname(),
        addresses: scheduler.and_then(outward_address).into_iter().collect(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        slots,
        os: std::env::consts::OS.to_string(),
        labels: labels.clone().into_iter().collect(),
    }
}

/// This host's name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".to_string())
}

/// The local address this host uses to reach `url`'s host (a UDP "connect" sends nothing).
fn outward_address(url: &str) -> Option<String> {
    let rest = url.split("://").nth(1)?;
    let authority = rest.split('/').next()?;
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    let target = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    sock.connect(target).ok()?;
    sock.local_addr().ok().map(|a| a.ip().to_string())
}

/// Registers with the scheduler using the group's token.
pub async fn register(
    channel: tonic::transport::Channel,
    url: &str,
    group: &str,
    token: &str,
    host: pb::HostFacts,
) -> Result<Identity, IdentityError> {
    let mut client = pb::agent_service_client::AgentServiceClient::new(channel);
    let resp = client
        .register(pb::RegisterRequest {
            group: group.to_string(),
            token: token.to_string(),
            host: Some(host),
        })
        .await
        .map_err(|s| match s.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown => IdentityError::Unreachable {
                url: url.to_string(),
                message: s.message().to_string(),
            },
            _ => IdentityError::Refused(s.message().to_string()),
        })?
        .into_inner();
    Ok(Identity {
        agent_id: resp.agent_id,
        credential: resp.credential,
        group: group.to_string(),
    })
}

/// Asks the scheduler to forget this agent (uninstall); tries each scheduler URL.
pub async fn deregister(
    urls: &[String],
    tls: &ferry_proto::tls::ClientTls,
    id: &Identity,
) -> Result<(), IdentityError> {
    use ferry_proto::{AGENT_CREDENTIAL_HEADER, AGENT_ID_HEADER};
    let mut last = String::from("no scheduler URL");
    for url in urls {
        let channel = match crate::session::connect(url, tls).await {
            Ok(c) => c,
            Err(m) => {
                last = m;
                continue;
            }
        };
        let mut client = pb::agent_service_client::AgentServiceClient::new(channel);
        let mut request = tonic::Request::new(pb::DeregisterRequest {});
        let md = request.metadata_mut();
        let bad = |_| IdentityError::Refused("agent id or credential is not valid metadata".into());
        md.insert(AGENT_ID_HEADER, id.agent_id.parse().map_err(bad)?);
        md.insert(AGENT_CREDENTIAL_HEADER, id.credential.parse().map_err(bad)?);
        match client.deregister(request).await {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == tonic::Code::Unavailable => last = s.message().to_string(),
            Err(s) => return Err(IdentityError::Refused(s.message().to_string())),
        }
    }
    Err(IdentityError::Unreachable {
        url: urls.join(","),
        message: last,
    })
}
