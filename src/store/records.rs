//! The records the stores keep. All of them serialize, so any store can
//! hold them: a pending flow is data, not a live OAuth client.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use rmcp::transport::auth::{StoredAuthorizationState, StoredCredentials};
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// Who asked for a flow: the Telegram user and the chat to answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlowOwner {
    pub user_id: u64,
    pub chat_id: i64,
}

/// The `state` value of one flow: 32 random bytes, base64url.
///
/// Not a [`Secret`] because it travels in URLs the user sees, but it is
/// never logged: `Debug` shows a prefix only.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FlowState(String);

impl FlowState {
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for FlowState {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl std::fmt::Debug for FlowState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FlowState({}…)", self.0.get(..4).unwrap_or(""))
    }
}

/// The OAuth client a user's tokens belong to, kept beside the tokens:
/// refreshing needs the same client id (and secret) that obtained them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientRecord {
    pub client_id: String,
    #[serde(with = "crate::secret::exposed::option", default)]
    pub client_secret: Option<Secret>,
    pub redirect_uri: String,
    pub issuer: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The server's endpoints were assumed, not discovered (2025-03-26
    /// servers), so later discovery may assume them again.
    #[serde(default)]
    pub assumed_endpoints: bool,
    /// The server's `WWW-Authenticate` challenge when the user connected:
    /// its `resource_metadata` may be the only way to find the
    /// authorization server again.
    #[serde(default)]
    pub challenge: Option<String>,
}

/// One user's standing with one server: the tokens and their client.
#[derive(Debug, Clone)]
pub struct Connection {
    pub credentials: StoredCredentials,
    pub client: ClientRecord,
}

impl Connection {
    /// Whether the tokens are there (a rejected refresh token leaves the
    /// client without them).
    pub fn has_tokens(&self) -> bool {
        self.credentials.token_response.is_some()
    }
}

/// Where a connect link was posted, so it can be edited when the link
/// expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub chat_id: i64,
    pub message_id: i32,
}

/// An authorization flow that waits for its callback: exactly what
/// completing it needs, well under a kilobyte.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingFlow {
    /// The OAuth `state`: how the callback finds the flow.
    pub state: FlowState,
    /// How the bot's start page (`/oauth/start/{id}`) finds the flow. A
    /// separate value, so the start link reveals nothing of the state.
    pub start_id: FlowState,
    pub owner: FlowOwner,
    /// How the start page names who asked ("@alice", or a first name).
    pub requester: String,
    pub server_id: String,
    /// Seconds since the Unix epoch; wall-clock so the record means the
    /// same after a restart.
    pub expires_at: u64,
    /// rmcp's PKCE verifier, its own CSRF token, the expected issuer.
    pub authorization: StoredAuthorizationState,
    /// The client the authorization URL was made for.
    pub client: ClientRecord,
    /// The authorization server's URL, where the start page sends the
    /// browser. It holds the state: shown to the bound browser only.
    #[serde(with = "crate::secret::exposed")]
    pub authorize_url: Secret,
    /// SHA-256 (hex) of the browser-binding cookie, once a browser took the
    /// flow at the start page; the callback must come with that cookie.
    pub binding: Option<String>,
    /// The chat message holding the link, once sent.
    pub message: Option<ChatMessage>,
    /// The command that asked for this authorization, run again once it
    /// completes; it expires with the flow.
    #[serde(default)]
    pub resume: Option<Resume>,
}

/// A command waiting for an authorization: it runs when the callback
/// completes, in the chat that asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resume {
    pub op: ResumeOp,
    /// Chat where the command was sent (a group, say); the flow itself
    /// belongs to the private chat.
    pub chat_id: i64,
    /// How a start page names the user, should the command need another
    /// authorization.
    pub requester: String,
    /// Authorizations this command has gone through for more scopes:
    /// after a few, a server that keeps refusing is given up on.
    pub step_ups: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ResumeOp {
    ListTools,
    ListResources,
    ListPrompts,
    CallTool {
        tool: String,
        arguments: Option<serde_json::Map<String, serde_json::Value>>,
    },
}

impl PendingFlow {
    pub fn expires_after(ttl: Duration) -> u64 {
        now_secs().saturating_add(ttl.as_secs())
    }

    pub fn is_expired(&self) -> bool {
        now_secs() >= self.expires_at
    }

    /// Seconds left, for cookies and pages.
    pub fn remaining(&self) -> Duration {
        Duration::from_secs(self.expires_at.saturating_sub(now_secs()))
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_256_bit_and_never_shown_whole() {
        let a = FlowState::random();
        let b = FlowState::random();
        assert_ne!(a, b);
        assert_eq!(URL_SAFE_NO_PAD.decode(a.as_str()).unwrap().len(), 32);
        assert!(!format!("{a:?}").contains(a.as_str()));
    }
}
