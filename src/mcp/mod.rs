//! Per-user MCP sessions and the two things users do with them: list tools
//! and call one.
//!
//! One live session is kept per (Telegram user, server): an MCP session is
//! stateful (initialize handshake, session id) and an OAuth session also
//! owns its `AuthorizationManager` with two HTTP clients, so rebuilding it
//! per command would be slow and wasteful. Sessions of different users
//! never share a lock; every operation is bounded by the server's timeout.

mod failure;
pub mod render;
pub mod transport;

use std::future::Future;
use std::sync::Arc;

use dashmap::DashMap;
use rmcp::RoleClient;
use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject, Tool};
use rmcp::service::{Peer, ServiceError};
use tokio::sync::Mutex;

use crate::config::{Config, ServerConfig};
use crate::net_guard::GuardError;
use crate::oauth::{Connector, OAuthError};
use crate::vault::VaultError;

use transport::Session;

/// Why an MCP operation failed, in words fit for the user.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("unknown server {0}")]
    UnknownServer(String),
    #[error("not connected")]
    NotConnected,
    #[error("the server did not answer within {0} s")]
    Timeout(u64),
    #[error("the server cannot be reached: {0}")]
    Unreachable(String),
    #[error("the server answered with an error: {0}")]
    Server(String),
    #[error("the server refused the bot's credentials (HTTP {0})")]
    Refused(u16),
    #[error("refusing to contact the server: {0}")]
    Guard(#[from] GuardError),
    #[error("{0}")]
    OAuth(#[from] OAuthError),
    /// Users see a generic sentence; the detail (paths, key trouble) is
    /// for the admin's logs.
    #[error("the bot's encrypted storage cannot be read; the bot's admin must check its logs")]
    Vault(#[from] VaultError),
    #[error("server configuration: {0}")]
    Config(String),
}

type Slot = Arc<Mutex<Option<Session>>>;

pub struct McpHub {
    config: Arc<Config>,
    connector: Arc<Connector>,
    sessions: DashMap<(u64, String), Slot>,
    /// One HTTP client per server id, made on first use.
    clients: DashMap<String, reqwest::Client>,
}

impl McpHub {
    pub fn new(config: Arc<Config>, connector: Arc<Connector>) -> Self {
        Self {
            config,
            connector,
            sessions: DashMap::new(),
            clients: DashMap::new(),
        }
    }

    /// Every tool of the server, across pages.
    pub async fn list_tools(&self, user_id: u64, server_id: &str) -> Result<Vec<Tool>, McpError> {
        self.run(user_id, server_id, |peer| async move {
            peer.list_all_tools().await
        })
        .await
    }

    pub async fn call_tool(
        &self,
        user_id: u64,
        server_id: &str,
        tool: &str,
        arguments: Option<JsonObject>,
    ) -> Result<CallToolResult, McpError> {
        let mut params = CallToolRequestParams::new(tool.to_owned());
        if let Some(arguments) = arguments {
            params = params.with_arguments(arguments);
        }
        self.run(user_id, server_id, move |peer| {
            let params = params.clone();
            async move { peer.call_tool(params).await }
        })
        .await
    }

    /// Drops the user's session with the server, e.g. after the tokens
    /// changed; the next operation opens a new one.
    pub async fn forget(&self, user_id: u64, server_id: &str) {
        if let Some((_, slot)) = self.sessions.remove(&(user_id, server_id.to_owned()))
            && let Some(session) = slot.lock().await.take()
        {
            let _ = session.cancel().await;
        }
    }

    /// Closes every session (at shutdown).
    pub async fn close_all(&self) {
        let keys: Vec<_> = self.sessions.iter().map(|e| e.key().clone()).collect();
        for (user_id, server_id) in keys {
            self.forget(user_id, &server_id).await;
        }
    }

    /// Runs `op` on the user's session, opening one when needed. A session
    /// whose transport died is replaced once; an authorization failure
    /// drops the session and reports `NotConnected`.
    async fn run<T, F, Fut>(&self, user_id: u64, server_id: &str, op: F) -> Result<T, McpError>
    where
        F: Fn(Peer<RoleClient>) -> Fut,
        Fut: Future<Output = Result<T, ServiceError>>,
    {
        let server = self
            .config
            .server(server_id)
            .ok_or_else(|| McpError::UnknownServer(server_id.to_owned()))?;
        let limit = server.timeout;
        let work = async {
            loop {
                let (peer, fresh) = self.peer(server, user_id).await?;
                match op(peer).await {
                    Ok(value) => return Ok(value),
                    Err(ServiceError::McpError(data)) => {
                        return Err(McpError::Server(data.message.to_string()));
                    }
                    Err(error) => {
                        self.forget(user_id, server_id).await;
                        let failure = failure::classify(
                            &error,
                            error.is_authorization_required(),
                            server.is_oauth(),
                        );
                        // A reused session may have died quietly; one fresh
                        // session is tried. A fresh one failing is final.
                        let transient = matches!(failure, McpError::Unreachable(_));
                        if fresh || !transient {
                            return Err(failure);
                        }
                        tracing::debug!(server = %server_id, %error, "session failed; reopening once");
                    }
                }
            }
        };
        tokio::time::timeout(limit, work)
            .await
            .unwrap_or_else(|_| Err(McpError::Timeout(limit.as_secs())))
    }

    /// The live session's peer, and whether it was opened just now.
    async fn peer(
        &self,
        server: &ServerConfig,
        user_id: u64,
    ) -> Result<(Peer<RoleClient>, bool), McpError> {
        let slot = self
            .sessions
            .entry((user_id, server.id.clone()))
            .or_default()
            .clone();
        let mut guard = slot.lock().await;
        if let Some(session) = guard.as_ref().filter(|s| !s.is_closed()) {
            return Ok((session.peer().clone(), false));
        }
        let http = self
            .clients
            .entry(server.id.clone())
            .or_try_insert_with(|| transport::http_client(server))?
            .clone();
        let session = transport::connect(server, http, user_id, &self.connector).await?;
        let peer = session.peer().clone();
        *guard = Some(session);
        Ok((peer, true))
    }
}
