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

mod arguments;
pub mod client;
mod error;
mod failure;
mod standalone;
pub mod transport;
mod watch;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use dashmap::DashMap;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, GetPromptRequestParams, GetPromptResult, JsonObject,
    Prompt, ProtocolVersion, ReadResourceRequestParams, ReadResourceResult, Resource, Tool,
};
use rmcp::service::ServiceError;
use tokio::sync::OnceCell;

use crate::config::ServerConfig;
use crate::oauth::Connector;

pub use arguments::{Problem, Schema};
pub use error::{BoxError, INVALID_PARAMS, McpError, UrlPage};
use transport::Session;
pub use watch::{CallObserver, Progress, Watch};

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
    /// Users' own tokens, for servers that take one.
    personal_tokens: Arc<dyn crate::store::PersonalTokens>,
    client: client::McpClient,
    slots: DashMap<(u64, String), Slot>,
    /// One HTTP client per server id, made on first use.
    clients: DashMap<String, reqwest::Client>,
    /// Per server id: the tool listing its sessions share.
    catalogs: DashMap<String, Arc<SharedCatalog>>,
}

/// An open session as operations get it: the session itself, not a clone
/// of its peer, so they can use the session's own helpers.
type Live = Arc<Open>;

pub struct Open {
    session: Session,
    /// Where the session's client handler reports to the running call.
    hooks: Arc<watch::Hooks>,
    /// The tools of the last listing, by name, each with its compiled
    /// input schema. Arguments are checked against it before a call; and
    /// servers of 2026-07-28 on need it: their transport learns from
    /// `tools/list` which arguments to mirror into `Mcp-Param-*` headers
    /// (SEP-2243) and drops tools whose header annotations are invalid,
    /// which clients must not call.
    listed: std::sync::Mutex<Option<Catalog>>,
    /// When an operation last took the session: idle ones are closed.
    used: std::sync::Mutex<std::time::Instant>,
    /// The server's last listing, shared by its sessions.
    shared: Arc<SharedCatalog>,
}

type Catalog = Arc<HashMap<String, Arc<arguments::Checked>>>;

/// One server's last tool listing, shared by every session that lists the
/// same tools: a listing with its schemas (and their compiled validators)
/// is tens of kilobytes, and most users of a server see the same one, so
/// a thousand warm sessions need not hold a thousand copies. A session
/// whose listing differs (say, other scopes) keeps its own.
#[derive(Default)]
struct SharedCatalog(std::sync::Mutex<Option<Catalog>>);

impl SharedCatalog {
    /// The shared catalog when it lists exactly `tools`; otherwise a new
    /// one, which becomes the shared one.
    fn catalog_of(&self, tools: &[Tool]) -> Catalog {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(catalog) = last.as_ref()
            && catalog.len() == tools.len()
            && tools.iter().all(|tool| {
                catalog
                    .get(tool.name.as_ref())
                    .is_some_and(|known| known.tool == *tool)
            })
        {
            return catalog.clone();
        }
        let catalog: Catalog = Arc::new(
            tools
                .iter()
                .map(|tool| {
                    let checked = arguments::Checked::new(tool.clone());
                    (tool.name.to_string(), Arc::new(checked))
                })
                .collect(),
        );
        *last = Some(catalog.clone());
        catalog
    }
}

impl Open {
    fn new(session: Session, hooks: Arc<watch::Hooks>, shared: Arc<SharedCatalog>) -> Self {
        Self {
            session,
            hooks,
            listed: std::sync::Mutex::new(None),
            used: std::sync::Mutex::new(std::time::Instant::now()),
            shared,
        }
    }

    fn touch(&self) {
        *self.used.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
    }

    fn unused_for(&self, now: std::time::Instant) -> std::time::Duration {
        now.saturating_duration_since(*self.used.lock().unwrap_or_else(|p| p.into_inner()))
    }

    async fn list_tools(&self) -> Result<Vec<Tool>, ServiceError> {
        let tools = self.session.peer().list_all_tools().await?;
        let catalog = self.shared.catalog_of(&tools);
        *self.listed.lock().unwrap_or_else(|p| p.into_inner()) = Some(catalog);
        Ok(tools)
    }

    fn listed(&self, tool: &str) -> Option<Arc<arguments::Checked>> {
        let listed = self.listed.lock().unwrap_or_else(|p| p.into_inner());
        listed
            .as_ref()
            .and_then(|catalog| catalog.get(tool).cloned())
    }

    /// The tool as listed, listing again for a name not seen yet, since
    /// the server's tools may have changed.
    async fn tool(&self, name: &str) -> Result<Option<Arc<arguments::Checked>>, ServiceError> {
        if let Some(known) = self.listed(name) {
            return Ok(Some(known));
        }
        self.list_tools().await?;
        Ok(self.listed(name))
    }

    fn sends_standard_headers(&self) -> bool {
        self.session
            .peer()
            .peer_info()
            .is_some_and(|info| info.protocol_version >= ProtocolVersion::STANDARD_HEADERS)
    }

    /// Calls `params.name` once its arguments fit the tool's schema. A
    /// tool the server does not list is refused on servers that need the
    /// listing; older servers get the call and answer for themselves.
    async fn call_tool(
        &self,
        params: CallToolRequestParams,
        watch: Option<Arc<Watch>>,
    ) -> Result<CallToolResult, Step> {
        match self.tool(&params.name).await.map_err(Step::Repeatable)? {
            Some(tool) => {
                let problems = tool.problems(params.arguments.as_ref());
                if !problems.is_empty() {
                    return Err(Step::Refused(McpError::InvalidArguments {
                        tool: params.name.to_string(),
                        problems,
                    }));
                }
            }
            None if self.sends_standard_headers() => {
                return Err(Step::Refused(McpError::UnknownTool {
                    name: params.name.to_string(),
                }));
            }
            None => {}
        }
        let _attached = watch.map(|watch| self.hooks.attach(watch));
        // The session's own `call_tool` answers a 2026-07-28 server's
        // `input_required` rounds (SEP-2322) through the client handler,
        // echoing `requestState` untouched; 2025 servers never send them.
        // Dropped before the answer (a user's Cancel), rmcp tells the
        // server with `notifications/cancelled`.
        Ok(self.session.call_tool(params).await?)
    }
}

/// How an operation on a session ended badly: the server or transport
/// failed, or mcpgram declined to send the request at all.
enum Step {
    Failed(ServiceError),
    /// Failed while nothing the server does on the user's behalf had been
    /// asked for yet (a listing): safe to ask again on a new connection.
    Repeatable(ServiceError),
    Refused(McpError),
}

impl From<ServiceError> for Step {
    fn from(error: ServiceError) -> Self {
        Step::Failed(error)
    }
}

impl Sessions {
    pub fn new(
        connector: Arc<Connector>,
        personal_tokens: Arc<dyn crate::store::PersonalTokens>,
        client: client::McpClient,
    ) -> Self {
        Self {
            connector,
            personal_tokens,
            client,
            slots: DashMap::new(),
            clients: DashMap::new(),
            catalogs: DashMap::new(),
        }
    }

    /// Every tool of the server, across pages.
    pub async fn list_tools(
        &self,
        server: &ServerConfig,
        user_id: u64,
    ) -> Result<Vec<Tool>, McpError> {
        self.run(server, user_id, None, |live| async move {
            live.list_tools().await.map_err(Step::Repeatable)
        })
        .await
    }

    /// Every resource the server lists, across pages.
    pub async fn list_resources(
        &self,
        server: &ServerConfig,
        user_id: u64,
    ) -> Result<Vec<Resource>, McpError> {
        self.run(server, user_id, None, |live| async move {
            live.session
                .peer()
                .list_all_resources()
                .await
                .map_err(Step::Repeatable)
        })
        .await
    }

    /// A resource's contents; a 2026-07-28 server's `input_required`
    /// rounds are answered through the client handler, as for calls.
    pub async fn read_resource(
        &self,
        server: &ServerConfig,
        user_id: u64,
        uri: &str,
        watch: Option<Arc<Watch>>,
    ) -> Result<ReadResourceResult, McpError> {
        let params = ReadResourceRequestParams::new(uri.to_owned());
        self.run(server, user_id, watch.clone(), move |live| {
            let (params, watch) = (params.clone(), watch.clone());
            async move {
                let _attached = watch.map(|watch| live.hooks.attach(watch));
                Ok(live.session.read_resource(params).await?)
            }
        })
        .await
    }

    /// Every prompt the server lists, across pages.
    pub async fn list_prompts(
        &self,
        server: &ServerConfig,
        user_id: u64,
    ) -> Result<Vec<Prompt>, McpError> {
        self.run(server, user_id, None, |live| async move {
            live.session
                .peer()
                .list_all_prompts()
                .await
                .map_err(Step::Repeatable)
        })
        .await
    }

    /// A prompt filled in with `arguments`.
    pub async fn get_prompt(
        &self,
        server: &ServerConfig,
        user_id: u64,
        name: &str,
        arguments: JsonObject,
        watch: Option<Arc<Watch>>,
    ) -> Result<GetPromptResult, McpError> {
        let mut params = GetPromptRequestParams::new(name.to_owned());
        if !arguments.is_empty() {
            params = params.with_arguments(arguments);
        }
        self.run(server, user_id, watch.clone(), move |live| {
            let (params, watch) = (params.clone(), watch.clone());
            async move {
                let _attached = watch.map(|watch| live.hooks.attach(watch));
                Ok(live.session.get_prompt(params).await?)
            }
        })
        .await
    }

    /// The tool of that name as listed (listing again for a name not seen
    /// yet).
    pub async fn find_tool(
        &self,
        server: &ServerConfig,
        user_id: u64,
        name: &str,
    ) -> Result<Option<Tool>, McpError> {
        self.run(server, user_id, None, |live| async move {
            let found = live.tool(name).await.map_err(Step::Repeatable)?;
            Ok(found.map(|checked| checked.tool.clone()))
        })
        .await
    }

    /// Calls a tool; `watch`, if given, sees its progress and answers the
    /// server's questions, and the time spent waiting on the user does not
    /// count against the server's time limit.
    pub async fn call_tool(
        &self,
        server: &ServerConfig,
        user_id: u64,
        tool: &str,
        arguments: Option<JsonObject>,
        watch: Option<Arc<Watch>>,
    ) -> Result<CallToolResult, McpError> {
        let mut params = CallToolRequestParams::new(tool.to_owned());
        if let Some(arguments) = arguments {
            params = params.with_arguments(arguments);
        }
        self.run(server, user_id, watch.clone(), move |live| {
            let params = params.clone();
            let watch = watch.clone();
            async move { live.call_tool(params, watch).await }
        })
        .await
    }

    /// Drops the user's session with the server, e.g. after the tokens
    /// changed; the next operation opens a new one. The session closes in
    /// the background; nothing here waits on the network.
    pub fn forget(&self, user_id: u64, server_id: &str) {
        self.slots.remove(&(user_id, server_id.to_owned()));
    }

    /// Closes the sessions unused for `idle` by `now` that no operation is
    /// using; answers how many. The sessions close in the background.
    pub fn close_idle(&self, idle: std::time::Duration, now: std::time::Instant) -> usize {
        let stale: Vec<((u64, String), Slot)> = self
            .slots
            .iter()
            .filter(|entry| {
                entry.value().get().is_some_and(|live| {
                    // Held only by its slot: no operation is under way.
                    Arc::strong_count(live) == 1 && live.unused_for(now) >= idle
                })
            })
            .map(|entry| (entry.key().clone(), entry.value().clone()))
            .collect();
        let mut closed = 0;
        for (key, slot) in stale {
            if self
                .slots
                .remove_if(&key, |_, current| Arc::ptr_eq(current, &slot))
                .is_none()
            {
                continue;
            }
            closed += 1;
            tracing::debug!(server = %key.1, user = key.0, "closing an idle session");
            tokio::spawn(async move {
                if let Ok(slot) = Arc::try_unwrap(slot)
                    && let Some(live) = slot.into_inner()
                    && let Ok(Open { mut session, .. }) = Arc::try_unwrap(live)
                {
                    let _ = session.close().await;
                }
            });
        }
        closed
    }

    /// Sessions open now.
    pub fn warm(&self) -> usize {
        self.slots
            .iter()
            .filter(|e| e.value().initialized())
            .count()
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
    /// A connection lost while opening a session, or while only listing,
    /// is tried once more on a new one: a busy server may reset a burst of
    /// new connections (a full accept queue), and nothing was done yet.
    async fn run<T, F, Fut>(
        &self,
        server: &ServerConfig,
        user_id: u64,
        watch: Option<Arc<Watch>>,
        op: F,
    ) -> Result<T, McpError>
    where
        F: Fn(Live) -> Fut,
        Fut: Future<Output = Result<T, Step>>,
    {
        let limit = server.timeout;
        let work = async {
            let mut backoff = REFRESH_BACKOFF.iter();
            let mut again = true;
            let lost = |error: &McpError| matches!(error, McpError::ConnectionLost { .. });
            loop {
                let error = match self.live(server, user_id).await {
                    Ok((slot, live, fresh)) => {
                        let (error, repeatable) = match op(live).await {
                            Ok(value) => return Ok(value),
                            Err(Step::Failed(error)) => (
                                failure::from_service(error, limit).for_server(server),
                                false,
                            ),
                            Err(Step::Repeatable(error)) => {
                                (failure::from_service(error, limit).for_server(server), true)
                            }
                            Err(Step::Refused(error)) => return Err(error),
                        };
                        if !error.keeps_session() {
                            self.drop_slot(user_id, &server.id, &slot);
                        }
                        let retry = if fresh {
                            repeatable && lost(&error)
                        } else {
                            error.is_transient()
                        };
                        if retry && std::mem::take(&mut again) {
                            tracing::debug!(server = %server.id, user = user_id, error = %crate::logging::chain(&error), "session failed; reopening once");
                            continue;
                        }
                        error
                    }
                    Err(error) if lost(&error) && std::mem::take(&mut again) => {
                        tracing::debug!(server = %server.id, user = user_id, error = %crate::logging::chain(&error), "opening a session failed; trying once more");
                        continue;
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
        tokio::pin!(work);
        let mut deadline = tokio::time::Instant::now() + limit;
        loop {
            tokio::select! {
                outcome = &mut work => return outcome,
                () = tokio::time::sleep_until(deadline) => {
                    let now = std::time::Instant::now();
                    match watch.as_ref().and_then(|w| w.extended(now, limit)) {
                        Some(until) => deadline = tokio::time::Instant::from_std(until),
                        None => return Err(McpError::Timeout(limit)),
                    }
                }
            }
        }
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
                    let hooks = Arc::new(watch::Hooks::default());
                    let client = self.client.for_session(hooks.clone());
                    let personal = match &server.user_token {
                        Some(_) => self.personal_tokens.load(user_id, &server.id).await?,
                        None => None,
                    };
                    let shared = self.catalogs.entry(server.id.clone()).or_default().clone();
                    transport::connect(server, http, user_id, &self.connector, client, personal)
                        .await
                        .map(|session| Arc::new(Open::new(session, hooks, shared)))
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
            live.touch();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &'static str, description: &'static str) -> Tool {
        let schema = serde_json::json!({"type": "object"});
        Tool::new(
            name,
            description,
            Arc::new(schema.as_object().cloned().unwrap()),
        )
    }

    #[test]
    fn sessions_listing_the_same_tools_share_one_catalog() {
        let shared = SharedCatalog::default();
        let tools = vec![tool("a", "first"), tool("b", "second")];
        let first = shared.catalog_of(&tools);
        let again = shared.catalog_of(&tools.iter().rev().cloned().collect::<Vec<_>>());
        assert!(Arc::ptr_eq(&first, &again), "the same tools, one catalog");

        let other = shared.catalog_of(&[tool("a", "first"), tool("b", "changed")]);
        assert!(
            !Arc::ptr_eq(&first, &other),
            "a different listing has its own"
        );
        assert_eq!(other["b"].tool.description.as_deref(), Some("changed"));
        let fewer = shared.catalog_of(&[tool("a", "first")]);
        assert_eq!(fewer.len(), 1);
    }
}
