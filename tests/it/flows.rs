//! Flows that outlive the bot and client identities that heal, on
//! loopback with the TypeScript SDK's OAuth example server.

use std::time::Duration;

use fake_telegram::{FakeTelegram, SentMessage};
use test_peers::{TsDemoServer, browser};

use crate::support::bot::{BotProcess, base_config};
use crate::support::text_contains;

const WAIT: Duration = Duration::from_secs(60);

fn demo_server(url: &str) -> String {
    format!(
        "\n[[mcp.servers]]\nid = \"demo\"\nname = \"Demo\"\nurl = \"{url}\"\ntrusted = true\ntimeout_secs = 20\n[mcp.servers.oauth]\nenabled = true\n"
    )
}

/// A config whose callback port is fixed, so links stay valid across a
/// restart of the bot.
fn fixed_port_config(telegram: &FakeTelegram, dir: &std::path::Path, port: u16) -> String {
    base_config(telegram, dir).replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
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
