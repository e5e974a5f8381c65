//! Smoke test of the third-party test peers in `tests/support/peers.rs`: the MCP TypeScript SDK's
//! example server comes up with its demo OAuth provider, advertises what the bot relies on, and
//! listens on loopback only.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::Value;
use test_peers::TsDemoServer;

#[tokio::test]
async fn ts_demo_server_advertises_oauth_and_listens_on_loopback_only() {
    let server = TsDemoServer::start().await;
    check(&server).await;
}

#[tokio::test]
async fn two_ts_demo_servers_run_side_by_side() {
    let (a, b) = tokio::join!(TsDemoServer::start(), TsDemoServer::start());
    let mut ports = [a.mcp_port(), a.auth_port(), b.mcp_port(), b.auth_port()];
    ports.sort_unstable();
    assert!(
        ports.windows(2).all(|w| w[0] != w[1]),
        "ports are not distinct: {ports:?}"
    );
    tokio::join!(check(&a), check(&b));
}

async fn check(server: &TsDemoServer) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client");
    let origin = format!("http://localhost:{}", server.mcp_port());
    let mcp_url = server.mcp_url();
    let auth_url = server.auth_url();
    assert_eq!(mcp_url, format!("{origin}/mcp"));
    assert_eq!(auth_url, format!("http://localhost:{}", server.auth_port()));
    let context = |what: &str| format!("{what}; server output:\n{}", server.output());

    // RFC 9728 protected resource metadata, at the path-suffixed well-known URL.
    let metadata_url = format!("{origin}/.well-known/oauth-protected-resource/mcp");
    let resource = get_json(&http, &metadata_url).await;
    assert_eq!(
        resource["resource"].as_str(),
        Some(mcp_url.as_str()),
        "{}",
        context(&format!("resource metadata {resource}"))
    );
    let servers = resource["authorization_servers"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", context(&format!("resource metadata {resource}"))));
    assert!(
        servers
            .iter()
            .filter_map(Value::as_str)
            .any(|s| s.trim_end_matches('/') == auth_url),
        "{}",
        context(&format!(
            "{auth_url} is not among the authorization servers {servers:?}"
        ))
    );

    // RFC 8414 authorization server metadata.
    let auth = get_json(
        &http,
        &format!("{auth_url}/.well-known/oauth-authorization-server"),
    )
    .await;
    let registration = auth["registration_endpoint"].as_str().unwrap_or_default();
    assert!(
        registration.starts_with(&auth_url),
        "{}",
        context(&format!(
            "no registration endpoint on the auth server: {auth}"
        ))
    );
    assert!(
        auth["code_challenge_methods_supported"]
            .as_array()
            .is_some_and(|methods| methods.iter().any(|m| m == "S256")),
        "{}",
        context(&format!("no S256 PKCE in {auth}"))
    );

    // MCP without a token: 401 with a challenge that points at the resource metadata.
    let initialize = serde_json::json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": { "name": "peers-smoke", "version": "0" }
        }
    });
    let response = http
        .post(&mcp_url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(initialize.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", context(&format!("POST {mcp_url}: {e}"))));
    assert_eq!(
        response.status(),
        reqwest::StatusCode::UNAUTHORIZED,
        "{}",
        context("POST /mcp without a token")
    );
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer ")
            && challenge.contains(&format!("resource_metadata=\"{metadata_url}\"")),
        "{}",
        context(&format!("WWW-Authenticate: {challenge:?}"))
    );

    assert_loopback_only(server.mcp_port(), &context("MCP port"));
    assert_loopback_only(server.auth_port(), &context("auth port"));
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    let response = http
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status();
    let text = response.text().await.expect("response body");
    assert!(status.is_success(), "GET {url}: {status} {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: {e} in {text}"))
}

/// Asserts that whatever listens on TCP `port` listens on a loopback address only, which is
/// what "not reachable on this machine's other addresses" comes down to. The listening sockets
/// are read from the kernel's table rather than probed with connections to a non-loopback
/// address: tests send traffic to loopback addresses only.
fn assert_loopback_only(port: u16, context: &str) {
    let Some(addresses) = listening_addresses(port) else {
        println!(
            "note: /proc/net/tcp is not readable here; not checking that port {port} is loopback-only"
        );
        return;
    };
    assert!(
        !addresses.is_empty(),
        "nothing listens on port {port}; {context}"
    );
    assert!(
        addresses.iter().all(is_loopback),
        "port {port} listens on {addresses:?}, not on loopback only; {context}"
    );
}

fn is_loopback(address: &IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// The local addresses of the sockets that listen on TCP `port` in this network namespace, from
/// `/proc/net/tcp` and `/proc/net/tcp6` (`None` where those are not available).
fn listening_addresses(port: u16) -> Option<Vec<IpAddr>> {
    const LISTEN: &str = "0A";
    let mut addresses = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            if table.ends_with('6') {
                continue; // no IPv6 here
            }
            return None;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else {
                continue;
            };
            let Some((address, local_port)) = local.split_once(':') else {
                continue;
            };
            if *state != LISTEN || u16::from_str_radix(local_port, 16) != Ok(port) {
                continue;
            }
            // The kernel prints the address as 32-bit words in host byte order.
            let mut bytes = Vec::with_capacity(16);
            for word in address.as_bytes().chunks(8) {
                let word = std::str::from_utf8(word).ok()?;
                bytes.extend(u32::from_str_radix(word, 16).ok()?.to_ne_bytes());
            }
            addresses.push(match bytes.len() {
                4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
                16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
                _ => return None,
            });
        }
    }
    Some(addresses)
}
