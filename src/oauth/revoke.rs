//! Token revocation (RFC 7009) when a user disconnects: the refresh token
//! first (revoking it ends the grant at most servers), then the access
//! token, authenticated as the client the tokens were issued to. The
//! request is built by the `oauth2` crate and sent through the server's
//! guarded OAuth HTTP client.

use oauth2::basic::BasicClient;
use oauth2::{
    AccessToken, AuthType, ClientId, ClientSecret, RefreshToken, RevocationUrl,
    StandardRevocableToken, TokenResponse,
};

use super::http::OAuthHttp;
use crate::store::Connection;

/// What the authorization server did with the user's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// It accepted the revocation of every token held.
    Revoked,
    /// It advertises no revocation endpoint; the tokens live until they
    /// expire (or the user revokes access in the server's own settings).
    NotSupported,
    /// It refused, or could not be reached (logged).
    Failed,
}

#[derive(Debug, thiserror::Error)]
#[error("the revocation request failed")]
struct SendError(#[source] Box<dyn std::error::Error + Send + Sync>);

/// The guarded client, as the `oauth2` crate's request builders take one.
struct Guarded<'a>(&'a OAuthHttp);

impl<'c> oauth2::AsyncHttpClient<'c> for Guarded<'_> {
    type Error = SendError;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<oauth2::HttpResponse, SendError>> + Send + 'c>,
    >;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move { self.0.send(request).await.map_err(SendError) })
    }
}

/// Revokes `connection`'s tokens at `endpoint`.
pub async fn revoke(
    http: &OAuthHttp,
    endpoint: &str,
    connection: &Connection,
    server_id: &str,
) -> Revocation {
    let Ok(url) = RevocationUrl::new(endpoint.to_owned()) else {
        tracing::warn!(server = %server_id, "the revocation endpoint is not a URL");
        return Revocation::Failed;
    };
    let client = &connection.client;
    let mut oauth = BasicClient::new(ClientId::new(client.client_id.clone()))
        .set_revocation_url(url)
        .set_auth_type(AuthType::BasicAuth);
    match &client.client_secret {
        Some(secret) => oauth = oauth.set_client_secret(ClientSecret::new(secret.expose().into())),
        // A public client names itself in the body.
        None => oauth = oauth.set_auth_type(AuthType::RequestBody),
    }
    let Some(tokens) = &connection.credentials.token_response else {
        return Revocation::Revoked;
    };
    let mut held = Vec::new();
    if let Some(refresh) = tokens.refresh_token() {
        held.push(StandardRevocableToken::RefreshToken(RefreshToken::new(
            refresh.secret().clone(),
        )));
    }
    held.push(StandardRevocableToken::AccessToken(AccessToken::new(
        tokens.access_token().secret().clone(),
    )));
    let send = Guarded(http);
    for token in held {
        let kind = match token {
            StandardRevocableToken::RefreshToken(_) => "refresh token",
            _ => "access token",
        };
        let request = match oauth.revoke_token(token) {
            Ok(request) => request,
            Err(error) => {
                tracing::warn!(server = %server_id, error = %crate::logging::chain(&error), "cannot build the revocation request");
                return Revocation::Failed;
            }
        };
        if let Err(error) = request.request_async(&send).await {
            tracing::warn!(server = %server_id, token = kind, error = %crate::logging::chain(&error), "revocation refused or failed");
            return Revocation::Failed;
        }
    }
    Revocation::Revoked
}
