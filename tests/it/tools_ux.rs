//! Using a server's tools from the chat without typing JSON, against the
//! official "everything" server: the tool browser (buttons, pages, a
//! tool's parameters).

use std::time::Duration;

use fake_telegram::FakeTelegram;
use test_peers::EverythingServer;

use crate::support::bot::{BotProcess, base_config};

const WAIT: Duration = Duration::from_secs(30);

fn everything(url: &str) -> String {
    format!(
        "\n[[mcp.servers]]\nid = \"every\"\nname = \"Everything\"\nurl = \"{url}\"\ntrusted = true\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_buttons_with_pages_and_a_tap_shows_the_parameters() {
    let server = EverythingServer::start().await;
    let telegram = FakeTelegram::start().await;
    let url = server.mcp_url();
    let bot = BotProcess::start(&telegram, |dir| {
        base_config(&telegram, dir) + &everything(&url)
    })
    .await;
    let alice = telegram.user(1, "Alice");

    // One server configured: a bare /tools means it.
    telegram.send_private(&alice, "/tools");
    let first = telegram
        .wait_for_message(1, WAIT, |m| !m.callback_buttons().is_empty())
        .await;
    assert!(
        first.text.starts_with("Tools of Everything ("),
        "{}",
        first.text
    );
    let buttons = first.callback_buttons();
    assert!(
        buttons.iter().all(|(_, data)| data.len() <= 64),
        "callback_data within 64 bytes: {buttons:?}"
    );
    let tool_buttons = buttons
        .iter()
        .filter(|(_, d)| d.starts_with("tool:"))
        .count();
    assert_eq!(tool_buttons, 8, "a full first page: {buttons:?}");
    let (_, echo) = buttons
        .iter()
        .find(|(label, _)| label.to_lowercase().contains("echo"))
        .expect("echo sorts first")
        .clone();
    let (_, next) = buttons
        .iter()
        .find(|(label, _)| label.starts_with("Next"))
        .expect("more than one page")
        .clone();

    telegram.press_callback_button(&alice, 1, first.message_id, &echo);
    let details = telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("Parameters:"))
        .await;
    assert!(
        details.text.contains("message (string, required)"),
        "{}",
        details.text
    );
    assert!(
        details
            .text
            .contains("/call every echo {\"message\":\"…\"}"),
        "{}",
        details.text
    );

    telegram.press_callback_button(&alice, 1, first.message_id, &next);
    let second = telegram
        .wait_for_message(1, WAIT, |m| m.edited && m.message_id == first.message_id)
        .await;
    assert!(second.text.contains("page 2 of"), "{}", second.text);
    let (_, back) = second
        .callback_buttons()
        .into_iter()
        .find(|(label, _)| label.starts_with("◀"))
        .expect("a way back");
    telegram.press_callback_button(&alice, 1, first.message_id, &back);
    let again = telegram
        .wait_for_message(1, WAIT, |m| m.edited && m.message_id == first.message_id)
        .await;
    assert!(again.text.contains("page 1 of"), "{}", again.text);

    bot.stop().await;
    telegram.assert_no_errors();
}
