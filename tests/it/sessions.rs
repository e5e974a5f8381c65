//! One warm MCP session per (user, server), closed after the configured
//! idle time so memory stays bounded however many users come and go, and
//! opened again by the next call as if nothing happened.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcpgram::config;
use mcpgram::gateway::{Gateway, Silent};
use mcpgram::store::Stores;
use mcpgram::vault::{KeySource, Vault};
use serde_json::json;
use test_peers::EverythingServer;

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
