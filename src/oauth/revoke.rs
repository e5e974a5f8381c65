//! Token revocation (RFC 7009) when a user disconnects: the refresh token
//! first (revoking it ends the grant at most servers), then the access
//! token, each authenticated as the client the tokens were issued to, sent
//! through the server's guarded OAuth HTTP client.
//!
//! The request is a plain form POST. The `oauth2` crate's revocation
//! builder refuses any `http` endpoint, loopback included, where MCP (and
//! every local authorization server used for development) allows it.

use oauth2::TokenResponse;

use super::http::{Ending, OAuthHttp};
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

/// Revokes `connection`'s tokens at `endpoint`.
pub async fn revoke(
    http: &OAuthHttp,
    endpoint: &str,
    connection: &Connection,
    server_id: &str,
) -> Revocation {
    let Some(tokens) = &connection.credentials.token_response else {
        return Revocation::Revoked;
    };
    let mut held = Vec::new();
    if let Some(refresh) = tokens.refresh_token() {
        held.push(("refresh_token", refresh.secret().as_str()));
    }
    held.push(("access_token", tokens.access_token().secret().as_str()));
    let client = &connection.client;
    let mut revoked = false;
    for (hint, token) in held {
        let mut form = vec![("token", token), ("token_type_hint", hint)];
        // A confidential client authenticates with HTTP Basic; a public
        // one names itself in the body (RFC 7009 §2.1, RFC 6749 §2.3).
        let basic = match &client.client_secret {
            Some(secret) => Some((client.client_id.as_str(), secret.expose())),
            None => {
                form.push(("client_id", client.client_id.as_str()));
                None
            }
        };
        match http.post_form(endpoint, &form, basic).await {
            // 200 also for a token the server no longer knows (§2.2).
            Ok(Ending::Status { status: 200, .. }) => revoked = true,
            // It cannot revoke this kind (self-contained JWT access tokens,
            // typically): once the grant is gone, they just expire.
            Ok(Ending::Status {
                error: Some(error), ..
            }) if error == "unsupported_token_type" => {
                tracing::debug!(server = %server_id, token = hint, "the server does not revoke this kind of token");
            }
            Ok(ending) => {
                tracing::warn!(server = %server_id, token = hint, ?ending, "revocation refused");
                return Revocation::Failed;
            }
            Err(error) => {
                tracing::warn!(server = %server_id, token = hint, error = %crate::logging::chain(&error), "revocation request failed");
                return Revocation::Failed;
            }
        }
    }
    if revoked {
        Revocation::Revoked
    } else {
        Revocation::NotSupported
    }
}
