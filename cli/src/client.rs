//! Connecting to the scheduler's admin API and turning its errors into messages for people.

use anyhow::anyhow;
use ferry_proto::admin::v1::admin_service_client::AdminServiceClient;
use ferry_proto::tls::ClientTls;
use std::time::Duration;
use tonic::transport::Channel;

pub type Admin = AdminServiceClient<Channel>;

/// Connects to the first scheduler of `urls` that answers. An `https://` URL is always TLS.
pub async fn connect(urls: &[String], tls: &ClientTls) -> anyhow::Result<Admin> {
    let mut errors = Vec::new();
    for url in urls {
        let endpoint = tls.endpoint(url).map_err(|e| anyhow!(e))?;
        match endpoint
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
        {
            Ok(channel) => {
                return Ok(AdminServiceClient::new(channel)
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
