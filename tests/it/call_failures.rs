//! Every way a tool call can fail reaches the chat as one plain sentence
//! that says what happened and what to do: no Rust type names, no stack of
//! causes, no URL query strings. Driven through the core in-process, then
//! worded by the Telegram adapter.

use std::sync::Arc;
use std::time::Duration;

use crate::support::scripted_mcp::{Script, ScriptedMcp};
use mcpgram::config::{self, ServerConfig};
use mcpgram::gateway::{Gateway, Silent};
use mcpgram::store::Stores;
use mcpgram::telegram::wording;
use mcpgram::vault::{KeySource, Vault};
use tokio::net::TcpListener;

struct Harness {
    gateway: Gateway,
    _dir: tempfile::TempDir,
}

/// A gateway with one server, `server` (a `[[mcp.servers]]` body).
fn harness(server: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[telegram]\ntoken = \"1:x\"\n[[mcp.servers]]\nid = \"srv\"\nname = \"Srv\"\n{server}\n"
    );
    let config = Arc::new(config::parse(&text, dir.path(), &|_| Some("tok".into())).unwrap());
    let vault = Vault::open(
        &dir.path().join("v"),
        &KeySource::File(dir.path().join("k")),
    )
    .unwrap();
    Harness {
        gateway: Gateway::new(
            config,
            Stores::with_flows_in_memory(Arc::new(vault)),
            "http://127.0.0.1:1/oauth/callback".into(),
            Arc::new(Silent),
        ),
        _dir: dir,
    }
}

fn open(url: &str, timeout_secs: u64) -> String {
    format!("url = \"{url}\"\ntrusted = true\ntimeout_secs = {timeout_secs}\n")
}

fn with_token(url: &str) -> String {
    format!(
        "{}[mcp.servers.headers]\nAuthorization = \"Bearer ${{TOKEN}}\"\n",
        open(url, 10)
    )
}

/// Calls a tool and returns the sentence the chat would get.
async fn failure_of(h: &Harness) -> String {
    let server: Arc<ServerConfig> = h.gateway.find_server("srv").unwrap();
    let error = h
        .gateway
        .call_tool(1, &server, "echo", None, None)
        .await
        .expect_err("the call must fail");
    wording::call_failed(&server, &error)
}

/// One sentence, no internals.
fn assert_plain(sentence: &str) {
    assert!(!sentence.contains('\n'), "one line: {sentence}");
    assert!(sentence.ends_with('.'), "a sentence: {sentence}");
    assert!(sentence.len() < 400, "short: {sentence}");
    for internal in [
        "::",
        "rmcp",
        "reqwest",
        "hyper",
        "Transport",
        "Error",
        "Some(",
        "Box<",
        "?key=",
    ] {
        assert!(!sentence.contains(internal), "{internal:?} in: {sentence}");
    }
}

async fn expect(server: &str, needle: &str) {
    let h = harness(server);
    let sentence = failure_of(&h).await;
    assert_plain(&sentence);
    assert!(sentence.contains(needle), "{needle:?} not in: {sentence}");
    assert!(
        sentence.starts_with("Srv") || sentence.contains("Srv"),
        "{sentence}"
    );
}

#[tokio::test]
async fn an_unreachable_host_is_a_network_error() {
    // The kernel refuses TCP to the broadcast address at once: no packet
    // leaves the machine.
    expect(
        &open("http://255.255.255.255:9/mcp", 10),
        "cannot be reached right now because of a network error",
    )
    .await;
}

#[tokio::test]
async fn a_refused_connection_says_nothing_answers() {
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    expect(
        &open(&format!("http://127.0.0.1:{port}/mcp?key=SECRET"), 10),
        "nothing answers at its address",
    )
    .await;
}

#[tokio::test]
async fn a_tls_failure_is_named() {
    // An https URL to a plain-HTTP server: the handshake cannot succeed.
    let plain = ScriptedMcp::start(Script::Status(200)).await;
    expect(
        &open(&format!("https://{}/mcp", plain.addr), 10),
        "TLS handshake failed",
    )
    .await;
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", silent.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    expect(&open(&url, 1), "did not answer within 1 s").await;
    holder.abort();
}

#[tokio::test]
async fn refused_credentials_name_the_status() {
    for status in [401, 403] {
        let server = ScriptedMcp::start(Script::Status(status)).await;
        expect(
            &with_token(&server.url()),
            &format!("refused the bot's credentials (HTTP {status})"),
        )
        .await;
    }
}

#[tokio::test]
async fn not_found_points_at_the_configured_address() {
    let server = ScriptedMcp::start(Script::Status(404)).await;
    expect(&open(&server.url(), 10), "HTTP 404 (not found)").await;
}

#[tokio::test]
async fn server_errors_say_try_later() {
    for status in [500, 502, 503] {
        let server = ScriptedMcp::start(Script::Status(status)).await;
        expect(
            &open(&server.url(), 10),
            &format!("internal error (HTTP {status}); try again later"),
        )
        .await;
    }
}

#[tokio::test]
async fn rate_limits_say_when_to_retry() {
    let server = ScriptedMcp::start(Script::RateLimited("30")).await;
    expect(&open(&server.url(), 10), "try again in 30 seconds").await;
}

#[tokio::test]
async fn a_json_rpc_error_quotes_the_server_briefly() {
    let server = ScriptedMcp::start(Script::CallError {
        code: -32603,
        message: "database is down; see https://status.example/x?key=SECRET",
    })
    .await;
    let h = harness(&open(&server.url(), 10));
    let sentence = failure_of(&h).await;
    assert_plain(&sentence);
    assert!(
        sentence.starts_with("Srv answered with an error: database is down"),
        "{sentence}"
    );
    assert!(sentence.contains("?[redacted]"), "{sentence}");
}

#[tokio::test]
async fn invalid_arguments_are_told_as_such() {
    let server = ScriptedMcp::start(Script::CallError {
        code: -32602,
        message: "Invalid arguments: name must be a string",
    })
    .await;
    expect(
        &open(&server.url(), 10),
        "did not accept the request: Invalid arguments: name must be a string.",
    )
    .await;
}

#[tokio::test]
async fn a_private_address_of_an_untrusted_server_is_refused_without_contact() {
    let h = harness("url = \"http://10.0.0.1/mcp\"\ntimeout_secs = 5\n");
    let started = std::time::Instant::now();
    let sentence = failure_of(&h).await;
    assert_plain(&sentence);
    assert!(sentence.contains("private network"), "{sentence}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once"
    );
}

/// A server with tools only answers resources/list and prompts/list with
/// "method not found": it simply has none.
#[tokio::test]
async fn a_server_without_resources_or_prompts_has_none() {
    let server = ScriptedMcp::start(Script::CallError {
        code: -32601,
        message: "Method not found",
    })
    .await;
    let h = harness(&open(&server.url(), 10));
    let srv = h.gateway.find_server("srv").unwrap();
    assert!(h.gateway.list_resources(1, &srv).await.unwrap().is_empty());
    assert!(h.gateway.list_prompts(1, &srv).await.unwrap().is_empty());
}
