//! Two replicas on one PostgreSQL behind a round-robin front, as an admin
//! runs them for availability: Telegram's webhook and the browser's
//! callback land on either, and the journey does not care which.

use std::time::Duration;

use fake_telegram::FakeTelegram;
use test_peers::TsDemoServer;
use test_peers::round_robin::RoundRobin;

use crate::support::bot::{BotProcess, demo_server};
use crate::support::replicas::{SECRET, Shared};
use crate::support::text_contains;

const WAIT: Duration = Duration::from_secs(60);
/// What Alice's browser does with the link: continue on the bot's start
/// page (which binds the flow to this browser with a cookie), approve at
/// the authorization server, land on the callback with the cookie.
/// Answers the last page's status and body.
async fn approve(link: &str, public: &str) -> (u16, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let taken = client
        .post(link)
        .header("origin", public)
        .send()
        .await
        .unwrap();
    assert_eq!(taken.status(), 303, "the start page's Continue");
    let cookie = taken.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let mut url = url::Url::parse(taken.headers()["location"].to_str().unwrap()).unwrap();
    for _ in 0..10 {
        let mut request = client.get(url.clone());
        if url.as_str().starts_with(public) {
            request = request.header("cookie", &cookie);
        }
        let page = request.send().await.unwrap();
        if page.status().is_redirection() {
            url = url
                .join(page.headers()["location"].to_str().unwrap())
                .unwrap();
            continue;
        }
        return (page.status().as_u16(), page.text().await.unwrap());
    }
    panic!("too many redirects, at {url}");
}

/// The webhook request that carried the last update, by replica.
fn last_webhook(front: &RoundRobin) -> usize {
    front
        .served()
        .iter()
        .rev()
        .find(|(path, _)| path == "/telegram/webhook")
        .map(|(_, replica)| *replica)
        .expect("an update came through the front")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_started_on_one_replica_completes_on_the_other() {
    let demo = TsDemoServer::start().await;
    let mcp = demo.mcp_url();
    let telegram = FakeTelegram::start().await;
    // Every replica seals with the same key.
    let shared = Shared::start();
    let (front, public) = (&shared.front, shared.public.as_str());
    let config =
        |dir: &std::path::Path, index| shared.config(&telegram, dir, index) + &demo_server(&mcp);
    let first = BotProcess::start_with_env(&telegram, &shared.env(), |dir| config(dir, 0)).await;
    let second = BotProcess::start_with_env(&telegram, &shared.env(), |dir| config(dir, 1)).await;
    let alice = telegram.user(1001, "Alice");

    telegram.send_private(&alice, "/connect demo");
    let offer = telegram
        .wait_for_message(1001, WAIT, |m| !m.url_buttons().is_empty())
        .await;
    let started_on = last_webhook(front);
    // The browser's callback goes to the other replica.
    front.pin_next("/oauth/callback", 1 - started_on);
    let (status, body) = approve(&offer.url_buttons()[0].1, public).await;
    assert_eq!(status, 200, "callback page: {body}");
    assert!(body.contains("Connected to Demo"), "{body}");
    assert!(
        front
            .served()
            .contains(&("/oauth/callback".to_owned(), 1 - started_on)),
        "{:?}",
        front.served()
    );
    telegram
        .wait_for_message(1001, WAIT, text_contains("Connected to Demo"))
        .await;

    // Two calls, one on each replica, both with Alice's token.
    let mut served_by = Vec::new();
    for _ in 0..2 {
        let before = telegram.message_count(1001);
        telegram.send_private(&alice, "/call demo greet {\"name\": \"Alice\"}");
        telegram
            .wait_for_message_after(1001, before, WAIT, text_contains("Hello, Alice!"))
            .await;
        served_by.push(last_webhook(front));
    }
    served_by.sort();
    assert_eq!(served_by, [0, 1], "each replica answered one call");

    let logs = first.stop().await + &second.stop().await;
    assert!(!logs.contains(SECRET), "the webhook secret in a log");
    telegram.assert_no_errors();
}
