//! The stricter authorization server (oidc-provider) and its MCP resource
//! server, in a real browser: its own login and consent forms, PKCE
//! required, `iss` in the response, JWT access tokens for this one
//! resource.

use std::time::Duration;

use fake_telegram::FakeTelegram;
use test_peers::{Chromedriver, OidcMcpServer};

use crate::support::bot::{BotProcess, base_config};
use crate::support::text_contains;

const WAIT: Duration = Duration::from_secs(60);

pub fn oidc_server(url: &str) -> String {
    format!(
        "\n[[mcp.servers]]\nid = \"oidc\"\nname = \"Oidc\"\nurl = \"{url}\"\ntrusted = true\ntimeout_secs = 20\n[mcp.servers.oauth]\nenabled = true\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_signs_in_through_the_servers_own_forms_and_calls_as_themself() {
    let oidc = OidcMcpServer::start().await;
    let telegram = FakeTelegram::start().await;
    let mcp_url = oidc.mcp_url();
    let bot = BotProcess::start(&telegram, |dir| {
        base_config(&telegram, dir) + &oidc_server(&mcp_url)
    })
    .await;
    let alice = telegram.user(1001, "Alice");
    telegram.send_private(&alice, "/connect oidc");
    let offer = telegram
        .wait_for_message(1001, WAIT, |m| !m.url_buttons().is_empty())
        .await;
    let link = offer.url_buttons()[0].1.clone();
    assert!(link.contains("resource="), "RFC 8707 resource: {link}");

    let chrome = Chromedriver::start().await;
    let browser = chrome.browser().await;
    let (_, page) = browser.open(&link).await;
    assert!(page.contains("Sign-in"), "the server's login form: {page}");
    browser.fill("login", "alice@example.org").await;
    browser.fill("password", "anything").await;
    let (_, page) = browser.click_button().await;
    assert!(page.contains("Authorize"), "the consent form: {page}");
    let (at, page) = browser.click_button().await;
    assert_eq!(at.path(), "/oauth/callback", "{at}");
    assert!(
        at.query_pairs()
            .any(|(k, v)| k == "iss" && v == oidc.issuer()),
        "RFC 9207 iss in the response: {at}"
    );
    assert!(page.contains("Connected to Oidc"), "{page}");
    telegram
        .wait_for_message(1001, WAIT, text_contains("Connected to Oidc"))
        .await;
    browser.close().await;

    telegram.send_private(&alice, "/call oidc whoami");
    let whoami = telegram
        .wait_for_message(1001, WAIT, text_contains("sub="))
        .await;
    assert!(
        whoami.text.contains("sub=alice@example.org"),
        "{}",
        whoami.text
    );
    assert_eq!(oidc.stats().await["codes"], 1);

    bot.stop().await;
    telegram.assert_no_errors();
}
