//! Token lifecycle against a real authorization server (oidc-provider:
//! short-lived JWT access tokens, refresh tokens rotated with reuse
//! detection, revocation): renewals nobody notices, one refresh for many
//! concurrent calls, expired and revoked grants, step-up, disconnect.

use std::sync::Arc;
use std::time::Duration;

use fake_telegram::{FakeTelegram, FakeUser, SentMessage};
use mcpgram::config::{Config, ServerConfig};
use mcpgram::gateway::{FlowLink, Gateway};
use mcpgram::store::{FlowOwner, Stores};
use mcpgram::terminal::login::{Callback, Outcome};
use mcpgram::terminal::{AuthOptions, Target};
use test_peers::{Browser, Chromedriver, OidcMcpServer};

use crate::oidc::oidc_server;
use crate::support::bot::{BotProcess, base_config};
use crate::support::text_contains;

const WAIT: Duration = Duration::from_secs(60);

/// Approves a link at oidc-provider: its login form when it shows one (a
/// browser already signed in skips it), its consent form when it shows
/// one; returns the page the bot's callback answered with.
async fn approve(browser: &Browser, link: &str, login: &str) -> String {
    let (_, mut page) = browser.open(link).await;
    for _ in 0..4 {
        if page.contains("Connected to") {
            return page;
        }
        if page.contains("Sign-in") {
            browser.fill("login", login).await;
            browser.fill("password", "anything").await;
        }
        page = browser.click_button().await.1;
    }
    panic!("the authorization did not reach the bot's callback: {page}");
}

/// Waits out the access token's lifetime: time has to pass, there is no
/// event to wait for.
async fn outlive(ttl: Duration) {
    tokio::time::sleep(ttl + Duration::from_millis(600)).await;
}

fn link_of(message: &SentMessage) -> String {
    message.url_buttons()[0].1.clone()
}

async fn connect(telegram: &FakeTelegram, user: &FakeUser, browser: &Browser) {
    telegram.send_private(user, "/connect oidc");
    let offer = telegram
        .wait_for_message(user.id as i64, WAIT, |m| !m.url_buttons().is_empty())
        .await;
    approve(browser, &link_of(&offer), "alice@example.org").await;
    telegram
        .wait_for_message(user.id as i64, WAIT, text_contains("Connected to Oidc"))
        .await;
}

async fn call(telegram: &FakeTelegram, user: &FakeUser, command: &str) -> SentMessage {
    telegram.send_private(user, command);
    telegram
        .wait_for_message(user.id as i64, WAIT, |m| !m.text.starts_with("Connected"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_renew_across_expiries_and_a_restart_without_asking_again() {
    let ttl = Duration::from_secs(2);
    let oidc = OidcMcpServer::start_with_access_ttl(ttl.as_secs()).await;
    let telegram = FakeTelegram::start().await;
    let url = oidc.mcp_url();
    let mut bot = BotProcess::start(&telegram, |dir| {
        base_config(&telegram, dir) + &oidc_server(&url)
    })
    .await;
    let alice = telegram.user(1001, "Alice");
    let chrome = Chromedriver::start().await;
    let browser = chrome.browser().await;
    connect(&telegram, &alice, &browser).await;
    browser.close().await;

    for round in 0..3 {
        outlive(ttl).await;
        if round == 2 {
            bot = bot.restart(&telegram).await.0;
        }
        let answer = call(&telegram, &alice, "/call oidc whoami").await;
        assert!(
            answer.text.contains("sub=alice@example.org"),
            "round {round}: {}",
            answer.text
        );
    }
    let status = call(&telegram, &alice, "/status").await;
    assert!(
        status.text.contains("connected via localhost")
            && status.text.contains("refresh token held")
            && status.text.contains("mcp:tools"),
        "{}",
        status.text
    );
    let stats = oidc.stats().await;
    assert_eq!(stats["codes"], 1, "signed in once: {stats}");
    assert!(stats["refreshes"].as_u64() >= Some(3), "{stats}");
    assert_eq!(
        stats["grantsRevoked"], 0,
        "no refresh token reused: {stats}"
    );
    let offers = telegram
        .messages(1001)
        .iter()
        .filter(|m| !m.url_buttons().is_empty())
        .count();
    assert_eq!(offers, 1, "only the first /connect offered a link");
    bot.stop().await;
    telegram.assert_no_errors();
}

/// User 7 connects through `gateway`, signing in at oidc-provider as
/// alice in Chromium; answers once the callback says connected.
async fn connect_user_7(
    gateway: &Gateway,
    server: &Arc<ServerConfig>,
    outcomes: &mut tokio::sync::mpsc::UnboundedReceiver<Outcome>,
) {
    let owner = FlowOwner {
        user_id: 7,
        chat_id: 7,
    };
    let offer = gateway.start_connect(owner, "alice", server).await.unwrap();
    let FlowLink::Direct(link) = &offer.link else {
        panic!("loopback links go straight to the server");
    };
    let chrome = Chromedriver::start().await;
    let browser = chrome.browser().await;
    approve(&browser, link.expose(), "alice@example.org").await;
    browser.close().await;
    assert!(matches!(outcomes.recv().await, Some(Outcome::Connected)));
}

/// Runs `calls` at once, across a token expiry: every one succeeds, the
/// authorization server sees exactly one refresh, and no grant is revoked
/// (a refresh token spent twice would revoke it).
/// Access tokens' lifetime in the refresh-once tests. Tokens are renewed
/// with half their life left (a second, for 2 s tokens), so the renewed
/// token must stay fresh while all the calls run, on a loaded machine too:
/// with 2 s tokens a slow run renewed again mid-way.
const CONCURRENT_TTL: Duration = Duration::from_secs(6);

async fn all_with_one_refresh<T: std::fmt::Debug, E: std::fmt::Debug>(
    oidc: &OidcMcpServer,
    calls: impl Iterator<Item = impl Future<Output = Result<T, E>>>,
) {
    let before = oidc.stats().await["refreshes"].as_u64().unwrap();
    let results = futures_util::future::join_all(calls).await;
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(failed.is_empty(), "{failed:?}");
    let stats = oidc.stats().await;
    assert_eq!(
        stats["refreshes"].as_u64().unwrap() - before,
        1,
        "one refresh for every call: {stats}"
    );
    assert_eq!(stats["grantsRevoked"], 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_calls_across_an_expiry_refresh_once() {
    let ttl = CONCURRENT_TTL;
    let oidc = OidcMcpServer::start_with_access_ttl(ttl.as_secs()).await;
    let vault = tempfile::tempdir().unwrap();
    let mut config = Config::standalone(vault.path().to_path_buf());
    let target = Target::parse(&oidc.mcp_url());
    let server = target.server(&config, &AuthOptions::default()).unwrap();
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
    connect_user_7(&gateway, &server, &mut outcomes).await;

    // A session is open and its token has expired when 50 calls arrive.
    gateway
        .call_tool(7, &server, "whoami", None, None)
        .await
        .expect("the first call");
    outlive(ttl).await;
    let calls = (0..50).map(|_| gateway.call_tool(7, &server, "whoami", None, None));
    all_with_one_refresh(&oidc, calls).await;
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_asks_again_and_the_command_then_answers() {
    let ttl = Duration::from_secs(2);
    let oidc = OidcMcpServer::start_with_access_ttl(ttl.as_secs()).await;
    let telegram = FakeTelegram::start().await;
    let url = oidc.mcp_url();
    let bot = BotProcess::start(&telegram, |dir| {
        base_config(&telegram, dir) + &oidc_server(&url)
    })
    .await;
    let alice = telegram.user(1001, "Alice");
    let chrome = Chromedriver::start().await;
    let browser = chrome.browser().await;
    connect(&telegram, &alice, &browser).await;

    assert_eq!(oidc.revoke_grants().await, 1);
    outlive(ttl).await;
    telegram.send_private(&alice, "/call oidc greet {\"name\": \"Ann\"}");
    let offer = telegram
        .wait_for_message(1001, WAIT, |m| !m.url_buttons().is_empty())
        .await;
    assert!(
        offer.text.contains("Your Oidc connection has expired"),
        "{}",
        offer.text
    );
    approve(&browser, &link_of(&offer), "alice@example.org").await;
    telegram
        .wait_for_message(1001, WAIT, text_contains("Running your command"))
        .await;
    let answer = telegram
        .wait_for_message(1001, WAIT, text_contains("Hello, Ann!"))
        .await;
    assert!(answer.url_buttons().is_empty());
    browser.close().await;
    bot.stop().await;
    telegram.assert_no_errors();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_up_asks_for_the_union_and_reruns_the_call() {
    let oidc = OidcMcpServer::start().await;
    let telegram = FakeTelegram::start().await;
    let url = oidc.mcp_url();
    let bot = BotProcess::start(&telegram, |dir| {
        base_config(&telegram, dir) + &oidc_server(&url)
    })
    .await;
    let alice = telegram.user(1001, "Alice");
    let chrome = Chromedriver::start().await;
    let browser = chrome.browser().await;
    connect(&telegram, &alice, &browser).await;

    telegram.send_private(&alice, "/call oidc admin_report");
    let offer = telegram
        .wait_for_message(1001, WAIT, |m| !m.url_buttons().is_empty())
        .await;
    assert!(
        offer
            .text
            .contains("Oidc needs more permission (mcp:tools mcp:admin)"),
        "{}",
        offer.text
    );
    let link = link_of(&offer);
    let scope = url::Url::parse(&link)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "scope")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    assert!(
        scope.contains("mcp:tools") && scope.contains("mcp:admin"),
        "granted and required scopes together: {scope}"
    );
    approve(&browser, &link, "alice@example.org").await;
    let answer = telegram
        .wait_for_message(1001, WAIT, text_contains("admin report for"))
        .await;
    assert!(answer.text.contains("alice@example.org"), "{}", answer.text);

    // A tool that refuses whatever is granted: three step-ups, then the
    // bot stops asking.
    telegram.send_private(&alice, "/call oidc stubborn");
    for attempt in 1..=3 {
        let offer = telegram
            .wait_for_message(1001, WAIT, |m| !m.url_buttons().is_empty())
            .await;
        assert!(
            offer.text.contains("needs more permission"),
            "attempt {attempt}: {}",
            offer.text
        );
        approve(&browser, &link_of(&offer), "alice@example.org").await;
    }
    let stop = telegram
        .wait_for_message(1001, WAIT, text_contains("stopped asking"))
        .await;
    assert!(stop.url_buttons().is_empty(), "{}", stop.text);
    browser.close().await;
    bot.stop().await;
    telegram.assert_no_errors();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_revokes_at_the_server_and_forgets_the_tokens() {
    let oidc = OidcMcpServer::start().await;
    let telegram = FakeTelegram::start().await;
    let url = oidc.mcp_url();
    let bot = BotProcess::start(&telegram, |dir| {
        base_config(&telegram, dir) + &oidc_server(&url)
    })
    .await;
    let alice = telegram.user(1001, "Alice");
    let chrome = Chromedriver::start().await;
    let browser = chrome.browser().await;
    connect(&telegram, &alice, &browser).await;
    browser.close().await;

    let answer = call(&telegram, &alice, "/disconnect oidc").await;
    assert!(
        answer.text.contains("the server revoked the bot's access"),
        "{}\n{}",
        answer.text,
        bot.logs()
    );
    let stats = oidc.stats().await;
    assert_eq!(stats["revocations"], 2, "refresh and access token: {stats}");
    assert_eq!(stats["grantsRevoked"], 1, "{stats}");
    let status = call(&telegram, &alice, "/status").await;
    assert!(status.text.contains("not connected"), "{}", status.text);
    let again = call(&telegram, &alice, "/call oidc whoami").await;
    assert!(
        again.text.contains("You are not connected to Oidc"),
        "{}",
        again.text
    );
    bot.stop().await;
    telegram.assert_no_errors();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_token_endpoint_keeps_the_connection() {
    let ttl = Duration::from_secs(2);
    let oidc = OidcMcpServer::start_with_access_ttl(ttl.as_secs()).await;
    let telegram = FakeTelegram::start().await;
    let url = oidc.mcp_url();
    let bot = BotProcess::start(&telegram, |dir| {
        base_config(&telegram, dir) + &oidc_server(&url)
    })
    .await;
    let alice = telegram.user(1001, "Alice");
    let chrome = Chromedriver::start().await;
    let browser = chrome.browser().await;
    connect(&telegram, &alice, &browser).await;
    browser.close().await;

    oidc.fail_token_requests(1).await;
    outlive(ttl).await;
    let answer = call(&telegram, &alice, "/call oidc whoami").await;
    assert!(
        answer.text.contains("sub=alice@example.org"),
        "a passing failure is retried: {}\n{}",
        answer.text,
        bot.logs()
    );
    let stats = oidc.stats().await;
    assert_eq!(stats["tokenFailures"], 1, "{stats}");
    assert_eq!(stats["grantsRevoked"], 0, "{stats}");
    bot.stop().await;
    telegram.assert_no_errors();
}

/// Two replicas (two gateways, each with its own sessions) on one
/// PostgreSQL store: 25 calls on each, all across one expiry, renew the
/// token once between them. A rotating refresh token is spent once, and
/// the replica that waited uses the token the other one got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_two_replicas_across_an_expiry_refresh_once() {
    let cluster = test_peers::postgres::cluster();
    let db = cluster.database();
    let ttl = CONCURRENT_TTL;
    let oidc = OidcMcpServer::start_with_access_ttl(ttl.as_secs()).await;
    let vault = tempfile::tempdir().unwrap();
    let mut config = Config::standalone(vault.path().to_path_buf());
    let target = Target::parse(&oidc.mcp_url());
    let server = target.server(&config, &AuthOptions::default()).unwrap();
    config.servers.push(server.clone());
    config.store = mcpgram::config::StoreConfig::Postgres {
        url: mcpgram::secret::Secret::new(db.url.clone()),
        lease: std::time::Duration::from_secs(60),
    };
    let config = Arc::new(config);
    let vault = mcpgram::app::open_vault(&config).await.unwrap();
    let (callback, mut outcomes) = Callback::bind(&config).await.unwrap();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let (stores, _database) = mcpgram::app::open_stores(&config, vault.clone())
            .await
            .unwrap();
        replicas.push(Arc::new(Gateway::new(
            config.clone(),
            stores,
            callback.redirect_uri(),
            callback.notifier(),
        )));
    }
    callback.serve(replicas[0].clone());
    connect_user_7(&replicas[1], &server, &mut outcomes).await;

    // A session open on each replica, its token expired when the calls come.
    for replica in &replicas {
        replica
            .call_tool(7, &server, "whoami", None, None)
            .await
            .expect("the first call");
    }
    outlive(ttl).await;
    let calls = (0..50).map(|n| replicas[n % 2].call_tool(7, &server, "whoami", None, None));
    all_with_one_refresh(&oidc, calls).await;
    for replica in replicas {
        replica.shutdown().await;
    }
}
