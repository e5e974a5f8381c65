//! Building rmcp `AuthorizationManager`s for a configured server.
//!
//! A manager is built to start a flow, again to complete it (a pending
//! flow keeps data, not a live manager with its two HTTP clients), and
//! once per live MCP session; each starts with metadata discovery under the
//! server's timeout and address rules.

use rmcp::transport::auth::{AuthorizationManager, AuthorizationMetadata, OAuthClientConfig};

use super::OAuthError;
use crate::config::ServerConfig;
use crate::net_guard;
use crate::store::ClientRecord;

/// A manager that has discovered the server's authorization metadata, and
/// a copy of that metadata (rmcp keeps its own private).
pub struct Discovered {
    pub manager: AuthorizationManager,
    pub metadata: AuthorizationMetadata,
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
}

/// Discovers the server's authorization metadata (RFC 9728 protected
/// resource metadata, then RFC 8414 / OIDC).
pub async fn discover(server: &ServerConfig) -> Result<Discovered, OAuthError> {
    net_guard::check_url(&server.url, server.trusted)?;
    let work = async {
        let mut manager = if server.trusted {
            AuthorizationManager::new_allowing_private_addresses(server.url.as_str()).await
        } else {
            AuthorizationManager::new(server.url.as_str()).await
        }
        .map_err(OAuthError::Discovery)?;
        let resolution = manager
            .resolve_metadata()
            .await
            .map_err(OAuthError::Discovery)?;
        if !resolution.source.is_discovered() {
            return Err(OAuthError::NoMetadata);
        }
        manager.set_metadata(resolution.metadata.clone());
        Ok(Discovered {
            manager,
            metadata: resolution.metadata,
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
