//! Connecting to the scheduler's admin API with the caller's API token, and turning its errors
//! into messages for people.
//!
//! The token comes from `FERRY_TOKEN`, else from the credentials file `ferry login` wrote
//! (`$XDG_CONFIG_HOME/ferry/credentials.json` or `~/.config/ferry/credentials.json`, mode 0600).
//! It is never taken from the command line of other commands, where `ps` would show it.

use anyhow::{Context, anyhow};
use ferry_proto::admin::v1 as admin_pb;
use ferry_proto::admin::v1::admin_service_client::AdminServiceClient;
use ferry_proto::admin::v1::cluster_service_client::ClusterServiceClient;
use ferry_proto::tls::ClientTls;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Adds the bearer token and the workspace to every call.
#[derive(Clone)]
pub struct Auth {
    token: Option<MetadataValue<Ascii>>,
    workspace: Option<MetadataValue<Ascii>>,
}

impl Auth {
    pub fn new(token: Option<&str>, workspace: Option<&str>) -> anyhow::Result<Self> {
        let token = token
            .map(|t| format!("Bearer {}", t.trim()).parse())
            .transpose()
            .map_err(|_| anyhow!("the API token has characters a token cannot have"))?;
        let workspace = workspace
            .map(str::parse)
            .transpose()
            .map_err(|_| anyhow!("the workspace name has characters a name cannot have"))?;
        Ok(Self { token, workspace })
    }
}

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.token {
            req.metadata_mut().insert("authorization", t.clone());
        }
        if let Some(w) = &self.workspace {
            req.metadata_mut().insert("x-ferry-workspace", w.clone());
        }
        Ok(req)
    }
}

pub type Admin = AdminServiceClient<InterceptedService<Channel, Auth>>;

/// What `ferry login` saves.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Credentials {
    pub schedulers: Vec<String>,
    pub token: String,
    #[serde(default)]
    pub workspace: Option<String>,
}

fn credentials_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("ferry").join("credentials.json"))
}

/// The saved credentials, if any.
pub fn load_credentials() -> Option<Credentials> {
    let path = credentials_path()?;
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Saves credentials readable by this user only; returns where.
pub fn save_credentials(c: &Credentials) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    let path = credentials_path().ok_or_else(|| {
        anyhow!("cannot tell where to save credentials: set HOME or XDG_CONFIG_HOME")
    })?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(serde_json::to_string_pretty(c)?.as_bytes())?;
    Ok(path)
}

/// Forgets the saved credentials; returns whether there were any.
pub fn remove_credentials() -> anyhow::Result<bool> {
    let Some(path) = credentials_path() else {
        return Ok(false);
    };
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

pub type Cluster = ClusterServiceClient<InterceptedService<Channel, Auth>>;

/// A channel to the first scheduler of `urls` that answers, and its URL. An `https://` URL is
/// always TLS.
pub async fn connect_any(urls: &[String], tls: &ClientTls) -> anyhow::Result<(Channel, String)> {
    let mut errors = Vec::new();
    for url in urls {
        match open(url, tls).await {
            Ok(channel) => return Ok((channel, url.clone())),
            Err(e) => errors.push(e),
        }
    }
    Err(anyhow!(
        "cannot reach the scheduler ({}); is ferry-scheduler running? (set --scheduler or FERRY_SCHEDULER)",
        errors.join("; ")
    ))
}

async fn open(url: &str, tls: &ClientTls) -> Result<Channel, String> {
    let endpoint = tls.endpoint(url)?;
    endpoint
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| {
            let mut msg = format!("{url}: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            msg
        })
}

fn admin_client(channel: Channel, auth: Auth) -> Admin {
    AdminServiceClient::with_interceptor(channel, auth)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

pub fn cluster_client(channel: Channel, auth: Auth) -> Cluster {
    ClusterServiceClient::with_interceptor(channel, auth)
}

/// How long to wait for a cluster to elect a leader before giving up.
const LEADER_WAIT: Duration = Duration::from_secs(20);

/// Connects to the scheduler that leads the cluster (the only one that answers the admin API),
/// starting from the first of `urls` that answers and following where it points; waits out an
/// election. A scheduler without replication leads itself.
pub async fn connect(urls: &[String], tls: &ClientTls, auth: Auth) -> anyhow::Result<Admin> {
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    let (mut channel, mut url) = connect_any(urls, tls).await?;
    let mut hops = 0;
    loop {
        let leader = cluster_client(channel.clone(), auth.clone())
            .leader(admin_pb::LeaderRequest {})
            .await;
        let wait = match leader {
            Ok(r) => {
                let r = r.into_inner();
                if r.is_leader {
                    return Ok(admin_client(channel, auth));
                }
                if !r.leader_addr.is_empty() && r.leader_addr != url && hops < 3 {
                    hops += 1;
                    match open(&r.leader_addr, tls).await {
                        Ok(c) => {
                            (channel, url) = (c, r.leader_addr);
                            continue;
                        }
                        Err(e) => format!("the leader does not answer: {e}"),
                    }
                } else if r.leader_addr.is_empty() {
                    format!("{url} knows no leader (an election is under way?)")
                } else {
                    format!("{url} is confirming its leadership")
                }
            }
            // Let the admin call itself report a bad token or an old scheduler.
            Err(s) if s.code() != tonic::Code::Unavailable => {
                return Ok(admin_client(channel, auth));
            }
            Err(s) => s.message().to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(anyhow!(
                "no scheduler leads the cluster ({wait}); check `ferry cluster status` on each scheduler"
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Start over from the given addresses: the one asked may have died.
        (channel, url) = connect_any(urls, tls).await?;
        hops = 0;
    }
}

/// The scheduler's message, without gRPC decoration.
pub fn status(s: tonic::Status) -> anyhow::Error {
    match s.code() {
        tonic::Code::Unavailable if s.message().contains("transport") => {
            anyhow!("lost the scheduler: {}", s.message())
        }
        tonic::Code::Unavailable if s.metadata().get("x-ferry-leader-addr").is_some() => {
            anyhow!(
                "{} (leadership moved while the command ran; run it again)",
                s.message()
            )
        }
        _ => anyhow!("{}", s.message()),
    }
}
