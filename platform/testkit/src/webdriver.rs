//! Debian's headless Chromium driven through chromedriver's W3C WebDriver
//! HTTP API: enough to open a page, read it with a script and take a
//! screenshot (the dashboard's browser test and its screenshot example).

// Test support: a panic is how a test reports a broken browser.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// chromedriver: `FLEET_TEST_CHROMEDRIVER`, else Debian's or a local one;
/// `None` after reporting the test skipped (the one skip policy: under `CI`
/// a missing chromedriver fails the test).
pub fn chromedriver() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("FLEET_TEST_CHROMEDRIVER") {
        return Some(PathBuf::from(p));
    }
    let found = ["/usr/bin/chromedriver", "/usr/local/bin/chromedriver"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        crate::skip("chromedriver not found (run scripts/browser)");
    }
    found
}

/// A WebDriver session on headless Chromium, through its own chromedriver
/// (killed when the returned [`Child`] is dropped).
pub struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
}

impl Browser {
    /// Starts chromedriver (`driver`) on a free port and opens a session of
    /// `/usr/bin/chromium`, headless, with a `width`×`height` window.
    ///
    /// # Panics
    /// When chromedriver cannot start or opens no session.
    pub async fn start(driver: &Path, width: u32, height: u32) -> (Child, Self) {
        let port = crate::net::closed_port().port();
        let chromedriver = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && r.status().is_success()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--hide-scrollbars",
                         format!("--window-size={width},{height}")]
            }
        }}});
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_owned();
        (
            chromedriver,
            Self {
                http,
                base,
                session,
            },
        )
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r: Value = req.send().await.unwrap().json().await.unwrap();
        r["value"].clone()
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// Runs `script` in the page; its return value.
    pub async fn script(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Writes a PNG of the window to `to`.
    ///
    /// # Panics
    /// When the browser sends no image or `to` cannot be written.
    pub async fn screenshot(&self, to: &Path) {
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(
                b64.as_str()
                    .unwrap_or_else(|| panic!("no screenshot: {b64}")),
            )
            .unwrap();
        std::fs::write(to, png).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    }

    /// Ends the session.
    pub async fn close(&self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
    }
}
