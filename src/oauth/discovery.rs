//! Building rmcp `AuthorizationManager`s for a configured server.
//!
//! A manager is built to start a flow, again to complete it (a pending
//! flow keeps data, not a live manager with its two HTTP clients), and
//! once per live MCP session; each starts with metadata discovery under the
//! server's timeout and address rules.

use std::sync::Arc;

use rmcp::transport::auth::{AuthorizationManager, AuthorizationMetadata, OAuthClientConfig};

use super::OAuthError;
use super::http::OAuthHttp;
use crate::config::{ServerAuth, ServerConfig};
use crate::net_guard;
use crate::store::ClientRecord;

/// A manager that has discovered the server's authorization metadata, and
/// a copy of that metadata (rmcp keeps its own private).
pub struct Discovered {
    pub manager: AuthorizationManager,
    pub metadata: AuthorizationMetadata,
    /// The endpoints were not discovered but assumed (`/authorize`,
    /// `/token`, `/register` at the server's root), as servers of the
    /// 2025-03-26 specification may expect.
    pub assumed: bool,
}

impl Discovered {
    /// The issuer named by the discovered metadata, if any.
    pub fn issuer(&self) -> Option<String> {
        self.metadata.issuer.clone()
    }

    /// Every scope the authorization server advertises.
    pub fn advertised_scopes(&self) -> Vec<String> {
        self.metadata.scopes_supported.clone().unwrap_or_default()
    }

    /// Whether the server takes a Client ID Metadata Document URL as a
    /// client id (SEP-991).
    pub fn supports_metadata_documents(&self) -> bool {
        self.metadata
            .additional_fields
            .get("client_id_metadata_document_supported")
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }
}

/// Discovers the server's authorization metadata (RFC 9728 protected
/// resource metadata, then RFC 8414 / OIDC), every request made by `http`.
///
/// `challenge` is the `WWW-Authenticate` of the server's 401, when there
/// was one: its `resource_metadata` is followed first and its `scope`
/// seeds scope selection. Only a server known to want OAuth (it answered
/// 401, or `assumed_before` says its endpoints were assumed when the user
/// connected) is assumed to use the 2025-03-26 default endpoints when
/// nothing is discovered; any other server is not an OAuth server.
pub async fn discover(
    server: &ServerConfig,
    http: Arc<OAuthHttp>,
    challenge: Option<&str>,
    assumed_before: bool,
) -> Result<Discovered, OAuthError> {
    net_guard::check_url(&server.url, server.trusted)?;
    let work = async {
        let mut manager =
            AuthorizationManager::new_with_oauth_http_client(server.url.as_str(), http)
                .await
                .map_err(OAuthError::Discovery)?;
        let resolution = manager
            .resolve_metadata_from_challenge(challenge)
            .await
            .map_err(OAuthError::Discovery)?;
        let assumed = !resolution.source.is_discovered();
        if assumed && challenge.is_none() && !assumed_before {
            return Err(OAuthError::NoMetadata);
        }
        let mut metadata = resolution.metadata;
        if let ServerAuth::OAuth(settings) = &server.auth
            && let Some(method) = settings.token_endpoint_auth_method
        {
            // rmcp picks basic or post from what the server advertises; a
            // pre-registered client's method is known, so say only that.
            metadata.additional_fields.insert(
                "token_endpoint_auth_methods_supported".to_owned(),
                serde_json::json!([method.as_str()]),
            );
        }
        manager.set_metadata(metadata.clone());
        Ok(Discovered {
            manager,
            metadata,
            assumed,
        })
    };
    tokio::time::timeout(server.timeout, work)
        .await
        .map_err(|_| OAuthError::Timeout(server.timeout))?
}

/// Points a discovered manager at an existing client registration.
///
/// rmcp's own `initialize_from_store` would set the redirect URI to the MCP
/// URL and drop the client secret, which breaks refresh for confidential
/// clients; this keeps both.
pub fn use_client(
    manager: &mut AuthorizationManager,
    client: &ClientRecord,
) -> Result<(), OAuthError> {
    let mut config = OAuthClientConfig::new(client.client_id.clone(), client.redirect_uri.clone())
        .with_scopes(client.scopes.clone());
    if let Some(secret) = &client.client_secret {
        config = config.with_client_secret(secret.expose());
    }
    manager
        .configure_client(config)
        .map_err(OAuthError::Authorize)
}
