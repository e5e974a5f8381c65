//! What an admin's monitoring sees: `/healthz`, `/readyz` (Telegram and
//! the vault answer) and `/metrics` in the Prometheus text format, on an
//! address of its own when one is set.

use std::time::Duration;

use fake_telegram::FakeTelegram;
use test_peers::EverythingServer;

use crate::support::bot::{BotProcess, base_config};
use crate::support::free_port;

const WAIT: Duration = Duration::from_secs(30);

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

/// `logging.format = "json"`: one JSON object per line for log shippers,
/// still free of secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_without_secrets() {
    let telegram = FakeTelegram::start().await;
    let bot = BotProcess::start(&telegram, |dir| {
        base_config(&telegram, dir) + "\n[logging]\nformat = \"json\"\n"
    })
    .await;
    let alice = telegram.user(1, "Alice");
    telegram.send_private(&alice, "/help");
    telegram.wait_for_message(1, WAIT, |_| true).await;
    let logs = bot.stop().await;
    let mut lines = 0;
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        assert!(
            value.get("level").is_some() && value.get("fields").is_some(),
            "{line}"
        );
        lines += 1;
    }
    assert!(lines > 3, "{logs}");
    assert!(
        !logs.contains(&telegram.token()),
        "the bot token in the log"
    );
}

/// SIGTERM: no new updates, but a call under way finishes and its result
/// is sent before the bot exits 0; a second signal exits at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_calls_under_way_finish_and_a_second_signal_does_not_wait() {
    let server = EverythingServer::start().await;
    let telegram = FakeTelegram::start().await;
    let url = server.mcp_url();
    let config = |telegram: &FakeTelegram, dir: &std::path::Path| {
        base_config(telegram, dir).replace("shutdown_grace = \"3s\"", "shutdown_grace = \"30s\"")
            + &format!("\n[[mcp.servers]]\nid = \"every\"\nurl = \"{url}\"\ntrusted = true\n")
    };
    let bot = BotProcess::start(&telegram, |dir| config(&telegram, dir)).await;
    let alice = telegram.user(1, "Alice");
    telegram.send_private(
        &alice,
        r#"/call every trigger-long-running-operation {"duration": 3, "steps": 3}"#,
    );
    telegram
        .wait_for_message(1, WAIT, |m| m.text.starts_with("⏳ Running"))
        .await;
    let logs = bot.stop().await;
    assert!(logs.contains("waiting for commands under way"), "{logs}");
    assert!(
        telegram
            .messages(1)
            .iter()
            .any(|m| m.text.contains("Long running operation completed")),
        "the result was sent before the exit"
    );

    let bot = BotProcess::start(&telegram, |dir| config(&telegram, dir)).await;
    telegram.send_private(
        &alice,
        r#"/call every trigger-long-running-operation {"duration": 120, "steps": 120}"#,
    );
    telegram
        .wait_for_message(1, WAIT, |m| m.text.starts_with("⏳ Running"))
        .await;
    bot.signal();
    // The first signal has been taken once the bot says it waits.
    bot.wait_for_log("waiting for commands under way", WAIT)
        .await;
    bot.signal();
    assert_eq!(bot.exit_code(Duration::from_secs(10)).await, Some(1));
}

/// Each warm session holds a connection of its own: a bot started with the
/// soft limit of open files services often get (1024, here 256) raises it
/// to the hard limit before serving, and says nothing when that is enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_files_limit_is_raised_to_the_hard_one() {
    let own = max_open_files(std::process::id());
    let hard = own.1.min(8192);
    assert!(
        hard > 256,
        "this machine allows too few open files: {own:?}"
    );
    let telegram = FakeTelegram::start().await;
    let nofile = format!("--nofile=256:{hard}");
    let bot = BotProcess::start_under(&telegram, &["prlimit", &nofile, "--"], |dir| {
        base_config(&telegram, dir)
    })
    .await;
    assert_eq!(max_open_files(bot.pid()), (hard, hard));
    let logs = bot.logs();
    assert!(logs.contains("open-files limit raised"), "{logs}");
    assert_eq!(
        logs.contains("few open files allowed"),
        hard < mcpgram::open_files::ENOUGH,
        "{logs}"
    );
}

/// The soft and hard "Max open files" of process `pid`.
fn max_open_files(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("its limits");
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("an open-files line");
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}
