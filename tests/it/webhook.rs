//! Webhook delivery: Telegram POSTs updates to the bot's own HTTP server
//! with a secret token; anything without it is refused. Switching back to
//! polling removes the webhook.

use std::time::Duration;

use fake_telegram::FakeTelegram;

use crate::support::bot::{BotProcess, base_config};
use crate::support::free_port;

const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "s3cret_Webhook-token";

/// A bot in webhook mode on a port of its own, and its public URL.
async fn webhook_bot(telegram: &FakeTelegram) -> (BotProcess, String) {
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let bot = BotProcess::start_with_env(telegram, &[("WEBHOOK_SECRET", SECRET)], |dir| {
        base_config(telegram, dir)
            .replace(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:{port}\"\npublic_url = \"{public}\""),
            )
            .replace(
                "[http]",
                "mode = \"webhook\"\nwebhook_secret = \"${WEBHOOK_SECRET}\"\n\n[http]",
            )
    })
    .await;
    (bot, public)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_arrive_by_webhook_with_the_secret_and_polling_takes_over_again() {
    let telegram = FakeTelegram::start().await;
    let (bot, public) = webhook_bot(&telegram).await;
    assert_eq!(
        telegram.webhook_url().as_deref(),
        Some(format!("{public}/telegram/webhook").as_str())
    );
    let alice = telegram.user(1, "Alice");
    telegram.send_private(&alice, "/help");
    let help = telegram.wait_for_message(1, WAIT, |_| true).await;
    assert!(help.text.contains("/connect"), "{}", help.text);
    assert!(
        !telegram.calls().iter().any(|c| c.method == "getupdates"),
        "no polling in webhook mode"
    );

    // Without the secret, or with another, nothing gets in.
    let client = reqwest::Client::new();
    let update = serde_json::json!({"update_id": 999, "message": {
        "message_id": 50, "date": 0, "text": "/help",
        "chat": {"id": 1, "type": "private", "first_name": "Mallory"},
        "from": {"id": 1, "is_bot": false, "first_name": "Mallory"},
        "entities": [{"type": "bot_command", "offset": 0, "length": 5}]
    }});
    for secret in [None, Some("wrong")] {
        let mut request = client
            .post(format!("{public}/telegram/webhook"))
            .json(&update);
        if let Some(secret) = secret {
            request = request.header("X-Telegram-Bot-Api-Secret-Token", secret);
        }
        assert_eq!(request.send().await.unwrap().status().as_u16(), 401);
    }

    // Back to polling: the webhook is deleted, updates come by getUpdates.
    let (bot, logs) = bot
        .restart_with(&telegram, |config| {
            config
                .replace("mode = \"webhook\"\n", "")
                .replace("webhook_secret = \"${WEBHOOK_SECRET}\"\n", "")
        })
        .await;
    assert!(!logs.contains(SECRET), "the secret in the log");
    assert_eq!(telegram.webhook_url(), None);
    telegram.send_private(&alice, "/help");
    telegram.wait_for_message(1, WAIT, |_| true).await;
    let count = telegram.messages(1).len();
    assert_eq!(count, 2, "one answer each, none to the forged updates");
    bot.stop().await;
    telegram.assert_no_errors();
}

/// Telegram sends an update again when the bot's 200 got lost: the
/// second delivery is acknowledged and dropped, so the user is answered
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_delivered_twice_is_answered_once() {
    let telegram = FakeTelegram::start().await;
    let (bot, public) = webhook_bot(&telegram).await;
    let alice = telegram.user(1, "Alice");
    telegram.send_private(&alice, "/help");
    telegram.wait_for_message(1, WAIT, |_| true).await;

    let update = serde_json::json!({"update_id": 5000, "message": {
        "message_id": 60, "date": 0, "text": "/help",
        "chat": {"id": 1, "type": "private", "first_name": "Alice"},
        "from": {"id": 1, "is_bot": false, "first_name": "Alice"},
        "entities": [{"type": "bot_command", "offset": 0, "length": 5}]
    }});
    let client = reqwest::Client::new();
    for _ in 0..2 {
        let answer = client
            .post(format!("{public}/telegram/webhook"))
            .header("X-Telegram-Bot-Api-Secret-Token", SECRET)
            .json(&update)
            .send()
            .await
            .unwrap();
        assert_eq!(
            answer.status().as_u16(),
            200,
            "both deliveries acknowledged"
        );
    }
    // Alice's next message is answered after whatever the two brought.
    telegram.send_private(&alice, "/servers");
    telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("No servers are configured"))
        .await;
    let helps = telegram
        .messages(1)
        .iter()
        .filter(|m| m.text == telegram.messages(1)[0].text)
        .count();
    assert_eq!(helps, 2, "the first /help, and the repeated update once");
    bot.stop().await;
    telegram.assert_no_errors();
}
