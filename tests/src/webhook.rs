//! A webhook receiver for alert tests: a real HTTP/1.1 server on loopback that answers each
//! request with the next scripted status (200 once the script is spent) and keeps the bodies.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

#[derive(Clone, Default)]
pub struct Receiver {
    script: Arc<Mutex<VecDeque<u16>>>,
    bodies: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
}

impl Receiver {
    /// Starts serving; the URL carries a fake token (`SECRET-TOKEN-123`) that must never be
    /// seen again.
    pub async fn start(script: &[u16]) -> Result<(Self, String)> {
        let r = Self::default();
        r.script
            .lock()
            .map_err(|_| "poisoned")?
            .extend(script.iter().copied());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!(
            "http://{}/hook?access_token=SECRET-TOKEN-123",
            listener.local_addr()?
        );
        let served = r.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let r = served.clone();
                tokio::spawn(async move {
                    let _ = r.answer(conn).await;
                });
            }
        });
        Ok((r, url))
    }

    /// One HTTP/1.1 request: its head, a body of Content-Length bytes, and the scripted answer.
    async fn answer(&self, mut conn: tokio::net::TcpStream) -> std::io::Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())
                    .flatten()
            })
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
        let path = head
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
        if let Ok(mut b) = self.bodies.lock() {
            b.push((path, value));
        }
        let code = self
            .script
            .lock()
            .ok()
            .and_then(|mut s| s.pop_front())
            .unwrap_or(200);
        conn.write_all(
            format!("HTTP/1.1 {code} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .as_bytes(),
        )
        .await?;
        conn.shutdown().await
    }

    pub fn count(&self) -> usize {
        self.bodies.lock().map(|b| b.len()).unwrap_or_default()
    }

    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.bodies
            .lock()
            .map(|b| b.iter().map(|(_, v)| v.clone()).collect())
            .unwrap_or_default()
    }
}
