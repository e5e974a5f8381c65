//! What an admin's monitoring sees: `/healthz`, `/readyz` (Telegram and
//! the vault answer) and `/metrics` in the Prometheus text format, on an
//! address of its own when one is set.

use std::time::Duration;

use fake_telegram::FakeTelegram;
use test_peers::EverythingServer;

use crate::support::bot::{BotProcess, base_config};

const WAIT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("the bot answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_metrics() {
    let server = EverythingServer::start().await;
    let telegram = FakeTelegram::start().await;
    let (port, metrics_port) = (free_port(), free_port());
    let url = server.mcp_url();
    let bot = BotProcess::start(&telegram, |dir| {
        base_config(&telegram, dir).replace(
            "listen = \"127.0.0.1:0\"",
            &format!(
                "listen = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\""
            ),
        ) + &format!("\n[[mcp.servers]]\nid = \"every\"\nurl = \"{url}\"\ntrusted = true\n")
    })
    .await;
    let alice = telegram.user(1, "Alice");
    let public = format!("http://127.0.0.1:{port}");
    let metrics = format!("http://127.0.0.1:{metrics_port}/metrics");

    assert_eq!(get(&format!("{public}/healthz")).await.0, 200);
    let (status, body) = get(&format!("{public}/readyz")).await;
    assert_eq!((status, body.as_str()), (200, "telegram: ok\nvault: ok\n"));
    assert_eq!(
        get(&format!("{public}/metrics")).await.0,
        404,
        "metrics are served on their own address only"
    );

    telegram.send_private(&alice, r#"/call every get-sum {"a": 1, "b": 2}"#);
    telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("The sum of 1 and 2 is 3."))
        .await;
    telegram.send_private(&alice, r#"/call every get-sum {"a": "x", "b": 2}"#);
    telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("was not called"))
        .await;
    let (status, text) = get(&metrics).await;
    assert_eq!(status, 200);
    for line in [
        "mcpgram_tool_calls_total{server=\"every\",outcome=\"ok\"} 1",
        "mcpgram_tool_calls_total{server=\"every\",outcome=\"invalid_arguments\"} 1",
        "mcpgram_tool_call_duration_seconds_count{server=\"every\"} 2",
        "mcpgram_warm_sessions 1",
        "mcpgram_pending_flows 0",
    ] {
        assert!(text.contains(line), "{line} missing in:\n{text}");
    }
    assert!(!text.contains("Alice") && !text.contains("user"), "{text}");

    // Telegram gone: not ready, and says which.
    telegram.shutdown();
    let (status, body) = get(&format!("{public}/readyz")).await;
    assert_eq!(
        (status, body.as_str()),
        (503, "telegram: failing\nvault: ok\n")
    );

    bot.stop().await;
}
