//! Connecting to the scheduler's admin API and turning its errors into messages for people.

use anyhow::anyhow;
use ferry_proto::admin::v1::admin_service_client::AdminServiceClient;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

pub type Admin = AdminServiceClient<Channel>;

/// Connects to the scheduler at `url`.
pub async fn connect(url: &str) -> anyhow::Result<Admin> {
    let channel = Endpoint::from_shared(url.to_string())
        .map_err(|e| anyhow!("invalid scheduler URL {url}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| {
            anyhow!(
                "cannot reach the scheduler at {url} ({e}); is ferry-scheduler running? (set --scheduler or FERRY_SCHEDULER)"
            )
        })?;
    Ok(AdminServiceClient::new(channel))
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
