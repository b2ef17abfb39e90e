//! Seals data source secrets at rest.
//!
//! Passwords are encrypted with ChaCha20-Poly1305 under a key kept in the data directory
//! (`secret.key`, mode 0600) before they enter a command, so neither the state machine's log nor
//! its trees hold them in clear. They are opened only to build an attempt or a connectivity test
//! for an authenticated agent.

use crate::error::{Error, Result};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ferry_common::datasource::DataSourceConfig;
use ferry_common::secret::Secret;
use std::path::Path;

const SEALED_PREFIX: &str = "sealed:v1:";

/// The key that seals and opens secrets.
pub struct SecretBox {
    cipher: ChaCha20Poly1305,
}

impl SecretBox {
    /// Loads the key from `dir/secret.key`, creating it on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        let path = dir.join("secret.key");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                write_private(&path, &key)?;
                key.to_vec()
            }
            Err(e) => {
                return Err(Error::Secrets(format!("read {}: {e}", path.display())));
            }
        };
        if bytes.len() != 32 {
            return Err(Error::Secrets(format!(
                "{} must hold 32 bytes, found {}; restore it from backup",
                path.display(),
                bytes.len()
            )));
        }
        Ok(Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&bytes)),
        })
    }

    fn seal_one(&self, s: &mut Secret) -> Result<()> {
        if s.is_empty() || s.expose().starts_with(SEALED_PREFIX) {
            return Ok(());
        }
        let nonce: [u8; 12] = rand::random();
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), s.expose().as_bytes())
            .map_err(|_| Error::Secrets("encryption failed".into()))?;
        *s = Secret::new(format!(
            "{SEALED_PREFIX}{}{}",
            hex::encode(nonce),
            hex::encode(ct)
        ));
        Ok(())
    }

    fn open_one(&self, s: &mut Secret) -> Result<()> {
        let Some(body) = s.expose().strip_prefix(SEALED_PREFIX) else {
            return Ok(());
        };
        let raw =
            hex::decode(body).map_err(|_| Error::Secrets("sealed secret is corrupt".into()))?;
        if raw.len() < 12 {
            return Err(Error::Secrets("sealed secret is too short".into()));
        }
        let (nonce, ct) = raw.split_at(12);
        let clear = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| {
                Error::Secrets(
                    "a secret cannot be opened with this data directory's secret.key".into(),
                )
            })?;
        *s = Secret::new(
            String::from_utf8(clear).map_err(|_| Error::Secrets("secret is not UTF-8".into()))?,
        );
        Ok(())
    }

    /// Encrypts every secret of `config` in place.
    pub fn seal(&self, config: &mut DataSourceConfig) -> Result<()> {
        config
            .secrets_mut()
            .into_iter()
            .try_for_each(|s| self.seal_one(s))
    }

    /// Decrypts every secret of `config` in place.
    pub fn open(&self, config: &mut DataSourceConfig) -> Result<()> {
        config
            .secrets_mut()
            .into_iter()
            .try_for_each(|s| self.open_one(s))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| Error::Secrets(format!("create {}: {e}", path.display())))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::Secrets(format!("write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_common::datasource::DbConnection;

    #[test]
    fn seal_then_open() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Secrets(e.to_string()))?;
        let b = SecretBox::load_or_create(dir.path())?;
        let mut c = DataSourceConfig::Mysql(DbConnection {
            host: "h".into(),
            port: 3306,
            database: "d".into(),
            username: "u".into(),
            password: Secret::new("s3cret"),
        });
        b.seal(&mut c)?;
        let stored = serde_json::to_string(&c)?;
        assert!(!stored.contains("s3cret"), "{stored}");
        let again = SecretBox::load_or_create(dir.path())?;
        again.open(&mut c)?;
        let DataSourceConfig::Mysql(conn) = c else {
            panic!("kind changed")
        };
        assert_eq!(conn.password.expose(), "s3cret");
        Ok(())
    }
}
