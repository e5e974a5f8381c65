//! Per-user MCP sessions and the two things users do with them: list tools
//! and call one.
//!
//! One live session is kept per (Telegram user, server): a 2025 MCP
//! session is stateful (initialize handshake, session id), a 2026 one holds
//! what `server/discover` and `tools/list` told it, and an OAuth session
//! also owns its `AuthorizationManager`, so rebuilding it per command would
//! be slow and wasteful. No lock is held across a network call: a slot is a
//! once-cell that only callers of that same slot wait on while it opens,
//! and dropping a session (after a reconnect, say) never waits at all.

pub mod client;
mod error;
mod failure;
mod standalone;
pub mod transport;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use dashmap::DashMap;
use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject, ProtocolVersion, Tool};
use rmcp::service::ServiceError;
use tokio::sync::OnceCell;

use crate::config::ServerConfig;
use crate::oauth::Connector;

pub use error::{BoxError, INVALID_PARAMS, McpError};
use transport::Session;

type Slot = Arc<OnceCell<Live>>;

/// Pauses before retrying an operation whose token renewal failed for a
/// passing reason.
const REFRESH_BACKOFF: [std::time::Duration; 3] = [
    std::time::Duration::from_millis(500),
    std::time::Duration::from_secs(1),
    std::time::Duration::from_secs(2),
];

pub struct Sessions {
    connector: Arc<Connector>,
    client: client::McpClient,
    slots: DashMap<(u64, String), Slot>,
    /// One HTTP client per server id, made on first use.
    clients: DashMap<String, reqwest::Client>,
}

/// An open session as operations get it: the session itself, not a clone
/// of its peer, so they can use the session's own helpers.
type Live = Arc<Open>;

pub struct Open {
    session: Session,
    /// The tool names of the last listing, for servers of 2026-07-28 on.
    /// Their transport learns from `tools/list` which arguments to mirror
    /// into `Mcp-Param-*` headers (SEP-2243) and drops tools whose header
    /// annotations are invalid, which clients must not call: so a call
    /// there goes only to a tool the session has seen listed.
    listed: std::sync::Mutex<Option<Arc<HashSet<String>>>>,
}

impl Open {
    fn new(session: Session) -> Self {
        Self {
            session,
            listed: std::sync::Mutex::new(None),
        }
    }

    async fn list_tools(&self) -> Result<Vec<Tool>, ServiceError> {
        let tools = self.session.peer().list_all_tools().await?;
        let names = tools.iter().map(|tool| tool.name.to_string()).collect();
        *self.listed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(names));
        Ok(tools)
    }

    fn has_listed(&self, tool: &str) -> Option<bool> {
        let listed = self.listed.lock().unwrap_or_else(|p| p.into_inner());
        listed.as_ref().map(|names| names.contains(tool))
    }

    fn sends_standard_headers(&self) -> bool {
        self.session
            .peer()
            .peer_info()
            .is_some_and(|info| info.protocol_version >= ProtocolVersion::STANDARD_HEADERS)
    }

    /// Calls `params.name`, first making sure (on servers that need it) that
    /// the tool was listed; re-lists once for a name not seen yet, since
    /// the server's tools may have changed.
    async fn call_tool(&self, params: CallToolRequestParams) -> Result<CallToolResult, Step> {
        if self.sends_standard_headers() && self.has_listed(&params.name) != Some(true) {
            let listed = self.list_tools().await?;
            if !listed.iter().any(|tool| tool.name == params.name) {
                return Err(Step::Refused(McpError::UnknownTool {
                    name: params.name.to_string(),
                }));
            }
        }
        // The session's own `call_tool` answers a 2026-07-28 server's
        // `input_required` rounds (SEP-2322) through the client handler,
        // echoing `requestState` untouched; 2025 servers never send them.
        Ok(self.session.call_tool(params).await?)
    }
}

/// How an operation on a session ended badly: the server or transport
/// failed, or mcpgram declined to send the request at all.
enum Step {
    Failed(ServiceError),
    Refused(McpError),
}

impl From<ServiceError> for Step {
    fn from(error: ServiceError) -> Self {
        Step::Failed(error)
    }
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
        self.run(server, user_id, |live| async move {
            Ok(live.list_tools().await?)
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
        self.run(server, user_id, move |live| {
            let params = params.clone();
            async move { live.call_tool(params).await }
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
                && let Some(live) = slot.into_inner()
                && let Ok(Open { mut session, .. }) = Arc::try_unwrap(live)
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
        F: Fn(Live) -> Fut,
        Fut: Future<Output = Result<T, Step>>,
    {
        let limit = server.timeout;
        let work = async {
            let mut backoff = REFRESH_BACKOFF.iter();
            loop {
                let error = match self.live(server, user_id).await {
                    Ok((slot, live, fresh)) => {
                        let error = match op(live).await {
                            Ok(value) => return Ok(value),
                            Err(Step::Failed(error)) => {
                                failure::from_service(error, limit).for_server(server)
                            }
                            Err(Step::Refused(error)) => return Err(error),
                        };
                        if !error.keeps_session() {
                            self.drop_slot(user_id, &server.id, &slot);
                        }
                        if !fresh && error.is_transient() {
                            tracing::debug!(server = %server.id, user = user_id, error = %crate::logging::chain(&error), "session failed; reopening once");
                            continue;
                        }
                        error
                    }
                    Err(error) => error,
                };
                // A token renewal that failed for a passing reason keeps
                // the tokens: try again after a pause, a few times within
                // the operation's time limit.
                let (McpError::RefreshFailed { .. }, Some(pause)) = (&error, backoff.next()) else {
                    return Err(error);
                };
                tracing::info!(server = %server.id, user = user_id, error = %crate::logging::chain(&error), "token renewal failed; retrying in {} ms", pause.as_millis());
                tokio::time::sleep(*pause).await;
            }
        };
        tokio::time::timeout(limit, work)
            .await
            .unwrap_or(Err(McpError::Timeout(limit)))
    }

    /// The live session, and whether it was opened just now.
    async fn live(
        &self,
        server: &ServerConfig,
        user_id: u64,
    ) -> Result<(Slot, Live, bool), McpError> {
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
                        .map(|session| Arc::new(Open::new(session)))
                        .map_err(|error| error.for_server(server))
                })
                .await;
            let live = match session {
                Ok(session) => session.clone(),
                Err(error) => {
                    self.drop_slot(user_id, &server.id, &slot);
                    return Err(error);
                }
            };
            if live.session.is_closed() {
                // Died since it was opened: make room for a new one.
                self.drop_slot(user_id, &server.id, &slot);
                continue;
            }
            return Ok((slot, live, opened));
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
