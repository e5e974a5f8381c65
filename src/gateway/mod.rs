//! The application core: what a user can ask of their MCP servers.
//!
//! Every front end (the Telegram bot, the HTTP callback, the terminal)
//! drives the same use cases here: start and complete a connect, list
//! tools, call a tool, disconnect, status. Each returns a typed outcome or
//! a typed error with its cause kept; none holds a word meant for a user,
//! since each adapter has one place where outcomes become its own words.
//! What must follow a completed flow (store, drop the stale session, tell
//! the chat) happens here, so no adapter repeats it.

pub mod notify;

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{CallToolResult, JsonObject, Tool};

use crate::config::{Config, ServerConfig};
use crate::logging::chain;
use crate::mcp::Sessions;
use crate::oauth::{CallbackError, CallbackParams, Connector};
use crate::secret::Secret;
use crate::store::{FlowOwner, StoreError, Stores};

pub use crate::mcp::{INVALID_PARAMS, McpError as CallError};
pub use crate::oauth::{FlowRef, OAuthError};
pub use notify::{ChatNotifier, ConnectOutcome, Silent};

/// A user's standing with one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// The server needs no per-user sign-in.
    NoSignIn,
    Connected,
    NotConnected,
    /// The stored record cannot be read (logged); connecting again
    /// replaces it.
    Unreadable,
}

#[derive(Debug, Clone)]
pub struct ServerStatus {
    pub server: Arc<ServerConfig>,
    pub standing: Standing,
}

/// A connect link for the user to open.
#[derive(Debug)]
pub struct ConnectOffer {
    pub server: Arc<ServerConfig>,
    /// Carries the flow's `state`: shown to its owner only.
    pub authorize_url: Secret,
    pub expires_in: Duration,
    /// The user's standing before this flow (connected already, say).
    pub before: Standing,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the server needs no sign-in")]
    NoSignIn,
    #[error("the authorization flow could not start")]
    OAuth(#[from] OAuthError),
}

/// A flow completed by its callback.
#[derive(Debug, Clone)]
pub struct Connected {
    pub owner: FlowOwner,
    pub server: Arc<ServerConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnected {
    Removed,
    WasNotConnected,
}

#[derive(Debug, thiserror::Error)]
pub enum DisconnectError {
    #[error("the server needs no sign-in")]
    NoSignIn,
    #[error("the credential store failed")]
    Store(#[from] StoreError),
}

pub struct Gateway {
    config: Arc<Config>,
    oauth: Arc<Connector>,
    sessions: Sessions,
    notifier: Arc<dyn ChatNotifier>,
}

impl Gateway {
    /// `redirect_uri` is where authorization servers send browsers back.
    pub fn new(
        config: Arc<Config>,
        stores: Stores,
        redirect_uri: String,
        notifier: Arc<dyn ChatNotifier>,
    ) -> Self {
        let oauth = Arc::new(Connector::new(config.clone(), stores, redirect_uri));
        Self {
            sessions: Sessions::new(oauth.clone()),
            config,
            oauth,
            notifier,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The configured server a user means by `typed` (ids are matched
    /// case-insensitively: phones capitalise the first letter).
    pub fn find_server(&self, typed: &str) -> Option<Arc<ServerConfig>> {
        let typed = typed.to_lowercase();
        self.config.server(&typed).cloned()
    }

    /// Every server with the user's standing.
    pub async fn status(&self, user_id: u64) -> Vec<ServerStatus> {
        let mut out = Vec::with_capacity(self.config.servers.len());
        for server in &self.config.servers {
            out.push(ServerStatus {
                server: server.clone(),
                standing: self.standing(user_id, server).await,
            });
        }
        out
    }

    async fn standing(&self, user_id: u64, server: &ServerConfig) -> Standing {
        if !server.is_oauth() {
            return Standing::NoSignIn;
        }
        match self.oauth.connection(user_id, &server.id).await {
            Ok(Some(_)) => Standing::Connected,
            Ok(None) => Standing::NotConnected,
            Err(error) => {
                tracing::error!(user = user_id, server = %server.id, error = %chain(&error), "stored connection unreadable");
                Standing::Unreadable
            }
        }
    }

    /// Starts an authorization flow owned by `owner` (the user, and the
    /// chat that will be told how it ended).
    pub async fn start_connect(
        &self,
        owner: FlowOwner,
        server: &Arc<ServerConfig>,
    ) -> Result<ConnectOffer, ConnectError> {
        if !server.is_oauth() {
            return Err(ConnectError::NoSignIn);
        }
        let before = self.standing(owner.user_id, server).await;
        let started = self.oauth.start(owner, server).await.inspect_err(|error| {
            tracing::warn!(server = %server.id, user = owner.user_id, error = %chain(error), "could not start authorization");
        })?;
        Ok(ConnectOffer {
            server: server.clone(),
            authorize_url: started.authorize_url,
            expires_in: started.expires_in,
            before,
        })
    }

    /// Completes the flow a callback belongs to; then drops the user's old
    /// session (its tokens are stale) and tells the flow's chat either way.
    pub async fn complete_connect(
        &self,
        params: CallbackParams,
    ) -> Result<Connected, CallbackError> {
        let result = self.oauth.complete(params).await;
        let result = match result {
            Ok(done) => match self.config.server(&done.flow.server_id) {
                Some(server) => Ok(Connected {
                    owner: done.flow.owner,
                    server: server.clone(),
                }),
                None => Err(CallbackError::UnknownServer { flow: done.flow }),
            },
            Err(error) => Err(error),
        };
        match &result {
            Ok(connected) => {
                self.sessions
                    .forget(connected.owner.user_id, &connected.server.id);
                self.notifier
                    .connect_finished(ConnectOutcome::Connected {
                        owner: connected.owner,
                        server: &connected.server,
                    })
                    .await;
            }
            Err(error) => {
                tracing::info!(error = %chain(error), "callback did not connect");
                if let Some(flow) = error.flow() {
                    self.notifier
                        .connect_finished(ConnectOutcome::Failed {
                            owner: flow.owner,
                            server: self.config.server(&flow.server_id).map(|s| &**s),
                            server_id: &flow.server_id,
                            error,
                        })
                        .await;
                }
            }
        }
        result
    }

    pub async fn list_tools(
        &self,
        user_id: u64,
        server: &ServerConfig,
    ) -> Result<Vec<Tool>, CallError> {
        self.sessions
            .list_tools(server, user_id)
            .await
            .inspect_err(|error| log_call_failure(user_id, server, "listing tools", error))
    }

    pub async fn call_tool(
        &self,
        user_id: u64,
        server: &ServerConfig,
        tool: &str,
        arguments: Option<JsonObject>,
    ) -> Result<CallToolResult, CallError> {
        self.sessions
            .call_tool(server, user_id, tool, arguments)
            .await
            .inspect_err(|error| log_call_failure(user_id, server, "calling a tool", error))
    }

    /// Deletes the user's tokens for the server and closes the session.
    pub async fn disconnect(
        &self,
        user_id: u64,
        server: &ServerConfig,
    ) -> Result<Disconnected, DisconnectError> {
        if !server.is_oauth() {
            return Err(DisconnectError::NoSignIn);
        }
        self.sessions.forget(user_id, &server.id);
        let removed = self
            .oauth
            .disconnect(user_id, &server.id)
            .await
            .inspect_err(|error| {
                tracing::error!(user = user_id, server = %server.id, error = %chain(error), "disconnect failed");
            })?;
        Ok(if removed {
            Disconnected::Removed
        } else {
            Disconnected::WasNotConnected
        })
    }

    /// Closes every MCP session (at shutdown).
    pub async fn shutdown(&self) {
        self.sessions.close_all().await;
    }
}

fn log_call_failure(user_id: u64, server: &ServerConfig, what: &str, error: &CallError) {
    match error {
        // The server answered; nothing is wrong on our side.
        CallError::Rpc { code, .. } => {
            tracing::info!(user = user_id, server = %server.id, code, "{what}: the server answered with an error");
        }
        CallError::NotAuthorized { .. } => {
            tracing::info!(user = user_id, server = %server.id, "{what}: authorization needed");
        }
        _ => {
            tracing::warn!(user = user_id, server = %server.id, error = %chain(error), "{what} failed");
        }
    }
}
