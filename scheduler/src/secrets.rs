//! Seals secrets at rest: data source passwords and passwords written inline in job files.
//!
//! Secrets are encrypted with ChaCha20-Poly1305 before they enter a command, so neither the state
//! machine's log nor its trees hold them in clear; they are opened only to build an attempt or a
//! connectivity test for an authenticated agent of an allowed group.
//!
//! The master key comes from `FERRY_MASTER_KEY` (64 hex characters), else `--master-key-file`,
//! else `<data-dir>/secret.key` (created on a single node's first start). Every scheduler of a
//! cluster is given the same key, so whichever leads can open what another sealed. Rotation: start
//! with the new key as the master key and the old one in `--previous-master-key-file`, run
//! `ferry secrets reseal`, then drop the old key. Each sealed value names its key
//! (`sealed:v2:<key id>:…`), so an old key is only needed until everything is resealed.

use crate::error::{Error, Result};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ferry_common::datasource::DataSourceConfig;
use ferry_common::secret::Secret;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

const SEALED_V1: &str = "sealed:v1:";
const SEALED_V2: &str = "sealed:v2:";

/// Where the master key (and keys being rotated out) come from.
#[derive(Debug, Clone, Default)]
pub struct KeySource {
    /// Hex of 32 bytes (`FERRY_MASTER_KEY`).
    pub env: Option<String>,
    pub file: Option<PathBuf>,
    /// Keys that sealed values may still use, during a rotation.
    pub previous: Vec<PathBuf>,
}

struct SealKey {
    id: String,
    cipher: ChaCha20Poly1305,
    /// What schedulers of one cluster present to each other (see [`SecretBox::cluster_token`]).
    cluster_token: String,
}

fn key_of(bytes: &[u8], what: &str) -> Result<SealKey> {
    if bytes.len() != 32 {
        return Err(Error::Secrets(format!(
            "{what} must hold 32 bytes, found {}; restore it from backup",
            bytes.len()
        )));
    }
    let id = hex::encode(&Sha256::digest(bytes)[..4]);
    let mut token = Sha256::new();
    token.update(b"ferry raft cluster token v1\0");
    token.update(bytes);
    Ok(SealKey {
        id,
        cipher: ChaCha20Poly1305::new(Key::from_slice(bytes)),
        cluster_token: hex::encode(token.finalize()),
    })
}

/// Reads a key file: 32 raw bytes, or 64 hex characters.
fn read_key(path: &Path) -> Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::Secrets(format!("read {}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&bytes);
    if bytes.len() != 32
        && let Ok(h) = hex::decode(text.trim())
    {
        return Ok(h);
    }
    Ok(bytes)
}

/// The keys that seal and open secrets: the current one, and previous ones during a rotation.
pub struct SecretBox {
    current: SealKey,
    previous: Vec<SealKey>,
}

impl SecretBox {
    /// Loads the key from `dir/secret.key`, creating it on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        Self::load(dir, &KeySource::default())
    }

    /// Loads the keys as `source` says, falling back to `dir/secret.key` (created if missing).
    pub fn load(dir: &Path, source: &KeySource) -> Result<Self> {
        let current = if let Some(hex_key) = &source.env {
            let bytes = hex::decode(hex_key.trim()).map_err(|_| {
                Error::Secrets("FERRY_MASTER_KEY must be 64 hex characters (32 bytes)".into())
            })?;
            key_of(&bytes, "FERRY_MASTER_KEY")?
        } else if let Some(file) = &source.file {
            key_of(&read_key(file)?, &file.display().to_string())?
        } else {
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
            key_of(&bytes, &path.display().to_string())?
        };
        let previous = source
            .previous
            .iter()
            .map(|p| key_of(&read_key(p)?, &p.display().to_string()))
            .collect::<Result<_>>()?;
        Ok(Self { current, previous })
    }

    /// The token schedulers of one cluster present on raft traffic, derived from the master key
    /// every one of them must share anyway, so a cluster has no second secret to distribute and
    /// a stranger who can reach the port cannot inject raft messages or forwarded commands.
    /// The cluster tokens of the current key and of keys being rotated out, current first and
    /// joined by commas: what this scheduler presents to its peers and accepts from them, so
    /// schedulers restarted one by one with a new key keep talking to those still on the old.
    pub fn cluster_tokens(&self) -> String {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(|k| k.cluster_token.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The id of the current key (first bytes of its SHA-256), as sealed values name it.
    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    /// Whether `s` is sealed and under the current key.
    pub fn is_current(&self, s: &str) -> bool {
        s.strip_prefix(SEALED_V2)
            .and_then(|b| b.split_once(':'))
            .is_some_and(|(kid, _)| kid == self.current.id)
    }

    fn seal_text(&self, clear: &str) -> Result<String> {
        let nonce: [u8; 12] = rand::random();
        let ct = self
            .current
            .cipher
            .encrypt(Nonce::from_slice(&nonce), clear.as_bytes())
            .map_err(|_| Error::Secrets("encryption failed".into()))?;
        Ok(format!(
            "{SEALED_V2}{}:{}{}",
            self.current.id,
            hex::encode(nonce),
            hex::encode(ct)
        ))
    }

    fn open_text(&self, sealed: &str) -> Result<Option<String>> {
        let (keys, body): (Vec<&SealKey>, &str) = if let Some(rest) = sealed.strip_prefix(SEALED_V2)
        {
            let Some((kid, body)) = rest.split_once(':') else {
                return Err(Error::Secrets("sealed secret is corrupt".into()));
            };
            let key = std::iter::once(&self.current)
                .chain(&self.previous)
                .find(|k| k.id == kid)
                .ok_or_else(|| {
                    Error::Secrets(format!(
                        "a secret was sealed with key {kid}, which this scheduler does not have; give it with --previous-master-key-file (or the right --master-key-file)"
                    ))
                })?;
            (vec![key], body)
        } else if let Some(body) = sealed.strip_prefix(SEALED_V1) {
            (
                std::iter::once(&self.current)
                    .chain(&self.previous)
                    .collect(),
                body,
            )
        } else {
            return Ok(None);
        };
        let raw =
            hex::decode(body).map_err(|_| Error::Secrets("sealed secret is corrupt".into()))?;
        if raw.len() < 12 {
            return Err(Error::Secrets("sealed secret is too short".into()));
        }
        let (nonce, ct) = raw.split_at(12);
        for k in keys {
            if let Ok(clear) = k.cipher.decrypt(Nonce::from_slice(nonce), ct) {
                return String::from_utf8(clear)
                    .map(Some)
                    .map_err(|_| Error::Secrets("secret is not UTF-8".into()));
            }
        }
        Err(Error::Secrets(
            "a secret cannot be opened with this scheduler's master key; give every scheduler the same key".into(),
        ))
    }

    /// Encrypts one secret in place (an empty or sealed one is left as it is).
    pub fn seal_one(&self, s: &mut Secret) -> Result<()> {
        if s.is_empty() || s.expose().starts_with("sealed:") {
            return Ok(());
        }
        *s = Secret::new(self.seal_text(s.expose())?);
        Ok(())
    }

    /// Opens one secret in place (a clear one is left as it is).
    pub fn open_one(&self, s: &mut Secret) -> Result<()> {
        if let Some(clear) = self.open_text(s.expose())? {
            *s = Secret::new(clear);
        }
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

    /// Re-encrypts every secret of `config` under the current key; whether anything changed.
    pub fn reseal(&self, config: &mut DataSourceConfig) -> Result<bool> {
        let mut changed = false;
        for s in config.secrets_mut() {
            if s.expose().starts_with("sealed:") && !self.is_current(s.expose()) {
                self.open_one(s)?;
                self.seal_one(s)?;
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Seals passwords written inline in a job file's text (`job.content[*].reader|writer
    /// .parameter.password`); returns the text to store, or `None` when there was nothing to
    /// seal. A password holding a `${parameter}` is left as it is.
    pub fn seal_job_text(&self, text: &str) -> Result<Option<String>> {
        self.rewrite_job_passwords(text, |v| {
            if v.is_empty() || v.starts_with("sealed:") || v.contains("${") {
                Ok(None)
            } else {
                self.seal_text(v).map(Some)
            }
        })
    }

    /// A stored job text with its inline passwords re-sealed under the current key.
    pub fn reseal_job_text(&self, text: &str) -> Result<Option<String>> {
        self.rewrite_job_passwords(text, |v| {
            if v.starts_with("sealed:") && !self.is_current(v) {
                let clear = self.open_text(v)?.unwrap_or_default();
                self.seal_text(&clear).map(Some)
            } else {
                Ok(None)
            }
        })
    }

    fn rewrite_job_passwords(
        &self,
        text: &str,
        mut f: impl FnMut(&str) -> Result<Option<String>>,
    ) -> Result<Option<String>> {
        let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(text) else {
            return Ok(None);
        };
        let mut changed = false;
        if let Some(content) = doc
            .get_mut("job")
            .and_then(|j| j.get_mut("content"))
            .and_then(|c| c.as_array_mut())
        {
            for pair in content {
                for side in ["reader", "writer"] {
                    if let Some(pw) = pair
                        .get_mut(side)
                        .and_then(|p| p.get_mut("parameter"))
                        .and_then(|p| p.get_mut("password"))
                        && let Some(v) = pw.as_str()
                        && let Some(new) = f(v)?
                    {
                        *pw = serde_json::Value::String(new);
                        changed = true;
                    }
                }
            }
        }
        Ok(changed.then(|| doc.to_string()))
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

    fn config(pw: &str) -> DataSourceConfig {
        DataSourceConfig::Mysql(DbConnection {
            host: "h".into(),
            port: 3306,
            database: "d".into(),
            username: "u".into(),
            password: Secret::new(pw),
            ..Default::default()
        })
    }

    fn password(c: &DataSourceConfig) -> String {
        match c {
            DataSourceConfig::Mysql(conn) => conn.password.expose().to_string(),
            _ => String::new(),
        }
    }

    #[test]
    fn seal_then_open() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Secrets(e.to_string()))?;
        let b = SecretBox::load_or_create(dir.path())?;
        let mut c = config("s3cret");
        b.seal(&mut c)?;
        let stored = serde_json::to_string(&c)?;
        assert!(!stored.contains("s3cret"), "{stored}");
        let again = SecretBox::load_or_create(dir.path())?;
        again.open(&mut c)?;
        assert_eq!(password(&c), "s3cret");
        Ok(())
    }

    #[test]
    fn rotation_reseals_under_the_new_key() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Secrets(e.to_string()))?;
        let old = dir.path().join("old.key");
        let new = dir.path().join("new.key");
        std::fs::write(&old, hex::encode([1u8; 32])).map_err(|e| Error::Secrets(e.to_string()))?;
        std::fs::write(&new, hex::encode([2u8; 32])).map_err(|e| Error::Secrets(e.to_string()))?;
        let before = SecretBox::load(
            dir.path(),
            &KeySource {
                file: Some(old.clone()),
                ..Default::default()
            },
        )?;
        let mut c = config("pw-1");
        before.seal(&mut c)?;
        let job = r#"{"job":{"content":[{"reader":{"name":"mysqlreader","parameter":{"password":"inline-pw"}},"writer":{"name":"streamwriter","parameter":{}}}]}}"#;
        let sealed_job = before.seal_job_text(job)?.unwrap_or_default();
        assert!(!sealed_job.contains("inline-pw"), "{sealed_job}");
        // The new key alone cannot open what the old one sealed, and says what to do.
        let only_new = SecretBox::load(
            dir.path(),
            &KeySource {
                file: Some(new.clone()),
                ..Default::default()
            },
        )?;
        let mut probe = c.clone();
        let err = only_new.open(&mut probe).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("--previous-master-key-file")));
        // With the old one as previous, reseal moves everything to the new key.
        let rotating = SecretBox::load(
            dir.path(),
            &KeySource {
                file: Some(new.clone()),
                previous: vec![old],
                ..Default::default()
            },
        )?;
        assert!(rotating.reseal(&mut c)?);
        let resealed_job = rotating.reseal_job_text(&sealed_job)?.unwrap_or_default();
        let mut after = c.clone();
        only_new.open(&mut after)?;
        assert_eq!(password(&after), "pw-1");
        let doc: serde_json::Value = serde_json::from_str(&resealed_job)?;
        let mut pw = Secret::new(
            doc["job"]["content"][0]["reader"]["parameter"]["password"]
                .as_str()
                .unwrap_or_default(),
        );
        only_new.open_one(&mut pw)?;
        assert_eq!(pw.expose(), "inline-pw");

        // Raft peers restarted one by one during the rotation keep trusting each other: old
        // with rotating, rotating with new; old and new alone share nothing.
        use crate::raft::service::shares_a_token;
        let (o, r, n) = (
            before.cluster_tokens(),
            rotating.cluster_tokens(),
            only_new.cluster_tokens(),
        );
        assert!(shares_a_token(&o, &r) && shares_a_token(&r, &o));
        assert!(shares_a_token(&r, &n) && shares_a_token(&n, &r));
        assert!(!shares_a_token(&o, &n) && !shares_a_token(&n, &o));
        assert!(!shares_a_token("", &o) && !shares_a_token(&o, ""));
        Ok(())
    }
}
