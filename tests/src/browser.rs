//! Headless Chromium driven over WebDriver for the console's browser tests: Debian's `chromium`
//! and `chromium-driver` (scripts/test.sh installs them), driven with fantoccini, a maintained
//! WebDriver client on tokio and hyper (chromedriver speaks plain HTTP on loopback, so no TLS
//! stack is built). The page is read the way a person would read it: by its elements, their
//! text and the `data-*` attributes the console sets for that purpose; waits poll a condition
//! with a deadline.

use crate::Proc;
use anyhow::{Context, Result, anyhow, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CHROMIUM: &[&str] = &[
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
];
const CHROMEDRIVER: &[&str] = &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"];

/// The program named by `env`, else the first of `candidates` that exists.
fn find(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    match std::env::var_os(env) {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.exists()),
        None => candidates.iter().map(PathBuf::from).find(|p| p.exists()),
    }
}

/// A headless browser session and the chromedriver behind it; both end when dropped.
pub struct Browser {
    pub client: Client,
    _driver: Proc,
    _profile: tempfile::TempDir,
    /// Where screenshots go (`FERRY_SCREENSHOTS`), if anywhere.
    shots: Option<PathBuf>,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session (1400x900), logging into `dir`.
    pub async fn start(dir: &Path) -> Result<Self> {
        let missing = "the console tests need headless Chromium and its WebDriver: install Debian's packages \
                       with `apt-get install chromium chromium-driver` (scripts/test.sh does), or point \
                       FERRY_CHROMIUM and FERRY_CHROMEDRIVER at them";
        let chromium = find("FERRY_CHROMIUM", CHROMIUM)
            .ok_or_else(|| anyhow!("Chromium not found; {missing}"))?;
        let driver = find("FERRY_CHROMEDRIVER", CHROMEDRIVER)
            .ok_or_else(|| anyhow!("chromedriver not found; {missing}"))?;
        // chromedriver takes a port number, not a listener: pick a free one and wait for it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let proc = Proc::spawn(
            &driver,
            &[format!("--port={port}"), "--allowed-ips=127.0.0.1".into()],
            dir.join("chromedriver.log"),
        )?;
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "chromedriver did not listen on {port} within 20 s:\n{}",
                    proc.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir()?;
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium.display().to_string(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1400,900", "--hide-scrollbars", "--no-first-run",
                    "--disable-extensions", "--disable-background-networking",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .with_context(|| {
                format!("start a Chromium session through chromedriver ({missing})")
            })?;
        // Relative to the repository (tests run in tests/): FERRY_SCREENSHOTS=docs/console.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let shots = std::env::var_os("FERRY_SCREENSHOTS").map(|p| root.join(p));
        Ok(Self {
            client,
            _driver: proc,
            _profile: profile,
            shots,
        })
    }

    pub async fn goto(&self, url: &str) -> Result<()> {
        self.client.goto(url).await?;
        Ok(())
    }

    /// Polls `f` every 150 ms until it gives `Some`, or fails after `timeout` naming `what`
    /// and the page's text, so a failure says what the page showed instead.
    pub async fn wait<T, F, Fut>(&self, timeout: Duration, what: &str, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f().await {
                return Ok(v);
            }
            if Instant::now() > deadline {
                let page = self.body_text().await.unwrap_or_default();
                let url = self
                    .client
                    .current_url()
                    .await
                    .map(|u| u.to_string())
                    .unwrap_or_default();
                bail!("timed out after {timeout:?} waiting for {what}; page {url} shows:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// The element matching `css`, once it is there.
    pub async fn el(&self, css: &str) -> Result<fantoccini::elements::Element> {
        self.wait(
            Duration::from_secs(20),
            &format!("element {css}"),
            || async { self.client.find(Locator::Css(css)).await.ok() },
        )
        .await
    }

    /// Waits until the element matching `css` shows text containing `text`; returns its text.
    pub async fn wait_text(&self, css: &str, text: &str, timeout: Duration) -> Result<String> {
        self.wait(timeout, &format!("{css} to show {text:?}"), || async {
            let t = self
                .client
                .find(Locator::Css(css))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            t.contains(text).then_some(t)
        })
        .await
    }

    pub async fn click(&self, css: &str) -> Result<()> {
        self.el(css).await?.click().await?;
        Ok(())
    }

    /// Replaces the value of the input or textarea matching `css`.
    pub async fn fill(&self, css: &str, value: &str) -> Result<()> {
        let e = self.el(css).await?;
        e.clear().await?;
        e.send_keys(value).await?;
        Ok(())
    }

    pub async fn select(&self, css: &str, value: &str) -> Result<()> {
        self.wait(
            Duration::from_secs(20),
            &format!("option {value} of {css}"),
            || async {
                let e = self.client.find(Locator::Css(css)).await.ok()?;
                e.select_by_value(value).await.ok()
            },
        )
        .await
    }

    /// An attribute of the element matching `css`, if both are there.
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.client
            .find(Locator::Css(css))
            .await
            .ok()?
            .attr(name)
            .await
            .ok()
            .flatten()
    }

    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map(|v| v.len())
            .unwrap_or(0)
    }

    /// Sets the value of a form field by script (date inputs take keys in the browser's locale
    /// order) and tells the page it changed.
    pub async fn set_value(&self, css: &str, value: &str) -> Result<()> {
        self.el(css).await?;
        self.client
            .execute(
                "const e = document.querySelector(arguments[0]); e.value = arguments[1]; \
                 e.dispatchEvent(new Event('change', { bubbles: true }));",
                vec![css.into(), value.into()],
            )
            .await?;
        Ok(())
    }

    pub async fn body_text(&self) -> Result<String> {
        Ok(self.client.find(Locator::Css("body")).await?.text().await?)
    }

    /// Writes a PNG of the window to `<FERRY_SCREENSHOTS>/<name>.png` when that is set.
    pub async fn screenshot(&self, name: &str) -> Result<()> {
        let Some(dir) = &self.shots else {
            return Ok(());
        };
        std::fs::create_dir_all(dir)?;
        // Passing messages ("saved", "rerun requested") are not part of the page.
        self.client
            .execute(
                "document.getElementById('flash')?.replaceChildren()",
                vec![],
            )
            .await?;
        let png = self.client.screenshot().await?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).with_context(|| format!("write {}", path.display()))?;
        Ok(())
    }

    pub async fn close(self) -> Result<()> {
        self.client.close().await?;
        Ok(())
    }
}
