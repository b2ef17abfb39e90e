//! TLS clients for the database connections, one rustls configuration per [`TlsMode`].
//!
//! Start messages carry decrypted passwords to the agent, and the agent then hands them to the
//! database: a password that crossed the scheduler link under TLS must not cross the last hop in
//! clear when the data source asked otherwise. The modes keep libpq's meaning for both
//! databases, so one table in the docs says what each one checks:
//! - `prefer` / `require`: encrypted, certificate not checked (handshake signatures still are);
//! - `verify-ca`: the chain must end at a trusted root; the name is not checked;
//! - `verify-full`: chain and name (DNS name or IP address the URL connects to).
//!
//! Trusted roots are the data source's `sslrootcert` (a path on this agent or inline PEM) or,
//! without one, the operating system's store, where operators put their company CA.

use ferry_common::job::{DbTls, Pem, TlsMode};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::sync::Arc;

/// The crypto provider every database TLS client uses (ring, as for the scheduler link).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the certificates of a PEM file or inline PEM text.
pub fn certificates(pem: &Pem) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = match pem {
        Pem::Path(p) => CertificateDer::pem_file_iter(p)
            .map_err(|e| format!("cannot read certificates from {p}: {e}"))?
            .collect(),
        Pem::Inline(text) => CertificateDer::pem_slice_iter(text.as_bytes()).collect(),
    };
    let certs = certs.map_err(|e| format!("bad PEM in {}: {e}", pem.describe()))?;
    if certs.is_empty() {
        return Err(format!(
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in {}",
            pem.describe()
        ));
    }
    Ok(certs)
}

/// The roots a verifying connection trusts: the given ones, or the operating system's.
pub fn roots(tls: &DbTls) -> Result<Vec<CertificateDer<'static>>, String> {
    if let Some(pem) = &tls.root_cert {
        return certificates(pem);
    }
    let system = system_roots();
    if system.is_empty() {
        return Err(
            "the system trust store holds no certificate: give the database's CA with \
             sslrootcert=/path/on/agent/ca.pem"
                .into(),
        );
    }
    Ok(system.clone())
}

/// The operating system's trust store, read once per process (every verifying connection of
/// every channel would otherwise read the whole certificate folder again).
fn system_roots() -> &'static Vec<CertificateDer<'static>> {
    static ROOTS: std::sync::OnceLock<Vec<CertificateDer<'static>>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!(error = %e, "skipping part of the system trust store");
        }
        found.certs
    })
}

/// A rustls client for `tls` (whose mode is not `disable`).
pub fn client_config(tls: &DbTls) -> Result<ClientConfig, String> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ServerCertVerifier> = match tls.mode {
        TlsMode::Disable | TlsMode::Prefer | TlsMode::Require => {
            Arc::new(EncryptOnly { algorithms })
        }
        TlsMode::VerifyCa | TlsMode::VerifyFull => {
            let mut store = RootCertStore::empty();
            for cert in roots(tls)? {
                store
                    .add(cert)
                    .map_err(|e| format!("unusable root certificate: {e}"))?;
            }
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                    .build()
                    .map_err(|e| format!("cannot use the root certificates: {e}"))?;
            if tls.mode == TlsMode::VerifyCa {
                Arc::new(ChainOnly { inner: webpki })
            } else {
                webpki
            }
        }
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain = certificates(&Pem::Path(cert.clone()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("cannot read the client key {key}: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate {cert}: {e}"))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// `prefer` / `require`: encryption against passive listeners, no identity check (libpq's
/// meaning). Handshake signatures are still verified, so the session keys are the server's.
#[derive(Debug)]
struct EncryptOnly {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `verify-ca`: the full WebPKI check except the name, for servers reached by an address their
/// certificate does not list (a load balancer, an IP).
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(mode: TlsMode, root: Option<Pem>) -> DbTls {
        DbTls {
            mode,
            root_cert: root,
            client_cert: None,
            client_key: None,
        }
    }

    #[test]
    fn bad_root_certificates_are_named() {
        let err = client_config(&tls(
            TlsMode::VerifyFull,
            Some(Pem::Path("/nonexistent/ca.pem".into())),
        ))
        .err()
        .unwrap_or_default();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let err = client_config(&tls(
            TlsMode::VerifyCa,
            Some(Pem::Inline("-----BEGIN nothing".into())),
        ))
        .err()
        .unwrap_or_default();
        assert!(err.contains("inline certificate"), "{err}");
    }

    #[test]
    fn unverified_modes_need_no_roots() {
        for mode in [TlsMode::Prefer, TlsMode::Require] {
            assert!(client_config(&tls(mode, None)).is_ok(), "{mode:?}");
        }
    }
}
