//! `tests/peers/oidc-mcp.mjs`: oidc-provider (a certified OpenID provider)
//! and a small MCP resource server that accepts only its JWT access tokens.

use serde_json::Value;

use crate::node_peer::{NodePeer, PeerSpec};

/// A stricter authorization server than the TypeScript demo's: real login
/// and consent forms (any login, any password; the login becomes the
/// token's subject), PKCE required, resource indicators issuing JWT
/// access tokens, refresh tokens rotated with reuse detection, revocation,
/// `iss` in every authorization response. The MCP server's tools:
/// `whoami`, `greet`, and `admin_report` (needs scope `mcp:admin`, 403
/// `insufficient_scope` otherwise). Dropping it kills the process.
pub struct OidcMcpServer {
    peer: NodePeer,
}

fn spec(access_ttl_secs: u64, store_entries: Option<u64>) -> PeerSpec {
    let mut extra_env = vec![("ACCESS_TTL".to_owned(), access_ttl_secs.to_string())];
    if let Some(entries) = store_entries {
        extra_env.push(("STORE_ENTRIES".to_owned(), entries.to_string()));
    }
    PeerSpec {
        name: "the oidc-provider MCP server",
        script: "oidc-mcp.mjs",
        args: Vec::new(),
        env: |(mcp, auth)| {
            vec![
                ("MCP_PORT".to_owned(), mcp.to_string()),
                ("AS_PORT".to_owned(), auth.to_string()),
            ]
        },
        ready: |(mcp, auth)| {
            vec![
                format!("OIDC MCP Server listening on port {mcp}"),
                format!("OIDC Authorization Server listening on port {auth}"),
            ]
        },
        extra_env,
    }
}

impl OidcMcpServer {
    /// Access tokens live an hour.
    pub async fn start() -> Self {
        Self::start_with_access_ttl(3600).await
    }

    /// Access tokens live `secs` seconds (refresh tests).
    pub async fn start_with_access_ttl(secs: u64) -> Self {
        Self {
            peer: NodePeer::start(&spec(secs, None)).await,
        }
    }

    /// For many sign-ins at once: oidc-provider's development store keeps
    /// only about the 1,000 most recent entries (interactions, sessions,
    /// grants, codes, tokens), so a thousand flows under way together
    /// would lose their oldest entries mid-flow. This one keeps `entries`.
    pub async fn start_for_load(entries: u64) -> Self {
        Self {
            peer: NodePeer::start(&spec(3600, Some(entries))).await,
        }
    }

    /// [`OidcMcpServer::start_for_load`] with access tokens of `secs`
    /// seconds: many users across an expiry.
    pub async fn start_for_load_with_access_ttl(entries: u64, secs: u64) -> Self {
        Self {
            peer: NodePeer::start(&spec(secs, Some(entries))).await,
        }
    }

    /// The node process's id, to read its CPU time.
    pub fn pid(&self) -> Option<u32> {
        self.peer.pid()
    }

    /// `http://localhost:PORT/mcp`, as the server names itself.
    pub fn mcp_url(&self) -> String {
        format!("http://localhost:{}/mcp", self.peer.ports().0)
    }

    /// The issuer, `http://localhost:AS_PORT`.
    pub fn issuer(&self) -> String {
        format!("http://localhost:{}", self.peer.ports().1)
    }

    /// Counts kept by the server: `refreshes`, `grantsRevoked`,
    /// `revocations`, `codes`, `tokenFailures`, `registrations`.
    pub async fn stats(&self) -> Value {
        reqwest::get(format!("http://127.0.0.1:{}/stats", self.peer.ports().0))
            .await
            .expect("stats answer")
            .json()
            .await
            .expect("stats are JSON")
    }

    /// Revokes every grant issued so far, as an admin would: refresh
    /// tokens stop working (`invalid_grant`); JWT access tokens live on
    /// until they expire. Answers how many grants there were.
    pub async fn revoke_grants(&self) -> u64 {
        let answer: Value = self.control("revoke-grants").await;
        answer["revoked"].as_u64().expect("a count")
    }

    /// A personal access token for `sub`, which the MCP server accepts as
    /// a bearer token.
    pub async fn personal_token(&self, sub: &str) -> String {
        let answer: Value = self.control(&format!("personal-token?sub={sub}")).await;
        answer["token"].as_str().expect("a token").to_owned()
    }

    /// The next `count` requests to the token endpoint answer 503.
    pub async fn fail_token_requests(&self, count: u32) {
        let _: Value = self
            .control(&format!("fail-token-requests?count={count}"))
            .await;
    }

    async fn control(&self, what: &str) -> Value {
        reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{}/control/{what}",
                self.peer.ports().0
            ))
            .send()
            .await
            .expect("control answer")
            .json()
            .await
            .expect("control answers JSON")
    }

    pub fn output(&self) -> String {
        self.peer.output()
    }
}
