//! Completing a flow when the authorization server redirects back.

use rmcp::transport::auth::{CredentialStore, InMemoryCredentialStore};
use serde::Deserialize;

use super::{Connector, OAuthError, discovery, state::OneFlowState};
use crate::config::ServerConfig;
use crate::secret::Secret;
use crate::store::{Connection, FlowOwner, PendingFlow, Resume, StoreError, TakeError};

/// The redirect's query (RFC 6749 §4.1.2, RFC 9207 `iss`).
#[derive(Deserialize, Default)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

impl std::fmt::Debug for CallbackParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackParams")
            .field("code", &self.code.as_ref().map(|_| "[redacted]"))
            .field("state", &self.state.as_ref().map(|_| "[redacted]"))
            .field("iss", &self.iss)
            .field("error", &self.error)
            .finish()
    }
}

/// Whose flow a callback belonged to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRef {
    pub owner: FlowOwner,
    pub server_id: String,
}

/// A finished flow: `owner` now holds tokens for `server_id`.
#[derive(Debug, Clone)]
pub struct Completed {
    pub flow: FlowRef,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// The command that waited for this authorization.
    pub resume: Option<Resume>,
}

/// Why a callback did not connect anything. Variants that found the flow
/// carry it, so its owner can be told too.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("the callback carries no state")]
    MissingState,
    #[error("no pending flow has this state (never issued, used, or replaced)")]
    UnknownState,
    #[error("the flow expired before its callback")]
    Expired { flow: FlowRef },
    /// The authorization server's `error` and `error_description`, as
    /// sent: foreign text, to be clipped wherever it is shown.
    #[error("the authorization server answered with error {error:?}")]
    Denied {
        flow: FlowRef,
        error: String,
        description: Option<String>,
    },
    #[error("the callback carries neither a code nor an error")]
    MissingCode { flow: FlowRef },
    /// A browser other than the one bound at the start page: a forwarded
    /// authorization URL. The flow is kept for its owner.
    #[error("the callback came from a browser the flow is not bound to")]
    WrongBrowser { flow: FlowRef },
    #[error("the server of this flow is no longer configured")]
    UnknownServer { flow: FlowRef },
    /// `retry`: the failure was passing (the server down, a timeout) and
    /// the flow is kept, so loading the callback again may complete it.
    #[error("completing the flow failed")]
    Exchange {
        flow: FlowRef,
        retry: bool,
        #[source]
        source: OAuthError,
    },
    #[error("the flow store failed")]
    Store {
        flow: Option<FlowRef>,
        #[source]
        source: StoreError,
    },
}

impl CallbackError {
    /// A fixed word for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            CallbackError::MissingState => "missing_state",
            CallbackError::UnknownState => "unknown_state",
            CallbackError::Expired { .. } => "expired",
            CallbackError::Denied { .. } => "denied",
            CallbackError::MissingCode { .. } => "missing_code",
            CallbackError::WrongBrowser { .. } => "wrong_browser",
            CallbackError::UnknownServer { .. } => "unknown_server",
            CallbackError::Exchange { retry: true, .. } => "exchange_retryable",
            CallbackError::Exchange { .. } => "exchange_failed",
            CallbackError::Store { .. } => "store",
        }
    }

    /// The flow this callback belonged to, when it was found.
    pub fn flow(&self) -> Option<&FlowRef> {
        match self {
            CallbackError::MissingState | CallbackError::UnknownState => None,
            CallbackError::Store { flow, .. } => flow.as_ref(),
            CallbackError::Expired { flow }
            | CallbackError::Denied { flow, .. }
            | CallbackError::MissingCode { flow }
            | CallbackError::WrongBrowser { flow }
            | CallbackError::UnknownServer { flow }
            | CallbackError::Exchange { flow, .. } => Some(flow),
        }
    }
}

impl Connector {
    /// Finds the flow by `state` (consuming it), checks the browser is the
    /// one bound to it (`cookie` reads the request's cookies), exchanges
    /// the code, and stores the tokens with their client in the owner's
    /// namespace, both at once and only after the exchange succeeded.
    pub async fn complete(
        &self,
        params: CallbackParams,
        cookie: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<Completed, CallbackError> {
        let state = params
            .state
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or(CallbackError::MissingState)?;
        let pending = self
            .stores
            .flows
            .take(state)
            .await
            .map_err(|error| match error {
                TakeError::Unknown => CallbackError::UnknownState,
                TakeError::Expired { owner, server_id } => CallbackError::Expired {
                    flow: FlowRef { owner, server_id },
                },
                TakeError::Store(source) => CallbackError::Store { flow: None, source },
            })?;
        let flow = FlowRef {
            owner: pending.owner,
            server_id: pending.server_id.clone(),
        };
        if !self.is_bound_browser(&pending, cookie) {
            tracing::warn!(server = %flow.server_id, user = flow.owner.user_id, "a callback from a browser the flow is not bound to");
            self.keep(pending).await;
            return Err(CallbackError::WrongBrowser { flow });
        }

        if let Some(error) = params.error {
            tracing::info!(server = %flow.server_id, user = flow.owner.user_id, error = %crate::text::clip(&error, 100), "authorization refused");
            return Err(CallbackError::Denied {
                flow,
                error,
                description: params.error_description,
            });
        }
        let Some(code) = params.code.map(Secret::new).filter(|c| !c.is_empty()) else {
            return Err(CallbackError::MissingCode { flow });
        };
        let Some(server) = self.config.server(&flow.server_id).cloned() else {
            return Err(CallbackError::UnknownServer { flow });
        };

        let kept = pending.clone();
        let resume = pending.resume.clone();
        let (exchanged, ending) =
            super::http::observed(self.exchange(&server, pending, &code, params.iss.as_deref()))
                .await;
        let connection = match exchanged {
            Ok(connection) => connection,
            Err(source) => {
                let passing = matches!(source, OAuthError::Timeout(_) | OAuthError::Discovery(_))
                    || ending.as_ref().is_some_and(|e| e.is_passing());
                if ending.as_ref().is_some_and(|e| e.is_invalid_client())
                    && self.is_registered_dynamically(&server, &kept.client)
                {
                    // The server forgot the client: the next /connect registers anew.
                    let _ = self.stores.registrations.forget(&flow.server_id).await;
                }
                if !passing && let Ok(http) = self.http(&server) {
                    // Discovery's answers led here: ask again next time.
                    http.forget_discovery();
                }
                tracing::warn!(server = %flow.server_id, user = flow.owner.user_id, passing, error = %crate::logging::chain(&source), "code exchange failed");
                if passing {
                    self.keep(kept).await;
                }
                return Err(CallbackError::Exchange {
                    flow,
                    retry: passing,
                    source,
                });
            }
        };
        if let Err(source) = self
            .stores
            .credentials
            .save(flow.owner.user_id, &flow.server_id, &connection)
            .await
        {
            return Err(CallbackError::Store {
                flow: Some(flow),
                source,
            });
        }
        tracing::info!(server = %flow.server_id, user = flow.owner.user_id, "connected");
        Ok(Completed {
            flow,
            scopes: connection.credentials.granted_scopes.clone(),
            resume,
        })
    }

    /// Rediscovers, exchanges the code with the flow's own client and PKCE
    /// verifier, and returns what the user's store should keep.
    async fn exchange(
        &self,
        server: &ServerConfig,
        pending: PendingFlow,
        code: &Secret,
        iss: Option<&str>,
    ) -> Result<Connection, OAuthError> {
        let discovered = self
            .discover(
                server,
                pending.client.challenge.as_deref(),
                pending.client.assumed_endpoints,
            )
            .await?;
        let mut manager = discovered.manager;
        discovery::use_client(&mut manager, &pending.client)?;
        let csrf_token = pending.authorization.csrf_token.clone();
        manager.set_state_store(OneFlowState::holding(pending.authorization));
        // The tokens land here first and reach the user's store only
        // together with their client, in one write.
        let received = InMemoryCredentialStore::new();
        manager.set_credential_store(received.clone());
        tokio::time::timeout(
            server.timeout,
            manager.exchange_code_for_token_with_issuer(code.expose(), &csrf_token, iss),
        )
        .await
        .map_err(|_| OAuthError::Timeout(server.timeout))?
        .map_err(OAuthError::from_exchange)?;
        let credentials = received.load().await.ok().flatten().ok_or_else(|| {
            OAuthError::Exchange(rmcp::transport::auth::AuthError::InternalError(
                "the exchange stored no credentials".to_owned(),
            ))
        })?;
        Ok(Connection {
            credentials,
            client: pending.client,
        })
    }

    /// Puts a flow back for its owner; a failure to do so only loses the
    /// chance of a retry, so it is logged, not raised.
    async fn keep(&self, flow: PendingFlow) {
        if let Err(error) = self.stores.flows.restore(flow).await {
            tracing::error!(error = %crate::logging::chain(&error), "could not keep a pending flow");
        }
    }
}
