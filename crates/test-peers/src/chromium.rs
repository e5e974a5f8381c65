//! A real browser for the tests: Debian's Chromium, driven over WebDriver
//! (chromedriver) with fantoccini. Cookies, forms, redirects and
//! same-site rules are only honest in a real browser.
//!
//! Each [`Browser`] is its own profile (a fresh user-data dir): two of
//! them are two people's browsers, sharing nothing.

use std::net::{Ipv4Addr, TcpListener};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use serde_json::{Map, Value, json};
use tokio::process::{Child, Command};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A running chromedriver; dropping it stops it.
pub struct Chromedriver {
    child: Child,
    url: String,
}

impl Chromedriver {
    /// Starts chromedriver on a free loopback port and waits until it
    /// answers.
    ///
    /// # Panics
    /// If Chromium or chromedriver is not installed (`tests/setup.sh`
    /// installs Debian's `chromium` and `chromium-driver`).
    pub async fn start() -> Self {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: run tests/setup.sh (it installs Debian's chromium and chromium-driver)"
            );
        }
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = client.get(&status).send().await
                && response.status().is_success()
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not answer within 30 s"
            );
            // chromedriver has no readiness signal but its own port.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, url }
    }

    /// A new browser with a profile of its own.
    pub async fn browser(&self) -> Browser {
        let profile = tempfile::tempdir().expect("a profile dir");
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            // Pages may name other hosts (a web font, say): those fail at
            // once instead of asking a DNS server. Tests stay on loopback.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"
                .to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut caps = Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            json!({ "binary": CHROMIUM, "args": args }),
        );
        // The test's https front has a certificate of its own making.
        caps.insert("acceptInsecureCerts".to_owned(), Value::Bool(true));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a WebDriver session");
        Browser {
            client,
            _profile: profile,
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// One person's browser.
pub struct Browser {
    pub client: Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Opens `url` and returns where the browser ended up and the page's
    /// visible text.
    pub async fn open(&self, url: &str) -> (url::Url, String) {
        self.client.goto(url).await.expect("navigation");
        self.here().await
    }

    /// The current address and the page's visible text.
    pub async fn here(&self) -> (url::Url, String) {
        let at = self.client.current_url().await.expect("current url");
        let text = match self.client.find(fantoccini::Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        (at, text)
    }

    /// Clicks the first button of the page and waits for the page the
    /// click leads to.
    pub async fn click_button(&self) -> (url::Url, String) {
        let button = self
            .client
            .find(fantoccini::Locator::Css("button, input[type=submit]"))
            .await
            .expect("a button on the page");
        button.click().await.expect("click");
        Self::wait_until_gone(&button).await;
        self.here().await
    }

    /// Types `text` into the input `name` of the page.
    pub async fn fill(&self, name: &str, text: &str) {
        self.client
            .find(fantoccini::Locator::Css(&format!("input[name='{name}']")))
            .await
            .unwrap_or_else(|_| panic!("an input named {name}"))
            .send_keys(text)
            .await
            .expect("typing");
    }

    /// Waits until `element`'s page has been replaced. WebDriver reports no
    /// navigation events; an element of a page that is gone answers
    /// nothing but "stale", so it is asked until it does.
    async fn wait_until_gone(element: &fantoccini::elements::Element) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while element.attr("type").await.is_ok() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the page did not change within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The browser's cookies for the current page's site.
    pub async fn cookies(&self) -> Vec<cookie::Cookie<'static>> {
        self.client.get_all_cookies().await.expect("cookies")
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
