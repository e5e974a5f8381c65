//! Token lifecycle numbers, against oidc-provider on loopback (the test
//! peer; `tests/setup.sh` installs it and Chromium, which signs in once):
//!
//! - a warm call's latency (p50, p95) through the whole engine: session,
//!   OAuth layer, vault read, MCP round trip;
//! - how long calls wait while one refresh is in flight: 50 concurrent
//!   calls just after the access token expired, against 50 on a fresh one;
//! - refreshes per token lifetime for a user calling without a pause.
//!
//! `cargo bench --bench lifecycle`
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcpgram::config::Config;
use mcpgram::gateway::{FlowLink, Gateway};
use mcpgram::store::{FlowOwner, Stores};
use mcpgram::terminal::login::{Callback, Outcome};
use mcpgram::terminal::{AuthOptions, Target};
use test_peers::{Chromedriver, OidcMcpServer};

const USER: u64 = 7;

struct Rig {
    oidc: OidcMcpServer,
    gateway: Arc<Gateway>,
    server: Arc<mcpgram::config::ServerConfig>,
    _vault: tempfile::TempDir,
}

async fn rig(access_ttl: u64) -> Rig {
    let oidc = OidcMcpServer::start_with_access_ttl(access_ttl).await;
    let vault = tempfile::tempdir().unwrap();
    let mut config = Config::standalone(vault.path().to_path_buf());
    let server = Target::parse(&oidc.mcp_url())
        .server(&config, &AuthOptions::default())
        .unwrap();
    config.servers.push(server.clone());
    let config = Arc::new(config);
    let store = mcpgram::app::open_vault(&config).await.unwrap();
    let (callback, mut outcomes) = Callback::bind(&config).await.unwrap();
    let gateway = Arc::new(Gateway::new(
        config.clone(),
        Stores::with_flows_in_memory(store),
        callback.redirect_uri(),
        callback.notifier(),
    ));
    callback.serve(gateway.clone());
    let owner = FlowOwner {
        user_id: USER,
        chat_id: USER as i64,
    };
    let offer = gateway
        .start_connect(owner, "bench", &server)
        .await
        .unwrap();
    let FlowLink::Direct(link) = &offer.link else {
        panic!("loopback links go straight to the server");
    };
    let chrome = Chromedriver::start().await;
    let browser = chrome.browser().await;
    let (_, mut page) = browser.open(link.expose()).await;
    for _ in 0..4 {
        if page.contains("Connected to") {
            break;
        }
        if page.contains("Sign-in") {
            browser.fill("login", "bench@example.org").await;
            browser.fill("password", "x").await;
        }
        page = browser.click_button().await.1;
    }
    browser.close().await;
    assert!(matches!(outcomes.recv().await, Some(Outcome::Connected)));
    Rig {
        oidc,
        gateway,
        server,
        _vault: vault,
    }
}

impl Rig {
    async fn call(&self) -> Duration {
        let start = Instant::now();
        self.gateway
            .call_tool(USER, &self.server, "whoami", None, None)
            .await
            .expect("whoami");
        start.elapsed()
    }

    async fn concurrent(&self, n: usize) -> Vec<Duration> {
        let calls = (0..n).map(|_| self.call());
        let mut took = futures_util::future::join_all(calls).await;
        took.sort();
        took
    }

    async fn refreshes(&self) -> u64 {
        self.oidc.stats().await["refreshes"].as_u64().unwrap()
    }
}

fn at(sorted: &[Duration], quantile: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * quantile).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let warm = rig(3600).await;
    for _ in 0..20 {
        warm.call().await;
    }
    let mut took = Vec::new();
    for _ in 0..500 {
        took.push(warm.call().await);
    }
    took.sort();
    println!(
        "warm call, 500 sequential: p50 {}, p95 {}",
        ms(at(&took, 0.5)),
        ms(at(&took, 0.95))
    );

    let ttl = 4;
    let expiring = rig(ttl).await;
    expiring.call().await;
    let fresh = expiring.concurrent(50).await;
    tokio::time::sleep(Duration::from_secs(ttl) + Duration::from_millis(500)).await;
    let before = expiring.refreshes().await;
    let during = expiring.concurrent(50).await;
    let refreshed = expiring.refreshes().await - before;
    println!(
        "50 concurrent calls, fresh token: p50 {}, max {}",
        ms(at(&fresh, 0.5)),
        ms(at(&fresh, 1.0))
    );
    println!(
        "50 concurrent calls, expired token: p50 {}, max {}; refreshes at the server: {refreshed}",
        ms(at(&during, 0.5)),
        ms(at(&during, 1.0))
    );

    // A user calling without a pause for 3 token lifetimes.
    let start = Instant::now();
    let before = expiring.refreshes().await;
    let mut calls = 0;
    while start.elapsed() < Duration::from_secs(3 * ttl) {
        expiring.call().await;
        calls += 1;
    }
    println!(
        "{calls} back-to-back calls over {} s with {ttl} s tokens: {} refreshes",
        3 * ttl,
        expiring.refreshes().await - before
    );
    expiring.gateway.shutdown().await;
    warm.gateway.shutdown().await;
}
