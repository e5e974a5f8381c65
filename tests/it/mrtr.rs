//! A server of protocol revision 2026-07-28 asking the user mid-call
//! through a multi-round-trip `input_required` result (SEP-2322), against
//! a server written with the official TypeScript SDK v2: the question
//! becomes a dialogue in the chat, and the answer (or the refusal) goes
//! back in the retried call's `inputResponses` with the server's
//! `requestState` unchanged.

use std::time::Duration;

use fake_telegram::{FakeTelegram, FakeUser, SentMessage};
use serde_json::{Value, json};
use test_peers::MrtrServer;

use crate::support::bot::{BotProcess, base_config};

const WAIT: Duration = Duration::from_secs(30);

fn tables(url: &str) -> String {
    format!(
        "\n[[mcp.servers]]\nid = \"tables\"\nname = \"Tables\"\nurl = \"{url}\"\ntrusted = true\n"
    )
}

/// The callback data of the first button whose label is `label`.
fn button(message: &SentMessage, label: &str) -> String {
    message
        .callback_buttons()
        .into_iter()
        .find(|(l, _)| l == label)
        .unwrap_or_else(|| panic!("no {label:?} button in {:?}", message.reply_markup))
        .1
}

/// Calls `book_table` and waits for the server's first question.
async fn ask_for_a_table(telegram: &FakeTelegram, alice: &FakeUser) -> SentMessage {
    telegram.send_private(alice, "/call tables book_table");
    let question = telegram
        .wait_for_message(1, WAIT, |m| m.text.starts_with("Tables asks:"))
        .await;
    assert!(
        question.text.contains("How many guests, and when?"),
        "the server's message: {}",
        question.text
    );
    assert!(
        question.text.contains("1/2 · Guests (guests)"),
        "{}",
        question.text
    );
    question
}

/// The rounds of `book_table` the server saw, after checking that every
/// request spoke 2026-07-28, that there were two rounds, and that the
/// second echoed the state the first handed out; answers the retry's
/// `inputResponses`.
async fn retried_responses(server: &MrtrServer) -> Value {
    let stats = server.stats().await;
    let versions = stats["protocolVersions"].as_array().expect("versions");
    assert!(
        !versions.is_empty() && versions.iter().all(|v| v == "2026-07-28"),
        "every request on 2026-07-28: {stats}"
    );
    let rounds = stats["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 2, "the call and one retry: {stats}");
    assert_eq!(rounds[0]["requestState"], Value::Null, "{stats}");
    assert_eq!(rounds[0]["inputResponses"], Value::Null, "{stats}");
    let minted = stats["minted"].as_array().expect("minted");
    assert_eq!(minted.len(), 1, "{stats}");
    assert_eq!(
        rounds[1]["requestState"], minted[0],
        "the state echoed unchanged: {stats}"
    );
    assert_eq!(rounds[1]["dropped"], json!([]), "{stats}");
    rounds[1]["inputResponses"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_required_result_is_asked_in_the_chat_and_the_call_retried() {
    let server = MrtrServer::start().await;
    let telegram = FakeTelegram::start().await;
    let url = server.mcp_url();
    let bot = BotProcess::start(&telegram, |dir| base_config(&telegram, dir) + &tables(&url)).await;
    let alice = telegram.user(1, "Alice");

    // No annotations: it runs at once, and the server asks.
    let first = ask_for_a_table(&telegram, &alice).await;
    assert!(
        first
            .callback_buttons()
            .iter()
            .any(|(label, _)| label == "Decline"),
        "{:?}",
        first.reply_markup
    );
    telegram.send_private(&alice, "4");
    let time = telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("2/2 · time"))
        .await;
    assert!(time.text.starts_with("Tables asks:"), "{}", time.text);
    let labels: Vec<String> = time
        .callback_buttons()
        .into_iter()
        .map(|(label, _)| label)
        .collect();
    assert!(
        labels.contains(&"18:00".to_owned()) && labels.contains(&"20:00".to_owned()),
        "the enum as buttons: {labels:?}"
    );
    telegram.press_callback_button(&alice, 1, time.message_id, &button(&time, "20:00"));
    let confirm = telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("Send them to Tables?"))
        .await;
    assert!(
        confirm
            .text
            .contains(r#"Your answers: {"guests":4,"time":"20:00"}"#),
        "{}",
        confirm.text
    );
    assert_eq!(
        server.stats().await["rounds"].as_array().map(Vec::len),
        Some(1),
        "nothing sent before Send"
    );
    telegram.press_callback_button(&alice, 1, confirm.message_id, &button(&confirm, "Send"));
    let result = telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("Booked a table"))
        .await;
    assert!(
        result.text.contains("Booked a table for 4 at 20:00."),
        "{}",
        result.text
    );

    let responses = retried_responses(&server).await;
    assert_eq!(
        responses,
        json!({"booking": {"action": "accept", "content": {"guests": 4, "time": "20:00"}}}),
        "{}",
        server.output()
    );

    bot.stop().await;
    telegram.assert_no_errors();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_input_request_is_retried_as_declined() {
    let server = MrtrServer::start().await;
    let telegram = FakeTelegram::start().await;
    let url = server.mcp_url();
    let bot = BotProcess::start(&telegram, |dir| base_config(&telegram, dir) + &tables(&url)).await;
    let alice = telegram.user(1, "Alice");

    let first = ask_for_a_table(&telegram, &alice).await;
    telegram.press_callback_button(&alice, 1, first.message_id, &button(&first, "Decline"));
    telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("No booking made."))
        .await;

    let responses = retried_responses(&server).await;
    assert_eq!(responses["booking"]["action"], "decline", "{responses}");
    assert!(
        responses["booking"]
            .get("content")
            .is_none_or(Value::is_null),
        "nothing answered: {responses}"
    );

    bot.stop().await;
    telegram.assert_no_errors();
}
