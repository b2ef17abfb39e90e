//! TLS settings of a database connection, read from the JDBC URL the way the Java drivers read
//! them, so a DataX job that asked pgjdbc or Connector/J for TLS gets the same protection here.
//!
//! Every spelling collapses into one [`TlsMode`] with libpq's meaning (`disable`, `prefer`,
//! `require`, `verify-ca`, `verify-full`): the agent then builds one kind of TLS client for both
//! databases. The defaults follow the drivers users come from (pgjdbc and Connector/J 8 both
//! default to "preferred"): encrypted whenever the server offers it, never verified unless asked.
//!
//! What the agent must never do is fall back to plaintext once a URL asked for `require` or
//! stronger; only `prefer` may. Settings that only make sense in Java (keystores, socket
//! factories other than the non-validating one) are refused with the PEM equivalent to use,
//! rather than silently ignored: an ignored `verifyServerCertificate=true` would be a silent
//! downgrade.

use super::rdbms::{DbKind, JdbcUrl};
use crate::{Error, Result};

/// How much TLS a connection demands, in libpq's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plaintext only.
    Disable,
    /// TLS when the server offers it (certificate not checked), plaintext otherwise.
    Prefer,
    /// TLS or no connection; the certificate is not checked (unless a root certificate is given,
    /// which makes it `VerifyCa`, as in libpq).
    Require,
    /// TLS with a certificate chain that ends at a trusted root; the host name is not checked.
    VerifyCa,
    /// TLS with a trusted chain whose certificate names the host connected to.
    VerifyFull,
}

impl TlsMode {
    /// The libpq name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// Whether the server's certificate chain is checked.
    pub fn verifies(self) -> bool {
        matches!(self, Self::VerifyCa | Self::VerifyFull)
    }
}

/// A certificate (or key) named by a URL: a file on the agent, or PEM text carried inline
/// (percent-encoded) so a catalog data source can ship its CA to every agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pem {
    Path(String),
    Inline(String),
}

impl Pem {
    fn of(value: &str) -> Self {
        if value.trim_start().starts_with("-----BEGIN") {
            Self::Inline(value.to_string())
        } else {
            Self::Path(value.to_string())
        }
    }

    /// Where the text comes from, for messages (inline PEM is not repeated).
    pub fn describe(&self) -> String {
        match self {
            Self::Path(p) => p.clone(),
            Self::Inline(_) => "the inline certificate".into(),
        }
    }
}

/// The TLS settings of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbTls {
    pub mode: TlsMode,
    /// Trusted roots; `None` means the operating system's trust store.
    pub root_cert: Option<Pem>,
    /// Client certificate chain and key (paths on the agent), for servers that ask for one.
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
}

impl JdbcUrl {
    /// The TLS settings this URL asks for, or an error naming the parameter to fix.
    pub fn tls(&self) -> Result<DbTls> {
        match self.kind {
            DbKind::Postgresql => postgres_tls(self),
            DbKind::Mysql => mysql_tls(self),
        }
    }

    /// The value of a URL parameter, matched without regard to case (the Java drivers differ).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn bad(param: &str, message: String) -> Error {
    Error::InvalidJob {
        path: format!("jdbcUrl parameter {param}"),
        message,
    }
}

fn flag(u: &JdbcUrl, name: &str) -> Result<Option<bool>> {
    match u.param(name) {
        None => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" || v.eq_ignore_ascii_case("yes") => {
            Ok(Some(true))
        }
        Some(v) if v.eq_ignore_ascii_case("false") || v == "0" || v.eq_ignore_ascii_case("no") => {
            Ok(Some(false))
        }
        Some(v) => Err(bad(name, format!("\"{v}\" is not true or false"))),
    }
}

/// Refuses Java-only settings whose meaning cannot be kept, saying what to write instead.
fn refuse_java(u: &JdbcUrl, names: &[&str]) -> Result<()> {
    for name in names {
        if u.param(name).is_some() {
            return Err(bad(
                name,
                "names a Java keystore, which Ferry's agents do not read: give the CA \
                 certificate as PEM with sslrootcert=/path/on/agent/ca.pem (and a client \
                 certificate with sslcert= and sslkey=)"
                    .into(),
            ));
        }
    }
    Ok(())
}

fn client_files(u: &JdbcUrl) -> Result<(Option<String>, Option<String>)> {
    let cert = u.param("sslcert").map(str::to_string);
    let key = u.param("sslkey").map(str::to_string);
    if cert.is_some() != key.is_some() {
        return Err(bad(
            if cert.is_some() { "sslkey" } else { "sslcert" },
            "a client certificate needs both sslcert and sslkey".into(),
        ));
    }
    if key
        .as_deref()
        .is_some_and(|k| k.trim_start().starts_with("-----BEGIN"))
    {
        return Err(bad(
            "sslkey",
            "holds a private key inline; a key is a secret and must stay a file on the agent \
             (sslkey=/path/on/agent/client.key)"
                .into(),
        ));
    }
    Ok((cert, key))
}

/// libpq's and pgjdbc's parameters: `sslmode`, `ssl`, `sslfactory`, `sslrootcert`, `sslcert`,
/// `sslkey`.
fn postgres_tls(u: &JdbcUrl) -> Result<DbTls> {
    refuse_java(
        u,
        &["sslpassword", "sslpasswordcallback", "sslhostnameverifier"],
    )?;
    let non_validating = match u.param("sslfactory") {
        None => false,
        Some(f) if f.ends_with("NonValidatingFactory") => true,
        Some(f) if f.ends_with("LibPQFactory") || f.ends_with("DefaultJavaSSLFactory") => false,
        Some(f) => {
            return Err(bad(
                "sslfactory",
                format!(
                    "\"{f}\" is a Java class Ferry cannot load; use sslmode=require (no \
                     verification) or sslmode=verify-full with sslrootcert=..."
                ),
            ));
        }
    };
    let mode = match u.param("sslmode") {
        Some(m) => match m.to_ascii_lowercase().as_str() {
            "disable" => TlsMode::Disable,
            "allow" | "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            other => {
                return Err(bad(
                    "sslmode",
                    format!(
                        "\"{other}\" is not one of disable, allow, prefer, require, verify-ca, \
                         verify-full"
                    ),
                ));
            }
        },
        // pgjdbc: `ssl=true` alone means verify-full (unless the non-validating factory).
        None => match flag(u, "ssl")? {
            Some(true) if non_validating => TlsMode::Require,
            Some(true) => TlsMode::VerifyFull,
            Some(false) => TlsMode::Disable,
            None if non_validating => TlsMode::Require,
            None => TlsMode::Prefer,
        },
    };
    finish(u, mode, u.param("sslrootcert"))
}

/// Connector/J's and MariaDB Connector/J's parameters: `sslMode` (either driver's spelling),
/// the older `useSSL` / `requireSSL` / `verifyServerCertificate`, `serverSslCert`, and the PEM
/// files `sslrootcert` / `sslca`, `sslcert`, `sslkey`.
fn mysql_tls(u: &JdbcUrl) -> Result<DbTls> {
    refuse_java(
        u,
        &[
            "trustCertificateKeyStoreUrl",
            "clientCertificateKeyStoreUrl",
            "keyStore",
            "trustStore",
        ],
    )?;
    let mode = match u.param("sslMode") {
        Some(m) => match m.to_ascii_lowercase().replace('_', "-").as_str() {
            "disabled" | "disable" => TlsMode::Disable,
            "preferred" | "prefer" => TlsMode::Prefer,
            "required" | "require" | "trust" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-identity" | "verify-full" => TlsMode::VerifyFull,
            other => {
                return Err(bad(
                    "sslMode",
                    format!(
                        "\"{other}\" is not one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, \
                         VERIFY_IDENTITY (or MariaDB's disable, trust, verify-ca, verify-full)"
                    ),
                ));
            }
        },
        // Connector/J 8's reading of the older properties.
        None => match (
            flag(u, "useSSL")?,
            flag(u, "requireSSL")?,
            flag(u, "verifyServerCertificate")?,
        ) {
            (Some(false), _, _) => TlsMode::Disable,
            (_, _, Some(true)) => TlsMode::VerifyCa,
            (_, Some(true), _) => TlsMode::Require,
            _ => TlsMode::Prefer,
        },
    };
    let root = u
        .param("sslrootcert")
        .or_else(|| u.param("sslca"))
        .or_else(|| u.param("serverSslCert"));
    finish(u, mode, root)
}

fn finish(u: &JdbcUrl, mode: TlsMode, root: Option<&str>) -> Result<DbTls> {
    let (client_cert, client_key) = client_files(u)?;
    let root_cert = root.filter(|r| !r.trim().is_empty()).map(Pem::of);
    // libpq: `require` with a root certificate checks the chain as `verify-ca` does.
    let mode = match mode {
        TlsMode::Require if root_cert.is_some() => TlsMode::VerifyCa,
        m => m,
    };
    if mode == TlsMode::Disable && (client_cert.is_some() || root_cert.is_some()) {
        return Err(bad(
            "sslmode",
            "TLS is disabled but certificates are given: drop them or choose a TLS mode".into(),
        ));
    }
    Ok(DbTls {
        mode,
        root_cert,
        client_cert,
        client_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(url: &str) -> Result<DbTls> {
        JdbcUrl::parse(url)?.tls()
    }

    fn mode(url: &str) -> TlsMode {
        match tls(url) {
            Ok(t) => t.mode,
            Err(e) => panic!("{url}: {e}"),
        }
    }

    #[test]
    fn postgres_spellings() {
        let base = "jdbc:postgresql://db/x";
        assert_eq!(mode(base), TlsMode::Prefer);
        assert_eq!(mode(&format!("{base}?sslmode=disable")), TlsMode::Disable);
        assert_eq!(mode(&format!("{base}?sslmode=allow")), TlsMode::Prefer);
        assert_eq!(mode(&format!("{base}?sslmode=require")), TlsMode::Require);
        assert_eq!(
            mode(&format!("{base}?sslmode=VERIFY-CA")),
            TlsMode::VerifyCa
        );
        assert_eq!(
            mode(&format!("{base}?sslmode=verify-full")),
            TlsMode::VerifyFull
        );
        assert_eq!(mode(&format!("{base}?ssl=true")), TlsMode::VerifyFull);
        assert_eq!(mode(&format!("{base}?ssl=false")), TlsMode::Disable);
        assert_eq!(
            mode(&format!(
                "{base}?ssl=true&sslfactory=org.postgresql.ssl.NonValidatingFactory"
            )),
            TlsMode::Require
        );
        // sslmode wins over ssl, as in pgjdbc.
        assert_eq!(
            mode(&format!("{base}?ssl=true&sslmode=require")),
            TlsMode::Require
        );
        assert_eq!(
            mode(&format!("{base}?sslmode=require&sslrootcert=/etc/ca.pem")),
            TlsMode::VerifyCa
        );
    }

    #[test]
    fn mysql_spellings() {
        let base = "jdbc:mysql://db/x";
        assert_eq!(mode(base), TlsMode::Prefer);
        assert_eq!(mode(&format!("{base}?useSSL=false")), TlsMode::Disable);
        assert_eq!(
            mode(&format!("{base}?useSSL=true&requireSSL=true")),
            TlsMode::Require
        );
        assert_eq!(
            mode(&format!(
                "{base}?useSSL=true&requireSSL=true&verifyServerCertificate=true"
            )),
            TlsMode::VerifyCa
        );
        assert_eq!(mode(&format!("{base}?sslMode=DISABLED")), TlsMode::Disable);
        assert_eq!(mode(&format!("{base}?sslMode=PREFERRED")), TlsMode::Prefer);
        assert_eq!(mode(&format!("{base}?sslMode=REQUIRED")), TlsMode::Require);
        assert_eq!(
            mode(&format!("{base}?sslMode=VERIFY_CA")),
            TlsMode::VerifyCa
        );
        assert_eq!(
            mode(&format!("{base}?sslMode=VERIFY_IDENTITY")),
            TlsMode::VerifyFull
        );
        assert_eq!(mode(&format!("{base}?sslMode=trust")), TlsMode::Require);
        assert_eq!(
            mode(&format!("{base}?sslMode=verify-full")),
            TlsMode::VerifyFull
        );
        // sslMode wins over the older properties.
        assert_eq!(
            mode(&format!("{base}?useSSL=false&sslMode=REQUIRED")),
            TlsMode::Require
        );
        let t = tls(&format!(
            "{base}?sslMode=VERIFY_IDENTITY&serverSslCert=/etc/ca.pem"
        ))
        .ok();
        assert_eq!(
            t.and_then(|t| t.root_cert),
            Some(Pem::Path("/etc/ca.pem".into()))
        );
    }

    #[test]
    fn refuses_what_cannot_be_honoured() {
        for url in [
            "jdbc:postgresql://db/x?sslmode=verify",
            "jdbc:postgresql://db/x?ssl=maybe",
            "jdbc:postgresql://db/x?sslfactory=com.example.Factory",
            "jdbc:postgresql://db/x?sslmode=require&sslcert=/c.pem",
            "jdbc:postgresql://db/x?sslmode=disable&sslrootcert=/ca.pem",
            "jdbc:mysql://db/x?sslMode=SOMETIMES",
            "jdbc:mysql://db/x?useSSL=true&trustCertificateKeyStoreUrl=file:/ks.jks",
            "jdbc:mysql://db/x?sslMode=REQUIRED&sslcert=/c.pem&sslkey=-----BEGIN%20KEY",
        ] {
            let err = tls(url).err().map(|e| e.to_string());
            assert!(err.is_some(), "{url} was accepted");
        }
    }

    #[test]
    fn inline_root_certificates_survive_the_url() -> Result<()> {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB+a/b==\n-----END CERTIFICATE-----\n";
        let conn = crate::datasource::DbConnection {
            host: "db".into(),
            port: 5432,
            database: "x".into(),
            username: "u".into(),
            sslmode: Some("verify-full".into()),
            sslrootcert: Some(pem.into()),
            ..Default::default()
        };
        let url = JdbcUrl::of(DbKind::Postgresql, &conn);
        let t = JdbcUrl::parse(&url)?.tls()?;
        assert_eq!(t.mode, TlsMode::VerifyFull);
        assert_eq!(t.root_cert, Some(Pem::Inline(pem.into())));
        Ok(())
    }
}
