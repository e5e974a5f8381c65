//! OAuth 2.1 authorization-code flows with PKCE, one per (user, server).
//!
//! rmcp's `auth` module does discovery, registration, PKCE, the `resource`
//! parameter, the `iss` check and the code exchange. This module adds what
//! a multi-user bot needs around it: flows owned by the Telegram user and
//! chat that asked, kept as data in the [`crate::store::FlowStore`] (not as
//! live managers); tokens kept per user through the
//! [`crate::store::CredentialStore`] ([`credentials`]); one client
//! registration reused across users; and the callback that completes a flow
//! ([`callback`]).

pub mod callback;
pub mod credentials;
pub mod discovery;
mod error;
mod state;

use std::sync::Arc;
use std::time::Duration;

use rmcp::transport::auth::{
    AuthorizationManager, AuthorizationRequest, AuthorizationSession, OAuthClientConfig,
};
use url::Url;

use crate::config::{Config, OAuthSettings, ServerAuth, ServerConfig};
use crate::secret::Secret;
use crate::store::{ClientRecord, Connection, FlowOwner, PendingFlow, StoreError, Stores};

pub use callback::{CallbackError, CallbackParams, Completed, FlowRef};
pub use credentials::SlotCredentials;
pub use error::OAuthError;

use state::OneFlowState;

/// How long a connect link stays valid.
pub const FLOW_TTL: Duration = Duration::from_secs(10 * 60);

/// Client name shown by authorization servers on their consent pages.
const CLIENT_NAME: &str = "mcpgram";

/// A started flow: the URL to send the user to. It carries the `state`, so
/// it is a [`Secret`]: shown to its owner only, never logged.
#[derive(Debug)]
pub struct StartedFlow {
    pub authorize_url: Secret,
    pub expires_in: Duration,
}

/// Starts and completes flows and builds the managers of live sessions.
pub struct Connector {
    config: Arc<Config>,
    stores: Stores,
    redirect_uri: String,
    /// `web` when the callback is hosted, `native` on loopback (SEP-837).
    application_type: &'static str,
}

impl Connector {
    pub fn new(config: Arc<Config>, stores: Stores, redirect_uri: String) -> Self {
        let application_type = if config.http.public_url.is_some() {
            "web"
        } else {
            "native"
        };
        Self {
            config,
            stores,
            redirect_uri,
            application_type,
        }
    }

    /// rmcp's token store for one (user, server) slot.
    pub fn slot(&self, user_id: u64, server_id: &str) -> SlotCredentials {
        SlotCredentials::new(
            self.stores.credentials.clone(),
            self.stores.refresh_locks.clone(),
            user_id,
            server_id,
        )
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

    /// Deletes the user's tokens for the server; answers whether there were any.
    pub async fn disconnect(&self, user_id: u64, server_id: &str) -> Result<bool, StoreError> {
        self.stores.credentials.remove(user_id, server_id).await
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
        let discovered = discovery::discover(server).await?;
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

    /// Discovers, registers (or reuses a registration) and builds the
    /// authorization URL for `owner` on `server`. What completing the flow
    /// needs is kept as a [`PendingFlow`]; the manager is dropped.
    pub async fn start(
        &self,
        owner: FlowOwner,
        server: &ServerConfig,
    ) -> Result<StartedFlow, OAuthError> {
        let ServerAuth::OAuth(settings) = &server.auth else {
            return Err(OAuthError::NotOAuthServer);
        };
        let discovered = discovery::discover(server).await?;
        let issuer = discovered.issuer();
        let advertised = discovered.advertised_scopes();
        let mut manager = discovered.manager;
        let captured = OneFlowState::default();
        manager.set_state_store(captured.clone());

        let client = match self
            .client_for(settings, &server.id, issuer.as_deref())
            .await?
        {
            Some(client) => client,
            None => {
                self.register(&mut manager, server, settings, advertised, issuer)
                    .await?
            }
        };

        let mut request = AuthorizationRequest::new(self.redirect_uri.clone())
            .with_preregistered_client(client.client_id.clone())
            .with_application_type(self.application_type);
        if let Some(secret) = &client.client_secret {
            request = request.with_client_secret(secret.expose());
        }
        if !settings.scopes.is_empty() {
            request = request.with_scopes(settings.scopes.clone());
        }
        let session = AuthorizationSession::new(manager, request)
            .await
            .map_err(|(_, error)| OAuthError::Authorize(error))?;
        let (authorize_url, _rmcp_state) = without_state(session.get_authorization_url())?;
        let authorization = captured.take().ok_or_else(|| {
            OAuthError::Authorize(rmcp::transport::auth::AuthError::InternalError(
                "rmcp saved no authorization state".to_owned(),
            ))
        })?;
        let flow = PendingFlow {
            owner,
            server_id: server.id.clone(),
            expires_at: PendingFlow::expires_after(FLOW_TTL),
            authorization,
            client,
        };
        let state = self.stores.flows.insert(flow).await?;
        tracing::info!(server = %server.id, user = owner.user_id, "authorization flow started");
        Ok(StartedFlow {
            authorize_url: Secret::new(with_state(authorize_url, state.as_str())),
            expires_in: FLOW_TTL,
        })
    }

    /// Registers a client dynamically (RFC 7591) and caches it for every
    /// user of the server.
    async fn register(
        &self,
        manager: &mut AuthorizationManager,
        server: &ServerConfig,
        settings: &OAuthSettings,
        advertised: Vec<String>,
        issuer: Option<String>,
    ) -> Result<ClientRecord, OAuthError> {
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
        let mut scopes = advertised;
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
        };
        self.stores
            .registrations
            .remember(&server.id, &record)
            .await?;
        tracing::info!(server = %server.id, "registered an OAuth client");
        Ok(record)
    }

    /// The client to use: configured, or cached from an earlier
    /// registration; `None` means register one.
    async fn client_for(
        &self,
        settings: &OAuthSettings,
        server_id: &str,
        issuer: Option<&str>,
    ) -> Result<Option<ClientRecord>, OAuthError> {
        if let Some(client_id) = &settings.client_id {
            return Ok(Some(ClientRecord {
                client_id: client_id.clone(),
                client_secret: settings.client_secret.clone(),
                redirect_uri: self.redirect_uri.clone(),
                issuer: issuer.map(str::to_owned),
                scopes: settings.scopes.clone(),
            }));
        }
        Ok(self
            .stores
            .registrations
            .find(server_id, &self.redirect_uri, issuer)
            .await?)
    }
}

/// Takes rmcp's `state` (its CSRF token, 128 bits, owner unknown) out of
/// its authorization URL; returns the URL without it and the removed value.
/// The flow's own 256-bit state goes in instead.
fn without_state(url: &str) -> Result<(Url, String), OAuthError> {
    let internal = |what: &str| {
        OAuthError::Authorize(rmcp::transport::auth::AuthError::InternalError(
            what.to_owned(),
        ))
    };
    let mut url = Url::parse(url).map_err(|_| internal("rmcp built an unparsable URL"))?;
    let mut rmcp_state = None;
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter_map(|(key, value)| {
            if key == "state" {
                rmcp_state = Some(value.into_owned());
                None
            } else {
                Some((key.into_owned(), value.into_owned()))
            }
        })
        .collect();
    let rmcp_state = rmcp_state.ok_or_else(|| internal("authorization URL has no state"))?;
    url.query_pairs_mut().clear().extend_pairs(kept);
    Ok((url, rmcp_state))
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
        let (url, old) = without_state(
            "http://as.example/authorize?response_type=code&client_id=c&state=abc&code_challenge=x&resource=http%3A%2F%2Fmcp%2F",
        )
        .unwrap();
        assert_eq!(old, "abc");
        let url = Url::parse(&with_state(url, "NEW")).unwrap();
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert!(pairs.contains(&("state".into(), "NEW".into())));
        assert!(pairs.contains(&("resource".into(), "http://mcp/".into())));
        assert_eq!(pairs.iter().filter(|(k, _)| k == "state").count(), 1);
    }
}
