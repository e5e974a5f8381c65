//! OAuth 2.1 authorization-code flows with PKCE, one per (user, server).
//!
//! rmcp's `auth` module does discovery, registration, PKCE, the `resource`
//! parameter and the code exchange. This module adds what a multi-user bot
//! needs around it: flows bound to the Telegram user and chat that asked
//! ([`pending`]), tokens kept in that user's vault namespace
//! ([`credentials`]), one client registration reused across users
//! ([`registration`]), and the callback that completes a flow
//! ([`callback`]).

pub mod callback;
pub mod credentials;
pub mod discovery;
pub mod pending;
pub mod registration;

use std::sync::Arc;

use rmcp::transport::auth::{
    AuthError, AuthorizationManager, AuthorizationRequest, AuthorizationSession, OAuthClientConfig,
};
use url::Url;

use crate::config::{OAuthSettings, ServerAuth, ServerConfig};
use crate::net_guard::GuardError;
use crate::secret::Secret;
use crate::vault::{Vault, VaultError};

pub use callback::{CallbackError, CallbackParams, Connected};
pub use credentials::{ClientRecord, RefreshLocks, VaultCredentialStore};
pub use pending::{FlowOwner, FlowState};

use pending::{FlowStateStore, PendingFlows};
use registration::Registrations;

/// Client name shown by authorization servers on their consent pages.
const CLIENT_NAME: &str = "mcpgram";

/// Why a flow could not start, in words fit for the user.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("{0} is not an OAuth server in this bot's config")]
    NotOAuthServer(String),
    #[error("the server does not advertise OAuth authorization metadata")]
    NotOAuth,
    #[error("could not discover the server's authorization metadata: {0}")]
    Discovery(String),
    #[error("the server did not answer within {0} s")]
    Timeout(u64),
    #[error("client registration failed: {0}")]
    Registration(String),
    #[error("refusing to contact {0}")]
    Guard(#[from] GuardError),
    /// Users see a generic sentence; the detail (paths, key trouble) is
    /// for the admin's logs.
    #[error("the bot's encrypted storage cannot be read; the bot's admin must check its logs")]
    Vault(#[from] VaultError),
    #[error("{0}")]
    Auth(String),
}

impl OAuthError {
    pub(crate) fn from_auth(error: AuthError) -> Self {
        match error {
            AuthError::RegistrationFailed(reason) => OAuthError::Registration(reason),
            other => OAuthError::Auth(other.to_string()),
        }
    }
}

/// A started flow: the URL to send the user to. It carries the `state`, so
/// it is a [`Secret`]: shown to its owner only, never logged.
#[derive(Debug)]
pub struct StartedFlow {
    pub authorize_url: Secret,
}

/// What completing a flow needs, kept until the callback arrives.
struct FlowPayload {
    session: AuthorizationSession,
    /// The CSRF token rmcp generated, which its state store is keyed by.
    rmcp_state: String,
    client: ClientRecord,
    server_name: String,
}

/// Starts and completes flows; shared by the bot and the HTTP callback.
pub struct Connector {
    vault: Arc<Vault>,
    registrations: Registrations,
    pending: PendingFlows<FlowPayload>,
    locks: RefreshLocks,
    redirect_uri: String,
    /// `web` when the callback is hosted, `native` on loopback (SEP-837).
    application_type: &'static str,
}

impl Connector {
    pub fn new(vault: Arc<Vault>, locks: RefreshLocks, redirect_uri: String, hosted: bool) -> Self {
        Self {
            registrations: Registrations::new(vault.clone()),
            vault,
            pending: PendingFlows::default(),
            locks,
            redirect_uri,
            application_type: if hosted { "web" } else { "native" },
        }
    }

    /// The vault-backed token store of one (user, server) slot.
    pub fn store(&self, user_id: u64, server_id: &str) -> VaultCredentialStore {
        VaultCredentialStore::new(self.vault.clone(), user_id, server_id, self.locks.clone())
    }

    /// Whether `user_id` holds tokens for `server_id`.
    pub async fn is_connected(&self, user_id: u64, server_id: &str) -> Result<bool, VaultError> {
        Ok(self
            .store(user_id, server_id)
            .stored()
            .await?
            .is_some_and(|c| c.token_response.is_some()))
    }

    /// Deletes the user's tokens for the server; answers whether there were any.
    pub async fn disconnect(&self, user_id: u64, server_id: &str) -> Result<bool, VaultError> {
        self.store(user_id, server_id).forget().await
    }

    /// Discovers, registers (or reuses a registration) and builds the
    /// authorization URL for `owner` on `server`.
    pub async fn start(
        &self,
        owner: FlowOwner,
        server: &ServerConfig,
    ) -> Result<StartedFlow, OAuthError> {
        let ServerAuth::OAuth(settings) = &server.auth else {
            return Err(OAuthError::NotOAuthServer(server.id.clone()));
        };
        let discovered = discovery::discover(server).await?;
        let issuer = discovered.issuer();
        let advertised = discovered.advertised_scopes();
        let mut manager = discovered.manager;

        manager.set_credential_store(self.store(owner.user_id, &server.id));
        manager.set_state_store(FlowStateStore::default());

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
            .map_err(|(_, error)| OAuthError::from_auth(error))?;

        let (authorize_url, rmcp_state) = replace_state(session.get_authorization_url())?;
        let payload = FlowPayload {
            session,
            rmcp_state,
            client,
            server_name: server.name.clone(),
        };
        let state = self.pending.insert(owner, &server.id, payload);
        let authorize_url = with_state(authorize_url, state.as_str());
        tracing::info!(server = %server.id, user = owner.user_id, "authorization flow started");
        Ok(StartedFlow {
            authorize_url: Secret::new(authorize_url),
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
            .map_err(OAuthError::from_auth)?;
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
        .map_err(|_| OAuthError::Timeout(server.timeout.as_secs()))?
        .map_err(OAuthError::from_auth)?;
        let record = ClientRecord {
            client_id: registered.client_id,
            client_secret: registered.client_secret.map(Secret::new),
            redirect_uri: self.redirect_uri.clone(),
            issuer,
            scopes,
        };
        self.registrations.remember(&server.id, &record).await?;
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
            .registrations
            .find(server_id, &self.redirect_uri, issuer)
            .await?)
    }
}

/// Takes rmcp's `state` out of its authorization URL; returns the URL
/// without it and the removed value.
fn replace_state(url: &str) -> Result<(Url, String), OAuthError> {
    let mut url = Url::parse(url).map_err(|e| OAuthError::Auth(e.to_string()))?;
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
    let rmcp_state =
        rmcp_state.ok_or_else(|| OAuthError::Auth("authorization URL has no state".to_owned()))?;
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
        let (url, old) = replace_state(
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
