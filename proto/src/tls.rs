//! How clients (the agent, the CLI) reach a scheduler: plain `http://`, or `https://` with
//! rustls and optionally a private CA and a client certificate.
//!
//! An `https://` address is always TLS: if the handshake fails the connection fails, it never
//! falls back to plaintext. TLS settings given with an `http://` address are an error rather
//! than silently unused, since they show the operator meant TLS.

use std::path::PathBuf;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Client TLS settings: a CA to trust besides the system's, and a client certificate.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// PEM file of the CA that signed the scheduler's certificate (a private CA).
    pub ca_cert: Option<PathBuf>,
    /// PEM files of this client's certificate and key, when the scheduler asks for one.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
}

impl ClientTls {
    fn configured(&self) -> bool {
        self.ca_cert.is_some() || self.client_cert.is_some() || self.client_key.is_some()
    }

    /// An endpoint for `url` with TLS exactly when the URL says `https://`.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, String> {
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| format!("invalid scheduler URL {url}: {e}"))?;
        let scheme = url.split("://").next().unwrap_or_default();
        match scheme {
            "https" => {
                let mut tls = ClientTlsConfig::new().with_native_roots();
                if let Some(ca) = &self.ca_cert {
                    tls = tls.ca_certificate(Certificate::from_pem(read(ca, "CA certificate")?));
                }
                match (&self.client_cert, &self.client_key) {
                    (Some(c), Some(k)) => {
                        tls = tls.identity(Identity::from_pem(
                            read(c, "client certificate")?,
                            read(k, "client key")?,
                        ));
                    }
                    (None, None) => {}
                    _ => {
                        return Err(
                            "a client certificate needs both --tls-cert and --tls-key".into()
                        );
                    }
                }
                endpoint
                    .tls_config(tls)
                    .map_err(|e| format!("TLS settings for {url}: {e}"))
            }
            "http" if self.configured() => Err(format!(
                "TLS settings were given but {url} is plain http://; use https://"
            )),
            "http" => Ok(endpoint),
            other => Err(format!(
                "scheduler URL {url} has scheme \"{other}\"; use http:// or https://"
            )),
        }
    }
}
