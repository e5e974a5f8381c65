//! OAuth 2.1 authorization-code flows with PKCE, one per (user, server).
//!
//! rmcp's `auth` module does discovery, registration, PKCE, the `resource`
//! parameter, the `iss` check and the code exchange. This module adds what
//! a multi-user bot needs around it: flows owned by the Telegram user and
//! chat that asked, kept as data in the [`crate::store::FlowStore`] (not as
//! live managers); the browser bound to that user ([`binding`]); one HTTP
//! client per server that guards every request ([`http`]); client
//! identities that heal (a registration the server forgot is replaced);
//! tokens kept per user ([`credentials`]); and the callback that completes
//! a flow ([`callback`]).

pub mod binding;
pub mod callback;
pub mod credentials;
pub mod discovery;
mod discovery_cache;
mod error;
pub mod http;
mod revoke;
mod state;
pub mod telegram_login;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dashmap::DashMap;
use rand::RngCore;
use rmcp::transport::auth::{
    AuthorizationManager, AuthorizationRequest, AuthorizationSession, ClientCredentialsConfig,
    InMemoryCredentialStore, JwtSigningAlgorithm, OAuthClientConfig,
};
use url::Url;

use crate::config::{
    ClientCredential, ClientCredentialsSettings, Config, EnterpriseSettings, OAuthSettings,
    ServerAuth, ServerConfig,
};
use crate::logging::chain;
use crate::secret::Secret;
use crate::store::{
    ClientRecord, Connection, FlowOwner, FlowState, InsertError, PendingFlow, Resume, StoreError,
    Stores,
};

pub use binding::{Binding, BindingCookie, Bound, BrowserError, StartPage};
pub use callback::{CallbackError, CallbackParams, Completed, FlowRef};
pub use credentials::SlotCredentials;
pub use error::OAuthError;
pub use revoke::Revocation;

use discovery::Discovered;
use http::OAuthHttp;
use state::OneFlowState;

/// Client name shown by authorization servers on their consent pages.
const CLIENT_NAME: &str = "mcpgram";

/// Where the bot publishes its Client ID Metadata Document (SEP-991).
pub const CLIENT_METADATA_PATH: &str = "/oauth/client-metadata.json";

/// Where a connect button leads.
#[derive(Debug)]
pub enum FlowLink {
    /// The authorization server itself (loopback).
    Direct(Secret),
    /// The bot's start page, as a plain link.
    StartPage(Secret),
    /// The bot's start page, through a Telegram Login button.
    TelegramLogin(Secret),
}

impl FlowLink {
    pub fn url(&self) -> &Secret {
        match self {
            FlowLink::Direct(url) | FlowLink::StartPage(url) | FlowLink::TelegramLogin(url) => url,
        }
    }
}

/// A started flow: where its button leads, the id that names it to the
/// adapters (its start id, never its state), and what was found on the way.
#[derive(Debug)]
pub struct StartedFlow {
    pub link: FlowLink,
    pub flow_id: String,
    pub expires_in: Duration,
    pub report: FlowReport,
}

/// How the client this flow uses was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientSource {
    /// From the config (`client_id`).
    PreRegistered,
    /// The bot's Client ID Metadata Document URL (SEP-991).
    MetadataDocument,
    /// A dynamic registration made earlier and still known to the server.
    CachedRegistration,
    /// Registered just now (RFC 7591).
    Registered,
}

/// What starting a flow found out, for people who want to know (the
/// terminal's `login`).
#[derive(Debug, Clone)]
pub struct FlowReport {
    pub issuer: Option<String>,
    pub authorization_endpoint: String,
    /// The endpoints were assumed (a 2025-03-26 server), not discovered.
    pub assumed_endpoints: bool,
    pub client: ClientSource,
    /// The scopes asked for; empty when none were.
    pub scopes: Vec<String>,
}

/// What an admin wants to know before users connect: whether the
/// server asks for authorization at all, and what its authorization
/// server offers. Registers nothing and starts no flow.
pub async fn probe(config: &Config, server: &ServerConfig) -> Result<Probe, OAuthError> {
    let http = Arc::new(OAuthHttp::for_server(server).map_err(OAuthError::Client)?);
    let challenge = http.challenge(&server.url).await;
    let discovered = match discovery::discover(server, http, challenge.as_deref(), false).await {
        Ok(discovered) => discovered,
        Err(OAuthError::NoMetadata) if challenge.is_none() => {
            return Ok(Probe {
                challenged: false,
                ..Probe::default()
            });
        }
        Err(error) => return Err(error),
    };
    let metadata = &discovered.metadata;
    let preregistered = matches!(
        &server.auth,
        ServerAuth::OAuth(settings) if settings.client_id.is_some()
    );
    let registration = if preregistered {
        Registration::Preregistered
    } else if discovered.supports_metadata_documents() && config.is_hosted() {
        Registration::MetadataDocument
    } else if metadata.registration_endpoint.is_some() || discovered.assumed {
        Registration::Dynamic
    } else if discovered.supports_metadata_documents() {
        Registration::MetadataDocumentNeedsHosting
    } else {
        Registration::None
    };
    Ok(Probe {
        challenged: challenge.is_some(),
        discovered: true,
        assumed_endpoints: discovered.assumed,
        issuer: discovered.issuer(),
        authorization_endpoint: Some(metadata.authorization_endpoint.clone()),
        token_endpoint: Some(metadata.token_endpoint.clone()),
        registration: Some(registration),
        scopes: discovered.advertised_scopes(),
        pkce_methods: metadata
            .code_challenge_methods_supported
            .clone()
            .unwrap_or_default(),
        revocation_endpoint: metadata
            .additional_fields
            .get("revocation_endpoint")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
    })
}

/// How the bot would get a client at an authorization server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// The config names a client id.
    Preregistered,
    /// The bot's own client ID metadata document (SEP-991; hosted only).
    MetadataDocument,
    /// The server takes metadata documents, but the bot is not hosted.
    MetadataDocumentNeedsHosting,
    /// Dynamic client registration (RFC 7591).
    Dynamic,
    /// No way: configure a client id.
    None,
}

/// What `mcpgram probe` found.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// The server answered an unauthenticated request with 401.
    pub challenged: bool,
    /// Authorization metadata was found (or assumed).
    pub discovered: bool,
    pub assumed_endpoints: bool,
    pub issuer: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub registration: Option<Registration>,
    pub scopes: Vec<String>,
    pub pkce_methods: Vec<String>,
    pub revocation_endpoint: Option<String>,
}

/// How to start a flow beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// The server's `WWW-Authenticate` challenge, if a request met one;
    /// without it the server is asked with an unauthenticated request.
    pub challenge: Option<String>,
    /// Scopes to ask for instead of the usual selection: a step-up asks
    /// for the union of what was granted and what is now required.
    pub scopes: Option<Vec<String>>,
    /// The command to run once the flow completes.
    pub resume: Option<Resume>,
}

/// Starts and completes flows and builds the managers of live sessions.
pub struct Connector {
    config: Arc<Config>,
    stores: Stores,
    redirect_uri: String,
    /// `web` when the callback is hosted, `native` on loopback (SEP-837).
    application_type: &'static str,
    /// One guarded OAuth HTTP client per server id.
    http: DashMap<String, Arc<OAuthHttp>>,
    /// The last registration probe per server id, shared by the connects
    /// that ask at about the same time.
    probes: DashMap<String, Arc<tokio::sync::Mutex<Option<ProbeAnswer>>>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Connector {
    pub fn new(
        config: Arc<Config>,
        stores: Stores,
        redirect_uri: String,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        let application_type = if config.is_hosted() { "web" } else { "native" };
        Self {
            config,
            stores,
            metrics,
            redirect_uri,
            application_type,
            http: DashMap::new(),
            probes: DashMap::new(),
        }
    }

    /// rmcp's token store for one (user, server) slot.
    pub fn slot(&self, user_id: u64, server_id: &str) -> SlotCredentials {
        SlotCredentials::new(
            self.stores.credentials.clone(),
            self.stores.refresh_locks.clone(),
            self.metrics.clone(),
            user_id,
            server_id,
        )
    }

    fn http(&self, server: &ServerConfig) -> Result<Arc<OAuthHttp>, OAuthError> {
        if let Some(http) = self.http.get(&server.id) {
            return Ok(http.clone());
        }
        let http = Arc::new(OAuthHttp::for_server(server).map_err(OAuthError::Client)?);
        self.http.insert(server.id.clone(), http.clone());
        Ok(http)
    }

    async fn discover(
        &self,
        server: &ServerConfig,
        challenge: Option<&str>,
        assumed_before: bool,
    ) -> Result<Discovered, OAuthError> {
        discovery::discover(server, self.http(server)?, challenge, assumed_before).await
    }

    /// The user's tokens and client for the server, if connected.
    pub async fn connection(
        &self,
        user_id: u64,
        server_id: &str,
    ) -> Result<Option<Connection>, StoreError> {
        Ok(self
            .stores
            .credentials
            .load(user_id, server_id)
            .await?
            .filter(Connection::has_tokens))
    }

    /// Whether the user holds a connection to the server (`Some`), and
    /// whether it still has tokens (`true`); a rejected refresh token
    /// leaves the connection without them.
    pub async fn holds(&self, user_id: u64, server_id: &str) -> Result<Option<bool>, StoreError> {
        Ok(self
            .stores
            .credentials
            .load(user_id, server_id)
            .await?
            .map(|connection| connection.has_tokens()))
    }

    /// Revokes the user's tokens at the server's revocation endpoint
    /// (RFC 7009), then deletes them whatever the answer. `None`: there
    /// was nothing to delete.
    pub async fn disconnect(
        &self,
        user_id: u64,
        server: &ServerConfig,
    ) -> Result<Option<Revocation>, StoreError> {
        let Some(connection) = self.stores.credentials.load(user_id, &server.id).await? else {
            return Ok(None);
        };
        let revocation = if connection.has_tokens() {
            tokio::time::timeout(server.timeout, self.revoke(server, &connection))
                .await
                .unwrap_or_else(|_| {
                    tracing::warn!(server = %server.id, user = user_id, "revocation timed out");
                    Revocation::Failed
                })
        } else {
            Revocation::Revoked
        };
        self.stores.credentials.remove(user_id, &server.id).await?;
        Ok(Some(revocation))
    }

    async fn revoke(&self, server: &ServerConfig, connection: &Connection) -> Revocation {
        let discovered = match self
            .discover(
                server,
                connection.client.challenge.as_deref(),
                connection.client.assumed_endpoints,
            )
            .await
        {
            Ok(discovered) => discovered,
            Err(error) => {
                tracing::warn!(server = %server.id, error = %chain(&error), "discovery for revocation failed");
                return Revocation::Failed;
            }
        };
        let endpoint = discovered
            .metadata
            .additional_fields
            .get("revocation_endpoint")
            .and_then(|v| v.as_str());
        let (Some(endpoint), Ok(http)) = (endpoint, self.http(server)) else {
            return Revocation::NotSupported;
        };
        revoke::revoke(&http, endpoint, connection, &server.id).await
    }

    /// A manager holding the user's tokens for a live MCP session, or
    /// `None` when the user must (re)connect first.
    pub async fn session_manager(
        &self,
        server: &ServerConfig,
        user_id: u64,
    ) -> Result<Option<AuthorizationManager>, OAuthError> {
        let Some(connection) = self.connection(user_id, &server.id).await? else {
            return Ok(None);
        };
        let discovered = self
            .discover(
                server,
                connection.client.challenge.as_deref(),
                connection.client.assumed_endpoints,
            )
            .await?;
        // Tokens minted by another issuer must not be sent here.
        if connection.credentials.issuer.is_some()
            && connection.credentials.issuer != discovered.issuer()
        {
            tracing::warn!(server = %server.id, user = user_id, "issuer changed; reconnect needed");
            return Ok(None);
        }
        let mut manager = discovered.manager;
        manager.set_credential_store(self.slot(user_id, &server.id));
        discovery::use_client(&mut manager, &connection.client)?;
        Ok(Some(manager))
    }

    /// A manager holding a fresh token of the bot's own machine client
    /// (the client-credentials grant), for a live MCP session. Nothing is
    /// stored: when the token runs out, the session is opened again and a
    /// new one is asked for.
    pub async fn client_credentials_manager(
        &self,
        server: &ServerConfig,
        settings: &ClientCredentialsSettings,
    ) -> Result<AuthorizationManager, OAuthError> {
        let challenge = self.http(server)?.challenge(&server.url).await;
        let discovered = self.discover(server, challenge.as_deref(), false).await?;
        let mut manager = discovered.manager;
        let resource = Some(server.url.to_string());
        let config = match &settings.credential {
            ClientCredential::Secret(secret) => ClientCredentialsConfig::ClientSecret {
                client_id: settings.client_id.clone(),
                client_secret: secret.expose().to_owned(),
                scopes: settings.scopes.clone(),
                resource,
            },
            ClientCredential::PrivateKey { pem, algorithm } => {
                ClientCredentialsConfig::PrivateKeyJwt {
                    client_id: settings.client_id.clone(),
                    signing_key: pem.expose().as_bytes().to_vec(),
                    signing_algorithm: signing_algorithm(algorithm),
                    token_endpoint_audience: None,
                    scopes: settings.scopes.clone(),
                    resource,
                }
            }
        };
        manager
            .configure_client_credentials(&config)
            .map_err(OAuthError::Authorize)?;
        manager.set_credential_store(InMemoryCredentialStore::new());
        // rmcp 3.11's exchange future is not Send (its private_key_jwt path
        // holds a form serializer across an await), so it runs to the end
        // on a thread of its own, driven by this runtime.
        let runtime = tokio::runtime::Handle::current();
        let limit = server.timeout;
        let exchanged = tokio::task::spawn_blocking(move || {
            runtime.block_on(async move {
                let result =
                    tokio::time::timeout(limit, manager.exchange_client_credentials(&config)).await;
                (manager, result)
            })
        })
        .await
        .map_err(|join| {
            OAuthError::Exchange(rmcp::transport::auth::AuthError::InternalError(
                join.to_string(),
            ))
        })?;
        let (manager, result) = exchanged;
        result
            .map_err(|_| OAuthError::Timeout(limit))?
            .map_err(OAuthError::Exchange)?;
        Ok(manager)
    }

    /// An access token for a server under enterprise-managed authorization
    /// (SEP-990): the configured ID token is exchanged at the identity
    /// provider for an ID-JAG bound to the server's authorization server
    /// and resource (RFC 8693), which that server exchanges for an access
    /// token (RFC 7523 JWT bearer grant). rmcp's enterprise module makes
    /// both requests; discovery names the authorization server.
    pub async fn enterprise_token(
        &self,
        server: &ServerConfig,
        settings: &EnterpriseSettings,
    ) -> Result<Secret, OAuthError> {
        use rmcp::transport::auth::enterprise::{
            EmaAuthorizationServer, EmaClientAuthentication, EmaExchangeRequest,
        };
        let http = self.http(server)?;
        let challenge = http.challenge(&server.url).await;
        let discovered = self.discover(server, challenge.as_deref(), false).await?;
        let metadata = &discovered.metadata;
        let issuer = metadata.issuer.clone().ok_or(OAuthError::NoMetadata)?;
        let authentication = |secret: &Option<Secret>| match secret {
            Some(secret) => EmaClientAuthentication::ClientSecretBasic(oauth2::ClientSecret::new(
                secret.expose().to_owned(),
            )),
            None => EmaClientAuthentication::None,
        };
        let idp = EmaAuthorizationServer::new(
            settings.idp_issuer.clone(),
            settings.idp_token_endpoint.clone(),
            settings.idp_client_id.clone(),
        )
        .with_client_authentication(authentication(&settings.idp_client_secret));
        let resource_as = EmaAuthorizationServer::new(
            issuer,
            metadata.token_endpoint.clone(),
            settings.client_id.clone(),
        )
        .with_client_authentication(authentication(&settings.client_secret));
        let resource = server.url.to_string();
        let request = EmaExchangeRequest::new_with_id_token(
            idp,
            resource_as,
            &resource,
            settings.id_token.expose(),
        )
        .with_scopes(settings.scopes.iter().cloned());
        let exchanged = tokio::time::timeout(server.timeout, request.exchange(&*http, &*http))
            .await
            .map_err(|_| OAuthError::Timeout(server.timeout))?
            .map_err(OAuthError::Enterprise)?;
        Ok(Secret::new(exchanged.access_token.secret()))
    }

    /// The Client ID Metadata Document the bot publishes when hosted on
    /// https: authorization servers that support SEP-991 fetch it and take
    /// its URL as the client id, so no registration is needed.
    pub fn client_metadata(&self) -> Option<serde_json::Value> {
        let url = self.client_metadata_url()?;
        Some(serde_json::json!({
            "client_id": url,
            "client_name": CLIENT_NAME,
            "redirect_uris": [self.redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            "application_type": self.application_type,
        }))
    }

    fn client_metadata_url(&self) -> Option<String> {
        let public = self.config.http.public_url.as_ref()?;
        (public.scheme() == "https").then(|| {
            format!(
                "{}{CLIENT_METADATA_PATH}",
                public.as_str().trim_end_matches('/')
            )
        })
    }

    /// Discovers, picks the client (pre-registered, metadata document,
    /// cached registration, new registration) and builds the authorization
    /// URL for `owner` on `server`. What completing the flow needs is kept
    /// as a [`PendingFlow`]; the manager is dropped.
    pub async fn start(
        &self,
        owner: FlowOwner,
        requester: &str,
        server: &ServerConfig,
        options: StartOptions,
    ) -> Result<StartedFlow, OAuthError> {
        let ServerAuth::OAuth(settings) = &server.auth else {
            return Err(OAuthError::NotOAuthServer);
        };
        let challenge = match options.challenge {
            Some(challenge) => {
                // The server turned down a token: its authorization
                // server may have moved (SEP-2352), so what discovery
                // found before is asked for again.
                self.http(server)?.forget_discovery();
                Some(challenge)
            }
            None => self.http(server)?.challenge(&server.url).await,
        };
        let mut discovered = self.discover(server, challenge.as_deref(), false).await?;
        let (client, source) = self.client_for(server, settings, &mut discovered).await?;
        let mut report = FlowReport {
            issuer: discovered.issuer(),
            authorization_endpoint: discovered.metadata.authorization_endpoint.clone(),
            assumed_endpoints: discovered.assumed,
            client: source,
            scopes: Vec::new(),
        };
        let mut manager = discovered.manager;
        let captured = OneFlowState::default();
        manager.set_state_store(captured.clone());

        let mut request = AuthorizationRequest::new(self.redirect_uri.clone())
            .with_preregistered_client(client.client_id.clone())
            .with_application_type(self.application_type);
        if let Some(secret) = &client.client_secret {
            request = request.with_client_secret(secret.expose());
        }
        // Explicit scopes (a step-up), then the config's, then the
        // specification's selection: the challenge's scope, else the
        // resource's scopes_supported, else none at all.
        request = match (options.scopes, settings.scopes.is_empty()) {
            (Some(scopes), _) => request.with_scopes(scopes),
            (None, false) => request.with_scopes(settings.scopes.clone()),
            (None, true) => request.with_initial_scope_selection(),
        };
        let session = AuthorizationSession::new(manager, request)
            .await
            .map_err(|(_, error)| OAuthError::Authorize(error))?;
        let authorize_url = without_state(session.get_authorization_url(), !settings.resource)?;
        report.scopes = authorize_url
            .query_pairs()
            .find(|(key, _)| key == "scope")
            .map(|(_, scope)| scope.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let authorization = captured.take().ok_or_else(|| {
            OAuthError::Authorize(rmcp::transport::auth::AuthError::InternalError(
                "rmcp saved no authorization state".to_owned(),
            ))
        })?;
        let state = FlowState::random();
        let start_id = FlowState::random();
        let ttl = self.config.oauth.flow_ttl;
        let flow = PendingFlow {
            authorize_url: Secret::new(with_state(authorize_url, state.as_str())),
            state,
            start_id: start_id.clone(),
            owner,
            requester: requester.to_owned(),
            server_id: server.id.clone(),
            expires_at: PendingFlow::expires_after(ttl),
            authorization,
            client: ClientRecord {
                assumed_endpoints: report.assumed_endpoints,
                challenge,
                ..client
            },
            binding: None,
            message: None,
            resume: options.resume,
        };
        let link = match self.binding() {
            binding::Binding::Loopback => FlowLink::Direct(flow.authorize_url.clone()),
            binding => {
                let page = Secret::new(self.start_url(start_id.as_str()));
                match binding {
                    binding::Binding::TelegramLogin => FlowLink::TelegramLogin(page),
                    _ => FlowLink::StartPage(page),
                }
            }
        };
        self.stores
            .flows
            .insert(flow, self.config.limits.pending_flows_per_user)
            .await
            .map_err(|error| match error {
                InsertError::TooMany(max) => OAuthError::TooManyFlows(max),
                InsertError::Store(error) => OAuthError::Store(error),
            })?;
        tracing::info!(server = %server.id, user = owner.user_id, client = ?report.client, "authorization flow started");
        Ok(StartedFlow {
            link,
            flow_id: start_id.as_str().to_owned(),
            expires_in: ttl,
            report,
        })
    }

    fn start_url(&self, start_id: &str) -> String {
        let public = self
            .config
            .http
            .public_url
            .as_ref()
            .map(|u| u.as_str().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        format!("{public}/oauth/start/{start_id}")
    }

    /// The client to authorize with, in the order the MCP specification
    /// (2026-07-28) gives: pre-registered → Client ID Metadata Document →
    /// dynamic registration (a cached one first, checked to still exist).
    async fn client_for(
        &self,
        server: &ServerConfig,
        settings: &OAuthSettings,
        discovered: &mut Discovered,
    ) -> Result<(ClientRecord, ClientSource), OAuthError> {
        let issuer = discovered.issuer();
        if let Some(client_id) = &settings.client_id {
            let client = ClientRecord {
                client_id: client_id.clone(),
                client_secret: settings.client_secret.clone(),
                redirect_uri: self.redirect_uri.clone(),
                issuer,
                scopes: settings.scopes.clone(),
                assumed_endpoints: false,
                challenge: None,
            };
            return Ok((client, ClientSource::PreRegistered));
        }
        if discovered.supports_metadata_documents()
            && let Some(url) = settings
                .client_metadata_url
                .clone()
                .or_else(|| self.client_metadata_url())
        {
            let client = ClientRecord {
                client_id: url,
                client_secret: None,
                redirect_uri: self.redirect_uri.clone(),
                issuer,
                scopes: discovered.advertised_scopes(),
                assumed_endpoints: false,
                challenge: None,
            };
            return Ok((client, ClientSource::MetadataDocument));
        }
        if let Some(cached) = self
            .stores
            .registrations
            .find(&server.id, &self.redirect_uri, issuer.as_deref())
            .await?
        {
            if self.still_registered(server, discovered, &cached).await {
                return Ok((cached, ClientSource::CachedRegistration));
            }
            tracing::warn!(server = %server.id, "the authorization server forgot this bot's client; registering again");
            self.stores.registrations.forget(&server.id).await?;
        }
        let client = self.register(server, settings, discovered).await?;
        Ok((client, ClientSource::Registered))
    }

    /// Whether `client` came from dynamic registration (not the config, not
    /// a metadata document): only such a client can be registered anew.
    pub(crate) fn is_registered_dynamically(
        &self,
        server: &ServerConfig,
        client: &ClientRecord,
    ) -> bool {
        let configured = matches!(&server.auth, ServerAuth::OAuth(s) if s.client_id.is_some());
        !configured && !client.client_id.starts_with("https://")
    }

    /// Asks the token endpoint about a cached client with a refresh token
    /// that cannot be valid: a server authenticates the client first, so
    /// one that knows it answers `invalid_grant`, one that forgot it (a
    /// restart of an in-memory server, say) `invalid_client` (RFC 6749
    /// §5.2). Nothing is spent or created; a refresh grant is used because
    /// an authorization-code request without its PKCE verifier would look
    /// like a broken client to the server. Any other answer keeps the
    /// client.
    ///
    /// Connects that ask while a probe is under way, or within
    /// [`PROBE_SHARED`] of its answer, take that answer instead of asking
    /// again: a thousand users connecting at once cost one probe, and a
    /// server that forgot the client is still noticed by the next connect.
    async fn still_registered(
        &self,
        server: &ServerConfig,
        discovered: &Discovered,
        client: &ClientRecord,
    ) -> bool {
        let slot = self.probes.entry(server.id.clone()).or_default().clone();
        let mut last = slot.lock().await;
        if let Some(answer) = last.as_ref()
            && answer.client_id == client.client_id
            && answer.at.elapsed() < PROBE_SHARED
        {
            return answer.registered;
        }
        let registered = self.probe_registration(server, discovered, client).await;
        *last = Some(ProbeAnswer {
            at: std::time::Instant::now(),
            client_id: client.client_id.clone(),
            registered,
        });
        registered
    }

    async fn probe_registration(
        &self,
        server: &ServerConfig,
        discovered: &Discovered,
        client: &ClientRecord,
    ) -> bool {
        let Ok(http) = self.http(server) else {
            return true;
        };
        let mut probe = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut probe);
        let token = format!("mcpgram-probe-{}", URL_SAFE_NO_PAD.encode(probe));
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", token.as_str()),
        ];
        let basic = match &client.client_secret {
            Some(secret) => Some((client.client_id.as_str(), secret.expose())),
            None => {
                form.push(("client_id", client.client_id.as_str()));
                None
            }
        };
        match http
            .post_form(&discovered.metadata.token_endpoint, &form, basic)
            .await
        {
            Ok(ending) => !ending.is_invalid_client(),
            Err(error) => {
                tracing::debug!(server = %server.id, error = %chain(&error), "registration probe failed");
                true
            }
        }
    }

    /// Registers a client dynamically (RFC 7591) and caches it for every
    /// user of the server.
    async fn register(
        &self,
        server: &ServerConfig,
        settings: &OAuthSettings,
        discovered: &mut Discovered,
    ) -> Result<ClientRecord, OAuthError> {
        let issuer = discovered.issuer();
        let manager = &mut discovered.manager;
        // rmcp has no setter for the DCR application_type; configuring a
        // placeholder client is how it takes one before registering.
        manager
            .configure_client(
                OAuthClientConfig::new("", self.redirect_uri.clone())
                    .with_application_type(self.application_type),
            )
            .map_err(OAuthError::Registration)?;
        // Register for every advertised scope: some servers treat the
        // registration's scope as the client's allow-list, and a later
        // step-up must not be refused for it.
        let mut scopes = discovered
            .metadata
            .scopes_supported
            .clone()
            .unwrap_or_default();
        for scope in &settings.scopes {
            if !scopes.contains(scope) {
                scopes.push(scope.clone());
            }
        }
        let scope_refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
        let registered = tokio::time::timeout(
            server.timeout,
            manager.register_client(CLIENT_NAME, &self.redirect_uri, &scope_refs),
        )
        .await
        .map_err(|_| OAuthError::Timeout(server.timeout))?
        .map_err(OAuthError::Registration)?;
        let record = ClientRecord {
            client_id: registered.client_id,
            client_secret: registered.client_secret.map(Secret::new),
            redirect_uri: self.redirect_uri.clone(),
            issuer,
            scopes,
            assumed_endpoints: discovered.assumed,
            challenge: None,
        };
        self.stores
            .registrations
            .remember(&server.id, &record)
            .await?;
        tracing::info!(server = %server.id, "registered an OAuth client");
        Ok(record)
    }
}

/// How long a registration probe's answer serves the connects that
/// follow it.
const PROBE_SHARED: Duration = Duration::from_secs(1);

/// A registration probe's answer.
struct ProbeAnswer {
    at: std::time::Instant,
    client_id: String,
    registered: bool,
}

/// The config's algorithm name (checked when the config was read).
fn signing_algorithm(name: &str) -> JwtSigningAlgorithm {
    match name {
        "RS256" => JwtSigningAlgorithm::RS256,
        "RS384" => JwtSigningAlgorithm::RS384,
        "RS512" => JwtSigningAlgorithm::RS512,
        "ES384" => JwtSigningAlgorithm::ES384,
        _ => JwtSigningAlgorithm::ES256,
    }
}

/// Takes rmcp's `state` (its CSRF token, 128 bits, owner unknown) out of
/// its authorization URL, and `resource` too when the server is configured
/// without it. The flow's own 256-bit state goes in instead.
fn without_state(url: &str, strip_resource: bool) -> Result<Url, OAuthError> {
    let internal = |what: &str| {
        OAuthError::Authorize(rmcp::transport::auth::AuthError::InternalError(
            what.to_owned(),
        ))
    };
    let mut url = Url::parse(url).map_err(|_| internal("rmcp built an unparsable URL"))?;
    let mut had_state = false;
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(key, _)| {
            had_state |= key == "state";
            key != "state" && !(strip_resource && key == "resource")
        })
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    if !had_state {
        return Err(internal("authorization URL has no state"));
    }
    url.query_pairs_mut().clear().extend_pairs(kept);
    Ok(url)
}

fn with_state(mut url: Url, state: &str) -> String {
    url.query_pairs_mut().append_pair("state", state);
    url.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_swapped_and_everything_else_kept() {
        let rmcp = "http://as.example/authorize?response_type=code&client_id=c&state=abc&code_challenge=x&resource=http%3A%2F%2Fmcp%2F";
        let url = Url::parse(&with_state(without_state(rmcp, false).unwrap(), "NEW")).unwrap();
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert!(pairs.contains(&("state".into(), "NEW".into())));
        assert!(pairs.contains(&("resource".into(), "http://mcp/".into())));
        assert_eq!(pairs.iter().filter(|(k, _)| k == "state").count(), 1);
        let without_resource = without_state(rmcp, true).unwrap();
        assert!(!without_resource.query_pairs().any(|(k, _)| k == "resource"));
    }
}
