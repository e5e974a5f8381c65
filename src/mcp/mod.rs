//! Per-user MCP sessions and the two things users do with them: list tools
//! and call one.
//!
//! One live session is kept per (Telegram user, server): an MCP session is
//! stateful (initialize handshake, session id) and an OAuth session also
//! owns its `AuthorizationManager`, so rebuilding it per command would be
//! slow and wasteful. No lock is held across a network call: a slot is a
//! once-cell that only callers of that same slot wait on while it opens,
//! and dropping a session (after a reconnect, say) never waits at all.

pub mod client;
mod error;
mod failure;
pub mod transport;

use std::future::Future;
use std::sync::Arc;

use dashmap::DashMap;
use rmcp::RoleClient;
use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject, Tool};
use rmcp::service::{Peer, ServiceError};
use tokio::sync::OnceCell;

use crate::config::ServerConfig;
use crate::oauth::Connector;

pub use error::{BoxError, INVALID_PARAMS, McpError};
use transport::Session;

type Slot = Arc<OnceCell<Session>>;

pub struct Sessions {
    connector: Arc<Connector>,
    client: client::McpClient,
    slots: DashMap<(u64, String), Slot>,
    /// One HTTP client per server id, made on first use.
    clients: DashMap<String, reqwest::Client>,
}

impl Sessions {
    pub fn new(connector: Arc<Connector>, client: client::McpClient) -> Self {
        Self {
            connector,
            client,
            slots: DashMap::new(),
            clients: DashMap::new(),
        }
    }

    /// Every tool of the server, across pages.
    pub async fn list_tools(
        &self,
        server: &ServerConfig,
        user_id: u64,
    ) -> Result<Vec<Tool>, McpError> {
        self.run(server, user_id, |peer| async move {
            peer.list_all_tools().await
        })
        .await
    }

    pub async fn call_tool(
        &self,
        server: &ServerConfig,
        user_id: u64,
        tool: &str,
        arguments: Option<JsonObject>,
    ) -> Result<CallToolResult, McpError> {
        let mut params = CallToolRequestParams::new(tool.to_owned());
        if let Some(arguments) = arguments {
            params = params.with_arguments(arguments);
        }
        self.run(server, user_id, move |peer| {
            let params = params.clone();
            async move { peer.call_tool(params).await }
        })
        .await
    }

    /// Drops the user's session with the server, e.g. after the tokens
    /// changed; the next operation opens a new one. The session closes in
    /// the background; nothing here waits on the network.
    pub fn forget(&self, user_id: u64, server_id: &str) {
        self.slots.remove(&(user_id, server_id.to_owned()));
    }

    /// Closes every session (at shutdown).
    pub async fn close_all(&self) {
        let slots: Vec<Slot> = self.slots.iter().map(|e| e.value().clone()).collect();
        self.slots.clear();
        for slot in slots {
            if let Ok(slot) = Arc::try_unwrap(slot)
                && let Some(mut session) = slot.into_inner()
            {
                let _ = session.close().await;
            }
        }
    }

    /// Runs `op` on the user's session, opening one when needed. A reused
    /// session that fails in a way a fresh one might not is replaced once.
    async fn run<T, F, Fut>(
        &self,
        server: &ServerConfig,
        user_id: u64,
        op: F,
    ) -> Result<T, McpError>
    where
        F: Fn(Peer<RoleClient>) -> Fut,
        Fut: Future<Output = Result<T, ServiceError>>,
    {
        let limit = server.timeout;
        let work = async {
            loop {
                let (slot, peer, fresh) = self.peer(server, user_id).await?;
                let error = match op(peer).await {
                    Ok(value) => return Ok(value),
                    Err(error) => failure::from_service(error, limit).for_server(server),
                };
                if !error.keeps_session() {
                    self.drop_slot(user_id, &server.id, &slot);
                }
                if fresh || !error.is_transient() {
                    return Err(error);
                }
                tracing::debug!(server = %server.id, user = user_id, error = %crate::logging::chain(&error), "session failed; reopening once");
            }
        };
        tokio::time::timeout(limit, work)
            .await
            .unwrap_or(Err(McpError::Timeout(limit)))
    }

    /// The live session's peer, the slot it lives in, and whether it was
    /// opened just now.
    async fn peer(
        &self,
        server: &ServerConfig,
        user_id: u64,
    ) -> Result<(Slot, Peer<RoleClient>, bool), McpError> {
        // A session found dead is replaced once; twice would mean the
        // server closes every session at once, which the caller hears of.
        for _ in 0..2 {
            let slot = self
                .slots
                .entry((user_id, server.id.clone()))
                .or_default()
                .clone();
            let mut opened = false;
            let session = slot
                .get_or_try_init(|| async {
                    opened = true;
                    let http = self.http(server)?;
                    transport::connect(server, http, user_id, &self.connector, self.client.clone())
                        .await
                        .map_err(|error| error.for_server(server))
                })
                .await;
            let session = match session {
                Ok(session) => session,
                Err(error) => {
                    self.drop_slot(user_id, &server.id, &slot);
                    return Err(error);
                }
            };
            if session.is_closed() {
                // Died since it was opened: make room for a new one.
                self.drop_slot(user_id, &server.id, &slot);
                continue;
            }
            let peer = session.peer().clone();
            return Ok((slot, peer, opened));
        }
        Err(McpError::ConnectionLost { source: None })
    }

    fn http(&self, server: &ServerConfig) -> Result<reqwest::Client, McpError> {
        if let Some(client) = self.clients.get(&server.id) {
            return Ok(client.clone());
        }
        let client = transport::http_client(server)?;
        self.clients.insert(server.id.clone(), client.clone());
        Ok(client)
    }

    /// Removes `slot` unless a newer one has taken its place.
    fn drop_slot(&self, user_id: u64, server_id: &str, slot: &Slot) {
        self.slots
            .remove_if(&(user_id, server_id.to_owned()), |_, current| {
                Arc::ptr_eq(current, slot)
            });
    }
}
