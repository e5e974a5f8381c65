//! One warm MCP session per (user, server), closed after the configured
//! idle time so memory stays bounded however many users come and go, and
//! opened again by the next call as if nothing happened.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_telegram::FakeTelegram;
use mcpgram::config;
use mcpgram::gateway::{Gateway, Silent};
use mcpgram::store::Stores;
use mcpgram::vault::{KeySource, Vault};
use serde_json::json;
use test_peers::{EverythingServer, H2Front};

use crate::support::bot::{BotProcess, base_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_close_and_the_next_call_reopens_one() {
    let server = EverythingServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[telegram]\ntoken = \"1:x\"\n[mcp]\nsession_idle = \"5m\"\n[[mcp.servers]]\nid = \"every\"\nurl = \"{}\"\ntrusted = true\n",
        server.mcp_url()
    );
    let config = Arc::new(config::parse(&text, dir.path(), &|_| None).unwrap());
    assert_eq!(config.mcp.session_idle, Duration::from_secs(300));
    let vault = Vault::open(
        &dir.path().join("v"),
        &KeySource::File(dir.path().join("k")),
    )
    .unwrap();
    let gateway = Gateway::new(
        config,
        Stores::with_flows_in_memory(Arc::new(vault)),
        "http://127.0.0.1:1/oauth/callback".into(),
        Arc::new(Silent),
    );
    let every = gateway.find_server("every").unwrap();
    let sum = |user| {
        let arguments = json!({"a": 1, "b": 2}).as_object().cloned();
        let (gateway, every) = (&gateway, every.clone());
        async move {
            gateway
                .call_tool(user, &every, "get-sum", arguments, None)
                .await
                .expect("get-sum answers")
        }
    };

    sum(1).await;
    sum(2).await;
    assert_eq!(gateway.warm_sessions(), 2, "one session per user");
    assert_eq!(
        gateway.close_idle_sessions(Instant::now()),
        0,
        "just used: kept"
    );
    let later = Instant::now() + Duration::from_secs(301);
    assert_eq!(gateway.close_idle_sessions(later), 2);
    assert_eq!(gateway.warm_sessions(), 0);

    let result = sum(1).await;
    let text = serde_json::to_string(&result.content).unwrap();
    assert!(text.contains("The sum of 1 and 2 is 3."), "{text}");
    assert_eq!(gateway.warm_sessions(), 1, "opened again for the next call");
    gateway.shutdown().await;
}

/// Hosted servers are often reached over HTTP/2 and allow 100 to 256
/// streams per connection. A warm 2025 session holds its GET stream open
/// for as long as it lives, so sessions multiplexed over one connection
/// would use the streams up, and every later request to that server,
/// anyone's, would wait. Here the server's front allows two streams per
/// connection: four users' sessions all answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_do_not_use_up_a_servers_http2_streams() {
    let server = EverythingServer::start().await;
    let backend: url::Url = server.mcp_url().parse().unwrap();
    let front = H2Front::start(backend.socket_addrs(|| None).unwrap()[0], 2).await;
    let telegram = FakeTelegram::start().await;
    let url = format!("{}{}", front.url(), backend.path());
    let ca = front.ca_file().display().to_string();
    let bot = BotProcess::start_with_env(&telegram, &[("SSL_CERT_FILE", &ca)], |dir| {
        base_config(&telegram, dir)
            + &format!(
                "\n[[mcp.servers]]\nid = \"hosted\"\nurl = \"{url}\"\ntrusted = true\ntimeout_secs = 5\n"
            )
    })
    .await;
    for id in 1..=4 {
        let user = telegram.user(id, "User");
        telegram.send_private(&user, r#"/call hosted get-sum {"a": 1, "b": 2}"#);
        let reply = telegram
            .wait_for_message(id as i64, Duration::from_secs(30), |m| {
                !m.text.starts_with('⏳')
            })
            .await;
        assert!(
            reply.text.contains("The sum of 1 and 2 is 3."),
            "user {id}: {}\n{}",
            reply.text,
            bot.logs()
        );
    }
    assert_eq!(front.h2_connections(), 0, "MCP traffic goes over HTTP/1.1");
}
