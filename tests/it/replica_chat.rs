//! The chat across replicas: `/cancel` and a running call's Cancel button
//! that land on another replica than the one running the call, and replies
//! to questions another replica asked. The replicas pass them on through
//! PostgreSQL.

use std::time::Duration;

use fake_telegram::FakeTelegram;
use test_peers::EverythingServer;
use test_peers::round_robin::RoundRobin;

use crate::support::bot::BotProcess;
use crate::support::replicas::Shared;
use crate::support::text_contains;

const WAIT: Duration = Duration::from_secs(60);
const LONG_CALL: &str =
    r#"/call every trigger-long-running-operation {"duration": 120, "steps": 120}"#;

/// Two replicas with the everything server.
struct Pair {
    telegram: FakeTelegram,
    shared: Shared,
    replicas: [BotProcess; 2],
    _server: EverythingServer,
}

async fn pair() -> Pair {
    let server = EverythingServer::start().await;
    let url = server.mcp_url();
    let telegram = FakeTelegram::start().await;
    let shared = Shared::start();
    let config = |dir: &std::path::Path, index| {
        shared.config(&telegram, dir, index)
            + &format!("\n[[mcp.servers]]\nid = \"every\"\nurl = \"{url}\"\ntrusted = true\n")
    };
    let first = BotProcess::start_with_env(&telegram, &shared.env(), |dir| config(dir, 0)).await;
    let second = BotProcess::start_with_env(&telegram, &shared.env(), |dir| config(dir, 1)).await;
    Pair {
        telegram,
        shared,
        replicas: [first, second],
        _server: server,
    }
}

impl Pair {
    fn front(&self) -> &RoundRobin {
        &self.shared.front
    }

    async fn stop(self) {
        let [first, second] = self.replicas;
        first.stop().await;
        second.stop().await;
        self.telegram.assert_no_errors();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaching_another_replica_stops_the_call() {
    let pair = pair().await;
    let (telegram, front) = (&pair.telegram, pair.front());
    let alice = telegram.user(1001, "Alice");

    // `/cancel` through the other replica.
    front.pin_next("/telegram/webhook", 0);
    telegram.send_private(&alice, LONG_CALL);
    telegram
        .wait_for_message(1001, WAIT, |m| m.text.starts_with("⏳ Running"))
        .await;
    let before = telegram.message_count(1001);
    front.pin_next("/telegram/webhook", 1);
    telegram.send_private(&alice, "/cancel");
    let stopped = telegram
        .wait_for_message_after(1001, before, WAIT, |m| !m.text.starts_with("⏳"))
        .await;
    assert!(stopped.text.contains("Stopped"), "{}", stopped.text);

    // The Cancel button, tapped through the other replica.
    front.pin_next("/telegram/webhook", 1);
    telegram.send_private(&alice, LONG_CALL);
    let status = telegram
        .wait_for_message(1001, WAIT, |m| {
            m.text.starts_with("⏳ Running") && !m.callback_buttons().is_empty()
        })
        .await;
    let before = telegram.message_count(1001);
    front.pin_next("/telegram/webhook", 0);
    let data = status.callback_buttons()[0].1.clone();
    telegram.press_callback_button(&alice, 1001, status.message_id, &data);
    telegram
        .wait_for_message_after(1001, before, WAIT, text_contains("Stopped"))
        .await;

    // Nothing running anywhere: said so, through either replica.
    front.pin_next("/telegram/webhook", 0);
    let before = telegram.message_count(1001);
    telegram.send_private(&alice, "/cancel");
    telegram
        .wait_for_message_after(
            1001,
            before,
            WAIT,
            text_contains("Nothing of yours is running"),
        )
        .await;

    pair.stop().await;
}

/// A guided call's questions asked by one replica, answered through the
/// other: each reply and the Run button are handed to the replica that
/// asked, and the call runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_to_another_replicas_questions_reach_it() {
    let pair = pair().await;
    let (telegram, front) = (&pair.telegram, pair.front());
    let alice = telegram.user(1001, "Alice");

    // Everything up to the first question goes through replica 0.
    let button = |message: &fake_telegram::SentMessage, part: &str| {
        message
            .callback_buttons()
            .into_iter()
            .find(|(label, _)| label.contains(part))
            .map(|(_, data)| data)
    };
    front.pin_next("/telegram/webhook", 0);
    telegram.send_private(&alice, "/tools every");
    let mut page = telegram
        .wait_for_message(1001, WAIT, |m| m.text.starts_with("Tools of"))
        .await;
    let browser = page.message_id;
    let details = loop {
        if let Some(data) = button(&page, "Sum") {
            front.pin_next("/telegram/webhook", 0);
            telegram.press_callback_button(&alice, 1001, browser, &data);
            break telegram
                .wait_for_message(1001, WAIT, |m| m.text.contains("Parameters:"))
                .await;
        }
        let next = button(&page, "Next").expect("a Next button");
        front.pin_next("/telegram/webhook", 0);
        telegram.press_callback_button(&alice, 1001, browser, &next);
        page = telegram
            .wait_for_message(1001, WAIT, |m| m.edited && m.message_id == browser)
            .await;
    };
    front.pin_next("/telegram/webhook", 0);
    let run_it = button(&details, "Run it").expect("a Run it button");
    telegram.press_callback_button(&alice, 1001, details.message_id, &run_it);
    telegram
        .wait_for_message(1001, WAIT, |m| m.text.contains("1/2 · a"))
        .await;
    front.pin_next("/telegram/webhook", 1);
    telegram.send_private(&alice, "2");
    telegram
        .wait_for_message(1001, WAIT, |m| m.text.contains("2/2 · b"))
        .await;
    front.pin_next("/telegram/webhook", 1);
    telegram.send_private(&alice, "3");
    let confirm = telegram
        .wait_for_message(1001, WAIT, |m| m.text.starts_with("Run get-sum"))
        .await;
    let run = button(&confirm, "Run").expect("a Run button");
    front.pin_next("/telegram/webhook", 1);
    telegram.press_callback_button(&alice, 1001, confirm.message_id, &run);
    telegram
        .wait_for_message(1001, WAIT, text_contains("The sum of 2 and 3 is 5."))
        .await;

    // No dialogue open anywhere: a stray text is answered where it lands.
    front.pin_next("/telegram/webhook", 1);
    let before = telegram.message_count(1001);
    telegram.send_private(&alice, "hello");
    telegram
        .wait_for_message_after(1001, before, WAIT, text_contains("Send /help"))
        .await;
    pair.stop().await;
}
