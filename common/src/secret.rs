//! Secrets (passwords) and credentials.
//!
//! [`Secret`] keeps a value out of `Debug` output and logs by construction, so a stray
//! `debug!(?config)` cannot leak a password. Registration tokens and agent credentials are random
//! and high-entropy, so a SHA-256 hash is enough to store them; a person-typed password would need
//! a slow hash instead.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A string that must never be printed or logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The clear value, for the one place that needs it (a database driver).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A random token of 32 bytes, hex encoded, with a readable prefix (`frt_` registration token,
/// `fac_` agent credential) so a leaked one is easy to recognise and revoke.
pub fn random_token(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{prefix}{}", hex::encode(bytes))
}

/// Hex SHA-256 of a high-entropy token, as stored by the scheduler.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares a presented token with a stored hash in time independent of where they differ.
pub fn token_matches(token: &str, stored_hash: &str) -> bool {
    let presented = hash_token(token);
    presented.len() == stored_hash.len()
        && presented
            .bytes()
            .zip(stored_hash.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Makes `dir` and everything in it readable by this process's user only (0700 folders, 0600
/// files): the store holds sealed secrets, hashes and logs.
pub fn restrict(dir: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mut stack = vec![dir.to_path_buf()];
        while let Some(p) = stack.pop() {
            let meta = std::fs::symlink_metadata(&p)?;
            if meta.is_dir() {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))?;
                for e in std::fs::read_dir(&p)? {
                    stack.push(e?.path());
                }
            } else if meta.is_file() {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn token_hash_round_trip() {
        let t = random_token("frt_");
        assert!(t.starts_with("frt_"));
        assert_eq!(t.len(), 4 + 64);
        let h = hash_token(&t);
        assert!(token_matches(&t, &h));
        assert!(!token_matches("frt_wrong", &h));
        assert_ne!(random_token("x"), random_token("x"));
    }
}
