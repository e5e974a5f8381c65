//! Flows that outlive the bot and client identities that heal, on
//! loopback with the TypeScript SDK's OAuth example server.

use std::time::Duration;

use fake_telegram::{FakeTelegram, SentMessage};
use test_peers::{TsDemoServer, browser};

use crate::support::bot::{BotProcess, base_config, demo_server};
use crate::support::free_port;
use crate::support::text_contains;

const WAIT: Duration = Duration::from_secs(60);

/// A config whose callback port is fixed, so links stay valid across a
/// restart of the bot.
fn fixed_port_config(telegram: &FakeTelegram, dir: &std::path::Path, port: u16) -> String {
    base_config(telegram, dir).replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
}

fn link_of(message: &SentMessage) -> String {
    message.url_buttons()[0].1.clone()
}

fn client_id_of(link: &str) -> String {
    url::Url::parse(link)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "client_id")
        .map(|(_, v)| v.into_owned())
        .expect("the link names its client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_between_connect_and_callback_loses_nothing() {
    let demo = TsDemoServer::start().await;
    let telegram = FakeTelegram::start().await;
    let port = free_port();
    let mcp_url = demo.mcp_url();
    let bot = BotProcess::start(&telegram, |dir| {
        fixed_port_config(&telegram, dir, port) + &demo_server(&mcp_url)
    })
    .await;
    let alice = telegram.user(1001, "Alice");
    telegram.send_private(&alice, "/connect demo");
    let offer = telegram
        .wait_for_message(1001, WAIT, |m| !m.url_buttons().is_empty())
        .await;

    let (bot, _) = bot.restart(&telegram).await;
    let visit = browser::open(&link_of(&offer)).await;
    assert_eq!(visit.status, 200, "{}", visit.body);
    telegram
        .wait_for_message(1001, WAIT, text_contains("Connected to Demo"))
        .await;
    telegram.send_private(&alice, "/call demo greet {\"name\": \"Alice\"}");
    telegram
        .wait_for_message(1001, WAIT, text_contains("Hello, Alice!"))
        .await;
    bot.stop().await;
    telegram.assert_no_errors();
}

/// The example server keeps registrations in memory: restarted, it has
/// forgotten the bot's client. The next /connect notices (the token
/// endpoint answers `invalid_client` to a probe), registers once more,
/// and that new client serves everyone after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_the_server_forgot_is_replaced_once() {
    let demo = TsDemoServer::start().await;
    let telegram = FakeTelegram::start().await;
    let mcp_url = demo.mcp_url();
    let bot = BotProcess::start(&telegram, |dir| {
        base_config(&telegram, dir) + &demo_server(&mcp_url)
    })
    .await;
    let connect = |id: u64, name: &'static str| {
        let telegram = telegram.clone();
        async move {
            let user = telegram.user(id, name);
            telegram.send_private(&user, "/connect demo");
            let offer = telegram
                .wait_for_message(id as i64, WAIT, |m| !m.url_buttons().is_empty())
                .await;
            let link = link_of(&offer);
            let visit = browser::open(&link).await;
            assert_eq!(visit.status, 200, "{name}: {}", visit.body);
            telegram
                .wait_for_message(id as i64, WAIT, text_contains("Connected to Demo"))
                .await;
            client_id_of(&link)
        }
    };
    let first = connect(1, "Alice").await;
    let demo = demo.restart().await;
    let second = connect(2, "Bob").await;
    assert_ne!(
        first, second,
        "a new client after the server forgot the old one"
    );
    let third = connect(3, "Carol").await;
    assert_eq!(
        second, third,
        "the new client is reused, not registered again"
    );
    bot.stop().await;
    drop(demo);
    telegram.assert_no_errors();
}

/// A link left unused runs out: its message is edited to say so, with a
/// button for a new one, which works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_link_is_edited_and_offers_a_new_one() {
    let demo = TsDemoServer::start().await;
    let telegram = FakeTelegram::start().await;
    let mcp_url = demo.mcp_url();
    let bot = BotProcess::start(&telegram, |dir| {
        base_config(&telegram, dir) + "\n[oauth]\nflow_ttl = \"10s\"\n" + &demo_server(&mcp_url)
    })
    .await;
    let alice = telegram.user(1001, "Alice");
    telegram.send_private(&alice, "/connect demo");
    let offer = telegram
        .wait_for_message(1001, WAIT, |m| !m.url_buttons().is_empty())
        .await;
    assert!(
        offer.text.contains("expires in 10 seconds"),
        "{}",
        offer.text
    );

    let expired = telegram
        .wait_for_message(1001, WAIT, |m| {
            m.edited && m.text.contains("expired unused")
        })
        .await;
    assert_eq!(
        expired.message_id, offer.message_id,
        "the link's own message"
    );
    assert!(expired.url_buttons().is_empty(), "the dead link is gone");
    let stale = browser::open(&link_of(&offer)).await;
    assert_eq!(stale.status, 400, "{}", stale.body);

    let (_, data) = expired.callback_buttons()[0].clone();
    let query = telegram.press_callback_button(&alice, 1001, expired.message_id, &data);
    let fresh = telegram
        .wait_for_message(1001, WAIT, |m| !m.edited && !m.url_buttons().is_empty())
        .await;
    assert_ne!(link_of(&fresh), link_of(&offer));
    let visit = browser::open(&link_of(&fresh)).await;
    assert_eq!(visit.status, 200, "{}", visit.body);
    telegram
        .wait_for_message(1001, WAIT, text_contains("Connected to Demo"))
        .await;
    assert!(
        telegram
            .calls()
            .iter()
            .any(|c| c.method == "answercallbackquery" && c.params["callback_query_id"] == query),
        "the button press was answered"
    );
    bot.stop().await;
    telegram.assert_no_errors();
}

/// The authorization server is down when the browser comes back: the flow
/// is kept and the page offers to try again, rather than a dead link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_while_the_server_is_down_keeps_the_flow_for_a_retry() {
    let demo = TsDemoServer::start().await;
    let telegram = FakeTelegram::start().await;
    let mcp_url = demo.mcp_url();
    let bot = BotProcess::start(&telegram, |dir| {
        base_config(&telegram, dir) + &demo_server(&mcp_url)
    })
    .await;
    let alice = telegram.user(1001, "Alice");
    telegram.send_private(&alice, "/connect demo");
    let offer = telegram
        .wait_for_message(1001, WAIT, |m| !m.url_buttons().is_empty())
        .await;
    // Approve at the authorization server, but stop before the callback.
    let approved = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(link_of(&offer))
        .send()
        .await
        .unwrap();
    let callback = approved
        .headers()
        .get("location")
        .unwrap_or_else(|| panic!("the AS redirects: {approved:?}"))
        .to_str()
        .unwrap()
        .to_owned();
    assert!(callback.contains("/oauth/callback?code="), "{callback}");

    let ports = (demo.mcp_port(), demo.auth_port());
    drop(demo);
    let down = browser::open(&callback).await;
    assert_eq!(down.status, 502, "{}", down.body);
    assert!(down.body.contains("Try again"), "{}", down.body);
    assert!(down.body.contains("approval is kept"), "{}", down.body);

    // Back up (a fresh process: it has forgotten the code it issued). The
    // retry finds the flow; this server now refuses the code for good.
    let demo = TsDemoServer::start_on(ports).await;
    let retry = browser::open(&callback).await;
    assert!(
        !retry.body.contains("already used"),
        "the flow was kept: {}",
        retry.body
    );
    assert!(retry.body.contains("did not accept"), "{}", retry.body);
    telegram
        .wait_for_message(1001, WAIT, text_contains("Connecting to Demo failed"))
        .await;
    bot.stop().await;
    drop(demo);
}

/// A reconnect that fails (the user declines at the server) leaves the
/// tokens of the earlier connection alone: they are replaced only by a
/// successful exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reconnect_keeps_the_working_connection() {
    let demo = TsDemoServer::start().await;
    let telegram = FakeTelegram::start().await;
    let mcp_url = demo.mcp_url();
    let bot = BotProcess::start(&telegram, |dir| {
        base_config(&telegram, dir) + &demo_server(&mcp_url)
    })
    .await;
    let alice = telegram.user(1001, "Alice");
    telegram.send_private(&alice, "/connect demo");
    let offer = telegram
        .wait_for_message(1001, WAIT, |m| !m.url_buttons().is_empty())
        .await;
    assert_eq!(browser::open(&link_of(&offer)).await.status, 200);
    telegram
        .wait_for_message(1001, WAIT, text_contains("Connected to Demo"))
        .await;

    telegram.send_private(&alice, "/connect demo");
    let again = telegram
        .wait_for_message(1001, WAIT, text_contains("already connected"))
        .await;
    let state = url::Url::parse(&link_of(&again))
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let redirect = url::Url::parse(&link_of(&again))
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .unwrap()
        .1
        .into_owned();
    let declined = browser::open(&format!("{redirect}?error=access_denied&state={state}")).await;
    assert_eq!(declined.status, 400, "{}", declined.body);
    telegram
        .wait_for_message(1001, WAIT, text_contains("Connecting to Demo failed"))
        .await;

    telegram.send_private(&alice, "/call demo greet {\"name\": \"Alice\"}");
    telegram
        .wait_for_message(1001, WAIT, text_contains("Hello, Alice!"))
        .await;
    bot.stop().await;
    telegram.assert_no_errors();
}

/// /connect is rate-limited per user: past the limit, a plain answer with
/// when to try again, and no new link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_links_are_rate_limited_per_user() {
    let demo = TsDemoServer::start().await;
    let telegram = FakeTelegram::start().await;
    let mcp_url = demo.mcp_url();
    let bot = BotProcess::start(&telegram, |dir| {
        base_config(&telegram, dir)
            + "\n[limits]\nconnects_per_minute = 2\n"
            + &demo_server(&mcp_url)
    })
    .await;
    let alice = telegram.user(1001, "Alice");
    for _ in 0..2 {
        telegram.send_private(&alice, "/connect demo");
        telegram
            .wait_for_message(1001, WAIT, |m| !m.url_buttons().is_empty())
            .await;
    }
    telegram.send_private(&alice, "/connect demo");
    let refused = telegram
        .wait_for_message(1001, WAIT, text_contains("too often"))
        .await;
    assert!(refused.url_buttons().is_empty());
    assert!(refused.text.contains("try again in"), "{}", refused.text);
    let bob = telegram.user(2002, "Bob");
    telegram.send_private(&bob, "/connect demo");
    telegram
        .wait_for_message(2002, WAIT, |m| !m.url_buttons().is_empty())
        .await;
    bot.stop().await;
    telegram.assert_no_errors();
}
