//! The application core: what a user can ask of their MCP servers.
//!
//! Every front end (the Telegram bot, the HTTP callback, the terminal)
//! drives the same use cases here: start and complete a connect, list
//! tools, call a tool, disconnect, status. Each returns a typed outcome or
//! a typed error with its cause kept; none holds a word meant for a user,
//! since each adapter has one place where outcomes become its own words.
//! What must follow a completed flow (store, drop the stale session, tell
//! the chat) happens here, so no adapter repeats it.

pub mod form;
pub mod notify;
pub mod ready;

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rmcp::model::{
    CallToolResult, GetPromptResult, JsonObject, Prompt, ReadResourceResult, Resource, Tool,
};

use crate::config::{Config, ServerConfig};
use crate::logging::chain;
use crate::mcp::Sessions;
use crate::mcp::client::{Elicitation, McpClient};
use crate::metrics::Metrics;
use crate::oauth::{CallbackError, CallbackParams, Connector};
use crate::secret::Secret;
use crate::store::{ChatMessage, CommandTicket, FlowOwner, StoreError, Stores};
pub use crate::store::{Resume, ResumeOp};

pub use crate::mcp::{CallObserver, INVALID_PARAMS, McpError as CallError, Progress, Watch};
pub use crate::oauth::{
    Binding, BindingCookie, Bound, BrowserError, ClientSource, FlowLink, FlowRef, FlowReport,
    OAuthError, Revocation, StartOptions, StartPage,
};
pub use notify::{ChatNotifier, Intruder, Notice, Silent};

/// A user's standing with one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// The server needs no per-user sign-in.
    NoSignIn,
    Connected,
    NotConnected,
    /// Connected once, but the authorization server refused the refresh
    /// token (expired, revoked): the user must connect again.
    Expired,
    /// The stored record cannot be read (logged); connecting again
    /// replaces it.
    Unreadable,
    /// A server that takes each user's own token: the user gave one.
    TokenGiven,
    /// A server that takes each user's own token: none given yet.
    NoToken,
}

/// What a user's connection to a server holds, secrets left out.
#[derive(Debug, Clone)]
pub struct ConnectionSummary {
    pub issuer: Option<String>,
    pub scopes: Vec<String>,
    /// Time left on the access token, when the server said how long it
    /// lives; zero once it has expired.
    pub expires_in: Option<Duration>,
    pub refreshable: bool,
}

#[derive(Debug, Clone)]
pub struct ServerStatus {
    pub server: Arc<ServerConfig>,
    pub standing: Standing,
    /// What the connection holds, when connected.
    pub summary: Option<ConnectionSummary>,
}

/// A connect link for the user to open.
#[derive(Debug)]
pub struct ConnectOffer {
    pub server: Arc<ServerConfig>,
    /// Where the button leads; shown to the flow's owner only.
    pub link: FlowLink,
    /// Names the flow to [`Gateway::link_sent`].
    pub flow_id: String,
    pub expires_in: Duration,
    /// The user's standing before this flow (connected already, say).
    pub before: Standing,
    pub report: FlowReport,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the server needs no sign-in")]
    NoSignIn,
    /// `/connect` asked too often; try again after the duration.
    #[error("connect links are asked for too often")]
    TooFast(Duration),
    #[error("the authorization flow could not start")]
    OAuth(#[from] OAuthError),
}

/// A flow completed by its callback.
#[derive(Debug, Clone)]
pub struct Connected {
    pub owner: FlowOwner,
    pub server: Arc<ServerConfig>,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// The command that waited for this authorization.
    pub resume: Option<Resume>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnected {
    /// The tokens are deleted; what the server did with them.
    Removed(Revocation),
    /// The user's personal token is deleted (the bot cannot revoke it).
    TokenRemoved,
    WasNotConnected,
}

#[derive(Debug, thiserror::Error)]
pub enum DisconnectError {
    #[error("the server needs no sign-in")]
    NoSignIn,
    #[error("the credential store failed")]
    Store(#[from] StoreError),
}

/// Another of the user's commands is still running.
#[derive(Debug, Clone, thiserror::Error)]
#[error("still working on {running}")]
pub struct Busy {
    pub running: String,
    /// The user was told so already while this command runs.
    pub told: bool,
}

pub struct Gateway {
    config: Arc<Config>,
    oauth: Arc<Connector>,
    sessions: Sessions,
    notifier: Arc<dyn ChatNotifier>,
    stores: Stores,
    connects: DefaultKeyedRateLimiter<u64>,
    metrics: Arc<Metrics>,
}

impl Gateway {
    /// `redirect_uri` is where authorization servers send browsers back.
    pub fn new(
        config: Arc<Config>,
        stores: Stores,
        redirect_uri: String,
        notifier: Arc<dyn ChatNotifier>,
    ) -> Self {
        let per_minute =
            NonZeroU32::new(config.limits.connects_per_minute).unwrap_or(NonZeroU32::MIN);
        let metrics = Arc::new(Metrics::default());
        let oauth = Arc::new(Connector::new(
            config.clone(),
            stores.clone(),
            redirect_uri,
            metrics.clone(),
        ));
        Self {
            sessions: Sessions::new(
                oauth.clone(),
                stores.personal_tokens.clone(),
                McpClient::default(),
            ),
            config,
            oauth,
            notifier,
            stores,
            connects: RateLimiter::keyed(Quota::per_minute(per_minute)),
            metrics,
        }
    }

    /// Answers servers' elicitation requests as `elicitation` says: the
    /// chat asks its user; the terminal takes defaults or declines.
    pub fn with_elicitation(mut self, elicitation: Elicitation) -> Self {
        self.sessions = Sessions::new(
            self.oauth.clone(),
            self.stores.personal_tokens.clone(),
            McpClient::new(elicitation),
        );
        self
    }

    /// Starts one of the user's commands, labelled for "still working on
    /// …": at most one runs per user; the ticket ends it when dropped.
    /// The journal of the updates the chat adapter is handling.
    pub fn update_journal(&self) -> Arc<dyn crate::store::UpdateJournal> {
        self.stores.journal.clone()
    }

    pub async fn begin_command(&self, user_id: u64, label: &str) -> Result<CommandTicket, Busy> {
        self.stores
            .commands
            .try_begin(user_id, label)
            .await
            .map_err(|running| Busy {
                running: running.label,
                told: running.told,
            })
    }

    /// Asks the other replicas to cancel the user's call (`call`, or any)
    /// when one of them runs a command of the user's; answers whether it
    /// asked. A store that cannot be asked counts as no.
    pub async fn cancel_elsewhere(&self, user_id: u64, call: Option<&str>) -> bool {
        self.stores
            .commands
            .cancel_elsewhere(user_id, call)
            .await
            .inspect_err(|error| {
                tracing::warn!(user = user_id, error = %chain(error), "could not ask the other replicas to cancel");
            })
            .unwrap_or(false)
    }

    /// Where dialogues are announced and replies handed between replicas.
    pub fn handoffs(&self) -> Arc<dyn crate::store::Handoffs> {
        self.stores.handoffs.clone()
    }

    /// Hands `update` to the replica holding the user's dialogue, when
    /// another one does; answers whether it took it.
    pub async fn hand_over(&self, user_id: u64, update: &teloxide::types::Update) -> bool {
        if !self.stores.handoffs.shared() {
            return false;
        }
        // teloxide's `Update` does not serialize its kind: the update is
        // put back together as Telegram sends it.
        use teloxide::types::UpdateKind;
        let value = match &update.kind {
            UpdateKind::Message(message) => {
                serde_json::json!({"update_id": update.id.0, "message": message})
            }
            UpdateKind::CallbackQuery(query) => {
                serde_json::json!({"update_id": update.id.0, "callback_query": query})
            }
            _ => return false,
        };
        self.stores
            .handoffs
            .hand_over(user_id, &value)
            .await
            .inspect_err(|error| {
                tracing::warn!(user = user_id, error = %chain(error), "could not hand a reply to the replica holding the dialogue");
            })
            .unwrap_or(false)
    }

    /// How a connect button binds the browser, per the config.
    pub fn binding(&self) -> Binding {
        self.oauth.binding()
    }

    /// The Client ID Metadata Document to publish, when hosted on https.
    pub fn client_metadata(&self) -> Option<serde_json::Value> {
        self.oauth.client_metadata()
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
            let standing = self.standing(user_id, server).await;
            let summary = match standing {
                Standing::Connected => self
                    .connection_summary(user_id, server)
                    .await
                    .ok()
                    .flatten(),
                _ => None,
            };
            out.push(ServerStatus {
                server: server.clone(),
                standing,
                summary,
            });
        }
        out
    }

    /// The user's connection to the server, if any.
    pub async fn connection_summary(
        &self,
        user_id: u64,
        server: &ServerConfig,
    ) -> Result<Option<ConnectionSummary>, StoreError> {
        use oauth2::TokenResponse;
        let Some(connection) = self.oauth.connection(user_id, &server.id).await? else {
            return Ok(None);
        };
        let credentials = &connection.credentials;
        let Some(tokens) = &credentials.token_response else {
            return Ok(None);
        };
        let expires_in = match (tokens.expires_in(), credentials.token_received_at) {
            (Some(lifetime), Some(received)) => {
                let ends = received.saturating_add(lifetime.as_secs());
                Some(Duration::from_secs(
                    ends.saturating_sub(crate::store::records::now_secs()),
                ))
            }
            (Some(lifetime), None) => Some(lifetime),
            _ => None,
        };
        Ok(Some(ConnectionSummary {
            issuer: credentials.issuer.clone(),
            scopes: credentials.granted_scopes.clone(),
            expires_in,
            refreshable: tokens.refresh_token().is_some(),
        }))
    }

    /// The user's standing with one server.
    pub async fn standing(&self, user_id: u64, server: &ServerConfig) -> Standing {
        if server.user_token.is_some() {
            return match self.stores.personal_tokens.load(user_id, &server.id).await {
                Ok(Some(_)) => Standing::TokenGiven,
                Ok(None) => Standing::NoToken,
                Err(error) => {
                    tracing::error!(user = user_id, server = %server.id, error = %chain(&error), "stored token unreadable");
                    Standing::Unreadable
                }
            };
        }
        if !server.is_oauth() {
            return Standing::NoSignIn;
        }
        match self.oauth.holds(user_id, &server.id).await {
            Ok(Some(true)) => Standing::Connected,
            Ok(Some(false)) => Standing::Expired,
            Ok(None) => Standing::NotConnected,
            Err(error) => {
                tracing::error!(user = user_id, server = %server.id, error = %chain(&error), "stored connection unreadable");
                Standing::Unreadable
            }
        }
    }

    /// Starts an authorization flow owned by `owner` (the user, and the
    /// chat that will be told how it ended); `requester` is how the start
    /// page names them.
    pub async fn start_connect(
        &self,
        owner: FlowOwner,
        requester: &str,
        server: &Arc<ServerConfig>,
    ) -> Result<ConnectOffer, ConnectError> {
        self.start_connect_with(owner, requester, server, StartOptions::default())
            .await
    }

    /// [`Gateway::start_connect`] with a challenge met on the way (its
    /// scope is what the server asks for) or explicit scopes (a step-up).
    pub async fn start_connect_with(
        &self,
        owner: FlowOwner,
        requester: &str,
        server: &Arc<ServerConfig>,
        options: StartOptions,
    ) -> Result<ConnectOffer, ConnectError> {
        if !server.is_oauth() {
            return Err(ConnectError::NoSignIn);
        }
        if let Err(not_until) = self.connects.check_key(&owner.user_id) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return Err(ConnectError::TooFast(wait));
        }
        let before = self.standing(owner.user_id, server).await;
        let started = self
            .oauth
            .start(owner, requester, server, options)
            .await
            .inspect_err(|error| {
                tracing::warn!(server = %server.id, user = owner.user_id, error = %chain(error), "could not start authorization");
            })?;
        self.metrics.connect_started();
        Ok(ConnectOffer {
            server: server.clone(),
            link: started.link,
            flow_id: started.flow_id,
            expires_in: started.expires_in,
            before,
            report: started.report,
        })
    }

    /// Records where a flow's link was posted, so it can be edited when the
    /// link expires.
    pub async fn link_sent(&self, flow_id: &str, message: ChatMessage) {
        if let Err(error) = self.stores.flows.set_message(flow_id, message).await {
            tracing::warn!(error = %chain(&error), "could not note where a link was posted");
        }
    }

    /// Drops expired flows and tells each owner their link ran out.
    pub async fn sweep_expired(&self) {
        self.connects.retain_recent();
        let swept = match self.stores.flows.sweep().await {
            Ok(swept) => swept,
            Err(error) => {
                tracing::error!(error = %chain(&error), "sweeping expired flows failed");
                return;
            }
        };
        for flow in swept {
            self.metrics.connect_ended("expired");
            self.notifier
                .notify(Notice::LinkExpired {
                    owner: flow.owner,
                    server: self.config.server(&flow.server_id).map(|s| &**s),
                    server_id: &flow.server_id,
                    message: flow.message,
                })
                .await;
        }
    }

    /// What the start page shows; looking changes nothing.
    pub async fn start_page(&self, flow_id: &str) -> Result<StartPage, BrowserError> {
        self.oauth.start_page(flow_id).await
    }

    /// The requester confirmed on the start page: this browser may go on.
    pub async fn bind_browser(
        &self,
        flow_id: &str,
        same_origin: bool,
        presented: Option<String>,
    ) -> Result<Bound, BrowserError> {
        let bound = self
            .oauth
            .bind_browser(flow_id, same_origin, presented)
            .await;
        self.report_misuse(&bound).await;
        bound
    }

    /// Telegram signed who opened the start page: only the requester's
    /// browser may go on.
    pub async fn bind_telegram_login(
        &self,
        flow_id: &str,
        fields: &BTreeMap<String, String>,
        presented: Option<String>,
    ) -> Result<Bound, BrowserError> {
        let bound = self
            .oauth
            .bind_telegram_login(flow_id, fields, presented)
            .await;
        self.report_misuse(&bound).await;
        bound
    }

    /// Tells a flow's owner that someone else tried their link.
    async fn report_misuse(&self, bound: &Result<Bound, BrowserError>) {
        let (flow, by) = match bound {
            Err(BrowserError::NotTheRequester { flow, clicked }) => (
                flow,
                Intruder::TelegramUser {
                    user_id: clicked.user_id,
                    name: clicked.username.clone().or(clicked.first_name.clone()),
                },
            ),
            Err(BrowserError::TakenByAnotherBrowser { flow }) => (flow, Intruder::OtherBrowser),
            _ => return,
        };
        tracing::warn!(server = %flow.server_id, user = flow.owner.user_id, "someone else tried a connect link");
        self.notifier
            .notify(Notice::LinkMisused {
                owner: flow.owner,
                server: self.config.server(&flow.server_id).map(|s| &**s),
                server_id: &flow.server_id,
                by,
            })
            .await;
    }

    /// Completes the flow a callback belongs to; then drops the user's old
    /// session (its tokens are stale) and tells the flow's chat either way.
    /// `cookie` reads the browser's cookies (the binding).
    pub async fn complete_connect(
        &self,
        params: CallbackParams,
        cookie: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<Connected, CallbackError> {
        let result = self.oauth.complete(params, cookie).await;
        let result = match result {
            Ok(done) => match self.config.server(&done.flow.server_id) {
                Some(server) => Ok(Connected {
                    owner: done.flow.owner,
                    server: server.clone(),
                    scopes: done.scopes,
                    resume: done.resume,
                }),
                None => Err(CallbackError::UnknownServer { flow: done.flow }),
            },
            Err(error) => Err(error),
        };
        match &result {
            Ok(_) => {
                self.metrics.callback("connected");
                self.metrics.connect_ended("completed");
            }
            Err(error) => {
                self.metrics.callback(error.label());
                // A flow that was found has ended, unless a retry is offered
                // or it waits for its owner's own browser.
                let ended = error.flow().is_some()
                    && !matches!(
                        error,
                        CallbackError::Exchange { retry: true, .. }
                            | CallbackError::WrongBrowser { .. }
                    );
                if ended {
                    self.metrics.connect_ended(error.label());
                }
            }
        }
        match &result {
            Ok(connected) => {
                self.sessions
                    .forget(connected.owner.user_id, &connected.server.id);
                self.notifier
                    .notify(Notice::Connected {
                        owner: connected.owner,
                        server: &connected.server,
                        resume: connected.resume.clone(),
                    })
                    .await;
            }
            Err(error) => {
                tracing::info!(error = %chain(error), "callback did not connect");
                if let Some(flow) = error.flow() {
                    let server = self.config.server(&flow.server_id).map(|s| &**s);
                    let notice = match error {
                        CallbackError::WrongBrowser { flow } => Notice::LinkMisused {
                            owner: flow.owner,
                            server,
                            server_id: &flow.server_id,
                            by: Intruder::OtherBrowser,
                        },
                        // The flow is kept and the page offers a retry; the
                        // chat hears of it only if the retry fails for good.
                        CallbackError::Exchange { retry: true, .. } => return result,
                        error => Notice::ConnectFailed {
                            owner: flow.owner,
                            server,
                            server_id: &flow.server_id,
                            error,
                        },
                    };
                    self.notifier.notify(notice).await;
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
        watch: Option<Arc<Watch>>,
    ) -> Result<CallToolResult, CallError> {
        let started = std::time::Instant::now();
        let result = self
            .sessions
            .call_tool(server, user_id, tool, arguments, watch)
            .await
            .inspect_err(|error| log_call_failure(user_id, server, "calling a tool", error));
        let outcome = match &result {
            Ok(result) if result.is_error == Some(true) => "tool_error",
            Ok(_) => "ok",
            Err(error) => error.label(),
        };
        if let Err(CallError::RefreshFailed { .. }) = &result {
            self.metrics.refresh("failed");
        }
        self.metrics
            .tool_call(&server.id, outcome, started.elapsed());
        result
    }

    pub async fn list_resources(
        &self,
        user_id: u64,
        server: &ServerConfig,
    ) -> Result<Vec<Resource>, CallError> {
        let listed = self.sessions.list_resources(server, user_id).await;
        without_the_method(listed)
            .inspect_err(|error| log_call_failure(user_id, server, "listing resources", error))
    }

    pub async fn read_resource(
        &self,
        user_id: u64,
        server: &ServerConfig,
        uri: &str,
        watch: Option<Arc<Watch>>,
    ) -> Result<ReadResourceResult, CallError> {
        self.sessions
            .read_resource(server, user_id, uri, watch)
            .await
            .inspect_err(|error| log_call_failure(user_id, server, "reading a resource", error))
    }

    pub async fn list_prompts(
        &self,
        user_id: u64,
        server: &ServerConfig,
    ) -> Result<Vec<Prompt>, CallError> {
        let listed = self.sessions.list_prompts(server, user_id).await;
        without_the_method(listed)
            .inspect_err(|error| log_call_failure(user_id, server, "listing prompts", error))
    }

    pub async fn get_prompt(
        &self,
        user_id: u64,
        server: &ServerConfig,
        name: &str,
        arguments: JsonObject,
        watch: Option<Arc<Watch>>,
    ) -> Result<GetPromptResult, CallError> {
        self.sessions
            .get_prompt(server, user_id, name, arguments, watch)
            .await
            .inspect_err(|error| log_call_failure(user_id, server, "getting a prompt", error))
    }

    /// Keeps the user's own token for a server that takes one, and drops
    /// their session so the next operation sends it.
    pub async fn save_personal_token(
        &self,
        user_id: u64,
        server: &ServerConfig,
        token: &Secret,
    ) -> Result<(), StoreError> {
        self.stores
            .personal_tokens
            .save(user_id, &server.id, token)
            .await?;
        self.sessions.forget(user_id, &server.id);
        tracing::info!(user = user_id, server = %server.id, "personal token saved");
        Ok(())
    }

    /// The tool of that name as the server lists it now.
    pub async fn find_tool(
        &self,
        user_id: u64,
        server: &ServerConfig,
        name: &str,
    ) -> Result<Option<Tool>, CallError> {
        self.sessions
            .find_tool(server, user_id, name)
            .await
            .inspect_err(|error| log_call_failure(user_id, server, "listing tools", error))
    }

    /// Whether a call of `tool` waits for the user's Run: a tool whose
    /// annotations say it may change things (`destructiveHint`, or not
    /// `readOnlyHint`), unless the user allowed it for good. A tool
    /// without annotations says nothing either way and runs at once.
    pub async fn needs_consent(&self, user_id: u64, server: &ServerConfig, tool: &Tool) -> bool {
        let Some(annotations) = &tool.annotations else {
            return false;
        };
        let may_change =
            annotations.destructive_hint == Some(true) || annotations.read_only_hint != Some(true);
        if !may_change {
            return false;
        }
        match self
            .stores
            .consents
            .allows(user_id, &server.id, &tool.name)
            .await
        {
            Ok(allowed) => !allowed,
            Err(error) => {
                tracing::warn!(user = user_id, error = %chain(&error), "consents unreadable; asking");
                true
            }
        }
    }

    pub async fn allow_tool(
        &self,
        user_id: u64,
        server: &ServerConfig,
        tool: &str,
    ) -> Result<(), StoreError> {
        self.stores.consents.allow(user_id, &server.id, tool).await
    }

    /// The (server id, tool) pairs the user allowed to run unasked.
    pub async fn allowed_tools(&self, user_id: u64) -> Result<Vec<(String, String)>, StoreError> {
        self.stores.consents.allowed(user_id).await
    }

    pub async fn withdraw_consent(
        &self,
        user_id: u64,
        server_id: &str,
        tool: &str,
    ) -> Result<bool, StoreError> {
        self.stores
            .consents
            .withdraw(user_id, server_id, tool)
            .await
    }

    /// Revokes the user's tokens at the server (RFC 7009, where it can),
    /// deletes them whatever it answered, and closes the session.
    pub async fn disconnect(
        &self,
        user_id: u64,
        server: &ServerConfig,
    ) -> Result<Disconnected, DisconnectError> {
        if server.user_token.is_some() {
            self.sessions.forget(user_id, &server.id);
            let removed = self
                .stores
                .personal_tokens
                .remove(user_id, &server.id)
                .await?;
            return Ok(if removed {
                Disconnected::TokenRemoved
            } else {
                Disconnected::WasNotConnected
            });
        }
        if !server.is_oauth() {
            return Err(DisconnectError::NoSignIn);
        }
        self.sessions.forget(user_id, &server.id);
        let removed = self
            .oauth
            .disconnect(user_id, server)
            .await
            .inspect_err(|error| {
                tracing::error!(user = user_id, server = %server.id, error = %chain(error), "disconnect failed");
            })?;
        Ok(match removed {
            Some(revocation) => Disconnected::Removed(revocation),
            None => Disconnected::WasNotConnected,
        })
    }

    /// Deletes everything kept for the user: each connection is revoked at
    /// its server first where the server allows it, then the whole
    /// namespace goes (tokens, personal tokens, consents). Answers the
    /// servers whose revocation did not happen.
    pub async fn forget_user(&self, user_id: u64) -> Result<Vec<Arc<ServerConfig>>, StoreError> {
        let mut unrevoked = Vec::new();
        for server in &self.config.servers {
            self.sessions.forget(user_id, &server.id);
            if !server.is_oauth() {
                continue;
            }
            match self.disconnect(user_id, server).await {
                Ok(Disconnected::Removed(Revocation::Revoked))
                | Ok(Disconnected::WasNotConnected) => {}
                Ok(_) => unrevoked.push(server.clone()),
                Err(error) => {
                    tracing::warn!(user = user_id, server = %server.id, error = %chain(&error), "could not disconnect while forgetting a user");
                    unrevoked.push(server.clone());
                }
            }
        }
        self.stores.user_data.forget(user_id).await?;
        tracing::info!(user = user_id, "forgot a user's data");
        Ok(unrevoked)
    }

    /// Closes the MCP sessions unused for the configured idle time by `now`;
    /// answers how many.
    pub fn close_idle_sessions(&self, now: std::time::Instant) -> usize {
        self.sessions.close_idle(self.config.mcp.session_idle, now)
    }

    /// MCP sessions open now.
    pub fn warm_sessions(&self) -> usize {
        self.sessions.warm()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// `/metrics`: the counters, and the state gauges read now.
    pub async fn render_metrics(&self) -> String {
        let pending = self.stores.flows.count().await.unwrap_or_default();
        self.metrics.render(pending, self.sessions.warm())
    }

    /// Closes every MCP session (at shutdown).
    pub async fn shutdown(&self) {
        self.sessions.close_all().await;
    }
}

/// Authorizations for more scopes one command may go through before the
/// bot stops asking: a server that keeps refusing gets no loop.
pub const MAX_STEP_UPS: u8 = 3;

/// The scopes of a step-up: those held plus those the server now
/// requires, in order, once each (asking for the required ones alone would
/// lose what was granted).
pub fn step_up_scopes(granted: &[String], required: Option<&str>) -> Vec<String> {
    let mut scopes: Vec<String> = granted.to_vec();
    for scope in required.unwrap_or_default().split_whitespace() {
        if !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_owned());
        }
    }
    scopes
}

/// A server without resources or prompts may answer their listing with
/// JSON-RPC "method not found": it has none.
fn without_the_method<T>(listed: Result<Vec<T>, CallError>) -> Result<Vec<T>, CallError> {
    match listed {
        Err(CallError::Rpc { code: -32601, .. }) => Ok(Vec::new()),
        other => other,
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
