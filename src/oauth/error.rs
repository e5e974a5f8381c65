//! Why the OAuth engine could not do something, with the cause kept for
//! the log. No words for users here: the adapters choose those.

use std::time::Duration;

use rmcp::transport::auth::AuthError;

use crate::net_guard::GuardError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("the server is not configured for OAuth")]
    NotOAuthServer,
    #[error("the server advertises no OAuth authorization metadata")]
    NoMetadata,
    #[error("OAuth metadata discovery failed")]
    Discovery(#[source] AuthError),
    #[error("the authorization server did not answer within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("client registration failed")]
    Registration(#[source] AuthError),
    #[error("the authorization request could not be built")]
    Authorize(#[source] AuthError),
    #[error("the token endpoint refused the code")]
    Exchange(#[source] AuthError),
    #[error("the authorization response named the wrong issuer")]
    IssuerMismatch(#[source] AuthError),
    #[error("refusing an address")]
    Guard(#[from] GuardError),
    #[error("the credential store failed")]
    Store(#[from] StoreError),
    #[error("the user already has {0} links waiting")]
    TooManyFlows(u32),
    #[error("could not build an HTTP client")]
    Client(#[source] reqwest::Error),
    /// The identity provider or the authorization server refused an
    /// enterprise-managed exchange (rmcp's errors here carry no secrets).
    #[error("the enterprise token exchange failed")]
    Enterprise(#[source] rmcp::transport::auth::enterprise::EmaError),
}

impl OAuthError {
    /// A failed exchange, told apart from a forged or wrong `iss` (RFC 9207),
    /// which points at a mix-up attack rather than at a bad code.
    pub(crate) fn from_exchange(error: AuthError) -> Self {
        match error {
            AuthError::AuthorizationServerMismatch { .. }
            | AuthError::AuthorizationServerMissingIssuer { .. } => {
                OAuthError::IssuerMismatch(error)
            }
            other => OAuthError::Exchange(other),
        }
    }
}
