//! Connecting to the scheduler's admin API with the caller's API token, and turning its errors
//! into messages for people.
//!
//! The token comes from `FERRY_TOKEN`, else from the credentials file `ferry login` wrote
//! (`$XDG_CONFIG_HOME/ferry/credentials.json` or `~/.config/ferry/credentials.json`, mode 0600).
//! It is never taken from the command line of other commands, where `ps` would show it.

use anyhow::{Context, anyhow};
use ferry_proto::admin::v1::admin_service_client::AdminServiceClient;
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

/// Connects to the first scheduler of `urls` that answers. An `https://` URL is always TLS.
pub async fn connect(urls: &[String], tls: &ClientTls, auth: Auth) -> anyhow::Result<Admin> {
    let mut errors = Vec::new();
    for url in urls {
        let endpoint = tls.endpoint(url).map_err(|e| anyhow!(e))?;
        match endpoint
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
        {
            Ok(channel) => {
                return Ok(AdminServiceClient::with_interceptor(channel, auth)
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20));
            }
            Err(e) => {
                let mut msg = format!("{url}: {e}");
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg.push_str(&format!(": {s}"));
                    src = s.source();
                }
                errors.push(msg);
            }
        }
    }
    Err(anyhow!(
        "cannot reach the scheduler ({}); is ferry-scheduler running? (set --scheduler or FERRY_SCHEDULER)",
        errors.join("; ")
    ))
}

/// The scheduler's message, without gRPC decoration.
pub fn status(s: tonic::Status) -> anyhow::Error {
    match s.code() {
        tonic::Code::Unavailable if s.message().contains("transport") => {
            anyhow!("lost the scheduler: {}", s.message())
        }
        _ => anyhow!("{}", s.message()),
    }
}
